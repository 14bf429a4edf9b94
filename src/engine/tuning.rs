//! What search engineers use on an [`Engine`]: profile edits (versioned, hot-reloaded),
//! side-by-side comparison, A/B experiments, profile evaluation, the user list.

use super::*;

impl Engine {
    /// Re-reads the profile files; on error the old profiles stay live. Searches hold
    /// the profile set they started with, so none sees a half-changed one.
    pub fn reload_profiles(&self) -> Result<()> {
        let _edit = self.profile_edit.lock().unwrap_or_else(|e| e.into_inner());
        self.load_profiles()
    }

    fn load_profiles(&self) -> Result<()> {
        let dir = self.data_dir.join("profiles");
        let fresh = Profiles::load(&dir)?;
        // The models they name first, so no search finds a profile without its model.
        self.load_models(fresh.iter().map(|(n, p)| (n, &**p)))?;
        let fresh = Arc::new(fresh);
        *self.profiles.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        self.drop_unused_models(&fresh);
        *self
            .profiles_stamp
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = profile::stamp(&dir);
        Ok(())
    }

    /// Re-reads the profiles when a file in the profile folder changed (hand edits);
    /// a broken file is logged and the old profiles stay live.
    pub fn reload_profiles_if_changed(&self) -> bool {
        let dir = self.data_dir.join("profiles");
        let stamp = profile::stamp(&dir);
        if *self
            .profiles_stamp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            == stamp
        {
            return false;
        }
        match self.reload_profiles() {
            Ok(()) => {
                tracing::info!("profile files changed: reloaded");
                true
            }
            Err(e) => {
                // Remember the stamp: log a broken file once, not every second.
                *self
                    .profiles_stamp
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = stamp;
                tracing::error!(error = %e, "a profile file is invalid; the old profiles stay live");
                false
            }
        }
    }

    /// Saves profile `name` from TOML text (validated first; the old one stays live on
    /// error), keeps a version, and makes it live.
    pub fn put_profile(&self, name: &str, text: &str) -> Result<profile::Version> {
        let _edit = self.profile_edit.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.data_dir.join("profiles");
        // A model that cannot be loaded makes the profile invalid before anything is saved.
        profile::check_name(name)?;
        let parsed = Profile::parse(text, &Path::new("profiles").join(format!("{name}.toml")))?;
        self.load_models([(name, &parsed)])?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (_, version) = profile::save(&dir, name, text)?;
        self.load_profiles()?;
        self.share_file(&format!("profiles/{name}.toml"))?;
        Ok(version)
    }

    /// Deletes profile `name` (`default` falls back to the built-in one).
    pub fn delete_profile(&self, name: &str) -> Result<profile::Version> {
        let _edit = self.profile_edit.lock().unwrap_or_else(|e| e.into_inner());
        let version = profile::remove(&self.data_dir.join("profiles"), name)?;
        self.load_profiles()?;
        self.share_file(&format!("profiles/{name}.toml"))?;
        Ok(version)
    }

    /// Makes a saved version of profile `name` live again (as a new version).
    pub fn restore_profile(&self, name: &str, version: u64) -> Result<profile::Version> {
        let text = profile::version_text(&self.data_dir.join("profiles"), name, version)?;
        self.put_profile(name, &text)
    }

    /// A profile with its TOML text and current version.
    pub fn profile_info(&self, name: &str) -> Result<serde_json::Value> {
        let p = self.profiles().get(name)?;
        let dir = self.data_dir.join("profiles");
        Ok(serde_json::json!({
            "name": name,
            "version": profile::current_version(&dir, name),
            "profile": &*p,
            "toml": p.to_toml(),
            "versions": profile::versions(&dir, name)?,
        }))
    }

    /// Every profile's name, description and version, and the feature names.
    pub fn profile_list(&self) -> serde_json::Value {
        let dir = self.data_dir.join("profiles");
        let profiles = self.profiles();
        let list: Vec<serde_json::Value> = profiles
            .names()
            .into_iter()
            .map(|n| {
                let p = profiles.get(&n).ok();
                serde_json::json!({
                    "name": n,
                    "description": p.map(|p| p.description.clone()).unwrap_or_default(),
                    "version": profile::current_version(&dir, &n),
                })
            })
            .collect();
        serde_json::json!({"features": rank::FEATURES, "profiles": list})
    }

    /// The same search under two profiles, with each product's rank movement.
    pub fn compare(&self, req: &SearchRequest, a: &str, b: &str) -> Result<serde_json::Value> {
        let run = |profile: &str| {
            let mut r = req.clone();
            r.profile = Some(profile.to_string());
            r.explain = false;
            self.search(&r)
        };
        let (ra, rb) = (run(a)?, run(b)?);
        let rank_of = |res: &SearchResponse, id: &str| {
            res.hits
                .iter()
                .position(|h| h.id == id)
                .map(|i| i + 1 + (req.page - 1) * req.size)
        };
        let side = |res: &SearchResponse| {
            let hits: Vec<serde_json::Value> = res
                .hits
                .iter()
                .enumerate()
                .map(|(i, h)| serde_json::json!({"id": h.id, "title": h.title, "score": h.score, "rank": i + 1 + (req.page - 1) * req.size}))
                .collect();
            serde_json::json!({"profile": res.profile, "total": res.total, "hits": hits})
        };
        let mut seen = std::collections::HashSet::new();
        let movement: Vec<serde_json::Value> = ra
            .hits
            .iter()
            .chain(&rb.hits)
            .filter(|h| seen.insert(h.id.clone()))
            .map(|h| {
                let (x, y) = (rank_of(&ra, &h.id), rank_of(&rb, &h.id));
                let delta = x.zip(y).map(|(x, y)| x as i64 - y as i64);
                serde_json::json!({"id": h.id, "title": h.title, "rank_a": x, "rank_b": y, "delta": delta})
            })
            .collect();
        Ok(
            serde_json::json!({"query": req.query, "a": side(&ra), "b": side(&rb), "movement": movement}),
        )
    }

    /// A shopper's search: when the request names no profile and no weight overrides, a
    /// running experiment may choose the profile (or interleave two); such searches are
    /// logged with their arm and the products shown.
    pub fn shopper_search(&self, req: &SearchRequest) -> Result<SearchResponse> {
        let assignment = match (&req.user, &req.profile, req.overrides.is_empty()) {
            (Some(user), None, true) => self.experiments.assign(user),
            _ => None,
        };
        let Some(a) = assignment else {
            return self.search(req);
        };
        let profiles = self.profiles();
        if a.arms.iter().any(|arm| profiles.get(&arm.profile).is_err()) {
            tracing::warn!(experiment = %a.id, "an arm's profile is gone; serving the default");
            return self.search(req);
        }
        // The arm comes from the id (no state); the log keeps only the pseudonym.
        let user = self.pseudonyms.of(req.user.as_deref().unwrap_or_default());
        let run = |profile: &str| {
            let mut r = req.clone();
            r.profile = Some(profile.to_string());
            self.search(&r)
        };
        let mut models = std::collections::BTreeMap::new();
        let (mut res, teams) = match a.arms.as_slice() {
            [one] => {
                let res = run(&one.profile)?;
                models.extend(res.model.clone().map(|m| (one.name.clone(), m)));
                (res, Vec::new())
            }
            [arm_a, arm_b] => {
                let (pa, pb) = (&arm_a.profile, &arm_b.profile);
                let (ra, rb) = (run(pa)?, run(pb)?);
                for (arm, r) in [(arm_a, &ra), (arm_b, &rb)] {
                    models.extend(r.model.clone().map(|m| (arm.name.clone(), m)));
                }
                let ids =
                    |r: &SearchResponse| r.hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
                // A fresh coin for each search's team draft.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let seed = experiments::hash64(&format!("{user}\u{0}{}\u{0}{nanos}", req.query));
                let merged = experiments::team_draft(&ids(&ra), &ids(&rb), req.size, seed);
                let mut hits = Vec::with_capacity(merged.len());
                let mut teams = Vec::with_capacity(merged.len());
                for (id, team) in merged {
                    let from = if team == 0 { &ra } else { &rb };
                    if let Some(h) = from.hits.iter().find(|h| h.id == id) {
                        hits.push(h.clone());
                        teams.push(a.arms[team].name.clone());
                    }
                }
                let model = match (&ra.model, &rb.model) {
                    (Some(ma), Some(mb)) if ma != mb => Some(format!("{ma} + {mb}")),
                    (ma, mb) => ma.clone().or_else(|| mb.clone()),
                };
                let mut res = ra;
                res.profile = format!("{pa}+{pb}");
                res.model = model;
                res.semantic = res.model.is_some();
                res.hits = hits;
                (res, teams)
            }
            _ => return self.search(req),
        };
        let shown = res.hits.iter().map(|h| h.id.clone()).collect();
        let search_id = self.experiments.record_impression(
            &a,
            &user,
            &req.query,
            shown,
            teams,
            models.clone(),
            crate::util::now(),
        )?;
        res.experiment = Some(ExperimentTag {
            id: a.id,
            arm: a.arm,
            search_id,
            models,
        });
        Ok(res)
    }

    /// Starts or redefines experiment `id` (TOML or JSON; every arm's profile must exist).
    pub fn put_experiment(&self, id: &str, text: &str) -> Result<serde_json::Value> {
        let profiles = self.profiles();
        self.experiments
            .put(id, text, |p| profiles.get(p).is_ok())?;
        self.share_file(&format!("experiments/{id}.toml"))?;
        self.experiments.report(id)
    }

    /// Stops experiment `id`; its log stays on disk.
    pub fn stop_experiment(&self, id: &str) -> Result<()> {
        self.experiments.stop(id)?;
        self.share_file(&format!("experiments/{id}.toml"))
    }

    /// Per-arm searches, users, CTR, add-to-cart and purchase rates with 95% intervals.
    pub fn experiment_report(&self, id: &str) -> Result<serde_json::Value> {
        self.experiments.report(id)
    }

    /// Running experiment ids.
    pub fn experiment_ids(&self) -> Vec<String> {
        self.experiments.ids()
    }

    /// Users with stored behavior, most events first.
    pub fn users(&self, limit: usize) -> Result<serde_json::Value> {
        let b = self.behavior.as_ref().ok_or(Error::NoEventStore)?;
        let users = b.users.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<(&String, usize)> = users.iter().map(|(id, p)| (id, p.events)).collect();
        list.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(y.0)));
        let list: Vec<serde_json::Value> = list
            .into_iter()
            .take(limit)
            .map(|(id, n)| serde_json::json!({"id": id, "events": n}))
            .collect();
        Ok(serde_json::json!({"users": list, "total": users.len()}))
    }
}

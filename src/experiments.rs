//! Online A/B experiments: users split by a stable hash between ranking profiles (traffic
//! percentages), or team-draft interleaving of two profiles; every experiment search is
//! logged with its arm and the products shown; clicks, carts and purchases posted as
//! events are attributed to the search that showed the product (same user, within 30
//! minutes); per-arm rates come with 95% Wilson intervals.
//!
//! `DATA_DIR/experiments/<id>.toml` defines an experiment; `<id>.log` (JSON lines) holds its
//! impressions and outcomes and is replayed at start, so the numbers survive a restart.
//!
//! Size: ~660 lines; assignment, the impression log and the report read one log format,
//! so they stay in one file.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::behavior::{Event, EventType};
use crate::error::{Error, Result};

/// Outcomes count for the search that showed the product within this many seconds.
pub const ATTRIBUTION_SECS: i64 = 1800;

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// Arm name (`control`, `treatment`).
    pub name: String,
    /// Ranking profile it serves.
    pub profile: String,
    /// Share of users, percent (ignored when interleaving).
    #[serde(default)]
    pub traffic: f64,
}

/// An experiment definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What it tests.
    #[serde(default)]
    pub description: String,
    /// Team-draft interleaving of exactly two arms: every user sees both, merged.
    #[serde(default)]
    pub interleave: bool,
    /// The arms.
    pub arms: Vec<Arm>,
}

impl Config {
    /// Checks arms, traffic and that every profile exists.
    pub fn validate(
        &self,
        profile_exists: impl Fn(&str) -> bool,
    ) -> std::result::Result<(), String> {
        if self.arms.len() < 2 {
            return Err("an experiment needs at least two arms".into());
        }
        if self.interleave && self.arms.len() != 2 {
            return Err("interleaving takes exactly two arms".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut total = 0.0;
        for a in &self.arms {
            if a.name.is_empty() || !names.insert(&a.name) {
                return Err(format!(
                    "arm names must be unique and not empty: `{}`",
                    a.name
                ));
            }
            if !profile_exists(&a.profile) {
                return Err(format!("arm `{}`: unknown profile `{}`", a.name, a.profile));
            }
            if !self.interleave && !(0.0..=100.0).contains(&a.traffic) {
                return Err(format!("arm `{}`: traffic must be within 0..=100", a.name));
            }
            total += a.traffic;
        }
        if !self.interleave && (total <= 0.0 || total > 100.0 + 1e-9) {
            return Err(format!(
                "traffic adds up to {total}%, must be within (0, 100]"
            ));
        }
        Ok(())
    }
}

/// Checks an experiment id: 1-64 of `[A-Za-z0-9_-]`.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::param(
            "id",
            "an experiment id is 1 to 64 letters, digits, `_` or `-`",
        ));
    }
    Ok(())
}

/// A stable 64-bit hash of `text` (the same in every process and version).
pub fn hash64(text: &str) -> u64 {
    let d = Sha256::digest(text.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
}

/// Where a user falls, 0..100, for experiment `id` (stable across processes).
pub fn bucket(id: &str, user: &str) -> f64 {
    (hash64(&format!("{id}\u{0}{user}")) % 10_000) as f64 / 100.0
}

/// What the experiment decides for one search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assignment {
    /// Experiment id.
    pub id: String,
    /// Arm name (`interleaved` for interleaving).
    pub arm: String,
    /// The arm(s) to rank with: one, or the two to interleave.
    #[serde(skip)]
    pub arms: Vec<Arm>,
}

/// A logged line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Impression {
        search_id: String,
        ts: i64,
        user: String,
        arm: String,
        query: String,
        /// Products shown, in order.
        shown: Vec<String>,
        /// For interleaving: the arm that contributed each shown product.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        teams: Vec<String>,
        /// Arm -> the model whose vectors ranked its results.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        models: BTreeMap<String, String>,
    },
    Outcome {
        search_id: String,
        ts: i64,
        kind: EventType,
        product: String,
    },
}

/// Counts of one arm.
#[derive(Debug, Clone, Default)]
struct ArmStats {
    searches: u64,
    users: std::collections::HashSet<String>,
    with: HashMap<EventType, u64>,
    events: HashMap<EventType, u64>,
    /// Searches whose results of this arm a model ranked, by model.
    models: BTreeMap<String, u64>,
}

/// A search's outcomes so far.
#[derive(Debug, Clone)]
struct Shown {
    ts: i64,
    arm: String,
    shown: Vec<String>,
    teams: Vec<String>,
    /// Outcome kinds already counted for this search.
    counted: Vec<EventType>,
    /// Interleaving: clicks per team.
    team_clicks: HashMap<String, u64>,
}

struct Running {
    config: Config,
    log: File,
    path: PathBuf,
    arms: BTreeMap<String, ArmStats>,
    searches: HashMap<String, Shown>,
    /// User -> their recent experiment searches (search ids), newest last.
    recent: HashMap<String, Vec<String>>,
    next: u64,
}

/// The running experiments of a data directory.
pub struct Experiments {
    dir: PathBuf,
    running: Mutex<BTreeMap<String, Running>>,
}

const KINDS: [EventType; 3] = [EventType::Click, EventType::Cart, EventType::Purchase];

impl Experiments {
    /// Loads every `*.toml` of `dir` and replays its log.
    pub fn open(dir: &Path, profile_exists: impl Fn(&str) -> bool) -> Result<Experiments> {
        let mut running = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().and_then(|x| x.to_str()) != Some("toml") {
                    continue;
                }
                let id = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_string();
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let config = parse(&text, &profile_exists)
                    .map_err(|r| Error::Config(format!("{}: {r}", path.display())))?;
                running.insert(id.clone(), Running::open(dir, &id, config)?);
            }
        }
        Ok(Experiments {
            dir: dir.to_path_buf(),
            running: Mutex::new(running),
        })
    }

    /// Starts (or replaces the definition of) experiment `id`; its log is kept.
    pub fn put(&self, id: &str, text: &str, profile_exists: impl Fn(&str) -> bool) -> Result<()> {
        check_id(id)?;
        let config = parse(text, &profile_exists).map_err(Error::InvalidExperiment)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let path = self.dir.join(format!("{id}.toml"));
        crate::util::write_atomic(&path, text.as_bytes())?;
        let run = Running::open(&self.dir, id, config)?;
        self.lock().insert(id.to_string(), run);
        Ok(())
    }

    /// Stops experiment `id` (its definition is renamed `<id>.toml.stopped`; the log stays).
    pub fn stop(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let mut running = self.lock();
        if running.remove(id).is_none() {
            return Err(Error::ExperimentNotFound(id.to_string()));
        }
        let path = self.dir.join(format!("{id}.toml"));
        let stopped = self.dir.join(format!("{id}.toml.stopped"));
        std::fs::rename(&path, &stopped).map_err(|e| Error::io(&path, e))?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The arm of `user` in the first running experiment that covers them.
    pub fn assign(&self, user: &str) -> Option<Assignment> {
        let running = self.lock();
        for (id, r) in running.iter() {
            if r.config.interleave {
                return Some(Assignment {
                    id: id.clone(),
                    arm: "interleaved".into(),
                    arms: r.config.arms.clone(),
                });
            }
            let b = bucket(id, user);
            let mut edge = 0.0;
            for a in &r.config.arms {
                edge += a.traffic;
                if b < edge {
                    return Some(Assignment {
                        id: id.clone(),
                        arm: a.name.clone(),
                        arms: vec![a.clone()],
                    });
                }
            }
        }
        None
    }

    /// Logs an experiment search (with the model that ranked each arm's results);
    /// returns its search id.
    #[allow(clippy::too_many_arguments)]
    pub fn record_impression(
        &self,
        a: &Assignment,
        user: &str,
        query: &str,
        shown: Vec<String>,
        teams: Vec<String>,
        models: BTreeMap<String, String>,
        ts: i64,
    ) -> Result<String> {
        let mut running = self.lock();
        let r = running
            .get_mut(&a.id)
            .ok_or_else(|| Error::ExperimentNotFound(a.id.clone()))?;
        r.next += 1;
        let search_id = format!("{}-{}-{}", a.id, ts, r.next);
        let line = Line::Impression {
            search_id: search_id.clone(),
            ts,
            user: user.to_string(),
            arm: a.arm.clone(),
            query: query.to_string(),
            shown,
            teams,
            models,
        };
        r.append(&line)?;
        r.apply(line);
        Ok(search_id)
    }

    /// Attributes clicks, carts and purchases to the experiment searches that showed the
    /// product to the same user within [`ATTRIBUTION_SECS`].
    pub fn observe(&self, events: &[Event]) -> Result<()> {
        let mut running = self.lock();
        for r in running.values_mut() {
            for e in events {
                if !KINDS.contains(&e.kind) {
                    continue;
                }
                let Some(product) = &e.product_id else {
                    continue;
                };
                let search = r.recent.get(&e.user_id).and_then(|ids| {
                    ids.iter().rev().find(|sid| {
                        r.searches.get(*sid).is_some_and(|s| {
                            (0..=ATTRIBUTION_SECS).contains(&(e.ts - s.ts))
                                && s.shown.contains(product)
                        })
                    })
                });
                if let Some(sid) = search.cloned() {
                    let line = Line::Outcome {
                        search_id: sid,
                        ts: e.ts,
                        kind: e.kind,
                        product: product.clone(),
                    };
                    r.append(&line)?;
                    r.apply(line);
                }
            }
        }
        Ok(())
    }

    /// Per-arm numbers of experiment `id`.
    pub fn report(&self, id: &str) -> Result<serde_json::Value> {
        let running = self.lock();
        let r = running
            .get(id)
            .ok_or_else(|| Error::ExperimentNotFound(id.chars().take(64).collect()))?;
        Ok(r.report(id))
    }

    /// Ids of the running experiments.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

fn parse(
    text: &str,
    profile_exists: &impl Fn(&str) -> bool,
) -> std::result::Result<Config, String> {
    let config: Config = match text.trim_start().starts_with('{') {
        true => serde_json::from_str(text).map_err(|e| e.to_string())?,
        false => toml::from_str(text).map_err(|e| e.to_string())?,
    };
    config.validate(profile_exists)?;
    Ok(config)
}

impl Running {
    fn open(dir: &Path, id: &str, config: Config) -> Result<Running> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(format!("{id}.log"));
        let mut r = Running {
            arms: config
                .arms
                .iter()
                .map(|a| (a.name.clone(), ArmStats::default()))
                .collect(),
            config,
            log: OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?,
            path: path.clone(),
            searches: HashMap::new(),
            recent: HashMap::new(),
            next: 0,
        };
        if r.config.interleave {
            r.arms.insert("interleaved".into(), ArmStats::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        for line in text.lines() {
            // A torn last line (crash mid-append) is skipped.
            if let Ok(l) = serde_json::from_str::<Line>(line) {
                r.next += 1;
                r.apply(l);
            }
        }
        Ok(r)
    }

    fn append(&mut self, line: &Line) -> Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(|e| Error::Internal(e.to_string()))?;
        bytes.push(b'\n');
        self.log
            .write_all(&bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    fn apply(&mut self, line: Line) {
        match line {
            Line::Impression {
                search_id,
                ts,
                user,
                arm,
                shown,
                teams,
                models,
                ..
            } => {
                for (team, model) in models {
                    *self
                        .arms
                        .entry(team)
                        .or_default()
                        .models
                        .entry(model)
                        .or_default() += 1;
                }
                let stats = self.arms.entry(arm.clone()).or_default();
                stats.searches += 1;
                stats.users.insert(user.clone());
                let recent = self.recent.entry(user.clone()).or_default();
                recent.push(search_id.clone());
                if recent.len() > 20 {
                    let old = recent.remove(0);
                    self.searches.remove(&old);
                }
                self.searches.insert(
                    search_id,
                    Shown {
                        ts,
                        arm,
                        shown,
                        teams,
                        counted: Vec::new(),
                        team_clicks: HashMap::new(),
                    },
                );
            }
            Line::Outcome {
                search_id,
                kind,
                product,
                ..
            } => {
                let Some(s) = self.searches.get_mut(&search_id) else {
                    return;
                };
                let stats = self.arms.entry(s.arm.clone()).or_default();
                *stats.events.entry(kind).or_default() += 1;
                if !s.counted.contains(&kind) {
                    s.counted.push(kind);
                    *stats.with.entry(kind).or_default() += 1;
                }
                if kind == EventType::Click {
                    if let Some(i) = s.shown.iter().position(|p| *p == product) {
                        if let Some(team) = s.teams.get(i) {
                            *s.team_clicks.entry(team.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
    }

    fn report(&self, id: &str) -> serde_json::Value {
        let arms: Vec<serde_json::Value> = self
            .arms
            .iter()
            .filter(|(name, _)| !self.config.interleave || name.as_str() == "interleaved")
            .map(|(name, s)| {
                let rate = |k: EventType| {
                    let x = s.with.get(&k).copied().unwrap_or(0);
                    let (lo, hi) = wilson(x, s.searches);
                    serde_json::json!({
                        "searches_with": x,
                        "rate": if s.searches > 0 { x as f64 / s.searches as f64 } else { 0.0 },
                        "ci95": [lo, hi],
                    })
                };
                let profile = self
                    .config
                    .arms
                    .iter()
                    .find(|a| a.name == *name)
                    .map(|a| a.profile.clone());
                serde_json::json!({
                    "arm": name,
                    "profile": profile,
                    "searches": s.searches,
                    "users": s.users.len(),
                    "clicks": s.events.get(&EventType::Click).copied().unwrap_or(0),
                    "carts": s.events.get(&EventType::Cart).copied().unwrap_or(0),
                    "purchases": s.events.get(&EventType::Purchase).copied().unwrap_or(0),
                    "models": s.models,
                    "ctr": rate(EventType::Click),
                    "add_to_cart_rate": rate(EventType::Cart),
                    "purchase_rate": rate(EventType::Purchase),
                })
            })
            .collect();
        let mut out = serde_json::json!({
            "id": id,
            "description": self.config.description,
            "interleave": self.config.interleave,
            "config": self.config,
            "arms": arms,
        });
        if self.config.interleave {
            let (a, b) = (&self.config.arms[0].name, &self.config.arms[1].name);
            let (mut wins_a, mut wins_b, mut ties) = (0u64, 0u64, 0u64);
            for s in self
                .searches
                .values()
                .filter(|s| s.counted.contains(&EventType::Click))
            {
                let ca = s.team_clicks.get(a).copied().unwrap_or(0);
                let cb = s.team_clicks.get(b).copied().unwrap_or(0);
                match ca.cmp(&cb) {
                    std::cmp::Ordering::Greater => wins_a += 1,
                    std::cmp::Ordering::Less => wins_b += 1,
                    std::cmp::Ordering::Equal => ties += 1,
                }
            }
            out["interleaving"] = serde_json::json!({
                "wins": {a.as_str(): wins_a, b.as_str(): wins_b},
                "ties": ties,
                "p_value": sign_test(wins_a, wins_b),
                "models": {
                    a.as_str(): self.arms.get(a).map(|s| s.models.clone()).unwrap_or_default(),
                    b.as_str(): self.arms.get(b).map(|s| s.models.clone()).unwrap_or_default(),
                },
                "note": "searches (among the last 20 per user held in memory) with at least one click, by the arm whose products got more clicks",
            });
        }
        out
    }
}

/// 95% Wilson score interval of `x` successes in `n` trials.
pub fn wilson(x: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p, z) = (n as f64, x as f64 / n as f64, 1.959_964);
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Two-sided exact sign test of `a` wins against `b` wins.
pub fn sign_test(a: u64, b: u64) -> f64 {
    let n = a + b;
    if n == 0 {
        return 1.0;
    }
    let k = a.min(b);
    // P(X <= k) for X ~ Binomial(n, 1/2), in logs to stay finite for large n.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_c = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// Team-draft interleaving of two rankings (Radlinski et al. 2008): each round the team
/// with fewer picks (a coin flip on ties, seeded by `seed`) adds its best product not yet
/// shown. Returns (product, team index) pairs, at most `n`.
pub fn team_draft(a: &[String], b: &[String], n: usize, seed: u64) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::with_capacity(n);
    let mut rng = crate::util::Rng(seed);
    let (mut ia, mut ib, mut na, mut nb) = (0usize, 0usize, 0usize, 0usize);
    let lists = [a, b];
    while out.len() < n {
        let pick_a = match na.cmp(&nb) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => rng.below(2) == 0,
        };
        let (team, idx) = if pick_a { (0, &mut ia) } else { (1, &mut ib) };
        let list = lists[team];
        while *idx < list.len() && out.iter().any(|(p, _)| *p == list[*idx]) {
            *idx += 1;
        }
        if *idx >= list.len() {
            // This team has nothing left; let the other one fill.
            let other = 1 - team;
            let oidx = if other == 0 { &mut ia } else { &mut ib };
            let olist = lists[other];
            while *oidx < olist.len() && out.iter().any(|(p, _)| *p == olist[*oidx]) {
                *oidx += 1;
            }
            if *oidx >= olist.len() {
                break;
            }
            out.push((olist[*oidx].clone(), other));
            *oidx += 1;
            continue;
        }
        out.push((list[*idx].clone(), team));
        *idx += 1;
        if team == 0 {
            na += 1;
        } else {
            nb += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_split_by_traffic() {
        assert_eq!(bucket("e1", "u1"), bucket("e1", "u1"));
        let n = 10_000;
        let under_30 = (0..n)
            .filter(|i| bucket("e1", &format!("u{i}")) < 30.0)
            .count();
        assert!((2_800..3_200).contains(&under_30), "{under_30}");
    }

    #[test]
    fn wilson_and_sign_test_match_known_values() {
        let (lo, hi) = wilson(50, 100);
        assert!(
            (lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        assert!((sign_test(10, 10) - 1.0).abs() < 1e-9);
        // 2 of 12: P = 2 * (1 + 12 + 66) / 4096 = 0.0386
        assert!((sign_test(2, 10) - 0.038_574).abs() < 1e-5);
    }

    #[test]
    fn team_draft_takes_turns_and_never_repeats() {
        let a: Vec<String> = ["1", "2", "3", "4"].map(String::from).to_vec();
        let b: Vec<String> = ["2", "5", "1", "6"].map(String::from).to_vec();
        let merged = team_draft(&a, &b, 6, 3);
        let ids: Vec<&str> = merged.iter().map(|(p, _)| p.as_str()).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        let ta = merged.iter().filter(|(_, t)| *t == 0).count();
        assert!(ta.abs_diff(merged.len() - ta) <= 1, "{merged:?}");
        assert_eq!(merged.len(), 6);
    }
}

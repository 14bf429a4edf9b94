//! An [`Engine`] as one replica of several sharing a Redis ([`crate::cluster`]): the
//! shared files copied in before the engine opens, the published generation adopted, the
//! event and product logs followed, edits of profiles, rules, experiments and keys shared,
//! and readiness only once caught up.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::cluster::{Cluster, EventEntry, Published};

/// Shared files only this process's user may read: API key hashes and the key of the
/// shopper pseudonyms (every replica must compute the same pseudonym for a shopper).
const SECRET_FILES: [&str; 2] = ["keys.json", "user_id.secret"];

/// Files replicas share, by their path under the data directory.
fn shared_file(path: &str) -> bool {
    SECRET_FILES.contains(&path)
        || ["profiles/", "rules/", "experiments/"].iter().any(|d| {
            path.strip_prefix(d).is_some_and(|name| {
                name.ends_with(".toml") && !name.contains('/') && !name.starts_with('.')
            })
        })
}

/// Every shared file of `data_dir` (`keys.json`, `profiles|rules|experiments/*.toml`).
fn local_files(data_dir: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for dir in ["profiles", "rules", "experiments"] {
        for e in std::fs::read_dir(data_dir.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = format!("{dir}/{}", e.file_name().to_string_lossy());
            if shared_file(&path) {
                if let Ok(text) = std::fs::read_to_string(e.path()) {
                    out.insert(path, text);
                }
            }
        }
    }
    for name in SECRET_FILES {
        if let Ok(text) = std::fs::read_to_string(data_dir.join(name)) {
            out.insert(name.into(), text);
        }
    }
    out
}

/// Makes `data_dir` hold the shared files of `files` (writing what differs, removing
/// shared files it lacks); profiles and rules keep a version of each change. Experiment
/// definitions only with `experiments` (a running engine starts and stops them itself).
/// Returns the paths that changed.
fn pull_files(
    data_dir: &Path,
    files: &HashMap<String, String>,
    experiments: bool,
) -> Result<Vec<String>> {
    let wanted = |p: &str| shared_file(p) && (experiments || !p.starts_with("experiments/"));
    let local: HashMap<String, String> = local_files(data_dir)
        .into_iter()
        .filter(|(p, _)| wanted(p))
        .collect();
    let files: HashMap<&String, &String> = files.iter().filter(|(p, _)| wanted(p)).collect();
    let mut changed = Vec::new();
    for (&path, &text) in &files {
        if local.get(path) == Some(text) {
            continue;
        }
        let full = data_dir.join(path);
        match path.split_once('/') {
            Some((dir @ ("profiles" | "rules"), name)) => {
                let stem = name.trim_end_matches(".toml");
                let kind = if dir == "profiles" { "profile" } else { "rule" };
                let folder = data_dir.join(dir);
                std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
                crate::util::versioned::Versioned::new(&folder, kind).save(stem, text)?;
            }
            _ => {
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                crate::util::write_atomic(&full, text.as_bytes())?;
                if SECRET_FILES.contains(&path.as_str()) {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| Error::io(&full, e))?;
                }
            }
        }
        changed.push(path.clone());
    }
    for path in local.keys().filter(|p| !files.contains_key(p)) {
        match path.split_once('/') {
            Some((dir @ ("profiles" | "rules"), name)) => {
                let kind = if dir == "profiles" { "profile" } else { "rule" };
                let folder = data_dir.join(dir);
                crate::util::versioned::Versioned::new(&folder, kind)
                    .remove(name.trim_end_matches(".toml"))?;
            }
            _ => {
                let full = data_dir.join(path);
                std::fs::remove_file(&full).map_err(|e| Error::io(&full, e))?;
            }
        }
        changed.push(path.clone());
    }
    Ok(changed)
}

/// Readies `data_dir` to open as a replica, before [`Engine::open`]: the shared files
/// copied in (or, for the first replica, this directory's files shared), and the
/// published generation made live (copied from `shared_dir` when missing).
pub fn prepare_replica(cluster: &Cluster, data_dir: &Path, shared_dir: &Path) -> Result<()> {
    let (rev, files) = cluster.files()?;
    if rev == 0 {
        // The first replica: its pseudonym key becomes everyone's.
        crate::behavior::Pseudonyms::for_data_dir(data_dir)?;
        for (path, text) in local_files(data_dir) {
            cluster.put_file(&path, Some(&text))?;
        }
    } else {
        let changed = pull_files(data_dir, &files, true)?;
        if !changed.is_empty() {
            tracing::info!(files = changed.len(), "copied the shared files in");
        }
    }
    if let Some(p) = cluster.published()? {
        if index::current_name(data_dir)?.as_deref() != Some(p.name.as_str()) {
            index::adopt(data_dir, shared_dir, &p.name)?;
            tracing::info!(generation = %p.name, "adopted the published generation");
        }
    }
    Ok(())
}

/// This process as a replica.
pub(super) struct Replica {
    cluster: Arc<Cluster>,
    shared_dir: PathBuf,
    /// The files revision this data directory holds.
    files_rev: Mutex<u64>,
    events_ready: AtomicBool,
    products_ready: AtomicBool,
    /// Where the products follower is (stream id) and the generation it is for.
    products_at: Mutex<(String, String)>,
    /// Where the events follower starts.
    events_from: String,
    /// Stream heads when this replica joined: caught up once past them.
    heads: (String, String),
}

/// Where the products follower was, kept in the data directory across restarts.
#[derive(serde::Serialize, serde::Deserialize)]
struct Offset {
    generation: String,
    offset: String,
}

const OFFSET_FILE: &str = "replica-offset.json";

impl Engine {
    /// Joins the replicas of `cluster` (after [`prepare_replica`], [`Engine::open`],
    /// [`Engine::attach_events`] with a [`crate::cluster::RedisEvents`] store whose scan
    /// ended at `events_from`, and [`Engine::enable_writes`]): publishes this generation
    /// if none is, and finds where to follow the products log from. Call
    /// [`Engine::start_replica`] once the engine is shared.
    pub fn join_cluster(
        &mut self,
        cluster: Arc<Cluster>,
        shared_dir: &Path,
        events_from: String,
    ) -> Result<()> {
        let current = self.generation().meta.name.clone();
        let published = match cluster.published()? {
            Some(p) => p,
            None => {
                index::share(&self.data_dir, shared_dir, &current)?;
                let p = Published {
                    name: current.clone(),
                    offset: "0-0".into(),
                };
                cluster.publish(&p)?;
                tracing::info!(generation = %current, dir = %shared_dir.display(), "published this generation for the replicas");
                p
            }
        };
        let saved: Option<Offset> = std::fs::read(self.data_dir.join(OFFSET_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let from = match saved {
            Some(o) if o.generation == current => o.offset,
            _ if published.name == current => published.offset.clone(),
            _ => "0-0".into(),
        };
        let heads = (cluster.events_head()?, cluster.products_head()?);
        let files_rev = cluster.files_rev()?;
        self.replica = Some(Replica {
            cluster,
            shared_dir: shared_dir.to_path_buf(),
            files_rev: Mutex::new(files_rev),
            events_ready: AtomicBool::new(false),
            products_ready: AtomicBool::new(false),
            products_at: Mutex::new((from, current)),
            events_from,
            heads,
        });
        Ok(())
    }

    /// Starts following the shared logs and files, until the engine is dropped.
    pub fn start_replica(self: &Arc<Self>) {
        let Some(r) = &self.replica else { return };
        let cluster = r.cluster.clone();
        let weak = Arc::downgrade(self);
        let from = r.events_from.clone();
        std::thread::spawn(move || follow_events(weak, cluster, from));
        let cluster = r.cluster.clone();
        let weak = Arc::downgrade(self);
        std::thread::spawn(move || follow_products(weak, cluster));
    }

    /// Whether this process follows shared logs, and if so whether it has caught up.
    pub(super) fn replica_problems(&self) -> Vec<String> {
        let Some(r) = &self.replica else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !r.events_ready.load(Ordering::Relaxed) {
            out.push("catching up with the shared events log".to_string());
        }
        if !r.products_ready.load(Ordering::Relaxed) {
            out.push("catching up with the shared product log".to_string());
        }
        out
    }

    /// With replicas: resolves the writes, appends them to the shared log (durable in
    /// Redis before the ack) and applies them here. `None` without replicas.
    pub(super) fn write_shared(
        &self,
        w: &mut Writes,
        writes: &[ProductWrite],
    ) -> Option<Result<Vec<Outcome>>> {
        let r = self.replica.as_ref()?;
        let resolved = w.writer.resolve(writes.to_vec());
        Some((|| {
            let changes: Vec<index::Change> =
                resolved.changes.iter().map(|(_, c)| c.clone()).collect();
            if !changes.is_empty() {
                r.cluster.append_changes(&changes)?;
            }
            w.writer.apply(resolved)
        })())
    }

    /// Shares the file at `path` (under the data directory) with the other replicas after
    /// a local edit (a removed file is removed there too).
    pub fn share_file(&self, path: &str) -> Result<()> {
        let Some(r) = &self.replica else {
            return Ok(());
        };
        let text = std::fs::read_to_string(self.data_dir.join(path)).ok();
        let rev = r.cluster.put_file(path, text.as_deref())?;
        let mut seen = r.files_rev.lock().unwrap_or_else(|e| e.into_inner());
        // Only when nothing else changed meanwhile: else the next pull gets both.
        if *seen + 1 == rev {
            *seen = rev;
        }
        Ok(())
    }

    /// Copies in shared files another replica changed and reloads what they hold; returns
    /// the changed paths (the server reloads `keys.json` itself).
    pub fn pull_shared_files(&self) -> Result<Vec<String>> {
        let Some(r) = &self.replica else {
            return Ok(Vec::new());
        };
        let rev = r.cluster.files_rev()?;
        if rev == *r.files_rev.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(Vec::new());
        }
        let (rev, files) = r.cluster.files()?;
        let mut changed = {
            let _edit = self.profile_edit.lock().unwrap_or_else(|e| e.into_inner());
            pull_files(&self.data_dir, &files, false)?
        };
        if changed.iter().any(|p| p.starts_with("profiles/")) {
            self.reload_profiles()?;
        }
        if changed.iter().any(|p| p.starts_with("rules/")) {
            self.reload_rules_if_changed();
        }
        // Experiments: start what is shared and not running as shared here, stop the rest.
        let local = local_files(&self.data_dir);
        let running = self.experiments.ids();
        for (path, text) in files
            .iter()
            .filter(|(p, _)| p.starts_with("experiments/") && shared_file(p))
        {
            let id = path["experiments/".len()..].trim_end_matches(".toml");
            if running.iter().any(|r| r == id) && local.get(path) == Some(text) {
                continue;
            }
            let profiles = self.profiles();
            match self.experiments.put(id, text, |p| profiles.get(p).is_ok()) {
                Ok(()) => changed.push(path.clone()),
                Err(e) => {
                    tracing::error!(experiment = id, error = %e, "could not start a shared experiment")
                }
            }
        }
        for id in running
            .iter()
            .filter(|id| !files.contains_key(&format!("experiments/{id}.toml")))
        {
            match self.experiments.stop(id) {
                Ok(()) => changed.push(format!("experiments/{id}.toml")),
                Err(e) => {
                    tracing::error!(experiment = %id, error = %e, "could not stop a shared experiment")
                }
            }
        }
        *r.files_rev.lock().unwrap_or_else(|e| e.into_inner()) = rev;
        if !changed.is_empty() {
            tracing::info!(files = ?changed, "applied files shared by another replica");
        }
        Ok(changed)
    }

    /// Switches to the generation another replica published (copying it from the shared
    /// folder) and rewinds the products follower to its offset. True on a switch.
    fn follow_published(&self) -> Result<bool> {
        let Some(r) = &self.replica else {
            return Ok(false);
        };
        let Some(p) = r.cluster.published()? else {
            return Ok(false);
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = live.as_mut() else {
            return Ok(false);
        };
        if p.name == self.generation().meta.name {
            return Ok(false);
        }
        self.commit_pending(w)?;
        index::adopt(&self.data_dir, &r.shared_dir, &p.name)?;
        let gen = index::open_named(&self.data_dir, &p.name, self.encoder.as_deref())?;
        let (writer, snapshot) = LiveWriter::open(&self.data_dir, gen, self.encoder.clone())?;
        w.writer = writer;
        self.swap(snapshot);
        *r.products_at.lock().unwrap_or_else(|e| e.into_inner()) =
            (p.offset.clone(), p.name.clone());
        tracing::info!(generation = %p.name, offset = %p.offset, "switched to the generation another replica published");
        Ok(true)
    }

    /// After a rebuild went live here: shares it and publishes it with the products-log
    /// offset its catalog was read at.
    pub(super) fn publish_rebuilt(&self, offset: &str) -> Result<()> {
        let Some(r) = &self.replica else {
            return Ok(());
        };
        let name = self.generation().meta.name.clone();
        index::share(&self.data_dir, &r.shared_dir, &name)?;
        r.cluster.publish(&Published {
            name: name.clone(),
            offset: offset.to_string(),
        })?;
        *r.products_at.lock().unwrap_or_else(|e| e.into_inner()) = (offset.to_string(), name);
        Ok(())
    }

    /// The products-log position a rebuild starting now replays from (`None` without
    /// replicas).
    pub(super) fn products_position(&self) -> Option<String> {
        let r = self.replica.as_ref()?;
        Some(
            r.products_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }

    /// Applies events another replica stored.
    fn apply_shared_events(&self, entries: Vec<EventEntry>) {
        let Some(b) = &self.behavior else { return };
        let events: Vec<Event> = entries
            .iter()
            .filter_map(|e| match e {
                EventEntry::Event(e) => Some(e.clone()),
                EventEntry::Erase(_) => None,
            })
            .collect();
        let vectors = self.event_vectors(&events);
        let _writer = b.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (mut i, gen) = (0, self.generation());
        for entry in &entries {
            match entry {
                EventEntry::Event(e) => {
                    if e.kind == EventType::Search {
                        self.suggester
                            .record(e.query.as_deref().unwrap_or(""), &e.user_id);
                    }
                    b.apply(&gen, std::slice::from_ref(e), &vectors[i..=i]);
                    i += 1;
                }
                EventEntry::Erase(user) => {
                    b.users
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(user);
                }
            }
        }
        if let Err(e) = self.experiments.observe(&events) {
            tracing::error!(error = %e, "could not log experiment outcomes");
        }
    }
}

/// Reads the events log after `from`, applying what other replicas stored.
fn follow_events(weak: Weak<Engine>, cluster: Arc<Cluster>, mut after: String) {
    let Ok(mut follower) = cluster.follower() else {
        return;
    };
    loop {
        let Some(engine) = weak.upgrade() else { return };
        let Some(r) = &engine.replica else { return };
        match follower.events(&after, Duration::from_millis(500)) {
            Ok(batch) => {
                let caught_up = batch.is_empty();
                let mut others = Vec::new();
                for entry in batch {
                    if let (false, Some(e)) = (entry.mine, entry.body) {
                        others.push(e);
                    }
                    after = entry.id;
                }
                if !others.is_empty() {
                    engine.apply_shared_events(others);
                }
                if caught_up || Cluster::id_at_least(&after, &r.heads.0) {
                    r.events_ready.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the shared events log failed; retrying");
                drop(engine);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Reads the products log, applying every entry of other replicas in order, recording
/// the offset; follows generations other replicas publish.
fn follow_products(weak: Weak<Engine>, cluster: Arc<Cluster>) {
    let Ok(mut follower) = cluster.follower() else {
        return;
    };
    let mut last_check = Instant::now() - Duration::from_secs(5);
    loop {
        let Some(engine) = weak.upgrade() else { return };
        let Some(r) = &engine.replica else { return };
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            if let Err(e) = engine.follow_published() {
                tracing::error!(error = %e, "could not switch to the published generation");
            }
            if let Err(e) = engine.pull_shared_files() {
                tracing::warn!(error = %e, "could not read the shared files");
            }
        }
        let (after, generation) = r
            .products_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match follower.changes(&after, Duration::from_millis(500)) {
            Ok(batch) => {
                let caught_up = batch.is_empty();
                let mut at = after.clone();
                let mut changes = Vec::new();
                for entry in batch {
                    if let (false, Some(c)) = (entry.mine, entry.body) {
                        changes.extend(c);
                    }
                    at = entry.id;
                }
                let applied = match changes.is_empty() {
                    true => Ok(()),
                    false => engine.apply_shared_changes(changes),
                };
                match applied {
                    Ok(()) if at != after => {
                        let mut pos = r.products_at.lock().unwrap_or_else(|e| e.into_inner());
                        // A generation switch meanwhile moved the position: keep it.
                        if pos.0 == after && pos.1 == generation {
                            *pos = (at.clone(), generation.clone());
                            let saved = Offset {
                                generation: generation.clone(),
                                offset: at.clone(),
                            };
                            let bytes = serde_json::to_vec(&saved).unwrap_or_default();
                            if let Err(e) = crate::util::write_atomic(
                                &engine.data_dir.join(OFFSET_FILE),
                                &bytes,
                            ) {
                                tracing::error!(error = %e, "could not save the replica offset");
                            }
                        }
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "applying shared product writes failed; retrying");
                        drop(engine);
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
                if caught_up || Cluster::id_at_least(&at, &r.heads.1) {
                    r.products_ready.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the shared product log failed; retrying");
                drop(engine);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

impl Engine {
    /// Applies product changes another replica resolved; searchable at the next commit.
    fn apply_shared_changes(&self, changes: Vec<index::Change>) -> Result<()> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let w = live.as_mut().ok_or_else(read_only)?;
        w.writer.apply_shared(changes)?;
        if w.commit_interval.is_zero() {
            self.commit_pending(w)?;
        }
        Ok(())
    }
}

//! Replicas sharing state through Redis (`serve --redis redis://HOST:PORT/DB`).
//!
//! Every replica keeps its own data directory (index copy, profiles, rules, experiment
//! definitions, keys) and follows shared logs in Redis:
//!
//! - `shoprank:events`, a Stream of behavior events. A replica appends a batch in one
//!   `MULTI` (with `appendfsync always`, Redis has written it to its append-only file
//!   before it answers, so an acknowledged event survives a Redis `kill -9`) and every
//!   replica, the writer included, folds the entries into its shoppers' profiles as it
//!   reads them. An erasure is an entry too, so every replica drops the shopper.
//! - `shoprank:products`, a Stream of resolved product changes (an upsert with its whole
//!   product and `updated_at`, a delete with its time). Replaying an entry is harmless
//!   (the same change is `unchanged`, an older one `stale`), so a replica applies every
//!   entry past its saved offset, its own included, in stream order.
//! - `shoprank:files`, a hash of the shared files (`profiles/NAME.toml`,
//!   `rules/NAME.toml`, `experiments/ID.toml`, `keys.json`) with a revision counter; a
//!   replica that edits one writes it there, the others copy it into their data
//!   directories and reload.
//! - `shoprank:generation`: the generation every replica should serve, by name, with the
//!   products-stream offset it was built at; its folder is copied from the shared folder
//!   (setting `shared_dir`).
//!
//! Why Streams for events rather than per-user structures: a replica must see every
//! shopper's events to personalize any search, in one order, and catch up after a
//! restart from an offset; a Stream is exactly an ordered log with offsets and blocking
//! reads, and erasure is `XDEL` of that shopper's entries plus an erase entry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::{Commands, Connection, Value};

use crate::behavior::{Event, EventStore};
use crate::error::{Error, Result};
use crate::index::Change;

const EVENTS: &str = "shoprank:events";
const PRODUCTS: &str = "shoprank:products";
const FILES: &str = "shoprank:files";
const FILES_REV: &str = "shoprank:files:rev";
const GENERATION: &str = "shoprank:generation";

/// Entries read per call.
const BATCH: usize = 1000;

fn err(e: impl std::fmt::Display) -> Error {
    Error::Store(format!("redis: {e}"))
}

/// A connection to the shared Redis.
pub struct Cluster {
    client: redis::Client,
    conn: Mutex<Option<Connection>>,
    url: String,
    /// This process's id in the entries it writes (random per start), so its followers
    /// skip what it applied already.
    replica: String,
}

/// One entry of the events stream.
#[derive(Debug, Clone, PartialEq)]
pub enum EventEntry {
    /// A behavior event.
    Event(Event),
    /// Every event of this (pseudonymized) shopper was erased.
    Erase(String),
}

/// An entry read from a shared stream.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    /// Its stream id.
    pub id: String,
    /// Whether this replica wrote it.
    pub mine: bool,
    /// What it holds (`None`: it cannot be read).
    pub body: Option<T>,
}

/// The generation replicas serve.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    /// Its folder name under `generations/`.
    pub name: String,
    /// The products-stream id it was built at: replicas replay from there.
    pub offset: String,
}

impl Cluster {
    /// Connects (and checks the server answers).
    pub fn connect(url: &str) -> Result<Cluster> {
        let client = redis::Client::open(url).map_err(err)?;
        let c = Cluster {
            client,
            conn: Mutex::new(None),
            url: url.split('@').next_back().unwrap_or(url).to_string(),
            replica: {
                let mut random = [0u8; 8];
                getrandom::fill(&mut random).map_err(err)?;
                format!("{:016x}", u64::from_le_bytes(random))
            },
        };
        c.with(|con| redis::cmd("PING").query::<String>(con))?;
        Ok(c)
    }

    /// This process's replica id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Where Redis is (without credentials), for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn open(&self) -> Result<Connection> {
        let con = self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(err)?;
        con.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        Ok(con)
    }

    /// Runs `op` on the shared connection, reconnecting once after a broken one.
    fn with<T>(&self, op: impl Fn(&mut Connection) -> redis::RedisResult<T>) -> Result<T> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..2 {
            if slot.is_none() {
                *slot = Some(self.open()?);
            }
            let con = slot.as_mut().expect("just opened");
            match op(con) {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && (e.is_io_error() || e.is_connection_dropped()) => {
                    *slot = None;
                }
                Err(e) => {
                    if e.is_io_error() || e.is_connection_dropped() {
                        *slot = None;
                    }
                    return Err(err(e));
                }
            }
        }
        Err(err("no connection"))
    }

    /// A connection of its own, for a thread that blocks on reads.
    pub fn follower(&self) -> Result<Follower<'_>> {
        Ok(Follower {
            cluster: self,
            con: None,
        })
    }

    /// Appends events in one transaction; durable when it returns (with `appendfsync
    /// always`).
    pub fn append_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).map_err(err))
            .collect::<Result<_>>()?;
        self.with(|con| {
            let mut p = redis::pipe();
            p.atomic();
            for l in &lines {
                p.cmd("XADD")
                    .arg(EVENTS)
                    .arg("*")
                    .arg("r")
                    .arg(&self.replica)
                    .arg("e")
                    .arg(l)
                    .ignore();
            }
            p.query::<()>(con)
        })
    }

    /// Every entry of a stream, oldest first, through `visit(id, fields)`.
    fn scan(
        &self,
        stream: &str,
        mut visit: impl FnMut(&str, &HashMap<String, String>),
    ) -> Result<String> {
        let mut after = "-".to_string();
        let mut last = "0-0".to_string();
        loop {
            let start = after.clone();
            let page: Vec<(String, HashMap<String, String>)> = self.with(|con| {
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(BATCH)
                    .query::<Value>(con)
                    .map(entries)
            })?;
            let Some((id, _)) = page.last() else { break };
            last = id.clone();
            after = format!("({id}");
            for (id, fields) in &page {
                visit(id, fields);
            }
            if page.len() < BATCH {
                break;
            }
        }
        Ok(last)
    }

    /// The last id of a stream (`0-0` when empty).
    pub fn last_id(&self, stream: &str) -> Result<String> {
        let v: Value = self.with(|con| {
            redis::cmd("XREVRANGE")
                .arg(stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query(con)
        })?;
        Ok(entries(v)
            .into_iter()
            .next()
            .map_or_else(|| "0-0".into(), |(id, _)| id))
    }

    /// The last id of the events stream.
    pub fn events_head(&self) -> Result<String> {
        self.last_id(EVENTS)
    }

    /// The last id of the products stream.
    pub fn products_head(&self) -> Result<String> {
        self.last_id(PRODUCTS)
    }

    /// Appends resolved product changes as one entry; returns its id. Durable when it
    /// returns.
    pub fn append_changes(&self, changes: &[Change]) -> Result<String> {
        let text = serde_json::to_string(changes).map_err(err)?;
        self.with(|con| con.xadd(PRODUCTS, "*", &[("r", &self.replica), ("c", &text)]))
    }

    /// The shared files and their revision.
    pub fn files(&self) -> Result<(u64, HashMap<String, String>)> {
        self.with(|con| {
            let (rev, files): (Option<u64>, HashMap<String, String>) = redis::pipe()
                .atomic()
                .get(FILES_REV)
                .hgetall(FILES)
                .query(con)?;
            Ok((rev.unwrap_or(0), files))
        })
    }

    /// The revision of the shared files (0: never written).
    pub fn files_rev(&self) -> Result<u64> {
        self.with(|con| con.get::<_, Option<u64>>(FILES_REV))
            .map(|r| r.unwrap_or(0))
    }

    /// Writes (or with `None`, removes) one shared file; returns the new revision.
    pub fn put_file(&self, path: &str, text: Option<&str>) -> Result<u64> {
        self.with(|con| {
            let mut p = redis::pipe();
            p.atomic();
            match text {
                Some(t) => p.hset(FILES, path, t).ignore(),
                None => p.hdel(FILES, path).ignore(),
            };
            let (rev,): (u64,) = p.incr(FILES_REV, 1).query(con)?;
            Ok(rev)
        })
    }

    /// The published generation, if any.
    pub fn published(&self) -> Result<Option<Published>> {
        let text: Option<String> = self.with(|con| con.get(GENERATION))?;
        text.map(|t| serde_json::from_str(&t).map_err(err))
            .transpose()
    }

    /// Whether stream id `a` is at or past `b` (`ms-seq` ids).
    pub fn id_at_least(a: &str, b: &str) -> bool {
        let parse = |s: &str| -> (u64, u64) {
            let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
            (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
        };
        parse(a) >= parse(b)
    }

    /// Publishes a generation for every replica.
    pub fn publish(&self, p: &Published) -> Result<()> {
        let text = serde_json::to_string(p).map_err(err)?;
        self.with(|con| con.set::<_, _, ()>(GENERATION, &text))
    }
}

/// Reads the shared streams with a blocking connection of its own.
pub struct Follower<'a> {
    cluster: &'a Cluster,
    con: Option<Connection>,
}

impl Follower<'_> {
    fn read(
        &mut self,
        stream: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        if self.con.is_none() {
            self.con = Some(self.cluster.open()?);
        }
        let con = self.con.as_mut().expect("just opened");
        let res: redis::RedisResult<Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(after)
            .query(con);
        match res {
            Ok(Value::Nil) => Ok(Vec::new()),
            Ok(v) => Ok(stream_entries(v)),
            Err(e) => {
                self.con = None;
                Err(err(e))
            }
        }
    }

    /// Event entries after `after`, waiting up to `block` for one.
    pub fn events(&mut self, after: &str, block: Duration) -> Result<Vec<Entry<EventEntry>>> {
        let raw = self.read(EVENTS, after, block)?;
        let own = self.cluster.replica.as_str();
        Ok(raw
            .into_iter()
            .map(|(id, f)| Entry {
                mine: f.get("r").is_some_and(|r| r == own),
                body: event_entry(&f),
                id,
            })
            .collect())
    }

    /// Product change entries after `after`, waiting up to `block` for one.
    pub fn changes(&mut self, after: &str, block: Duration) -> Result<Vec<Entry<Vec<Change>>>> {
        let raw = self.read(PRODUCTS, after, block)?;
        let own = self.cluster.replica.as_str();
        Ok(raw
            .into_iter()
            .map(|(id, f)| Entry {
                mine: f.get("r").is_some_and(|r| r == own),
                body: f.get("c").and_then(|c| serde_json::from_str(c).ok()),
                id,
            })
            .collect())
    }
}

fn event_entry(fields: &HashMap<String, String>) -> Option<EventEntry> {
    if let Some(user) = fields.get("x") {
        return Some(EventEntry::Erase(user.clone()));
    }
    serde_json::from_str(fields.get("e")?)
        .ok()
        .map(EventEntry::Event)
}

/// `[[id, [k, v, ...]], ...]` -> `(id, {k: v})`.
fn entries(v: Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id: String = redis::from_redis_value(parts.pop()?).ok()?;
            let kv: Vec<String> = redis::from_redis_value(fields).ok()?;
            let map = kv
                .chunks_exact(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect();
            Some((id, map))
        })
        .collect()
}

/// An `XREAD` answer for one stream -> its entries.
fn stream_entries(v: Value) -> Vec<(String, HashMap<String, String>)> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => entries(kv.pop().unwrap_or(Value::Nil)),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => Vec::new(),
    }
}

/// The behavior events in Redis: the [`EventStore`] of a replica.
pub struct RedisEvents {
    cluster: std::sync::Arc<Cluster>,
    /// The last id [`EventStore::scan`] read: following starts after it.
    scanned: std::sync::Arc<Mutex<String>>,
    failing: std::sync::atomic::AtomicBool,
}

impl RedisEvents {
    /// The events of `cluster`.
    pub fn new(cluster: std::sync::Arc<Cluster>) -> Self {
        RedisEvents {
            cluster,
            scanned: std::sync::Arc::new(Mutex::new("0-0".into())),
            failing: Default::default(),
        }
    }

    /// Where the last [`EventStore::scan`] ended (readable after the store is boxed):
    /// following the log starts after it.
    pub fn scanned_handle(&self) -> std::sync::Arc<Mutex<String>> {
        self.scanned.clone()
    }

    fn track<T>(&self, r: Result<T>) -> Result<T> {
        self.failing
            .store(r.is_err(), std::sync::atomic::Ordering::Relaxed);
        r
    }

    /// Ids of the entries holding events that `keep` refuses.
    fn ids_where(&self, drop: impl Fn(&Event) -> bool) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        self.cluster.scan(EVENTS, |id, f| {
            if let Some(EventEntry::Event(e)) = event_entry(f) {
                if drop(&e) {
                    ids.push(id.to_string());
                }
            }
        })?;
        Ok(ids)
    }

    fn delete_ids(&self, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(BATCH) {
            self.cluster
                .with(|con| con.xdel::<_, _, usize>(EVENTS, chunk))?;
        }
        Ok(())
    }
}

impl EventStore for RedisEvents {
    fn append(&self, events: &[Event]) -> Result<()> {
        self.track(self.cluster.append_events(events))
    }

    fn scan(&self, visit: &mut dyn FnMut(Event)) -> Result<()> {
        let mut erased: Vec<String> = Vec::new();
        let mut events = Vec::new();
        let last = self.cluster.scan(EVENTS, |_, f| match event_entry(f) {
            Some(EventEntry::Event(e)) => events.push(e),
            Some(EventEntry::Erase(u)) => erased.push(u),
            None => {}
        })?;
        *self.scanned.lock().unwrap_or_else(|e| e.into_inner()) = last;
        for e in events {
            visit(e);
        }
        Ok(())
    }

    fn delete_user(&self, user: &str) -> Result<usize> {
        let ids = self.ids_where(|e| e.user_id == user)?;
        self.delete_ids(&ids)?;
        // Every replica reads the erasure and drops the shopper's profile.
        self.cluster.with(|con| {
            con.xadd::<_, _, _, _, String>(
                EVENTS,
                "*",
                &[("r", self.cluster.replica()), ("x", user)],
            )
        })?;
        Ok(ids.len())
    }

    fn expire(&self, before: i64) -> Result<usize> {
        let ids = self.ids_where(|e| e.ts < before)?;
        self.delete_ids(&ids)?;
        Ok(ids.len())
    }

    fn failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }
}

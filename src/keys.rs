//! API keys: a presented `Bearer` token -> the actions it may perform (and, for search
//! keys, filters a request cannot widen).
//!
//! The master key comes from the settings (`master_key`, `SHOPRANK_MASTER_KEY`) and may do
//! everything, including managing keys. Other keys are created over `POST /keys` with a
//! set of [`Action`]s, an optional expiry, a description and optional fixed filters (a
//! search key for one shop's storefront: `{"brand": "兰蔻"}`). A key's secret is shown
//! once, at creation; only its SHA-256 is stored, in `DATA_DIR/keys.json`, written
//! atomically and synced before the creation is acknowledged. Presented tokens are
//! compared by hash in constant time, so timing tells nothing about a stored key.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::retrieve::Filters;

/// What a key may do; each route needs one action (see `server::auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// `GET /search`, `/compare`, `/analyze`, `/suggest`, `/products/{id}`.
    #[serde(rename = "search")]
    Search,
    /// `POST /events`.
    #[serde(rename = "events.write")]
    EventsWrite,
    /// `PUT`/`PATCH`/`DELETE /products`.
    #[serde(rename = "products.write")]
    ProductsWrite,
    /// `/profiles` (read, edit, evaluate).
    #[serde(rename = "profiles")]
    Profiles,
    /// `/experiments`.
    #[serde(rename = "experiments")]
    Experiments,
    /// `/rules` (merchandising rules: read, edit).
    #[serde(rename = "rules")]
    Rules,
    /// A shopper's data: `/users`, `/users/{id}/profile`, `DELETE /users/{id}`.
    #[serde(rename = "users")]
    Users,
    /// `/admin/*` (reindex, rollback, jobs, reload) and `/metrics`.
    #[serde(rename = "admin")]
    Admin,
}

/// Filters fixed by a key: a request may narrow them, never widen them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedFilters {
    /// Only this brand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Only this category path (and below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// No price below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_min: Option<f64>,
    /// No price above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_max: Option<f64>,
    /// Only products in stock.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_stock: bool,
}

impl FixedFilters {
    /// `requested` narrowed to these filters, or `Forbidden` when it asks for a brand or
    /// category outside them.
    pub fn apply(&self, mut requested: Filters) -> Result<Filters> {
        let norm = crate::analysis::normalize;
        if let Some(brand) = &self.brand {
            match &requested.brand {
                Some(b) if norm(b) != norm(brand) => {
                    return Err(Error::Forbidden(format!(
                        "this key searches brand `{brand}` only"
                    )))
                }
                _ => requested.brand = Some(brand.clone()),
            }
        }
        if let Some(cat) = &self.category {
            match &requested.category {
                Some(c) if !within(c, cat) => {
                    return Err(Error::Forbidden(format!(
                        "this key searches category `{cat}` only"
                    )))
                }
                Some(_) => {}
                None => requested.category = Some(cat.clone()),
            }
        }
        if let Some(min) = self.price_min {
            requested.price_min = Some(requested.price_min.map_or(min, |m| m.max(min)));
        }
        if let Some(max) = self.price_max {
            requested.price_max = Some(requested.price_max.map_or(max, |m| m.min(max)));
        }
        requested.in_stock |= self.in_stock;
        Ok(requested)
    }

    fn is_empty(&self) -> bool {
        *self == FixedFilters::default()
    }
}

/// Whether category path `path` is `prefix` or below it, by whole segments.
fn within(path: &str, prefix: &str) -> bool {
    let (p, q) = (path.trim_matches('/'), prefix.trim_matches('/'));
    p == q || p.starts_with(&format!("{q}/"))
}

/// A stored key (its secret is not stored, only its hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Key {
    /// Public id (names the key in lists and in `DELETE /keys/{id}`).
    pub id: String,
    /// SHA-256 of the secret, hex.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    hash: String,
    /// What it may do.
    pub actions: Vec<Action>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Unix seconds after which it no longer works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Filters every search with it carries.
    #[serde(default, skip_serializing_if = "FixedFilters::is_empty")]
    pub filters: FixedFilters,
    /// Unix seconds.
    pub created_at: i64,
}

/// What `POST /keys` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// What it may do (at least one).
    pub actions: Vec<Action>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Unix seconds after which it no longer works.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Filters every search with it carries (search keys only).
    #[serde(default)]
    pub filters: FixedFilters,
}

/// Who a request is: the master key, or a stored key.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The master key (everything).
    Master,
    /// A stored key.
    Key(Box<Key>),
}

impl Caller {
    /// Whether the caller may perform `action`.
    pub fn may(&self, action: Action) -> bool {
        match self {
            Caller::Master => true,
            Caller::Key(k) => k.actions.contains(&action),
        }
    }

    /// The filters the caller's searches carry.
    pub fn filters(&self) -> Option<&FixedFilters> {
        match self {
            Caller::Master => None,
            Caller::Key(k) => Some(&k.filters).filter(|f| !f.is_empty()),
        }
    }
}

/// The master key and the stored keys of a data directory.
pub struct Keys {
    master: Option<[u8; 32]>,
    path: PathBuf,
    keys: RwLock<Vec<Key>>,
    /// When `keys.json` was last looked at, and its stamp then (size, modified): a file
    /// changed by another replica (or by hand) is read again within a second.
    seen: std::sync::Mutex<(std::time::Instant, Option<(u64, std::time::SystemTime)>)>,
}

fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn read_keys(path: &Path) -> Result<Vec<Key>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keys {
    /// Keys of `data_dir` (`keys.json`, if any) with the master key `master`.
    pub fn open(data_dir: &Path, master: Option<&str>) -> Result<Keys> {
        let path = data_dir.join("keys.json");
        let keys = read_keys(&path)?;
        Ok(Keys {
            master: master.filter(|m| !m.is_empty()).map(digest),
            seen: std::sync::Mutex::new((std::time::Instant::now(), stamp(&path))),
            path,
            keys: RwLock::new(keys),
        })
    }

    /// Reads `keys.json` again when it changed on disk (at most once a second); a broken
    /// file is logged and the keys in memory stay.
    fn refresh(&self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        let now = stamp(&self.path);
        seen.0 = std::time::Instant::now();
        if now == seen.1 {
            return;
        }
        seen.1 = now;
        match read_keys(&self.path) {
            Ok(keys) => *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys,
            Err(e) => {
                tracing::error!(error = %e, "keys.json changed but cannot be read; the old keys stay")
            }
        }
    }

    /// No keys at all: the server runs open (loopback only).
    pub fn disabled() -> Keys {
        Keys {
            master: None,
            path: PathBuf::new(),
            keys: RwLock::new(Vec::new()),
            seen: std::sync::Mutex::new((std::time::Instant::now(), None)),
        }
    }

    /// Whether a master key is set (without one, the server runs open on loopback).
    pub fn enabled(&self) -> bool {
        self.master.is_some()
    }

    /// Who presents `token` at time `now`: `Unauthorized` for an unknown or expired one.
    pub fn verify(&self, token: &str, now: i64) -> Result<Caller> {
        let d = digest(token);
        if self.master.is_some_and(|m| same(&m, &d)) {
            return Ok(Caller::Master);
        }
        let hashed = hex(&d);
        self.refresh();
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        // Compare against every key, so the time does not depend on which one matched.
        let mut found = None;
        for k in keys.iter() {
            if same(k.hash.as_bytes(), hashed.as_bytes()) {
                found = Some(k.clone());
            }
        }
        match found {
            Some(k) if k.expires_at.is_some_and(|t| t <= now) => {
                Err(Error::Unauthorized(format!("key `{}` expired", k.id)))
            }
            Some(k) => Ok(Caller::Key(Box::new(k))),
            None => Err(Error::Unauthorized("unknown key".into())),
        }
    }

    /// Creates a key; returns it with its secret, which is not stored and not shown again.
    pub fn create(&self, new: NewKey, now: i64) -> Result<(Key, String)> {
        if new.actions.is_empty() {
            return Err(Error::param("actions", "name at least one action"));
        }
        if new.expires_at.is_some_and(|t| t <= now) {
            return Err(Error::param("expires_at", "must be in the future"));
        }
        if new.description.chars().count() > 200 {
            return Err(Error::param("description", "at most 200 characters"));
        }
        if !new.filters.is_empty() && new.actions.iter().any(|a| *a != Action::Search) {
            return Err(Error::param(
                "filters",
                "fixed filters are for search-only keys",
            ));
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| Error::Internal(format!("no random source: {e}")))?;
        let secret = format!("sr_{}", hex(&random));
        let id = hex(&digest(&secret)[..6]);
        let key = Key {
            id,
            hash: hex(&digest(&secret)),
            actions: new.actions,
            description: new.description,
            expires_at: new.expires_at,
            filters: new.filters,
            created_at: now,
        };
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let mut next = keys.clone();
        next.push(key.clone());
        self.save(&next)?;
        *keys = next;
        Ok((public(key), secret))
    }

    /// Every stored key, without hashes.
    pub fn list(&self) -> Vec<Key> {
        self.refresh();
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter().cloned().map(public).collect()
    }

    /// Revokes key `id` (durably, before answering).
    pub fn revoke(&self, id: &str) -> Result<()> {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if !keys.iter().any(|k| k.id == id) {
            return Err(Error::KeyNotFound(id.chars().take(64).collect()));
        }
        let next: Vec<Key> = keys.iter().filter(|k| k.id != id).cloned().collect();
        self.save(&next)?;
        *keys = next;
        Ok(())
    }

    fn save(&self, keys: &[Key]) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = serde_json::to_vec_pretty(keys).map_err(|e| Error::Internal(e.to_string()))?;
        crate::util::write_atomic(&self.path, &text)?;
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).1 = stamp(&self.path);
        // Hashes only, but nobody else on the machine needs to read them.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn public(mut k: Key) -> Key {
    k.hash.clear();
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_expire_revoke_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::open(dir.path(), Some("master-secret")).unwrap();
        assert!(matches!(
            keys.verify("master-secret", 0),
            Ok(Caller::Master)
        ));
        assert!(keys.verify("master-secre", 0).is_err());
        let new = |actions, expires_at| NewKey {
            actions,
            description: "storefront".into(),
            expires_at,
            filters: FixedFilters::default(),
        };
        let (k, secret) = keys.create(new(vec![Action::Search], None), 100).unwrap();
        let (short, short_secret) = keys
            .create(new(vec![Action::Admin], Some(200)), 100)
            .unwrap();
        let caller = keys.verify(&secret, 150).unwrap();
        assert!(caller.may(Action::Search) && !caller.may(Action::Admin));
        assert!(keys.verify(&short_secret, 150).unwrap().may(Action::Admin));
        assert_eq!(
            keys.verify(&short_secret, 200).unwrap_err().code(),
            "invalid_key"
        );
        // Stored hashed: the secret is nowhere on disk.
        let disk = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(!disk.contains(&secret) && disk.contains(&k.id));
        assert!(keys.list().iter().all(|k| k.hash.is_empty()));
        keys.revoke(&short.id).unwrap();
        let reopened = Keys::open(dir.path(), Some("master-secret")).unwrap();
        assert!(reopened.verify(&secret, 150).is_ok());
        assert!(reopened.verify(&short_secret, 150).is_err());
        assert_eq!(reopened.revoke("nope").unwrap_err().code(), "key_not_found");
        assert!(keys.create(new(vec![], None), 0).is_err());
    }

    #[test]
    fn fixed_filters_narrow_and_never_widen() {
        let fixed = FixedFilters {
            brand: Some("兰蔻".into()),
            category: Some("美妆".into()),
            price_max: Some(500.0),
            ..Default::default()
        };
        let f = fixed.apply(Filters::default()).unwrap();
        assert_eq!(f.brand.as_deref(), Some("兰蔻"));
        assert_eq!(f.price_max, Some(500.0));
        let narrower = Filters {
            category: Some("美妆/面霜".into()),
            price_max: Some(900.0),
            ..Default::default()
        };
        let f = fixed.apply(narrower).unwrap();
        assert_eq!(f.category.as_deref(), Some("美妆/面霜"));
        assert_eq!(f.price_max, Some(500.0));
        let other_brand = Filters {
            brand: Some("雅诗兰黛".into()),
            ..Default::default()
        };
        assert_eq!(fixed.apply(other_brand).unwrap_err().code(), "forbidden");
        let wider = Filters {
            category: Some("美妆品".into()),
            ..Default::default()
        };
        assert!(fixed.apply(wider).is_err());
    }
}

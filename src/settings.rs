//! Settings: compiled-in defaults, then an optional TOML file (`--config`), then
//! `SHOPRANK_*` environment variables, then CLI flags -> one validated [`Settings`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::encoder::DeviceKind;
use crate::error::{Error, Result};

/// Everything configurable about a shoprank process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Data directory: index generations and ranking profiles.
    pub data_dir: PathBuf,
    /// Model manifest (`[encoder]` table: pooling, max length, model folder).
    pub manifest: PathBuf,
    /// Model folder overriding the manifest's `dir`.
    pub model_dir: Option<PathBuf>,
    /// Catalog schema file.
    pub schema: PathBuf,
    /// jieba user dictionary.
    pub user_dict: PathBuf,
    /// Brand alias file for query understanding.
    pub brand_aliases: PathBuf,
    /// Query-time synonym file.
    pub synonyms: PathBuf,
    /// Encoder device.
    pub device: DeviceKind,
    /// HTTP listen address.
    pub addr: String,
    /// HTTP worker threads.
    pub workers: usize,
    /// Searches allowed in flight before answering 429.
    pub max_in_flight: usize,
    /// Behavior events older than this many days are dropped (0 keeps them forever).
    pub retention_days: u64,
    /// Product writes become searchable within this many milliseconds (0: at once, one
    /// tantivy commit per write request).
    pub commit_interval_ms: u64,
    /// Gates a rebuilt generation must pass before it goes live.
    pub gates: crate::index::Gates,
    /// Threads that encode products in `serve` (background rebuilds, new titles; 0: all
    /// cores), so searches keep the other cores. A CPU query encode is always one thread.
    pub encoder_threads: usize,
    /// Judged queries (`qid<TAB>query`) for `GET /profiles/{name}/eval`.
    pub eval_queries: Option<PathBuf>,
    /// Their judgments (TREC qrels).
    pub eval_qrels: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("data"),
            manifest: PathBuf::from("models/manifest.toml"),
            model_dir: None,
            schema: PathBuf::from("index_schema/products.toml"),
            user_dict: PathBuf::from("index_schema/userdict.txt"),
            brand_aliases: PathBuf::from("index_schema/brand_aliases.toml"),
            synonyms: PathBuf::from("index_schema/synonyms.txt"),
            device: DeviceKind::Cpu,
            addr: "127.0.0.1:8080".into(),
            workers: 2,
            max_in_flight: 64,
            retention_days: 365,
            commit_interval_ms: 500,
            gates: crate::index::Gates::default(),
            encoder_threads: 1,
            eval_queries: None,
            eval_qrels: None,
        }
    }
}

impl Settings {
    /// Defaults, overlaid by `file` (if given) and by `SHOPRANK_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let mut s = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                toml::from_str(&text)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            None => Settings::default(),
        };
        let var = |name: &str| env(&format!("SHOPRANK_{name}")).filter(|v| !v.is_empty());
        let number = |name: &str, v: String| {
            v.parse::<usize>()
                .map_err(|_| Error::Config(format!("SHOPRANK_{name}=`{v}` is not a whole number")))
        };
        if let Some(v) = var("DATA_DIR") {
            s.data_dir = v.into();
        }
        if let Some(v) = var("MANIFEST") {
            s.manifest = v.into();
        }
        if let Some(v) = var("MODEL_DIR") {
            s.model_dir = Some(v.into());
        }
        if let Some(v) = var("SCHEMA") {
            s.schema = v.into();
        }
        if let Some(v) = var("SYNONYMS") {
            s.synonyms = v.into();
        }
        if let Some(v) = var("BRAND_ALIASES") {
            s.brand_aliases = v.into();
        }
        if let Some(v) = var("USER_DICT") {
            s.user_dict = v.into();
        }
        if let Some(v) = var("DEVICE") {
            s.device = match v.as_str() {
                "cpu" => DeviceKind::Cpu,
                "cuda" => DeviceKind::Cuda,
                other => {
                    return Err(Error::Config(format!(
                        "SHOPRANK_DEVICE=`{other}`: use cpu or cuda"
                    )))
                }
            };
        }
        if let Some(v) = var("ADDR") {
            s.addr = v;
        }
        if let Some(v) = var("WORKERS") {
            s.workers = number("WORKERS", v)?;
        }
        if let Some(v) = var("RETENTION_DAYS") {
            s.retention_days = number("RETENTION_DAYS", v)? as u64;
        }
        if let Some(v) = var("ENCODER_THREADS") {
            s.encoder_threads = number("ENCODER_THREADS", v)?;
        }
        if let Some(v) = var("COMMIT_INTERVAL_MS") {
            s.commit_interval_ms = number("COMMIT_INTERVAL_MS", v)? as u64;
        }
        if let Some(v) = var("MAX_IN_FLIGHT") {
            s.max_in_flight = number("MAX_IN_FLIGHT", v)?;
        }
        Ok(s)
    }

    /// Checks values.
    pub fn validate(&self) -> Result<()> {
        if self.workers == 0 || self.max_in_flight == 0 {
            return Err(Error::Config(
                "workers and max_in_flight must be at least 1".into(),
            ));
        }
        if self.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::Config(format!(
                "addr `{}` is not an ip:port address",
                self.addr
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load(None, |_| None).unwrap();
        assert_eq!(s, Settings::default());
        s.validate().unwrap();
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shoprank.toml");
        std::fs::write(&file, "data_dir = \"/srv/shop\"\nworkers = 4\n").unwrap();
        let s = Settings::load(Some(&file), |k| {
            (k == "SHOPRANK_WORKERS").then(|| "8".to_string())
        })
        .unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/srv/shop"));
        assert_eq!(s.workers, 8);
        std::fs::write(&file, "data_dri = \"x\"\n").unwrap();
        assert!(Settings::load(Some(&file), |_| None)
            .unwrap_err()
            .to_string()
            .contains("data_dri"));
        assert!(Settings::load(None, |k| (k == "SHOPRANK_DEVICE")
            .then(|| "tpu".to_string()))
        .is_err());
    }
}

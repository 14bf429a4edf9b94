//! Settings: compiled-in defaults, then an optional TOML file (`--config`), then
//! `SHOPRANK_*` environment variables and CLI flags (clap reads both: a flag wins over its
//! variable) -> one validated [`Settings`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::encoder::{DeviceKind, Precision};
use crate::error::{Error, Result};

/// Everything configurable about a shoprank process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Data directory: index generations and ranking profiles.
    pub data_dir: PathBuf,
    /// Model manifest (`[encoder]` table: pooling, max length, model folder).
    pub manifest: PathBuf,
    /// Model of the manifest to use (`None`: the manifest's `default`).
    pub model: Option<String>,
    /// Model folder overriding the manifest's `dir`.
    pub model_dir: Option<PathBuf>,
    /// Catalog schema file (`None`: the built-in schema, the same as
    /// `index_schema/products.toml`).
    pub schema: Option<PathBuf>,
    /// jieba user dictionary.
    pub user_dict: PathBuf,
    /// Brand alias file for query understanding.
    pub brand_aliases: PathBuf,
    /// Query-time synonym file.
    pub synonyms: PathBuf,
    /// Encoder device.
    pub device: DeviceKind,
    /// Encoder precision overriding the manifest's `precision` (`f32` or `int8`).
    pub precision: Option<Precision>,
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
    pub gates: Gates,
    /// Threads that encode products in `serve` (background rebuilds, new titles; 0: all
    /// cores), so searches keep the other cores. A CPU query encode is always one thread.
    pub encoder_threads: usize,
    /// Judged queries (`qid<TAB>query`) for `GET /profiles/{name}/eval`.
    pub eval_queries: Option<PathBuf>,
    /// The master key: with it every route but `/health` needs a key; without it `serve`
    /// runs open and only on a loopback address. Never logged or shown.
    #[serde(skip_serializing)]
    pub master_key: Option<crate::util::Secret>,
    /// Key of the HMAC pseudonyms stored in place of shopper ids (default: a random key
    /// the data directory keeps in `user_id.secret`). Never logged or shown.
    #[serde(skip_serializing)]
    pub user_id_secret: Option<crate::util::Secret>,
    /// `Host` names the server answers (empty: this machine's names when open, any when
    /// a master key is set). Guards the open mode against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://shop.example`) allowed to call from a browser (CORS); none by
    /// default. Same-origin pages (the console) need no entry.
    pub cors_origins: Vec<String>,
    /// The folder `POST /admin/reindex` reads catalogs from (default `DATA_DIR/import`).
    pub import_dir: Option<PathBuf>,
    /// Seconds to wait for a request's headers or body before answering 408.
    pub body_timeout_secs: u64,
    /// MiB of request bodies buffered at once across all requests; past it, 429.
    pub body_buffer_mb: usize,
    /// Their judgments (TREC qrels).
    pub eval_qrels: Option<PathBuf>,
    /// Redis shared by replicas (`redis://HOST:PORT/DB`; `None`: everything stays in the
    /// data directory). Never logged or shown: it may hold a password.
    #[serde(skip_serializing)]
    pub redis_url: Option<crate::util::Secret>,
    /// The folder replicas share generations through (with `redis_url`; default
    /// `DATA_DIR/../shared`).
    pub shared_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("data"),
            manifest: PathBuf::from("models/manifest.toml"),
            model: None,
            model_dir: None,
            schema: None,
            user_dict: PathBuf::from("index_schema/userdict.txt"),
            brand_aliases: PathBuf::from("index_schema/brand_aliases.toml"),
            synonyms: PathBuf::from("index_schema/synonyms.txt"),
            device: DeviceKind::Cpu,
            precision: None,
            addr: "127.0.0.1:8080".into(),
            workers: 2,
            // Enough to keep every core busy with a short queue behind it; more only
            // makes accepted searches wait (a request waits 100 ms for a slot, then 429).
            max_in_flight: 4 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            retention_days: 365,
            commit_interval_ms: 500,
            gates: Gates::default(),
            encoder_threads: 1,
            eval_queries: None,
            eval_qrels: None,
            master_key: None,
            user_id_secret: None,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            import_dir: None,
            body_timeout_secs: 10,
            body_buffer_mb: 256,
            redis_url: None,
            shared_dir: None,
        }
    }
}

/// Every setting as a command-line flag that is also read from its `SHOPRANK_*`
/// variable (a flag wins over its variable; both win over the file and the defaults).
/// The CLI flattens this into every command; `--help` lists it under "Settings".
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Settings")]
pub struct SettingsArgs {
    /// Settings file (TOML), overlaid on the defaults.
    #[arg(long, env = "SHOPRANK_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory holding index generations, profiles and events.
    #[arg(long, env = "SHOPRANK_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Model manifest.
    #[arg(long, env = "SHOPRANK_MANIFEST", global = true)]
    pub manifest: Option<PathBuf>,
    /// Model of the manifest (`[models.NAME]`; default: its `default`), or `current`: the
    /// model `shoprank train` last published in DATA_DIR/models/CURRENT.
    #[arg(long, env = "SHOPRANK_MODEL", global = true)]
    pub model: Option<String>,
    /// Model folder (overrides the manifest's `dir`).
    #[arg(long, env = "SHOPRANK_MODEL_DIR", global = true)]
    pub model_dir: Option<PathBuf>,
    /// Catalog schema file (default: the built-in schema).
    #[arg(long, env = "SHOPRANK_SCHEMA", global = true)]
    pub schema: Option<PathBuf>,
    /// jieba user dictionary.
    #[arg(long, env = "SHOPRANK_USER_DICT", global = true)]
    pub user_dict: Option<PathBuf>,
    /// Brand alias file.
    #[arg(long, env = "SHOPRANK_BRAND_ALIASES", global = true)]
    pub brand_aliases: Option<PathBuf>,
    /// Query-time synonym file.
    #[arg(long, env = "SHOPRANK_SYNONYMS", global = true)]
    pub synonyms: Option<PathBuf>,
    /// Device for the encoder.
    #[arg(long, env = "SHOPRANK_DEVICE", global = true, value_enum)]
    pub device: Option<DeviceKind>,
    /// Encoder precision, `f32` or `int8` (default: the manifest's).
    #[arg(long, env = "SHOPRANK_PRECISION", global = true, value_enum)]
    pub precision: Option<Precision>,
    /// HTTP listen address (`serve`).
    #[arg(long, env = "SHOPRANK_ADDR", global = true)]
    pub addr: Option<String>,
    /// HTTP worker threads (`serve`).
    #[arg(long, env = "SHOPRANK_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// Searches in flight before answering 429 (`serve`).
    #[arg(long, env = "SHOPRANK_MAX_IN_FLIGHT", global = true)]
    pub max_in_flight: Option<usize>,
    /// Days of behavior events kept (0: forever).
    #[arg(long, env = "SHOPRANK_RETENTION_DAYS", global = true)]
    pub retention_days: Option<u64>,
    /// Milliseconds within which product writes become searchable (`serve`).
    #[arg(long, env = "SHOPRANK_COMMIT_INTERVAL_MS", global = true)]
    pub commit_interval_ms: Option<u64>,
    /// Threads encoding products in `serve` (0: all cores).
    #[arg(long, env = "SHOPRANK_ENCODER_THREADS", global = true)]
    pub encoder_threads: Option<usize>,
    /// Judged queries for `GET /profiles/{name}/eval` (`serve`).
    #[arg(long, env = "SHOPRANK_EVAL_QUERIES", global = true)]
    pub eval_queries: Option<PathBuf>,
    /// Their TREC qrels.
    #[arg(long, env = "SHOPRANK_EVAL_QRELS", global = true)]
    pub eval_qrels: Option<PathBuf>,
    /// Master key (`serve`); prefer the variable to the flag, which `ps` shows.
    #[arg(
        long,
        env = "SHOPRANK_MASTER_KEY",
        global = true,
        hide_env_values = true
    )]
    pub master_key: Option<String>,
    /// Key of the pseudonyms stored in place of shopper ids (prefer the variable).
    #[arg(
        long,
        env = "SHOPRANK_USER_ID_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub user_id_secret: Option<String>,
    /// `Host` names answered, comma-separated (`serve`).
    #[arg(
        long,
        env = "SHOPRANK_ALLOWED_HOSTS",
        global = true,
        value_delimiter = ','
    )]
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins allowed by CORS, comma-separated (`serve`).
    #[arg(
        long,
        env = "SHOPRANK_CORS_ORIGINS",
        global = true,
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Folder `POST /admin/reindex` reads catalogs from (`serve`).
    #[arg(long, env = "SHOPRANK_IMPORT_DIR", global = true)]
    pub import_dir: Option<PathBuf>,
    /// Seconds to wait for a request's headers or body (`serve`).
    #[arg(long, env = "SHOPRANK_BODY_TIMEOUT_SECS", global = true)]
    pub body_timeout_secs: Option<u64>,
    /// MiB of request bodies buffered at once across requests (`serve`).
    #[arg(long, env = "SHOPRANK_BODY_BUFFER_MB", global = true)]
    pub body_buffer_mb: Option<usize>,
    /// Redis shared by replicas, `redis://HOST:PORT/DB` (`serve`).
    #[arg(
        long = "redis",
        env = "SHOPRANK_REDIS_URL",
        global = true,
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Folder replicas share generations through (`serve --redis`).
    #[arg(long, env = "SHOPRANK_SHARED_DIR", global = true)]
    pub shared_dir: Option<PathBuf>,
}

impl Settings {
    /// The one layered builder: compiled-in defaults, overlaid by the file of
    /// `args.config` (if any), overlaid by every flag or variable given; then default
    /// resource paths are found (see [`Settings::locate_resources`]).
    pub fn load(args: &SettingsArgs) -> Result<Settings> {
        let mut s = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                toml::from_str(&text)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            None => Settings::default(),
        };
        let a = args.clone();
        fn set<T>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut s.data_dir, a.data_dir);
        set(&mut s.manifest, a.manifest);
        set(&mut s.model, a.model.map(Some));
        set(&mut s.model_dir, a.model_dir.map(Some));
        set(&mut s.schema, a.schema.map(Some));
        set(&mut s.user_dict, a.user_dict);
        set(&mut s.brand_aliases, a.brand_aliases);
        set(&mut s.synonyms, a.synonyms);
        set(&mut s.device, a.device);
        set(&mut s.precision, a.precision.map(Some));
        set(&mut s.addr, a.addr);
        set(&mut s.workers, a.workers);
        set(&mut s.max_in_flight, a.max_in_flight);
        set(&mut s.retention_days, a.retention_days);
        set(&mut s.commit_interval_ms, a.commit_interval_ms);
        set(&mut s.encoder_threads, a.encoder_threads);
        set(&mut s.eval_queries, a.eval_queries.map(Some));
        set(&mut s.eval_qrels, a.eval_qrels.map(Some));
        set(
            &mut s.master_key,
            a.master_key.map(|k| Some(crate::util::Secret::new(k))),
        );
        set(
            &mut s.user_id_secret,
            a.user_id_secret.map(|k| Some(crate::util::Secret::new(k))),
        );
        set(&mut s.allowed_hosts, a.allowed_hosts);
        set(&mut s.cors_origins, a.cors_origins);
        set(&mut s.import_dir, a.import_dir.map(Some));
        set(&mut s.body_timeout_secs, a.body_timeout_secs);
        set(&mut s.body_buffer_mb, a.body_buffer_mb);
        set(
            &mut s.redis_url,
            a.redis_url.map(|u| Some(crate::util::Secret::new(u))),
        );
        set(&mut s.shared_dir, a.shared_dir.map(Some));
        s.locate_resources();
        Ok(s)
    }

    /// The default model manifest and text files are relative paths
    /// (`models/manifest.toml`, `index_schema/*`). When one is not found from the current
    /// folder, it is looked up in the standard places, first found wins: the folder named
    /// by `SHOPRANK_HOME`, `$XDG_DATA_HOME/shoprank` (or `~/.local/share/shoprank`),
    /// `/usr/local/share/shoprank`, `/usr/share/shoprank`, and the folders above the
    /// running binary (a `target/release/shoprank` finds its checkout). Paths given in a
    /// file, variable or flag are used as given.
    pub fn locate_resources(&mut self) {
        let defaults = Settings::default();
        let roots = resource_roots();
        for (path, default) in [
            (&mut self.manifest, &defaults.manifest),
            (&mut self.user_dict, &defaults.user_dict),
            (&mut self.brand_aliases, &defaults.brand_aliases),
            (&mut self.synonyms, &defaults.synonyms),
        ] {
            if path == default && !path.exists() {
                if let Some(found) = roots.iter().map(|r| r.join(&*path)).find(|p| p.exists()) {
                    *path = found;
                }
            }
        }
    }

    /// The catalog schema: the file of `schema`, or the built-in one.
    pub fn catalog_schema(&self) -> Result<crate::schema::CatalogSchema> {
        match &self.schema {
            Some(path) => crate::schema::CatalogSchema::load(path),
            None => Ok(crate::schema::CatalogSchema::default()),
        }
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

/// Standard places for the model manifest and text files; see
/// [`Settings::locate_resources`].
fn resource_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(home) = std::env::var_os("SHOPRANK_HOME") {
        roots.push(PathBuf::from(home));
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) => roots.push(PathBuf::from(d).join("shoprank")),
        None => {
            if let Some(h) = std::env::var_os("HOME") {
                roots.push(PathBuf::from(h).join(".local/share/shoprank"));
            }
        }
    }
    roots.push("/usr/local/share/shoprank".into());
    roots.push("/usr/share/shoprank".into());
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots
}

/// Gates a new generation must pass before it goes live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Largest relative change of the product count against the live generation
    /// (0.2 = ±20%); negative turns the check off.
    #[serde(default = "default_max_change")]
    pub max_change: f64,
    /// Queries that must return results; empty uses a few of the new catalog's titles.
    #[serde(default)]
    pub canaries: Vec<String>,
}

fn default_max_change() -> f64 {
    0.2
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            max_change: default_max_change(),
            canaries: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: SettingsArgs,
    }

    #[test]
    fn defaults_load_and_validate() {
        let mut want = Settings::default();
        want.locate_resources();
        let s = Settings::load(&SettingsArgs::default()).unwrap();
        assert_eq!(s, want);
        s.validate().unwrap();
        assert_eq!(
            s.catalog_schema().unwrap(),
            crate::schema::CatalogSchema::default()
        );
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shoprank.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/shop\"\nworkers = 4\nretention_days = 9\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let args = Cli::try_parse_from(["shoprank", "--config", config, "--workers", "8"])
            .unwrap()
            .settings;
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/srv/shop"));
        assert_eq!(s.workers, 8);
        assert_eq!(s.retention_days, 9);
        std::fs::write(&file, "data_dri = \"x\"\n").unwrap();
        assert!(Settings::load(&args)
            .unwrap_err()
            .to_string()
            .contains("data_dri"));
        assert!(Cli::try_parse_from(["shoprank", "--device", "tpu"]).is_err());
        assert!(Cli::try_parse_from(["shoprank", "--workers", "many"]).is_err());
    }

    #[test]
    fn the_master_key_never_shows_in_debug_output() {
        let args = Cli::try_parse_from(["shoprank", "--master-key", "sekrit-123"])
            .unwrap()
            .settings;
        let s = Settings::load(&args).unwrap();
        assert_eq!(
            s.master_key.as_ref().map(|k| k.expose()),
            Some("sekrit-123")
        );
        assert!(!format!("{s:?}").contains("sekrit-123"));
        assert!(!toml::to_string(&s).unwrap().contains("sekrit-123"));
    }

    #[test]
    fn a_variable_sets_its_flag() {
        // The only test that reads this variable, so setting it races with nothing.
        std::env::set_var("SHOPRANK_COMMIT_INTERVAL_MS", "77");
        let args = Cli::try_parse_from(["shoprank"]).unwrap().settings;
        std::env::remove_var("SHOPRANK_COMMIT_INTERVAL_MS");
        assert_eq!(Settings::load(&args).unwrap().commit_interval_ms, 77);
    }
}

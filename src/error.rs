//! Errors: every failure has a stable machine-readable code; user errors (bad input, with a
//! hint how to fix it) are apart from internal ones.

use std::path::{Path, PathBuf};

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in shoprank.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query cannot be searched (empty, too long, not UTF-8).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A request parameter has a bad value.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// Parameter name.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The request names a ranking profile that does not exist.
    #[error("unknown ranking profile `{name}`; known profiles: {known}")]
    UnknownProfile {
        /// The name asked for.
        name: String,
        /// Comma-separated names that exist.
        known: String,
    },
    /// A ranking profile file is malformed.
    #[error("invalid ranking profile {path}: {reason}")]
    InvalidProfile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A merchandising rule is malformed.
    #[error("invalid rule `{name}`: {reason}")]
    InvalidRule {
        /// The rule.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// No merchandising rule with this name.
    #[error("rule `{0}` not found")]
    RuleNotFound(String),
    /// No product with this id.
    #[error("product `{0}` not found")]
    ProductNotFound(String),
    /// A catalog has bad records and the run was not told to skip them.
    #[error("{count} bad record(s) in {path}, nothing was published; first: {first}. Fix them, or pass --skip-invalid to index the valid records and list the rest")]
    BadCatalog {
        /// The catalog file.
        path: PathBuf,
        /// How many records are bad.
        count: usize,
        /// The first error, with line and field.
        first: String,
    },
    /// The catalog file cannot be parsed at all (wrong format, unreadable header).
    #[error("cannot read catalog {path}: {reason}")]
    BadCatalogFile {
        /// The catalog file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data directory holds no index yet.
    #[error("no index in {0}: run `shoprank index --catalog FILE --data-dir {0}` first")]
    NoIndex(PathBuf),
    /// Settings, schema file or manifest are invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// CUDA was asked for in a build without the `cuda` feature.
    #[error("device `cuda` requested, but this build has no CUDA support: rebuild with `--features cuda` or use `--device cpu`")]
    CudaNotCompiled,
    /// The model folder is missing a file or holds an unusable model.
    #[error("model folder {path}: {reason}")]
    Model {
        /// The model folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An event (or a batch of them) is invalid; nothing of the batch was stored.
    #[error("{}: {reason}; nothing of this batch was stored", match index { Some(i) => format!("invalid event at index {i}"), None => "invalid events".to_string() })]
    InvalidEvent {
        /// 0-based index of the bad event in its batch (or line in its file), when known.
        index: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// No user with this id has any stored behavior.
    #[error("user `{0}` not found: no events are stored for this user")]
    UserNotFound(String),
    /// The behavior store is off in this process.
    #[error("the behavior store is not open in this process")]
    NoEventStore,
    /// The behavior store failed.
    #[error("event store: {0}")]
    Store(String),
    /// A product write (PUT/PATCH/DELETE) is malformed; nothing of the batch was applied.
    #[error("{}: {reason}; nothing of this batch was applied", match index { Some(i) => format!("invalid product at index {i}"), None => "invalid product update".to_string() })]
    InvalidProduct {
        /// Position in the batch.
        index: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// This process opened the index read-only (another process holds it for writing).
    #[error("product writes are off in this process: {0}")]
    ReadOnly(String),
    /// A new generation failed a gate and was not published; the live one stays.
    #[error("the new generation failed its gates and was not published (the live generation stays): {0}")]
    GateFailed(String),
    /// A job was cancelled.
    #[error("cancelled; the live generation is untouched")]
    Cancelled,
    /// Another catalog job is running.
    #[error("a catalog job is already running: {0}")]
    JobRunning(String),
    /// An experiment definition is invalid.
    #[error("invalid experiment: {0}")]
    InvalidExperiment(String),
    /// No such experiment.
    #[error("experiment `{0}` not found")]
    ExperimentNotFound(String),
    /// No evaluation set is configured.
    #[error("no evaluation set: set `eval_queries` and `eval_qrels` in the settings")]
    NoEvalSet,
    /// No such job.
    #[error("job `{0}` not found")]
    JobNotFound(String),
    /// The request carries no `Authorization: Bearer KEY` and the server has a master key.
    #[error("this server needs a key: send `Authorization: Bearer KEY`")]
    MissingKey,
    /// The presented key is unknown or expired.
    #[error("invalid key: {0}")]
    Unauthorized(String),
    /// The key may not do this (or the request's host or origin is not allowed).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No key with this id.
    #[error("key `{0}` not found")]
    KeyNotFound(String),
    /// The request body did not arrive in time.
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    /// Rollback asked for, but there is no previous generation.
    #[error("no previous generation to roll back to")]
    NoPreviousGeneration,
    /// The request needs the model, and this server runs without one.
    #[error(
        "this server runs without a model (semantic features are off): vectors cannot be computed"
    )]
    NoModel,
    /// Too many searches are waiting; retry shortly.
    #[error("server busy: too many requests in flight, retry shortly")]
    Overloaded,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// tantivy failed.
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// candle failed during inference.
    #[error("inference error: {0}")]
    Inference(#[from] candle_core::Error),
    /// A bug or broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A bad request parameter.
    pub fn param(name: &str, reason: impl Into<String>) -> Self {
        Error::InvalidParam {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        self.row().0
    }

    /// Whether the caller (fix the input) or the operator (fix the service) must act.
    pub fn kind(&self) -> Kind {
        self.row().1
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        self.row().2
    }

    /// Code, kind and HTTP status of every error, one row each: the one table (the HTTP
    /// layer and `docs/error-codes.md` read it; meilisearch's `make_error_codes!`).
    fn row(&self) -> (&'static str, Kind, u16) {
        use Kind::{Internal, User};
        match self {
            Error::InvalidQuery(_) => ("invalid_query", User, 400),
            Error::InvalidParam { .. } => ("invalid_parameter", User, 400),
            Error::UnknownProfile { .. } => ("unknown_profile", User, 400),
            Error::InvalidEvent { .. } => ("invalid_event", User, 400),
            Error::InvalidProduct { .. } => ("invalid_product", User, 400),
            Error::InvalidExperiment(_) => ("invalid_experiment", User, 400),
            Error::ProductNotFound(_) => ("product_not_found", User, 404),
            Error::UserNotFound(_) => ("user_not_found", User, 404),
            Error::JobNotFound(_) => ("job_not_found", User, 404),
            Error::ExperimentNotFound(_) => ("experiment_not_found", User, 404),
            Error::JobRunning(_) => ("job_running", User, 409),
            Error::InvalidProfile { .. } => ("invalid_profile", User, 422),
            Error::InvalidRule { .. } => ("invalid_rule", User, 422),
            Error::RuleNotFound(_) => ("rule_not_found", User, 404),
            Error::BadCatalog { .. } => ("bad_catalog", User, 422),
            Error::BadCatalogFile { .. } => ("bad_catalog_file", User, 422),
            Error::GateFailed(_) => ("gate_failed", User, 422),
            Error::Cancelled => ("cancelled", User, 422),
            Error::Overloaded => ("overloaded", User, 429),
            Error::MissingKey => ("missing_key", User, 401),
            Error::Unauthorized(_) => ("invalid_key", User, 401),
            Error::Forbidden(_) => ("forbidden", User, 403),
            Error::KeyNotFound(_) => ("key_not_found", User, 404),
            Error::RequestTimeout(_) => ("request_timeout", User, 408),
            Error::NoPreviousGeneration => ("no_previous_generation", User, 409),
            Error::ReadOnly(_) => ("read_only", Internal, 503),
            Error::NoEvalSet => ("no_eval_set", Internal, 503),
            Error::NoEventStore => ("no_event_store", Internal, 503),
            Error::NoModel => ("no_model", Internal, 503),
            Error::NoIndex(_) => ("no_index", Internal, 503),
            Error::Config(_) => ("invalid_configuration", Internal, 500),
            Error::CudaNotCompiled => ("cuda_not_compiled", Internal, 500),
            Error::Model { .. } => ("model_error", Internal, 500),
            Error::Store(_) => ("store_error", Internal, 500),
            Error::Io { .. } => ("io_error", Internal, 500),
            Error::Index(_) => ("index_error", Internal, 500),
            Error::Inference(_) => ("inference_error", Internal, 500),
            Error::Internal(_) => ("internal_error", Internal, 500),
        }
    }
}

/// Who must act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request or input is wrong; the message says how to fix it.
    User,
    /// The service is misconfigured, unavailable or broken; the caller cannot fix it.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of every variant; the exhaustive match below stops the build when a
    /// variant is added without a sample here.
    fn samples() -> Vec<Error> {
        let samples = vec![
            Error::InvalidQuery("the query is empty".into()),
            Error::param("size", "must be within 1..=100, got 0"),
            Error::UnknownProfile {
                name: "fast".into(),
                known: "bm25, default".into(),
            },
            Error::InvalidEvent {
                index: Some(3),
                reason: "unknown field `foo`".into(),
            },
            Error::InvalidProduct {
                index: Some(0),
                reason: "`price` must be a number".into(),
            },
            Error::InvalidExperiment("arm `b` names no profile".into()),
            Error::ProductNotFound("p42".into()),
            Error::UserNotFound("u7".into()),
            Error::JobNotFound("7".into()),
            Error::ExperimentNotFound("exp1".into()),
            Error::JobRunning("job 3 (reindex)".into()),
            Error::InvalidProfile {
                path: "profiles/x.toml".into(),
                reason: "unknown feature `bm52`".into(),
            },
            Error::InvalidRule {
                name: "double11".into(),
                reason: "`starts` must be before `ends`".into(),
            },
            Error::RuleNotFound("double11".into()),
            Error::BadCatalog {
                path: "catalog.jsonl".into(),
                count: 2,
                first: "line 7: missing `title`".into(),
            },
            Error::BadCatalogFile {
                path: "catalog.csv".into(),
                reason: "no header row".into(),
            },
            Error::GateFailed("canary query `口红` returns no results".into()),
            Error::Cancelled,
            Error::Overloaded,
            Error::ReadOnly("another process holds the writer lock".into()),
            Error::NoEvalSet,
            Error::NoEventStore,
            Error::NoIndex("data".into()),
            Error::Config("addr `x` is not an ip:port address".into()),
            Error::CudaNotCompiled,
            Error::Model {
                path: "models/m3e-small".into(),
                reason: "config.json is missing".into(),
            },
            Error::Store("disk full".into()),
            Error::io("data/CURRENT", std::io::Error::other("permission denied")),
            Error::Index(tantivy::TantivyError::InvalidArgument("bad segment".into())),
            Error::Inference(candle_core::Error::Msg("shape mismatch".into())),
            Error::Internal("broken invariant".into()),
            Error::MissingKey,
            Error::Unauthorized("unknown key".into()),
            Error::Forbidden("this key may not use /admin/reindex (needs `admin`)".into()),
            Error::KeyNotFound("a1b2c3".into()),
            Error::RequestTimeout(10),
            Error::NoPreviousGeneration,
            Error::NoModel,
        ];
        let mut seen = [false; 38];
        for e in &samples {
            let i = match e {
                Error::InvalidQuery(_) => 0,
                Error::InvalidParam { .. } => 1,
                Error::UnknownProfile { .. } => 2,
                Error::InvalidEvent { .. } => 3,
                Error::InvalidProduct { .. } => 4,
                Error::InvalidExperiment(_) => 5,
                Error::ProductNotFound(_) => 6,
                Error::UserNotFound(_) => 7,
                Error::JobNotFound(_) => 8,
                Error::ExperimentNotFound(_) => 9,
                Error::JobRunning(_) => 10,
                Error::InvalidProfile { .. } => 11,
                Error::BadCatalog { .. } => 12,
                Error::BadCatalogFile { .. } => 13,
                Error::GateFailed(_) => 14,
                Error::Cancelled => 15,
                Error::Overloaded => 16,
                Error::ReadOnly(_) => 17,
                Error::NoEvalSet => 18,
                Error::NoEventStore => 19,
                Error::NoIndex(_) => 20,
                Error::Config(_) => 21,
                Error::CudaNotCompiled => 22,
                Error::Model { .. } => 23,
                Error::Store(_) => 24,
                Error::Io { .. } => 25,
                Error::Index(_) => 26,
                Error::Inference(_) => 27,
                Error::Internal(_) => 28,
                Error::MissingKey => 29,
                Error::Unauthorized(_) => 30,
                Error::Forbidden(_) => 31,
                Error::KeyNotFound(_) => 32,
                Error::RequestTimeout(_) => 33,
                Error::NoPreviousGeneration => 34,
                Error::NoModel => 35,
                Error::InvalidRule { .. } => 36,
                Error::RuleNotFound(_) => 37,
            };
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s), "a variant has no sample");
        samples
    }

    fn render() -> String {
        let mut out = String::from(
            "# Error codes\n\n\
             Generated from `src/error.rs` by `cargo test error_codes_doc_is_current` \
             (`UPDATE_DOCS=1` rewrites this file). Every error answers `{\"code\", \"message\"}`; \
             `user` errors are fixed by the caller (the message says how), `internal` ones by \
             the operator.\n\n\
             | code | HTTP | kind | example message |\n|---|---|---|---|\n",
        );
        for e in samples() {
            let kind = match e.kind() {
                Kind::User => "user",
                Kind::Internal => "internal",
            };
            let msg = e.to_string().replace('|', "\\|");
            out.push_str(&format!(
                "| `{}` | {} | {kind} | {msg} |\n",
                e.code(),
                e.status()
            ));
        }
        out
    }

    #[test]
    fn codes_are_unique_and_statuses_match_kinds() {
        let samples = samples();
        let codes: std::collections::HashSet<&str> = samples.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), samples.len());
        for e in &samples {
            assert_eq!(
                e.status() >= 500,
                e.kind() == Kind::Internal,
                "{}",
                e.code()
            );
        }
    }

    #[test]
    fn error_codes_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/error-codes.md");
        let want = render();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "docs/error-codes.md is stale: run `UPDATE_DOCS=1 cargo test error_codes_doc_is_current`");
    }
}

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
        match self {
            Error::InvalidQuery(_) => "invalid_query",
            Error::InvalidParam { .. } => "invalid_parameter",
            Error::UnknownProfile { .. } => "unknown_profile",
            Error::InvalidProfile { .. } => "invalid_profile",
            Error::ProductNotFound(_) => "product_not_found",
            Error::BadCatalog { .. } => "bad_catalog",
            Error::BadCatalogFile { .. } => "bad_catalog_file",
            Error::NoIndex(_) => "no_index",
            Error::Config(_) => "invalid_configuration",
            Error::CudaNotCompiled => "cuda_not_compiled",
            Error::Model { .. } => "model_error",
            Error::InvalidEvent { .. } => "invalid_event",
            Error::UserNotFound(_) => "user_not_found",
            Error::NoEventStore => "no_event_store",
            Error::Store(_) => "store_error",
            Error::Overloaded => "overloaded",
            Error::InvalidProduct { .. } => "invalid_product",
            Error::ReadOnly(_) => "read_only",
            Error::GateFailed(_) => "gate_failed",
            Error::Cancelled => "cancelled",
            Error::JobRunning(_) => "job_running",
            Error::JobNotFound(_) => "job_not_found",
            Error::NoEvalSet => "no_eval_set",
            Error::InvalidExperiment(_) => "invalid_experiment",
            Error::ExperimentNotFound(_) => "experiment_not_found",
            Error::Io { .. } => "io_error",
            Error::Index(_) => "index_error",
            Error::Inference(_) => "inference_error",
            Error::Internal(_) => "internal_error",
        }
    }
}

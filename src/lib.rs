//! shoprank: query-aware product search for Chinese e-commerce.
//!
//! The modules follow the pipeline:
//! ```text
//! catalog file -> catalog (validate) -> index (tantivy + product vectors, atomic generations)
//! query -> analysis (normalize, jieba) -> encoder (BERT query vector)
//!       -> retrieve (BM25 ∪ nearest vectors, filters, facets) -> rank (features × profile)
//!       -> engine (wires the stages) -> server (HTTP) / main (CLI)
//! events -> behavior (validate, durable store, user profiles) -> rank's personal features
//! judged queries -> eval (metrics, significance) -> tune (weights); search log -> judgments
//! ```
#![warn(missing_docs)]

pub mod analysis;
pub mod behavior;
pub mod catalog;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod eval;
pub mod eval_personal;
pub mod experiments;
pub mod index;
pub mod intent;
pub mod jobs;
pub mod judgments;
pub mod metrics;
pub mod rank;
pub mod retrieve;
pub mod schema;
pub mod server;
pub mod settings;
pub mod suggest;
pub mod synth;
pub mod tune;

pub use engine::{Engine, SearchRequest, SearchResponse};
pub use error::{Error, Result};

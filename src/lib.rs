//! shoprank: query-aware product search for Chinese e-commerce.
//!
//! The modules follow the pipeline, and each imports only the ones before it in this
//! list (`tests/it/layers.rs` checks it; ARCHITECTURE.md says what each is for):
//! ```text
//! error, util, metrics           error codes; clock, rng, atomic files; counters
//! analysis, schema, encoder      normalize + jieba; catalog schema; BERT (candle)
//! catalog, vectors               validated products; product vectors + nearest scan
//! intent, index                  query understanding model; tantivy generations
//! behavior, suggest, experiments events -> user profiles; completions; A/B arms
//! retrieve, rank                 BM25 ∪ vector candidates, filters; features × profile
//! settings, jobs, keys, cluster  layered settings; catalog jobs with their gates; API keys;
//!                                replicas sharing logs and files through Redis
//! engine                         wires the stages: search, writes, events, text reload
//! offline                        eval, tune, judgments, simulations (above the engine)
//! server / main (cli/)           HTTP / command line
//! ```
#![warn(missing_docs)]

pub mod analysis;
pub mod behavior;
pub mod catalog;
pub mod cluster;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod experiments;
pub mod index;
pub mod intent;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod offline;
pub mod rank;
pub mod retrieve;
pub mod schema;
pub mod server;
pub mod settings;
pub mod suggest;
pub mod util;
pub mod vectors;

pub use engine::{Engine, SearchRequest, SearchResponse};
pub use error::{Error, Result};

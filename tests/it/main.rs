//! The integration tests, as one binary (one link of candle, tantivy and actix instead of
//! one per suite; ripgrep's `tests/tests.rs`). The crash suite (`tests/crash.rs`) stays
//! apart: it kills and restarts server processes and runs for minutes.

#[path = "../common/mod.rs"]
mod common;

mod catalog_jobs;
mod encoder;
mod events;
mod experiments;
mod http;
mod ingest;
mod intent;
mod layers;
mod models;
mod profiles;
mod relevance;
mod rerank;
mod rules;
mod security;
mod taobao_replay;
mod training;
mod tuning;
mod understanding;

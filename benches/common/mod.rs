//! What the benches share: the shared data folder, the pool index and the query log.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoprank::catalog::{read_catalog, Format};
use shoprank::engine::{load_encoder, Engine};
use shoprank::index::{build_live, BuildOptions};
use shoprank::schema::CatalogSchema;
use shoprank::settings::Settings;

/// `../shared/data`, or a clear panic when it is missing.
pub fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    assert!(
        p.is_dir(),
        "{} is missing: benches read the shared data set",
        p.display()
    );
    p
}

/// Default settings with the repository's model manifest.
pub fn settings() -> Settings {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Settings {
        manifest: root.join("models/manifest.toml"),
        ..Settings::default()
    }
}

/// Indexes a shared catalog into `dir` (with the model when present); returns the build's
/// product count.
pub fn build_shared(dir: &Path, file: &str, format: Format) -> shoprank::index::GenerationMeta {
    let schema = CatalogSchema::default();
    let (products, _) = read_catalog(&shared().join(file), format, &schema)
        .unwrap()
        .accept(false)
        .unwrap();
    let encoder = load_encoder(&settings()).ok();
    if encoder.is_none() {
        eprintln!("note: no model found; measuring without vectors");
    }
    let opts = BuildOptions {
        encoder: encoder.as_ref(),
        ..BuildOptions::new(&schema, file)
    };
    build_live(dir, products, opts).unwrap()
}

/// The Multi-CPR pool index in `dir` and an engine over it.
pub fn pool_engine(dir: &Path) -> Engine {
    build_shared(dir, "multicpr_ecom_pool/corpus.tsv", Format::Multicpr);
    Engine::open(dir, load_encoder(&settings()).ok(), None).unwrap()
}

/// The first `n` real queries of the Multi-CPR query log.
pub fn queries(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(shared().join("multicpr_ecom/queries.tsv")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(_, q)| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .take(n)
        .collect()
}

/// The `p` quantile of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

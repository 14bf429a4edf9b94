//! Index build throughput (products/s, encoding included) for the Multi-CPR pool (2,083
//! titles) and the Taobao cosmetics catalog (3,497 products). One build each: a build
//! takes tens of seconds, too long for criterion's repeated sampling.
//!
//! Needs `../shared/data`; encodes with `models/m3e-small` when present.

mod common;

use std::time::Instant;

use shoprank::catalog::Format;

fn main() {
    for (name, file, format) in [
        (
            "multicpr_pool",
            "multicpr_ecom_pool/corpus.tsv",
            Format::Multicpr,
        ),
        (
            "taobao_cosmetics",
            "taobao_cosmetics/snapshots.csv",
            Format::Taobao,
        ),
    ] {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let meta = common::build_shared(dir.path(), file, format);
        // Reading, validating, indexing and encoding all count.
        let secs = started.elapsed().as_secs_f64();
        let n = meta.products;
        assert!(n > 2000, "{name}: only {n} products");
        println!(
            "index {name}: {n} products in {secs:.1}s = {:.0} products/s (encoding {:.1}s = {:.0} products/s, model {})",
            n as f64 / secs,
            meta.encode_secs,
            if meta.encode_secs > 0.0 { n as f64 / meta.encode_secs } else { 0.0 },
            meta.model_id.as_deref().unwrap_or("none")
        );
    }
}

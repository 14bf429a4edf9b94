//! Index build throughput (products/s, encoding included) for the Multi-CPR pool (2,083
//! titles) and the Taobao cosmetics catalog (3,497 products), cold and again with the
//! embedding cache warm; then product writes into the live generation (durable upserts,
//! one per request and in batches of 100, and the commit that makes them searchable).
//! One build each: a build takes tens of seconds, too long for criterion's sampling.
//!
//! Needs `../shared/data`; encodes with `models/m3e-small` when present.

mod common;

use std::time::{Duration, Instant};

use shoprank::catalog::Format;
use shoprank::index::{Outcome, ProductWrite};

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
        if let (Ok(encoder), true) = (
            shoprank::engine::load_encoder(&common::settings()),
            meta.encode_secs > 0.0,
        ) {
            // Useful work: the real tokens of every title (no padding) through the dense
            // layers, against the fp32 peak measured in ../shared/PERF.md (418 GFLOP/s).
            let gen = shoprank::index::open(dir.path(), None).unwrap();
            let texts: Vec<String> = gen.products.iter().map(|p| p.embedding_text()).collect();
            let tokens: usize = encoder.document_tokens(&texts).unwrap().iter().sum();
            let gflops = tokens as f64 * encoder.flops_per_token() / meta.encode_secs / 1e9;
            println!(
                "encode {name}: {tokens} tokens ({:.1} per product), {:.0} tokens/s, {gflops:.0} GFLOP/s = {:.0}% of the 418 GFLOP/s fp32 peak",
                tokens as f64 / n as f64,
                tokens as f64 / meta.encode_secs,
                gflops / 418.0 * 100.0
            );
        }
        // The same catalog again: every vector comes from the embedding cache.
        let started = Instant::now();
        let meta = common::build_shared(dir.path(), file, format);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "rebuild {name} (warm cache): {n} products in {secs:.1}s = {:.0} products/s ({} vectors from the cache)",
            n as f64 / secs,
            meta.cached_vectors
        );
        if name == "taobao_cosmetics" {
            writes(dir.path());
        }
    }
}

/// Durable upserts into the live generation: price changes of existing products (no
/// re-encoding) and new products (encoded), one per request and 100 per request.
fn writes(data_dir: &std::path::Path) {
    let engine = shoprank::engine::Engine::open(
        data_dir,
        shoprank::engine::load_encoder(&common::settings()).ok(),
        None,
    )
    .unwrap();
    let settings = shoprank::settings::Settings {
        data_dir: data_dir.to_path_buf(),
        commit_interval_ms: 60_000,
        ..common::settings()
    };
    engine.enable_writes(&settings).unwrap();
    let gen = engine.generation();
    let existing: Vec<_> = gen
        .products
        .iter()
        .take(2000)
        .map(|p| (**p).clone())
        .collect();
    let mut t = 2_000_000_000;
    let run = |label: &str, batches: Vec<Vec<ProductWrite>>| {
        let n: usize = batches.iter().map(Vec::len).sum();
        let mut lat: Vec<Duration> = Vec::new();
        let started = Instant::now();
        for b in batches {
            let s = Instant::now();
            let out = engine.write_products(b).unwrap();
            assert!(out.iter().all(|o| *o == Outcome::Applied));
            lat.push(s.elapsed());
        }
        let secs = started.elapsed().as_secs_f64();
        let c = Instant::now();
        engine.commit().unwrap();
        lat.sort();
        println!(
            "writes {label}: {n} in {secs:.2}s = {:.0}/s; per request p50 {:.2} ms p99 {:.2} ms; commit {:.1} ms",
            n as f64 / secs,
            common::percentile(&lat, 0.5),
            common::percentile(&lat, 0.99),
            c.elapsed().as_secs_f64() * 1000.0
        );
    };
    let mut price_changes = |k: usize| -> Vec<ProductWrite> {
        existing
            .iter()
            .take(k)
            .map(|p| {
                let mut p = p.clone();
                t += 1;
                p.updated_at = t;
                p.price = Some(p.price.unwrap_or(10.0) + 1.0);
                ProductWrite::Upsert(p)
            })
            .collect()
    };
    let single: Vec<Vec<ProductWrite>> = price_changes(500).into_iter().map(|w| vec![w]).collect();
    run("price change, 1 per request", single);
    let batched: Vec<Vec<ProductWrite>> = price_changes(2000)
        .chunks(100)
        .map(|c| c.to_vec())
        .collect();
    run("price change, 100 per request", batched);
    let new: Vec<ProductWrite> = existing
        .iter()
        .take(500)
        .map(|p| {
            let mut p = p.clone();
            p.id = format!("new-{}", p.id);
            p.title = format!("{} 新款", p.title);
            ProductWrite::Upsert(p)
        })
        .collect();
    run(
        "new product (encoded), 100 per request",
        new.chunks(100).map(|c| c.to_vec()).collect(),
    );
}

//! Single-query search latency over 1,000 real Taobao queries (`multicpr_ecom/queries.tsv`)
//! on the Multi-CPR pool index (2,083 titles), for the `default` (hybrid, encodes the query)
//! and `bm25` profiles. Prints p50/p95/p99 from one pass over the 1,000 queries, then
//! criterion's estimate for a repeated query mix.
//!
//! Needs `../shared/data`; uses `models/m3e-small` when present (run `models/fetch.sh`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use shoprank::catalog::{read_catalog, Format};
use shoprank::engine::{load_encoder, Engine, SearchRequest};
use shoprank::index::{build, BuildOptions};
use shoprank::schema::CatalogSchema;
use shoprank::settings::Settings;

fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    assert!(
        p.is_dir(),
        "{} is missing: benches read the shared data set",
        p.display()
    );
    p
}

fn settings() -> Settings {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Settings {
        manifest: root.join("models/manifest.toml"),
        ..Settings::default()
    }
}

fn engine(dir: &Path) -> Engine {
    let schema = CatalogSchema::default();
    let report = read_catalog(
        &shared().join("multicpr_ecom_pool/corpus.tsv"),
        Format::Multicpr,
        &schema,
    )
    .unwrap();
    let (products, _) = report.accept(false).unwrap();
    let encoder = load_encoder(&settings()).ok();
    if encoder.is_none() {
        eprintln!("note: no model found; measuring BM25-only search");
    }
    build(
        dir,
        products,
        BuildOptions {
            schema: &schema,
            user_dict: None,
            brand_aliases: None,
            encoder: encoder.as_ref(),
            source: "pool".into(),
        },
    )
    .unwrap();
    Engine::open(dir, load_encoder(&settings()).ok(), None).unwrap()
}

fn queries(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(shared().join("multicpr_ecom/queries.tsv")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(_, q)| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .take(n)
        .collect()
}

fn search(engine: &Engine, query: &str, profile: &str) -> usize {
    let mut req = SearchRequest::new(query);
    req.profile = Some(profile.into());
    let res = engine.search(&req).unwrap();
    // A wrong answer must not pass as a fast one: scores are sorted and pages are full.
    assert!(res.hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(res.hits.len(), res.total.min(10));
    res.total
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let queries = queries(1000);
    let semantic = engine.health().semantic;
    for profile in ["default", "bm25"] {
        for q in queries.iter().take(50) {
            search(&engine, q, profile); // warm-up
        }
        let mut times: Vec<Duration> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                search(&engine, q, profile);
                t.elapsed()
            })
            .collect();
        times.sort();
        let mean = times.iter().sum::<Duration>().as_secs_f64() * 1000.0 / times.len() as f64;
        println!(
            "search profile={profile} semantic={semantic} queries={} p50={:.2}ms p95={:.2}ms p99={:.2}ms mean={mean:.2}ms",
            times.len(),
            percentile(&times, 0.50),
            percentile(&times, 0.95),
            percentile(&times, 0.99),
        );
    }
    let mut c = Criterion::default().configure_from_args().sample_size(20);
    for profile in ["default", "bm25"] {
        let mut i = 0;
        c.bench_function(&format!("search/{profile}"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                search(&engine, &queries[i], profile)
            })
        });
    }
    c.final_summary();
}

//! Single-query search latency over 1,000 real Taobao queries (`multicpr_ecom/queries.tsv`)
//! on the Multi-CPR pool index (2,083 titles), for the `default` (hybrid, encodes the query)
//! and `bm25` profiles. Prints p50/p95/p99 from one pass over the 1,000 queries, then
//! criterion's estimate for a repeated query mix.
//!
//! Needs `../shared/data`; uses `models/m3e-small` when present (run `models/fetch.sh`).

mod common;

use std::time::{Duration, Instant};

use common::{percentile, pool_engine, queries};
use criterion::Criterion;
use shoprank::engine::{Engine, SearchRequest};

fn search(engine: &Engine, query: &str, profile: &str) -> usize {
    let mut req = SearchRequest::new(query);
    req.profile = Some(profile.into());
    let res = engine.search(&req).unwrap();
    // A wrong answer must not pass as a fast one: scores are sorted and pages are full.
    assert!(res.hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(res.hits.len(), res.pageable.min(10));
    res.pageable
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engine = pool_engine(dir.path());
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

//! The vector candidate scan on a large catalog: exact int8 scan against the sign-bit
//! prefilter + int8 rescoring that [`Vectors::nearest`] uses above `PREFILTER_ROWS` rows.
//! Reports per-query time of both and how much of the exact top 100 (and top 10) the
//! prefilter keeps, over 500 real queries of the Multi-CPR log.
//!
//!   cargo bench --bench vectors -- DATA_DIR
//!
//! DATA_DIR is a served data directory with vectors, e.g. one built by
//! `shoprank synth --products 100000` + `shoprank index` (see BENCHMARKS.md).

mod common;

use std::time::{Duration, Instant};

use shoprank::vectors::{PREFILTER_ROWS, RESCORE};

fn main() {
    let Some(dir) = std::env::args().skip(1).find(|a| !a.starts_with('-')) else {
        println!("vectors: no DATA_DIR given (cargo bench --bench vectors -- DATA_DIR); skipped");
        return;
    };
    let encoder = shoprank::engine::load_encoder(&common::settings())
        .expect("the vectors bench needs the model: run models/fetch.sh");
    let gen = shoprank::index::open(std::path::Path::new(&dir), Some(&encoder)).unwrap();
    let v = gen.vectors.as_ref().expect("the generation has no vectors");
    let queries: Vec<Vec<f32>> = common::queries(500)
        .iter()
        .map(|q| encoder.encode_query(q).unwrap())
        .collect();
    let (k, mut exact_t, mut fast_t) = (100, Vec::new(), Vec::new());
    let (mut recall100, mut recall10, mut worst) = (0.0, 0.0, 1f64);
    for q in &queries {
        let t = Instant::now();
        let exact = v.nearest_exact(q, k, |_| true);
        exact_t.push(t.elapsed());
        let t = Instant::now();
        let fast = v.nearest(q, k, |_| true);
        fast_t.push(t.elapsed());
        let found = |n: usize| {
            let got: std::collections::HashSet<u32> = fast.iter().take(n).map(|x| x.0).collect();
            exact.iter().take(n).filter(|x| got.contains(&x.0)).count() as f64 / n as f64
        };
        recall100 += found(k);
        recall10 += found(10);
        worst = worst.min(found(k));
    }
    let n = queries.len() as f64;
    let ms = |t: &mut Vec<Duration>| {
        t.sort();
        format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            common::percentile(t, 0.5),
            common::percentile(t, 0.99)
        )
    };
    println!(
        "vectors: {} rows x {} dims, {} queries, top {k}; prefilter above {PREFILTER_ROWS} rows, {RESCORE} rescored",
        v.len(),
        v.dim(),
        queries.len()
    );
    println!("exact int8 scan:            {}", ms(&mut exact_t));
    println!("sign bits + int8 rescoring: {}", ms(&mut fast_t));
    println!(
        "overlap with the exact top {k}: mean {:.4}, worst {:.2}; top 10: mean {:.4}",
        recall100 / n,
        worst,
        recall10 / n
    );
}

//! The vector candidate search on a large catalog: the exact int8 scan against the HNSW
//! graph that [`Vectors::nearest`] uses above `ANN_ROWS` rows. Reports the graph's build
//! time, per-query time of both, and how much of the exact top 100 (and top 10) the graph
//! finds, over 500 real queries of the Multi-CPR log, with and without a filter that keeps
//! a tenth of the rows.
//!
//!   cargo bench --bench vectors -- DATA_DIR [ROWS]
//!
//! DATA_DIR is a data directory with vectors (e.g. the pool: `shoprank index --catalog
//! ../shared/data/multicpr_ecom_pool/corpus.tsv --format multicpr`). With ROWS, the
//! product vectors are grown to that many rows synthetically: row `i` is product
//! `i mod n` plus Gaussian noise (sigma 0.02 per component, then normalized), so the rows
//! keep the catalog's clusters and the nearest neighbours of a query are many near-ties,
//! a harder case than distinct products.

mod common;

use std::time::{Duration, Instant};

use shoprank::vectors::{Vectors, ANN_ROWS};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let Some(dir) = args.first() else {
        println!(
            "vectors: no DATA_DIR given (cargo bench --bench vectors -- DATA_DIR [ROWS]); skipped"
        );
        return;
    };
    let encoder = shoprank::engine::load_encoder(&common::settings())
        .expect("the vectors bench needs the model: run models/fetch.sh");
    let gen = shoprank::index::open(std::path::Path::new(dir), Some(&encoder)).unwrap();
    let base = gen.vectors.as_ref().expect("the generation has no vectors");
    let rows: usize = args
        .get(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(base.len());
    let mut rng = shoprank::util::Rng(7);
    let mut gauss = || {
        // Box-Muller.
        let (u, v) = (rng.unit().max(1e-12), rng.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let t = Instant::now();
    let data: Vec<Vec<f32>> = (0..rows)
        .map(|i| {
            let r = base.row(i % base.len());
            if i < base.len() {
                return r;
            }
            let noisy: Vec<f32> = r.iter().map(|x| x + 0.02 * gauss()).collect();
            let n = noisy.iter().map(|x| x * x).sum::<f32>().sqrt();
            noisy.into_iter().map(|x| x / n).collect()
        })
        .collect();
    let v = Vectors::from_rows(base.dim(), data).unwrap();
    let built = t.elapsed();
    let queries: Vec<Vec<f32>> = common::queries(500)
        .iter()
        .map(|q| encoder.encode_query(q).unwrap())
        .collect();
    println!(
        "vectors: {} rows x {} dims ({} real, the rest synthetic), {} queries, top 100; graph above {ANN_ROWS} rows: {}; load + graph build {:.1} s",
        v.len(),
        v.dim(),
        base.len().min(rows),
        queries.len(),
        v.has_graph(),
        built.as_secs_f64()
    );
    for (label, keep) in [
        ("all rows", (|_| true) as fn(usize) -> bool),
        ("a tenth of the rows", |i| i % 10 == 3),
    ] {
        let (k, mut exact_t, mut fast_t) = (100, Vec::new(), Vec::new());
        let (mut recall100, mut recall10, mut worst) = (0.0, 0.0, 1f64);
        // Recall with ties (ann-benchmarks' rule): a row counts when it scores at least
        // the exact k-th score minus 0.001, so an equally good row is not a miss.
        let (mut tied, mut tied_worst, mut worst_gap) = (0.0, 1f64, 0f32);
        for q in &queries {
            let t = Instant::now();
            let exact = v.nearest_exact(q, k, keep);
            exact_t.push(t.elapsed());
            let t = Instant::now();
            let fast = v.nearest(q, k, keep);
            fast_t.push(t.elapsed());
            let found = |n: usize| {
                let got: std::collections::HashSet<u32> =
                    fast.iter().take(n).map(|x| x.0).collect();
                exact.iter().take(n).filter(|x| got.contains(&x.0)).count() as f64 / n as f64
            };
            recall100 += found(k);
            recall10 += found(10);
            if found(k) < worst {
                worst = found(k);
                worst_gap = exact[0].1 - exact[exact.len() - 1].1;
            }
            let bar = exact.last().map_or(f32::MIN, |x| x.1) - 1e-3;
            let ok = fast.iter().filter(|x| x.1 >= bar).count() as f64 / exact.len() as f64;
            tied += ok;
            tied_worst = tied_worst.min(ok);
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
        println!("  filter: {label}");
        println!("    exact int8 scan:  {}", ms(&mut exact_t));
        println!("    graph + rescore:  {}", ms(&mut fast_t));
        println!(
            "    recall of the exact top {k}: mean {:.4}, worst {:.2} (its top-{k} scores span {:.4}); top 10: mean {:.4}",
            recall100 / n,
            worst,
            worst_gap,
            recall10 / n
        );
        println!(
            "    recall counting ties (within 0.001 of the exact {k}th score): mean {:.4}, worst {:.2}",
            tied / n,
            tied_worst
        );
    }
}

//! Suggestion latency: the 100,000 real queries of `multicpr_ecom/queries.tsv` loaded, then
//! 3,000 prefixes typed three ways (first 1-2 characters, initials, full pinyin of the first
//! characters) taken from 1,000 of those queries. Prints p50/p99 of one pass, then
//! criterion's estimate.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use shoprank::suggest::{pinyin_keys, Suggester};

fn main() {
    let log =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/multicpr_ecom/queries.tsv");
    assert!(
        log.is_file(),
        "{} is missing: benches read the shared data set",
        log.display()
    );
    let queries = Suggester::read_log(&log).unwrap();
    let started = Instant::now();
    let suggester = Suggester::new(queries.clone(), Vec::new());
    println!(
        "suggest index: {} entries from {} queries in {:.0} ms",
        suggester.len(),
        queries.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    let mut prefixes = Vec::new();
    for (q, _) in queries.iter().step_by(97).take(1000) {
        let chars: Vec<char> = q.chars().collect();
        let head: String = chars.iter().take(1 + q.len() % 2).collect();
        let (full, initials) = pinyin_keys(&head);
        prefixes.push(head);
        prefixes.push(initials);
        prefixes.push(full.chars().take(4).collect());
    }
    let run = |p: &str| {
        let s = suggester.suggest(p, 10);
        // A faster wrong answer must not pass: results are sorted by popularity.
        assert!(s.windows(2).all(|w| w[0].score >= w[1].score));
        s.len()
    };
    let mut times: Vec<Duration> = prefixes
        .iter()
        .map(|p| {
            let t = Instant::now();
            run(p);
            t.elapsed()
        })
        .collect();
    times.sort();
    let pct = |f: f64| times[((times.len() - 1) as f64 * f) as usize].as_secs_f64() * 1000.0;
    println!(
        "suggest prefixes={} p50={:.3}ms p99={:.3}ms max={:.3}ms",
        times.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let mut i = 0;
    c.bench_function("suggest/mixed_prefixes", |b| {
        b.iter(|| {
            i = (i + 1) % prefixes.len();
            run(&prefixes[i])
        })
    });
    c.final_summary();
}

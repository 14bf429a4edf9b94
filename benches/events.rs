//! Behavior events: durable ingest throughput through `Engine::record_events` into a redb
//! store in a temp dir (single events, one fsync each, and batches of 100), and search
//! latency for a user with 500 events against no user, on the Multi-CPR pool index (2,083
//! titles) with 200 real Taobao queries (`multicpr_ecom/queries.tsv`). Prints p50/p95/p99
//! from one pass over the 200 queries for both, then criterion's estimates.
//!
//! Needs `../shared/data`; uses `models/m3e-small` when present (run `models/fetch.sh`),
//! which also turns on the `personal` (user vector) feature.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{percentile, pool_engine, queries};
use criterion::{BatchSize, Criterion, Throughput};
use shoprank::behavior::{Event, EventType, RedbStore};
use shoprank::engine::{Engine, SearchRequest};
use shoprank::util::Rng;

/// The user whose profile personalizes the measured searches.
const USER: &str = "bench-user";
/// That user's history.
const USER_EVENTS: usize = 500;
/// Queries in the latency pass.
const QUERIES: usize = 200;

/// The pool index in `dir`, an engine over it, and a redb event store attached.
fn engine(dir: &Path) -> Engine {
    let mut engine = pool_engine(dir);
    let store = RedbStore::open(&dir.join("events").join("events.redb")).unwrap();
    assert_eq!(engine.attach_events(Box::new(store), 365).unwrap(), 0);
    engine
}

/// A product event of `user` on a random pool product within the last 30 days.
fn product_event(rng: &mut Rng, user: String, ids: &[String], now: i64) -> Event {
    const KINDS: [EventType; 5] = [
        EventType::View,
        EventType::Click,
        EventType::Favorite,
        EventType::Cart,
        EventType::Purchase,
    ];
    let e = Event {
        user_id: user,
        kind: KINDS[rng.below(KINDS.len())],
        product_id: Some(ids[rng.below(ids.len())].clone()),
        query: None,
        ts: now - rng.below(30 * 86_400) as i64,
    };
    debug_assert!(e.validate(now).is_ok());
    e
}

/// One search; asserts the answer is sane and personalized exactly when there is a user.
/// Returns the number of results.
fn search(engine: &Engine, query: &str, user: Option<&str>) -> usize {
    let mut req = SearchRequest::new(query);
    req.user = user.map(str::to_string);
    let res = engine.search(&req).unwrap();
    assert_eq!(res.personalized, user.is_some(), "`{query}`");
    assert!(res.hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(res.hits.len(), res.pageable.min(10));
    res.pageable
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let semantic = engine.health().semantic;
    let ids: Vec<String> = engine
        .generation()
        .products
        .iter()
        .map(|p| p.id.clone())
        .collect();
    let now = shoprank::util::now();
    let mut rng = Rng(0x0b5e_55ed);

    // The measured user's history, stored as a shopper's app would send it: batches of 50.
    let history: Vec<Event> = (0..USER_EVENTS)
        .map(|_| product_event(&mut rng, USER.into(), &ids, now))
        .collect();
    for chunk in history.chunks(50) {
        assert_eq!(
            engine.record_events(chunk.to_vec()).unwrap(),
            (chunk.len(), 0)
        );
    }
    let profile = engine.user_profile(USER).unwrap();
    assert_eq!(profile["events"], USER_EVENTS);
    assert_eq!(profile["has_vector"], semantic);

    // Latency: one pass over the same 200 queries without and with the user. The user
    // changes the order of the results, never the result set.
    let queries = queries(QUERIES);
    assert_eq!(queries.len(), QUERIES);
    let totals: Vec<usize> = queries.iter().map(|q| search(&engine, q, None)).collect();
    for (label, user) in [("none", None), ("500_events", Some(USER))] {
        for q in queries.iter().take(20) {
            search(&engine, q, user); // warm-up
        }
        let mut times: Vec<Duration> = queries
            .iter()
            .zip(&totals)
            .map(|(q, &total)| {
                let t = Instant::now();
                assert_eq!(search(&engine, q, user), total, "`{q}`");
                t.elapsed()
            })
            .collect();
        times.sort();
        let mean = times.iter().sum::<Duration>().as_secs_f64() * 1000.0 / times.len() as f64;
        println!(
            "search user={label} semantic={semantic} queries={} p50={:.2}ms p95={:.2}ms p99={:.2}ms mean={mean:.2}ms",
            times.len(),
            percentile(&times, 0.50),
            percentile(&times, 0.95),
            percentile(&times, 0.99),
        );
    }

    // Ingest: every call commits (fsyncs) before it returns.
    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let mut ingest_users = 0usize;
    let mut next_user = move || {
        ingest_users = (ingest_users + 1) % 1000;
        format!("ingest-{ingest_users}")
    };
    let mut group = c.benchmark_group("ingest");
    for batch in [1usize, 100] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    (0..batch)
                        .map(|_| product_event(&mut rng, next_user(), &ids, now))
                        .collect::<Vec<_>>()
                },
                |events| assert_eq!(engine.record_events(events).unwrap(), (batch, 0)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("search");
    for (label, user) in [("no_user", None), ("user_500_events", Some(USER))] {
        let mut i = 0;
        group.bench_function(label, |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                assert_eq!(search(&engine, &queries[i], user), totals[i]);
            })
        });
    }
    group.finish();
    c.final_summary();

    // Ingest went to other users: the measured user was never touched.
    assert!(engine.user_profile("ingest-1").is_ok());
    assert_eq!(engine.user_profile(USER).unwrap()["events"], USER_EVENTS);
}

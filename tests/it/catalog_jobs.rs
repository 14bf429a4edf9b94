//! Catalog jobs: incremental writes (ordered, idempotent, durable, searchable after a
//! commit), background rebuilds with gates, live swap under load, writes taken during a
//! rebuild, cancellation, rollback and the embedding cache.
//!
//! Size: ~650 lines, one suite: writes, rebuilds, gates and rollback share their helpers.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::test as atest;
use serde_json::{json, Value};

use shoprank::engine::{Engine, SearchRequest};
use shoprank::index::{Outcome, Patch, ProductWrite};
use shoprank::jobs::{JobStatus, ReindexSpec};
use shoprank::server::AppState;
use shoprank::settings::Settings;

fn settings(data_dir: &Path, commit_interval_ms: u64) -> Settings {
    Settings {
        data_dir: data_dir.to_path_buf(),
        commit_interval_ms,
        ..Settings::default()
    }
}

/// An engine over the demo catalog that takes writes, committing each request.
fn writable(data_dir: &Path) -> Engine {
    let engine = common::open_engine(data_dir, None);
    engine
        .enable_writes(&settings(data_dir, 0))
        .expect("writes enabled");
    engine
}

fn upsert(engine: &Engine, record: Value) -> Outcome {
    let writes = engine
        .parse_products(record.to_string().as_bytes())
        .expect("valid record");
    engine.write_products(writes).expect("write stored")[0]
}

fn ids(engine: &Engine, query: &str) -> Vec<String> {
    let mut req = SearchRequest::new(query);
    req.size = 100;
    engine
        .search(&req)
        .expect("search answers")
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect()
}

fn wait_for_job(engine: &Engine, id: &str) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = engine.job(id).expect("job exists");
        if s.state != "running" {
            return s;
        }
        assert!(Instant::now() < deadline, "job still running: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn demo_spec() -> ReindexSpec {
    ReindexSpec {
        catalog: common::fixture("demo_catalog.jsonl"),
        ..ReindexSpec::default()
    }
}

#[test]
fn upserts_patches_and_deletes_are_searchable_and_survive_a_reopen() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let outcome = upsert(
        &engine,
        json!({"id": "new-1", "title": "透明硅胶跑步鞋 超轻款", "brand": "李宁", "category": "运动/跑步鞋", "price": 199, "updated_at": 100}),
    );
    assert_eq!(outcome, Outcome::Applied);
    assert!(ids(&engine, "透明硅胶跑步鞋").contains(&"new-1".to_string()));

    let patched = engine
        .write_products(vec![ProductWrite::Patch(
            "new-1".into(),
            Patch {
                price: Some(99.0),
                in_stock: Some(false),
                ..Patch::default()
            },
        )])
        .unwrap();
    assert_eq!(patched, [Outcome::Applied]);
    let p = engine.product("new-1").unwrap();
    assert_eq!(
        (p.price, p.in_stock, p.title.as_str()),
        (Some(99.0), false, "透明硅胶跑步鞋 超轻款")
    );
    // The price filter sees the patched price.
    let mut req = SearchRequest::new("透明硅胶跑步鞋");
    req.filters.price_max = Some(100.0);
    req.size = 100;
    let hits: Vec<String> = engine
        .search(&req)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert!(hits.contains(&"new-1".to_string()), "{hits:?}");

    // A demo product deleted: gone from search and lookups.
    assert!(
        ids(&engine, "海南香蕉").contains(&"demo-040".to_string())
            || engine.product("demo-040").is_ok()
    );
    let deleted = engine
        .write_products(vec![ProductWrite::Delete("demo-040".into(), None)])
        .unwrap();
    assert_eq!(deleted, [Outcome::Applied]);
    assert!(engine.product("demo-040").is_err());
    let title = common::demo_products()
        .into_iter()
        .find(|p| p.id == "demo-040")
        .unwrap()
        .title;
    assert!(!ids(&engine, &title).contains(&"demo-040".to_string()));
    let live = engine.health().products;
    assert_eq!(live, 120, "120 demo + 1 new - 1 deleted");

    // Reopened from disk: the change log brings everything back.
    drop(engine);
    let engine = writable(data.path());
    assert_eq!(engine.product("new-1").unwrap().price, Some(99.0));
    assert!(engine.product("demo-040").is_err());
    assert!(ids(&engine, "透明硅胶跑步鞋").contains(&"new-1".to_string()));
    assert!(!ids(&engine, &title).contains(&"demo-040".to_string()));
    assert_eq!(engine.health().products, 120);
}

#[test]
fn an_older_update_never_overwrites_a_newer_one() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let rec = |title: &str, at: i64| json!({"id": "x", "title": title, "updated_at": at});
    assert_eq!(upsert(&engine, rec("新款 跑步鞋", 200)), Outcome::Applied);
    assert_eq!(upsert(&engine, rec("旧款 跑步鞋", 100)), Outcome::Stale);
    assert_eq!(upsert(&engine, rec("新款 跑步鞋", 200)), Outcome::Unchanged);
    let del = |at| {
        engine
            .write_products(vec![ProductWrite::Delete("x".into(), Some(at))])
            .unwrap()[0]
    };
    assert_eq!(del(150), Outcome::Stale);
    assert_eq!(engine.product("x").unwrap().title, "新款 跑步鞋");
    assert_eq!(del(300), Outcome::Applied);
    assert_eq!(del(300), Outcome::Unchanged);
    // The tombstone remembers when: an upsert from before the delete stays deleted.
    assert_eq!(upsert(&engine, rec("中款 跑步鞋", 250)), Outcome::Stale);
    assert!(engine.product("x").is_err());
    assert_eq!(upsert(&engine, rec("回归 跑步鞋", 400)), Outcome::Applied);
    assert_eq!(engine.product("x").unwrap().title, "回归 跑步鞋");
    // A patch with an old timestamp is stale too; unknown ids are not found.
    let patch = |id: &str, at| {
        engine
            .write_products(vec![ProductWrite::Patch(
                id.into(),
                Patch {
                    price: Some(1.0),
                    updated_at: Some(at),
                    ..Patch::default()
                },
            )])
            .unwrap()[0]
    };
    assert_eq!(patch("x", 399), Outcome::Stale);
    assert_eq!(patch("nope", 500), Outcome::NotFound);
    // Two writes of one product in one batch apply in order.
    let writes = engine
        .parse_products(
            r#"[{"id":"y","title":"A 跑步鞋","updated_at":10},{"id":"y","title":"B 跑步鞋","updated_at":11}]"#.as_bytes(),
        )
        .unwrap();
    assert_eq!(
        engine.write_products(writes).unwrap(),
        [Outcome::Applied, Outcome::Applied]
    );
    assert_eq!(engine.product("y").unwrap().title, "B 跑步鞋");
}

#[test]
fn writes_become_searchable_within_the_commit_interval() {
    let data = common::demo_index(None);
    let engine = Arc::new(common::open_engine(data.path(), None));
    engine
        .enable_writes(&settings(data.path(), 500))
        .expect("writes enabled");
    engine.start_background();
    upsert(
        &engine,
        json!({"id": "soon", "title": "磨砂黑 保温杯 大容量", "updated_at": 5}),
    );
    let started = Instant::now();
    while !ids(&engine, "磨砂黑保温杯").contains(&"soon".to_string()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not searchable after 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("searchable after {:?}", started.elapsed());
}

#[test]
fn an_uncommitted_write_is_indexed_again_after_a_restart() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    engine
        .enable_writes(&settings(data.path(), 60_000))
        .unwrap();
    upsert(
        &engine,
        json!({"id": "late", "title": "荣耀 透明 保温杯", "updated_at": 9}),
    );
    // Acknowledged but never committed to tantivy: the process "dies" here.
    drop(engine);
    let engine = writable(data.path());
    assert!(ids(&engine, "荣耀透明保温杯").contains(&"late".to_string()));
}

#[test]
fn a_rebuild_under_writes_and_searches_loses_nothing_and_fails_no_search() {
    let model = common::tiny_model();
    let encoder = common::tiny_encoder(&model);
    let data = tempfile::tempdir().unwrap();
    common::build_index(data.path(), common::demo_products(), Some(&encoder));
    let engine = Arc::new(common::open_engine(
        data.path(),
        Some(common::tiny_encoder(&model)),
    ));
    engine.enable_writes(&settings(data.path(), 0)).unwrap();
    let before = engine.health().generation;

    let stop = Arc::new(AtomicBool::new(false));
    let searcher = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let res = engine
                    .search(&SearchRequest::new("手机壳"))
                    .expect("no search fails");
                assert!(!res.hits.is_empty(), "a search saw an empty index");
                n += 1;
            }
            n
        })
    };
    // Writes acknowledged after the job was accepted must all reach the new generation
    // (earlier ones are the catalog file's business: it replaces the catalog).
    let accepted = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, stop, accepted) = (engine.clone(), stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut during = 0;
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("w{i}");
                let w = engine
                    .parse_products(
                        json!({"id": id, "title": format!("透明 手机壳 {i}"), "updated_at": 1000 + i})
                            .to_string()
                            .as_bytes(),
                    )
                    .unwrap();
                let after = accepted.load(Ordering::Acquire);
                let running = engine.health().generation;
                assert_eq!(engine.write_products(w).unwrap(), [Outcome::Applied]);
                if running == engine.health().generation && after {
                    during += 1;
                }
                if after {
                    acked.push(id);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (acked, during)
        })
    };
    let job = engine.reindex(demo_spec()).expect("job starts");
    accepted.store(true, Ordering::Release);
    let status = wait_for_job(&engine, &job.id);
    assert_eq!(status.state, "succeeded", "{status:?}");
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let searches = searcher.join().expect("searches never failed");
    let (acked, during) = writer.join().unwrap();
    engine.commit().unwrap();
    let health = engine.health();
    assert_ne!(health.generation, before, "the new generation is live");
    assert_eq!(
        status.generation.as_deref(),
        Some(health.generation.as_str())
    );
    assert!(status.gates.is_some(), "the gates ran");
    for id in &acked {
        assert!(
            engine.product(id).is_ok(),
            "acknowledged write {id} is lost"
        );
    }
    assert!(health.products >= 120 + acked.len());
    eprintln!(
        "{searches} searches, {} writes ({during} during the rebuild)",
        acked.len()
    );
    assert!(during > 0, "no write landed during the rebuild");
    // The new generation's vectors came from the embedding cache.
    let meta: Value = serde_json::from_slice(
        &std::fs::read(
            data.path()
                .join("generations")
                .join(&health.generation)
                .join("meta.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["cached_vectors"], 120);
}

#[test]
fn gates_and_cancellation_leave_the_live_generation_alone() {
    let data = common::demo_index(None);
    let engine = Arc::new(writable(data.path()));
    let before = engine.health().generation;
    let small = data.path().join("small.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(common::fixture("demo_catalog.jsonl"))
        .unwrap()
        .lines()
        .take(30)
        .map(String::from)
        .collect();
    std::fs::write(&small, lines.join("\n")).unwrap();
    let job = engine
        .reindex(ReindexSpec {
            catalog: small.clone(),
            ..ReindexSpec::default()
        })
        .unwrap();
    let status = wait_for_job(&engine, &job.id);
    assert_eq!(status.state, "failed");
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or("")
            .contains("30 products against 120"),
        "{status:?}"
    );
    assert_eq!(engine.health().generation, before);
    assert_eq!(engine.health().products, 120);
    let gens = std::fs::read_dir(data.path().join("generations"))
        .unwrap()
        .count();
    assert_eq!(gens, 1, "the rejected build was removed");

    // A bad record rejects the run and reports it; the live generation stays.
    let job = engine
        .reindex(ReindexSpec {
            catalog: common::fixture("bad_catalog.jsonl"),
            ..ReindexSpec::default()
        })
        .unwrap();
    let status = wait_for_job(&engine, &job.id);
    assert_eq!(status.state, "failed");
    assert!(status.invalid_records > 0);
    let report = std::fs::read_to_string(status.errors_file.as_ref().unwrap()).unwrap();
    let first: Value = serde_json::from_str(report.lines().next().unwrap()).unwrap();
    for key in ["line", "id", "field", "reason"] {
        assert!(first.get(key).is_some(), "{first}");
    }
    assert_eq!(engine.health().generation, before);

    // Cancelled right away: nothing changes.
    let job = engine.reindex(demo_spec()).unwrap();
    engine.cancel_job(&job.id).unwrap();
    let status = wait_for_job(&engine, &job.id);
    assert_eq!(status.state, "cancelled", "{status:?}");
    assert_eq!(engine.health().generation, before);
    // One job at a time.
    let job = engine.reindex(demo_spec()).unwrap();
    assert!(
        engine.reindex(demo_spec()).is_err() || engine.job(&job.id).unwrap().state != "running"
    );
    assert_eq!(wait_for_job(&engine, &job.id).state, "succeeded");
    assert_ne!(engine.health().generation, before);
}

#[test]
fn rollback_brings_back_the_previous_catalog_with_later_writes() {
    let data = common::demo_index(None);
    let engine = Arc::new(writable(data.path()));
    let first = engine.health().generation;
    let trimmed = data.path().join("trimmed.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(common::fixture("demo_catalog.jsonl"))
        .unwrap()
        .lines()
        .skip(5)
        .map(String::from)
        .collect();
    std::fs::write(&trimmed, lines.join("\n")).unwrap();
    let job = engine
        .reindex(ReindexSpec {
            catalog: trimmed,
            ..ReindexSpec::default()
        })
        .unwrap();
    assert_eq!(wait_for_job(&engine, &job.id).state, "succeeded");
    assert!(engine.product("demo-001").is_err());
    upsert(
        &engine,
        json!({"id": "after", "title": "磨砂黑 手机壳", "updated_at": 7}),
    );
    let name = engine.rollback().unwrap();
    assert_eq!(name, first);
    assert_eq!(engine.health().generation, first);
    assert!(
        engine.product("demo-001").is_ok(),
        "the old catalog is back"
    );
    assert!(
        engine.product("after").is_ok(),
        "a write taken after the rebuild survives"
    );
    assert!(ids(&engine, "磨砂黑手机壳").contains(&"after".to_string()));
    drop(engine);
    let engine = writable(data.path());
    assert_eq!(engine.health().generation, first);
    assert!(engine.product("after").is_ok());
}

#[test]
fn a_generation_published_by_another_process_is_followed_with_the_writes_taken_meanwhile() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let before = engine.health().generation;
    // `shoprank index` in another process: built and published beside the live engine.
    common::build_index(data.path(), common::demo_products(), None);
    // A write the old generation took before the switch.
    upsert(
        &engine,
        json!({"id": "between", "title": "透明 保温杯", "updated_at": 3}),
    );
    assert!(engine.follow_current().unwrap());
    assert_ne!(engine.health().generation, before);
    assert!(engine.product("between").is_ok());
    assert!(!engine.follow_current().unwrap());
}

#[test]
fn a_second_writer_is_refused_and_read_only_engines_say_so() {
    let data = common::demo_index(None);
    let _engine = writable(data.path());
    let other = common::open_engine(data.path(), None);
    let err = other.enable_writes(&settings(data.path(), 0)).unwrap_err();
    assert_eq!(err.code(), "read_only");
    let err = other
        .write_products(vec![ProductWrite::Delete("demo-001".into(), None)])
        .unwrap_err();
    assert_eq!(err.code(), "read_only");
}

#[actix_web::test]
async fn the_write_api_answers_bad_input_with_clear_errors() {
    let data = common::demo_index(None);
    let engine = Arc::new(writable(data.path()));
    let state = AppState::new(engine.clone(), 64);
    let put = |body: &[u8]| {
        atest::TestRequest::put()
            .uri("/products")
            .set_payload(body.to_vec())
    };

    let (s, b) = common::call(
        &state,
        put(r#"[{"id":"h1","title":"透明 手机壳","price":5}]"#.as_bytes()),
    )
    .await;
    assert_eq!((s, b["applied"].clone()), (StatusCode::OK, json!(1)), "{b}");
    let (s, b) = common::call(&state, put(b"{not json")).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_product")),
        "{b}"
    );
    let (s, b) = common::call(&state, put(b"\xff\xfe")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["message"].as_str().unwrap().contains("UTF-8"), "{b}");
    let (s, b) = common::call(
        &state,
        put(br#"[{"id":"h2","title":"ok"},{"id":"h3","title":"x","colour":"red"}]"#),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let msg = b["message"].as_str().unwrap();
    assert!(msg.contains("index 1") && msg.contains("colour"), "{msg}");
    assert!(
        engine.product("h2").is_err(),
        "nothing of a rejected batch is applied"
    );
    let (s, _) = common::call(&state, put(br#"{"id":"h4","title":"x","price":-3}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let patch = |id: &str, body: &str| {
        atest::TestRequest::patch()
            .uri(&format!("/products/{id}"))
            .set_payload(body.to_string())
    };
    let (s, b) = common::call(&state, patch("h1", r#"{"price": 3.5}"#)).await;
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("applied"))
    );
    assert_eq!(engine.product("h1").unwrap().price, Some(3.5));
    let (s, b) = common::call(&state, patch("h1", r#"{"title": "new"}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = common::call(&state, patch("nope", r#"{"price": 1}"#)).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("product_not_found"))
    );
    let (s, _) = common::call(&state, atest::TestRequest::delete().uri("/products/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = common::call(
        &state,
        atest::TestRequest::delete().uri("/products/h1?updated_at=abc"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = common::call(&state, atest::TestRequest::delete().uri("/products/h1")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = common::call(&state, atest::TestRequest::get().uri("/products/h1")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let reindex = |body: &str| {
        atest::TestRequest::post()
            .uri("/admin/reindex")
            .set_payload(body.to_string())
    };
    let (s, _) = common::call(&state, reindex(r#"{"catalogue": "x"}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = common::call(&state, reindex(r#"{"catalog": "/no/such/file.jsonl"}"#)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = common::call(&state, reindex(r#"{"catalog": "no-such-file.jsonl"}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let import = data.path().join("import");
    std::fs::create_dir_all(&import).unwrap();
    std::fs::copy(
        common::fixture("demo_catalog.jsonl"),
        import.join("demo.jsonl"),
    )
    .unwrap();
    let body = json!({"catalog": "demo.jsonl"}).to_string();
    let (s, b) = common::call(&state, reindex(&body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let status = wait_for_job(&engine, &id);
    assert_eq!(status.state, "succeeded");
    let (s, b) = common::call(
        &state,
        atest::TestRequest::get().uri(&format!("/admin/jobs/{id}")),
    )
    .await;
    assert_eq!(
        (s, b["state"].as_str()),
        (StatusCode::OK, Some("succeeded"))
    );
    assert_eq!(b["total"], 120);
    let (s, _) = common::call(&state, atest::TestRequest::get().uri("/admin/jobs/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A read-only engine refuses writes with 503.
    let ro = AppState::new(Arc::new(common::open_engine(data.path(), None)), 64);
    let (s, b) = common::call(&ro, put(br#"{"id":"z","title":"x"}"#)).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("read_only"))
    );
}

#[test]
fn a_rebuild_encodes_only_products_whose_text_changed() {
    let model = common::tiny_model();
    let encoder = common::tiny_encoder(&model);
    let data = tempfile::tempdir().unwrap();
    let first = common::build_index(data.path(), common::demo_products(), Some(&encoder));
    assert_eq!(first.cached_vectors, 0);
    let mut products = common::demo_products();
    for p in products.iter_mut().take(3) {
        p.title.push_str(" 新款");
    }
    let changed = products[0].clone();
    let second = common::build_index(data.path(), products, Some(&encoder));
    assert_eq!(
        second.cached_vectors, 117,
        "only the 3 changed titles are encoded"
    );
    // The stored vector of a changed product is its new text's, the same as encoding it now.
    let engine = common::open_engine(data.path(), Some(common::tiny_encoder(&model)));
    let gen = engine.generation();
    let ord = gen.by_id[&changed.id] as usize;
    let fresh = &encoder
        .encode_documents(&[changed.embedding_text()], |_| {})
        .unwrap()[0];
    // Stored as int8 codes: within half a quantization step per component.
    let stored = gen.vectors.as_ref().unwrap().row(ord);
    let step = fresh.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
    let worst = fresh
        .iter()
        .zip(&stored)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= step / 2.0 + 1e-6,
        "stored vector differs from a fresh encode by {worst}"
    );
}

#[test]
fn leftovers_of_a_crashed_build_are_removed_when_writes_start() {
    let data = common::demo_index(None);
    let gens = data.path().join("generations");
    let live = std::fs::read_to_string(data.path().join("CURRENT")).unwrap();
    // A build killed before its rename, and one killed after the rename but before the
    // switch of CURRENT.
    std::fs::create_dir_all(gens.join("g1.building/tantivy")).unwrap();
    std::fs::create_dir_all(gens.join("g2")).unwrap();
    std::fs::write(gens.join("g2/meta.json"), "{}").unwrap();
    let _engine = writable(data.path());
    let left: Vec<String> = std::fs::read_dir(&gens)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(left, [live.trim().to_string()]);
}

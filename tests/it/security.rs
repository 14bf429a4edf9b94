//! Issue 12's defects, each pinned by a test named after it, and the key model: with a
//! master key every route but `/health` needs a key; keys carry actions and search keys
//! can carry filters a request cannot widen.
//!
//! Size: ~770 lines: one test per defect of issue 12, each short, sharing the keyed-state
//! helpers at the top.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::test as atest;
use actix_web::web::Data;
use serde_json::{json, Value};

use shoprank::engine::Engine;
use shoprank::keys::Keys;
use shoprank::server::{run_blocking, AppState, ServerConfig};
use shoprank::settings::Settings;

use crate::common;

const MASTER: &str = "test-master-key-0123456789";

fn writable(data: &Path) -> Arc<Engine> {
    let engine = common::open_engine(data, None);
    let settings = Settings {
        data_dir: data.to_path_buf(),
        commit_interval_ms: 0,
        ..Settings::default()
    };
    engine.enable_writes(&settings).expect("writes enabled");
    Arc::new(engine)
}

fn keyed(engine: Arc<Engine>, data: &Path) -> Data<AppState> {
    let config = ServerConfig {
        keys: Keys::open(data, Some(MASTER)).unwrap(),
        ..ServerConfig::open(64, data)
    };
    AppState::with_config(engine, config)
}

/// The data directory's import folder, created.
fn import_dir(data: &Path) -> std::path::PathBuf {
    let dir = data.join("import");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bearer(req: atest::TestRequest, key: &str) -> atest::TestRequest {
    req.insert_header(("authorization", format!("Bearer {key}")))
}

fn search(q: &str) -> atest::TestRequest {
    atest::TestRequest::get().uri(&format!("/search?q={}", common::urlencode(q)))
}

fn code(b: &Value) -> Option<&str> {
    b["code"].as_str()
}

fn wait_for_job(engine: &Engine, id: &str) -> shoprank::jobs::JobStatus {
    let t = Instant::now();
    loop {
        let s = engine.job(id).unwrap();
        if s.state != "running" && s.state != "queued" {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "job {id} never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[actix_web::test]
async fn reindex_refuses_server_files_and_leaks_nothing() {
    let data = common::demo_index(None);
    let state = AppState::new(writable(data.path()), 64);
    let import = import_dir(data.path());
    std::os::unix::fs::symlink("/etc/passwd", import.join("passwd")).unwrap();
    for (catalog, why) in [
        ("/proc/self/environ", "absolute path"),
        ("/etc/passwd", "absolute path"),
        ("../../../../etc/passwd", "`..`"),
        ("passwd", "symlink out of the folder"),
    ] {
        let body = json!({"catalog": catalog, "format": "openbg"}).to_string();
        let req = atest::TestRequest::post()
            .uri("/admin/reindex")
            .set_payload(body);
        let (s, b) = common::call(&state, req).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{why}: {b}"
        );
        let text = b.to_string();
        assert!(
            !text.contains("PATH=") && !text.contains("root:"),
            "{why} leaked: {text}"
        );
        assert!(
            !text.contains(&*data.path().to_string_lossy()),
            "{why}: the error shows a server path: {text}"
        );
    }
}

#[actix_web::test]
async fn forced_reindex_cannot_replace_the_catalog_with_one_product() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let state = AppState::new(engine.clone(), 64);
    let import = import_dir(data.path());
    std::fs::write(
        import.join("one.jsonl"),
        r#"{"id":"x1","title":"只有一件"}"#,
    )
    .unwrap();
    let before = engine.generation().live_count();
    let body = json!({"catalog": "one.jsonl", "force": true}).to_string();
    let req = atest::TestRequest::post()
        .uri("/admin/reindex")
        .set_payload(body);
    let (s, b) = common::call(&state, req).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let status = wait_for_job(&engine, b["id"].as_str().unwrap());
    assert_eq!(status.state, "failed", "{status:?}");
    assert_eq!(engine.generation().live_count(), before);
    assert!(
        engine.product("demo-001").is_ok(),
        "the catalog is still live"
    );
}

#[actix_web::test]
async fn a_dropped_request_gives_its_in_flight_slot_back() {
    let data = common::demo_index(None);
    let state = AppState::new(Arc::new(common::open_engine(data.path(), None)), 1);
    // 50 requests whose clients went away mid-search (their futures dropped).
    for _ in 0..50 {
        let slow = run_blocking(&state, || {
            std::thread::sleep(Duration::from_millis(20));
            Ok(())
        });
        let r = actix_web::rt::time::timeout(Duration::from_millis(1), slow).await;
        assert!(r.is_err() || r.unwrap().is_err());
    }
    // A panicking call gives its slot back too.
    let panicked = run_blocking(&state, || -> shoprank::Result<()> { panic!("boom") }).await;
    assert!(panicked.is_err());
    let t = Instant::now();
    while state.in_flight() > 0 && t.elapsed() < Duration::from_secs(5) {
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state.in_flight(), 0);
    let (s, b) = common::call(&state, search("口红")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[actix_web::test]
async fn with_a_master_key_every_route_but_health_needs_a_key() {
    let data = common::demo_index(None);
    let state = keyed(writable(data.path()), data.path());
    let put = || {
        atest::TestRequest::put()
            .uri("/products")
            .set_payload(r#"{"id":"k1","title":"钥匙扣"}"#)
    };
    let events = || {
        atest::TestRequest::post()
            .uri("/events")
            .set_payload(r#"{"user_id":"u","type":"view","product_id":"demo-001"}"#)
    };
    for (req, what) in [
        (put(), "PUT /products"),
        (events(), "POST /events"),
        (search("口红"), "GET /search"),
        (atest::TestRequest::get().uri("/users"), "GET /users"),
        (
            atest::TestRequest::delete().uri("/users/u1"),
            "DELETE /users",
        ),
        (
            atest::TestRequest::post().uri("/admin/rollback"),
            "rollback",
        ),
    ] {
        let (s, b) = common::call(&state, req).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::UNAUTHORIZED, Some("missing_key")),
            "{what}"
        );
    }
    let (s, _) = common::call(&state, atest::TestRequest::get().uri("/health")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = common::call(&state, bearer(search("口红"), "not-a-key")).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNAUTHORIZED, Some("invalid_key"))
    );
    let (s, _) = common::call(&state, bearer(search("口红"), MASTER)).await;
    assert_eq!(s, StatusCode::OK);
    // The scheme name is case-insensitive (RFC 7235).
    let lower = search("口红").insert_header(("authorization", format!("bearer {MASTER}")));
    let (s, _) = common::call(&state, lower).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = common::call(&state, bearer(put(), MASTER)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[actix_web::test]
async fn a_search_key_gets_403_on_admin_routes_and_dies_when_revoked() {
    let data = common::demo_index(None);
    let state = keyed(writable(data.path()), data.path());
    let create = |body: Value| {
        bearer(atest::TestRequest::post().uri("/keys"), MASTER).set_payload(body.to_string())
    };
    let (s, b) = common::call(
        &state,
        create(json!({"actions": ["search"], "description": "storefront"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let key = b["key"].as_str().unwrap().to_string();
    let id = b["id"].as_str().unwrap().to_string();
    let (s, _) = common::call(&state, bearer(search("口红"), &key)).await;
    assert_eq!(s, StatusCode::OK);
    for req in [
        atest::TestRequest::post()
            .uri("/admin/reindex")
            .set_payload("{}"),
        atest::TestRequest::get().uri("/users"),
        atest::TestRequest::get().uri("/users/u1/profile"),
        atest::TestRequest::get().uri("/metrics"),
        atest::TestRequest::put().uri("/products").set_payload("{}"),
        atest::TestRequest::get().uri("/keys"),
        atest::TestRequest::put().uri("/profiles/x").set_payload(""),
    ] {
        let (s, b) = common::call(&state, bearer(req, &key)).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{b}"
        );
    }
    // Keys are listed without secrets, and only for the master key.
    let (s, b) = common::call(
        &state,
        bearer(atest::TestRequest::get().uri("/keys"), MASTER),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!b.to_string().contains(&key), "a secret is listed: {b}");
    let (s, _) = common::call(
        &state,
        bearer(
            atest::TestRequest::delete().uri(&format!("/keys/{id}")),
            MASTER,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = common::call(&state, bearer(search("口红"), &key)).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNAUTHORIZED, Some("invalid_key"))
    );
    let (s, b) = common::call(&state, create(json!({"actions": ["everything"]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}

#[actix_web::test]
async fn a_storefront_key_cannot_widen_its_filters() {
    let data = common::demo_index(None);
    let state = keyed(writable(data.path()), data.path());
    let req = bearer(atest::TestRequest::post().uri("/keys"), MASTER)
        .set_payload(json!({"actions": ["search"], "filters": {"brand": "兰蔻"}}).to_string());
    let (s, b) = common::call(&state, req).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let key = b["key"].as_str().unwrap().to_string();
    let (s, b) = common::call(&state, bearer(search("面霜"), &key)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let hits = b["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    assert!(
        hits.iter()
            .all(|h| h["brand"].as_str().unwrap().contains("兰蔻")),
        "{b}"
    );
    let other = atest::TestRequest::get().uri(&format!(
        "/search?q={}&brand={}",
        common::urlencode("口红"),
        common::urlencode("完美日记")
    ));
    let mine = hits[0]["id"].as_str().unwrap().to_string();
    let (s, b) = common::call(&state, bearer(other, &key)).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{b}"
    );
    // Products of other brands do not exist for this key.
    let get = |id: &str| atest::TestRequest::get().uri(&format!("/products/{id}"));
    let (s, _) = common::call(&state, bearer(get(&mine), &key)).await;
    assert_eq!(s, StatusCode::OK);
    let theirs = common::demo_products()
        .into_iter()
        .find(|p| !p.brand.contains("兰蔻"))
        .unwrap()
        .id;
    let (s, _) = common::call(&state, bearer(get(&theirs), &key)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn keys_need_a_master_key() {
    let data = common::demo_index(None);
    let state = AppState::new(writable(data.path()), 64);
    let req = atest::TestRequest::post()
        .uri("/keys")
        .set_payload(r#"{"actions":["search"]}"#);
    let (s, b) = common::call(&state, req).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{b}"
    );
}

#[actix_web::test]
async fn a_foreign_host_header_is_refused_in_open_mode() {
    let data = common::demo_index(None);
    let state = AppState::new(writable(data.path()), 64);
    let (s, b) = common::call(
        &state,
        search("口红").insert_header(("host", "evil.example")),
    )
    .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{b}"
    );
    for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
        let (s, _) = common::call(&state, search("口红").insert_header(("host", host))).await;
        assert_eq!(s, StatusCode::OK, "{host}");
    }
}

#[actix_web::test]
async fn a_cross_site_post_is_refused() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let state = AppState::new(engine.clone(), 64);
    // A page elsewhere posting plain text (no CORS preflight) to wipe or change state.
    let forged = atest::TestRequest::post()
        .uri("/admin/reindex")
        .insert_header(("host", "127.0.0.1:8080"))
        .insert_header(("origin", "http://evil.example"))
        .insert_header(("content-type", "text/plain"))
        .set_payload(r#"{"catalog":"x.jsonl","force":true}"#);
    let (s, b) = common::call(&state, forged).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{b}"
    );
    // A page on this machine but another port is another origin.
    let other_port = atest::TestRequest::post()
        .uri("/admin/reload")
        .insert_header(("host", "127.0.0.1:8080"))
        .insert_header(("origin", "http://127.0.0.1:3000"));
    let (s, b) = common::call(&state, other_port).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{b}"
    );
    // The console (same origin) may post.
    let same = atest::TestRequest::post()
        .uri("/admin/reload")
        .insert_header(("host", "127.0.0.1:8080"))
        .insert_header(("origin", "http://127.0.0.1:8080"));
    let (s, b) = common::call(&state, same).await;
    assert_ne!(s, StatusCode::FORBIDDEN, "{b}");
    // An origin allowed by `cors_origins` gets a preflight answer and the header.
    let config = ServerConfig {
        cors_origins: vec!["https://shop.example".into()],
        ..ServerConfig::open(64, data.path())
    };
    let cors = AppState::with_config(engine, config);
    let svc = atest::init_service(shoprank::server::app(cors.clone())).await;
    let pre = atest::TestRequest::default()
        .method(actix_web::http::Method::OPTIONS)
        .uri("/search")
        .insert_header(("origin", "https://shop.example"))
        .to_request();
    let res = atest::call_service(&svc, pre).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        res.headers().get("access-control-allow-origin").unwrap(),
        "https://shop.example"
    );
}

#[actix_web::test]
async fn rollback_without_a_previous_generation_is_a_409() {
    let data = common::demo_index(None);
    let state = AppState::new(writable(data.path()), 64);
    let (s, b) = common::call(&state, atest::TestRequest::post().uri("/admin/rollback")).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, Some("no_previous_generation")),
        "{b}"
    );
}

#[actix_web::test]
async fn an_updated_at_far_in_the_future_is_refused() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let state = AppState::new(engine.clone(), 64);
    // Year 2096: accepted, it would make the product unchangeable until a rebuild.
    let req = atest::TestRequest::patch()
        .uri("/products/demo-001")
        .set_payload(r#"{"price": 1, "updated_at": 3999999999}"#);
    let (s, b) = common::call(&state, req).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, Some("invalid_product")),
        "{b}"
    );
    let req = atest::TestRequest::patch()
        .uri("/products/demo-001")
        .set_payload(r#"{"price": 2}"#);
    let (s, b) = common::call(&state, req).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// Issue 12, defect 3: reindex -> an acknowledged PUT or PATCH -> rollback brought the
/// product back with the catalog's values.
#[actix_web::test]
async fn rollback_keeps_acknowledged_writes() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let state = AppState::new(engine.clone(), 64);
    let import = import_dir(data.path());
    std::fs::copy(
        common::fixture("demo_catalog.jsonl"),
        import.join("demo.jsonl"),
    )
    .unwrap();
    let req = atest::TestRequest::post()
        .uri("/admin/reindex")
        .set_payload(r#"{"catalog": "demo.jsonl"}"#);
    let (s, b) = common::call(&state, req).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let job = wait_for_job(&engine, b["id"].as_str().unwrap());
    assert_eq!(job.state, "succeeded", "{job:?}");
    let put = atest::TestRequest::put()
        .uri("/products")
        .set_payload(r#"{"id":"demo-001","title":"回滚后仍在的新标题","price":1}"#);
    let (s, b) = common::call(&state, put).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let patch = atest::TestRequest::patch()
        .uri("/products/demo-002")
        .set_payload(r#"{"price": 4321}"#);
    let (s, b) = common::call(&state, patch).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = common::call(&state, atest::TestRequest::post().uri("/admin/rollback")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        engine.product("demo-001").unwrap().title,
        "回滚后仍在的新标题"
    );
    assert_eq!(engine.product("demo-002").unwrap().price, Some(4321.0));
}

/// Defect 3 under load: writes keep coming while a reindex publishes and a rollback runs;
/// every product ends with the last title acknowledged for it.
#[actix_web::test]
async fn rollback_keeps_acknowledged_writes_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let data = common::demo_index(None);
    // As `serve` runs: writes acknowledged when durable, committed in the background.
    let engine = common::open_engine(data.path(), None);
    let settings = Settings {
        data_dir: data.path().to_path_buf(),
        commit_interval_ms: 300,
        ..Settings::default()
    };
    engine.enable_writes(&settings).expect("writes enabled");
    let engine = Arc::new(engine);
    engine.start_background();
    let import = import_dir(data.path());
    std::fs::copy(
        common::fixture("demo_catalog.jsonl"),
        import.join("demo.jsonl"),
    )
    .unwrap();
    let spec = shoprank::jobs::ReindexSpec {
        catalog: import.join("demo.jsonl"),
        no_model: true,
        ..Default::default()
    };
    let job = engine.reindex(spec).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = std::collections::HashMap::new();
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                let id = format!("demo-{:03}", 1 + n % 20);
                let title = format!("并发写入 {n}");
                let body = json!({"id": id, "title": title, "price": 1});
                let writes = engine.parse_products(body.to_string().as_bytes()).unwrap();
                if engine.write_products(writes).is_ok() {
                    last.insert(id, title);
                }
                n += 1;
            }
            last
        })
    };
    let status = wait_for_job(&engine, &job.id);
    assert_eq!(status.state, "succeeded", "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    engine.rollback().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Release);
    let last = writer.join().unwrap();
    // Acknowledged writes are searchable within the commit interval.
    std::thread::sleep(Duration::from_millis(900));
    let wrong: Vec<String> = last
        .iter()
        .filter(|(id, title)| engine.product(id).unwrap().title != **title)
        .map(|(id, title)| {
            format!(
                "{id}: want {title}, have {}",
                engine.product(id).unwrap().title
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} products lost writes:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Issue 12, defect 4: with `serve` running, writes acknowledged while a CLI
/// `shoprank index` was reading its catalog were not replayed into the new generation
/// (the build took its starting point after reading). The write here lands in exactly
/// that moment: between reading the catalog and building.
#[test]
fn writes_acknowledged_while_the_cli_reads_the_catalog_are_kept() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let settings = Settings {
        data_dir: data.path().to_path_buf(),
        ..Settings::default()
    };
    let spec = shoprank::jobs::ReindexSpec {
        catalog: common::fixture("demo_catalog.jsonl"),
        no_model: true,
        ..Default::default()
    };
    let write_now = |_: &[shoprank::catalog::RecordError]| {
        let body = json!({"id": "demo-003", "title": "读目录时写入的标题", "price": 3});
        let writes = engine.parse_products(body.to_string().as_bytes())?;
        engine.write_products(writes).map(|_| ())
    };
    let prepared = shoprank::jobs::prepare(
        &settings,
        &spec,
        None,
        None,
        &write_now,
        None,
        &|_| {},
        &|| false,
    )
    .unwrap();
    shoprank::index::publish(data.path(), prepared.built).unwrap();
    assert!(
        engine.follow_current().unwrap(),
        "serve switches to the CLI's generation"
    );
    engine.commit().unwrap();
    assert_eq!(
        engine.product("demo-003").unwrap().title,
        "读目录时写入的标题"
    );
}

/// Issue 12: `/health` said ok while every search answered 429. It now says `degraded`,
/// and `/ready` (for load balancers) answers 503.
#[actix_web::test]
async fn health_reports_exhausted_slots_and_ready_fails() {
    let data = common::demo_index(None);
    let state = AppState::new(Arc::new(common::open_engine(data.path(), None)), 0);
    let (s, b) = common::call(&state, atest::TestRequest::get().uri("/health")).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("degraded")),
        "{b}"
    );
    let (s, _) = common::call(&state, atest::TestRequest::get().uri("/ready")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let ok = AppState::new(Arc::new(common::open_engine(data.path(), None)), 4);
    let (s, b) = common::call(&ok, atest::TestRequest::get().uri("/ready")).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("ok")),
        "{b}"
    );
}

/// Issue 12, defect 9: a binary file given to reindex wrote a 63 MB error report on every
/// run, reports were never removed, and job errors showed absolute server paths.
#[actix_web::test]
async fn a_binary_catalog_writes_a_bounded_report_and_shows_no_server_path() {
    let data = common::demo_index(None);
    let engine = writable(data.path());
    let state = AppState::new(engine.clone(), 64);
    let import = import_dir(data.path());
    // 20,000 lines of bytes that are not JSON.
    let junk: Vec<u8> = (0..20_000)
        .flat_map(|i: u32| {
            let mut line = vec![0xffu8, 0xfe, (i % 251) as u8];
            line.extend(std::iter::repeat_n(b'\x01', 500));
            line.push(b'\n');
            line
        })
        .collect();
    std::fs::write(import.join("binary.jsonl"), junk).unwrap();
    let mut last = Value::Null;
    for _ in 0..(shoprank::jobs::KEPT_REPORTS + 3) {
        let req = atest::TestRequest::post()
            .uri("/admin/reindex")
            .set_payload(r#"{"catalog": "binary.jsonl"}"#);
        let (s, b) = common::call(&state, req).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let id = b["id"].as_str().unwrap().to_string();
        let status = wait_for_job(&engine, &id);
        assert_eq!(status.state, "failed");
        let (_, b) = common::call(
            &state,
            atest::TestRequest::get().uri(&format!("/admin/jobs/{id}")),
        )
        .await;
        last = b;
    }
    let text = last.to_string();
    let root = data.path().canonicalize().unwrap();
    assert!(
        !text.contains(&*root.to_string_lossy()) && !text.contains(&*data.path().to_string_lossy()),
        "a server path is shown: {text}"
    );
    let jobs = data.path().join("jobs");
    let reports: Vec<_> = std::fs::read_dir(&jobs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".errors.jsonl"))
        .collect();
    assert!(
        reports.len() <= shoprank::jobs::KEPT_REPORTS + 1,
        "{} reports kept",
        reports.len()
    );
    for r in reports {
        let size = r.metadata().unwrap().len();
        assert!(size < 1 << 20, "{} is {size} bytes", r.path().display());
    }
}

/// Privacy: a shopper's data can be handed over (and, as before, erased) on request.
#[actix_web::test]
async fn a_users_data_exports_then_erases() {
    let data = common::demo_index(None);
    let store = data.path().join("events.redb");
    let engine = Arc::new(common::open_engine_with_events(data.path(), &store));
    let state = AppState::new(engine, 64);
    let events = r#"[{"user_id":"u9","type":"view","product_id":"demo-001"},{"user_id":"u9","type":"search","query":"口红"},{"user_id":"u8","type":"view","product_id":"demo-002"}]"#;
    let post = atest::TestRequest::post()
        .uri("/events")
        .set_payload(events);
    let (s, b) = common::call(&state, post).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = common::call(&state, atest::TestRequest::get().uri("/users/u9/export")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let got = b["events"].as_array().unwrap();
    assert_eq!(got.len(), 2, "{b}");
    assert!(got.iter().all(|e| e["user_id"] == "u9"));
    assert_eq!(b["profile"]["events"], 2, "{b}");
    let (s, _) = common::call(&state, atest::TestRequest::delete().uri("/users/u9")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = common::call(&state, atest::TestRequest::get().uri("/users/u9/export")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Privacy: the event store holds HMAC pseudonyms, never the shopper ids sent; a store
/// written before pseudonyms is rewritten when it is opened; profiles, export and erasure
/// still work by the id.
#[actix_web::test]
async fn shopper_ids_are_stored_as_pseudonyms() {
    use shoprank::behavior::{Event, EventStore, EventType, RedbStore};
    let data = common::demo_index(None);
    let store_path = data.path().join("events.redb");
    // A store as this release's predecessor wrote it: the same tables, a clear id, no
    // pseudonym marker.
    {
        let db = redb::Database::create(&store_path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let events: redb::TableDefinition<(&str, u64), &[u8]> =
                redb::TableDefinition::new("events");
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let event = Event {
                user_id: "old-shopper".into(),
                kind: EventType::View,
                product_id: Some("demo-001".into()),
                query: None,
                ts: shoprank::util::now(),
            };
            let bytes = serde_json::to_vec(&event).unwrap();
            tx.open_table(events)
                .unwrap()
                .insert(("old-shopper", 0), bytes.as_slice())
                .unwrap();
            tx.open_table(meta).unwrap().insert("next_seq", 1).unwrap();
        }
        tx.commit().unwrap();
    }
    let engine = Arc::new(common::open_engine_with_events(data.path(), &store_path));
    let state = AppState::new(engine.clone(), 64);
    let post = atest::TestRequest::post()
        .uri("/events")
        .set_payload(r#"{"user_id":"alice@example.com","type":"view","product_id":"demo-002"}"#);
    let (s, b) = common::call(&state, post).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for user in ["old-shopper", "alice@example.com"] {
        let uri = format!("/users/{}/profile", common::urlencode(user));
        let (s, b) = common::call(&state, atest::TestRequest::get().uri(&uri)).await;
        assert_eq!(
            (s, b["user_id"].as_str()),
            (StatusCode::OK, Some(user)),
            "{b}"
        );
    }
    drop(state);
    drop(engine);
    let store = RedbStore::open(&store_path).unwrap();
    let mut ids = Vec::new();
    store.scan(&mut |e| ids.push(e.user_id)).unwrap();
    assert_eq!(ids.len(), 2);
    assert!(
        ids.iter()
            .all(|id| id.starts_with("u_") && !id.contains("alice") && !id.contains("old")),
        "{ids:?}"
    );
    let bytes = std::fs::read(&store_path).unwrap();
    let needle = b"alice@example.com";
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the clear id is in the file"
    );
}

/// Personal suggestions list a shopper's own recent searches: a `search` key (a
/// storefront's, handed to browsers) must not read anyone's history through `/suggest`.
#[actix_web::test]
async fn suggest_with_a_user_needs_the_users_action() {
    let data = common::demo_index(None);
    let state = keyed(writable(data.path()), data.path());
    let create = |actions: Value| {
        bearer(atest::TestRequest::post().uri("/keys"), MASTER)
            .set_payload(json!({"actions": actions}).to_string())
    };
    let (_, b) = common::call(&state, create(json!(["search"]))).await;
    let search_key = b["key"].as_str().unwrap().to_string();
    let (_, b) = common::call(&state, create(json!(["search", "users"]))).await;
    let users_key = b["key"].as_str().unwrap().to_string();
    let get = |uri: &str| atest::TestRequest::get().uri(uri);
    let (s, _) = common::call(&state, bearer(get("/suggest?q=k"), &search_key)).await;
    assert_eq!(s, StatusCode::OK);
    for uri in [
        "/suggest?q=k&user=alice",
        "/suggest?q=k&%75ser=alice",
        "/suggest?q=k&user",
    ] {
        let (s, b) = common::call(&state, bearer(get(uri), &search_key)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}: {b}");
    }
    let (s, b) = common::call(&state, bearer(get("/suggest?q=k&user=alice"), &users_key)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[actix_web::test]
async fn rules_need_the_rules_action() {
    let data = common::demo_index(None);
    let state = keyed(writable(data.path()), data.path());
    let create = |actions: Value| {
        bearer(atest::TestRequest::post().uri("/keys"), MASTER)
            .set_payload(json!({"actions": actions}).to_string())
    };
    let (_, b) = common::call(&state, create(json!(["search", "profiles"]))).await;
    let tuner_key = b["key"].as_str().unwrap().to_string();
    let (_, b) = common::call(&state, create(json!(["rules"]))).await;
    let merchandiser_key = b["key"].as_str().unwrap().to_string();
    let rule = "[then]\nhide = [\"demo-001\"]\n";
    let put = || {
        atest::TestRequest::put()
            .uri("/rules/hide1")
            .set_payload(rule)
    };
    for req in [
        put(),
        atest::TestRequest::get().uri("/rules"),
        atest::TestRequest::get().uri("/rules/hide1"),
        atest::TestRequest::delete().uri("/rules/hide1"),
        atest::TestRequest::post().uri("/rules/hide1/restore?version=1"),
    ] {
        let (s, b) = common::call(&state, bearer(req, &tuner_key)).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{b}"
        );
    }
    let (s, b) = common::call(&state, put()).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNAUTHORIZED, Some("missing_key"))
    );
    let (s, b) = common::call(&state, bearer(put(), &merchandiser_key)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = common::call(&state, bearer(search("口红"), &merchandiser_key)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a rules key does not search");
}

/// Issue 15 (A/B testing a model): a profile's `model` names a folder of
/// `DATA_DIR/models`; no name from a request reaches a folder outside it, even one that
/// holds a loadable model, nor a hidden one there (the gate's scratch folders).
#[actix_web::test]
async fn a_profile_model_cannot_name_a_path_outside_the_model_folder() {
    let data = common::demo_index(None);
    let outside = tempfile::tempdir().unwrap();
    for dir in [
        data.path().join("escape"),
        data.path().join("models/.gate-x"),
        outside.path().join("m"),
    ] {
        common::tiny_model_at(&dir, "m");
    }
    // A symlink in the model folder that points out of it is refused too.
    std::os::unix::fs::symlink(outside.path().join("m"), data.path().join("models/link")).unwrap();
    let engine = writable(data.path());
    let state = keyed(engine.clone(), data.path());
    let put = atest::TestRequest::put()
        .uri("/profiles/x")
        .set_payload("model = \"link\"\n[weights]\nbm25 = 1.0\n");
    let (s, b) = common::call(&state, bearer(put, MASTER)).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_profile"))
    );
    let message = b["message"].as_str().unwrap();
    assert!(
        message.contains("points outside DATA_DIR/models"),
        "{message}"
    );
    let absolute = outside.path().join("m").to_string_lossy().to_string();
    for name in [
        "../escape",
        "..",
        ".",
        "../../escape",
        "models/../../escape",
        "a/b",
        "a\\b",
        absolute.as_str(),
        ".gate-x",
        "%2e%2e%2fescape",
        "",
        "m\u{0}",
    ] {
        let body = toml::to_string(&json!({"model": name, "weights": {"bm25": 1.0}})).unwrap();
        let put = atest::TestRequest::put()
            .uri("/profiles/x")
            .set_payload(body);
        let (s, b) = common::call(&state, bearer(put, MASTER)).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_profile")),
            "{name:?}: {b}"
        );
        let message = b["message"].as_str().unwrap();
        assert!(message.contains("not a model name"), "{name:?}: {message}");
        assert!(
            !message.contains(&*data.path().to_string_lossy()),
            "{message}"
        );
    }
    assert!(
        !data.path().join("profiles/x.toml").exists(),
        "nothing saved"
    );
    assert_eq!(engine.health().models.len(), 0, "no model loaded");
    // A hand-edited file is refused the same way; the old profiles stay live.
    std::fs::write(
        data.path().join("profiles/x.toml"),
        "model = \"../escape\"\n[weights]\nbm25 = 1.0\n",
    )
    .unwrap();
    let err = engine.reload_profiles().unwrap_err();
    assert_eq!(err.code(), "invalid_profile", "{err}");
    assert!(engine.profiles().get("x").is_err());
}

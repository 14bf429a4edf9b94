//! Behavior events over HTTP through actix's test service: `POST /events`, the user
//! profile, erasure, and what a profile does to `GET /search`. The engine runs on the demo
//! catalog without a model, with a redb event store in the data dir's temp folder.
//!
//! Size: ~680 lines, one suite over one event store and its helpers.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::test;
use serde_json::{json, Value};
use tempfile::TempDir;

use shoprank::behavior::{Personalization, MAX_BATCH};
use shoprank::server::{app, AppState};
use shoprank::Engine;

/// A demo data dir, its event store file and an engine with the store attached.
struct Ctx {
    data: TempDir,
    store: PathBuf,
    engine: Arc<Engine>,
}

struct Response {
    status: StatusCode,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The JSON body of a response that must have `status`.
    fn expect(&self, status: StatusCode) -> Value {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        body
    }
}

impl Ctx {
    fn new() -> Ctx {
        let data = common::demo_index(None);
        let store = data.path().join("events").join("events.redb");
        let engine = Arc::new(common::open_engine_with_events(data.path(), &store));
        Ctx {
            data,
            store,
            engine,
        }
    }

    /// Drops the engine (closing the store) and opens a fresh one on the same data dir and
    /// store file, as a server restart does: profiles are rebuilt from the stored events.
    fn restart(self) -> Ctx {
        let Ctx {
            data,
            store,
            engine,
        } = self;
        let engine = Arc::into_inner(engine).expect("no request holds the engine");
        drop(engine);
        let engine = Arc::new(common::open_engine_with_events(data.path(), &store));
        Ctx {
            data,
            store,
            engine,
        }
    }

    async fn call(&self, req: test::TestRequest) -> Response {
        let service = test::init_service(app(AppState::new(self.engine.clone(), 64))).await;
        let res = test::call_service(&service, req.to_request()).await;
        let status = res.status();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = test::read_body(res).await.to_vec();
        assert!(
            content_type.starts_with("application/json"),
            "content type `{content_type}` (status {status}): {}",
            String::from_utf8_lossy(&body)
        );
        Response { status, body }
    }

    async fn post_events(&self, body: impl Into<Vec<u8>>) -> Response {
        let req = test::TestRequest::post()
            .uri("/events")
            .set_payload(body.into());
        self.call(req).await
    }

    /// Posts a batch that must be stored whole; returns the count stored.
    async fn record(&self, body: impl Into<Vec<u8>>) -> u64 {
        let body = self.post_events(body).await.expect(StatusCode::OK);
        assert_eq!(body["dropped_past_retention"], 0, "{body}");
        body["stored"].as_u64().expect("stored is a count")
    }

    async fn profile(&self, user: &str) -> Response {
        let uri = format!("/users/{}/profile", common::urlencode(user));
        self.call(test::TestRequest::get().uri(&uri)).await
    }

    async fn delete(&self, user: &str) -> Value {
        let uri = format!("/users/{}", common::urlencode(user));
        self.call(test::TestRequest::delete().uri(&uri))
            .await
            .expect(StatusCode::OK)
    }

    /// `GET /search` with every result on one page and explain on, optionally for a user.
    async fn search(&self, q: &str, user: Option<&str>) -> Value {
        let mut uri = format!("/search?q={}&size=100&explain=true", common::urlencode(q));
        if let Some(u) = user {
            uri.push_str(&format!("&user={}", common::urlencode(u)));
        }
        let body = self
            .call(test::TestRequest::get().uri(&uri))
            .await
            .expect(StatusCode::OK);
        let total = body["total"].as_u64().unwrap() as usize;
        assert!(total > 1 && total <= 100, "`{q}`: {total} results");
        assert_eq!(hits(&body).len(), total);
        body
    }
}

fn hits(body: &Value) -> &Vec<Value> {
    body["hits"].as_array().expect("hits is an array")
}

fn ids(body: &Value) -> Vec<&str> {
    hits(body)
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect()
}

fn position(body: &Value, id: &str) -> usize {
    ids(body)
        .iter()
        .position(|&h| h == id)
        .unwrap_or_else(|| panic!("`{id}` is not among {:?}", ids(body)))
}

/// Asserts a search ranked exactly like the non-personal one: same hits, scores, explain
/// and facets, and says it was not personalized.
fn assert_not_personalized(body: &Value, base: &Value, who: &str) {
    assert_eq!(body["personalized"], false, "{who}");
    assert_eq!(base["personalized"], false);
    assert_eq!(body["hits"], base["hits"], "{who}");
    assert_eq!(body["total"], base["total"], "{who}");
    assert_eq!(body["facets"], base["facets"], "{who}");
}

/// A recent time: an hour ago, well inside the retention window.
fn recent() -> i64 {
    shoprank::util::now() - 3600
}

/// One product event as a JSON object.
fn event(user: &str, kind: &str, product: &str, ts: i64) -> Value {
    json!({"user_id": user, "type": kind, "product_id": product, "ts": ts})
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// The demo catalog's Lancôme (兰蔻) products that are not face creams: a serum, a
/// lipstick and a cleanser.
const LANCOME_OTHERS: [&str; 3] = ["demo-064", "demo-066", "demo-067"];
/// The Lancôme face cream, one of four face creams (兰蔻, 自然堂, 欧莱雅, 雅诗兰黛).
const LANCOME_CREAM: &str = "demo-065";

/// Stores a Lancôme shopper's history (clicks and a cart, no face cream) in three requests,
/// one per body shape; returns the number of events.
async fn record_lancome_fan(ctx: &Ctx, user: &str) -> u64 {
    let t = recent();
    let one = event(user, "click", LANCOME_OTHERS[0], t);
    assert_eq!(ctx.record(one.to_string()).await, 1);
    let array = json!([
        event(user, "click", LANCOME_OTHERS[1], t + 10),
        event(user, "cart", LANCOME_OTHERS[1], t + 20),
    ]);
    assert_eq!(ctx.record(array.to_string()).await, 2);
    let lines = ndjson(&[
        event(user, "click", LANCOME_OTHERS[2], t + 30),
        json!({"user_id": user, "type": "search", "query": "兰蔻", "ts": t + 40}),
        event(user, "click", LANCOME_OTHERS[0], t + 50),
    ]);
    assert_eq!(ctx.record(lines).await, 3);
    6
}

fn feature<'a>(hit: &'a Value, name: &str) -> &'a Value {
    hit["explain"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no feature `{name}` in {}", hit["explain"]))
}

#[actix_web::test]
async fn events_in_every_body_shape_personalize_the_next_search() {
    let ctx = Ctx::new();
    let base = ctx.search("面霜", None).await;
    assert_eq!(base["personalized"], false);
    let before = position(&base, LANCOME_CREAM);
    assert!(
        before > 0,
        "the Lancôme cream already leads without a user: {:?}",
        ids(&base)
    );
    for h in hits(&base) {
        assert!(h["explain"].get("personal_gate").is_none(), "{h}");
        assert!(
            h["explain"]["features"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["name"] != "brand_affinity"),
            "{h}"
        );
    }

    record_lancome_fan(&ctx, "fan").await;
    let mine = ctx.search("面霜", Some("fan")).await;
    assert_eq!(mine["personalized"], true, "{mine}");
    let after = position(&mine, LANCOME_CREAM);
    assert!(
        after < before,
        "Lancôme cream at {after} for the fan, {before} without: {:?} vs {:?}",
        ids(&mine),
        ids(&base)
    );
    // Taste re-orders the results of the query; it neither adds nor removes any.
    let mut a = ids(&mine);
    let mut b = ids(&base);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(mine["total"], base["total"]);

    for h in hits(&mine) {
        let e = &h["explain"];
        let gate = e["personal_gate"].as_f64().expect("personal_gate");
        assert!((0.0..=1.0).contains(&gate), "{h}");
        for name in ["brand_affinity", "category_affinity", "price_fit"] {
            let f = feature(h, name);
            assert!(f["value"].as_f64().unwrap() >= 0.0, "{f}");
        }
        let sum: f64 = e["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["contribution"].as_f64().unwrap())
            .sum();
        let score = h["score"].as_f64().unwrap();
        assert!((sum - score).abs() < 1e-4, "{}: {sum} != {score}", h["id"]);
        let brand = feature(h, "brand_affinity")["value"].as_f64().unwrap();
        if h["brand"] == "兰蔻" {
            assert!(brand > 0.0, "{h}");
        } else {
            assert_eq!(brand, 0.0, "{h}");
        }
    }
}

#[actix_web::test]
async fn unknown_users_and_users_without_events_rank_like_no_user() {
    let ctx = Ctx::new();
    // Someone has a history, so the store and the profiles are not empty.
    record_lancome_fan(&ctx, "fan").await;
    // Events older than the retention window are acknowledged but not kept.
    let old = shoprank::util::now() - (common::RETENTION_DAYS as i64 + 30) * 86_400;
    let body = ctx
        .post_events(event("too-old", "purchase", LANCOME_CREAM, old).to_string())
        .await
        .expect(StatusCode::OK);
    assert_eq!(body, json!({"stored": 0, "dropped_past_retention": 1}));
    assert_eq!(
        ctx.profile("too-old").await.expect(StatusCode::NOT_FOUND)["code"],
        "user_not_found"
    );
    for q in ["面霜", "口红", "手机"] {
        let base = ctx.search(q, None).await;
        for user in ["nobody", "too-old"] {
            let body = ctx.search(q, Some(user)).await;
            assert_not_personalized(&body, &base, &format!("`{q}` for {user}"));
        }
        // An empty `user=` is no user.
        let uri = format!(
            "/search?q={}&size=100&explain=true&user=",
            common::urlencode(q)
        );
        let body = ctx
            .call(test::TestRequest::get().uri(&uri))
            .await
            .expect(StatusCode::OK);
        assert_not_personalized(&body, &base, &format!("`{q}` for user="));
    }
}

#[actix_web::test]
async fn a_bad_event_rejects_the_whole_batch_naming_its_index() {
    let ctx = Ctx::new();
    let t = recent();
    let good = |p: &str| event("half", "click", p, t);
    let batch = |bad: Value| json!([good("demo-001"), good("demo-002"), bad]).to_string();
    let mut cases: Vec<(Vec<u8>, Option<usize>, &str)> = vec![
        (
            batch(json!({"user_id": "half", "type": "hover", "product_id": "demo-003"})).into(),
            Some(2),
            "unknown type `hover`",
        ),
        (
            batch(json!({"user_id": "half", "type": "cart"})).into(),
            Some(2),
            "product_id",
        ),
        (
            batch(json!({"user_id": "half", "type": "search"})).into(),
            Some(2),
            "query",
        ),
        (
            batch(json!({"user_id": "half", "type": "search", "query": "  "})).into(),
            Some(2),
            "query",
        ),
        (
            batch(event("half", "view", "demo-003", t * 1000)).into(),
            Some(2),
            "milliseconds",
        ),
        (
            batch(event("half", "view", "demo-003", 5)).into(),
            Some(2),
            "plausible",
        ),
        (
            batch(event("half", "view", "demo-003", t + 30 * 86_400)).into(),
            Some(2),
            "plausible",
        ),
        (
            batch(json!({"user_id": "half", "type": "view", "product_id": "demo-003", "colour": "red"}))
                .into(),
            Some(2),
            "unknown field `colour`",
        ),
        (
            batch(json!({"type": "view", "product_id": "demo-003"})).into(),
            Some(2),
            "user_id",
        ),
        (
            batch(json!({"user_id": "half", "type": "view", "product_id": "demo-003", "ts": "yesterday"}))
                .into(),
            Some(2),
            "ts",
        ),
        (batch(json!("click")).into(), Some(2), "JSON object"),
        // NDJSON: the index counts events, not lines.
        (
            format!("{}\n\n{}\n{{\"user_id\":", good("demo-001"), good("demo-002")).into(),
            Some(2),
            "malformed JSON",
        ),
        (
            format!("[{},{}", good("demo-001"), good("demo-002")).into(),
            None,
            "malformed JSON",
        ),
        (Vec::new(), None, "no events"),
        (b" \n\r\n ".to_vec(), None, "no events"),
        (b"[]".to_vec(), None, "no events"),
    ];
    let too_many: Vec<Value> = (0..=MAX_BATCH).map(|_| good("demo-001")).collect();
    cases.push((
        serde_json::to_vec(&too_many).unwrap(),
        None,
        "at most 10000",
    ));
    cases.push((ndjson(&too_many).into(), None, "at most 10000"));
    let mut not_utf8 = ndjson(&[good("demo-001")]).into_bytes();
    not_utf8
        .extend_from_slice(b"{\"user_id\":\"half\xff\",\"type\":\"click\",\"product_id\":\"a\"}");
    cases.push((not_utf8, None, "UTF-8"));

    for (body, index, needle) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        let res = ctx.post_events(body).await;
        let err = res.expect(StatusCode::BAD_REQUEST);
        assert_eq!(err["code"], "invalid_event", "{shown}: {err}");
        assert_eq!(err.as_object().unwrap().len(), 2, "{shown}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{shown}: `{needle}` not in `{message}`"
        );
        match index {
            Some(i) => assert!(
                message.contains(&format!("at index {i}:")),
                "{shown}: no index {i} in `{message}`"
            ),
            None => assert!(!message.contains("index"), "{shown}: `{message}`"),
        }
        assert!(
            message.contains("nothing of this batch was stored"),
            "{message}"
        );
    }
    // The valid events in front of the bad ones were not stored either, not even after a
    // restart.
    let err = ctx.profile("half").await.expect(StatusCode::NOT_FOUND);
    assert_eq!(err["code"], "user_not_found", "{err}");
    let ctx = ctx.restart();
    let err = ctx.profile("half").await.expect(StatusCode::NOT_FOUND);
    assert_eq!(err["code"], "user_not_found", "{err}");
    assert_eq!(ctx.delete("half").await["deleted_events"], 0);
}

/// A pretty-printed single object is "one object" too. Ignored until fixed: a body that
/// does not start with `[` is read line by line as NDJSON, so `{` alone on line 1 fails
/// with "line 1: malformed JSON" (src/behavior/mod.rs, `parse_batch`).
#[actix_web::test]
async fn a_pretty_printed_object_is_one_event() {
    let ctx = Ctx::new();
    let body =
        serde_json::to_string_pretty(&event("pretty", "click", "demo-001", recent())).unwrap();
    assert_eq!(ctx.record(body).await, 1);
}

/// A batch within every documented limit (10,000 events, 128-byte user ids, 256-byte
/// product ids) is 4.3 MB of NDJSON. Ignored until fixed: it passes `MAX_BATCH` but not
/// the 4 MiB `PayloadConfig` of `/events` (src/server/events.rs), and actix answers that
/// with a `text/plain` 413, not a JSON error with a code.
#[actix_web::test]
async fn a_batch_within_the_documented_limits_is_accepted() {
    let ctx = Ctx::new();
    let (user, product) = ("u".repeat(128), "p".repeat(256));
    let events: Vec<Value> = (0..MAX_BATCH)
        .map(|_| event(&user, "click", &product, recent()))
        .collect();
    let body = ndjson(&events);
    assert!(body.len() > 4 << 20);
    let res = ctx.post_events(body).await;
    assert_eq!(res.expect(StatusCode::OK)["stored"], MAX_BATCH);
}

#[actix_web::test]
async fn the_profile_shows_recent_events_and_decayed_affinities() {
    let ctx = Ctx::new();
    let t = recent();
    // All at one time, so no decay: shares are plain ratios of the type weights.
    let events = vec![
        event("shopper", "click", "demo-064", t),
        event("shopper", "click", "demo-065", t),
        event("shopper", "cart", "demo-066", t),
        json!({"user_id": "shopper", "type": "search", "query": "口红", "ts": t}),
        event("shopper", "view", "demo-079", t),
    ];
    assert_eq!(ctx.record(ndjson(&events)).await, 5);
    let p = ctx.profile("shopper").await.expect(StatusCode::OK);
    assert_eq!(p["user_id"], "shopper");
    assert_eq!(p["events"], 5);
    assert_eq!(p["recent_events"], json!(events), "newest last, as stored");
    assert_eq!(p["has_vector"], false, "no model, no vectors");
    assert_eq!(p["last_event_ts"], t);

    let w = |kind: &str| {
        *Personalization::default()
            .type_weights
            .get(kind)
            .unwrap_or_else(|| panic!("no weight for {kind}")) as f64
    };
    let (click, cart, view, search) = (w("click"), w("cart"), w("view"), w("search"));
    let total = 2.0 * click + cart + view + search;
    let shares = |list: &Value| -> Vec<(String, f64)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["value"].as_str().unwrap().to_string(),
                    e["share"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let brands = shares(&p["brand_affinity"]);
    assert_eq!(brands.len(), 2, "{brands:?}");
    assert_eq!(brands[0].0, "兰蔻", "the most-used brand first: {brands:?}");
    assert!((brands[0].1 - (2.0 * click + cart) / total).abs() < 1e-9);
    assert_eq!(brands[1].0, "完美日记");
    assert!((brands[1].1 - view / total).abs() < 1e-9);

    let categories: std::collections::HashMap<String, f64> =
        shares(&p["category_affinity"]).into_iter().collect();
    let expect = [
        ("美妆", 2.0 * click + cart + view),
        ("美妆/面部护理", 2.0 * click),
        ("美妆/面部护理/精华", click),
        ("美妆/面部护理/面霜", click),
        ("美妆/彩妆", cart + view),
        ("美妆/彩妆/口红", cart + view),
    ];
    assert_eq!(categories.len(), expect.len(), "{categories:?}");
    for (path, weight) in expect {
        let got = categories[path];
        assert!((got - weight / total).abs() < 1e-9, "{path}: {got}");
    }
    let listed: Vec<f64> = shares(&p["category_affinity"])
        .iter()
        .map(|s| s.1)
        .collect();
    assert!(listed.windows(2).all(|w| w[0] >= w[1]), "{listed:?}");

    // Typical price: the weighted geometric mean of the touched products' prices.
    let priced = [
        (760.0f64, click),
        (1450.0, click),
        (320.0, cart),
        (79.9, view),
    ];
    let sum_w: f64 = priced.iter().map(|p| p.1).sum();
    let mean = priced.iter().map(|(x, w)| w * x.ln()).sum::<f64>() / sum_w;
    let band = &p["price_band"];
    let typical = band["typical"].as_f64().unwrap();
    assert!((typical - mean.exp()).abs() < 1e-6 * typical, "{band}");
    let (low, high) = (
        band["low"].as_f64().unwrap(),
        band["high"].as_f64().unwrap(),
    );
    assert!(low < typical && typical < high, "{band}");

    // Unknown users are a JSON 404 naming the user.
    let err = ctx.profile("nobody").await.expect(StatusCode::NOT_FOUND);
    assert_eq!(err["code"], "user_not_found");
    assert!(err["message"].as_str().unwrap().contains("nobody"), "{err}");
}

/// A profile with its affinity lists in a canonical order (share descending, then value):
/// equal shares are listed in hash-map order, which differs between two processes.
fn canonical(profile: &Value) -> Value {
    let mut p = profile.clone();
    for list in ["brand_affinity", "category_affinity"] {
        let items = p[list].as_array_mut().expect("an affinity list");
        items.sort_by(|a, b| {
            let share = |v: &Value| v["share"].as_f64().unwrap();
            share(b)
                .total_cmp(&share(a))
                .then_with(|| a["value"].as_str().cmp(&b["value"].as_str()))
        });
    }
    p
}

/// Equal shares should be listed in a stable order (by value), so the profile of a user is
/// the same JSON before and after a restart. Ignored until fixed: `UserProfile::summary`
/// sorts by share only, leaving ties in `HashMap` order (src/behavior/profile.rs).
#[actix_web::test]
async fn equal_affinities_are_listed_in_a_stable_order() {
    let ctx = Ctx::new();
    // One lipstick: 美妆, 美妆/彩妆 and 美妆/彩妆/口红 all have share 1.
    assert_eq!(
        ctx.record(event("one", "cart", "demo-066", recent()).to_string())
            .await,
        1
    );
    let p = ctx.profile("one").await.expect(StatusCode::OK);
    assert_eq!(p, canonical(&p), "ties are not sorted by value");
}

#[actix_web::test]
async fn deleting_a_user_erases_them_durably_and_only_them() {
    let ctx = Ctx::new();
    let n = record_lancome_fan(&ctx, "fan").await;
    let t = recent();
    let other = vec![
        event("other", "purchase", "demo-068", t),
        event("other", "favorite", "demo-071", t + 60),
        event("other", "view", "demo-072", t + 120),
        event("fan2", "click", LANCOME_CREAM, t + 180),
    ];
    assert_eq!(ctx.record(ndjson(&other)).await, 4);
    let keep: Vec<(&str, Value)> = vec![
        ("other", ctx.profile("other").await.expect(StatusCode::OK)),
        ("fan2", ctx.profile("fan2").await.expect(StatusCode::OK)),
    ];
    let base = ctx.search("面霜", None).await;
    assert_eq!(ctx.search("面霜", Some("fan")).await["personalized"], true);

    let body = ctx.delete("fan").await;
    assert_eq!(body, json!({"user_id": "fan", "deleted_events": n}));
    let err = ctx.profile("fan").await.expect(StatusCode::NOT_FOUND);
    assert_eq!(err["code"], "user_not_found");
    assert_not_personalized(&ctx.search("面霜", Some("fan")).await, &base, "deleted fan");
    // Erasing again is not an error: nothing is left.
    assert_eq!(ctx.delete("fan").await["deleted_events"], 0);
    for (user, before) in &keep {
        let now = ctx.profile(user).await.expect(StatusCode::OK);
        assert_eq!(&now, before, "{user} changed when fan was erased");
    }

    // After a restart the profiles are rebuilt from the store: the erased user stays gone.
    let ctx = ctx.restart();
    let err = ctx.profile("fan").await.expect(StatusCode::NOT_FOUND);
    assert_eq!(err["code"], "user_not_found");
    assert_not_personalized(
        &ctx.search("面霜", Some("fan")).await,
        &ctx.search("面霜", None).await,
        "deleted fan after a restart",
    );
    assert_eq!(ctx.delete("fan").await["deleted_events"], 0);
    for (user, before) in &keep {
        let now = ctx.profile(user).await.expect(StatusCode::OK);
        assert_eq!(canonical(&now), canonical(before), "{user} after a restart");
    }
    assert_eq!(ctx.delete("other").await["deleted_events"], 3);
}

#[actix_web::test]
async fn profiles_and_personal_rankings_survive_a_restart() {
    let ctx = Ctx::new();
    record_lancome_fan(&ctx, "fan").await;
    let t = recent() - 5 * 86_400;
    // Out of order on purpose: a late event is decayed into the profile, not replayed.
    let mixed = vec![
        event("mixed", "purchase", "demo-079", t + 600),
        event("mixed", "click", "demo-077", t + 1200),
        event("mixed", "view", "demo-083", t),
        json!({"user_id": "mixed", "type": "search", "query": "口红 哑光", "ts": t + 1800}),
        event("mixed", "cart", "no-such-product", t + 2400),
    ];
    assert_eq!(ctx.record(json!(mixed).to_string()).await, 5);
    let users = ["fan", "mixed"];
    let queries = ["面霜", "口红", "洗面奶"];
    let mut before = Vec::new();
    for user in users {
        let profile = ctx.profile(user).await.expect(StatusCode::OK);
        let mut searches = Vec::new();
        for q in queries {
            let body = ctx.search(q, Some(user)).await;
            assert_eq!(body["personalized"], true, "{user} `{q}`");
            searches.push(body);
        }
        before.push((profile, searches));
    }
    assert_eq!(before[1].0["events"], 5);

    let ctx = ctx.restart();
    for (user, (profile, searches)) in users.iter().zip(&before) {
        let now = ctx.profile(user).await.expect(StatusCode::OK);
        assert_eq!(canonical(&now), canonical(profile), "{user}");
        for (q, was) in queries.iter().zip(searches) {
            let body = ctx.search(q, Some(user)).await;
            assert_eq!(body["personalized"], true, "{user} `{q}`");
            assert_eq!(body["hits"], was["hits"], "{user} `{q}` after a restart");
            assert_eq!(body["facets"], was["facets"], "{user} `{q}`");
        }
    }
    assert!(ctx.store.is_file());
    assert!(ctx.data.path().join("events").is_dir());
}

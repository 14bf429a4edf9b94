//! `/analyze`, `/suggest` and query intents in `/search`, through actix's test service on
//! the demo catalog (no model).

use crate::common;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::Value;
use shoprank::server::{app, AppState};

async fn get(engine: &Arc<shoprank::Engine>, uri: &str) -> (StatusCode, Value) {
    call(engine, test::TestRequest::get().uri(uri)).await
}

fn engine() -> (tempfile::TempDir, Arc<shoprank::Engine>) {
    let data = common::demo_index(None);
    let engine = Arc::new(common::open_engine(data.path(), None));
    (data, engine)
}

#[actix_web::test]
async fn analyze_shows_normalized_text_tokens_and_intents() {
    let (_d, e) = engine();
    let q = common::urlencode("兰蔻小黑瓶５０ＭＬ 500元以下");
    let (status, body) = get(&e, &format!("/analyze?q={q}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["normalized"], "兰蔻小黑瓶50ml 500元以下");
    assert_eq!(body["search_text"], "兰蔻小黑瓶50ml");
    assert!(
        body["tokens"]
            .as_array()
            .unwrap()
            .contains(&Value::from("50ml")),
        "{body}"
    );
    let intents = &body["intents"];
    assert_eq!(intents["brand"][0]["value"], "兰蔻");
    assert_eq!(
        intents["price"],
        serde_json::json!({"kind": "range", "max": 500.0})
    );
    assert_eq!(intents["attributes"], serde_json::json!(["50ml"]));
    let (status, body) = get(&e, "/analyze").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter"))
    );
    let (status, body) = get(&e, "/analyze?q=%FF").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

#[actix_web::test]
async fn a_price_bound_in_the_query_filters_unless_the_request_sets_prices() {
    let (_d, e) = engine();
    let q = common::urlencode("300元以下 口红");
    let (_, body) = get(&e, &format!("/search?q={q}&size=100")).await;
    assert_eq!(body["filters"]["price_max"], 300.0);
    let hits = body["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    assert!(
        hits.iter().all(|h| h["price"].as_f64().unwrap() <= 300.0),
        "{body}"
    );
    // The request's own price parameters win.
    let (_, body) = get(&e, &format!("/search?q={q}&size=100&price_min=300")).await;
    assert_eq!(body["filters"]["price_min"], 300.0);
    assert!(body["filters"].get("price_max").is_none(), "{body}");
    assert!(body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["price"].as_f64().unwrap() >= 300.0));
}

#[actix_web::test]
async fn a_named_brand_boosts_without_filtering() {
    let (_d, e) = engine();
    let (_, plain) = get(
        &e,
        &format!(
            "/search?q={}&size=100&explain=true",
            common::urlencode("口红")
        ),
    )
    .await;
    let (_, branded) = get(
        &e,
        &format!(
            "/search?q={}&size=100&explain=true",
            common::urlencode("完美日记 口红")
        ),
    )
    .await;
    let top = &branded["hits"][0];
    assert_eq!(top["brand"], "完美日记", "{branded}");
    let brands: std::collections::BTreeSet<&str> = branded["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["brand"].as_str().unwrap())
        .collect();
    assert!(
        brands.len() > 1,
        "a brand in the query must not filter: {brands:?}"
    );
    let has_brand_match = |h: &Value| {
        h["explain"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "brand_match")
    };
    assert!(has_brand_match(top));
    assert!(!plain["hits"]
        .as_array()
        .unwrap()
        .iter()
        .any(has_brand_match));
}

#[actix_web::test]
async fn suggest_completes_characters_pinyin_and_initials() {
    let (_d, e) = engine();
    for prefix in ["口", "kou", "kh"] {
        let (status, body) = get(
            &e,
            &format!("/suggest?q={}&size=5", common::urlencode(prefix)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let texts: Vec<&str> = body["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["text"].as_str().unwrap())
            .collect();
        assert!(texts.contains(&"口红"), "{prefix}: {texts:?}");
    }
    for uri in [
        "/suggest",
        "/suggest?q=a&size=0",
        "/suggest?q=a&size=x",
        "/suggest?q=a&colour=1",
    ] {
        let (status, body) = get(&e, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["code"], "invalid_parameter", "{uri}");
    }
    let long = "口".repeat(300);
    let (status, body) = get(&e, &format!("/suggest?q={}", common::urlencode(&long))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

async fn call(engine: &Arc<shoprank::Engine>, req: test::TestRequest) -> (StatusCode, Value) {
    let svc = test::init_service(app(AppState::new(engine.clone(), 64))).await;
    let res = test::call_service(&svc, req.to_request()).await;
    let status = res.status();
    let body: Value = serde_json::from_slice(&test::read_body(res).await).expect("JSON body");
    (status, body)
}

fn titles(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn synonyms_expand_queries_and_reload_without_a_restart() {
    let data = common::demo_index(None);
    let dir = tempfile::tempdir().unwrap();
    let synonyms = dir.path().join("synonyms.txt");
    std::fs::write(&synonyms, "手机壳, 保护壳\n").unwrap();
    let mut engine = common::open_engine(data.path(), None);
    engine
        .set_text_sources(shoprank::engine::TextSources {
            synonyms: Some(synonyms.clone()),
            ..Default::default()
        })
        .unwrap();
    let e = Arc::new(engine);
    let (_, body) = get(
        &e,
        &format!("/search?q={}&size=20", common::urlencode("保护壳")),
    )
    .await;
    assert!(
        body["synonyms"]
            .as_array()
            .unwrap()
            .contains(&Value::from("手机壳")),
        "{body}"
    );
    assert!(titles(&body).iter().any(|t| t.contains("手机壳")), "{body}");

    // A new rule is live after the reload call, without a restart or reindex.
    let (_, before) = get(
        &e,
        &format!("/search?q={}&size=20", common::urlencode("零嘴")),
    )
    .await;
    assert!(before["synonyms"].as_array().unwrap().is_empty());
    std::fs::write(&synonyms, "手机壳, 保护壳\n零嘴 => 零食, 坚果\n").unwrap();
    let (status, report) = call(&e, test::TestRequest::post().uri("/admin/reload")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let (_, after) = get(
        &e,
        &format!("/search?q={}&size=20", common::urlencode("零嘴")),
    )
    .await;
    assert!(
        after["synonyms"]
            .as_array()
            .unwrap()
            .contains(&Value::from("零食")),
        "{after}"
    );
    assert!(after["total"].as_u64().unwrap() > before["total"].as_u64().unwrap());

    // A broken file is refused and the rules in force stay live.
    std::fs::write(&synonyms, "只有一个词\n").unwrap();
    let (status, body) = call(&e, test::TestRequest::post().uri("/admin/reload")).await;
    assert!(
        status.is_server_error() || status.is_client_error(),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("synonyms.txt:1"),
        "{body}"
    );
    let (_, still) = get(
        &e,
        &format!("/search?q={}&size=20", common::urlencode("零嘴")),
    )
    .await;
    assert_eq!(still["synonyms"], after["synonyms"]);
}

#[actix_web::test]
async fn clicks_after_a_query_shift_its_category() {
    let data = common::demo_index(None);
    let store = data.path().join("events.redb");
    let e = Arc::new(common::open_engine_with_events(data.path(), &store));
    let q = common::urlencode("笔记本");
    let (_, before) = get(&e, &format!("/analyze?q={q}")).await;
    assert_eq!(
        before["intents"]["category"][0]["value"], "文具/本册/笔记本",
        "{before}"
    );
    let laptops: Vec<String> = common::demo_products()
        .into_iter()
        .filter(|p| p.category == "数码/电脑/笔记本电脑")
        .map(|p| p.id)
        .collect();
    let now = shoprank::util::now();
    let mut events = Vec::new();
    for (i, id) in laptops.iter().cycle().take(12).enumerate() {
        let user = format!("u{i}");
        events.push(serde_json::json!({"user_id": user, "type": "search", "query": "笔记本", "ts": now - 100}));
        events.push(
            serde_json::json!({"user_id": user, "type": "click", "product_id": id, "ts": now - 50}),
        );
    }
    let body = serde_json::to_vec(&events).unwrap();
    let (status, res) = call(
        &e,
        test::TestRequest::post().uri("/events").set_payload(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let (_, after) = get(&e, &format!("/analyze?q={q}")).await;
    assert_eq!(
        after["intents"]["category"][0]["value"], "数码/电脑/笔记本电脑",
        "{after}"
    );
}

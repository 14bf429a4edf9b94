//! `/analyze`, `/suggest` and query intents in `/search`, through actix's test service on
//! the demo catalog (no model).

mod common;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::Value;
use shoprank::server::{app, AppState};

async fn get(engine: &Arc<shoprank::Engine>, uri: &str) -> (StatusCode, Value) {
    let svc = test::init_service(app(AppState::new(engine.clone(), 64))).await;
    let res = test::call_service(&svc, test::TestRequest::get().uri(uri).to_request()).await;
    let status = res.status();
    let body: Value = serde_json::from_slice(&test::read_body(res).await).expect("JSON body");
    (status, body)
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

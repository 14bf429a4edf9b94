//! `POST /v1/rerank`, `/v2/rerank` and `/v1/embeddings` on the demo catalog without a
//! model (the SDK test, `scripts/sdk_test.sh`, runs them with the model through the
//! `cohere` and `openai` clients).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test as atest;
use serde_json::{json, Value};

use shoprank::server::AppState;

use crate::common;

fn post(path: &str, body: Value) -> atest::TestRequest {
    atest::TestRequest::post()
        .uri(path)
        .set_payload(body.to_string())
}

fn indexes(b: &Value) -> Vec<u64> {
    b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

#[actix_web::test]
async fn indexed_products_are_reranked_with_the_search_features() {
    let data = common::demo_index(None);
    let state = AppState::new(Arc::new(common::open_engine(data.path(), None)), 8);
    let products = common::demo_products();
    let id_of = |pred: &dyn Fn(&shoprank::catalog::Product) -> bool| {
        products.iter().find(|p| pred(p)).unwrap().id.clone()
    };
    let lipstick = id_of(&|p| p.title.contains("口红"));
    let apple_case = id_of(&|p| p.title.contains("手机壳") && p.title.contains("苹果"));
    let other_case = id_of(&|p| p.title.contains("手机壳") && !p.title.contains("苹果"));
    let docs = json!([{"id": lipstick}, {"id": other_case}, {"id": apple_case}]);
    let (s, b) = common::call(
        &state,
        post(
            "/v2/rerank",
            json!({"query": "苹果手机壳", "documents": docs, "explain": true}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(indexes(&b), [2, 1, 0], "{b}");
    assert!(b["results"][0]["explain"]["features"].is_array(), "{b}");
    assert_eq!(b["meta"]["api_version"]["version"], "2");
}

#[actix_web::test]
async fn texts_are_reranked_and_top_n_and_documents_are_honoured() {
    let data = common::demo_index(None);
    let state = AppState::new(Arc::new(common::open_engine(data.path(), None)), 8);
    let body = json!({
        "query": "蓝牙耳机",
        "documents": ["机械键盘 青轴", {"text": "无线蓝牙耳机 降噪"}, {"title": "耳机收纳盒", "brand": "绿联"}],
        "top_n": 2,
        "return_documents": true,
        "model": "any"
    });
    let (s, b) = common::call(&state, post("/v1/rerank", body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(indexes(&b), [1, 2], "{b}");
    assert_eq!(b["results"][0]["document"]["text"], "无线蓝牙耳机 降噪");
    assert_eq!(b["model"], "any");
}

#[actix_web::test]
async fn bad_rerank_and_embedding_requests_get_clear_errors() {
    let data = common::demo_index(None);
    let state = AppState::new(Arc::new(common::open_engine(data.path(), None)), 8);
    let many: Vec<String> = (0..1001).map(|i| format!("商品 {i}")).collect();
    for (body, what) in [
        (json!({"query": "口红", "documents": []}), "no documents"),
        (
            json!({"query": "口红", "documents": many}),
            "1,001 documents",
        ),
        (json!({"query": "", "documents": ["a"]}), "empty query"),
        (json!({"query": "口红", "documents": [3]}), "a number"),
        (
            json!({"query": "口红", "documents": ["a"], "colour": 1}),
            "unknown field",
        ),
        (json!({"documents": ["a"]}), "no query"),
    ] {
        let (s, b) = common::call(&state, post("/v1/rerank", body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {b}");
        assert!(b["code"].is_string(), "{what}: {b}");
    }
    let (s, b) = common::call(&state, post("/v1/embeddings", json!({"input": []}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = common::call(
        &state,
        post(
            "/v1/embeddings",
            json!({"input": "口红", "encoding_format": "hex"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // No model in this engine: a clear error, not vectors of zeros.
    let (s, b) = common::call(&state, post("/v1/embeddings", json!({"input": "口红"}))).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_model")),
        "{b}"
    );
}

//! Ranking profiles without redeploying: versioned PUT/DELETE/restore over HTTP, hot reload
//! of hand edits, per-request weight overrides, side-by-side comparison, and profile
//! updates under load (no failed request, no half-applied profile).

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test as atest;
use serde_json::Value;

use shoprank::engine::SearchRequest;
use shoprank::server::AppState;

fn put(name: &str, body: &str) -> atest::TestRequest {
    atest::TestRequest::put()
        .uri(&format!("/profiles/{name}"))
        .set_payload(body.to_string())
}

fn get(uri: &str) -> atest::TestRequest {
    atest::TestRequest::get().uri(uri)
}

fn weights(res: &Value) -> Vec<(String, f64)> {
    res["hits"][0]["explain"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["weight"].as_f64().unwrap() != 0.0)
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["weight"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn profiles_are_saved_versioned_validated_and_restored_over_http() {
    let data = common::demo_index(None);
    let engine = Arc::new(common::open_engine(data.path(), None));
    let state = AppState::new(engine.clone(), 64);

    let (s, b) = common::call(&state, put("pop", "[weights]\npopularity = 1.0\n")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v1 = b["version"]["version"].as_u64().unwrap();
    let (s, b) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&profile=pop&explain=true"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(weights(&b), [("popularity".to_string(), 1.0)]);

    // Invalid text: a clear error, the old profile stays live, nothing is versioned.
    for (bad, reason) in [
        ("[weights]\npopularty = 1.0\n", "popularty"),
        ("[weights]\npopularity = \"x\"\n", "popularity"),
        ("[weights", ""),
        (
            "[weights]\npopularity = 1.0\n[bm25]\nb = 1.5\n",
            "b must be within 0..=1",
        ),
        (
            "[weights]\npopularity = 1.0\n[bm25.fields.colour]\nk1 = 1.0\n",
            "colour",
        ),
        (
            "tie_break = \"random\"\n[weights]\npopularity = 1.0\n",
            "random",
        ),
    ] {
        let (s, b) = common::call(&state, put("pop", bad)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
        assert_eq!(b["code"], "invalid_profile");
        assert!(b["message"].as_str().unwrap_or("").contains(reason), "{b}");
    }
    let (s, b) = common::call(&state, put("pop", r#"{"weights": {"rating": 2.0}}"#)).await;
    assert_eq!(s, StatusCode::OK, "JSON bodies work too: {b}");
    let (_, b) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&profile=pop&explain=true"),
    )
    .await;
    assert_eq!(weights(&b), [("rating".to_string(), 2.0)]);
    let (s, _) = common::call(&state, put("bm25", "[weights]\nbm25 = 2.0\n")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = common::call(&state, put("a%2Fb", "[weights]\nbm25 = 2.0\n")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, b) = common::call(&state, get("/profiles/pop")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["versions"].as_array().unwrap().len(), 2);
    assert_eq!(b["profile"]["weights"]["rating"], 2.0);
    let (_, list) = common::call(&state, get("/profiles")).await;
    let names: Vec<&str> = list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bm25", "default", "pop"]);
    assert!(list["features"].as_array().unwrap().len() >= 12);

    // Roll back to the first version.
    let (s, b) = common::call(
        &state,
        atest::TestRequest::post().uri(&format!("/profiles/pop/restore?version={v1}")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&profile=pop&explain=true"),
    )
    .await;
    assert_eq!(weights(&b), [("popularity".to_string(), 1.0)]);
    let (s, _) = common::call(
        &state,
        atest::TestRequest::post().uri("/profiles/pop/restore?version=1"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, _) = common::call(&state, atest::TestRequest::delete().uri("/profiles/pop")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&profile=pop"),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unknown_profile"))
    );
    let (s, _) = common::call(&state, atest::TestRequest::delete().uri("/profiles/pop")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The history survives a delete: the profile can come back.
    let (s, _) = common::call(
        &state,
        atest::TestRequest::post().uri(&format!("/profiles/pop/restore?version={v1}")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // No evaluation set configured: a clear 503.
    let (s, b) = common::call(&state, get("/profiles/pop/eval")).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_eval_set"))
    );
}

#[actix_web::test]
async fn single_weights_are_overridden_per_request_and_compared_side_by_side() {
    let data = common::demo_index(None);
    let engine = Arc::new(common::open_engine(data.path(), None));
    let state = AppState::new(engine.clone(), 64);
    let ids = |b: &Value| -> Vec<String> {
        b["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, plain) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&profile=bm25&size=20"),
    )
    .await;
    let (s, pop) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&profile=bm25&size=20&w.bm25=0&w.popularity=1&explain=true"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{pop}");
    assert_eq!(weights(&pop), [("popularity".to_string(), 1.0)]);
    assert_ne!(ids(&plain), ids(&pop), "the override re-ranks");
    let sales: Vec<u64> = ids(&pop)
        .iter()
        .map(|id| engine.product(id).unwrap().sales)
        .collect();
    assert!(sales.windows(2).all(|w| w[0] >= w[1]), "{sales:?}");
    let (s, b) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&w.semantik=1"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["message"].as_str().unwrap().contains("semantik"), "{b}");
    let (s, _) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&w.bm25=abc"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = common::call(
        &state,
        get("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&colour=red"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["message"].as_str().unwrap().contains("colour"), "{b}");

    let (s, b) = common::call(
        &state,
        get("/compare?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&a=bm25&b=default&size=10"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["a"]["profile"], "bm25");
    assert_eq!(b["b"]["profile"], "default");
    let moves = b["movement"].as_array().unwrap();
    assert!(!moves.is_empty());
    for m in moves {
        if let (Some(x), Some(y)) = (m["rank_a"].as_i64(), m["rank_b"].as_i64()) {
            assert_eq!(m["delta"].as_i64(), Some(x - y));
        }
    }
    let (s, _) = common::call(&state, get("/compare?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&a=bm25")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = common::call(
        &state,
        get("/compare?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&a=bm25&b=nope"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// Many searches while a profile flips between two versions: none fails, and each sees
/// exactly one version (never the weights of one with the other's).
#[test]
fn profile_updates_under_load_fail_no_request_and_are_never_half_applied() {
    let data = common::demo_index(None);
    let engine = Arc::new(common::open_engine(data.path(), None));
    let a = "[weights]\npopularity = 1.0\nbm25 = 0.5\n";
    let b = "[weights]\nrating = 2.0\npopularity = 0.3\n";
    engine.put_profile("flip", a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let searchers: Vec<_> = (0..3)
        .map(|_| {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = [0usize; 2];
                while !stop.load(Ordering::Relaxed) {
                    let mut req = SearchRequest::new("手机壳");
                    req.profile = Some("flip".into());
                    req.explain = true;
                    let res = engine.search(&req).expect("no search fails");
                    let w: Vec<(String, f32)> = res.hits[0]
                        .explain
                        .as_ref()
                        .unwrap()
                        .features
                        .iter()
                        .filter(|f| f.weight != 0.0)
                        .map(|f| (f.name.to_string(), f.weight))
                        .collect();
                    let is_a = w == [("bm25".to_string(), 0.5), ("popularity".to_string(), 1.0)];
                    let is_b = w == [("popularity".to_string(), 0.3), ("rating".to_string(), 2.0)];
                    assert!(is_a || is_b, "a half-applied profile: {w:?}");
                    seen[usize::from(is_b)] += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..200 {
        engine
            .put_profile("flip", if i % 2 == 0 { b } else { a })
            .unwrap();
        // A broken edit in between is refused and changes nothing.
        assert!(engine
            .put_profile("flip", "[weights]\nbm25 = oops\n")
            .is_err());
    }
    // Hand edits are picked up; a half-written file is refused and the old one stays.
    std::fs::write(
        data.path().join("profiles/flip.toml"),
        "[weights]\nrating = ",
    )
    .unwrap();
    assert!(!engine.reload_profiles_if_changed());
    std::fs::write(data.path().join("profiles/flip.toml"), a).unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut total = [0; 2];
    for s in searchers {
        let seen = s.join().expect("searches never failed");
        total[0] += seen[0];
        total[1] += seen[1];
    }
    assert!(
        total[0] > 0 && total[1] > 0,
        "both versions were served: {total:?}"
    );
    assert!(engine.reload_profiles_if_changed() || engine.profiles().get("flip").is_ok());
    let p = engine.profiles().get("flip").unwrap();
    assert_eq!(p.weight("popularity"), 1.0);
}

#[test]
fn explain_breaks_bm25_down_by_field_and_term() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    let mut req = SearchRequest::new("手机壳");
    req.profile = Some("bm25".into());
    req.explain = true;
    let res = engine.search(&req).unwrap();
    let e = res.hits[0].explain.as_ref().unwrap();
    let terms = e.bm25_terms.as_ref().expect("a BM25 breakdown");
    let parts = terms["terms"].as_array().unwrap();
    assert!(
        parts
            .iter()
            .any(|t| t["field"] == "title" && t["term"] == "手机壳"),
        "{terms}"
    );
    let sum: f64 = parts.iter().map(|t| t["score"].as_f64().unwrap()).sum();
    assert!(
        (sum - e.bm25_raw as f64).abs() < 1e-3,
        "terms sum {sum} != bm25 {}",
        e.bm25_raw
    );
    assert!(terms["tantivy"]["details"].is_array());
    req.explain_terms = false;
    let e = engine.search(&req).unwrap().hits[0]
        .explain
        .clone()
        .unwrap();
    assert!(e.bm25_terms.is_none() && !e.features.is_empty());
    req.explain = false;
    assert!(engine.search(&req).unwrap().hits[0].explain.is_none());
}

#[test]
fn bm25_parameters_per_field_rescore_what_they_name_and_explain_says_so() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    // The built-in `bm25` profile with title's k1 0.5 and b 0.
    let mut profile = shoprank::rank::Profile::bm25_profile();
    profile
        .bm25
        .set("title", shoprank::retrieve::Bm25Params { k1: 0.5, b: 0.0 });
    engine.put_profile("flat", &profile.to_toml()).unwrap();
    let search = |profile: &str| {
        let mut req = SearchRequest::new("苹果手机壳");
        req.profile = Some(profile.into());
        req.explain = true;
        req.size = 100;
        req.all_candidates = true;
        engine.search(&req).unwrap().hits
    };
    let (stock, flat) = (search("bm25"), search("flat"));
    let terms = |h: &shoprank::engine::Hit| {
        let e = h.explain.as_ref().unwrap();
        let t = e.bm25_terms.clone().expect("a BM25 breakdown");
        let sum: f64 = (t["terms"].as_array().unwrap().iter())
            .map(|t| t["score"].as_f64().unwrap())
            .sum();
        assert!((sum - e.bm25_raw as f64).abs() < 1e-3, "{t}");
        t
    };
    let by_id = |hits: &[shoprank::engine::Hit], id: &str| {
        hits.iter().find(|h| h.id == id).map(terms).unwrap()
    };
    let mut title_changed = false;
    for h in &flat {
        let (mine, theirs) = (terms(h), by_id(&stock, &h.id));
        let score = |t: &serde_json::Value, field: &str| -> f64 {
            (t["terms"].as_array().unwrap().iter())
                .filter(|x| x["field"] == field)
                .map(|x| x["score"].as_f64().unwrap())
                .sum()
        };
        // Only `title` has other parameters: the other fields score as before.
        for field in ["title.bigram", "brand", "brand.bigram", "category"] {
            assert!(
                (score(&mine, field) - score(&theirs, field)).abs() < 1e-4,
                "{field}"
            );
        }
        title_changed |= (score(&mine, "title") - score(&theirs, "title")).abs() > 1e-3;
        if score(&mine, "title") > 0.0 {
            let tree = mine["tantivy"].to_string();
            assert!(tree.contains("k1 = 0.5, b = 0"), "{tree}");
        }
    }
    assert!(title_changed, "k1 0.5 and b 0 rescore title terms");
    // `/rerank` of indexed products scores BM25 with the same parameters.
    let rerank = shoprank::engine::RerankRequest {
        query: "苹果手机壳".into(),
        documents: (flat.iter().take(5))
            .map(|h| shoprank::engine::RerankDocument::Product(h.id.clone()))
            .collect(),
        profile: Some("flat".into()),
        user: None,
        explain: true,
    };
    for r in engine.rerank(&rerank).unwrap() {
        let raw = r.explain.unwrap().bm25_raw;
        assert!((raw - flat[r.index].explain.as_ref().unwrap().bm25_raw).abs() < 1e-5);
    }
    assert_eq!(flat.len(), stock.len(), "the same candidates match");
    // A request may carry its own parameters (what `shoprank tune` does).
    let mut req = SearchRequest::new("苹果手机壳");
    req.profile = Some("bm25".into());
    req.bm25 = Some(profile.bm25.clone());
    req.size = 100;
    req.all_candidates = true;
    let over: Vec<f32> = engine
        .search(&req)
        .unwrap()
        .hits
        .iter()
        .map(|h| h.score)
        .collect();
    let flat_scores: Vec<f32> = flat.iter().map(|h| h.score).collect();
    assert_eq!(over, flat_scores);
    req.bm25.as_mut().unwrap().k1 = -1.0;
    assert_eq!(engine.search(&req).unwrap_err().code(), "invalid_parameter");
}

#[test]
fn ties_follow_the_profiles_tie_break() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    let gen = engine.generation();
    // No feature weighs anything: every candidate scores 0 and only the tie-break orders.
    let order = |tie: &str| {
        let text = format!("tie_break = \"{tie}\"\n[weights]\nbm25 = 0.0\n");
        engine.put_profile("tie", &text).unwrap();
        let mut req = SearchRequest::new("手机壳");
        req.profile = Some("tie".into());
        req.size = 100;
        let hits = engine.search(&req).unwrap().hits;
        assert!(hits.len() > 5 && hits.iter().all(|h| h.score == 0.0));
        hits.iter().map(|h| gen.by_id[&h.id]).collect::<Vec<u32>>()
    };
    let rows = order("row");
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{rows:?}");
    let product = |o: &u32| &gen.products[*o as usize];
    let sales: Vec<u64> = order("popularity")
        .iter()
        .map(|o| product(o).sales)
        .collect();
    assert!(sales.windows(2).all(|w| w[0] >= w[1]), "{sales:?}");
    assert_ne!(
        sales,
        rows.iter().map(|o| product(o).sales).collect::<Vec<_>>()
    );
    let prices: Vec<f64> = (order("price_asc").iter())
        .map(|o| product(o).price.unwrap_or(f64::INFINITY))
        .collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
    let ratings: Vec<f64> = (order("rating").iter())
        .map(|o| product(o).rating.unwrap_or(-1.0))
        .collect();
    assert!(ratings.windows(2).all(|w| w[0] >= w[1]), "{ratings:?}");
}

#[test]
fn diversity_caps_one_brand_per_round_without_dropping_results() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    let search = |profile: &str| {
        let mut req = SearchRequest::new("手机壳");
        req.profile = Some(profile.into());
        req.size = 100;
        engine.search(&req).unwrap().hits
    };
    engine
        .put_profile("plain", "[weights]\nbm25 = 1.0\n")
        .unwrap();
    engine
        .put_profile(
            "diverse",
            "[weights]\nbm25 = 1.0\n[diversity]\nmax_per_brand = 1\n",
        )
        .unwrap();
    let (plain, diverse) = (search("plain"), search("diverse"));
    let ids = |h: &[shoprank::engine::Hit]| {
        let mut v: Vec<String> = h.iter().map(|h| h.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&plain), ids(&diverse), "the same results, reordered");
    // Products without a brand are never held back; among the rest, every brand
    // appears once before any appears twice.
    let brands: Vec<&str> = diverse
        .iter()
        .map(|h| h.brand.as_str())
        .filter(|b| !b.is_empty())
        .collect();
    let distinct: std::collections::HashSet<&str> = brands.iter().copied().collect();
    let first: std::collections::HashSet<&str> = brands[..distinct.len()].iter().copied().collect();
    assert_eq!(
        first.len(),
        distinct.len(),
        "one of each brand first: {brands:?}"
    );
    let plain_brands: Vec<&str> = plain
        .iter()
        .map(|h| h.brand.as_str())
        .filter(|b| !b.is_empty())
        .collect();
    assert_ne!(
        brands, plain_brands,
        "the plain order repeats a brand early"
    );
    assert!(engine
        .put_profile(
            "bad",
            "[weights]\nbm25 = 1.0\n[diversity]\nmax_per_shop = 1\n"
        )
        .is_err());
}

#[test]
fn a_latency_budget_under_load_skips_the_semantic_stage_and_says_so() {
    let model = common::tiny_model();
    let encoder = common::tiny_encoder(&model);
    let data = common::demo_index(Some(&encoder));
    let engine = common::open_engine(data.path(), Some(common::tiny_encoder(&model)));
    let mut tight = shoprank::rank::Profile::default_profile();
    tight.budget = shoprank::rank::Budget {
        latency_ms: 0.000001,
        min_candidates: 20,
    };
    engine.put_profile("tight", &tight.to_toml()).unwrap();
    let search = |profile: &str| {
        let mut req = SearchRequest::new("手机壳");
        req.profile = Some(profile.into());
        engine.search(&req).unwrap()
    };
    // The first search has no stage times to predict from: it runs whole.
    let first = search("tight");
    assert!(first.semantic && first.budget.is_none());
    // Now any prediction is over a microsecond: the semantic stage goes, then candidates.
    let next = search("tight");
    let note = next.budget.clone().expect("the budget acted");
    assert!(note.semantic_skipped, "{note:?}");
    assert!(!next.semantic, "no query vector was used");
    assert_eq!(note.bm25_candidates, 20);
    assert!(!next.hits.is_empty(), "BM25 still answers");
    let json = serde_json::to_value(&next).unwrap();
    assert_eq!(json["budget"]["semantic_skipped"], true);
    // Without a budget (the built-in profiles) nothing is dropped.
    let full = search("default");
    assert!(full.semantic && full.budget.is_none());
    assert!(shoprank::rank::Profile::parse(
        "[weights]\nbm25 = 1.0\n[budget]\nlatency_ms = -1\n",
        std::path::Path::new("x.toml")
    )
    .is_err());
}

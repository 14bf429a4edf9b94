//! Online A/B experiments: stable hash split by traffic, impressions logged with the arm,
//! clicks/carts/purchases attributed to the search that showed the product, per-arm rates
//! with 95% intervals, team-draft interleaving, and numbers that survive a restart.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test as atest;
use serde_json::{json, Value};

use shoprank::behavior::{Event, EventType};
use shoprank::engine::{Engine, SearchRequest};
use shoprank::server::AppState;

fn engine(data: &Path) -> Engine {
    common::open_engine_with_events(data, &data.join("events.redb"))
}

fn search(engine: &Engine, user: &str) -> shoprank::engine::SearchResponse {
    let mut req = SearchRequest::new("手机壳");
    req.user = Some(user.to_string());
    engine.shopper_search(&req).expect("search answers")
}

fn event(user: &str, kind: EventType, product: &str, ts: i64) -> Event {
    Event {
        user_id: user.to_string(),
        kind,
        product_id: Some(product.to_string()),
        query: None,
        ts,
    }
}

const AB: &str = r#"
description = "popularity vs BM25"
[[arms]]
name = "control"
profile = "bm25"
traffic = 50
[[arms]]
name = "treatment"
profile = "default"
traffic = 50
"#;

#[test]
fn users_split_stably_and_outcomes_are_attributed_per_arm() {
    let data = common::demo_index(None);
    let engine = engine(data.path());
    engine.put_experiment("ab1", AB).unwrap();
    let mut arms = std::collections::HashMap::new();
    for i in 0..200 {
        let user = format!("u{i}");
        let res = search(&engine, &user);
        // Outcomes follow the search (a slow machine must not date them before it).
        let now = shoprank::util::now();
        let tag = res
            .experiment
            .clone()
            .expect("the user is in the experiment");
        assert_eq!(tag.id, "ab1");
        assert_eq!(
            res.profile,
            if tag.arm == "control" {
                "bm25"
            } else {
                "default"
            }
        );
        // The same user always lands in the same arm.
        assert_eq!(search(&engine, &user).experiment.unwrap().arm, tag.arm);
        *arms.entry(tag.arm.clone()).or_insert(0) += 1;
        // Treatment users click (and some buy) much more often than control users.
        let clicks = if tag.arm == "treatment" {
            i % 10 < 8
        } else {
            i % 10 < 2
        };
        if clicks {
            let shown = &res.hits[0].id;
            let mut events = vec![event(&user, EventType::Click, shown, now)];
            if i % 2 == 0 {
                events.push(event(&user, EventType::Cart, shown, now + 5));
            }
            engine.record_events(events).unwrap();
        }
        // Not attributed: a product that was not shown, and a click an hour later.
        engine
            .record_events(vec![
                event(&user, EventType::Click, "no-such-product", now),
                event(&user, EventType::Purchase, &res.hits[0].id, now + 3600),
            ])
            .unwrap();
    }
    let (c, t) = (arms["control"], arms["treatment"]);
    assert!(c > 70 && t > 70, "a 50/50 split: {arms:?}");

    let report = engine.experiment_report("ab1").unwrap();
    let arm = |name: &str| -> Value {
        report["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arm"] == name)
            .unwrap()
            .clone()
    };
    let (ctl, trt) = (arm("control"), arm("treatment"));
    // Two searches per user (the second checked the arm).
    assert_eq!(ctl["searches"].as_u64().unwrap(), 2 * c as u64);
    assert_eq!(ctl["users"].as_u64().unwrap(), c as u64);
    let rate = |a: &Value, k: &str| a[k]["rate"].as_f64().unwrap();
    let ci = |a: &Value, k: &str| {
        let v = a[k]["ci95"].as_array().unwrap();
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
    };
    assert!(rate(&trt, "ctr") > rate(&ctl, "ctr"));
    assert!(
        ci(&trt, "ctr").0 > ci(&ctl, "ctr").1,
        "intervals separate: {report}"
    );
    assert!(ci(&trt, "ctr").0 <= rate(&trt, "ctr") && rate(&trt, "ctr") <= ci(&trt, "ctr").1);
    assert!(rate(&trt, "add_to_cart_rate") > 0.0);
    assert_eq!(
        trt["purchases"], 0,
        "a purchase an hour later is not attributed"
    );
    let clicks = ctl["clicks"].as_u64().unwrap() + trt["clicks"].as_u64().unwrap();
    let expected: u64 = (0..200)
        .filter(|i| {
            let arm = search_arm(&engine, *i);
            if arm == "treatment" {
                i % 10 < 8
            } else {
                i % 10 < 2
            }
        })
        .count() as u64;
    assert_eq!(
        clicks, expected,
        "clicks on products not shown are not counted"
    );

    // An explicit profile or a weight override is not part of the experiment.
    let mut req = SearchRequest::new("手机壳");
    req.user = Some("u1".into());
    req.profile = Some("bm25".into());
    assert!(engine.shopper_search(&req).unwrap().experiment.is_none());
    // No user: no experiment.
    assert!(engine
        .shopper_search(&SearchRequest::new("手机壳"))
        .unwrap()
        .experiment
        .is_none());

    // The numbers survive a restart (the log is replayed).
    drop(engine);
    let engine = self::engine(data.path());
    let again = engine.experiment_report("ab1").unwrap();
    assert_eq!(again["arms"], report["arms"]);
    engine.stop_experiment("ab1").unwrap();
    assert!(search(&engine, "u1").experiment.is_none());
    assert!(engine.experiment_report("ab1").is_err());
}

fn search_arm(engine: &Engine, i: usize) -> String {
    let report = engine.experiment_report("ab1").unwrap();
    let traffic: Vec<(String, f64)> = report["config"]["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["traffic"].as_f64().unwrap(),
            )
        })
        .collect();
    let b = shoprank::experiments::bucket("ab1", &format!("u{i}"));
    let mut edge = 0.0;
    for (name, t) in traffic {
        edge += t;
        if b < edge {
            return name;
        }
    }
    String::new()
}

#[test]
fn interleaving_credits_clicks_to_the_team_that_placed_the_product() {
    let data = common::demo_index(None);
    let engine = engine(data.path());
    engine
        .put_profile("pop", "[weights]\npopularity = 1.0\nbm25 = 0.01\n")
        .unwrap();
    engine
        .put_experiment(
            "tdi",
            r#"{"interleave": true, "arms": [{"name": "bm25", "profile": "bm25"}, {"name": "pop", "profile": "pop"}]}"#,
        )
        .unwrap();
    let mut shown_pop_first = 0;
    for i in 0..60 {
        let user = format!("t{i}");
        let res = search(&engine, &user);
        let now = shoprank::util::now();
        let tag = res.experiment.clone().unwrap();
        assert_eq!(tag.arm, "interleaved");
        let ids: Vec<&str> = res.hits.iter().map(|h| h.id.as_str()).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "no product twice");
        // Shoppers here like best-sellers: they click the best-selling product shown.
        let best = res
            .hits
            .iter()
            .max_by_key(|h| engine.product(&h.id).unwrap().sales)
            .unwrap();
        if best.id != res.hits[0].id {
            shown_pop_first += 1;
        }
        engine
            .record_events(vec![event(&user, EventType::Click, &best.id, now)])
            .unwrap();
    }
    let report = engine.experiment_report("tdi").unwrap();
    let wins = &report["interleaving"]["wins"];
    let (bm, pop) = (
        wins["bm25"].as_u64().unwrap(),
        wins["pop"].as_u64().unwrap(),
    );
    assert!(pop > bm, "the popularity team wins: {report}");
    assert!(
        report["interleaving"]["p_value"].as_f64().unwrap() < 0.05,
        "{report}"
    );
    eprintln!("interleaving: pop {pop} bm25 {bm} ({shown_pop_first} best-sellers below rank 1)");
}

#[actix_web::test]
async fn the_experiment_api_validates_definitions() {
    let data = common::demo_index(None);
    let engine = Arc::new(engine(data.path()));
    let state = AppState::new(engine.clone(), 64);
    let put = |id: &str, body: &str| {
        atest::TestRequest::put()
            .uri(&format!("/experiments/{id}"))
            .set_payload(body.to_string())
    };
    for bad in [
        r#"{"arms": [{"name": "a", "profile": "nope", "traffic": 50}, {"name": "b", "profile": "bm25", "traffic": 50}]}"#,
        r#"{"arms": [{"name": "a", "profile": "default", "traffic": 80}, {"name": "b", "profile": "bm25", "traffic": 80}]}"#,
        r#"{"arms": [{"name": "a", "profile": "default", "traffic": 50}]}"#,
        r#"{"arms": [{"name": "a", "profile": "default", "traffic": 50, "colour": 1}, {"name": "b", "profile": "bm25", "traffic": 50}]}"#,
        "not toml [",
    ] {
        let (s, b) = common::call(&state, put("x", bad)).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_experiment")),
            "{bad}: {b}"
        );
    }
    let (s, b) = common::call(&state, put("bad%21id", AB)).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter"))
    );
    let (s, b) = common::call(&state, put("ab", AB)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = common::call(&state, atest::TestRequest::get().uri("/experiments")).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"experiments": ["ab"]})));
    let (s, b) = common::call(
        &state,
        atest::TestRequest::get().uri("/search?q=%E6%89%8B%E6%9C%BA%E5%A3%B3&user=u7"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["experiment"]["id"], "ab");
    let (s, b) = common::call(&state, atest::TestRequest::get().uri("/experiments/ab")).await;
    assert_eq!(s, StatusCode::OK);
    let searches: u64 = b["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["searches"].as_u64().unwrap())
        .sum();
    assert_eq!(searches, 1);
    let (s, _) = common::call(&state, atest::TestRequest::delete().uri("/experiments/ab")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = common::call(&state, atest::TestRequest::get().uri("/experiments/ab")).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("experiment_not_found"))
    );
}

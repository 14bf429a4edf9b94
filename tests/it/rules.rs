//! Merchandising rules on the demo catalog: a campaign rule made over the API pins, boosts,
//! buries and hides on the next search, shows every effect in `explain`, and expires at
//! its end time without a restart; rules are versioned and validated like profiles; the
//! conditions (segment, category, profile) hold; an A/B experiment measures a rule.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test as atest;
use serde_json::{json, Value};

use shoprank::behavior::{Event, EventType};
use shoprank::engine::{Engine, SearchRequest, SearchResponse};
use shoprank::server::AppState;

fn put(name: &str, body: &str) -> atest::TestRequest {
    atest::TestRequest::put()
        .uri(&format!("/rules/{name}"))
        .set_payload(body.to_string())
}

fn get(uri: &str) -> atest::TestRequest {
    atest::TestRequest::get().uri(uri)
}

fn search_uri(q: &str) -> String {
    format!("/search?q={}&explain=true", common::urlencode(q))
}

fn ids(res: &Value) -> Vec<String> {
    (res["hits"].as_array().unwrap().iter())
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

fn effects(hit: &Value) -> Vec<(String, String)> {
    (hit["explain"]["rules"].as_array().into_iter().flatten())
        .map(|e| {
            (
                e["effect"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn a_campaign_rule_over_the_api_changes_the_next_search_and_expires_by_itself() {
    let data = common::demo_index(None);
    let engine = Arc::new(common::open_engine(data.path(), None));
    let state = AppState::new(engine.clone(), 64);

    let (_, before) = common::call(&state, get(&search_uri("面霜"))).await;
    let organic = ids(&before);
    assert!(organic.contains(&"demo-068".to_string()), "{organic:?}");
    assert!(organic.contains(&"demo-065".to_string()), "{organic:?}");
    assert!(before.get("rules").is_none(), "no rule yet: {before}");

    // 双11: 自然堂 lifted, 兰蔻 buried, 雅诗兰黛's cream hidden, 兰蔻's serum (not a cream,
    // so no match) pinned second, until a few seconds from now.
    assert_eq!(organic, ["demo-077", "demo-065", "demo-068", "demo-072"]);
    let ends = shoprank::util::now() + 3;
    let rule = json!({
        "description": "双11 面霜",
        "when": {"query_contains": ["面霜"], "ends": ends},
        "then": {
            "pin": [{"id": "demo-064", "position": 2}],
            "boost": [
                {"field": "brand", "value": "自然堂", "weight": 5.0},
                {"field": "shop", "value": "兰蔻官方旗舰店", "weight": -5.0}
            ],
            "hide": ["demo-077"]
        }
    });
    let (s, b) = common::call(&state, put("double11", &rule.to_string())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let version = b["version"]["version"].as_u64().unwrap();

    let (s, during) = common::call(&state, get(&search_uri("面霜"))).await;
    assert_eq!(s, StatusCode::OK, "{during}");
    assert_eq!(
        ids(&during),
        ["demo-068", "demo-064", "demo-072", "demo-065"],
        "boosted first, pinned second, buried last, hidden gone"
    );
    let hits = during["hits"].as_array().unwrap();
    let effect = |effect: &str, detail: &str| vec![(effect.to_string(), detail.to_string())];
    assert_eq!(effects(&hits[0]), effect("boost", "brand = 自然堂"));
    assert_eq!(effects(&hits[1]), effect("pin", "position 2"));
    assert_eq!(effects(&hits[2]), []);
    assert_eq!(effects(&hits[3]), effect("boost", "shop = 兰蔻官方旗舰店"));
    assert_eq!(hits[1]["explain"]["matched_by"], json!(["pin"]));
    assert_eq!(during["total"], 4, "{during}");
    let applied = &during["rules"][0];
    assert_eq!(applied["name"], "double11");
    assert_eq!(applied["version"], version);
    assert_eq!(applied["pinned"], json!(["demo-064"]));
    assert_eq!(applied["boosted"], 2);
    assert_eq!(applied["hidden"], json!(["demo-077"]));

    // Other queries are untouched.
    let (_, other) = common::call(&state, get(&search_uri("口红"))).await;
    assert!(other.get("rules").is_none(), "{other}");

    // Past `ends`, the same server serves the organic results again.
    while shoprank::util::now() < ends {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_, after) = common::call(&state, get(&search_uri("面霜"))).await;
    assert_eq!(ids(&after), organic, "the promotion expired by itself");
    assert!(after.get("rules").is_none(), "{after}");
    let (_, list) = common::call(&state, get("/rules")).await;
    assert_eq!(list["rules"][0]["scheduled"], "expired", "{list}");
}

#[actix_web::test]
async fn rules_are_validated_versioned_deleted_and_restored() {
    let data = common::demo_index(None);
    let engine = Arc::new(common::open_engine(data.path(), None));
    let state = AppState::new(engine.clone(), 64);
    let v1_text = "description = \"v1\"\n[when]\nquery_equals = [\"口红\"]\n[[then.pin]]\nid = \"demo-066\"\nposition = 1\n";
    let (s, b) = common::call(&state, put("lip", v1_text)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v1 = b["version"]["version"].as_u64().unwrap();

    for (bad, says) in [
        ("[when]\nquery_equals = [\"口红\"]\n", "consequence"),
        (
            "[[then.pin]]\nid = \"demo-066\"\nposition = 0\n",
            "position",
        ),
        (
            "[then]\nhide = [\"x\"]\n[when]\nprofiles = [\"nope\"]\n",
            "nope",
        ),
        (
            "[then]\nhide = [\"x\"]\n[when]\nends = \"next week\"\n",
            "RFC 3339",
        ),
        ("[then]\nhide = [\"x\"]\nshuffle = true\n", "shuffle"),
        ("[then", "TOML"),
        (r#"{"then": {"hide": 3}}"#, "invalid type"),
    ] {
        let (s, b) = common::call(&state, put("lip", bad)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
        assert_eq!(b["code"], "invalid_rule", "{b}");
        let message = b["message"].as_str().unwrap();
        assert!(message.contains(says) || says == "TOML", "{bad}: {message}");
    }
    let (s, b) = common::call(&state, put("a..b", v1_text)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let invalid_utf8 = atest::TestRequest::put()
        .uri("/rules/lip")
        .set_payload(vec![b'[', 0xff, 0xfe]);
    let (s, b) = common::call(&state, invalid_utf8).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");

    // A rejected edit changed nothing: v1 still acts.
    let (_, b) = common::call(&state, get("/rules/lip")).await;
    assert_eq!(b["version"], v1, "{b}");
    let (_, res) = common::call(&state, get(&search_uri("口红"))).await;
    assert_eq!(ids(&res)[0], "demo-066");

    let (s, b) = common::call(
        &state,
        put(
            "lip",
            "description = \"v2\"\n[when]\nquery_equals = [\"口红\"]\n[then]\nhide = [\"demo-066\"]\n",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, res) = common::call(&state, get(&search_uri("口红"))).await;
    assert!(!ids(&res).contains(&"demo-066".to_string()));

    let (s, b) = common::call(&state, atest::TestRequest::delete().uri("/rules/lip")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = common::call(&state, get("/rules/lip")).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("rule_not_found"))
    );
    let (s, _) = common::call(&state, atest::TestRequest::delete().uri("/rules/lip")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let restore = atest::TestRequest::post().uri(&format!("/rules/lip/restore?version={v1}"));
    let (s, b) = common::call(&state, restore).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = common::call(&state, get("/rules/lip")).await;
    assert_eq!(b["rule"]["description"], "v1");
    let actions: Vec<&str> = (b["versions"].as_array().unwrap().iter())
        .map(|v| v["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["put", "put", "delete", "put"]);
    let (_, res) = common::call(&state, get(&search_uri("口红"))).await;
    assert_eq!(ids(&res)[0], "demo-066");
}

#[test]
fn hand_edited_rule_files_are_picked_up_and_a_broken_one_keeps_the_old_rules() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    let dir = data.path().join("rules");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hide.toml"),
        "[when]\nquery_equals = [\"口红\"]\n[then]\nhide = [\"demo-066\"]\n",
    )
    .unwrap();
    assert!(engine.reload_rules_if_changed());
    let shown = |e: &Engine| -> Vec<String> {
        let res = e.search(&SearchRequest::new("口红")).unwrap();
        res.hits.into_iter().map(|h| h.id).collect()
    };
    assert!(!shown(&engine).contains(&"demo-066".to_string()));
    std::fs::write(dir.join("hide.toml"), "[then]\nhide = 7\n").unwrap();
    assert!(
        !engine.reload_rules_if_changed(),
        "a broken file is refused"
    );
    assert!(
        !shown(&engine).contains(&"demo-066".to_string()),
        "the old rule stays live"
    );
}

#[test]
fn a_contested_position_goes_to_the_rule_first_by_name() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    let pin = |id: &str, position: usize| {
        format!("[when]\nquery_equals = [\"口红\"]\n[[then.pin]]\nid = \"{id}\"\nposition = {position}\n")
    };
    engine.put_rule("b-later", &pin("demo-067", 1)).unwrap();
    engine.put_rule("a-first", &pin("demo-066", 1)).unwrap();
    engine.put_rule("c-third", &pin("demo-064", 4)).unwrap();
    let res = engine.search(&SearchRequest::new("口红")).unwrap();
    let ids: Vec<&str> = res.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(&ids[..2], ["demo-066", "demo-067"], "{ids:?}");
    assert_eq!(ids[3], "demo-064", "{ids:?}");
    let names: Vec<&str> = res.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a-first", "b-later", "c-third"]);
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

fn engine_with_events(data: &Path) -> Engine {
    common::open_engine_with_events(data, &data.join("events.redb"))
}

#[test]
fn segments_categories_and_filters_decide_and_narrow() {
    let data = common::demo_index(None);
    let engine = engine_with_events(data.path());
    // New shoppers see 兰蔻's cream first for any query in the cream category; returning
    // shoppers are shown only what is in stock under 200 yuan.
    engine
        .put_rule(
            "welcome",
            "[when]\nsegment = \"new\"\ncategory = \"美妆/面部护理/面霜\"\n[[then.pin]]\nid = \"demo-065\"\nposition = 1\n",
        )
        .unwrap();
    engine
        .put_rule(
            "returning",
            "[when]\nsegment = \"returning\"\nquery_contains = [\"面霜\"]\n[then.filter]\nprice_max = 200\nin_stock = true\n",
        )
        .unwrap();
    let run = |user: Option<&str>, q: &str| -> SearchResponse {
        let mut req = SearchRequest::new(q);
        req.user = user.map(str::to_string);
        engine.search(&req).unwrap()
    };
    let new = run(Some("stranger"), "面霜");
    assert_eq!(new.hits[0].id, "demo-065");
    assert_eq!(new.rules.len(), 1, "{:?}", new.rules);
    assert_eq!(new.rules[0].name, "welcome");
    let anonymous = run(None, "面霜");
    assert_eq!(anonymous.hits[0].id, "demo-065", "no user is a new shopper");

    let now = shoprank::util::now();
    engine
        .record_events(vec![event("fan", EventType::View, "demo-001", now)])
        .unwrap();
    let back = run(Some("fan"), "面霜");
    assert_eq!(back.rules.len(), 1);
    assert_eq!(back.rules[0].name, "returning");
    assert!(!back.hits.is_empty());
    assert!(
        back.hits.iter().all(|h| h.price.unwrap() <= 200.0),
        "{:?}",
        back.hits
    );
    assert_eq!(back.filters.price_max, Some(200.0));
    // A request's own narrower bound stays.
    let mut req = SearchRequest::new("面霜");
    req.user = Some("fan".into());
    req.filters.price_max = Some(150.0);
    assert_eq!(engine.search(&req).unwrap().filters.price_max, Some(150.0));
    // A pinned product must pass the filters: a filter on another category drops it.
    let mut req = SearchRequest::new("面霜");
    req.filters.category = Some("美妆/面部护理/面霜".into());
    req.filters.price_max = Some(500.0);
    let res = engine.search(&req).unwrap();
    assert!(
        res.hits.iter().all(|h| h.id != "demo-065"),
        "1450 yuan is over the bound"
    );
    assert_eq!(res.rules[0].name, "welcome");
    assert!(res.rules[0].pinned.is_empty());
}

#[test]
fn an_ab_experiment_measures_a_rule_scoped_to_its_arm() {
    let data = common::demo_index(None);
    let engine = engine_with_events(data.path());
    let default = shoprank::rank::Profile::default_profile().to_toml();
    engine.put_profile("campaign", &default).unwrap();
    engine
        .put_rule(
            "cases",
            "[when]\nprofiles = [\"campaign\"]\nquery_equals = [\"手机壳\"]\n[[then.pin]]\nid = \"demo-003\"\nposition = 1\n",
        )
        .unwrap();
    engine
        .put_experiment(
            "rule-ab",
            "[[arms]]\nname = \"control\"\nprofile = \"default\"\ntraffic = 50\n[[arms]]\nname = \"treatment\"\nprofile = \"campaign\"\ntraffic = 50\n",
        )
        .unwrap();
    let mut seen = std::collections::HashMap::new();
    for i in 0..60 {
        let user = format!("u{i}");
        let mut req = SearchRequest::new("手机壳");
        req.user = Some(user.clone());
        let res = engine.shopper_search(&req).unwrap();
        let arm = res.experiment.clone().unwrap().arm;
        let pinned = res.rules.iter().any(|r| r.pinned == ["demo-003"]);
        assert_eq!(pinned, arm == "treatment", "{arm}: {:?}", res.rules);
        if pinned {
            assert_eq!(res.hits[0].id, "demo-003");
        }
        // Every shopper clicks the first product shown.
        let now = shoprank::util::now();
        engine
            .record_events(vec![event(&user, EventType::Click, &res.hits[0].id, now)])
            .unwrap();
        *seen.entry(arm).or_insert(0u64) += 1;
    }
    let report = engine.experiment_report("rule-ab").unwrap();
    for arm in report["arms"].as_array().unwrap() {
        let name = arm["arm"].as_str().unwrap();
        assert_eq!(arm["searches"].as_u64(), Some(seen[name]), "{report}");
        assert_eq!(arm["clicks"].as_u64(), Some(seen[name]), "{report}");
    }
}

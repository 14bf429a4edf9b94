//! A second embedding model inside one engine: a profile naming a model folder
//! (`model = "ID"`) searches with that model's query and product vectors; an experiment
//! whose arm names that profile A/B-tests the model (split or interleaved); product
//! writes and rebuilds reach its vectors; an unknown model makes the profile invalid.
//! Two tiny random-weight models stand in: the serving one (`tiny-random`, the index is
//! built with it) and the challenger (`tiny-b`, a folder of `DATA_DIR/models`).

use crate::common;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::test as atest;
use serde_json::{json, Value};

use shoprank::behavior::{Event, EventType, RedbStore};
use shoprank::encoder::{dot, Encoder};
use shoprank::engine::{Engine, SearchRequest, SearchResponse};
use shoprank::index::EmbeddingCache;
use shoprank::jobs::ReindexSpec;
use shoprank::server::AppState;
use shoprank::settings::Settings;

const SERVING: &str = "tiny-random";
const CHALLENGER: &str = "tiny-b";

/// Profile `challenger`: the default's weights, searching with model `tiny-b`.
fn challenger_profile(model: &str) -> String {
    format!("description = \"a challenger model\"\nmodel = \"{model}\"\n[weights]\nbm25 = 0.1\nsemantic = 1.0\n")
}

/// A data directory indexed with the serving model, holding the challenger's folder;
/// the serving model, and the challenger loaded on its own (to compute what it gives).
struct Setup {
    data: tempfile::TempDir,
    serving: common::TinyModel,
    challenger: Encoder,
}

fn setup() -> Setup {
    let serving = common::tiny_model();
    let data = common::demo_index(Some(&common::tiny_encoder(&serving)));
    let dir = common::tiny_model_folder(data.path(), CHALLENGER);
    Setup {
        challenger: common::folder_encoder(&dir),
        data,
        serving,
    }
}

impl Setup {
    fn engine(&self) -> Engine {
        common::open_engine(self.data.path(), Some(common::tiny_encoder(&self.serving)))
    }

    fn writable(&self) -> Arc<Engine> {
        let engine = self.engine();
        let settings = Settings {
            data_dir: self.data.path().to_path_buf(),
            commit_interval_ms: 0,
            ..Settings::default()
        };
        engine.enable_writes(&settings).expect("writes enabled");
        Arc::new(engine)
    }
}

fn search(engine: &Engine, query: &str, profile: &str) -> SearchResponse {
    let mut req = SearchRequest::new(query);
    req.profile = Some(profile.into());
    req.explain = true;
    req.size = 20;
    engine.search(&req).expect("search answers")
}

/// Each hit's `semantic` feature.
fn semantic(res: &SearchResponse) -> Vec<(String, f32)> {
    (res.hits.iter())
        .map(|h| {
            let e = h.explain.as_ref().expect("explain asked for");
            let f = e.features.iter().find(|f| f.name == "semantic");
            (
                h.id.clone(),
                f.unwrap_or_else(|| panic!("{} has no semantic feature", h.id))
                    .value,
            )
        })
        .collect()
}

/// The cosine `encoder` gives `query` and product `id`'s text.
fn cosine(engine: &Engine, encoder: &Encoder, query: &str, id: &str) -> f32 {
    let q = encoder.encode_query(query).unwrap();
    let text = engine.product(id).unwrap().embedding_text();
    let d = encoder.encode_documents(&[text], |_| {}).unwrap().remove(0);
    dot(&q, &d)
}

/// Every hit's semantic feature is `encoder`'s cosine (the product vectors are stored as
/// int8: within 0.02), and every explain names `model`. Returns the largest distance to
/// `other`'s cosines.
fn assert_scored_by(
    engine: &Engine,
    res: &SearchResponse,
    query: &str,
    (encoder, model): (&Encoder, &str),
    other: &Encoder,
) -> f32 {
    assert!(!res.hits.is_empty(), "`{query}` finds something");
    assert_eq!(res.model.as_deref(), Some(model), "{query}");
    let mut apart = 0f32;
    for (id, got) in semantic(res) {
        let want = cosine(engine, encoder, query, &id);
        assert!(
            (got - want).abs() < 0.02,
            "{id}: semantic {got}, {model} gives {want}"
        );
        apart = apart.max((got - cosine(engine, other, query, &id)).abs());
        let hit = res.hits.iter().find(|h| h.id == id).unwrap();
        assert_eq!(hit.explain.as_ref().unwrap().model.as_deref(), Some(model));
    }
    apart
}

#[test]
fn a_profile_naming_a_second_model_ranks_with_that_models_vectors() {
    let s = setup();
    let engine = s.engine();
    let serving = common::tiny_encoder(&s.serving);
    assert_eq!(engine.health().models.len(), 1, "only the serving model");
    engine
        .put_profile("challenger", &challenger_profile(CHALLENGER))
        .unwrap();
    let mut apart = 0f32;
    for query in ["手机壳", "面霜", "跑步鞋"] {
        let res = search(&engine, query, "challenger");
        apart = apart.max(assert_scored_by(
            &engine,
            &res,
            query,
            (&s.challenger, CHALLENGER),
            &serving,
        ));
        // The default profile still ranks with the serving model.
        let res = search(&engine, query, "default");
        assert_scored_by(&engine, &res, query, (&serving, SERVING), &s.challenger);
    }
    assert!(
        apart > 0.02,
        "two random models give other cosines ({apart})"
    );

    let health = engine.health();
    let models: Vec<(String, bool, Vec<String>)> = (health.models.iter())
        .map(|m| (m.id.clone(), m.serving, m.profiles.clone()))
        .collect();
    assert_eq!(
        models,
        [
            (SERVING.into(), true, vec!["bm25".into(), "default".into()]),
            (CHALLENGER.into(), false, vec!["challenger".into()]),
        ]
    );
    let products = engine.generation().products.len();
    assert_eq!(health.models[1].vectors, products);
    // Its vectors went through the embedding cache keyed by its id.
    let cache = EmbeddingCache::open(s.data.path(), CHALLENGER, common::TINY_DIM).unwrap();
    let first = engine.generation().products[0].embedding_text();
    assert!(cache.get(&first).unwrap().is_some());

    // Naming the serving model is the same as naming none: no second model is loaded.
    engine
        .put_profile("challenger", &challenger_profile(SERVING))
        .unwrap();
    engine
        .put_profile("plain", "[weights]\nbm25 = 0.1\nsemantic = 1.0\n")
        .unwrap();
    assert_eq!(
        engine.health().models.len(),
        1,
        "{:?}",
        engine.health().models
    );
    let (a, b) = (
        search(&engine, "面霜", "challenger"),
        search(&engine, "面霜", "plain"),
    );
    assert_eq!(a.model.as_deref(), Some(SERVING));
    assert_eq!(semantic(&a), semantic(&b));

    // A challenger no profile names anymore is dropped.
    engine
        .put_profile("challenger", &challenger_profile(CHALLENGER))
        .unwrap();
    assert_eq!(engine.health().models.len(), 2);
    engine.delete_profile("challenger").unwrap();
    assert_eq!(engine.health().models.len(), 1);
}

fn with_events(s: &Setup) -> Engine {
    let mut engine = s.engine();
    let store = RedbStore::open(&s.data.path().join("events.redb")).unwrap();
    engine
        .attach_events(Box::new(store), common::RETENTION_DAYS)
        .unwrap();
    engine
}

#[test]
fn an_experiment_serves_each_shopper_from_their_arms_model_and_reports_it() {
    let s = setup();
    let engine = with_events(&s);
    let serving = common::tiny_encoder(&s.serving);
    engine
        .put_profile("challenger", &challenger_profile(CHALLENGER))
        .unwrap();
    engine
        .put_experiment(
            "model-ab",
            r#"{"arms": [{"name": "control", "profile": "default", "traffic": 50},
                         {"name": "treatment", "profile": "challenger", "traffic": 50}]}"#,
        )
        .unwrap();
    let mut searches = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..40 {
        let user = format!("m{i}");
        let mut req = SearchRequest::new("手机壳");
        req.user = Some(user.clone());
        req.explain = true;
        let res = engine.shopper_search(&req).unwrap();
        let tag = res.experiment.clone().expect("in the experiment");
        let (encoder, model, other) = match tag.arm.as_str() {
            "control" => (&serving, SERVING, &s.challenger),
            _ => (&s.challenger, CHALLENGER, &serving),
        };
        assert_scored_by(&engine, &res, "手机壳", (encoder, model), other);
        assert_eq!(tag.models, [(tag.arm.clone(), model.to_string())].into());
        *searches.entry(tag.arm.clone()).or_default() += 1;
        let event = Event {
            user_id: user,
            kind: EventType::Click,
            product_id: Some(res.hits[0].id.clone()),
            query: None,
            ts: shoprank::util::now(),
        };
        engine.record_events(vec![event]).unwrap();
    }
    assert_eq!(searches.len(), 2, "both arms served: {searches:?}");
    let report = engine.experiment_report("model-ab").unwrap();
    for arm in report["arms"].as_array().unwrap() {
        let name = arm["arm"].as_str().unwrap();
        let model = if name == "control" {
            SERVING
        } else {
            CHALLENGER
        };
        assert_eq!(arm["models"], json!({model: searches[name]}), "{report}");
        assert_eq!(arm["clicks"], searches[name], "{report}");
    }
    engine.stop_experiment("model-ab").unwrap();

    // Interleaved: both models' hits on one page, each hit saying which model ranked it.
    engine
        .put_experiment(
            "model-tdi",
            r#"{"interleave": true, "arms": [{"name": "old", "profile": "default"},
                                            {"name": "new", "profile": "challenger"}]}"#,
        )
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..10 {
        let mut req = SearchRequest::new("手机壳");
        req.user = Some(format!("t{i}"));
        req.explain = true;
        let res = engine.shopper_search(&req).unwrap();
        let tag = res.experiment.clone().unwrap();
        let both = [
            ("new".to_string(), CHALLENGER.to_string()),
            ("old".into(), SERVING.into()),
        ];
        assert_eq!(tag.models, both.into());
        assert_eq!(
            res.model.as_deref(),
            Some(&*format!("{SERVING} + {CHALLENGER}"))
        );
        for (id, value) in semantic(&res) {
            let hit = res.hits.iter().find(|h| h.id == id).unwrap();
            let model = hit.explain.as_ref().unwrap().model.clone().unwrap();
            let encoder = if model == SERVING {
                &serving
            } else {
                &s.challenger
            };
            let want = cosine(&engine, encoder, "手机壳", &id);
            assert!(
                (value - want).abs() < 0.02,
                "{id} by {model}: {value} vs {want}"
            );
            seen.insert(model);
        }
    }
    assert_eq!(seen.len(), 2, "hits of both models were shown: {seen:?}");
    let report = engine.experiment_report("model-tdi").unwrap();
    assert_eq!(
        report["interleaving"]["models"],
        json!({"old": {SERVING: 10}, "new": {CHALLENGER: 10}}),
        "{report}"
    );
}

fn upsert(engine: &Engine, record: Value) {
    let writes = engine
        .parse_products(record.to_string().as_bytes())
        .unwrap();
    engine.write_products(writes).unwrap();
}

/// The challenger's semantic value of product `id` for `query` (`None`: not a hit).
fn challenger_value(engine: &Engine, query: &str, id: &str) -> Option<f32> {
    let mut req = SearchRequest::new(query);
    req.profile = Some("challenger".into());
    req.explain = true;
    req.all_candidates = true;
    req.size = 100;
    let res = engine.search(&req).unwrap();
    semantic(&res)
        .into_iter()
        .find(|(h, _)| h == id)
        .map(|(_, v)| v)
}

#[test]
fn product_writes_reach_the_challengers_vectors() {
    let s = setup();
    let engine = s.writable();
    engine
        .put_profile("challenger", &challenger_profile(CHALLENGER))
        .unwrap();
    let query = "透明硅胶跑步鞋";
    upsert(
        &engine,
        json!({"id": "new-1", "title": "透明硅胶跑步鞋 超轻款", "brand": "李宁", "category": "运动/跑步鞋", "price": 199}),
    );
    let got = challenger_value(&engine, query, "new-1").expect("the new product is found");
    let want = cosine(&engine, &s.challenger, query, "new-1");
    assert!((got - want).abs() < 0.02, "new product: {got} vs {want}");
    // A new title gets a new vector.
    upsert(
        &engine,
        json!({"id": "new-1", "title": "苹果手机壳 透明硅胶", "brand": "李宁", "category": "运动/跑步鞋", "price": 199}),
    );
    let got = challenger_value(&engine, query, "new-1").expect("still found");
    let want = cosine(&engine, &s.challenger, query, "new-1");
    assert!((got - want).abs() < 0.02, "changed title: {got} vs {want}");
    // A deleted product is gone from the challenger's searches too.
    engine
        .write_products(vec![shoprank::index::ProductWrite::Delete(
            "new-1".into(),
            None,
        )])
        .unwrap();
    assert_eq!(challenger_value(&engine, query, "new-1"), None);
    assert_eq!(
        engine.health().models[1].vectors,
        engine.generation().products.len(),
        "one vector per row"
    );
}

#[test]
fn a_rebuild_keeps_the_challenger_working() {
    let s = setup();
    let engine = s.writable();
    engine
        .put_profile("challenger", &challenger_profile(CHALLENGER))
        .unwrap();
    let before = engine.generation().meta.name.clone();
    let job = engine
        .reindex(ReindexSpec {
            catalog: common::fixture("demo_catalog.jsonl"),
            ..ReindexSpec::default()
        })
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while engine.job(&job.id).unwrap().state == "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuild never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(engine.job(&job.id).unwrap().state, "succeeded");
    assert_ne!(
        engine.generation().meta.name,
        before,
        "a new generation is live"
    );
    let serving = common::tiny_encoder(&s.serving);
    let res = search(&engine, "面霜", "challenger");
    assert_scored_by(&engine, &res, "面霜", (&s.challenger, CHALLENGER), &serving);
    let health = engine.health();
    assert_eq!(health.status, "ok", "{:?}", health.problems);
    assert_eq!(health.models[1].vectors, engine.generation().products.len());
    // And writes to the new generation reach it.
    upsert(
        &engine,
        json!({"id": "after-1", "title": "保湿面霜 补水", "brand": "自然堂", "category": "美妆/面霜", "price": 99}),
    );
    let got = challenger_value(&engine, "面霜", "after-1").expect("found");
    let want = cosine(&engine, &s.challenger, "面霜", "after-1");
    assert!((got - want).abs() < 0.02, "{got} vs {want}");
}

#[actix_web::test]
async fn an_unknown_or_broken_model_is_an_invalid_profile_and_the_old_one_stays() {
    let s = setup();
    let engine = Arc::new(s.engine());
    engine
        .put_profile("challenger", &challenger_profile(CHALLENGER))
        .unwrap();
    // A folder without settings, and one whose weights are missing.
    std::fs::create_dir_all(s.data.path().join("models/empty")).unwrap();
    let broken = common::tiny_model_folder(s.data.path(), "broken");
    std::fs::remove_file(broken.join("model.safetensors")).unwrap();
    let state = AppState::new(engine.clone(), 64);
    for (model, reason) in [
        ("nope", "no model `nope`"),
        ("empty", "no model `empty`"),
        ("broken", "neither model.safetensors nor pytorch_model.bin"),
    ] {
        let put = atest::TestRequest::put()
            .uri("/profiles/challenger")
            .set_payload(challenger_profile(model));
        let (status, body) = common::call(&state, put).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{model}: {body}");
        assert_eq!(body["code"], "invalid_profile");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(reason), "{model}: {message}");
        assert!(
            !message.contains(&*s.data.path().to_string_lossy()),
            "no server path: {message}"
        );
    }
    let (_, body) = common::call(
        &state,
        atest::TestRequest::get().uri("/profiles/challenger"),
    )
    .await;
    assert_eq!(
        body["profile"]["model"], CHALLENGER,
        "the old profile stays: {body}"
    );
    let res = search(&engine, "面霜", "challenger");
    assert_eq!(res.model.as_deref(), Some(CHALLENGER));
    // /health lists both models.
    let (_, health) = common::call(&state, atest::TestRequest::get().uri("/health")).await;
    let ids: Vec<&str> = health["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [SERVING, CHALLENGER], "{health}");
}

#[test]
fn a_profile_file_naming_a_missing_model_stops_the_engine_from_opening() {
    let s = setup();
    std::fs::write(
        s.data.path().join("profiles/gone.toml"),
        challenger_profile("gone"),
    )
    .unwrap();
    let err = Engine::open(s.data.path(), Some(common::tiny_encoder(&s.serving)), None)
        .err()
        .expect("a profile whose model is missing is an error at start");
    assert_eq!(err.code(), "invalid_profile");
    assert!(err.to_string().contains("no model `gone`"), "{err}");
    // With the folder in place the engine opens and the profile searches with it.
    common::tiny_model_folder(s.data.path(), "gone");
    let engine = s.engine();
    assert_eq!(
        search(&engine, "面霜", "gone").model.as_deref(),
        Some("gone")
    );
}

#[test]
fn model_current_names_the_published_trained_model() {
    let s = setup();
    let settings = Settings {
        data_dir: s.data.path().to_path_buf(),
        model: Some("current".into()),
        ..Settings::default()
    };
    let err = shoprank::engine::encoder_config(&settings).unwrap_err();
    assert!(
        err.contains("no `shoprank train` has published a model"),
        "{err}"
    );
    std::fs::write(
        s.data.path().join("models/CURRENT"),
        format!("{CHALLENGER}\n"),
    )
    .unwrap();
    let config = shoprank::engine::encoder_config(&settings).unwrap();
    assert_eq!(config.id, CHALLENGER);
    assert_eq!(
        config.dir,
        s.data.path().join("models").join(CHALLENGER).join(".")
    );
    std::fs::write(s.data.path().join("models/CURRENT"), "../elsewhere").unwrap();
    let err = shoprank::engine::encoder_config(&settings).unwrap_err();
    assert!(err.contains("not a model name"), "{err}");
}

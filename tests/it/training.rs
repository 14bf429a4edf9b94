//! `shoprank train` through the library: the tiny random-weight BERT fine-tuned on the
//! demo catalog's category queries (every leaf category name, its products judged
//! relevant), written as a model folder, loaded back, gated.

use crate::common;

use std::collections::{BTreeMap, HashMap};

use candle_core::Device;
use shoprank::encoder::train::{TrainSettings, Trainer};
use shoprank::encoder::{dot, Encoder, EncoderConfig};
use shoprank::offline::eval::Qrels;
use shoprank::offline::train::{self, TrainOptions};
use shoprank::Engine;

fn category_queries() -> (Vec<(String, String)>, Qrels) {
    let mut by_leaf: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in common::demo_products() {
        let leaf = p.category.rsplit('/').next().unwrap_or_default();
        by_leaf.entry(leaf.to_string()).or_default().push(p.id);
    }
    let mut queries = Vec::new();
    let mut qrels: Qrels = HashMap::new();
    for (i, (leaf, ids)) in by_leaf.into_iter().enumerate() {
        let qid = format!("c{i}");
        qrels.insert(qid.clone(), ids.into_iter().map(|id| (id, 1)).collect());
        queries.push((qid, leaf));
    }
    (queries, qrels)
}

fn options() -> TrainOptions {
    TrainOptions {
        batch: 4,
        // A random model moves slowly at a pretrained model's learning rate.
        lr: 1e-3,
        epochs: 50,
        steps: Some(12),
        time_budget_secs: 60.0,
        ..TrainOptions::default()
    }
}

#[test]
fn training_lowers_the_loss_and_writes_a_folder_the_encoder_loads() {
    let model = common::tiny_model();
    let data_dir = common::demo_index(Some(&common::tiny_encoder(&model)));
    let engine = common::open_engine(data_dir.path(), Some(common::tiny_encoder(&model)));
    let (queries, qrels) = category_queries();
    let opts = options();
    let data = train::prepare(&engine, &queries, &qrels, &opts).unwrap();
    assert!(
        data.train.iter().any(|q| !q.negatives.is_empty()),
        "hard negatives mined"
    );
    let settings = TrainSettings {
        lr: opts.lr,
        ..TrainSettings::default()
    };
    let mut trainer = Trainer::load(&model.config, settings).unwrap();

    // Before any step the training pass encodes products as the encoder does.
    let texts: Vec<String> = data
        .catalog
        .iter()
        .take(5)
        .map(|(_, t)| t.clone())
        .collect();
    let parent = common::tiny_encoder(&model);
    let want = parent.encode_documents(&texts, |_| {}).unwrap();
    for (a, b) in trainer.encode_products(&texts).unwrap().iter().zip(&want) {
        assert!(
            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4),
            "{a:?} vs {b:?}"
        );
    }

    // The mean loss over one epoch's batches (the tiny model is random each run, so no
    // single batch is a fair witness).
    let batches = train::epoch_batches(&data, &opts, &mut shoprank::util::Rng(1));
    let mean_loss = |t: &Trainer| {
        batches.iter().map(|b| t.loss(b).unwrap()).sum::<f32>() / batches.len() as f32
    };
    let before = mean_loss(&trainer);
    let opts = TrainOptions {
        steps: Some(40),
        ..opts
    };
    let fit = train::fit(&mut trainer, &data, &opts, |_| {}).unwrap();
    assert_eq!((fit.steps, fit.stopped_by), (40, "steps"));
    let after = mean_loss(&trainer);
    assert!(after < before, "loss {before} -> {after}");

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("tiny-ft");
    trainer.save(&dir, "tiny-random-ft-test").unwrap();
    let config = EncoderConfig::from_model_dir(&dir)
        .expect("encoder.toml written")
        .unwrap();
    assert_eq!(config.id, "tiny-random-ft-test");
    assert_eq!(config.pooling, model.config.pooling);
    let trained = Encoder::load(config, Device::Cpu).unwrap();
    assert_eq!(trained.id(), "tiny-random-ft-test");
    let got = trained.encode_documents(&texts, |_| {}).unwrap();
    let moved = got
        .iter()
        .zip(&want)
        .map(|(a, b)| 1.0 - dot(a, b))
        .fold(0f32, f32::max);
    assert!(
        moved > 1e-3,
        "the trained vectors differ from the parent's ({moved})"
    );
    // The loaded folder gives what the trainer computes.
    for (a, b) in trainer.encode_products(&texts).unwrap().iter().zip(&got) {
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4));
    }
}

#[test]
fn the_model_id_follows_the_data_the_options_and_the_steps() {
    let opts = options();
    let id = train::model_id("m3e-small", "aaaa", &opts, 10, "w");
    assert!(id.starts_with("m3e-small-ft-"), "{id}");
    assert_eq!(id, train::model_id("m3e-small", "aaaa", &opts, 10, "w"));
    assert_ne!(
        id,
        train::model_id("m3e-small", "bbbb", &opts, 10, "w"),
        "data"
    );
    assert_ne!(
        id,
        train::model_id("m3e-small", "aaaa", &opts, 11, "w"),
        "steps"
    );
    assert_ne!(
        id,
        train::model_id("other", "aaaa", &opts, 10, "w"),
        "parent"
    );
    assert_ne!(
        id,
        train::model_id("m3e-small", "aaaa", &opts, 10, "v"),
        "weights"
    );
    let lr = TrainOptions {
        lr: 1e-5,
        ..opts.clone()
    };
    assert_ne!(
        id,
        train::model_id("m3e-small", "aaaa", &lr, 10, "w"),
        "options"
    );

    // The data hash sees the judgments.
    let model = common::tiny_model();
    let data_dir = common::demo_index(Some(&common::tiny_encoder(&model)));
    let engine = common::open_engine(data_dir.path(), Some(common::tiny_encoder(&model)));
    let (queries, mut qrels) = category_queries();
    let a = train::data_hash(&train::prepare(&engine, &queries, &qrels, &opts).unwrap());
    let qid = (queries.iter())
        .find(|(q, _)| !shoprank::offline::tune::is_held_out(q, opts.holdout, opts.seed))
        .unwrap()
        .0
        .clone();
    qrels.get_mut(&qid).unwrap().clear();
    let b = train::data_hash(&train::prepare(&engine, &queries, &qrels, &opts).unwrap());
    assert_ne!(a, b);
}

#[test]
fn a_model_that_does_not_beat_its_parent_is_not_published() {
    let model = common::tiny_model();
    let data_dir = common::demo_index(Some(&common::tiny_encoder(&model)));
    let engine = common::open_engine(data_dir.path(), Some(common::tiny_encoder(&model)));
    let (queries, qrels) = category_queries();
    let open = |dir: &std::path::Path, e: Encoder| Engine::open(dir, Some(e), None);
    // No step: the "trained" model is its parent, which ties and so does not win.
    let opts = TrainOptions {
        steps: Some(0),
        ..options()
    };
    let r = train::run(
        &train::Setup {
            engine: &engine,
            data_dir: data_dir.path(),
            base: &model.config,
            open: &open,
        },
        &queries,
        &qrels,
        &opts,
        |_| {},
    )
    .unwrap();
    assert_eq!(r.fit.steps, 0);
    assert_eq!(r.gate.held_out.base, r.gate.held_out.tuned);
    assert_eq!(r.gate.held_out.p_value, 1.0);
    assert_eq!(r.gate.hybrid_held_out.base, r.gate.hybrid_held_out.tuned);
    assert!(r.gate.hybrid_held_out.queries > 0 && r.gate.hybrid_train.queries > 0);
    assert!(
        !data_dir.path().join("models/.gate-base").exists(),
        "the scratch indexes are removed"
    );
    assert!(!r.gate.improved && !r.published);
    assert_eq!(train::published(data_dir.path()).unwrap(), None);
    assert!(!r.dir.exists(), "a losing model's folder is removed");
    let cache = shoprank::index::EmbeddingCache::path(data_dir.path(), &r.id);
    assert!(!cache.exists(), "and the vectors its evaluation cached");

    // With --keep the folder stays, with its report, and loads through --model-dir.
    let kept = TrainOptions { keep: true, ..opts };
    let r = train::run(
        &train::Setup {
            engine: &engine,
            data_dir: data_dir.path(),
            base: &model.config,
            open: &open,
        },
        &queries,
        &qrels,
        &kept,
        |_| {},
    )
    .unwrap();
    assert!(!r.published && r.dir.join("train.json").is_file());
    let settings = shoprank::settings::Settings {
        model_dir: Some(r.dir.clone()),
        manifest: "/nonexistent/manifest.toml".into(),
        ..Default::default()
    };
    let e = shoprank::engine::load_encoder(&settings).unwrap();
    assert_eq!(e.id(), r.id, "the folder's own id, with no manifest needed");
}

#[test]
fn a_model_that_wins_on_held_out_queries_is_published_and_used_after_a_rebuild() {
    let model = common::tiny_model();
    let data_dir = common::demo_index(Some(&common::tiny_encoder(&model)));
    let engine = common::open_engine(data_dir.path(), Some(common::tiny_encoder(&model)));
    // Each category query twice under two ids: the split sends some texts to both sides,
    // so what training learns shows on held-out queries (real held-out queries share
    // words, not whole texts, with the training ones).
    let (queries, qrels) = category_queries();
    let mut twice = Vec::new();
    let mut qrels2 = Qrels::new();
    for (id, text) in &queries {
        for side in ["a", "b"] {
            twice.push((format!("{side}{id}"), text.clone()));
            qrels2.insert(format!("{side}{id}"), qrels[id].clone());
        }
    }
    // BM25 alone ranks these queries perfectly; a data directory whose `default` ranks by
    // the semantic feature alone lets the gate see the model (and checks that the gate's
    // scratch indexes use the data directory's profiles).
    let mut semantic = shoprank::rank::Profile::default_profile();
    semantic.weights.values_mut().for_each(|w| *w = 0.0);
    semantic.weights.insert("semantic".into(), 1.0);
    // Profiles naming an A/B challenger model (`default` too): the gate ranks with the
    // model under test, and its scratch directory has no model folders (regression: the
    // scratch engines failed to open on the other profiles' models).
    common::tiny_model_folder(data_dir.path(), "tiny-b");
    semantic.model = Some("tiny-b".into());
    std::fs::write(
        data_dir.path().join("profiles/default.toml"),
        semantic.to_toml(),
    )
    .unwrap();
    std::fs::write(
        data_dir.path().join("profiles/other.toml"),
        "model = \"tiny-b\"\n[weights]\nsemantic = 1.0\n",
    )
    .unwrap();
    let open = |dir: &std::path::Path, e: Encoder| Engine::open(dir, Some(e), None);
    let opts = TrainOptions {
        steps: Some(100),
        batch: 16,
        ..options()
    };
    let r = train::run(
        &train::Setup {
            engine: &engine,
            data_dir: data_dir.path(),
            base: &model.config,
            open: &open,
        },
        &twice,
        &qrels2,
        &opts,
        |_| {},
    )
    .unwrap();
    assert!(r.gate.improved && r.published, "{:?}", r.gate);
    assert!(r.gate.hybrid_held_out.tuned > r.gate.hybrid_held_out.base);
    assert_eq!(
        train::published(data_dir.path()).unwrap().as_deref(),
        Some(r.id.as_str())
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.dir.join("train.json")).unwrap()).unwrap();
    assert_eq!(report["parent"], "tiny-random");

    // A rebuild with the published folder records its id; the vectors come from the cache
    // the gate filled.
    let settings = shoprank::settings::Settings {
        model_dir: Some(r.dir.clone()),
        ..Default::default()
    };
    let trained = shoprank::engine::load_encoder(&settings).unwrap();
    let meta = common::build_index(data_dir.path(), common::demo_products(), Some(&trained));
    assert_eq!(meta.model_id.as_deref(), Some(r.id.as_str()));
    assert_eq!(meta.cached_vectors, meta.products);
}

#[test]
fn a_writer_does_not_follow_a_generation_another_model_encoded() {
    let model = common::tiny_model();
    let data_dir = common::demo_index(Some(&common::tiny_encoder(&model)));
    let engine = common::open_engine(data_dir.path(), Some(common::tiny_encoder(&model)));
    let settings = shoprank::settings::Settings {
        data_dir: data_dir.path().to_path_buf(),
        commit_interval_ms: 0,
        ..Default::default()
    };
    engine.enable_writes(&settings).unwrap();
    let before = engine.health().generation;
    // `shoprank index --model-dir <trained>` in another process.
    let mut other = model.config.clone();
    other.id = "tiny-random-ft-other".into();
    let other = Encoder::load(other, Device::Cpu).unwrap();
    common::build_index(data_dir.path(), common::demo_products(), Some(&other));
    let err = engine.follow_current().unwrap_err().to_string();
    assert!(err.contains("tiny-random-ft-other"), "{err}");
    assert_eq!(
        engine.health().generation,
        before,
        "still on its own model's vectors"
    );
    // A generation of its own model is followed as before.
    common::build_index(
        data_dir.path(),
        common::demo_products(),
        Some(&common::tiny_encoder(&model)),
    );
    assert!(engine.follow_current().unwrap());
}

#[test]
fn frozen_word_embeddings_stay_and_the_rest_moves() {
    let model = common::tiny_model();
    let data_dir = common::demo_index(Some(&common::tiny_encoder(&model)));
    let engine = common::open_engine(data_dir.path(), Some(common::tiny_encoder(&model)));
    let (queries, qrels) = category_queries();
    let opts = options();
    let data = train::prepare(&engine, &queries, &qrels, &opts).unwrap();
    let settings = TrainSettings {
        lr: opts.lr,
        freeze_word_embeddings: true,
        ..TrainSettings::default()
    };
    let mut trainer = Trainer::load(&model.config, settings).unwrap();
    let all = Trainer::load(&model.config, TrainSettings::default()).unwrap();
    let word = "embeddings.word_embeddings.weight";
    let before = trainer.weights().unwrap();
    assert_eq!(
        trainer.parameters() + before[word].elem_count(),
        all.parameters()
    );
    let batch = train::epoch_batches(&data, &opts, &mut shoprank::util::Rng(1)).remove(0);
    trainer.step(&batch).unwrap();
    trainer.step(&batch).unwrap();
    let after = trainer.weights().unwrap();
    let diff = |name: &str| {
        (&before[name] - &after[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(diff(word), 0.0);
    assert!(diff("encoder.layer.0.attention.self.query.weight") > 0.0);
}

//! Offline evaluation, judgments from a search log and weight tuning, through the library
//! on the demo catalog (with the tiny random-weight BERT, so semantic features exist).
//!
//! Judged queries: every leaf category name of the demo catalog, with the products of that
//! category judged relevant.

use crate::common;

use std::collections::{BTreeMap, HashMap};

use shoprank::offline::eval::{self, Metric, Qrels};
use shoprank::offline::judgments::{self, JudgeOptions};
use shoprank::offline::tune::{self, TuneOptions};
use shoprank::rank::Profile;
use shoprank::retrieve::Bm25Params;
use shoprank::util::Rng;
use shoprank::{Engine, SearchRequest};

fn category_queries() -> (Vec<(String, String)>, Qrels) {
    let mut by_leaf: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in common::demo_products() {
        let leaf = p
            .category
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        by_leaf.entry(leaf).or_default().push(p.id);
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

/// The demo catalog indexed with the tiny model, and an engine over it.
fn engine() -> (tempfile::TempDir, common::TinyModel, Engine) {
    let model = common::tiny_model();
    let data = common::demo_index(Some(&common::tiny_encoder(&model)));
    let engine = common::open_engine(data.path(), Some(common::tiny_encoder(&model)));
    (data, model, engine)
}

fn write_profile(engine: &Engine, dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join("profiles").join(format!("{name}.toml")), text).unwrap();
    engine.reload_profiles().unwrap();
}

#[test]
fn rescoring_the_base_weights_reproduces_the_engine_order() {
    let (d, _m, engine) = engine();
    // Every candidate a match, so that some query pages past 100 results.
    let mut profile = Profile::default_profile();
    profile.matching.min_share = 0.0;
    write_profile(&engine, d.path(), "default", &profile.to_toml());
    let (queries, qrels) = category_queries();
    let data = tune::collect(&engine, "default", None, &queries, &qrels).unwrap();
    assert_eq!(data.len(), queries.len());
    let weights = tune::weights_of(&Profile::default_profile());
    let mut paged = false;
    for q in &data {
        let mut req = SearchRequest::new(q.query.clone());
        req.size = 100;
        let res = engine.search(&req).unwrap();
        assert_eq!(q.candidates.len(), res.pageable, "{}", q.query);
        paged |= res.pageable > 100;
        let engine_order: Vec<String> = q.candidates.iter().map(|c| c.id.clone()).collect();
        let top: Vec<String> = res.hits.iter().map(|h| h.id.clone()).collect();
        assert_eq!(engine_order[..top.len()], top[..], "{}", q.query);
        assert_eq!(tune::ranking(q, &weights), engine_order, "{}", q.query);
        assert!(q.candidates.iter().all(|c| c
            .features
            .iter()
            .any(|&(f, _)| shoprank::rank::FEATURES[f] == "semantic")));
    }
    assert!(
        paged,
        "some query should have more candidates than one page"
    );
    // Re-scored metrics equal the engine's.
    let run = eval::run(&engine, &["default".into()], &queries, &qrels, 10).unwrap();
    let refs: Vec<&tune::QueryData> = data.iter().collect();
    let rescored = tune::mean_metric(&refs, &weights, Metric::Ndcg, 10);
    assert!((rescored - run.profiles[0].mean.ndcg).abs() < 1e-9);
}

#[test]
fn tune_beats_a_bad_base_on_held_out_and_the_written_profile_scores_as_reported() {
    let (dir, _m, engine) = engine();
    let (queries, qrels) = category_queries();
    // Against BM25, towards the best sellers: a poor start.
    write_profile(
        &engine,
        dir.path(),
        "bad",
        "[weights]\nbm25 = -1.0\nsemantic = 0.1\npopularity = 1.0\n",
    );
    let base = engine.profiles().get("bad").unwrap();
    let data = tune::collect(&engine, "bad", None, &queries, &qrels).unwrap();
    let opts = TuneOptions {
        restarts: 3,
        ..TuneOptions::default()
    };
    let (report, tuned) = tune::tune(&data, "bad", &base, &opts).unwrap();
    assert_eq!(report.unreproduced, 0);
    assert!(report.train.tuned > report.train.base + 0.2, "{report:?}");
    assert!(report.improved, "{report:?}");
    // The queries name categories: the category intent is the feature that finds them.
    assert!(tuned.weight("category_match") > 0.1, "{:?}", tuned.weights);
    assert_eq!(tuned.boosts, base.boosts);
    let profiles = dir.path().join("profiles");
    let path = tune::write_profile(&profiles, "better", &tuned, false).unwrap();
    assert!(tune::write_profile(&profiles, "better", &tuned, false)
        .unwrap_err()
        .to_string()
        .contains("exists"));
    assert!(tune::write_profile(&profiles, "bm25", &tuned, true).is_err());
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("shoprank tune"));
    // Through the engine, the written profile scores what tune reported on held-out.
    engine.reload_profiles().unwrap();
    let held: Vec<(String, String)> = queries
        .iter()
        .filter(|(qid, _)| tune::is_held_out(qid, opts.holdout, opts.seed))
        .cloned()
        .collect();
    assert_eq!(held.len(), report.held_out.queries);
    let run = eval::run(&engine, &["bad".into(), "better".into()], &held, &qrels, 10).unwrap();
    assert!((run.profiles[0].mean.rr - report.held_out.base).abs() < 1e-9);
    assert!(
        (run.profiles[1].mean.rr - report.held_out.tuned).abs() < 1e-9,
        "{} vs {}",
        run.profiles[1].mean.rr,
        report.held_out.tuned
    );
    assert!(run.comparisons[0].mrr.mean_diff > 0.0);
}

#[test]
fn tune_searches_bm25_parameters_and_the_written_profile_scores_as_reported() {
    let (dir, _m, engine) = engine();
    let (queries, qrels) = category_queries();
    // BM25 alone, ties by sales: re-scoring must follow the tie-break too.
    write_profile(
        &engine,
        dir.path(),
        "lexical",
        "tie_break = \"popularity\"\n[weights]\nbm25 = 1.0\n[candidates]\nbm25 = 200\nvector = 0\n",
    );
    let opts = TuneOptions {
        restarts: 1,
        ..TuneOptions::default()
    };
    let err = tune::tune_with_bm25(
        &engine,
        "lexical",
        &queries,
        &qrels,
        &["colour".into()],
        &opts,
    )
    .unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
    let fields = ["title".to_string(), "shop".to_string()];
    let (report, tuned) =
        tune::tune_with_bm25(&engine, "lexical", &queries, &qrels, &fields, &opts).unwrap();
    assert_eq!(report.unreproduced, 0);
    let search = report.bm25.as_ref().unwrap();
    assert_eq!(search.absent, ["shop"], "the demo index has no shop field");
    assert_eq!(search.fields.len(), 1);
    let (field, from, to) = &search.fields[0];
    assert_eq!((field.as_str(), *from), ("title", Bm25Params::DEFAULT));
    assert!(
        search.settings >= tune::K1_GRID.len() + tune::B_GRID.len() - 2,
        "{search:?}"
    );
    assert!(search.train_chosen >= search.train_base);
    assert_eq!(tuned.bm25.params("title"), *to);
    assert_eq!(tuned.tie_break, shoprank::rank::TieBreak::Popularity);
    // Through the engine, the written profile scores what tune reported, on both splits.
    let profiles = dir.path().join("profiles");
    tune::write_profile(&profiles, "lexical-tuned", &tuned, true).unwrap();
    engine.reload_profiles().unwrap();
    for (held, scores) in [(true, &report.held_out), (false, &report.train)] {
        let split: Vec<(String, String)> = queries
            .iter()
            .filter(|(qid, _)| tune::is_held_out(qid, opts.holdout, opts.seed) == held)
            .cloned()
            .collect();
        let names = ["lexical".to_string(), "lexical-tuned".to_string()];
        let run = eval::run(&engine, &names, &split, &qrels, 10).unwrap();
        assert!((run.profiles[0].mean.rr - scores.base).abs() < 1e-9);
        assert!(
            (run.profiles[1].mean.rr - scores.tuned).abs() < 1e-9,
            "{} vs {}",
            run.profiles[1].mean.rr,
            scores.tuned
        );
    }
}

#[test]
fn nothing_is_claimed_when_the_base_is_already_perfect() {
    let (_d, _m, engine) = engine();
    let (queries, _) = category_queries();
    // Judge each query's current top hit relevant: the base has MRR 1 everywhere.
    let mut qrels: Qrels = HashMap::new();
    for (qid, q) in &queries {
        let top = engine.search(&SearchRequest::new(q.clone())).unwrap().hits[0]
            .id
            .clone();
        qrels.insert(qid.clone(), [(top, 1)].into_iter().collect());
    }
    let data = tune::collect(&engine, "default", None, &queries, &qrels).unwrap();
    let (report, _) = tune::tune(
        &data,
        "default",
        &Profile::default_profile(),
        &TuneOptions::default(),
    )
    .unwrap();
    assert_eq!(report.held_out.base, 1.0);
    assert!(!report.improved);
}

#[test]
fn identical_profiles_are_not_significantly_different_and_unknown_ones_fail() {
    let (dir, _m, engine) = engine();
    let (queries, qrels) = category_queries();
    write_profile(
        &engine,
        dir.path(),
        "same",
        &Profile::default_profile().to_toml(),
    );
    let run = eval::run(
        &engine,
        &["default".into(), "same".into(), "bm25".into()],
        &queries,
        &qrels,
        5,
    )
    .unwrap();
    assert_eq!(run.k, 5);
    assert_eq!(run.comparisons.len(), 2);
    assert_eq!(run.comparisons[0].ndcg.p_value, 1.0);
    assert_eq!(run.comparisons[0].mrr.mean_diff, 0.0);
    assert_eq!(run.profiles[0].mean, run.profiles[1].mean);
    let md = eval::report::render(&run, eval::report::Format::Markdown, true);
    assert!(
        md.contains("| `bm25` |") && md.contains(&format!("| c0 | {} |", queries[0].1)),
        "{md}"
    );
    let err = eval::run(
        &engine,
        &["default".into(), "nope".into()],
        &queries,
        &qrels,
        10,
    )
    .unwrap_err();
    assert_eq!(err.code(), "unknown_profile");
    assert_eq!(
        tune::collect(&engine, "nope", None, &queries, &qrels)
            .unwrap_err()
            .code(),
        "unknown_profile"
    );
}

#[test]
fn judgments_from_a_biased_search_log_feed_eval() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    // `口红`: the old ranker shows 6 other products on top and the 6 lipsticks below them
    // (swapped at random now and then); shoppers examine rank k with chance 1/k and click
    // lipsticks (80 % of the time they look) far more than the rest (30 %).
    let products = common::demo_products();
    let lipsticks: Vec<String> = products
        .iter()
        .filter(|p| p.category.ends_with("口红"))
        .map(|p| p.id.clone())
        .collect();
    let others: Vec<String> = products
        .iter()
        .filter(|p| !p.category.contains("口红"))
        .take(6)
        .map(|p| p.id.clone())
        .collect();
    let mut rng = Rng(11);
    let mut log = String::new();
    for s in 0..3000 {
        let mut shown: Vec<&String> = others.iter().chain(&lipsticks).collect();
        if rng.unit() < 0.3 {
            for i in (1..shown.len()).rev() {
                shown.swap(i, rng.below(i + 1));
            }
        }
        let ids: Vec<String> = shown.iter().map(|p| format!("\"{p}\"")).collect();
        log += &format!("{{\"type\":\"search\",\"search_id\":\"s{s}\",\"user_id\":\"u{}\",\"query\":\"口红\",\"ts\":1700000000,\"impressions\":[{}]}}\n", s % 50, ids.join(","));
        for (k, p) in shown.iter().enumerate() {
            let relevant = if lipsticks.contains(p) { 0.8 } else { 0.3 };
            if rng.unit() < 1.0 / (k + 1) as f64 && rng.unit() < relevant {
                log += &format!(
                    "{{\"type\":\"click\",\"search_id\":\"s{s}\",\"product_id\":\"{p}\"}}\n"
                );
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.jsonl");
    std::fs::write(&file, log).unwrap();
    let parsed = judgments::read_log(&[file]).unwrap();
    let j = judgments::judge(&parsed, &JudgeOptions::default());
    let (qpath, rpath) = judgments::write(&j, &dir.path().join("out")).unwrap();
    let queries = eval::read_queries(&qpath).unwrap();
    let qrels = eval::read_qrels(&rpath).unwrap();
    assert_eq!(queries, [("q1".to_string(), "口红".to_string())]);
    let grades = &qrels["q1"];
    let worst_lipstick = lipsticks.iter().map(|p| grades[p]).min().unwrap();
    let best_other = others.iter().map(|p| grades[p]).max().unwrap();
    assert!(worst_lipstick > best_other, "{grades:?}");
    // Raw click rates alone would have ranked the top-shown products first.
    let raw_top = j
        .judgments
        .iter()
        .max_by(|a, b| a.raw.total_cmp(&b.raw))
        .unwrap();
    assert!(others.contains(&raw_top.product), "{raw_top:?}");
    let run = eval::run(&engine, &["default".into()], &queries, &qrels, 10).unwrap();
    assert_eq!(run.queries.len(), 1);
    assert!(
        run.profiles[0].mean.ndcg > 0.5,
        "{:?}",
        run.profiles[0].mean
    );
}

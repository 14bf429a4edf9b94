//! Tuning: judged queries + an engine + a base profile -> feature weights found by
//! coordinate ascent on a training split (and, optionally, BM25 k1 and b of a few fields
//! found by a grid search around it), checked on a held-out split.
//!
//! Searching is the slow part, so each judged query is searched once with the base profile
//! and `explain`: every ranked candidate is kept with its feature values. Without a user
//! the engine's score is exactly `Σ weight × value` over those features (the personal
//! features and their relevance gate only exist for a known user, see `rank`), so a new
//! weight vector re-scores the cached candidates without searching again; equal scores
//! keep the engine's tie-break order (recorded per candidate). The candidate set and the
//! `bm25` feature depend on the profile's boosts, BM25 parameters and candidate counts, not
//! on its weights, so they stay valid while the weights move.
//!
//! The weight search is RankLib's coordinate ascent (Metzler & Croft 2007): one feature at
//! a time, steps that double in both directions, keep the best; rounds until the training
//! metric stops improving; restarts from random weights, the first from the base profile.
//! Queries are split into training and held-out sets by a seeded hash of their id, and
//! the tuned profile is only worth writing when it beats the base on the held-out set.
//!
//! BM25 parameters change the candidates, so each setting tried is searched again (the
//! encoder's query cache keeps the query vectors, so only retrieval and ranking run):
//! coordinate search over (fields, k1 or b) on small grids ([`K1_GRID`], [`B_GRID`]), a
//! setting scored by the training metric after one weight ascent from the base weights;
//! the best setting then gets the full weight search. See [`tune_with_bm25`].

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{Engine, SearchRequest, MAX_PAGE_SIZE};
use crate::error::{Error, Result};
use crate::offline::eval::metrics::DEPTH;
use crate::offline::eval::significance::{PERMUTATIONS, SEED};
use crate::offline::eval::{randomization_test, scorable, Metric, Qrels, QueryScores};
use crate::rank::{tie_order, Profile, FEATURES};
use crate::retrieve::{Bm25Params, Bm25Settings};
use crate::schema::is_boostable;
use crate::util::Rng;

/// One cached candidate of one query.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Product id.
    pub id: String,
    /// Position in the profile's tie-break order among the query's candidates (how the
    /// engine orders equal scores).
    pub tie: u32,
    /// (index into [`FEATURES`], value), in the engine's summation order.
    pub features: Vec<(usize, f32)>,
    /// Judged grade (0 when not judged).
    pub grade: u32,
}

/// A judged query with its candidates, in the base profile's order.
#[derive(Debug, Clone)]
pub struct QueryData {
    /// Query id.
    pub qid: String,
    /// Query text.
    pub query: String,
    /// Every ranked candidate.
    pub candidates: Vec<Candidate>,
    /// Grades of every judged product of the query (for the ideal ranking and recall).
    pub judged: Vec<u32>,
}

/// A weight per entry of [`FEATURES`].
pub type Weights = Vec<f32>;

/// The profile's weights as a vector over [`FEATURES`].
pub fn weights_of(profile: &Profile) -> Weights {
    FEATURES.iter().map(|f| profile.weight(f)).collect()
}

/// Searches each scorable query once with `profile` (its BM25 parameters replaced by
/// `bm25` when given) and `explain`, keeping every ranked candidate (all pages) with its
/// features and grade.
pub fn collect(
    engine: &Engine,
    profile: &str,
    bm25: Option<&Bm25Settings>,
    queries: &[(String, String)],
    qrels: &Qrels,
) -> Result<Vec<QueryData>> {
    let tie = engine.profiles().get(profile)?.tie_break;
    let gen = engine.generation();
    let (scored, _) = scorable(queries, qrels);
    let mut out = Vec::with_capacity(scored.len());
    for ((qid, query), judged) in scored {
        let mut req = SearchRequest::new(query.clone());
        req.profile = Some(profile.to_string());
        req.explain = true;
        req.explain_terms = false;
        req.size = MAX_PAGE_SIZE;
        req.all_candidates = true;
        req.bm25 = bm25.cloned();
        let mut candidates = Vec::new();
        let mut ords = Vec::new();
        loop {
            let res = engine.search(&req)?;
            let last = res.hits.len() < req.size;
            for h in res.hits {
                let explain = h.explain.ok_or_else(|| {
                    Error::Internal("a search with explain returned no explain".into())
                })?;
                let features = explain
                    .features
                    .iter()
                    .map(|f| {
                        let i = FEATURES.iter().position(|n| *n == f.name).ok_or_else(|| {
                            Error::Internal(format!("unknown feature `{}` in explain", f.name))
                        })?;
                        Ok((i, f.value))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let ord = gen.by_id.get(&h.id).copied().ok_or_else(|| {
                    Error::Internal(format!("hit `{}` is not in the generation", h.id))
                })?;
                ords.push(ord);
                candidates.push(Candidate {
                    tie: 0,
                    grade: judged.get(&h.id).copied().unwrap_or(0),
                    id: h.id,
                    features,
                });
            }
            if last || candidates.len() >= res.pageable {
                break;
            }
            req.page += 1;
        }
        let mut order: Vec<usize> = (0..ords.len()).collect();
        order.sort_by(|&a, &b| tie_order(&gen, tie, ords[a], ords[b]));
        for (pos, i) in order.into_iter().enumerate() {
            candidates[i].tie = pos as u32;
        }
        out.push(QueryData {
            qid: qid.clone(),
            query: query.clone(),
            candidates,
            judged: judged.values().copied().collect(),
        });
    }
    Ok(out)
}

fn score(c: &Candidate, w: &[f32]) -> f32 {
    c.features.iter().map(|&(i, v)| w[i] * v).sum()
}

/// The product ids of a query in the order `w` ranks them (as `rank::rank` would).
pub fn ranking(q: &QueryData, w: &[f32]) -> Vec<String> {
    let scores: Vec<f32> = q.candidates.iter().map(|c| score(c, w)).collect();
    let mut order: Vec<usize> = (0..q.candidates.len()).collect();
    order.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then(q.candidates[a].tie.cmp(&q.candidates[b].tie))
    });
    order
        .into_iter()
        .map(|i| q.candidates[i].id.clone())
        .collect()
}

/// The query's metrics under weights `w`. Only the ranks of the relevant candidates
/// matter, so each is counted (candidates scoring higher, or equal and earlier in the
/// tie-break order)
/// instead of sorting the whole list.
pub fn evaluate_query(q: &QueryData, w: &[f32], k: usize) -> QueryScores {
    let scores: Vec<f32> = q.candidates.iter().map(|c| score(c, w)).collect();
    let mut grades = Vec::new();
    for (i, c) in q.candidates.iter().enumerate().filter(|(_, c)| c.grade > 0) {
        let above = q
            .candidates
            .iter()
            .zip(&scores)
            .filter(|(o, s)| s.total_cmp(&scores[i]).then(c.tie.cmp(&o.tie)).is_gt())
            .count();
        if above < DEPTH {
            if grades.len() <= above {
                grades.resize(above + 1, 0);
            }
            grades[above] = c.grade;
        }
    }
    QueryScores::from_grades(&grades, &q.judged, k)
}

/// Mean of `metric` over `queries` under `w`.
pub fn mean_metric(queries: &[&QueryData], w: &[f32], metric: Metric, k: usize) -> f64 {
    if queries.is_empty() {
        return 0.0;
    }
    queries
        .iter()
        .map(|q| metric.of(&evaluate_query(q, w, k)))
        .sum::<f64>()
        / queries.len() as f64
}

/// Whether query `qid` belongs to the held-out split (a seeded hash, so the same id lands
/// on the same side in every run with the same seed).
pub fn is_held_out(qid: &str, fraction: f64, seed: u64) -> bool {
    // FNV-1a: stable across platforms and Rust versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in qid.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    Rng(h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unit() < fraction
}

/// Settings of the search.
#[derive(Debug, Clone, Serialize)]
pub struct TuneOptions {
    /// Metric maximized on the training split (and compared on the held-out one).
    pub metric: Metric,
    /// Its cutoff.
    pub k: usize,
    /// Share of the queries held out.
    pub holdout: f64,
    /// Seed of the split and of the random restarts.
    pub seed: u64,
    /// Runs of coordinate ascent (the first starts from the base weights).
    pub restarts: usize,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            metric: Metric::Mrr,
            k: 10,
            holdout: 0.3,
            seed: 7,
            restarts: 5,
        }
    }
}

/// RankLib's defaults: first step 0.001 (or 5 % of the weight), doubled up to 25 times.
const FIRST_STEP: f32 = 0.001;
const RELATIVE_STEP: f32 = 0.05;
const STEPS: usize = 25;
/// Rounds over all features per restart, at most.
const ROUNDS: usize = 20;
/// A round that gains less than this ends the restart.
const TOLERANCE: f64 = 1e-4;
/// Weights stay within the range a profile accepts.
const MAX_WEIGHT: f32 = 1000.0;

/// Coordinate ascent from `start` over the features `tunable`; returns the best weights
/// and their training metric.
pub fn coordinate_ascent(
    train: &[&QueryData],
    start: &[f32],
    tunable: &[usize],
    opts: &TuneOptions,
    rng: &mut Rng,
) -> (Weights, f64) {
    let eval = |w: &[f32]| mean_metric(train, w, opts.metric, opts.k);
    let mut w = start.to_vec();
    let mut best = eval(&w);
    for _ in 0..ROUNDS {
        let round_start = best;
        let mut order = tunable.to_vec();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for f in order {
            let orig = w[f];
            let mut best_value = orig;
            for dir in [1.0f32, -1.0] {
                let mut step = FIRST_STEP * dir;
                if orig != 0.0 && step.abs() > 0.5 * orig.abs() {
                    step = RELATIVE_STEP * orig.abs() * dir;
                }
                let mut total = step;
                for _ in 0..STEPS {
                    let value = orig + total;
                    if value.abs() > MAX_WEIGHT {
                        break;
                    }
                    w[f] = value;
                    let s = eval(&w);
                    if s > best + 1e-12 {
                        best = s;
                        best_value = value;
                    }
                    step *= 2.0;
                    total += step;
                }
            }
            w[f] = best_value;
        }
        if best - round_start < TOLERANCE {
            break;
        }
    }
    (w, best)
}

/// Base and tuned metric on one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitScores {
    /// Queries in the split.
    pub queries: usize,
    /// Metric of the base weights.
    pub base: f64,
    /// Metric of the tuned weights.
    pub tuned: f64,
    /// Means of every metric, base weights.
    pub base_all: QueryScores,
    /// ... tuned weights.
    pub tuned_all: QueryScores,
    /// Paired randomization test of tuned against base on the metric (two-sided).
    pub p_value: f64,
}

/// What `tune` found.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    /// Base profile name.
    pub base: String,
    /// Settings.
    pub options: TuneOptions,
    /// Features the search moved (the others keep their base weight).
    pub tuned_features: Vec<&'static str>,
    /// (feature, base weight, tuned weight) for the tuned features.
    pub weights: Vec<(&'static str, f32, f32)>,
    /// The BM25 parameter search, when there was one.
    pub bm25: Option<Bm25Search>,
    /// Training split.
    pub train: SplitScores,
    /// Held-out split.
    pub held_out: SplitScores,
    /// Whether the tuned profile beats the base on the held-out split.
    pub improved: bool,
    /// Queries whose re-scored base order differs from the engine's (0 expected).
    pub unreproduced: usize,
}

/// What the BM25 parameter search tried and chose.
#[derive(Debug, Clone, Serialize)]
pub struct Bm25Search {
    /// (field, base k1 and b, chosen k1 and b) of each field searched.
    pub fields: Vec<(String, Bm25Params, Bm25Params)>,
    /// Fields asked for that this index does not have (not searched).
    pub absent: Vec<String>,
    /// Settings searched (each one a search of every judged query).
    pub settings: usize,
    /// Training metric after one weight ascent from the base weights: base parameters.
    pub train_base: f64,
    /// ... the chosen parameters.
    pub train_chosen: f64,
    /// Seconds the search took.
    pub seconds: f64,
}

/// (base, tuned) metrics on one split: base weights on the base candidates, tuned weights
/// on the tuned ones (the same queries in the same order).
fn split_scores(
    base_queries: &[&QueryData],
    queries: &[&QueryData],
    base: &[f32],
    tuned: &[f32],
    opts: &TuneOptions,
) -> SplitScores {
    let per = |qs: &[&QueryData], w: &[f32]| -> Vec<QueryScores> {
        qs.iter().map(|q| evaluate_query(q, w, opts.k)).collect()
    };
    let (per_base, per_tuned) = (per(base_queries, base), per(queries, tuned));
    let metric = |v: &[QueryScores]| -> Vec<f64> { v.iter().map(|s| opts.metric.of(s)).collect() };
    let test = randomization_test(&metric(&per_base), &metric(&per_tuned), PERMUTATIONS, SEED);
    let (base_all, tuned_all) = (QueryScores::mean(&per_base), QueryScores::mean(&per_tuned));
    SplitScores {
        p_value: test.p_value,
        queries: queries.len(),
        base: opts.metric.of(&base_all),
        tuned: opts.metric.of(&tuned_all),
        base_all,
        tuned_all,
    }
}

fn check_options(opts: &TuneOptions) -> Result<()> {
    if !(opts.holdout > 0.0 && opts.holdout < 1.0) {
        return Err(Error::param(
            "holdout",
            format!("must be between 0 and 1 (exclusive), got {}", opts.holdout),
        ));
    }
    if opts.k == 0 || opts.restarts == 0 {
        return Err(Error::param("k/restarts", "must be at least 1"));
    }
    Ok(())
}

/// (held-out, training) queries of `data`.
fn split<'a>(
    data: &'a [QueryData],
    opts: &TuneOptions,
) -> (Vec<&'a QueryData>, Vec<&'a QueryData>) {
    data.iter()
        .partition(|q| is_held_out(&q.qid, opts.holdout, opts.seed))
}

/// The features that occur (non-zero) in `queries`: only they can change a ranking.
fn present_features(queries: &[&QueryData]) -> Vec<usize> {
    (0..FEATURES.len())
        .filter(|&i| {
            queries.iter().any(|q| {
                q.candidates
                    .iter()
                    .any(|c| c.features.iter().any(|&(f, v)| f == i && v != 0.0))
            })
        })
        .collect()
}

/// Tunes the weights of `base` on the cached `data`; returns the report and the tuned
/// profile (the base profile with the new weights).
pub fn tune(
    data: &[QueryData],
    base_name: &str,
    base: &Profile,
    opts: &TuneOptions,
) -> Result<(TuneReport, Profile)> {
    tune_weights(data, data, &base.bm25, base_name, base, opts)
}

/// Tunes the weights on `data`, collected with BM25 parameters `bm25`, and compares the
/// result with `base` on `base_data` (collected with the base profile).
fn tune_weights(
    base_data: &[QueryData],
    data: &[QueryData],
    bm25: &Bm25Settings,
    base_name: &str,
    base: &Profile,
    opts: &TuneOptions,
) -> Result<(TuneReport, Profile)> {
    check_options(opts)?;
    if base_data
        .iter()
        .map(|q| &q.qid)
        .ne(data.iter().map(|q| &q.qid))
    {
        return Err(Error::Internal(
            "the candidates of two BM25 settings are for different queries".into(),
        ));
    }
    let (held, train) = split(data, opts);
    let (base_held, base_train) = split(base_data, opts);
    if train.is_empty() || held.is_empty() {
        return Err(Error::Config(format!(
            "{} judged queries give {} for training and {} held out: need at least one of each (more judged queries, or another --holdout / --seed)",
            data.len(), train.len(), held.len()
        )));
    }
    let base_w = weights_of(base);
    let unreproduced = base_data
        .iter()
        .filter(|q| {
            ranking(q, &base_w)
                != q.candidates
                    .iter()
                    .map(|c| c.id.clone())
                    .collect::<Vec<_>>()
        })
        .count();
    if unreproduced > 0 {
        tracing::warn!(unreproduced, "re-scoring with the base weights does not reproduce the engine's order for some queries");
    }
    let tunable = present_features(&train);
    let l1 = |w: &[f32]| tunable.iter().map(|&i| w[i].abs()).sum::<f32>();
    let base_l1 = l1(&base_w);
    let mut rng = Rng(opts.seed);
    let mut best: Option<(Weights, f64)> = None;
    for restart in 0..opts.restarts {
        let start: Weights = if restart == 0 {
            base_w.clone()
        } else {
            let scale = if base_l1 > 0.0 { base_l1 } else { 1.0 } / tunable.len().max(1) as f32;
            let mut w = base_w.clone();
            for &i in &tunable {
                w[i] = 2.0 * scale * rng.unit() as f32;
            }
            w
        };
        let (w, s) = coordinate_ascent(&train, &start, &tunable, opts, &mut rng);
        tracing::info!(restart, train = s, "coordinate ascent");
        if best.as_ref().is_none_or(|(_, b)| s > *b) {
            best = Some((w, s));
        }
    }
    let (mut tuned_w, _) = best.unwrap_or((base_w.clone(), 0.0));
    // Rankings do not change with the scale of the weights, but the personal features
    // are added on top of them: keep the tuned features' total weight that of the base.
    let tuned_l1 = l1(&tuned_w);
    if base_l1 > 0.0 && tuned_l1 > 0.0 {
        for &i in &tunable {
            tuned_w[i] *= base_l1 / tuned_l1;
        }
    }
    // A zero semantic weight with no vector candidates would stop the engine from
    // encoding the query, which changes the candidates; keep it just above zero.
    let semantic = FEATURES.iter().position(|f| *f == "semantic").unwrap_or(0);
    if tuned_w[semantic] == 0.0 && base_w[semantic] != 0.0 && base.candidates.vector == 0 {
        tuned_w[semantic] = 1e-6;
    }
    let train_scores = split_scores(&base_train, &train, &base_w, &tuned_w, opts);
    let held_scores = split_scores(&base_held, &held, &base_w, &tuned_w, opts);
    let mut profile = base.clone();
    for &i in &tunable {
        profile.weights.insert(FEATURES[i].to_string(), tuned_w[i]);
    }
    profile.bm25 = bm25.clone();
    profile.description = format!(
        "`{base_name}` with weights{} tuned by `shoprank tune` for {} (train {} queries: {:.4} -> {:.4}; held-out {} queries: {:.4} -> {:.4})",
        if bm25 == &base.bm25 { "" } else { " and BM25 k1/b" },
        opts.metric.label(opts.k),
        train_scores.queries, train_scores.base, train_scores.tuned,
        held_scores.queries, held_scores.base, held_scores.tuned,
    );
    profile
        .validate()
        .map_err(|reason| Error::Internal(format!("tuned profile is invalid: {reason}")))?;
    let report = TuneReport {
        base: base_name.to_string(),
        options: opts.clone(),
        tuned_features: tunable.iter().map(|&i| FEATURES[i]).collect(),
        weights: tunable
            .iter()
            .map(|&i| (FEATURES[i], base_w[i], tuned_w[i]))
            .collect(),
        bm25: None,
        improved: held_scores.tuned > held_scores.base + 1e-12,
        train: train_scores,
        held_out: held_scores,
        unreproduced,
    };
    Ok((report, profile))
}

/// k1 values the BM25 search tries (tantivy's 1.2 among them; Anserini uses 0.9).
pub const K1_GRID: &[f32] = &[0.3, 0.6, 0.9, 1.2, 1.6, 2.0];
/// b values the BM25 search tries (tantivy's 0.75 among them; Anserini uses 0.4).
pub const B_GRID: &[f32] = &[0.0, 0.25, 0.4, 0.6, 0.75, 0.9, 1.0];
/// Rounds over all (field, parameter) coordinates, at most.
const BM25_ROUNDS: usize = 2;

/// Tunes BM25 k1 and b of `fields` and then the weights: a coordinate search over
/// (all `fields` together, then each field alone) × (k1 or b) on [`K1_GRID`] and
/// [`B_GRID`], each setting searched with the engine
/// (`collect`) and scored by the training metric after one weight ascent from the base
/// weights; rounds until no coordinate moves. The best setting gets [`tune`]'s full weight
/// search, and the report compares it (its candidates, its weights) with the base profile
/// (its own candidates and weights). Fields this index does not have are skipped and
/// named in the report.
pub fn tune_with_bm25(
    engine: &Engine,
    base_name: &str,
    queries: &[(String, String)],
    qrels: &Qrels,
    fields: &[String],
    opts: &TuneOptions,
) -> Result<(TuneReport, Profile)> {
    check_options(opts)?;
    let base = engine.profiles().get(base_name)?;
    if let Some(f) = fields.iter().find(|f| !is_boostable(f)) {
        return Err(Error::param(
            "bm25-fields",
            format!("`{f}` is not a text field or `NAME.bigram` sub-field"),
        ));
    }
    let started = std::time::Instant::now();
    let base_data: &[QueryData] = &collect(engine, base_name, None, queries, qrels)?;
    let indexed: Vec<String> = (engine.generation().fields.text.iter())
        .map(|(s, _)| s.name.clone())
        .collect();
    let (present, absent): (Vec<String>, Vec<String>) =
        fields.iter().cloned().partition(|f| indexed.contains(f));
    let base_w = weights_of(&base);
    // The training metric after one ascent from the base weights (same seed for all).
    let score = |data: &[QueryData]| {
        let (_, train) = split(data, opts);
        let tunable = present_features(&train);
        coordinate_ascent(&train, &base_w, &tunable, opts, &mut Rng(opts.seed)).1
    };
    let train_base = score(base_data);
    let mut tried: Vec<(Bm25Settings, f64)> = vec![(base.bm25.clone(), train_base)];
    let (mut chosen, mut chosen_score, mut chosen_data) = (base.bm25.clone(), train_base, None);
    // The fields together first (their parameters interact: on Multi-CPR b = 0 helps only
    // in both title fields at once), then each alone.
    let mut targets: Vec<Vec<String>> = present.iter().map(|f| vec![f.clone()]).collect();
    if present.len() > 1 {
        targets.insert(0, present.clone());
    }
    for round in 0..BM25_ROUNDS {
        let before = chosen.clone();
        for target in &targets {
            for k1_axis in [true, false] {
                let grid = if k1_axis { K1_GRID } else { B_GRID };
                for &v in grid {
                    let mut setting = chosen.clone();
                    for field in target {
                        let mut p = setting.params(field);
                        match k1_axis {
                            true => p.k1 = v,
                            false => p.b = v,
                        }
                        setting.set(field, p);
                    }
                    if tried.iter().any(|(s, _)| s == &setting) {
                        continue;
                    }
                    let data = collect(engine, base_name, Some(&setting), queries, qrels)?;
                    let s = score(&data);
                    let fields = target.join(" + ");
                    let (param, value) = (if k1_axis { "k1" } else { "b" }, v);
                    tracing::info!(round, fields, param, value, train = s, "bm25 setting");
                    tried.push((setting.clone(), s));
                    if s > chosen_score + 1e-9 {
                        (chosen, chosen_score, chosen_data) = (setting, s, Some(data));
                    }
                }
            }
        }
        if chosen == before {
            break;
        }
    }
    let search = Bm25Search {
        fields: present
            .iter()
            .map(|f| (f.clone(), base.bm25.params(f), chosen.params(f)))
            .collect(),
        absent,
        settings: tried.len() - 1,
        train_base,
        train_chosen: chosen_score,
        seconds: started.elapsed().as_secs_f64(),
    };
    let data = chosen_data.as_deref().unwrap_or(base_data);
    let (mut report, profile) = tune_weights(base_data, data, &chosen, base_name, &base, opts)?;
    report.bm25 = Some(search);
    Ok((report, profile))
}

/// Writes `profile` as `dir/NAME.toml`; refuses the reserved `bm25`, names that are not
/// `[A-Za-z0-9_-]+`, and an existing file unless `overwrite`.
pub fn write_profile(
    dir: &Path,
    name: &str,
    profile: &Profile,
    overwrite: bool,
) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    if path.exists() && !overwrite {
        return Err(Error::param(
            "out",
            format!(
                "{} exists: pick another name or pass --force",
                path.display()
            ),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = format!(
        "# Ranking profile `{name}`, written by `shoprank tune`.\n# Features: {}\n{}",
        FEATURES.join(", "),
        profile.to_toml()
    );
    // Checked, versioned and replaced atomically like a profile saved over HTTP.
    crate::rank::profile::save(dir, name, &text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, tie: u32, bm25: f32, semantic: f32, grade: u32) -> Candidate {
        Candidate {
            id: id.into(),
            tie,
            features: vec![(0, bm25), (1, semantic)],
            grade,
        }
    }

    #[test]
    fn rescoring_ranks_by_weighted_sum_with_row_tie_break() {
        let q = QueryData {
            qid: "1".into(),
            query: "x".into(),
            candidates: vec![
                cand("a", 2, 1.0, 0.0, 0),
                cand("b", 1, 0.0, 1.0, 1),
                cand("c", 0, 0.5, 0.5, 0),
            ],
            judged: vec![1],
        };
        let mut w = vec![0.0; FEATURES.len()];
        w[0] = 1.0;
        assert_eq!(ranking(&q, &w), ["a", "c", "b"]);
        assert_eq!(evaluate_query(&q, &w, 10).rr, 1.0 / 3.0);
        w[1] = 1.0; // all tie at 1.0: rows decide
        assert_eq!(ranking(&q, &w), ["c", "b", "a"]);
        assert_eq!(evaluate_query(&q, &w, 10).rr, 0.5);
        w[0] = 0.0;
        assert_eq!(evaluate_query(&q, &w, 10).rr, 1.0);
    }

    #[test]
    fn coordinate_ascent_finds_the_better_feature() {
        // The relevant candidate is first by `semantic`, last by `bm25`.
        let data: Vec<QueryData> = (0..20)
            .map(|i| QueryData {
                qid: i.to_string(),
                query: "x".into(),
                candidates: (0..5)
                    .map(|j| {
                        cand(
                            &format!("{i}-{j}"),
                            j,
                            1.0 - j as f32 * 0.2,
                            j as f32 * 0.2,
                            (j == 4) as u32,
                        )
                    })
                    .collect(),
                judged: vec![1],
            })
            .collect();
        let refs: Vec<&QueryData> = data.iter().collect();
        let mut start = vec![0.0; FEATURES.len()];
        start[0] = 1.0;
        start[1] = 0.1;
        let opts = TuneOptions::default();
        assert!((mean_metric(&refs, &start, Metric::Mrr, 10) - 0.2).abs() < 1e-9);
        let (w, s) = coordinate_ascent(&refs, &start, &[0, 1], &opts, &mut Rng(1));
        assert_eq!(s, 1.0, "{w:?}");
        assert!(w[1] > w[0], "{w:?}");
    }

    #[test]
    fn split_is_deterministic_and_about_the_fraction() {
        let held = (0..1000)
            .filter(|i| is_held_out(&i.to_string(), 0.3, 7))
            .count();
        assert!((250..350).contains(&held), "{held}");
        assert_eq!(is_held_out("q17", 0.3, 7), is_held_out("q17", 0.3, 7));
        let other = (0..1000)
            .filter(|i| is_held_out(&i.to_string(), 0.3, 7) != is_held_out(&i.to_string(), 0.3, 8))
            .count();
        assert!(other > 100, "the seed changes the split");
    }
}

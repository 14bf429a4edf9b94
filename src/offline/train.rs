//! Training: judged queries + the live index + a base model -> a fine-tuned model version
//! under `DATA_DIR/models/<id>/`, published only when it beats its parent on held-out
//! queries.
//!
//! ```text
//! qrels --split (tune's seeded hash)--> train / held-out queries
//! train queries --search the index--> hard negatives (top hits not judged relevant)
//! (query, positive, negatives) batches --encoder::train (InfoNCE, AdamW)--> weights
//! weights --> DATA_DIR/models/<id>/ (safetensors, config, tokenizer, encoder.toml, train.json)
//! base vs trained, dense retrieval over the catalog, both splits --> gate --> models/CURRENT
//! ```
//! The id is the parent's id plus a hash of the training data (queries, judgments, mined
//! negatives, product texts), the options, the number of steps run and the resulting
//! weights, so another run on other data (or stopped by the time budget at another step,
//! or rounding differently on another machine) never shares an id, and so never an
//! embedding cache, with this one.
//!
//! The gate evaluates parent and trained model twice on both splits: dense retrieval
//! (every catalog product ranked by cosine to the query, the way the engine finds its
//! vector candidates) and the `default` profile's hybrid ranking over a scratch index of
//! the catalog built with each model (its vectors come from the embedding cache the dense
//! pass filled, so the build costs a tantivy index, not an encode). The rule is `tune`'s,
//! on what serves: the trained model must score a higher hybrid MRR@k on the held-out
//! split; the paired randomization test is reported for every comparison.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::encoder::train::{Batch, TrainSettings, Trainer};
use crate::encoder::{dot, Encoder, EncoderConfig};
use crate::engine::{Engine, SearchRequest};
use crate::error::{Error, Result};
use crate::index::EmbeddingCache;
use crate::offline::eval::metrics::DEPTH;
use crate::offline::eval::significance::{PERMUTATIONS, SEED};
use crate::offline::eval::{
    randomization_test, scorable, score_ranked, Metric, Qrels, QueryScores,
};
use crate::offline::tune::{is_held_out, SplitScores};
use crate::util::{write_atomic, Rng};

/// A query (id, text) with its judgments (product id -> grade).
pub type JudgedQuery = ((String, String), HashMap<String, u32>);

/// Settings of a training run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    /// Share of the queries held out (tune's split).
    pub holdout: f64,
    /// Seed of the split, the batch order and the negative sampling.
    pub seed: u64,
    /// Passes over the training pairs, at most.
    pub epochs: usize,
    /// Optimizer steps, at most (`None`: as many as the epochs take).
    pub steps: Option<usize>,
    /// (query, positive) pairs per batch.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Softmax temperature.
    pub temperature: f64,
    /// Hard negatives per pair, sampled from the query's top hits.
    pub hard_negatives: usize,
    /// Hits of the index searched per training query for hard negatives.
    pub negative_depth: usize,
    /// Leave the word embeddings unchanged (the default: as good on the dev queries,
    /// 1.7x faster steps for m3e-small, ~10x for multilingual-e5-small).
    pub freeze_embeddings: bool,
    /// Training stops after this many seconds (evaluation comes on top).
    pub time_budget_secs: f64,
    /// Cutoff of the gate's metrics.
    pub k: usize,
    /// Keep the folder of a model that does not win (it is removed otherwise).
    pub keep: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            holdout: 0.3,
            seed: 7,
            epochs: 3,
            steps: None,
            batch: 16,
            lr: 3e-5,
            temperature: 0.05,
            hard_negatives: 1,
            negative_depth: 30,
            freeze_embeddings: true,
            time_budget_secs: 300.0,
            k: 10,
            keep: false,
        }
    }
}

/// One training pair's query with its judgments and mined negatives.
#[derive(Debug, Clone, Serialize)]
pub struct TrainQuery {
    /// Query id.
    pub qid: String,
    /// Query text.
    pub query: String,
    /// Products judged relevant (grade > 0) that are in the catalog.
    pub positives: Vec<String>,
    /// Top hits of the index not judged relevant, in rank order.
    pub negatives: Vec<String>,
}

/// What a run is trained and judged on.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// Training queries with at least one positive in the catalog.
    pub train: Vec<TrainQuery>,
    /// Held-out queries (id, text) with their judgments.
    pub held_out: Vec<JudgedQuery>,
    /// Training queries (id, text) with their judgments, for the gate.
    pub train_judged: Vec<JudgedQuery>,
    /// Every live catalog product: (id, the text its vector is encoded from).
    pub catalog: Vec<(String, String)>,
}

impl TrainData {
    /// The text of product `id`.
    fn text(&self, by_id: &HashMap<&str, usize>, id: &str) -> Option<String> {
        by_id.get(id).map(|&i| self.catalog[i].1.clone())
    }
}

/// Splits the judged queries as `tune` does and mines hard negatives for the training
/// ones from the engine's ranking (default profile).
pub fn prepare(
    engine: &Engine,
    queries: &[(String, String)],
    qrels: &Qrels,
    opts: &TrainOptions,
) -> Result<TrainData> {
    if !(opts.holdout > 0.0 && opts.holdout < 1.0) {
        return Err(Error::param(
            "holdout",
            format!("must be between 0 and 1 (exclusive), got {}", opts.holdout),
        ));
    }
    let gen = engine.generation();
    let catalog: Vec<(String, String)> = gen
        .products
        .iter()
        .enumerate()
        .filter(|(i, _)| !gen.removed.get(*i).copied().unwrap_or(false))
        .map(|(_, p)| (p.id.clone(), p.embedding_text()))
        .collect();
    let in_catalog: HashSet<&str> = catalog.iter().map(|(id, _)| id.as_str()).collect();
    let (scored, _) = scorable(queries, qrels);
    let mut data = TrainData {
        train: Vec::new(),
        held_out: Vec::new(),
        train_judged: Vec::new(),
        catalog: Vec::new(),
    };
    for (q, judged) in scored {
        let pair = (q.clone(), judged.clone());
        if is_held_out(&q.0, opts.holdout, opts.seed) {
            data.held_out.push(pair);
            continue;
        }
        data.train_judged.push(pair);
        let mut positives: Vec<String> = judged
            .iter()
            .filter(|(id, g)| **g > 0 && in_catalog.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        if positives.is_empty() {
            continue;
        }
        positives.sort();
        let mut negatives = Vec::new();
        if opts.hard_negatives > 0 {
            let mut req = SearchRequest::new(q.1.clone());
            req.size = opts.negative_depth.clamp(1, crate::engine::MAX_PAGE_SIZE);
            for h in engine.search(&req)?.hits {
                if judged.get(&h.id).copied().unwrap_or(0) == 0 {
                    negatives.push(h.id);
                }
            }
        }
        data.train.push(TrainQuery {
            qid: q.0.clone(),
            query: q.1.clone(),
            positives,
            negatives,
        });
    }
    data.catalog = catalog;
    if data.train.is_empty() || data.held_out.is_empty() {
        return Err(Error::Config(format!(
            "{} training queries with a judged product in the catalog and {} held out: need at least one of each (more judged queries, or another --holdout / --seed)",
            data.train.len(),
            data.held_out.len()
        )));
    }
    Ok(data)
}

/// A hash of everything the weights are trained from: queries, judgments, negatives and
/// the products' texts (hex, 16 digits).
pub fn data_hash(data: &TrainData) -> String {
    let by_id: HashMap<&str, usize> = data
        .catalog
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    let mut h = Sha256::new();
    let mut train: Vec<&TrainQuery> = data.train.iter().collect();
    train.sort_by(|a, b| a.qid.cmp(&b.qid));
    for q in train {
        h.update(format!("q\t{}\t{}\n", q.qid, q.query));
        for (tag, ids) in [("+", &q.positives), ("-", &q.negatives)] {
            for id in ids {
                let text = data.text(&by_id, id).unwrap_or_default();
                h.update(format!("{tag}\t{id}\t{text}\n"));
            }
        }
    }
    hex(&h.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of a model trained from `parent` on data `data_hash` with `opts` for `steps`
/// optimizer steps, ending with weights `weights` (their digest):
/// `<parent>-ft-<12 hex digits>`. The weights are in the key because the embedding cache
/// is keyed by the id: two runs whose floats differ (another thread count, another
/// machine) must not share cached vectors.
pub fn model_id(
    parent: &str,
    data_hash: &str,
    opts: &TrainOptions,
    steps: usize,
    weights: &str,
) -> String {
    // What changes the weights; the time budget only matters through `steps`, and
    // `keep` / `k` not at all.
    let key = serde_json::json!({
        "parent": parent, "data": data_hash, "steps": steps, "weights": weights, "seed": opts.seed,
        "holdout": opts.holdout, "batch": opts.batch, "lr": opts.lr,
        "temperature": opts.temperature, "hard_negatives": opts.hard_negatives,
        "negative_depth": opts.negative_depth, "epochs": opts.epochs,
        "freeze_embeddings": opts.freeze_embeddings,
    });
    let digest = Sha256::digest(key.to_string().as_bytes());
    let parent: String = parent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{parent}-ft-{}", hex(&digest[..6]))
}

/// One optimizer step, for progress reports.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StepReport {
    /// Steps done (1-based).
    pub step: usize,
    /// Epoch of the step (1-based).
    pub epoch: usize,
    /// The batch's loss before the step.
    pub loss: f32,
    /// Seconds since training started.
    pub elapsed: f64,
}

/// What the optimization did.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// Optimizer steps.
    pub steps: usize,
    /// Epochs started.
    pub epochs: usize,
    /// (query, positive) pairs per epoch.
    pub pairs: usize,
    /// Mean loss of the first steps (up to 5, at most half of them) and of the last ones.
    pub loss_first: f32,
    /// ...
    pub loss_last: f32,
    /// Seconds of training.
    pub seconds: f64,
    /// Why it stopped: `epochs`, `steps` or `time budget`.
    pub stopped_by: &'static str,
}

/// The batches of one epoch: pairs shuffled, `opts.batch` per batch, each with its
/// positive and `opts.hard_negatives` negatives sampled from the query's mined ones.
pub fn epoch_batches(data: &TrainData, opts: &TrainOptions, rng: &mut Rng) -> Vec<Batch> {
    let by_id: HashMap<&str, usize> = data
        .catalog
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    let mut pairs: Vec<(usize, usize)> = data
        .train
        .iter()
        .enumerate()
        .flat_map(|(q, t)| (0..t.positives.len()).map(move |p| (q, p)))
        .collect();
    for i in (1..pairs.len()).rev() {
        pairs.swap(i, rng.below(i + 1));
    }
    let mut out = Vec::new();
    for chunk in pairs.chunks(opts.batch.max(1)) {
        let mut b = Batch::default();
        let mut ids: Vec<String> = Vec::new();
        for &(q, p) in chunk {
            let t = &data.train[q];
            b.queries.push(t.query.clone());
            b.targets.push(ids.len());
            ids.push(t.positives[p].clone());
            let mut pool: Vec<&String> = t.negatives.iter().collect();
            for _ in 0..opts.hard_negatives.min(pool.len()) {
                let n = pool.swap_remove(rng.below(pool.len()));
                ids.push(n.clone());
            }
        }
        for (i, &(q, _)) in chunk.iter().enumerate() {
            let pos = &data.train[q].positives;
            for (j, id) in ids.iter().enumerate() {
                if pos.contains(id) {
                    b.masked.push((i, j));
                }
            }
        }
        b.products = ids
            .iter()
            .map(|id| data.text(&by_id, id).unwrap_or_default())
            .collect();
        out.push(b);
    }
    out
}

/// Runs the optimizer over `data` until the epochs, the steps or the time budget run out.
pub fn fit(
    trainer: &mut Trainer,
    data: &TrainData,
    opts: &TrainOptions,
    mut progress: impl FnMut(StepReport),
) -> Result<FitReport> {
    let started = Instant::now();
    let mut rng = Rng(opts.seed ^ 0x7EA1_0001);
    let (mut step, mut epochs, mut losses) = (0usize, 0usize, Vec::new());
    let max_steps = opts.steps.unwrap_or(usize::MAX);
    let mut stopped_by = "epochs";
    let pairs = data.train.iter().map(|t| t.positives.len()).sum();
    'outer: for epoch in 1..=opts.epochs {
        epochs = epoch;
        for batch in epoch_batches(data, opts, &mut rng) {
            if step >= max_steps {
                stopped_by = "steps";
                break 'outer;
            }
            if started.elapsed().as_secs_f64() >= opts.time_budget_secs {
                stopped_by = "time budget";
                break 'outer;
            }
            // A short linear warm-up keeps the first updates of a pretrained model small.
            trainer.set_lr(opts.lr * ((step + 1) as f64 / WARMUP as f64).min(1.0));
            let loss = trainer.step(&batch)?;
            if !loss.is_finite() {
                return Err(Error::Internal(format!(
                    "the loss became {loss} at step {}: lower --lr",
                    step + 1
                )));
            }
            step += 1;
            losses.push(loss);
            progress(StepReport {
                step,
                epoch,
                loss,
                elapsed: started.elapsed().as_secs_f64(),
            });
        }
    }
    let mean = |v: &[f32]| {
        if v.is_empty() {
            f32::NAN
        } else {
            v.iter().sum::<f32>() / v.len() as f32
        }
    };
    // Up to 5 steps at each end, never overlapping (with one step both are that step).
    let n = (losses.len() / 2).clamp(1, 5).min(losses.len());
    Ok(FitReport {
        steps: step,
        epochs,
        pairs,
        loss_first: mean(&losses[..n]),
        loss_last: mean(&losses[losses.len() - n..]),
        seconds: started.elapsed().as_secs_f64(),
        stopped_by,
    })
}

/// Warm-up steps.
const WARMUP: usize = 5;

/// Vectors of the catalog's products under `encoder`, through the data directory's
/// embedding cache (the base model's are usually there from the last build).
fn catalog_vectors(
    data_dir: &Path,
    encoder: &Encoder,
    catalog: &[(String, String)],
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<String> = catalog.iter().map(|(_, t)| t.clone()).collect();
    let mut cache = EmbeddingCache::open(data_dir, encoder.id(), encoder.dim())?;
    Ok(cache.encode(encoder, &texts, |_| {}, || false)?.0)
}

/// Dense-retrieval scores of each judged query: the catalog ranked by cosine.
fn dense_scores(
    encoder: &Encoder,
    vectors: &[Vec<f32>],
    catalog: &[(String, String)],
    judged: &[JudgedQuery],
    k: usize,
) -> Result<Vec<QueryScores>> {
    judged
        .iter()
        .map(|((_, query), j)| {
            let q = encoder.encode_query(query)?;
            let mut order: Vec<(f32, usize)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (dot(&q, v), i))
                .collect();
            order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let ranked: Vec<String> = order
                .iter()
                .take(DEPTH)
                .map(|&(_, i)| catalog[i].0.clone())
                .collect();
            Ok(score_ranked(&ranked, j, k))
        })
        .collect()
}

fn split_scores(base: &[QueryScores], trained: &[QueryScores]) -> SplitScores {
    let rr = |v: &[QueryScores]| -> Vec<f64> { v.iter().map(|s| Metric::Mrr.of(s)).collect() };
    let test = randomization_test(&rr(base), &rr(trained), PERMUTATIONS, SEED);
    let (base_all, tuned_all) = (QueryScores::mean(base), QueryScores::mean(trained));
    SplitScores {
        queries: base.len(),
        base: base_all.rr,
        tuned: tuned_all.rr,
        base_all,
        tuned_all,
        p_value: test.p_value,
    }
}

/// Opens an engine over a data directory with an encoder (the CLI adds its text files).
pub type OpenEngine<'a> = &'a dyn Fn(&Path, Encoder) -> Result<Engine>;

/// The `default` profile's scores of each split with `encoder`: the live catalog is
/// indexed into a scratch data directory `scratch` (its vectors come from `data_dir`'s
/// embedding cache, which the dense evaluation filled) and searched as `eval` does.
fn hybrid_scores(
    engine: &Engine,
    data_dir: &Path,
    scratch: &Path,
    encoder: Encoder,
    data: &TrainData,
    k: usize,
    open: OpenEngine<'_>,
) -> Result<(Vec<QueryScores>, Vec<QueryScores>)> {
    let copy = |from: &Path, to: &Path| -> Result<()> {
        if from.is_file() {
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            std::fs::copy(from, to).map_err(|e| Error::io(to, e))?;
        }
        Ok(())
    };
    if scratch.exists() {
        std::fs::remove_dir_all(scratch).map_err(|e| Error::io(scratch, e))?;
    }
    copy(
        &EmbeddingCache::path(data_dir, encoder.id()),
        &EmbeddingCache::path(scratch, encoder.id()),
    )?;
    // The data directory's `default.toml` (it overrides the built-in), the one profile
    // the gate ranks with, searching with the model under test: a `model` it names (an
    // A/B challenger) is left out, and so are the other profiles (their models are not
    // this scratch directory's).
    let default = data_dir.join("profiles").join("default.toml");
    if default.is_file() {
        let text = std::fs::read_to_string(&default).map_err(|e| Error::io(&default, e))?;
        let mut profile = crate::rank::Profile::parse(&text, &default)?;
        profile.model = None;
        let to = scratch.join("profiles").join("default.toml");
        std::fs::create_dir_all(scratch.join("profiles")).map_err(|e| Error::io(scratch, e))?;
        std::fs::write(&to, profile.to_toml()).map_err(|e| Error::io(&to, e))?;
    }
    let gen = engine.generation();
    let products: Vec<crate::catalog::Product> = gen
        .products
        .iter()
        .enumerate()
        .filter(|(i, _)| !gen.removed.get(*i).copied().unwrap_or(false))
        .map(|(_, p)| (**p).clone())
        .collect();
    let (user_dict, aliases) = (
        gen.dir.join("userdict.txt"),
        gen.dir.join("brand_aliases.toml"),
    );
    crate::index::build_live(
        scratch,
        products,
        crate::index::BuildOptions {
            user_dict: user_dict.is_file().then_some(user_dict.as_path()),
            brand_aliases: aliases.is_file().then_some(aliases.as_path()),
            encoder: Some(&encoder),
            ..crate::index::BuildOptions::new(&gen.schema, "shoprank train (gate)")
        },
    )?;
    let scratch_engine = open(scratch, encoder)?;
    let profiles = ["default".to_string()];
    let per = |judged: &[JudgedQuery]| -> Result<Vec<QueryScores>> {
        let queries: Vec<(String, String)> = judged.iter().map(|(q, _)| q.clone()).collect();
        let qrels: Qrels = judged
            .iter()
            .map(|((id, _), j)| (id.clone(), j.clone()))
            .collect();
        let run = crate::offline::eval::run(&scratch_engine, &profiles, &queries, &qrels, k)?;
        Ok(run
            .profiles
            .into_iter()
            .next()
            .map(|p| p.per_query)
            .unwrap_or_default())
    };
    Ok((per(&data.train_judged)?, per(&data.held_out)?))
}

/// Base against trained on both splits: dense retrieval, and the `default` profile's
/// hybrid ranking, whose held-out MRR@k decides.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// Dense retrieval, training split.
    pub train: SplitScores,
    /// Dense retrieval, held-out split.
    pub held_out: SplitScores,
    /// The `default` profile (hybrid), training split.
    pub hybrid_train: SplitScores,
    /// The `default` profile (hybrid), held-out split.
    pub hybrid_held_out: SplitScores,
    /// The trained model scores a higher hybrid MRR@k on the held-out split.
    pub improved: bool,
    /// Products ranked per query.
    pub catalog: usize,
    /// Seconds encoding and scoring.
    pub seconds: f64,
}

/// Evaluates `base` and `trained` on both splits: dense retrieval over the catalog, then
/// the `default` profile over a scratch index of the catalog per model (under
/// `DATA_DIR/models/.gate-*`, removed afterwards).
pub fn gate(
    engine: &Engine,
    data_dir: &Path,
    base: Encoder,
    trained: Encoder,
    data: &TrainData,
    k: usize,
    open: OpenEngine<'_>,
) -> Result<Gate> {
    let started = Instant::now();
    let mut dense = Vec::new();
    for enc in [&base, &trained] {
        let vectors = catalog_vectors(data_dir, enc, &data.catalog)?;
        dense.push((
            dense_scores(enc, &vectors, &data.catalog, &data.train_judged, k)?,
            dense_scores(enc, &vectors, &data.catalog, &data.held_out, k)?,
        ));
    }
    let mut hybrid = Vec::new();
    for (name, enc) in [("base", base), ("trained", trained)] {
        let scratch = data_dir.join("models").join(format!(".gate-{name}"));
        let scores = hybrid_scores(engine, data_dir, &scratch, enc, data, k, open);
        if let Err(e) = std::fs::remove_dir_all(&scratch) {
            tracing::warn!(path = %scratch.display(), error = %e, "could not remove the gate's scratch index");
        }
        hybrid.push(scores?);
    }
    let hybrid_held_out = split_scores(&hybrid[0].1, &hybrid[1].1);
    Ok(Gate {
        train: split_scores(&dense[0].0, &dense[1].0),
        held_out: split_scores(&dense[0].1, &dense[1].1),
        hybrid_train: split_scores(&hybrid[0].0, &hybrid[1].0),
        improved: hybrid_held_out.tuned > hybrid_held_out.base + 1e-12,
        hybrid_held_out,
        catalog: data.catalog.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What `shoprank train` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// The parent model's id.
    pub parent: String,
    /// The new model's id.
    pub id: String,
    /// Its folder (removed again when it lost, unless `keep`).
    pub dir: PathBuf,
    /// Hash of the training data.
    pub data_hash: String,
    /// Digest of the trained weights.
    pub weights_digest: String,
    /// Settings.
    pub options: TrainOptions,
    /// Training queries (with a judged product in the catalog) and held-out queries.
    pub train_queries: usize,
    /// ...
    pub held_out_queries: usize,
    /// Trainable values.
    pub parameters: usize,
    /// The optimization.
    pub fit: FitReport,
    /// The evaluation.
    pub gate: Gate,
    /// `DATA_DIR/models/CURRENT` now names this model.
    pub published: bool,
    /// Seconds of the whole run.
    pub seconds: f64,
}

/// The folder of model `id` in `data_dir`.
pub fn model_dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("models").join(id)
}

/// The published model's id (`DATA_DIR/models/CURRENT`), if any.
pub fn published(data_dir: &Path) -> Result<Option<String>> {
    let path = data_dir.join("models").join("CURRENT");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Where a run reads from and writes to.
pub struct Setup<'a> {
    /// The engine over the data directory's live index (catalog, hard negatives).
    pub engine: &'a Engine,
    /// The data directory (`models/`, the embedding cache).
    pub data_dir: &'a Path,
    /// The parent model.
    pub base: &'a EncoderConfig,
    /// Opens the gate's scratch engines.
    pub open: OpenEngine<'a>,
}

/// Trains a model from `setup.base` on the judged queries, writes it under
/// `data_dir/models/`, gates it and publishes it on a held-out win.
pub fn run(
    setup: &Setup<'_>,
    queries: &[(String, String)],
    qrels: &Qrels,
    opts: &TrainOptions,
    progress: impl FnMut(StepReport),
) -> Result<TrainReport> {
    let Setup {
        engine,
        data_dir,
        base,
        open,
    } = *setup;
    let started = Instant::now();
    if opts.batch == 0
        || opts.k == 0
        || opts.lr.is_nan()
        || opts.lr <= 0.0
        || opts.temperature.is_nan()
        || opts.temperature <= 0.0
    {
        return Err(Error::param(
            "batch/k/lr/temperature",
            "must be greater than 0",
        ));
    }
    let data = prepare(engine, queries, qrels, opts)?;
    let hash = data_hash(&data);
    let mut trainer = Trainer::load(
        base,
        TrainSettings {
            lr: opts.lr,
            temperature: opts.temperature,
            freeze_word_embeddings: opts.freeze_embeddings,
            ..TrainSettings::default()
        },
    )?;
    let parameters = trainer.parameters();
    let fit = fit(&mut trainer, &data, opts, progress)?;
    let weights = trainer.weights_digest()?;
    let id = model_id(&base.id, &hash, opts, fit.steps, &weights);
    let dir = model_dir(data_dir, &id);
    let building = data_dir.join("models").join(format!("{id}.building"));
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(|e| Error::io(&building, e))?;
    }
    trainer.save(&building, &id)?;
    drop(trainer);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(&building, &dir).map_err(|e| Error::io(&dir, e))?;
    let trained_config = EncoderConfig::from_model_dir(&dir)
        .ok_or_else(|| Error::Internal("the written model has no encoder.toml".into()))??;
    let base_encoder = Encoder::load(base.clone(), Device::Cpu)?;
    let trained = Encoder::load(trained_config, Device::Cpu)?;
    let gate = gate(engine, data_dir, base_encoder, trained, &data, opts.k, open)?;
    let mut report = TrainReport {
        parent: base.id.clone(),
        id: id.clone(),
        dir: dir.clone(),
        data_hash: hash,
        weights_digest: weights,
        options: opts.clone(),
        train_queries: data.train.len(),
        held_out_queries: data.held_out.len(),
        parameters,
        fit,
        published: gate.improved,
        gate,
        seconds: 0.0,
    };
    report.seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&dir.join("train.json"), &json)?;
    if report.published {
        write_atomic(
            &data_dir.join("models").join("CURRENT"),
            format!("{id}\n").as_bytes(),
        )?;
    } else if !opts.keep {
        // A losing model is not kept, nor the vectors its evaluation cached.
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let cache = EmbeddingCache::path(data_dir, &id);
        if cache.exists() {
            std::fs::remove_file(&cache).map_err(|e| Error::io(&cache, e))?;
        }
    }
    Ok(report)
}

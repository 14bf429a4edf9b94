//! The offline tools: `shoprank eval`, `tune`, `train`, `judgments`, `eval-personal`,
//! `synth`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use shoprank::engine::load_encoder;
use shoprank::offline::eval::{self, report, Metric, QueryScores};
use shoprank::offline::{judgments, personal, synth, train, tune};
use shoprank::settings::Settings;

use super::open_engine;

/// `shoprank eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Queries: `qid<TAB>query`.
    #[arg(long)]
    queries: PathBuf,
    /// Judgments: TREC qrels.
    #[arg(long)]
    qrels: PathBuf,
    /// Profiles to evaluate (repeat the flag); default: `default`.
    #[arg(long)]
    profile: Vec<String>,
    /// Cutoff of NDCG, MRR and Recall.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Also print one row per query.
    #[arg(long)]
    per_query: bool,
    /// text, json or markdown.
    #[arg(long, default_value = "text")]
    format: report::Format,
    /// Same as `--format json`.
    #[arg(long)]
    json: bool,
}

/// `shoprank tune`.
#[derive(Args)]
pub struct TuneArgs {
    /// Queries: `qid<TAB>query`.
    #[arg(long)]
    queries: PathBuf,
    /// Judgments: TREC qrels.
    #[arg(long)]
    qrels: PathBuf,
    /// The profile to start from (its boosts and candidate counts are kept).
    #[arg(long, default_value = "default")]
    profile: String,
    /// Fields whose BM25 k1 and b are searched too (comma-separated, as in `boosts`;
    /// fields the index lacks are skipped). Each setting tried searches every query again.
    #[arg(long, value_delimiter = ',', default_value = "title,title.bigram")]
    bm25_fields: Vec<String>,
    /// Tune the feature weights only (keep the profile's BM25 parameters).
    #[arg(long)]
    no_bm25: bool,
    /// Name of the profile to write (`DATA_DIR/profiles/NAME.toml`).
    #[arg(long)]
    out: String,
    /// mrr or ndcg.
    #[arg(long, default_value = "mrr")]
    metric: Metric,
    /// Cutoff of the metric.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Share of the queries held out (chosen by a seeded hash of the query id).
    #[arg(long, default_value_t = 0.3)]
    holdout: f64,
    /// Seed of the split and the random restarts.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Coordinate-ascent runs (the first starts from the base weights).
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Overwrite an existing profile file.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `shoprank train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Queries: `qid<TAB>query`.
    #[arg(long)]
    queries: PathBuf,
    /// Judgments: TREC qrels (from `shoprank judgments` or by hand).
    #[arg(long)]
    qrels: PathBuf,
    /// Share of the queries held out (the seeded hash split `tune` uses).
    #[arg(long, default_value_t = 0.3)]
    holdout: f64,
    /// Seed of the split, the batch order and the negative sampling.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Passes over the training pairs, at most.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Optimizer steps, at most (default: as many as the epochs take).
    #[arg(long)]
    steps: Option<usize>,
    /// (query, positive product) pairs per batch; the other pairs' products are the
    /// in-batch negatives.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 3e-5)]
    lr: f64,
    /// Softmax temperature of the contrastive loss.
    #[arg(long, default_value_t = 0.05)]
    temperature: f64,
    /// Hard negatives per pair, sampled from the query's top hits in the index that are
    /// not judged relevant.
    #[arg(long, default_value_t = 1)]
    hard_negatives: usize,
    /// Top hits searched per training query for hard negatives.
    #[arg(long, default_value_t = 30)]
    negative_depth: usize,
    /// Also train the word embeddings (by default they stay as they are: as good on the
    /// dev queries, and much faster for a large vocabulary like multilingual-e5-small's).
    #[arg(long)]
    train_embeddings: bool,
    /// Stop training after this many seconds (the evaluation comes on top).
    #[arg(long, default_value_t = 300.0)]
    time_budget_secs: f64,
    /// Keep the model folder even when it does not win.
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

/// `shoprank judgments`.
#[derive(Args)]
pub struct JudgmentsArgs {
    /// Search-log JSONL files (repeat the flag); see docs/evaluation.md.
    #[arg(long = "from-events", required = true)]
    from_events: Vec<PathBuf>,
    /// Folder for `queries.tsv` and `qrels.tsv`.
    #[arg(long)]
    out: PathBuf,
    /// Use examination propensities 1/rank^eta instead of estimating them by EM.
    #[arg(long)]
    eta: Option<f64>,
    /// Products shown fewer times than this for a query get no judgment.
    #[arg(long, default_value_t = 3)]
    min_impressions: usize,
    /// Corrected value per impression for grades 1,2,3 (click 1, cart 2, purchase 3).
    #[arg(long, default_value = "0.1,0.4,1.0")]
    thresholds: String,
}

/// `shoprank eval-personal`.
#[derive(Args)]
pub struct EvalPersonalArgs {
    /// The shared data folder.
    #[arg(long, default_value = "../shared/data")]
    shared: PathBuf,
    /// Ranking profile.
    #[arg(long, default_value = "default")]
    profile: String,
    /// Simulated shoppers.
    #[arg(long, default_value_t = 300)]
    shoppers: usize,
    /// RNG seed (same seed, same shoppers).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// One JSON object.
    #[arg(long)]
    json: bool,
}

/// `shoprank synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// The shared data folder.
    #[arg(long, default_value = "../shared/data")]
    shared: PathBuf,
    /// Number of products.
    #[arg(long, default_value_t = 100_000)]
    products: usize,
    /// Random seed (same seed, same catalog).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

/// Evaluates profiles and prints the report.
pub fn eval(settings: Settings, a: EvalArgs) -> anyhow::Result<()> {
    let engine = open_engine(&settings)?;
    let queries = eval::read_queries(&a.queries)?;
    let qrels = eval::read_qrels(&a.qrels)?;
    let profiles = if a.profile.is_empty() {
        vec!["default".to_string()]
    } else {
        a.profile
    };
    let run = eval::run(&engine, &profiles, &queries, &qrels, a.k)?;
    let format = if a.json {
        report::Format::Json
    } else {
        a.format
    };
    print!("{}", report::render(&run, format, a.per_query));
    Ok(())
}

/// Tunes a profile's weights; writes it only on a held-out win.
pub fn tune(settings: Settings, a: TuneArgs) -> anyhow::Result<()> {
    let engine = open_engine(&settings)?;
    let queries = eval::read_queries(&a.queries)?;
    let qrels = eval::read_qrels(&a.qrels)?;
    let base = engine.profiles().get(&a.profile)?;
    let opts = tune::TuneOptions {
        metric: a.metric,
        k: a.k,
        holdout: a.holdout,
        seed: a.seed,
        restarts: a.restarts,
    };
    let started = std::time::Instant::now();
    let (report, tuned) = if a.no_bm25 || a.bm25_fields.is_empty() {
        let data = tune::collect(&engine, &a.profile, None, &queries, &qrels)?;
        tune::tune(&data, &a.profile, &base, &opts)?
    } else {
        tune::tune_with_bm25(&engine, &a.profile, &queries, &qrels, &a.bm25_fields, &opts)?
    };
    let written = if report.improved {
        Some(tune::write_profile(
            &settings.data_dir.join("profiles"),
            &a.out,
            &tuned,
            a.force,
        )?)
    } else {
        None
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["written"] = serde_json::json!(written);
        println!("{v}");
        return Ok(());
    }
    print_tune(&report, started.elapsed().as_secs_f64());
    match written {
        Some(path) => println!("wrote profile `{}` to {}", a.out, path.display()),
        None => println!(
            "the tuned profile does not beat `{}` on the held-out split: no profile written",
            a.profile
        ),
    }
    Ok(())
}

/// Fine-tunes the encoder on judged queries; publishes the model only on a held-out win.
pub fn train(settings: Settings, a: TrainArgs) -> anyhow::Result<()> {
    let base = shoprank::engine::encoder_config(&settings).map_err(|e| anyhow::anyhow!(e))?;
    let engine = open_engine(&settings)?;
    let queries = eval::read_queries(&a.queries)?;
    let qrels = eval::read_qrels(&a.qrels)?;
    let opts = train::TrainOptions {
        holdout: a.holdout,
        seed: a.seed,
        epochs: a.epochs,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        temperature: a.temperature,
        hard_negatives: a.hard_negatives,
        negative_depth: a.negative_depth,
        freeze_embeddings: !a.train_embeddings,
        time_budget_secs: a.time_budget_secs,
        k: 10,
        keep: a.keep,
    };
    eprintln!(
        "training `{}` ({}) on {} with {} threads",
        base.id,
        base.dir.display(),
        a.qrels.display(),
        shoprank::encoder::train::threads()
    );
    // The gate's scratch engines read the same synonym, alias and dictionary files.
    let open = |dir: &std::path::Path, encoder: shoprank::encoder::Encoder| {
        let mut e = shoprank::Engine::open(dir, Some(encoder), None)?;
        e.set_text_sources(shoprank::engine::TextSources {
            user_dict: Some(settings.user_dict.clone()),
            synonyms: Some(settings.synonyms.clone()),
            brand_aliases: Some(settings.brand_aliases.clone()),
        })?;
        Ok(e)
    };
    let setup = train::Setup {
        engine: &engine,
        data_dir: &settings.data_dir,
        base: &base,
        open: &open,
    };
    let r = train::run(&setup, &queries, &qrels, &opts, |s| {
        eprintln!(
            "step {:>4}  epoch {}  loss {:.4}  {:.1}s",
            s.step, s.epoch, s.loss, s.elapsed
        )
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let f = &r.fit;
    println!(
        "trained `{}` -> `{}`: {} training queries ({} pairs), {} held out; {} steps in {:.1}s ({:.2} steps/s, stopped by {}), loss {:.4} -> {:.4} (first/last 5 steps)",
        r.parent, r.id, r.train_queries, f.pairs, r.held_out_queries, f.steps, f.seconds,
        f.steps as f64 / f.seconds.max(1e-9), f.stopped_by, f.loss_first, f.loss_last
    );
    println!(
        "gate: dense retrieval over {} products and the `default` profile (hybrid, a scratch index per model), {:.1}s; hybrid MRR@10 on the held-out split decides",
        r.gate.catalog, r.gate.seconds
    );
    let g = &r.gate;
    for (name, s) in [
        ("dense, train", &g.train),
        ("dense, held-out", &g.held_out),
        ("default, train", &g.hybrid_train),
        ("default, held-out", &g.hybrid_held_out),
    ] {
        println!(
            "{name:>17} ({:>3} queries): MRR@10 {:.4} -> {:.4} ({:+.4}, p = {:.4}); NDCG@10 {:.4} -> {:.4}; Recall@100 {:.4} -> {:.4}",
            s.queries, s.base, s.tuned, s.tuned - s.base, s.p_value,
            s.base_all.ndcg, s.tuned_all.ndcg, s.base_all.recall100, s.tuned_all.recall100
        );
    }
    if r.published {
        println!(
            "published `{}`: {} names it. Rebuild to use it (re-encodes the catalog): shoprank index --catalog FILE --model-dir {}",
            r.id,
            settings.data_dir.join("models/CURRENT").display(),
            r.dir.display()
        );
    } else {
        println!(
            "`{}` does not beat `{}` on the held-out split: not published{} ({:.1}s in all)",
            r.id,
            r.parent,
            if a.keep {
                format!(", kept in {}", r.dir.display())
            } else {
                ", folder removed".into()
            },
            r.seconds
        );
    }
    Ok(())
}

/// Simulated shoppers on the shared catalogs: ranking with and without their history.
pub fn eval_personal(settings: Settings, a: EvalPersonalArgs) -> anyhow::Result<()> {
    let encoder = load_encoder(&settings)
        .map_err(|r| tracing::warn!(reason = %r, "no encoder: the personal vector feature is off"))
        .ok();
    let r = personal::run(
        &a.shared,
        Some(&settings.data_dir.join("profiles")),
        encoder,
        &a.profile,
        a.shoppers,
        a.seed,
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "simulated shoppers: {} on {} products (profile {})",
        r.shoppers, r.products, r.profile
    );
    println!("history  NDCG@10 base  personal  MRR@10 base  personal  top-10 changed");
    for h in &r.by_history {
        println!(
            "{:>7}  {:>12.4}  {:>8.4}  {:>11.4}  {:>8.4}  {:>5}/{}",
            h.history,
            h.ndcg10_base,
            h.ndcg10_personal,
            h.mrr10_base,
            h.mrr10_personal,
            h.changed_top10,
            h.shoppers
        );
    }
    let lift = (r.ndcg10_personal / r.ndcg10_base.max(1e-9) - 1.0) * 100.0;
    println!(
        "5+ events: NDCG@10 {:.4} -> {:.4} ({lift:+.1}%); no events: {:.4} -> {:.4}; median events before the top 10 changes: {}",
        r.ndcg10_base,
        r.ndcg10_personal,
        r.ndcg10_cold_base,
        r.ndcg10_cold_personal,
        r.median_events_to_change.map_or("never".to_string(), |n| n.to_string())
    );
    Ok(())
}

/// Writes a synthetic catalog.
pub fn synth(a: SynthArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let n = synth::generate(&a.shared, a.products, a.seed, &a.out)?;
    println!(
        "wrote {n} synthetic products to {} in {:.1}s",
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Grades judgments from a search log.
pub fn judgments(a: JudgmentsArgs) -> anyhow::Result<()> {
    let t: Vec<f64> = a
        .thresholds
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--thresholds: expected three numbers like 0.1,0.4,1.0"))?;
    let [t1, t2, t3] = t.as_slice() else {
        bail!("--thresholds: expected three numbers like 0.1,0.4,1.0");
    };
    if !(t1 <= t2 && t2 <= t3) {
        bail!("--thresholds must not decrease");
    }
    if let Some(e) = a.eta {
        if !(e.is_finite() && e >= 0.0) {
            bail!("--eta must be a number >= 0");
        }
    }
    let log = judgments::read_log(&a.from_events)?;
    let opts = judgments::JudgeOptions {
        eta: a.eta,
        min_impressions: a.min_impressions,
        thresholds: [*t1, *t2, *t3],
    };
    let j = judgments::judge(&log, &opts);
    let (queries, qrels) = judgments::write(&j, &a.out)?;
    let mut grades = [0usize; 4];
    for x in &j.judgments {
        grades[x.grade.min(3) as usize] += 1;
    }
    let shown: Vec<String> = j
        .propensities
        .iter()
        .take(10)
        .map(|p| format!("{p:.2}"))
        .collect();
    println!(
        "{} searches, {} interactions attributed ({} matched no shown product)",
        log.searches.len(),
        log.attributed,
        log.unattributed
    );
    println!(
        "examination propensity by position ({}): {}",
        if a.eta.is_some() {
            "1/k^eta"
        } else {
            "EM estimate"
        },
        shown.join(" ")
    );
    println!(
        "{} queries, {} judgments (grade 0: {}, 1: {}, 2: {}, 3: {}) -> {} and {}",
        j.queries.len(),
        j.judgments.len(),
        grades[0],
        grades[1],
        grades[2],
        grades[3],
        queries.display(),
        qrels.display()
    );
    Ok(())
}

fn print_tune(r: &tune::TuneReport, total: f64) {
    let label = r.options.metric.label(r.options.k);
    println!(
        "tuned `{}` for {label}: {} restarts of coordinate ascent over {} ({total:.1}s in all)",
        r.base,
        r.options.restarts,
        r.tuned_features.join(", ")
    );
    if let Some(b) = &r.bm25 {
        let fields: Vec<String> = (b.fields.iter())
            .map(|(f, from, to)| {
                format!("{f} k1 {} -> {}, b {} -> {}", from.k1, to.k1, from.b, to.b)
            })
            .collect();
        println!(
            "bm25: {}; {} settings searched in {:.1}s, {label} on train after one weight ascent {:.4} -> {:.4}{}",
            if fields.is_empty() { "no field to search".to_string() } else { fields.join("; ") },
            b.settings,
            b.seconds,
            b.train_base,
            b.train_chosen,
            match b.absent.is_empty() {
                true => String::new(),
                false => format!(" (not in this index: {})", b.absent.join(", ")),
            }
        );
    }
    let (other, other_of): (String, fn(&QueryScores) -> f64) = match r.options.metric {
        Metric::Mrr => (format!("NDCG@{}", r.options.k), |s| s.ndcg),
        Metric::Ndcg => (format!("MRR@{}", r.options.k), |s| s.rr),
    };
    for (name, s) in [("train", &r.train), ("held-out", &r.held_out)] {
        println!(
            "{name:>9} ({:>3} queries): {label} {:.4} -> {:.4} ({:+.4}, p = {:.4}); {other} {:.4} -> {:.4}; MAP {:.4} -> {:.4}",
            s.queries,
            s.base,
            s.tuned,
            s.tuned - s.base,
            s.p_value,
            other_of(&s.base_all),
            other_of(&s.tuned_all),
            s.base_all.ap,
            s.tuned_all.ap,
        );
    }
    let weights: Vec<String> = r
        .weights
        .iter()
        .map(|(n, b, t)| format!("{n} {b} -> {t:.4}"))
        .collect();
    println!("weights: {}", weights.join(", "));
    if r.unreproduced > 0 {
        println!(
            "warning: re-scoring did not reproduce the engine's order for {} queries",
            r.unreproduced
        );
    }
}

//! The `shoprank` command line: index, search, serve, eval, judgments, tune.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use shoprank::encoder::DeviceKind;
use shoprank::engine::{load_encoder, Engine, SearchRequest};
use shoprank::index;
use shoprank::jobs::ReindexSpec;
use shoprank::rank::Profiles;
use shoprank::retrieve::Filters;
use shoprank::settings::Settings;

/// Query-aware product search for Chinese e-commerce.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// Settings file (TOML); SHOPRANK_* environment variables and flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory holding index generations and ranking profiles.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Model folder (overrides the manifest's `dir`).
    #[arg(long, global = true)]
    model_dir: Option<PathBuf>,
    /// Model manifest.
    #[arg(long, global = true)]
    manifest: Option<PathBuf>,
    /// Device for the encoder.
    #[arg(long, global = true, value_enum)]
    device: Option<DeviceKind>,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Load events from a file: JSONL events, or the Tianchi UserBehavior CSV (`.csv`).
    Import {
        /// The events file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum IndexAction {
    /// Make the previous generation live again (with the writes the live one took).
    Rollback,
}

#[derive(Subcommand)]
enum Command {
    /// Build a new index generation from a catalog file and make it live once it passes
    /// its gates (product count within the tolerance, canary queries answer). A running
    /// `serve` on the same data directory switches to it and replays the writes it took
    /// meanwhile. `shoprank index rollback` makes the previous generation live again.
    #[command(args_conflicts_with_subcommands = true)]
    Index {
        #[command(subcommand)]
        action: Option<IndexAction>,
        /// Catalog file.
        #[arg(long, required = true)]
        catalog: Option<PathBuf>,
        /// jsonl, csv, tsv, multicpr, taobao or openbg (default: from the extension).
        #[arg(long)]
        format: Option<String>,
        /// Index the valid records and list the bad ones, instead of stopping.
        #[arg(long)]
        skip_invalid: bool,
        /// Write the bad-record report here as JSON lines.
        #[arg(long)]
        errors: Option<PathBuf>,
        /// Build without product vectors (BM25 only), even if a model is present.
        #[arg(long)]
        no_model: bool,
        /// Publish without checking the gates.
        #[arg(long)]
        force: bool,
        /// Largest relative change of the product count against the live generation.
        #[arg(long)]
        max_change: Option<f64>,
        /// A query that must return results before publishing (repeat the flag).
        #[arg(long)]
        canary: Vec<String>,
    },
    /// Search from the command line.
    Search {
        /// The query.
        query: String,
        /// Ranking profile.
        #[arg(long)]
        profile: Option<String>,
        /// Show every feature's value and weight.
        #[arg(long)]
        explain: bool,
        /// Print the response as JSON.
        #[arg(long)]
        json: bool,
        /// Only this brand.
        #[arg(long)]
        brand: Option<String>,
        /// Only this category path prefix.
        #[arg(long)]
        category: Option<String>,
        /// Lowest price.
        #[arg(long)]
        price_min: Option<f64>,
        /// Highest price.
        #[arg(long)]
        price_max: Option<f64>,
        /// Only products in stock.
        #[arg(long)]
        in_stock: bool,
        /// Hits per page.
        #[arg(long, default_value_t = 10)]
        size: usize,
        /// Page number.
        #[arg(long, default_value_t = 1)]
        page: usize,
        /// Personalize for this user (reads the event store; not while `serve` holds it).
        #[arg(long)]
        user: Option<String>,
    },
    /// Write a synthetic catalog (JSON lines) of recombined real titles from the shared
    /// data, for load and memory benchmarks (ids `syn-N`, shops `合成-…`).
    Synth {
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
    },
    /// Evaluate personalization with the simulated-shopper protocol on the shared catalogs
    /// (profiles from `--data-dir`'s `profiles/`, if any, besides the built-in ones).
    EvalPersonal {
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
    },
    /// Show how a query is understood: normalized text, tokens, intents (JSON).
    Analyze {
        /// The query.
        query: String,
    },
    /// Suggestions: load a query log (`--load FILE`: `qid<TAB>query` or one query per
    /// line), or complete a prefix.
    Suggest {
        /// The typed prefix (characters, pinyin or initials).
        prefix: Option<String>,
        /// Query log to load into the data directory.
        #[arg(long)]
        load: Option<PathBuf>,
        /// How many.
        #[arg(long, default_value_t = 10)]
        size: usize,
    },
    /// Behavior events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Serve the HTTP API.
    Serve {
        /// Listen address.
        #[arg(long)]
        addr: Option<String>,
        /// Worker threads.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Evaluate ranking profiles on judged queries: NDCG@k, MRR@k, Recall@k, MAP, and a
    /// paired randomization test of the first profile against each other one.
    Eval {
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
        format: shoprank::eval::report::Format,
        /// Same as `--format json`.
        #[arg(long)]
        json: bool,
    },
    /// Turn a search log (searches with their impressions, and the clicks, carts and
    /// purchases after them) into graded judgments, corrected for position bias.
    Judgments {
        /// Search-log JSONL files (repeat the flag); see README "Judgments from behavior".
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
    },
    /// Tune a profile's feature weights on judged queries (coordinate ascent on a training
    /// split); writes `--out` only if it beats the base on the held-out split.
    Tune {
        /// Queries: `qid<TAB>query`.
        #[arg(long)]
        queries: PathBuf,
        /// Judgments: TREC qrels.
        #[arg(long)]
        qrels: PathBuf,
        /// The profile to start from (its boosts and candidate counts are kept).
        #[arg(long, default_value = "default")]
        profile: String,
        /// Name of the profile to write (`DATA_DIR/profiles/NAME.toml`).
        #[arg(long)]
        out: String,
        /// mrr or ndcg.
        #[arg(long, default_value = "mrr")]
        metric: shoprank::eval::Metric,
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
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tantivy=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.global.config.as_deref(), |k| std::env::var(k).ok())?;
    let g = cli.global;
    if let Some(v) = g.data_dir {
        settings.data_dir = v;
    }
    if let Some(v) = g.model_dir {
        settings.model_dir = Some(v);
    }
    if let Some(v) = g.manifest {
        settings.manifest = v;
    }
    if let Some(v) = g.device {
        settings.device = v;
    }
    match cli.command {
        Command::Index {
            action: Some(IndexAction::Rollback),
            ..
        } => {
            let engine = open_engine(&settings)?;
            engine
                .enable_writes(&settings)
                .context("rollback goes through the process that owns the writes: with `serve` running, use POST /admin/rollback")?;
            let name = engine.rollback()?;
            println!("generation {name} is live again");
            Ok(())
        }
        Command::Index {
            action: None,
            catalog,
            format,
            skip_invalid,
            errors,
            no_model,
            force,
            max_change,
            canary,
        } => {
            if let Some(m) = max_change {
                settings.gates.max_change = m;
            }
            if !canary.is_empty() {
                settings.gates.canaries = canary;
            }
            let spec = ReindexSpec {
                catalog: catalog.context("--catalog is required")?,
                format,
                skip_invalid,
                force,
                no_model,
            };
            index_catalog(&settings, &spec, errors.as_deref())
        }
        Command::Search {
            query,
            profile,
            explain,
            json,
            brand,
            category,
            price_min,
            price_max,
            in_stock,
            size,
            page,
            user,
        } => {
            let mut engine = open_engine(&settings)?;
            if user.is_some() {
                attach_events(&mut engine, &settings)?;
            }
            let req = SearchRequest {
                query,
                filters: Filters {
                    brand,
                    category,
                    price_min,
                    price_max,
                    in_stock,
                },
                page,
                size,
                profile,
                explain,
                user,
                overrides: Default::default(),
            };
            let res = engine.search(&req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&res)?);
                return Ok(());
            }
            println!(
                "{} results for `{}` (profile {}, semantic {}, {:.1} ms); tokens: {}",
                res.total,
                res.query,
                res.profile,
                if res.semantic { "on" } else { "off" },
                res.timings_ms.total,
                res.tokens.join(" ")
            );
            for (i, h) in res.hits.iter().enumerate() {
                let price = h.price.map_or("-".to_string(), |p| format!("¥{p}"));
                println!(
                    "{:>3}. {:>7.4}  [{}] {}  {}  {}",
                    (page - 1) * size + i + 1,
                    h.score,
                    h.id,
                    h.title,
                    h.brand,
                    price
                );
                if let Some(e) = &h.explain {
                    let parts: Vec<String> = e
                        .features
                        .iter()
                        .map(|f| {
                            format!(
                                "{}={:.3}×{}={:.3}",
                                f.name, f.value, f.weight, f.contribution
                            )
                        })
                        .collect();
                    println!(
                        "       {}  (bm25 raw {:.2}, found by {})",
                        parts.join("  "),
                        e.bm25_raw,
                        e.matched_by.join("+")
                    );
                }
            }
            Ok(())
        }
        Command::Serve { addr, workers } => {
            if let Some(a) = addr {
                settings.addr = a;
            }
            if let Some(w) = workers {
                settings.workers = w;
            }
            settings.validate()?;
            // The document encoder (and candle's matmuls on other devices) read their thread
            // count from RAYON_NUM_THREADS; set it before any thread starts (an explicit
            // environment value wins).
            if settings.encoder_threads > 0 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
                std::env::set_var("RAYON_NUM_THREADS", settings.encoder_threads.to_string());
            }
            let mut engine = open_engine(&settings)?;
            attach_events(&mut engine, &settings)?;
            if let (Some(q), Some(r)) = (&settings.eval_queries, &settings.eval_qrels) {
                engine.set_eval_set(q.clone(), r.clone());
            }
            engine.enable_writes(&settings)?;
            let engine = Arc::new(engine);
            engine.start_background();
            actix_web::rt::System::new()
                .block_on(shoprank::server::serve(
                    engine,
                    &settings.addr,
                    settings.workers,
                    settings.max_in_flight,
                ))
                .with_context(|| format!("serving on {}", settings.addr))
        }
        Command::Analyze { query } => {
            let engine = open_engine(&settings)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&engine.analyze(&query)?)?
            );
            Ok(())
        }
        Command::Suggest { prefix, load, size } => {
            if let Some(file) = load {
                let queries = shoprank::suggest::Suggester::read_log(&file)?;
                let path = shoprank::engine::suggest_log_path(&settings.data_dir);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let text: String = queries.iter().map(|(q, _)| format!("{q}\n")).collect();
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!(
                    "loaded {} queries from {} into {}",
                    queries.len(),
                    file.display(),
                    path.display()
                );
            }
            if let Some(prefix) = prefix {
                let engine = open_engine(&settings)?;
                for s in engine.suggest(&prefix, size)? {
                    println!("{:>8.0}  {}", s.score, s.text);
                }
            }
            Ok(())
        }
        Command::Events {
            command: EventsCommand::Import { file },
        } => {
            let mut engine = open_engine(&settings)?;
            attach_events(&mut engine, &settings)?;
            let events = shoprank::behavior::read_file(&file, shoprank::behavior::now())?;
            let (mut stored, mut expired) = (0, 0);
            for chunk in events.chunks(shoprank::behavior::MAX_BATCH) {
                let (s, e) = engine.record_events(chunk.to_vec())?;
                stored += s;
                expired += e;
            }
            println!(
                "imported {stored} events from {}; dropped {expired} older than the retention of {} days",
                file.display(),
                settings.retention_days
            );
            Ok(())
        }
        Command::Synth {
            shared,
            products,
            seed,
            out,
        } => {
            let started = std::time::Instant::now();
            let n = shoprank::synth::generate(&shared, products, seed, &out)?;
            println!(
                "wrote {n} synthetic products to {} in {:.1}s",
                out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::EvalPersonal {
            shared,
            profile,
            shoppers,
            seed,
            json,
        } => {
            let encoder = load_encoder(&settings).map_err(|r| tracing::warn!(reason = %r, "no encoder: the personal vector feature is off")).ok();
            let r = shoprank::eval_personal::run(
                &shared,
                Some(&settings.data_dir.join("profiles")),
                encoder,
                &profile,
                shoppers,
                seed,
            )?;
            if json {
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
        Command::Eval {
            queries,
            qrels,
            profile,
            k,
            per_query,
            format,
            json,
        } => {
            let engine = open_engine(&settings)?;
            let queries = shoprank::eval::read_queries(&queries)?;
            let qrels = shoprank::eval::read_qrels(&qrels)?;
            let profiles = if profile.is_empty() {
                vec!["default".to_string()]
            } else {
                profile
            };
            let run = shoprank::eval::run(&engine, &profiles, &queries, &qrels, k)?;
            let format = if json {
                shoprank::eval::report::Format::Json
            } else {
                format
            };
            print!(
                "{}",
                shoprank::eval::report::render(&run, format, per_query)
            );
            Ok(())
        }
        Command::Judgments {
            from_events,
            out,
            eta,
            min_impressions,
            thresholds,
        } => judgments(&from_events, &out, eta, min_impressions, &thresholds),
        Command::Tune {
            queries,
            qrels,
            profile,
            out,
            metric,
            k,
            holdout,
            seed,
            restarts,
            force,
            json,
        } => {
            let engine = open_engine(&settings)?;
            let queries = shoprank::eval::read_queries(&queries)?;
            let qrels = shoprank::eval::read_qrels(&qrels)?;
            let base = engine.profiles().get(&profile)?;
            let opts = shoprank::tune::TuneOptions {
                metric,
                k,
                holdout,
                seed,
                restarts,
            };
            let started = std::time::Instant::now();
            let data = shoprank::tune::collect(&engine, &profile, &queries, &qrels)?;
            let searched = started.elapsed().as_secs_f64();
            let (report, tuned) = shoprank::tune::tune(&data, &profile, &base, &opts)?;
            let written = if report.improved {
                Some(shoprank::tune::write_profile(
                    &settings.data_dir.join("profiles"),
                    &out,
                    &tuned,
                    force,
                )?)
            } else {
                None
            };
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["written"] = serde_json::json!(written);
                println!("{v}");
                return Ok(());
            }
            print_tune(&report, searched, started.elapsed().as_secs_f64());
            match written {
                Some(path) => println!("wrote profile `{out}` to {}", path.display()),
                None => println!(
                    "the tuned weights do not beat `{profile}` on the held-out split: no profile written"
                ),
            }
            Ok(())
        }
    }
}

fn judgments(
    files: &[PathBuf],
    out: &Path,
    eta: Option<f64>,
    min_impressions: usize,
    thresholds: &str,
) -> anyhow::Result<()> {
    let t: Vec<f64> = thresholds
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
    if let Some(e) = eta {
        if !(e.is_finite() && e >= 0.0) {
            bail!("--eta must be a number >= 0");
        }
    }
    let log = shoprank::judgments::read_log(files)?;
    let opts = shoprank::judgments::JudgeOptions {
        eta,
        min_impressions,
        thresholds: [*t1, *t2, *t3],
    };
    let j = shoprank::judgments::judge(&log, &opts);
    let (queries, qrels) = shoprank::judgments::write(&j, out)?;
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
        if eta.is_some() {
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

fn print_tune(r: &shoprank::tune::TuneReport, searched: f64, total: f64) {
    let label = r.options.metric.label(r.options.k);
    println!(
        "tuned `{}` for {label}: {} restarts of coordinate ascent over {} (searching {searched:.1}s, total {total:.1}s)",
        r.base,
        r.options.restarts,
        r.tuned_features.join(", ")
    );
    let (other, other_of): (String, fn(&shoprank::eval::QueryScores) -> f64) =
        match r.options.metric {
            shoprank::eval::Metric::Mrr => (format!("NDCG@{}", r.options.k), |s| s.ndcg),
            shoprank::eval::Metric::Ndcg => (format!("MRR@{}", r.options.k), |s| s.rr),
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

fn open_engine(settings: &Settings) -> anyhow::Result<Engine> {
    let (encoder, note) = match load_encoder(settings) {
        Ok(e) => (Some(e), None),
        Err(reason) => (None, Some(reason)),
    };
    let mut engine = Engine::open(&settings.data_dir, encoder, note)?;
    engine.set_text_sources(shoprank::engine::TextSources {
        user_dict: Some(settings.user_dict.clone()),
        synonyms: Some(settings.synonyms.clone()),
        brand_aliases: Some(settings.brand_aliases.clone()),
    })?;
    Ok(engine)
}

fn attach_events(engine: &mut Engine, settings: &Settings) -> anyhow::Result<()> {
    let path = settings.data_dir.join("events").join("events.redb");
    let store = shoprank::behavior::RedbStore::open(&path)
        .context("opening the event store (is `shoprank serve` running on this data directory?)")?;
    engine.attach_events(Box::new(store), settings.retention_days)?;
    Ok(())
}

fn index_catalog(
    settings: &Settings,
    spec: &ReindexSpec,
    errors_out: Option<&Path>,
) -> anyhow::Result<()> {
    let encoder = if spec.no_model {
        None
    } else {
        match load_encoder(settings) {
            Ok(e) => Some(e),
            Err(reason) => {
                tracing::warn!(%reason, "indexing without product vectors: semantic ranking will be off");
                None
            }
        }
    };
    let previous = index::current_name(&settings.data_dir)?
        .map(|name| -> anyhow::Result<usize> {
            let meta =
                std::fs::read(index::generation_dir(&settings.data_dir, &name).join("meta.json"))?;
            Ok(serde_json::from_slice::<index::GenerationMeta>(&meta)?.products)
        })
        .transpose()?;
    let bar = ProgressLine::default();
    let result = shoprank::jobs::prepare(
        settings,
        spec,
        encoder.as_ref(),
        previous,
        &|errors| {
            for e in errors.iter().take(20) {
                eprintln!("{}: {e}", spec.catalog.display());
            }
            if errors.len() > 20 {
                eprintln!("... and {} more bad records", errors.len() - 20);
            }
            match errors_out {
                Some(path) => shoprank::jobs::write_error_report(path, errors),
                None => Ok(()),
            }
        },
        None,
        &|p| bar.show(p),
        &|| false,
    );
    bar.finish();
    let prepared = result?;
    let meta = prepared.built.meta.clone();
    index::publish(&settings.data_dir, prepared.built)?;
    Profiles::write_default(&settings.data_dir.join("profiles"))?;
    if let Some(g) = &prepared.gates {
        let canaries: Vec<String> = g
            .canaries
            .iter()
            .map(|(q, n)| format!("{q}: {n}"))
            .collect();
        eprintln!(
            "gates passed: {} products (live before: {}); canaries {}",
            g.products,
            g.previous.map_or("none".to_string(), |p| p.to_string()),
            canaries.join(", ")
        );
    }
    println!(
        "indexed {} products from {} into {} (generation {}) in {:.1}s ({:.0} products/s; encoding {:.1}s, {} vectors from the cache){}",
        meta.products,
        spec.catalog.display(),
        settings.data_dir.display(),
        meta.name,
        meta.build_secs,
        meta.products as f64 / meta.build_secs.max(1e-9),
        meta.encode_secs,
        meta.cached_vectors,
        if prepared.skipped == 0 { String::new() } else { format!("; skipped {} bad records", prepared.skipped) }
    );
    Ok(())
}

/// A progress line on stderr with rate and ETA: redrawn in place on a terminal, one line
/// every 5 s otherwise.
struct ProgressLine {
    tty: bool,
    state: std::sync::Mutex<(Option<&'static str>, std::time::Instant, std::time::Instant)>,
}

impl Default for ProgressLine {
    fn default() -> Self {
        use std::io::IsTerminal;
        let now = std::time::Instant::now();
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
            state: std::sync::Mutex::new((None, now, now)),
        }
    }
}

impl ProgressLine {
    fn show(&self, p: index::Progress) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 != Some(p.stage) {
            if s.0.is_some() && self.tty {
                eprintln!();
            }
            *s = (
                Some(p.stage),
                std::time::Instant::now(),
                std::time::Instant::now(),
            );
        }
        let every = if self.tty { 0.2 } else { 5.0 };
        if s.2.elapsed().as_secs_f64() < every && p.done < p.total {
            return;
        }
        s.2 = std::time::Instant::now();
        let (rate, eta) = shoprank::jobs::rate_eta(p.done, p.total, s.1);
        let width = 30;
        let filled = (p.done * width).checked_div(p.total).unwrap_or(width);
        let line = format!(
            "{:<6} [{}{}] {}/{} {:.0}/s ETA {}",
            p.stage,
            "#".repeat(filled),
            "-".repeat(width - filled),
            p.done,
            p.total,
            rate,
            eta.map_or("-".to_string(), |e| format!("{e:.0}s"))
        );
        if self.tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.tty && self.state.lock().map(|s| s.0.is_some()).unwrap_or(false) {
            eprintln!();
        }
    }
}

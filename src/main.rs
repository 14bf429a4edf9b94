//! The `shoprank` command line: one function per command, in `cli/` (ripgrep's
//! `main -> one function per mode`). Settings come from one layered builder
//! ([`Settings::load`]): defaults, `--config` file, `SHOPRANK_*` variables, flags.

mod cli;

use clap::{Parser, Subcommand};

use shoprank::settings::{Settings, SettingsArgs};

/// Query-aware product search for Chinese e-commerce.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a new index generation from a catalog file and make it live once it passes
    /// its gates (product count within the tolerance, canary queries answer). A running
    /// `serve` on the same data directory switches to it and replays the writes it took
    /// meanwhile. `shoprank index rollback` makes the previous generation live again.
    #[command(args_conflicts_with_subcommands = true)]
    Index(cli::catalog::IndexArgs),
    /// Search from the command line.
    Search(cli::query::SearchArgs),
    /// Write a synthetic catalog (JSON lines) of recombined real titles from the shared
    /// data, for load and memory benchmarks (ids `syn-N`, shops `合成-…`).
    Synth(cli::offline::SynthArgs),
    /// Evaluate personalization with the simulated-shopper protocol on the shared catalogs
    /// (profiles from `--data-dir`'s `profiles/`, if any, besides the built-in ones).
    EvalPersonal(cli::offline::EvalPersonalArgs),
    /// Show how a query is understood: normalized text, tokens, intents (JSON); or, with
    /// `--aliases`, every brand alias in use and where it came from (catalog, file,
    /// titles), one `alias<TAB>brand<TAB>source` line each.
    Analyze {
        /// The query.
        #[arg(required_unless_present = "aliases")]
        query: Option<String>,
        /// List the brand aliases instead.
        #[arg(long, conflicts_with = "query")]
        aliases: bool,
    },
    /// Suggestions: load a query log (`--load FILE`: `qid<TAB>query` or one query per
    /// line), or complete a prefix.
    Suggest(cli::query::SuggestArgs),
    /// Behavior events.
    Events {
        #[command(subcommand)]
        command: cli::catalog::EventsCommand,
    },
    /// Serve the HTTP API.
    Serve,
    /// Evaluate ranking profiles on judged queries: NDCG@k, MRR@k, Recall@k, MAP, and a
    /// paired randomization test of the first profile against each other one.
    Eval(cli::offline::EvalArgs),
    /// Turn a search log (searches with their impressions, and the clicks, carts and
    /// purchases after them) into graded judgments, corrected for position bias.
    Judgments(cli::offline::JudgmentsArgs),
    /// Tune a profile's feature weights on judged queries (coordinate ascent on a training
    /// split); writes `--out` only if it beats the base on the held-out split.
    Tune(cli::offline::TuneArgs),
    /// Fine-tune the encoder on judged queries (contrastive loss with in-batch and hard
    /// negatives, AdamW, on the CPU) into `DATA_DIR/models/<id>/`; publishes it
    /// (`DATA_DIR/models/CURRENT`) only if it beats its parent on the held-out split.
    Train(cli::offline::TrainArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tantivy=warn".into()),
        )
        .with_writer(std::io::stderr)
        // With `RUST_LOG=shoprank=debug`, each search stage's span (analyze, encode,
        // understand, retrieve, rank) logs its time when it closes.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
    let cli = Cli::parse();
    let settings = Settings::load(&cli.settings)?;
    match cli.command {
        Command::Index(a) => cli::catalog::index(settings, a),
        Command::Events { command } => cli::catalog::events(settings, command),
        Command::Search(a) => cli::query::search(settings, a),
        Command::Analyze { query, aliases } => cli::query::analyze(settings, query, aliases),
        Command::Suggest(a) => cli::query::suggest(settings, a),
        Command::Serve => cli::serve::serve(settings),
        Command::Eval(a) => cli::offline::eval(settings, a),
        Command::Tune(a) => cli::offline::tune(settings, a),
        Command::Train(a) => cli::offline::train(settings, a),
        Command::Judgments(a) => cli::offline::judgments(a),
        Command::EvalPersonal(a) => cli::offline::eval_personal(settings, a),
        Command::Synth(a) => cli::offline::synth(a),
    }
}

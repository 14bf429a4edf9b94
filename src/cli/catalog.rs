//! `shoprank index` (build, gate and publish a generation; `index rollback`) and
//! `shoprank events import`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use shoprank::engine::load_encoder;
use shoprank::index;
use shoprank::jobs::ReindexSpec;
use shoprank::rank::Profiles;
use shoprank::settings::Settings;

use super::{attach_events, open_engine};

/// `shoprank index`.
#[derive(Args)]
pub struct IndexArgs {
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
    /// Publish without checking the gates (product count and canary queries).
    #[arg(long)]
    force: bool,
    /// Largest relative change of the product count against the live generation.
    #[arg(long)]
    max_change: Option<f64>,
    /// A query that must return results before publishing (repeat the flag).
    #[arg(long)]
    canary: Vec<String>,
}

#[derive(Subcommand)]
enum IndexAction {
    /// Make the previous generation live again (with the writes the live one took).
    Rollback,
}

/// `shoprank events`.
#[derive(Subcommand)]
pub enum EventsCommand {
    /// Load events from a file: JSONL events, or the Tianchi UserBehavior CSV (`.csv`).
    Import {
        /// The events file.
        file: PathBuf,
    },
}

/// Builds, gates and publishes a generation, or rolls back.
pub fn index(mut settings: Settings, args: IndexArgs) -> anyhow::Result<()> {
    if let Some(IndexAction::Rollback) = args.action {
        let engine = open_engine(&settings)?;
        engine
            .enable_writes(&settings)
            .context("rollback goes through the process that owns the writes: with `serve` running, use POST /admin/rollback")?;
        let name = engine.rollback()?;
        println!("generation {name} is live again");
        return Ok(());
    }
    if let Some(m) = args.max_change {
        settings.gates.max_change = m;
    }
    if !args.canary.is_empty() {
        settings.gates.canaries = args.canary;
    }
    let spec = ReindexSpec {
        catalog: args.catalog.context("--catalog is required")?,
        format: args.format,
        skip_invalid: args.skip_invalid,
        force: args.force,
        // The operator at the machine: --force skips every gate.
        allow_count_change: args.force,
        no_model: args.no_model,
    };
    index_catalog(&settings, &spec, args.errors.as_deref())
}

/// Stores the events of a file, in batches, as the HTTP route would.
pub fn events(settings: Settings, command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Import { file } = command;
    let mut engine = open_engine(&settings)?;
    attach_events(&mut engine, &settings)?;
    let events = shoprank::behavior::read_file(&file, shoprank::util::now())?;
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

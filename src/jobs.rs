//! Catalog jobs: a catalog file -> a validated, built and gated generation, ready to go
//! live; and the registry of background jobs with their progress, rate, ETA and
//! cancellation. The CLI (`shoprank index`) and `POST /admin/reindex` share [`prepare`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::catalog::{self, Format, RecordError};
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::index::{self, BuildOptions, Built, Generation};
use crate::retrieve::{self, Filters, QueryWords};
use crate::settings::{Gates, Settings};

/// What to rebuild from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReindexSpec {
    /// Catalog file (a path the server can read).
    pub catalog: PathBuf,
    /// jsonl, csv, tsv, multicpr, taobao or openbg (default: from the extension).
    #[serde(default)]
    pub format: Option<String>,
    /// Publish the valid records and report the bad ones, instead of rejecting the run.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Skip the canary queries. The product-count gate still holds unless
    /// `allow_count_change` is also set, so one request cannot replace a catalog by a
    /// handful of products.
    #[serde(default)]
    pub force: bool,
    /// With `force`: publish whatever the product count (the second, explicit flag).
    #[serde(default)]
    pub allow_count_change: bool,
    /// Build without product vectors.
    #[serde(default)]
    pub no_model: bool,
}

/// A built generation that passed its gates, not yet live.
pub struct Prepared {
    /// The build (holds the build lock until published).
    pub built: Built,
    /// The new generation, opened.
    pub candidate: Generation,
    /// What the gates found (`None` when forced).
    pub gates: Option<GateReport>,
    /// Bad records skipped.
    pub skipped: usize,
}

/// Reads, validates, builds and gates a catalog. Every bad record goes to `report_errors`
/// (before the run is rejected or the valid records are built). On any
/// failure the live generation is untouched and the unfinished build is removed.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    settings: &Settings,
    spec: &ReindexSpec,
    encoder: Option<&Encoder>,
    previous: Option<usize>,
    report_errors: &dyn Fn(&[RecordError]) -> Result<()>,
    parent: Option<(String, u64)>,
    progress: &dyn Fn(index::Progress),
    cancelled: &dyn Fn() -> bool,
) -> Result<Prepared> {
    // Where the live change log stands before the catalog is read: every write
    // acknowledged from here on is replayed into the new generation (issue 12, defect 4:
    // the CLI took it after reading the catalog and lost the writes of that moment).
    let parent = match parent {
        Some(p) => Some(p),
        None => index::live_position(&settings.data_dir)?,
    };
    let format = match &spec.format {
        Some(f) => f.parse::<Format>()?,
        None => Format::from_path(&spec.catalog)?,
    };
    let schema = settings.catalog_schema()?;
    let report = catalog::read_catalog(&spec.catalog, format, &schema)?;
    report_errors(&report.errors)?;
    let (products, skipped) = report.accept(spec.skip_invalid)?;
    if products.is_empty() {
        return Err(Error::GateFailed(format!(
            "{} has no valid products",
            spec.catalog.display()
        )));
    }
    let encoder = encoder.filter(|_| !spec.no_model);
    fn existing(p: &Path) -> Option<&Path> {
        p.exists().then_some(p)
    }
    let built = index::build(
        &settings.data_dir,
        products,
        BuildOptions {
            schema: &schema,
            user_dict: existing(&settings.user_dict),
            brand_aliases: existing(&settings.brand_aliases),
            encoder,
            source: spec.catalog.display().to_string(),
            progress,
            cancelled,
            parent,
        },
    )?;
    let dir = index::generation_dir(&settings.data_dir, &built.meta.name);
    let checked = (|| {
        let candidate = index::open_named(&settings.data_dir, &built.meta.name, encoder)?;
        let gates = match (spec.force, spec.allow_count_change) {
            (true, true) => None,
            (force, _) => Some(check_gates(&candidate, previous, &settings.gates, !force)?),
        };
        if cancelled() {
            return Err(Error::Cancelled);
        }
        Ok((candidate, gates))
    })();
    match checked {
        Ok((candidate, gates)) => Ok(Prepared {
            built,
            candidate,
            gates,
            skipped: skipped.len(),
        }),
        Err(e) => {
            if let Err(rm) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(path = %dir.display(), error = %rm, "could not remove the rejected build");
            }
            Err(e)
        }
    }
}

/// What the gates found.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    /// Products in the new generation.
    pub products: usize,
    /// Live products before.
    pub previous: Option<usize>,
    /// Canary query -> number of results.
    pub canaries: Vec<(String, usize)>,
}

/// Checks a built generation against the live product count and canary queries.
pub fn check_gates(
    candidate: &Generation,
    previous: Option<usize>,
    gates: &Gates,
    canaries: bool,
) -> Result<GateReport> {
    let products = candidate.live_count();
    if products == 0 {
        return Err(Error::GateFailed(
            "the new generation has no products".into(),
        ));
    }
    if let Some(prev) = previous.filter(|&p| p > 0 && gates.max_change >= 0.0) {
        let change = (products as f64 - prev as f64).abs() / prev as f64;
        if change > gates.max_change {
            return Err(Error::GateFailed(format!(
                "{products} products against {prev} live: a {:.0}% change exceeds the allowed {:.0}% (raise the tolerance, or pass force with allow_count_change — `--force` on the CLI — to publish anyway)",
                change * 100.0,
                gates.max_change * 100.0
            )));
        }
    }
    if !canaries {
        return Ok(GateReport {
            products,
            previous,
            canaries: Vec::new(),
        });
    }
    let canaries: Vec<String> = if gates.canaries.is_empty() {
        let step = (products / 5).max(1);
        candidate
            .products
            .iter()
            .step_by(step)
            .take(5)
            .map(|p| p.title.chars().take(20).collect())
            .collect()
    } else {
        gates.canaries.clone()
    };
    let mut found = Vec::new();
    for q in canaries {
        let words = QueryWords {
            words: candidate.analysis.query_words(&q),
            synonyms: Vec::new(),
            bigrams: candidate.analysis.bigrams(&q),
        };
        let n = retrieve::candidates(
            candidate,
            &words,
            None,
            &Filters::default(),
            Default::default(),
            10,
            0,
        )?
        .len();
        if n == 0 {
            return Err(Error::GateFailed(format!(
                "canary query `{q}` returns no results"
            )));
        }
        found.push((q, n));
    }
    Ok(GateReport {
        products,
        previous,
        canaries: found,
    })
}

/// Writes bad records as JSON lines.
/// At most this many bad records are written to a report (a binary file given as a
/// catalog made a 63 MB report per run); a last line says how many more there were.
pub const MAX_REPORTED_ERRORS: usize = 1000;
/// Longest reason written per record, in characters.
const MAX_REASON_CHARS: usize = 300;
/// Error reports kept in a jobs folder; older ones are removed when a job starts.
pub const KEPT_REPORTS: usize = 20;

/// Writes bad records as JSON lines, at most [`MAX_REPORTED_ERRORS`] of them.
pub fn write_error_report(path: &Path, errors: &[RecordError]) -> Result<()> {
    let mut text = String::new();
    for e in errors.iter().take(MAX_REPORTED_ERRORS) {
        let mut e = e.clone();
        if e.reason.chars().count() > MAX_REASON_CHARS {
            e.reason = e.reason.chars().take(MAX_REASON_CHARS).collect::<String>() + "…";
        }
        e.field = e.field.chars().take(100).collect();
        e.id = e.id.map(|id| id.chars().take(100).collect());
        text.push_str(&serde_json::to_string(&e).map_err(|e| Error::Internal(e.to_string()))?);
        text.push('\n');
    }
    if errors.len() > MAX_REPORTED_ERRORS {
        let more = errors.len() - MAX_REPORTED_ERRORS;
        text.push_str(&format!("{{\"more_errors_not_listed\": {more}}}\n"));
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Removes all but the newest [`KEPT_REPORTS`] error reports of `jobs_dir`.
fn prune_reports(jobs_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(jobs_dir) else {
        return;
    };
    let mut reports: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".errors.jsonl"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    reports.sort();
    let excess = reports.len().saturating_sub(KEPT_REPORTS);
    for (_, path) in reports.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an old error report");
        }
    }
}

/// Rate and time left of a stage that started at `since`.
pub fn rate_eta(done: usize, total: usize, since: Instant) -> (f64, Option<f64>) {
    let rate = done as f64 / since.elapsed().as_secs_f64().max(1e-3);
    let eta = (rate > 0.0 && total >= done).then(|| (total - done) as f64 / rate);
    (rate, eta)
}

/// A job as `GET /admin/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// Job id.
    pub id: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: &'static str,
    /// The catalog.
    pub catalog: String,
    /// Current stage: `read`, `index`, `encode`, `gates`, `publish`.
    pub stage: &'static str,
    /// Done in this stage.
    pub done: usize,
    /// Of.
    pub total: usize,
    /// Items per second in this stage.
    pub rate: f64,
    /// Seconds left in this stage, when known.
    pub eta_secs: Option<f64>,
    /// Seconds since the job started.
    pub elapsed_secs: f64,
    /// Bad records skipped (or that rejected the run).
    pub invalid_records: usize,
    /// Where the bad-record report is.
    pub errors_file: Option<PathBuf>,
    /// What the gates found.
    pub gates: Option<GateReport>,
    /// The new generation, once built.
    pub generation: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One background job.
pub struct Job {
    status: Mutex<JobStatus>,
    cancel: AtomicBool,
    started: Instant,
    stage_started: Mutex<Instant>,
}

impl Job {
    /// Its current status.
    pub fn status(&self) -> JobStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.elapsed_secs = self.started.elapsed().as_secs_f64();
        s
    }

    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// Whether it was asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Records progress.
    pub fn progress(&self, p: index::Progress) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut since = self.stage_started.lock().unwrap_or_else(|e| e.into_inner());
        if s.stage != p.stage {
            *since = Instant::now();
        }
        let (rate, eta) = rate_eta(p.done, p.total, *since);
        s.stage = p.stage;
        s.done = p.done;
        s.total = p.total;
        s.rate = rate;
        s.eta_secs = eta;
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The jobs of this process (one catalog job runs at a time).
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Jobs {
    /// Registers a new running job, unless one is running.
    /// The job's bad-record report goes to `jobs_dir/<id>.errors.jsonl`.
    pub fn start(&self, catalog: &Path, jobs_dir: &Path) -> Result<Arc<Job>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = jobs.values().find(|j| j.status().state == "running") {
            return Err(Error::JobRunning(running.status().id));
        }
        prune_reports(jobs_dir);
        let id = format!(
            "reindex-{}-{}",
            crate::util::now(),
            self.next.fetch_add(1, Ordering::Relaxed) + 1
        );
        let job = Arc::new(Job {
            status: Mutex::new(JobStatus {
                id: id.clone(),
                state: "running",
                catalog: catalog.display().to_string(),
                stage: "read",
                done: 0,
                total: 0,
                rate: 0.0,
                eta_secs: None,
                elapsed_secs: 0.0,
                invalid_records: 0,
                errors_file: Some(jobs_dir.join(format!("{id}.errors.jsonl"))),
                gates: None,
                generation: None,
                error: None,
            }),
            cancel: AtomicBool::new(false),
            started: Instant::now(),
            stage_started: Mutex::new(Instant::now()),
        });
        jobs.insert(id, job.clone());
        Ok(job)
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Result<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::JobNotFound(id.chars().take(128).collect()))
    }
}

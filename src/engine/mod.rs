//! Engine: the one place that wires the pipeline stages together.
//!
//! search request -> analysis (normalize, jieba) -> encode query -> retrieve (BM25 + vector
//! candidates, filters) -> rank (features × profile) -> page, facets, explain.
//! HTTP handlers and the CLI only convert their inputs into a [`SearchRequest`] and call
//! [`Engine::search`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::analysis::{normalize, Analysis, MAX_QUERY_CHARS};
use crate::behavior::{Event, EventStore, EventType, UserProfile};
use crate::catalog::Product;
use crate::encoder::{device, Encoder, EncoderConfig};
use crate::error::{Error, Result};
use crate::experiments::{self, Experiments};
use crate::index::{self, Generation, LiveWriter, Outcome, ProductWrite};
use crate::intent::{self, IntentModel, Intents, PriceIntent, QueryAnalysis, Synonyms};
use crate::jobs::{JobStatus, Jobs, ReindexSpec};
use crate::metrics::Metrics;
use crate::rank::rules::{self, Rules};
use crate::rank::{self, profile, Explain, Profile, Profiles};
use crate::retrieve::QueryWords;
use crate::retrieve::{self, Facets, Filters};
use crate::settings::Settings;
use crate::suggest::{Suggester, Suggestion};

mod budget;
mod events;
mod merchandising;
mod models;
mod replicas;
mod request;
mod rerank;
mod search;
mod text;
mod tuning;
mod writes;

pub use budget::BudgetNote;
pub use models::{ModelSource, ModelStatus};
pub use replicas::prepare_replica;
pub use request::{
    AppliedFilters, ExperimentTag, Health, Hit, SearchRequest, SearchResponse, Timings,
    MAX_PAGE_SIZE,
};
pub use rerank::{RerankDocument, RerankRequest, Reranked, MAX_RERANK_DOCUMENTS};
pub use text::{suggest_log_path, TextSources};

use crate::behavior::Tracker;
use request::validate;
use text::{load_suggester, TextResources};

/// The search engine over one data directory.
pub struct Engine {
    data_dir: PathBuf,
    text: RwLock<TextResources>,
    sources: Option<TextSources>,
    suggester: Suggester,
    behavior: Option<Tracker>,
    generation: RwLock<Arc<Generation>>,
    encoder: Option<Arc<Encoder>>,
    semantic_note: Option<String>,
    /// Models other than the serving one that profiles name, by the name they use.
    challengers: RwLock<std::collections::BTreeMap<String, Arc<models::Challenger>>>,
    /// Where those are found.
    model_source: ModelSource,
    profiles: RwLock<Arc<Profiles>>,
    /// Running A/B experiments.
    experiments: Experiments,
    /// Serializes profile edits (save + reload).
    profile_edit: Mutex<()>,
    /// Modification stamp of the profile folder at the last load.
    profiles_stamp: Mutex<u128>,
    /// Merchandising rules.
    rules: RwLock<Arc<Rules>>,
    /// This process as one of several replicas sharing a Redis, if it is.
    replica: Option<replicas::Replica>,
    /// Searches in flight and recent stage times, for latency budgets.
    load: budget::Load,
    /// Modification stamp of the rule folder at the last load.
    rules_stamp: Mutex<u128>,
    /// The writer of the live generation, when this process takes writes.
    live: Mutex<Option<Writes>>,
    jobs: Jobs,
    /// Process metrics.
    pub metrics: Metrics,
    /// Shopper ids -> the pseudonyms stored and logged in their place.
    pseudonyms: crate::behavior::Pseudonyms,
}

/// Write state of an engine that owns its data directory.
struct Writes {
    writer: LiveWriter,
    commit_interval: Duration,
    /// Where rebuilds read the schema, dictionary, aliases and gates from.
    settings: Settings,
    /// Held while this process owns the data directory's writes.
    _lock: std::fs::File,
}

/// The encoder settings the settings name: a model folder's own `encoder.toml` (a
/// `shoprank train` model), else the manifest's table with `--model-dir` as its folder.
pub fn encoder_config(settings: &Settings) -> std::result::Result<EncoderConfig, String> {
    let current = current_model_dir(settings)?;
    // A model folder with its own settings (a `shoprank train` model) brings its own id,
    // so its vectors are never taken for its parent's (index, embedding cache).
    let own = (current.as_deref())
        .or(settings.model_dir.as_deref())
        .and_then(EncoderConfig::from_model_dir);
    let mut config = match own {
        Some(own) => own.map_err(|e| e.to_string())?,
        None => {
            if !settings.manifest.exists() {
                return Err(format!(
                    "no model manifest at {} (nor in SHOPRANK_HOME, the XDG data folder, \
                     /usr/local/share/shoprank, /usr/share/shoprank or above the binary): \
                     pass --manifest or set SHOPRANK_HOME to a folder with models/manifest.toml",
                    settings.manifest.display()
                ));
            }
            let mut config =
                EncoderConfig::from_manifest(&settings.manifest, settings.model.as_deref())
                    .map_err(|e| e.to_string())?;
            if let Some(dir) = &settings.model_dir {
                config.dir = dir.clone();
            }
            config
        }
    };
    if let Some(precision) = settings.precision {
        config.precision = precision;
    }
    Ok(config)
}

/// `--model current` (without `--model-dir`): the folder of the model `shoprank train`
/// last published, `DATA_DIR/models/<the id in DATA_DIR/models/CURRENT>`.
fn current_model_dir(settings: &Settings) -> std::result::Result<Option<PathBuf>, String> {
    if settings.model.as_deref() != Some(CURRENT_MODEL) || settings.model_dir.is_some() {
        return Ok(None);
    }
    let pointer = settings.data_dir.join("models").join("CURRENT");
    let id = std::fs::read_to_string(&pointer).map_err(|e| {
        format!(
            "--model current: cannot read {} ({e}): no `shoprank train` has published a model in this data directory",
            pointer.display()
        )
    })?;
    let id = id.trim();
    rank::profile::check_model_name(id)
        .map_err(|e| format!("--model current: {}: {e}", pointer.display()))?;
    Ok(Some(settings.data_dir.join("models").join(id)))
}

/// The `--model` value that means the published trained model (see [`encoder_config`]).
pub const CURRENT_MODEL: &str = "current";

/// Loads the encoder named by the settings; `Err(reason)` says why there is none.
pub fn load_encoder(settings: &Settings) -> std::result::Result<Encoder, String> {
    let config = encoder_config(settings)?;
    let device = device::select(settings.device).map_err(|e| e.to_string())?;
    Encoder::load(config, device).map_err(|e| e.to_string())
}

impl Engine {
    /// Opens the live generation of `data_dir`; with `encoder`, semantic ranking is on when
    /// the generation's vectors come from the same model.
    pub fn open(
        data_dir: &Path,
        encoder: Option<Encoder>,
        encoder_note: Option<String>,
    ) -> Result<Engine> {
        Engine::open_with_models(data_dir, encoder, encoder_note, ModelSource::default())
    }

    /// [`Engine::open`], with the models profiles name found through `models` (the
    /// folders of `DATA_DIR/models` always; the manifest's models when it names one).
    pub fn open_with_models(
        data_dir: &Path,
        encoder: Option<Encoder>,
        encoder_note: Option<String>,
        models: ModelSource,
    ) -> Result<Engine> {
        let generation = index::open(data_dir, encoder.as_ref())?;
        let profiles = Profiles::load(&data_dir.join("profiles"))?;
        let rules_dir = data_dir.join("rules");
        let rules = Rules::load(&rules_dir)?;
        let experiments =
            Experiments::open(&data_dir.join("experiments"), |p| profiles.get(p).is_ok())?;
        let (encoder, semantic_note) = match (encoder, &generation.meta.model_id) {
            (None, _) => (None, Some(encoder_note.unwrap_or_else(|| "no encoder loaded".into()))),
            (Some(_), None) => (
                None,
                Some("the index has no product vectors (it was built without a model): reindex to enable semantic ranking".into()),
            ),
            (Some(e), Some(id)) if e.id() != id => (
                None,
                Some(format!("the index's vectors come from model `{id}`, the loaded model is `{}`: reindex", e.id())),
            ),
            (Some(e), Some(_)) => (Some(Arc::new(e)), None),
        };
        match &semantic_note {
            Some(note) => {
                tracing::warn!(%note, "semantic ranking is OFF; ranking uses BM25 and catalog features only")
            }
            None => tracing::info!("semantic ranking is on"),
        }
        let suggester = load_suggester(data_dir, &generation)?;
        let engine = Engine {
            suggester,
            text: RwLock::new(TextResources::default()),
            sources: None,
            data_dir: data_dir.to_path_buf(),
            behavior: None,
            generation: RwLock::new(Arc::new(generation)),
            encoder,
            semantic_note,
            challengers: Default::default(),
            model_source: models,
            profiles: RwLock::new(Arc::new(profiles.clone())),
            profile_edit: Mutex::new(()),
            experiments,
            profiles_stamp: Mutex::new(profile::stamp(&data_dir.join("profiles"))),
            rules_stamp: Mutex::new(rules::files(&rules_dir).stamp()),
            rules: RwLock::new(Arc::new(rules)),
            replica: None,
            load: budget::Load::default(),
            live: Mutex::new(None),
            jobs: Jobs::default(),
            metrics: Metrics::default(),
            pseudonyms: crate::behavior::Pseudonyms::for_data_dir(data_dir)?,
        };
        engine.load_models(profiles.iter().map(|(n, p)| (n, &**p)))?;
        Ok(engine)
    }

    /// The live generation.
    pub fn generation(&self) -> Arc<Generation> {
        self.generation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// All profiles.
    pub fn profiles(&self) -> Arc<Profiles> {
        self.profiles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Health facts.
    pub fn health(&self) -> Health {
        let g = self.generation();
        let mut problems = self.replica_problems();
        let models = self.models();
        problems.extend(
            (models.iter())
                .filter_map(|m| Some(format!("model `{}`: {}", m.id, m.problem.as_ref()?))),
        );
        if self.behavior.as_ref().is_some_and(|b| b.store.failing()) {
            problems.push(
                "the event store failed its last write (full disk?); it retries on the next".into(),
            );
        }
        Health {
            status: if problems.is_empty() {
                "ok"
            } else {
                "degraded"
            },
            problems,
            generation: g.meta.name.clone(),
            products: g.live_count(),
            writable: self.live.lock().map(|l| l.is_some()).unwrap_or(false),
            semantic: self.encoder.is_some(),
            model: self.encoder.as_ref().map(|e| e.id().to_string()),
            note: self.semantic_note.clone(),
            profiles: self.profiles().names(),
            query_cache: self.encoder.as_ref().map(|e| e.query_cache()),
            models,
        }
    }

    /// Stores and logs shopper ids as HMAC pseudonyms under `secret` (the setting
    /// `user_id_secret`) instead of the data directory's own key. Call before
    /// [`Engine::attach_events`].
    pub fn set_user_id_secret(&mut self, secret: &str) {
        self.pseudonyms = crate::behavior::Pseudonyms::new(secret);
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A product by id.
    pub fn product(&self, id: &str) -> Result<Product> {
        let g = self.generation();
        g.get(id)
            .map(|p| (**p).clone())
            .ok_or_else(|| Error::ProductNotFound(id.chars().take(256).collect()))
    }

    /// Records a search stage that ran from `since` until now; its milliseconds.
    fn stage(&self, name: &str, since: Instant) -> f64 {
        self.stage_between(name, since, Instant::now())
    }

    /// Records a search stage that ran from `from` to `to`; its milliseconds.
    fn stage_between(&self, name: &str, from: Instant, to: Instant) -> f64 {
        let d = to.saturating_duration_since(from);
        self.metrics.observe_stage(name, d);
        d.as_secs_f64() * 1000.0
    }
}

/// Sum of the modification times and sizes of the profile files (changes on any edit).
fn read_only() -> Error {
    Error::ReadOnly("this process opened the index for searching only".into())
}

/// How far ahead of this clock a write's `updated_at` may be.
const MAX_CLOCK_SKEW_SECS: i64 = 86_400;

/// Most products in one write request.
pub const MAX_WRITE_BATCH: usize = 10_000;

/// Why a product write cannot be stored, if it cannot (upserts were validated by the
/// catalog validator already).
fn check_write(w: &ProductWrite) -> std::result::Result<(), String> {
    let (id, updated_at) = match w {
        ProductWrite::Upsert(p) => (&p.id, Some(p.updated_at)),
        ProductWrite::Patch(id, patch) => {
            if patch.price.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err("field `price`: must be a number >= 0".into());
            }
            (id, patch.updated_at)
        }
        ProductWrite::Delete(id, at) => (id, *at),
    };
    // A time far ahead would make the product unchangeable (every later write stale).
    let latest = crate::util::now() + MAX_CLOCK_SKEW_SECS;
    if updated_at.is_some_and(|t| t > latest) {
        return Err(format!(
            "field `updated_at`: {} is more than a day in the future (Unix seconds expected)",
            updated_at.unwrap_or_default()
        ));
    }
    if id.trim().is_empty() || id.len() > 256 {
        return Err("field `id`: must be 1 to 256 bytes".into());
    }
    Ok(())
}

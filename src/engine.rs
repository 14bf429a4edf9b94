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

use crate::analysis::Analysis;
use crate::behavior::profile::PersonalContext;
use crate::behavior::{self, Event, EventStore, EventType, Personalization, UserProfile};
use crate::catalog::Product;
use crate::encoder::{device, Encoder, EncoderConfig};
use crate::error::{Error, Result};
use crate::experiments::{self, Experiments};
use crate::index::{self, Generation, LiveWriter, Outcome, ProductWrite};
use crate::intent::{IntentModel, Intents, PriceIntent, QueryAnalysis, Synonyms};
use crate::jobs::{JobStatus, Jobs, ReindexSpec};
use crate::metrics::Metrics;
use crate::rank::{self, profile, Explain, Profile, Profiles};
use crate::retrieve::QueryWords;
use crate::retrieve::{self, Facets, Filters};
use crate::settings::Settings;
use crate::suggest::{Suggester, Suggestion};

mod tuning;
mod writes;

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Largest page size.
pub const MAX_PAGE_SIZE: usize = 100;

/// A search as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// What the shopper typed.
    pub query: String,
    /// Filters.
    pub filters: Filters,
    /// 1-based page.
    pub page: usize,
    /// Hits per page.
    pub size: usize,
    /// Ranking profile name (`default` when `None`).
    pub profile: Option<String>,
    /// Include the per-hit breakdown.
    pub explain: bool,
    /// The shopper, for personalized ranking.
    pub user: Option<String>,
    /// Weights replacing the profile's for this request only (`w.semantic=0.6`).
    pub overrides: std::collections::BTreeMap<String, f32>,
}

impl SearchRequest {
    /// A first-page request with default settings.
    pub fn new(query: impl Into<String>) -> Self {
        SearchRequest {
            query: query.into(),
            filters: Filters::default(),
            page: 1,
            size: 10,
            profile: None,
            explain: false,
            user: None,
            overrides: Default::default(),
        }
    }
}

/// One result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Product id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Brand.
    pub brand: String,
    /// Category path.
    pub category: String,
    /// Price.
    pub price: Option<f64>,
    /// Ranking score.
    pub score: f32,
    /// Breakdown, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

/// Milliseconds per stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Normalization and tokenization.
    pub analyze: f64,
    /// Query encoding.
    pub encode: f64,
    /// BM25 and vector retrieval.
    pub retrieve: f64,
    /// Feature scoring and sorting.
    pub rank: f64,
    /// Everything.
    pub total: f64,
}

/// A search answer.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    /// The query as given.
    pub query: String,
    /// The query after normalization and tokenization.
    pub tokens: Vec<String>,
    /// Words added by synonyms (searched at a lower weight).
    pub synonyms: Vec<String>,
    /// Number of ranked results (the candidate set after filters).
    pub total: usize,
    /// Page number.
    pub page: usize,
    /// Page size.
    pub size: usize,
    /// Profile used.
    pub profile: String,
    /// Whether semantic similarity took part.
    pub semantic: bool,
    /// Whether the user's profile took part.
    pub personalized: bool,
    /// What the query was understood to ask for.
    pub intents: Intents,
    /// The filters applied (the request's, plus a price bound from the query).
    pub filters: AppliedFilters,
    /// The page of hits.
    pub hits: Vec<Hit>,
    /// Brand and category counts over all ranked results.
    pub facets: Facets,
    /// Stage timings.
    pub timings_ms: Timings,
    /// The A/B experiment this search took part in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentTag>,
}

/// Which experiment arm served a search, and the id its outcomes are attributed to.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentTag {
    /// Experiment id.
    pub id: String,
    /// Arm (`interleaved` when interleaving).
    pub arm: String,
    /// Logged search id.
    pub search_id: String,
}

/// Filters as applied to a search.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppliedFilters {
    /// Brand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Category prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Lowest price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_min: Option<f64>,
    /// Highest price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_max: Option<f64>,
    /// In stock only.
    pub in_stock: bool,
}

impl From<&Filters> for AppliedFilters {
    fn from(f: &Filters) -> Self {
        AppliedFilters {
            brand: f.brand.clone(),
            category: f.category.clone(),
            price_min: f.price_min,
            price_max: f.price_max,
            in_stock: f.in_stock,
        }
    }
}

/// Health facts.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Always `ok` when the engine answers.
    pub status: &'static str,
    /// Live generation name.
    pub generation: String,
    /// Live products in it.
    pub products: usize,
    /// Whether this process takes product writes.
    pub writable: bool,
    /// Whether semantic ranking is on.
    pub semantic: bool,
    /// Encoder model id, when loaded.
    pub model: Option<String>,
    /// Why semantic ranking is off, when it is.
    pub note: Option<String>,
    /// Known profiles.
    pub profiles: Vec<String>,
    /// Query-vector cache counters, when semantic ranking is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_cache: Option<crate::encoder::CacheStats>,
}

/// The search engine over one data directory.
pub struct Engine {
    data_dir: PathBuf,
    text: RwLock<TextResources>,
    sources: Option<TextSources>,
    suggester: Suggester,
    behavior: Option<Behavior>,
    generation: RwLock<Arc<Generation>>,
    encoder: Option<Arc<Encoder>>,
    semantic_note: Option<String>,
    profiles: RwLock<Arc<Profiles>>,
    /// Running A/B experiments.
    experiments: Experiments,
    /// Judged queries and qrels for [`Engine::eval_profile`].
    eval_set: Option<(PathBuf, PathBuf)>,
    /// Serializes profile edits (save + reload).
    profile_edit: Mutex<()>,
    /// Modification stamp of the profile folder at the last load.
    profiles_stamp: Mutex<u128>,
    /// The writer of the live generation, when this process takes writes.
    live: Mutex<Option<Writes>>,
    jobs: Jobs,
    /// Process metrics.
    pub metrics: Metrics,
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

/// Loads the encoder named by the settings; `Err(reason)` says why there is none.
pub fn load_encoder(settings: &Settings) -> std::result::Result<Encoder, String> {
    let mut config = EncoderConfig::from_manifest(&settings.manifest).map_err(|e| e.to_string())?;
    if let Some(dir) = &settings.model_dir {
        config.dir = dir.clone();
    }
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
        let generation = index::open(data_dir, encoder.as_ref())?;
        let profiles = Profiles::load(&data_dir.join("profiles"))?;
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
        Ok(Engine {
            suggester,
            text: RwLock::new(TextResources::default()),
            sources: None,
            data_dir: data_dir.to_path_buf(),
            behavior: None,
            generation: RwLock::new(Arc::new(generation)),
            encoder,
            semantic_note,
            profiles: RwLock::new(Arc::new(profiles)),
            profile_edit: Mutex::new(()),
            eval_set: None,
            experiments,
            profiles_stamp: Mutex::new(profiles_stamp(&data_dir.join("profiles"))),
            live: Mutex::new(None),
            jobs: Jobs::default(),
            metrics: Metrics::default(),
        })
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
        Health {
            status: "ok",
            generation: g.meta.name.clone(),
            products: g.live_count(),
            writable: self.live.lock().map(|l| l.is_some()).unwrap_or(false),
            semantic: self.encoder.is_some(),
            model: self.encoder.as_ref().map(|e| e.id().to_string()),
            note: self.semantic_note.clone(),
            profiles: self.profiles().names(),
            query_cache: self.encoder.as_ref().map(|e| e.query_cache()),
        }
    }

    /// Query understanding: normalized text, tokens and intents, as `/analyze` shows them.
    pub fn analyze(&self, query: &str) -> Result<QueryAnalysis> {
        let req = SearchRequest::new(query);
        let query = validate(&req)?;
        let gen = self.generation();
        let (intents, search_text) = self.first_pass(&gen, query);
        let vector = match &self.encoder {
            Some(e) => Some(e.encode_query(&search_text)?),
            None => None,
        };
        let (words, intents) = self.understand(&gen, intents, &search_text, vector.as_deref());
        Ok(QueryAnalysis {
            normalized: crate::analysis::normalize(query),
            tokens: words.words,
            synonyms: words.synonyms,
            search_text,
            intents,
        })
    }

    /// Intents before the query is encoded, and the text that is searched: the query
    /// without its price expression (unless nothing else is left).
    fn first_pass(&self, gen: &Generation, query: &str) -> (Intents, String) {
        let (intents, cut) = self.intent_model(gen).analyze(query, None);
        (
            intents,
            if cut.is_empty() {
                query.to_string()
            } else {
                cut
            },
        )
    }

    /// BM25 words (with synonym expansions) and intents, categories blended with what
    /// shoppers clicked after this query.
    fn understand(
        &self,
        gen: &Generation,
        mut intents: Intents,
        search_text: &str,
        vector: Option<&[f32]>,
    ) -> (QueryWords, Intents) {
        let text = self.text.read().unwrap_or_else(|e| e.into_inner());
        let analysis = text.analysis.as_ref().unwrap_or(&gen.analysis);
        let words = analysis.query_words(search_text);
        let mut synonyms = Vec::new();
        for phrase in text
            .synonyms
            .expand(&crate::analysis::normalize(search_text))
        {
            for w in analysis.query_words(&phrase) {
                if !words.contains(&w) && !synonyms.contains(&w) {
                    synonyms.push(w);
                }
            }
        }
        // Without a category name in the query, the query vector finds the nearest centroids.
        if intents.category.is_empty() && vector.is_some() {
            let model = text.intents.as_deref().unwrap_or(&gen.intents);
            intents.category = model.categories(&crate::analysis::normalize(search_text), vector);
        }
        if let Some(b) = &self.behavior {
            let clicks = b.click_categories(&crate::analysis::normalize(search_text));
            intents.category =
                crate::intent::blend_categories(std::mem::take(&mut intents.category), &clicks);
        }
        (QueryWords { words, synonyms }, intents)
    }

    fn intent_model<'a>(&self, gen: &'a Generation) -> IntentRef<'a> {
        let text = self.text.read().unwrap_or_else(|e| e.into_inner());
        match &text.intents {
            Some(m) => IntentRef::Reloaded(m.clone()),
            None => IntentRef::Generation(&gen.intents),
        }
    }

    /// Where the dictionary, synonyms and aliases come from, for [`Engine::reload_text`];
    /// loads the synonyms now.
    pub fn set_text_sources(&mut self, sources: TextSources) -> Result<()> {
        let synonyms = match &sources.synonyms {
            Some(p) if p.is_file() => Synonyms::load(p)?,
            _ => Synonyms::default(),
        };
        self.text
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .synonyms = synonyms;
        self.sources = Some(sources);
        Ok(())
    }

    /// Re-reads the synonyms, the user dictionary (query side) and the brand aliases without
    /// a restart. All or nothing: on any error the old ones stay live.
    pub fn reload_text(&self) -> Result<serde_json::Value> {
        let sources = self
            .sources
            .as_ref()
            .ok_or_else(|| Error::Config("no text sources configured for this engine".into()))?;
        let gen = self.generation();
        let synonyms = match &sources.synonyms {
            Some(p) if p.is_file() => Synonyms::load(p)?,
            _ => Synonyms::default(),
        };
        let brands: Vec<&str> = gen
            .products
            .iter()
            .map(|p| p.brand.as_str())
            .filter(|b| !b.is_empty())
            .collect();
        let user_dict = sources.user_dict.as_deref().filter(|p| p.is_file());
        let analysis = Analysis::load(user_dict, brands.iter().copied())?;
        let aliases = sources.brand_aliases.as_deref().filter(|p| p.is_file());
        let intents = IntentModel::new(&gen.products, gen.vectors.as_ref(), aliases)?;
        let count = synonyms.len();
        *self.text.write().unwrap_or_else(|e| e.into_inner()) = TextResources {
            synonyms,
            analysis: Some(analysis),
            intents: Some(Arc::new(intents)),
        };
        tracing::info!(
            synonyms = count,
            "reloaded synonyms, user dictionary and brand aliases"
        );
        Ok(
            serde_json::json!({"synonym_phrases": count, "user_dict": user_dict, "brand_aliases": aliases}),
        )
    }

    /// Completions of a typed prefix (characters, pinyin or initials).
    pub fn suggest(&self, prefix: &str, size: usize) -> Result<Vec<Suggestion>> {
        if prefix.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::InvalidQuery(format!(
                "the prefix is longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        if size == 0 || size > 50 {
            return Err(Error::param(
                "size",
                format!("must be within 1..=50, got {size}"),
            ));
        }
        Ok(self.suggester.suggest(prefix, size))
    }

    /// A product by id.
    pub fn product(&self, id: &str) -> Result<Product> {
        let g = self.generation();
        g.get(id)
            .map(|p| (**p).clone())
            .ok_or_else(|| Error::ProductNotFound(id.chars().take(256).collect()))
    }

    /// Runs one search.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse> {
        let started = Instant::now();
        let query = validate(req)?;
        let profile_name = req.profile.clone().unwrap_or_else(|| "default".into());
        let mut profile: Arc<Profile> = self.profiles().get(&profile_name)?;
        if !req.overrides.is_empty() {
            profile = Arc::new(Profile::with_overrides(&profile, &req.overrides)?);
        }
        let gen = self.generation();
        let mut timings = Timings::default();

        let t = Instant::now();
        let (intents, search_text) = self.first_pass(&gen, query);
        timings.analyze = self.stage("analyze", t);

        let t = Instant::now();
        let semantic_wanted = profile.weight("semantic") != 0.0 || profile.candidates.vector > 0;
        let query_vector = match &self.encoder {
            Some(e) if semantic_wanted => Some(e.encode_query(&search_text)?),
            _ => None,
        };
        timings.encode = self.stage("encode", t);

        let t = Instant::now();
        let (words, intents) =
            self.understand(&gen, intents, &search_text, query_vector.as_deref());
        let mut filters = req.filters.clone();
        // An explicit price bound in the query filters, unless the request sets prices itself.
        if let (Some(PriceIntent::Range { min, max }), None, None) =
            (intents.price, filters.price_min, filters.price_max)
        {
            filters.price_min = min;
            filters.price_max = max;
        }
        let candidates = retrieve::candidates(
            &gen,
            &words,
            query_vector.as_deref(),
            &filters,
            &profile.boosts,
            profile.candidates.bm25,
            profile.candidates.vector,
        )?;
        timings.retrieve = self.stage("retrieve", t);

        let t = Instant::now();
        let personal = match (&req.user, &self.behavior) {
            (Some(user), Some(b)) => b.context(user),
            _ => None,
        };
        let ranked = rank::rank(&gen, &candidates, &profile, personal.as_ref(), &intents);
        let ranked = rank::diversify(
            ranked,
            |ord| crate::analysis::normalize(&gen.products[ord as usize].brand),
            profile.diversity.max_per_brand,
        );
        let facets = retrieve::facets(&gen.products, ranked.iter().map(|s| s.ord), 20);
        let page: Vec<&rank::Scored> = ranked
            .iter()
            .skip((req.page - 1) * req.size)
            .take(req.size)
            .collect();
        let mut bm25_terms = match req.explain {
            true => {
                let ords: Vec<u32> = page.iter().map(|s| s.ord).collect();
                retrieve::explain_bm25(&gen, &words, &profile.boosts, &ords)?
            }
            false => Vec::new(),
        }
        .into_iter();
        let hits = page
            .into_iter()
            .map(|s| {
                let p = &gen.products[s.ord as usize];
                Hit {
                    id: p.id.clone(),
                    title: p.title.clone(),
                    brand: p.brand.clone(),
                    category: p.category.clone(),
                    price: p.price,
                    score: s.score,
                    explain: req.explain.then(|| rank::Explain {
                        bm25_terms: bm25_terms.next().flatten(),
                        ..s.explain.clone()
                    }),
                }
            })
            .collect();
        timings.rank = self.stage("rank", t);
        timings.total = self.stage("total", started);

        Ok(SearchResponse {
            query: req.query.clone(),
            tokens: words.words,
            synonyms: words.synonyms,
            total: ranked.len(),
            page: req.page,
            size: req.size,
            profile: profile_name,
            semantic: query_vector.is_some(),
            personalized: personal.is_some(),
            intents,
            filters: AppliedFilters::from(&filters),
            hits,
            facets,
            timings_ms: timings,
            experiment: None,
        })
    }

    /// Opens behavior tracking on `store`: drops events older than the retention and
    /// rebuilds every user profile from the rest. Returns the number of events replayed.
    pub fn attach_events(
        &mut self,
        store: Box<dyn EventStore>,
        retention_days: u64,
    ) -> Result<usize> {
        let config = self.profiles().get("default")?.personalization.clone();
        let retention_secs = (retention_days > 0).then_some(retention_days as i64 * 86_400);
        if let Some(r) = retention_secs {
            let dropped = store.expire(behavior::now() - r)?;
            if dropped > 0 {
                tracing::info!(
                    dropped,
                    retention_days,
                    "dropped events past the retention window"
                );
            }
        }
        let mut events = Vec::new();
        store.scan(&mut |e| events.push(e))?;
        let behavior = Behavior {
            store,
            users: RwLock::new(HashMap::new()),
            writer: Mutex::new(()),
            query_clicks: RwLock::new(HashMap::new()),
            last_search: Mutex::new(HashMap::new()),
            config,
            retention_secs,
        };
        let vectors = self.event_vectors(&events);
        behavior.apply(&self.generation(), &events, &vectors);
        let users = behavior.users.read().map_or(0, |u| u.len());
        tracing::info!(events = events.len(), users, "user profiles rebuilt");
        self.behavior = Some(behavior);
        Ok(events.len())
    }

    /// Stores events durably, then updates their users' profiles. Returns (stored, dropped
    /// as older than the retention window).
    pub fn record_events(&self, events: Vec<Event>) -> Result<(usize, usize)> {
        let b = self.behavior.as_ref().ok_or(Error::NoEventStore)?;
        let now = behavior::now();
        for (i, e) in events.iter().enumerate() {
            e.validate(now).map_err(|reason| Error::InvalidEvent {
                index: Some(i),
                reason,
            })?;
        }
        let total = events.len();
        let events: Vec<Event> = match b.retention_secs {
            Some(r) => events
                .into_iter()
                .filter(|e| e.ts >= behavior::now() - r)
                .collect(),
            None => events,
        };
        let vectors = self.event_vectors(&events);
        let _writer = b.writer.lock().unwrap_or_else(|e| e.into_inner());
        b.store.append(&events)?;
        for e in events.iter().filter(|e| e.kind == EventType::Search) {
            self.suggester.record(e.query.as_deref().unwrap_or(""));
        }
        b.apply(&self.generation(), &events, &vectors);
        if let Err(e) = self.experiments.observe(&events) {
            tracing::error!(error = %e, "could not log experiment outcomes");
        }
        Ok((events.len(), total - events.len()))
    }

    /// What is held about a user.
    pub fn user_profile(&self, user: &str) -> Result<serde_json::Value> {
        let b = self.behavior.as_ref().ok_or(Error::NoEventStore)?;
        let users = b.users.read().unwrap_or_else(|e| e.into_inner());
        users
            .get(user)
            .map(UserProfile::summary)
            .ok_or_else(|| Error::UserNotFound(user.chars().take(128).collect()))
    }

    /// Erases everything about a user, durably. Returns the number of events removed.
    pub fn delete_user(&self, user: &str) -> Result<usize> {
        let b = self.behavior.as_ref().ok_or(Error::NoEventStore)?;
        let _writer = b.writer.lock().unwrap_or_else(|e| e.into_inner());
        let removed = b.store.delete_user(user)?;
        b.users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
        Ok(removed)
    }

    /// Query vectors of search events (computed before taking any lock: encoding is slow).
    fn event_vectors(&self, events: &[Event]) -> Vec<Option<Vec<f32>>> {
        events
            .iter()
            .map(|e| match (&self.encoder, e.kind, &e.query) {
                (Some(enc), EventType::Search, Some(q)) => enc.encode_query(q).ok(),
                _ => None,
            })
            .collect()
    }

    fn stage(&self, name: &str, since: Instant) -> f64 {
        let d = since.elapsed();
        self.metrics.observe_stage(name, d);
        d.as_secs_f64() * 1000.0
    }
}

/// Sum of the modification times and sizes of the profile files (changes on any edit).
fn profiles_stamp(dir: &Path) -> u128 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("toml"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            t.wrapping_mul(31).wrapping_add(m.len() as u128)
        })
        .fold(0u128, |a, x| a.wrapping_add(x))
}

fn read_only() -> Error {
    Error::ReadOnly("this process opened the index for searching only".into())
}

/// Most products in one write request.
pub const MAX_WRITE_BATCH: usize = 10_000;

/// Why a product write cannot be stored, if it cannot (upserts were validated by the
/// catalog validator already).
fn check_write(w: &ProductWrite) -> std::result::Result<(), String> {
    let id = match w {
        ProductWrite::Upsert(p) => &p.id,
        ProductWrite::Patch(id, patch) => {
            if patch.price.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err("field `price`: must be a number >= 0".into());
            }
            id
        }
        ProductWrite::Delete(id, _) => id,
    };
    if id.trim().is_empty() || id.len() > 256 {
        return Err("field `id`: must be 1 to 256 bytes".into());
    }
    Ok(())
}

/// The trimmed query, or why it cannot be searched.
fn validate(req: &SearchRequest) -> Result<&str> {
    let q = req.query.trim();
    if q.is_empty() {
        return Err(Error::InvalidQuery(
            "the query is empty: type what you are looking for".into(),
        ));
    }
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(Error::InvalidQuery(format!(
            "the query is {chars} characters long, at most {MAX_QUERY_CHARS} are allowed"
        )));
    }
    if req.size == 0 || req.size > MAX_PAGE_SIZE {
        return Err(Error::param(
            "size",
            format!("must be within 1..={MAX_PAGE_SIZE}, got {}", req.size),
        ));
    }
    if req.page == 0 || req.page > 1000 {
        return Err(Error::param(
            "page",
            format!("must be within 1..=1000, got {}", req.page),
        ));
    }
    req.filters.validate()?;
    Ok(q)
}

/// Behavior tracking: the durable store and the in-memory profiles built from it.
struct Behavior {
    store: Box<dyn EventStore>,
    users: RwLock<HashMap<String, UserProfile>>,
    /// Serializes store appends with profile updates, so profiles follow store order.
    writer: Mutex<()>,
    config: Personalization,
    retention_secs: Option<i64>,
    /// Normalized query -> category -> weight of products clicked (or carted, ...) within
    /// 30 minutes after a search for it by the same user.
    query_clicks: RwLock<HashMap<String, HashMap<String, f32>>>,
    /// User -> their last search (normalized query, time).
    last_search: Mutex<HashMap<String, (String, i64)>>,
}

impl Behavior {
    /// Applies stored events to the profiles; `query_vectors[i]` belongs to `events[i]`.
    fn apply(&self, gen: &Generation, events: &[Event], query_vectors: &[Option<Vec<f32>>]) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let mut last_search = self.last_search.lock().unwrap_or_else(|e| e.into_inner());
        let mut clicks = self.query_clicks.write().unwrap_or_else(|e| e.into_inner());
        for (e, qv) in events.iter().zip(query_vectors) {
            let ord = e
                .product_id
                .as_ref()
                .and_then(|id| gen.by_id.get(id))
                .map(|&o| o as usize);
            let product = ord.map(|o| &gen.products[o]);
            // A search's own query vector, else the product's stored one.
            let stored = match qv {
                Some(_) => None,
                None => ord.and_then(|o| Some(gen.vectors.as_ref()?.row(o))),
            };
            let vector = qv.as_deref().or(stored.as_deref());
            users
                .entry(e.user_id.clone())
                .or_insert_with(|| UserProfile::new(&e.user_id, &self.config))
                .apply(e, &self.config, vector, product.map(|p| &**p));
            // What was clicked after a search tells what the query's category is.
            match (e.kind, product) {
                (EventType::Search, _) => {
                    let q = crate::analysis::normalize(e.query.as_deref().unwrap_or(""));
                    last_search.insert(e.user_id.clone(), (q, e.ts));
                }
                (EventType::View, _) | (_, None) => {}
                (kind, Some(p)) if !p.category.is_empty() => {
                    if let Some((q, ts)) = last_search.get(&e.user_id) {
                        if (0..=1800).contains(&(e.ts - ts)) {
                            let w = self
                                .config
                                .type_weights
                                .get(kind.name())
                                .copied()
                                .unwrap_or(1.0);
                            *clicks
                                .entry(q.clone())
                                .or_default()
                                .entry(p.category.clone())
                                .or_default() += w;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Categories clicked after searching `query` (normalized), with their weights.
    fn click_categories(&self, query: &str) -> Vec<(String, f32)> {
        let clicks = self.query_clicks.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, f32)> = clicks
            .get(query)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    fn context(&self, user: &str) -> Option<PersonalContext> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.get(user)?.context(behavior::now(), &self.config)
    }
}

/// Where `shoprank suggest --load` keeps the query log.
pub fn suggest_log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("suggest").join("queries.txt")
}

/// The suggestion index: the loaded query log, plus the catalog's brands and category
/// names (each weighted by its product count).
fn load_suggester(data_dir: &Path, gen: &Generation) -> Result<Suggester> {
    let log = suggest_log_path(data_dir);
    let mut texts = if log.is_file() {
        Suggester::read_log(&log)?
    } else {
        Vec::new()
    };
    for p in &gen.products {
        if !p.brand.is_empty() {
            texts.extend(p.brand.split('/').map(|b| (b.to_string(), 1.0)));
        }
        if let Some(leaf) = p.category.rsplit('/').next().filter(|l| !l.is_empty()) {
            texts.push((leaf.to_string(), 1.0));
        }
    }
    Ok(Suggester::new(texts))
}

/// Files behind the query-time text resources.
#[derive(Debug, Clone, Default)]
pub struct TextSources {
    /// jieba user dictionary.
    pub user_dict: Option<PathBuf>,
    /// Synonym file.
    pub synonyms: Option<PathBuf>,
    /// Brand alias file.
    pub brand_aliases: Option<PathBuf>,
}

/// Query-time resources; `None` parts fall back to the generation's own.
#[derive(Default)]
struct TextResources {
    synonyms: Synonyms,
    analysis: Option<Analysis>,
    intents: Option<Arc<IntentModel>>,
}

/// The intent model in use: the generation's, or one reloaded since.
enum IntentRef<'a> {
    Generation(&'a IntentModel),
    Reloaded(Arc<IntentModel>),
}

impl std::ops::Deref for IntentRef<'_> {
    type Target = IntentModel;

    fn deref(&self) -> &IntentModel {
        match self {
            IntentRef::Generation(m) => m,
            IntentRef::Reloaded(m) => m,
        }
    }
}

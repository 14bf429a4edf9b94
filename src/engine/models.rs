//! Challenger models: a profile naming another embedding model than the serving one
//! (`model = "ID"`) -> that model's encoder and the live rows seen through it (its own
//! product vectors and category centroids), so an experiment arm can A/B-test a model
//! inside one process.
//!
//! A challenger is loaded when a profile naming it is loaded or saved. Its vectors come
//! from the embedding cache keyed by its id (`shoprank train`'s gate filled it for a
//! trained model); what the cache lacks is encoded and cached. It follows every snapshot
//! the engine serves ([`Engine::swap`]: a commit of product writes, a rebuild, a
//! generation published by another process or replica, a rollback): within one
//! generation only rows whose product text changed get a new vector, another generation's
//! rows are all looked up again. It is dropped when no profile names it anymore.
//!
//! A search with such a profile reads the challenger's view in place of the live
//! generation and encodes its query with the challenger's encoder, so nothing of one
//! model meets the other's vectors. The one exception is left out instead: the shopper's
//! user vector is a mean of the serving model's vectors, so the `personal` feature is
//! off under a challenger (brand, category and price affinities stay).

use std::collections::BTreeMap;

use super::*;
use crate::encoder::{DeviceKind, Precision, FOLDER_MANIFEST};
use crate::index::EmbeddingCache;
use crate::vectors::Vectors;

/// Where a profile's `model` is found and how it is loaded.
#[derive(Debug, Clone, Default)]
pub struct ModelSource {
    /// The model manifest: a profile may name its models too (`multilingual-e5-small`).
    pub manifest: Option<PathBuf>,
    /// Device of the challengers' encoders.
    pub device: DeviceKind,
    /// Precision overriding the model's own (as `--precision` does for the serving one).
    pub precision: Option<Precision>,
}

impl ModelSource {
    /// The manifest, device and precision of `settings`, as the serving model uses them.
    pub fn from_settings(settings: &Settings) -> ModelSource {
        ModelSource {
            manifest: Some(settings.manifest.clone()),
            device: settings.device,
            precision: settings.precision,
        }
    }

    /// The settings of model `name`: the folder `data_dir/models/NAME` with an
    /// `encoder.toml` (a `shoprank train` model), else the manifest's model `NAME`.
    pub fn config(
        &self,
        data_dir: &Path,
        name: &str,
    ) -> std::result::Result<EncoderConfig, String> {
        // The name is a single folder name; checked again here, before any path is made.
        profile::check_model_name(name)?;
        let root = data_dir.join("models");
        let dir = root.join(name);
        // Symlinks followed, the folder must be inside DATA_DIR/models (as catalogs must
        // be inside the import folder).
        if let (Ok(real), Ok(root)) = (dir.canonicalize(), root.canonicalize()) {
            if !real.starts_with(&root) {
                return Err(format!(
                    "DATA_DIR/models/{name} points outside DATA_DIR/models"
                ));
            }
        }
        let mut config = match (EncoderConfig::from_model_dir(&dir), &self.manifest) {
            (Some(own), _) => own.map_err(|e| e.to_string())?,
            (None, Some(manifest)) if manifest.is_file() => {
                EncoderConfig::from_manifest(manifest, Some(name)).map_err(|e| {
                    format!("DATA_DIR/models/{name} has no {FOLDER_MANIFEST}, and the manifest: {e}")
                })?
            }
            (None, _) => {
                return Err(format!(
                    "no model `{name}`: DATA_DIR/models/{name} has no {FOLDER_MANIFEST} (a `shoprank train` folder) and no manifest is loaded"
                ))
            }
        };
        if let Some(precision) = self.precision {
            config.precision = precision;
        }
        Ok(config)
    }
}

/// Another model than the serving one, with the live rows seen through it.
pub(super) struct Challenger {
    pub(super) encoder: Arc<Encoder>,
    cache: Mutex<EmbeddingCache>,
    /// The live rows with this model's vectors; `None` after a failed update (searches
    /// with it then run without the semantic stage, and `/health` says why).
    view: RwLock<Option<Arc<Generation>>>,
    problem: Mutex<Option<String>>,
}

/// What a loaded model serves, for `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// Model id (the embedding cache and the vectors are keyed by it).
    pub id: String,
    /// The serving model (the live generation's vectors), or a challenger.
    pub serving: bool,
    /// Profiles that search with it.
    pub profiles: Vec<String>,
    /// Product vectors it holds (rows of the live generation, deleted ones included).
    pub vectors: usize,
    /// Why its searches run without semantic ranking, when they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The model a search reads: its encoder and the live rows with its vectors.
pub(super) struct ModelView {
    pub(super) gen: Arc<Generation>,
    pub(super) encoder: Option<Arc<Encoder>>,
    /// Not the serving model: the user vector (the serving model's) is left out.
    pub(super) challenger: bool,
}

impl Challenger {
    fn load(
        config: EncoderConfig,
        device: DeviceKind,
        data_dir: &Path,
        gen: &Generation,
    ) -> Result<Challenger> {
        let device = device::select(device)?;
        let encoder = Encoder::load(config, device)?;
        let cache = EmbeddingCache::open(data_dir, encoder.id(), encoder.dim())?;
        let c = Challenger {
            encoder: Arc::new(encoder),
            cache: Mutex::new(cache),
            view: RwLock::new(None),
            problem: Mutex::new(None),
        };
        let view = c.follow(gen, None)?;
        *c.view.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(view));
        Ok(c)
    }

    pub(super) fn view(&self) -> Option<Arc<Generation>> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `gen` with this model's vectors: from `previous` (this model's view of an earlier
    /// snapshot of the same generation) for rows whose text is unchanged, else from the
    /// embedding cache or the encoder.
    fn follow(&self, gen: &Generation, previous: Option<&Generation>) -> Result<Generation> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let encoder = &*self.encoder;
        let same = previous.filter(|p| p.meta.name == gen.meta.name);
        if let Some((p, old)) = same.and_then(|p| Some((p, p.vectors.as_ref()?))) {
            // Rows only grow within a generation (a delete leaves a tombstone row).
            let changed: Vec<usize> = (0..gen.products.len())
                .filter(|&i| {
                    i >= old.len()
                        || (!Arc::ptr_eq(&p.products[i], &gen.products[i])
                            && p.products[i].embedding_text() != gen.products[i].embedding_text())
                })
                .collect();
            let mut vectors = old.clone();
            if !changed.is_empty() {
                let texts: Vec<String> = (changed.iter())
                    .map(|&i| gen.products[i].embedding_text())
                    .collect();
                let (rows, _) = cache.encode(encoder, &texts, |_| {}, || false)?;
                for (i, row) in changed.into_iter().zip(rows) {
                    match i < vectors.len() {
                        true => vectors.set(i, &row)?,
                        false => vectors.push(&row)?,
                    }
                }
            }
            // Centroids are the generation's, as the serving model's are (built at open).
            let intents = gen.intents.with_centroids_of(&p.intents);
            return Ok(gen.with_model(encoder.id(), vectors, intents));
        }
        let texts: Vec<String> = gen.products.iter().map(|p| p.embedding_text()).collect();
        let started = Instant::now();
        let (rows, cached) = cache.encode(encoder, &texts, |_| {}, || false)?;
        let vectors = Vectors::from_rows(encoder.dim(), rows)?;
        let intents = gen.intents.with_vectors(&gen.products, &vectors);
        tracing::info!(
            model = encoder.id(),
            generation = %gen.meta.name,
            rows = texts.len(),
            cached,
            secs = started.elapsed().as_secs_f64(),
            "challenger model vectors ready"
        );
        Ok(gen.with_model(encoder.id(), vectors, intents))
    }

    /// Follows a new snapshot; on failure its searches lose the semantic stage until the
    /// next snapshot succeeds.
    fn update(&self, gen: &Generation) {
        let previous = self.view();
        let (view, problem) = match self.follow(gen, previous.as_deref()) {
            Ok(v) => (Some(Arc::new(v)), None),
            Err(e) => {
                tracing::error!(model = self.encoder.id(), error = %e, "a challenger model could not follow the live generation; its searches run without semantic ranking");
                (
                    None,
                    Some(format!(
                        "could not follow generation {}: {e}",
                        gen.meta.name
                    )),
                )
            }
        };
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }
}

impl Engine {
    /// Whether `name` is the serving model (its id, or its id without `+int8`).
    fn is_serving(&self, name: &str) -> bool {
        (self.encoder.as_ref()).is_some_and(|e| e.id() == name || e.config().id == name)
    }

    /// Loads the challenger of every model `profiles` name that is neither the serving
    /// one nor loaded yet. A model that cannot be loaded makes its profile invalid.
    pub(super) fn load_models<'a>(
        &self,
        profiles: impl IntoIterator<Item = (&'a str, &'a Profile)>,
    ) -> Result<()> {
        for (name, profile) in profiles {
            let Some(model) = profile.model.as_deref() else {
                continue;
            };
            if self.is_serving(model) || self.challenger(model).is_some() {
                continue;
            }
            // The answer names the data directory, not where it is on the server.
            let data_dir = self.data_dir.to_string_lossy();
            let invalid = |reason: String| Error::InvalidProfile {
                path: Path::new("profiles").join(format!("{name}.toml")),
                reason: format!(
                    "model `{model}`: {}",
                    reason.replace(&*data_dir, "DATA_DIR")
                ),
            };
            let config = self
                .model_source
                .config(&self.data_dir, model)
                .map_err(invalid)?;
            // No snapshot is served meanwhile, so the new challenger misses none.
            let _live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let started = Instant::now();
            let c = Challenger::load(
                config,
                self.model_source.device,
                &self.data_dir,
                &self.generation(),
            )
            .map_err(|e| invalid(e.to_string()))?;
            tracing::info!(
                model,
                profile = name,
                secs = started.elapsed().as_secs_f64(),
                "loaded a challenger model"
            );
            self.challengers
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(model.to_string(), Arc::new(c));
        }
        Ok(())
    }

    /// Drops the challengers no profile of `profiles` names anymore.
    pub(super) fn drop_unused_models(&self, profiles: &Profiles) {
        let named: Vec<&str> = profiles
            .iter()
            .filter_map(|(_, p)| p.model.as_deref())
            .collect();
        self.challengers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| {
                let keep = named.contains(&id.as_str());
                if !keep {
                    tracing::info!(model = %id, "no profile names this challenger model anymore: dropped");
                }
                keep
            });
    }

    fn challenger(&self, model: &str) -> Option<Arc<Challenger>> {
        let challengers = self.challengers.read().unwrap_or_else(|e| e.into_inner());
        challengers.get(model).cloned()
    }

    /// Every challenger follows the snapshot now served.
    pub(super) fn follow_models(&self, snapshot: &Generation) {
        let challengers: Vec<Arc<Challenger>> = (self.challengers.read())
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for c in challengers {
            c.update(snapshot);
        }
    }

    /// The model `profile` searches with.
    pub(super) fn model_view(&self, profile: &Profile) -> ModelView {
        let serving = || ModelView {
            gen: self.generation(),
            encoder: self.encoder.clone(),
            challenger: false,
        };
        let Some(model) = profile.model.as_deref().filter(|m| !self.is_serving(m)) else {
            return serving();
        };
        match self.challenger(model).and_then(|c| Some((c.view()?, c))) {
            Some((gen, c)) => ModelView {
                gen,
                encoder: Some(c.encoder.clone()),
                challenger: true,
            },
            // Failed to follow (or unloaded by a concurrent edit): no vectors at all.
            None => ModelView {
                encoder: None,
                challenger: true,
                ..serving()
            },
        }
    }

    /// The serving model and the challengers, with the profiles that use each.
    pub fn models(&self) -> Vec<ModelStatus> {
        let profiles = self.profiles();
        let users = |uses: &dyn Fn(Option<&str>) -> bool| -> Vec<String> {
            (profiles.iter())
                .filter(|(_, p)| uses(p.model.as_deref()))
                .map(|(name, _)| name.to_string())
                .collect()
        };
        let mut out = Vec::new();
        if let Some(e) = &self.encoder {
            out.push(ModelStatus {
                id: e.id().to_string(),
                serving: true,
                profiles: users(&|m| m.is_none_or(|m| self.is_serving(m))),
                vectors: self.generation().vectors.as_ref().map_or(0, Vectors::len),
                problem: None,
            });
        }
        let challengers: BTreeMap<String, Arc<Challenger>> = self
            .challengers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, c) in challengers {
            let view = c.view();
            out.push(ModelStatus {
                id: c.encoder.id().to_string(),
                serving: false,
                profiles: users(&|m| m == Some(name.as_str())),
                vectors: (view.as_ref())
                    .and_then(|g| g.vectors.as_ref())
                    .map_or(0, Vectors::len),
                problem: c.problem.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            });
        }
        out
    }
}

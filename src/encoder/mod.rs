//! Encoder: text -> unit-length embedding, with a BERT model run by candle.
//!
//! Loads a standard local model folder (`config.json`, `tokenizer.json`, and
//! `model.safetensors` or `pytorch_model.bin`). Pooling, lowercasing, prefixes and the
//! maximum length come from the `[encoder]` table of `models/manifest.toml`, because they
//! belong to how a model was trained, not to the code. Documents are encoded in batches
//! sorted by length. On the CPU ([`cpu`]) a batch is packed without padding and the
//! batches run one per core; other devices run candle's tensors ([`bert`]), padded.

mod bert;
mod cpu;
pub mod device;
mod int8;
pub mod train;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;

use bert::Bert;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

pub use device::DeviceKind;

use crate::error::{Error, Result};

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mask-aware mean over all tokens.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

/// Arithmetic of the CPU pass's dense layers (the matmuls with the model's weights).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats, as the model was trained.
    #[default]
    F32,
    /// int8 weights (per output column) and activations (per token, at each call);
    /// embeddings, LayerNorm and attention stay f32. CPU only: another device runs f32.
    Int8,
}

/// The `[encoder]` table of the model manifest.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Model id stored with product vectors; vectors of another id are not used.
    pub id: String,
    /// Model folder, relative to the manifest.
    pub dir: PathBuf,
    /// Pooling strategy.
    pub pooling: Pooling,
    /// Lowercase text before tokenizing.
    #[serde(default)]
    pub lowercase: bool,
    /// Maximum tokens per text, special tokens included.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Prepended to queries (some models expect an instruction).
    #[serde(default)]
    pub query_prefix: String,
    /// Prepended to product texts.
    #[serde(default)]
    pub document_prefix: String,
    /// L2-normalize vectors (cosine similarity becomes a dot product).
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Texts per forward pass at index time.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// `f32` or `int8` (`--precision` / `SHOPRANK_PRECISION` override it). int8 vectors
    /// get their own model id (`ID+int8`), so they never mix with f32 ones.
    #[serde(default)]
    pub precision: Precision,
}

fn default_max_length() -> usize {
    64
}
fn default_batch() -> usize {
    32
}
fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Manifest {
    /// One model's table, for a manifest written for one model.
    encoder: Option<EncoderConfig>,
    /// The model used unless another is named.
    default: Option<String>,
    /// `[models.NAME]`: each model's `encoder` table (and `package`, `licence`: fetch.sh's).
    #[serde(default)]
    models: std::collections::BTreeMap<String, ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    encoder: EncoderConfig,
}

impl EncoderConfig {
    /// Reads a manifest: the `[models.NAME.encoder]` table of `model` (default: the
    /// manifest's `default`), or the single `[encoder]` table of a one-model manifest.
    /// `dir` becomes relative to the manifest.
    pub fn from_manifest(path: &Path, model: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |e: String| Error::Config(format!("{}: {e}", path.display()));
        let mut manifest: Manifest = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let name = model.map(str::to_string).or(manifest.default.clone());
        let mut config = match (name, manifest.encoder) {
            (None, Some(config)) => config,
            (Some(name), _) => match manifest.models.remove(&name) {
                Some(entry) => entry.encoder,
                None => {
                    let known: Vec<&String> = manifest.models.keys().collect();
                    return Err(bad(format!("no model `{name}` (models: {known:?})")));
                }
            },
            (None, None) => return Err(bad("no `default` model and no [encoder] table".into())),
        };
        if config.dir.is_relative() {
            config.dir = path.parent().unwrap_or(Path::new(".")).join(&config.dir);
        }
        if config.max_length < 2 || config.batch_size == 0 {
            return Err(Error::Config(format!(
                "{}: max_length must be >= 2 and batch_size >= 1",
                path.display()
            )));
        }
        Ok(config)
    }
}

/// A model folder's own one-model manifest (an `[encoder]` table with `dir = "."`), as
/// `shoprank train` writes it: the folder's id and settings travel with its weights.
pub const FOLDER_MANIFEST: &str = "encoder.toml";

impl EncoderConfig {
    /// The settings of model folder `dir` from its [`FOLDER_MANIFEST`], if it has one.
    pub fn from_model_dir(dir: &Path) -> Option<Result<Self>> {
        let path = dir.join(FOLDER_MANIFEST);
        path.is_file()
            .then(|| EncoderConfig::from_manifest(&path, None))
    }

    /// Writes these settings as model folder `dir`'s [`FOLDER_MANIFEST`], with `id` as the
    /// folder's model id and `dir = "."` (the weights beside it): what
    /// [`EncoderConfig::from_model_dir`] reads.
    pub fn write_to_model_dir(&self, dir: &Path, id: &str) -> Result<()> {
        #[derive(serde::Serialize)]
        struct FolderManifest<'a> {
            encoder: &'a EncoderConfig,
        }
        let encoder = EncoderConfig {
            id: id.to_string(),
            dir: ".".into(),
            ..self.clone()
        };
        let text = format!(
            "# The encoder settings of this model folder (written by `shoprank train`).\n\
             # `--model-dir` takes them from here, so the folder's id is used.\n{}",
            toml::to_string(&FolderManifest { encoder: &encoder })
                .map_err(|e| Error::Internal(e.to_string()))?
        );
        let path = dir.join(FOLDER_MANIFEST);
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }
}

/// Queries whose vectors are kept (2 KB each for a 512-d model).
pub const QUERY_CACHE: usize = 4096;

/// Recently encoded queries; the least recently used one is evicted when full.
#[derive(Default)]
struct QueryCache {
    tick: u64,
    map: HashMap<String, (u64, Vec<f32>)>,
    hits: u64,
    misses: u64,
}

impl QueryCache {
    fn get(&mut self, q: &str) -> Option<Vec<f32>> {
        self.tick += 1;
        match self.map.get_mut(q) {
            Some((t, v)) => {
                *t = self.tick;
                self.hits += 1;
                Some(v.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    fn put(&mut self, q: &str, v: &[f32]) {
        self.tick += 1;
        if self.map.len() >= QUERY_CACHE && !self.map.contains_key(q) {
            // An O(n) scan on a miss at capacity: ~10 µs against a ~10 ms encode.
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        self.map.insert(q.to_string(), (self.tick, v.to_vec()));
    }
}

/// Query-cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Queries answered from the cache.
    pub hits: u64,
    /// Queries encoded.
    pub misses: u64,
    /// Queries held.
    pub size: usize,
}

/// The forward pass for the encoder's device.
enum Model {
    /// Plain buffers and single-threaded matmuls, packed batches.
    Cpu(cpu::Bert),
    /// candle tensors on an accelerator, padded batches.
    Candle(Bert),
}

/// A loaded BERT encoder.
pub struct Encoder {
    model: Model,
    /// The manifest's id, plus `+int8` for int8 vectors.
    id: String,
    precision: Precision,
    tokenizer: Tokenizer,
    config: EncoderConfig,
    device: Device,
    dim: usize,
    intermediate: usize,
    layers: usize,
    queries: std::sync::Mutex<QueryCache>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("id", &self.id)
            .field("dim", &self.dim)
            .finish()
    }
}

impl Encoder {
    /// Loads the model folder named by `config.dir` onto `device`.
    pub fn load(config: EncoderConfig, device: Device) -> Result<Self> {
        let dir = config.dir.clone();
        let model_err = |reason: String| Error::Model {
            path: dir.clone(),
            reason,
        };
        if !dir.is_dir() {
            return Err(model_err(
                "no such folder (run models/fetch.sh, or set --model-dir)".into(),
            ));
        }
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| model_err(format!("config.json: {e}")))?;
        let bert: BertConfig =
            serde_json::from_str(&text).map_err(|e| model_err(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| model_err(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_length.min(bert.max_position_embeddings),
                ..Default::default()
            }))
            .map_err(|e| model_err(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        let safetensors = dir.join("model.safetensors");
        let pth = dir.join("pytorch_model.bin");
        let vb = if safetensors.is_file() {
            // SAFETY: the file is memory-mapped read-only; shoprank never writes model files.
            unsafe { VarBuilder::from_mmaped_safetensors(&[safetensors], DType::F32, &device) }
        } else if pth.is_file() {
            VarBuilder::from_pth(&pth, DType::F32, &device)
        } else {
            return Err(model_err(
                "neither model.safetensors nor pytorch_model.bin found".into(),
            ));
        }
        .map_err(|e| model_err(format!("weights: {e}")))?;
        let model = Bert::load(vb, &bert).map_err(|e| model_err(format!("weights: {e}")))?;
        let precision = if device.is_cpu() {
            config.precision
        } else {
            if config.precision != Precision::F32 {
                tracing::warn!(precision = ?config.precision, "only the CPU pass runs int8; this device runs f32");
            }
            Precision::F32
        };
        let model = if device.is_cpu() {
            let m = cpu::Bert::new(&model, precision);
            Model::Cpu(m.map_err(|e| model_err(format!("weights: {e}")))?)
        } else {
            Model::Candle(model)
        };
        let id = match precision {
            Precision::F32 => config.id.clone(),
            Precision::Int8 => format!("{}+int8", config.id),
        };
        Ok(Encoder {
            model,
            id,
            precision,
            tokenizer,
            config,
            device,
            dim: bert.hidden_size,
            intermediate: bert.intermediate_size,
            layers: bert.num_hidden_layers,
            queries: Default::default(),
        })
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The model id stored with vectors: the manifest's, plus `+int8` for int8 vectors.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The settings it was loaded with (`config().id` is the id without `+int8`).
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The precision the dense layers run at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Encodes one query (repeated queries come from a small LRU cache).
    pub fn encode_query(&self, query: &str) -> Result<Vec<f32>> {
        let cache = || self.queries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cache().get(query) {
            return Ok(v);
        }
        let v = self.encode_query_uncached(query)?;
        cache().put(query, &v);
        Ok(v)
    }

    /// Encodes one query, never from the cache (what a cache miss runs; for benches).
    pub fn encode_query_uncached(&self, query: &str) -> Result<Vec<f32>> {
        let text = format!("{}{}", self.config.query_prefix, query);
        self.encode_batch(&[text])?
            .pop()
            .ok_or_else(|| Error::Internal("empty encoder output".into()))
    }

    /// Query-cache counters.
    pub fn query_cache(&self) -> CacheStats {
        let c = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        CacheStats {
            hits: c.hits,
            misses: c.misses,
            size: c.map.len(),
        }
    }

    /// Encodes product texts, in input order. `progress` is called with the count done.
    pub fn encode_documents(
        &self,
        texts: &[String],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{}", self.config.document_prefix, t))
            .collect();
        let token_counts: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        // Sort by length so a padded batch pads only to its own longest text.
        order.sort_by_key(|&i| token_counts[i]);
        let batches: Vec<&[usize]> = order.chunks(self.config.batch_size).collect();
        // On the CPU each core takes whole batches (candle's thread count: RAYON_NUM_THREADS
        // or one per core); an accelerator gets them one at a time.
        let workers = match self.model {
            Model::Cpu(_) => candle_core::utils::get_num_threads().clamp(1, batches.len().max(1)),
            Model::Candle(_) => 1,
        };
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut out = vec![Vec::new(); texts.len()];
        let (texts, batches, next) = (&texts, &batches, &next);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let tx = tx.clone();
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { break };
                    let batch: Vec<String> = batch.iter().map(|&j| texts[j].clone()).collect();
                    // A closed channel means the caller stopped at an error.
                    if tx.send((i, self.encode_batch(&batch))).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            let mut done = 0;
            for (i, vectors) in rx {
                for (&j, v) in batches[i].iter().zip(vectors?) {
                    out[j] = v;
                }
                done += batches[i].len();
                progress(done);
            }
            Ok(out)
        })
    }

    /// Tokens the model sees for each document text (special tokens included, truncated
    /// to the max length): the work of an encode, for throughput reports.
    pub fn document_tokens(&self, texts: &[String]) -> Result<Vec<usize>> {
        texts
            .iter()
            .map(|t| {
                let t = format!("{}{}", self.config.document_prefix, t);
                let t = if self.config.lowercase {
                    t.to_lowercase()
                } else {
                    t
                };
                self.tokenizer
                    .encode(t, true)
                    .map(|e| e.get_ids().len())
                    .map_err(|e| Error::Internal(format!("tokenizer: {e}")))
            })
            .collect()
    }

    /// Matmul FLOPs per token of one forward pass: 2 × the dense weights of every layer
    /// (attention scores, which grow with length, are left out).
    pub fn flops_per_token(&self) -> f64 {
        let (h, i, layers) = (
            self.dim as f64,
            self.intermediate as f64,
            self.layers as f64,
        );
        2.0 * layers * (4.0 * h * h + 2.0 * h * i)
    }

    /// One forward pass over a batch of texts: their pooled vectors.
    fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<String> = texts
            .iter()
            .map(|t| {
                if self.config.lowercase {
                    t.to_lowercase()
                } else {
                    t.clone()
                }
            })
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| Error::Internal(format!("tokenizer: {e}")))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let hidden = match &self.model {
            Model::Cpu(m) => m.forward(&ids)?,
            Model::Candle(m) => self.forward_padded(m, &ids)?,
        };
        Ok(self.pool(&hidden, &ids))
    }

    /// candle's pass over the texts padded to the longest of them; the hidden states of
    /// the real tokens, packed as [`cpu::Bert::forward`] returns them.
    fn forward_padded(&self, model: &Bert, texts: &[&[u32]]) -> Result<Vec<f32>> {
        let len = texts.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let n = texts.len();
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (row, t) in texts.iter().enumerate() {
            ids[row * len..][..t.len()].copy_from_slice(t);
            mask[row * len..][..t.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let hidden = model.forward(&ids, &mask)?.to_vec3::<f32>()?;
        Ok(hidden
            .iter()
            .zip(texts)
            .flat_map(|(rows, t)| rows[..t.len()].iter().flatten().copied())
            .collect())
    }

    /// One vector per text from its tokens' packed hidden states (mean or `[CLS]`),
    /// normalized to unit length when the manifest says so.
    fn pool(&self, hidden: &[f32], texts: &[&[u32]]) -> Vec<Vec<f32>> {
        let mut rows = hidden.chunks_exact(self.dim);
        texts
            .iter()
            .map(|t| {
                let tokens: Vec<&[f32]> = rows.by_ref().take(t.len()).collect();
                let mut v = vec![0.0; self.dim];
                match self.config.pooling {
                    Pooling::Cls => {
                        if let Some(first) = tokens.first() {
                            v.copy_from_slice(first);
                        }
                    }
                    Pooling::Mean => {
                        for row in &tokens {
                            v.iter_mut().zip(*row).for_each(|(a, b)| *a += b);
                        }
                        let n = tokens.len().max(1) as f32;
                        v.iter_mut().for_each(|a| *a /= n);
                    }
                }
                if self.config.normalize {
                    let norm = dot(&v, &v).sqrt().max(1e-12);
                    v.iter_mut().for_each(|a| *a /= norm);
                }
                v
            })
            .collect()
    }
}

/// The int8 kernel this CPU runs: `avx512vnni`, `avxvnni`, `avx2` or `scalar`.
pub fn int8_kernel() -> &'static str {
    int8::Kernel::best().name()
}

/// Dot product of two equal-length vectors (cosine for unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_with(a, b)
}

/// `Σ a_j × b_j` for f32 or int8 `a`. Sixteen independent sums let the compiler use vector
/// instructions (a plain `.sum()` must add in order and stays scalar); with AVX2 the same
/// loop runs 8 lanes wide. The exact vector scan of a search calls this once per product.
pub fn dot_with<T: Copy>(a: &[T], b: &[f32]) -> f32
where
    f32: From<T>,
{
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2<T: Copy>(a: &[T], b: &[f32]) -> f32
where
    f32: From<T>,
{
    dot_lanes(a, b)
}

#[inline(always)]
fn dot_lanes<T: Copy>(a: &[T], b: &[f32]) -> f32
where
    f32: From<T>,
{
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += f32::from(x[i]) * y[i];
        }
    }
    acc.iter().sum::<f32>()
        + ra.iter()
            .zip(rb)
            .map(|(x, y)| f32::from(*x) * y)
            .sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for n in [0, 1, 5, 16, 17, 31, 512, 515] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.4).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "n={n}");
            assert!((dot_lanes(&a, &b) - plain).abs() < 1e-4, "n={n}");
            let codes: Vec<i8> = (0..n).map(|i| (i % 255) as i8).collect();
            let exact: f32 = codes.iter().zip(&b).map(|(c, y)| f32::from(*c) * y).sum();
            assert!((dot_with(&codes, &b) - exact).abs() < 1e-2, "n={n}");
        }
    }

    #[test]
    fn the_query_cache_evicts_the_least_recently_used() {
        let mut c = QueryCache::default();
        for i in 0..QUERY_CACHE {
            c.put(&format!("q{i}"), &[i as f32]);
        }
        assert_eq!(c.get("q0"), Some(vec![0.0]), "q0 is now the most recent");
        c.put("new", &[9.0]);
        assert_eq!(c.map.len(), QUERY_CACHE);
        assert!(c.get("q1").is_none(), "q1 was the least recently used");
        assert!(c.get("q0").is_some() && c.get("new").is_some());
        assert_eq!((c.hits, c.misses), (3, 1));
    }
}

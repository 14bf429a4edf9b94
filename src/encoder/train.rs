//! Fine-tuning: a model folder + batches of (query, product) texts -> the same model with
//! weights moved by a contrastive loss, written back as a standard folder.
//!
//! The weights are loaded into a `candle_nn::VarMap` (every float tensor of the file is a
//! variable) and run through a forward pass built only from differentiable candle ops:
//! the inference passes ([`super::bert`], [`super::cpu`]) use fused kernels (the fused
//! softmax and layer norm have no backward) and pre-transposed copies of the weights, so
//! they cannot be trained. The two passes compute the same function; a test checks them
//! against each other.
//!
//! Texts get the manifest's prefixes and lowercasing and are pooled and normalized as
//! [`super::Encoder`] does. The loss is InfoNCE with in-batch negatives: every query is
//! scored against every product of the batch (the other queries' positives and the mined
//! hard negatives), cosine / temperature, cross-entropy towards its own positive; a
//! product judged relevant to the query other than its target is masked out, so a shared
//! positive is never pushed away. AdamW updates the weights. No dropout.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use tokenizers::Tokenizer;

use super::{EncoderConfig, Pooling};
use crate::error::{Error, Result};

/// Threads candle's CPU kernels use (`RAYON_NUM_THREADS`, else one per core).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// One training batch: queries, products, and which product is each query's positive.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Query texts (without the prefix).
    pub queries: Vec<String>,
    /// Product texts (without the prefix): positives and hard negatives.
    pub products: Vec<String>,
    /// For each query, the index in `products` of its positive.
    pub targets: Vec<usize>,
    /// (query, product) pairs left out of the query's softmax (other positives of it).
    pub masked: Vec<(usize, usize)>,
}

/// Optimizer settings.
#[derive(Debug, Clone, Copy)]
pub struct TrainSettings {
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Softmax temperature of the contrastive loss.
    pub temperature: f64,
    /// Keep the word embeddings as they are (most of a large-vocabulary model's weights:
    /// 96M of multilingual-e5-small's 118M): faster steps, less memory.
    pub freeze_word_embeddings: bool,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            lr: 3e-5,
            weight_decay: 0.01,
            temperature: 0.05,
            freeze_word_embeddings: false,
        }
    }
}

struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    /// `x`: `(tokens, in)` -> `(tokens, out)`; the weight is `(out, in)` as stored.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    /// Layer norm over the last dimension from plain (differentiable) ops.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// A BERT encoder whose weights are variables, with its tokenizer and optimizer.
pub struct Trainer {
    varmap: VarMap,
    optimizer: AdamW,
    settings: TrainSettings,
    config: EncoderConfig,
    tokenizer: Tokenizer,
    device: Device,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    act: HiddenAct,
    trainable: usize,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("id", &self.config.id)
            .finish()
    }
}

fn model_err(dir: &Path, reason: String) -> Error {
    Error::Model {
        path: dir.to_path_buf(),
        reason,
    }
}

impl Trainer {
    /// Loads the model folder of `config` (safetensors or PyTorch weights) on the CPU.
    pub fn load(config: &EncoderConfig, settings: TrainSettings) -> Result<Self> {
        let dir = &config.dir;
        let device = Device::Cpu;
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| model_err(dir, format!("config.json: {e}")))?;
        let bert: BertConfig =
            serde_json::from_str(&text).map_err(|e| model_err(dir, format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| model_err(dir, format!("tokenizer.json: {e}")))?;
        // Truncated as the encoder truncates; padding is done here, per batch.
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: config.max_length.min(bert.max_position_embeddings),
                ..Default::default()
            }))
            .map_err(|e| model_err(dir, format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        let safetensors = dir.join("model.safetensors");
        let tensors: Vec<(String, Tensor)> = if safetensors.is_file() {
            candle_core::safetensors::load(&safetensors, &device)?
                .into_iter()
                .collect()
        } else {
            candle_core::pickle::read_all(dir.join("pytorch_model.bin"))
                .map_err(|e| model_err(dir, format!("weights: {e}")))?
        };
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            for (name, t) in tensors {
                // Integer buffers (position ids) are not weights.
                if t.dtype().is_float() {
                    data.insert(name, Var::from_tensor(&t.to_dtype(DType::F32)?)?);
                }
            }
        }
        let prefix = {
            let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            if data.contains_key("bert.embeddings.word_embeddings.weight") {
                "bert."
            } else {
                ""
            }
        };
        let get = |name: &str| -> Result<Tensor> {
            let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            data.get(&format!("{prefix}{name}"))
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| model_err(dir, format!("weights: no tensor `{prefix}{name}`")))
        };
        let dense = |name: &str| -> Result<Dense> {
            Ok(Dense {
                weight: get(&format!("{name}.weight"))?,
                bias: get(&format!("{name}.bias"))?,
            })
        };
        let eps = bert.layer_norm_eps;
        let norm = |name: &str| -> Result<Norm> {
            Ok(Norm {
                weight: get(&format!("{name}.weight"))?,
                bias: get(&format!("{name}.bias"))?,
                eps,
            })
        };
        let layers = (0..bert.num_hidden_layers)
            .map(|i| {
                let l = format!("encoder.layer.{i}");
                Ok(Layer {
                    query: dense(&format!("{l}.attention.self.query"))?,
                    key: dense(&format!("{l}.attention.self.key"))?,
                    value: dense(&format!("{l}.attention.self.value"))?,
                    attention_out: dense(&format!("{l}.attention.output.dense"))?,
                    attention_norm: norm(&format!("{l}.attention.output.LayerNorm"))?,
                    intermediate: dense(&format!("{l}.intermediate.dense"))?,
                    output: dense(&format!("{l}.output.dense"))?,
                    output_norm: norm(&format!("{l}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if bert.num_attention_heads == 0
            || !bert.hidden_size.is_multiple_of(bert.num_attention_heads)
        {
            return Err(model_err(dir, "hidden size not a multiple of heads".into()));
        }
        let word_name = format!("{prefix}embeddings.word_embeddings.weight");
        let vars: Vec<Var> = {
            let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            data.iter()
                .filter(|(name, _)| !(settings.freeze_word_embeddings && **name == word_name))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let trainable = vars.iter().map(|v| v.as_tensor().elem_count()).sum();
        let optimizer = AdamW::new(
            vars,
            ParamsAdamW {
                lr: settings.lr,
                weight_decay: settings.weight_decay,
                ..ParamsAdamW::default()
            },
        )?;
        Ok(Trainer {
            word: get("embeddings.word_embeddings.weight")?,
            position: get("embeddings.position_embeddings.weight")?,
            token_type: get("embeddings.token_type_embeddings.weight")?,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            heads: bert.num_attention_heads,
            hidden: bert.hidden_size,
            act: bert.hidden_act,
            trainable,
            varmap,
            optimizer,
            settings,
            config: config.clone(),
            tokenizer,
            device,
        })
    }

    /// Token ids of `texts` (prefixed, lowercased as configured, truncated), padded, and
    /// the mask of real tokens.
    fn tokenize(&self, texts: &[String], prefix: &str) -> Result<(Tensor, Tensor)> {
        let mut rows = Vec::with_capacity(texts.len());
        for t in texts {
            let t = format!("{prefix}{t}");
            let t = if self.config.lowercase {
                t.to_lowercase()
            } else {
                t
            };
            let enc = self
                .tokenizer
                .encode(t, true)
                .map_err(|e| Error::Internal(format!("tokenizer: {e}")))?;
            rows.push(enc.get_ids().to_vec());
        }
        let len = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let n = rows.len();
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0f32; n * len];
        for (r, t) in rows.iter().enumerate() {
            ids[r * len..][..t.len()].copy_from_slice(t);
            mask[r * len..][..t.len()].fill(1.0);
        }
        Ok((
            Tensor::from_vec(ids, (n, len), &self.device)?,
            Tensor::from_vec(mask, (n, len), &self.device)?,
        ))
    }

    /// Pooled (and normalized) vectors of `texts`, `(n, hidden)`, differentiable.
    fn embed(&self, texts: &[String], prefix: &str) -> Result<Tensor> {
        let (ids, mask) = self.tokenize(texts, prefix)?;
        let x = self.hidden(&ids, &mask)?;
        let pooled = match self.config.pooling {
            Pooling::Cls => x.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.unsqueeze(2)?;
                x.broadcast_mul(&m)?
                    .sum(1)?
                    .broadcast_div(&mask.sum_keepdim(1)?)?
            }
        };
        if self.config.normalize {
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            Ok(pooled.broadcast_div(&norm)?)
        } else {
            Ok(pooled)
        }
    }

    /// `ids` `(batch, seq)` u32, `mask` `(batch, seq)` f32 (1 real, 0 padding) -> hidden
    /// states `(batch, seq, hidden)`. Follows [`super::bert::Bert::forward`].
    fn hidden(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let h = self.hidden;
        let hd = h / self.heads;
        let positions = Tensor::arange(0u32, s as u32, &self.device)?;
        // A detached (frozen) table gets no gradient, so none is computed for it.
        let word = if self.settings.freeze_word_embeddings {
            self.word.detach()
        } else {
            self.word.clone()
        };
        let x = word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, s, h))?
            .broadcast_add(&self.position.index_select(&positions, 0)?)?
            .broadcast_add(&self.token_type.get(0)?)?;
        let mut x = self.embedding_norm.forward(&x.reshape((b * s, h))?)?;
        // Padded keys get a large negative score (finite, so gradients stay finite).
        let bias = ((mask - 1.0)? * 1e4)?.reshape((b, 1, 1, s))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let heads = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        for l in &self.layers {
            let q = heads((l.query.forward(&x)? * scale)?)?;
            let k = heads(l.key.forward(&x)?)?;
            let v = heads(l.value.forward(&x)?)?;
            let scores = q
                .matmul(&k.transpose(2, 3)?.contiguous()?)?
                .broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * s, h))?;
            let attended = l
                .attention_norm
                .forward(&(l.attention_out.forward(&context)? + &x)?)?;
            let inner = l.intermediate.forward(&attended)?;
            let inner = match self.act {
                HiddenAct::Gelu => inner.gelu_erf()?,
                HiddenAct::GeluApproximate => inner.gelu()?,
                HiddenAct::Relu => inner.relu()?,
            };
            x = l
                .output_norm
                .forward(&(l.output.forward(&inner)? + attended)?)?;
        }
        Ok(x.reshape((b, s, h))?)
    }

    /// The batch's contrastive loss as a scalar tensor (attached to the weights).
    fn loss_tensor(&self, batch: &Batch) -> Result<Tensor> {
        if batch.queries.is_empty() || batch.queries.len() != batch.targets.len() {
            return Err(Error::Internal(
                "a training batch needs one target per query".into(),
            ));
        }
        let q = self.embed(&batch.queries, &self.config.query_prefix.clone())?;
        let p = self.embed(&batch.products, &self.config.document_prefix.clone())?;
        let logits = (q.matmul(&p.t()?)? / self.settings.temperature)?;
        let (nq, np) = (batch.queries.len(), batch.products.len());
        let mut mask = vec![0f32; nq * np];
        for &(i, j) in &batch.masked {
            if i < nq && j < np && batch.targets[i] != j {
                mask[i * np + j] = -1e4;
            }
        }
        let logits = (logits + Tensor::from_vec(mask, (nq, np), &self.device)?)?;
        let targets: Vec<u32> = batch.targets.iter().map(|&t| t as u32).collect();
        let targets = Tensor::from_vec(targets, nq, &self.device)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
    }

    /// The batch's loss without changing the weights.
    pub fn loss(&self, batch: &Batch) -> Result<f32> {
        Ok(self.loss_tensor(batch)?.to_scalar::<f32>()?)
    }

    /// Sets the learning rate of the next steps.
    pub fn set_lr(&mut self, lr: f64) {
        self.optimizer.set_learning_rate(lr);
    }

    /// One optimizer step on `batch`; returns the loss before the step.
    pub fn step(&mut self, batch: &Batch) -> Result<f32> {
        let loss = self.loss_tensor(batch)?;
        self.optimizer.backward_step(&loss)?;
        Ok(loss.to_scalar::<f32>()?)
    }

    /// Vectors of product texts (as [`super::Encoder::encode_documents`] gives them).
    pub fn encode_products(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .embed(texts, &self.config.document_prefix.clone())?
            .detach()
            .to_vec2::<f32>()?)
    }

    /// Writes `model.safetensors` (every weight, under the parent's names), the parent's
    /// `config.json` and `tokenizer.json`, and `encoder.toml` (the `[encoder]` table
    /// of the parent with `id` set to `id` and `dir` to the folder) into `out`.
    pub fn save(&self, out: &Path, id: &str) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        self.varmap.save(out.join("model.safetensors"))?;
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(self.config.dir.join(f), out.join(f))
                .map_err(|e| Error::io(out.join(f), e))?;
        }
        self.config.write_to_model_dir(out, id)
    }

    /// SHA-256 (hex, 16 digits) over every weight by name, shape and value: what the
    /// model's vectors depend on besides its settings.
    pub fn weights_digest(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let weights = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = weights.keys().collect();
        names.sort();
        let mut h = Sha256::new();
        for name in names {
            let t = weights[name].as_tensor();
            h.update(format!("{name}{:?}\n", t.dims()));
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
            h.update(&bytes);
        }
        Ok(h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// Number of trainable values (the optimizer's).
    pub fn parameters(&self) -> usize {
        self.trainable
    }

    /// A copy of the weights by name (for tests and checks).
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        let data = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        data.iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::bert::tests::tiny_config;
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::BertModel;

    /// The differentiable pass gives candle's reference BertModel hidden states, padding
    /// included.
    #[test]
    fn trainable_pass_matches_the_reference_model() {
        let dir = tempfile::tempdir().unwrap();
        let bert = tiny_config();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let reference = BertModel::load(vb, &bert).unwrap();
        varmap.save(dir.path().join("model.safetensors")).unwrap();
        let json = serde_json::json!({
            "vocab_size": bert.vocab_size, "hidden_size": bert.hidden_size,
            "num_hidden_layers": bert.num_hidden_layers,
            "num_attention_heads": bert.num_attention_heads,
            "intermediate_size": bert.intermediate_size,
            "max_position_embeddings": bert.max_position_embeddings,
            "type_vocab_size": bert.type_vocab_size, "hidden_act": "gelu",
            "layer_norm_eps": bert.layer_norm_eps, "hidden_dropout_prob": 0.0,
            "initializer_range": 0.02, "pad_token_id": 0
        });
        std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
        let tokenizer = Tokenizer::new(tokenizers::models::wordpiece::WordPiece::default());
        tokenizer
            .save(dir.path().join("tokenizer.json"), false)
            .unwrap();
        let config = EncoderConfig {
            id: "t".into(),
            dir: dir.path().into(),
            pooling: Pooling::Mean,
            lowercase: false,
            max_length: 16,
            query_prefix: String::new(),
            document_prefix: String::new(),
            normalize: true,
            batch_size: 4,
            precision: Default::default(),
        };
        let ids = Tensor::new(&[[2u32, 7, 9, 3, 0], [2, 11, 3, 0, 0]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
        let want = reference
            .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
            .unwrap();
        let t = Trainer::load(&config, TrainSettings::default()).unwrap();
        let got = t.hidden(&ids, &mask.to_dtype(DType::F32).unwrap()).unwrap();
        // Padded positions differ (a finite mask bias); compare the real tokens.
        for (row, len) in [(0usize, 4usize), (1, 3)] {
            let w = want.get(row).unwrap().narrow(0, 0, len).unwrap();
            let g = got.get(row).unwrap().narrow(0, 0, len).unwrap();
            let diff = (w - g).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
        }
    }
}

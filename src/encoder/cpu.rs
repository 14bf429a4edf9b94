//! The CPU forward pass: the BERT of [`super::bert`] on plain `f32` buffers, with the
//! `gemm` crate that candle's own CPU matmul calls, minus candle's per-op costs.
//!
//! - Texts are packed: a batch is one `(tokens × hidden)` matrix of real tokens, with no
//!   padding; attention runs per text over its own length.
//! - Every matmul runs on the calling thread (`Parallelism::None`). Document encoding
//!   runs one batch per core instead ([`super::Encoder::encode_documents`]): splitting
//!   every matmul over the cores cost ~20% of encoding time in thread barriers and idle
//!   spinning, and the element-wise ops ran on one core (perf, issue 7).
//! - Bias and residual are written into a product's destination first and the product is
//!   added to them (`dst += x·W`); Q, K and V are one `hidden × 3·hidden` product.
//! - The work buffers are reused by every layer and kept per thread between calls, so a
//!   query encode allocates only its output.
//!
//! - With [`Precision::Int8`] the dense layers are [`int8::Dense`] (int8 weights and
//!   activations, exact integer sums) and the feed-forward part runs 128 tokens at a time;
//!   everything else stays as above.
//!
//! Weights come from the candle model ([`super::bert::Bert`]), so both paths load the
//! same names; a test checks this pass against candle's reference `BertModel`.

use candle_core::{Result, Tensor};
use candle_transformers::models::bert::HiddenAct;
use gemm::{gemm, Parallelism};

use super::{bert, int8, Precision};

/// `x · W` for a row-major `W` (`input × output`), plus the bias.
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
    output: usize,
}

impl Dense {
    fn new(weight_t: &Tensor, bias: &Tensor) -> Result<Self> {
        let (input, output) = weight_t.dims2()?;
        Ok(Dense {
            weight: weight_t.flatten_all()?.to_vec1()?,
            bias: bias.to_vec1()?,
            input,
            output,
        })
    }

    /// Several dense layers over the same input as one (`[x·W1 | x·W2 | ...]`).
    fn concat(parts: &[&bert::Dense]) -> Result<Self> {
        let w: Vec<&Tensor> = parts.iter().map(|d| &d.weight_t).collect();
        let b: Vec<&Tensor> = parts.iter().map(|d| &d.bias).collect();
        Dense::new(&Tensor::cat(&w, 1)?, &Tensor::cat(&b, 0)?)
    }

    /// `out` (`rows × output`) = `residual` (when given) + bias + `x · W`.
    #[inline(always)]
    fn apply(&self, x: &[f32], rows: usize, residual: Option<&[f32]>, out: &mut [f32]) {
        let (n, k) = (self.output, self.input);
        debug_assert!(x.len() >= rows * k && out.len() >= rows * n);
        for (r, row) in out[..rows * n].chunks_exact_mut(n).enumerate() {
            match residual {
                Some(res) => {
                    for ((o, b), x) in row.iter_mut().zip(&self.bias).zip(&res[r * n..]) {
                        *o = b + x;
                    }
                }
                None => row.copy_from_slice(&self.bias),
            }
        }
        if rows == 0 {
            return;
        }
        // SAFETY: `x` holds `rows × k`, `weight` `k × n` and `out` `rows × n` row-major
        // f32 values (asserted above and by construction); the three do not overlap.
        unsafe {
            gemm(
                rows,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                self.weight.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    }
}

/// A dense layer at the precision the encoder was loaded with.
enum Linear {
    F32(Dense),
    Int8(int8::Dense),
}

impl Linear {
    fn new(d: Dense, precision: Precision) -> Self {
        match precision {
            Precision::F32 => Linear::F32(d),
            Precision::Int8 => {
                Linear::Int8(int8::Dense::new(&d.weight, &d.bias, d.input, d.output))
            }
        }
    }

    fn output(&self) -> usize {
        match self {
            Linear::F32(d) => d.output,
            Linear::Int8(d) => d.output,
        }
    }

    /// `out` (`rows × output`) = `residual` (when given) + bias + `x · W`.
    #[inline(always)]
    fn apply(&self, x: &[f32], rows: usize, residual: Option<&[f32]>, out: &mut [f32]) {
        match self {
            Linear::F32(d) => d.apply(x, rows, residual, out),
            Linear::Int8(d) => d.apply(x, rows, residual, out),
        }
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn new(n: &candle_nn::LayerNorm) -> Result<Self> {
        let Some(beta) = n.bias() else {
            candle_core::bail!("LayerNorm without a bias");
        };
        Ok(Norm {
            gamma: n.weight().to_vec1()?,
            beta: beta.to_vec1()?,
            eps: n.eps() as f32,
        })
    }

    /// Normalizes each `hidden`-long row of `x` in place.
    #[inline(always)]
    fn apply(&self, x: &mut [f32]) {
        let h = self.gamma.len();
        for row in x.chunks_exact_mut(h) {
            let mean = row.iter().sum::<f32>() / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let rstd = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
    }
}

/// Tokens per pass of an int8 feed-forward part (a multiple of the AMX kernel's 32 rows):
/// 11% fewer CPU samples in the int8 layers than a whole batch at once.
const FFN_ROWS: usize = 128;

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// The BERT encoder on plain buffers.
pub struct Bert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    act: HiddenAct,
    max_positions: usize,
}

/// Work buffers, reused by every layer and kept per thread between calls.
#[derive(Default)]
struct Buffers {
    attended: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    inner: Vec<f32>,
    scores: Vec<f32>,
}

impl Bert {
    /// Copies the weights of a CPU-loaded candle model; with [`Precision::Int8`] the dense
    /// layers are quantized ([`int8`]), embeddings, norms and attention stay `f32`.
    pub fn new(m: &bert::Bert, precision: Precision) -> Result<Self> {
        let p = precision;
        let layers = m
            .layers
            .iter()
            .map(|l| {
                let (ao, i, o) = (&l.attention_out, &l.intermediate, &l.output);
                Ok(Layer {
                    qkv: Linear::new(Dense::concat(&[&l.query, &l.key, &l.value])?, p),
                    attention_out: Linear::new(Dense::new(&ao.weight_t, &ao.bias)?, p),
                    attention_norm: Norm::new(&l.attention_norm)?,
                    intermediate: Linear::new(Dense::new(&i.weight_t, &i.bias)?, p),
                    output: Linear::new(Dense::new(&o.weight_t, &o.bias)?, p),
                    output_norm: Norm::new(&l.output_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let position = m.position.embeddings();
        Ok(Bert {
            word: m.word.embeddings().flatten_all()?.to_vec1()?,
            max_positions: position.dim(0)?,
            position: position.flatten_all()?.to_vec1()?,
            token_type: m.token_type.to_vec1()?,
            embedding_norm: Norm::new(&m.embedding_norm)?,
            layers,
            heads: m.heads,
            head_dim: m.head_dim,
            hidden: m.hidden,
            act: m.act,
        })
    }

    /// Hidden states of every token of every text, packed: text `i` owns rows
    /// `sum(len[..i])..sum(len[..=i])` of the returned `(tokens × hidden)` matrix.
    pub fn forward(&self, texts: &[&[u32]]) -> Result<Vec<f32>> {
        let vocab = self.word.len() / self.hidden;
        for t in texts {
            if t.len() > self.max_positions {
                candle_core::bail!("{} tokens, more than {}", t.len(), self.max_positions);
            }
            if let Some(id) = t.iter().find(|&&id| id as usize >= vocab) {
                candle_core::bail!("token id {id} outside the vocabulary ({vocab})");
            }
        }
        thread_local! {
            static BUFFERS: std::cell::RefCell<Buffers> = Default::default();
        }
        let h = self.hidden;
        let tokens: usize = texts.iter().map(|t| t.len()).sum();
        let longest = texts.iter().map(|t| t.len()).max().unwrap_or(0);
        let inner = self.layers.first().map_or(0, |l| l.intermediate.output());
        Ok(BUFFERS.with_borrow_mut(|b| {
            // Each layer writes every element it later reads, so stale values do no harm.
            for (buf, len) in [
                (&mut b.attended, tokens * h),
                (&mut b.qkv, tokens * 3 * h),
                (&mut b.context, tokens * h),
                (&mut b.inner, self.ffn_rows(tokens) * inner),
                (&mut b.scores, longest * longest),
            ] {
                if buf.len() < len {
                    // A fresh buffer, not `resize`: growing would copy the old contents.
                    *buf = Vec::new();
                    *buf = vec![0.0; len];
                }
            }
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX-512 F and BW and FMA (checked just above).
                    return unsafe { self.layers_avx512(texts, tokens, b) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { self.layers_avx2(texts, tokens, b) };
                }
            }
            self.layers_over(texts, tokens, b)
        }))
    }

    /// [`Bert::layers_over`] compiled for AVX2 + FMA (the dispatch must sit outside any
    /// closure: a closure does not inherit its caller's target features).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn layers_avx2(&self, texts: &[&[u32]], tokens: usize, b: &mut Buffers) -> Vec<f32> {
        self.layers_over(texts, tokens, b)
    }

    /// [`Bert::layers_over`] compiled for AVX-512: GELU, LayerNorm, softmax and the int8
    /// layers' rounding run 16 lanes wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    unsafe fn layers_avx512(&self, texts: &[&[u32]], tokens: usize, b: &mut Buffers) -> Vec<f32> {
        self.layers_over(texts, tokens, b)
    }

    /// Embeddings and every layer, with `b` holding room for `tokens` tokens; inlined into
    /// a caller compiled for the CPU's vector width.
    #[inline(always)]
    fn layers_over(&self, texts: &[&[u32]], tokens: usize, b: &mut Buffers) -> Vec<f32> {
        let h = self.hidden;
        let mut x = vec![0.0; tokens * h];
        // Embeddings: word + position + token type 0, then LayerNorm.
        let mut rows = x.chunks_exact_mut(h);
        for text in texts {
            for (pos, &id) in text.iter().enumerate() {
                let row = rows.next().expect("one row per token");
                let word = &self.word[id as usize * h..][..h];
                let position = &self.position[pos * h..][..h];
                for (((o, w), p), t) in row.iter_mut().zip(word).zip(position).zip(&self.token_type)
                {
                    *o = w + p + t;
                }
            }
        }
        self.embedding_norm.apply(&mut x);
        for l in &self.layers {
            let attended = &mut b.attended[..tokens * h];
            l.qkv.apply(&x, tokens, None, &mut b.qkv);
            self.attention(texts, &b.qkv, &mut b.scores, &mut b.context);
            l.attention_out
                .apply(&b.context, tokens, Some(&x), attended);
            l.attention_norm.apply(attended);
            // The feed-forward part in row chunks (int8: FFN_ROWS tokens), so its wide
            // activations stay in cache (a whole batch's are 8 MB at width 2048).
            let (width, chunk) = (l.intermediate.output(), self.ffn_rows(tokens));
            let mut start = 0;
            while start < tokens {
                let rows = (tokens - start).min(chunk);
                let input = &attended[start * h..][..rows * h];
                let inner = &mut b.inner[..rows * width];
                l.intermediate.apply(input, rows, None, inner);
                match self.act {
                    HiddenAct::Gelu => gelu_lanes(inner),
                    HiddenAct::GeluApproximate => gelu_tanh(inner),
                    HiddenAct::Relu => inner.iter_mut().for_each(|v| *v = v.max(0.0)),
                }
                let out = &mut x[start * h..][..rows * h];
                l.output.apply(inner, rows, Some(input), out);
                start += rows;
            }
            l.output_norm.apply(&mut x);
        }
        x
    }

    /// Tokens per pass of the feed-forward part: FFN_ROWS for int8 layers; all of them
    /// for f32, where `gemm` packs the weights again on every call.
    fn ffn_rows(&self, tokens: usize) -> usize {
        match self.layers.first().map(|l| &l.intermediate) {
            Some(Linear::Int8(_)) => tokens.min(FFN_ROWS),
            _ => tokens,
        }
    }

    /// Scaled dot-product attention of each text over its own tokens, every head.
    #[inline(always)]
    fn attention(&self, texts: &[&[u32]], qkv: &[f32], scores: &mut [f32], context: &mut [f32]) {
        let (h, d) = (self.hidden, self.head_dim);
        let scale = 1.0 / (d as f32).sqrt();
        let mut start = 0;
        for text in texts {
            let n = text.len();
            for head in 0..self.heads {
                let q = &qkv[start * 3 * h + head * d..];
                let (k, v) = (&q[h..], &q[2 * h..]);
                let out = &mut context[start * h + head * d..];
                // SAFETY: q, k and v address `n` rows of `d` values with row stride 3h inside
                // `qkv`; `scores` holds at least n × n values and `out` n rows of d values
                // with stride h; the output never overlaps an input.
                unsafe {
                    // scores = scale · q · kᵀ (n × n)
                    gemm(
                        n,
                        n,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        q.as_ptr(),
                        1,
                        3 * h as isize,
                        k.as_ptr(),
                        3 * h as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                softmax_rows(&mut scores[..n * n], n);
                // SAFETY: as above.
                unsafe {
                    // context = scores · v (n × d)
                    gemm(
                        n,
                        d,
                        n,
                        out.as_mut_ptr(),
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        n as isize,
                        v.as_ptr(),
                        1,
                        3 * h as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
            start += n;
        }
    }
}

#[inline(always)]
fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = exp_neg(max - *v);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Exact (erf) GELU, `x/2 · (1 + erf(x/√2))`, with an erf that vectorizes (libm's scalar
/// `erff`, which candle calls per element, was a quarter of all encoding time here).
#[inline(always)]
fn gelu_lanes(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7 in exact arithmetic).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp_neg(a * a)).copysign(x)
}

/// `e^-x` for `x >= 0`: `2^n · 2^f` with `n = round(-x·log2 e)`, `|f| <= 1/2` and a
/// degree-6 Taylor polynomial for `2^f` (relative error ~1e-7); 0 below `e^-87` (and for
/// NaN).
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    if x.is_nan() || x > 87.0 {
        return 0.0;
    }
    let t = -x.max(0.0) * std::f32::consts::LOG2_E;
    let n = t.round_ties_even();
    let f = (t - n) * std::f32::consts::LN_2;
    let p = 1.0
        + f * (1.0
            + f * (0.5 + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f / 720.0)))));
    // SAFETY: `n` is finite and within -126..=0 (`x` is clamped to 0..=87, not NaN). A
    // saturating `as i32` checks for NaN value by value and kept GELU scalar.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// GELU with the tanh approximation (`HiddenAct::GeluApproximate`), as candle computes it.
#[inline(always)]
fn gelu_tanh(x: &mut [f32]) {
    for v in x.iter_mut() {
        let u = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
        *v = 0.5 * *v * (1.0 + u.tanh());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use candle_transformers::models::bert::BertModel;

    #[test]
    fn fast_gelu_matches_the_exact_one() {
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 200.0).collect();
        let mut fast = xs.clone();
        gelu_lanes(&mut fast);
        let exact = Tensor::new(xs.as_slice(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for ((x, f), e) in xs.iter().zip(&fast).zip(&exact) {
            assert!(
                (f - e).abs() < 2e-6 * x.abs().max(1.0),
                "gelu({x}): {f} vs {e}"
            );
        }
        assert_eq!(exp_neg(100.0), 0.0);
        assert!((exp_neg(1.0) - (-1f32).exp()).abs() < 1e-7);
    }

    /// Packed texts of different lengths give what candle's reference `BertModel` gives
    /// each of them padded, token for token.
    #[test]
    fn matches_candle_reference_model_without_padding() {
        let config = bert::tests::tiny_config();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let reference = BertModel::load(vb.clone(), &config).unwrap();
        let ours = Bert::new(&bert::Bert::load(vb, &config).unwrap(), Precision::F32).unwrap();
        let texts: [&[u32]; 3] = [&[2, 7, 9, 3], &[2, 11, 3], &[2, 5, 6, 8, 13, 21, 3]];
        let ids = Tensor::new(
            &[
                [2u32, 7, 9, 3, 0, 0, 0],
                [2, 11, 3, 0, 0, 0, 0],
                [2, 5, 6, 8, 13, 21, 3],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = ids.ne(0u32).unwrap().to_dtype(DType::U32).unwrap();
        let want = reference
            .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let got = ours.forward(&texts).unwrap();
        let mut row = got.chunks_exact(32);
        let mut max = 0f32;
        for (t, text) in texts.iter().enumerate() {
            for want in &want[t][..text.len()] {
                for (a, b) in want.iter().zip(row.next().unwrap()) {
                    max = max.max((a - b).abs());
                }
            }
        }
        assert!(row.next().is_none(), "one row per real token");
        // Buffers left larger (and dirty) by a longer batch change nothing.
        ours.forward(&[&[2; 16], &[3; 16]]).unwrap();
        assert_eq!(ours.forward(&texts).unwrap(), got);
        assert!(max < 1e-4, "max difference {max}");
        assert!(
            ours.forward(&[&[2, 99]]).is_err(),
            "id outside the vocabulary"
        );
        assert!(
            ours.forward(&[&[1; 17]]).is_err(),
            "longer than the positions"
        );
        assert!(ours.forward(&[]).unwrap().is_empty());
    }

    /// The int8 pass's mean-pooled vectors point where the f32 pass's do: random weights
    /// (the tiny model's) are a harder case than trained ones, whose check on m3e-small
    /// is `int8_vectors_match_f32_on_the_real_model` in tests/it/encoder.rs.
    #[test]
    fn int8_pass_is_close_to_the_f32_pass() {
        let config = bert::tests::tiny_config();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = bert::Bert::load(vb, &config).unwrap();
        let f32s = Bert::new(&model, Precision::F32).unwrap();
        let int8 = Bert::new(&model, Precision::Int8).unwrap();
        let texts: [&[u32]; 4] = [
            &[2, 7, 9, 3],
            &[2, 11, 3],
            &[2, 5, 6, 8, 13, 21, 3],
            &[2, 4, 4, 6, 8, 10, 12, 14, 15, 3],
        ];
        let (a, b) = (f32s.forward(&texts).unwrap(), int8.forward(&texts).unwrap());
        let (mut rows_a, mut rows_b) = (a.chunks_exact(32), b.chunks_exact(32));
        for text in texts {
            let mut pa = [0f32; 32];
            let mut pb = [0f32; 32];
            for _ in 0..text.len() {
                pa.iter_mut()
                    .zip(rows_a.next().unwrap())
                    .for_each(|(p, v)| *p += v);
                pb.iter_mut()
                    .zip(rows_b.next().unwrap())
                    .for_each(|(p, v)| *p += v);
            }
            let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>();
            let cos = dot(&pa, &pb) / (dot(&pa, &pa) * dot(&pb, &pb)).sqrt();
            assert!(cos > 0.99, "{text:?}: cosine {cos}");
        }
        // Every row is quantized on its own, so a text's vectors do not depend on its
        // batch: 160 tokens (two feed-forward chunks, AMX-sized row tiles where the CPU
        // has AMX) give what each text gives alone, bit for bit.
        let long: Vec<Vec<u32>> = (0..10u32)
            .map(|t| (0..16).map(|i| 2 + (t * 7 + i * 3) % 30).collect())
            .collect();
        let batch: Vec<&[u32]> = long.iter().map(|t| t.as_slice()).collect();
        let together = int8.forward(&batch).unwrap();
        let alone: Vec<f32> = batch
            .iter()
            .flat_map(|t| int8.forward(&[t]).unwrap())
            .collect();
        assert_eq!(together, alone);
    }
}

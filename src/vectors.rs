//! Product vectors: one unit-length embedding per product row, stored beside the tantivy
//! index as a flat little-endian f32 file, held in memory as int8 codes with one f32 scale
//! per row (a quarter of the memory and of the bytes a scan reads), and the
//! nearest-neighbour scan over them.
//!
//! Quantization is symmetric per row: `scale = max |x| / 127`, `code = round(x / scale)`,
//! so `x ≈ code × scale` (error at most `scale / 2` per component).
//!
//! Each row also has one sign bit per component, taken after subtracting the mean row
//! (BERT embeddings share a common direction; centred signs tell rows apart). Above
//! [`PREFILTER_ROWS`] rows, [`Vectors::nearest`] ranks every row by the Hamming distance
//! of its bits to the query's (64 bytes per row instead of 512) and rescores only the
//! closest [`RESCORE`] with the int8 codes. Below it the scan is exact.
//!
//! Size: ~620 lines, 150 of them tests; the int8 store, the sign-bit prefilter and the
//! scan share one row layout, so they stay in one file.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SRVEC01\0";

/// Rows per storage chunk: an update copies one chunk, not the whole matrix.
const CHUNK_ROWS: usize = 4096;

/// Rows above which [`Vectors::nearest`] goes through the sign bits first.
pub const PREFILTER_ROWS: usize = 20_000;

/// Rows the sign-bit pass hands to the exact int8 rescoring.
pub const RESCORE: usize = 5_000;

/// One chunk of rows: their codes, row-major, and one scale per row.
#[derive(Debug, Clone, Default, PartialEq)]
struct Chunk {
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// `words` u64 of centred sign bits per row.
    bits: Vec<u64>,
}

/// A row-major matrix of product vectors, stored in shared chunks so that a copy is cheap
/// and changing a row copies only its chunk (searches keep reading the old snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    dim: usize,
    len: usize,
    chunks: Vec<Arc<Chunk>>,
    /// The mean row of the last bulk load (zero before one), subtracted before taking signs.
    center: Arc<Vec<f32>>,
}

/// u64 words of sign bits per row.
fn words(dim: usize) -> usize {
    dim.div_ceil(64)
}

/// Appends the centred sign bits of a row (one u64 per 64 components).
fn sign_bits(row: impl Iterator<Item = f32>, center: &[f32], bits: &mut Vec<u64>) {
    let mut w = 0u64;
    for (d, (x, &m)) in row.zip(center).enumerate() {
        if x > m {
            w |= 1 << (d % 64);
        }
        if d % 64 == 63 {
            bits.push(w);
            w = 0;
        }
    }
    if !center.len().is_multiple_of(64) {
        bits.push(w);
    }
}

/// The components of the row `codes × scale`.
fn dequantized(codes: &[i8], scale: f32) -> impl Iterator<Item = f32> + '_ {
    codes.iter().map(move |&c| f32::from(c) * scale)
}

/// `a · b` of two int8 vectors, exactly, in i32 (16-bit products summed in pairs: the
/// compiler turns it into `vpmaddwd`, four times the lanes of an f32 dot).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { dot_i8_avx2(a, b) };
        }
    }
    dot_i8_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    dot_i8_lanes(a, b)
}

#[inline(always)]
fn dot_i8_lanes(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 32;
    let mut acc = [0i32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: i32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += i32::from(i16::from(x[l]) * i16::from(y[l]));
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// Hamming distance of each row's bits to `q`'s (rows of `q.len()` words).
fn hamming(bits: &[u64], q: &[u64], out: &mut Vec<u16>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT (checked just above).
            unsafe { hamming_popcnt(bits, q, out) };
            return;
        }
    }
    hamming_lanes(bits, q, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn hamming_popcnt(bits: &[u64], q: &[u64], out: &mut Vec<u16>) {
    hamming_lanes(bits, q, out)
}

#[inline(always)]
fn hamming_lanes(bits: &[u64], q: &[u64], out: &mut Vec<u16>) {
    out.extend(bits.chunks_exact(q.len()).map(|row| {
        row.iter()
            .zip(q)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum::<u32>() as u16
    }));
}

/// The int8 codes and scale of one row.
fn quantize(row: &[f32], codes: &mut Vec<i8>) -> f32 {
    let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 0.0 };
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    codes.extend(
        row.iter()
            .map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8),
    );
    scale
}

impl Vectors {
    /// No rows yet.
    pub fn empty(dim: usize) -> Self {
        Vectors {
            dim,
            len: 0,
            chunks: Vec::new(),
            center: Arc::new(vec![0.0; dim]),
        }
    }

    /// Vectors from rows that all have length `dim`.
    pub fn from_rows(dim: usize, rows: Vec<Vec<f32>>) -> Result<Self> {
        let mut v = Vectors::empty(dim);
        for r in rows {
            v.push(&r)?;
        }
        Ok(v.centred())
    }

    /// Takes the mean of the stored rows as the centre and recomputes every row's bits.
    fn centred(mut self) -> Self {
        let mut mean = vec![0f64; self.dim];
        for c in &self.chunks {
            for (codes, &scale) in c.codes.chunks_exact(self.dim).zip(&c.scales) {
                for (m, x) in mean.iter_mut().zip(dequantized(codes, scale)) {
                    *m += f64::from(x);
                }
            }
        }
        let n = self.len.max(1) as f64;
        let center: Vec<f32> = mean.iter().map(|m| (m / n) as f32).collect();
        for c in &mut self.chunks {
            let c = Arc::make_mut(c);
            c.bits.clear();
            for (codes, &scale) in c.codes.chunks_exact(self.dim).zip(&c.scales) {
                sign_bits(dequantized(codes, scale), &center, &mut c.bits);
            }
        }
        self.center = Arc::new(center);
        self
    }

    fn check(&self, row: &[f32]) -> Result<()> {
        if row.len() != self.dim {
            return Err(Error::Internal(format!(
                "vector of length {}, expected {}",
                row.len(),
                self.dim
            )));
        }
        Ok(())
    }

    /// Appends a row.
    pub fn push(&mut self, row: &[f32]) -> Result<()> {
        self.check(row)?;
        if self.len.is_multiple_of(CHUNK_ROWS) {
            self.chunks.push(Arc::new(Chunk {
                codes: Vec::with_capacity(CHUNK_ROWS * self.dim),
                scales: Vec::with_capacity(CHUNK_ROWS),
                bits: Vec::with_capacity(CHUNK_ROWS * words(self.dim)),
            }));
        }
        let last = Arc::make_mut(self.chunks.last_mut().expect("a chunk was just ensured"));
        let at = last.codes.len();
        let scale = quantize(row, &mut last.codes);
        last.scales.push(scale);
        sign_bits(
            dequantized(&last.codes[at..], scale),
            &self.center,
            &mut last.bits,
        );
        self.len += 1;
        Ok(())
    }

    /// Replaces row `i`.
    pub fn set(&mut self, i: usize, row: &[f32]) -> Result<()> {
        self.check(row)?;
        if i >= self.len {
            return Err(Error::Internal(format!(
                "vector row {i} out of {}",
                self.len
            )));
        }
        let mut codes = Vec::with_capacity(self.dim);
        let scale = quantize(row, &mut codes);
        let mut bits = Vec::with_capacity(words(self.dim));
        sign_bits(dequantized(&codes, scale), &self.center, &mut bits);
        let chunk = Arc::make_mut(&mut self.chunks[i / CHUNK_ROWS]);
        let at = (i % CHUNK_ROWS) * self.dim;
        chunk.codes[at..at + self.dim].copy_from_slice(&codes);
        chunk.scales[i % CHUNK_ROWS] = scale;
        let w = words(self.dim);
        chunk.bits[(i % CHUNK_ROWS) * w..][..w].copy_from_slice(&bits);
        Ok(())
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn codes(&self, i: usize) -> (&[i8], f32) {
        let c = &self.chunks[i / CHUNK_ROWS];
        let at = (i % CHUNK_ROWS) * self.dim;
        (&c.codes[at..at + self.dim], c.scales[i % CHUNK_ROWS])
    }

    /// Row `i`, as stored (dequantized).
    pub fn row(&self, i: usize) -> Vec<f32> {
        let (codes, scale) = self.codes(i);
        dequantized(codes, scale).collect()
    }

    /// `row(i) · q` (the cosine for unit vectors).
    pub fn dot(&self, i: usize, q: &[f32]) -> f32 {
        let (codes, scale) = self.codes(i);
        crate::encoder::dot_with(codes, q) * scale
    }

    /// The `k` rows most similar to `query` among those `keep` accepts, best first: exact
    /// up to [`PREFILTER_ROWS`] rows, else the best of the [`RESCORE`] rows whose sign bits
    /// are closest to the query's.
    pub fn nearest(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<(u32, f32)> {
        if self.len <= PREFILTER_ROWS || k >= RESCORE || query.len() != self.dim {
            return self.nearest_exact(query, k, keep);
        }
        let mut q = Vec::with_capacity(words(self.dim));
        sign_bits(query.iter().copied(), &self.center, &mut q);
        let mut dist = Vec::with_capacity(self.len);
        for c in &self.chunks {
            hamming(&c.bits, &q, &mut dist);
        }
        let mut count = vec![0usize; self.dim + 1];
        for &d in &dist {
            count[d as usize] += 1;
        }
        // The rows at the smallest distances, about RESCORE of them once `keep` has had its
        // say; `keep` is asked only about rows under the cut-off, which widens as needed.
        let mut want = RESCORE;
        let rows = loop {
            let mut cut = 0;
            let mut below = count[0];
            while cut < self.dim && below < want {
                cut += 1;
                below += count[cut];
            }
            let rows: Vec<usize> = (0..self.len)
                .filter(|&i| dist[i] as usize <= cut && keep(i))
                .collect();
            if rows.len() >= RESCORE || cut == self.dim {
                break rows;
            }
            want *= 4;
        };
        // Rescore with the query quantized too (an integer dot), then give the best k
        // the same f32-query score the exact scan gives.
        let mut q8 = Vec::with_capacity(self.dim);
        let q_scale = quantize(query, &mut q8);
        let mut scored: Vec<(u32, f32)> = rows
            .into_iter()
            .map(|i| {
                let (codes, scale) = self.codes(i);
                (i as u32, dot_i8(codes, &q8) as f32 * scale * q_scale)
            })
            .collect();
        let by_score = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        scored.sort_by(by_score);
        scored.truncate(k);
        for s in &mut scored {
            s.1 = self.dot(s.0 as usize, query);
        }
        scored.sort_by(by_score);
        scored
    }

    /// [`Vectors::nearest`] by scoring every row with its int8 codes.
    pub fn nearest_exact(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<(u32, f32)> {
        if k == 0 || query.len() != self.dim || self.dim == 0 {
            return Vec::new();
        }
        // A bounded min-heap keyed on similarity.
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(Score, u32)>> =
            std::collections::BinaryHeap::with_capacity(k + 1);
        let rows = self
            .chunks
            .iter()
            .flat_map(|c| c.codes.chunks_exact(self.dim).zip(&c.scales))
            .enumerate();
        for (i, (codes, scale)) in rows {
            if !keep(i) {
                continue;
            }
            let s = Score(crate::encoder::dot_with(codes, query) * scale);
            if heap.len() < k {
                heap.push(std::cmp::Reverse((s, i as u32)));
            } else if heap
                .peek()
                .is_some_and(|std::cmp::Reverse((worst, _))| s > *worst)
            {
                heap.pop();
                heap.push(std::cmp::Reverse((s, i as u32)));
            }
        }
        let mut out: Vec<(u32, f32)> = heap
            .into_iter()
            .map(|std::cmp::Reverse((s, i))| (i, s.0))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// Writes the file (`MAGIC`, dim, count, rows as f32) and syncs it, a row at a time.
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |e| Error::io(path, e);
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&(self.dim as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&(self.len as u64).to_le_bytes())
            .map_err(io)?;
        let mut bytes = Vec::with_capacity(self.dim * 4);
        for i in 0..self.len {
            bytes.clear();
            for v in self.row(i) {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            out.write_all(&bytes).map_err(io)?;
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)
    }

    /// Reads a file written by [`Vectors::write`], checking its size. Streams it: the f32
    /// rows are never all in memory at once (at 1M products they are 2 GB).
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let io = |e| Error::io(path, e);
        let corrupt =
            |why: &str| Error::Internal(format!("{}: corrupt vector file ({why})", path.display()));
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut file = std::io::BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; 24];
        if size < 24 || file.read_exact(&mut header).is_err() || &header[..8] != MAGIC {
            return Err(corrupt("bad header"));
        }
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or_default());
        let (dim, count) = (word(8), word(16));
        let expected = dim
            .checked_mul(count)
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(24));
        if dim == 0 || expected != Some(size) {
            return Err(corrupt("size does not match its header"));
        }
        let dim = dim as usize;
        let mut v = Vectors::empty(dim);
        let mut bytes = vec![0u8; dim * 4];
        let mut row = vec![0f32; dim];
        for _ in 0..count {
            file.read_exact(&mut bytes).map_err(io)?;
            for (x, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            v.push(&row)?;
        }
        Ok(v.centred())
    }
}

/// An f32 with a total order, for the heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f32);
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_rows_keep_dot_products_of_unit_vectors_within_a_percent() {
        let mut rng = crate::util::Rng(3);
        let unit = |rng: &mut crate::util::Rng| {
            let v: Vec<f32> = (0..512).map(|_| rng.unit() as f32 - 0.5).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let rows: Vec<Vec<f32>> = (0..50).map(|_| unit(&mut rng)).collect();
        let v = Vectors::from_rows(512, rows.clone()).unwrap();
        let q = unit(&mut rng);
        for (i, r) in rows.iter().enumerate() {
            let exact: f32 = r.iter().zip(&q).map(|(a, b)| a * b).sum();
            assert!((v.dot(i, &q) - exact).abs() < 0.01, "row {i}");
        }
        assert_eq!(v.dot(0, &rows[0]).round(), 1.0);
        // The integer dot of the rescoring pass is exact at every length, extremes included.
        for n in [0, 1, 31, 32, 33, 512, 515] {
            let a: Vec<i8> = (0..n).map(|i| ((i * 37) % 255) as u8 as i8).collect();
            let b: Vec<i8> = (0..n)
                .map(|i| if i % 3 == 0 { -128 } else { 127 })
                .collect();
            let want: i32 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
            assert_eq!(dot_i8(&a, &b), want, "length {n}");
        }
    }

    #[test]
    fn nearest_respects_the_filter_and_order() {
        let v = Vectors::from_rows(
            2,
            vec![
                vec![1.0, 0.0],
                vec![0.0, 1.0],
                vec![0.8, 0.6],
                vec![0.6, 0.8],
            ],
        )
        .unwrap();
        assert_eq!(
            v.nearest(&[1.0, 0.0], 2, |_| true)
                .iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert_eq!(
            v.nearest(&[1.0, 0.0], 2, |i| i != 0)
                .iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn the_sign_bit_prefilter_finds_the_exact_neighbours_of_clustered_rows() {
        let mut rng = crate::util::Rng(11);
        let mut gauss = |scale: f32| {
            (0..96)
                .map(|_| (rng.unit() as f32 - 0.5) * scale)
                .collect::<Vec<f32>>()
        };
        let unit = |v: Vec<f32>| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        // A shared direction (as BERT embeddings have), 40 topics, and noise per row.
        let common: Vec<f32> = gauss(1.0).iter().map(|x| x + 2.0).collect();
        let topics: Vec<Vec<f32>> = (0..40).map(|_| gauss(1.0)).collect();
        let rows: Vec<Vec<f32>> = (0..PREFILTER_ROWS + 5_000)
            .map(|i| {
                let noise: Vec<f32> = gauss(0.6);
                unit(
                    (0..96)
                        .map(|d| common[d] + topics[i % 40][d] + noise[d])
                        .collect(),
                )
            })
            .collect();
        let v = Vectors::from_rows(96, rows.clone()).unwrap();
        let (mut overlap, queries) = (0.0, 20);
        for qi in 0..queries {
            let target = qi * 997;
            let q = unit(
                rows[target]
                    .iter()
                    .zip(gauss(0.05))
                    .map(|(x, e)| x + e)
                    .collect(),
            );
            let exact = v.nearest_exact(&q, 50, |_| true);
            let fast = v.nearest(&q, 50, |_| true);
            assert_eq!(fast[0].0 as usize, target, "the row itself comes first");
            assert!(fast.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            let got: std::collections::HashSet<u32> = fast.iter().map(|x| x.0).collect();
            overlap += exact.iter().filter(|x| got.contains(&x.0)).count() as f64 / 50.0;
            let odd = v.nearest(&q, 50, |i| i % 2 == 1);
            assert_eq!(odd.len(), 50);
            assert!(odd.iter().all(|x| x.0 % 2 == 1), "the filter holds");
            // A filter that keeps only a handful of rows still finds all of them.
            assert_eq!(v.nearest(&q, 50, |i| i % 5_000 == 7).len(), 5);
        }
        assert!(overlap / queries as f64 > 0.9, "overlap {overlap}");
    }

    #[test]
    fn round_trips_and_detects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.bin");
        let v = Vectors::from_rows(3, vec![vec![0.1, 0.2, 0.3], vec![0.4, 0.5, 0.6]]).unwrap();
        v.write(&path).unwrap();
        // Writing the dequantized rows and reading them back gives the same codes.
        assert_eq!(Vectors::read(&path).unwrap(), v);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(Vectors::read(&path).is_err());
    }

    #[test]
    fn a_changed_row_leaves_earlier_copies_alone() {
        let rows: Vec<Vec<f32>> = (0..CHUNK_ROWS + 3)
            .map(|i| vec![(i % 100) as f32 / 100.0, 1.0])
            .collect();
        let mut v = Vectors::from_rows(2, rows).unwrap();
        let before = v.clone();
        v.set(CHUNK_ROWS + 1, &[-0.5, -1.0]).unwrap();
        v.push(&[0.7, 0.7]).unwrap();
        // Within half a quantization step of the row's largest component.
        let close = |a: Vec<f32>, b: &[f32]| {
            let step = b.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= step / 2.0 + 1e-6)
        };
        let was = ((CHUNK_ROWS + 1) % 100) as f32 / 100.0;
        assert!(close(before.row(CHUNK_ROWS + 1), &[was, 1.0]));
        assert!(close(v.row(CHUNK_ROWS + 1), &[-0.5, -1.0]));
        assert_eq!((before.len(), v.len()), (CHUNK_ROWS + 3, CHUNK_ROWS + 4));
        assert!(close(v.row(CHUNK_ROWS + 3), &[0.7, 0.7]));
        assert!(v.set(v.len(), &[0.0, 0.0]).is_err());
        assert!(v.push(&[1.0]).is_err());
    }
}

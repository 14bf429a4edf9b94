//! Product vectors: one unit-length embedding per product row, stored beside the tantivy
//! index as a flat little-endian f32 file, held in memory as int8 codes with one f32 scale
//! per row (a quarter of the memory and of the bytes a scan reads), and the
//! nearest-neighbour scan over them.
//!
//! Quantization is symmetric per row: `scale = max |x| / 127`, `code = round(x / scale)`,
//! so `x ≈ code × scale` (error at most `scale / 2` per component).
//!
//! Above [`ANN_ROWS`] rows, [`Vectors::nearest`] searches an HNSW graph ([usearch], cosine)
//! built when the rows are loaded and kept current by [`Vectors::push`] and
//! [`Vectors::set`], and rescores what it finds with the exact query; below it the scan is
//! exact. The graph holds the rows' own int8 codes (and is searched with the query's):
//! cosine ignores the per-row scale, and usearch's own float-to-int8 cast divides by the
//! L2 norm and truncates, which leaves a 512-dim unit vector about a dozen levels per
//! component and lost the graph a third of the worst query's neighbours at 1M rows. A filter is applied inside the graph search; when it leaves fewer than
//! `k` rows reachable, the exact scan answers instead. The graph is shared by the copies
//! of a [`Vectors`] (snapshots): rows past a copy's length are never returned to it.
//!
//! Size: ~560 lines, 150 of them tests; the int8 store, the graph and the scan share one
//! row numbering, so they stay in one file.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SRVEC01\0";

/// Rows per storage chunk: an update copies one chunk, not the whole matrix.
const CHUNK_ROWS: usize = 4096;

/// Rows above which [`Vectors::nearest`] searches the HNSW graph.
pub const ANN_ROWS: usize = 20_000;

/// The graph is asked for this many times `k` rows, rescored with the row codes.
const OVERSAMPLE: usize = 4;

/// A query whose best `k` rows score within this much of each other sits in a dense
/// cluster; its graph search is repeated [`DENSE_WIDER`] times wider.
const DENSE_SPAN: f32 = 0.08;
/// How much wider the second search of a dense query looks.
const DENSE_WIDER: usize = 4;
/// Only above this many rows is a dense query searched again: most queries of m3e-small
/// are dense by [`DENSE_SPAN`], and at 100k rows the wider walk costs what the exact scan
/// does (3.7-5.0 ms against 3.8 ms), which took the 100k load test's p50 from 8 to 17 ms.
/// At 1M it costs 15.7 ms against 108 ms and lifts the worst query's recall@100 from
/// 0.16-0.66 to 0.83 (BENCHMARKS.md).
const DENSE_WIDER_ROWS: usize = 250_000;

/// Graph degree (usearch's connectivity, HNSW's M).
const CONNECTIVITY: usize = 16;
/// Candidates kept while inserting (efConstruction).
const EXPANSION_ADD: usize = 128;
/// Candidates kept while searching (ef), at least `k`.
const EXPANSION_SEARCH: usize = 256;

/// Searches the graph can run at once. usearch keeps one search context per thread slot
/// and fails a search that finds none free ("Reserve capacity ahead of searches!"); the
/// server runs searches on a blocking pool with many more threads than cores, and the
/// failed ones fell back to the exact scan (a third of the searches at 4 connections on
/// 2 cores). A slot costs a few kilobytes.
const GRAPH_SLOTS: usize = 256;

/// One chunk of rows: their codes, row-major, and one scale per row.
#[derive(Debug, Clone, Default, PartialEq)]
struct Chunk {
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// The HNSW graph over the rows (keys are row numbers).
pub struct Ann(usearch::Index);

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ann({} rows)", self.0.size())
    }
}

/// Two stores are equal by their rows; the graph is derived from them.
impl PartialEq for Ann {
    fn eq(&self, _: &Ann) -> bool {
        true
    }
}

/// Where the graph of the vectors in `path` is saved.
fn graph_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("hnsw")
}

fn ann_err(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("vector graph: {e}"))
}

impl Ann {
    fn new(dim: usize, capacity: usize) -> Result<Ann> {
        let index = usearch::Index::new(&usearch::IndexOptions {
            dimensions: dim,
            metric: usearch::MetricKind::Cos,
            quantization: usearch::ScalarKind::I8,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        })
        .map_err(ann_err)?;
        index
            .reserve_capacity_and_threads(capacity.max(16), GRAPH_SLOTS)
            .map_err(ann_err)?;
        Ok(Ann(index))
    }

    /// Adds (or replaces) row `key` by its int8 codes, growing the graph's capacity as
    /// needed.
    fn put(&self, key: usize, codes: &[i8]) -> Result<()> {
        let key = key as u64;
        if self.0.contains(key) {
            self.0.remove(key).map_err(ann_err)?;
        }
        if self.0.size() + 1 > self.0.capacity() {
            self.0
                .reserve_capacity_and_threads(self.0.capacity() * 2, GRAPH_SLOTS)
                .map_err(ann_err)?;
        }
        self.0.add(key, codes).map_err(ann_err)
    }
}

/// A row-major matrix of product vectors, stored in shared chunks so that a copy is cheap
/// and changing a row copies only its chunk (searches keep reading the old snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    dim: usize,
    len: usize,
    chunks: Vec<Arc<Chunk>>,
    /// The graph, once more than [`ANN_ROWS`] rows were loaded.
    ann: Option<Arc<Ann>>,
}

/// The components of the row `codes × scale`.
fn dequantized(codes: &[i8], scale: f32) -> impl Iterator<Item = f32> + '_ {
    codes.iter().map(move |&c| f32::from(c) * scale)
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
            ann: None,
        }
    }

    /// Vectors from rows that all have length `dim`.
    pub fn from_rows(dim: usize, rows: Vec<Vec<f32>>) -> Result<Self> {
        let mut v = Vectors::empty(dim);
        for r in rows {
            v.push(&r)?;
        }
        v.indexed()
    }

    /// Builds the graph when there are more than [`ANN_ROWS`] rows (all cores).
    fn indexed(mut self) -> Result<Self> {
        if self.len <= ANN_ROWS {
            return Ok(self);
        }
        let ann = Ann::new(self.dim, self.len)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= self.len {
                        return;
                    }
                    if let Err(e) = ann.0.add(i as u64, self.codes(i).0) {
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(ann_err(e));
                        return;
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        self.ann = Some(Arc::new(ann));
        Ok(self)
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
            }));
        }
        let last = Arc::make_mut(self.chunks.last_mut().expect("a chunk was just ensured"));
        let scale = quantize(row, &mut last.codes);
        last.scales.push(scale);
        if let Some(ann) = &self.ann {
            ann.put(self.len, self.codes(self.len).0)?;
        }
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
        let chunk = Arc::make_mut(&mut self.chunks[i / CHUNK_ROWS]);
        let at = (i % CHUNK_ROWS) * self.dim;
        chunk.codes[at..at + self.dim].copy_from_slice(&codes);
        chunk.scales[i % CHUNK_ROWS] = scale;
        if let Some(ann) = &self.ann {
            ann.put(i, &codes)?;
        }
        Ok(())
    }

    /// Whether the rows are searched through the graph.
    pub fn has_graph(&self) -> bool {
        self.ann.is_some()
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

    /// The `k` rows most similar to `query` among those `keep` accepts, best first: by the
    /// graph above [`ANN_ROWS`] rows (rescored with the exact query), else by the exact
    /// scan, which also answers when the filter leaves the graph fewer than `k` rows.
    pub fn nearest(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<(u32, f32)> {
        let Some(ann) = self
            .ann
            .as_ref()
            .filter(|_| query.len() == self.dim && k > 0)
        else {
            return self.nearest_exact(query, k, keep);
        };
        // A filter that keeps few rows makes the graph walk past many it rejects; the
        // exact scan then scores only the kept ones. The share is estimated on a sample.
        let sample = 256.min(self.len);
        let kept = (0..sample).filter(|j| keep(j * self.len / sample)).count();
        if kept * 4 < sample {
            return self.nearest_exact(query, k, keep);
        }
        let mut codes = Vec::with_capacity(self.dim);
        quantize(query, &mut codes);
        let Some(found) = self.graph_search(ann, query, &codes, k, k * OVERSAMPLE, &keep) else {
            return self.nearest_exact(query, k, keep);
        };
        // A query in a dense cluster (its k best within DENSE_SPAN) has many more
        // near-equals than the graph walk kept: in a large catalog, search again, wider.
        let dense = found.len() == k && found[0].1 - found[k - 1].1 < DENSE_SPAN;
        if !dense || self.len < DENSE_WIDER_ROWS {
            return found;
        }
        let wider = k * OVERSAMPLE * DENSE_WIDER;
        self.graph_search(ann, query, &codes, k, wider, &keep)
            .unwrap_or(found)
    }

    /// The best `k` of the `wanted` rows the graph finds for `codes` (the query's int8
    /// codes), rescored with `query`; `None` when the graph could not search or reached
    /// fewer than `k` rows.
    fn graph_search(
        &self,
        ann: &Ann,
        query: &[f32],
        codes: &[i8],
        k: usize,
        wanted: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Option<Vec<(u32, f32)>> {
        let len = self.len;
        let found = ann.0.filtered_search(codes, wanted, |key| {
            (key as usize) < len && keep(key as usize)
        });
        let keys = match found {
            Ok(m) if m.keys.len() >= k.min(len) => m.keys,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!("vector graph search failed, scanning instead: {e}");
                return None;
            }
        };
        let mut scored: Vec<(u32, f32)> = keys
            .into_iter()
            .map(|key| (key as u32, self.dot(key as usize, query)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        Some(scored)
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
        file.sync_all().map_err(io)?;
        // The graph beside it, so opening does not build it again.
        if let Some(ann) = &self.ann {
            let graph = graph_path(path);
            let name = graph.to_str().ok_or_else(|| ann_err("path is not UTF-8"))?;
            ann.0.save(name).map_err(ann_err)?;
        }
        Ok(())
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
        // The graph saved beside the file, when it holds exactly these rows.
        let graph = graph_path(path);
        if v.len > ANN_ROWS && graph.is_file() {
            let ann = Ann::new(v.dim, v.len)?;
            let loaded = graph
                .to_str()
                .is_some_and(|name| ann.0.load(name).is_ok() && ann.0.size() == v.len);
            if loaded {
                ann.0.change_expansion_search(EXPANSION_SEARCH);
                v.ann = Some(Arc::new(ann));
                return Ok(v);
            }
            tracing::warn!(file = %graph.display(), "the saved vector graph does not match; building it again");
        }
        v.indexed()
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
    fn the_graph_finds_the_exact_neighbours_of_clustered_rows_and_follows_writes() {
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
        let rows: Vec<Vec<f32>> = (0..ANN_ROWS + 5_000)
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
        assert!(v.has_graph());
        assert!(overlap / queries as f64 > 0.95, "overlap {overlap}");
        // Writes reach the graph: a new row and a changed one are found; an earlier copy
        // (a snapshot) never gets rows past its length.
        let before = v.clone();
        let mut v = v;
        let fresh = unit(gauss(1.0));
        v.push(&fresh).unwrap();
        assert_eq!(v.nearest(&fresh, 5, |_| true)[0].0 as usize, rows.len());
        assert!(before
            .nearest(&fresh, 5, |_| true)
            .iter()
            .all(|x| (x.0 as usize) < rows.len()));
        let moved = unit(gauss(1.0));
        v.set(3, &moved).unwrap();
        assert_eq!(v.nearest(&moved, 5, |_| true)[0].0, 3);
    }

    /// Regression: usearch had one search slot per core, so with more searches at once
    /// than cores (the server's blocking pool) a search failed and fell back to the
    /// exact scan.
    #[test]
    fn graph_search_survives_more_concurrent_searches_than_cores() {
        let mut rng = crate::util::Rng(5);
        let rows: Vec<Vec<f32>> = (0..ANN_ROWS + 100)
            .map(|_| (0..32).map(|_| rng.unit() as f32 - 0.5).collect())
            .collect();
        let v = Vectors::from_rows(32, rows.clone()).unwrap();
        let ann = v.ann.as_deref().expect("above ANN_ROWS there is a graph");
        let threads = 4 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 8;
        let start = std::sync::Barrier::new(threads);
        let failed = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (v, start, failed, q) = (&v, &start, &failed, &rows[t * 31]);
                s.spawn(move || {
                    start.wait();
                    // The filter's first call holds the search (and its slot) for a while,
                    // so that every thread's search is in flight at once.
                    let first = std::cell::Cell::new(true);
                    let keep = |_| {
                        if first.replace(false) {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        true
                    };
                    let mut codes = Vec::new();
                    quantize(q, &mut codes);
                    if v.graph_search(ann, q, &codes, 10, 40, keep).is_none() {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(failed.into_inner(), 0, "graph searches that fell back");
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
    fn the_graph_is_saved_beside_the_rows_and_rebuilt_when_it_does_not_match() {
        let mut rng = crate::util::Rng(5);
        let rows: Vec<Vec<f32>> = (0..ANN_ROWS + 10)
            .map(|_| {
                let v: Vec<f32> = (0..8).map(|_| rng.unit() as f32 - 0.5).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / n).collect()
            })
            .collect();
        let v = Vectors::from_rows(8, rows.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.bin");
        v.write(&path).unwrap();
        assert!(graph_path(&path).is_file());
        let back = Vectors::read(&path).unwrap();
        assert!(back.has_graph());
        assert_eq!(back, v);
        for q in rows.iter().step_by(4001) {
            assert_eq!(back.nearest(q, 10, |_| true), v.nearest(q, 10, |_| true));
        }
        std::fs::write(graph_path(&path), b"not a graph").unwrap();
        let rebuilt = Vectors::read(&path).unwrap();
        assert!(rebuilt.has_graph());
        assert_eq!(rebuilt.nearest(&rows[7], 1, |_| true)[0].0, 7);
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

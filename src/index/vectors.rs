//! Product vectors: one unit-length embedding per product row, stored beside the tantivy
//! index as a flat little-endian f32 file, and the exact nearest-neighbour scan over them.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::encoder::dot;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SRVEC01\0";

/// Rows per storage chunk: an update copies one chunk, not the whole matrix.
const CHUNK_ROWS: usize = 4096;

/// A row-major matrix of product vectors, stored in shared chunks so that a copy is cheap
/// and changing a row copies only its chunk (searches keep reading the old snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    dim: usize,
    len: usize,
    chunks: Vec<Arc<Vec<f32>>>,
}

impl Vectors {
    /// No rows yet.
    pub fn empty(dim: usize) -> Self {
        Vectors {
            dim,
            len: 0,
            chunks: Vec::new(),
        }
    }

    /// Vectors from rows that all have length `dim`.
    pub fn from_rows(dim: usize, rows: Vec<Vec<f32>>) -> Result<Self> {
        let mut v = Vectors::empty(dim);
        for r in rows {
            v.push(&r)?;
        }
        Ok(v)
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
            self.chunks
                .push(Arc::new(Vec::with_capacity(CHUNK_ROWS * self.dim)));
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        Arc::make_mut(last).extend_from_slice(row);
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
        let at = (i % CHUNK_ROWS) * self.dim;
        Arc::make_mut(&mut self.chunks[i / CHUNK_ROWS])[at..at + self.dim].copy_from_slice(row);
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

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let at = (i % CHUNK_ROWS) * self.dim;
        &self.chunks[i / CHUNK_ROWS][at..at + self.dim]
    }

    /// The `k` rows most similar to `query` among those `keep` accepts, best first.
    pub fn nearest(
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
            .flat_map(|c| c.chunks_exact(self.dim))
            .enumerate();
        for (i, row) in rows {
            if !keep(i) {
                continue;
            }
            let s = Score(dot(query, row));
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

    /// Writes the file (`MAGIC`, dim, count, rows) and syncs it.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::with_capacity(24 + self.len * self.dim * 4);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.len as u64).to_le_bytes());
        for v in self.chunks.iter().flat_map(|c| c.iter()) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(path, e))
    }

    /// Reads a file written by [`Vectors::write`], checking its size.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let corrupt =
            |why: &str| Error::Internal(format!("{}: corrupt vector file ({why})", path.display()));
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(corrupt("bad header"));
        }
        let dim = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default()) as usize;
        let count = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default()) as usize;
        if dim == 0 || bytes.len() != 24 + dim * count * 4 {
            return Err(corrupt("size does not match its header"));
        }
        let mut v = Vectors::empty(dim);
        let mut row = Vec::with_capacity(dim);
        for c in bytes[24..].chunks_exact(4) {
            row.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            if row.len() == dim {
                v.push(&row)?;
                row.clear();
            }
        }
        Ok(v)
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
    fn round_trips_and_detects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.bin");
        let v = Vectors::from_rows(3, vec![vec![0.1, 0.2, 0.3], vec![0.4, 0.5, 0.6]]).unwrap();
        v.write(&path).unwrap();
        assert_eq!(Vectors::read(&path).unwrap(), v);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(Vectors::read(&path).is_err());
    }

    #[test]
    fn a_changed_row_leaves_earlier_copies_alone() {
        let rows: Vec<Vec<f32>> = (0..CHUNK_ROWS + 3).map(|i| vec![i as f32, 1.0]).collect();
        let mut v = Vectors::from_rows(2, rows).unwrap();
        let before = v.clone();
        v.set(CHUNK_ROWS + 1, &[-1.0, -1.0]).unwrap();
        v.push(&[7.0, 7.0]).unwrap();
        assert_eq!(before.row(CHUNK_ROWS + 1), &[(CHUNK_ROWS + 1) as f32, 1.0]);
        assert_eq!(v.row(CHUNK_ROWS + 1), &[-1.0, -1.0]);
        assert_eq!((before.len(), v.len()), (CHUNK_ROWS + 3, CHUNK_ROWS + 4));
        assert_eq!(v.row(CHUNK_ROWS + 3), &[7.0, 7.0]);
        assert!(v.set(v.len(), &[0.0, 0.0]).is_err());
        assert!(v.push(&[1.0]).is_err());
    }
}

//! Product vectors: one unit-length embedding per product row, stored beside the tantivy
//! index as a flat little-endian f32 file, and the exact nearest-neighbour scan over them.

use std::io::Write;
use std::path::Path;

use crate::encoder::dot;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SRVEC01\0";

/// A dense row-major matrix of product vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    dim: usize,
    data: Vec<f32>,
}

impl Vectors {
    /// Vectors from rows that all have length `dim`.
    pub fn from_rows(dim: usize, rows: Vec<Vec<f32>>) -> Result<Self> {
        let mut data = Vec::with_capacity(dim * rows.len());
        for (i, r) in rows.into_iter().enumerate() {
            if r.len() != dim {
                return Err(Error::Internal(format!(
                    "vector {i} has length {}, expected {dim}",
                    r.len()
                )));
            }
            data.extend(r);
        }
        Ok(Vectors { dim, data })
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The `k` rows most similar to `query` among those `keep` accepts, best first.
    pub fn nearest(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<(u32, f32)> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        // A bounded min-heap keyed on similarity.
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(Score, u32)>> =
            std::collections::BinaryHeap::with_capacity(k + 1);
        for i in 0..self.len() {
            if !keep(i) {
                continue;
            }
            let s = Score(dot(query, self.row(i)));
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
        let mut bytes = Vec::with_capacity(24 + self.data.len() * 4);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.dim as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.len() as u64).to_le_bytes());
        for v in &self.data {
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
        if bytes.len() != 24 + dim * count * 4 {
            return Err(corrupt("size does not match its header"));
        }
        let data = bytes[24..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Vectors { dim, data })
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
}

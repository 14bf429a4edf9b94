//! Embedding cache: product vectors keyed by a hash of the encoded text, one file per
//! model, so a rebuild re-encodes only products whose text changed and a new model
//! re-encodes everything.
//!
//! `DATA_DIR/embeddings/<model>-<hash of model id>.bin` = `MAGIC`, dim (u64 LE), then
//! fixed-size records `[16-byte key][dim × f32 LE]`, appended with `O_APPEND` (several
//! processes may append; each batch is one write) and synced before a write is
//! acknowledged. A torn last record (a crash mid-append) is cut off on open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encoder::Encoder;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SREMB01\0";
const HEADER: u64 = 16;

/// Cache key of an encoded text.
pub type Key = [u8; 16];

/// The key of `text`: the first 16 bytes of its SHA-256.
pub fn key(text: &str) -> Key {
    let digest = Sha256::digest(text.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

/// An open cache file for one model.
pub struct EmbeddingCache {
    path: PathBuf,
    file: File,
    dim: usize,
    offsets: HashMap<Key, u64>,
}

impl EmbeddingCache {
    /// The cache file of `model_id` under `data_dir`.
    pub fn path(data_dir: &Path, model_id: &str) -> PathBuf {
        let safe: String = model_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(64)
            .collect();
        let h = key(model_id);
        data_dir.join("embeddings").join(format!(
            "{safe}-{:02x}{:02x}{:02x}{:02x}.bin",
            h[0], h[1], h[2], h[3]
        ))
    }

    /// Opens (or creates) the cache of `model_id` with vectors of length `dim`.
    pub fn open(data_dir: &Path, model_id: &str, dim: usize) -> Result<Self> {
        let path = Self::path(data_dir, model_id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let io = |e| Error::io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER {
            // New (or a header torn by a crash): start over.
            file.set_len(0).map_err(io)?;
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&(dim as u64).to_le_bytes());
            file.write_all(&header)
                .and_then(|_| file.sync_all())
                .map_err(io)?;
        } else {
            let mut header = [0u8; HEADER as usize];
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.read_exact(&mut header).map_err(io)?;
            let stored = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
            if &header[..8] != MAGIC || stored != dim as u64 {
                return Err(Error::Internal(format!(
                    "{}: not an embedding cache of {dim}-dimensional vectors; delete it to start over",
                    path.display()
                )));
            }
        }
        let record = 16 + dim as u64 * 4;
        let len = file.metadata().map_err(io)?.len();
        let whole = HEADER + (len - HEADER) / record * record;
        if whole != len {
            tracing::warn!(path = %path.display(), "cutting a torn record off the embedding cache");
            file.set_len(whole).map_err(io)?;
        }
        let mut offsets = HashMap::new();
        let mut k = [0u8; 16];
        let mut at = HEADER;
        while at < whole {
            file.read_exact_at(&mut k, at).map_err(io)?;
            offsets.insert(k, at + 16);
            at += record;
        }
        Ok(EmbeddingCache {
            path,
            file,
            dim,
            offsets,
        })
    }

    /// Number of cached vectors.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The cached vector of `text`.
    pub fn get(&self, text: &str) -> Result<Option<Vec<f32>>> {
        let Some(&at) = self.offsets.get(&key(text)) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; self.dim * 4];
        self.file
            .read_exact_at(&mut bytes, at)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    /// Appends vectors (one write, then a sync).
    pub fn put(&mut self, items: &[(&str, &[f32])]) -> Result<()> {
        let fresh: Vec<(Key, &[f32])> = items
            .iter()
            .map(|(t, v)| (key(t), *v))
            .filter(|(k, _)| !self.offsets.contains_key(k))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(fresh.len() * (16 + self.dim * 4));
        for (k, v) in &fresh {
            if v.len() != self.dim {
                return Err(Error::Internal(format!(
                    "vector of length {}, cache holds {}",
                    v.len(),
                    self.dim
                )));
            }
            bytes.extend_from_slice(k);
            v.iter()
                .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
        }
        let io = |e| Error::io(&self.path, e);
        let start = self.file.metadata().map_err(io)?.len();
        self.file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data())
            .map_err(io)?;
        // Another process may have appended in between; re-read where ours landed.
        let record = 16 + self.dim as u64 * 4;
        let end = self.file.metadata().map_err(io)?.len();
        let mut at = start;
        let mut k = [0u8; 16];
        while at + record <= end {
            self.file.read_exact_at(&mut k, at).map_err(io)?;
            self.offsets.insert(k, at + 16);
            at += record;
        }
        Ok(())
    }

    /// Vectors of `texts`: cached ones are read, the rest encoded (in slices, calling
    /// `progress(done)` and stopping with [`Error::Cancelled`] when `cancelled()`) and added.
    /// Returns the vectors and how many came from the cache.
    pub fn encode(
        &mut self,
        encoder: &Encoder,
        texts: &[String],
        mut progress: impl FnMut(usize),
        cancelled: impl Fn() -> bool,
    ) -> Result<(Vec<Vec<f32>>, usize)> {
        let mut out: Vec<Option<Vec<f32>>> = Vec::with_capacity(texts.len());
        for t in texts {
            out.push(self.get(t)?);
        }
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        let hits = texts.len() - missing.len();
        progress(hits);
        let mut encoded = 0;
        for slice in missing.chunks(256) {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let batch: Vec<String> = slice.iter().map(|&i| texts[i].clone()).collect();
            let rows = encoder.encode_documents(&batch, |_| {})?;
            let items: Vec<(&str, &[f32])> = batch
                .iter()
                .zip(&rows)
                .map(|(t, v)| (t.as_str(), v.as_slice()))
                .collect();
            self.put(&items)?;
            for (&i, v) in slice.iter().zip(rows) {
                out[i] = Some(v);
            }
            encoded += slice.len();
            progress(hits + encoded);
        }
        Ok((
            out.into_iter().map(Option::unwrap_or_default).collect(),
            hits,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_vectors_across_opens_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EmbeddingCache::open(dir.path(), "m/1", 2).unwrap();
        c.put(&[("a", &[1.0, 2.0]), ("b", &[3.0, 4.0])]).unwrap();
        c.put(&[("a", &[9.0, 9.0])]).unwrap();
        drop(c);
        let path = EmbeddingCache::path(dir.path(), "m/1");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        let c = EmbeddingCache::open(dir.path(), "m/1", 2).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a").unwrap(), Some(vec![1.0, 2.0]));
        assert_eq!(c.get("b").unwrap(), Some(vec![3.0, 4.0]));
        assert_eq!(c.get("c").unwrap(), None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER + 2 * 24);
        // Another model has its own file; a dimension mismatch is refused.
        assert!(EmbeddingCache::open(dir.path(), "m/2", 2)
            .unwrap()
            .is_empty());
        assert!(EmbeddingCache::open(dir.path(), "m/1", 3).is_err());
    }
}

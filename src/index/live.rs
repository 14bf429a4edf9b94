//! Incremental writes to the live generation: upserts, patches and deletes -> a durable
//! change log -> the tantivy index and the next [`Generation`] snapshot.
//!
//! A write batch is checked against the newest state (an update older than the stored
//! `updated_at` is skipped as stale; replaying the same write changes nothing), the
//! changes that apply are appended to `changes.log` and synced, and only then
//! acknowledged. They become searchable at the next [`LiveWriter::commit`] (the commit
//! policy). The tantivy commit records the last log entry it holds, so after a crash the
//! entries past it are indexed again; the rows are rebuilt from the log on every open.
//!
//! A rebuilt generation names its parent and the parent's log position at build start;
//! before it takes writes, the parent's later entries are copied into its own log, so no
//! write acknowledged during a rebuild is lost.
//!
//! Size: ~650 lines; the change-log format, its replay at open and the apply path of a
//! write must agree exactly, so they stay in one file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantivy::{IndexWriter, Term};

use super::{document, EmbeddingCache, Generation};
use crate::catalog::Product;
use crate::encoder::Encoder;
use crate::error::{Error, Result};

const LOG: &str = "changes.log";

/// A logged change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Insert or replace a whole product.
    Upsert {
        /// The product as it is now.
        product: Product,
    },
    /// Remove a product.
    Delete {
        /// Its id.
        id: String,
        /// When it was deleted, Unix seconds.
        updated_at: i64,
    },
    /// The parent generation's entries up to `upto` were copied into this log.
    Inherit {
        /// The parent.
        from: String,
        /// Its last copied entry.
        upto: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    #[serde(flatten)]
    change: Change,
}

/// A partial update of the fields that change all day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// New price.
    #[serde(default)]
    pub price: Option<f64>,
    /// In stock or not.
    #[serde(default)]
    pub in_stock: Option<bool>,
    /// Units sold.
    #[serde(default)]
    pub sales: Option<u64>,
    /// When the change happened, Unix seconds (default: now).
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// A write as a client asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert or replace (an `updated_at` of 0 means now).
    Upsert(Product),
    /// Change some fields of an existing product.
    Patch(String, Patch),
    /// Remove a product (`None`: now).
    Delete(String, Option<i64>),
}

/// Client writes resolved into changes (see [`LiveWriter::resolve`]).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `(index of the write, its change)`.
    pub changes: Vec<(usize, Change)>,
    /// Outcomes known without applying, by write index.
    pub fixed: Vec<Option<Outcome>>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Stored.
    Applied,
    /// Older than the stored version: skipped.
    Stale,
    /// Same as the stored version: nothing to do.
    Unchanged,
    /// No such product (patch or delete).
    NotFound,
}

/// The append-only change log of one generation.
pub struct ChangeLog {
    path: PathBuf,
    file: File,
    last_seq: u64,
}

impl ChangeLog {
    /// Reads every complete entry of the log in `dir` (a torn last line, from a crash
    /// before its write was acknowledged, is ignored).
    fn read(dir: &Path) -> Result<Vec<Entry>> {
        let path = dir.join(LOG);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut out = Vec::new();
        let mut lines = bytes.split(|&b| b == b'\n').enumerate().peekable();
        while let Some((i, line)) = lines.next() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => out.push(e),
                Err(_) if lines.peek().is_none_or(|(_, rest)| rest.is_empty()) => {
                    tracing::warn!(path = %path.display(), line = i + 1, "ignoring a torn last change-log entry");
                }
                Err(e) => {
                    return Err(Error::Internal(format!(
                        "{}:{}: corrupt change-log entry: {e}",
                        path.display(),
                        i + 1
                    )))
                }
            }
        }
        Ok(out)
    }

    /// The last entry's number in the log of `dir` (0 when empty).
    pub fn last_seq(dir: &Path) -> Result<u64> {
        Ok(Self::read(dir)?.last().map_or(0, |e| e.seq))
    }

    /// Opens the log of `dir` for appending, cutting off a torn last line.
    fn open(dir: &Path) -> Result<(ChangeLog, Vec<Entry>)> {
        let entries = Self::read(dir)?;
        let path = dir.join(LOG);
        let io = |e| Error::io(&path, e);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let bytes = std::fs::read(&path).map_err(io)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) as u64;
        if whole != len {
            file.set_len(whole).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let last_seq = entries.last().map_or(0, |e| e.seq);
        Ok((
            ChangeLog {
                path,
                file,
                last_seq,
            },
            entries,
        ))
    }

    /// Appends `changes` as one write and syncs it; returns their entry numbers.
    fn append(&mut self, changes: &[Change]) -> Result<Vec<u64>> {
        let mut bytes = Vec::new();
        let mut seqs = Vec::with_capacity(changes.len());
        for (i, change) in changes.iter().enumerate() {
            let seq = self.last_seq + 1 + i as u64;
            serde_json::to_writer(
                &mut bytes,
                &Entry {
                    seq,
                    change: change.clone(),
                },
            )
            .map_err(|e| Error::Internal(e.to_string()))?;
            bytes.push(b'\n');
            seqs.push(seq);
        }
        self.file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.last_seq += changes.len() as u64;
        Ok(seqs)
    }
}

/// A tantivy operation a change needs.
enum DocOp {
    Delete(String),
    Add(u64, Arc<Product>),
}

impl Generation {
    /// Applies one change to the rows (not to tantivy); returns what it did and, when
    /// applied, the tantivy operations it needs. `vector` is the product's vector when its
    /// embedding text changed (or it is new) and the generation has vectors.
    fn apply_change(
        &mut self,
        change: &Change,
        vector: Option<&[f32]>,
        ops: &mut Vec<DocOp>,
    ) -> Result<Outcome> {
        match change {
            Change::Inherit { .. } => Ok(Outcome::Unchanged),
            Change::Upsert { product } => {
                let product = Arc::new(product.clone());
                match self.by_id.get(&product.id).map(|&o| o as usize) {
                    Some(ord) => {
                        let old = &self.products[ord];
                        if product.updated_at < old.updated_at {
                            return Ok(Outcome::Stale);
                        }
                        if self.is_live(ord) && **old == *product {
                            return Ok(Outcome::Unchanged);
                        }
                        if let (Some(v), Some(row)) = (self.vectors.as_mut(), vector) {
                            v.set(ord, row)?;
                        }
                        if !self.is_live(ord) {
                            Arc::make_mut(&mut self.removed)[ord] = false;
                            self.removed_count -= 1;
                        }
                        self.max_sales = self.max_sales.max(product.sales);
                        self.products[ord] = product.clone();
                        ops.push(DocOp::Delete(product.id.clone()));
                        ops.push(DocOp::Add(ord as u64, product));
                    }
                    None => {
                        let ord = self.products.len();
                        if let Some(v) = self.vectors.as_mut() {
                            let row = vector.ok_or_else(|| {
                                Error::Internal(format!(
                                    "no vector for new product `{}`",
                                    product.id
                                ))
                            })?;
                            v.push(row)?;
                        }
                        Arc::make_mut(&mut self.by_id).insert(product.id.clone(), ord as u32);
                        Arc::make_mut(&mut self.removed).push(false);
                        self.max_sales = self.max_sales.max(product.sales);
                        self.products.push(product.clone());
                        ops.push(DocOp::Add(ord as u64, product));
                    }
                }
                Ok(Outcome::Applied)
            }
            Change::Delete { id, updated_at } => {
                let Some(ord) = self.by_id.get(id).map(|&o| o as usize) else {
                    return Ok(Outcome::NotFound);
                };
                let old = &self.products[ord];
                if *updated_at < old.updated_at {
                    return Ok(Outcome::Stale);
                }
                if !self.is_live(ord) {
                    return Ok(Outcome::Unchanged);
                }
                // The row stays as a tombstone that remembers when it was deleted.
                let mut tomb = (**old).clone();
                tomb.updated_at = *updated_at;
                self.products[ord] = Arc::new(tomb);
                Arc::make_mut(&mut self.removed)[ord] = true;
                self.removed_count += 1;
                ops.push(DocOp::Delete(id.clone()));
                Ok(Outcome::Applied)
            }
        }
    }

    /// Whether `product` needs a new vector here (new, or its embedding text changed).
    fn needs_vector(&self, product: &Product) -> bool {
        self.vectors.is_some()
            && match self.by_id.get(&product.id) {
                Some(&ord) => {
                    self.products[ord as usize].embedding_text() != product.embedding_text()
                }
                None => true,
            }
    }
}

/// Vectors for the upserts among `changes` that need one: from the cache, else encoded
/// (and cached). Indexed like `changes`.
fn vectors_for(
    gen: &Generation,
    changes: &[Change],
    cache: &mut Option<EmbeddingCache>,
    encoder: Option<&Encoder>,
) -> Result<Vec<Option<Vec<f32>>>> {
    let mut out = vec![None; changes.len()];
    let wanted: Vec<(usize, String)> = changes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Change::Upsert { product } if gen.needs_vector(product) => {
                Some((i, product.embedding_text()))
            }
            _ => None,
        })
        .collect();
    // Without vectors in the generation there is no cache and nothing to compute.
    let (Some(cache), false) = (cache.as_mut(), wanted.is_empty()) else {
        return Ok(out);
    };
    let texts: Vec<String> = wanted.iter().map(|(_, t)| t.clone()).collect();
    let rows = match encoder {
        Some(e) => cache.encode(e, &texts, |_| {}, || false)?.0,
        None => {
            // A row still needs a vector; an uncached text gets a zero vector, which
            // matches nothing, until the next rebuild.
            let dim = gen.vectors.as_ref().map_or(0, |v| v.dim());
            let mut rows = Vec::with_capacity(texts.len());
            for t in &texts {
                rows.push(cache.get(t)?.unwrap_or_else(|| {
                    tracing::warn!("no encoder loaded: a changed product gets a zero vector");
                    vec![0.0; dim]
                }));
            }
            rows
        }
    };
    for ((i, _), v) in wanted.into_iter().zip(rows) {
        out[i] = Some(v);
    }
    Ok(out)
}

fn open_cache(data_dir: &Path, gen: &Generation) -> Result<Option<EmbeddingCache>> {
    match (&gen.meta.model_id, &gen.vectors) {
        (Some(id), Some(v)) => Ok(Some(EmbeddingCache::open(data_dir, id, v.dim())?)),
        _ => Ok(None),
    }
}

/// Applies the generation's own change log to its rows (called when it is opened).
pub(super) fn replay_own_log(
    data_dir: &Path,
    gen: &mut Generation,
    encoder: Option<&Encoder>,
) -> Result<()> {
    let entries = ChangeLog::read(&gen.dir)?;
    if entries.is_empty() {
        return Ok(());
    }
    let mut cache = open_cache(data_dir, gen)?;
    let changes: Vec<Change> = entries.iter().map(|e| e.change.clone()).collect();
    let mut ops = Vec::new();
    // One change at a time: a later change may depend on an earlier one's row.
    for c in &changes {
        let v = vectors_for(gen, std::slice::from_ref(c), &mut cache, encoder)?;
        gen.apply_change(c, v[0].as_deref(), &mut ops)?;
    }
    gen.last_seq = entries.last().map_or(0, |e| e.seq);
    tracing::info!(
        generation = %gen.meta.name,
        changes = entries.len(),
        "replayed the change log"
    );
    Ok(())
}

/// The single writer of a live generation.
pub struct LiveWriter {
    data_dir: PathBuf,
    log: ChangeLog,
    writer: IndexWriter,
    cache: Option<EmbeddingCache>,
    encoder: Option<Arc<Encoder>>,
    next: Generation,
    /// Log entries applied to `next` but not yet committed to tantivy.
    pending: usize,
}

impl LiveWriter {
    /// Takes the writes of `gen` (opened with [`super::open_named`]): indexes log entries
    /// a crash kept out of tantivy and copies the parent's writes made after the build
    /// started. Returns the writer and the snapshot to serve.
    pub fn open(
        data_dir: &Path,
        gen: Generation,
        encoder: Option<Arc<Encoder>>,
    ) -> Result<(LiveWriter, Generation)> {
        let (log, entries) = ChangeLog::open(&gen.dir)?;
        let writer: IndexWriter = gen.index.writer_with_num_threads(1, 50_000_000)?;
        let indexed: u64 = gen
            .index
            .load_metas()?
            .payload
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cache = open_cache(data_dir, &gen)?;
        let mut w = LiveWriter {
            data_dir: data_dir.to_path_buf(),
            log,
            writer,
            cache,
            encoder,
            next: gen,
            pending: 0,
        };
        // Log entries past the tantivy commit: their rows are in `next` already; index
        // them again (delete + add is idempotent).
        let behind: Vec<&Entry> = entries.iter().filter(|e| e.seq > indexed).collect();
        for e in &behind {
            match &e.change {
                Change::Upsert { product } => {
                    if let Some(&ord) = w.next.by_id.get(&product.id) {
                        w.index_ops(vec![DocOp::Delete(product.id.clone())])?;
                        if w.next.is_live(ord as usize) {
                            let p = w.next.products[ord as usize].clone();
                            w.index_ops(vec![DocOp::Add(ord as u64, p)])?;
                        }
                    }
                }
                Change::Delete { id, .. } => w.index_ops(vec![DocOp::Delete(id.clone())])?,
                Change::Inherit { .. } => {}
            }
        }
        w.pending = behind.len();
        // The parent's writes since this generation's build started.
        if let Some(parent) = w.next.meta.parent.clone() {
            let copied = entries
                .iter()
                .filter_map(|e| match &e.change {
                    Change::Inherit { from, upto } if *from == parent => Some(*upto),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
                .max(w.next.meta.parent_seq);
            w.inherit(&parent, copied)?;
        }
        let snapshot = w.commit()?.unwrap_or_else(|| w.next.clone());
        Ok((w, snapshot))
    }

    /// Copies the writes of generation `from` after entry `after` into this generation.
    pub fn inherit(&mut self, from: &str, after: u64) -> Result<usize> {
        let dir = super::generation_dir(&self.data_dir, from);
        if !dir.is_dir() {
            tracing::warn!(
                parent = from,
                "the parent generation is gone; nothing to inherit"
            );
            return Ok(0);
        }
        let entries: Vec<Entry> = ChangeLog::read(&dir)?
            .into_iter()
            .filter(|e| e.seq > after && !matches!(e.change, Change::Inherit { .. }))
            .collect();
        let Some(upto) = entries.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let mut changes: Vec<Change> = entries.into_iter().map(|e| e.change).collect();
        let n = changes.len();
        changes.push(Change::Inherit {
            from: from.to_string(),
            upto,
        });
        self.apply_changes(changes)?;
        tracing::info!(from, changes = n, "replayed writes made during the rebuild");
        Ok(n)
    }

    /// The last change-log entry written.
    pub fn last_seq(&self) -> u64 {
        self.log.last_seq
    }

    /// The newest state, committed or not.
    pub fn next(&self) -> &Generation {
        &self.next
    }

    /// Applies client writes: resolves patches against the newest state, skips stale
    /// and unchanged ones, logs the rest durably. Returns each write's outcome. All or
    /// nothing: on error nothing is applied.
    pub fn write(&mut self, writes: Vec<Write>) -> Result<Vec<Outcome>> {
        let resolved = self.resolve(writes);
        self.apply(resolved)
    }

    /// Client writes as the changes they make to the newest state (an upsert with its
    /// time set, a patch as the whole patched product, a delete with its time), with the
    /// outcomes known already (a patch of an unknown product, a stale patch). Changes
    /// resolved this way apply the same anywhere: replicas share them.
    pub fn resolve(&self, writes: Vec<Write>) -> Resolved {
        let mut changes = Vec::with_capacity(writes.len());
        let mut fixed = vec![None; writes.len()];
        for (i, w) in writes.into_iter().enumerate() {
            match w {
                Write::Upsert(mut p) => {
                    if p.updated_at == 0 {
                        p.updated_at = crate::util::now();
                    }
                    changes.push((i, Change::Upsert { product: p }));
                }
                Write::Delete(id, at) => changes.push((
                    i,
                    Change::Delete {
                        id,
                        updated_at: at.unwrap_or_else(crate::util::now),
                    },
                )),
                Write::Patch(id, patch) => {
                    // Earlier writes of this batch count: resolve against them.
                    let base = changes.iter().rev().find_map(|(_, c)| match c {
                        Change::Upsert { product } if product.id == id => Some(product.clone()),
                        _ => None,
                    });
                    let base = base.or_else(|| self.next.get(&id).map(|p| (**p).clone()));
                    let Some(mut p) = base else {
                        fixed[i] = Some(Outcome::NotFound);
                        continue;
                    };
                    if let Some(v) = patch.price {
                        p.price = Some(v);
                    }
                    if let Some(v) = patch.in_stock {
                        p.in_stock = v;
                    }
                    if let Some(v) = patch.sales {
                        p.sales = v;
                    }
                    let at = patch.updated_at.unwrap_or_else(crate::util::now);
                    if at < p.updated_at {
                        fixed[i] = Some(Outcome::Stale);
                        continue;
                    }
                    p.updated_at = at;
                    changes.push((i, Change::Upsert { product: p }));
                }
            }
        }
        Resolved { changes, fixed }
    }

    /// Applies resolved writes (see [`LiveWriter::resolve`]); returns each write's
    /// outcome. All or nothing: on error nothing is applied.
    pub fn apply(&mut self, resolved: Resolved) -> Result<Vec<Outcome>> {
        let Resolved { changes, mut fixed } = resolved;
        let (idx, changes): (Vec<usize>, Vec<Change>) = changes.into_iter().unzip();
        let outcomes = self.apply_changes(changes)?;
        for (i, o) in idx.into_iter().zip(outcomes) {
            fixed[i] = Some(o);
        }
        Ok(fixed
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::NotFound))
            .collect())
    }

    /// Applies changes another replica resolved (stale and unchanged ones are skipped).
    pub fn apply_shared(&mut self, changes: Vec<Change>) -> Result<Vec<Outcome>> {
        let changes = changes
            .into_iter()
            .filter(|c| !matches!(c, Change::Inherit { .. }))
            .collect();
        self.apply_changes(changes)
    }

    /// Applies changes to a scratch copy, logs the applied ones, then makes the copy the
    /// newest state and queues their tantivy operations.
    fn apply_changes(&mut self, changes: Vec<Change>) -> Result<Vec<Outcome>> {
        let vectors = vectors_for(
            &self.next,
            &changes,
            &mut self.cache,
            self.encoder.as_deref(),
        )?;
        let mut scratch = self.next.clone();
        let mut ops = Vec::new();
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut logged = Vec::new();
        for (c, v) in changes.into_iter().zip(vectors) {
            // A batch may change one product twice; the vector was computed against the
            // state before the batch, so recompute when the text moved in between.
            let v = match (&c, v) {
                (Change::Upsert { product }, None) if scratch.needs_vector(product) => vectors_for(
                    &scratch,
                    std::slice::from_ref(&c),
                    &mut self.cache,
                    self.encoder.as_deref(),
                )?
                .pop()
                .flatten(),
                (_, v) => v,
            };
            let o = scratch.apply_change(&c, v.as_deref(), &mut ops)?;
            if o == Outcome::Applied || matches!(c, Change::Inherit { .. }) {
                logged.push(c);
            }
            outcomes.push(o);
        }
        if !logged.is_empty() {
            let seqs = self.log.append(&logged)?;
            scratch.last_seq = *seqs.last().unwrap_or(&scratch.last_seq);
            self.pending += logged.len();
        }
        self.next = scratch;
        self.index_ops(ops)?;
        Ok(outcomes)
    }

    fn index_ops(&mut self, ops: Vec<DocOp>) -> Result<()> {
        for op in ops {
            match op {
                DocOp::Delete(id) => {
                    self.writer
                        .delete_term(Term::from_field_text(self.next.fields.id, &id));
                }
                DocOp::Add(ord, p) => {
                    self.writer
                        .add_document(document(&self.next.fields, ord, &p))?;
                }
            }
        }
        Ok(())
    }

    /// Whether writes wait for a commit.
    pub fn dirty(&self) -> bool {
        self.pending > 0
    }

    /// Commits pending writes to tantivy and returns the new snapshot to serve (`None`
    /// when nothing was pending).
    pub fn commit(&mut self) -> Result<Option<Generation>> {
        if self.pending == 0 {
            return Ok(None);
        }
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&self.log.last_seq.to_string());
        prepared.commit()?;
        self.next.reader.reload()?;
        self.next.searcher = self.next.reader.searcher();
        self.pending = 0;
        Ok(Some(self.next.clone()))
    }
}

/// Products by id of a snapshot, live ones only (for tests and tools).
pub fn live_products(gen: &Generation) -> HashMap<&str, &Product> {
    gen.products
        .iter()
        .enumerate()
        .filter(|(i, _)| gen.is_live(*i))
        .map(|(_, p)| (p.id.as_str(), &**p))
        .collect()
}

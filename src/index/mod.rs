//! Index: validated products -> an index generation (tantivy BM25 index, product table,
//! product vectors), built beside the live one and published with an atomic switch.
//!
//! Layout of a data directory:
//! ```text
//! DATA_DIR/CURRENT                      name of the live generation
//! DATA_DIR/PREVIOUS                     the generation before it (for rollback)
//! DATA_DIR/generations/<name>/          one complete generation
//!     tantivy/  products.jsonl  vectors.bin  meta.json  schema.toml  userdict.txt
//!     brand_aliases.toml  changes.log (incremental writes since the build)
//! DATA_DIR/generations/<name>.building  a build in progress (removed if found later)
//! DATA_DIR/embeddings/<model>.bin       embedding cache (see `embed_cache`)
//! DATA_DIR/profiles/*.toml              ranking profiles
//! ```
//! A build writes everything into `<name>.building`, syncs it and renames it; after its
//! gates pass, [`publish`] replaces `CURRENT` by rename: a crash at any point leaves the
//! previous generation live. Incremental writes go to the live generation's change log
//! (see `live`); a [`Generation`] is one immutable snapshot of it, replaced on each commit.

pub mod embed_cache;
pub mod live;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tantivy::schema::Facet;
use tantivy::{Index, IndexReader, ReloadPolicy, Searcher, TantivyDocument};

use crate::vectors::Vectors;
pub use embed_cache::EmbeddingCache;
pub use live::{Change, LiveWriter, Outcome, Patch, Resolved, Write as ProductWrite};

use crate::analysis::{normalize, Analysis, PinyinVocab};
use crate::catalog::Product;
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::intent::IntentModel;
use crate::schema::{CatalogSchema, Fields};
use crate::util::{sync_dir, try_lock, write_atomic, write_file};

/// Facts about a generation, written at build time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationMeta {
    /// Generation name (sortable by build time).
    pub name: String,
    /// Build time, Unix seconds.
    pub created_at: i64,
    /// Where the products came from.
    pub source: String,
    /// Number of products.
    pub products: usize,
    /// Model id of the stored vectors, when products were encoded.
    pub model_id: Option<String>,
    /// Vector length (0 without vectors).
    pub dim: usize,
    /// Whole build, seconds.
    pub build_secs: f64,
    /// Of which encoding products, seconds.
    pub encode_secs: f64,
    /// Product vectors taken from the embedding cache instead of encoded.
    #[serde(default)]
    pub cached_vectors: usize,
    /// The generation that was live when this one was built.
    #[serde(default)]
    pub parent: Option<String>,
    /// The parent's change-log position when the build started: later writes to the
    /// parent are replayed into this generation before it serves writes.
    #[serde(default)]
    pub parent_seq: u64,
}

/// Where a build is, for progress reports.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Progress {
    /// `index` (tantivy documents) or `encode` (product vectors).
    pub stage: &'static str,
    /// Done so far.
    pub done: usize,
    /// Of.
    pub total: usize,
}

/// What a build needs besides the products.
pub struct BuildOptions<'a> {
    /// The catalog schema.
    pub schema: &'a CatalogSchema,
    /// User dictionary file for jieba.
    pub user_dict: Option<&'a Path>,
    /// Brand alias file for query understanding.
    pub brand_aliases: Option<&'a Path>,
    /// Encoder for product vectors; `None` builds a BM25-only generation.
    pub encoder: Option<&'a Encoder>,
    /// Description of the source (file path).
    pub source: String,
    /// Called as the build advances.
    pub progress: &'a dyn Fn(Progress),
    /// Polled between batches; when true the build stops with [`Error::Cancelled`].
    pub cancelled: &'a dyn Fn() -> bool,
    /// The live generation and its change-log position when the job was accepted; writes
    /// after it are replayed into the new generation. `None`: taken when the build starts.
    pub parent: Option<(String, u64)>,
}

impl<'a> BuildOptions<'a> {
    /// Options without dictionary, aliases, encoder, cache or progress reports.
    pub fn new(schema: &'a CatalogSchema, source: impl Into<String>) -> Self {
        BuildOptions {
            schema,
            user_dict: None,
            brand_aliases: None,
            encoder: None,
            source: source.into(),
            progress: &|_| {},
            cancelled: &|| false,
            parent: None,
        }
    }
}

/// Builds and publishes at once, without gates (tests, tools, first builds).
pub fn build_live(
    data_dir: &Path,
    products: Vec<Product>,
    opts: BuildOptions<'_>,
) -> Result<GenerationMeta> {
    let built = build(data_dir, products, opts)?;
    let meta = built.meta.clone();
    publish(data_dir, built)?;
    Ok(meta)
}

/// A generation written to disk but not live yet; holds the data directory's build lock.
pub struct Built {
    /// Its facts.
    pub meta: GenerationMeta,
    _lock: std::fs::File,
}

/// A loaded, searchable snapshot of a generation. Cheap to clone: the static parts are
/// shared and the rows are shared until a write changes them.
#[derive(Clone)]
pub struct Generation {
    /// Its folder.
    pub dir: PathBuf,
    /// Build facts.
    pub meta: GenerationMeta,
    /// The schema it was built with.
    pub schema: CatalogSchema,
    /// tantivy field handles.
    pub fields: Fields,
    /// The tantivy index.
    pub index: Index,
    /// A reader over it.
    pub reader: IndexReader,
    /// The searcher of this snapshot (pinned to its tantivy commit).
    pub searcher: Searcher,
    /// Products by row (`ord`); a deleted product keeps its row (see `removed`).
    pub products: Vec<Arc<Product>>,
    /// Row by product id (deleted ones included).
    pub by_id: Arc<HashMap<String, u32>>,
    /// Deleted rows.
    pub removed: Arc<Vec<bool>>,
    /// Number of deleted rows.
    pub removed_count: usize,
    /// Product vectors by row, when built with an encoder.
    pub vectors: Option<Vectors>,
    /// The analyzers (dictionary with the catalog's brands).
    pub analysis: Arc<Analysis>,
    /// Largest `sales` in the catalog (popularity scale).
    pub max_sales: u64,
    /// Query understanding built on this catalog (brands, categories, centroids).
    pub intents: Arc<IntentModel>,
    /// Last change-log entry applied to the rows.
    pub last_seq: u64,
    /// The catalog's words by pinyin, built on first use (see [`Generation::pinyin`]).
    pub pinyin: Arc<std::sync::OnceLock<PinyinVocab>>,
}

impl Generation {
    /// Whether row `ord` holds a live (not deleted) product.
    pub fn is_live(&self, ord: usize) -> bool {
        !self.removed.get(ord).copied().unwrap_or(true)
    }

    /// The live product `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Product>> {
        let ord = *self.by_id.get(id)? as usize;
        self.is_live(ord).then(|| &self.products[ord])
    }

    /// Number of live products.
    pub fn live_count(&self) -> usize {
        self.products.len() - self.removed_count
    }

    /// This snapshot's rows with another model's product vectors (and the category
    /// centroids of those vectors): what a search with that model reads. Nothing of this
    /// generation's own vectors is left in it.
    pub fn with_model(&self, model_id: &str, vectors: Vectors, intents: IntentModel) -> Generation {
        let mut view = self.clone();
        view.meta.model_id = Some(model_id.to_string());
        view.meta.dim = vectors.dim();
        view.vectors = Some(vectors);
        view.intents = Arc::new(intents);
        view
    }

    /// The catalog's words by pinyin, for pinyin queries: the jieba words of the title
    /// field's term dictionary (with document frequencies) and the brands. Built on first
    /// use (the first pinyin-looking query), then kept for the generation.
    pub fn pinyin(&self) -> &PinyinVocab {
        self.pinyin.get_or_init(|| {
            let mut terms: HashMap<String, u64> = HashMap::new();
            let title = self.fields.text.iter().find(|(s, _)| s.name == "title");
            for segment in self.searcher.segment_readers() {
                let Some(Ok(index)) = title.map(|(_, f)| segment.inverted_index(*f)) else {
                    continue;
                };
                let Ok(mut stream) = index.terms().stream() else {
                    continue;
                };
                while stream.advance() {
                    if let Ok(term) = std::str::from_utf8(stream.key()) {
                        *terms.entry(term.to_string()).or_default() +=
                            stream.value().doc_freq as u64;
                    }
                }
            }
            for p in &self.products {
                for part in p.brand.split('/') {
                    *terms.entry(normalize(part)).or_default() += 1;
                }
            }
            PinyinVocab::new(terms)
        })
    }
}

fn generations_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("generations")
}

/// The live generation and the last entry of its change log: a build that starts here
/// replays every write after it.
pub fn live_position(data_dir: &Path) -> Result<Option<(String, u64)>> {
    match current_name(data_dir)? {
        Some(name) => {
            let seq = live::ChangeLog::last_seq(&generations_dir(data_dir).join(&name))?;
            Ok(Some((name, seq)))
        }
        None => Ok(None),
    }
}

/// Writes a new generation from `products` beside the live one, without publishing it
/// (see [`check_gates`] and [`publish`]). Holds the data directory's build lock.
pub fn build(data_dir: &Path, products: Vec<Product>, opts: BuildOptions<'_>) -> Result<Built> {
    let started = Instant::now();
    let gens = generations_dir(data_dir);
    std::fs::create_dir_all(&gens).map_err(|e| Error::io(&gens, e))?;
    let lock = build_lock(data_dir)?.ok_or_else(|| {
        Error::Config(format!(
            "another build is running in {}; wait for it to finish",
            data_dir.display()
        ))
    })?;
    remove_unfinished(data_dir);
    // The live generation's change-log position now: writes after it are replayed into
    // the new generation before it takes writes.
    let (parent, parent_seq) = match opts.parent {
        Some((name, seq)) => (Some(name), seq),
        None => live_position(data_dir)?.map_or((None, 0), |(n, s)| (Some(n), s)),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut name = format!("g{}", now.as_millis());
    while gens.join(&name).exists() || Some(&name) == parent.as_ref() {
        name.push('x');
    }
    let tmp = gens.join(format!("{name}.building"));
    std::fs::create_dir_all(tmp.join("tantivy")).map_err(|e| Error::io(&tmp, e))?;

    // The dictionary and schema travel with the generation, so queries are analyzed
    // exactly as its documents were.
    let brands: BTreeSet<&str> = products
        .iter()
        .map(|p| p.brand.as_str())
        .filter(|b| !b.is_empty())
        .collect();
    let mut dict = match opts.user_dict {
        Some(p) => std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?,
        None => String::new(),
    };
    dict.push_str("\n# brands of this catalog\n");
    for b in &brands {
        for part in b.split(['/', ' ']).filter(|s| s.chars().count() >= 2) {
            dict.push_str(part);
            dict.push('\n');
        }
    }
    write_file(&tmp.join("userdict.txt"), dict.as_bytes())?;
    let schema_text = toml::to_string(opts.schema).map_err(|e| Error::Internal(e.to_string()))?;
    write_file(&tmp.join("schema.toml"), schema_text.as_bytes())?;
    if let Some(aliases) = opts.brand_aliases {
        let bytes = std::fs::read(aliases).map_err(|e| Error::io(aliases, e))?;
        // Fail before publishing: a broken alias file would break every later open.
        IntentModel::new::<Product>(&[], None, Some(aliases))?;
        write_file(&tmp.join("brand_aliases.toml"), &bytes)?;
    }
    let analysis = Analysis::load(Some(&tmp.join("userdict.txt")), [])?;

    let (tschema, fields) = opts.schema.tantivy_schema();
    let index = Index::create_in_dir(tmp.join("tantivy"), tschema)?;
    analysis.register(index.tokenizers());
    let mut writer = index.writer_with_num_threads(1, 200_000_000)?;
    let total = products.len();
    for (ord, p) in products.iter().enumerate() {
        writer.add_document(document(&fields, ord as u64, p))?;
        if ord % 1000 == 999 {
            (opts.progress)(Progress {
                stage: "index",
                done: ord + 1,
                total,
            });
            if (opts.cancelled)() {
                return Err(Error::Cancelled);
            }
        }
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    (opts.progress)(Progress {
        stage: "index",
        done: total,
        total,
    });

    let mut jsonl = Vec::new();
    for p in &products {
        serde_json::to_writer(&mut jsonl, p).map_err(|e| Error::Internal(e.to_string()))?;
        jsonl.push(b'\n');
    }
    write_file(&tmp.join("products.jsonl"), &jsonl)?;

    let encode_started = Instant::now();
    let mut cached_vectors = 0;
    let (model_id, dim) = match opts.encoder {
        Some(encoder) => {
            let texts: Vec<String> = products.iter().map(Product::embedding_text).collect();
            let progress = |done| {
                (opts.progress)(Progress {
                    stage: "encode",
                    done,
                    total,
                })
            };
            // Only texts the data directory's cache has not seen are encoded.
            let mut cache = EmbeddingCache::open(data_dir, encoder.id(), encoder.dim())?;
            let (rows, hits) = cache.encode(encoder, &texts, progress, opts.cancelled)?;
            cached_vectors = hits;
            Vectors::from_rows(encoder.dim(), rows)?.write(&tmp.join("vectors.bin"))?;
            (Some(encoder.id().to_string()), encoder.dim())
        }
        None => (None, 0),
    };
    let encode_secs = if opts.encoder.is_some() {
        encode_started.elapsed().as_secs_f64()
    } else {
        0.0
    };

    let meta = GenerationMeta {
        name: name.clone(),
        created_at: now.as_secs() as i64,
        source: opts.source,
        products: products.len(),
        model_id,
        dim,
        build_secs: started.elapsed().as_secs_f64(),
        encode_secs,
        cached_vectors,
        parent,
        parent_seq,
    };
    let meta_json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(e.to_string()))?;
    write_file(&tmp.join("meta.json"), &meta_json)?;
    let done = gens.join(&name);
    sync_dir(&tmp)?;
    std::fs::rename(&tmp, &done).map_err(|e| Error::io(&done, e))?;
    sync_dir(&gens)?;
    Ok(Built { meta, _lock: lock })
}

/// Makes generation `name` live (the live one becomes `PREVIOUS`) and removes older ones.
pub fn publish(data_dir: &Path, built: Built) -> Result<()> {
    let name = &built.meta.name;
    let previous = current_name(data_dir)?;
    switch(data_dir, name, previous.as_deref())?;
    cleanup(data_dir, name, previous.as_deref());
    Ok(())
}

/// Makes generation `name` live, copying it from `shared` (another replica's publication)
/// when this data directory does not hold it yet. The live one becomes `PREVIOUS`.
pub fn adopt(data_dir: &Path, shared: &Path, name: &str) -> Result<()> {
    let dir = generation_dir(data_dir, name);
    if !dir.join("meta.json").is_file() {
        let from = generation_dir(shared, name);
        if !from.join("meta.json").is_file() {
            return Err(Error::Config(format!(
                "generation `{name}` is published but {} does not hold it (setting `shared_dir`)",
                from.display()
            )));
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(generations_dir(data_dir)).map_err(|e| Error::io(data_dir, e))?;
        crate::util::copy_dir(&from, &dir)?;
    }
    let previous = current_name(data_dir)?.filter(|p| p != name);
    switch(data_dir, name, previous.as_deref())
}

/// Copies generation `name` of `data_dir` into `shared` for other replicas (nothing to
/// do when it is there already).
pub fn share(data_dir: &Path, shared: &Path, name: &str) -> Result<()> {
    let to = generation_dir(shared, name);
    if to.join("meta.json").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(generations_dir(shared)).map_err(|e| Error::io(shared, e))?;
    crate::util::copy_dir(&generation_dir(data_dir, name), &to)
}

/// Points `CURRENT` at `live` and `PREVIOUS` at `previous`, each by an atomic rename.
fn switch(data_dir: &Path, live: &str, previous: Option<&str>) -> Result<()> {
    for (file, value) in [("PREVIOUS", previous), ("CURRENT", Some(live))] {
        write_atomic(&data_dir.join(file), value.unwrap_or("").as_bytes())?;
    }
    Ok(())
}

/// Makes the previous generation live again (the live one becomes previous); returns its
/// name. The caller replays the rolled-back generation's incremental writes first.
pub fn rollback(data_dir: &Path) -> Result<String> {
    let previous = previous_name(data_dir)?.ok_or(Error::NoPreviousGeneration)?;
    let live = current_name(data_dir)?;
    switch(data_dir, &previous, live.as_deref())?;
    Ok(previous)
}

/// The generation before the live one, if it is still on disk.
pub fn previous_name(data_dir: &Path) -> Result<Option<String>> {
    Ok(read_pointer(&data_dir.join("PREVIOUS"))?.filter(|n| {
        generations_dir(data_dir)
            .join(n)
            .join("meta.json")
            .is_file()
    }))
}

/// The folder of generation `name`.
pub fn generation_dir(data_dir: &Path, name: &str) -> PathBuf {
    generations_dir(data_dir).join(name)
}

/// Takes the data directory's build lock; `None` when another process holds it. The OS
/// drops the lock if the process dies.
pub fn build_lock(data_dir: &Path) -> Result<Option<std::fs::File>> {
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    try_lock(&data_dir.join(".build.lock"))
}

/// Removes what a crashed build left behind: `*.building` folders, and finished
/// generations that were never published (neither `CURRENT` nor `PREVIOUS`). Call with
/// the build lock held.
pub fn remove_unfinished(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(generations_dir(data_dir)) else {
        return;
    };
    let keep: Vec<String> = [
        current_name(data_dir),
        read_pointer(&data_dir.join("PREVIOUS")),
    ]
    .into_iter()
    .filter_map(|n| n.ok().flatten())
    .collect();
    if keep.is_empty() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".building") || !keep.contains(&name) {
            tracing::warn!(path = %entry.path().display(), "removing an unfinished build");
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove it");
            }
        }
    }
}

pub(crate) fn document(fields: &Fields, ord: u64, p: &Product) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.id, &p.id);
    doc.add_u64(fields.ord, ord);
    for (spec, field) in &fields.text {
        let text = field_text(p, spec.source());
        if !text.is_empty() {
            doc.add_text(*field, &text);
        }
    }
    if !p.brand.is_empty() {
        doc.add_text(fields.brand, normalize(&p.brand));
    }
    if !p.category.is_empty() {
        doc.add_facet(fields.category, category_facet(&p.category));
    }
    if let Some(price) = p.price {
        doc.add_f64(fields.price, price);
    }
    doc.add_bool(fields.in_stock, p.in_stock);
    doc
}

/// The text a product's searchable field indexes (empty for an unknown field).
pub fn field_text(p: &Product, field: &str) -> String {
    match field {
        "title" => p.title.clone(),
        "brand" => p.brand.clone(),
        "category" => p.category.replace('/', " "),
        "attributes" => p.attributes_text(),
        "shop" => p.shop.clone(),
        _ => String::new(),
    }
}

/// The facet of a `/`-separated category path, in normalized spelling.
pub fn category_facet(path: &str) -> Facet {
    Facet::from_path(path.split('/').filter(|s| !s.is_empty()).map(normalize))
}

/// Opens the live generation of `data_dir` with the writes of its change log (vectors of
/// changed products from the embedding cache, or `encoder`).
pub fn open(data_dir: &Path, encoder: Option<&Encoder>) -> Result<Generation> {
    let name = current_name(data_dir)?.ok_or_else(|| Error::NoIndex(data_dir.to_path_buf()))?;
    open_named(data_dir, &name, encoder)
}

/// Opens generation `name` of `data_dir` with the writes of its change log.
pub fn open_named(data_dir: &Path, name: &str, encoder: Option<&Encoder>) -> Result<Generation> {
    let dir = generations_dir(data_dir).join(name);
    let read = |file: &str| std::fs::read(dir.join(file)).map_err(|e| Error::io(dir.join(file), e));
    let meta: GenerationMeta = serde_json::from_slice(&read("meta.json")?)
        .map_err(|e| Error::Internal(format!("{}: {e}", dir.join("meta.json").display())))?;
    let schema = CatalogSchema::load(&dir.join("schema.toml"))?;
    let analysis = Analysis::load(Some(&dir.join("userdict.txt")), [])?;
    let index = Index::open_in_dir(dir.join("tantivy"))?;
    analysis.register(index.tokenizers());
    let (_, fields) = schema.tantivy_schema();
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let mut products = Vec::with_capacity(meta.products);
    for (i, line) in read("products.jsonl")?.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let p: Product = serde_json::from_slice(line).map_err(|e| {
            Error::Internal(format!("{}/products.jsonl:{}: {e}", dir.display(), i + 1))
        })?;
        products.push(Arc::new(p));
    }
    if products.len() != meta.products {
        return Err(Error::Internal(format!(
            "{}: {} products on disk, meta.json says {}",
            dir.display(),
            products.len(),
            meta.products
        )));
    }
    let vectors = if meta.model_id.is_some() {
        let v = Vectors::read(&dir.join("vectors.bin"))?;
        if v.len() != products.len() {
            return Err(Error::Internal(format!(
                "{}: vector count != product count",
                dir.display()
            )));
        }
        Some(v)
    } else {
        None
    };
    let by_id: HashMap<String, u32> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), i as u32))
        .collect();
    let max_sales = products.iter().map(|p| p.sales).max().unwrap_or(0);
    let aliases = dir.join("brand_aliases.toml");
    let intents = IntentModel::new(
        &products,
        vectors.as_ref(),
        aliases.is_file().then_some(aliases.as_path()),
    )?;
    let searcher = reader.searcher();
    let removed = Arc::new(vec![false; products.len()]);
    let mut gen = Generation {
        intents: Arc::new(intents),
        dir,
        meta,
        schema,
        fields,
        index,
        reader,
        searcher,
        products,
        by_id: Arc::new(by_id),
        removed,
        removed_count: 0,
        vectors,
        analysis: Arc::new(analysis),
        max_sales,
        last_seq: 0,
        pinyin: Default::default(),
    };
    live::replay_own_log(data_dir, &mut gen, encoder)?;
    Ok(gen)
}

/// The live generation's name, if any.
pub fn current_name(data_dir: &Path) -> Result<Option<String>> {
    read_pointer(&data_dir.join("CURRENT"))
}

fn read_pointer(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Removes unfinished builds and generations older than the previous one.
fn cleanup(data_dir: &Path, live: &str, previous: Option<&str>) {
    let gens = generations_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&gens) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name != live && Some(name.as_str()) != previous {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove old generation");
            }
        }
    }
}

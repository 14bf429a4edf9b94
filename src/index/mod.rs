//! Index: validated products -> an index generation (tantivy BM25 index, product table,
//! product vectors), built beside the live one and published with an atomic switch.
//!
//! Layout of a data directory:
//! ```text
//! DATA_DIR/CURRENT                      name of the live generation
//! DATA_DIR/generations/<name>/          one complete generation
//!     tantivy/  products.jsonl  vectors.bin  meta.json  schema.toml  userdict.txt
//!     brand_aliases.toml
//! DATA_DIR/generations/<name>.building  a build in progress (removed if found later)
//! DATA_DIR/profiles/*.toml              ranking profiles
//! ```
//! A build writes everything into `<name>.building`, syncs it, renames it, then replaces
//! `CURRENT` by rename: a crash at any point leaves the previous generation live.

pub mod vectors;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tantivy::schema::Facet;
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument};

pub use vectors::Vectors;

use crate::analysis::{normalize, Analysis};
use crate::catalog::Product;
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::intent::IntentModel;
use crate::schema::{CatalogSchema, Fields};

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
}

/// A loaded, searchable generation.
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
    /// Products by row (`ord`).
    pub products: Vec<Product>,
    /// Row by product id.
    pub by_id: HashMap<String, u32>,
    /// Product vectors by row, when built with an encoder.
    pub vectors: Option<Vectors>,
    /// The analyzers (dictionary with the catalog's brands).
    pub analysis: Analysis,
    /// Largest `sales` in the catalog (popularity scale).
    pub max_sales: u64,
    /// Query understanding built on this catalog (brands, categories, centroids).
    pub intents: IntentModel,
}

fn generations_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("generations")
}

/// Builds a new generation from `products` and makes it live. Returns its metadata.
pub fn build(
    data_dir: &Path,
    products: Vec<Product>,
    opts: BuildOptions<'_>,
) -> Result<GenerationMeta> {
    let started = Instant::now();
    let gens = generations_dir(data_dir);
    std::fs::create_dir_all(&gens).map_err(|e| Error::io(&gens, e))?;
    // One build per data directory at a time: the OS drops the lock if the process dies.
    let lock_path = data_dir.join(".build.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Config(format!(
                "another build is running in {}; wait for it to finish",
                data_dir.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!("g{}", now.as_millis());
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
        IntentModel::new(&[], None, Some(aliases))?;
        write_file(&tmp.join("brand_aliases.toml"), &bytes)?;
    }
    let analysis = Analysis::load(Some(&tmp.join("userdict.txt")), [])?;

    let (tschema, fields) = opts.schema.tantivy_schema();
    let index = Index::create_in_dir(tmp.join("tantivy"), tschema)?;
    analysis.register(index.tokenizers());
    let mut writer = index.writer_with_num_threads(1, 200_000_000)?;
    for (ord, p) in products.iter().enumerate() {
        writer.add_document(document(&fields, ord as u64, p))?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;

    let mut jsonl = Vec::new();
    for p in &products {
        serde_json::to_writer(&mut jsonl, p).map_err(|e| Error::Internal(e.to_string()))?;
        jsonl.push(b'\n');
    }
    write_file(&tmp.join("products.jsonl"), &jsonl)?;

    let encode_started = Instant::now();
    let (model_id, dim) = match opts.encoder {
        Some(encoder) => {
            let texts: Vec<String> = products.iter().map(Product::embedding_text).collect();
            let total = texts.len();
            let mut last_log = Instant::now();
            let rows = encoder.encode_documents(&texts, |done| {
                if last_log.elapsed().as_secs() >= 5 || done == total {
                    last_log = Instant::now();
                    let rate = done as f64 / encode_started.elapsed().as_secs_f64().max(1e-9);
                    tracing::info!(
                        done,
                        total,
                        rate = format!("{rate:.0}/s"),
                        "encoding products"
                    );
                }
            })?;
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
    };
    let meta_json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(e.to_string()))?;
    write_file(&tmp.join("meta.json"), &meta_json)?;

    // Publish: the generation folder first, then the pointer to it.
    let live = gens.join(&name);
    sync_dir(&tmp)?;
    std::fs::rename(&tmp, &live).map_err(|e| Error::io(&live, e))?;
    sync_dir(&gens)?;
    let previous = current_name(data_dir)?;
    let pointer_tmp = data_dir.join("CURRENT.tmp");
    write_file(&pointer_tmp, name.as_bytes())?;
    std::fs::rename(&pointer_tmp, data_dir.join("CURRENT")).map_err(|e| Error::io(data_dir, e))?;
    sync_dir(data_dir)?;
    cleanup(data_dir, &name, previous.as_deref())?;
    Ok(meta)
}

fn document(fields: &Fields, ord: u64, p: &Product) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.id, &p.id);
    doc.add_u64(fields.ord, ord);
    for (spec, field) in &fields.text {
        let text = match spec.name.as_str() {
            "title" => p.title.clone(),
            "brand" => p.brand.clone(),
            "category" => p.category.replace('/', " "),
            "attributes" => p.attributes_text(),
            "shop" => p.shop.clone(),
            _ => continue,
        };
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

/// The facet of a `/`-separated category path, in normalized spelling.
pub fn category_facet(path: &str) -> Facet {
    Facet::from_path(path.split('/').filter(|s| !s.is_empty()).map(normalize))
}

/// Opens the live generation of `data_dir`.
pub fn open(data_dir: &Path) -> Result<Generation> {
    let name = current_name(data_dir)?.ok_or_else(|| Error::NoIndex(data_dir.to_path_buf()))?;
    let dir = generations_dir(data_dir).join(&name);
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
        products.push(p);
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
    let by_id = products
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
    Ok(Generation {
        intents,
        dir,
        meta,
        schema,
        fields,
        index,
        reader,
        products,
        by_id,
        vectors,
        analysis,
        max_sales,
    })
}

/// The live generation's name, if any.
pub fn current_name(data_dir: &Path) -> Result<Option<String>> {
    let path = data_dir.join("CURRENT");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Removes unfinished builds and generations older than the previous one.
fn cleanup(data_dir: &Path, live: &str, previous: Option<&str>) -> Result<()> {
    let gens = generations_dir(data_dir);
    let entries = std::fs::read_dir(&gens).map_err(|e| Error::io(&gens, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name != live && Some(name.as_str()) != previous {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove old generation");
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

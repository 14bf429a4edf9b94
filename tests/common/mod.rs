//! Shared helpers for the integration tests: the demo catalog indexed into a temp dir
//! through the library, an [`Engine`] over it, and a tiny random-weight BERT folder that
//! the real model loader can read (so the encoder path runs without the big model).
//!
//! Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tempfile::TempDir;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::Tokenizer;

use shoprank::behavior::RedbStore;
use shoprank::catalog::{self, Format, Product};
use shoprank::encoder::{Encoder, EncoderConfig, Pooling};
use shoprank::index::{self, BuildOptions, GenerationMeta};
use shoprank::rank::Profiles;
use shoprank::schema::CatalogSchema;
use shoprank::server::{app, AppState};
use shoprank::Engine;

/// The crate root (where `fixtures/`, `index_schema/` and `models/` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// The checked-in catalog schema.
pub fn schema() -> CatalogSchema {
    CatalogSchema::load(&root().join("index_schema/products.toml")).expect("schema loads")
}

/// The demo catalog's products, validated (the fixture has no bad record).
pub fn demo_products() -> Vec<Product> {
    let report = catalog::read_catalog(&fixture("demo_catalog.jsonl"), Format::Jsonl, &schema())
        .expect("demo catalog reads");
    assert!(
        report.errors.is_empty(),
        "demo catalog has bad records: {:?}",
        report.errors
    );
    let (products, _) = report.accept(false).expect("demo catalog is valid");
    products
}

/// Builds a generation of `products` in `data_dir` (and the default profile file), as
/// `shoprank index` does.
pub fn build_index(
    data_dir: &Path,
    products: Vec<Product>,
    encoder: Option<&Encoder>,
) -> GenerationMeta {
    let schema = schema();
    let user_dict = root().join("index_schema/userdict.txt");
    let aliases = root().join("index_schema/brand_aliases.toml");
    let meta = index::build_live(
        data_dir,
        products,
        BuildOptions {
            user_dict: Some(&user_dict),
            brand_aliases: Some(&aliases),
            encoder,
            ..BuildOptions::new(&schema, "fixtures/demo_catalog.jsonl")
        },
    )
    .expect("index builds");
    Profiles::write_default(&data_dir.join("profiles")).expect("default profile written");
    meta
}

/// A temp data dir holding a generation of the demo catalog.
pub fn demo_index(encoder: Option<&Encoder>) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    build_index(dir.path(), demo_products(), encoder);
    dir
}

/// An engine over `data_dir`, with or without an encoder.
pub fn open_engine(data_dir: &Path, encoder: Option<Encoder>) -> Engine {
    Engine::open(data_dir, encoder, None).expect("engine opens")
}

/// Days of events kept, as `shoprank serve` keeps them by default.
pub const RETENTION_DAYS: u64 = 365;

/// An engine over `data_dir` without a model, with behavior tracking on the redb file
/// `store` (created if missing), as `shoprank serve` opens it.
pub fn open_engine_with_events(data_dir: &Path, store: &Path) -> Engine {
    let mut engine = open_engine(data_dir, None);
    let store = RedbStore::open(store).expect("event store opens");
    engine
        .attach_events(Box::new(store), RETENTION_DAYS)
        .expect("event store attaches");
    engine
}

/// A tiny BERT model folder written into a temp dir.
pub struct TinyModel {
    /// Holds `config.json`, `tokenizer.json`, `vocab.txt`, `model.safetensors`.
    pub dir: TempDir,
    /// Settings as the manifest's `[encoder]` table would give them.
    pub config: EncoderConfig,
    /// Number of vocabulary entries (= `vocab_size` in `config.json`).
    pub vocab_size: usize,
}

/// Hidden size of the tiny model.
pub const TINY_DIM: usize = 32;

/// Vocabulary of the tiny tokenizer: the special tokens, then every CJK character and
/// ASCII letter/digit of the demo catalog's titles and brands (letters and digits also as
/// `##` continuations, so `iphone15` is word pieces rather than one `[UNK]`).
pub fn tiny_vocab() -> Vec<String> {
    let mut chars = BTreeSet::new();
    for p in demo_products() {
        for c in p.title.chars().chain(p.brand.chars()) {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || is_cjk(c) {
                chars.insert(c);
            }
        }
    }
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    vocab.extend(chars.iter().map(|c| c.to_string()));
    vocab.extend(
        chars
            .iter()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| format!("##{c}")),
    );
    vocab
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF)
}

/// The `config.json` of the tiny model.
pub fn tiny_bert_config(vocab_size: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": TINY_DIM,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0
    })
}

/// Writes `config.json`, `vocab.txt`, `tokenizer.json` and random `model.safetensors`
/// into `dir`; returns the vocabulary size.
pub fn write_tiny_model(dir: &Path) -> usize {
    let vocab = tiny_vocab();
    let config_json = tiny_bert_config(vocab.len());
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config_json).unwrap(),
    )
    .unwrap();

    let vocab_path = dir.join("vocab.txt");
    std::fs::write(&vocab_path, vocab.join("\n") + "\n").unwrap();
    let wordpiece = WordPiece::from_file(vocab_path.to_str().expect("utf-8 temp path"))
        .unk_token("[UNK]".into())
        .build()
        .expect("wordpiece builds");
    let id = |t: &str| vocab.iter().position(|v| v == t).unwrap() as u32;
    let post = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .unwrap()
        .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
        .unwrap()
        .special_tokens(vec![("[CLS]", id("[CLS]")), ("[SEP]", id("[SEP]"))])
        .build()
        .expect("template builds");
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .expect("normalizer");
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(post));
    tokenizer
        .save(dir.join("tokenizer.json"), true)
        .expect("tokenizer saves");

    // BertModel::load on an empty VarMap creates every variable with candle's default
    // initialisers (normal embeddings, Kaiming-uniform linears); saving the map gives a
    // weights file with the names and shapes a real BERT checkpoint has.
    let bert: BertConfig = serde_json::from_value(config_json).expect("bert config parses");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb, &bert).expect("random bert builds");
    varmap
        .save(dir.join("model.safetensors"))
        .expect("weights save");
    vocab.len()
}

/// Encoder settings for the tiny model in `dir`, as a manifest would give them.
pub fn tiny_config(dir: &Path) -> EncoderConfig {
    EncoderConfig {
        id: "tiny-random".into(),
        dir: dir.to_path_buf(),
        pooling: Pooling::Mean,
        lowercase: true,
        max_length: 32,
        query_prefix: String::new(),
        document_prefix: String::new(),
        normalize: true,
        batch_size: 8,
        precision: Default::default(),
    }
}

/// A fresh tiny model (new random weights) written as a model folder of `data_dir`, as
/// `shoprank train` writes one: `DATA_DIR/models/ID/` with its own `encoder.toml`.
pub fn tiny_model_folder(data_dir: &Path, id: &str) -> PathBuf {
    let dir = data_dir.join("models").join(id);
    tiny_model_at(&dir, id);
    dir
}

/// A fresh tiny model with its own `encoder.toml` (model id `id`) written into `dir`.
pub fn tiny_model_at(dir: &Path, id: &str) {
    std::fs::create_dir_all(dir).expect("model folder");
    write_tiny_model(dir);
    (tiny_config(dir).write_to_model_dir(dir, id)).expect("encoder.toml written");
}

/// The encoder of a model folder with its own `encoder.toml`, loaded on the CPU.
pub fn folder_encoder(dir: &Path) -> Encoder {
    let config = EncoderConfig::from_model_dir(dir)
        .expect("the folder has an encoder.toml")
        .expect("encoder.toml parses");
    Encoder::load(config, Device::Cpu).expect("the folder's model loads")
}

/// A fresh tiny model in its own temp dir.
pub fn tiny_model() -> TinyModel {
    let dir = tempfile::tempdir().expect("temp dir");
    let vocab_size = write_tiny_model(dir.path());
    let config = tiny_config(dir.path());
    TinyModel {
        dir,
        config,
        vocab_size,
    }
}

/// The tiny model, loaded on the CPU.
pub fn tiny_encoder(model: &TinyModel) -> Encoder {
    Encoder::load(model.config.clone(), Device::Cpu).expect("tiny model loads")
}

/// Percent-encodes a query-string value (every byte outside `[A-Za-z0-9-_.~]`).
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request through the whole app: (status, JSON body or `null`).
pub async fn call(
    state: &actix_web::web::Data<AppState>,
    req: actix_web::test::TestRequest,
) -> (actix_web::http::StatusCode, serde_json::Value) {
    let svc = actix_web::test::init_service(app(state.clone())).await;
    let res = actix_web::test::call_service(&svc, req.to_request()).await;
    let status = res.status();
    let body = actix_web::test::read_body(res).await;
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

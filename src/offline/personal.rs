//! Personalization evaluation: a reproducible simulated-shopper protocol on real catalogs
//! -> NDCG@10 / MRR@10 with and without personalization, per history length.
//!
//! The protocol is simulated (no real shopper's judgments exist for this data):
//! 1. Catalog: the Taobao cosmetics snapshots (latest per id; brand = shop, with prices)
//!    plus the OpenBG products (brands, some categories), indexed together.
//! 2. Query words are ambiguous category words (`面霜`, `口红`, `洗面奶`, `笔记本电脑`, ...);
//!    a product "is" a word's category when its normalized title contains the word.
//! 3. Each shopper (seeded RNG) gets a query word and a hidden preference: one or two
//!    brands that sell that category, and a price band (×/÷ 1.6 around one of their
//!    products' price, when prices exist).
//! 4. Relevant results = products of the query word's category, of a preferred brand,
//!    within the band. History = events (view 50%, click 30%, cart 10%, favorite 5%,
//!    purchase 5%, spread over the last 7 days) on products the shopper likes (preferred
//!    brand, in the band) that are *not* relevant results, so a hit is never a replay of
//!    the history.
//! 5. For history lengths 0, 1, 5 and 20, a fresh user with the first L events searches the
//!    query word; the same search without a user is the baseline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::analysis::normalize;
use crate::behavior::{Event, EventType, RedbStore};
use crate::catalog::{read_shared, Format, Product};
use crate::encoder::Encoder;
use crate::engine::{Engine, SearchRequest};
use crate::error::{Error, Result};
use crate::index::{build_live, BuildOptions};
use crate::offline::eval::score_list;
use crate::schema::CatalogSchema;
use crate::util::{now, Rng};

/// Category words shoppers type.
pub const QUERY_WORDS: &[&str] = &[
    "面霜",
    "口红",
    "洗面奶",
    "面膜",
    "眼霜",
    "精华",
    "乳液",
    "爽肤水",
    "防晒",
    "卸妆",
    "香水",
    "粉底",
    "笔记本电脑",
    "手机",
    "耳机",
    "连衣裙",
    "运动鞋",
    "牛仔裤",
    "洗发水",
];
/// History lengths reported.
pub const HISTORY_LENGTHS: [usize; 4] = [0, 1, 5, 20];

/// Metrics for one history length.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LengthReport {
    /// Events in each shopper's history.
    pub history: usize,
    /// Shoppers.
    pub shoppers: usize,
    /// NDCG@10 without a user.
    pub ndcg10_base: f64,
    /// NDCG@10 with the user.
    pub ndcg10_personal: f64,
    /// MRR@10 without a user.
    pub mrr10_base: f64,
    /// MRR@10 with the user.
    pub mrr10_personal: f64,
    /// Shoppers whose top 10 changed.
    pub changed_top10: usize,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// NDCG@10 without personalization, shoppers with 5+ events.
    #[serde(rename = "ndcg@10_base")]
    pub ndcg10_base: f64,
    /// NDCG@10 with personalization, shoppers with 5+ events.
    #[serde(rename = "ndcg@10_personal")]
    pub ndcg10_personal: f64,
    /// MRR@10 without personalization, shoppers with 5+ events.
    #[serde(rename = "mrr@10_base")]
    pub mrr10_base: f64,
    /// MRR@10 with personalization, shoppers with 5+ events.
    #[serde(rename = "mrr@10_personal")]
    pub mrr10_personal: f64,
    /// NDCG@10 without personalization, shoppers with no events.
    #[serde(rename = "ndcg@10_cold_base")]
    pub ndcg10_cold_base: f64,
    /// NDCG@10 with personalization, shoppers with no events.
    #[serde(rename = "ndcg@10_cold_personal")]
    pub ndcg10_cold_personal: f64,
    /// Median number of events before a shopper's top 10 first changes (`None`: never
    /// within 20 events for at least half of them).
    pub median_events_to_change: Option<usize>,
    /// Per history length.
    pub by_history: Vec<LengthReport>,
    /// Shoppers simulated.
    pub shoppers: usize,
    /// Products in the simulated catalog.
    pub products: usize,
    /// Profile used.
    pub profile: String,
}

/// One simulated shopper.
struct Shopper {
    query: String,
    relevant: HashMap<String, u32>,
    history: Vec<Event>,
}

/// Loads the two shared catalogs as one product list (ids are unique across them).
pub fn load_catalog(shared: &Path) -> Result<Vec<Product>> {
    let mut products = read_shared(
        shared,
        "taobao_cosmetics/snapshots.csv",
        Format::Taobao,
        "eval-personal",
    )?;
    products.extend(read_shared(
        shared,
        "openbg_products/products.tsv",
        Format::Openbg,
        "eval-personal",
    )?);
    Ok(products)
}

fn simulate(products: &[Product], shoppers: usize, seed: u64) -> Vec<Shopper> {
    let mut rng = Rng(seed);
    let titles: Vec<String> = products.iter().map(|p| normalize(&p.title)).collect();
    // word -> brand -> products of that category
    let mut by_word: BTreeMap<&str, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
    for w in QUERY_WORDS {
        for (i, p) in products.iter().enumerate() {
            if !p.brand.is_empty() && titles[i].contains(w) {
                by_word
                    .entry(w)
                    .or_default()
                    .entry(p.brand.as_str())
                    .or_default()
                    .push(i);
            }
        }
    }
    // Words where a preference matters: at least two brands.
    let words: Vec<&str> = by_word
        .iter()
        .filter(|(_, b)| b.len() >= 2)
        .map(|(w, _)| *w)
        .collect();
    let mut by_brand: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in products.iter().enumerate() {
        by_brand.entry(p.brand.as_str()).or_default().push(i);
    }
    let now = now();
    let mut out = Vec::new();
    let mut attempts = 0;
    while out.len() < shoppers && attempts < shoppers * 50 {
        attempts += 1;
        let word = words[rng.below(words.len())];
        let brands: Vec<&str> = by_word[word].keys().copied().collect();
        let mut preferred = vec![brands[rng.below(brands.len())]];
        if rng.unit() < 0.5 {
            let b = brands[rng.below(brands.len())];
            if !preferred.contains(&b) {
                preferred.push(b);
            }
        }
        let anchor = by_word[word][preferred[0]][rng.below(by_word[word][preferred[0]].len())];
        let band = products[anchor].price.map(|p| (p / 1.6, p * 1.6));
        let in_band = |p: &Product| match (band, p.price) {
            (Some((lo, hi)), Some(x)) => x >= lo && x <= hi,
            _ => true,
        };
        let relevant: HashSet<usize> = preferred
            .iter()
            .flat_map(|b| by_word[word][b].iter().copied())
            .filter(|&i| in_band(&products[i]))
            .collect();
        let liked: Vec<usize> = preferred
            .iter()
            .flat_map(|b| by_brand[b].iter().copied())
            .filter(|i| !relevant.contains(i) && in_band(&products[*i]))
            .collect();
        if relevant.is_empty() || liked.len() < 3 {
            continue;
        }
        let user = format!("sim-{}", out.len());
        let history = (0..*HISTORY_LENGTHS.last().unwrap_or(&20))
            .map(|k| {
                let r = rng.unit();
                let kind = match r {
                    r if r < 0.50 => EventType::View,
                    r if r < 0.80 => EventType::Click,
                    r if r < 0.90 => EventType::Cart,
                    r if r < 0.95 => EventType::Favorite,
                    _ => EventType::Purchase,
                };
                let p = &products[liked[rng.below(liked.len())]];
                // Newest first (a history of L events is the L most recent): the newest
                // 10 minutes ago, then spread over the last 7 days.
                let ts = now - 600 - k as i64 * 7 * 86_400 / 20;
                Event {
                    user_id: user.clone(),
                    kind,
                    product_id: Some(p.id.clone()),
                    query: None,
                    ts,
                }
            })
            .collect();
        let relevant = relevant
            .into_iter()
            .map(|i| (products[i].id.clone(), 1))
            .collect();
        out.push(Shopper {
            query: word.to_string(),
            relevant,
            history,
        });
    }
    out
}

/// Runs the protocol: builds a temporary index of the shared catalogs (with `encoder`, if
/// any), simulates `shoppers` shoppers and measures with `profile`, taken from the
/// built-in profiles or from `profiles_dir` (a data directory's `profiles/`).
pub fn run(
    shared: &Path,
    profiles_dir: Option<&Path>,
    encoder: Option<Encoder>,
    profile: &str,
    shoppers: usize,
    seed: u64,
) -> Result<Report> {
    let products = load_catalog(shared)?;
    let sim = simulate(&products, shoppers, seed);
    let dir = tempfile_dir()?;
    let schema = CatalogSchema::default();
    let n = products.len();
    build_live(
        dir.path(),
        products,
        BuildOptions {
            encoder: encoder.as_ref(),
            ..BuildOptions::new(&schema, "eval-personal")
        },
    )?;
    if let Some(from) = profiles_dir.filter(|d| d.is_dir()) {
        let to = dir.path().join("profiles");
        std::fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
        for entry in std::fs::read_dir(from)
            .map_err(|e| Error::io(from, e))?
            .flatten()
        {
            if entry.path().extension().and_then(|e| e.to_str()) == Some("toml") {
                std::fs::copy(entry.path(), to.join(entry.file_name()))
                    .map_err(|e| Error::io(entry.path(), e))?;
            }
        }
    }
    let mut engine = Engine::open(dir.path(), encoder, None)?;
    let store = RedbStore::open(&dir.path().join("events.redb"))?;
    engine.attach_events(Box::new(store), 0)?;

    let mut by_history = Vec::new();
    let mut first_change: Vec<Option<usize>> = vec![None; sim.len()];
    let search = |query: &str, user: Option<String>| -> Result<Vec<String>> {
        let mut req = SearchRequest::new(query);
        req.profile = Some(profile.to_string());
        req.size = 10;
        req.user = user;
        Ok(engine
            .search(&req)?
            .hits
            .into_iter()
            .map(|h| h.id)
            .collect())
    };
    let mut base_cache: Vec<Vec<String>> = Vec::new();
    for s in &sim {
        base_cache.push(search(&s.query, None)?);
    }
    for &len in &HISTORY_LENGTHS {
        let mut r = LengthReport {
            history: len,
            shoppers: sim.len(),
            ..Default::default()
        };
        for (i, s) in sim.iter().enumerate() {
            let user = format!(
                "{}-h{len}",
                s.history.first().map_or("x", |e| e.user_id.as_str())
            );
            let events: Vec<Event> = s.history[..len]
                .iter()
                .map(|e| Event {
                    user_id: user.clone(),
                    ..e.clone()
                })
                .collect();
            if !events.is_empty() {
                engine.record_events(events)?;
            }
            let base = &base_cache[i];
            let personal = search(&s.query, Some(user))?;
            let [b_rr, b_ndcg, ..] = score_list(base, &s.relevant);
            let [p_rr, p_ndcg, ..] = score_list(&personal, &s.relevant);
            r.ndcg10_base += b_ndcg;
            r.ndcg10_personal += p_ndcg;
            r.mrr10_base += b_rr;
            r.mrr10_personal += p_rr;
            if &personal != base {
                r.changed_top10 += 1;
                if len > 0 && first_change[i].is_none() {
                    first_change[i] = Some(len);
                }
            }
        }
        let k = sim.len().max(1) as f64;
        r.ndcg10_base /= k;
        r.ndcg10_personal /= k;
        r.mrr10_base /= k;
        r.mrr10_personal /= k;
        by_history.push(r);
    }
    // Events to first change, at finer steps for shoppers not changed by 1 event.
    for (i, s) in sim.iter().enumerate() {
        if first_change[i] == Some(1) {
            continue;
        }
        first_change[i] = None;
        let user = format!(
            "{}-steps",
            s.history.first().map_or("x", |e| e.user_id.as_str())
        );
        for (k, e) in s.history.iter().enumerate() {
            engine.record_events(vec![Event {
                user_id: user.clone(),
                ..e.clone()
            }])?;
            if search(&s.query, Some(user.clone()))? != base_cache[i] {
                first_change[i] = Some(k + 1);
                break;
            }
        }
    }
    let mut changes: Vec<usize> = first_change
        .iter()
        .map(|c| c.unwrap_or(usize::MAX))
        .collect();
    changes.sort_unstable();
    let median = changes
        .get(changes.len() / 2)
        .copied()
        .filter(|&c| c != usize::MAX);
    let warm: Vec<&LengthReport> = by_history.iter().filter(|r| r.history >= 5).collect();
    let mean = |f: fn(&LengthReport) -> f64| {
        warm.iter().map(|r| f(r)).sum::<f64>() / warm.len().max(1) as f64
    };
    Ok(Report {
        ndcg10_base: mean(|r| r.ndcg10_base),
        ndcg10_personal: mean(|r| r.ndcg10_personal),
        mrr10_base: mean(|r| r.mrr10_base),
        mrr10_personal: mean(|r| r.mrr10_personal),
        ndcg10_cold_base: by_history[0].ndcg10_base,
        ndcg10_cold_personal: by_history[0].ndcg10_personal,
        median_events_to_change: median,
        by_history,
        shoppers: sim.len(),
        products: n,
        profile: profile.to_string(),
    })
}

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let dir = std::env::temp_dir().join(format!(
        "shoprank-eval-personal-{}-{}",
        std::process::id(),
        now()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(TempDir(dir))
}

//! Query understanding: a query -> normalized text, tokens and structured intent (brand,
//! price, category, attributes) that ranking uses and an engineer can inspect.
//!
//! - brand: catalog brands and aliases (`brand`); boosts, never filters;
//! - price: bounds become a filter unless the request sets prices itself; `左右` and
//!   `便宜` become soft features (`price`);
//! - category: a category name in the query (`口红`), else the nearest category centroid
//!   of the product vectors when the query vector is close enough;
//! - attributes: capacities, sizes, colors and model numbers (`50ml`, `256g`, `红色`,
//!   `mate60`), matched against product titles and attributes.
//!
//! The price expression is cut from the text that is searched (`500元以下蓝牙耳机` searches
//! `蓝牙耳机`).
//!
//! [`understand`] is the one entry: a search understands its query once, into one
//! [`QueryAnalysis`] (normalized text, search text, words, synonyms, intents) that every
//! later stage reads and `/analyze` shows.

pub mod brand;
pub mod price;
pub mod synonyms;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use serde::Serialize;

pub use brand::{AliasSource, BrandIntent, BrandMatcher};
pub use price::PriceIntent;
pub use synonyms::Synonyms;

use crate::analysis::{normalize, Analysis, PinyinConversion, PinyinVocab};
use crate::catalog::Product;
use crate::encoder::dot;
use crate::error::Result;
use crate::vectors::Vectors;

/// A detected category with a confidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryIntent {
    /// Category path.
    pub value: String,
    /// 0..=1.
    pub confidence: f32,
}

/// Everything understood about a query.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Intents {
    /// Brands named.
    pub brand: Vec<BrandIntent>,
    /// Price wish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceIntent>,
    /// Likely categories, best first.
    pub category: Vec<CategoryIntent>,
    /// Attributes in normalized spelling.
    pub attributes: Vec<String>,
}

/// A query understood: what retrieval and ranking read, and what `/analyze` shows.
#[derive(Debug, Clone, Serialize)]
pub struct QueryAnalysis {
    /// Normalized query.
    pub normalized: String,
    /// The text searched (the price expression cut out).
    pub search_text: String,
    /// Query-side jieba tokens of the searched text.
    pub tokens: Vec<String>,
    /// Words added by synonyms.
    pub synonyms: Vec<String>,
    /// CJK bigrams of the searched text (for `.bigram` sub-fields).
    pub bigrams: Vec<String>,
    /// Pinyin converted to the catalog's words (`lan kou` -> `兰蔻`), if any; the searched
    /// text is the converted one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinyin: Option<PinyinConversion>,
    /// Detected intents.
    pub intents: Intents,
}

const COLORS: &[&str] = &[
    "玫瑰金",
    "香槟金",
    "红色",
    "黑色",
    "白色",
    "蓝色",
    "绿色",
    "粉色",
    "紫色",
    "黄色",
    "灰色",
    "金色",
    "银色",
    "橙色",
    "棕色",
    "米色",
    "透明",
    "卡其色",
    "藏青色",
    "酒红色",
];

/// Capacities and sizes (`256g`, `50ml`, `14寸`, `42码`, `5斤`) and model codes
/// (`mate60`, `iphone15pro`, `p60`, `14pro`).
static ATTRIBUTE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d+(?:\.\d+)?(?:ml|mah|kg|mm|cm|hz|g|t|l|w|码|寸|斤|克|片|支|包|瓶|本|色|颗|个|袋|盒|双|粒|卷)|[a-z]+\d+[a-z]*|\d+[a-z]+")
        .expect("attribute pattern")
});

/// Query understanding for one index generation. Cheap to clone (the parts are shared).
#[derive(Clone)]
pub struct IntentModel {
    brands: Arc<BrandMatcher>,
    /// Leaf category name (normalized) -> category path, longest name first.
    category_names: Arc<Vec<(String, String)>>,
    /// Category path -> unit centroid of its products' vectors.
    centroids: Arc<Vec<(String, Vec<f32>)>>,
}

/// What shoppers clicked after searching a query: categories and brands with weights,
/// heaviest first.
#[derive(Debug, Clone, Default)]
pub struct Clicked {
    /// Category path -> click weight.
    pub categories: Vec<(String, f32)>,
    /// Brand -> click weight.
    pub brands: Vec<(String, f32)>,
}

/// Click weight after a query, and the share one brand must hold, before the query is
/// taken to name that brand (`source: clicks`).
const CLICK_BRAND_MIN_WEIGHT: f32 = 10.0;
const CLICK_BRAND_MIN_SHARE: f32 = 0.8;

/// Lowest confidence of a brand intent whose other names are searched.
const BRAND_EXPANSION_CONFIDENCE: f32 = 0.7;
/// Lowest confidence of the top category intent that makes products of unrelated
/// categories mismatches: a named category (1.0), not a guess from centroids (at 0.5 the
/// simulated-shopper protocol lost 0.008 NDCG@10: it demoted sibling categories).
const CATEGORY_MISMATCH_CONFIDENCE: f32 = 0.9;

/// Cosine above which a category centroid counts as the query's category.
const CENTROID_THRESHOLD: f32 = 0.80;

impl IntentModel {
    /// Builds from the generation's products (and vectors, for category centroids).
    pub fn new<P: std::borrow::Borrow<Product>>(
        products: &[P],
        vectors: Option<&Vectors>,
        alias_file: Option<&Path>,
    ) -> Result<Self> {
        let brands = BrandMatcher::new(
            products.iter().map(|p| {
                let p: &Product = p.borrow();
                (p.brand.as_str(), p.title.as_str())
            }),
            alias_file,
        )?;
        // Every segment name of every path names its path prefix (`耳机` -> `数码/耳机`).
        let mut names: HashMap<String, String> = HashMap::new();
        let mut children: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
        for p in products {
            let p: &Product = p.borrow();
            if p.category.is_empty() {
                continue;
            }
            let mut prefix = String::new();
            for seg in p.category.split('/') {
                let parent = prefix.clone();
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(seg);
                children.entry(parent).or_default().insert(prefix.clone());
                let name = normalize(seg);
                if name.chars().count() >= 2 {
                    let entry = names.entry(name).or_insert_with(|| prefix.clone());
                    // A name used at several depths names the deepest path.
                    if prefix.matches('/').count() > entry.matches('/').count() {
                        *entry = prefix.clone();
                    }
                }
            }
        }
        // A path with a single child chain means that child (`手机` -> `数码/手机/智能手机`).
        for path in names.values_mut() {
            while let Some(only) = children
                .get(path.as_str())
                .filter(|c| c.len() == 1)
                .and_then(|c| c.first())
            {
                *path = only.clone();
            }
        }
        let mut category_names: Vec<(String, String)> = names.into_iter().collect();
        category_names.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(IntentModel {
            brands: Arc::new(brands),
            category_names: Arc::new(category_names),
            centroids: Arc::new(vectors.map_or_else(Vec::new, |v| centroids(products, v))),
        })
    }

    /// The same model with the category centroids of other vectors over the same rows
    /// (another model's: a challenger's query vectors are compared with its own).
    pub fn with_vectors<P: std::borrow::Borrow<Product>>(
        &self,
        products: &[P],
        vectors: &Vectors,
    ) -> IntentModel {
        IntentModel {
            centroids: Arc::new(centroids(products, vectors)),
            ..self.clone()
        }
    }

    /// The same model with `other`'s category centroids.
    pub fn with_centroids_of(&self, other: &IntentModel) -> IntentModel {
        IntentModel {
            centroids: other.centroids.clone(),
            ..self.clone()
        }
    }

    /// The brand matcher.
    pub fn brands(&self) -> &BrandMatcher {
        &self.brands
    }

    /// Intents of a normalized query (with its vector, when encoded) and the text left to
    /// search once the price expression is cut (empty when nothing else is left).
    pub fn analyze(&self, normalized: &str, query_vector: Option<&[f32]>) -> (Intents, String) {
        let normalized = normalized.to_string();
        let price = price::parse(&normalized);
        let search_text = match price {
            Some((_, (a, b))) => format!("{} {}", &normalized[..a], &normalized[b..])
                .trim()
                .to_string(),
            None => normalized.clone(),
        };
        let brand: Vec<BrandIntent> = self
            .brands
            .detect(&normalized)
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        let mut attributes: Vec<String> = Vec::new();
        let price_span = price.map(|(_, span)| span);
        for m in ATTRIBUTE.find_iter(&normalized) {
            let inside_price = price_span.is_some_and(|(a, b)| m.start() < b && a < m.end());
            let glued = normalized[..m.start()]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric());
            let value = m.as_str().to_string();
            if !inside_price
                && !glued
                && !attributes.contains(&value)
                && !value.chars().all(|c| c.is_ascii_alphabetic())
            {
                attributes.push(value);
            }
        }
        for c in COLORS {
            if normalized.contains(c) && !attributes.iter().any(|a| a == c) {
                attributes.push(c.to_string());
            }
        }
        let category = self.categories(&normalized, query_vector);
        (
            Intents {
                brand,
                price: price.map(|(p, _)| p),
                category,
                attributes,
            },
            search_text,
        )
    }

    /// Categories of normalized text: a category name in it, else the centroids nearest to
    /// the query vector.
    pub fn categories(
        &self,
        normalized: &str,
        query_vector: Option<&[f32]>,
    ) -> Vec<CategoryIntent> {
        if let Some((_, path)) = self
            .category_names
            .iter()
            .find(|(name, _)| normalized.contains(name.as_str()))
        {
            return vec![CategoryIntent {
                value: path.clone(),
                confidence: 1.0,
            }];
        }
        let Some(q) = query_vector else {
            return Vec::new();
        };
        let mut scored: Vec<(f32, &String)> = self
            .centroids
            .iter()
            .map(|(path, c)| (dot(q, c), path))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        if scored
            .first()
            .is_none_or(|(best, _)| *best < CENTROID_THRESHOLD)
        {
            return Vec::new();
        }
        // Confidence: a softmax over the centroid similarities (temperature 0.02).
        let best = scored[0].0;
        let weights: Vec<f32> = scored
            .iter()
            .map(|(s, _)| ((s - best) / 0.02).exp())
            .collect();
        let total: f32 = weights.iter().sum();
        scored
            .into_iter()
            .zip(weights)
            .take(3)
            .map(|((_, path), w)| CategoryIntent {
                value: path.clone(),
                confidence: w / total,
            })
            .filter(|c| c.confidence >= 0.05)
            .collect()
    }
}

/// Category path -> unit centroid of its products' rows of `vectors`, by path.
fn centroids<P: std::borrow::Borrow<Product>>(
    products: &[P],
    vectors: &Vectors,
) -> Vec<(String, Vec<f32>)> {
    let mut sums: HashMap<String, Vec<f32>> = HashMap::new();
    for (i, p) in products.iter().enumerate().take(vectors.len()) {
        let p: &Product = p.borrow();
        if p.category.is_empty() {
            continue;
        }
        let sum = sums
            .entry(p.category.clone())
            .or_insert_with(|| vec![0.0; vectors.dim()]);
        sum.iter_mut()
            .zip(vectors.row(i))
            .for_each(|(s, x)| *s += x);
    }
    let mut out: Vec<(String, Vec<f32>)> = sums
        .into_iter()
        .filter_map(|(path, sum)| {
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
            (norm > 0.0).then(|| (path, sum.iter().map(|x| x / norm).collect()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What understanding reads: the intent model, the analyzers and the synonyms in use
/// (a generation's own, or ones reloaded since).
pub struct Resources<'a> {
    /// Brands, categories and centroids.
    pub model: &'a IntentModel,
    /// The query-side analyzer.
    pub analysis: &'a Analysis,
    /// Query-time synonyms.
    pub synonyms: &'a Synonyms,
    /// The catalog's words by pinyin (`None`: no pinyin conversion).
    pub pinyin: Option<&'a PinyinVocab>,
}

/// Understands a trimmed, validated query once: normalizes it, finds its intents, cuts
/// the price expression from the text to search, asks `encode` for the vector of that
/// text (`None`: no semantic part), splits it into query words with synonym expansions,
/// finds categories by name or, failing that, by the vector's nearest centroids, and
/// blends them with the categories `clicks` reports for the query.
pub fn understand(
    query: &str,
    res: &Resources,
    encode: impl FnOnce(&str) -> Result<Option<Vec<f32>>>,
    clicks: impl FnOnce(&str) -> Clicked,
) -> Result<(QueryAnalysis, Option<Vec<f32>>)> {
    let span = tracing::debug_span!("analyze").entered();
    let mut normalized = normalize(query);
    let mut query = query.to_string();
    // Pinyin typed for Chinese (`lan kou mian shuang`) becomes the catalog's words, unless
    // a Latin word of the query names a brand (`olay 面霜`).
    let mut pinyin = None;
    let latin_brand =
        || (res.model.brands().detect(&normalized).iter()).any(|(b, _)| b.alias.is_ascii());
    if let Some(vocab) = res
        .pinyin
        .filter(|_| normalized.bytes().any(|b| b.is_ascii_lowercase()))
    {
        if let Some((text, conversion)) = vocab.convert(&normalized).filter(|_| !latin_brand()) {
            query = text.clone();
            normalized = text;
            pinyin = Some(conversion);
        }
    }
    let query = query.as_str();
    let (mut intents, cut) = res.model.analyze(&normalized, None);
    // The searched text: the query without its price expression; the query itself when
    // nothing else is left. `key` is it normalized (normalizing is idempotent, so the
    // cut, already normalized, is its own key).
    let (search_text, key) = if cut.is_empty() {
        (query.to_string(), normalized.clone())
    } else {
        (cut.clone(), cut)
    };
    drop(span);
    let vector = encode(&search_text)?;
    let clicked = clicks(&key);
    // A query whose shoppers click (almost) only one brand's products names that brand.
    let weight: f32 = clicked.brands.iter().map(|(_, w)| w).sum();
    if let (true, Some((brand, w))) = (intents.brand.is_empty(), clicked.brands.first()) {
        let share = w / weight;
        if weight >= CLICK_BRAND_MIN_WEIGHT && share >= CLICK_BRAND_MIN_SHARE {
            let intent = res
                .model
                .brands()
                .intent(brand, &key, share, AliasSource::Clicks, &key);
            intents.brand.push(intent);
        }
    }
    let tokens = res.analysis.query_words(&search_text);
    let bigrams = res.analysis.bigrams(&search_text);
    let mut synonyms = Vec::new();
    // A confidently named brand is also searched by its names in other scripts (`olay`
    // searches `玉兰油` too), at synonym weight.
    let brand_names = intents
        .brand
        .iter()
        .filter(|b| b.confidence >= BRAND_EXPANSION_CONFIDENCE)
        .flat_map(|b| b.names.iter().cloned());
    for phrase in res.synonyms.expand(&key).into_iter().chain(brand_names) {
        for w in res.analysis.query_words(&phrase) {
            if !tokens.contains(&w) && !synonyms.contains(&w) {
                synonyms.push(w);
            }
        }
    }
    // Without a category name in the query, the query vector finds the nearest centroids.
    if intents.category.is_empty() && vector.is_some() {
        intents.category = res.model.categories(&key, vector.as_deref());
    }
    intents.category = blend_categories(std::mem::take(&mut intents.category), &clicked.categories);
    Ok((
        QueryAnalysis {
            normalized,
            search_text,
            tokens,
            synonyms,
            bigrams,
            intents,
            pinyin,
        },
        vector,
    ))
}

/// Names of the intent features, in the order [`features`] returns them.
pub const FEATURE_NAMES: [&str; 6] = [
    "brand_match",
    "category_match",
    "attribute_match",
    "price_match",
    "brand_mismatch",
    "category_mismatch",
];

/// The intent features of one product, named by [`FEATURE_NAMES`], each 0..=1; `None` for
/// a feature whose intent is absent (or, for the mismatches, that cannot be told):
/// - `brand_match`: the product's brand or title names a detected brand in any spelling
///   (an iPhone case by a case maker matches `苹果手机壳`), times the confidence;
/// - `brand_mismatch`: it names none of them but has another brand (its brand field, or
///   failing that a brand its title names), times the confidence;
/// - `category_mismatch`: its category is neither inside nor above any detected category,
///   times the top category's confidence when that is at least
///   [`CATEGORY_MISMATCH_CONFIDENCE`] (an iPhone is not a `手机壳`).
///
/// `cheap_rank` is the product's price percentile among the priced candidates (0 =
/// cheapest), for `Cheap`; `brands` finds brands in titles.
pub fn features(
    intents: &Intents,
    p: &Product,
    cheap_rank: Option<f32>,
    brands: &BrandMatcher,
) -> [Option<f32>; 6] {
    let (mut brand, mut brand_mismatch) = (None, None);
    if !intents.brand.is_empty() {
        let own = normalize(&p.brand);
        let title = normalize(&p.title);
        let named = intents
            .brand
            .iter()
            .filter(|i| (!own.is_empty() && normalize(&i.value) == own) || i.named_in(&title))
            .map(|i| i.confidence)
            .fold(0.0, f32::max);
        brand = Some(named);
        let confidence = intents
            .brand
            .iter()
            .map(|i| i.confidence)
            .fold(0.0, f32::max);
        let other = !own.is_empty() || brands.names_a_brand(&title);
        brand_mismatch = Some(if named == 0.0 && other {
            confidence
        } else {
            0.0
        });
    }
    let related = |c: &CategoryIntent| {
        let under = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        under(&p.category, &c.value) || under(&c.value, &p.category)
    };
    let category = (!intents.category.is_empty()).then(|| {
        intents
            .category
            .iter()
            .filter(|c| p.category == c.value || p.category.starts_with(&format!("{}/", c.value)))
            .map(|c| c.confidence)
            .fold(0.0, f32::max)
    });
    let category_mismatch = intents
        .category
        .first()
        .filter(|top| top.confidence >= CATEGORY_MISMATCH_CONFIDENCE && !p.category.is_empty())
        .map(|top| {
            if intents.category.iter().any(related) {
                0.0
            } else {
                top.confidence
            }
        });
    let attributes = (!intents.attributes.is_empty()).then(|| {
        let text: String = normalize(&format!("{} {}", p.title, p.attributes_text()))
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        intents
            .attributes
            .iter()
            .filter(|a| text.contains(a.as_str()))
            .count() as f32
            / intents.attributes.len() as f32
    });
    let price = match (intents.price, p.price) {
        (Some(PriceIntent::Around { target }), Some(x)) if x > 0.0 && target > 0.0 => {
            let z = (x / target).ln() / 0.25;
            Some((-0.5 * z * z).exp() as f32)
        }
        (Some(PriceIntent::Cheap), Some(_)) => cheap_rank.map(|r| 1.0 - r),
        (Some(PriceIntent::Around { .. } | PriceIntent::Cheap), None) => Some(0.0),
        _ => None,
    };
    [
        brand,
        category,
        attributes,
        price,
        brand_mismatch,
        category_mismatch,
    ]
}

/// Blends a category distribution with the categories shoppers clicked after the same
/// query: `(1 - λ) × detected + λ × clicked share`, `λ = n / (n + 5)` for `n` click weight,
/// so a few clicks nudge and many clicks dominate. Keeps the best 3 above 0.05.
pub fn blend_categories(
    detected: Vec<CategoryIntent>,
    clicks: &[(String, f32)],
) -> Vec<CategoryIntent> {
    let n: f32 = clicks.iter().map(|(_, w)| w).sum();
    if n <= 0.0 {
        return detected;
    }
    let lambda = n / (n + 5.0);
    let mut mixed: Vec<CategoryIntent> = Vec::new();
    let mut add = |value: &str, p: f32| match mixed.iter_mut().find(|c| c.value == value) {
        Some(c) => c.confidence += p,
        None => mixed.push(CategoryIntent {
            value: value.to_string(),
            confidence: p,
        }),
    };
    for c in &detected {
        add(&c.value, (1.0 - lambda) * c.confidence);
    }
    for (value, w) in clicks {
        add(value, lambda * w / n);
    }
    mixed.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| a.value.cmp(&b.value))
    });
    mixed.retain(|c| c.confidence >= 0.05);
    mixed.truncate(3);
    mixed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clicks_nudge_then_dominate_the_category() {
        let detected = vec![CategoryIntent {
            value: "文具/本册/笔记本".into(),
            confidence: 1.0,
        }];
        let few = blend_categories(detected.clone(), &[("数码/电脑/笔记本电脑".into(), 2.0)]);
        assert_eq!(few[0].value, "文具/本册/笔记本");
        let many = blend_categories(detected.clone(), &[("数码/电脑/笔记本电脑".into(), 40.0)]);
        assert_eq!(many[0].value, "数码/电脑/笔记本电脑");
        assert!((many.iter().map(|c| c.confidence).sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(blend_categories(detected.clone(), &[]), detected);
    }
}

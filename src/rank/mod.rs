//! Ranking: candidates + profile -> scored products, with every feature's value, weight and
//! contribution kept for `explain`.
//!
//! score = Σ weight(f) × value(f) over the named features:
//! - `bm25`: the candidate's BM25 score divided by the best BM25 score among the candidates
//!   (0..=1, so weights mean the same for short and long queries);
//! - `semantic`: cosine similarity of query and product embeddings;
//! - `popularity`: ln(1 + sales) / ln(1 + the catalog's top sales);
//! - `rating`: rating / 5 (0 when unknown);
//! - with query intents (see `intent`): `brand_match` (the product's brand was named, times
//!   the detection's confidence), `category_match` (the product is in a detected category),
//!   `attribute_match` (share of the named attributes found in title and attributes),
//!   `price_match` (closeness to a `左右` target, or cheapness among the candidates for
//!   `便宜`), `brand_mismatch` and `category_mismatch` (the product names another brand,
//!   or sits in an unrelated category, than the query asks for confidently; weighted
//!   negative to demote); absent when the query has no such intent;
//! - with a known user (see `behavior::profile`): `personal` (cosine of the user vector and
//!   the product vector), `brand_affinity` and `category_affinity` (share of the user's
//!   decayed behavior on the product's brand / category path), `price_fit` (Gaussian on
//!   log-price around the user's usual band), each multiplied by a relevance gate
//!   `(relevance / best relevance) ^ relevance_power` so taste re-orders what matches the
//!   query rather than pulling in what does not. A request without a user, or a user with
//!   no history, gets none of these, so its ranking is exactly the non-personal one.

pub mod profile;
pub mod rules;

use serde::Serialize;

pub use profile::{Budget, CandidateCounts, Diversity, Matching, Profile, Profiles, TieBreak};

/// Reorders ranked results so that no brand has more than `max_per_brand` of any window of
/// results before others get a turn: a product over its brand's share waits (in order)
/// until the next round. Nothing is dropped; products without a brand are never held.
pub fn diversify(
    ranked: Vec<Scored>,
    brand_of: impl Fn(u32) -> String,
    max_per_brand: usize,
) -> Vec<Scored> {
    if max_per_brand == 0 {
        return ranked;
    }
    let mut out = Vec::with_capacity(ranked.len());
    let mut pending = ranked;
    while !pending.is_empty() {
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        let mut later = Vec::new();
        for s in pending {
            let brand = brand_of(s.ord);
            let n = counts.entry(brand.clone()).or_default();
            if brand.is_empty() || *n < max_per_brand {
                *n += 1;
                out.push(s);
            } else {
                later.push(s);
            }
        }
        pending = later;
    }
    out
}

use crate::behavior::profile::PersonalContext;
use crate::index::Generation;
use crate::intent::{self, Intents};
use crate::retrieve::Candidate;

/// Names of the ranking features, as used in profiles and explain.
pub const FEATURES: &[&str] = &[
    "bm25",
    "semantic",
    "popularity",
    "rating",
    "brand_match",
    "category_match",
    "attribute_match",
    "price_match",
    "brand_mismatch",
    "category_mismatch",
    "personal",
    "brand_affinity",
    "category_affinity",
    "price_fit",
];

/// One feature of one hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureScore {
    /// Feature name.
    pub name: &'static str,
    /// Feature value.
    pub value: f32,
    /// Its weight in the profile.
    pub weight: f32,
    /// weight × value.
    pub contribution: f32,
}

/// Why a hit has its score.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Explain {
    /// Raw BM25 score before normalization.
    pub bm25_raw: f32,
    /// Which retrieval sides found the product.
    pub matched_by: Vec<&'static str>,
    /// Every computed feature (personal ones already multiplied by `personal_gate`).
    pub features: Vec<FeatureScore>,
    /// Relevance gate applied to the personal features, when a user profile took part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal_gate: Option<f32>,
    /// tantivy's BM25 explanation (fields, terms, idf, tf, boosts), filled in for the
    /// hits of the returned page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bm25_terms: Option<serde_json::Value>,
    /// Merchandising rules that boosted, buried or pinned the product.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<rules::RuleEffect>,
    /// The model whose vectors gave `semantic` (the profile's), filled in for the hits
    /// of the returned page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A ranked candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// Row in the generation.
    pub ord: u32,
    /// Final score.
    pub score: f32,
    /// The breakdown.
    pub explain: Explain,
}

/// Features that only a known user adds (pass 2 of [`rank`]).
pub const PERSONAL_FEATURES: &[&str] = &[
    "personal",
    "brand_affinity",
    "category_affinity",
    "price_fit",
];

impl Scored {
    /// The score without the personal features: how well the product fits the query.
    pub fn relevance(&self) -> f32 {
        let personal: f32 = (self.explain.features.iter())
            .filter(|f| PERSONAL_FEATURES.contains(&f.name))
            .map(|f| f.contribution)
            .sum();
        let rules: f32 = (self.explain.rules.iter())
            .filter(|r| r.effect == "boost")
            .map(|r| r.value)
            .sum();
        self.score - personal - rules
    }
}

/// The order of two rows with equal scores: the profile's tie-break, then the row.
pub fn tie_order(gen: &Generation, tie: TieBreak, a: u32, b: u32) -> std::cmp::Ordering {
    let (p, q) = (&gen.products[a as usize], &gen.products[b as usize]);
    let by = match tie {
        TieBreak::Row => std::cmp::Ordering::Equal,
        TieBreak::Popularity => q.sales.cmp(&p.sales),
        TieBreak::Rating => (q.rating.unwrap_or(-1.0)).total_cmp(&p.rating.unwrap_or(-1.0)),
        TieBreak::Newest => q.updated_at.cmp(&p.updated_at),
        TieBreak::PriceAsc => match (p.price, q.price) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        },
    };
    by.then(a.cmp(&b))
}

/// Scores and sorts candidates, best first (ties broken by the profile's `tie_break`, then
/// by row, for a stable order).
pub fn rank(
    gen: &Generation,
    candidates: &[Candidate],
    profile: &Profile,
    personal: Option<&PersonalContext>,
    intents: &Intents,
) -> Vec<Scored> {
    let max_bm25 = candidates.iter().map(|c| c.bm25).fold(0.0f32, f32::max);
    // Price percentile among the priced candidates, for a `便宜` query.
    let mut prices: Vec<f64> = candidates
        .iter()
        .filter_map(|c| gen.products[c.ord as usize].price)
        .collect();
    prices.sort_by(f64::total_cmp);
    let cheap_rank = |p: Option<f64>| {
        let x = p?;
        (prices.len() > 1)
            .then(|| prices.partition_point(|&q| q < x) as f32 / (prices.len() - 1) as f32)
    };
    let sales_scale = (1.0 + gen.max_sales as f32).ln();
    let feature = |name: &'static str, value: f32| {
        let weight = profile.weight(name);
        FeatureScore {
            name,
            value,
            weight,
            contribution: weight * value,
        }
    };
    // Pass 1: the query's features, whose sum is the candidate's relevance.
    let mut out: Vec<Scored> = candidates
        .iter()
        .map(|c| {
            let p = &gen.products[c.ord as usize];
            let mut features = vec![feature(
                "bm25",
                if max_bm25 > 0.0 {
                    c.bm25 / max_bm25
                } else {
                    0.0
                },
            )];
            if let Some(s) = c.semantic {
                features.push(feature("semantic", s));
            }
            let popularity = if sales_scale > 0.0 {
                (1.0 + p.sales as f32).ln() / sales_scale
            } else {
                0.0
            };
            features.push(feature("popularity", popularity));
            features.push(feature("rating", p.rating.unwrap_or(0.0) as f32 / 5.0));
            let values = intent::features(intents, p, cheap_rank(p.price), gen.intents.brands());
            for (name, value) in intent::FEATURE_NAMES.into_iter().zip(values) {
                if let Some(v) = value {
                    features.push(feature(name, v));
                }
            }
            let mut matched_by = Vec::new();
            if c.from_bm25 {
                matched_by.push("bm25");
            }
            if c.from_vector {
                matched_by.push("vector");
            }
            let score = features.iter().map(|f| f.contribution).sum();
            Scored {
                ord: c.ord,
                score,
                explain: Explain {
                    bm25_raw: c.bm25,
                    matched_by,
                    personal_gate: None,
                    bm25_terms: None,
                    rules: Vec::new(),
                    features,
                    model: None,
                },
            }
        })
        .collect();
    // Pass 2: personal features, gated by relevance so a shopper's taste re-orders what
    // matches the query instead of pulling in what does not: gate = (relevance / best
    // relevance) ^ relevance_power.
    if let Some(u) = personal {
        let best = out.iter().map(|s| s.score).fold(0.0f32, f32::max);
        let power = profile.personalization.relevance_power;
        for s in &mut out {
            let p = &gen.products[s.ord as usize];
            let gate = if best > 0.0 {
                (s.score / best).clamp(0.0, 1.0).powf(power)
            } else {
                1.0
            };
            let mut personal_features = Vec::new();
            if let (false, Some(v)) = (u.vector.is_empty(), &gen.vectors) {
                personal_features
                    .push(feature("personal", gate * v.dot(s.ord as usize, &u.vector)));
            }
            personal_features.push(feature("brand_affinity", gate * u.brand_affinity(p)));
            personal_features.push(feature("category_affinity", gate * u.category_affinity(p)));
            personal_features.push(feature("price_fit", gate * u.price_fit(p)));
            s.score += personal_features
                .iter()
                .map(|f| f.contribution)
                .sum::<f32>();
            s.explain.features.extend(personal_features);
            s.explain.personal_gate = Some(gate);
        }
    }
    sort_best_first(gen, profile.tie_break, &mut out);
    out
}

/// Sorts by score, best first, equal scores by `tie` (see [`tie_order`]).
pub fn sort_best_first(gen: &Generation, tie: TieBreak, ranked: &mut [Scored]) {
    ranked.sort_by(|a, b| {
        (b.score.total_cmp(&a.score)).then_with(|| tie_order(gen, tie, a.ord, b.ord))
    });
}

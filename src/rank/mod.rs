//! Ranking: candidates + profile -> scored products, with every feature's value, weight and
//! contribution kept for `explain`.
//!
//! score = Σ weight(f) × value(f) over the named features:
//! - `bm25`: the candidate's BM25 score divided by the best BM25 score among the candidates
//!   (0..=1, so weights mean the same for short and long queries);
//! - `semantic`: cosine similarity of query and product embeddings;
//! - `popularity`: ln(1 + sales) / ln(1 + the catalog's top sales);
//! - `rating`: rating / 5 (0 when unknown).

pub mod profile;

use serde::Serialize;

pub use profile::{CandidateCounts, Profile, Profiles};

use crate::index::Generation;
use crate::retrieve::Candidate;

/// Names of the ranking features, as used in profiles and explain.
pub const FEATURES: &[&str] = &["bm25", "semantic", "popularity", "rating"];

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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explain {
    /// Raw BM25 score before normalization.
    pub bm25_raw: f32,
    /// Which retrieval sides found the product.
    pub matched_by: Vec<&'static str>,
    /// Every computed feature.
    pub features: Vec<FeatureScore>,
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

/// Scores and sorts candidates, best first (ties broken by row for a stable order).
pub fn rank(gen: &Generation, candidates: &[Candidate], profile: &Profile) -> Vec<Scored> {
    let max_bm25 = candidates.iter().map(|c| c.bm25).fold(0.0f32, f32::max);
    let sales_scale = (1.0 + gen.max_sales as f32).ln();
    let mut out: Vec<Scored> = candidates
        .iter()
        .map(|c| {
            let p = &gen.products[c.ord as usize];
            let mut values: Vec<(&'static str, f32)> = vec![(
                "bm25",
                if max_bm25 > 0.0 {
                    c.bm25 / max_bm25
                } else {
                    0.0
                },
            )];
            if let Some(s) = c.semantic {
                values.push(("semantic", s));
            }
            values.push((
                "popularity",
                if sales_scale > 0.0 {
                    (1.0 + p.sales as f32).ln() / sales_scale
                } else {
                    0.0
                },
            ));
            values.push(("rating", p.rating.unwrap_or(0.0) as f32 / 5.0));
            let features: Vec<FeatureScore> = values
                .into_iter()
                .map(|(name, value)| {
                    let weight = profile.weight(name);
                    FeatureScore {
                        name,
                        value,
                        weight,
                        contribution: weight * value,
                    }
                })
                .collect();
            let score = features.iter().map(|f| f.contribution).sum();
            let mut matched_by = Vec::new();
            if c.from_bm25 {
                matched_by.push("bm25");
            }
            if c.from_vector {
                matched_by.push("vector");
            }
            Scored {
                ord: c.ord,
                score,
                explain: Explain {
                    bm25_raw: c.bm25,
                    matched_by,
                    features,
                },
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.ord.cmp(&b.ord)));
    out
}

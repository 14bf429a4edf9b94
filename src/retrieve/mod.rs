//! Retrieval: analyzed query + filters -> hybrid candidates (BM25 top-k unioned with the
//! nearest product vectors), and facet counts over them.
//!
//! BM25 runs over the schema's text fields, one boosted term-disjunction per field, so any
//! user text is a valid query (no query syntax to trip over). The vector side is an exact
//! scan. Both sides apply the same [`Filters`]: as tantivy queries on one side, as a
//! predicate on the product table on the other, so a filtered search never shows a product
//! the filter excludes. Every candidate gets its real BM25 score, also when only the vector
//! side found it. Each field's boost and BM25 parameters (k1, b; see [`bm25`]) come from
//! the profile as one [`TextScoring`], used by every query built here.

pub mod bm25;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::columnar::Column;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, EnableScoring, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{Searcher, Term};

pub use bm25::{Bm25Params, Bm25Settings, FieldBm25};

use crate::analysis::normalize;
use crate::catalog::Product;
use crate::error::{Error, Result};
use crate::index::{category_facet, field_text, Generation};

/// Restrictions on the result set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Exact brand (compared in normalized spelling).
    pub brand: Option<String>,
    /// Category path prefix, by whole segments (`美妆` matches `美妆/面霜`).
    pub category: Option<String>,
    /// Lowest price, inclusive.
    pub price_min: Option<f64>,
    /// Highest price, inclusive.
    pub price_max: Option<f64>,
    /// Only products in stock.
    pub in_stock: bool,
}

impl Filters {
    /// Checks values that could never match.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("price_min", self.price_min), ("price_max", self.price_max)] {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(Error::param(
                        name,
                        format!("must be a number >= 0, got {v}"),
                    ));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.price_min, self.price_max) {
            if lo > hi {
                return Err(Error::param(
                    "price_min",
                    format!("{lo} is above price_max {hi}"),
                ));
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self == &Filters::default()
    }

    /// The filters as tantivy queries (scored 0, so they never change BM25).
    fn queries(&self, gen: &Generation) -> Vec<Box<dyn Query>> {
        let f = &gen.fields;
        let mut out: Vec<Box<dyn Query>> = Vec::new();
        if let Some(b) = &self.brand {
            out.push(Box::new(TermQuery::new(
                Term::from_field_text(f.brand, &normalize(b)),
                IndexRecordOption::Basic,
            )));
        }
        if let Some(c) = &self.category {
            out.push(Box::new(TermQuery::new(
                Term::from_facet(f.category, &category_facet(c)),
                IndexRecordOption::Basic,
            )));
        }
        if self.price_min.is_some() || self.price_max.is_some() {
            let bound = |v: Option<f64>| {
                v.map_or(Bound::Unbounded, |v| {
                    Bound::Included(Term::from_field_f64(f.price, v))
                })
            };
            out.push(Box::new(RangeQuery::new(
                bound(self.price_min),
                bound(self.price_max),
            )));
        }
        if self.in_stock {
            out.push(Box::new(TermQuery::new(
                Term::from_field_bool(f.in_stock, true),
                IndexRecordOption::Basic,
            )));
        }
        out.into_iter()
            .map(|q| Box::new(ConstScoreQuery::new(q, 0.0)) as Box<dyn Query>)
            .collect()
    }

    /// The same filters as a predicate on a product.
    pub fn matches(&self, p: &Product) -> bool {
        if let Some(b) = &self.brand {
            if p.brand.is_empty() || normalize(&p.brand) != normalize(b) {
                return false;
            }
        }
        if let Some(c) = &self.category {
            let (want, have) = (category_facet(c), category_facet(&p.category));
            if want != have && !want.is_prefix_of(&have) {
                return false;
            }
        }
        if self.price_min.is_some() || self.price_max.is_some() {
            let Some(price) = p.price else { return false };
            if self.price_min.is_some_and(|lo| price < lo)
                || self.price_max.is_some_and(|hi| price > hi)
            {
                return false;
            }
        }
        !self.in_stock || p.in_stock
    }
}

/// A candidate product and what retrieval knows about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Row in the generation.
    pub ord: u32,
    /// Raw BM25 score (0 when no query word matches).
    pub bm25: f32,
    /// Cosine similarity to the query, when vectors exist.
    pub semantic: Option<f32>,
    /// Found by the BM25 side.
    pub from_bm25: bool,
    /// Found by the vector side.
    pub from_vector: bool,
}

/// BM25 weight of a synonym's words relative to the query's own words.
pub const SYNONYM_WEIGHT: f32 = 0.5;

/// The analyzed query as BM25 sees it (query-side analyzer words; both sides of the index
/// cut the same way today, see `analysis::chinese`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryWords {
    /// The query's own words.
    pub words: Vec<String>,
    /// Words of synonym expansions, weighted [`SYNONYM_WEIGHT`].
    pub synonyms: Vec<String>,
    /// The query's CJK bigrams, searched in `.bigram` sub-fields.
    pub bigrams: Vec<String>,
}

/// Per-field boosts for BM25.
pub type Boosts = BTreeMap<String, f32>;

static NO_BOOSTS: Boosts = BTreeMap::new();

/// How the text fields are scored: a profile's `[boosts]` and `[bm25]`.
#[derive(Debug, Clone, Copy)]
pub struct TextScoring<'a> {
    /// Field -> BM25 boost (1.0 when not named).
    pub boosts: &'a Boosts,
    /// k1 and b per field.
    pub bm25: &'a Bm25Settings,
}

impl Default for TextScoring<'_> {
    /// Every field boosted 1.0, tantivy's k1 and b.
    fn default() -> Self {
        TextScoring {
            boosts: &NO_BOOSTS,
            bm25: &bm25::DEFAULT_SETTINGS,
        }
    }
}

/// Hybrid retrieval of up to `bm25_k + vector_k` candidates.
pub fn candidates(
    gen: &Generation,
    words: &QueryWords,
    query_vector: Option<&[f32]>,
    filters: &Filters,
    scoring: TextScoring,
    bm25_k: usize,
    vector_k: usize,
) -> Result<Vec<Candidate>> {
    let searcher = &gen.searcher;
    let text_query = text_query(gen, words, scoring);
    let filter_queries = filters.queries(gen);
    let mut found: HashMap<u32, Candidate> = HashMap::new();
    if let (Some(q), true) = (&text_query, bm25_k > 0) {
        let full = with_filters(
            q.box_clone(),
            filter_queries.iter().map(|f| f.box_clone()).collect(),
        );
        for (ord, score) in top_ords(searcher, &*full, bm25_k)? {
            found.insert(
                ord,
                Candidate {
                    ord,
                    bm25: score,
                    semantic: None,
                    from_bm25: true,
                    from_vector: false,
                },
            );
        }
    }
    if let (Some(v), Some(qv)) = (&gen.vectors, query_vector) {
        let keep =
            |i: usize| gen.is_live(i) && (filters.is_empty() || filters.matches(&gen.products[i]));
        for (ord, sim) in v.nearest(qv, vector_k, keep) {
            let c = found.entry(ord).or_insert(Candidate {
                ord,
                bm25: 0.0,
                semantic: None,
                from_bm25: false,
                from_vector: false,
            });
            c.from_vector = true;
            c.semantic = Some(sim);
        }
        for c in found.values_mut() {
            c.semantic.get_or_insert_with(|| v.dot(c.ord as usize, qv));
        }
    }
    // Vector-only candidates may still match some words: score them exactly.
    let missing: Vec<u32> = found
        .values()
        .filter(|c| !c.from_bm25)
        .map(|c| c.ord)
        .collect();
    if let Some(q) = &text_query {
        for (ord, score) in bm25_of_rows(gen, &**q, &missing)? {
            if let Some(c) = found.get_mut(&ord) {
                c.bm25 = score;
            }
        }
    }
    let mut out: Vec<Candidate> = found.into_values().collect();
    out.sort_by_key(|c| c.ord);
    Ok(out)
}

/// Candidates for exactly the live rows `ords` (a caller's own candidate list, as the
/// rerank API gets it): each row's exact BM25 and, with a query vector, its similarity.
pub fn score_rows(
    gen: &Generation,
    words: &QueryWords,
    query_vector: Option<&[f32]>,
    scoring: TextScoring,
    ords: &[u32],
) -> Result<Vec<Candidate>> {
    let bm25: HashMap<u32, f32> = match text_query(gen, words, scoring) {
        Some(q) => bm25_of_rows(gen, &*q, ords)?.into_iter().collect(),
        None => HashMap::new(),
    };
    Ok(ords
        .iter()
        .map(|&ord| Candidate {
            ord,
            bm25: bm25.get(&ord).copied().unwrap_or(0.0),
            semantic: gen
                .vectors
                .as_ref()
                .zip(query_vector)
                .map(|(v, q)| v.dot(ord as usize, q)),
            from_bm25: bm25.contains_key(&ord),
            from_vector: false,
        })
        .collect())
}

/// The exact BM25 score of `query` for each of `rows` that matches it.
fn bm25_of_rows(gen: &Generation, query: &dyn Query, rows: &[u32]) -> Result<Vec<(u32, f32)>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // One term lookup per row: a TermSetQuery streams the whole `ord` dictionary
    // through its automaton (6% of a 100k-product server's CPU in perf).
    let terms: Vec<(Occur, Box<dyn Query>)> = rows
        .iter()
        .map(|&o| {
            let term = Term::from_field_u64(gen.fields.ord, o as u64);
            let q: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::Basic));
            (Occur::Should, q)
        })
        .collect();
    let restrict: Box<dyn Query> = Box::new(ConstScoreQuery::new(
        Box::new(BooleanQuery::new(terms)),
        0.0,
    ));
    let q = with_filters(query.box_clone(), vec![restrict]);
    top_ords(&gen.searcher, &*q, rows.len())
}

/// One boosted disjunction of the query's words per searchable field, each term scored
/// with its field's k1 and b; `None` when the query has no searchable word.
fn text_query(
    gen: &Generation,
    words: &QueryWords,
    scoring: TextScoring,
) -> Option<Box<dyn Query>> {
    if words.words.is_empty() && words.synonyms.is_empty() && words.bigrams.is_empty() {
        return None;
    }
    let mut per_field: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for (spec, field) in &gen.fields.text {
        let boost = scoring.boosts.get(&spec.name).copied().unwrap_or(1.0);
        if boost <= 0.0 {
            continue;
        }
        let params = scoring.bm25.params(&spec.name);
        let term = |w: &String, weight: f32| -> (Occur, Box<dyn Query>) {
            let q = bm25::term_query(*field, w, params);
            (Occur::Should, Box::new(BoostQuery::new(q, weight)))
        };
        let terms: Vec<(Occur, Box<dyn Query>)> = if spec.is_bigram() {
            words.bigrams.iter().map(|w| term(w, 1.0)).collect()
        } else {
            let synonyms = words.synonyms.iter().filter(|w| !words.words.contains(w));
            (words.words.iter().map(|w| term(w, 1.0)))
                .chain(synonyms.map(|w| term(w, SYNONYM_WEIGHT)))
                .collect()
        };
        if terms.is_empty() {
            continue;
        }
        let q: Box<dyn Query> = Box::new(BooleanQuery::new(terms));
        per_field.push((Occur::Should, Box::new(BoostQuery::new(q, boost))));
    }
    if per_field.is_empty() {
        return None;
    }
    Some(Box::new(BooleanQuery::new(per_field)))
}

/// A product's text in the fields indexed with a `.bigram` sub-field, normalized: what
/// [`match_share`] looks query terms up in. Made once per candidate of every search.
pub fn bigram_texts(gen: &Generation, p: &Product) -> Vec<String> {
    gen.fields
        .text
        .iter()
        .filter(|(s, _)| s.is_bigram())
        .map(|(s, _)| normalize(&field_text(p, s.source())))
        .collect()
}

/// The share of `terms` (query bigram terms) that `texts` (from [`bigram_texts`]) hold (1
/// when there is no term). A term counts when a text contains it: exactly the bigram
/// sub-field's test for CJK bigrams, looser for Latin/digit terms (`50` is in `500ml`).
pub fn match_share(texts: &[String], terms: &[String]) -> f32 {
    if terms.is_empty() {
        return 1.0;
    }
    let found = terms
        .iter()
        .filter(|t| texts.iter().any(|x| x.contains(t.as_str())))
        .count();
    found as f32 / terms.len() as f32
}

/// How many products under `filters` hold at least `min_share` of `terms` (see
/// [`match_share`]); with no bigram sub-field or no term, how many hold any query word.
pub fn count_matches(
    gen: &Generation,
    terms: &[String],
    words: &QueryWords,
    scoring: TextScoring,
    filters: &Filters,
    min_share: f32,
) -> Result<usize> {
    let fields: Vec<tantivy::schema::Field> = gen
        .fields
        .text
        .iter()
        .filter(|(s, _)| s.is_bigram())
        .map(|(_, f)| *f)
        .collect();
    let query: Box<dyn Query> = if fields.is_empty() || terms.is_empty() {
        match text_query(gen, words, scoring) {
            Some(q) => q,
            None => return Ok(0),
        }
    } else {
        let per_term: Vec<Box<dyn Query>> = terms
            .iter()
            .map(|t| {
                let any_field: Vec<Box<dyn Query>> = fields
                    .iter()
                    .map(|f| {
                        let term = Term::from_field_text(*f, t);
                        Box::new(TermQuery::new(term, IndexRecordOption::Basic)) as Box<dyn Query>
                    })
                    .collect();
                Box::new(BooleanQuery::union(any_field)) as Box<dyn Query>
            })
            .collect();
        let need = ((min_share * per_term.len() as f32).ceil() as usize).max(1);
        Box::new(BooleanQuery::union_with_minimum_required_clauses(
            per_term, need,
        ))
    };
    let q = with_filters(query, filters.queries(gen));
    Ok(gen.searcher.search(&*q, &tantivy::collector::Count)?)
}

/// tantivy's explanation of each row's BM25 score (per field and term: boosts, idf, term
/// frequency, length normalization with the field's k1 and b), in the order of `ords`;
/// `None` for a row when the query has no words or the product matches none of them. The
/// query is built once.
pub fn explain_bm25(
    gen: &Generation,
    words: &QueryWords,
    scoring: TextScoring,
    ords: &[u32],
) -> Result<Vec<Option<serde_json::Value>>> {
    let Some(q) = text_query(gen, words, scoring) else {
        return Ok(vec![None; ords.len()]);
    };
    let names: HashMap<u32, &str> = gen
        .fields
        .text
        .iter()
        .map(|(spec, f)| (f.field_id(), spec.name.as_str()))
        .collect();
    // One weight for all rows (`Query::explain` would build one per row).
    let weight = q.weight(EnableScoring::enabled_from_searcher(&gen.searcher))?;
    let mut out = Vec::with_capacity(ords.len());
    for &ord in ords {
        let by_ord = TermQuery::new(
            Term::from_field_u64(gen.fields.ord, ord as u64),
            IndexRecordOption::Basic,
        );
        let hit = gen
            .searcher
            .search(&by_ord, &TopDocs::with_limit(1).order_by_score())?;
        // No document, or one matching none of the words (a vector-only candidate).
        let explanation = hit.first().and_then(|(_, addr)| {
            let reader = gen.searcher.segment_reader(addr.segment_ord);
            weight.explain(reader, addr.doc_id).ok()
        });
        out.push(explanation.map(|e| {
            let tree: serde_json::Value =
                serde_json::from_str(&e.to_pretty_json()).unwrap_or_default();
            let mut terms = Vec::new();
            flatten_explanation(&tree, 1.0, &names, &mut terms);
            terms.sort_by(|a, b| b.2.total_cmp(&a.2));
            let terms: Vec<serde_json::Value> = terms
                .into_iter()
                .map(|(field, term, score)| {
                    serde_json::json!({"field": field, "term": term, "score": score})
                })
                .collect();
            serde_json::json!({"score": e.value(), "terms": terms, "tantivy": tree})
        }));
    }
    Ok(out)
}

/// (field, term, score with the boosts above it) of every term of a tantivy explanation.
fn flatten_explanation(
    node: &serde_json::Value,
    boost: f32,
    names: &HashMap<u32, &str>,
    out: &mut Vec<(String, String, f32)>,
) {
    let desc = node["description"].as_str().unwrap_or("");
    let mut boost = boost;
    if let Some(b) = desc
        .strip_prefix("Boost x")
        .and_then(|r| r.split(' ').next())
        .and_then(|b| b.parse::<f32>().ok())
    {
        boost *= b;
    }
    if desc.starts_with("TermQuery") {
        let context = node["context"][0].as_str().unwrap_or("");
        let field = context
            .split("field=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|f| f.parse::<u32>().ok())
            .and_then(|f| names.get(&f))
            .map_or("?", |n| n);
        let term = context.split('"').nth(1).unwrap_or("");
        let value = node["value"].as_f64().unwrap_or(0.0) as f32;
        out.push((field.to_string(), term.to_string(), value * boost));
        return;
    }
    for child in node["details"].as_array().into_iter().flatten() {
        flatten_explanation(child, boost, names, out);
    }
}

fn with_filters(q: Box<dyn Query>, filters: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    if filters.is_empty() {
        return q;
    }
    let mut clauses = vec![(Occur::Must, q)];
    clauses.extend(filters.into_iter().map(|f| (Occur::Must, f)));
    Box::new(BooleanQuery::new(clauses))
}

/// Top-k (row, score) for a query, reading rows from the `ord` fast field.
fn top_ords(searcher: &Searcher, query: &dyn Query, k: usize) -> Result<Vec<(u32, f32)>> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let top = searcher.search(query, &TopDocs::with_limit(k).order_by_score())?;
    let mut columns: HashMap<u32, Column<u64>> = HashMap::new();
    let mut out = Vec::with_capacity(top.len());
    for (score, addr) in top {
        let column = match columns.get(&addr.segment_ord) {
            Some(c) => c,
            None => {
                let c = searcher
                    .segment_reader(addr.segment_ord)
                    .fast_fields()
                    .u64("ord")?;
                columns.entry(addr.segment_ord).or_insert(c)
            }
        };
        let ord = column
            .first(addr.doc_id)
            .ok_or_else(|| Error::Internal(format!("document {addr:?} has no ord")))?;
        out.push((ord as u32, score));
    }
    Ok(out)
}

/// A facet value and how many results have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FacetCount {
    /// Brand, or category path.
    pub value: String,
    /// Number of results.
    pub count: usize,
}

/// Facet counts over a result set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facets {
    /// Brands, most frequent first.
    pub brand: Vec<FacetCount>,
    /// Category paths and each of their ancestors (`美妆`, `美妆/面霜`), most frequent first.
    pub category: Vec<FacetCount>,
}

/// Counts brands and categories of `ords` (at most `limit` values each).
pub fn facets(
    products: &[Arc<Product>],
    ords: impl IntoIterator<Item = u32>,
    limit: usize,
) -> Facets {
    // Brands are grouped by normalized spelling, as the brand filter compares them, and
    // shown in the first spelling met.
    let mut brands: HashMap<String, (&str, usize)> = HashMap::new();
    let mut categories: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for ord in ords {
        if !seen.insert(ord) {
            continue;
        }
        let p = &products[ord as usize];
        if !p.brand.is_empty() {
            brands
                .entry(normalize(&p.brand))
                .or_insert((p.brand.as_str(), 0))
                .1 += 1;
        }
        let mut path = String::new();
        for seg in p.category.split('/').filter(|s| !s.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(seg);
            *categories.entry(path.clone()).or_default() += 1;
        }
    }
    let top = |counts: Vec<(String, usize)>| {
        let mut v: Vec<FacetCount> = counts
            .into_iter()
            .map(|(value, count)| FacetCount { value, count })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        v.truncate(limit);
        v
    };
    Facets {
        brand: top(brands
            .into_values()
            .map(|(k, v)| (k.to_string(), v))
            .collect()),
        category: top(categories.into_iter().collect()),
    }
}

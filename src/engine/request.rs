//! What a search asks and answers: the request, its validation, the response with hits,
//! timings, applied filters and experiment tag, and the health facts.

use super::*;

/// Largest page size.
pub const MAX_PAGE_SIZE: usize = 100;

/// A search as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// What the shopper typed.
    pub query: String,
    /// Filters.
    pub filters: Filters,
    /// 1-based page.
    pub page: usize,
    /// Hits per page.
    pub size: usize,
    /// Ranking profile name (`default` when `None`).
    pub profile: Option<String>,
    /// Include the per-hit breakdown.
    pub explain: bool,
    /// With `explain`, also tantivy's per-term BM25 breakdown of each hit (most of
    /// explain's cost; `shoprank tune` needs the features only).
    pub explain_terms: bool,
    /// The shopper, for personalized ranking.
    pub user: Option<String>,
    /// Weights replacing the profile's for this request only (`w.semantic=0.6`).
    pub overrides: std::collections::BTreeMap<String, f32>,
    /// BM25 parameters replacing the profile's for this request only (`shoprank tune`
    /// tries settings this way).
    pub bm25: Option<crate::retrieve::Bm25Settings>,
    /// List every ranked candidate as a hit, matches or not (offline `eval` and `tune`
    /// score the ranking; `no_match` still tells whether anything matched).
    pub all_candidates: bool,
}

impl SearchRequest {
    /// A first-page request with default settings.
    pub fn new(query: impl Into<String>) -> Self {
        SearchRequest {
            query: query.into(),
            filters: Filters::default(),
            page: 1,
            size: 10,
            profile: None,
            explain: false,
            explain_terms: true,
            user: None,
            overrides: Default::default(),
            bm25: None,
            all_candidates: false,
        }
    }
}

/// One result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Product id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Brand.
    pub brand: String,
    /// Category path.
    pub category: String,
    /// Price.
    pub price: Option<f64>,
    /// Ranking score.
    pub score: f32,
    /// Breakdown, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

/// Milliseconds per stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Normalization and tokenization.
    pub analyze: f64,
    /// Query encoding.
    pub encode: f64,
    /// BM25 and vector retrieval.
    pub retrieve: f64,
    /// Feature scoring and sorting.
    pub rank: f64,
    /// Everything.
    pub total: f64,
}

/// A search answer.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    /// The query as given.
    pub query: String,
    /// The query after normalization and tokenization.
    pub tokens: Vec<String>,
    /// Words added by synonyms (searched at a lower weight).
    pub synonyms: Vec<String>,
    /// Number of products that match (see `rank::Matching`): products under the filters
    /// whose text holds enough of the query's terms, counted over the whole catalog, plus
    /// candidates found only by meaning whose similarity passes the profile's bar.
    pub total: usize,
    /// How many of them can be paged through (the ranked candidates that match; at most
    /// the profile's candidate counts).
    pub pageable: usize,
    /// Nothing matched: `hits` is empty and `related` holds the nearest candidates.
    pub no_match: bool,
    /// When nothing matches, the best candidates anyway (not matches: the page should say
    /// so); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Hit>,
    /// Pinyin in the query converted to the catalog's words (`lan kou` -> `兰蔻`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinyin: Option<crate::analysis::PinyinConversion>,
    /// Page number.
    pub page: usize,
    /// Page size.
    pub size: usize,
    /// Profile used.
    pub profile: String,
    /// Whether semantic similarity took part.
    pub semantic: bool,
    /// The model whose query and product vectors took part (none without semantic
    /// similarity); with interleaving of two models, both, as `A + B` (a model id may
    /// hold a `+`: `m3e-small+int8`).
    pub model: Option<String>,
    /// Whether the user's profile took part.
    pub personalized: bool,
    /// What the query was understood to ask for.
    pub intents: Intents,
    /// The filters applied (the request's, plus a price bound from the query).
    pub filters: AppliedFilters,
    /// The page of hits.
    pub hits: Vec<Hit>,
    /// Brand and category counts over all ranked results.
    pub facets: Facets,
    /// Stage timings.
    pub timings_ms: Timings,
    /// The A/B experiment this search took part in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentTag>,
    /// Merchandising rules whose condition held, with what each did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::rank::rules::Applied>,
    /// What this search gave up to keep its profile's latency budget under load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<super::BudgetNote>,
}

/// Which experiment arm served a search, and the id its outcomes are attributed to.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentTag {
    /// Experiment id.
    pub id: String,
    /// Arm (`interleaved` when interleaving).
    pub arm: String,
    /// Logged search id.
    pub search_id: String,
    /// Arm -> the model whose vectors ranked its results (arms without semantic
    /// similarity are left out); two arms when interleaving.
    pub models: std::collections::BTreeMap<String, String>,
}

/// Filters as applied to a search.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppliedFilters {
    /// Brand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Category prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Lowest price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_min: Option<f64>,
    /// Highest price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_max: Option<f64>,
    /// In stock only.
    pub in_stock: bool,
}

impl From<&Filters> for AppliedFilters {
    fn from(f: &Filters) -> Self {
        AppliedFilters {
            brand: f.brand.clone(),
            category: f.category.clone(),
            price_min: f.price_min,
            price_max: f.price_max,
            in_stock: f.in_stock,
        }
    }
}

/// Health facts.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok`, or `degraded` when something in `problems` fails (`GET /ready` answers 503).
    pub status: &'static str,
    /// What is failing now (the event store, the in-flight limit).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Live generation name.
    pub generation: String,
    /// Live products in it.
    pub products: usize,
    /// Whether this process takes product writes.
    pub writable: bool,
    /// Whether semantic ranking is on.
    pub semantic: bool,
    /// Encoder model id, when loaded.
    pub model: Option<String>,
    /// Why semantic ranking is off, when it is.
    pub note: Option<String>,
    /// Known profiles.
    pub profiles: Vec<String>,
    /// Query-vector cache counters, when semantic ranking is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_cache: Option<crate::encoder::CacheStats>,
    /// The loaded models: the serving one and the challengers profiles name, each with
    /// the profiles that search with it.
    pub models: Vec<super::ModelStatus>,
}

/// The trimmed query, or why it cannot be searched.
pub(super) fn validate(req: &SearchRequest) -> Result<&str> {
    let q = req.query.trim();
    if q.is_empty() {
        return Err(Error::InvalidQuery(
            "the query is empty: type what you are looking for".into(),
        ));
    }
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(Error::InvalidQuery(format!(
            "the query is {chars} characters long, at most {MAX_QUERY_CHARS} are allowed"
        )));
    }
    if req.size == 0 || req.size > MAX_PAGE_SIZE {
        return Err(Error::param(
            "size",
            format!("must be within 1..={MAX_PAGE_SIZE}, got {}", req.size),
        ));
    }
    if req.page == 0 || req.page > 1000 {
        return Err(Error::param(
            "page",
            format!("must be within 1..=1000, got {}", req.page),
        ));
    }
    req.filters.validate()?;
    Ok(q)
}

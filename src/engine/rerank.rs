//! Shoprank as the ranking stage of another engine: a query and that engine's candidates
//! -> the candidates in shoprank's order (`POST /v1/rerank`); texts -> vectors
//! (`POST /v1/embeddings`).
//!
//! Candidates that name indexed products (`{"id": ...}`) are ranked exactly as a search
//! ranks them: BM25 of the understood query over the product's fields, similarity of the
//! query vector to the stored product vector, the profile's catalog and intent features,
//! and the shopper's profile when `user` is given. Free texts (strings, `{"text"}`, or
//! product objects without an indexed id) have no catalog features: they are scored by
//! the cosine of the query and text vectors, or, without a model, by the share of the
//! query's words they contain.

use super::*;

/// Most documents in one rerank request.
pub const MAX_RERANK_DOCUMENTS: usize = 1000;
/// Longest document text, in characters (longer ones are cut before encoding).
const MAX_DOCUMENT_CHARS: usize = 2000;

/// `text` cut to [`MAX_DOCUMENT_CHARS`].
fn cut(text: &str) -> String {
    text.chars().take(MAX_DOCUMENT_CHARS).collect()
}

/// One candidate of a rerank request.
#[derive(Debug, Clone, PartialEq)]
pub enum RerankDocument {
    /// Free text (a title, or a product object's text fields joined).
    Text(String),
    /// The id of an indexed product.
    Product(String),
}

/// A rerank request as the engine sees it.
#[derive(Debug, Clone)]
pub struct RerankRequest {
    /// The shopper's query.
    pub query: String,
    /// The candidates, in the caller's order.
    pub documents: Vec<RerankDocument>,
    /// Ranking profile (`default` when `None`).
    pub profile: Option<String>,
    /// The shopper, for personalized ranking of indexed products.
    pub user: Option<String>,
    /// Keep the per-document breakdown.
    pub explain: bool,
}

/// One reranked document.
#[derive(Debug, Clone, Serialize)]
pub struct Reranked {
    /// Its position in the request.
    pub index: usize,
    /// Its score (higher is better; comparable within one request only).
    pub score: f32,
    /// The breakdown, for indexed products when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

impl Engine {
    /// The request's documents, best first.
    pub fn rerank(&self, req: &RerankRequest) -> Result<Vec<Reranked>> {
        let search = SearchRequest::new(req.query.clone());
        let query = validate(&search)?;
        if req.documents.is_empty() || req.documents.len() > MAX_RERANK_DOCUMENTS {
            return Err(Error::param(
                "documents",
                format!(
                    "send 1 to {MAX_RERANK_DOCUMENTS} documents, got {}",
                    req.documents.len()
                ),
            ));
        }
        let profile = self
            .profiles()
            .get(req.profile.as_deref().unwrap_or("default"))?;
        let view = self.model_view(&profile);
        let gen = view.gen.clone();
        let ids: Option<Vec<u32>> = req
            .documents
            .iter()
            .map(|d| match d {
                RerankDocument::Product(id) => gen
                    .by_id
                    .get(id)
                    .copied()
                    .filter(|&o| gen.is_live(o as usize)),
                RerankDocument::Text(_) => None,
            })
            .collect();
        let encode = |text: &str| match &view.encoder {
            Some(e) => e.encode_query(text).map(Some),
            None => Ok(None),
        };
        let (understood, query_vector) = self.understand(&gen, query, encode)?;
        let mut out = match ids {
            Some(ords) => {
                self.rerank_products(&view, req, &profile, understood, query_vector, &ords)?
            }
            None => self.rerank_texts(&view, req, &understood, query_vector.as_deref())?,
        };
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        Ok(out)
    }

    fn rerank_products(
        &self,
        view: &super::models::ModelView,
        req: &RerankRequest,
        profile: &Profile,
        understood: QueryAnalysis,
        query_vector: Option<Vec<f32>>,
        ords: &[u32],
    ) -> Result<Vec<Reranked>> {
        let gen = &*view.gen;
        let words = QueryWords {
            words: understood.tokens,
            synonyms: understood.synonyms,
            bigrams: understood.bigrams,
        };
        let mut unique = ords.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let candidates = retrieve::score_rows(
            gen,
            &words,
            query_vector.as_deref(),
            profile.text_scoring(),
            &unique,
        )?;
        let personal = self.personal_context(req.user.as_deref(), view);
        let scored: HashMap<u32, rank::Scored> = rank::rank(
            gen,
            &candidates,
            profile,
            personal.as_ref(),
            &understood.intents,
        )
        .into_iter()
        .map(|s| (s.ord, s))
        .collect();
        Ok(ords
            .iter()
            .enumerate()
            .map(|(index, ord)| {
                let s = &scored[ord];
                Reranked {
                    index,
                    score: s.score,
                    explain: req.explain.then(|| s.explain.clone()),
                }
            })
            .collect())
    }

    fn rerank_texts(
        &self,
        view: &super::models::ModelView,
        req: &RerankRequest,
        understood: &QueryAnalysis,
        query_vector: Option<&[f32]>,
    ) -> Result<Vec<Reranked>> {
        let texts: Vec<String> = req
            .documents
            .iter()
            .map(|d| match d {
                RerankDocument::Text(t) => cut(t),
                // An id that is not indexed: its only text is the id.
                RerankDocument::Product(id) => id.clone(),
            })
            .collect();
        let scores: Vec<f32> = match (query_vector, &view.encoder) {
            (Some(q), Some(e)) => embed_with(e, &texts, false)?
                .iter()
                .map(|v| crate::encoder::dot(q, v))
                .collect(),
            _ => {
                let wanted = &understood.tokens;
                texts
                    .iter()
                    .map(|t| {
                        let have = view.gen.analysis.query_words(t);
                        let hit = wanted.iter().filter(|w| have.contains(w)).count();
                        hit as f32 / wanted.len().max(1) as f32
                    })
                    .collect()
            }
        };
        Ok(scores
            .into_iter()
            .enumerate()
            .map(|(index, score)| Reranked {
                index,
                score,
                explain: None,
            })
            .collect())
    }

    /// Vectors of `texts`: as queries (with the model's query prefix) or as documents.
    /// `NoModel` without a model (the reason, with its paths, is in the log and `/health`).
    pub fn embed(&self, texts: &[String], as_queries: bool) -> Result<Vec<Vec<f32>>> {
        embed_with(
            self.encoder.as_ref().ok_or(Error::NoModel)?,
            texts,
            as_queries,
        )
    }

    /// The model id vectors come from, when a model is loaded.
    pub fn model_id(&self) -> Option<String> {
        self.encoder.as_ref().map(|e| e.id().to_string())
    }
}

/// Vectors of `texts` by `e`: as queries (with the model's query prefix) or as documents.
fn embed_with(e: &Encoder, texts: &[String], as_queries: bool) -> Result<Vec<Vec<f32>>> {
    if as_queries {
        texts.iter().map(|t| e.encode_query(t)).collect()
    } else {
        let texts: Vec<String> = texts.iter().map(|t| cut(t)).collect();
        e.encode_documents(&texts, |_| {})
    }
}

//! Search: a request -> understood query (intents, search text, words, synonyms) ->
//! query vector -> candidates -> ranked page with facets and explain; and `/analyze`,
//! `/suggest`. Each stage is timed into the response and runs in its own tracing span.

use super::*;

impl Engine {
    /// Query understanding: normalized text, tokens and intents, as `/analyze` shows them.
    pub fn analyze(&self, query: &str) -> Result<QueryAnalysis> {
        let req = SearchRequest::new(query);
        let query = validate(&req)?;
        let gen = self.generation();
        let (intents, search_text) = self.first_pass(&gen, query);
        let vector = match &self.encoder {
            Some(e) => Some(e.encode_query(&search_text)?),
            None => None,
        };
        let (words, intents) = self.understand(&gen, intents, &search_text, vector.as_deref());
        Ok(QueryAnalysis {
            normalized: crate::analysis::normalize(query),
            tokens: words.words,
            synonyms: words.synonyms,
            search_text,
            intents,
        })
    }

    /// Intents before the query is encoded, and the text that is searched: the query
    /// without its price expression (unless nothing else is left).
    fn first_pass(&self, gen: &Generation, query: &str) -> (Intents, String) {
        let (intents, cut) = self.intent_model(gen).analyze(query, None);
        (
            intents,
            if cut.is_empty() {
                query.to_string()
            } else {
                cut
            },
        )
    }

    /// BM25 words (with synonym expansions) and intents, categories blended with what
    /// shoppers clicked after this query.
    fn understand(
        &self,
        gen: &Generation,
        mut intents: Intents,
        search_text: &str,
        vector: Option<&[f32]>,
    ) -> (QueryWords, Intents) {
        let text = self.text.read().unwrap_or_else(|e| e.into_inner());
        let analysis = text.analysis.as_ref().unwrap_or(&gen.analysis);
        let words = analysis.query_words(search_text);
        let mut synonyms = Vec::new();
        for phrase in text
            .synonyms
            .expand(&crate::analysis::normalize(search_text))
        {
            for w in analysis.query_words(&phrase) {
                if !words.contains(&w) && !synonyms.contains(&w) {
                    synonyms.push(w);
                }
            }
        }
        // Without a category name in the query, the query vector finds the nearest centroids.
        if intents.category.is_empty() && vector.is_some() {
            let model = text.intents.as_deref().unwrap_or(&gen.intents);
            intents.category = model.categories(&crate::analysis::normalize(search_text), vector);
        }
        if let Some(b) = &self.behavior {
            let clicks = b.click_categories(&crate::analysis::normalize(search_text));
            intents.category =
                crate::intent::blend_categories(std::mem::take(&mut intents.category), &clicks);
        }
        (QueryWords { words, synonyms }, intents)
    }

    fn intent_model<'a>(&self, gen: &'a Generation) -> IntentRef<'a> {
        let text = self.text.read().unwrap_or_else(|e| e.into_inner());
        match &text.intents {
            Some(m) => IntentRef::Reloaded(m.clone()),
            None => IntentRef::Generation(&gen.intents),
        }
    }

    /// Completions of a typed prefix (characters, pinyin or initials).
    pub fn suggest(&self, prefix: &str, size: usize) -> Result<Vec<Suggestion>> {
        if prefix.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::InvalidQuery(format!(
                "the prefix is longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        if size == 0 || size > 50 {
            return Err(Error::param(
                "size",
                format!("must be within 1..=50, got {size}"),
            ));
        }
        Ok(self.suggester.suggest(prefix, size))
    }

    /// Runs one search.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse> {
        let _search =
            tracing::debug_span!("search", query = %req.query, profile = ?req.profile).entered();
        let started = Instant::now();
        let query = validate(req)?;
        let profile_name = req.profile.clone().unwrap_or_else(|| "default".into());
        let mut profile: Arc<Profile> = self.profiles().get(&profile_name)?;
        if !req.overrides.is_empty() {
            profile = Arc::new(Profile::with_overrides(&profile, &req.overrides)?);
        }
        let gen = self.generation();
        let mut timings = Timings::default();

        let t = Instant::now();
        let span = tracing::debug_span!("analyze").entered();
        let (intents, search_text) = self.first_pass(&gen, query);
        drop(span);
        timings.analyze = self.stage("analyze", t);

        let t = Instant::now();
        let span = tracing::debug_span!("encode").entered();
        let semantic_wanted = profile.weight("semantic") != 0.0 || profile.candidates.vector > 0;
        let query_vector = match &self.encoder {
            Some(e) if semantic_wanted => Some(e.encode_query(&search_text)?),
            _ => None,
        };
        drop(span);
        timings.encode = self.stage("encode", t);

        let t = Instant::now();
        let span = tracing::debug_span!("understand").entered();
        let (words, intents) =
            self.understand(&gen, intents, &search_text, query_vector.as_deref());
        drop(span);
        let span = tracing::debug_span!("retrieve").entered();
        let mut filters = req.filters.clone();
        // An explicit price bound in the query filters, unless the request sets prices itself.
        if let (Some(PriceIntent::Range { min, max }), None, None) =
            (intents.price, filters.price_min, filters.price_max)
        {
            filters.price_min = min;
            filters.price_max = max;
        }
        let candidates = retrieve::candidates(
            &gen,
            &words,
            query_vector.as_deref(),
            &filters,
            &profile.boosts,
            profile.candidates.bm25,
            profile.candidates.vector,
        )?;
        drop(span);
        timings.retrieve = self.stage("retrieve", t);

        let t = Instant::now();
        let span = tracing::debug_span!("rank").entered();
        let personal = match (&req.user, &self.behavior) {
            (Some(user), Some(b)) => b.context(user),
            _ => None,
        };
        let ranked = rank::rank(&gen, &candidates, &profile, personal.as_ref(), &intents);
        let ranked = rank::diversify(
            ranked,
            |ord| crate::analysis::normalize(&gen.products[ord as usize].brand),
            profile.diversity.max_per_brand,
        );
        let facets = retrieve::facets(&gen.products, ranked.iter().map(|s| s.ord), 20);
        let page: Vec<&rank::Scored> = ranked
            .iter()
            .skip((req.page - 1) * req.size)
            .take(req.size)
            .collect();
        let mut bm25_terms = match req.explain {
            true => {
                let ords: Vec<u32> = page.iter().map(|s| s.ord).collect();
                retrieve::explain_bm25(&gen, &words, &profile.boosts, &ords)?
            }
            false => Vec::new(),
        }
        .into_iter();
        let hits = page
            .into_iter()
            .map(|s| {
                let p = &gen.products[s.ord as usize];
                Hit {
                    id: p.id.clone(),
                    title: p.title.clone(),
                    brand: p.brand.clone(),
                    category: p.category.clone(),
                    price: p.price,
                    score: s.score,
                    explain: req.explain.then(|| rank::Explain {
                        bm25_terms: bm25_terms.next().flatten(),
                        ..s.explain.clone()
                    }),
                }
            })
            .collect();
        drop(span);
        timings.rank = self.stage("rank", t);
        timings.total = self.stage("total", started);

        Ok(SearchResponse {
            query: req.query.clone(),
            tokens: words.words,
            synonyms: words.synonyms,
            total: ranked.len(),
            page: req.page,
            size: req.size,
            profile: profile_name,
            semantic: query_vector.is_some(),
            personalized: personal.is_some(),
            intents,
            filters: AppliedFilters::from(&filters),
            hits,
            facets,
            timings_ms: timings,
            experiment: None,
        })
    }
}

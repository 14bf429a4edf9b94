//! Search: a request -> understood query (intents, search text, words, synonyms) ->
//! query vector -> candidates -> ranked page with facets and explain; and `/analyze`,
//! `/suggest`. Each stage is timed into the response and runs in its own tracing span.

use super::*;

impl Engine {
    /// Query understanding: normalized text, tokens and intents, as `/analyze` shows them
    /// (the query vector, when there is an encoder, finds categories by centroid).
    pub fn analyze(&self, query: &str) -> Result<QueryAnalysis> {
        let req = SearchRequest::new(query);
        let query = validate(&req)?;
        let gen = self.generation();
        let encode = |text: &str| match &self.encoder {
            Some(e) => e.encode_query(text).map(Some),
            None => Ok(None),
        };
        Ok(self.understand(&gen, query, encode)?.0)
    }

    /// Every brand alias in use (`alias<TAB>brand<TAB>source` lines), for review.
    pub fn brand_aliases(&self) -> Vec<String> {
        let gen = self.generation();
        let text = self.text.read().unwrap_or_else(|e| e.into_inner());
        let model = text.intents.clone().unwrap_or_else(|| gen.intents.clone());
        model
            .brands()
            .aliases()
            .into_iter()
            .map(|(alias, brand, source)| format!("{alias}\t{brand}\t{}", source.name()))
            .collect()
    }

    /// [`intent::understand`] with this engine's text resources and the categories
    /// shoppers clicked after the same query.
    pub(super) fn understand(
        &self,
        gen: &Generation,
        query: &str,
        encode: impl FnOnce(&str) -> Result<Option<Vec<f32>>>,
    ) -> Result<(QueryAnalysis, Option<Vec<f32>>)> {
        // A snapshot of the resources, so a reload never waits for an encode.
        let (model, analysis, synonyms) = {
            let text = self.text.read().unwrap_or_else(|e| e.into_inner());
            (
                // Reloaded brands and names, with the centroids of the generation's own
                // vectors (a challenger's view has its model's).
                match &text.intents {
                    Some(reloaded) => Arc::new(reloaded.with_centroids_of(&gen.intents)),
                    None => gen.intents.clone(),
                },
                text.analysis
                    .clone()
                    .unwrap_or_else(|| gen.analysis.clone()),
                text.synonyms.clone(),
            )
        };
        let res = intent::Resources {
            model: &model,
            analysis: &analysis,
            synonyms: &synonyms,
            // Built on first use: only a query with Latin letters can hold pinyin.
            pinyin: query
                .bytes()
                .any(|b| b.is_ascii_alphabetic())
                .then(|| gen.pinyin()),
        };
        intent::understand(query, &res, encode, |key| match &self.behavior {
            Some(b) => b.clicked(key),
            None => Default::default(),
        })
    }

    /// Completions of a typed prefix (characters, pinyin or initials).
    pub fn suggest(
        &self,
        prefix: &str,
        size: usize,
        user: Option<&str>,
    ) -> Result<Vec<Suggestion>> {
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
        let gen = self.generation();
        let mut pool = self.suggester.suggest(prefix, 3 * size);
        // A shopper's own recent searches first (theirs only), then completions re-scored
        // by the brands and categories they favor.
        let mut own = Vec::new();
        if let (Some(user), Some(b)) = (user, &self.behavior) {
            let pseudonym = self.pseudonyms.of(user);
            let recent: Vec<(String, f64)> = {
                let users = b.users.read().unwrap_or_else(|e| e.into_inner());
                let searches = users.get(&pseudonym).into_iter().flat_map(|p| {
                    (p.recent.iter().rev())
                        .filter(|e| e.kind == EventType::Search)
                        .filter_map(|e| e.query.clone())
                });
                searches
                    .enumerate()
                    .map(|(i, q)| (q, 1.0 / (1.0 + i as f64)))
                    .collect()
            };
            own = Suggester::new(recent, Vec::new()).suggest(prefix, size);
            own.iter_mut().for_each(|s| s.source = Some("history"));
            if let Some(taste) = b.context(&pseudonym) {
                for s in &mut pool {
                    let brand = (taste.brands.iter())
                        .filter(|(name, _)| {
                            (name.split('/').map(normalize))
                                .any(|n| n.chars().count() >= 2 && s.text.contains(&n))
                        })
                        .map(|(_, share)| *share)
                        .fold(0.0, f32::max);
                    let category = (taste.categories.iter())
                        .filter(|(path, _)| {
                            let leaf = normalize(path.rsplit('/').next().unwrap_or(""));
                            leaf.chars().count() >= 2 && s.text.contains(&leaf)
                        })
                        .map(|(_, share)| *share)
                        .fold(0.0, f32::max);
                    let affinity = brand.max(category) as f64;
                    if affinity > 0.0 {
                        s.score *= 1.0 + 4.0 * affinity;
                        s.source = Some("taste");
                    }
                }
                pool.sort_by(|a, b| b.score.total_cmp(&a.score));
            }
        }
        // Only what a search would answer with results.
        let min_share = self.profiles().get("default")?.matching.min_share;
        let matches = |text: &str| {
            let words = QueryWords {
                words: gen.analysis.query_words(text),
                synonyms: Vec::new(),
                bigrams: gen.analysis.bigrams(text),
            };
            let filters = retrieve::Filters::default();
            let scoring = Default::default();
            retrieve::count_matches(&gen, &words.bigrams, &words, scoring, &filters, min_share)
                .is_ok_and(|n| n > 0)
        };
        let mut out: Vec<Suggestion> = Vec::with_capacity(size);
        for s in own.into_iter().chain(pool) {
            if out.len() == size {
                break;
            }
            if !out.iter().any(|o| o.text == s.text) && matches(&s.text) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The shopper's taste, for ranking with `view`'s model. The user vector is a mean
    /// of the serving model's vectors: under a challenger it is left out (no `personal`
    /// feature), the brand, category and price affinities stay.
    pub(super) fn personal_context(
        &self,
        user: Option<&str>,
        view: &super::models::ModelView,
    ) -> Option<crate::behavior::profile::PersonalContext> {
        let (Some(user), Some(b)) = (user, &self.behavior) else {
            return None;
        };
        let mut context = b.context(&self.pseudonyms.of(user))?;
        if view.challenger {
            context.vector.clear();
        }
        Some(context)
    }

    /// Runs one search.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse> {
        let _search =
            tracing::debug_span!("search", query = %req.query, profile = ?req.profile).entered();
        let started = Instant::now();
        let (_flight, in_flight) = self.load.enter();
        let query = validate(req)?;
        let profile_name = req.profile.clone().unwrap_or_else(|| "default".into());
        let mut profile: Arc<Profile> = self.profiles().get(&profile_name)?;
        if !req.overrides.is_empty() || req.bm25.is_some() {
            profile = Arc::new(Profile::with_overrides(
                &profile,
                &req.overrides,
                req.bm25.as_ref(),
            )?);
        }
        // The profile's model: the live rows with its vectors, and its encoder.
        let view = self.model_view(&profile);
        let gen = view.gen.clone();
        let mut timings = Timings::default();

        // Understanding is one call; the encode inside it is timed on its own, and what
        // follows the encode (words, synonyms, categories) counts with retrieval, as before.
        let t = Instant::now();
        let semantic_wanted = view.encoder.is_some()
            && (profile.weight("semantic") != 0.0 || profile.candidates.vector > 0);
        // Under load, a profile's latency budget may drop the semantic stage and candidates.
        let budget = self.load.plan(
            &profile.budget,
            in_flight,
            profile.candidates.bm25,
            semantic_wanted,
        );
        let semantic_wanted =
            semantic_wanted && !budget.as_ref().is_some_and(|b| b.semantic_skipped);
        let bm25_candidates = budget
            .as_ref()
            .map_or(profile.candidates.bm25, |b| b.bm25_candidates);
        let encoded: std::cell::Cell<Option<(Instant, Instant)>> = Default::default();
        let encode = |text: &str| {
            let _span = tracing::debug_span!("encode").entered();
            let started = Instant::now();
            let v = match &view.encoder {
                Some(e) if semantic_wanted => e.encode_query(text).map(Some),
                _ => Ok(None),
            };
            encoded.set(Some((started, Instant::now())));
            v
        };
        let span = tracing::debug_span!("understand").entered();
        let (understood, query_vector) = self.understand(&gen, query, encode)?;
        drop(span);
        let (enc_start, enc_end) = encoded.get().unwrap_or_else(|| {
            let now = Instant::now();
            (now, now)
        });
        timings.analyze = self.stage_between("analyze", t, enc_start);
        timings.encode = self.stage_between("encode", enc_start, enc_end);
        let t = enc_end;
        let span = tracing::debug_span!("retrieve").entered();
        let QueryAnalysis {
            tokens,
            synonyms,
            bigrams,
            intents,
            pinyin,
            ..
        } = understood;
        let words = QueryWords {
            words: tokens,
            synonyms,
            bigrams,
        };
        let mut filters = req.filters.clone();
        // An explicit price bound in the query filters, unless the request sets prices itself.
        if let (Some(PriceIntent::Range { min, max }), None, None) =
            (intents.price, filters.price_min, filters.price_max)
        {
            filters.price_min = min;
            filters.price_max = max;
        }
        // Merchandising rules whose condition holds for this search; their filters
        // narrow the request's before retrieval.
        let returning = match (&req.user, &self.behavior) {
            (Some(user), Some(b)) => {
                let users = b.users.read().unwrap_or_else(|e| e.into_inner());
                users
                    .get(&self.pseudonyms.of(user))
                    .is_some_and(|p| p.events > 0)
            }
            _ => false,
        };
        let situation = rules::Situation {
            query,
            categories: (filters.category.iter().cloned())
                .chain(
                    (intents.category.iter())
                        .filter(|c| c.confidence >= 0.5)
                        .map(|c| c.value.clone()),
                )
                .collect(),
            now: crate::util::now(),
            segment: match returning {
                true => rules::Segment::Returning,
                false => rules::Segment::New,
            },
            profile: &profile_name,
        };
        let active = self.rules().active(&situation);
        active.narrow(&mut filters);
        let candidates = retrieve::candidates(
            &gen,
            &words,
            query_vector.as_deref(),
            &filters,
            profile.text_scoring(),
            bm25_candidates,
            match semantic_wanted {
                true => profile.candidates.vector,
                false => 0,
            },
        )?;
        drop(span);
        timings.retrieve = self.stage("retrieve", t);

        let t = Instant::now();
        let span = tracing::debug_span!("rank").entered();
        let personal = self.personal_context(req.user.as_deref(), &view);
        let mut ranked = rank::rank(&gen, &candidates, &profile, personal.as_ref(), &intents);
        let mut applied = active.hide_and_boost(&gen, &mut ranked, profile.tie_break);
        let hidden: usize = applied.iter().map(|a| a.hidden.len()).sum();
        let ranked = rank::diversify(
            ranked,
            |ord| crate::analysis::normalize(&gen.products[ord as usize].brand),
            profile.diversity.max_per_brand,
        );
        // Matches: enough of the query's terms in the text, or close enough in meaning.
        // The rest are shown only as `related`, when nothing matches.
        let matching = profile.matching;
        // A brand in the query boosts, it does not filter: its terms do not count towards
        // the share, unless the query is nothing but the brand (then a product of that
        // brand, in any spelling, holds them all).
        let brand_terms: Vec<String> = intents
            .brand
            .iter()
            .flat_map(|b| gen.analysis.bigrams(&b.alias))
            .collect();
        let mut terms: Vec<String> = words
            .bigrams
            .iter()
            .filter(|t| !brand_terms.contains(t))
            .cloned()
            .collect();
        let brand_only = terms.is_empty();
        if brand_only {
            terms = words.bigrams.clone();
        }
        // Synonyms (and a brand's other names) match too: `零嘴` finds `零食`.
        let mut synonym_terms: Vec<String> = Vec::new();
        for w in &words.synonyms {
            for t in gen.analysis.bigrams(w) {
                if !synonym_terms.contains(&t) {
                    synonym_terms.push(t);
                }
            }
        }
        let feature_at_least = |s: &rank::Scored, name: &str, min: f32| {
            (s.explain.features.iter()).any(|f| f.name == name && f.value >= min)
        };
        let names_brand = |s: &rank::Scored| feature_at_least(s, "brand_match", f32::MIN_POSITIVE);
        let mut by_meaning_only = 0;
        let anchored: Vec<bool> = ranked
            .iter()
            .map(|s| {
                let texts = retrieve::bigram_texts(&gen, &gen.products[s.ord as usize]);
                let share = match brand_only && names_brand(s) {
                    true => 1.0,
                    false => retrieve::match_share(&texts, &terms),
                };
                let lexical = share >= matching.min_share
                    || (!synonym_terms.is_empty()
                        && retrieve::match_share(&texts, &synonym_terms) >= matching.min_share);
                // In the category the query names (`猕猴桃` finds `奇异果`) is close too.
                let close = feature_at_least(s, "semantic", matching.min_similarity)
                    || feature_at_least(s, "category_match", 0.5);
                by_meaning_only += usize::from(close && !lexical);
                lexical || close
            })
            .collect();
        // The bar is on relevance (personal features left out: a shopper's taste reorders
        // the matches, it does not decide what matches); it may be negative (mismatch
        // penalties), and is relative to the best anchor.
        let best = ranked
            .iter()
            .zip(&anchored)
            .filter(|(_, a)| **a)
            .map(|(s, _)| s.relevance())
            .fold(f32::NEG_INFINITY, f32::max);
        let bar = if best == f32::NEG_INFINITY {
            f32::INFINITY // nothing matched by text or meaning: nothing else matches either
        } else if best > 0.0 {
            best * matching.min_relative
        } else {
            best
        };
        let no_match = !anchored.iter().any(|a| *a);
        let (matched, unmatched): (Vec<_>, Vec<_>) = ranked
            .into_iter()
            .zip(anchored)
            .partition(|(s, anchor)| req.all_candidates || *anchor || s.relevance() >= bar);
        let mut matched: Vec<rank::Scored> = matched.into_iter().map(|(s, _)| s).collect();
        let mut unmatched: Vec<rank::Scored> = unmatched.into_iter().map(|(s, _)| s).collect();
        let organic = matched.len();
        active.pin(&gen, &filters, &mut matched, &mut unmatched, &mut applied);
        let pinned_in = matched.len() - organic;
        let no_match = no_match && pinned_in == 0;
        let total = if matching.min_share > 0.0 {
            let lexical = retrieve::count_matches(
                &gen,
                &terms,
                &words,
                profile.text_scoring(),
                &filters,
                matching.min_share,
            )?;
            (lexical + by_meaning_only + pinned_in)
                .saturating_sub(hidden)
                .max(matched.len())
        } else {
            matched.len()
        };
        self.metrics.count_search(no_match);
        let facets = retrieve::facets(&gen.products, matched.iter().map(|s| s.ord), 20);
        let page: Vec<&rank::Scored> = matched
            .iter()
            .skip((req.page - 1) * req.size)
            .take(req.size)
            .collect();
        let mut bm25_terms = match req.explain && req.explain_terms {
            true => {
                let ords: Vec<u32> = page.iter().map(|s| s.ord).collect();
                retrieve::explain_bm25(&gen, &words, profile.text_scoring(), &ords)?
            }
            false => Vec::new(),
        }
        .into_iter();
        let model = (view.encoder.as_ref())
            .filter(|_| query_vector.is_some())
            .map(|e| e.id().to_string());
        let hit = |s: &rank::Scored, bm25_terms: Option<serde_json::Value>| {
            let p = &gen.products[s.ord as usize];
            Hit {
                id: p.id.clone(),
                title: p.title.clone(),
                brand: p.brand.clone(),
                category: p.category.clone(),
                price: p.price,
                score: s.score,
                explain: req.explain.then(|| rank::Explain {
                    bm25_terms,
                    model: model.clone(),
                    ..s.explain.clone()
                }),
            }
        };
        let hits = page
            .into_iter()
            .map(|s| hit(s, bm25_terms.next().flatten()))
            .collect();
        let related = match no_match {
            true => unmatched
                .iter()
                .take(req.size)
                .map(|s| hit(s, None))
                .collect(),
            false => Vec::new(),
        };
        drop(span);
        timings.rank = self.stage("rank", t);
        timings.total = self.stage("total", started);
        self.load.record(
            query_vector.is_some().then_some(timings.encode),
            timings.analyze + timings.retrieve + timings.rank,
        );

        Ok(SearchResponse {
            query: req.query.clone(),
            tokens: words.words,
            synonyms: words.synonyms,
            total,
            pageable: matched.len(),
            no_match,
            related,
            pinyin,
            page: req.page,
            size: req.size,
            profile: profile_name,
            semantic: query_vector.is_some(),
            model,
            personalized: personal.is_some(),
            intents,
            filters: AppliedFilters::from(&filters),
            hits,
            facets,
            timings_ms: timings,
            experiment: None,
            rules: applied,
            budget,
        })
    }
}

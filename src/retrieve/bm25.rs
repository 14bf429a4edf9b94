//! BM25 with k1 and b per field: a profile's `[bm25]` table -> tantivy term queries that
//! score with those parameters.
//!
//! tantivy's `Bm25Weight` hard-codes k1 = 1.2 and b = 0.75. A field left at those values
//! keeps tantivy's `TermQuery` (and its block-WAND pruning where tantivy applies it); a
//! field with other values gets [`Bm25TermQuery`], which reads the same postings (with
//! term frequencies) and field norms and computes idf and the average field length exactly
//! as `Bm25Weight` does, so only k1 and b differ. Its explanation has the shape of
//! tantivy's (`TermQuery, ...` with the term as context), so `explain_bm25` flattens both
//! alike, and names k1 and b.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantivy::fieldnorm::FieldNormReader;
use tantivy::postings::{Postings, SegmentPostings};
use tantivy::query::{EmptyScorer, EnableScoring, Explanation, Query, Scorer, TermQuery, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, DocSet, Score, SegmentReader, TantivyError, Term};

use crate::schema::{is_boostable, BIGRAM_SUFFIX, TEXT_FIELDS};

/// tantivy's (and Lucene's classic) term-frequency saturation.
pub const DEFAULT_K1: f32 = 1.2;
/// tantivy's length normalization.
pub const DEFAULT_B: f32 = 0.75;

/// k1 and b of one field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    /// Term-frequency saturation, >= 0 (0: a term counts once however often it occurs).
    pub k1: f32,
    /// Length normalization, 0..=1 (0: field length is ignored).
    pub b: f32,
}

impl Bm25Params {
    /// tantivy's parameters.
    pub const DEFAULT: Bm25Params = Bm25Params {
        k1: DEFAULT_K1,
        b: DEFAULT_B,
    };

    fn check(&self, what: &str) -> Result<(), String> {
        if !self.k1.is_finite() || self.k1 < 0.0 {
            return Err(format!(
                "bm25{what}: k1 must be a finite number >= 0, got {}",
                self.k1
            ));
        }
        if !(0.0..=1.0).contains(&self.b) {
            return Err(format!(
                "bm25{what}: b must be within 0..=1, got {}",
                self.b
            ));
        }
        Ok(())
    }
}

/// One field's override of k1, b or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldBm25 {
    /// k1 of this field (the table's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k1: Option<f32>,
    /// b of this field (the table's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<f32>,
}

/// A profile's `[bm25]` table: k1 and b for every text field, with per-field overrides
/// (`[bm25.fields."title.bigram"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bm25Settings {
    /// k1 of the fields without their own.
    pub k1: f32,
    /// b of the fields without their own.
    pub b: f32,
    /// Field name (as in `boosts`, `.bigram` sub-fields too) -> its own k1 and/or b.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldBm25>,
}

impl Default for Bm25Settings {
    fn default() -> Self {
        Bm25Settings::DEFAULT
    }
}

/// tantivy's parameters for every field, as a value to borrow.
pub static DEFAULT_SETTINGS: Bm25Settings = Bm25Settings::DEFAULT;

impl Bm25Settings {
    /// tantivy's parameters for every field.
    pub const DEFAULT: Bm25Settings = Bm25Settings {
        k1: DEFAULT_K1,
        b: DEFAULT_B,
        fields: BTreeMap::new(),
    };

    /// Whether every field scores as tantivy does.
    pub fn is_default(&self) -> bool {
        self == &Bm25Settings::DEFAULT
    }

    /// The parameters of field `name`.
    pub fn params(&self, name: &str) -> Bm25Params {
        let own = self.fields.get(name).copied().unwrap_or_default();
        Bm25Params {
            k1: own.k1.unwrap_or(self.k1),
            b: own.b.unwrap_or(self.b),
        }
    }

    /// Sets field `name`'s parameters (dropping the override where it equals the table's).
    pub fn set(&mut self, name: &str, p: Bm25Params) {
        let own = FieldBm25 {
            k1: (p.k1 != self.k1).then_some(p.k1),
            b: (p.b != self.b).then_some(p.b),
        };
        match own == FieldBm25::default() {
            true => self.fields.remove(name),
            false => self.fields.insert(name.to_string(), own),
        };
    }

    /// Checks field names and ranges: k1 finite and >= 0, b within 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        Bm25Params {
            k1: self.k1,
            b: self.b,
        }
        .check("")?;
        for name in self.fields.keys() {
            if !is_boostable(name) {
                return Err(format!(
                    "unknown field `{name}` in bm25.fields (fields: {}, each also as `NAME{BIGRAM_SUFFIX}`)",
                    TEXT_FIELDS.join(", ")
                ));
            }
            self.params(name).check(&format!(".fields.\"{name}\""))?;
        }
        Ok(())
    }
}

/// A query for `word` in `field` scored with `params`: tantivy's own `TermQuery` at its
/// default parameters, a [`Bm25TermQuery`] otherwise.
pub fn term_query(field: Field, word: &str, params: Bm25Params) -> Box<dyn Query> {
    let term = Term::from_field_text(field, word);
    if params == Bm25Params::DEFAULT {
        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
    } else {
        Box::new(Bm25TermQuery { term, params })
    }
}

/// One term scored by BM25 with the given k1 and b.
#[derive(Debug, Clone)]
pub struct Bm25TermQuery {
    /// The term.
    pub term: Term,
    /// Its field's parameters.
    pub params: Bm25Params,
}

impl Query for Bm25TermQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let EnableScoring::Enabled {
            statistics_provider: stats,
            ..
        } = scoring
        else {
            // Counting: which documents hold the term does not depend on k1 and b.
            return TermQuery::new(self.term.clone(), IndexRecordOption::Basic).weight(scoring);
        };
        // As `Bm25Weight::for_terms` computes them.
        let docs = stats.total_num_docs()?;
        let avg_fieldnorm = stats.total_num_tokens(self.term.field())? as Score / docs as Score;
        let doc_freq = stats.doc_freq(&self.term)?;
        let idf = idf(doc_freq, docs);
        let Bm25Params { k1, b } = self.params;
        let mut norms = [0.0; 256];
        for (id, n) in norms.iter_mut().enumerate() {
            let dl = FieldNormReader::id_to_fieldnorm(id as u8) as Score;
            *n = k1 * (1.0 - b + b * dl / avg_fieldnorm);
        }
        Ok(Box::new(Bm25TermWeight {
            term: self.term.clone(),
            params: self.params,
            idf,
            doc_freq,
            docs,
            avg_fieldnorm,
            norms: Arc::new(norms),
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        visitor(&self.term, false);
    }
}

/// tantivy's idf: ln(1 + (N - n + 0.5) / (n + 0.5)).
fn idf(doc_freq: u64, docs: u64) -> Score {
    let x = (docs.saturating_sub(doc_freq) as Score + 0.5) / (doc_freq as Score + 0.5);
    (1.0 + x).ln()
}

struct Bm25TermWeight {
    term: Term,
    params: Bm25Params,
    idf: Score,
    doc_freq: u64,
    docs: u64,
    avg_fieldnorm: Score,
    /// k1 × (1 - b + b × dl / avgdl) per field-norm id.
    norms: Arc<[Score; 256]>,
}

impl Bm25TermWeight {
    fn term_scorer(
        &self,
        reader: &SegmentReader,
        boost: Score,
    ) -> tantivy::Result<Option<Bm25TermScorer>> {
        let field = self.term.field();
        let inverted = reader.inverted_index(field)?;
        let Some(info) = inverted.get_term_info(&self.term)? else {
            return Ok(None);
        };
        let postings = inverted.read_postings_from_terminfo(&info, IndexRecordOption::WithFreqs)?;
        let fieldnorms = match reader.fieldnorms_readers().get_field(field)? {
            Some(f) => f,
            None => FieldNormReader::constant(reader.max_doc(), 1),
        };
        Ok(Some(Bm25TermScorer {
            postings,
            fieldnorms,
            // tantivy: idf × (1 + k1), times the boost.
            weight: self.idf * (1.0 + self.params.k1) * boost,
            norms: self.norms.clone(),
        }))
    }
}

impl Weight for Bm25TermWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(match self.term_scorer(reader, boost)? {
            Some(s) => Box::new(s),
            None => Box::new(EmptyScorer),
        })
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let scorer = self.term_scorer(reader, 1.0)?;
        let Some(mut s) = scorer.filter(|s| s.doc() <= doc) else {
            return Err(not_matching(doc));
        };
        if s.seek(doc) != doc {
            return Err(not_matching(doc));
        }
        let (k1, b) = (self.params.k1, self.params.b);
        let freq = s.postings.term_freq() as Score;
        let id = s.fieldnorms.fieldnorm_id(doc);
        let mut tf = Explanation::new(
            "freq / (freq + k1 * (1 - b + b * dl / avgdl))",
            freq / (freq + s.norms[id as usize]),
        );
        tf.add_const("freq, occurrences of term within document", freq);
        tf.add_const("k1, term saturation parameter (profile)", k1);
        tf.add_const("b, length normalization parameter (profile)", b);
        tf.add_const(
            "dl, length of field",
            FieldNormReader::id_to_fieldnorm(id) as Score,
        );
        tf.add_const("avgdl, average length of field", self.avg_fieldnorm);
        let mut idf = Explanation::new(
            "idf, computed as log(1 + (N - n + 0.5) / (n + 0.5))",
            self.idf,
        );
        idf.add_const(
            "n, number of docs containing this term",
            self.doc_freq as Score,
        );
        idf.add_const("N, total number of docs", self.docs as Score);
        // The description starts like tantivy's, which `explain_bm25` looks for.
        let mut e = Explanation::new_with_string(
            format!("TermQuery with BM25 k1 = {k1}, b = {b}, product of..."),
            s.score(),
        );
        e.add_detail(Explanation::new("(K1+1)", k1 + 1.0));
        e.add_detail(idf);
        e.add_detail(tf);
        e.add_context(format!("Term={:?}", self.term));
        Ok(e)
    }
}

fn not_matching(doc: DocId) -> TantivyError {
    TantivyError::InvalidArgument(format!("Document #({doc}) does not match"))
}

struct Bm25TermScorer {
    postings: SegmentPostings,
    fieldnorms: FieldNormReader,
    weight: Score,
    norms: Arc<[Score; 256]>,
}

impl DocSet for Bm25TermScorer {
    fn advance(&mut self) -> DocId {
        self.postings.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.postings.seek(target)
    }

    fn doc(&self) -> DocId {
        self.postings.doc()
    }

    fn size_hint(&self) -> u32 {
        self.postings.size_hint()
    }
}

impl Scorer for Bm25TermScorer {
    fn score(&mut self) -> Score {
        let freq = self.postings.term_freq() as Score;
        let norm = self.norms[self.fieldnorms.fieldnorm_id(self.doc()) as usize];
        self.weight * (freq / (freq + norm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::collector::TopDocs;
    use tantivy::query::{BooleanQuery, BoostQuery, Occur};
    use tantivy::schema::{Schema, TEXT};
    use tantivy::{doc, Index, Searcher};

    /// A small index of whitespace-separated words.
    fn index(docs: &[&str]) -> (Searcher, Field) {
        let mut schema = Schema::builder();
        let text = schema.add_text_field("text", TEXT);
        let index = Index::create_in_ram(schema.build());
        let mut writer = index.writer_with_num_threads(1, 20_000_000).unwrap();
        for d in docs {
            writer.add_document(doc!(text => *d)).unwrap();
        }
        writer.commit().unwrap();
        (index.reader().unwrap().searcher(), text)
    }

    /// (doc id, score) of every match, best first (ties by doc id).
    fn scores(searcher: &Searcher, q: &dyn Query) -> Vec<(u32, f32)> {
        let top = searcher
            .search(q, &TopDocs::with_limit(100).order_by_score())
            .unwrap();
        let mut v: Vec<(u32, f32)> = top.into_iter().map(|(s, a)| (a.doc_id, s)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    fn ours(field: Field, word: &str, k1: f32, b: f32) -> Box<dyn Query> {
        Box::new(Bm25TermQuery {
            term: Term::from_field_text(field, word),
            params: Bm25Params { k1, b },
        })
    }

    const DOCS: &[&str] = &[
        "red shoe",
        "red red red shoe with laces and a very long description of the shoe",
        "blue shoe",
        "red",
        "a red and blue shoe for running in the rain",
        "shoe shoe shoe",
        "green hat",
    ];

    #[test]
    fn at_tantivys_parameters_scores_equal_tantivys() {
        let (searcher, text) = index(DOCS);
        for word in ["red", "shoe", "blue", "hat", "absent"] {
            let theirs = scores(
                &searcher,
                &TermQuery::new(
                    Term::from_field_text(text, word),
                    IndexRecordOption::WithFreqs,
                ),
            );
            let mine = scores(&searcher, &*ours(text, word, DEFAULT_K1, DEFAULT_B));
            assert_eq!(theirs.len(), mine.len(), "{word}");
            for (t, m) in theirs.iter().zip(&mine) {
                assert_eq!(t.0, m.0, "{word}");
                assert!((t.1 - m.1).abs() < 1e-5, "{word}: {t:?} vs {m:?}");
            }
        }
        // Also boosted inside a disjunction, as `text_query` builds it.
        let q = |mk: &dyn Fn(&str) -> Box<dyn Query>| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(vec![
                (
                    Occur::Should,
                    Box::new(BoostQuery::new(mk("red"), 1.0)) as Box<dyn Query>,
                ),
                (Occur::Should, Box::new(BoostQuery::new(mk("shoe"), 0.5))),
            ]))
        };
        let theirs = scores(
            &searcher,
            &*q(&|w: &str| {
                Box::new(TermQuery::new(
                    Term::from_field_text(text, w),
                    IndexRecordOption::WithFreqs,
                ))
            }),
        );
        let mine = scores(
            &searcher,
            &*q(&|w: &str| ours(text, w, DEFAULT_K1, DEFAULT_B)),
        );
        assert_eq!(theirs.len(), 6);
        for (t, m) in theirs.iter().zip(&mine) {
            assert_eq!(t.0, m.0);
            assert!((t.1 - m.1).abs() < 1e-5, "{t:?} vs {m:?}");
        }
        // `term_query` picks tantivy's own query at the defaults.
        let q = term_query(text, "red", Bm25Params::DEFAULT);
        assert!(q.downcast_ref::<TermQuery>().is_some());
        let q = term_query(text, "red", Bm25Params { k1: 0.9, b: 0.4 });
        assert!(q.downcast_ref::<Bm25TermQuery>().is_some());
    }

    #[test]
    fn b_zero_ignores_length_and_b_one_prefers_short_fields() {
        // One `shoe` each, in fields of 2, 3 and 13 words.
        let (searcher, text) = index(&[
            "red shoe",
            "red blue shoe",
            "shoe for running in the rain and the snow with good laces on top",
        ]);
        let flat = scores(&searcher, &*ours(text, "shoe", 1.2, 0.0));
        assert_eq!(flat.len(), 3);
        assert!(
            flat.iter().all(|s| (s.1 - flat[0].1).abs() < 1e-6),
            "{flat:?}"
        );
        let full = scores(&searcher, &*ours(text, "shoe", 1.2, 1.0));
        assert_eq!(full.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
        let tantivy = scores(&searcher, &*ours(text, "shoe", 1.2, 0.75));
        // The longest field loses less with b = 0.75 than with b = 1.
        assert!(full[0].1 - full[2].1 > tantivy[0].1 - tantivy[2].1);
    }

    #[test]
    fn small_k1_saturates_term_frequency() {
        // Same length, `red` once or three times.
        let (searcher, text) = index(&["red blue green", "red red red", "blue blue blue"]);
        let at = |k1: f32| {
            let s = scores(&searcher, &*ours(text, "red", k1, 0.75));
            assert_eq!(s[0].0, 1, "three times ranks first");
            s[0].1 / s[1].1
        };
        let (low, mid, high) = (at(0.1), at(1.2), at(10.0));
        assert!(
            low < 1.1,
            "k1 0.1: once is almost as good as three times ({low})"
        );
        assert!(low < mid && mid < high, "{low} {mid} {high}");
        assert!(high > 2.0, "k1 10: nearly linear in tf ({high})");
        // k1 = 0: a term counts once however often it occurs.
        let zero = scores(&searcher, &*ours(text, "red", 0.0, 0.75));
        assert!((zero[0].1 - zero[1].1).abs() < 1e-6, "{zero:?}");
    }

    #[test]
    fn explains_with_the_term_and_the_parameters() {
        let (searcher, text) = index(DOCS);
        let q = ours(text, "red", 0.9, 0.4);
        let best = scores(&searcher, &*q)[0];
        let addr = tantivy::DocAddress::new(0, best.0);
        let e = q.explain(&searcher, addr).unwrap();
        assert!((e.value() - best.1).abs() < 1e-6);
        let json = e.to_pretty_json();
        assert!(
            json.contains("TermQuery with BM25 k1 = 0.9, b = 0.4"),
            "{json}"
        );
        assert!(
            json.contains(r#"Term=Term(field=0, type=Str, \"red\")"#),
            "{json}"
        );
        assert!(q
            .explain(&searcher, tantivy::DocAddress::new(0, 6))
            .is_err());
        // Counting ignores scoring.
        assert_eq!(q.count(&searcher).unwrap(), 4);
    }

    #[test]
    fn settings_resolve_per_field_and_validate() {
        let mut s = Bm25Settings::default();
        assert!(s.is_default());
        s.set("title", Bm25Params { k1: 0.9, b: 0.75 });
        assert_eq!(
            s.fields["title"],
            FieldBm25 {
                k1: Some(0.9),
                b: None
            }
        );
        assert_eq!(s.params("title"), Bm25Params { k1: 0.9, b: 0.75 });
        assert_eq!(s.params("brand"), Bm25Params::DEFAULT);
        s.set("title", Bm25Params::DEFAULT);
        assert!(s.is_default(), "{s:?}");
        s.validate().unwrap();
        for (bad, needle) in [
            (r#"fields = { colour = { k1 = 1.0 } }"#, "colour"),
            ("k1 = -1.0", "k1"),
            ("b = 1.5", "b must"),
            (
                r#"fields = { "title.bigram" = { b = -0.1 } }"#,
                "title.bigram",
            ),
            ("k1 = inf", "k1"),
        ] {
            let s: Bm25Settings = toml::from_str(bad).unwrap();
            let err = s.validate().unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(toml::from_str::<Bm25Settings>("k2 = 1.0").is_err());
    }
}

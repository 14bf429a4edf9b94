//! Offline evaluation: judged queries + an engine + ranking profiles -> NDCG@k, MRR@k,
//! Recall@k and MAP per profile and per query, and a paired randomization test of the
//! first profile against each other one.
//!
//! Queries are `qid<TAB>query`; judgments are TREC qrels (`qid 0 pid grade`). A query with
//! no positive judgment is skipped (it cannot be scored), and the count of scored queries
//! is reported. Each query's ranked list is the engine's top [`metrics::DEPTH`] hits.

pub mod metrics;
pub mod report;
pub mod significance;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

pub use metrics::{Metric, QueryScores};
pub use significance::{randomization_test, Randomization};

use crate::engine::{Engine, SearchRequest};
use crate::error::{Error, Result};

/// Judgments: query id -> product id -> grade.
pub type Qrels = HashMap<String, HashMap<String, u32>>;

fn bad_line(path: &Path, line: usize, what: &str) -> Error {
    Error::Config(format!("{}:{line}: {what}", path.display()))
}

/// Reads `qid<TAB>query` lines (blank lines are skipped; ids must be unique).
pub fn read_queries(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| bad_line(path, i + 1, what);
        let (qid, query) = line
            .split_once('\t')
            .ok_or_else(|| bad("expected `qid<TAB>query`"))?;
        let (qid, query) = (qid.trim(), query.trim());
        if qid.is_empty() || query.is_empty() {
            return Err(bad("expected `qid<TAB>query` with both parts non-empty"));
        }
        if !seen.insert(qid.to_string()) {
            return Err(bad(&format!("query id `{qid}` appears twice")));
        }
        out.push((qid.to_string(), query.to_string()));
    }
    Ok(out)
}

/// Reads TREC qrels (`qid iter pid grade`, whitespace-separated; grade a whole number >= 0).
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out: Qrels = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        let [qid, _, pid, grade] = cols.as_slice() else {
            return Err(bad_line(
                path,
                i + 1,
                &format!("expected 4 columns `qid 0 pid grade`, found {}", cols.len()),
            ));
        };
        let grade = grade.parse::<u32>().map_err(|_| {
            bad_line(
                path,
                i + 1,
                &format!("grade `{grade}` is not a whole number >= 0"),
            )
        })?;
        out.entry(qid.to_string())
            .or_default()
            .insert(pid.to_string(), grade);
    }
    Ok(out)
}

/// Scores one ranked list against its judgments: (rr@10, ndcg@10, recall@1, @10, @100).
pub fn score_list(ranked: &[String], judged: &HashMap<String, u32>) -> [f64; 5] {
    let s = score_ranked(ranked, judged, 10);
    [s.rr, s.ndcg, s.recall1, s.recall, s.recall100]
}

/// Scores one ranked list of product ids against its judgments at cutoff `k`.
pub fn score_ranked(ranked: &[String], judged: &HashMap<String, u32>, k: usize) -> QueryScores {
    let grades: Vec<u32> = ranked
        .iter()
        .map(|id| judged.get(id).copied().unwrap_or(0))
        .collect();
    let all: Vec<u32> = judged.values().copied().collect();
    QueryScores::from_grades(&grades, &all, k)
}

/// A query (id, text) with its judgments.
pub type Judged<'a> = (&'a (String, String), &'a HashMap<String, u32>);

/// The judged queries that can be scored (at least one positive judgment), in file order,
/// and how many were skipped.
pub fn scorable<'a>(queries: &'a [(String, String)], qrels: &'a Qrels) -> (Vec<Judged<'a>>, usize) {
    let out: Vec<_> = queries
        .iter()
        .filter_map(|q| {
            let j = qrels.get(&q.0).filter(|j| j.values().any(|&g| g > 0))?;
            Some((q, j))
        })
        .collect();
    let skipped = queries.len() - out.len();
    (out, skipped)
}

/// One profile's results.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileResult {
    /// Profile name.
    pub profile: String,
    /// Means over the scored queries.
    pub mean: QueryScores,
    /// Per scored query, in the order of [`EvalRun::queries`].
    pub per_query: Vec<QueryScores>,
    /// Queries that matched no product (the scores rank every candidate all the same).
    pub no_match: usize,
}

/// The first profile against another one, per-query paired.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The first profile.
    pub baseline: String,
    /// The other one.
    pub profile: String,
    /// On NDCG@k.
    pub ndcg: Randomization,
    /// On RR@k (MRR@k).
    pub mrr: Randomization,
}

/// A whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRun {
    /// Cutoff of MRR, NDCG and Recall.
    pub k: usize,
    /// Scored queries (id, text).
    pub queries: Vec<(String, String)>,
    /// Queries skipped for lack of a positive judgment.
    pub skipped: usize,
    /// One per profile, in the order asked.
    pub profiles: Vec<ProfileResult>,
    /// The first profile against each other one.
    pub comparisons: Vec<Comparison>,
}

/// Compares per-query results of `base` and `other` with the randomization test.
pub fn compare(base: &ProfileResult, other: &ProfileResult) -> Comparison {
    let col = |r: &ProfileResult, m: Metric| -> Vec<f64> {
        r.per_query.iter().map(|s| m.of(s)).collect()
    };
    let test = |m: Metric| {
        randomization_test(
            &col(base, m),
            &col(other, m),
            significance::PERMUTATIONS,
            significance::SEED,
        )
    };
    Comparison {
        baseline: base.profile.clone(),
        profile: other.profile.clone(),
        ndcg: test(Metric::Ndcg),
        mrr: test(Metric::Mrr),
    }
}

/// Runs every judged query through the engine with each profile (unknown names fail
/// before any search), at cutoff `k`.
pub fn run(
    engine: &Engine,
    profiles: &[String],
    queries: &[(String, String)],
    qrels: &Qrels,
    k: usize,
) -> Result<EvalRun> {
    if k == 0 {
        return Err(Error::param("k", "the cutoff must be at least 1"));
    }
    for p in profiles {
        engine.profiles().get(p)?;
    }
    let (scored, skipped) = scorable(queries, qrels);
    let mut results = Vec::new();
    for profile in profiles {
        let mut per_query = Vec::with_capacity(scored.len());
        let mut no_match = 0;
        for ((_, query), judged) in &scored {
            let mut req = SearchRequest::new(query.clone());
            req.profile = Some(profile.clone());
            req.size = metrics::DEPTH;
            // The ranking of every candidate: what matches is counted apart (`no match`).
            req.all_candidates = true;
            let res = engine.search(&req)?;
            no_match += usize::from(res.no_match);
            let ranked: Vec<String> = res.hits.into_iter().map(|h| h.id).collect();
            per_query.push(score_ranked(&ranked, judged, k));
        }
        results.push(ProfileResult {
            profile: profile.clone(),
            mean: QueryScores::mean(&per_query),
            per_query,
            no_match,
        });
    }
    let comparisons = match results.split_first() {
        Some((base, rest)) => rest.iter().map(|r| compare(base, r)).collect(),
        None => Vec::new(),
    };
    Ok(EvalRun {
        k,
        queries: scored.iter().map(|(q, _)| (*q).clone()).collect(),
        skipped,
        profiles: results,
        comparisons,
    })
}

/// Profile `name`'s numbers on a judged query set (`qid<TAB>query` file and TREC qrels):
/// `{"profile", "mrr@10", "ndcg@10", "recall@10", "map", ..., "queries"}`. The console's
/// eval route (`GET /profiles/{name}/eval`) answers with it.
pub fn profile_numbers(
    engine: &Engine,
    name: &str,
    queries: &Path,
    qrels: &Path,
) -> Result<serde_json::Value> {
    let queries = read_queries(queries)?;
    let qrels = read_qrels(qrels)?;
    let run = run(engine, &[name.to_string()], &queries, &qrels, 10)?;
    Ok(report::json(&run, false)["profiles"][0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scores_a_single_relevant_product() {
        let judged: HashMap<String, u32> = [("b".to_string(), 1)].into_iter().collect();
        let s = score_ranked(&ids(&["a", "b", "c"]), &judged, 10);
        assert!((s.rr - 0.5).abs() < 1e-9);
        assert!((s.ndcg - 1.0 / 3f64.log2()).abs() < 1e-9);
        assert!((s.ap - 0.5).abs() < 1e-9);
        assert_eq!((s.recall1, s.recall, s.recall100), (0.0, 1.0, 1.0));
        assert_eq!(
            score_ranked(&ids(&["x"]), &judged, 10),
            QueryScores::default()
        );
    }

    #[test]
    fn malformed_files_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q.tsv");
        std::fs::write(&q, "1\t口红\n\n2 no tab\n").unwrap();
        let err = read_queries(&q).unwrap_err().to_string();
        assert!(err.contains("q.tsv:3:"), "{err}");
        std::fs::write(&q, "1\t口红\n1\t面霜\n").unwrap();
        let err = read_queries(&q).unwrap_err().to_string();
        assert!(err.contains("q.tsv:2:") && err.contains("twice"), "{err}");
        let r = dir.path().join("r.tsv");
        std::fs::write(&r, "1 0 a 1\n1 0 b high\n").unwrap();
        let err = read_qrels(&r).unwrap_err().to_string();
        assert!(err.contains("r.tsv:2:") && err.contains("high"), "{err}");
        std::fs::write(&r, "1 0 a\n").unwrap();
        let err = read_qrels(&r).unwrap_err().to_string();
        assert!(
            err.contains("r.tsv:1:") && err.contains("4 columns"),
            "{err}"
        );
    }
}

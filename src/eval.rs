//! Offline evaluation: judged queries + an engine + a profile -> MRR@10, NDCG@10 and
//! Recall@1/10/100.
//!
//! Queries are `qid<TAB>query`; judgments are TREC qrels (`qid 0 pid grade`). A query with
//! no positive judgment is skipped (it cannot be scored), and the count of scored queries
//! is reported.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::engine::{Engine, SearchRequest};
use crate::error::{Error, Result};

/// Aggregate metrics over the scored queries.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EvalReport {
    /// Profile evaluated.
    pub profile: String,
    /// Mean reciprocal rank of the first relevant hit in the top 10.
    #[serde(rename = "mrr@10")]
    pub mrr10: f64,
    /// NDCG@10 with gain 2^grade - 1.
    #[serde(rename = "ndcg@10")]
    pub ndcg10: f64,
    /// Share of relevant products in the top 1.
    #[serde(rename = "recall@1")]
    pub recall1: f64,
    /// ... in the top 10.
    #[serde(rename = "recall@10")]
    pub recall10: f64,
    /// ... in the top 100.
    #[serde(rename = "recall@100")]
    pub recall100: f64,
    /// Queries scored.
    pub queries: usize,
}

/// Judgments: query id -> product id -> grade.
pub type Qrels = HashMap<String, HashMap<String, u32>>;

/// Reads `qid<TAB>query` lines.
pub fn read_queries(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (qid, query) = line.split_once('\t').ok_or_else(|| {
            Error::Config(format!(
                "{}:{}: expected `qid<TAB>query`",
                path.display(),
                i + 1
            ))
        })?;
        out.push((qid.trim().to_string(), query.trim().to_string()));
    }
    Ok(out)
}

/// Reads TREC qrels (`qid iter pid grade`, whitespace-separated).
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out: Qrels = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        let grade = match cols.as_slice() {
            [_, _, _, g] => g.parse::<u32>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::Config(format!(
                "{}:{}: expected `qid 0 pid grade`",
                path.display(),
                i + 1
            ))
        })?;
        out.entry(cols[0].to_string())
            .or_default()
            .insert(cols[2].to_string(), grade);
    }
    Ok(out)
}

/// Scores one ranked list against its judgments: (rr@10, ndcg@10, recall@1, @10, @100).
pub fn score_list(ranked: &[String], judged: &HashMap<String, u32>) -> [f64; 5] {
    let grade = |id: &String| judged.get(id).copied().unwrap_or(0);
    let relevant = judged.values().filter(|&&g| g > 0).count();
    let rr = ranked
        .iter()
        .take(10)
        .position(|id| grade(id) > 0)
        .map_or(0.0, |i| 1.0 / (i + 1) as f64);
    let dcg = |grades: &mut dyn Iterator<Item = u32>| -> f64 {
        grades
            .take(10)
            .enumerate()
            .map(|(i, g)| ((1u64 << g.min(30)) - 1) as f64 / ((i + 2) as f64).log2())
            .sum()
    };
    let mut ideal: Vec<u32> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg = dcg(&mut ideal.into_iter());
    let ndcg = if idcg > 0.0 {
        dcg(&mut ranked.iter().map(grade)) / idcg
    } else {
        0.0
    };
    let recall = |k: usize| {
        if relevant == 0 {
            return 0.0;
        }
        ranked.iter().take(k).filter(|id| grade(id) > 0).count() as f64 / relevant as f64
    };
    [rr, ndcg, recall(1), recall(10), recall(100)]
}

/// Runs every judged query through the engine with `profile`.
pub fn evaluate(
    engine: &Engine,
    profile: &str,
    queries: &[(String, String)],
    qrels: &Qrels,
) -> Result<EvalReport> {
    let mut sums = [0.0; 5];
    let mut n = 0;
    for (qid, query) in queries {
        let Some(judged) = qrels.get(qid).filter(|j| j.values().any(|&g| g > 0)) else {
            continue;
        };
        let mut req = SearchRequest::new(query.clone());
        req.profile = Some(profile.to_string());
        req.size = 100;
        let ranked: Vec<String> = engine
            .search(&req)?
            .hits
            .into_iter()
            .map(|h| h.id)
            .collect();
        for (s, v) in sums.iter_mut().zip(score_list(&ranked, judged)) {
            *s += v;
        }
        n += 1;
    }
    let mean = |s: f64| if n > 0 { s / n as f64 } else { 0.0 };
    Ok(EvalReport {
        profile: profile.to_string(),
        mrr10: mean(sums[0]),
        ndcg10: mean(sums[1]),
        recall1: mean(sums[2]),
        recall10: mean(sums[3]),
        recall100: mean(sums[4]),
        queries: n,
    })
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
        let [rr, ndcg, r1, r10, r100] = score_list(&ids(&["a", "b", "c"]), &judged);
        assert!((rr - 0.5).abs() < 1e-9);
        assert!((ndcg - 1.0 / 3f64.log2()).abs() < 1e-9);
        assert_eq!((r1, r10, r100), (0.0, 1.0, 1.0));
        assert_eq!(score_list(&ids(&["x"]), &judged), [0.0; 5]);
    }

    #[test]
    fn graded_ndcg_prefers_the_better_product_first() {
        let judged: HashMap<String, u32> = [("a".to_string(), 2), ("b".to_string(), 1)]
            .into_iter()
            .collect();
        let best = score_list(&ids(&["a", "b"]), &judged)[1];
        let worse = score_list(&ids(&["b", "a"]), &judged)[1];
        assert!((best - 1.0).abs() < 1e-9 && worse < best);
    }
}

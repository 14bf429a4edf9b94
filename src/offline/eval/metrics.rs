//! Ranking metrics of one query: the grades of a ranked list + every judged grade ->
//! RR@k, NDCG@k, Recall@k, AP (and Recall@1/@100 for the README table).
//!
//! Everything works on grades, so `eval` (product ids looked up in the qrels) and `tune`
//! (re-scored candidates that carry their grade) share one implementation.

use serde::Serialize;

/// Depth of average precision and Recall@100: the hits `eval` asks the engine for.
pub const DEPTH: usize = 100;

/// Metrics of one query. `k` is the cutoff of RR, NDCG and Recall.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QueryScores {
    /// Reciprocal rank of the first relevant hit within the top k (0 when none).
    pub rr: f64,
    /// NDCG@k with gain 2^grade - 1 and log2(rank + 1) discount.
    pub ndcg: f64,
    /// Share of the relevant products in the top k.
    pub recall: f64,
    /// Average precision over the top [`DEPTH`] (divided by all relevant products).
    pub ap: f64,
    /// Share of the relevant products at rank 1.
    pub recall1: f64,
    /// ... in the top [`DEPTH`].
    pub recall100: f64,
}

/// The metric `tune` maximizes and the randomization test compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Mean reciprocal rank @k.
    Mrr,
    /// NDCG@k.
    Ndcg,
}

impl Metric {
    /// This metric of one query.
    pub fn of(self, s: &QueryScores) -> f64 {
        match self {
            Metric::Mrr => s.rr,
            Metric::Ndcg => s.ndcg,
        }
    }

    /// `MRR@10` / `NDCG@10`.
    pub fn label(self, k: usize) -> String {
        match self {
            Metric::Mrr => format!("MRR@{k}"),
            Metric::Ndcg => format!("NDCG@{k}"),
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "mrr" => Ok(Metric::Mrr),
            "ndcg" => Ok(Metric::Ndcg),
            other => Err(format!("unknown metric `{other}` (mrr, ndcg)")),
        }
    }
}

fn dcg(grades: impl Iterator<Item = u32>, k: usize) -> f64 {
    grades
        .take(k)
        .enumerate()
        .map(|(i, g)| ((1u64 << g.min(30)) - 1) as f64 / ((i + 2) as f64).log2())
        .sum()
}

impl QueryScores {
    /// Scores a ranked list given as its grades (0 = not relevant or not judged), against
    /// the grades of every judged product of the query (`judged`, any order).
    pub fn from_grades(ranked: &[u32], judged: &[u32], k: usize) -> QueryScores {
        let relevant = judged.iter().filter(|&&g| g > 0).count();
        if relevant == 0 {
            return QueryScores::default();
        }
        let rr = ranked
            .iter()
            .take(k)
            .position(|&g| g > 0)
            .map_or(0.0, |i| 1.0 / (i + 1) as f64);
        let mut ideal: Vec<u32> = judged.iter().copied().filter(|&g| g > 0).collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg = dcg(ideal.into_iter(), k);
        let ndcg = dcg(ranked.iter().copied(), k) / idcg;
        let found = |n: usize| ranked.iter().take(n).filter(|&&g| g > 0).count();
        let mut hits = 0usize;
        let mut precision_sum = 0.0;
        for (i, _) in ranked
            .iter()
            .take(DEPTH)
            .enumerate()
            .filter(|(_, &g)| g > 0)
        {
            hits += 1;
            precision_sum += hits as f64 / (i + 1) as f64;
        }
        QueryScores {
            rr,
            ndcg,
            recall: found(k) as f64 / relevant as f64,
            ap: precision_sum / relevant as f64,
            recall1: found(1) as f64 / relevant as f64,
            recall100: found(DEPTH) as f64 / relevant as f64,
        }
    }

    /// Per-field mean of many queries' scores (all zero for none).
    pub fn mean(all: &[QueryScores]) -> QueryScores {
        let n = all.len().max(1) as f64;
        let sum = |f: fn(&QueryScores) -> f64| all.iter().map(f).sum::<f64>() / n;
        QueryScores {
            rr: sum(|s| s.rr),
            ndcg: sum(|s| s.ndcg),
            recall: sum(|s| s.recall),
            ap: sum(|s| s.ap),
            recall1: sum(|s| s.recall1),
            recall100: sum(|s| s.recall100),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_binary_list() {
        // Relevant at ranks 2 and 4; a third relevant product was never retrieved.
        let s = QueryScores::from_grades(&[0, 1, 0, 1, 0], &[1, 1, 1], 3);
        assert!(close(s.rr, 0.5));
        // DCG@3 = 1/log2(3); IDCG@3 = 1 + 1/log2(3) + 1/2.
        let l3 = 3f64.log2();
        assert!(close(s.ndcg, (1.0 / l3) / (1.0 + 1.0 / l3 + 0.5)), "{s:?}");
        assert!(close(s.recall, 1.0 / 3.0));
        // AP = (1/2 + 2/4) / 3.
        assert!(close(s.ap, 1.0 / 3.0), "{s:?}");
        assert!(close(s.recall1, 0.0) && close(s.recall100, 2.0 / 3.0));
    }

    #[test]
    fn graded_ndcg_prefers_the_better_product_first() {
        let best = QueryScores::from_grades(&[2, 1], &[2, 1], 10).ndcg;
        let worse = QueryScores::from_grades(&[1, 2], &[2, 1], 10).ndcg;
        // worse = (1 + 3/log2(3)) / (3 + 1/log2(3)).
        let l3 = 3f64.log2();
        assert!(close(best, 1.0));
        assert!(close(worse, (1.0 + 3.0 / l3) / (3.0 + 1.0 / l3)));
    }

    #[test]
    fn cutoff_and_no_relevant() {
        let s = QueryScores::from_grades(&[0, 0, 1], &[1], 2);
        assert_eq!((s.rr, s.ndcg, s.recall), (0.0, 0.0, 0.0));
        assert!(close(s.ap, 1.0 / 3.0), "AP looks past k: {s:?}");
        assert_eq!(
            QueryScores::from_grades(&[1], &[0, 0], 10),
            QueryScores::default()
        );
        let m = QueryScores::mean(&[
            QueryScores::from_grades(&[1], &[1], 10),
            QueryScores::from_grades(&[0], &[1], 10),
        ]);
        assert!(close(m.rr, 0.5) && close(m.ap, 0.5));
        assert_eq!("NDCG".parse::<Metric>(), Ok(Metric::Ndcg));
        assert!("map".parse::<Metric>().is_err());
    }
}

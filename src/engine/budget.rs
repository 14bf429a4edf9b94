//! Latency budgets under load: searches in flight are counted, the time of the query
//! encode and of the rest of a search are followed (moving averages), and a search whose
//! profile has a budget ([`crate::rank::Budget`]) drops the semantic stage, then BM25
//! candidates, when the predicted time (stage times x searches per core) is over it.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use serde::Serialize;

use crate::rank::Budget;

/// Searches in flight and what a search's stages cost lately.
pub(super) struct Load {
    in_flight: AtomicUsize,
    /// Milliseconds, as `f32` bits.
    encode_ms: AtomicU32,
    rest_ms: AtomicU32,
    cores: usize,
}

/// One search in flight, until dropped.
pub(super) struct Flight<'a>(&'a AtomicUsize);

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a search under load gave up, as its answer shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetNote {
    /// Searches in flight when it started (itself included).
    pub in_flight: usize,
    /// Cores serving them.
    pub cores: usize,
    /// The profile's budget, ms.
    pub latency_ms: f32,
    /// The predicted time of the full search, ms.
    pub predicted_ms: f32,
    /// Whether the semantic stage (query encode, vector candidates) was skipped.
    pub semantic_skipped: bool,
    /// The BM25 candidates taken.
    pub bm25_candidates: usize,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            in_flight: AtomicUsize::new(0),
            encode_ms: AtomicU32::new(0f32.to_bits()),
            rest_ms: AtomicU32::new(0f32.to_bits()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

fn get(a: &AtomicU32) -> f32 {
    f32::from_bits(a.load(Ordering::Relaxed))
}

/// Moves the average a tenth of the way to `ms` (the first sample sets it).
fn follow(a: &AtomicU32, ms: f32) {
    let old = get(a);
    let new = if old == 0.0 {
        ms
    } else {
        old + 0.1 * (ms - old)
    };
    a.store(new.to_bits(), Ordering::Relaxed);
}

impl Load {
    /// Counts a search in; returns its guard and the searches in flight with it.
    pub(super) fn enter(&self) -> (Flight<'_>, usize) {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        (Flight(&self.in_flight), n)
    }

    /// What a search started with `in_flight` searches running gives up under `budget`:
    /// `None` when it runs whole.
    pub(super) fn plan(
        &self,
        budget: &Budget,
        in_flight: usize,
        bm25: usize,
        semantic: bool,
    ) -> Option<BudgetNote> {
        if budget.latency_ms <= 0.0 {
            return None;
        }
        let per_core = (in_flight as f32 / self.cores as f32).max(1.0);
        let (encode, rest) = (get(&self.encode_ms), get(&self.rest_ms));
        let full = per_core * (if semantic { encode } else { 0.0 } + rest);
        if full <= budget.latency_ms {
            return None;
        }
        let lexical = per_core * rest;
        let bm25_candidates = match lexical > budget.latency_ms && rest > 0.0 {
            true => ((bm25 as f32 * budget.latency_ms / lexical) as usize)
                .clamp(budget.min_candidates.min(bm25), bm25),
            false => bm25,
        };
        if !semantic && bm25_candidates == bm25 {
            return None;
        }
        Some(BudgetNote {
            in_flight,
            cores: self.cores,
            latency_ms: budget.latency_ms,
            predicted_ms: full,
            semantic_skipped: semantic,
            bm25_candidates,
        })
    }

    /// Records a finished search's stage times (`encode`: `None` when it did not encode).
    pub(super) fn record(&self, encode: Option<f64>, rest: f64) {
        if let Some(e) = encode {
            follow(&self.encode_ms, e as f32);
        }
        follow(&self.rest_ms, rest as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(cores: usize, encode: f32, rest: f32) -> Load {
        let l = Load {
            cores,
            ..Load::default()
        };
        l.encode_ms.store(encode.to_bits(), Ordering::Relaxed);
        l.rest_ms.store(rest.to_bits(), Ordering::Relaxed);
        l
    }

    #[test]
    fn drops_the_semantic_stage_then_candidates_only_when_over_budget() {
        let budget = Budget {
            latency_ms: 40.0,
            min_candidates: 50,
        };
        let l = load(2, 10.0, 2.0);
        assert_eq!(
            l.plan(&budget, 2, 200, true),
            None,
            "one search per core: 12 ms"
        );
        assert_eq!(l.plan(&Budget::default(), 64, 200, true), None, "no budget");
        let note = l
            .plan(&budget, 8, 200, true)
            .expect("4 per core: 48 ms > 40");
        assert!(note.semantic_skipped);
        assert_eq!(note.bm25_candidates, 200, "8 ms of lexical work fits");
        let note = l.plan(&budget, 80, 200, true).unwrap();
        assert_eq!(
            note.bm25_candidates, 100,
            "80 ms of lexical work: 200 x 40/80"
        );
        let note = l.plan(&budget, 400, 200, true).unwrap();
        assert_eq!(note.bm25_candidates, 50, "400 ms: down to the floor");
        let note = l.plan(&budget, 60, 200, false).unwrap();
        assert!(!note.semantic_skipped);
        assert_eq!(note.bm25_candidates, 133, "60 ms lexical: 200 x 40/60");
    }

    #[test]
    fn stage_times_follow_a_moving_average_and_flights_are_counted() {
        let l = Load::default();
        l.record(Some(10.0), 2.0);
        l.record(None, 12.0);
        assert_eq!(get(&l.encode_ms), 10.0);
        assert_eq!(get(&l.rest_ms), 3.0);
        let (a, n) = l.enter();
        let (_b, m) = l.enter();
        assert_eq!((n, m), (1, 2));
        drop(a);
        assert_eq!(l.enter().1, 2);
    }
}

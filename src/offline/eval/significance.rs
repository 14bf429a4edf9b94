//! Paired randomization test: two systems' per-query scores -> two-sided p-value of the
//! difference of their means.
//!
//! Under the null hypothesis the two systems are exchangeable on every query, so each
//! per-query difference is as likely to carry either sign. The test flips the signs at
//! random `permutations` times and counts how often the mean difference is at least as far
//! from zero as the observed one (Smucker, Allan & Carterette, CIKM 2007). The p-value is
//! `(count + 1) / (permutations + 1)`, so it is never 0 and identical systems get 1.

use serde::Serialize;

use crate::util::Rng;

/// Sign flips per test.
pub const PERMUTATIONS: usize = 10_000;
/// Seed of the sign flips (same inputs, same p-value).
pub const SEED: u64 = 0x5EED;

/// Outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Randomization {
    /// Mean of `b - a` over the queries.
    pub mean_diff: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Queries compared.
    pub queries: usize,
}

/// Tests `b` against `a` (paired by index; both must have the same length).
pub fn randomization_test(a: &[f64], b: &[f64], permutations: usize, seed: u64) -> Randomization {
    assert_eq!(a.len(), b.len(), "paired scores must have the same length");
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let n = diffs.len();
    if n == 0 {
        return Randomization {
            mean_diff: 0.0,
            p_value: 1.0,
            queries: 0,
        };
    }
    let observed = diffs.iter().sum::<f64>().abs();
    // Sums are compared, not means (same order); the slack absorbs rounding so that a
    // permutation equal to the observed one counts.
    let slack = 1e-9 * (1.0 + observed);
    let mut rng = Rng(seed);
    let mut extreme = 0usize;
    for _ in 0..permutations {
        let mut sum = 0.0;
        let mut bits = 0u64;
        for (i, d) in diffs.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.bits();
            }
            sum += if bits & 1 == 1 { *d } else { -*d };
            bits >>= 1;
        }
        if sum.abs() >= observed - slack {
            extreme += 1;
        }
    }
    Randomization {
        mean_diff: diffs.iter().sum::<f64>() / n as f64,
        p_value: (extreme + 1) as f64 / (permutations + 1) as f64,
        queries: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_systems_give_p_one() {
        let a = [0.5, 1.0, 0.0, 0.25, 1.0];
        let r = randomization_test(&a, &a, PERMUTATIONS, SEED);
        assert_eq!(r.p_value, 1.0);
        assert_eq!(r.mean_diff, 0.0);
    }

    #[test]
    fn a_clearly_better_system_gets_a_small_p() {
        let a: Vec<f64> = (0..40).map(|i| 0.3 + 0.01 * (i % 5) as f64).collect();
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.2 + 0.02 * (i % 3) as f64)
            .collect();
        let r = randomization_test(&a, &b, PERMUTATIONS, SEED);
        assert!(r.p_value < 0.01, "{r:?}");
        assert!(r.mean_diff > 0.19);
        // Symmetric: the order of the systems only flips the sign of the difference.
        let back = randomization_test(&b, &a, PERMUTATIONS, SEED);
        assert_eq!(back.p_value, r.p_value);
        assert!((back.mean_diff + r.mean_diff).abs() < 1e-12);
    }

    #[test]
    fn noise_is_not_significant_and_the_seed_fixes_the_answer() {
        // Differences of alternating sign: the mean difference is small next to its spread.
        let a: Vec<f64> = (0..30).map(|i| (i % 7) as f64 / 7.0).collect();
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + if i % 2 == 0 { 0.3 } else { -0.28 })
            .collect();
        let r = randomization_test(&a, &b, PERMUTATIONS, SEED);
        assert!(r.p_value > 0.5, "{r:?}");
        assert_eq!(r, randomization_test(&a, &b, PERMUTATIONS, SEED));
    }
}

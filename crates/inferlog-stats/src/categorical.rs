//! Drift of a categorical feature between reference and current counts per category.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::divergence::{jensen_shannon_distance, population_stability_index};

/// Drift statistics of one categorical feature over the union of the categories seen in either
/// window. p is the reference share, q the current share of each category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalDrift {
    /// Categories in the union (with a positive count in at least one window).
    pub categories: usize,
    /// Categories seen in the current window but not in the reference.
    pub unseen_in_reference: usize,
    /// Categories seen in the reference but not in the current window.
    pub missing_in_current: usize,
    /// Population stability index Σ (q − p)·ln(q/p), natural log, empty shares at
    /// [`crate::PSI_EMPTY_SHARE`] on both sides.
    pub psi: f64,
    /// Jensen-Shannon distance, base 2, in [0, 1], no smoothing.
    pub jensen_shannon: f64,
    /// L-infinity distance max |p − q|, in [0, 1].
    pub l_infinity: f64,
    /// Chi-squared goodness of fit of the current counts to the reference shares; `None` with
    /// a single category (no degree of freedom).
    pub chi_square: Option<ChiSquareTest>,
}

/// Pearson's chi-squared goodness-of-fit test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChiSquareTest {
    /// Σ (observed − expected)² / expected. `+∞` when a category is unseen in the reference
    /// (expected 0, observed > 0), as in SciPy; note that serde_json writes `+∞` as `null`.
    pub statistic: f64,
    /// Pr(χ²(df) ≥ statistic); 0 when the statistic is infinite.
    pub p_value: f64,
    /// Number of categories − 1.
    pub degrees_of_freedom: usize,
}

/// Drift of a categorical feature from counts per category, such as `&HashMap<String, u64>` or
/// `&BTreeMap<i64, u64>`; a key repeated within one input has its counts added. `None` when
/// either window has no count at all.
///
/// Categories are the union of both inputs (categories with a zero count on both sides are
/// ignored); p and q are the shares over that union, `count / total`, as Evidently bins
/// categorical data. Chi-squared is `scipy.stats.chisquare(f_obs=current counts,
/// f_exp=reference shares × current total)`: the expected counts sum to the observed total, as
/// SciPy requires. A category unseen in the reference has an expected count of 0, which
/// makes the statistic infinite and the p-value 0 — exactly SciPy's (and Evidently's) result
/// and a sure sign of drift; [`CategoricalDrift::unseen_in_reference`] tells how many there were.
pub fn categorical_drift<'a, K>(
    reference: impl IntoIterator<Item = (&'a K, &'a u64)>,
    current: impl IntoIterator<Item = (&'a K, &'a u64)>,
) -> Option<CategoricalDrift>
where
    K: Ord + 'a,
{
    let mut union: BTreeMap<&K, [u64; 2]> = BTreeMap::new();
    for (key, &count) in reference {
        union.entry(key).or_default()[0] += count;
    }
    for (key, &count) in current {
        union.entry(key).or_default()[1] += count;
    }
    union.retain(|_, counts| counts != &[0, 0]);
    let reference_total: u64 = union.values().map(|c| c[0]).sum();
    let current_total: u64 = union.values().map(|c| c[1]).sum();
    if reference_total == 0 || current_total == 0 {
        return None;
    }
    let p: Vec<f64> = union
        .values()
        .map(|c| c[0] as f64 / reference_total as f64)
        .collect();
    let q: Vec<f64> = union
        .values()
        .map(|c| c[1] as f64 / current_total as f64)
        .collect();
    let observed: Vec<f64> = union.values().map(|c| c[1] as f64).collect();
    Some(CategoricalDrift {
        categories: union.len(),
        unseen_in_reference: union.values().filter(|c| c[0] == 0).count(),
        missing_in_current: union.values().filter(|c| c[1] == 0).count(),
        psi: population_stability_index(&p, &q),
        jensen_shannon: jensen_shannon_distance(&p, &q),
        l_infinity: p
            .iter()
            .zip(&q)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max),
        chi_square: chi_square(&observed, &p, current_total as f64),
    })
}

/// `scipy.stats.chisquare(observed, f_exp=expected_shares × total)`; `None` with fewer than
/// two categories.
fn chi_square(observed: &[f64], expected_shares: &[f64], total: f64) -> Option<ChiSquareTest> {
    let degrees_of_freedom = observed.len().checked_sub(1).filter(|&df| df > 0)?;
    let statistic: f64 = observed
        .iter()
        .zip(expected_shares)
        .map(|(&o, &share)| {
            let e = share * total;
            if e == 0.0 {
                f64::INFINITY
            } else {
                (o - e) * (o - e) / e
            }
        })
        .sum();
    let distribution = ChiSquared::new(degrees_of_freedom as f64).ok()?;
    Some(ChiSquareTest {
        statistic,
        p_value: distribution.sf(statistic),
        degrees_of_freedom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn counts(pairs: &[(&'static str, u64)]) -> HashMap<&'static str, u64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn identical_distributions_show_no_drift() {
        let reference = counts(&[("a", 10), ("b", 30)]);
        let current = counts(&[("a", 1), ("b", 3)]);
        let drift = categorical_drift(&reference, &current).unwrap();
        assert_eq!(drift.categories, 2);
        assert_eq!(drift.psi, 0.0);
        assert_eq!(drift.jensen_shannon, 0.0);
        assert_eq!(drift.l_infinity, 0.0);
        let chi = drift.chi_square.unwrap();
        assert_eq!(chi.statistic, 0.0);
        assert_eq!(chi.p_value, 1.0);
        assert_eq!(chi.degrees_of_freedom, 1);
    }

    #[test]
    fn chi_square_of_a_fair_coin_against_a_skewed_one() {
        // Expected 50/50 of 100, observed 60/40: (10² + 10²)/50 = 4, df 1, p = erfc(√2).
        let drift = categorical_drift(
            &counts(&[("h", 1), ("t", 1)]),
            &counts(&[("h", 60), ("t", 40)]),
        )
        .unwrap();
        let chi = drift.chi_square.unwrap();
        assert!((chi.statistic - 4.0).abs() < 1e-12);
        assert!(
            (chi.p_value - 0.045_500_263_896_358_42).abs() < 1e-12,
            "{}",
            chi.p_value
        );
        assert!((drift.l_infinity - 0.1).abs() < 1e-15);
    }

    #[test]
    fn a_category_unseen_in_the_reference_gives_an_infinite_statistic_and_p_zero() {
        let drift = categorical_drift(
            &counts(&[("a", 5), ("b", 5)]),
            &counts(&[("a", 5), ("c", 1)]),
        )
        .unwrap();
        assert_eq!(drift.categories, 3);
        assert_eq!(drift.unseen_in_reference, 1);
        assert_eq!(drift.missing_in_current, 1);
        let chi = drift.chi_square.unwrap();
        assert_eq!(chi.statistic, f64::INFINITY);
        assert_eq!(chi.p_value, 0.0);
        assert!(drift.psi.is_finite());
    }

    #[test]
    fn a_single_category_has_no_chi_square_and_an_empty_window_no_drift() {
        let drift =
            categorical_drift(&counts(&[("a", 5)]), &counts(&[("a", 2), ("z", 0)])).unwrap();
        assert_eq!(drift.categories, 1);
        assert!(drift.chi_square.is_none());
        assert!(categorical_drift(&counts(&[("a", 5)]), &counts(&[("a", 0)])).is_none());
    }

    #[test]
    fn integer_categories_in_btree_maps_work_too() {
        let reference: BTreeMap<i64, u64> = [(1, 3), (2, 1)].into();
        let current: BTreeMap<i64, u64> = [(1, 1), (2, 3)].into();
        let drift = categorical_drift(&reference, &current).unwrap();
        assert!((drift.l_infinity - 0.5).abs() < 1e-15);
    }
}

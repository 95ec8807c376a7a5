//! Divergences between two discrete distributions given as shares per bin or category.
//! Both slices have the same length and each sums to 1 (up to rounding).

use std::f64::consts::LN_2;

/// Share that replaces an empty bin or category in the population stability index, for the
/// reference and the current distribution alike (Evidently's rule). Without it an empty bin
/// would make ln(q/p) infinite.
pub const PSI_EMPTY_SHARE: f64 = 1e-4;

/// Population stability index Σ (q − p)·ln(q / p), natural log, after replacing every zero
/// share in `p` and `q` by [`PSI_EMPTY_SHARE`]. Non-negative; 0 for identical distributions.
pub(crate) fn population_stability_index(p: &[f64], q: &[f64]) -> f64 {
    debug_assert_eq!(p.len(), q.len());
    let floor = |share: f64| if share == 0.0 { PSI_EMPTY_SHARE } else { share };
    p.iter()
        .zip(q)
        .map(|(&p, &q)| {
            let (p, q) = (floor(p), floor(q));
            (p - q) * (p / q).ln()
        })
        .sum()
}

/// Jensen-Shannon distance in base 2, `scipy.spatial.distance.jensenshannon(p, q, base=2)`:
/// both inputs are first rescaled to sum to 1, then with m = (p + q) / 2
/// `sqrt((KL(p‖m) + KL(q‖m)) / (2 ln 2))`, where 0·ln(0/m) = 0 (no smoothing). In [0, 1].
/// Evidently reports the natural-log distance, which equals this value × sqrt(ln 2).
/// A sum that rounding makes negative (identical inputs) is taken as 0 where SciPy gives NaN.
pub(crate) fn jensen_shannon_distance(p: &[f64], q: &[f64]) -> f64 {
    debug_assert_eq!(p.len(), q.len());
    let (p_total, q_total): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let relative_entropy = |x: f64, m: f64| if x > 0.0 { x * (x / m).ln() } else { 0.0 };
    let (mut left, mut right) = (0.0, 0.0);
    for (&p, &q) in p.iter().zip(q) {
        let (p, q) = (p / p_total, q / q_total);
        let m = (p + q) / 2.0;
        left += relative_entropy(p, m);
        right += relative_entropy(q, m);
    }
    ((left + right) / LN_2 / 2.0).max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_identical_shares_and_floors_empty_bins() {
        assert_eq!(population_stability_index(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
        let expected = (0.5 - 1e-4) * (0.5f64 / 1e-4).ln() + (0.5 - 1.0) * 0.5f64.ln();
        let psi = population_stability_index(&[0.5, 0.5], &[0.0, 1.0]);
        assert!((psi - expected).abs() < 1e-12, "{psi} vs {expected}");
    }

    #[test]
    fn js_distance_is_one_for_disjoint_supports_and_zero_for_equal() {
        assert!((jensen_shannon_distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-15);
        assert_eq!(jensen_shannon_distance(&[0.3, 0.7], &[0.3, 0.7]), 0.0);
        // Unnormalised inputs are rescaled like SciPy does.
        assert_eq!(jensen_shannon_distance(&[3.0, 7.0], &[0.3, 0.7]), 0.0);
    }
}

//! Drift of a numeric feature between a reference and a current sample.

use serde::{Deserialize, Serialize};

use crate::divergence::{jensen_shannon_distance, population_stability_index};
use crate::histogram::{sturges_edges, Histogram};
use crate::ks::{ks_test, KsTest};
use crate::sample::{EcdfGaps, SortedSample};

/// Floor of the reference standard deviation that normalises the Wasserstein distance
/// (Evidently's 0.001), so that a constant reference does not divide by zero.
pub const WASSERSTEIN_MIN_STD: f64 = 0.001;

/// Drift statistics of one numeric feature. The binned statistics (PSI, Jensen-Shannon) use the
/// Sturges edges of both samples together; the others use the raw values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericDrift {
    /// Population stability index over the bins, natural log, empty bins at
    /// [`crate::PSI_EMPTY_SHARE`].
    pub psi: f64,
    /// Jensen-Shannon distance over the bins, base 2, in [0, 1].
    pub jensen_shannon: f64,
    /// First Wasserstein distance `scipy.stats.wasserstein_distance(reference, current)`.
    pub wasserstein: f64,
    /// `wasserstein / max(std(reference), 0.001)` with the population standard deviation.
    pub wasserstein_normalized: f64,
    /// Two-sample Kolmogorov-Smirnov test, as `scipy.stats.ks_2samp(reference, current)`.
    pub ks: KsTest,
    /// `np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")`.
    pub edges: Vec<f64>,
    /// Reference values per bin (`np.histogram(reference, edges)`).
    pub reference_counts: Vec<u64>,
    /// Current values per bin.
    pub current_counts: Vec<u64>,
}

/// All numeric drift statistics of a feature; `None` when either sample is empty (for example
/// a column that is entirely null in one window).
///
/// Cost: O(n) over the sorted samples plus O(bins · log n) for the histograms, and the
/// Kolmogorov-Smirnov p-value (see [`crate::ks_2samp`]).
pub fn numeric_drift(reference: &SortedSample, current: &SortedSample) -> Option<NumericDrift> {
    let edges = sturges_edges(&[reference, current])?;
    let reference_hist = Histogram::with_edges(reference, edges.clone());
    let current_hist = Histogram::with_edges(current, edges);
    let p = reference_hist.shares()?;
    let q = current_hist.shares()?;
    let gaps = EcdfGaps::between(reference, current)?;
    let reference_std = reference.std(0)?;
    Some(NumericDrift {
        psi: population_stability_index(&p, &q),
        jensen_shannon: jensen_shannon_distance(&p, &q),
        wasserstein: gaps.area,
        wasserstein_normalized: gaps.area / reference_std.max(WASSERSTEIN_MIN_STD),
        ks: ks_test(reference.len(), current.len(), &gaps)?,
        edges: reference_hist.edges,
        reference_counts: reference_hist.counts,
        current_counts: current_hist.counts,
    })
}

/// First Wasserstein (earth mover's) distance between the empirical distributions,
/// `scipy.stats.wasserstein_distance(u, v)`: ∫ |F_u(x) − F_v(x)| dx, evaluated exactly as the
/// sum over consecutive distinct pooled values of |F_u − F_v| times the gap. O(n) on sorted
/// samples; `None` when either is empty.
pub fn wasserstein_distance(u: &SortedSample, v: &SortedSample) -> Option<f64> {
    Some(EcdfGaps::between(u, v)?.area)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: &[f64]) -> SortedSample {
        SortedSample::new(values.to_vec()).expect("valid sample")
    }

    #[test]
    fn wasserstein_of_a_shift_is_the_shift() {
        let d = wasserstein_distance(&sample(&[0.0, 1.0, 3.0]), &sample(&[5.0, 6.0, 8.0])).unwrap();
        assert!((d - 5.0).abs() < 1e-12);
        assert_eq!(
            wasserstein_distance(&sample(&[1.0]), &SortedSample::default()),
            None
        );
    }

    #[test]
    fn wasserstein_of_unequal_sizes_follows_the_cdf_gap() {
        // F_u jumps to 1 at 0; F_v is 1/2 on [0, 2): area 1/2 · 2 = 1.
        let d = wasserstein_distance(&sample(&[0.0]), &sample(&[0.0, 2.0])).unwrap();
        assert!((d - 1.0).abs() < 1e-15);
    }

    #[test]
    fn identical_samples_show_no_drift() {
        let s = sample(&[1.0, 2.0, 2.0, 3.0, 5.0, 8.0]);
        let drift = numeric_drift(&s, &s).unwrap();
        assert_eq!(drift.psi, 0.0);
        assert_eq!(drift.jensen_shannon, 0.0);
        assert_eq!(drift.wasserstein, 0.0);
        assert_eq!(drift.ks.statistic, 0.0);
        assert_eq!(drift.ks.p_value, 1.0);
        assert_eq!(drift.reference_counts, drift.current_counts);
    }

    #[test]
    fn constant_reference_normalises_by_the_std_floor() {
        let drift = numeric_drift(&sample(&[2.0, 2.0]), &sample(&[2.0, 3.0])).unwrap();
        assert!((drift.wasserstein - 0.5).abs() < 1e-15);
        assert!((drift.wasserstein_normalized - 500.0).abs() < 1e-9);
    }

    #[test]
    fn empty_side_is_undefined() {
        assert!(numeric_drift(&SortedSample::default(), &sample(&[1.0])).is_none());
    }
}

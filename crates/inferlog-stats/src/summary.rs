//! Per-feature summaries that make up a baseline (in the spirit of SageMaker's
//! `statistics.json`: counts, moments, quantiles, a histogram, value counts).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;
use crate::sample::SortedSample;

/// The probabilities of [`Quantiles`], in field order.
pub const SUMMARY_QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];

/// Quantiles `np.quantile(x, q)` with the default linear method (see
/// [`SortedSample::quantile`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p01: f64,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Summary of a numeric feature over the present (non-missing) values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericSummary {
    /// Present values.
    pub count: u64,
    /// Missing values, as counted by the caller.
    pub missing: u64,
    pub sum: f64,
    pub mean: f64,
    /// Population standard deviation, `np.std(x)` (ddof = 0).
    pub std_population: f64,
    /// Sample standard deviation, `np.std(x, ddof=1)`; `None` for a single value.
    pub std_sample: Option<f64>,
    pub min: f64,
    pub max: f64,
    pub quantiles: Quantiles,
    /// `np.histogram(x, bins="sturges")`.
    pub histogram: Histogram,
}

/// Summary of a numeric sample with `missing` values dropped by the caller; `None` when no value
/// is present (an all-null column), where mean, extremes and quantiles are undefined.
pub fn numeric_summary(sample: &SortedSample, missing: u64) -> Option<NumericSummary> {
    let quantile = |q| sample.quantile(q);
    Some(NumericSummary {
        count: sample.len() as u64,
        missing,
        sum: sample.sum()?,
        mean: sample.mean()?,
        std_population: sample.std(0)?,
        std_sample: sample.std(1),
        min: sample.min()?,
        max: sample.max()?,
        quantiles: Quantiles {
            p01: quantile(0.01)?,
            p05: quantile(0.05)?,
            p25: quantile(0.25)?,
            p50: quantile(0.5)?,
            p75: quantile(0.75)?,
            p95: quantile(0.95)?,
            p99: quantile(0.99)?,
        },
        histogram: Histogram::sturges(sample)?,
    })
}

/// Summary of a categorical feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSummary<K: Ord> {
    /// Present values.
    pub count: u64,
    /// Missing values, as counted by the caller.
    pub missing: u64,
    /// Number of distinct present values.
    pub distinct: usize,
    /// Count per value (only values with a positive count).
    pub value_counts: BTreeMap<K, u64>,
    /// The most frequent values, by count descending and then by value ascending.
    pub top: Vec<(K, u64)>,
}

/// Counts each value (`pd.Series.value_counts` without the ordering).
pub fn value_counts<K: Ord>(values: impl IntoIterator<Item = K>) -> BTreeMap<K, u64> {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(value).or_insert(0) += 1;
    }
    counts
}

/// Summary of a categorical feature from its value counts (see [`value_counts`]), keeping the
/// `top_k` most frequent values. An all-null column gives count 0 and an empty top list.
pub fn categorical_summary<K: Ord + Clone>(
    mut value_counts: BTreeMap<K, u64>,
    missing: u64,
    top_k: usize,
) -> CategoricalSummary<K> {
    value_counts.retain(|_, count| *count > 0);
    let mut top: Vec<(K, u64)> = value_counts.iter().map(|(k, &c)| (k.clone(), c)).collect();
    // The map iterates in ascending key order and the sort is stable: ties stay ascending.
    top.sort_by_key(|&(_, count)| Reverse(count));
    top.truncate(top_k);
    CategoricalSummary {
        count: value_counts.values().sum(),
        missing,
        distinct: value_counts.len(),
        value_counts,
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_summary_of_a_small_sample() {
        let sample = SortedSample::new(vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        let s = numeric_summary(&sample, 2).unwrap();
        assert_eq!((s.count, s.missing), (4, 2));
        assert_eq!((s.sum, s.mean, s.min, s.max), (10.0, 2.5, 1.0, 4.0));
        assert!((s.std_population - 1.25f64.sqrt()).abs() < 1e-15);
        assert!((s.std_sample.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(s.quantiles.p50, 2.5);
        assert!((s.quantiles.p01 - 1.03).abs() < 1e-15);
        // n = 4: log2(4) + 1 = 3 bins over [1, 4].
        assert_eq!(s.histogram.edges, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.histogram.counts, vec![1, 1, 2]);
    }

    #[test]
    fn single_value_and_all_null_columns() {
        let one = numeric_summary(&SortedSample::new(vec![5.0]).unwrap(), 0).unwrap();
        assert_eq!(one.std_population, 0.0);
        assert_eq!(one.std_sample, None);
        assert_eq!(one.quantiles.p99, 5.0);
        assert_eq!(one.histogram.edges, vec![4.5, 5.5]);
        assert!(numeric_summary(&SortedSample::default(), 7).is_none());
    }

    #[test]
    fn categorical_summary_ranks_by_count_then_value() {
        let counts = value_counts(["b", "a", "c", "a", "b", "d"]);
        let s = categorical_summary(counts, 1, 3);
        assert_eq!((s.count, s.missing, s.distinct), (6, 1, 4));
        assert_eq!(s.top, vec![("a", 2), ("b", 2), ("c", 1)]);
        let empty = categorical_summary(BTreeMap::<String, u64>::new(), 3, 5);
        assert_eq!((empty.count, empty.distinct, empty.top.len()), (0, 0, 0));
    }
}

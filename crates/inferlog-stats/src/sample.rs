//! The sorted numeric sample that every numeric statistic reads.
//!
//! Invariant: the values are finite, of magnitude below 2^1022, and ascending. The magnitude bound
//! guarantees that `max - min` of any two samples is finite, so bin widths and distances never
//! overflow.

use crate::error::StatsError;

/// Values at or above this magnitude, 2^1022 ≈ 4.49e307, are rejected.
pub const MAX_MAGNITUDE: f64 = f64::from_bits(2045 << 52);

/// A numeric sample sorted ascending, built once per feature and window and then shared by the
/// histogram, Kolmogorov-Smirnov, Wasserstein and quantile computations.
///
/// Missing values are the caller's business: drop NaN / null before building a sample and
/// report their number separately (see [`crate::numeric_summary`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SortedSample {
    values: Vec<f64>,
}

impl SortedSample {
    /// Sorts `values` in place (no copy). O(n log n).
    ///
    /// # Errors
    /// [`StatsError::InvalidValue`] if a value is NaN, infinite or of magnitude ≥ 2^1022; the
    /// index is the position in `values` as given.
    pub fn new(mut values: Vec<f64>) -> Result<Self, StatsError> {
        check_values(&values)?;
        values.sort_unstable_by(f64::total_cmp);
        Ok(Self { values })
    }

    /// Takes values the caller has already sorted ascending (for example by a query engine),
    /// checking validity and order in O(n) instead of sorting again.
    ///
    /// # Errors
    /// [`StatsError::InvalidValue`] as for [`SortedSample::new`], or for the first value that is
    /// smaller than its predecessor.
    pub fn from_sorted(values: Vec<f64>) -> Result<Self, StatsError> {
        check_values(&values)?;
        if let Some(index) = values.windows(2).position(|w| w[1] < w[0]) {
            return Err(StatsError::InvalidValue {
                index: index + 1,
                value: values[index + 1],
            });
        }
        Ok(Self { values })
    }

    /// The values, ascending.
    pub fn as_slice(&self) -> &[f64] {
        &self.values
    }

    /// Gives the sorted values back.
    pub fn into_vec(self) -> Vec<f64> {
        self.values
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the sample holds no value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Smallest value; `None` when empty.
    pub fn min(&self) -> Option<f64> {
        self.values.first().copied()
    }

    /// Largest value; `None` when empty.
    pub fn max(&self) -> Option<f64> {
        self.values.last().copied()
    }

    /// Sum of the values (compensated summation); `None` when empty.
    pub fn sum(&self) -> Option<f64> {
        (!self.is_empty()).then(|| compensated_sum(self.values.iter().copied()))
    }

    /// Arithmetic mean, `sum / n` like `np.mean`; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        Some(self.sum()? / self.len() as f64)
    }

    /// Standard deviation like `np.std(x, ddof=ddof)`: sqrt(Σ(x − mean)² / (n − ddof)), two-pass.
    /// `ddof = 0` is the population, `ddof = 1` the sample standard deviation. `None` when
    /// n ≤ ddof (NumPy would return NaN or infinity).
    pub fn std(&self, ddof: usize) -> Option<f64> {
        if self.len() <= ddof {
            return None;
        }
        let mean = self.mean()?;
        let squares = compensated_sum(self.values.iter().map(|x| (x - mean) * (x - mean)));
        Some((squares / (self.len() - ddof) as f64).sqrt())
    }

    /// Quantile like `np.quantile(x, q)` with the default `method="linear"` (Hyndman & Fan
    /// type 7): the virtual index `(n − 1)·q` is split into `i + γ` and the result is the
    /// interpolation of `x[i]` and `x[i + 1]` exactly as NumPy's `_lerp` does it.
    /// `None` when the sample is empty or `q` is not in [0, 1].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.is_empty() || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let last = self.len() - 1;
        let virtual_index = last as f64 * q;
        if virtual_index >= last as f64 {
            return self.max();
        }
        let below = virtual_index.floor();
        let gamma = virtual_index - below;
        // `below` is in [0, last - 1] here, so both indexes are in bounds.
        let a = self.values[below as usize];
        let b = self.values[below as usize + 1];
        let diff = b - a;
        Some(if gamma >= 0.5 {
            b - diff * (1.0 - gamma)
        } else {
            a + diff * gamma
        })
    }
}

fn check_values(values: &[f64]) -> Result<(), StatsError> {
    match values
        .iter()
        .position(|x| x.is_nan() || x.abs() >= MAX_MAGNITUDE)
    {
        Some(index) => Err(StatsError::InvalidValue {
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

/// Neumaier's compensated sum: accurate to a few ulps whatever the order of magnitude of the
/// terms, where NumPy's pairwise sum is accurate to O(log n) ulps; both agree far below 1e-6.
pub(crate) fn compensated_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sum = CompensatedSum::default();
    values.into_iter().for_each(|x| sum.add(x));
    sum.value()
}

/// Running Neumaier sum.
#[derive(Default)]
pub(crate) struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        self.compensation += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }

    pub(crate) fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// How far apart the empirical CDFs F_a and F_b of two samples are, from one O(n1 + n2) walk
/// over both sorted samples. The Kolmogorov-Smirnov statistic and the Wasserstein distance both
/// come from it, so numeric drift walks the data once.
pub(crate) struct EcdfGaps {
    /// max(F_a − F_b) over the pooled values.
    pub(crate) max_diff: f64,
    /// min(F_a − F_b) over the pooled values.
    pub(crate) min_diff: f64,
    /// ∫ |F_a − F_b| dx: the sum over consecutive distinct pooled values of the gap times the
    /// distance to the next value, as `scipy.stats.wasserstein_distance` evaluates it.
    pub(crate) area: f64,
}

impl EcdfGaps {
    /// `None` when either sample is empty. The CDFs are `count / n` in floating point, with
    /// counts from `searchsorted(side="right")`, exactly as SciPy computes them.
    pub(crate) fn between(a: &SortedSample, b: &SortedSample) -> Option<Self> {
        if a.is_empty() || b.is_empty() {
            return None;
        }
        let (na, nb) = (a.len() as f64, b.len() as f64);
        let (mut max_diff, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
        let mut area = CompensatedSum::default();
        let mut previous: Option<(f64, f64)> = None; // (value, |F_a − F_b| from it on)
        for (value, i, j) in UnionSteps::new(a.as_slice(), b.as_slice()) {
            if let Some((previous_value, gap)) = previous {
                area.add(gap * (value - previous_value));
            }
            let diff = i as f64 / na - j as f64 / nb;
            max_diff = max_diff.max(diff);
            min_diff = min_diff.min(diff);
            previous = Some((value, diff.abs()));
        }
        Some(Self {
            max_diff,
            min_diff,
            area: area.value(),
        })
    }
}

/// Walks the distinct values of the union of two ascending slices in ascending order. For each
/// value `v` it yields `(v, i, j)` where `i` and `j` count the elements ≤ `v` in each slice —
/// NumPy's `searchsorted(side="right")`, which is how SciPy evaluates both empirical CDFs.
struct UnionSteps<'a> {
    a: &'a [f64],
    b: &'a [f64],
    i: usize,
    j: usize,
}

impl<'a> UnionSteps<'a> {
    fn new(a: &'a [f64], b: &'a [f64]) -> Self {
        Self { a, b, i: 0, j: 0 }
    }
}

impl Iterator for UnionSteps<'_> {
    type Item = (f64, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let value = match (self.a.get(self.i), self.b.get(self.j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => return None,
        };
        // Linear scans: every element is passed over once, O(n1 + n2) for the whole walk.
        while self.a.get(self.i).is_some_and(|&x| x <= value) {
            self.i += 1;
        }
        while self.b.get(self.j).is_some_and(|&y| y <= value) {
            self.j += 1;
        }
        Some((value, self.i, self.j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: &[f64]) -> SortedSample {
        SortedSample::new(values.to_vec()).expect("valid sample")
    }

    #[test]
    fn new_sorts_and_rejects_non_finite_values_with_their_original_index() {
        assert_eq!(sample(&[3.0, -1.0, 2.0]).as_slice(), &[-1.0, 2.0, 3.0]);
        let err = SortedSample::new(vec![1.0, f64::NAN]).unwrap_err();
        assert!(matches!(err, StatsError::InvalidValue { index: 1, .. }));
        assert!(SortedSample::new(vec![f64::INFINITY]).is_err());
        assert!(SortedSample::new(vec![1e308]).is_err());
        assert!(SortedSample::new(vec![-4e307, 4e307]).is_ok());
    }

    #[test]
    fn from_sorted_rejects_descending_input() {
        assert!(SortedSample::from_sorted(vec![1.0, 1.0, 2.0]).is_ok());
        let err = SortedSample::from_sorted(vec![1.0, 3.0, 2.0]).unwrap_err();
        assert!(matches!(err, StatsError::InvalidValue { index: 2, .. }));
    }

    #[test]
    fn quantiles_interpolate_linearly_between_order_statistics() {
        let s = sample(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.quantile(0.0), Some(1.0));
        assert_eq!(s.quantile(1.0), Some(4.0));
        assert_eq!(s.quantile(0.5), Some(2.5));
        assert_eq!(s.quantile(0.25), Some(1.75));
        assert_eq!(s.quantile(1.5), None);
        assert_eq!(SortedSample::default().quantile(0.5), None);
        assert_eq!(sample(&[7.0]).quantile(0.3), Some(7.0));
    }

    #[test]
    fn moments_follow_numpy_definitions() {
        let s = sample(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.sum(), Some(40.0));
        assert_eq!(s.mean(), Some(5.0));
        assert_eq!(s.std(0), Some(2.0));
        assert!((s.std(1).unwrap() - (32.0_f64 / 7.0).sqrt()).abs() < 1e-15);
        assert_eq!(sample(&[1.0]).std(1), None);
        assert_eq!(SortedSample::default().mean(), None);
    }

    #[test]
    fn compensated_sum_keeps_small_terms_next_to_large_ones() {
        assert_eq!(compensated_sum([1e16, 1.0, -1e16]), 1.0);
    }

    #[test]
    fn union_steps_count_elements_at_or_below_each_distinct_value() {
        let steps: Vec<_> = UnionSteps::new(&[1.0, 2.0, 2.0], &[2.0, 3.0]).collect();
        assert_eq!(steps, vec![(1.0, 1, 0), (2.0, 3, 1), (3.0, 3, 2)]);
    }
}

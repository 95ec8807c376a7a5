//! Equal-width histograms with NumPy's Sturges bin edges.

use serde::{Deserialize, Serialize};

use crate::sample::SortedSample;

/// Counts of a sample per bin. Bin `i` holds the values in `[edges[i], edges[i + 1])`; the last
/// bin is closed on the right, as `np.histogram` counts them. Values outside the edges are not
/// counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Increasing bin edges; one more than there are bins.
    pub edges: Vec<f64>,
    /// Values per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `np.histogram(x, bins="sturges")`: Sturges edges over the sample itself, then counts.
    /// `None` for an empty sample.
    pub fn sturges(sample: &SortedSample) -> Option<Self> {
        let edges = sturges_edges(&[sample])?;
        Some(Self::with_edges(sample, edges))
    }

    /// Counts `sample` into the bins delimited by `edges` (ascending), with binary searches on
    /// the sorted values: O(bins · log n) and exactly NumPy's `_search_sorted_inclusive`.
    pub fn with_edges(sample: &SortedSample, edges: Vec<f64>) -> Self {
        let values = sample.as_slice();
        let counts = match edges.split_last() {
            None => Vec::new(),
            Some((&last, inner)) => {
                let mut cumulative: Vec<usize> = inner
                    .iter()
                    .map(|&e| values.partition_point(|&x| x < e))
                    .collect();
                cumulative.push(values.partition_point(|&x| x <= last));
                cumulative
                    .windows(2)
                    .map(|w| (w[1] - w[0]) as u64)
                    .collect()
            }
        };
        Self { edges, counts }
    }

    /// Share of the counted values per bin (`counts / total`); `None` when no value was counted.
    pub fn shares(&self) -> Option<Vec<f64>> {
        let total: u64 = self.counts.iter().sum();
        (total > 0).then(|| {
            self.counts
                .iter()
                .map(|&c| c as f64 / total as f64)
                .collect()
        })
    }
}

/// Bin edges of `np.histogram_bin_edges(np.concatenate(samples), bins="sturges")`.
///
/// Over all values together: bin width `(max − min) / (log2(n) + 1)`, number of bins
/// `ceil((max − min) / width)`, edges `np.linspace(min, max, bins + 1)`. Constant data get one
/// bin over `(x − 0.5, x + 0.5)`, as in NumPy. `None` when all samples are empty.
pub fn sturges_edges(samples: &[&SortedSample]) -> Option<Vec<f64>> {
    let size: usize = samples.iter().map(|s| s.len()).sum();
    let min = samples.iter().filter_map(|s| s.min()).reduce(f64::min)?;
    let max = samples.iter().filter_map(|s| s.max()).reduce(f64::max)?;
    let (first, last) = if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    let width = (max - min) / ((size as f64).log2() + 1.0);
    // The ratio is about log2(n) + 1 (at most 65), so the conversion cannot saturate.
    let bins = if width == 0.0 {
        1
    } else {
        ((last - first) / width).ceil() as usize
    };
    Some(linspace(first, last, bins + 1))
}

/// `np.linspace(start, stop, num)` with `endpoint=True`, `num >= 2`, bit for bit.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut edges: Vec<f64> = (0..num)
        .map(|i| if step == 0.0 { i as f64 / div * delta } else { i as f64 * step } + start)
        .collect();
    if let Some(end) = edges.last_mut() {
        *end = stop;
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: &[f64]) -> SortedSample {
        SortedSample::new(values.to_vec()).expect("valid sample")
    }

    #[test]
    fn sturges_uses_log2_of_the_pooled_size() {
        // n = 8 → log2(8) + 1 = 4 bins over [0, 8].
        let edges = sturges_edges(&[
            &sample(&[0.0, 1.0, 2.0, 3.0]),
            &sample(&[5.0, 6.0, 7.0, 8.0]),
        ]);
        assert_eq!(edges, Some(vec![0.0, 2.0, 4.0, 6.0, 8.0]));
    }

    #[test]
    fn constant_data_get_one_bin_of_width_one() {
        let h = Histogram::sturges(&sample(&[3.0, 3.0, 3.0])).unwrap();
        assert_eq!(h.edges, vec![2.5, 3.5]);
        assert_eq!(h.counts, vec![3]);
    }

    #[test]
    fn last_bin_is_closed_on_the_right() {
        let h = Histogram::with_edges(
            &sample(&[0.0, 1.0, 1.0, 2.0, 3.0, 9.0]),
            vec![0.0, 1.0, 2.0, 3.0],
        );
        assert_eq!(h.counts, vec![1, 2, 2]);
        assert_eq!(h.shares().unwrap(), vec![0.2, 0.4, 0.4]);
    }

    #[test]
    fn empty_samples_have_no_edges() {
        assert_eq!(sturges_edges(&[&SortedSample::default()]), None);
        assert!(Histogram::sturges(&SortedSample::default()).is_none());
    }
}

//! Two-sample Kolmogorov-Smirnov test, a port of SciPy 1.17's `scipy.stats.ks_2samp` with
//! `alternative="two-sided"` and `method="auto"`.
//!
//! - The statistic D is the largest gap between the two empirical CDFs, evaluated at every
//!   pooled value with `searchsorted(side="right")` as SciPy does.
//! - When both sizes are at most [`KS_EXACT_MAX_N`] the p-value is exact: the proportion of
//!   lattice paths from (0, 0) to (n1, n2) that leave the band |x/n1 − y/n2| < D (Hodges 1958,
//!   with Viehmann's 1 − p recursion for unequal sizes). SciPy first rounds D to the lattice,
//!   D = h / lcm(n1, n2), and reports that rounded value as the statistic.
//! - Otherwise, or if the exact computation leaves [0, 1], the p-value is
//!   `kstwo.sf(D, round(n1·n2 / (n1 + n2)))`, the one-sample two-sided distribution at the
//!   effective size (see [`kstwo_sf`]).

mod kstwo;

use serde::{Deserialize, Serialize};

pub use kstwo::kstwo_sf;

use crate::sample::{EcdfGaps, SortedSample};

/// Largest sample size for which SciPy's `method="auto"` computes the exact p-value.
pub const KS_EXACT_MAX_N: usize = 10_000;

/// How the p-value of a Kolmogorov-Smirnov test was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KsMethod {
    /// Exact lattice-path count (both samples of at most [`KS_EXACT_MAX_N`] values).
    Exact,
    /// One-sample Kolmogorov distribution at the effective sample size.
    Asymptotic,
}

/// Result of a two-sample Kolmogorov-Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KsTest {
    /// sup |F_reference − F_current|, in [0, 1].
    pub statistic: f64,
    /// Two-sided p-value, in [0, 1]; drift is usually declared when it is ≤ 0.05.
    pub p_value: f64,
    /// Exact or asymptotic, as SciPy's `method="auto"` chose.
    pub method: KsMethod,
}

/// `scipy.stats.ks_2samp(a, b)` (two-sided, `method="auto"`); `None` when either sample is
/// empty (SciPy raises). The statistic is O(n1 + n2) on the sorted samples; the exact p-value
/// costs O(n1 + n2) for equal sizes and O(max(n) · D · min(n)) otherwise.
pub fn ks_2samp(a: &SortedSample, b: &SortedSample) -> Option<KsTest> {
    let gaps = EcdfGaps::between(a, b)?;
    ks_test(a.len(), b.len(), &gaps)
}

/// The test from the CDF gaps of two non-empty samples of sizes `n1` and `n2`.
pub(crate) fn ks_test(n1: usize, n2: usize, gaps: &EcdfGaps) -> Option<KsTest> {
    // SciPy: max(max(F_a − F_b), clip(−min(F_a − F_b), 0, 1)).
    let min_s = (-gaps.min_diff).clamp(0.0, 1.0);
    let mut statistic = if min_s > gaps.max_diff {
        min_s
    } else {
        gaps.max_diff
    };
    if n1.max(n2) <= KS_EXACT_MAX_N {
        let (rounded, p_value) = exact_p_value(n1 as u64, n2 as u64, statistic);
        statistic = rounded;
        if let Some(p_value) = p_value {
            return Some(KsTest {
                statistic,
                p_value,
                method: KsMethod::Exact,
            });
        }
    }
    let (m, n) = ((n1.max(n2)) as f64, (n1.min(n2)) as f64);
    let effective_n = (m * n / (m + n)).round_ties_even() as u64;
    let p_value = kstwo_sf(effective_n, statistic)?.clamp(0.0, 1.0);
    Some(KsTest {
        statistic,
        p_value,
        method: KsMethod::Asymptotic,
    })
}

/// SciPy's `_attempt_exact_2kssamp` for the two-sided alternative: returns the statistic
/// rounded to the lattice (h / lcm) and the exact p-value, or `None` when the computation
/// leaves [0, 1] (SciPy then falls back to the asymptotic distribution with the rounded D).
fn exact_p_value(n1: u64, n2: u64, d: f64) -> (f64, Option<f64>) {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return (d, Some(1.0));
    }
    let p = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        prob_outside_band(n1, n2, g, h)
    };
    (d, (0.0..=1.0).contains(&p).then_some(p))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Pr(D_{n,n} ≥ h/n) for equal sizes, SciPy's `_compute_prob_outside_square`:
/// 2·Σ_k (−1)^k binom(2n, n − (k+1)h) / binom(2n, n), evaluated Horner-like without
/// subtractive cancellation.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0;
    for k in (0..=n / h).rev() {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
    }
    2.0 * p
}

/// Proportion of lattice paths from (0, 0) to (m, n) that do not stay strictly inside
/// |x/m − y/n| < h / lcm(m, n): SciPy's `_compute_outer_prob_inside_method` (Hodges' inside
/// method with Viehmann's recursion for 1 − p), keeping one sliding column of the path counts.
fn prob_outside_band(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let (mg, ng) = (m / g, n / g);
    let (hf, mgf) = (h as f64, mg as f64);
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((hf / mgf).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0_f64; len_a];
    a[..(maxj as usize).min(len_a)].fill(0.0);
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * i - h) as f64 / mgf).floor() as i64) + 1)
            .max(0)
            .min(n);
        maxj = ((((ng * i + h) as f64) / mgf).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let (i_f, shift) = (i as f64, (minj - lastminj) as usize);
        for jj in 0..(maxj - minj) as usize {
            let j = jj as f64 + minj as f64;
            val = (a[jj + shift] * i_f + val * j) / (i_f + j);
            a[jj] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            // Entries carried over from the longer previous column become 1 again.
            a[curlen as usize..(lastlen as usize).min(len_a)].fill(1.0);
        }
    }
    a[(maxj - minj - 1) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: &[f64]) -> SortedSample {
        SortedSample::new(values.to_vec()).expect("valid sample")
    }

    #[test]
    fn single_values_that_differ_are_at_distance_one_with_p_one() {
        // Two paths from (0,0) to (1,1); both leave the band of width 1.
        let t = ks_2samp(&sample(&[0.0]), &sample(&[1.0])).unwrap();
        assert_eq!(t.statistic, 1.0);
        assert_eq!(t.p_value, 1.0);
        assert_eq!(t.method, KsMethod::Exact);
    }

    #[test]
    fn disjoint_pairs_have_the_exact_lattice_probability() {
        // D = 1 for n1 = n2 = 2: 2 of the binom(4, 2) = 6 paths reach the corners.
        let t = ks_2samp(&sample(&[0.0, 1.0]), &sample(&[2.0, 3.0])).unwrap();
        assert_eq!(t.statistic, 1.0);
        assert!((t.p_value - 2.0 / 6.0).abs() < 1e-15);
        // n1 = 3, n2 = 1, D = 1: 2 of the 4 paths.
        let t = ks_2samp(&sample(&[0.0, 1.0, 2.0]), &sample(&[5.0])).unwrap();
        assert!((t.p_value - 0.5).abs() < 1e-15, "{t:?}");
    }

    #[test]
    fn ties_across_samples_are_counted_with_searchsorted_right() {
        let t = ks_2samp(
            &sample(&[1.0, 2.0, 2.0, 3.0]),
            &sample(&[2.0, 2.0, 2.0, 2.0]),
        )
        .unwrap();
        assert_eq!(t.statistic, 0.25);
    }

    #[test]
    fn empty_sample_is_undefined() {
        assert!(ks_2samp(&SortedSample::default(), &sample(&[1.0])).is_none());
    }

    #[test]
    fn large_samples_use_the_asymptotic_distribution() {
        let a: Vec<f64> = (0..10_001).map(f64::from).collect();
        let t = ks_2samp(&sample(&a), &sample(&a)).unwrap();
        assert_eq!(t.method, KsMethod::Asymptotic);
        assert_eq!(t.statistic, 0.0);
        assert_eq!(t.p_value, 1.0);
    }
}

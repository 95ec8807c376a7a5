//! Statistics for monitoring a model: drift between a reference and a current window, summaries
//! for a baseline, and model quality against ground-truth labels.
//!
//! Pure computation: no IO, no async, no global state. Every function reproduces a named SciPy,
//! NumPy or scikit-learn computation (stated in its doc comment) to 1e-6 relative error, and the
//! integration test `tests/main.rs` checks that against the pinned Python packages.
//!
//! # Conventions
//! - **Undefined is `None`, never NaN.** A statistic that the reference implementation would
//!   return as NaN (empty input, a single class for ROC AUC, R² of one sample, …) is `None`.
//! - **Malformed input is an error** ([`StatsError`]): slices of different lengths, a
//!   non-finite value, a label missing from the declared labels, a probability outside [0, 1].
//! - **Numeric samples are sorted once.** [`SortedSample`] owns a sorted, finite sample; the
//!   histogram, the Kolmogorov-Smirnov test, the Wasserstein distance and the quantiles all read
//!   the same sorted data, so a numeric feature costs one sort per window (O(n log n)) and no
//!   allocation per element.
//! - **Logarithms are natural** except the Jensen-Shannon distance, which uses base 2 so that it
//!   lies in [0, 1] (Evidently's natural-log value equals ours × sqrt(ln 2)).
//! - **Binning** for numeric drift is NumPy's Sturges rule over both samples together
//!   ([`sturges_edges`]); empty-bin shares are replaced by [`PSI_EMPTY_SHARE`] for PSI only.
//!
//! # Where results can differ from the references
//! - Sums are compensated (Neumaier) where NumPy sums pairwise, so a constant column has a
//!   standard deviation of exactly 0 where NumPy may report rounding noise of about 1e-16·|x|.
//! - Samples are float64. For an integer-typed array NumPy widens Sturges bins to at least 1;
//!   here integer features get the edges NumPy computes for the same values as float64.
//! - SciPy evaluates the one-sided Smirnov distribution (inside `kstwo.sf`) in double-double
//!   arithmetic; this crate uses f64 in log space (measured within 4e-11 relative).
//! - Cost: like SciPy, the exact Kolmogorov-Smirnov p-value (both samples ≤ 10,000 values)
//!   takes O(n1·n2·D) steps, up to about a second for two 10,000-value samples far apart;
//!   larger samples use the asymptotic distribution and cost O(n1 + n2).

mod categorical;
mod divergence;
mod error;
mod histogram;
mod ks;
mod numeric;
mod quality;
mod sample;
mod summary;

pub use categorical::{categorical_drift, CategoricalDrift, ChiSquareTest};
pub use divergence::PSI_EMPTY_SHARE;
pub use error::StatsError;
pub use histogram::{sturges_edges, Histogram};
pub use ks::{ks_2samp, kstwo_sf, KsMethod, KsTest, KS_EXACT_MAX_N};
pub use numeric::{numeric_drift, wasserstein_distance, NumericDrift, WASSERSTEIN_MIN_STD};
pub use quality::{
    classification_metrics, log_loss, regression_metrics, roc_auc, AveragedScores, ClassScores,
    ClassificationMetrics, RegressionMetrics,
};
pub use sample::{SortedSample, MAX_MAGNITUDE};
pub use summary::{
    categorical_summary, numeric_summary, value_counts, CategoricalSummary, NumericSummary,
    Quantiles, SUMMARY_QUANTILES,
};

//! Model quality against ground truth: classification and regression metrics as scikit-learn
//! defines them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::StatsError;
use crate::sample::compensated_sum;

/// Precision, recall and F1 of one class, with its support (number of true instances).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// Precision, recall and F1 averaged over the classes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AveragedScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Classification metrics over the labels `sorted(set(y_true) | set(y_pred))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics<L> {
    /// The classes in ascending order; `per_class` and the confusion matrix follow this order.
    pub labels: Vec<L>,
    /// Share of predictions equal to the truth, `accuracy_score`.
    pub accuracy: f64,
    /// `precision_recall_fscore_support(average=None, zero_division=0)`. For a binary model
    /// the positive class's entry is sklearn's `average="binary"` result.
    pub per_class: Vec<ClassScores>,
    /// Unweighted mean over the classes (`average="macro"`).
    pub macro_avg: AveragedScores,
    /// Mean weighted by support (`average="weighted"`).
    pub weighted_avg: AveragedScores,
    /// `confusion_matrix[i][j]`: instances of class `labels[i]` predicted as `labels[j]`.
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// Classification metrics of predicted against true labels (strings, integers, any `Ord`
/// type; labels sort by that order, as Python's `sorted` does for strings and integers).
///
/// Per class: precision = tp / (tp + fp), recall = tp / (tp + fn),
/// F1 = 2·tp / (2·tp + fp + fn), each 0 when its denominator is 0 (`zero_division=0`).
/// `Ok(None)` for empty input.
///
/// # Errors
/// [`StatsError::LengthMismatch`] when the slices differ in length.
pub fn classification_metrics<L: Ord + Clone>(
    y_true: &[L],
    y_pred: &[L],
) -> Result<Option<ClassificationMetrics<L>>, StatsError> {
    check_lengths("y_true and y_pred", y_true.len(), y_pred.len())?;
    if y_true.is_empty() {
        return Ok(None);
    }
    let labels: Vec<L> = y_true
        .iter()
        .chain(y_pred)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .cloned()
        .collect();
    // Every label of the inputs is in `labels`, so its insertion point is its index.
    let index = |label: &L| labels.partition_point(|l| l < label);
    let k = labels.len();
    let mut confusion_matrix = vec![vec![0_u64; k]; k];
    for (t, p) in y_true.iter().zip(y_pred) {
        confusion_matrix[index(t)][index(p)] += 1;
    }

    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let per_class: Vec<ClassScores> = (0..k)
        .map(|i| {
            let tp = confusion_matrix[i][i];
            let true_sum: u64 = confusion_matrix[i].iter().sum();
            let pred_sum: u64 = confusion_matrix.iter().map(|row| row[i]).sum();
            ClassScores {
                precision: ratio(tp, pred_sum),
                recall: ratio(tp, true_sum),
                f1: ratio(2 * tp, true_sum + pred_sum),
                support: true_sum,
            }
        })
        .collect();

    let n = y_true.len() as f64;
    let correct: u64 = (0..k).map(|i| confusion_matrix[i][i]).sum();
    let average = |weights: &[f64]| {
        let total: f64 = weights.iter().sum();
        let mean = |score: fn(&ClassScores) -> f64| {
            per_class
                .iter()
                .zip(weights)
                .map(|(c, w)| score(c) * w)
                .sum::<f64>()
                / total
        };
        AveragedScores {
            precision: mean(|c| c.precision),
            recall: mean(|c| c.recall),
            f1: mean(|c| c.f1),
        }
    };
    let supports: Vec<f64> = per_class.iter().map(|c| c.support as f64).collect();
    Ok(Some(ClassificationMetrics {
        accuracy: correct as f64 / n,
        macro_avg: average(&vec![1.0; k]),
        weighted_avg: average(&supports),
        per_class,
        confusion_matrix,
        labels,
    }))
}

/// Area under the ROC curve of a binary classifier, `roc_auc_score(y_true, scores)`: the
/// probability that a random positive scores higher than a random negative, ties counting ½
/// (equal to sklearn's trapezoidal area, which merges tied scores into one threshold).
/// `Ok(None)` when `y_true` holds a single class or nothing (sklearn: undefined).
///
/// # Errors
/// [`StatsError::LengthMismatch`], or [`StatsError::InvalidValue`] for a NaN or infinite score.
pub fn roc_auc(y_true: &[bool], scores: &[f64]) -> Result<Option<f64>, StatsError> {
    check_lengths("y_true and scores", y_true.len(), scores.len())?;
    check_finite(scores)?;
    let positives = y_true.iter().filter(|&&t| t).count() as u128;
    let negatives = y_true.len() as u128 - positives;
    if positives == 0 || negatives == 0 {
        return Ok(None);
    }
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(y_true.iter().copied()).collect();
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    // Twice the number of (negative, positive) pairs ordered correctly, ties counting one.
    let (mut twice_area, mut negatives_below) = (0_u128, 0_u128);
    for group in pairs.chunk_by(|a, b| a.0 == b.0) {
        let pos = group.iter().filter(|(_, t)| *t).count() as u128;
        let neg = group.len() as u128 - pos;
        twice_area += 2 * pos * negatives_below + pos * neg;
        negatives_below += neg;
    }
    Ok(Some(twice_area as f64 / (2 * positives * negatives) as f64))
}

/// Mean cross-entropy, `log_loss(y_true, probabilities, labels=labels)` in natural log:
/// −mean(ln p_i), where p_i is the probability given to the true class of row i, clipped to
/// [ε, 1 − ε] with ε = `f64::EPSILON` (float64 machine epsilon). Rows are not renormalised:
/// scikit-learn 1.5 and later only warn when a row does not sum to 1.
///
/// `probabilities` is row-major, one row per sample and one column per entry of `labels`, in
/// that order. scikit-learn orders the columns by sorted label, so pass sorted labels to
/// compare. `Ok(None)` for empty input.
///
/// # Errors
/// [`StatsError::InvalidLabels`] for fewer than two or duplicate labels,
/// [`StatsError::LengthMismatch`] when `probabilities` is not `y_true.len() × labels.len()`,
/// [`StatsError::InvalidProbability`] for a value outside [0, 1] or NaN, and
/// [`StatsError::UnknownLabel`] for a true label missing from `labels`.
pub fn log_loss<L: Ord>(
    y_true: &[L],
    probabilities: &[f64],
    labels: &[L],
) -> Result<Option<f64>, StatsError> {
    let k = labels.len();
    let mut columns: Vec<(&L, usize)> = labels.iter().zip(0..).collect();
    columns.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let duplicates = columns.windows(2).any(|w| w[0].0 == w[1].0);
    if k < 2 || duplicates {
        return Err(StatsError::InvalidLabels {
            count: k,
            duplicates,
        });
    }
    check_lengths(
        "probabilities and y_true × labels",
        probabilities.len(),
        y_true.len() * k,
    )?;
    if let Some(i) = probabilities.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return Err(StatsError::InvalidProbability {
            row: i / k,
            column: i % k,
            value: probabilities[i],
        });
    }
    if y_true.is_empty() {
        return Ok(None);
    }
    let losses = y_true
        .iter()
        .zip(probabilities.chunks_exact(k))
        .enumerate()
        .map(|(index, (label, row))| {
            let position = columns
                .binary_search_by(|(l, _)| (*l).cmp(label))
                .map_err(|_| StatsError::UnknownLabel { index })?;
            let p = row[columns[position].1].clamp(f64::EPSILON, 1.0 - f64::EPSILON);
            Ok(-p.ln())
        });
    let total = compensated_sum(losses.collect::<Result<Vec<f64>, StatsError>>()?);
    Ok(Some(total / y_true.len() as f64))
}

/// Regression metrics as scikit-learn defines them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// mean |y − ŷ|
    pub mae: f64,
    /// mean (y − ŷ)²
    pub mse: f64,
    /// sqrt(mse)
    pub rmse: f64,
    /// 1 − Σ(y − ŷ)² / Σ(y − ȳ)², with `force_finite=True`: a constant y gives 1 for a perfect
    /// prediction and 0 otherwise. `None` for a single sample (sklearn returns NaN).
    pub r2: Option<f64>,
    /// mean |y − ŷ| / max(|y|, ε), ε = `f64::EPSILON`; a zero y makes it huge, as in sklearn.
    pub mape: f64,
}

/// MAE, MSE, RMSE, R² and MAPE of predictions against the truth; `Ok(None)` for empty input.
///
/// # Errors
/// [`StatsError::LengthMismatch`], or [`StatsError::InvalidValue`] for a NaN or infinite value
/// (sklearn rejects them too).
pub fn regression_metrics(
    y_true: &[f64],
    y_pred: &[f64],
) -> Result<Option<RegressionMetrics>, StatsError> {
    check_lengths("y_true and y_pred", y_true.len(), y_pred.len())?;
    check_finite(y_true)?;
    check_finite(y_pred)?;
    if y_true.is_empty() {
        return Ok(None);
    }
    let n = y_true.len() as f64;
    let pairs = || y_true.iter().zip(y_pred).map(|(&t, &p)| (t, p));
    let mae = compensated_sum(pairs().map(|(t, p)| (p - t).abs())) / n;
    let squared_error = compensated_sum(pairs().map(|(t, p)| (t - p) * (t - p)));
    let mse = squared_error / n;
    let mape = compensated_sum(pairs().map(|(t, p)| (p - t).abs() / t.abs().max(f64::EPSILON))) / n;
    let r2 = (y_true.len() >= 2).then(|| {
        let mean = compensated_sum(y_true.iter().copied()) / n;
        let total = compensated_sum(y_true.iter().map(|t| (t - mean) * (t - mean)));
        if squared_error == 0.0 {
            1.0
        } else if total == 0.0 {
            0.0
        } else {
            1.0 - squared_error / total
        }
    });
    Ok(Some(RegressionMetrics {
        mae,
        mse,
        rmse: mse.sqrt(),
        r2,
        mape,
    }))
}

fn check_lengths(what: &'static str, left: usize, right: usize) -> Result<(), StatsError> {
    if left == right {
        Ok(())
    } else {
        Err(StatsError::LengthMismatch { what, left, right })
    }
}

fn check_finite(values: &[f64]) -> Result<(), StatsError> {
    match values.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(StatsError::InvalidValue {
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_classification_by_hand() {
        // tp = 2, fn = 1, fp = 1, tn = 1 for class 1.
        let y_true = [1, 1, 1, 0, 0];
        let y_pred = [1, 1, 0, 1, 0];
        let m = classification_metrics(&y_true, &y_pred).unwrap().unwrap();
        assert_eq!(m.labels, vec![0, 1]);
        assert_eq!(m.confusion_matrix, vec![vec![1, 1], vec![1, 2]]);
        assert!((m.accuracy - 0.6).abs() < 1e-15);
        let positive = m.per_class[1];
        assert!((positive.precision - 2.0 / 3.0).abs() < 1e-15);
        assert!((positive.recall - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(positive.support, 3);
        assert!((m.macro_avg.f1 - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
        assert!((m.weighted_avg.recall - 0.6).abs() < 1e-15);
    }

    #[test]
    fn a_class_never_predicted_scores_zero_instead_of_nan() {
        let m = classification_metrics(&["a", "b"], &["a", "a"])
            .unwrap()
            .unwrap();
        assert_eq!(
            m.per_class[1],
            ClassScores {
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                support: 1
            }
        );
        assert!(classification_metrics::<&str>(&[], &[]).unwrap().is_none());
        assert!(classification_metrics(&["a"], &[]).is_err());
    }

    #[test]
    fn roc_auc_counts_ties_as_half() {
        let auc = roc_auc(&[false, true, false, true], &[0.1, 0.4, 0.4, 0.8])
            .unwrap()
            .unwrap();
        assert!((auc - 0.875).abs() < 1e-15);
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]).unwrap(), None);
        assert!(roc_auc(&[true, false], &[f64::NAN, 0.2]).is_err());
    }

    #[test]
    fn log_loss_clips_and_picks_the_true_column() {
        let loss = log_loss(&["ham", "spam"], &[0.9, 0.1, 0.0, 1.0], &["ham", "spam"])
            .unwrap()
            .unwrap();
        let expected = (-(0.9f64.ln()) - (1.0 - f64::EPSILON).ln()) / 2.0;
        assert!((loss - expected).abs() < 1e-15);
        // A zero probability for the true class is clipped to ε: −ln ε ≈ 36.04.
        let loss = log_loss(&[0], &[0.0, 1.0], &[0, 1]).unwrap().unwrap();
        assert!((loss + f64::EPSILON.ln()).abs() < 1e-12);
        assert!(matches!(
            log_loss(&[2], &[0.5, 0.5], &[0, 1]),
            Err(StatsError::UnknownLabel { index: 0 })
        ));
        assert!(matches!(
            log_loss(&[0], &[1.5, 0.5], &[0, 1]),
            Err(StatsError::InvalidProbability { .. })
        ));
        assert!(matches!(
            log_loss(&[0], &[1.0], &[0]),
            Err(StatsError::InvalidLabels { .. })
        ));
        assert_eq!(log_loss::<i32>(&[], &[], &[0, 1]).unwrap(), None);
    }

    #[test]
    fn regression_by_hand() {
        let m = regression_metrics(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0])
            .unwrap()
            .unwrap();
        assert!((m.mae - 2.0 / 3.0).abs() < 1e-15);
        assert!((m.mse - 4.0 / 3.0).abs() < 1e-15);
        assert!((m.r2.unwrap() - (1.0 - 4.0 / 2.0)).abs() < 1e-15);
        assert!((m.mape - (2.0 / 3.0) / 3.0).abs() < 1e-15);
    }

    #[test]
    fn r2_of_a_constant_truth_is_forced_finite() {
        let perfect = regression_metrics(&[2.0, 2.0], &[2.0, 2.0])
            .unwrap()
            .unwrap();
        assert_eq!(perfect.r2, Some(1.0));
        let off = regression_metrics(&[2.0, 2.0], &[2.0, 3.0])
            .unwrap()
            .unwrap();
        assert_eq!(off.r2, Some(0.0));
        let single = regression_metrics(&[2.0], &[3.0]).unwrap().unwrap();
        assert_eq!(single.r2, None);
    }
}

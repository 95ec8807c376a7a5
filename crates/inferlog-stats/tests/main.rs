//! Every statistic against NumPy, SciPy and scikit-learn.
//!
//! `tests/reference.py` builds seeded data sets and prints them with the Python results as
//! JSON; each test below recomputes its part with this crate and compares every value to a
//! relative tolerance of 1e-6 (absolute 1e-12 near zero), listing every mismatching case by
//! name. `scripts/test` makes the virtualenv and passes its interpreter in `INTEROP_PYTHON`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::process::Command;
use std::sync::OnceLock;

use inferlog_stats::*;
use serde_json::Value;

const RELATIVE_TOLERANCE: f64 = 1e-6;
const ABSOLUTE_TOLERANCE: f64 = 1e-12;

/// The script's output, computed once for all tests.
fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let python = std::env::var("INTEROP_PYTHON").expect(
            "INTEROP_PYTHON is not set: run the tests with scripts/test, which installs numpy, scipy and scikit-learn",
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference.py");
        let out = Command::new(&python).arg(script).output().expect("run tests/reference.py");
        assert!(out.status.success(), "tests/reference.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("tests/reference.py prints JSON")
    })
}

fn cases(area: &str) -> &'static [Value] {
    reference()[area]
        .as_array()
        .unwrap_or_else(|| panic!("no {area} cases"))
}

/// Sample values travel as the bit patterns of their float64, so both sides see the same numbers.
fn floats_from_bits(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array of bit patterns")
        .iter()
        .map(|b| f64::from_bits(b.as_u64().expect("u64")))
        .collect()
}

fn sample(v: &Value) -> SortedSample {
    SortedSample::new(floats_from_bits(v)).expect("finite sample")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

fn integers(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_i64().expect("integer"))
        .collect()
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .expect("object")
        .iter()
        .map(|(k, c)| (k.clone(), c.as_u64().expect("count")))
        .collect()
}

/// Collects mismatches so that one run reports all of them.
#[derive(Default)]
struct Checker {
    compared: usize,
    failures: Vec<String>,
}

impl Checker {
    /// `expected` is a JSON number, `null` (undefined: NaN in Python) or "inf" / "-inf".
    fn close(&mut self, case: &str, what: &str, actual: Option<f64>, expected: &Value) {
        self.compared += 1;
        let ok = match (actual, expected) {
            (None, Value::Null) => true,
            (Some(a), Value::String(s)) => {
                (s == "inf" && a == f64::INFINITY) || (s == "-inf" && a == f64::NEG_INFINITY)
            }
            (Some(a), Value::Number(e)) => {
                let e = e.as_f64().expect("f64");
                let diff = (a - e).abs();
                diff <= ABSOLUTE_TOLERANCE || diff <= RELATIVE_TOLERANCE * e.abs()
            }
            _ => false,
        };
        if !ok {
            self.failures
                .push(format!("{case}: {what} = {actual:?}, expected {expected}"));
        }
    }

    fn close_all(&mut self, case: &str, what: &str, actual: &[f64], expected: &Value) {
        let expected = expected.as_array().expect("array");
        if actual.len() != expected.len() {
            self.failures.push(format!(
                "{case}: {what} has {} values, expected {}",
                actual.len(),
                expected.len()
            ));
            return;
        }
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            self.close(case, &format!("{what}[{i}]"), Some(*a), e);
        }
    }

    fn equal<T: PartialEq + Debug>(&mut self, case: &str, what: &str, actual: T, expected: T) {
        self.compared += 1;
        if actual != expected {
            self.failures.push(format!(
                "{case}: {what} = {actual:?}, expected {expected:?}"
            ));
        }
    }

    fn finish(self, area: &str) {
        assert!(self.compared > 0, "{area}: nothing compared");
        assert!(
            self.failures.is_empty(),
            "{area}: {} of {} values differ from the Python reference:\n{}",
            self.failures.len(),
            self.compared,
            self.failures.join("\n")
        );
    }
}

#[test]
fn numeric_drift_matches_numpy_and_scipy() {
    let mut check = Checker::default();
    for case in cases("numeric") {
        let name = case["name"].as_str().expect("name");
        let (reference, current) = (sample(&case["reference"]), sample(&case["current"]));
        let drift = numeric_drift(&reference, &current).expect("non-empty samples");
        check.close_all(name, "edges", &drift.edges, &case["edges"]);
        let counts = |v: &Value| {
            v.as_array()
                .expect("counts")
                .iter()
                .map(|c| c.as_u64().expect("u64"))
                .collect::<Vec<_>>()
        };
        check.equal(
            name,
            "reference_counts",
            drift.reference_counts,
            counts(&case["reference_counts"]),
        );
        check.equal(
            name,
            "current_counts",
            drift.current_counts,
            counts(&case["current_counts"]),
        );
        check.close(name, "psi", Some(drift.psi), &case["psi"]);
        check.close(
            name,
            "jensen_shannon",
            Some(drift.jensen_shannon),
            &case["jensen_shannon"],
        );
        check.close(
            name,
            "wasserstein",
            Some(drift.wasserstein),
            &case["wasserstein"],
        );
        check.close(
            name,
            "wasserstein_normalized",
            Some(drift.wasserstein_normalized),
            &case["wasserstein_normalized"],
        );
        check.close(
            name,
            "ks.statistic",
            Some(drift.ks.statistic),
            &case["ks_statistic"],
        );
        check.close(
            name,
            "ks.p_value",
            Some(drift.ks.p_value),
            &case["ks_p_value"],
        );
        let method = match drift.ks.method {
            KsMethod::Exact => "exact",
            KsMethod::Asymptotic => "asymptotic",
        };
        check.equal(
            name,
            "ks.method",
            method,
            case["ks_method"].as_str().expect("method"),
        );
    }
    check.finish("numeric drift");
}

#[test]
fn kolmogorov_distribution_matches_scipy_kstwo() {
    let mut check = Checker::default();
    for case in cases("kstwo") {
        let (n, x) = (
            case["n"].as_u64().expect("n"),
            case["x"].as_f64().expect("x"),
        );
        check.close(
            &format!("kstwo n={n} x={x}"),
            "sf",
            kstwo_sf(n, x),
            &case["sf"],
        );
    }
    check.finish("kstwo.sf");
}

#[test]
fn categorical_drift_matches_scipy() {
    let mut check = Checker::default();
    for case in cases("categorical") {
        let name = case["name"].as_str().expect("name");
        let drift = categorical_drift(&counts(&case["reference"]), &counts(&case["current"]))
            .expect("counts");
        check.close(name, "psi", Some(drift.psi), &case["psi"]);
        check.close(
            name,
            "jensen_shannon",
            Some(drift.jensen_shannon),
            &case["jensen_shannon"],
        );
        check.close(
            name,
            "l_infinity",
            Some(drift.l_infinity),
            &case["l_infinity"],
        );
        let chi = drift.chi_square;
        check.close(
            name,
            "chi_square.statistic",
            chi.map(|c| c.statistic),
            &case["chi_square_statistic"],
        );
        check.close(
            name,
            "chi_square.p_value",
            chi.map(|c| c.p_value),
            &case["chi_square_p_value"],
        );
    }
    check.finish("categorical drift");
}

#[test]
fn numeric_summaries_match_numpy() {
    let mut check = Checker::default();
    for case in cases("summaries") {
        let name = case["name"].as_str().expect("name");
        let missing = case["missing"].as_u64().expect("missing");
        let s = numeric_summary(&sample(&case["values"]), missing).expect("non-empty sample");
        check.equal(
            name,
            "count",
            s.count,
            case["count"].as_u64().expect("count"),
        );
        check.equal(name, "missing", s.missing, missing);
        check.close(name, "sum", Some(s.sum), &case["sum"]);
        check.close(name, "mean", Some(s.mean), &case["mean"]);
        check.close(
            name,
            "std_population",
            Some(s.std_population),
            &case["std_population"],
        );
        check.close(name, "std_sample", s.std_sample, &case["std_sample"]);
        check.close(name, "min", Some(s.min), &case["min"]);
        check.close(name, "max", Some(s.max), &case["max"]);
        let q = s.quantiles;
        check.close_all(
            name,
            "quantiles",
            &[q.p01, q.p05, q.p25, q.p50, q.p75, q.p95, q.p99],
            &case["quantiles"],
        );
        check.close_all(name, "histogram.edges", &s.histogram.edges, &case["edges"]);
        let expected: Vec<u64> = case["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .map(|c| c.as_u64().expect("u64"))
            .collect();
        check.equal(name, "histogram.counts", s.histogram.counts, expected);
    }
    check.finish("numeric summaries");
}

#[test]
fn classification_metrics_match_sklearn() {
    fn compare<L: Ord + Clone + Debug>(
        check: &mut Checker,
        case: &Value,
        y_true: Vec<L>,
        y_pred: Vec<L>,
        labels: Vec<L>,
    ) {
        let name = case["name"].as_str().expect("name");
        let m = classification_metrics(&y_true, &y_pred)
            .expect("equal lengths")
            .expect("non-empty");
        check.equal(name, "labels", &m.labels, &labels);
        check.close(name, "accuracy", Some(m.accuracy), &case["accuracy"]);
        let column = |f: fn(&ClassScores) -> f64| m.per_class.iter().map(f).collect::<Vec<_>>();
        check.close_all(
            name,
            "precision",
            &column(|c| c.precision),
            &case["precision"],
        );
        check.close_all(name, "recall", &column(|c| c.recall), &case["recall"]);
        check.close_all(name, "f1", &column(|c| c.f1), &case["f1"]);
        let support: Vec<u64> = m.per_class.iter().map(|c| c.support).collect();
        let expected: Vec<u64> = integers(&case["support"])
            .into_iter()
            .map(|s| s as u64)
            .collect();
        check.equal(name, "support", support, expected);
        for (what, avg) in [("macro", m.macro_avg), ("weighted", m.weighted_avg)] {
            check.close_all(
                name,
                what,
                &[avg.precision, avg.recall, avg.f1],
                &case[what],
            );
        }
        let expected: Vec<Vec<u64>> = case["confusion_matrix"]
            .as_array()
            .expect("matrix")
            .iter()
            .map(|row| integers(row).into_iter().map(|c| c as u64).collect())
            .collect();
        check.equal(name, "confusion_matrix", m.confusion_matrix, expected);
    }

    let mut check = Checker::default();
    for case in cases("classification") {
        match case["kind"].as_str() {
            Some("int") => compare(
                &mut check,
                case,
                integers(&case["y_true"]),
                integers(&case["y_pred"]),
                integers(&case["labels"]),
            ),
            _ => compare(
                &mut check,
                case,
                strings(&case["y_true"]),
                strings(&case["y_pred"]),
                strings(&case["labels"]),
            ),
        }
    }
    check.finish("classification");
}

#[test]
fn roc_auc_matches_sklearn() {
    let mut check = Checker::default();
    for case in cases("roc_auc") {
        let name = case["name"].as_str().expect("name");
        let y_true: Vec<bool> = case["y_true"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|b| b.as_bool().expect("bool"))
            .collect();
        let auc = roc_auc(&y_true, &floats_from_bits(&case["scores"])).expect("valid input");
        check.close(name, "roc_auc", auc, &case["auc"]);
    }
    check.finish("roc auc");
}

#[test]
fn log_loss_matches_sklearn() {
    let mut check = Checker::default();
    for case in cases("log_loss") {
        let name = case["name"].as_str().expect("name");
        let probabilities = floats_from_bits(&case["probabilities"]);
        let loss = match case["kind"].as_str() {
            Some("int") => log_loss(
                &integers(&case["y_true"]),
                &probabilities,
                &integers(&case["labels"]),
            ),
            _ => log_loss(
                &strings(&case["y_true"]),
                &probabilities,
                &strings(&case["labels"]),
            ),
        };
        check.close(
            name,
            "log_loss",
            loss.expect("valid input"),
            &case["log_loss"],
        );
    }
    check.finish("log loss");
}

#[test]
fn regression_metrics_match_sklearn() {
    let mut check = Checker::default();
    for case in cases("regression") {
        let name = case["name"].as_str().expect("name");
        let m = regression_metrics(
            &floats_from_bits(&case["y_true"]),
            &floats_from_bits(&case["y_pred"]),
        )
        .expect("valid input")
        .expect("non-empty");
        check.close(name, "mae", Some(m.mae), &case["mae"]);
        check.close(name, "mse", Some(m.mse), &case["mse"]);
        check.close(name, "rmse", Some(m.rmse), &case["rmse"]);
        check.close(name, "r2", m.r2, &case["r2"]);
        check.close(name, "mape", Some(m.mape), &case["mape"]);
    }
    check.finish("regression");
}

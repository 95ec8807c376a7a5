"""Reference values for inferlog-stats, computed with NumPy, SciPy and scikit-learn.

Builds fixed data sets from a seeded NumPy generator and prints one JSON document with the data
and the reference results; tests/main.rs recomputes everything in Rust and compares. Sample
values are written as the bit patterns of their float64 (unsigned integers) so that the Rust
side reads exactly the numbers Python used; results are plain JSON numbers, with `null` for an
undefined result (NaN in Python) and the string "inf" for +infinity.

Run with the interpreter of scripts/test's virtualenv (numpy, scipy, scikit-learn pinned in
scripts/requirements-test.txt).
"""

import json
import math
import sys
import warnings

import numpy as np
import scipy
import sklearn
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn import metrics

rng = np.random.default_rng(20240611)


def bits(values):
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64).tolist()


def num(x):
    """A result as JSON: None for NaN, "inf" for +infinity."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def nums(values):
    return [num(v) for v in values]


# ---------------------------------------------------------------------------------------------
# Numeric drift (Evidently's definitions, with SciPy for the building blocks)

def psi(p, q):
    p = np.where(p == 0, 1e-4, p)
    q = np.where(q == 0, 1e-4, q)
    return float(np.sum((p - q) * np.log(p / q)))


def ks_2samp_with_method(ref, cur):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stats.ks_2samp(ref, cur)
    fell_back = any("Exact calculation unsuccessful" in str(w.message) for w in caught)
    exact = max(len(ref), len(cur)) <= 10000 and not fell_back
    return result, "exact" if exact else "asymptotic"


def numeric_case(name, ref, cur):
    ref = np.asarray(ref, dtype=np.float64)
    cur = np.asarray(cur, dtype=np.float64)
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    ref_counts = np.histogram(ref, edges)[0]
    cur_counts = np.histogram(cur, edges)[0]
    p = ref_counts / len(ref)
    q = cur_counts / len(cur)
    ks, method = ks_2samp_with_method(ref, cur)
    wasserstein = stats.wasserstein_distance(ref, cur)
    return {
        "name": name,
        "reference": bits(ref),
        "current": bits(cur),
        "edges": nums(edges),
        "reference_counts": ref_counts.tolist(),
        "current_counts": cur_counts.tolist(),
        "psi": num(psi(p, q)),
        "jensen_shannon": num(jensenshannon(p, q, base=2)),
        "wasserstein": num(wasserstein),
        "wasserstein_normalized": num(wasserstein / max(np.std(ref), 0.001)),
        "ks_statistic": num(ks.statistic),
        "ks_p_value": num(ks.pvalue),
        "ks_method": method,
    }


def numeric_cases():
    normal = rng.normal
    cases = [
        ("normal_shifted_scaled", normal(0, 1, 1000), normal(0.3, 1.2, 800)),
        ("normal_same_equal_sizes", normal(0, 1, 500), normal(0, 1, 500)),
        ("uniform_shifted", rng.uniform(0, 1, 300), rng.uniform(0.2, 1.1, 450)),
        ("integers_with_ties", rng.integers(0, 5, 400), rng.integers(0, 6, 350)),
        ("integers_equal_sizes_with_ties", rng.integers(0, 10, 200), rng.integers(1, 10, 200)),
        ("constant_both", np.full(50, 3.0), np.full(40, 3.0)),
        ("constant_reference", np.full(100, 2.0), normal(2, 0.5, 100)),
        ("constant_both_different", np.full(30, 1.0), np.full(20, 4.0)),
        ("unequal_sizes_large_lcm", normal(0, 1, 37), normal(0.2, 1, 5003)),
        ("exact_at_the_size_limit", normal(0, 1, 10000), normal(0.05, 1, 9000)),
        ("equal_sizes_tiny_d_falls_back", [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 6.0]),
        ("asymptotic_20000_same", normal(0, 1, 20000), normal(0, 1, 20000)),
        ("asymptotic_20000_small_shift", normal(0, 1, 20000), normal(0.03, 1, 15000)),
        ("asymptotic_20000_shift", normal(0, 1, 20000), normal(0.1, 1, 20000)),
        ("asymptotic_20000_large_shift", normal(0, 1, 20000), normal(1.0, 1, 20000)),
        ("asymptotic_small_effective_n", normal(0, 1, 12000), normal(0.3, 1, 60)),
        ("asymptotic_small_effective_n_close", normal(0, 1, 12000), normal(0.05, 1, 130)),
        ("asymptotic_one_value", normal(0, 1, 10001), [0.5]),
    ]
    # Tiny samples for the exact distribution: every size pair up to 5, with ties.
    for n1 in range(1, 6):
        for n2 in range(1, 6):
            ref = np.round(normal(0, 1, n1), 1)
            cur = np.round(normal(0.5, 1, n2), 1)
            cases.append((f"tiny_{n1}_{n2}", ref, cur))
    cases.append(("tiny_disjoint_2_2", [0.0, 1.0], [2.0, 3.0]))
    cases.append(("tiny_identical_3_3", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]))
    return [numeric_case(*case) for case in cases]


def kstwo_cases():
    """kstwo.sf over every branch of SciPy's _kolmogn."""
    out = []
    for n in [1, 2, 3, 5, 10, 20, 50, 100, 140, 141, 500, 1000, 5000, 10000, 100000, 100001,
              500000, 2000000]:
        xs = [c / math.sqrt(n) for c in (0.2, 0.5, 0.8, 0.87, 1.0, 1.2, 1.48, 1.5, 2.0, 3.0,
                                         5.0, 10.0, 19.0, 25.0)]
        xs += [0.3, 0.45, 0.5, 0.6, 0.9, 0.99, 0.6 / n, 1.0 / n, 1.5 / n, (n - 1) / n, 1e-9]
        for x in xs:
            if 0 < x < 1:
                out.append({"n": n, "x": x, "sf": num(stats.kstwo.sf(x, n))})
    return out


# ---------------------------------------------------------------------------------------------
# Categorical drift

def categorical_case(name, ref_counts, cur_counts):
    keys = sorted(k for k in set(ref_counts) | set(cur_counts)
                  if ref_counts.get(k, 0) + cur_counts.get(k, 0) > 0)
    ref = np.array([ref_counts.get(k, 0) for k in keys], dtype=np.float64)
    cur = np.array([cur_counts.get(k, 0) for k in keys], dtype=np.float64)
    p = ref / ref.sum()
    q = cur / cur.sum()
    if len(keys) >= 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            chi = stats.chisquare(f_obs=cur, f_exp=p * cur.sum())
        chi_stat, chi_p = num(chi.statistic), num(chi.pvalue)
    else:
        chi_stat, chi_p = None, None
    return {
        "name": name,
        "reference": {str(k): int(v) for k, v in ref_counts.items()},
        "current": {str(k): int(v) for k, v in cur_counts.items()},
        "psi": num(psi(p, q)),
        "jensen_shannon": num(jensenshannon(p, q, base=2)),
        "l_infinity": num(np.max(np.abs(p - q))),
        "chi_square_statistic": chi_stat,
        "chi_square_p_value": chi_p,
    }


def draw_counts(categories, probabilities, size):
    values = rng.choice(categories, p=probabilities, size=size)
    unique, counts = np.unique(values, return_counts=True)
    return {str(u): int(c) for u, c in zip(unique, counts)}


def categorical_cases():
    abcd = ["a", "b", "c", "d"]
    many = [f"c{i:02d}" for i in range(30)]
    weights = rng.uniform(0.5, 2.0, 30)
    return [
        categorical_case("shifted", draw_counts(abcd, [0.4, 0.3, 0.2, 0.1], 1000),
                         draw_counts(abcd, [0.3, 0.3, 0.25, 0.15], 700)),
        categorical_case("same", draw_counts(abcd, [0.25] * 4, 2000), draw_counts(abcd, [0.25] * 4, 2000)),
        categorical_case("unseen_in_reference", {"a": 50, "b": 30, "c": 20},
                         {"a": 40, "b": 30, "c": 20, "e": 3}),
        categorical_case("missing_in_current", {"a": 50, "b": 30, "c": 20}, {"a": 60, "b": 40}),
        categorical_case("single_category", {"only": 10}, {"only": 4}),
        categorical_case("many_categories_mild_drift", draw_counts(many, weights / weights.sum(), 50000),
                         draw_counts(many, weights ** 1.05 / (weights ** 1.05).sum(), 5000)),
        categorical_case("many_categories_strong_drift", draw_counts(many, weights / weights.sum(), 50000),
                         draw_counts(many, weights ** 1.2 / (weights ** 1.2).sum(), 40000)),
        categorical_case("many_categories_overwhelming_drift", draw_counts(many, weights / weights.sum(), 50000),
                         draw_counts(many, weights ** 2 / (weights ** 2).sum(), 40000)),
    ]


# ---------------------------------------------------------------------------------------------
# Summaries

def summary_case(name, values, missing):
    x = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(x, bins="sturges")
    return {
        "name": name,
        "values": bits(x),
        "missing": missing,
        "count": len(x),
        "sum": num(np.sum(x)),
        "mean": num(np.mean(x)),
        "std_population": num(np.std(x)),
        "std_sample": num(np.std(x, ddof=1)) if len(x) > 1 else None,
        "min": num(np.min(x)),
        "max": num(np.max(x)),
        "quantiles": nums(np.quantile(x, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])),
        "edges": nums(edges),
        "counts": counts.tolist(),
    }


def summary_cases():
    return [
        summary_case("normal", rng.normal(10, 3, 1000), 13),
        summary_case("uniform", rng.uniform(-5, 5, 777), 0),
        summary_case("integers_with_ties", rng.integers(-3, 4, 501), 2),
        summary_case("lognormal_skewed", rng.lognormal(0, 1.5, 2000), 0),
        summary_case("constant", np.full(25, 7.5), 5),
        summary_case("single_value", [42.0], 99),
        summary_case("two_values", [1.0, 2.0], 0),
    ]


# ---------------------------------------------------------------------------------------------
# Model quality

def classification_case(name, y_true, y_pred, kind):
    labels = sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0)
    averaged = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0)
        averaged[average] = nums([p, r, f])
    return {
        "name": name,
        "kind": kind,
        "y_true": list(y_true),
        "y_pred": list(y_pred),
        "labels": labels,
        "accuracy": num(metrics.accuracy_score(y_true, y_pred)),
        "precision": nums(precision),
        "recall": nums(recall),
        "f1": nums(f1),
        "support": [int(s) for s in support],
        "macro": averaged["macro"],
        "weighted": averaged["weighted"],
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def flip(y, labels, rate):
    y = list(y)
    for i in range(len(y)):
        if rng.uniform() < rate:
            y[i] = labels[int(rng.integers(0, len(labels)))]
    return y


def classification_cases():
    binary_true = [int(v) for v in rng.integers(0, 2, 300)]
    animals = ["cat", "dog", "emu"]
    three_true = [animals[int(i)] for i in rng.choice(3, p=[0.5, 0.3, 0.2], size=400)]
    return [
        classification_case("binary_ints", binary_true, flip(binary_true, [0, 1], 0.3), "int"),
        classification_case("three_classes_strings", three_true, flip(three_true, animals, 0.4), "str"),
        classification_case("single_class_in_truth", ["a"] * 20, ["a"] * 15 + ["b"] * 5, "str"),
        classification_case("class_never_predicted", ["x", "y", "z", "x", "y", "z"],
                            ["x", "x", "x", "x", "y", "y"], "str"),
        classification_case("perfect", [3, 1, 2, 3], [3, 1, 2, 3], "int"),
    ]


def roc_case(name, y_true, scores):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            auc = num(metrics.roc_auc_score(y_true, scores))
        except ValueError:
            auc = None
    return {"name": name, "y_true": [bool(t) for t in y_true], "scores": bits(scores), "auc": auc}


def roc_cases():
    y = rng.integers(0, 2, 500).astype(bool)
    continuous = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return [
        roc_case("continuous_scores", y, continuous),
        roc_case("scores_with_ties", y, np.round(continuous, 1)),
        roc_case("all_scores_tied", y, np.full(len(y), 0.5)),
        roc_case("perfect_separation", [False, False, True, True], np.array([0.1, 0.2, 0.8, 0.9])),
        roc_case("single_class", [True] * 10, rng.uniform(0, 1, 10)),
    ]


def log_loss_case(name, y_true, proba, labels, kind):
    proba = np.asarray(proba, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = metrics.log_loss(y_true, proba, labels=labels)
    return {"name": name, "kind": kind, "y_true": list(y_true), "probabilities": bits(proba.ravel()),
            "labels": labels, "log_loss": num(loss)}


def log_loss_cases():
    y = [int(v) for v in rng.integers(0, 2, 300)]
    s = np.clip(rng.normal(0.3 + 0.4 * np.array(y), 0.2), 0, 1)
    animals = ["cat", "dog", "emu"]
    three = [animals[int(i)] for i in rng.integers(0, 3, 200)]
    dirichlet = rng.dirichlet([2, 1, 1], size=200)
    return [
        log_loss_case("binary_with_exact_zeros_and_ones", y, np.column_stack([1 - s, s]), [0, 1], "int"),
        log_loss_case("three_classes", three, dirichlet, animals, "str"),
        log_loss_case("single_class_with_declared_labels", ["a"] * 5,
                      [[0.9, 0.1], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.7, 0.3]], ["a", "b"], "str"),
        log_loss_case("rows_not_summing_to_one", [0, 1, 1], [[0.5, 0.4], [0.2, 0.7], [0.3, 0.3]],
                      [0, 1], "int"),
    ]


def regression_case(name, y_true, y_pred):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r2 = metrics.r2_score(y_true, y_pred)
    return {
        "name": name,
        "y_true": bits(y_true),
        "y_pred": bits(y_pred),
        "mae": num(metrics.mean_absolute_error(y_true, y_pred)),
        "mse": num(metrics.mean_squared_error(y_true, y_pred)),
        "rmse": num(metrics.root_mean_squared_error(y_true, y_pred)),
        "r2": num(r2),
        "mape": num(metrics.mean_absolute_percentage_error(y_true, y_pred)),
    }


def regression_cases():
    y = rng.normal(50, 10, 400)
    with_zeros = np.concatenate([np.zeros(5), rng.uniform(1, 10, 45)])
    return [
        regression_case("noisy", y, y + rng.normal(0, 3, 400)),
        regression_case("zeros_in_truth", with_zeros, with_zeros + rng.normal(0, 0.5, 50)),
        regression_case("constant_truth_perfect", np.full(10, 4.0), np.full(10, 4.0)),
        regression_case("constant_truth_imperfect", np.full(10, 4.0), np.linspace(3, 5, 10)),
        regression_case("single_sample", [2.0], [2.5]),
        regression_case("worse_than_the_mean", [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]),
    ]


json.dump({
    "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__},
    "numeric": numeric_cases(),
    "kstwo": kstwo_cases(),
    "categorical": categorical_cases(),
    "summaries": summary_cases(),
    "classification": classification_cases(),
    "roc_auc": roc_cases(),
    "log_loss": log_loss_cases(),
    "regression": regression_cases(),
}, sys.stdout)

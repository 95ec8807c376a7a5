//! Monitoring runs that share tables: runs of several window lengths and slice sets.

use crate::monitoring::{crate_time_ms, inferlog};
use serde_json::Value;

/// Synthetic iris exchanges in `data_dir` (`generate` with `args`), unpacked.
fn generate_and_unpack(data_dir: &str, args: &[&str]) {
    let generate = [&["generate", "iris", "--data-dir", data_dir][..], args].concat();
    let (ok, _, err) = inferlog(&generate);
    assert!(ok, "{err}");
    let (ok, _, err) = inferlog(&["unpack", "iris", "--data-dir", data_dir]);
    assert!(ok, "{err}");
}

#[test]
fn runs_of_other_window_lengths_and_slices_keep_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    generate_and_unpack(dd, &["--rows", "2000", "--days", "1", "--rows-per-commit", "1000"]);
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from-table", "--data-dir", dd, "--since", "2000-01-01 00:00"]);
    assert!(ok, "{err}");
    let q = |sql: &str| -> Vec<Value> {
        let (ok, out, err) = inferlog(&["query", "--data-dir", dd, "--format", "json", sql]);
        assert!(ok, "{sql}: {err}");
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    // Four hourly windows, and one four-hour window over the same period.
    let until = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%d %H:00").to_string();
    let since = (crate_time_ms(&until) - 4 * 3_600_000) / 1000;
    let since = chrono::DateTime::from_timestamp(since, 0).unwrap().format("%Y-%m-%d %H:%M").to_string();
    let monitor = |window: &str, slice: Option<&str>| {
        let mut args = vec!["monitor", "iris", "--window", window, "--since", &since, "--until", &until, "--data-dir", dd];
        if let Some(slice) = slice {
            args.extend(["--slice", slice]);
        }
        let (ok, out, err) = inferlog(&args);
        assert!(ok, "{out}{err}");
    };
    let row_counts = || {
        q("SELECT window_seconds, coalesce(slice_key, '') AS slice, coalesce(slice_value, '') AS value, count(*) AS windows, \
           sum(value) AS n FROM iris_profile_metrics WHERE metric = 'row_count' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    };
    monitor("1h", Some("model_version"));
    let hourly = row_counts();
    assert!(hourly.len() >= 2, "the whole windows and the model_version slices: {hourly:?}");
    assert!(hourly.iter().all(|r| r["window_seconds"] == 3600), "{hourly:?}");
    assert_eq!((hourly[0]["slice"].as_str(), hourly[0]["windows"].as_i64()), (Some(""), Some(4)), "{hourly:?}");
    // A longer window over the same period, without slices, adds its rows and keeps the others.
    monitor("4h", None);
    let both = row_counts();
    assert_eq!(both.len(), hourly.len() + 1, "{both:?}");
    assert_eq!(&both[..hourly.len()], &hourly[..], "the hourly rows are untouched: {both:?}");
    let long = &both[hourly.len()];
    assert_eq!((long["window_seconds"].as_i64(), long["windows"].as_i64()), (Some(14_400), Some(1)), "{both:?}");
    assert_eq!(long["n"], hourly[0]["n"], "the same rows in one window: {both:?}");
    // Re-running the hourly windows without the slice replaces only the whole-window hourly rows.
    monitor("1h", None);
    assert_eq!(row_counts(), both);
}

#[test]
fn an_empty_window_is_not_a_missing_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    generate_and_unpack(dd, &["--rows", "500", "--days", "1"]);
    // A baseline with a feature the unpacked table has no column for.
    let mut csv = String::from("sepal_length,leaf_count\n");
    for i in 0..50 {
        csv.push_str(&format!("{:.1},{}\n", 5.0 + (i % 5) as f64 / 10.0, i % 7));
    }
    let train = d.join("train.csv");
    std::fs::write(&train, csv).unwrap();
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--data-dir", dd]);
    assert!(ok, "{err}");
    let missing = |since: &str, until: &str| {
        let (ok, out, err) = inferlog(&["monitor", "iris", "--window", "1d", "--since", since, "--until", until, "--data-dir", dd]);
        assert!(ok, "{out}{err}");
        let (ok, out, err) = inferlog(&[
            "query", "--data-dir", dd, "--format", "csv",
            &format!("SELECT count(*) FROM iris_violations WHERE \"check\" = 'missing_column_check' AND window_start = TIMESTAMP '{since}:00Z'"),
        ]);
        assert!(ok, "{err}");
        out.lines().nth(1).unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(missing("2001-01-01 00:00", "2001-01-02 00:00"), 0, "a window without rows");
    // A window with rows that lack the column still is a violation.
    let since = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d %H:%M").to_string();
    let until = (chrono::Utc::now() + chrono::Duration::minutes(1)).format("%Y-%m-%d %H:%M").to_string();
    assert_eq!(missing(&since, &until), 1, "rows without leaf_count");
}

#[test]
fn integer_classes_are_compared_as_categories() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    // The iris model's own output: classes 0, 1, 2 as numbers, next to a count of many values.
    let mut csv = String::from("sepal_length,visits,species,predicted\n");
    for i in 0..150 {
        csv.push_str(&format!("{:.1},{},{},{}\n", 5.0 + (i % 9) as f64 / 10.0, i % 40, i % 3, (i + i / 50) % 3));
    }
    let train = d.join("train.csv");
    std::fs::write(&train, csv).unwrap();
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--label", "species", "--prediction", "predicted", "--data-dir", dd]);
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_slice(&std::fs::read(d.join("monitoring/iris/constraints.json")).unwrap()).unwrap();
    let feature = |name: &str| doc["features"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap().clone();
    for class_column in ["label", "prediction"] {
        let f = feature(class_column);
        assert_eq!((f["inferred_type"].as_str(), f["drift"]["metric"].as_str()), (Some("String"), Some("chi_squared_p_value")), "{f}");
        assert_eq!(f["domain"], serde_json::json!(["0", "1", "2"]), "{f}");
    }
    let visits = feature("visits");
    assert_eq!((visits["inferred_type"].as_str(), visits["drift"]["metric"].as_str()), (Some("Integral"), Some("ks_p_value")), "{visits}");
}

#[test]
fn range_violations_name_the_bound_crossed_and_the_summary_names_slices() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    generate_and_unpack(dd, &["--rows", "500", "--days", "1"]);
    // Sepal lengths between 5.0 and 5.4 in the baseline; the traffic has both shorter and longer.
    let mut csv = String::from("sepal_length\n");
    for i in 0..50 {
        csv.push_str(&format!("{:.1}\n", 5.0 + (i % 5) as f64 / 10.0));
    }
    let train = d.join("train.csv");
    std::fs::write(&train, csv).unwrap();
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--data-dir", dd]);
    assert!(ok, "{err}");
    let since = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d %H:%M").to_string();
    let until = (chrono::Utc::now() + chrono::Duration::minutes(1)).format("%Y-%m-%d %H:%M").to_string();
    let (ok, out, err) = inferlog(&["monitor", "iris", "--window", "1d", "--since", &since, "--until", &until, "--slice", "model_version", "--data-dir", dd]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("over their threshold against the baseline, counting every metric and slice"), "{out}");
    let range = out.lines().find(|l| l.trim_start().starts_with("range_check sepal_length:")).unwrap_or_else(|| panic!("{out}"));
    assert!(range.contains("values below the baseline's min 5 (lowest ") && range.contains("values above the baseline's max 5.4 (highest "), "{range}");
    let sliced = out.lines().find(|l| l.contains(" [model_version=")).unwrap_or_else(|| panic!("a slice is named by its expression: {out}"));
    assert!(!sliced.contains("[model_version=]"), "{sliced}");
}

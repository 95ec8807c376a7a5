//! Baselines through the real binary: from training data and from a window of the endpoint's
//! own unpacked table.

use crate::support::bin;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

pub(crate) fn inferlog(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run inferlog");
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn feature<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["features"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no {name} in {doc}"))
}

#[test]
fn baseline_from_training_data_summarizes_and_suggests_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 150 rows, deterministic; one missing petal width.
    let mut csv = String::from("sepal length (cm),sepal width (cm),petal length (cm),petal width (cm),species\n");
    let species = ["setosa", "versicolor", "virginica"];
    let mut lengths = Vec::new();
    for i in 0..150 {
        let length = 4.3 + (i * 7 % 36) as f64 / 10.0;
        lengths.push(length);
        let width = if i == 17 { String::new() } else { format!("{:.1}", 0.1 + (i % 25) as f64 / 10.0) };
        csv.push_str(&format!("{length:.1},{:.1},{:.1},{width},{}\n", 2.0 + (i % 24) as f64 / 10.0, 1.0 + (i % 59) as f64 / 10.0, species[i % 3]));
    }
    let train = d.join("train.csv");
    std::fs::write(&train, csv).unwrap();
    let dd = d.to_str().unwrap();
    let (ok, out, err) = inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--label", "species", "--data-dir", dd]);
    assert!(ok, "{err}");
    assert!(out.contains("baseline of 5 columns from 150 rows"), "{out}");

    let base = d.join("monitoring/iris");
    let stats = read_json(&base.join("statistics.json"));
    assert_eq!(stats["item_count"], 150);
    let sepal = feature(&stats, "sepal_length_cm");
    assert_eq!(sepal["source_name"], "sepal length (cm)");
    assert_eq!(sepal["role"], "feature");
    assert_eq!(sepal["inferred_type"], "Fractional");
    let rounded: Vec<f64> = lengths.iter().map(|x| (x * 10.0).round() / 10.0).collect();
    let mean = rounded.iter().sum::<f64>() / 150.0;
    let got_mean = sepal["numerical_statistics"]["mean"].as_f64().unwrap();
    assert!((got_mean - mean).abs() < 1e-12, "{got_mean} vs {mean}");
    let mut sorted = rounded.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sepal["numerical_statistics"]["min"].as_f64().unwrap(), sorted[0]);
    assert_eq!(sepal["numerical_statistics"]["quantiles"]["p50"].as_f64().unwrap(), (sorted[74] + sorted[75]) / 2.0);
    let counts: u64 = sepal["numerical_statistics"]["histogram"]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(counts, 150);
    let width = feature(&stats, "petal_width_cm");
    assert_eq!((width["num_present"].as_u64(), width["num_missing"].as_u64()), (Some(149), Some(1)));
    let label = feature(&stats, "label");
    assert_eq!((label["role"].as_str(), label["source_name"].as_str()), (Some("label"), Some("species")));
    assert_eq!(label["string_statistics"]["value_counts"]["setosa"], 50);
    assert_eq!(label["string_statistics"]["distinct"], 3);

    let constraints = read_json(&base.join("constraints.json"));
    assert_eq!(constraints["monitoring_config"]["psi"], 0.2);
    let c = feature(&constraints, "petal_width_cm");
    assert!((c["completeness"].as_f64().unwrap() - 149.0 / 150.0).abs() < 1e-12);
    assert_eq!(c["is_non_negative"], true);
    assert_eq!(c["drift"]["metric"], "ks_p_value", "150 reference rows: a test decides");
    assert_eq!(c["drift"]["threshold"], 0.05);
    let l = feature(&constraints, "label");
    assert_eq!(l["domain"], serde_json::json!(["setosa", "versicolor", "virginica"]));
    assert_eq!(l["drift"]["metric"], "chi_squared_p_value");

    let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(base.join("reference.parquet")).unwrap(),
    )
    .unwrap();
    let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm", "label"]);
    assert_eq!(reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum::<usize>(), 150);

    // Clear errors.
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--label", "kind", "--data-dir", dd]);
    assert!(!ok && err.contains("no column `kind`") && err.contains("species"), "{err}");
    let (ok, _, err) = inferlog(&["baseline", "iris", "--data-dir", dd]);
    assert!(!ok && err.contains("--from"), "{err}");
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from", d.join("nope.csv").to_str().unwrap(), "--data-dir", dd]);
    assert!(!ok && err.contains("no file"), "{err}");
}

#[test]
fn baseline_from_a_window_of_the_unpacked_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    let (ok, _, err) = inferlog(&["generate", "iris", "--data-dir", dd, "--rows", "3000", "--days", "3", "--rows-per-commit", "1000"]);
    assert!(ok, "{err}");
    let (ok, _, err) = inferlog(&["unpack", "iris", "--data-dir", dd]);
    assert!(ok, "{err}");
    let since = (chrono::Utc::now() - chrono::Duration::days(2)).format("%Y-%m-%d %H:%M").to_string();
    let (ok, out, err) = inferlog(&["baseline", "iris", "--from-table", "--since", &since, "--data-dir", dd]);
    assert!(ok, "{err}");
    let (ok, expected, err) = inferlog(&[
        "query", "--data-dir", dd, "--format", "csv",
        &format!("SELECT count(*) FROM iris_unpacked WHERE row_index IS NOT NULL AND timestamp_ms >= {}",
            crate_time_ms(&since)),
    ]);
    assert!(ok, "{err}");
    let expected: u64 = expected.lines().nth(1).unwrap().parse().unwrap();
    assert!(out.contains(&format!("from {expected} rows")), "{out} / {expected}");
    let stats = read_json(&d.join("monitoring/iris/statistics.json"));
    assert_eq!(stats["item_count"], expected);
    assert!(stats["source"].as_str().unwrap().starts_with("iris_unpacked ["));
    let prediction = feature(&stats, "prediction");
    assert_eq!((prediction["role"].as_str(), prediction["inferred_type"].as_str()), (Some("prediction"), Some("String")));
    let constraints = read_json(&d.join("monitoring/iris/constraints.json"));
    assert_eq!(feature(&constraints, "sepal_length")["drift"]["metric"], "normalized_wasserstein");
    assert_eq!(feature(&constraints, "prediction")["drift"]["metric"], "jensen_shannon");
    assert!(constraints["features"].as_array().unwrap().iter().all(|f| f["name"] != "request_id" && f["name"] != "status_code"));

    let (ok, _, err) = inferlog(&["baseline", "iris", "--from-table", "--since", "2001-01-01", "--until", "2001-01-02", "--data-dir", dd]);
    assert!(!ok && err.contains("no rows"), "{err}");
}

pub(crate) fn crate_time_ms(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap().and_utc().timestamp_millis()
}

#[test]
fn monitor_writes_quality_drift_and_violations_per_window_and_slice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    // Traffic over the last 3 days, unpacked.
    let (ok, _, err) = inferlog(&["generate", "iris", "--data-dir", dd, "--rows", "3000", "--days", "3", "--rows-per-commit", "1000"]);
    assert!(ok, "{err}");
    let (ok, _, err) = inferlog(&["unpack", "iris", "--data-dir", dd]);
    assert!(ok, "{err}");
    // A baseline whose sepal lengths were all between 5.0 and 5.4: today's traffic drifts.
    let mut csv = String::from("sepal_length,sepal_width,petal_length,petal_width,species\n");
    for i in 0..200 {
        csv.push_str(&format!("{:.1},{:.1},{:.1},{:.1},{}\n", 5.0 + (i % 5) as f64 / 10.0, 0.5 + (i % 60) as f64 / 10.0,
            0.5 + (i * 7 % 60) as f64 / 10.0, 0.5 + (i * 11 % 60) as f64 / 10.0, ["setosa", "versicolor", "virginica"][i % 3]));
    }
    let train = d.join("train.csv");
    std::fs::write(&train, csv).unwrap();
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--label", "species", "--data-dir", dd]);
    assert!(ok, "{err}");
    // Labels for 100 exchanges: the model was right on all of them.
    let labels = d.join("labels.csv");
    let (ok, _, err) = inferlog(&[
        "query", "--data-dir", dd, "--output", labels.to_str().unwrap(),
        "SELECT request_id, row_index, prediction AS truth FROM iris_unpacked WHERE row_index = 0 ORDER BY request_id DESC LIMIT 100",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = inferlog(&["labels", "import", "iris", labels.to_str().unwrap(), "--label", "truth", "--row-index", "row_index", "--data-dir", dd]);
    assert!(ok, "{err}");

    // Two windows of a day ending a minute from now, whatever the time of day: both hold
    // about 1,000 exchanges.
    let end = chrono::Utc::now() + chrono::Duration::minutes(1);
    let since = (end - chrono::Duration::days(2)).format("%Y-%m-%d %H:%M").to_string();
    let until = end.format("%Y-%m-%d %H:%M").to_string();
    let args = ["monitor", "iris", "--window", "1d", "--since", &since, "--until", &until, "--slice", "model_version", "--data-dir", dd];
    let (ok, out, err) = inferlog(&args);
    assert!(ok, "{err}");
    assert!(out.starts_with("2 windows"), "{out}");

    let q = |sql: &str| -> Vec<Value> {
        let (ok, out, err) = inferlog(&["query", "--data-dir", dd, "--format", "json", sql]);
        assert!(ok, "{sql}: {err}");
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let since_ms = crate_time_ms(&since);
    let until_ms = crate_time_ms(&until);
    let expected = q(&format!(
        "SELECT count(*) AS n FROM iris_unpacked WHERE row_index IS NOT NULL AND timestamp_ms >= {since_ms} AND timestamp_ms < {until_ms}"
    ))[0]["n"].as_i64().unwrap();
    let counted = q("SELECT sum(value) AS n FROM iris_profile_metrics WHERE metric = 'row_count' AND slice_key IS NULL")[0]["n"].as_f64().unwrap();
    assert_eq!(counted as i64, expected);
    let by_version = q("SELECT slice_value, sum(value) AS n FROM iris_profile_metrics WHERE metric = 'row_count' AND slice_key = 'model_version' GROUP BY 1 ORDER BY 1");
    assert_eq!(by_version.len(), 2, "{by_version:?}");
    assert_eq!((by_version[0]["n"].as_f64().unwrap() + by_version[1]["n"].as_f64().unwrap()) as i64, expected);

    // Drift of sepal_length against the narrow baseline, decided by the KS p-value (200 rows).
    let drift = q("SELECT compared_to, threshold, drifted, value FROM iris_drift_metrics \
                   WHERE column_name = 'sepal_length' AND metric = 'ks_p_value' AND slice_key IS NULL ORDER BY window_start, compared_to");
    // The first window is compared with the day before --since too.
    assert_eq!(drift.len(), 4, "baseline and previous for both windows: {drift:?}");
    assert!(drift.iter().filter(|r| r["compared_to"] == "baseline").all(|r| r["drifted"] == true && r["threshold"] == 0.05));
    assert!(drift.iter().filter(|r| r["compared_to"] == "previous").all(|r| r["drifted"] == false), "{drift:?}");
    let violations = q("SELECT check, count(*) AS n FROM iris_violations WHERE column_name = 'sepal_length' AND slice_key IS NULL GROUP BY 1 ORDER BY 1");
    let checks: Vec<&str> = violations.iter().map(|v| v["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["baseline_drift_check", "range_check"]);
    // Model quality from the labels.
    let quality = q("SELECT sum(value) FILTER (WHERE metric = 'labeled_count') AS n, \
                     min(value) FILTER (WHERE metric = 'accuracy') AS worst FROM iris_profile_metrics WHERE slice_key IS NULL");
    assert_eq!((quality[0]["n"].as_f64(), quality[0]["worst"].as_f64()), (Some(100.0), Some(1.0)));

    // Running the same windows again replaces their rows.
    let before = q("SELECT count(*) AS n FROM iris_drift_metrics")[0]["n"].as_i64().unwrap();
    let (ok, _, err) = inferlog(&args);
    assert!(ok, "{err}");
    assert_eq!(q("SELECT count(*) AS n FROM iris_drift_metrics")[0]["n"].as_i64().unwrap(), before);

    // A window without traffic: a row count of 0, drift values null (never "drifted"), no
    // violations, and no comparison with the previous window's data.
    let empty_since = (end + chrono::Duration::days(30)).format("%Y-%m-%d").to_string();
    let empty_until = (end + chrono::Duration::days(31)).format("%Y-%m-%d").to_string();
    let (ok, out, err) = inferlog(&["monitor", "iris", "--window", "1d", "--since", &empty_since, "--until", &empty_until, "--data-dir", dd]);
    assert!(ok, "{err}");
    assert!(out.contains("0 violations"), "{out}");
    let empty = q(&format!(
        "SELECT metric, value, drifted FROM iris_drift_metrics WHERE window_start = TIMESTAMP '{empty_since}T00:00:00Z' AND compared_to = 'baseline'"));
    assert!(!empty.is_empty() && empty.iter().all(|r| r["value"].is_null() && r["drifted"] == false), "{empty:?}");
    let rows = q(&format!("SELECT value FROM iris_profile_metrics WHERE window_start = TIMESTAMP '{empty_since}T00:00:00Z' AND metric = 'row_count'"));
    assert_eq!(rows[0]["value"], 0.0);

    let (ok, _, err) = inferlog(&["monitor", "nope", "--data-dir", dd]);
    assert!(!ok && err.contains("no baseline for `nope`"), "{err}");
    let (ok, _, err) = inferlog(&["report", "nope", "--data-dir", dd]);
    assert!(!ok && err.contains("no baseline for `nope`"), "{err}");
    std::fs::create_dir_all(d.join("monitoring/other")).unwrap();
    std::fs::copy(d.join("monitoring/iris/constraints.json"), d.join("monitoring/other/constraints.json")).unwrap();
    let (ok, _, err) = inferlog(&["monitor", "other", "--data-dir", dd]);
    assert!(!ok && err.contains("no table other_unpacked"), "{err}");
    let (ok, _, err) = inferlog(&["monitor", "iris", "--backfill", "--since", "2026-01-01", "--data-dir", dd]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = inferlog(&["monitor", "iris", "--window", "soon", "--data-dir", dd]);
    assert!(!ok && err.contains("not a duration"), "{err}");
}

/// A webhook receiver that answers 503 to the first delivery of each alert and 200 after, and
/// keeps every body it was sent.
pub(crate) struct AlertReceiver {
    pub(crate) url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl AlertReceiver {
    pub(crate) fn start() -> AlertReceiver {
        use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
        type Received = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
        async fn hook(State(received): State<Received>, Json(alert): Json<Value>) -> StatusCode {
            let mut received = received.lock().unwrap();
            let first = !received.iter().any(|a| a["alert_id"] == alert["alert_id"]);
            received.push(alert);
            if first { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let received = Received::default();
        let app = Router::new().route("/hook", post(hook)).with_state(received.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        AlertReceiver { url, received, _runtime: runtime }
    }

    pub(crate) fn alerts(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

/// The built-in iris model on a free port.
pub(crate) struct IrisModel(std::process::Child, pub(crate) String);

impl IrisModel {
    pub(crate) fn start() -> IrisModel {
        let port = crate::support::free_port();
        let child = Command::new(bin())
            .args(["iris-model", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "iris model did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        IrisModel(child, format!("http://127.0.0.1:{port}"))
    }
}

impl Drop for IrisModel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A baseline of iris training data whose sepal lengths were all 5.0 to 5.4.
fn narrow_iris_baseline(d: &Path) {
    let mut csv = String::from("sepal length (cm),sepal width (cm),petal length (cm),petal width (cm),species\n");
    for i in 0..150 {
        csv.push_str(&format!("{:.1},{:.1},{:.1},{:.1},{}\n", 5.0 + (i % 5) as f64 / 10.0, 2.0 + (i % 20) as f64 / 10.0,
            1.0 + (i * 7 % 60) as f64 / 10.0, 0.1 + (i * 11 % 24) as f64 / 10.0, ["setosa", "versicolor", "virginica"][i % 3]));
    }
    let train = d.join("train.csv");
    std::fs::write(&train, csv).unwrap();
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--label", "species", "--data-dir", d.to_str().unwrap()]);
    assert!(ok, "{err}");
}

#[test]
fn serve_monitors_on_schedule_alerts_a_webhook_and_runs_on_demand() {
    use crate::support::{client, query, Gateway};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = IrisModel::start();
    let receiver = AlertReceiver::start();
    narrow_iris_baseline(d);
    let toml = format!(
        "commit_interval_ms = 200\nunpack_interval_ms = 200\nupstream_timeout_ms = 2000\n[[endpoints]]\nname = \"iris\"\nupstream = \"{}\"\nunpack = true\n\
         [endpoints.monitor]\nschedule = \"1s\"\nwindow = \"2s\"\nwebhook_url = \"{}\"\nwebhook_backoff_ms = 100\n",
        model.1, receiver.url
    );
    let gateway = Gateway::start(d, &toml);
    // Sepal lengths of 6.0 to 7.9: every one out of the baseline's range, and drifted.
    let http = client();
    for i in 0..40 {
        let body = serde_json::json!({"dataframe_split": {
            "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
            "data": [[6.0 + (i % 20) as f64 / 10.0, 3.0, 1.5 + (i % 50) as f64 / 10.0, 0.2 + (i % 20) as f64 / 10.0]]}});
        let r = http.post(gateway.url("/endpoints/iris/invocations")).json(&body).send().unwrap();
        assert_eq!(r.status(), 200);
    }

    // Alerts arrive once their window has finished and settled (about 1.4 s here).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let delivered = |alerts: &[Value]| -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        alerts.iter().filter(|a| !seen.insert(a["alert_id"].to_string())).cloned().collect()
    };
    while !delivered(&receiver.alerts()).iter().any(|a| a["check"] == "range_check") {
        assert!(std::time::Instant::now() < deadline, "no range_check alert: {:?}\n{}", receiver.alerts(), gateway.logs());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Later runs of the same windows never alert again.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let alerts = receiver.alerts();
    let mut attempts: std::collections::HashMap<String, Vec<&Value>> = std::collections::HashMap::new();
    for a in &alerts {
        attempts.entry(a["alert_id"].as_str().unwrap().to_string()).or_default().push(a);
    }
    for (id, tries) in &attempts {
        assert_eq!(tries.len(), 2, "{id}: retried once after the 503, then never sent again: {tries:?}");
        assert_eq!(tries[0], tries[1], "a retry sends the same alert");
    }
    let range = alerts.iter().find(|a| a["check"] == "range_check").unwrap();
    assert_eq!(range["endpoint"], "iris");
    assert_eq!(range["column_name"], "sepal_length_cm");
    assert_eq!(range["table"], "iris_violations");
    let crossed = range["description"].as_str().unwrap();
    assert!(crossed.contains("below the baseline's min") || crossed.contains("above the baseline's max"), "{range}");
    // The alert describes a row of iris_violations, and the log said it too.
    let rows = query(d, &format!(
        "SELECT count(*) AS n FROM iris_violations WHERE \"check\" = 'range_check' AND column_name = 'sepal_length_cm' \
         AND window_start = TIMESTAMP '{}'", range["window_start"].as_str().unwrap()));
    assert_eq!(rows[0]["n"], 1, "{range}");
    assert!(gateway.logs().contains("monitoring violation"), "{}", gateway.logs());

    // On demand: over every window so far, with the endpoint's defaults.
    let run = |body: &str, content_type: &str, endpoint: &str| {
        let r = http
            .post(gateway.url(&format!("/api/endpoints/{endpoint}/monitor")))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, body) = run(r#"{"backfill": true}"#, "application/json", "iris");
    assert_eq!(status, 200, "{body}");
    assert!(body["windows"].as_u64().unwrap() >= 1 && body["violation_count"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(body["tables"][2], "iris_violations");
    assert!(body["violations"].as_array().unwrap().iter().any(|v| v["check"] == "range_check"), "{body}");
    let (status, body) = run(r#"{"window": "soon"}"#, "application/json", "iris");
    assert_eq!((status, body["error_code"].as_str()), (400, Some("INVALID_PARAMETER_VALUE")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("window"), "{body}");
    let (status, body) = run(r#"{"backfill": true, "since": "2026-01-01"}"#, "application/json", "iris");
    assert_eq!(status, 400, "{body}");
    let (status, _) = run("{}", "application/json", "nope");
    assert_eq!(status, 404);
    let (status, _) = run("{}", "text/plain", "iris");
    assert_eq!(status, 415);

    // The report of what was monitored renders in a browser without errors.
    let report = d.join("report.html");
    let (ok, out, err) = inferlog(&["report", "iris", "--output", report.to_str().unwrap(), "--data-dir", d.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("violations) written to"), "{out}");
    check_report_in_chromium(&report, 5);
}

/// Opens the report in headless Chromium through the DevTools protocol: it must load with no
/// console message of level error or warning, no exception, no request other than the file
/// itself, and at least `min_charts` charts that were laid out and drawn.
fn check_report_in_chromium(report: &Path, min_charts: u64) {
    let python = std::env::var("INTEROP_PYTHON")
        .expect("INTEROP_PYTHON is not set: run the tests with scripts/test, which installs Chromium and websockets");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/check_report.py");
    let out = Command::new(python).args([script, report.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check_report.py failed: {stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(result["problems"], serde_json::json!([]), "{result}");
    assert_eq!(result["requests"], serde_json::json!([]), "the page fetched something: {result}");
    assert!(result["charts"].as_u64().unwrap() >= min_charts, "{result}");
    assert_eq!(result["charts"], result["drawn_charts"], "every chart has a size and shapes: {result}");
    assert_eq!(result["title"], "Inferlog report — iris");
}

#[test]
fn model_quality_uses_the_models_scores_for_roc_auc_and_log_loss() {
    use crate::support::{client, endpoint_toml, query, wait_rows, Gateway, Upstream};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    let upstream = Upstream::start();
    let mut gateway = Gateway::start(d, &format!("commit_interval_ms = 200\n{}", endpoint_toml("iris", &format!("{}/scored", upstream.url()), "")));
    // scikit-learn's roc_auc_score example: labels 0 0 1 1, scores 0.1 0.4 0.35 0.8.
    let cases = [(0, 0.1), (0, 0.4), (1, 0.35), (1, 0.8)];
    let http = client();
    for (i, (_, score)) in cases.iter().enumerate() {
        let body = serde_json::json!({"client_request_id": format!("c{i}"), "instances": [{"x": i as f64}]});
        // Like a Hugging Face pipeline: the predicted label and the confidence in it.
        let positive = *score > 0.5;
        let respond = serde_json::json!({"label": i64::from(positive), "score": if positive { *score } else { 1.0 - score }});
        let r = http.post(gateway.url("/endpoints/iris/invocations")).header("x-respond", respond.to_string()).json(&body).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    // One more exchange, unlabeled, with an input the baseline does not know.
    let extra = serde_json::json!({"instances": [{"x": 9.0, "color": "red"}]});
    let r = http.post(gateway.url("/endpoints/iris/invocations")).header("x-respond", r#"{"label": 0, "score": 0.5}"#).json(&extra).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(wait_rows(d, "iris_payload", 5, std::time::Duration::from_secs(30)), 5);
    gateway.terminate();
    let (ok, _, err) = inferlog(&["unpack", "iris", "--data-dir", dd]);
    assert!(ok, "{err}");
    assert_eq!(query(d, "SELECT count(*) AS n FROM iris_unpacked WHERE unpack_error IS NULL AND x IS NOT NULL")[0]["n"], 5);
    let labels = d.join("labels.csv");
    let mut csv = String::from("client_request_id,y\n");
    for (i, (y, _)) in cases.iter().enumerate() {
        csv.push_str(&format!("c{i},{y}\n"));
    }
    std::fs::write(&labels, csv).unwrap();
    let (ok, _, err) = inferlog(&["labels", "import", "iris", labels.to_str().unwrap(), "--key", "client_request_id", "--label", "y", "--data-dir", dd]);
    assert!(ok, "{err}");
    let train = d.join("train.csv");
    std::fs::write(&train, "x,y\n0.5,0\n1.5,1\n2.5,0\n3.5,1\n").unwrap();
    let (ok, _, err) = inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--label", "y", "--data-dir", dd]);
    assert!(ok, "{err}");
    let (ok, out, err) = inferlog(&["monitor", "iris", "--window", "1d", "--backfill", "--data-dir", dd]);
    assert!(ok, "{err}");
    assert!(out.contains("windows"), "{out}");

    let metrics = query(d, "SELECT metric, sum(value) AS value FROM iris_profile_metrics \
        WHERE metric IN ('accuracy', 'roc_auc', 'log_loss', 'labeled_count') GROUP BY metric ORDER BY metric");
    let value = |m: &str| metrics.iter().find(|r| r["metric"] == m).unwrap_or_else(|| panic!("no {m}: {metrics:?}"))["value"].as_f64().unwrap();
    assert_eq!(value("labeled_count"), 4.0);
    assert_eq!(value("accuracy"), 0.75);
    assert!((value("roc_auc") - 0.75).abs() < 1e-12, "{metrics:?}");
    let extra = query(d, "SELECT column_name, description FROM iris_violations WHERE \"check\" = 'extra_column_check'");
    assert_eq!(extra.len(), 1, "{extra:?}");
    assert_eq!(extra[0]["column_name"], "color");
    assert!(extra[0]["description"].as_str().unwrap().contains("in 1 rows"), "{extra:?}");
    // sklearn.metrics.log_loss([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    let expected = -((0.9f64).ln() + (0.6f64).ln() + (0.35f64).ln() + (0.8f64).ln()) / 4.0;
    assert!((value("log_loss") - expected).abs() < 1e-12, "{metrics:?} vs {expected}");
}

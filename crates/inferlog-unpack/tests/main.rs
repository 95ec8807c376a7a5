//! Unpacking real payload tables on local disk: every payload format, schema evolution,
//! malformed payloads, incremental runs across compaction, and lost history.

use deltalake::datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use inferlog_core::Record;
use inferlog_core::Layout;
use inferlog_table::{compact_once, CompactionOptions};
use inferlog_unpack::{unpack_once, UnpackOptions};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
const T0: i64 = 1_763_769_600_000; // 2025-11-22T00:00:00Z

fn record(i: usize, request: &str, content_type: &str, status: i32, response: &str) -> Record {
    Record {
        request_id: format!("req-{i:04}"),
        client_request_id: Some(format!("client-{i}")),
        timestamp_ms: T0 + (i as i64 % 2) * DAY_MS + i as i64,
        endpoint_name: "ep".into(),
        model_name: "ep".into(),
        model_version: "3".into(),
        method: "POST".into(),
        path: "/invocations".into(),
        status_code: status,
        execution_time_ms: Some(2),
        latency_ms: 3,
        sampling_fraction: 1.0,
        request: (!request.is_empty()).then(|| request.to_string()),
        response: (!response.is_empty()).then(|| response.to_string()),
        request_content_type: Some(content_type.into()),
        response_content_type: Some("application/json".into()),
        request_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
        response_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
        request_bytes: request.len() as i64,
        response_bytes: response.len() as i64,
        logging_error_codes: vec![],
        error: None,
        requester: None,
        request_metadata: Default::default(),
        ..Default::default()
    }
}

async fn append(data_dir: &Path, endpoint: &str, records: &[Record]) {
    let url = Layout::local(data_dir).unwrap().table(&format!("{endpoint}_payload"));
    let table = inferlog_table::open_or_create(&url, 100).await.unwrap();
    let batch = inferlog_table::schema::records_to_batch(records).unwrap();
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(["date"])
        .await
        .unwrap();
}

async fn rows(data_dir: &Path, sql: &str) -> Vec<Value> {
    let ctx = inferlog_query_free_session(data_dir).await;
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut buf = Vec::new();
    {
        let mut w = deltalake::arrow::json::LineDelimitedWriter::new(&mut buf);
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A session with the data directory's tables, built here so this crate's tests do not
/// depend on the query crate.
async fn inferlog_query_free_session(data_dir: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    for entry in std::fs::read_dir(data_dir.join("tables")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let url = url::Url::from_directory_path(std::fs::canonicalize(&path).unwrap()).unwrap();
        let Ok(table) = deltalake::open_table(url).await else { continue };
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table(name.as_str(), table.table_provider().await.unwrap()).unwrap();
    }
    ctx
}

fn options() -> UnpackOptions {
    UnpackOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_formats_become_typed_rows_per_instance() {
    let dir = tempfile::tempdir().unwrap();
    let records = vec![
        // The Databricks iris example, with the caller's id in the body.
        record(
            0,
            r#"{"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"], "data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]}, "client_request_id": "abc-123"}"#,
            "application/json",
            200,
            r#"{"predictions": [0, 1, 2]}"#,
        ),
        record(
            1,
            r#"{"dataframe_records": [{"sepal length (cm)": 5.0, "sepal width (cm)": 3.4, "petal length (cm)": 1.5, "petal width (cm)": 0.2}]}"#,
            "application/json",
            200,
            r#"{"predictions": [0]}"#,
        ),
        record(2, r#"{"instances": [[4.9, 3.0, 1.4, 0.2]]}"#, "application/json", 200, r#"{"predictions": [0]}"#),
        record(
            3,
            "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n6.3,3.3,6.0,2.5\n",
            "text/csv",
            200,
            r#"{"predictions": [2]}"#,
        ),
        // Not JSON at all: kept with the reason.
        record(4, r#"{"dataframe_split": {"columns": ["#, "application/json", 400, r#"{"error_code": "BAD_REQUEST"}"#),
        // The model failed: inputs are unpacked, no prediction, no unpack error.
        record(
            5,
            r#"{"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"], "data": [[-1, 3.5, 1.4, 0.2]]}}"#,
            "application/json",
            500,
            r#"{"error_code": "INTERNAL_ERROR", "message": "negative"}"#,
        ),
        // A GET through the gateway carries no instances.
        record(6, "", "application/json", 200, r#"{"status": "ok"}"#),
    ];
    append(dir.path(), "iris", &records).await;
    let report = unpack_once(&Layout::local(dir.path()).unwrap(), "iris", &options()).await.unwrap();
    assert_eq!(report.requests, 7);
    assert_eq!(report.rows, 3 + 1 + 1 + 1 + 1 + 1);
    assert_eq!(report.errors, 1);
    assert!(report.full_scan, "the first run reads the whole table");

    let got = rows(dir.path(), "SELECT * FROM iris_unpacked ORDER BY request_id, row_index").await;
    assert_eq!(got.len(), 8);
    let first = &got[0];
    assert_eq!(first["request_id"], "req-0000");
    assert_eq!(first["client_request_id"], "client-0");
    assert_eq!(first["row_index"], 0);
    assert_eq!(first["model_version"], "3");
    assert_eq!(first["status_code"], 200);
    assert_eq!(first["sepal_length_cm"], 5.1);
    assert_eq!(first["petal_width_cm"], 0.2);
    assert_eq!(first["prediction"], 0);
    assert_eq!(got[2]["row_index"], 2);
    assert_eq!(got[2]["sepal_length_cm"], 7.7);
    assert_eq!(got[2]["prediction"], 2);
    assert_eq!(got[3]["sepal_width_cm"], 3.4);
    // `instances` as lists: positional names.
    assert_eq!(got[4]["input_0"], 4.9);
    assert_eq!(got[4]["input_3"], 0.2);
    // CSV with a header.
    assert_eq!(got[5]["sepal_length_cm"], 6.3);
    assert_eq!(got[5]["prediction"], 2);
    // The malformed request: one row, no row index, the reason.
    assert_eq!(got[6]["request_id"], "req-0004");
    assert!(got[6]["row_index"].is_null());
    let reason = got[6]["unpack_error"].as_str().unwrap();
    assert!(reason.starts_with("request: request is not JSON"), "{reason}");
    // The failed call: features, no prediction, no error.
    assert_eq!(got[7]["status_code"], 500);
    assert_eq!(got[7]["sepal_length_cm"], -1.0);
    assert!(got[7]["prediction"].is_null());
    assert!(got[7]["unpack_error"].is_null());

    let types = rows(
        dir.path(),
        "SELECT arrow_typeof(sepal_length_cm) AS f, arrow_typeof(prediction) AS p, arrow_typeof(date) AS d FROM iris_unpacked LIMIT 1",
    )
    .await;
    assert_eq!(types[0]["f"], "Float64");
    assert_eq!(types[0]["p"], "Int64");
    assert_eq!(types[0]["d"], "Date32");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_and_v2_formats_with_named_outputs_and_binary_values() {
    let dir = tempfile::tempdir().unwrap();
    let tf = vec![
        record(
            0,
            r#"{"signature_name": "serving_default", "instances": [{"image": {"b64": "aGVsbG8="}, "size": 5}, {"image": {"b64": "d29ybGQ="}, "size": 7}]}"#,
            "application/json",
            200,
            r#"{"predictions": [{"label": "cat", "score": 0.93}, {"label": "dog", "score": 0.71}]}"#,
        ),
        record(
            1,
            r#"{"inputs": {"size": [3], "image": [{"b64": "eA=="}]}}"#,
            "application/json",
            200,
            r#"{"outputs": {"label": ["cat"], "score": [0.5]}}"#,
        ),
    ];
    append(dir.path(), "tf", &tf).await;
    let report = unpack_once(&Layout::local(dir.path()).unwrap(), "tf", &options()).await.unwrap();
    assert_eq!((report.rows, report.errors), (3, 0));
    let got = rows(
        dir.path(),
        "SELECT request_id, row_index, encode(image, 'hex') AS image, size, prediction_label, prediction_score, arrow_typeof(image) AS t FROM tf_unpacked ORDER BY request_id, row_index",
    )
    .await;
    assert_eq!(got[0]["image"], "68656c6c6f"); // "hello"
    assert!(got[0]["t"].as_str().unwrap().starts_with("Binary"), "{}", got[0]["t"]);
    assert_eq!(got[1]["image"], "776f726c64"); // "world"
    assert_eq!(got[1]["size"], 7);
    assert_eq!(got[1]["prediction_label"], "dog");
    assert_eq!(got[1]["prediction_score"], 0.71);
    assert_eq!(got[2]["image"], "78"); // "x"
    assert_eq!(got[2]["prediction_score"], 0.5);

    let v2 = vec![record(
        0,
        r#"{"id": "42", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.1, 4.4, 1.4]}]}"#,
        "application/json",
        200,
        r#"{"model_name": "iris", "id": "42", "outputs": [{"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]}, {"name": "proba", "shape": [2, 3], "datatype": "FP32", "data": [0.9, 0.05, 0.05, 0.1, 0.8, 0.1]}]}"#,
    )];
    append(dir.path(), "kserve", &v2).await;
    unpack_once(&Layout::local(dir.path()).unwrap(), "kserve", &options()).await.unwrap();
    let got = rows(dir.path(), "SELECT * FROM kserve_unpacked ORDER BY row_index").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["input_0_0"], 6.7);
    assert_eq!(got[1]["input_0_3"], 1.4);
    assert_eq!(got[1]["prediction_label"], 1);
    assert_eq!(got[1]["prediction_proba_1"], 0.8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_are_added_and_widened_without_failing_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let body = |x: &str, extra: &str| format!(r#"{{"dataframe_records": [{{"x": {x}{extra}}}]}}"#);
    append(dir.path(), "ev", &[record(0, &body("1", ""), "application/json", 200, "[10]")]).await;
    let first = unpack_once(&Layout::local(dir.path()).unwrap(), "ev", &options()).await.unwrap();
    assert_eq!(first.columns_added, vec!["x".to_string(), "prediction".to_string()]);
    let t = rows(dir.path(), "SELECT arrow_typeof(x) AS t FROM ev_unpacked").await;
    assert_eq!(t[0]["t"], "Int64");

    // A fraction in x and a new column y; then a value of the wrong type.
    append(
        dir.path(),
        "ev",
        &[
            record(1, &body("2.5", r#", "y": "red""#), "application/json", 200, "[11]"),
            record(2, &body(r#""n/a""#, ""), "application/json", 200, "[12]"),
        ],
    )
    .await;
    let second = unpack_once(&Layout::local(dir.path()).unwrap(), "ev", &options()).await.unwrap();
    assert_eq!(second.requests, 2, "only the new exchanges are read");
    assert_eq!(second.columns_widened, vec!["x".to_string()]);
    assert_eq!(second.columns_added, vec!["y".to_string()]);
    assert!(!second.full_scan);
    let got = rows(dir.path(), "SELECT request_id, x, y, prediction, unpack_error, arrow_typeof(x) AS t FROM ev_unpacked ORDER BY request_id").await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["x"], 1.0, "old rows keep their value in the widened column");
    assert_eq!(got[0]["t"], "Float64");
    assert!(got[0]["y"].is_null());
    assert_eq!(got[1]["x"], 2.5);
    assert_eq!(got[1]["y"], "red");
    assert!(got[2]["x"].is_null());
    assert_eq!(got[2]["unpack_error"], "x: expected double, got \"n/a\"");
    assert_eq!(got[2]["prediction"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_survive_compaction_and_lost_history() {
    let dir = tempfile::tempdir().unwrap();
    let body = |i: usize| format!(r#"{{"inputs": [[{i}, {i}.5]]}}"#);
    let batch = |from: usize, n: usize| -> Vec<Record> {
        (from..from + n).map(|i| record(i, &body(i), "application/json", 200, &format!("[{i}]"))).collect()
    };
    append(dir.path(), "inc", &batch(0, 10)).await;
    assert_eq!(unpack_once(&Layout::local(dir.path()).unwrap(), "inc", &options()).await.unwrap().rows, 10);
    let up_to_date = unpack_once(&Layout::local(dir.path()).unwrap(), "inc", &options()).await.unwrap();
    assert_eq!((up_to_date.source_versions, up_to_date.requests), (None, 0));

    // New rows, then a compaction (its commits move rows without adding any).
    for k in 0..3 {
        append(dir.path(), "inc", &batch(10 + 5 * k, 5)).await;
    }
    let url = Layout::local(dir.path()).unwrap().table("inc_payload");
    let compacted = compact_once(
        &url,
        &CompactionOptions { min_files: 1, vacuum_retention: Duration::from_secs(3600), ..CompactionOptions::default() },
    )
    .await
    .unwrap();
    assert!(compacted.files_removed > 0);
    let report = unpack_once(&Layout::local(dir.path()).unwrap(), "inc", &options()).await.unwrap();
    assert_eq!((report.requests, report.rows, report.full_scan), (15, 15, false));

    // More rows whose files are compacted and vacuumed before the next run: the run
    // cannot read them from their commits and compares request ids instead.
    for k in 0..2 {
        append(dir.path(), "inc", &batch(25 + 5 * k, 5)).await;
    }
    compact_once(
        &url,
        &CompactionOptions { min_files: 1, vacuum_retention: Duration::ZERO, ..CompactionOptions::default() },
    )
    .await
    .unwrap();
    let report = unpack_once(&Layout::local(dir.path()).unwrap(), "inc", &options()).await.unwrap();
    assert_eq!((report.requests, report.rows), (10, 10));
    assert!(report.full_scan);

    let got = rows(
        dir.path(),
        "SELECT count(*) AS n, count(DISTINCT request_id) AS ids, sum(prediction) AS s FROM inc_unpacked",
    )
    .await;
    assert_eq!(got[0]["n"], 35);
    assert_eq!(got[0]["ids"], 35);
    assert_eq!(got[0]["s"], (0..35).sum::<i64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_a_payload_table_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = unpack_once(&Layout::local(dir.path()).unwrap(), "nope", &options()).await.unwrap_err().to_string();
    assert!(err.contains("no endpoint `nope`") && err.contains("nope_payload"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comparison_pass_cut_short_is_finished_without_repeating_rows() {
    use deltalake::kernel::transaction::CommitProperties;
    use deltalake::kernel::Transaction;
    use inferlog_unpack::unpacker::COMPARE_APP_ID;
    let body = |i: usize| format!(r#"{{"inputs": [[{i}]]}}"#);
    let records: Vec<Record> =
        (0..10).map(|i| record(i, &body(i), "application/json", 200, &format!("[{i}]"))).collect();

    // What the first part of an interrupted comparison pass committed: the rows of the first
    // four exchanges, marked only with the comparison's target version.
    let scratch = tempfile::tempdir().unwrap();
    append(scratch.path(), "cut", &records[..4]).await;
    unpack_once(&Layout::local(scratch.path()).unwrap(), "cut", &options()).await.unwrap();
    let part = rows_as_batches(scratch.path(), "SELECT * FROM cut_unpacked").await;

    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), "cut", &records).await; // payload version 1
    let url = Layout::local(dir.path()).unwrap().table("cut_unpacked");
    let target = inferlog_table::table::open_or_create_with(&url, &inferlog_unpack::fixed_schema(), &["date"], 100)
        .await
        .unwrap();
    target
        .write(part)
        .with_save_mode(SaveMode::Append)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
        .with_partition_columns(["date"])
        .with_commit_properties(CommitProperties::default().with_application_transactions(vec![
            Transaction::new(inferlog_unpack::APP_ID, -1),
            Transaction::new(COMPARE_APP_ID, 1),
        ]))
        .await
        .unwrap();

    let report = unpack_once(&Layout::local(dir.path()).unwrap(), "cut", &options()).await.unwrap();
    assert!(report.full_scan, "an unfinished comparison is finished by comparing");
    assert_eq!((report.requests, report.rows), (6, 6));
    let got = rows(dir.path(), "SELECT count(*) AS n, count(DISTINCT request_id) AS ids FROM cut_unpacked").await;
    assert_eq!((got[0]["n"].as_i64(), got[0]["ids"].as_i64()), (Some(10), Some(10)));
    // Closed: the next run is incremental again and finds nothing.
    let again = unpack_once(&Layout::local(dir.path()).unwrap(), "cut", &options()).await.unwrap();
    assert_eq!((again.source_versions, again.full_scan), (None, false));
}

async fn rows_as_batches(data_dir: &Path, sql: &str) -> Vec<deltalake::arrow::array::RecordBatch> {
    let ctx = inferlog_query_free_session(data_dir).await;
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    // Plain types, as the table stores them (the reader hands out views).
    batches
        .into_iter()
        .map(|b| {
            let fields: Vec<_> = b
                .schema()
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    deltalake::arrow::datatypes::DataType::Utf8View => {
                        deltalake::arrow::datatypes::Field::new(f.name(), deltalake::arrow::datatypes::DataType::Utf8, true)
                    }
                    _ => f.as_ref().clone(),
                })
                .collect();
            let schema = std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(fields));
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| deltalake::arrow::compute::cast(c, f.data_type()).unwrap())
                .collect();
            deltalake::arrow::array::RecordBatch::try_new(schema, columns).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_named_like_fixed_columns_or_predictions_always_get_an_input_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"{"dataframe_records": [{"prediction": 0.5, "date": "2020-01-01", "x": 1}]}"#;
    append(
        dir.path(),
        "names",
        &[
            record(0, body, "application/json", 200, r#"{"predictions": [7]}"#),
            // The same features on a failed call, whose response is not read.
            record(1, body, "application/json", 500, r#"{"error_code": "INTERNAL_ERROR"}"#),
        ],
    )
    .await;
    unpack_once(&Layout::local(dir.path()).unwrap(), "names", &options()).await.unwrap();
    let got = rows(
        dir.path(),
        "SELECT request_id, input_prediction, input_date, x, prediction FROM names_unpacked ORDER BY request_id",
    )
    .await;
    assert_eq!(got[0]["input_prediction"], 0.5);
    assert_eq!(got[0]["input_date"], "2020-01-01");
    assert_eq!(got[0]["prediction"], 7);
    assert_eq!(got[1]["input_prediction"], 0.5, "the same column whatever the response");
    assert!(got[1]["prediction"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positional_features_land_in_the_columns_named_by_feature_names() {
    let dir = tempfile::tempdir().unwrap();
    let records = vec![
        record(
            0,
            r#"{"dataframe_records": [{"sepal length (cm)": 5.0, "sepal width (cm)": 3.4, "petal length (cm)": 1.5, "petal width (cm)": 0.2}]}"#,
            "application/json",
            200,
            r#"{"predictions": [0]}"#,
        ),
        record(1, r#"{"instances": [[4.9, 3.0, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5]]}"#, "application/json", 200, r#"{"predictions": [0, 1]}"#),
        record(2, r#"{"inputs": [[7.7, 3.0, 6.1, 2.3]]}"#, "application/json", 200, r#"{"predictions": [2]}"#),
    ];
    append(dir.path(), "iris", &records).await;
    let options = UnpackOptions {
        feature_names: ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"].map(String::from).to_vec(),
        ..options()
    };
    let report = unpack_once(&Layout::local(dir.path()).unwrap(), "iris", &options).await.unwrap();
    assert_eq!((report.rows, report.errors), (4, 0));
    let got = rows(dir.path(), "SELECT * FROM iris_unpacked ORDER BY request_id, row_index").await;
    // One set of feature columns for named and positional payloads alike.
    let columns: Vec<&String> = got[0].as_object().unwrap().keys().filter(|k| k.contains("_cm") || k.starts_with("input_")).collect();
    assert_eq!(columns.len(), 4, "{columns:?}");
    assert_eq!(got[1]["sepal_length_cm"], 4.9);
    assert_eq!(got[2]["petal_width_cm"], 1.5);
    assert_eq!(got[3]["petal_length_cm"], 6.1);
    assert_eq!(got[3]["prediction"], 2);
}

//! Querying, unpacking and labelling through the real binary: `inferlog query` with the
//! table functions, `--output` and `--as-of`; a gateway that unpacks as it captures; labels
//! from files and over HTTP; `POST /api/query`.

use crate::support::{self, bin, client, Gateway};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn inferlog(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run inferlog")
}

fn ok(args: &[&str]) -> String {
    let out = inferlog(args);
    assert!(out.status.success(), "inferlog {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn failure(args: &[&str]) -> String {
    let out = inferlog(args);
    assert!(!out.status.success(), "inferlog {args:?} should fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    // The reason fits on the first line (clap adds a usage hint after it).
    stderr.lines().next().unwrap().to_string()
}

/// Rows of `inferlog query --format json`.
fn cli_query(data_dir: &Path, extra: &[&str], sql: &str) -> Vec<Value> {
    let mut args = vec!["query", "--data-dir", data_dir.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    args.push(sql);
    ok(&args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn count(data_dir: &Path, extra: &[&str], sql_from: &str) -> i64 {
    cli_query(data_dir, extra, &format!("SELECT count(*) AS n FROM {sql_from}"))[0]["n"].as_i64().unwrap()
}

fn generate(data_dir: &Path, rows: u64, rows_per_commit: u64) {
    ok(&[
        "generate",
        "iris",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--rows",
        &rows.to_string(),
        "--days",
        "3",
        "--rows-per-commit",
        &rows_per_commit.to_string(),
    ]);
}

/// Data files a plan reads, from `EXPLAIN`.
fn files_read(data_dir: &Path, from: &str) -> usize {
    let plan = cli_query(data_dir, &[], &format!("EXPLAIN SELECT request_id FROM {from}"));
    plan.iter()
        .filter(|r| r["plan_type"] == "physical_plan")
        .map(|r| r["plan"].as_str().unwrap().matches(".parquet").count())
        .sum()
}

#[test]
fn inference_table_filters_by_version_and_time_and_prunes_days() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 3,000 exchanges over the last 3 days, 250 per commit: files in 3-4 day partitions.
    generate(d, 3000, 250);
    assert_eq!(count(d, &[], "inference_table('iris')"), 3000);
    assert_eq!(count(d, &[], "inference_table('iris', model_version => '2')"), 300);
    assert_eq!(count(d, &[], "inference_table(endpoint => 'iris', model_version => '2')"), 300);

    let now = chrono::Utc::now();
    let since = now - chrono::Duration::hours(12);
    let until = now - chrono::Duration::hours(6);
    let since_text = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let recent = count(d, &[], &format!("inference_table('iris', since => '{since_text}')"));
    let expected = count(d, &[], &format!("iris_payload WHERE timestamp_ms >= {}", since.timestamp_millis()));
    assert_eq!(recent, expected);
    assert!(recent > 300 && recent < 700, "about a sixth of 3,000: {recent}");
    let window = count(
        d,
        &[],
        &format!("inference_table('iris', since => TIMESTAMP '{}', until => '{until_text}')", since.format("%Y-%m-%d %H:%M:%S%.3f")),
    );
    let expected = count(
        d,
        &[],
        &format!(
            "iris_payload WHERE timestamp_ms >= {} AND timestamp_ms < {}",
            since.timestamp_millis(),
            until.timestamp_millis()
        ),
    );
    assert_eq!(window, expected);
    let last_hour = count(d, &[], "inference_table('iris', since => now() - INTERVAL '1 hour')");
    assert!(last_hour > 0 && last_hour < 100, "{last_hour}");

    // The time bounds reach the date partitions: a range within today reads only today's
    // files.
    let parquet_files = |dir: &Path| {
        std::fs::read_dir(dir).map_or(0, |e| {
            e.filter(|f| f.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet")).count()
        })
    };
    let table_dir = d.join("tables/iris_payload");
    let all_files: usize = std::fs::read_dir(&table_dir).unwrap().map(|p| parquet_files(&p.unwrap().path())).sum();
    let today = now.format("%Y-%m-%d").to_string();
    let todays_files = parquet_files(&table_dir.join(format!("date={today}")));
    let narrow_files = files_read(d, &format!("inference_table('iris', since => '{today}')"));
    assert!(all_files >= 12, "one file per commit and day at least: {all_files}");
    assert_eq!(narrow_files, todays_files, "only today's partition is read");
    assert!(narrow_files > 0 && narrow_files < all_files / 2, "{narrow_files} of {all_files}");

    // Clear errors.
    let dd = d.to_str().unwrap();
    let e = failure(&["query", "--data-dir", dd, "SELECT * FROM inference_table('nope')"]);
    assert!(e.contains("no endpoint `nope`"), "{e}");
    let e = failure(&["query", "--data-dir", dd, "SELECT * FROM inference_table('iris', version => '2')"]);
    assert!(e.contains("unknown argument `version`") && e.contains("model_version"), "{e}");
    let e = failure(&["query", "--data-dir", dd, "SELECT * FROM inference_table('iris', since => 'yesterday-ish')"]);
    assert!(e.contains("`since` is not a valid value"), "{e}");
    let e = failure(&["query", "--data-dir", dd, "SELECT * FROM inference_table()"]);
    assert!(e.contains("argument `endpoint` is required"), "{e}");
    let e = failure(&["query", "--data-dir", dd, "SELECT nope FROM inference_table('iris')"]);
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn query_writes_files_and_reads_older_versions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    generate(d, 100, 100); // version 1
    let between = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(50));
    generate(d, 50, 50); // version 2
    assert_eq!(count(d, &[], "iris_payload"), 150);
    assert_eq!(count(d, &["--as-of", "1"], "iris_payload"), 100);
    assert_eq!(count(d, &["--as-of", "1"], "inference_table('iris')"), 100);
    let at = between.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(count(d, &["--as-of", &at], "iris_payload"), 100);
    let e = failure(&["query", "--data-dir", dd, "--as-of", "2001-01-01", "SELECT count(*) FROM iris_payload"]);
    assert!(e.contains("iris_payload") && e.contains("not found"), "before the table existed: {e}");
    let e = failure(&["query", "--data-dir", dd, "--as-of", "last tuesday", "SELECT 1"]);
    assert!(e.contains("neither a table version"), "{e}");

    let sql = "SELECT request_id, timestamp_ms, model_version FROM iris_payload ORDER BY request_id";
    let parquet = d.join("out.parquet");
    let out = inferlog(&["query", "--data-dir", dd, "--output", parquet.to_str().unwrap(), sql]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("150 rows written"));
    let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&parquet).unwrap(),
    )
    .unwrap();
    let schema = reader.schema().clone();
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 150);
    assert_eq!(schema.field(1).name(), "timestamp_ms");

    let csv = d.join("out.csv");
    ok(&["query", "--data-dir", dd, "--output", csv.to_str().unwrap(), sql]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 151);
    assert_eq!(text.lines().next().unwrap(), "request_id,timestamp_ms,model_version");

    let jsonl = d.join("out.json");
    ok(&["query", "--data-dir", dd, "--output", jsonl.to_str().unwrap(), sql]);
    let lines: Vec<Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 150);
    // --format wins over the extension.
    let forced = d.join("forced.txt");
    ok(&["query", "--data-dir", dd, "--format", "csv", "--output", forced.to_str().unwrap(), sql]);
    assert!(std::fs::read_to_string(&forced).unwrap().starts_with("request_id,timestamp_ms"));
    let e = failure(&["query", "--data-dir", dd, "--output", d.join("x.xlsx").to_str().unwrap(), sql]);
    assert!(e.contains("cannot tell the format"), "{e}");
    let e = failure(&["query", "--data-dir", dd, "--format", "parquet", sql]);
    assert!(e.contains("--output"), "{e}");
}

fn start_iris_model() -> (std::process::Child, String) {
    let port = support::free_port();
    let child = Command::new(bin())
        .args(["iris-model", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "iris model did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, url)
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api_query(gw: &Gateway, sql: &str) -> (u16, Value) {
    let resp = client().post(gw.url("/api/query")).json(&json!({ "sql": sql })).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

#[test]
fn served_endpoint_unpacks_as_it_captures_and_joins_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (model, upstream) = start_iris_model();
    let _model = KillOnDrop(model);
    let gw = Gateway::start(
        d,
        &format!(
            "unpack_interval_ms = 200\nquery_max_rows = 5\nquery_timeout_ms = 3000\n\
             [[endpoints]]\nname = \"iris\"\nupstream = \"{upstream}\"\nunpack = true\n"
        ),
    );
    let http = client();
    let mut ids = Vec::new();
    for i in 0..4 {
        let body = json!({
            "dataframe_split": {
                "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
                "data": [[5.1, 3.5, 1.4, 0.2], [6.7 + i as f64 * 0.1, 3.0, 5.2, 2.3]]
            },
            "client_request_id": format!("c-{i}")
        });
        let resp = http.post(gw.url("/serving-endpoints/iris/invocations")).json(&body).send().unwrap();
        assert_eq!(resp.status(), 200);
        ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_string());
        assert_eq!(resp.json::<Value>().unwrap(), json!({"predictions": [0, 2]}));
    }
    // A malformed body: recorded, and kept in the unpacked table with its reason.
    let resp = http
        .post(gw.url("/serving-endpoints/iris/invocations"))
        .header("content-type", "application/json")
        .body("{\"dataframe_split\": ")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    let bad_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();

    // The typed table trails the raw one by seconds.
    let started = Instant::now();
    while support::count(d, "iris_unpacked") < 9 {
        assert!(started.elapsed() < Duration::from_secs(20), "unpacked rows did not appear");
        std::thread::sleep(Duration::from_millis(100));
    }
    let lag = started.elapsed();
    let rows = support::query(d, "SELECT * FROM iris_unpacked WHERE row_index IS NOT NULL ORDER BY request_id, row_index");
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0]["request_id"], ids[0].as_str());
    assert_eq!(rows[0]["client_request_id"], "c-0");
    assert_eq!(rows[0]["sepal_length_cm"], 5.1);
    assert_eq!(rows[0]["prediction"], 0);
    assert_eq!(rows[7]["sepal_length_cm"], 7.0);
    assert_eq!(rows[7]["prediction"], 2);
    let bad = support::row(d, "iris_unpacked", &bad_id);
    assert!(bad["unpack_error"].as_str().unwrap().contains("not JSON"), "{bad}");
    eprintln!("unpacked table caught up {lag:?} after the last request");

    // Labels over HTTP, by request id and by the caller's id.
    let resp = http
        .post(gw.url("/api/endpoints/iris/labels"))
        .json(&json!([
            {"request_id": ids[0], "row_index": 0, "label": 0},
            {"request_id": ids[0], "row_index": 1, "label": 1},
            {"client_request_id": "c-1", "row_index": 1, "label": 2},
        ]))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    assert_eq!((body["imported"].as_u64(), body["replaced"].as_u64()), (Some(3), Some(0)));
    let resp = http
        .post(gw.url("/api/endpoints/iris/labels"))
        .json(&json!([{"row_index": 0, "label": 0}]))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("row 0: needs a non-empty string request_id or client_request_id"));
    let resp = http.post(gw.url("/api/endpoints/nope/labels")).json(&json!([])).send().unwrap();
    assert_eq!(resp.status(), 404);

    // Labels from a file; importing a key again replaces its label.
    let csv = d.join("labels.csv");
    std::fs::write(&csv, format!("request_id,row,species\n{},1,2\n{},0,0\n", ids[0], ids[2])).unwrap();
    let out = ok(&[
        "labels", "import", "iris", csv.to_str().unwrap(), "--data-dir", d.to_str().unwrap(), "--key", "request_id",
        "--label", "species", "--row-index", "row",
    ]);
    assert!(out.contains("2 labels merged") && out.contains("1 replaced"), "{out}");
    let jsonl = d.join("labels.jsonl");
    std::fs::write(&jsonl, "{\"client_request_id\": \"c-3\", \"truth\": 0}\n").unwrap();
    // Ids that look like numbers stay text.
    let numeric_ids = d.join("numeric.csv");
    std::fs::write(&numeric_ids, "client_request_id,truth\n007,1\n").unwrap();
    ok(&[
        "labels", "import", "iris", numeric_ids.to_str().unwrap(), "--data-dir", d.to_str().unwrap(), "--key",
        "client_request_id", "--label", "truth",
    ]);
    let kept = support::query(d, "SELECT key FROM iris_labels WHERE key_kind = 'client_request_id' AND label = 1");
    assert_eq!(kept, vec![json!({"key": "007"})]);
    ok(&[
        "labels", "import", "iris", jsonl.to_str().unwrap(), "--data-dir", d.to_str().unwrap(), "--key",
        "client_request_id", "--label", "truth",
    ]);
    let e = failure(&[
        "labels", "import", "iris", csv.to_str().unwrap(), "--data-dir", d.to_str().unwrap(), "--label", "nope",
    ]);
    assert!(e.contains("no column `nope`") && e.contains("species"), "{e}");
    let labels = support::query(d, "SELECT count(*) AS n FROM iris_labels");
    assert_eq!(labels[0]["n"], 6, "a replaced label is not a second row");

    // labeled(): predictions next to their labels, over the HTTP query API.
    let (status, body) = api_query(
        &gw,
        "SELECT request_id, row_index, prediction, label, label_arrived_at FROM labeled('iris') ORDER BY request_id, row_index",
    );
    assert_eq!(status, 200, "{body}");
    let got = body["rows"].as_array().unwrap();
    let pairs: Vec<(String, i64, i64, i64)> = got
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap().to_string(),
                r["row_index"].as_i64().unwrap(),
                r["prediction"].as_i64().unwrap(),
                r["label"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            (ids[0].clone(), 0, 0, 0),
            (ids[0].clone(), 1, 2, 2), // replaced by the file import: 1 → 2
            (ids[1].clone(), 1, 2, 2),
            (ids[2].clone(), 0, 0, 0),
            (ids[3].clone(), 0, 0, 0),
        ]
    );
    assert_eq!(body["truncated"], false);

    // The row limit, Arrow streams, and errors.
    let (status, body) = api_query(&gw, "SELECT * FROM iris_unpacked");
    assert_eq!(status, 200);
    assert_eq!((body["row_count"].as_u64(), body["truncated"].as_bool()), (Some(5), Some(true)));
    let resp = http
        .post(gw.url("/api/query"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&json!({"sql": "SELECT request_id, prediction FROM iris_unpacked WHERE prediction IS NOT NULL"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/vnd.apache.arrow.stream");
    let bytes = resp.bytes().unwrap();
    let reader = deltalake::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).unwrap();
    assert_eq!(reader.schema().field(1).name(), "prediction");
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 5);
    let (status, body) = api_query(&gw, "SELEC 1");
    assert_eq!((status, body["error_code"].as_str()), (400, Some("INVALID_QUERY")));
    let (status, body) = api_query(&gw, "SELECT * FROM no_such_table");
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("no_such_table"), "{body}");
    let resp = http.post(gw.url("/api/query")).header("content-type", "application/json").body("not json").send().unwrap();
    assert_eq!(resp.status(), 400);
    // Only JSON bodies: a web page cannot post here without asking first.
    let resp = http.post(gw.url("/api/query")).header("content-type", "text/plain").body(r#"{"sql": "SELECT 1"}"#).send().unwrap();
    assert_eq!(resp.status(), 415);
    // Read-only: no files written, no tables defined.
    let copy = format!("COPY (SELECT 1) TO '{}'", d.join("copied.csv").display());
    let (status, body) = api_query(&gw, &copy);
    assert_eq!(status, 400, "{body}");
    assert!(!d.join("copied.csv").exists());
    let (status, _) = api_query(&gw, "CREATE TABLE t AS SELECT 1");
    assert_eq!(status, 400);
    let slow = Instant::now();
    let (status, body) = api_query(&gw, "SELECT count(*) FROM range(0, 100000000000) a");
    assert_eq!((status, body["error_code"].as_str()), (408, Some("QUERY_TIMEOUT")), "{body}");
    assert!(slow.elapsed() < Duration::from_secs(10));
    // Capture carried on while the query ran.
    let resp = http
        .post(gw.url("/serving-endpoints/iris/invocations"))
        .json(&json!({"instances": [[5.0, 3.4, 1.5, 0.2]]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

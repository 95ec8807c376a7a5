use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn n_requests_give_exactly_n_rows_with_the_right_fields() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let mut toml = endpoint_toml("iris", &up.url(), "enabled = true");
    toml = toml.replace("[endpoints.capture]", "model_name = \"iris-classifier\"\nmodel_version = \"3\"\n[endpoints.capture]");
    let gw = Gateway::start(dir.path(), &toml);
    let http = client();
    let n = 60;
    let mut ids = Vec::new();
    for i in 0..n {
        let body = if i % 3 == 0 {
            json!({"client_request_id": format!("c-{i}"), "dataframe_records": [{"a": i}]}).to_string()
        } else {
            json!({"inputs": [[i, i + 1]]}).to_string()
        };
        let resp = http
            .post(gw.url(&format!("/endpoints/iris/echo?round={i}")))
            .header("content-type", "application/json")
            .header("user-agent", "e2e-test")
            .header("authorization", "Bearer secret-token")
            .header("cookie", "session=secret-cookie")
            .header("x-client-request-id", format!("h-{i}"))
            .header("connection", "keep-alive, x-drop-me")
            .header("x-drop-me", "hop")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-upstream-header"], "kept", "upstream headers come back");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(resp.text().unwrap(), body, "body comes back unchanged");
        ids.push((id, body, i));
    }
    // The alias and a GET with no body are recorded too.
    let resp = http.post(gw.url("/serving-endpoints/iris/invocations")).body("{\"instances\": [1]}").send().unwrap();
    assert_eq!(resp.status(), 200);
    let alias_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let resp = http.get(gw.url("/endpoints/iris/status/404")).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().get("x-inferlog-error").is_none(), "an upstream 404 is the model's, not the gateway's");
    let not_found_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();

    let total = wait_rows(dir.path(), "iris_payload", n + 2, Duration::from_secs(30));
    assert_eq!(total, n + 2, "exactly one row per request");
    let distinct = query(dir.path(), "SELECT count(DISTINCT request_id) AS n FROM iris_payload");
    assert_eq!(distinct[0]["n"], n as u64 + 2);

    // The upstream got the path, query and end-to-end headers, without hop-by-hop ones.
    {
        let seen = up.seen.requests.lock().unwrap();
        let (method, pq, headers) = &seen[5];
        assert_eq!(method, "POST");
        assert_eq!(pq, "/echo?round=5");
        assert!(headers.get("x-drop-me").is_none() && headers.get("connection").map_or(true, |c| c != "keep-alive, x-drop-me"));
        assert_eq!(headers["user-agent"], "e2e-test");
        assert_eq!(headers["authorization"], "Bearer secret-token", "credentials are forwarded, just not recorded");
    }

    for (id, body, i) in ids.iter().filter(|(_, _, i)| i % 10 == 0 || *i == 1) {
        let r = row(dir.path(), "iris_payload", id);
        assert_eq!(r["request"], Value::String(body.clone()));
        assert_eq!(r["response"], Value::String(body.clone()));
        let expected_client_id = if i % 3 == 0 { format!("c-{i}") } else { format!("h-{i}") };
        assert_eq!(r["client_request_id"], Value::String(expected_client_id), "body key first, then header");
        assert_eq!(r["endpoint_name"], "iris");
        assert_eq!(r["model_name"], "iris-classifier");
        assert_eq!(r["model_version"], "3");
        assert_eq!(r["method"], "POST");
        assert_eq!(r["path"], "/echo");
        assert_eq!(r["status_code"], 200);
        assert_eq!(r["sampling_fraction"], 1.0);
        assert_eq!(r["request_encoding"], "utf8");
        assert_eq!(r["request_content_type"], "application/json");
        assert_eq!(r["response_content_type"], "application/json");
        assert_eq!(r["request_bytes"], body.len() as u64);
        assert_eq!(r["response_bytes"], body.len() as u64);
        assert!(r["error"].is_null());
        assert!(r["requester"].is_null());
        assert_eq!(r["logging_error_codes"], json!([]));
        let meta = r["request_metadata"].as_object().unwrap();
        assert_eq!(meta["user-agent"], "e2e-test");
        assert!(!meta.contains_key("authorization") && !meta.contains_key("cookie"), "{meta:?}");
        let ts = r["timestamp_ms"].as_i64().unwrap();
        let day = chrono::DateTime::from_timestamp_millis(ts).unwrap().date_naive().to_string();
        assert_eq!(r["date"], Value::String(day));
        let exec = r["execution_time_ms"].as_i64().unwrap();
        assert!(exec >= 0 && exec <= r["latency_ms"].as_i64().unwrap());
        // UUIDv7: version nibble 7.
        assert_eq!(id.as_bytes()[14], b'7', "{id}");
    }
    let alias = row(dir.path(), "iris_payload", &alias_id);
    assert_eq!(alias["path"], "/invocations");
    let nf = row(dir.path(), "iris_payload", &not_found_id);
    assert_eq!((nf["status_code"].as_i64(), nf["method"].as_str(), nf["request"].is_null()), (Some(404), Some("GET"), true));
    assert!(nf["error"].is_null(), "the upstream answered: no gateway error");
}

#[test]
fn a_row_is_queryable_within_two_seconds_of_its_response() {
    let _exclusive = exclusive();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &endpoint_toml("m", &up.url(), ""));
    let http = client();
    // Warm up: the table exists and the first commit has happened.
    http.post(gw.url("/endpoints/m/echo")).body("warm").send().unwrap();
    wait_rows(dir.path(), "m_payload", 1, Duration::from_secs(30));
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        let resp = http.post(gw.url("/endpoints/m/echo")).body("{\"x\": 1}").send().unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        resp.text().unwrap();
        let answered = Instant::now();
        loop {
            let rows = query(dir.path(), &format!("SELECT request_id FROM m_payload WHERE request_id = '{id}'"));
            if rows.len() == 1 {
                break;
            }
            assert!(answered.elapsed() < Duration::from_secs(10), "row never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        worst = worst.max(answered.elapsed());
    }
    assert!(worst < Duration::from_secs(2), "slowest row took {worst:?} to become queryable");
}

#[test]
fn sampling_records_the_configured_share_and_stores_the_fraction() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &endpoint_toml("s", &up.url(), "sampling_fraction = 0.3\nsampling_seed = 7"));
    let http = client();
    let n = 400;
    for _ in 0..n {
        assert_eq!(http.post(gw.url("/endpoints/s/echo")).body("x").send().unwrap().status(), 200);
    }
    let rows = wait_rows(dir.path(), "s_payload", 1, Duration::from_secs(30));
    // Binomial(400, 0.3): mean 120, sd 9.2; 5 sd either side.
    assert!((74..=166).contains(&rows), "{rows} of {n} sampled");
    let fractions = query(dir.path(), "SELECT DISTINCT sampling_fraction AS f FROM s_payload");
    assert_eq!(fractions, vec![json!({"f": 0.3})]);
}

#[test]
fn sigterm_drains_and_commits_everything_answered() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path(), &format!("commit_interval_ms = 60000\n{}", endpoint_toml("m", &up.url(), "")));
    let http = client();
    for _ in 0..25 {
        assert_eq!(http.post(gw.url("/endpoints/m/echo")).body("drain").send().unwrap().status(), 200);
    }
    // The commit interval is a minute: only the shutdown commit can have written these.
    let status = gw.terminate();
    assert!(status.success(), "exit {status:?}: {}", gw.logs());
    assert_eq!(count(dir.path(), "m_payload"), 25);
}

#[test]
fn metrics_report_requests_and_capture_progress() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &endpoint_toml("m", &up.url(), ""));
    let http = client();
    for _ in 0..5 {
        http.post(gw.url("/endpoints/m/echo")).body("x").send().unwrap();
    }
    http.get(gw.url("/endpoints/m/status/503")).send().unwrap();
    wait_rows(dir.path(), "m_payload", 6, Duration::from_secs(30));
    assert_eq!(http.get(gw.url("/healthz")).send().unwrap().status(), 200);
    let text = http.get(gw.url("/metrics")).send().unwrap().text().unwrap();
    for needle in [
        "inferlog_requests_total{endpoint=\"m\",status=\"200\"} 5",
        "inferlog_requests_total{endpoint=\"m\",status=\"503\"} 1",
        "inferlog_capture_records_logged_total{endpoint=\"m\"} 6",
        "inferlog_capture_records_committed_total{endpoint=\"m\"} 6",
        "inferlog_upstream_duration_seconds_bucket{endpoint=\"m\"",
        "inferlog_capture_records_queued{endpoint=\"m\"} 0",
        "inferlog_capture_log_bytes{endpoint=\"m\"}",
        "inferlog_table_last_commit_age_seconds{endpoint=\"m\"}",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn the_demo_reports_drift_of_named_features_and_no_format_artefacts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let out = std::process::Command::new(bin())
        .args(["demo", "--requests", "150", "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("baseline_drift_check"), "{stdout}");
    // `instances` and `inputs` lists land in the model's named features, like every other format.
    assert!(!stdout.contains("extra_column_check") && !stdout.contains("missing_column_check"), "{stdout}");
    let columns = query(&data_dir, "SELECT column_name FROM information_schema.columns WHERE table_name = 'iris_unpacked'");
    let names: Vec<&str> = columns.iter().filter_map(|c| c["column_name"].as_str()).collect();
    assert!(names.contains(&"sepal_length_cm") && !names.iter().any(|n| n.starts_with("input_")), "{names:?}");
    let positional = query(
        &data_dir,
        "SELECT count(*) AS n FROM iris_unpacked u JOIN iris_payload p USING (request_id) \
         WHERE p.request LIKE '{\"instances\":[[%' AND u.sepal_length_cm IS NOT NULL",
    );
    assert!(positional[0]["n"].as_u64().unwrap() > 0, "positional instances are unpacked into named columns");
    assert!(data_dir.join("report.html").exists());
}

#[test]
fn without_a_gateway_name_each_row_names_the_gateway_by_its_instance_id() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &format!("commit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), "")));
    for i in 0..3 {
        client().post(gw.url("/endpoints/m/echo")).body(format!("{{\"i\": {i}}}")).send().unwrap();
    }
    assert_eq!(wait_rows(dir.path(), "m_payload", 3, Duration::from_secs(30)), 3);
    let instance = std::fs::read_to_string(dir.path().join("instance.id")).unwrap();
    let rows = query(dir.path(), "SELECT DISTINCT gateway_id FROM m_payload");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["gateway_id"].as_str(), Some(instance.trim()));
}

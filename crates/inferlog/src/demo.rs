//! `inferlog demo`: a built-in iris model, the gateway in front of it, a few hundred varied
//! requests, and what the inference table recorded.

use crate::iris;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use inferlog_core::config::{ConfigFile, EndpointFile};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One demo request: path under the endpoint, content type, body, optional client id header.
fn request(i: usize) -> (&'static str, &'static str, Vec<u8>, Option<String>) {
    let row = |k: usize| {
        let f = (k % 7) as f64 * 0.3;
        match k % 3 {
            0 => [5.0 + f * 0.2, 3.4, 1.5, 0.2],
            1 => [5.9 + f * 0.3, 2.8, 4.3 + f * 0.2, 1.3],
            _ => [6.6 + f * 0.2, 3.0, 5.6, 2.1 + f * 0.1],
        }
    };
    let names = iris::FEATURES;
    match i % 10 {
        0 => ("invocations", "application/json", json!({
            "client_request_id": format!("demo-{i}"),
            "dataframe_split": {"columns": names, "data": [row(i)]}
        }).to_string().into_bytes(), None),
        1 => ("invocations", "application/json", json!({
            "dataframe_records": [names.iter().zip(row(i)).map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()]
        }).to_string().into_bytes(), None),
        2 => ("invocations", "application/json", json!({"instances": [row(i), row(i + 1)]}).to_string().into_bytes(), None),
        3 => ("invocations", "application/json", json!({"inputs": [row(i)]}).to_string().into_bytes(), Some(format!("header-{i}"))),
        4 => {
            let r = row(i);
            ("invocations", "text/csv", format!("{}\n{},{},{},{}\n", names.join(","), r[0], r[1], r[2], r[3]).into_bytes(), None)
        }
        5 => ("invocations", "application/json", br#"{"instances": [[5.1, 3.5, 1.4"#.to_vec(), None),
        6 => ("invocations", "application/json", json!({"instances": [[1.0, 2.0]]}).to_string().into_bytes(), None),
        7 if i % 20 == 7 => ("v1/unknown", "application/json", b"{}".to_vec(), None),
        7 => ("invocations", "application/json", json!({"instances": [[-1.0, 3.0, 1.4, 0.2]]}).to_string().into_bytes(), None),
        8 => ("invocations", "application/json", json!({
            "client_request_id": format!("batch-{i}"),
            "dataframe_split": {"columns": names, "data": (0..5).map(|k| row(i + k)).collect::<Vec<_>>()}
        }).to_string().into_bytes(), None),
        _ => ("invocations", "application/octet-stream", (0u8..=255).collect(), None),
    }
}

async fn send(client: &HttpClient, gateway: SocketAddr, i: usize) -> anyhow::Result<u16> {
    let (path, content_type, body, client_id) = request(i);
    let mut req = hyper::Request::post(format!("http://{gateway}/endpoints/iris/{path}"))
        .header("content-type", content_type)
        .header("user-agent", "inferlog-demo/1");
    if let Some(id) = client_id {
        req = req.header("x-client-request-id", id);
    }
    let resp = client.request(req.body(Full::new(Bytes::from(body)))?).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

async fn print_query(data_dir: &Path, title: &str, sql: &str) -> anyhow::Result<usize> {
    let ctx = inferlog_query::session(&inferlog_core::Layout::local(data_dir)?, None).await?;
    let batches = inferlog_query::run_sql(&ctx, sql).await?.batches;
    println!("\n{title}\n  $ inferlog query --data-dir {} \"{sql}\"", data_dir.display());
    println!("{}", inferlog_query::format(&batches, inferlog_query::OutputFormat::Table)?);
    Ok(inferlog_query::row_count(&batches))
}

async fn recorded_rows(data_dir: &Path) -> usize {
    let Ok(layout) = inferlog_core::Layout::local(data_dir) else { return 0 };
    let Ok(ctx) = inferlog_query::session(&layout, None).await else { return 0 };
    let Ok(result) = inferlog_query::run_sql(&ctx, "SELECT request_id FROM iris_payload").await else { return 0 };
    inferlog_query::row_count(&result.batches)
}

pub async fn run(data_dir: &Path, requests: usize) -> anyhow::Result<()> {
    // Start from a clean demo directory (only the folders the gateway itself writes).
    for sub in ["tables", "wal", "state"] {
        let p = data_dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("cannot clean {}", p.display()))?;
        }
    }
    let model_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let model_addr = model_listener.local_addr()?;
    let (stop_model, model_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(iris::serve(model_listener, async {
        let _ = model_stopped.await;
    }));

    let config = ConfigFile {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.to_path_buf()),
        compaction_interval_s: Some(0),
        unpack_interval_ms: Some(500),
        endpoints: vec![EndpointFile {
            name: "iris".into(),
            upstream: Some(format!("http://{model_addr}")),
            targets: None,
            sticky_header: None,
            shadow: None,
            model_name: Some("iris-classifier".into()),
            model_version: Some("1".into()),
            capture: Default::default(),
            unpack: Some(true),
            // The model's signature: names for the features that `instances` and `inputs` send by position.
            feature_names: Some(iris::FEATURES.map(String::from).to_vec()),
            monitor: None,
            public: None,
            redact: Vec::new(),
            retention: None,
        }],
        ..Default::default()
    }
    .validate()?;
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let gateway_task = tokio::spawn(crate::serve::run(
        config,
        async {
            let _ = gateway_stopped.await;
        },
        Some(ready_tx),
    ));
    let gateway = ready_rx.await.context("gateway did not start")?;
    println!("iris model on http://{model_addr}, inferlog gateway on http://{gateway}, data in {}", data_dir.display());

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests {
        let client = client.clone();
        tasks.spawn(async move { send(&client, gateway, i).await });
        if tasks.len() >= 16 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    println!("sent {requests} requests through the gateway in {:.2} s", started.elapsed().as_secs_f64());

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rows = 0;
    while Instant::now() < deadline {
        rows = recorded_rows(data_dir).await;
        if rows >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("{rows} rows in the inference table {} after {:.2} s", data_dir.join("tables/iris_payload").display(), started.elapsed().as_secs_f64());

    print_query(data_dir, "Requests by status:", "SELECT status_code, count(*) AS requests FROM iris_payload GROUP BY status_code ORDER BY status_code").await?;
    print_query(
        data_dir,
        "A few rows:",
        "SELECT request_id, client_request_id, status_code, latency_ms, substr(request, 1, 48) AS request, substr(response, 1, 40) AS response FROM iris_payload ORDER BY timestamp_ms LIMIT 6",
    )
    .await?;
    print_query(
        data_dir,
        "Failed exchanges are recorded like any other:",
        "SELECT status_code, path, request_encoding, substr(response, 1, 60) AS response FROM iris_payload WHERE status_code >= 400 ORDER BY status_code DESC LIMIT 5",
    )
    .await?;

    // Stopping makes the unpacker's last pass, so the typed table holds every exchange.
    let _ = stop_gateway.send(());
    gateway_task.await??;
    let _ = stop_model.send(());
    print_query(
        data_dir,
        "Unpacked into one typed row per instance (iris_unpacked):",
        "SELECT request_id, row_index, sepal_length_cm AS sepal_len, petal_width_cm AS petal_w, prediction, status_code \
         FROM iris_unpacked WHERE unpack_error IS NULL AND sepal_length_cm IS NOT NULL ORDER BY timestamp_ms, row_index LIMIT 6",
    )
    .await?;
    print_query(
        data_dir,
        "Payloads that could not be unpacked keep their reason:",
        "SELECT count(*) AS requests, substr(unpack_error, 1, 70) AS unpack_error FROM iris_unpacked \
         WHERE unpack_error IS NOT NULL GROUP BY 2 ORDER BY 1 DESC LIMIT 4",
    )
    .await?;
    let report = monitor(data_dir).await?;
    let dir = data_dir.display();
    println!("\nThe monitoring report: {}", report.display());
    println!(
        "\nNext:\n  inferlog query --data-dir {dir} \"SELECT model_version, avg(latency_ms) FROM iris_payload GROUP BY 1\"\n  \
         inferlog query --data-dir {dir} --format json \"SELECT * FROM iris_payload WHERE client_request_id = 'demo-0'\"\n  \
         inferlog monitor iris --data-dir {dir} --window 10m --backfill --slice model_version\n  \
         inferlog query --data-dir {dir} \"SELECT status_code, count(*) FROM inference_table('iris', since => now() - INTERVAL '1 hour') GROUP BY 1\"\n  \
         python3 -c \"import deltalake; print(deltalake.DeltaTable('{dir}/tables/iris_payload').to_pandas().head())\"\n  \
         inferlog serve --listen 127.0.0.1:8080 --data-dir ./inferlog-data --endpoint mymodel=http://127.0.0.1:5001"
    );
    Ok(())
}

/// A baseline from the model's training data, one monitoring run over the traffic just sent,
/// and the HTML report; returns the report's path.
async fn monitor(data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let layout = inferlog_core::Layout::local(data_dir)?;
    let train = data_dir.join("iris-train.csv");
    std::fs::write(&train, iris::training_csv())?;
    let source = inferlog_monitor::BaselineSource::File(train);
    let options = inferlog_monitor::BaselineOptions { label: Some("species".into()), prediction: Some("predicted".into()) };
    inferlog_monitor::build_baseline(&layout, "iris", &source, &options).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let options = inferlog_monitor::MonitorOptions {
        window_ms: 3_600_000,
        since_ms: None,
        until_ms: None,
        slices: vec!["model_version".into()],
        backfill: false,
    };
    let run = inferlog_monitor::run_monitor(&layout, "iris", &options).await?;
    println!(
        "\nMonitored against a baseline of the training data ({} profile, {} drift metrics, {} violations):",
        run.profile.len(),
        run.drift.len(),
        run.violations.len()
    );
    print_query(
        data_dir,
        "Drift of each column against the baseline (iris_drift_metrics):",
        "SELECT column_name, metric, round(value, 4) AS value, threshold, drifted FROM iris_drift_metrics \
         WHERE compared_to = 'baseline' AND slice_key IS NULL AND metric IN ('ks_p_value', 'chi_squared_p_value') ORDER BY column_name",
    )
    .await?;
    print_query(
        data_dir,
        "Violations (iris_violations):",
        "SELECT check, column_name, description FROM iris_violations WHERE slice_key IS NULL ORDER BY check, column_name LIMIT 8",
    )
    .await?;
    let report = data_dir.join("report.html");
    let options = inferlog_monitor::ReportOptions { since_ms: now - 3_600_000, until_ms: now + 60_000 };
    let data = inferlog_monitor::build_report(&layout, "iris", &options).await?;
    std::fs::write(&report, inferlog_monitor::report_html::render(&data))?;
    Ok(report)
}

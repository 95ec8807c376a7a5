//! `inferlog generate`: fills an endpoint's payload table with synthetic iris exchanges,
//! spread evenly over the last days, to try queries and measure lookups at scale without
//! waiting for real traffic.

use anyhow::Context;
use deltalake::protocol::SaveMode;
use inferlog_core::Record;
use std::path::Path;
use std::time::Instant;

pub struct GenerateArgs<'a> {
    pub data_dir: &'a Path,
    pub endpoint: &'a str,
    pub rows: u64,
    pub days: u32,
    pub rows_per_commit: usize,
}

/// Writes `rows` exchanges in time order, `rows_per_commit` per Delta commit (one file per
/// date partition each), like a gateway whose small files have been compacted.
pub async fn generate(args: GenerateArgs<'_>) -> anyhow::Result<()> {
    let url = inferlog_core::Layout::local(args.data_dir)?.payload(args.endpoint);
    let mut table = inferlog_table::open_or_create(&url, 100).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let span_ms = i64::from(args.days.max(1)) * 86_400_000;
    let start_ms = now_ms - span_ms;
    let step = span_ms as f64 / args.rows.max(1) as f64;
    let started = Instant::now();
    let mut written = 0u64;
    let per_commit = args.rows_per_commit.max(1) as u64;
    while written < args.rows {
        let n = per_commit.min(args.rows - written);
        let records: Vec<Record> = (written..written + n)
            .map(|i| synthetic_record(args.endpoint, i, start_ms + (i as f64 * step) as i64))
            .collect();
        let batch = inferlog_table::schema::records_to_batch(&records)?;
        table = table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_partition_columns([inferlog_table::schema::PARTITION_COLUMN])
            .with_writer_properties(inferlog_table::schema::writer_properties())
            .await
            .with_context(|| format!("cannot write to {url}"))?;
        written += n;
        eprintln!(
            "{written}/{} rows ({:.0} rows/s)",
            args.rows,
            written as f64 / started.elapsed().as_secs_f64().max(1e-3)
        );
    }
    println!(
        "{written} rows written to {}_payload in {:.1} s (table version {})",
        args.endpoint,
        started.elapsed().as_secs_f64(),
        inferlog_table::table::version_of(&table)
    );
    Ok(())
}

const SPECIES: [&str; 3] = ["setosa", "versicolor", "virginica"];

fn synthetic_record(endpoint: &str, i: u64, timestamp_ms: i64) -> Record {
    // Deterministic, varied measurements; one exchange in 50 carries two instances.
    let f = |k: u64| 0.1 * ((i.wrapping_mul(2654435761).wrapping_add(k * 97)) % 60) as f64 + 0.5;
    let species = (i % 3) as usize;
    let (request, response) = if i % 50 == 0 {
        (
            format!(
                r#"{{"dataframe_split":{{"columns":["sepal_length","sepal_width","petal_length","petal_width"],"data":[[{:.1},{:.1},{:.1},{:.1}],[{:.1},{:.1},{:.1},{:.1}]]}},"client_request_id":"client-{i}"}}"#,
                f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8)
            ),
            format!(r#"{{"predictions":["{}","{}"]}}"#, SPECIES[species], SPECIES[(species + 1) % 3]),
        )
    } else {
        (
            format!(
                r#"{{"dataframe_split":{{"columns":["sepal_length","sepal_width","petal_length","petal_width"],"data":[[{:.1},{:.1},{:.1},{:.1}]]}},"client_request_id":"client-{i}"}}"#,
                f(1), f(2), f(3), f(4)
            ),
            format!(r#"{{"predictions":["{}"]}}"#, SPECIES[species]),
        )
    };
    let seconds = timestamp_ms.div_euclid(1000) as u64;
    let nanos = (timestamp_ms.rem_euclid(1000) as u32) * 1_000_000;
    let request_id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, nanos));
    Record {
        request_id: request_id.to_string(),
        client_request_id: Some(format!("client-{i}")),
        timestamp_ms,
        endpoint_name: endpoint.to_string(),
        model_name: endpoint.to_string(),
        model_version: if i % 10 == 0 { "2".into() } else { "1".into() },
        method: "POST".into(),
        path: "/invocations".into(),
        status_code: 200,
        execution_time_ms: Some(3),
        latency_ms: 4,
        sampling_fraction: 1.0,
        request_bytes: request.len() as i64,
        response_bytes: response.len() as i64,
        request: Some(request),
        response: Some(response),
        request_content_type: Some("application/json".into()),
        response_content_type: Some("application/json".into()),
        request_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
        response_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
        logging_error_codes: Vec::new(),
        error: None,
        requester: None,
        request_metadata: Default::default(),
        ..Default::default()
    }
}

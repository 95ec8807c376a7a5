//! The committer and the compactor against real Delta tables on local disk.

use deltalake::datafusion::prelude::SessionContext;
use inferlog_capture::wal::{WalReader, WalWriter};
use inferlog_capture::LogWriterHandle;
use inferlog_core::Record;
use inferlog_core::Layout;
use inferlog_table::compaction::files_per_partition;
use inferlog_table::{compact_once, CompactionOptions, Committer, CommitterOptions};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A record's payload as the log writer frames it.
fn frame(record: &Record) -> Vec<u8> {
    let mut payload = Vec::new();
    inferlog_core::record::encode_log_record(record, &mut payload);
    payload
}

fn record(i: u64) -> Record {
    Record {
        request_id: format!("req-{i:06}"),
        client_request_id: (i % 2 == 0).then(|| format!("client-{i}")),
        // Two UTC days, so two partitions.
        timestamp_ms: 1_763_769_600_000 + (i % 2) as i64 * 86_400_000 + i as i64,
        endpoint_name: "iris".into(),
        model_name: "iris".into(),
        model_version: "1".into(),
        method: "POST".into(),
        path: "/invocations".into(),
        status_code: if i % 10 == 0 { 500 } else { 200 },
        execution_time_ms: Some(3),
        latency_ms: 4,
        sampling_fraction: 1.0,
        request: Some(format!("{{\"inputs\": [{i}]}}")),
        response: Some("{\"predictions\": [0]}".into()),
        request_content_type: Some("application/json".into()),
        response_content_type: Some("application/json".into()),
        request_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
        response_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
        request_bytes: 16,
        response_bytes: 20,
        logging_error_codes: if i % 7 == 0 { vec!["MAX_REQUEST_SIZE_EXCEEDED".into()] } else { vec![] },
        error: None,
        requester: None,
        request_metadata: [("user-agent".to_string(), "test".to_string())].into_iter().collect(),
        ..Default::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    wal: WalWriter,
    log: Arc<LogWriterHandle>,
    next: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let wal_dir = data_dir.join("wal/iris");
        let log_bytes = Arc::new(AtomicU64::new(0));
        let wal = WalWriter::open(&wal_dir, "test-writer", 1, 1 << 16, log_bytes.clone()).unwrap();
        let log = Arc::new(LogWriterHandle {
            dir: wal_dir,
            log_bytes,
            last_logged: Arc::new(AtomicU64::new(0)),
            committed: Arc::new(AtomicU64::new(0)),
        });
        Fixture { _dir: dir, data_dir, wal, log, next: 0 }
    }

    fn append(&mut self, n: u64) {
        let payloads: Vec<Vec<u8>> = (self.next..self.next + n).map(|i| frame(&record(i))).collect();
        let last = self.wal.append(payloads.iter().map(Vec::as_slice)).unwrap();
        self.log.last_logged.store(last, std::sync::atomic::Ordering::Release);
        self.next += n;
    }

    fn committer(&self) -> Committer {
        Committer {
            endpoint: "iris".into(),
            url: Layout::local(&self.data_dir).unwrap().table("iris_payload"),
            app_id: "inferlog-test-iris".into(),
            log: self.log.clone(),
            offload_spool: None,
            options: CommitterOptions { max_batch_records: 1000, checkpoint_interval: 10, ..CommitterOptions::default() },
            last_commit_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

async fn sql(data_dir: &Path, q: &str) -> Vec<u64> {
    let url = Layout::local(data_dir).unwrap().table("iris_payload");
    let table = deltalake::open_table(url).await.unwrap();
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", table.table_provider().await.unwrap()).unwrap();
    let batches = ctx.sql(q).await.unwrap().collect().await.unwrap();
    let batch = batches.iter().find(|b| b.num_rows() > 0).expect("one row");
    // The first row's columns.
    batch
        .columns()
        .iter()
        .map(|c| c.as_any().downcast_ref::<deltalake::arrow::array::Int64Array>().unwrap().value(0) as u64)
        .collect()
}

async fn rows_and_distinct(data_dir: &Path) -> (u64, u64) {
    let v = sql(data_dir, "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM t").await;
    (v[0], v[1])
}

#[tokio::test]
async fn a_replayed_log_is_committed_exactly_once() {
    let mut fx = Fixture::new();
    fx.append(2500);
    let c = fx.committer();
    let (mut table, mut committed, mut reader) = (None, None, WalReader::new(&fx.log.dir));
    let p = c.pass(&mut table, &mut committed, &mut reader).await.unwrap();
    assert_eq!(p.records, 2500);
    assert_eq!(p.commits, 3, "batches of at most 1000 records");
    assert_eq!(rows_and_distinct(&fx.data_dir).await, (2500, 2500));

    // A restart that finds the log still holding committed records (as after a crash between
    // commit and segment deletion) reads them again from the beginning, and skips them.
    fx.append(100);
    let c = fx.committer();
    let (mut table, mut committed) = (None, None);
    let mut reader = WalReader::new(&fx.log.dir);
    let p = c.pass(&mut table, &mut committed, &mut reader).await.unwrap();
    assert_eq!(p.records, 100, "only the new records");
    assert_eq!(committed, Some(2600));
    assert_eq!(rows_and_distinct(&fx.data_dir).await, (2600, 2600));
    // Segments fully committed are gone; the active one stays.
    let segments = inferlog_capture::wal::list_segments(&fx.log.dir).unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
}

#[tokio::test]
async fn a_commit_holds_at_most_max_batch_bytes_of_logged_records() {
    let mut fx = Fixture::new();
    fx.append(300);
    let max_batch_bytes = 2048;
    // A batch ends with the record that takes it to the limit.
    let mut expected_commits = 0;
    let mut in_batch = 0;
    for i in 0..300 {
        if in_batch == 0 {
            expected_commits += 1;
        }
        in_batch += frame(&record(i)).len();
        if in_batch >= max_batch_bytes {
            in_batch = 0;
        }
    }
    assert!(expected_commits > 20, "the limit splits the log: {expected_commits}");
    let c = Committer {
        options: CommitterOptions { max_batch_records: 1000, max_batch_bytes, ..CommitterOptions::default() },
        ..fx.committer()
    };
    let (mut table, mut committed, mut reader) = (None, None, WalReader::new(&fx.log.dir));
    let p = c.pass(&mut table, &mut committed, &mut reader).await.unwrap();
    assert_eq!(p.records, 300);
    assert_eq!(p.commits, expected_commits);
    assert_eq!(table.unwrap().version(), Some(expected_commits), "one table version per batch after creation");
    assert_eq!(rows_and_distinct(&fx.data_dir).await, (300, 300));
}

#[tokio::test]
async fn records_wait_in_the_log_while_the_table_cannot_be_written() {
    let mut fx = Fixture::new();
    fx.append(50);
    // Storage down: the table's folder is blocked by a file.
    let table_dir = fx.data_dir.join("tables/iris_payload");
    std::fs::create_dir_all(fx.data_dir.join("tables")).unwrap();
    std::fs::write(&table_dir, b"not a directory").unwrap();
    let c = Committer {
        url: url::Url::from_directory_path(&table_dir).unwrap(),
        ..fx.committer_unchecked()
    };
    let (mut table, mut committed, mut reader) = (None, None, WalReader::new(&fx.log.dir));
    assert!(c.pass(&mut table, &mut committed, &mut reader).await.is_err());
    assert_eq!(WalReader::new(&fx.log.dir).read_after(0, 1000, usize::MAX).unwrap().len(), 50, "nothing left the log");
    fx.append(25);
    std::fs::remove_file(&table_dir).unwrap();
    let (mut table, mut committed) = (None, None);
    let p = c.pass(&mut table, &mut committed, &mut reader).await.unwrap();
    assert_eq!(p.records, 75);
    assert_eq!(rows_and_distinct(&fx.data_dir).await, (75, 75));
}

impl Fixture {
    /// A committer whose URL is set by the caller (the table folder may not exist yet).
    fn committer_unchecked(&self) -> Committer {
        Committer {
            endpoint: "iris".into(),
            url: url::Url::parse("file:///nonexistent/").unwrap(),
            app_id: "inferlog-test-iris".into(),
            log: self.log.clone(),
            offload_spool: None,
            options: CommitterOptions { max_batch_records: 1000, ..CommitterOptions::default() },
            last_commit_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

#[tokio::test]
async fn compaction_keeps_every_row_exactly_once_while_appends_continue() {
    let mut fx = Fixture::new();
    let c = fx.committer();
    let (mut table, mut committed, mut reader) = (None, None, WalReader::new(&fx.log.dir));
    for _ in 0..40 {
        fx.append(10);
        c.pass(&mut table, &mut committed, &mut reader).await.unwrap();
    }
    // Checkpoints keep readers from replaying every commit (interval 10 in this fixture).
    let log_dir = fx.data_dir.join("tables/iris_payload/_delta_log");
    let checkpoints = std::fs::read_dir(&log_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".checkpoint.parquet"))
        .count();
    assert!(checkpoints >= 3, "{checkpoints} checkpoints after 41 commits");
    assert!(log_dir.join("_last_checkpoint").exists());

    let url = Layout::local(&fx.data_dir).unwrap().table("iris_payload");
    let before = files_per_partition(&deltalake::open_table(url.clone()).await.unwrap()).unwrap();
    assert_eq!(before.len(), 2);
    assert!(before.values().all(|n| *n == 40), "{before:?}");

    let options = CompactionOptions { min_files: 8, ..CompactionOptions::default() };
    let compaction = tokio::spawn({
        let url = url.clone();
        async move { compact_once(&url, &options).await }
    });
    for _ in 0..10 {
        fx.append(10);
        c.pass(&mut table, &mut committed, &mut reader).await.unwrap();
    }
    let report = compaction.await.unwrap().unwrap();
    assert_eq!(report.partitions.len(), 2);
    assert!(report.files_removed >= 80, "{report:?}");

    assert_eq!(rows_and_distinct(&fx.data_dir).await, (500, 500));
    let after = files_per_partition(&deltalake::open_table(url.clone()).await.unwrap()).unwrap();
    assert!(after.values().all(|n| *n <= 11), "{after:?}");
    // Values survive the rewrite, not just the count.
    let sums = sql(&fx.data_dir, "SELECT sum(CAST(substr(request_id, 5) AS BIGINT)) FROM t").await;
    assert_eq!(sums[0], (0..500).sum::<u64>());
    let errors = sql(&fx.data_dir, "SELECT count(*) FROM t WHERE status_code = 500 AND cardinality(logging_error_codes) >= 0").await;
    assert_eq!(errors[0], 50);
}

#[tokio::test]
async fn a_table_made_before_the_llm_columns_gains_them_on_the_next_commit() {
    let mut fx = Fixture::new();
    // The payload table as the first release created it: without the columns added since.
    let full = inferlog_table::schema::payload_schema();
    let added = ["response_stream", "time_to_first_token_ms", "stream_chunks", "stream_status", "prompt_tokens",
        "completion_tokens", "total_tokens", "llm_model", "served_target", "shadow_of"];
    let old = deltalake::arrow::datatypes::Schema::new(
        full.fields().iter().filter(|f| !added.contains(&f.name().as_str())).cloned().collect::<Vec<_>>(),
    );
    let url = Layout::local(&fx.data_dir).unwrap().table("iris_payload");
    let table = inferlog_table::table::open_or_create_with(&url, &old, &["date"], 10).await.unwrap();
    assert_eq!(table.snapshot().unwrap().schema().fields().count(), old.fields().len());

    // Old log segments (JSON records without the new keys) and new records both commit.
    let old_record = {
        let mut v = serde_json::to_value(record(0)).unwrap();
        for k in added {
            v.as_object_mut().unwrap().remove(k);
        }
        serde_json::to_vec(&v).unwrap()
    };
    let last = fx.wal.append([old_record.as_slice()]).unwrap();
    fx.log.last_logged.store(last, std::sync::atomic::Ordering::Release);
    fx.next = 1;
    fx.append(9);
    let c = fx.committer();
    let (mut t, mut committed, mut reader) = (None, None, WalReader::new(&fx.log.dir));
    assert_eq!(c.pass(&mut t, &mut committed, &mut reader).await.unwrap().records, 10);
    let table = deltalake::open_table(url).await.unwrap();
    let names: Vec<String> = table.snapshot().unwrap().schema().fields().map(|f| f.name().clone()).collect();
    assert!(added.iter().all(|c| names.contains(&c.to_string())), "{names:?}");
    assert_eq!(rows_and_distinct(&fx.data_dir).await, (10, 10));
    assert_eq!(sql(&fx.data_dir, "SELECT count(*) FROM t WHERE stream_status IS NULL AND served_target IS NULL").await, [10]);
}

#[tokio::test]
async fn offloaded_bodies_go_from_the_spool_beside_the_table_before_their_commit() {
    let mut fx = Fixture::new();
    let spool = fx.data_dir.join("offload/iris");
    // Two records with offloaded bodies: one still in the spool, one whose file is gone from
    // both the spool and the table (a disk replaced between the upload and a crash, say).
    let mut with_file = record(1);
    with_file.request_offload = Some("_offload/2025-11-22/req-000001.request".into());
    let mut lost = record(2);
    lost.request_offload = Some("_offload/2025-11-22/req-000002.request".into());
    std::fs::create_dir_all(spool.join("_offload/2025-11-22")).unwrap();
    std::fs::write(spool.join("_offload/2025-11-22/req-000001.request"), b"the whole body").unwrap();
    let payloads: Vec<Vec<u8>> = [with_file, lost].iter().map(frame).collect();
    let last = fx.wal.append(payloads.iter().map(Vec::as_slice)).unwrap();
    fx.log.last_logged.store(last, std::sync::atomic::Ordering::Release);
    fx.next = 3;
    let c = Committer { offload_spool: Some(spool.clone()), ..fx.committer() };
    let (mut table, mut committed, mut reader) = (None, None, WalReader::new(&fx.log.dir));
    let p = c.pass(&mut table, &mut committed, &mut reader).await.unwrap();
    assert_eq!(p.records, 2);
    let table_dir = fx.data_dir.join("tables/iris_payload");
    assert_eq!(std::fs::read(table_dir.join("_offload/2025-11-22/req-000001.request")).unwrap(), b"the whole body");
    assert!(!spool.join("_offload/2025-11-22/req-000001.request").exists(), "committed: out of the spool");
    let url = Layout::local(&fx.data_dir).unwrap().table("iris_payload");
    let table = deltalake::open_table(url).await.unwrap();
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", table.table_provider().await.unwrap()).unwrap();
    let batches = ctx
        .sql("SELECT request_id, request_offload, array_to_string(logging_error_codes, ',') AS codes FROM t ORDER BY request_id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = deltalake::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(text.contains("| req-000001 | _offload/2025-11-22/req-000001.request |"), "{text}");
    assert!(text.contains("| req-000002 |                                        | MAX_REQUEST_SIZE_EXCEEDED,OFFLOAD_FAILED |"), "{text}");
}

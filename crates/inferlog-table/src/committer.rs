//! The committer: moves records from an endpoint's write-ahead log into its Delta table.
//!
//! Exactly once: every commit carries the application transaction `(app_id, last LSN)` in
//! the same atomic Delta commit as its rows. On start, and after any failed attempt, the
//! committer asks the table for its `app_id`'s transaction version and continues after it,
//! so a batch that did commit (even when the call reported an error afterwards) is never
//! written twice, and one that did not is retried. Log segments are released only after
//! the commit holding their records has succeeded.
//!
//! Offloaded bodies of a table on an object store wait in the endpoint's spool: a batch's
//! files are uploaded beside the table before its commit (on every attempt, so the upload
//! is never older than the commit that names it) and removed from the spool after it. Once
//! the first pass after a start has committed everything logged before the start, spool files
//! older than the start are leftovers of commits that landed before a crash, and go.

use crate::schema::{records_to_batch, writer_properties, PARTITION_COLUMN};
use crate::table::{committed_lsn, open_or_create, TableError};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use inferlog_capture::wal::WalReader;
use inferlog_capture::LogWriterHandle;
use inferlog_core::Record;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use url::Url;

/// The longest wait between failed commit attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct CommitterOptions {
    /// Pending records are committed at least this often.
    pub interval: Duration,
    pub checkpoint_interval: u64,
    /// Largest batch per commit, in records and in payload bytes.
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
}

impl Default for CommitterOptions {
    fn default() -> Self {
        CommitterOptions {
            interval: Duration::from_secs(1),
            checkpoint_interval: 100,
            max_batch_records: 50_000,
            max_batch_bytes: 32 << 20,
        }
    }
}

pub struct Committer {
    pub endpoint: String,
    pub url: Url,
    /// Identifies this gateway's log among the writers of the table.
    pub app_id: String,
    pub log: Arc<LogWriterHandle>,
    /// Where offloaded bodies wait for their commit, for tables on an object store.
    pub offload_spool: Option<std::path::PathBuf>,
    pub options: CommitterOptions,
    /// Unix time (ms) of the last successful commit, for the `/metrics` age gauge.
    pub last_commit_ms: Arc<AtomicU64>,
}

/// The result of one pass over the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub commits: u64,
    pub records: u64,
    /// Other writers' commits met at commit time (and committed after).
    pub conflicts: u64,
}

impl Committer {
    /// Runs until `shutdown` turns true, then commits what remains in the log and returns.
    /// Table errors never stop it: records stay in the log and are retried with backoff.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut table: Option<DeltaTable> = None;
        let mut committed: Option<u64> = None;
        let mut reader = WalReader::new(&self.log.dir);
        let mut backoff = self.options.interval;
        let mut stop_attempts = 0;
        let committed_counter =
            metrics::counter!("inferlog_capture_records_committed_total", "endpoint" => self.endpoint.clone());
        let last_commit = metrics::gauge!("inferlog_table_last_commit_timestamp_seconds", "endpoint" => self.endpoint.clone());
        let failures = metrics::counter!("inferlog_table_commit_failures_total", "endpoint" => self.endpoint.clone());
        let conflicts = metrics::counter!("inferlog_table_commit_conflicts_total", "endpoint" => self.endpoint.clone());
        let run_started = SystemTime::now();
        let mut spool_swept = self.offload_spool.is_none();
        loop {
            let stopping = *shutdown.borrow();
            let started = Instant::now();
            match self.pass(&mut table, &mut committed, &mut reader).await {
                Ok(progress) => {
                    backoff = self.options.interval;
                    conflicts.increment(progress.conflicts);
                    if !spool_swept {
                        spool_swept = true;
                        self.sweep_spool(run_started).await;
                    }
                    if progress.records > 0 {
                        committed_counter.increment(progress.records);
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                        last_commit.set(now.as_secs_f64());
                        self.last_commit_ms.store(now.as_millis() as u64, Ordering::Relaxed);
                        tracing::debug!(endpoint = %self.endpoint, records = progress.records, commits = progress.commits,
                            elapsed_ms = started.elapsed().as_millis() as u64, "committed");
                    }
                }
                Err(e) => {
                    failures.increment(1);
                    // Forget what we believed: the next pass re-reads the table's own record.
                    table = None;
                    committed = None;
                    tracing::warn!(endpoint = %self.endpoint, error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "cannot commit captured records; they stay in the log and will be retried");
                    if stopping {
                        stop_attempts += 1;
                        if stop_attempts >= 3 {
                            tracing::error!(endpoint = %self.endpoint, "giving up the last commit; the records stay in the log for the next start");
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    // Jittered, so gateways whose commits keep meeting do not retry in step.
                    let jittered = backoff.mul_f64(rand::random_range(0.75..1.25));
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = shutdown.changed() => {}
                    }
                    // Capped low: once the cause clears (a disk with space again) capture catches up in seconds.
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            if stopping {
                return;
            }
            let wait = self.options.interval.saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Commits everything currently in the log, in batches.
    pub async fn pass(
        &self,
        table: &mut Option<DeltaTable>,
        committed: &mut Option<u64>,
        reader: &mut WalReader,
    ) -> crate::Result<Progress> {
        let mut progress = Progress::default();
        if table.is_none() {
            *table = Some(open_or_create(&self.url, self.options.checkpoint_interval).await?);
        }
        let t = table.as_mut().expect("opened above");
        let after = match *committed {
            Some(c) => c,
            None => {
                t.update_state().await.map_err(|e| TableError::Delta { url: self.url.to_string(), source: e })?;
                let c = committed_lsn(t, &self.app_id).await?;
                *committed = Some(c);
                // Segments fully held by the table may still be on disk after a crash.
                self.release(c);
                c
            }
        };
        let mut after = after;
        // Everything logged before this pass started is committed by its end; records logged
        // meanwhile wait for the next pass, so a busy log cannot keep a pass going forever.
        let target = self.log.last_logged.load(Ordering::Acquire);
        while after < target {
            let (records, last) = self.read_batch(reader, after).await?;
            let Some(last) = last else { break };
            if !records.is_empty() {
                let mut records = records;
                let uploaded = match &self.offload_spool {
                    Some(spool) => upload_side_files(t, spool, &mut records).await?,
                    None => Vec::new(),
                };
                let batch = records_to_batch(&records)?;
                let count = records.len() as u64;
                // The batch holds its own copy: the decoded records are not needed while writing.
                drop(records);
                let read_version = t.version();
                let props = CommitProperties::default()
                    .with_application_transaction(Transaction::new(self.app_id.clone(), last as i64));
                let written = t
                    .clone()
                    .write(vec![batch])
                    .with_save_mode(SaveMode::Append)
                    // Tables made before a column was added gain it here.
                    .with_schema_mode(SchemaMode::Merge)
                    .with_partition_columns([PARTITION_COLUMN])
                    .with_writer_properties(writer_properties())
                    .with_commit_properties(props)
                    .await
                    .map_err(|e| TableError::Delta { url: self.url.to_string(), source: e })?;
                // Commits of other writers that landed since this table was read: each was
                // checked for conflicts and this commit went after it.
                if let (Some(read), Some(now)) = (read_version, written.version()) {
                    progress.conflicts += (now - read - 1).max(0) as u64;
                }
                *t = written;
                progress.commits += 1;
                if let Some(spool) = &self.offload_spool {
                    remove_from_spool(spool, &uploaded).await;
                }
                progress.records += count;
            }
            after = last;
            *committed = Some(last);
            self.release(last);
        }
        // Also frees segments the log writer sealed while nothing new arrived.
        self.release(after);
        Ok(progress)
    }

    /// Reads and decodes the next batch after `after`; returns the records and the last LSN
    /// read (records that cannot be decoded are skipped and counted).
    async fn read_batch(&self, reader: &mut WalReader, after: u64) -> crate::Result<(Vec<Record>, Option<u64>)> {
        let max_records = self.options.max_batch_records;
        let max_bytes = self.options.max_batch_bytes;
        let dir = self.log.dir.clone();
        let mut owned = std::mem::replace(reader, WalReader::new(&dir));
        let endpoint = self.endpoint.clone();
        let (owned, result) = tokio::task::spawn_blocking(move || {
            let entries = owned.read_after(after, max_records, max_bytes);
            let result = entries.map(|entries| {
                let last = entries.last().map(|e| e.lsn);
                let mut records = Vec::with_capacity(entries.len());
                for e in entries {
                    match inferlog_core::record::decode_log_record(&e.payload) {
                        Ok(mut r) => {
                            r.fill_llm_facts();
                            records.push(r)
                        }
                        Err(err) => {
                            inferlog_capture::queue::count_dropped(&endpoint, inferlog_capture::queue::UNDECODABLE, 1);
                            tracing::error!(endpoint = %endpoint, lsn = e.lsn, error = %err, "skipping an undecodable log record");
                        }
                    }
                }
                (records, last)
            });
            (owned, result)
        })
        .await
        .expect("log reader task");
        *reader = owned;
        result.map_err(|e| TableError::Log { path: dir.display().to_string(), source: e })
    }

    /// Removes spool files older than `started`: their records were committed before a crash.
    async fn sweep_spool(&self, started: SystemTime) {
        let Some(spool) = self.offload_spool.clone() else { return };
        let swept = tokio::task::spawn_blocking(move || remove_older_than(&spool, started))
        .await
        .unwrap_or(0);
        if swept > 0 {
            tracing::info!(endpoint = %self.endpoint, files = swept, "removed offloaded bodies committed before the last stop from the spool");
        }
    }

    fn release(&self, committed: u64) {
        // Never past what the writer has written: a fresh log's floor must survive.
        let upto = committed.min(self.log.last_logged.load(Ordering::Acquire));
        if let Err(e) = self.log.release(upto) {
            tracing::warn!(endpoint = %self.endpoint, error = %e, "cannot delete committed log segments");
        }
    }
}

/// Uploads the offloaded bodies the records name from `spool` to the same paths beside the
/// table; returns those paths. A body no longer in the spool must already be beside the
/// table (its upload and commit went through before a crash); if it is not there either,
/// the row keeps its prefix and says `offload_failed`.
async fn upload_side_files(table: &DeltaTable, spool: &std::path::Path, records: &mut [Record]) -> crate::Result<Vec<String>> {
    use deltalake::logstore::object_store::{path::Path as StorePath, ObjectStoreExt as _};
    use inferlog_core::record::{MAX_REQUEST_SIZE_EXCEEDED, MAX_RESPONSE_SIZE_EXCEEDED, OFFLOAD_FAILED};
    let store = table.object_store();
    let url = table.table_url().to_string();
    let failed = |e: deltalake::logstore::object_store::Error| TableError::Delta { url: url.clone(), source: e.into() };
    let mut uploaded = Vec::new();
    for record in records.iter_mut() {
        for (pointer, cut_code) in [
            (&mut record.request_offload, MAX_REQUEST_SIZE_EXCEEDED),
            (&mut record.response_offload, MAX_RESPONSE_SIZE_EXCEEDED),
        ] {
            let Some(relative) = pointer.clone().filter(|p| inferlog_core::record::is_offload_path(p)) else { continue };
            let location = StorePath::from(relative.as_str());
            match tokio::fs::read(spool.join(&relative)).await {
                Ok(bytes) => {
                    store.put(&location, bytes.into()).await.map_err(failed)?;
                    uploaded.push(relative);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match store.head(&location).await {
                    Ok(_) => {}
                    Err(deltalake::logstore::object_store::Error::NotFound { .. }) => {
                        tracing::warn!(endpoint = %record.endpoint_name, request_id = %record.request_id, file = %relative,
                            "an offloaded body is neither in the spool nor beside the table; the row keeps its prefix");
                        *pointer = None;
                        for code in [cut_code, OFFLOAD_FAILED] {
                            if !record.logging_error_codes.iter().any(|c| c == code) {
                                record.logging_error_codes.push(code.to_string());
                            }
                        }
                    }
                    Err(e) => return Err(failed(e)),
                },
                Err(source) => return Err(TableError::Log { path: spool.join(&relative).display().to_string(), source }),
            }
        }
    }
    Ok(uploaded)
}

/// Removes committed bodies from the spool (a file left behind goes with the next start's sweep).
async fn remove_from_spool(spool: &std::path::Path, relative: &[String]) {
    for path in relative {
        let _ = tokio::fs::remove_file(spool.join(path)).await;
    }
}

/// Removes every file under `dir` last modified before `before` (half-written `.tmp` files
/// too), then the folders left empty; returns how many files went.
fn remove_older_than(dir: &std::path::Path, before: SystemTime) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            removed += remove_older_than(&path, before);
            // Only succeeds when the folder is empty.
            let _ = std::fs::remove_dir(&path);
        } else if entry.metadata().and_then(|m| m.modified()).is_ok_and(|m| m < before) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_sweep_removes_what_is_older_than_the_start_at_any_depth() {
        let spool = tempfile::tempdir().unwrap();
        let day = spool.path().join("_offload/2026-12-01");
        std::fs::create_dir_all(&day).unwrap();
        let start = SystemTime::now();
        for (name, age_s) in [("old.request", 7200), ("half.tmp", 7200), ("new.response", 0)] {
            let path = day.join(name);
            std::fs::write(&path, b"x").unwrap();
            let modified = if age_s > 0 { start - Duration::from_secs(age_s) } else { start + Duration::from_secs(60) };
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(modified).unwrap();
        }
        let empty_day = spool.path().join("_offload/2026-11-30");
        std::fs::create_dir_all(&empty_day).unwrap();
        assert_eq!(remove_older_than(spool.path(), start), 2);
        assert!(day.join("new.response").exists() && !day.join("old.request").exists() && !day.join("half.tmp").exists());
        assert!(!empty_day.exists(), "empty folders go too");
    }
}

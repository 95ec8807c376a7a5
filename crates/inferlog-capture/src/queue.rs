//! The bounded queue between the request path and the log writer thread.
//!
//! A full queue, a log at its size cap or a disk down to its free-space reserve drops the
//! record and counts it: capture never blocks a request. In `sync` and `fsync` durability the caller gets a receiver that
//! resolves once its record is in the log; the writer acknowledges whole groups of records
//! at once (group commit), so one write and at most one fdatasync serve many requests.

use crate::wal::{WalWriter, delete_committed};
use inferlog_core::record::encode_log_record;
use inferlog_core::{Durability, Record};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Records taken from the queue in one group, at most.
const GROUP_MAX: usize = 4096;
/// A segment is sealed once it is this large.
pub const SEGMENT_MAX_BYTES: u64 = 64 << 20;

struct Pending {
    record: Record,
    ack: Option<oneshot::Sender<()>>,
    bytes: u64,
}

/// What a record weighs in the queue: its bodies plus a fixed allowance for the rest.
fn weight(record: &Record) -> u64 {
    let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
    (text(&record.request) + text(&record.response) + text(&record.response_stream) + 512) as u64
}

/// A group stops growing past this many bytes, so one write stays bounded.
const GROUP_MAX_BYTES: u64 = 8 << 20;

/// In `async` durability, how long the writer lets records gather after the first of a group
/// before it takes them. Nobody waits for an async record's write, and while the writer
/// sleeps, submitting is a push onto the queue: without the pause, a writer as fast as the
/// requests is woken (a futex call on the request path, a context switch on a small machine)
/// for nearly every record. `sync` and `fsync` callers wait for the write, so they get none.
const ASYNC_GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// Why a record will never reach the table: the `reason` of `inferlog_capture_dropped_total`.
pub const QUEUE_FULL: &str = "queue_full";
pub const LOG_FULL: &str = "log_full";
/// Free space on the log's disk is below `log_min_free_bytes`.
pub const LOW_DISK_SPACE: &str = "low_disk_space";
pub const LOG_WRITE_ERROR: &str = "log_write_error";
pub const SHUTTING_DOWN: &str = "shutting_down";
/// A log record the committer cannot decode.
pub const UNDECODABLE: &str = "undecodable";
pub const DROP_REASONS: [&str; 6] = [QUEUE_FULL, LOG_FULL, LOW_DISK_SPACE, LOG_WRITE_ERROR, SHUTTING_DOWN, UNDECODABLE];

/// Counts records that will never reach the table, by reason.
pub fn count_dropped(endpoint: &str, reason: &'static str, records: u64) {
    metrics::counter!("inferlog_capture_dropped_total", "endpoint" => endpoint.to_string(), "reason" => reason)
        .increment(records);
}

/// Token counts of the captured LLM exchanges of an endpoint (shadow copies aside), observed
/// as their records are logged.
struct TokenHistograms {
    prompt: metrics::Histogram,
    completion: metrics::Histogram,
}

impl TokenHistograms {
    fn new(endpoint: &str) -> Self {
        TokenHistograms {
            prompt: metrics::histogram!("inferlog_llm_prompt_tokens", "endpoint" => endpoint.to_string()),
            completion: metrics::histogram!("inferlog_llm_completion_tokens", "endpoint" => endpoint.to_string()),
        }
    }

    fn observe(&self, record: &Record) {
        if record.shadow_of.is_some() {
            return;
        }
        if let Some(n) = record.prompt_tokens {
            self.prompt.record(n as f64);
        }
        if let Some(n) = record.completion_tokens {
            self.completion.record(n as f64);
        }
    }
}

/// What became of a submitted record.
#[derive(Debug)]
pub enum SubmitOutcome {
    /// Queued; in `async` durability nothing more will be heard.
    Queued,
    /// Queued; resolves once the record is in the log (`sync`/`fsync`). An error means the
    /// log write failed and the record was dropped (and counted).
    AwaitLog(oneshot::Receiver<()>),
    /// Not captured; the reason is counted in `inferlog_capture_dropped_total`. (A record
    /// refused by the log writer — log full or a write error — is counted there too, and a
    /// `sync` caller sees its `AwaitLog` receiver fail.)
    Dropped(&'static str),
}

/// The request path's side of an endpoint's capture. Cheap to clone.
#[derive(Clone)]
pub struct CaptureHandle {
    endpoint: Arc<str>,
    tx: mpsc::Sender<Pending>,
    durability: Durability,
    log_bytes: Arc<AtomicU64>,
    capacity: usize,
    queued_bytes: Arc<AtomicU64>,
    queue_max_bytes: u64,
}

impl CaptureHandle {
    pub fn submit(&self, record: Record) -> SubmitOutcome {
        let bytes = weight(&record);
        // Bounded in bytes as well as in records: large payloads cannot exhaust memory.
        if self.queued_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes > self.queue_max_bytes {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return self.dropped(QUEUE_FULL);
        }
        let (ack, outcome) = match self.durability {
            Durability::Async => (None, None),
            Durability::Sync | Durability::Fsync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        match self.tx.try_send(Pending { record, ack, bytes }) {
            Ok(()) => match outcome {
                Some(rx) => SubmitOutcome::AwaitLog(rx),
                None => SubmitOutcome::Queued,
            },
            Err(e) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => self.dropped(QUEUE_FULL),
                    mpsc::error::TrySendError::Closed(_) => self.dropped(SHUTTING_DOWN),
                }
            }
        }
    }

    fn dropped(&self, reason: &'static str) -> SubmitOutcome {
        count_dropped(&self.endpoint, reason, 1);
        SubmitOutcome::Dropped(reason)
    }

    /// Records waiting in the queue.
    pub fn queued(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }
}

/// The log writer thread and what the committer needs to share with it.
pub struct LogWriterHandle {
    pub dir: PathBuf,
    pub log_bytes: Arc<AtomicU64>,
    /// Highest LSN written to the log so far.
    pub last_logged: Arc<AtomicU64>,
    /// Highest LSN the table holds, as last reported by the committer.
    pub committed: Arc<AtomicU64>,
}

impl LogWriterHandle {
    /// Records written to the log and not yet in the table: how far capture lags behind.
    pub fn uncommitted(&self) -> u64 {
        self.last_logged.load(Ordering::Acquire).saturating_sub(self.committed.load(Ordering::Acquire))
    }

    /// Records that the table holds every record up to `committed`, and deletes the segments
    /// that made obsolete.
    pub fn release(&self, committed: u64) -> std::io::Result<u64> {
        self.committed.fetch_max(committed, Ordering::AcqRel);
        delete_committed(&self.dir, committed, &self.log_bytes)
    }
}

/// What the log writer does to records before writing them.
#[derive(Default)]
pub struct Prepare {
    pub redactor: Option<Arc<crate::redact::Redactor>>,
    pub offloader: Option<crate::offload::Offloader>,
    /// Written into every record's `gateway_id`.
    pub gateway_id: Option<String>,
}

/// An endpoint's log: whose it is, its durability and its bounds.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The writer identity (`instance.id`) recorded in each segment's header.
    pub writer: String,
    pub durability: Durability,
    /// Records waiting in the queue, at most.
    pub queue_capacity: usize,
    /// Payload bytes waiting in the queue, at most.
    pub queue_max_bytes: u64,
    /// The log's size on disk, at most.
    pub log_max_bytes: u64,
    /// Free space the log leaves on its file system, so that the commits which empty it can
    /// still write their Parquet files.
    pub log_min_free_bytes: u64,
}

/// Bytes available to this process on the file system holding `path`; `None` if unknown.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer statvfs fills on success.
    if unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let stat = unsafe { stat.assume_init() };
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Logs a condition that drops records once when it starts and once when it ends, however
/// many groups it refuses in between (a full disk must not flood the log).
struct Condition {
    active: bool,
}

impl Condition {
    fn set(&mut self, active: bool, endpoint: &str, what: &str, detail: &dyn std::fmt::Display) {
        if active && !self.active {
            tracing::warn!(endpoint, detail = %detail, "{what}: captured records are dropped until it clears");
        } else if !active && self.active {
            tracing::info!(endpoint, "{what}: cleared, capturing again");
        }
        self.active = active;
    }
}

/// Opens the endpoint's log (recovering it) and starts its writer thread. The thread ends
/// once every [`CaptureHandle`] is dropped and the queue is drained.
pub fn start_log_writer(
    endpoint: &str,
    dir: &Path,
    min_next_lsn: u64,
    options: LogOptions,
    prepare: Prepare,
) -> std::io::Result<(CaptureHandle, LogWriterHandle, std::thread::JoinHandle<()>)> {
    let LogOptions { writer, durability, queue_capacity, queue_max_bytes, log_max_bytes, log_min_free_bytes } = options;
    let log_bytes = Arc::new(AtomicU64::new(0));
    // Segments are sealed well before the cap, so committed ones can be deleted in time.
    let segment_max = SEGMENT_MAX_BYTES.min((log_max_bytes / 4).max(4096));
    let mut wal = WalWriter::open(dir, &writer, min_next_lsn, segment_max, log_bytes.clone())?;
    let last_logged = Arc::new(AtomicU64::new(wal.next_lsn() - 1));
    let committed = Arc::new(AtomicU64::new(min_next_lsn.saturating_sub(1)));
    let (tx, mut rx) = mpsc::channel::<Pending>(queue_capacity);
    let queued_bytes = Arc::new(AtomicU64::new(0));
    let name: Arc<str> = Arc::from(endpoint);
    // Every reason from the start, at 0: alert rules can be written before the first drop.
    for reason in DROP_REASONS {
        count_dropped(endpoint, reason, 0);
    }
    let thread = {
        let name = name.clone();
        let last_logged = last_logged.clone();
        let log_bytes = log_bytes.clone();
        let committed = committed.clone();
        let queued = queued_bytes.clone();
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name(format!("log-{endpoint}"))
            .spawn(move || {
                let logged = metrics::counter!("inferlog_capture_records_logged_total", "endpoint" => name.to_string());
                let tokens = TokenHistograms::new(&name);
                let mut group: Vec<Pending> = Vec::with_capacity(GROUP_MAX);
                // The group's frame payloads, end to end, and where each ends: one buffer reused.
                let mut payloads: Vec<u8> = Vec::new();
                let mut payload_ends: Vec<usize> = Vec::with_capacity(GROUP_MAX);
                let (mut full, mut low_space, mut failing) =
                    (Condition { active: false }, Condition { active: false }, Condition { active: false });
                while let Some(first) = rx.blocking_recv() {
                    if durability == Durability::Async {
                        std::thread::sleep(ASYNC_GATHER);
                    }
                    let mut group_bytes = first.bytes;
                    group.push(first);
                    while group.len() < GROUP_MAX && group_bytes < GROUP_MAX_BYTES {
                        match rx.try_recv() {
                            Ok(p) => {
                                group_bytes += p.bytes;
                                group.push(p);
                            }
                            Err(_) => break,
                        }
                    }
                    // Everything written is in the table: seal the active segment so that the
                    // committer deletes it, rather than keep committed records on disk until the
                    // segment is full. (If even that cannot be written, the segment stays.)
                    if wal.has_records() && committed.load(Ordering::Acquire) >= last_logged.load(Ordering::Acquire) {
                        let _ = wal.roll();
                    }
                    let refused = if log_bytes.load(Ordering::Relaxed) >= log_max_bytes {
                        Some(LOG_FULL)
                    } else if free_bytes(&dir).is_some_and(|free| free < log_min_free_bytes) {
                        Some(LOW_DISK_SPACE)
                    } else {
                        None
                    };
                    full.set(refused == Some(LOG_FULL), &name, "the capture log is at log_max_bytes", &log_max_bytes);
                    low_space.set(refused == Some(LOW_DISK_SPACE), &name, "free disk space is below log_min_free_bytes", &log_min_free_bytes);
                    if let Some(reason) = refused {
                        count_dropped(&name, reason, group.len() as u64);
                        group.clear(); // dropping the ack senders tells sync callers
                        queued.fetch_sub(group_bytes, Ordering::AcqRel);
                        continue;
                    }
                    payloads.clear();
                    payload_ends.clear();
                    // Redaction happens here, before the first byte of a record is written.
                    if let Some(redactor) = &prepare.redactor {
                        group.iter_mut().for_each(|p| redactor.apply(&mut p.record));
                    }
                    // Token usage of plain JSON responses, read here off the request path while
                    // the whole body is at hand (streams have theirs from their events).
                    for p in group.iter_mut() {
                        if p.record.gateway_id.is_none() {
                            p.record.gateway_id.clone_from(&prepare.gateway_id);
                        }
                        p.record.fill_llm_facts();
                        tokens.observe(&p.record);
                    }
                    // Then oversize bodies, already redacted, go to their side files.
                    if let Some(offloader) = &prepare.offloader {
                        group.iter_mut().for_each(|p| offloader.apply(&mut p.record));
                    }
                    for p in &group {
                        encode_log_record(&p.record, &mut payloads);
                        payload_ends.push(payloads.len());
                    }
                    let written = wal
                        .append(payload_ends.iter().scan(0, |start, &end| Some(&payloads[std::mem::replace(start, end)..end])))
                        .and_then(|last| {
                            if durability == Durability::Fsync {
                                wal.sync()?;
                            }
                            Ok(last)
                        });
                    failing.set(written.is_err(), &name, "cannot write the capture log", &match &written {
                        Err(e) => e.to_string(),
                        Ok(_) => String::new(),
                    });
                    match written {
                        Ok(last) => {
                            last_logged.store(last, Ordering::Release);
                            logged.increment(group.len() as u64);
                            for p in group.drain(..) {
                                if let Some(ack) = p.ack {
                                    let _ = ack.send(());
                                }
                            }
                        }
                        Err(_) => {
                            count_dropped(&name, LOG_WRITE_ERROR, group.len() as u64);
                            group.clear(); // dropping the ack senders tells sync callers
                        }
                    }
                    // A group's records and their frames count against the queue's bound until
                    // they are written, so the bound holds for all the memory capture keeps.
                    payloads.clear();
                    if payloads.capacity() as u64 > GROUP_MAX_BYTES {
                        payloads = Vec::new(); // a group of large bodies: not kept for the next
                    }
                    queued.fetch_sub(group_bytes, Ordering::AcqRel);
                }
                if durability != Durability::Fsync {
                    // Shutting down: what was written reaches the disk before the process exits.
                    let _ = wal.sync();
                }
            })?
    };
    Ok((
        CaptureHandle {
            endpoint: name,
            tx,
            durability,
            log_bytes: log_bytes.clone(),
            capacity: queue_capacity,
            queued_bytes,
            queue_max_bytes,
        },
        LogWriterHandle {
            dir: dir.to_path_buf(),
            log_bytes,
            last_logged,
            committed,
        },
        thread,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalReader;
    use inferlog_core::record::decode_log_record;

    fn options(durability: Durability, queue_capacity: usize, queue_max_bytes: u64, log_max_bytes: u64) -> LogOptions {
        LogOptions {
            writer: "test-writer".into(),
            durability,
            queue_capacity,
            queue_max_bytes,
            log_max_bytes,
            log_min_free_bytes: 0,
        }
    }

    pub(crate) fn record(id: &str) -> Record {
        Record {
            request_id: id.into(),
            client_request_id: None,
            timestamp_ms: 1_700_000_000_000,
            endpoint_name: "iris".into(),
            model_name: "iris".into(),
            model_version: "1".into(),
            method: "POST".into(),
            path: "/invocations".into(),
            status_code: 200,
            execution_time_ms: Some(1),
            latency_ms: 2,
            sampling_fraction: 1.0,
            request: Some("{}".into()),
            response: Some("{}".into()),
            request_content_type: None,
            response_content_type: None,
            request_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
            response_encoding: Some(inferlog_core::record::BodyEncoding::Utf8),
            request_bytes: 2,
            response_bytes: 2,
            logging_error_codes: vec![],
            error: None,
            requester: None,
            request_metadata: Default::default(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn sync_submit_resolves_after_the_record_is_readable_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _log, writer) = start_log_writer("iris", dir.path(), 1, options(Durability::Sync, 16, u64::MAX, u64::MAX), Prepare::default()).unwrap();
        for i in 0..5 {
            match handle.submit(record(&format!("r{i}"))) {
                SubmitOutcome::AwaitLog(rx) => rx.await.unwrap(),
                other => panic!("unexpected {other:?}"),
            }
            let entries = WalReader::new(dir.path()).read_after(0, 100, usize::MAX).unwrap();
            assert_eq!(entries.len(), i + 1);
            let back = decode_log_record(&entries[i].payload).unwrap();
            assert_eq!(back.request_id, format!("r{i}"));
        }
        drop(handle);
        writer.join().unwrap();
    }

    async fn logged(handle: &CaptureHandle, id: &str) -> bool {
        match handle.submit(record(id)) {
            SubmitOutcome::AwaitLog(rx) => rx.await.is_ok(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn full_log_drops_until_committed_segments_are_released() {
        let dir = tempfile::tempdir().unwrap();
        // Room for a segment header and one record, not two: the log refuses records once it
        // is at its cap.
        let header = {
            let probe = tempfile::tempdir().unwrap();
            let (handle, _log, writer) = start_log_writer("iris", probe.path(), 1, options(Durability::Sync, 16, u64::MAX, u64::MAX), Prepare::default()).unwrap();
            let header = handle.log_bytes();
            drop(handle);
            writer.join().unwrap();
            header
        };
        let mut payload = Vec::new();
        encode_log_record(&record("a"), &mut payload);
        let frame = 16 + payload.len() as u64;
        let (handle, log, writer) =
            start_log_writer("iris", dir.path(), 1, options(Durability::Sync, 16, u64::MAX, header + frame), Prepare::default()).unwrap();
        assert_eq!(handle.log_bytes(), header, "a segment starts with its header");
        assert!(logged(&handle, "a").await);
        assert!(!logged(&handle, "b").await, "over the cap: dropped, and the caller is not kept waiting");
        // The table now holds record 1: the writer seals the segment, the committer deletes it.
        log.release(1).unwrap();
        assert!(!logged(&handle, "c").await);
        log.release(1).unwrap();
        assert_eq!(handle.log_bytes(), header, "only the new segment's header is left");
        assert!(logged(&handle, "d").await, "capture resumes once space is freed");
        drop(handle);
        writer.join().unwrap();
        let ids: Vec<String> = WalReader::new(dir.path())
            .read_after(0, 100, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| decode_log_record(&e.payload).unwrap().request_id)
            .collect();
        assert_eq!(ids, vec!["d"]);
    }

    #[tokio::test]
    async fn committed_records_leave_the_active_segment_without_waiting_for_it_to_fill() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, log, writer) = start_log_writer("iris", dir.path(), 1, options(Durability::Sync, 16, u64::MAX, u64::MAX), Prepare::default()).unwrap();
        let header = handle.log_bytes();
        for id in ["a", "b", "c"] {
            assert!(logged(&handle, id).await);
        }
        log.release(3).unwrap();
        // The next record goes to a new segment, and the committed one can be deleted.
        assert!(logged(&handle, "d").await);
        log.release(3).unwrap();
        assert_eq!(crate::wal::list_segments(dir.path()).unwrap().len(), 1);
        let left = WalReader::new(dir.path()).read_after(0, 100, usize::MAX).unwrap();
        assert_eq!(left.iter().map(|e| e.lsn).collect::<Vec<_>>(), vec![4]);
        assert!(handle.log_bytes() < header + 1024, "the committed records' bytes were freed");
        drop(handle);
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn below_the_free_space_reserve_records_are_dropped_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).expect("statvfs works here");
        let reserve = LogOptions { log_min_free_bytes: free.saturating_mul(2), ..options(Durability::Sync, 16, u64::MAX, u64::MAX) };
        let (handle, _log, writer) = start_log_writer("iris", dir.path(), 1, reserve, Prepare::default()).unwrap();
        assert!(!logged(&handle, "a").await, "dropped, and the caller is not kept waiting");
        drop(handle);
        writer.join().unwrap();
        assert!(WalReader::new(dir.path()).read_after(0, 100, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn queue_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _log, writer) = start_log_writer("iris", dir.path(), 1, options(Durability::Async, 1000, 10_000, u64::MAX), Prepare::default()).unwrap();
        let mut big = record("big");
        big.request = Some("x".repeat(20_000));
        assert!(matches!(handle.submit(big), SubmitOutcome::Dropped("queue_full")));
        assert!(matches!(handle.submit(record("small")), SubmitOutcome::Queued));
        drop(handle);
        writer.join().unwrap();
        let logged = WalReader::new(dir.path()).read_after(0, 10, usize::MAX).unwrap();
        assert_eq!(logged.len(), 1);
    }

    #[test]
    fn full_queue_drops_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        // No runtime drives the writer here, but try_send never waits: once the queue is full
        // submissions are dropped at once.
        let (handle, _log, writer) = start_log_writer("iris", dir.path(), 1, options(Durability::Async, 1, u64::MAX, u64::MAX), Prepare::default()).unwrap();
        let mut dropped = 0;
        for i in 0..10_000 {
            if let SubmitOutcome::Dropped(reason) = handle.submit(record(&format!("r{i}"))) {
                assert_eq!(reason, "queue_full");
                dropped += 1;
            }
        }
        drop(handle);
        writer.join().unwrap();
        let logged = WalReader::new(dir.path()).read_after(0, 100_000, usize::MAX).unwrap().len();
        assert_eq!(logged + dropped, 10_000, "every record is either logged or counted as dropped");
        assert!(dropped > 0);
    }
}

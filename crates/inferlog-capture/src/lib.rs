//! Capture path: the bounded queue the gateway hands records to, and the write-ahead log
//! (WAL) that holds them on local disk until the table committer has made them durable in
//! the Delta table.
//!
//! ```text
//! request path --try_send--> [bounded queue] --> log writer thread --> wal/{endpoint}/*.wal
//!                                                                          |
//!                                          table committer (inferlog-table) reads, commits,
//!                                          then deletes fully committed segments
//! ```
//!
//! Invariants:
//! - The request path never blocks on capture: a full queue or a full log drops the record
//!   and counts it (`inferlog_capture_dropped_total{reason}`).
//! - Every record in the log carries a log sequence number (LSN), strictly increasing per
//!   endpoint, also across restarts. The committer stores the last LSN of each commit in the
//!   Delta table as an application transaction, which is how a replay is recognised.
//! - A segment is deleted only after a commit holding all of its records has succeeded.

pub mod offload;
pub mod queue;
pub mod redact;
pub mod wal;

/// Describes this crate's metrics (for `# HELP` on `/metrics`); call once the recorder is
/// installed.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(
        "inferlog_capture_dropped_total",
        "Captured records that will never reach the table, by reason: queue_full, log_full, low_disk_space, log_write_error, shutting_down, undecodable"
    );
    describe_counter!("inferlog_capture_records_logged_total", "Records written to the endpoint's write-ahead log");
    describe_counter!("inferlog_capture_offload_failures_total", "Oversize bodies that could not be written to a side file (the row keeps the prefix)");
    describe_histogram!("inferlog_llm_prompt_tokens", "Prompt tokens of each captured exchange that reports usage");
    describe_histogram!("inferlog_llm_completion_tokens", "Completion tokens of each captured exchange that reports usage");
}

pub use queue::{start_log_writer, CaptureHandle, LogOptions, LogWriterHandle, Prepare, SubmitOutcome};
pub use wal::{WalReader, WalWriter};

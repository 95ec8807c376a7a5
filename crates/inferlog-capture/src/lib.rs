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

pub use queue::{start_log_writer, CaptureHandle, LogOptions, LogWriterHandle, Prepare, SubmitOutcome};
pub use wal::{WalReader, WalWriter};

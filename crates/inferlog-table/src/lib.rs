//! The inference table: records → Arrow → Delta commits.
//!
//! - [`schema`]: the table's columns and the conversion of [`Record`](inferlog_core::Record)s
//!   into an Arrow batch;
//! - [`table`]: opening or creating a table at a URL, and reading the application
//!   transaction that says which log records it already holds;
//! - [`committer`]: the background loop that moves records from the write-ahead log into
//!   the table, exactly once;
//! - [`compaction`]: the background loop that merges small files per date partition;
//! - [`audit`]: the `_audit` table of administrative actions.
//!
//! Tables are addressed by URL (`file:///…` today); nothing here assumes local paths, and
//! each gateway process commits under its own application id, so several processes can
//! write one table.

pub mod audit;
pub mod committer;
pub mod compaction;
pub mod fleet;
pub mod lease;
pub mod maintenance;
pub mod schema;
pub mod table;
pub mod worker;

pub use committer::{Committer, CommitterOptions};
pub use compaction::{compact_once, Compactor, CompactionOptions};
pub use table::{check_store, committed_lsn, exists, load_if_exists, open_or_create, shared_state, TableError};

/// Describes this crate's metrics (for `# HELP` on `/metrics`); call once the recorder is
/// installed.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("inferlog_capture_records_committed_total", "Records committed to the endpoint's payload table");
    describe_gauge!("inferlog_table_last_commit_timestamp_seconds", "Unix time of the endpoint's last successful commit");
    describe_gauge!("inferlog_lease_held", "1 while this gateway holds the lease (the endpoint's singleton work runs here), else 0");
    describe_counter!("inferlog_table_commit_failures_total", "Commits to the payload table that failed (retried; the records stay in the log)");
    describe_counter!("inferlog_table_commit_conflicts_total", "Commits by other writers (other gateways, compaction, unpacking, retention) that landed since this gateway last read the payload table: each was checked for conflicts with its commit, which then went after them");
    describe_counter!("inferlog_table_compacted_files_total", "Small files of the payload table replaced by compaction");
}

pub type Result<T, E = TableError> = std::result::Result<T, E>;

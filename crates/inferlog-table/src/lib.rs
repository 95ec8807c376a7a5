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
pub mod maintenance;
pub mod schema;
pub mod table;

pub use committer::{Committer, CommitterOptions};
pub use compaction::{compact_once, Compactor, CompactionOptions};
pub use table::{committed_lsn, load_if_exists, open_or_create, table_url, TableError};

pub type Result<T, E = TableError> = std::result::Result<T, E>;

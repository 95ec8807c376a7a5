//! `{endpoint}_unpacked`: one typed row per model instance, made from the raw payloads of
//! `{endpoint}_payload`.
//!
//! - [`columns`]: choosing and widening column types, building Arrow arrays;
//! - [`source`]: finding the exchanges committed since the last run (from the Delta log);
//! - [`unpacker`]: one incremental run, committed with the source version it reached;
//! - [`Unpacker`]: the periodic work `inferlog serve` runs for endpoints with `unpack = true`.
//!
//! Payloads are parsed by `inferlog-payload`; one that cannot be parsed becomes a row whose
//! `unpack_error` says why, never a failed run.

pub mod columns;
pub mod source;
pub mod unpacker;

pub use unpacker::{fixed_schema, unpack_once, UnpackOptions, UnpackReport, APP_ID, COMPARE_APP_ID, FIXED_COLUMNS};

/// Describes this crate's metrics (for `# HELP` on `/metrics`); call once the recorder is
/// installed.
pub fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!("inferlog_unpack_rows_total", "Rows written to the endpoint's unpacked table");
    describe_counter!("inferlog_unpack_errors_total", "Requests whose payload could not be fully unpacked (see unpack_error)");
    describe_counter!("inferlog_unpack_failures_total", "Background unpack runs that failed (retried)");
}

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("no endpoint `{endpoint}` here: there is no table {table} (has `inferlog serve` captured it with this --data-dir?)")]
    NoSource { endpoint: String, table: String },
    #[error("table {url}: {source}")]
    Delta {
        url: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error(transparent)]
    Table(#[from] inferlog_table::TableError),
    #[error("{0}")]
    Source(String),
    #[error("reading the payload table: {0}")]
    Query(#[from] deltalake::datafusion::error::DataFusionError),
    #[error("building the unpacked rows: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
}

impl UnpackError {
    pub(crate) fn delta(url: &url::Url, source: deltalake::DeltaTableError) -> Self {
        UnpackError::Delta { url: url.to_string(), source }
    }
}

/// Keeps one endpoint's unpacked table a few seconds behind its payload table: a pass every
/// `interval` on the holder of the endpoint's lease, and one last pass when the gateway stops
/// (after its last commit), so the typed table holds everything the payload table held.
pub struct Unpacker {
    pub layout: inferlog_core::Layout,
    pub endpoint: String,
    pub interval: Duration,
    pub options: UnpackOptions,
}

impl inferlog_table::worker::Periodic for Unpacker {
    fn kind(&self) -> &'static str {
        "unpacking"
    }

    fn target(&self) -> &str {
        &self.endpoint
    }

    fn first_pass_in(&self) -> Duration {
        Duration::ZERO
    }

    fn next_pass_in(&self) -> Duration {
        self.interval
    }

    fn last_pass_on_stop(&self) -> bool {
        true
    }

    async fn pass(&self) -> Result<(), inferlog_table::worker::PassError> {
        let endpoint = &self.endpoint;
        match unpack_once(&self.layout, endpoint, &self.options).await {
            Ok(report) => {
                if report.requests > 0 {
                    metrics::counter!("inferlog_unpack_rows_total", "endpoint" => endpoint.clone()).increment(report.rows as u64);
                    metrics::counter!("inferlog_unpack_errors_total", "endpoint" => endpoint.clone()).increment(report.errors as u64);
                    tracing::debug!(endpoint = %endpoint, requests = report.requests, rows = report.rows, errors = report.errors, "unpacked");
                }
                Ok(())
            }
            // The payload table appears with the first commit.
            Err(UnpackError::NoSource { .. }) => Ok(()),
            Err(e) => {
                metrics::counter!("inferlog_unpack_failures_total", "endpoint" => endpoint.clone()).increment(1);
                Err(inferlog_table::worker::PassError::Failed(e.to_string()))
            }
        }
    }
}

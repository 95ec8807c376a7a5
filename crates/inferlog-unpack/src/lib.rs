//! `{endpoint}_unpacked`: one typed row per model instance, made from the raw payloads of
//! `{endpoint}_payload`.
//!
//! - [`columns`]: choosing and widening column types, building Arrow arrays;
//! - [`source`]: finding the exchanges committed since the last run (from the Delta log);
//! - [`unpacker`]: one incremental run, committed with the source version it reached;
//! - [`Unpacker`]: the loop `inferlog serve` runs for endpoints with `unpack = true`.
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
use tokio::sync::watch;

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

/// Keeps one endpoint's unpacked table a few seconds behind its payload table.
pub struct Unpacker {
    pub layout: inferlog_core::Layout,
    pub endpoint: String,
    pub interval: Duration,
    pub options: UnpackOptions,
    /// Unpacks only while this gateway holds the endpoint's lease.
    pub lease: inferlog_table::lease::LeaseFlag,
}

impl Unpacker {
    /// Runs until `stop` turns true, then makes one last pass so the typed table holds
    /// everything the payload table held at shutdown.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let endpoint = self.endpoint.clone();
        let mut failures = 0u32;
        loop {
            let stopping = *stop.borrow();
            // On one gateway of a fleet at a time: the lease's holder.
            if self.lease.is_held() {
                match unpack_once(&self.layout, &self.endpoint, &self.options).await {
                    Ok(report) => {
                        failures = 0;
                        if report.requests > 0 {
                            metrics::counter!("inferlog_unpack_rows_total", "endpoint" => endpoint.clone())
                                .increment(report.rows as u64);
                            metrics::counter!("inferlog_unpack_errors_total", "endpoint" => endpoint.clone())
                                .increment(report.errors as u64);
                            tracing::debug!(endpoint = %endpoint, requests = report.requests, rows = report.rows,
                                errors = report.errors, "unpacked");
                        }
                    }
                    // The payload table appears with the first commit.
                    Err(UnpackError::NoSource { .. }) => {}
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        metrics::counter!("inferlog_unpack_failures_total", "endpoint" => endpoint.clone()).increment(1);
                        tracing::warn!(endpoint = %endpoint, error = %e, "unpack run failed; will retry");
                    }
                }
            }
            if stopping {
                return;
            }
            // Back off while failing (a conflicting writer, a full disk), up to a minute.
            let wait = self.interval * 2u32.saturating_pow(failures.min(6));
            let wait = wait.min(Duration::from_secs(60).max(self.interval));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

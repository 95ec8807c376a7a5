//! Monitoring an endpoint against a baseline.
//!
//! - [`baseline`]: `statistics.json`, `constraints.json` and `reference.parquet` under
//!   `{data_dir}/monitoring/{endpoint}/`, from training data or a window of the endpoint's
//!   unpacked table.
//! - [`monitor`]: data quality, drift and model quality per window and slice, written to
//!   `{endpoint}_profile_metrics`, `{endpoint}_drift_metrics` and `{endpoint}_violations`.
//! - [`scheduled`]: monitoring on a schedule inside `inferlog serve`, with webhook alerts.
//! - [`report`] and [`report_html`]: one self-contained HTML page of an endpoint's monitoring.
//!
//! The statistics themselves (drift distances and tests, summaries, model quality) are in
//! `inferlog-stats`, which matches SciPy and scikit-learn.

pub mod baseline;
pub mod monitor;
pub mod report;
pub mod report_html;
pub mod scheduled;
mod values;

pub use baseline::{build as build_baseline, BaselineOptions, BaselineReport, BaselineSource, MonitoringFiles};
pub use monitor::{run as run_monitor, run_blocking as run_monitor_blocking, MonitorOptions, MonitorReport};
pub use report::{build as build_report, ReportOptions};
pub use scheduled::{AlertSender, Delivery, ScheduledMonitor};

/// Describes this crate's metrics (for `# HELP` on `/metrics`); call once the recorder is
/// installed.
pub fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!("inferlog_monitor_runs_total", "Scheduled monitoring runs that completed");
    describe_counter!("inferlog_monitor_failures_total", "Scheduled monitoring runs that failed");
    describe_counter!("inferlog_monitor_violations_total", "Violations found by scheduled monitoring");
    describe_counter!("inferlog_alerts_delivered_total", "Violation alerts the webhook accepted");
    describe_counter!("inferlog_alerts_failed_total", "Violation alerts the webhook did not accept after retries");
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{0}")]
    Input(String),
    /// Nothing to monitor yet: no baseline, or no unpacked table.
    #[error("{0}")]
    NotReady(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Query(#[from] inferlog_query::QueryError),
    #[error("reading the data: {0}")]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),
    #[error("{0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    #[error("writing reference.parquet: {0}")]
    Parquet(#[from] deltalake::parquet::errors::ParquetError),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Stats(#[from] inferlog_stats::StatsError),
    #[error(transparent)]
    Table(#[from] inferlog_table::TableError),
}

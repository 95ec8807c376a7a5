//! Retention inside `inferlog serve`: `[endpoints.retention]` deletes the endpoint's rows older
//! than `older_than` from all of its tables on a schedule, vacuums the files that held them
//! and records each run in `_audit` (who = `schedule`).

use inferlog_core::config::RetentionSettings;
use inferlog_core::record::AuditEvent;
use inferlog_table::maintenance::Purge;
use std::time::Duration;
use inferlog_table::worker::{PassError, Periodic};
use tokio::sync::mpsc;

/// The first run waits this long after the start, so the gateway's own start is not slowed.
const FIRST_RUN_AFTER: Duration = Duration::from_secs(10);

pub struct ScheduledRetention {
    pub layout: inferlog_core::Layout,
    pub endpoint: String,
    pub settings: RetentionSettings,
    pub audit: mpsc::Sender<AuditEvent>,
}

/// Runs once soon after the start (a gateway restarted more often than the schedule still
/// applies retention), then on the schedule, on the holder of the endpoint's lease; a failed
/// run (a delete that met a concurrent commit, say) is retried with the workers' backoff.
impl Periodic for ScheduledRetention {
    fn kind(&self) -> &'static str {
        "retention"
    }

    fn target(&self) -> &str {
        &self.endpoint
    }

    fn first_pass_in(&self) -> Duration {
        FIRST_RUN_AFTER
    }

    fn next_pass_in(&self) -> Duration {
        let now = chrono::Utc::now();
        (self.settings.schedule.next_after(now) - now).to_std().unwrap_or_default()
    }

    async fn pass(&self) -> Result<(), PassError> {
        self.run_once().await.map_err(PassError::Failed)
    }
}

impl ScheduledRetention {
    /// One pass, audited; the error says why it failed.
    pub async fn run_once(&self) -> Result<(), String> {
        let cutoff = chrono::Utc::now().timestamp_millis() - self.settings.older_than_ms;
        let predicates = inferlog_table::maintenance::retention_predicates(&self.endpoint, cutoff);
        let result = inferlog_table::maintenance::delete_where(&self.layout, &predicates, Purge::AfterReaders).await;
        let detail = format!("older than {} ms (before {cutoff})", self.settings.older_than_ms);
        match &result {
            Ok(deleted) => {
                let rows: usize = deleted.iter().map(|d| d.rows).sum();
                metrics::counter!("inferlog_retention_rows_deleted_total", "endpoint" => self.endpoint.clone()).increment(rows as u64);
                tracing::info!(endpoint = %self.endpoint, cutoff_ms = cutoff, rows, "retention run");
            }
            Err(_) => {
                metrics::counter!("inferlog_retention_failures_total", "endpoint" => self.endpoint.clone()).increment(1);
            }
        }
        let event = AuditEvent::now(
            "schedule",
            "retention",
            Some(&self.endpoint),
            detail,
            result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        );
        if self.audit.send(event).await.is_err() {
            tracing::warn!(endpoint = %self.endpoint, "the audit writer has stopped; a retention run is not audited");
        }
        result.map(|_| ()).map_err(|e| e.to_string())
    }
}

//! Retention inside `inferlog serve`: `[endpoints.retention]` deletes the endpoint's rows older
//! than `older_than` from all of its tables on a schedule, vacuums the files that held them
//! and records each run in `_audit` (who = `schedule`).

use inferlog_core::config::RetentionSettings;
use inferlog_core::record::AuditEvent;
use std::path::PathBuf;
use tokio::sync::{mpsc, watch};

pub struct ScheduledRetention {
    pub data_dir: PathBuf,
    pub endpoint: String,
    pub settings: RetentionSettings,
    pub audit: mpsc::Sender<AuditEvent>,
}

impl ScheduledRetention {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let now = chrono::Utc::now();
            let wait = (self.settings.schedule.next_after(now) - now).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            self.run_once().await;
        }
    }

    /// One pass; failures (a table busy with a concurrent commit, say) are logged, audited and
    /// tried again at the next scheduled time.
    pub async fn run_once(&self) {
        let cutoff = chrono::Utc::now().timestamp_millis() - self.settings.older_than_ms;
        let predicates = inferlog_table::maintenance::retention_predicates(&self.endpoint, cutoff);
        let result = inferlog_table::maintenance::delete_where(&self.data_dir, &predicates).await;
        let detail = format!("older than {} ms (before {cutoff})", self.settings.older_than_ms);
        match &result {
            Ok(deleted) => {
                let rows: usize = deleted.iter().map(|d| d.rows).sum();
                metrics::counter!("inferlog_retention_rows_deleted_total", "endpoint" => self.endpoint.clone()).increment(rows as u64);
                tracing::info!(endpoint = %self.endpoint, cutoff_ms = cutoff, rows, "retention run");
            }
            Err(e) => {
                metrics::counter!("inferlog_retention_failures_total", "endpoint" => self.endpoint.clone()).increment(1);
                tracing::warn!(endpoint = %self.endpoint, error = %e, "retention run failed; trying again at the next scheduled time");
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
    }
}

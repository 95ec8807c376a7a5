//! Retention inside `inferlog serve`: `[endpoints.retention]` deletes the endpoint's rows older
//! than `older_than` from all of its tables on a schedule, vacuums the files that held them
//! and records each run in `_audit` (who = `schedule`).

use inferlog_core::config::RetentionSettings;
use inferlog_core::record::AuditEvent;
use inferlog_table::maintenance::Purge;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The first run waits this long after the start, so the gateway's own start is not slowed.
const FIRST_RUN_AFTER: Duration = Duration::from_secs(10);
/// A failed run (a delete that met a concurrent commit, say) is tried again this soon.
const RETRY_AFTER: Duration = Duration::from_secs(60);

pub struct ScheduledRetention {
    pub layout: inferlog_core::Layout,
    pub endpoint: String,
    pub settings: RetentionSettings,
    pub audit: mpsc::Sender<AuditEvent>,
    /// Runs only while this gateway holds the endpoint's lease.
    pub lease: inferlog_table::lease::LeaseFlag,
}

impl ScheduledRetention {
    /// Runs once soon after the start (a gateway restarted more often than the schedule still
    /// applies retention), then on the schedule; a failed run is tried again within
    /// [`RETRY_AFTER`].
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut wait = FIRST_RUN_AFTER;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if !self.lease.is_held() {
                // Another gateway holds it; look again soon in case it goes.
                wait = RETRY_AFTER;
                continue;
            }
            let succeeded = self.run_once().await;
            let now = chrono::Utc::now();
            let scheduled = (self.settings.schedule.next_after(now) - now).to_std().unwrap_or_default();
            wait = if succeeded { scheduled } else { scheduled.min(RETRY_AFTER) };
        }
    }

    /// One pass; failures are logged and audited. Whether it succeeded.
    pub async fn run_once(&self) -> bool {
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
            Err(e) => {
                metrics::counter!("inferlog_retention_failures_total", "endpoint" => self.endpoint.clone()).increment(1);
                tracing::warn!(endpoint = %self.endpoint, error = %e, "retention run failed; trying again soon");
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
        result.is_ok()
    }
}

//! Monitoring inside `inferlog serve`: each endpoint with a `[endpoints.monitor]` section is
//! monitored on its schedule, and the violations of windows that have finished become alerts
//! (a log line, and a webhook POST per violation when configured).
//!
//! Every run covers the windows from the first one not yet final up to the current, unfinished
//! window, so dashboards see the current window within one schedule period and a finished
//! window gets its final numbers. A window is final once it ended `settle` ago (the time its
//! last exchanges take to reach the unpacked table); its violations are alerted once, and
//! `schedule.json` remembers up to where, so a restart does not alert twice. A webhook that
//! fails every attempt is logged and not retried later; a process killed mid-delivery sends
//! the window's alerts again after restart, so receivers deduplicate by `alert_id`.

use inferlog_core::Layout;
use crate::baseline::{MonitoringFiles, SCHEDULE_FILE};
use crate::monitor::{run_blocking, MonitorOptions, MonitorReport, Violation};
use crate::MonitorError;
use inferlog_core::config::{MonitorSettings, WebhookSettings};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// A gateway down for longer catches up at most this many windows.
const MAX_CATCH_UP_WINDOWS: i64 = 1000;
/// Retries wait at most this long.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ScheduledMonitor {
    pub layout: Layout,
    pub endpoint: String,
    pub settings: MonitorSettings,
    /// Unpack new payloads before each run (for endpoints without a continuous unpacker),
    /// with these options.
    pub unpack_first: Option<inferlog_unpack::UnpackOptions>,
    /// How long after a window ends its exchanges are in the unpacked table.
    pub settle: Duration,
    /// Held during a run, so scheduled and on-demand runs of one endpoint never overlap.
    pub lock: Arc<Mutex<()>>,
    /// Trust for an https webhook (the gateway's upstream trust); default: no roots.
    pub webhook_tls: Option<rustls::ClientConfig>,
}

/// What a scheduled run did.
#[derive(Debug, Default)]
pub struct ScheduledRun {
    pub report: MonitorReport,
    /// Violations of windows that became final in this run.
    pub alerted: Vec<Violation>,
    pub delivered: usize,
    pub failed: usize,
}

/// `schedule.json`: windows ending at or before `final_through_ms` are final and alerted.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ScheduleState {
    final_through_ms: Option<i64>,
}

impl ScheduleState {
    async fn load(files: &MonitoringFiles) -> Result<Self, MonitorError> {
        Ok(files.read(SCHEDULE_FILE).await?.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default())
    }

    async fn save(&self, files: &MonitoringFiles) -> Result<(), MonitorError> {
        files.write(SCHEDULE_FILE, serde_json::to_vec_pretty(self)?).await
    }
}

/// Monitors on the endpoint's schedule, on the holder of its lease (see
/// [`inferlog_table::worker`]).
impl inferlog_table::worker::Periodic for ScheduledMonitor {
    fn kind(&self) -> &'static str {
        "monitoring"
    }

    fn target(&self) -> &str {
        &self.endpoint
    }

    fn next_pass_in(&self) -> Duration {
        let now = chrono::Utc::now();
        (self.settings.schedule.next_after(now) - now).to_std().unwrap_or_default()
    }

    async fn pass(&self) -> Result<(), inferlog_table::worker::PassError> {
        use inferlog_table::worker::PassError;
        let endpoint = self.endpoint.clone();
        let alerts = AlertSender::new(self.settings.webhook.clone(), self.webhook_tls.clone());
        match self.run_once(&alerts, chrono::Utc::now().timestamp_millis()).await {
            Ok(done) => {
                metrics::counter!("inferlog_monitor_runs_total", "endpoint" => endpoint.clone()).increment(1);
                tracing::debug!(endpoint = %endpoint, windows = done.report.windows,
                    violations = done.report.violations.len(), alerted = done.alerted.len(), "monitoring run");
                Ok(())
            }
            Err(MonitorError::NotReady(reason)) => Err(PassError::NotReady(reason)),
            Err(e) => {
                metrics::counter!("inferlog_monitor_failures_total", "endpoint" => endpoint.clone()).increment(1);
                Err(PassError::Failed(e.to_string()))
            }
        }
    }
}

impl ScheduledMonitor {
    /// One run at time `now_ms`: unpack (if asked), monitor the windows not yet final, then
    /// alert on those that became final.
    pub async fn run_once(&self, alerts: &AlertSender, now_ms: i64) -> Result<ScheduledRun, MonitorError> {
        let _running = self.lock.lock().await;
        if let Some(options) = &self.unpack_first {
            inferlog_unpack::unpack_once(&self.layout, &self.endpoint, options)
                .await
                .map_err(|e| MonitorError::Input(format!("unpacking before monitoring: {e}")))?;
        }
        let window = self.settings.window_ms;
        let files = MonitoringFiles::of(&self.layout, &self.endpoint)?;
        let mut state = ScheduleState::load(&files).await?;
        let current_end = now_ms.div_euclid(window) * window + window;
        let since = state
            .final_through_ms
            .map_or(current_end - 2 * window, |f| f.div_euclid(window) * window)
            .clamp(current_end - MAX_CATCH_UP_WINDOWS * window, current_end - window);
        let options = MonitorOptions {
            window_ms: window,
            since_ms: Some(since),
            until_ms: Some(current_end),
            slices: self.settings.slices.clone(),
            backfill: false,
        };
        let report = run_blocking(&self.layout, &self.endpoint, &options).await?;
        let final_through = (now_ms - self.settle.as_millis() as i64).div_euclid(window) * window;
        let already = state.final_through_ms.unwrap_or(i64::MIN);
        let alerted: Vec<Violation> = report
            .violations
            .iter()
            .filter(|v| v.window_end_ms <= final_through && v.window_end_ms > already)
            .cloned()
            .collect();
        let mut done = ScheduledRun { report, ..ScheduledRun::default() };
        for violation in &alerted {
            tracing::warn!(endpoint = %self.endpoint, check = violation.check,
                column = violation.column_name.as_deref().unwrap_or("-"),
                slice = violation.slice_value.as_deref().unwrap_or("-"),
                window_start = %rfc3339(violation.window_start_ms), "monitoring violation: {}", violation.description);
            metrics::counter!("inferlog_monitor_violations_total", "endpoint" => self.endpoint.clone()).increment(1);
            match alerts.send(&alert_json(&self.endpoint, violation)).await {
                Delivery::NotConfigured => {}
                Delivery::Delivered { .. } => done.delivered += 1,
                Delivery::Failed { attempts, reason } => {
                    done.failed += 1;
                    metrics::counter!("inferlog_alerts_failed_total", "endpoint" => self.endpoint.clone()).increment(1);
                    tracing::error!(endpoint = %self.endpoint, attempts, "alert webhook failed: {reason}");
                }
            }
        }
        metrics::counter!("inferlog_alerts_delivered_total", "endpoint" => self.endpoint.clone()).increment(done.delivered as u64);
        if final_through > already {
            state.final_through_ms = Some(final_through);
            state.save(&files).await?;
        }
        done.alerted = alerted;
        Ok(done)
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The webhook body for one violation. `alert_id` is the same for every delivery of it.
pub fn alert_json(endpoint: &str, v: &Violation) -> serde_json::Value {
    let alert_id = format!(
        "{endpoint}/{}/{}/{}/{}/{}",
        v.window_start_ms,
        v.slice_key.as_deref().unwrap_or(""),
        v.slice_value.as_deref().unwrap_or(""),
        v.column_name.as_deref().unwrap_or(""),
        v.check
    );
    serde_json::json!({
        "alert_id": alert_id,
        "endpoint": endpoint,
        "window_start": rfc3339(v.window_start_ms),
        "window_end": rfc3339(v.window_end_ms),
        "slice_key": v.slice_key,
        "slice_value": v.slice_value,
        "column_name": v.column_name,
        "check": v.check,
        "description": v.description,
        "table": format!("{endpoint}_violations"),
    })
}

#[derive(Debug, PartialEq)]
pub enum Delivery {
    NotConfigured,
    Delivered { attempts: u32 },
    Failed { attempts: u32, reason: String },
}

/// Posts alerts to a webhook, retrying connection failures, timeouts, 429 and 5xx answers
/// with exponential backoff; other answers are final.
pub struct AlertSender {
    webhook: Option<WebhookSettings>,
    client: reqwest::Client,
}

impl AlertSender {
    pub fn new(webhook: Option<WebhookSettings>, tls: Option<rustls::ClientConfig>) -> Self {
        let mut builder = reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT);
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder.build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build the webhook client; https webhooks will fail");
            reqwest::Client::default()
        });
        AlertSender { webhook, client }
    }

    pub async fn send(&self, alert: &serde_json::Value) -> Delivery {
        let Some(webhook) = &self.webhook else { return Delivery::NotConfigured };
        let mut backoff = webhook.backoff;
        let mut reason = String::new();
        for attempt in 1..=webhook.attempts {
            let retry = match self.client.post(webhook.url.clone()).json(alert).send().await {
                Ok(response) if response.status().is_success() => return Delivery::Delivered { attempts: attempt },
                Ok(response) => {
                    let status = response.status();
                    reason = format!("{} answered {status}", webhook.url);
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    reason = format!("cannot reach {}: {e}", webhook.url);
                    true
                }
            };
            if !retry {
                return Delivery::Failed { attempts: attempt, reason };
            }
            if attempt < webhook.attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        Delivery::Failed { attempts: webhook.attempts, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn webhook(url: &str, attempts: u32) -> Option<WebhookSettings> {
        Some(WebhookSettings { url: url.parse().unwrap(), attempts, backoff: Duration::from_millis(10) })
    }

    /// A server answering every request with `status`; counts the requests.
    fn answering(status: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn unreachable_webhook_fails_after_every_attempt() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let sender = AlertSender::new(webhook(&format!("http://127.0.0.1:{port}/hook"), 3), None);
        match sender.send(&serde_json::json!({"alert_id": "a"})).await {
            Delivery::Failed { attempts, reason } => {
                assert_eq!(attempts, 3);
                assert!(reason.contains("cannot reach"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn client_errors_are_not_retried_and_server_errors_are() {
        let (url, count) = answering("400 Bad Request");
        let sender = AlertSender::new(webhook(&url, 4), None);
        let delivery = sender.send(&serde_json::json!({"alert_id": "a"})).await;
        assert!(matches!(&delivery, Delivery::Failed { attempts: 1, reason } if reason.contains("400")), "{delivery:?}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);

        let (url, count) = answering("503 Service Unavailable");
        let sender = AlertSender::new(webhook(&url, 4), None);
        let delivery = sender.send(&serde_json::json!({"alert_id": "a"})).await;
        assert!(matches!(&delivery, Delivery::Failed { attempts: 4, reason } if reason.contains("503")), "{delivery:?}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 4);

        assert_eq!(AlertSender::new(None, None).send(&serde_json::json!({})).await, Delivery::NotConfigured);
    }
}

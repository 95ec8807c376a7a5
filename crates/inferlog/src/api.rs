//! The gateway's data APIs: `POST /api/query` (SQL over the data directory's tables),
//! `POST /api/endpoints/{name}/labels` (ground truth as it becomes known) and
//! `POST /api/endpoints/{name}/monitor` (a monitoring run on demand).
//!
//! None runs on the proxy's scheduler, so a heavy query competes with capture only for CPU.
//! Queries run on threads of their own ([`crate::query_runner`]), answered 408 and abandoned
//! at their timeout; label merges and monitoring runs on the background runtime.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use inferlog_proxy::auth::{Authenticator, Caller, Role, ANY_ENDPOINT};
use inferlog_proxy::tls::ClientAddr;
use inferlog_proxy::{require_json, GatewayError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// A runtime for work that must not share the proxy's threads: label merges, unpacking,
/// monitoring and compaction of unpacked tables (queries have threads of their own), and,
/// in one of its own, the committers.
///
/// Its threads run at a lower CPU priority (a higher nice value) than the proxy's: on a small
/// machine, a commit's Parquet encoding or a monitoring pass would otherwise take a core from
/// requests for tens of milliseconds at a time, which shows in their p99 latency. Under a
/// saturating load they still get their share, only later.
pub struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

/// Nice value of the background runtime's threads (unpacking, monitoring, compaction).
pub const BACKGROUND_NICENESS: i32 = 10;
/// Nice value of the committers' threads: above the proxy's, below the other background
/// work, since the log only shrinks as fast as they commit.
pub const COMMIT_NICENESS: i32 = 5;

impl BackgroundRuntime {
    pub fn new() -> std::io::Result<Self> {
        Self::named("inferlog-background", BACKGROUND_NICENESS)
    }

    /// The committers' runtime.
    pub fn for_commits() -> std::io::Result<Self> {
        Self::named("inferlog-commit", COMMIT_NICENESS)
    }

    fn named(thread_name: &str, niceness: i32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name)
            // Every thread of the runtime, its blocking pool's too.
            .on_thread_start(move || lower_thread_priority(niceness))
            .enable_all()
            .build()?;
        Ok(BackgroundRuntime(Some(runtime)))
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("runtime lives until drop").handle().clone()
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets the calling thread's nice value (Linux schedules threads, so this is per thread).
/// Raising one's own nice value needs no privilege; a failure leaves the thread as it was.
fn lower_thread_priority(niceness: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority only read and set the calling thread's scheduling value.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, niceness);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
}

pub struct ApiState {
    pub layout: inferlog_core::Layout,
    pub endpoints: HashSet<String>,
    pub limits: inferlog_query::ReadLimits,
    pub timeout: Duration,
    pub queries: crate::query_runner::QueryRunner,
    pub checkpoint_interval: u64,
    pub background: Arc<BackgroundRuntime>,
    pub monitors: HashMap<String, MonitorDefaults>,
    pub auth: Arc<Authenticator>,
    pub audit: inferlog_proxy::AuditSender,
}

impl ApiState {
    fn audit<T>(&self, caller: &Caller, action: &str, endpoint: &str, body: &[u8], result: &Result<T, GatewayError>) {
        inferlog_proxy::audit(Some(&self.audit), caller, action, Some(endpoint), body, result);
    }
}

/// Tables a query may see: those of endpoints the caller may read (`{endpoint}_payload`,
/// `_unpacked`, `_labels` and the monitoring tables); others only with `read` on `*`.
fn visible_to(caller: &Caller, endpoints: &HashSet<String>, table: &str) -> bool {
    const SUFFIXES: [&str; 6] = ["_payload", "_unpacked", "_labels", "_profile_metrics", "_drift_metrics", "_violations"];
    let endpoint = SUFFIXES
        .iter()
        .find_map(|suffix| table.strip_suffix(suffix))
        .filter(|e| endpoints.contains(*e))
        .unwrap_or(ANY_ENDPOINT);
    caller.may(endpoint, Role::Read)
}

/// What an on-demand monitoring run of an endpoint uses unless the request says otherwise.
pub struct MonitorDefaults {
    pub window_ms: i64,
    pub slices: Vec<String>,
    /// Shared with the endpoint's scheduled monitor, so runs never overlap.
    pub lock: Arc<tokio::sync::Mutex<()>>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/query", post(query))
        .route("/api/endpoints/{name}/labels", post(labels))
        .route("/api/endpoints/{name}/monitor", post(monitor))
        .route("/admin/fleet", axum::routing::get(fleet))
        .with_state(state)
}

/// `GET /admin/fleet` (`read` on `*`): the gateways sharing the tables root, seen within the
/// last minute, and who holds each lease.
async fn fleet(
    State(api): State<Arc<ApiState>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Json<inferlog_table::fleet::FleetView>, GatewayError> {
    api.auth.authorize(peer, &headers, Some(ANY_ENDPOINT), Role::Read).await?;
    inferlog_table::fleet::read_fleet(api.layout.tables_root())
        .await
        .map(Json)
        .map_err(|e| GatewayError::Internal(format!("cannot read the fleet at {}: {e}", api.layout.tables_root())))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
}

async fn query(
    State(api): State<Arc<ApiState>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let caller = api.auth.authorize(peer, &headers, None, Role::Read).await?;
    require_json(&headers)?;
    let request: QueryRequest = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::BadQuery(format!("expected {{\"sql\": \"...\"}}: {e}")))?;
    let layout = api.layout.clone();
    let limits = api.limits;
    let endpoints = api.endpoints.clone();
    let outcome = api
        .queries
        .run(api.timeout, move |runtime| async move {
            let visible = |table: &str| visible_to(&caller, &endpoints, table);
            let ctx = inferlog_query::session_in(&layout, None, &visible, runtime)
                .await
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            inferlog_query::run_read_only(&ctx, &request.sql, limits)
                .await
                .map_err(|e| GatewayError::BadQuery(e.to_string()))
        })
        .await;
    let (result, truncated) = match outcome {
        Ok(result) => result?,
        Err(crate::query_runner::Abandoned::Timeout) => {
            return Err(GatewayError::QueryTimeout { timeout_ms: api.timeout.as_millis() })
        }
        Err(failed) => return Err(GatewayError::Internal(failed.to_string())),
    };
    let rows = inferlog_query::row_count(&result.batches);
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains(ARROW_STREAM));
    let format_err = |e: inferlog_query::QueryError| GatewayError::Internal(e.to_string());
    let mut response = if wants_arrow {
        let body = inferlog_query::arrow_stream(&result).map_err(format_err)?;
        ([(header::CONTENT_TYPE, ARROW_STREAM)], body).into_response()
    } else {
        let rows_json = inferlog_query::json_array(&result.batches).map_err(format_err)?;
        let mut body = format!("{{\"row_count\":{rows},\"truncated\":{truncated},\"rows\":").into_bytes();
        body.extend_from_slice(&rows_json);
        body.push(b'}');
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if truncated {
        response
            .headers_mut()
            .insert("x-inferlog-truncated", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn labels(
    State(api): State<Arc<ApiState>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, GatewayError> {
    let caller = api.auth.authorize(peer, &headers, Some(&name), Role::Owner).await?;
    let result = import_labels(&api, &name, &headers, &body).await;
    api.audit(&caller, "labels.import", &name, &body, &result);
    result
}

async fn import_labels(api: &ApiState, name: &str, headers: &HeaderMap, body: &[u8]) -> Result<Json<serde_json::Value>, GatewayError> {
    require_json(headers)?;
    if !api.endpoints.contains(name) {
        return Err(GatewayError::EndpointNotFound(name.to_string()));
    }
    let labels = inferlog_labels::from_json(body).map_err(|e| GatewayError::BadAdminRequest(e.to_string()))?;
    let layout = api.layout.clone();
    let checkpoint_interval = api.checkpoint_interval;
    let endpoint = name.to_string();
    let report = api
        .background
        .handle()
        .spawn(async move { inferlog_labels::import(&layout, &endpoint, labels, "api", checkpoint_interval).await })
        .await
        .map_err(|e| GatewayError::Internal(format!("label import failed: {e}")))?
        .map_err(|e| match e {
            inferlog_labels::LabelError::Input(m) => GatewayError::BadAdminRequest(m),
            other => GatewayError::Internal(other.to_string()),
        })?;
    Ok(Json(serde_json::json!({
        "table": format!("{name}_labels"),
        "imported": report.labels,
        "replaced": report.replaced,
        "version": report.version,
    })))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MonitorRequest {
    window: Option<String>,
    since: Option<String>,
    until: Option<String>,
    slices: Option<Vec<String>>,
    #[serde(default)]
    backfill: bool,
}

/// Violations listed in a monitor response; all of them are in `{name}_violations`.
const MAX_VIOLATIONS_IN_RESPONSE: usize = 100;

async fn monitor(
    State(api): State<Arc<ApiState>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, GatewayError> {
    let caller = api.auth.authorize(peer, &headers, Some(&name), Role::Owner).await?;
    let result = run_monitor(&api, &name, &headers, &body).await;
    api.audit(&caller, "monitor.run", &name, &body, &result);
    result
}

async fn run_monitor(api: &ApiState, name: &str, headers: &HeaderMap, body: &[u8]) -> Result<Json<serde_json::Value>, GatewayError> {
    require_json(headers)?;
    let Some(defaults) = api.monitors.get(name) else {
        return Err(GatewayError::EndpointNotFound(name.to_string()));
    };
    let bad = |m: String| GatewayError::BadAdminRequest(m);
    let request: MonitorRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MonitorRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| bad(format!("expected {{\"window\", \"since\", \"until\", \"slices\", \"backfill\"}}: {e}")))?
    };
    let time = |t: Option<String>, field: &str| -> Result<Option<i64>, GatewayError> {
        t.map(|t| inferlog_query::parse_utc_time(&t).map(|t| t.timestamp_millis()).map_err(|e| bad(format!("{field}: {e}"))))
            .transpose()
    };
    if request.backfill && request.since.is_some() {
        return Err(bad("give either since or backfill, not both".into()));
    }
    let options = inferlog_monitor::MonitorOptions {
        window_ms: match request.window {
            Some(w) => inferlog_core::config::parse_duration_ms(&w).map_err(|e| bad(format!("window: {e}")))?,
            None => defaults.window_ms,
        },
        since_ms: time(request.since, "since")?,
        until_ms: time(request.until, "until")?,
        slices: request.slices.unwrap_or_else(|| defaults.slices.clone()),
        backfill: request.backfill,
    };
    let layout = api.layout.clone();
    let lock = defaults.lock.clone();
    let endpoint = name.to_string();
    let report = api
        .background
        .handle()
        .spawn(async move {
            let _running = lock.lock().await;
            inferlog_monitor::run_monitor_blocking(&layout, &endpoint, &options).await
        })
        .await
        .map_err(|e| GatewayError::Internal(format!("monitoring run failed: {e}")))?
        .map_err(|e| match e {
            inferlog_monitor::MonitorError::Input(m) | inferlog_monitor::MonitorError::NotReady(m) => bad(m),
            other => GatewayError::Internal(other.to_string()),
        })?;
    let violations: Vec<serde_json::Value> = report
        .violations
        .iter()
        .take(MAX_VIOLATIONS_IN_RESPONSE)
        .map(|v| inferlog_monitor::scheduled::alert_json(name, v))
        .collect();
    Ok(Json(serde_json::json!({
        "windows": report.windows,
        "profile_metrics": report.profile.len(),
        "drift_metrics": report.drift.len(),
        "drifted": report.drift.iter().filter(|d| d.drifted && d.compared_to == "baseline").count(),
        "violation_count": report.violations.len(),
        "violations": violations,
        "tables": [format!("{name}_profile_metrics"), format!("{name}_drift_metrics"), format!("{name}_violations")],
    })))
}

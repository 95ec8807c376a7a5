//! The gateway: forwards `/endpoints/{name}/...` to the endpoint's upstream and hands a
//! [`Record`](inferlog_core::Record) of every sampled exchange to capture.
//!
//! Life of a request (phases, in order):
//! 1. route — find the endpoint (404 if unknown, not recorded), mint the request id, decide
//!    sampling;
//! 2. read the request body, up to `max_request_bytes` (413 above);
//! 3. forward to the upstream with hop-by-hop headers removed (502 unreachable, 504 timeout);
//! 4. stream the response back through [`tap::TapBody`], which copies up to
//!    `max_payload_bytes` aside while the bytes pass;
//! 5. log — when the body ends (or the client goes away) the record is submitted to the
//!    capture queue. Only in `sync`/`fsync` durability does the end of the response wait for
//!    the record to reach the write-ahead log.
//!
//! This crate has no table or SQL dependencies: it never awaits a table write.

pub mod admin;
mod budget;
pub mod auth;
mod error;
mod forward;
mod record;
pub mod server;
mod tap;
pub mod tls;

pub use admin::{require_json, EndpointView, UpstreamView, GrantView, CaptureState, CaptureStateStore, TrafficChange, TrafficState, TrafficStateStore};
pub use error::GatewayError;
pub use forward::{audit, AuditSender, Endpoint, Gateway, GatewayOptions};

/// Describes this crate's metrics (for `# HELP` on `/metrics`); call once the recorder is
/// installed.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!("inferlog_requests_total", "Requests to an endpoint, by the status code the caller got (the upstream's, or the gateway's own error)");
    describe_histogram!(
        "inferlog_upstream_duration_seconds",
        "From forwarding a request to the upstream's response headers; the body may take longer (see inferlog_exchange_duration_seconds)"
    );
    describe_histogram!("inferlog_exchange_duration_seconds", "From receiving a request to the end of the response body the caller got, however it ended");
    describe_histogram!(
        "inferlog_llm_time_to_first_token_seconds",
        "Captured event streams: from receiving the request to the first event carrying output"
    );
    describe_counter!("inferlog_shadow_skipped_total", "Shadow copies not sent because too many were in flight");
    describe_counter!("inferlog_capture_offload_budget_exhausted_total", "Oversize bodies cut instead of offloaded because the offload memory budget was spent");
    describe_counter!("inferlog_auth_failures_total", "Failed authentication attempts: a missing, unknown or revoked token");
    describe_counter!("inferlog_tls_handshakes_refused_total", "TLS handshakes refused because the client had too many in progress");
    describe_counter!("inferlog_tls_handshake_failures_total", "TLS handshakes that failed or timed out");
}

use axum::routing::{any, get};
use axum::Router;
use std::sync::Arc;

/// The gateway's routes: proxying, the endpoint aliases, health and the admin API, plus
/// `extra` routes (the query and label APIs, metrics) that share its error handling and
/// request ids.
pub fn router(gateway: Arc<Gateway>, extra: Router) -> Router {
    Router::new()
        .route("/endpoints/{name}", any(forward::proxy))
        .route("/endpoints/{name}/{*rest}", any(forward::proxy))
        .route("/serving-endpoints/{name}/invocations", any(forward::proxy))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/admin/endpoints", get(admin::list_endpoints))
        .route(
            "/admin/endpoints/{name}/capture",
            get(admin::get_capture).put(admin::put_capture),
        )
        .route(
            "/admin/endpoints/{name}/traffic",
            get(admin::get_traffic).put(admin::put_traffic),
        )
        .route("/admin/endpoints/{name}/grants", get(admin::get_grants))
        .route(
            "/admin/endpoints/{name}/grants/{token}",
            axum::routing::put(admin::put_grant).delete(admin::delete_grant),
        )
        .with_state(gateway)
        .merge(extra)
        .fallback(|| async { GatewayError::RouteNotFound })
        .method_not_allowed_fallback(|| async { GatewayError::MethodNotAllowed })
        .layer(axum::middleware::map_response(ensure_request_id))
}

/// Proxied exchanges carry their row's request id already; every other answer of the
/// gateway (health, admin, routing errors) gets a fresh one, so every response has one.
async fn ensure_request_id(mut response: axum::response::Response) -> axum::response::Response {
    if !response.headers().contains_key(forward::REQUEST_ID_HEADER) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()) {
            response.headers_mut().insert(forward::REQUEST_ID_HEADER, v);
        }
    }
    response
}

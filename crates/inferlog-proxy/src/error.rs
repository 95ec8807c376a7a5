//! Errors the gateway itself answers with. They are told apart from the model's own errors
//! by the `x-inferlog-error: true` header and a JSON body `{"error_code", "message"}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub const ERROR_HEADER: &str = "x-inferlog-error";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no endpoint named `{0}`")]
    EndpointNotFound(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BadRequestBody(String),
    #[error("the request body did not arrive within {timeout_ms} ms")]
    RequestBodyTimeout { timeout_ms: u128 },
    #[error("the path may not contain `.` or `..` segments or encoded slashes (found `{0}`)")]
    UnsafePath(String),
    #[error("the gateway is holding max_request_bytes_in_flight ({limit} bytes) of request bodies; retry shortly")]
    RequestMemoryFull { limit: usize },
    #[error("upstream {upstream} is unreachable: {reason}")]
    UpstreamUnreachable { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer within {timeout_ms} ms")]
    UpstreamTimeout { upstream: String, timeout_ms: u128 },
    #[error("{0}")]
    BadAdminRequest(String),
    #[error("no token named `{0}`")]
    TokenNotFound(String),
    #[error("the token `{token}` holds no role on `{endpoint}` (a grant on `*` is changed with `inferlog token`)")]
    GrantNotFound { token: String, endpoint: String },
    #[error("the admin, query and label APIs answer loopback clients only")]
    AdminForbidden,
    #[error("send a valid token: Authorization: Bearer <token>")]
    Unauthenticated,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("the query did not finish within {timeout_ms} ms")]
    QueryTimeout { timeout_ms: u128 },
    #[error("send the body as JSON with content-type: application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    Internal(String),
    #[error("no such route; models are served under /endpoints/{{name}}/...")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::EndpointNotFound(_) | GatewayError::TokenNotFound(_) | GatewayError::GrantNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequestBody(_) | GatewayError::BadAdminRequest(_) | GatewayError::UnsafePath(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::RequestMemoryFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::AdminForbidden | GatewayError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            GatewayError::Unauthenticated => StatusCode::UNAUTHORIZED,
            GatewayError::BadQuery(_) => StatusCode::BAD_REQUEST,
            GatewayError::QueryTimeout { .. } | GatewayError::RequestBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::RouteNotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::EndpointNotFound(_) => "ENDPOINT_NOT_FOUND",
            GatewayError::TokenNotFound(_) => "TOKEN_NOT_FOUND",
            GatewayError::GrantNotFound { .. } => "GRANT_NOT_FOUND",
            GatewayError::RequestTooLarge { .. } => "REQUEST_TOO_LARGE",
            GatewayError::BadRequestBody(_) => "BAD_REQUEST_BODY",
            GatewayError::UnsafePath(_) => "BAD_REQUEST_PATH",
            GatewayError::RequestMemoryFull { .. } => "TEMPORARILY_UNAVAILABLE",
            GatewayError::UpstreamUnreachable { .. } => "UPSTREAM_UNREACHABLE",
            GatewayError::UpstreamTimeout { .. } => "UPSTREAM_TIMEOUT",
            GatewayError::BadAdminRequest(_) => "INVALID_PARAMETER_VALUE",
            GatewayError::AdminForbidden | GatewayError::PermissionDenied(_) => "PERMISSION_DENIED",
            GatewayError::Unauthenticated => "UNAUTHENTICATED",
            GatewayError::BadQuery(_) => "INVALID_QUERY",
            GatewayError::QueryTimeout { .. } => "QUERY_TIMEOUT",
            GatewayError::RequestBodyTimeout { .. } => "REQUEST_TIMEOUT",
            GatewayError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            GatewayError::Internal(_) => "INTERNAL_ERROR",
            GatewayError::RouteNotFound => "NOT_FOUND",
            GatewayError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
        }
    }

    /// What the caller is told: everything but where the model servers are (the row's
    /// `error` and the gateway's log keep the upstream's address).
    pub fn public_message(&self) -> String {
        match self {
            GatewayError::UpstreamUnreachable { reason, .. } => format!("the model server is unreachable: {}", failure_kind(reason)),
            GatewayError::UpstreamTimeout { timeout_ms, .. } => format!("the model server did not answer within {timeout_ms} ms"),
            other => other.to_string(),
        }
    }

    pub fn body(&self) -> String {
        serde_json::json!({"error_code": self.code(), "message": self.public_message()}).to_string()
    }
}

/// A connection failure in a few words. The full reason may name the upstream (a URI that
/// does not parse, the host a certificate was expected to name), so callers get only its kind.
fn failure_kind(reason: &str) -> &'static str {
    let has = |needles: &[&str]| needles.iter().any(|n| reason.contains(n));
    if has(&["certificate", "Certificate", "UnknownIssuer", "NotValidForName"]) {
        "its TLS certificate was rejected"
    } else if has(&["tls", "TLS", "handshake", "AlertReceived"]) {
        "the TLS handshake failed"
    } else if has(&["Connection refused", "connection refused"]) {
        "connection refused"
    } else if has(&["dns error", "failed to lookup", "Name or service not known"]) {
        "its name does not resolve"
    } else if has(&["timed out", "deadline"]) {
        "connecting timed out"
    } else if has(&["reset", "closed", "Broken pipe", "IncompleteMessage"]) {
        "the connection broke"
    } else {
        "the connection failed"
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let unauthenticated = matches!(self, GatewayError::Unauthenticated);
        let busy = matches!(self, GatewayError::RequestMemoryFull { .. });
        let mut response = (
            self.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response();
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static("true"));
        if unauthenticated {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if busy {
            // Bodies in flight finish within request_body_timeout_ms plus the upstream's answer.
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_learn_the_kind_of_failure_not_where_the_upstream_is() {
        let unreachable = |reason: &str| GatewayError::UpstreamUnreachable { upstream: "https://models.internal:8443/".into(), reason: reason.into() };
        for (reason, kind) in [
            ("client error (Connect): invalid peer certificate: UnknownIssuer", "TLS certificate was rejected"),
            ("client error (Connect): certificate not valid for name \"models.internal\"", "TLS certificate was rejected"),
            ("client error (Connect): tcp connect error: Connection refused (os error 111)", "connection refused"),
            ("client error (Connect): dns error: failed to lookup address information", "does not resolve"),
            ("cannot build the upstream URI https://models.internal:8443/aaaa: invalid uri", "the connection failed"),
        ] {
            let body = unreachable(reason).body();
            assert!(body.contains(kind), "{reason}: {body}");
            assert!(!body.contains("models.internal"), "{body}");
        }
        let timeout = GatewayError::UpstreamTimeout { upstream: "http://10.0.0.7:5001/".into(), timeout_ms: 300 };
        assert!(!timeout.body().contains("10.0.0.7") && timeout.body().contains("300 ms"));
        assert!(timeout.to_string().contains("10.0.0.7"), "the row's error keeps the upstream");
    }
}

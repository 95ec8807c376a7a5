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
    /// `reason` is the whole error chain, for the row and the log; callers get only `kind`.
    #[error("upstream {upstream} is unreachable: {reason}")]
    UpstreamUnreachable { upstream: String, reason: String, kind: UpstreamFailure },
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
            GatewayError::UpstreamUnreachable { kind, .. } => format!("the model server is unreachable: {}", kind.describe()),
            GatewayError::UpstreamTimeout { timeout_ms, .. } => format!("the model server did not answer within {timeout_ms} ms"),
            other => other.to_string(),
        }
    }

    pub fn body(&self) -> String {
        serde_json::json!({"error_code": self.code(), "message": self.public_message()}).to_string()
    }
}

impl GatewayError {
    /// The upstream at `upstream` could not be reached: `error` is what the client said.
    pub fn upstream_unreachable(upstream: &url::Url, error: &(dyn std::error::Error + 'static)) -> Self {
        GatewayError::UpstreamUnreachable { upstream: upstream.to_string(), reason: error_chain(error), kind: UpstreamFailure::of(error) }
    }
}

/// An error and its sources, one after the other.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The kind of a failure to reach an upstream: what a caller is told. The whole error may
/// name the upstream (the host a certificate was expected to name, an address), so callers
/// get only its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    CertificateRejected,
    TlsHandshake,
    Refused,
    NameNotResolved,
    ConnectTimeout,
    ConnectionBroke,
    Other,
}

impl UpstreamFailure {
    /// Read off the typed errors in `error`'s chain: the first that tells decides (rustls'
    /// errors, also inside I/O errors, I/O error kinds, hyper's closed or cut connections).
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(kind) = Self::told_by(e) {
                return kind;
            }
            current = e.source();
        }
        UpstreamFailure::Other
    }

    fn told_by(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => UpstreamFailure::CertificateRejected,
                _ => UpstreamFailure::TlsHandshake,
            });
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // An I/O error can wrap the error that tells (rustls', another I/O error's), and
            // its source() skips that one, so it is looked into here.
            if let Some(kind) = io.get_ref().and_then(|inner| Self::told_by(inner)) {
                return Some(kind);
            }
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionRefused => Some(UpstreamFailure::Refused),
                TimedOut => Some(UpstreamFailure::ConnectTimeout),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => Some(UpstreamFailure::ConnectionBroke),
                // getaddrinfo's failures have no kind of their own; hyper-util's connector
                // reports them as its (private) "dns error", the source of this one.
                _ if e.source().is_none() && io.to_string().contains("failed to lookup address") => Some(UpstreamFailure::NameNotResolved),
                _ => None,
            };
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled() {
                return Some(UpstreamFailure::ConnectionBroke);
            }
        }
        None
    }

    /// What the caller reads after "the model server is unreachable: ".
    pub fn describe(self) -> &'static str {
        match self {
            UpstreamFailure::CertificateRejected => "its TLS certificate was rejected",
            UpstreamFailure::TlsHandshake => "the TLS handshake failed",
            UpstreamFailure::Refused => "connection refused",
            UpstreamFailure::NameNotResolved => "its name does not resolve",
            UpstreamFailure::ConnectTimeout => "connecting timed out",
            UpstreamFailure::ConnectionBroke => "the connection broke",
            UpstreamFailure::Other => "the connection failed",
        }
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

    /// An error with a source, as clients wrap what went wrong.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect): {0}")]
    struct Wrapped(#[source] Box<dyn std::error::Error + Send + Sync>);

    #[test]
    fn callers_learn_the_kind_of_failure_not_where_the_upstream_is() {
        let upstream: url::Url = "https://models.internal:8443/".parse().unwrap();
        let io = |kind, text: &str| std::io::Error::new(kind, text.to_string());
        // As hyper-rustls hands it over: an I/O error around tokio-rustls' I/O error around rustls'.
        let tls = |e: rustls::Error| std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        let cases: Vec<(Box<dyn std::error::Error + Send + Sync>, &str)> = vec![
            (Box::new(tls(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))), "TLS certificate was rejected"),
            (Box::new(tls(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))), "TLS certificate was rejected"),
            (Box::new(tls(rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure))), "the TLS handshake failed"),
            (Box::new(io(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111) to models.internal")), "connection refused"),
            (Box::new(io(std::io::ErrorKind::ConnectionReset, "reset")), "the connection broke"),
            (Box::new(io(std::io::ErrorKind::Other, "failed to lookup address information: Name or service not known")), "does not resolve"),
            (Box::new(io(std::io::ErrorKind::Other, "something about models.internal")), "the connection failed"),
        ];
        for (cause, kind) in cases {
            let text = cause.to_string();
            let error = GatewayError::upstream_unreachable(&upstream, &Wrapped(cause));
            let body = error.body();
            assert!(body.contains(kind), "{text}: {body}");
            assert!(!body.contains("models.internal"), "{body}");
            assert!(error.to_string().contains(&text), "the row's error keeps the whole chain: {error}");
        }
        let timeout = GatewayError::UpstreamTimeout { upstream: "http://10.0.0.7:5001/".into(), timeout_ms: 300 };
        assert!(!timeout.body().contains("10.0.0.7") && timeout.body().contains("300 ms"));
        assert!(timeout.to_string().contains("10.0.0.7"), "the row's error keeps the upstream");
    }
}

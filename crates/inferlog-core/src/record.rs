//! One captured exchange: the unit that flows from the gateway through the write-ahead log
//! into the inference table. Field names are the table's column names.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Logging error code: the captured request body was cut at `max_payload_bytes`.
pub const MAX_REQUEST_SIZE_EXCEEDED: &str = "MAX_REQUEST_SIZE_EXCEEDED";
/// Logging error code: the captured response body was cut at `max_payload_bytes`.
pub const MAX_RESPONSE_SIZE_EXCEEDED: &str = "MAX_RESPONSE_SIZE_EXCEEDED";

/// Body encodings stored in `request_encoding` / `response_encoding`.
pub const ENCODING_UTF8: &str = "utf8";
pub const ENCODING_BASE64: &str = "base64";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub request_id: String,
    pub client_request_id: Option<String>,
    /// When the gateway received the request (Unix epoch, milliseconds, UTC). `date` is derived.
    pub timestamp_ms: i64,
    pub endpoint_name: String,
    pub model_name: String,
    pub model_version: String,
    pub method: String,
    pub path: String,
    pub status_code: i32,
    /// From forwarding the request to the last byte of the upstream's response; null when
    /// the upstream was never reached.
    pub execution_time_ms: Option<i64>,
    /// Whole time the exchange spent in the gateway.
    pub latency_ms: i64,
    pub sampling_fraction: f64,
    pub request: Option<String>,
    pub response: Option<String>,
    pub request_content_type: Option<String>,
    pub response_content_type: Option<String>,
    pub request_encoding: Option<String>,
    pub response_encoding: Option<String>,
    /// Original sizes, before any cut for `max_payload_bytes`.
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub logging_error_codes: Vec<String>,
    pub error: Option<String>,
    pub requester: Option<String>,
    pub request_metadata: BTreeMap<String, String>,
}

impl Record {
    /// UTC calendar day of `timestamp_ms`, as days since the Unix epoch (Arrow `Date32`).
    pub fn date_days(&self) -> i32 {
        date_days(self.timestamp_ms)
    }
}

/// UTC calendar day of a Unix time in milliseconds, as days since the Unix epoch (Arrow
/// `Date32`): the `date` partition of every table. Saturates far outside the calendar.
pub fn date_days(timestamp_ms: i64) -> i32 {
    timestamp_ms.div_euclid(86_400_000).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

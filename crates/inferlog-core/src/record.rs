//! One captured exchange: the unit that flows from the gateway through the write-ahead log
//! into the inference table. Field names are the table's column names.
//!
//! In the log, a record is one MessagePack array of its fields in declaration order
//! ([`encode_log_record`]): bodies are written as they are, length-prefixed, never escaped
//! as JSON strings would be. Logs written before held JSON objects; [`decode_log_record`]
//! reads both (a JSON frame starts with `{`, which no MessagePack array does).
//!
//! Invariant: fields are read by position, so a new field goes at the end of [`Record`] with
//! `#[serde(default)]`: older frames, shorter arrays, then decode with its default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Logging error code: the captured request body was cut at `max_payload_bytes`.
pub const MAX_REQUEST_SIZE_EXCEEDED: &str = "MAX_REQUEST_SIZE_EXCEEDED";
/// Logging error code: the captured response body was cut at `max_payload_bytes`.
pub const MAX_RESPONSE_SIZE_EXCEEDED: &str = "MAX_RESPONSE_SIZE_EXCEEDED";

/// How a body is held in `request` / `response` (the `request_encoding` /
/// `response_encoding` columns): its own text when it is UTF-8, else base64 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    Utf8,
    Base64,
}

impl BodyEncoding {
    /// The column's value.
    pub const fn as_str(self) -> &'static str {
        match self {
            BodyEncoding::Utf8 => "utf8",
            BodyEncoding::Base64 => "base64",
        }
    }

    /// The encoding a column value names.
    pub fn parse(value: &str) -> Option<BodyEncoding> {
        [BodyEncoding::Utf8, BodyEncoding::Base64].into_iter().find(|e| e.as_str() == value)
    }
}

/// How a streamed (`text/event-stream`) response ended: the `stream_status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamStatus {
    Completed,
    /// The client went away first.
    Cancelled,
    /// The upstream's body failed.
    Broken,
}

impl StreamStatus {
    /// The column's value.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Completed => "completed",
            StreamStatus::Cancelled => "cancelled",
            StreamStatus::Broken => "broken",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    pub request_encoding: Option<BodyEncoding>,
    pub response_encoding: Option<BodyEncoding>,
    /// Original sizes, before any cut for `max_payload_bytes`.
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub logging_error_codes: Vec<String>,
    pub error: Option<String>,
    pub requester: Option<String>,
    pub request_metadata: BTreeMap<String, String>,
    // Added after the first release: absent in older log segments, hence the defaults.
    /// The raw body of a `text/event-stream` response (`response` holds it assembled).
    #[serde(default)]
    pub response_stream: Option<String>,
    /// From receiving the request to the first streamed event carrying output.
    #[serde(default)]
    pub time_to_first_token_ms: Option<i64>,
    #[serde(default)]
    pub stream_chunks: Option<i64>,
    #[serde(default)]
    pub stream_status: Option<StreamStatus>,
    #[serde(default)]
    pub prompt_tokens: Option<i64>,
    #[serde(default)]
    pub completion_tokens: Option<i64>,
    #[serde(default)]
    pub total_tokens: Option<i64>,
    /// The model the response names (an LLM server's `model`).
    #[serde(default)]
    pub llm_model: Option<String>,
    /// The endpoint target that answered (traffic split or shadow).
    #[serde(default)]
    pub served_target: Option<String>,
    /// For a shadow exchange, the request id of the primary one it copies.
    #[serde(default)]
    pub shadow_of: Option<String>,
    /// With `oversize = "offload"`: the file holding the whole request body, relative to the
    /// payload table's folder (`_offload/{date}/{request_id}.request`); `request` keeps a prefix.
    #[serde(default)]
    pub request_offload: Option<String>,
    #[serde(default)]
    pub response_offload: Option<String>,
    /// The gateway that recorded the exchange: its `gateway_name`, else its instance id.
    #[serde(default)]
    pub gateway_id: Option<String>,
    // New fields go here, last, with `#[serde(default)]` (see the module's invariant).
}

/// Appends `record`'s log frame payload to `out`.
pub fn encode_log_record(record: &Record, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and every field of a Record has a MessagePack form.
    rmp_serde::encode::write(out, record).expect("a record encodes");
}

/// Why a log frame's payload is not a record.
#[derive(Debug, thiserror::Error)]
pub enum LogRecordError {
    #[error("not a record in MessagePack: {0}")]
    MessagePack(#[from] rmp_serde::decode::Error),
    #[error("not a record in JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The record in a log frame's payload, as [`encode_log_record`] writes it or as JSON (logs
/// written before).
pub fn decode_log_record(payload: &[u8]) -> Result<Record, LogRecordError> {
    if payload.first() == Some(&b'{') {
        return Ok(serde_json::from_slice(payload)?);
    }
    Ok(rmp_serde::from_slice(payload)?)
}

/// The folder under a payload table that holds offloaded bodies.
pub const OFFLOAD_DIR: &str = "_offload";

/// Whether a row's `request_offload`/`response_offload` has the shape the log writer gives
/// it (`_offload/{date}/{request_id}.{kind}`): anything else is never read or deleted.
pub fn is_offload_path(relative: &str) -> bool {
    relative.strip_prefix(OFFLOAD_DIR).is_some_and(|rest| rest.starts_with('/')) && !relative.contains("..")
}

/// Logging error code: an oversize body could not be written to its side file; the row keeps
/// the prefix, as with `truncate`.
pub const OFFLOAD_FAILED: &str = "OFFLOAD_FAILED";

impl Record {
    /// UTC calendar day of `timestamp_ms`, as days since the Unix epoch (Arrow `Date32`).
    pub fn date_days(&self) -> i32 {
        date_days(self.timestamp_ms)
    }

    /// Token usage and model of a non-streamed JSON response (a streamed one has them from
    /// its events already). Done on the log writer thread, off the request path.
    pub fn fill_llm_facts(&mut self) {
        // Read already (the log writer does, while the whole body is at hand): kept.
        let read = self.prompt_tokens.is_some() || self.completion_tokens.is_some() || self.total_tokens.is_some() || self.llm_model.is_some();
        if read || self.stream_status.is_some() || self.response_encoding != Some(BodyEncoding::Utf8) {
            return;
        }
        if !self.response_content_type.as_deref().is_some_and(|ct| ct.contains("json")) {
            return;
        }
        let Some(body) = self.response.as_deref() else { return };
        let (usage, model) = crate::llm::response_facts(body);
        self.prompt_tokens = usage.prompt_tokens;
        self.completion_tokens = usage.completion_tokens;
        self.total_tokens = usage.total_tokens;
        self.llm_model = model;
    }
}

/// UTC calendar day of a Unix time in milliseconds, as days since the Unix epoch (Arrow
/// `Date32`): the `date` partition of every table. Saturates far outside the calendar.
pub fn date_days(timestamp_ms: i64) -> i32 {
    timestamp_ms.div_euclid(86_400_000).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// An administrative action, as the `_audit` table records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at_ms: i64,
    /// The token's name; `local` for an unauthenticated loopback caller, `cli:{user}` for a
    /// command run on the machine.
    pub who: String,
    /// `capture.change`, `traffic.change`, `labels.import`, `monitor.run`, `token.create`, ...
    pub action: String,
    pub endpoint: Option<String>,
    /// What was asked (JSON or text).
    pub detail: String,
    /// `ok`, or why it failed.
    pub result: String,
}

impl AuditEvent {
    pub fn now(who: &str, action: &str, endpoint: Option<&str>, detail: String, result: Result<(), String>) -> Self {
        AuditEvent {
            at_ms: chrono::Utc::now().timestamp_millis(),
            who: who.to_string(),
            action: action.to_string(),
            endpoint: endpoint.map(str::to_string),
            detail,
            result: result.err().unwrap_or_else(|| "ok".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_record() -> Record {
        Record {
            request_id: "0193".into(),
            client_request_id: Some("c-1".into()),
            timestamp_ms: 1_764_000_000_000,
            endpoint_name: "iris".into(),
            model_name: "iris".into(),
            model_version: "2".into(),
            method: "POST".into(),
            path: "/invocations".into(),
            status_code: 200,
            execution_time_ms: Some(3),
            latency_ms: 4,
            sampling_fraction: 0.5,
            request: Some("{\"inputs\": [\"quote \\\" and \\u00e9\"]}".into()),
            response: Some("é ünïcode\n".into()),
            request_content_type: Some("application/json".into()),
            response_content_type: None,
            request_encoding: Some(BodyEncoding::Utf8),
            response_encoding: Some(BodyEncoding::Base64),
            request_bytes: 40,
            response_bytes: -1,
            logging_error_codes: vec![MAX_REQUEST_SIZE_EXCEEDED.into()],
            error: Some("x".into()),
            requester: Some("alice".into()),
            request_metadata: [("user-agent".to_string(), "curl".to_string())].into(),
            response_stream: Some("data: {}\n\n".into()),
            time_to_first_token_ms: Some(1),
            stream_chunks: Some(2),
            stream_status: Some(StreamStatus::Completed),
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            total_tokens: Some(7),
            llm_model: Some("m".into()),
            served_target: Some("a".into()),
            shadow_of: Some("0192".into()),
            request_offload: Some("_offload/2026-11-22/0193.request".into()),
            response_offload: None,
            gateway_id: Some("gw-1".into()),
        }
    }

    #[test]
    fn a_log_frame_gives_back_the_record_it_was_written_from() {
        let record = full_record();
        let mut frame = Vec::new();
        encode_log_record(&record, &mut frame);
        assert_ne!(frame.first(), Some(&b'{'));
        assert_eq!(decode_log_record(&frame).unwrap(), record);
        // The body is in the frame as it is: no escaping.
        let body = record.request.as_deref().unwrap().as_bytes();
        assert!(frame.windows(body.len()).any(|w| w == body));
        // Encodings and stream statuses are written as their column values, as before they
        // had types of their own.
        for value in ["base64", "completed"] {
            assert!(frame.windows(value.len()).any(|w| w == value.as_bytes()), "{value}");
        }
    }

    #[test]
    fn encodings_and_stream_statuses_read_as_their_column_values() {
        for encoding in [BodyEncoding::Utf8, BodyEncoding::Base64] {
            assert_eq!(BodyEncoding::parse(encoding.as_str()), Some(encoding));
            assert_eq!(serde_json::to_value(encoding).unwrap(), encoding.as_str());
        }
        assert_eq!(BodyEncoding::parse("gzip"), None);
        for status in [StreamStatus::Completed, StreamStatus::Cancelled, StreamStatus::Broken] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            let frame = rmp_serde::to_vec(status.as_str()).unwrap();
            assert_eq!(rmp_serde::from_slice::<StreamStatus>(&frame).unwrap(), status);
        }
    }

    #[test]
    fn json_frames_of_older_logs_still_decode() {
        let record = full_record();
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(decode_log_record(&json).unwrap(), record);
        // A frame from before the later fields existed.
        let mut old = serde_json::to_value(&record).unwrap();
        for later in ["response_stream", "gateway_id", "shadow_of", "request_offload", "response_offload"] {
            old.as_object_mut().unwrap().remove(later);
        }
        let decoded = decode_log_record(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!((decoded.gateway_id, decoded.response_stream, decoded.request_id), (None, None, record.request_id));
    }

    #[test]
    fn a_frame_written_before_a_field_was_added_decodes_with_its_default() {
        // The record as an array without its last field, as a gateway before it wrote.
        let record = full_record();
        let mut fields: Vec<serde_json::Value> = rmp_serde::from_slice(&{
            let mut f = Vec::new();
            encode_log_record(&record, &mut f);
            f
        })
        .unwrap();
        fields.pop();
        let shorter = rmp_serde::to_vec(&fields).unwrap();
        let decoded = decode_log_record(&shorter).unwrap();
        assert_eq!(decoded.gateway_id, None);
        assert_eq!(Record { gateway_id: record.gateway_id.clone(), ..decoded }, record);
    }

    #[test]
    fn a_damaged_frame_is_an_error_not_a_record() {
        let mut frame = Vec::new();
        encode_log_record(&full_record(), &mut frame);
        for cut in [1, frame.len() / 2, frame.len() - 1] {
            assert!(decode_log_record(&frame[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_log_record(b"{\"request_id\": ").is_err());
        assert!(decode_log_record(b"").is_err());
    }

    #[test]
    fn only_paths_the_log_writer_makes_are_offload_paths() {
        assert!(is_offload_path("_offload/2026-11-22/0193.request"));
        for other in ["_offloaded/x", "_offload", "/etc/passwd", "_offload/../../x", "data/_offload/x"] {
            assert!(!is_offload_path(other), "{other}");
        }
    }
}

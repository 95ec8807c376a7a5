//! Building a [`Record`] from the pieces of an exchange.

use base64::Engine;
use inferlog_core::record::BodyEncoding;
use inferlog_core::Record;

/// A body as stored: UTF-8 text as is, anything else base64; cut at `limit` bytes (on a
/// character boundary for text). Returns (text, encoding, was_cut).
pub fn encode_body(bytes: &[u8], limit: usize) -> (Option<String>, Option<BodyEncoding>, bool) {
    if bytes.is_empty() {
        return (None, None, false);
    }
    let cut = bytes.len() > limit;
    let kept = &bytes[..bytes.len().min(limit)];
    match std::str::from_utf8(kept) {
        Ok(text) => (Some(text.to_owned()), Some(BodyEncoding::Utf8), cut),
        // A cut through a multi-byte character leaves valid text before it.
        Err(e) if cut && e.error_len().is_none() => {
            let text = std::str::from_utf8(&kept[..e.valid_up_to()]).expect("valid prefix");
            (Some(text.to_owned()), Some(BodyEncoding::Utf8), cut)
        }
        Err(_) => (
            Some(base64::engine::general_purpose::STANDARD.encode(kept)),
            Some(BodyEncoding::Base64),
            cut,
        ),
    }
}

/// The top-level `"client_request_id"` of a JSON object body. Bodies that do not mention the
/// key are not parsed at all, so large payloads cost one substring scan.
pub fn client_request_id_from_body(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        client_request_id: Option<serde_json::Value>,
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' || !contains(body, b"\"client_request_id\"") {
        return None;
    }
    match serde_json::from_slice::<Probe>(body).ok()?.client_request_id? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fills in the response side of a record.
pub fn set_response(record: &mut Record, body: &[u8], total: u64, limit: usize) {
    let (text, encoding, cut) = encode_body(body, limit);
    record.response = text;
    record.response_encoding = encoding;
    record.response_bytes = total as i64;
    if cut || total as usize > body.len() {
        record
            .logging_error_codes
            .push(inferlog_core::record::MAX_RESPONSE_SIZE_EXCEEDED.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_binary_and_cut_bodies() {
        assert_eq!(encode_body(b"", 10), (None, None, false));
        assert_eq!(encode_body(b"{\"a\":1}", 100).0.unwrap(), "{\"a\":1}");
        let (b, enc, _) = encode_body(&[0xff, 0xfe, 0x00], 100);
        assert_eq!((b.unwrap().as_str(), enc.unwrap().as_str()), ("//4A", "base64"));
        let (b, enc, cut) = encode_body("aé".as_bytes(), 2); // cut inside 'é'
        assert_eq!((b.unwrap().as_str(), enc.unwrap().as_str(), cut), ("a", "utf8", true));
    }

    #[test]
    fn client_request_id_only_from_top_level_key() {
        let id = |s: &str| client_request_id_from_body(s.as_bytes());
        assert_eq!(id(r#"{"client_request_id": "abc", "inputs": [1]}"#).as_deref(), Some("abc"));
        assert_eq!(id(r#"{"client_request_id": 42}"#).as_deref(), Some("42"));
        assert_eq!(id(r#"{"inputs": {"client_request_id": "nested"}}"#), None);
        assert_eq!(id(r#"[{"client_request_id": "x"}]"#), None);
        assert_eq!(id(r#"{"client_request_id": "x", broken"#), None);
        assert_eq!(id("plain text"), None);
    }
}

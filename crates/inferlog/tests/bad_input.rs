//! Bad input and failing upstreams: a clear answer to the caller and a correct row.

use crate::support::*;
use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;

fn error_body(resp: reqwest::blocking::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["x-inferlog-error"], "true");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error_code"], code, "{body}");
    assert!(body["message"].as_str().unwrap().len() > 10, "{body}");
    id
}

#[test]
fn malformed_binary_empty_and_oversized_bodies_are_answered_and_recorded() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "max_request_bytes = 200000\n{}",
        endpoint_toml("m", &up.url(), "max_payload_bytes = 1000")
    );
    let gw = Gateway::start(dir.path(), &toml);
    let http = client();
    let id_of = |r: &reqwest::blocking::Response| r.headers()["x-request-id"].to_str().unwrap().to_string();

    // Malformed JSON: the model's own 400 comes back untouched and is recorded.
    let resp = http.post(gw.url("/endpoints/m/json")).header("content-type", "application/json").body("{\"inputs\": [1,").send().unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("x-inferlog-error").is_none());
    let malformed = id_of(&resp);
    assert_eq!(resp.json::<Value>().unwrap()["error_code"], "BAD_REQUEST");

    // Binary request and response bodies: stored as base64.
    let bytes: Vec<u8> = vec![0xff, 0x00, 0xfe, 0x80, 0x01];
    let resp = http.post(gw.url("/endpoints/m/echo")).header("content-type", "application/octet-stream").body(bytes.clone()).send().unwrap();
    let binary = id_of(&resp);
    assert_eq!(resp.bytes().unwrap().to_vec(), bytes);
    let resp = http.get(gw.url("/endpoints/m/binary")).send().unwrap();
    let binary_response = id_of(&resp);
    assert_eq!(resp.bytes().unwrap().len(), 256);

    // Empty body.
    let resp = http.post(gw.url("/endpoints/m/echo")).body("").send().unwrap();
    assert_eq!(resp.status(), 200);
    let empty = id_of(&resp);

    // Over max_payload_bytes but under the request limit: forwarded whole, recorded cut.
    let big = "y".repeat(5000);
    let resp = http.post(gw.url("/endpoints/m/echo")).body(big.clone()).send().unwrap();
    let cut = id_of(&resp);
    assert_eq!(resp.text().unwrap(), big, "the model gets and returns the whole body");

    // Over the request limit: 413 from the gateway, recorded with the error.
    let resp = http.post(gw.url("/endpoints/m/echo")).body("z".repeat(300_000)).send().unwrap();
    let too_large = error_body(resp, 413, "REQUEST_TOO_LARGE");

    // Unknown endpoint: 404 from the gateway, not recorded anywhere.
    let resp = http.post(gw.url("/endpoints/nope/invocations")).body("{}").send().unwrap();
    error_body(resp, 404, "ENDPOINT_NOT_FOUND");

    wait_rows(dir.path(), "m_payload", 6, Duration::from_secs(30));
    assert_eq!(count(dir.path(), "m_payload"), 6);
    assert!(!dir.path().join("tables/nope_payload/_delta_log").exists());

    let r = row(dir.path(), "m_payload", &malformed);
    assert_eq!((r["status_code"].as_i64(), r["request"].as_str()), (Some(400), Some("{\"inputs\": [1,")));
    assert!(r["response"].as_str().unwrap().contains("BAD_REQUEST"));
    assert!(r["error"].is_null());

    let r = row(dir.path(), "m_payload", &binary);
    assert_eq!(r["request_encoding"], "base64");
    let decoded = base64::engine::general_purpose::STANDARD.decode(r["request"].as_str().unwrap()).unwrap();
    assert_eq!(decoded, bytes);
    assert_eq!(r["response_encoding"], "base64");
    let r = row(dir.path(), "m_payload", &binary_response);
    assert_eq!(r["response_encoding"], "base64");
    assert_eq!(r["response_bytes"], 256);

    let r = row(dir.path(), "m_payload", &empty);
    assert!(r["request"].is_null() && r["request_encoding"].is_null());
    assert_eq!(r["request_bytes"], 0);

    let r = row(dir.path(), "m_payload", &cut);
    assert_eq!(r["request"].as_str().unwrap().len(), 1000);
    assert_eq!(r["request_bytes"], 5000);
    assert_eq!(r["response_bytes"], 5000);
    assert_eq!(r["logging_error_codes"], json!(["MAX_REQUEST_SIZE_EXCEEDED", "MAX_RESPONSE_SIZE_EXCEEDED"]));

    let r = row(dir.path(), "m_payload", &too_large);
    assert_eq!(r["status_code"], 413);
    assert!(r["error"].as_str().unwrap().contains("200000"), "{r}");
    assert!(r["execution_time_ms"].is_null(), "the upstream was never called");
    assert!(r["response"].as_str().unwrap().contains("REQUEST_TOO_LARGE"));
}

#[test]
fn unreachable_and_slow_upstreams_answer_502_and_504_and_are_recorded() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let closed = ClosedPort::new();
    let down_address = closed.url().trim_start_matches("http://").to_string();
    let toml = format!(
        "upstream_timeout_ms = 300\n{}{}",
        endpoint_toml("down", &format!("http://{down_address}"), ""),
        endpoint_toml("slow", &up.url(), "")
    );
    let gw = Gateway::start(dir.path(), &toml);
    let http = client();

    let resp = http.post(gw.url("/endpoints/down/invocations")).body("{\"inputs\": [1]}").send().unwrap();
    let down = error_body(resp, 502, "UPSTREAM_UNREACHABLE");
    let resp = http.post(gw.url("/endpoints/slow/slow/2000")).body("{\"inputs\": [2]}").send().unwrap();
    let slow = error_body(resp, 504, "UPSTREAM_TIMEOUT");
    // A body that breaks mid-way: the caller sees the failure, the row keeps what passed.
    let broken = http.get(gw.url("/endpoints/slow/break")).send().unwrap();
    let broken_id = broken.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(broken.bytes().is_err(), "the client must see that the body failed");

    assert_eq!(wait_rows(dir.path(), "down_payload", 1, Duration::from_secs(30)), 1);
    assert_eq!(wait_rows(dir.path(), "slow_payload", 2, Duration::from_secs(30)), 2);
    let r = row(dir.path(), "down_payload", &down);
    assert_eq!(r["status_code"], 502);
    assert_eq!(r["request"], "{\"inputs\": [1]}");
    assert!(r["error"].as_str().unwrap().contains("unreachable"), "{r}");
    // The caller (and the recorded answer) does not learn where the model server is; the
    // row's error does.
    assert!(!r["response"].as_str().unwrap().contains(&down_address), "{r}");
    assert!(r["response"].as_str().unwrap().contains("the model server is unreachable: connection refused"), "{r}");
    assert!(r["error"].as_str().unwrap().contains(&down_address), "{r}");
    let r = row(dir.path(), "slow_payload", &slow);
    assert_eq!(r["status_code"], 504);
    assert!(r["error"].as_str().unwrap().contains("300 ms"), "{r}");
    assert!(r["execution_time_ms"].as_i64().unwrap() >= 300);
    let r = row(dir.path(), "slow_payload", &broken_id);
    assert_eq!(r["status_code"], 200);
    assert_eq!(r["response"], "partial");
    assert!(r["error"].as_str().unwrap().contains("upstream response body failed"), "{r}");
}

#[test]
fn bodiless_responses_and_odd_paths_are_recorded_complete() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &format!("durability = \"sync\"\n{}", endpoint_toml("m", &up.url(), "")));
    let http = client();
    let head = http.head(gw.url("/endpoints/m/echo")).send().unwrap();
    assert_eq!(head.status(), 200);
    let head_id = head.headers()["x-request-id"].to_str().unwrap().to_string();
    let no_content = http.get(gw.url("/endpoints/m/status/204")).send().unwrap();
    assert_eq!(no_content.status(), 204);
    let no_content_id = no_content.headers()["x-request-id"].to_str().unwrap().to_string();
    // Percent-encoded paths reach the upstream exactly as sent.
    let odd = http.post(gw.url("/endpoints/m/echo%20x%3Fy?q=%2F")).body("odd").send().unwrap();
    assert_eq!(odd.status(), 404, "the upstream has no such route");
    assert!(up.seen.requests.lock().unwrap().iter().any(|(_, pq, _)| pq == "/echo%20x%3Fy?q=%2F"));
    // Paths outside the proxy routes get the gateway's JSON error.
    let resp = http.get(gw.url("/nowhere")).send().unwrap();
    error_body(resp, 404, "NOT_FOUND");
    let resp = http.post(gw.url("/healthz")).send().unwrap();
    error_body(resp, 405, "METHOD_NOT_ALLOWED");

    wait_rows(dir.path(), "m_payload", 3, Duration::from_secs(30));
    for id in [&head_id, &no_content_id] {
        let r = row(dir.path(), "m_payload", id);
        assert!(r["error"].is_null(), "{r}");
        assert!(r["response"].is_null(), "{r}");
    }
    assert_eq!(row(dir.path(), "m_payload", &head_id)["method"], "HEAD");
    assert_eq!(row(dir.path(), "m_payload", &no_content_id)["status_code"], 204);
    let odd = query(dir.path(), "SELECT path FROM m_payload WHERE request = 'odd'");
    assert_eq!(odd, vec![json!({"path": "/echo%20x%3Fy"})]);
}

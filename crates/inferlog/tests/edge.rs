//! The gateway's edge against callers that start requests they do not finish: a request
//! head begun on a kept-alive connection and request bodies declared but never sent; and
//! what the log says of the tokens whose grants change.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Reads one whole response (head and `content-length` body) from `stream`.
fn read_response(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if response.len() >= head_end + 4 + length {
                return text;
            }
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed mid-response: {text}");
        response.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_request_head_begun_on_a_kept_alive_connection_must_end_within_the_header_timeout() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    // The keep-alive timeout is far beyond the 20 s this test waits for the close.
    let toml = format!("header_read_timeout_ms = 1000\nkeep_alive_timeout_ms = 60000\n{}", endpoint_toml("m", &upstream.url(), ""));
    let gateway = Gateway::start(dir.path(), &toml);
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert!(read_response(&mut stream).starts_with("HTTP/1.1 200"));
    // Past the first request's header deadline, so the connection's timer is set for the
    // keep-alive timeout when the next head starts.
    std::thread::sleep(Duration::from_millis(1500));
    stream.write_all(b"G").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    let closed = match stream.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    assert!(closed, "a connection holding one byte of a request head is still open before the keep-alive timeout");
}

#[test]
fn declared_request_lengths_that_are_not_sent_take_no_request_memory() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "max_request_bytes = 1000000\nmax_request_bytes_in_flight = 1000000\nrequest_body_timeout_ms = 60000\n{}",
        endpoint_toml("m", &upstream.url(), "")
    );
    let gateway = Gateway::start(dir.path(), &toml);
    // A head declaring the whole budget, and no body.
    let mut holder = TcpStream::connect(gateway.addr).unwrap();
    holder.write_all(b"POST /endpoints/m/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n").unwrap();
    // Let the gateway read the head before the next request.
    std::thread::sleep(Duration::from_millis(500));
    let response = client().post(gateway.url("/endpoints/m/echo")).body("still served").send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "still served");
    drop(holder);
}

#[test]
fn a_grant_change_is_logged_without_the_tokens_name() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let owner = crate::auth::create_token(d, "owner-of-m", "owner", "m");
    crate::auth::create_token(d, "grantee-7f3a", "invoke", "other");
    let gateway = Gateway::start(d, &format!("[auth]\nenabled = true\n{}", endpoint_toml("m", &upstream.url(), "")));
    let resp = client()
        .put(gateway.url("/admin/endpoints/m/grants/grantee-7f3a"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({"role": "read"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let logs = gateway.logs();
    assert!(logs.contains("grant changed"), "{logs}");
    assert!(!logs.contains("grantee-7f3a"), "{logs}");
}

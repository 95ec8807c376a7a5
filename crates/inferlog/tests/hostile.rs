//! Hostile inputs against a running gateway that records and unpacks everything: each is
//! answered clearly (by the upstream or with a gateway error), recorded or refused as
//! documented, and the gateway keeps serving with bounded memory.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends raw bytes and returns the status line (or the connection error).
fn raw(gateway: &Gateway, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if let Err(e) = stream.write_all(request) {
        return format!("write failed: {e}");
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).lines().next().unwrap_or("closed without answer").to_string()
}

#[test]
fn hostile_inputs_are_answered_and_the_gateway_stays_up_and_small() {
    let _serial = exclusive();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = format!(
        "commit_interval_ms = 200\nunpack_interval_ms = 200\nrequest_body_timeout_ms = 1000\n[[endpoints]]\nname = \"m\"\nupstream = \"{}\"\nunpack = true\n",
        upstream.url()
    );
    let gateway = Gateway::start(d, &toml);
    let http = client();
    let echo = gateway.url("/endpoints/m/echo");
    let post = |body: Vec<u8>| http.post(&echo).header("content-type", "application/json").body(body).send().unwrap();

    // Deeply nested JSON: no stack overflow anywhere (capture, client id probe, unpack).
    let nested = format!("{{\"client_request_id\": \"deep\", \"instances\": {}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(post(nested.into_bytes()).status(), 200);
    // Huge numbers, and a number no double holds.
    assert_eq!(post(br#"{"instances": [[1e400, 123456789012345678901234567890, -1e308]]}"#.to_vec()).status(), 200);
    // Invalid UTF-8 declared as JSON.
    assert_eq!(post(vec![b'{', 0xff, 0xfe, b'}']).status(), 200);
    // 100 MB: refused at the declared length (before the body is read), and when streamed
    // without one.
    let status = raw(&gateway, format!("POST /endpoints/m/echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{{", 100 << 20).as_bytes());
    assert!(status.contains("413"), "{status}");
    let chunked = http
        .post(&echo)
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(vec![b'x'; 100 << 20])))
        .send()
        .map(|r| r.status().as_u16());
    assert!(matches!(chunked, Ok(413) | Err(_)), "{chunked:?}");
    // A sender that trickles its body: 408 after request_body_timeout_ms, not a held request.
    let started = Instant::now();
    let mut slow = TcpStream::connect(gateway.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    slow.write_all(b"POST /endpoints/m/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{").unwrap();
    let mut answer = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        if slow.write_all(b" ").is_err() {
            break;
        }
    }
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A flood of headers: refused by the HTTP layer, no crash.
    let mut flood = b"GET /endpoints/m/echo HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..20_000 {
        flood.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(50)).as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    let status = raw(&gateway, &flood);
    assert!(status.contains("431") || status.contains("400") || status.starts_with("write failed") || status.starts_with("closed"), "{status}");
    // A request line and garbage.
    let status = raw(&gateway, b"\x00\x01\x02 not http at all\r\n\r\n");
    assert!(status.contains("400") || status.starts_with("closed"), "{status}");

    // Still serving, everything that was answered is recorded, and the unpacker kept going.
    assert_eq!(http.get(gateway.url("/healthz")).send().unwrap().status(), 200);
    assert_eq!(post(br#"{"instances": [[1.0, 2.0]]}"#.to_vec()).status(), 200);
    let rows = wait_rows(d, "m_payload", 7, Duration::from_secs(30));
    assert!(rows >= 7, "{rows}");
    let statuses = query(d, "SELECT status_code, count(*) AS n FROM m_payload GROUP BY 1 ORDER BY 1");
    assert!(statuses.iter().any(|r| r["status_code"] == 408), "{statuses:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let unpacked = || try_query(d, "SELECT count(DISTINCT request_id) AS n FROM m_unpacked").map(|r| r[0]["n"].as_i64().unwrap_or(0)).unwrap_or(0);
    while unpacked() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let errors = query(d, "SELECT unpack_error FROM m_unpacked WHERE unpack_error IS NOT NULL");
    assert!(errors.len() >= 2, "the nested, huge-number or binary payloads are unpack errors, not crashes: {errors:?}");
    let peak = gateway.peak_rss_kib();
    assert!(peak > 0 && peak < 400 * 1024, "gateway peak RSS {peak} KiB");
}

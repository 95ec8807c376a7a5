//! The gateway at the network's edge: paths that would resolve elsewhere upstream, idle and
//! slow connections, the connection and request memory bounds, HTTP/2, request ids, a busy
//! port, and the JSON-only rule of the admin API.

use crate::support::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sends raw bytes on a new connection and returns everything the gateway answers until it
/// closes (or 20 s pass).
fn exchange(gateway: &Gateway, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// Whether the peer closed the connection (end of stream or reset) within 20 s.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

/// A metric's value in the Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn dot_segments_and_encoded_slashes_are_refused_before_anything_is_forwarded_or_recorded() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = format!(
        "commit_interval_ms = 200\n{}{}",
        endpoint_toml("a", &upstream.url(), ""),
        endpoint_toml("b", &upstream.url(), "")
    );
    let gateway = Gateway::start(d, &toml);
    for path in [
        "/endpoints/a/../b/echo",
        "/endpoints/a/%2e%2e/b/echo",
        "/endpoints/a/%2E./b/echo",
        "/endpoints/a/./echo",
        "/endpoints/a/../../admin/x",
        "/endpoints/a/..%2f..%2fadmin/x",
        "/endpoints/a/echo%2F..%2Fx",
        "/endpoints/a/..%5cadmin",
        "/endpoints/a/..;/b/echo",
    ] {
        let answer = exchange(&gateway, format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}").as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("BAD_REQUEST_PATH") && answer.contains("x-inferlog-error: true"), "{path}: {answer}");
    }
    let http = client();
    assert_eq!(http.post(gateway.url("/endpoints/a/echo")).body("{}").send().unwrap().status(), 200);

    let seen = upstream.seen.requests.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|(_, path, _)| path.as_str()).collect::<Vec<_>>(), ["/echo"], "only the plain request was forwarded");
    assert_eq!(wait_rows(d, "a_payload", 1, Duration::from_secs(30)), 1, "only the plain request was recorded");
    assert_eq!(query(d, "SELECT path FROM a_payload")[0]["path"], "/echo");
    assert_eq!(count(d, "b_payload"), 0);
}

/// Runs the gateway binary with its open files limit (soft and hard) set to `limit`.
fn with_open_files_limit(limit: u32) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), bin()]);
    command
}

#[test]
fn idle_and_slow_connections_are_closed_and_the_connection_limit_keeps_descriptors_for_the_committer() {
    let _serial = exclusive();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = format!(
        "commit_interval_ms = 200\nheader_read_timeout_ms = 500\nkeep_alive_timeout_ms = 1500\n{}",
        endpoint_toml("m", &upstream.url(), "")
    );
    // 1,024 descriptors, the usual default: 256 connections once the reserve is set aside.
    let gateway = Gateway::start_command(d, &toml, with_open_files_limit(1024));

    // More idle sockets than the process has descriptors, some of them sending half a
    // request head (slowloris); none needs a token.
    let mut idle: Vec<TcpStream> = (0..1100).map(|_| TcpStream::connect(gateway.addr).unwrap()).collect();
    for slow in idle.iter_mut().take(50) {
        slow.write_all(b"POST /endpoints/m/echo HTTP/1.1\r\nhost: x\r\n").unwrap();
    }
    // A normal request is served once the idle connections have been timed out.
    let http = client();
    let response = http.post(gateway.url("/endpoints/m/echo")).body("after the flood").send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "after the flood");
    for (i, socket) in idle.iter_mut().enumerate() {
        assert!(closed_by_peer(socket), "idle connection {i} is still open");
    }
    drop(idle);

    // A connection that served a request is closed once idle for the keep-alive timeout.
    let mut kept = TcpStream::connect(gateway.addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert!(closed_by_peer(&mut kept));

    let metrics = http.get(gateway.url("/metrics")).send().unwrap().text().unwrap();
    assert_eq!(metric(&metrics, "inferlog_process_open_files_limit"), 1024.0, "{metrics}");
    assert_eq!(metric(&metrics, "inferlog_http_connections_limit"), 256.0, "{metrics}");
    assert!(metric(&metrics, "inferlog_http_connection_limit_reached_total") >= 1.0, "{metrics}");
    assert!(metric(&metrics, "inferlog_http_connections_timed_out_total{phase=\"header\"}") >= 1100.0, "{metrics}");
    assert!(metric(&metrics, "inferlog_http_connections_timed_out_total{phase=\"keep_alive\"}") >= 1.0, "{metrics}");
    assert!(metrics.contains("# HELP inferlog_http_connections_open"), "{metrics}");

    // The committer kept its descriptors: the exchange is in the table, and nothing failed.
    assert_eq!(wait_rows(d, "m_payload", 1, Duration::from_secs(30)), 1);
    let logs = gateway.logs();
    assert!(!logs.contains("Too many open files") && !logs.contains(" ERROR "), "{logs}");
}

#[test]
fn a_body_trickled_to_any_route_is_cut_off_at_the_body_timeout() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &format!("request_body_timeout_ms = 500\n{}", endpoint_toml("m", &upstream.url(), "")));
    for path in ["/api/query", "/admin/endpoints/m/capture", "/endpoints/m/echo"] {
        let method = if path.starts_with("/admin") { "PUT" } else { "POST" };
        let mut slow = TcpStream::connect(gateway.addr).unwrap();
        slow.write_all(format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{").as_bytes()).unwrap();
        assert!(closed_by_peer(&mut slow), "{path}: a trickled body holds its connection");
    }
}

#[test]
fn http2_cleartext_is_not_served() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &endpoint_toml("m", &upstream.url(), ""));
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The HTTP/2 connection preface with an empty SETTINGS frame (prior knowledge, as
    // `curl --http2-prior-knowledge` sends it).
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).unwrap_or(0);
    assert!(n == 0 || answer.starts_with(b"HTTP/1.1"), "an HTTP/2 answer: {:?}", &answer[..n]);
    assert_eq!(client().get(gateway.url("/healthz")).send().unwrap().status(), 200);
}

#[test]
fn request_bodies_in_flight_are_bounded_by_a_byte_budget() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = format!(
        "commit_interval_ms = 200\nmax_request_bytes_in_flight = 20971520\n{}",
        endpoint_toml("m", &upstream.url(), "max_payload_bytes = 1024")
    );
    let gateway = Gateway::start(d, &toml);
    let body = vec![b'x'; 9_000_000];
    // Two bodies held while the model takes its time: 18 MB of the 20 MiB. The third is
    // read to its end and dropped, so its sender gets the answer rather than a broken pipe.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (url, body) = (gateway.url("/endpoints/m/slow/3000"), body.clone());
            std::thread::spawn(move || client().post(url).body(body).send().unwrap().status().as_u16())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream.seen.requests.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the two slow requests did not reach the upstream");
        std::thread::sleep(Duration::from_millis(20));
    }
    let http = client();
    let refused = http.post(gateway.url("/endpoints/m/echo")).body(body.clone()).send().unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["x-inferlog-error"], "true");
    let refused_id = refused.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(refused.json::<Value>().unwrap()["error_code"], "TEMPORARILY_UNAVAILABLE");
    assert_eq!(upstream.seen.requests.lock().unwrap().len(), 2, "the refused request was not forwarded");
    for request in held {
        assert_eq!(request.join().unwrap(), 200);
    }
    // The memory came back.
    assert_eq!(http.post(gateway.url("/endpoints/m/echo")).body(body).send().unwrap().status(), 200);
    assert_eq!(wait_rows(d, "m_payload", 4, Duration::from_secs(30)), 4);
    let row = row(d, "m_payload", &refused_id);
    assert_eq!(row["status_code"], 503);
    assert!(row["error"].as_str().unwrap().contains("max_request_bytes_in_flight"), "{row}");
}

#[test]
fn the_upstream_gets_the_rows_request_id_and_the_callers_is_kept_as_client_request_id() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gateway = Gateway::start(d, &format!("commit_interval_ms = 200\n{}", endpoint_toml("m", &upstream.url(), "")));
    let http = client();
    let send = |headers: &[(&str, &str)]| {
        let mut request = http.post(gateway.url("/endpoints/m/echo")).body("{}");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200);
        response.headers()["x-request-id"].to_str().unwrap().to_string()
    };
    let first = send(&[("x-request-id", "caller-chosen")]);
    let second = send(&[("x-request-id", "caller-2"), ("x-client-request-id", "explicit")]);
    assert_ne!(first, "caller-chosen");
    let forwarded: Vec<String> = upstream.seen.requests.lock().unwrap().iter().map(|(_, _, h)| h["x-request-id"].to_str().unwrap().to_string()).collect();
    assert_eq!(forwarded, [first.clone(), second.clone()], "the model server sees the ids of the rows");
    wait_rows(d, "m_payload", 2, Duration::from_secs(30));
    assert_eq!(row(d, "m_payload", &first)["client_request_id"], "caller-chosen");
    assert_eq!(row(d, "m_payload", &second)["client_request_id"], "explicit");
}

#[test]
fn a_busy_port_stops_the_start_with_one_line_and_status_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    // A few times: what went wrong depended on how far the start had got.
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(bin())
            .args(["serve", "--listen", &listen, "--data-dir", dir.path().to_str().unwrap(), "--endpoint", "m=http://127.0.0.1:9"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(&format!("cannot listen on {listen}")) && errors[0].contains("in use"), "{stderr}");
    }
}

/// `text` without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_iris_model_on_port_0_logs_the_port_it_got() {
    let mut child = Command::new(bin())
        .args(["iris-model", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(strip_ansi(&line));
        }
    });
    let line = loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the iris model logs where it listens");
        if line.contains("iris model serving") {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let addr = line.split("listen=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or_default().to_string();
    let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    assert!(addr.starts_with("127.0.0.1:") && port != 0, "{line}");
}

#[test]
fn admin_changes_take_json_only_like_the_data_apis() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path(), &endpoint_toml("m", &upstream.url(), ""));
    let http = client();
    let capture = gateway.url("/admin/endpoints/m/capture");
    for (path, body) in [
        ("/admin/endpoints/m/capture", r#"{"enabled": false}"#),
        ("/admin/endpoints/m/traffic", r#"{"weights": {"default": 2}}"#),
        ("/admin/endpoints/m/grants/guest", r#"{"role": "read"}"#),
    ] {
        // curl -d without a content type sends a form.
        for content_type in [Some("application/x-www-form-urlencoded"), Some("text/plain"), None] {
            let mut request = http.put(gateway.url(path)).body(body);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = request.send().unwrap();
            assert_eq!(response.status(), 415, "{path} {content_type:?}");
            assert_eq!(response.json::<Value>().unwrap()["error_code"], "UNSUPPORTED_MEDIA_TYPE");
        }
    }
    assert_eq!(http.get(&capture).send().unwrap().json::<Value>().unwrap()["enabled"], true, "nothing changed");
    let changed = http.put(&capture).header("content-type", "application/json").body(r#"{"enabled": false}"#).send().unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.json::<Value>().unwrap(), json!({"enabled": false, "sampling_fraction": 1.0}));
}

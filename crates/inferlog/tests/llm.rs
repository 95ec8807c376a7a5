//! LLM endpoints and traffic management through real processes: the official `openai` Python
//! client against the gateway in front of a fake OpenAI-compatible server that streams with
//! delays; traffic split by weight, sticky routing, a shadow target, the traffic admin API.

use crate::support::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn openai_client(base_url: &str, mode: &str) -> Value {
    let python = std::env::var("INTEROP_PYTHON")
        .expect("INTEROP_PYTHON is not set: run the tests with scripts/test, which installs the openai client");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = Command::new(python).args([script, base_url, mode]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openai_client.py {mode} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

fn assembled_content(row: &Value) -> String {
    let response: Value = serde_json::from_str(row["response"].as_str().expect("response")).unwrap();
    assert_eq!(response["object"], "chat.completion", "{response}");
    response["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
}

#[test]
fn openai_client_streams_through_the_gateway_and_each_row_holds_the_assembled_answer() {
    let _serial = exclusive();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gateway = Gateway::start(d, &format!("commit_interval_ms = 200\n{}", endpoint_toml("llm", &upstream.url(), "")));
    let base = gateway.url("/endpoints/llm/v1");

    let stream = openai_client(&base, "stream");
    let plain = openai_client(&base, "plain");
    let cancel = openai_client(&base, "cancel");
    let broken = openai_client(&base, "broken");

    // Chunks reached the client as the upstream sent them, 150 ms apart, not all at the end.
    let expected = FAKE_WORDS.concat();
    assert_eq!(stream["content"], expected.as_str());
    let arrivals: Vec<f64> = stream["arrivals"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    assert_eq!(arrivals.len(), FAKE_WORDS.len());
    let spread = arrivals[arrivals.len() - 1] - arrivals[0];
    let sent_over = (FAKE_WORDS.len() - 1) as f64 * FAKE_CHUNK_DELAY_MS as f64 / 1000.0;
    assert!(spread >= 0.8 * sent_over, "chunks arrived within {spread:.3} s, the upstream sent them over {sent_over:.3} s: {arrivals:?}");

    assert_eq!(wait_rows(d, "llm_payload", 4, Duration::from_secs(30)), 4);
    let row_of = |client: &Value| row(d, "llm_payload", client["request_id"].as_str().unwrap());

    let r = row_of(&stream);
    assert_eq!(r["stream_status"], "completed");
    assert_eq!(assembled_content(&r), expected, "the row holds what the client received");
    let response: Value = serde_json::from_str(r["response"].as_str().unwrap()).unwrap();
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
    assert_eq!(response["usage"]["total_tokens"], 17);
    assert_eq!((r["prompt_tokens"].as_i64(), r["completion_tokens"].as_i64(), r["total_tokens"].as_i64()), (Some(12), Some(5), Some(17)));
    assert_eq!(stream["usage"]["total_tokens"], 17);
    assert_eq!(r["llm_model"], "fake-model");
    // Role chunk, five words, the finish chunk and the usage chunk; [DONE] is not a chunk.
    assert_eq!(r["stream_chunks"], 8);
    let ttft = r["time_to_first_token_ms"].as_i64().unwrap();
    let latency = r["latency_ms"].as_i64().unwrap();
    assert!(ttft >= FAKE_CHUNK_DELAY_MS as i64 && latency - ttft >= (0.8 * sent_over * 1000.0) as i64, "ttft {ttft} ms, latency {latency} ms");
    let raw = r["response_stream"].as_str().unwrap();
    assert!(raw.starts_with("data: {") && raw.trim_end().ends_with("data: [DONE]"), "{raw}");
    assert_eq!(r["response_content_type"], "text/event-stream");

    // Not streamed: the same columns, from the JSON answer.
    let r = row_of(&plain);
    assert_eq!(plain["content"], expected.as_str());
    assert_eq!(assembled_content(&r), expected);
    assert_eq!((r["prompt_tokens"].as_i64(), r["total_tokens"].as_i64(), r["llm_model"].as_str()), (Some(12), Some(17), Some("fake-model")));
    assert!(r["stream_status"].is_null() && r["time_to_first_token_ms"].is_null() && r["response_stream"].is_null(), "{r}");

    // The client left after three words: recorded with what had been sent.
    let r = row_of(&cancel);
    assert_eq!(r["stream_status"], "cancelled");
    let sent = assembled_content(&r);
    let seen = cancel["content"].as_str().unwrap();
    assert!(sent.starts_with(seen) && sent.len() < 40 * 4, "client saw {seen:?}, row has {sent:?}");
    assert!(r["error"].as_str().unwrap().contains("client disconnected"), "{r}");
    assert!(r["total_tokens"].is_null(), "no usage was sent: none is made up");

    // The upstream broke after two words.
    assert!(broken["error"].is_string(), "{broken}");
    let r = row_of(&broken);
    assert_eq!(r["stream_status"], "broken");
    assert_eq!(assembled_content(&r), "Hello there");
    assert_eq!(broken["content"], "Hello there");
    assert!(r["error"].as_str().unwrap().contains("upstream response body failed"), "{r}");
}

fn ab_config(a: &str, b: &str, shadow_upstream: &str) -> String {
    format!(
        "commit_interval_ms = 200\n[[endpoints]]\nname = \"ab\"\nsticky_header = \"x-user\"\n\
         [[endpoints.targets]]\nname = \"a\"\nupstream = \"{a}\"\nmodel_version = \"1\"\nweight = 90\n\
         [[endpoints.targets]]\nname = \"b\"\nupstream = \"{b}\"\nmodel_version = \"2\"\nweight = 10\n\
         [endpoints.shadow]\nname = \"next\"\nupstream = \"{shadow_upstream}\"\nmodel_version = \"3\"\nfraction = 0.0\ntimeout_ms = 500\n"
    )
}

/// Sends `n` requests from `threads` threads; returns each one's (status, latency).
fn send_many(gateway: &Gateway, n: usize, threads: usize, headers: impl Fn(usize) -> Vec<(String, String)> + Sync) -> Vec<(u16, Duration)> {
    let url = gateway.url("/endpoints/ab/echo");
    let results = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (url, results, headers) = (&url, &results, &headers);
            scope.spawn(move || {
                let http = client();
                for i in (t..n).step_by(threads) {
                    let mut request = http.post(url).body(format!("{{\"i\": {i}}}"));
                    for (k, v) in headers(i) {
                        request = request.header(k, v);
                    }
                    let started = Instant::now();
                    let status = request.send().unwrap().status().as_u16();
                    results.lock().unwrap().push((status, started.elapsed()));
                }
            });
        }
    });
    results.into_inner().unwrap()
}

#[test]
fn traffic_splits_by_weight_sticks_by_header_and_a_shadow_never_touches_the_caller() {
    let _serial = exclusive();
    let (a, b, shadow) = (Upstream::start(), Upstream::start(), Upstream::start());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut gateway = Gateway::start(d, &ab_config(&a.url(), &b.url(), &format!("{}/slow/2000", shadow.url())));

    // 90/10 over 10,000 requests: a binomial with a standard deviation of 30.
    let results = send_many(&gateway, 10_000, 8, |_| vec![]);
    assert!(results.iter().all(|(s, _)| *s == 200));
    assert_eq!(wait_rows(d, "ab_payload", 10_000, Duration::from_secs(60)), 10_000);
    let split = query(d, "SELECT served_target, model_version, count(*) AS n FROM ab_payload GROUP BY 1, 2 ORDER BY 1");
    assert_eq!(split.len(), 2, "{split:?}");
    assert_eq!((split[0]["served_target"].as_str(), split[0]["model_version"].as_str()), (Some("a"), Some("1")));
    assert_eq!((split[1]["served_target"].as_str(), split[1]["model_version"].as_str()), (Some("b"), Some("2")));
    let to_a = split[0]["n"].as_i64().unwrap();
    assert!((to_a - 9_000).abs() <= 150, "{to_a} of 10,000 went to a; 9,000 ± 150 (5 σ) expected");
    assert_eq!(a.seen.requests.lock().unwrap().len() as i64, to_a);

    // Sticky: each of 40 users stays on one target.
    let results = send_many(&gateway, 400, 4, |i| vec![("x-user".into(), format!("u{}", i % 40)), ("x-client-request-id".into(), format!("u{}-{i}", i % 40))]);
    assert!(results.iter().all(|(s, _)| *s == 200));
    assert_eq!(wait_rows(d, "ab_payload", 10_400, Duration::from_secs(30)), 10_400);
    let sticky = query(d, "SELECT split_part(client_request_id, '-', 1) AS user, count(DISTINCT served_target) AS targets, count(*) AS n \
                           FROM ab_payload WHERE client_request_id IS NOT NULL GROUP BY 1");
    assert_eq!(sticky.len(), 40);
    assert!(sticky.iter().all(|u| u["targets"] == 1 && u["n"] == 10), "{sticky:?}");

    // Weights and the shadow share change at runtime.
    let http = client();
    let traffic = gateway.url("/admin/endpoints/ab/traffic");
    let put = |body: &str| {
        let r = http.put(&traffic).header("content-type", "application/json").body(body.to_string()).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (status, state) = put(r#"{"weights": {"a": 0, "b": 1}}"#);
    assert_eq!(status, 200, "{state}");
    assert_eq!(state, serde_json::json!({"weights": {"a": 0, "b": 1}, "shadow_fraction": 0.0}));
    let without_shadow = send_many(&gateway, 20, 1, |_| vec![]);
    let (status, state) = put(r#"{"shadow_fraction": 1.0}"#);
    assert_eq!(status, 200, "{state}");
    assert_eq!(state, serde_json::json!({"weights": {"a": 0, "b": 1}, "shadow_fraction": 1.0}));
    for (bad, reason) in [
        (r#"{"weights": {"c": 1}}"#, "no target `c`"),
        (r#"{"weights": {"b": 0}}"#, "above 0"),
        (r#"{"shadow_fraction": 2}"#, "between 0 and 1"),
        (r#"{"weight": {}}"#, "unknown field"),
    ] {
        let (status, body) = put(bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains(reason), "{bad}: {body}");
    }
    assert_eq!(http.get(&traffic).send().unwrap().json::<Value>().unwrap(), state);

    // A shadow that takes 2 s (cut at its 500 ms timeout) leaves the callers' latency alone.
    let with_shadow = send_many(&gateway, 20, 1, |_| vec![]);
    let median = |r: &[(u16, Duration)]| {
        let mut t: Vec<Duration> = r.iter().map(|(_, t)| *t).collect();
        t.sort();
        t[t.len() / 2]
    };
    let worst = |r: &[(u16, Duration)]| r.iter().map(|(_, t)| *t).max().unwrap();
    assert!(without_shadow.iter().chain(&with_shadow).all(|(s, _)| *s == 200));
    assert!(worst(&with_shadow) < Duration::from_millis(400), "primary answered in {:?} with a 2 s shadow", worst(&with_shadow));
    assert!(median(&with_shadow) < median(&without_shadow) + Duration::from_millis(50),
        "median {:?} with the shadow, {:?} without", median(&with_shadow), median(&without_shadow));
    let shadowed = 20;
    let deadline = Instant::now() + Duration::from_secs(30);
    let shadow_rows = || query(d, "SELECT count(*) AS n FROM ab_payload WHERE shadow_of IS NOT NULL")[0]["n"].as_i64().unwrap();
    while shadow_rows() < shadowed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let pairs = query(d, "SELECT p.served_target AS primary_target, p.status_code AS primary_status, s.served_target AS shadow_target, \
                          s.model_version AS shadow_version, s.status_code AS shadow_status, s.error AS shadow_error \
                          FROM ab_payload p JOIN ab_payload s ON s.shadow_of = p.request_id");
    assert_eq!(pairs.len(), shadowed as usize, "every shadow row pairs with its primary: {pairs:?}");
    assert!(pairs.iter().all(|p| p["primary_target"] == "b" && p["primary_status"] == 200 && p["shadow_target"] == "next"
        && p["shadow_version"] == "3" && p["shadow_status"] == 504), "{pairs:?}");
    // The shadow got the same request as the primary.
    assert_eq!(shadow.seen.requests.lock().unwrap().len(), shadowed as usize);

    // Settings survive a restart; a shadow that cannot be reached fails on its own.
    gateway.terminate();
    let closed = ClosedPort::new();
    let mut gateway = Gateway::start(d, &ab_config(&a.url(), &b.url(), &closed.url()));
    assert_eq!(client().get(gateway.url("/admin/endpoints/ab/traffic")).send().unwrap().json::<Value>().unwrap(), state);
    let after = send_many(&gateway, 10, 1, |_| vec![]);
    assert!(after.iter().all(|(s, _)| *s == 200));
    let rows_now = 10_400 + 20 + 20 + shadowed as usize + 10 + 10;
    assert_eq!(wait_rows(d, "ab_payload", rows_now, Duration::from_secs(30)), rows_now);
    let unreachable = query(d, "SELECT count(*) AS n FROM ab_payload WHERE shadow_of IS NOT NULL AND status_code = 502 AND error LIKE '%unreachable%'");
    assert_eq!(unreachable[0]["n"], 10);
    gateway.terminate();

    // Shadow exchanges stay out of the unpacked table (and so out of monitoring and labels).
    let out = Command::new(bin()).args(["unpack", "ab", "--data-dir", d.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unpacked = query(d, "SELECT count(DISTINCT request_id) AS n FROM ab_unpacked")[0]["n"].as_i64().unwrap();
    let primaries = query(d, "SELECT count(*) AS n FROM ab_payload WHERE shadow_of IS NULL")[0]["n"].as_i64().unwrap();
    assert_eq!((unpacked, primaries), (rows_now as i64 - shadowed - 10, rows_now as i64 - shadowed - 10));
}

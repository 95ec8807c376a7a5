//! `POST /api/query` within bounds: a statement stuck computing is answered 408 at its
//! timeout while other statements keep being answered, results stop at
//! `query_max_result_bytes`, and joins and aggregations stop at `query_memory_bytes`.

use crate::support::*;
use serde_json::{json, Value};

fn post_query(gw: &Gateway, sql: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client().post(gw.url("/api/query")).json(&json!({ "sql": sql })).send().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().unwrap())
}

fn gateway(dir: &std::path::Path, settings: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start(dir, &format!("{settings}\n{}", endpoint_toml("iris", &upstream.url(), "")));
    (upstream, gw)
}

#[test]
fn a_statement_computing_past_its_timeout_holds_up_no_other_statement() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, gw) = gateway(dir.path(), "query_timeout_ms = 1500");
    // Seconds of work inside one call of one scalar function, with almost no memory: the
    // statement never yields to its runtime.
    let slow_sql = "SELECT levenshtein(repeat('a', 40000), repeat('b', 40000)) AS d";
    let slow_url = gw.url("/api/query");
    let slow = std::thread::spawn(move || {
        let resp = client().post(slow_url).json(&json!({ "sql": slow_sql })).send().unwrap();
        resp.status().as_u16()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, _, body) = post_query(&gw, "SELECT 1 AS one");
    assert_eq!(status, 200, "a quick statement waited for the slow one: {body}");
    assert_eq!(body["rows"], json!([{"one": 1}]));
    assert_eq!(slow.join().unwrap(), 408);
    // Still answering after the abandoned statement.
    let (status, _, body) = post_query(&gw, "SELECT count(*) AS n FROM iris_payload");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_result_stops_at_query_max_result_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, gw) = gateway(dir.path(), "query_max_result_bytes = 100000");
    // 100 rows of 10 kB: a megabyte.
    let (status, headers, body) = post_query(&gw, "SELECT repeat('x', 10000) AS s FROM generate_series(1, 100)");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["truncated"], true);
    assert_eq!(headers.get("x-inferlog-truncated").map(|v| v.to_str().unwrap()), Some("true"));
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(body["row_count"].as_u64(), Some(rows.len() as u64));
    assert!(!rows.is_empty() && rows.len() <= 10, "{} rows of 10 kB within 100 kB", rows.len());
    // A result within the limit is whole.
    let (status, _, body) = post_query(&gw, "SELECT repeat('x', 100) AS s FROM generate_series(1, 100)");
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["row_count"].as_u64(), body["truncated"].as_bool()), (Some(100), Some(false)));
}

#[test]
fn a_join_larger_than_query_memory_bytes_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, gw) = gateway(dir.path(), "query_memory_bytes = 2000000");
    // The hash join's build side of a million rows needs far more than 2 MB, and cannot spill.
    let sql = "SELECT count(*) AS n FROM generate_series(1, 1000000) a JOIN generate_series(1, 1000000) b ON a.value = b.value";
    let (status, _, body) = post_query(&gw, sql);
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("query_memory_bytes"), "{body}");
    // Statements within the pool still run.
    let (status, _, body) = post_query(&gw, "SELECT count(*) AS n FROM generate_series(1, 1000)");
    assert_eq!((status, &body["rows"]), (200, &json!([{"n": 1000}])), "{body}");
}

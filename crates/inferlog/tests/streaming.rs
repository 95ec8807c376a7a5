use crate::support::*;
use std::io::Read;
use std::time::{Duration, Instant};

#[test]
fn chunks_pass_through_as_they_arrive_and_the_row_holds_the_whole_body() {
    for durability in ["async", "sync"] {
        let up = Upstream::start();
        let dir = tempfile::tempdir().unwrap();
        let gw = Gateway::start(dir.path(), &format!("durability = \"{durability}\"\n{}", endpoint_toml("m", &up.url(), "")));
        let started = Instant::now();
        let mut resp = client().get(gw.url("/endpoints/m/stream")).send().unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let mut first = [0u8; 8];
        resp.read_exact(&mut first).unwrap();
        let first_at = started.elapsed();
        assert_eq!(&first, b"chunk-1\n");
        // The upstream sends the last chunk 600 ms after the first: the first must not wait for it.
        assert!(first_at < Duration::from_millis(450), "{durability}: first chunk after {first_at:?}");
        let mut rest = String::new();
        resp.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "chunk-2\nchunk-3\n");
        wait_rows(dir.path(), "m_payload", 1, Duration::from_secs(30));
        let r = row(dir.path(), "m_payload", &id);
        assert_eq!(r["response"], "chunk-1\nchunk-2\nchunk-3\n");
        assert!(r["execution_time_ms"].as_i64().unwrap() >= 550, "execution time covers the whole stream: {r}");
    }
}

#[test]
fn a_client_that_goes_away_mid_stream_still_leaves_a_row() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &endpoint_toml("m", &up.url(), ""));
    let mut resp = client().get(gw.url("/endpoints/m/stream")).send().unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut first = [0u8; 8];
    resp.read_exact(&mut first).unwrap();
    drop(resp);
    wait_rows(dir.path(), "m_payload", 1, Duration::from_secs(30));
    let r = row(dir.path(), "m_payload", &id);
    assert!(r["response"].as_str().unwrap().starts_with("chunk-1\n"), "{r}");
    assert!(r["error"].as_str().unwrap().contains("client disconnected"), "{r}");
}

//! kill -9 under load, then a restart: every record that reached the log is in the table
//! exactly once.

use crate::support::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn load(gw_url: String, stop: Arc<AtomicBool>, answered: Arc<Mutex<Vec<String>>>, worker: usize) {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let body = format!("{{\"worker\": {worker}, \"i\": {i}}}");
        let Ok(resp) = http.post(&gw_url).body(body.clone()).send() else { continue };
        let id = resp.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string());
        let ok = resp.status() == 200;
        // Only a response read to its end counts as answered.
        if let (Some(id), true, Ok(text)) = (id, ok, resp.text()) {
            if text == body {
                answered.lock().unwrap().push(id);
            }
        }
    }
}

#[test]
fn kill_9_under_load_loses_nothing_answered_and_duplicates_nothing() {
    let _exclusive = exclusive();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("durability = \"sync\"\ncommit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), ""));
    let mut gw = Gateway::start(dir.path(), &toml);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (url, stop, answered) = (gw.url("/endpoints/m/echo"), stop.clone(), answered.clone());
            std::thread::spawn(move || load(url, stop, answered, w))
        })
        .collect();
    // Let several commits happen under load, then kill mid-stream.
    std::thread::sleep(Duration::from_millis(2500));
    gw.kill9();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 50, "the load ran ({} answered)", answered.len());
    let before_restart = count(dir.path(), "m_payload");

    let gw = Gateway::start(dir.path(), &toml);
    let total = wait_rows(dir.path(), "m_payload", answered.len(), Duration::from_secs(60));
    let rows = query(dir.path(), "SELECT request_id, count(*) AS n FROM m_payload GROUP BY request_id");
    let counts: HashMap<String, u64> = rows
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap()))
        .collect();
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated rows: {duplicated:?}");
    let missing: Vec<_> = answered.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} of {} answered requests missing: {:?}\n{}", missing.len(), answered.len(), &missing[..missing.len().min(5)], gw.logs());
    assert_eq!(total, counts.len());
    assert!(total >= before_restart);
    eprintln!("answered {}, rows before restart {before_restart}, rows after {total}", answered.len());
}

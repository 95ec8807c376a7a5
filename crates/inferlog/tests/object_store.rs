//! Tables on an S3-compatible object store: the gateway commits there, every command reads
//! and writes there, and other engines (Python deltalake, polars, DuckDB) read the same rows
//! straight from the store.

use crate::support::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const TABLES: &str = "s3://inferlog/prod";

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The gateway logged no ERROR and no panic.
fn assert_quiet(gw: &Gateway) {
    let logs = gw.logs();
    assert!(!logs.contains("ERROR") && !logs.contains("panicked"), "{logs}");
}

fn query_store(s3: &S3Server, data_dir: &std::path::Path, sql: &str) -> Vec<Value> {
    json_lines(&s3.inferlog(&["query", "--data-dir", data_dir.to_str().unwrap(), "--tables-uri", TABLES, "--format", "json", sql]))
}

/// The rows another engine reads from the store: `s3_read.py ENGINE URI SQL`.
fn read_with(s3: &S3Server, engine: &str, table: &str, sql: &str) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_read.py");
    let out = Command::new(python()).args([script, engine, &format!("{TABLES}/{table}"), sql]).envs(s3.env()).output().unwrap();
    json_lines(&out)
}

#[test]
fn tables_on_s3_hold_every_exchange_once_and_every_engine_reads_the_same_rows() {
    let s3 = S3Server::start();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("gateway_name = \"gw-a\"\ncommit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), ""));
    let mut gw = s3.gateway(dir.path(), TABLES, &toml);
    let http = client();
    let n = 40;
    for i in 0..n {
        let resp = http.post(gw.url("/endpoints/m/echo")).header("content-type", "application/json").body(format!("{{\"inputs\": [[{i}, {}]]}}", i * 2)).send().unwrap();
        assert_eq!(resp.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = query_store(&s3, dir.path(), "SELECT request_id, status_code, request FROM m_payload ORDER BY request_id");
        if rows.len() >= n || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(rows.len(), n, "every exchange once");
    assert!(!dir.path().join("tables").exists(), "nothing of the tables on local disk");
    assert!(dir.path().join("wal/m").is_dir(), "the log stays local");

    let expected: Vec<(String, i64)> = rows.iter().map(|r| (r["request_id"].as_str().unwrap().to_string(), r["status_code"].as_i64().unwrap())).collect();
    for engine in ["deltalake", "polars", "duckdb"] {
        let got = read_with(&s3, engine, "m_payload", "SELECT request_id, status_code FROM m_payload");
        let got: Vec<(String, i64)> = got.iter().map(|r| (r["request_id"].as_str().unwrap().to_string(), r["status_code"].as_i64().unwrap())).collect();
        assert_eq!(got, expected, "{engine} reads what inferlog query reads");
    }

    // Each row names the gateway that recorded it, and inference_table() filters on it.
    let by_gateway = query_store(&s3, dir.path(), "SELECT (SELECT count(*) FROM inference_table('m', gateway => 'gw-a')) AS a, \
         (SELECT count(*) FROM inference_table('m', gateway => 'gw-b')) AS b, (SELECT min(gateway_id) FROM m_payload) AS id");
    assert_eq!((by_gateway[0]["a"].as_u64(), by_gateway[0]["b"].as_u64()), (Some(n as u64), Some(0)));
    assert_eq!(by_gateway[0]["id"], "gw-a");

    // Commands on the store: unpack, then query what it wrote.
    let unpack = s3.inferlog(&["unpack", "m", "--data-dir", dir.path().to_str().unwrap(), "--tables-uri", TABLES]);
    assert!(unpack.status.success(), "{}", String::from_utf8_lossy(&unpack.stderr));
    let unpacked = query_store(&s3, dir.path(), "SELECT count(*) AS n, count(input_1) AS with_feature FROM m_unpacked");
    assert_eq!((unpacked[0]["n"].as_u64(), unpacked[0]["with_feature"].as_u64()), (Some(n as u64), Some(n as u64)));

    // The profile every engine reads: reader 1, writer 2, no table features.
    for table in ["m_payload", "m_unpacked"] {
        let protocol = read_with(&s3, "protocol", table, "");
        assert_eq!(protocol[0]["min_reader_version"], 1, "{table}: {protocol:?}");
        assert_eq!(protocol[0]["min_writer_version"], 2, "{table}: {protocol:?}");
    }
    gw.terminate();
    assert_quiet(&gw);
    let logs = gw.logs();
    assert!(logs.contains(&format!("tables={TABLES}/")), "the start names where the tables are: {logs}");
}

/// Starts `inferlog serve` on the store of `env`, expecting it to refuse; its one error line.
fn refused_start(env: &[(&'static str, String)]) -> String {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap(), "--tables-uri", TABLES])
        .args(["--endpoint", &format!("m={}", up.url())])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(error.contains(&format!("cannot reach the tables at {TABLES}/")), "{error}");
    error.to_string()
}

#[test]
fn a_store_that_cannot_be_reached_stops_the_start_with_one_line() {
    let s3 = S3Server::start();
    let mut env = s3.env();
    let closed = ClosedPort::new();
    env[0].1 = closed.url();
    let error = refused_start(&env);
    assert!(error.contains("error sending request"), "the cause is named: {error}");
}

#[test]
fn a_store_that_refuses_the_credentials_stops_the_start_with_one_line() {
    // moto checks credentials after its first action (creating the bucket); `test` is unknown.
    let s3 = S3Server::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]);
    let error = refused_start(&s3.env());
    assert!(error.contains("InvalidAccessKeyId"), "the store's refusal is named: {error}");
}

#[test]
fn a_tables_uri_on_an_unknown_store_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["query", "--data-dir", dir.path().to_str().unwrap(), "--tables-uri", "ftp://host/x", "SELECT 1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--tables-uri") && stderr.contains("is not on a supported store: `ftp://`"), "{stderr}");
}

/// `inferlog_lease_held{lease="m"}` on a gateway's /metrics.
fn holds_lease(gw: &Gateway) -> Option<bool> {
    metric(gw, "inferlog_lease_held{lease=\"m\"}").map(|held| held == 1.0)
}

#[test]
fn two_gateways_share_one_table_exactly_once_and_one_lease_holder_is_replaced_when_it_dies() {
    let s3 = S3Server::start();
    let up = Upstream::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let start = |dir: &std::path::Path, name: &str| {
        let toml = format!("gateway_name = \"{name}\"\nlease_ttl_ms = 3000\ncommit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), ""));
        s3.gateway(dir, TABLES, &toml)
    };
    let mut a = start(dirs[0].path(), "gw-a");
    let mut b = start(dirs[1].path(), "gw-b");
    let http = client();
    let n = 30;
    for i in 0..n {
        for gw in [&a, &b] {
            let resp = http.post(gw.url("/endpoints/m/echo")).body(format!("{{\"i\": {i}}}")).send().unwrap();
            assert_eq!(resp.status(), 200);
        }
    }
    let data_dir = dirs[0].path().to_path_buf();
    let counts = |expected: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = query_store(&s3, &data_dir, "SELECT gateway_id, count(*) AS n, count(DISTINCT request_id) AS d FROM m_payload GROUP BY 1 ORDER BY 1");
            assert!(rows.iter().all(|r| r["n"] == r["d"]), "no row twice: {rows:?}");
            let total: u64 = rows.iter().map(|r| r["n"].as_u64().unwrap()).sum();
            if total >= expected || Instant::now() > deadline {
                return (rows.len(), total);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    assert_eq!(counts(2 * n), (2, 2 * n), "both gateways' rows in the one table, each once");

    // Exactly one holder of the endpoint's lease.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (held_a, held_b) = loop {
        let held = (holds_lease(&a), holds_lease(&b));
        if matches!(held, (Some(x), Some(y)) if x != y) || Instant::now() > deadline {
            break held;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(held_a != held_b && held_a.is_some() && held_b.is_some(), "one holder: {held_a:?} {held_b:?}");
    let holder_name = if held_a == Some(true) { "gw-a" } else { "gw-b" };
    // Both gateways see the fleet, as does the command line.
    let fleet: Value = http.get(b.url("/admin/fleet")).send().unwrap().json().unwrap();
    let names: Vec<&str> = fleet["gateways"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, ["gw-a", "gw-b"], "{fleet}");
    let lease = fleet["leases"].as_array().unwrap().iter().find(|l| l["lease"] == "m").unwrap_or_else(|| panic!("{fleet}"));
    assert_eq!(lease["holder"], holder_name, "{fleet}");
    assert_eq!(fleet["gateways"][0]["endpoints"][0]["endpoint"], "m", "{fleet}");
    let cli: Value = serde_json::from_slice(&s3.inferlog(&["fleet", "--json", "--data-dir", data_dir.to_str().unwrap(), "--tables-uri", TABLES]).stdout).unwrap();
    let cli_names: Vec<&str> = cli["gateways"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(cli_names, names, "{cli}");
    assert_eq!(cli["leases"][0]["holder"], holder_name, "{cli}");
    let (holder, other) = if held_a == Some(true) { (&mut a, &mut b) } else { (&mut b, &mut a) };
    holder.kill9();
    let killed_at = Instant::now();
    while holds_lease(other) != Some(true) {
        assert!(killed_at.elapsed() < Duration::from_secs(3 + 5), "the other gateway takes the lease within its time to live");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..10 {
        let resp = http.post(other.url("/endpoints/m/echo")).body(format!("{{\"after\": {i}}}")).send().unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(counts(2 * n + 10).1, 2 * n + 10);
    other.terminate();
    assert_quiet(&other);
}

#[test]
fn a_store_that_stops_answering_for_30_s_delays_commits_only() {
    let _exclusive = exclusive();
    let s3 = S3Server::start();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("commit_interval_ms = 200\ndurability = \"sync\"\n{}", endpoint_toml("m", &up.url(), ""));
    let mut gw = s3.gateway(dir.path(), TABLES, &toml);
    let http = client();
    let send = |from: usize, count: usize| {
        for i in from..from + count {
            let started = Instant::now();
            let resp = http.post(gw.url("/endpoints/m/echo")).body(format!("{{\"i\": {i}}}")).send().unwrap();
            assert_eq!(resp.status(), 200, "serving never depends on the store");
            assert!(started.elapsed() < Duration::from_secs(2), "nor waits on it: {:?}", started.elapsed());
        }
    };
    send(0, 20);
    let committed = |expected: u64, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let rows = query_store(&s3, dir.path(), "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM m_payload");
            let (n, d) = (rows[0]["n"].as_u64().unwrap(), rows[0]["d"].as_u64().unwrap());
            assert_eq!(n, d, "none twice");
            if n == expected {
                return;
            }
            assert!(Instant::now() < deadline, "every answered request committed: {n} of {expected}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    committed(20, Duration::from_secs(30));
    // The store stops answering (its process is stopped, connections hang) for 30 s.
    s3.pause();
    let paused = Instant::now();
    let mut sent = 20;
    while paused.elapsed() < Duration::from_secs(30) {
        send(sent, 10);
        sent += 10;
        std::thread::sleep(Duration::from_millis(500));
    }
    let age = metric(&gw, "inferlog_table_last_commit_age_seconds").unwrap_or(0.0);
    assert!(age > 10.0, "the outage shows in the commit age: {age}");
    s3.resume();
    committed(sent as u64, Duration::from_secs(90));
    gw.terminate();
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
}

#[test]
fn three_gateways_in_sync_durability_one_killed_and_restarted_under_load_lose_and_double_nothing_answered() {
    let _exclusive = exclusive();
    let s3 = S3Server::start();
    let up = Upstream::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |i: usize| {
        let toml = format!("gateway_name = \"gw-{i}\"\ndurability = \"sync\"\ncommit_interval_ms = 300\n{}", endpoint_toml("m", &up.url(), ""));
        s3.gateway(dirs[i].path(), TABLES, &toml)
    };
    let mut gateways: Vec<Gateway> = (0..3).map(start).collect();
    let addrs: Vec<String> = gateways.iter().map(|g| g.url("/endpoints/m/echo")).collect();
    // Load on every gateway; each answered request's row id (x-request-id) is kept.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = addrs
        .iter()
        .cloned()
        .enumerate()
        .map(|(gateway, url)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let http = client();
                let mut answered = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    // The killed gateway refuses connections until it is back. A request is
                    // answered once its whole body has arrived: in sync durability the body's
                    // end waits for the log, and a gateway killed before that answered nothing.
                    if let Ok(resp) = http.post(&url).body(format!("{{\"i\": {i}}}")).send() {
                        let ok = resp.status() == 200;
                        let id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
                        if let (true, Some(id), Ok(_)) = (ok, id, resp.bytes()) {
                            answered.push((gateway, id));
                        }
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    gateways[1].kill9();
    std::thread::sleep(Duration::from_secs(1));
    // Restarted on the same data dir: what its log held is committed, nothing twice.
    let restarted = start(1);
    let restarted_url = restarted.url("/endpoints/m/echo");
    let killed = std::mem::replace(&mut gateways[1], restarted);
    for _ in 0..20 {
        assert_eq!(client().post(&restarted_url).body("{}").send().unwrap().status(), 200);
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: Vec<(usize, String)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(answered.len() > 100, "under load: {}", answered.len());
    let data_dir = dirs[0].path();
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let rows = query_store(&s3, data_dir, "SELECT request_id, count(*) AS n FROM m_payload GROUP BY 1");
        let twice: Vec<&Value> = rows.iter().filter(|r| r["n"] != 1).collect();
        assert!(twice.is_empty(), "no row twice: {twice:?}");
        let ids: std::collections::HashSet<&str> = rows.iter().filter_map(|r| r["request_id"].as_str()).collect();
        let missing: Vec<&(usize, String)> = answered.iter().filter(|(_, id)| !ids.contains(id.as_str())).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break format!("{missing:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        missing,
        "[]",
        "every answered request (gateway, request id) is in the table, of {}; logs of the killed gateway:\n{}\nafter restart:\n{}",
        answered.len(),
        killed.logs(),
        gateways[1].logs()
    );
}

#[test]
fn a_capture_toggle_and_a_revoked_grant_on_one_gateway_reach_the_others_within_2_s() {
    let _exclusive = exclusive();
    let s3 = S3Server::start();
    let up = Upstream::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // Tokens made by the command line go to the store, where every gateway reads them.
    let token = |args: &[&str]| {
        let mut all = vec!["token"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", dirs[0].path().to_str().unwrap(), "--tables-uri", TABLES]);
        let out = s3.inferlog(&all);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string()
    };
    let admin = token(&["create", "--name", "admin", "--role", "owner", "--endpoint", "*"]);
    let caller = token(&["create", "--name", "caller", "--role", "invoke", "--endpoint", "m"]);
    let toml = |i: usize| {
        format!("gateway_name = \"gw-{i}\"\ncommit_interval_ms = 200\n[auth]\nenabled = true\n{}", endpoint_toml("m", &up.url(), ""))
    };
    let a = s3.gateway(dirs[0].path(), TABLES, &toml(0));
    let b = s3.gateway(dirs[1].path(), TABLES, &toml(1));
    let http = client();
    let invoke = |gw: &Gateway, body: &str| http.post(gw.url("/endpoints/m/echo")).bearer_auth(&caller).body(body.to_string()).send().unwrap();
    let captured_before = invoke(&b, r#"{"when": "before"}"#);
    assert_eq!(captured_before.status(), 200);
    let captured_id = captured_before.headers()["x-request-id"].to_str().unwrap().to_string();
    let within_2s = |what: &str, done: &dyn Fn() -> bool| {
        let since = Instant::now();
        while !done() {
            assert!(since.elapsed() < Duration::from_secs(2), "{what} within 2 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        since.elapsed()
    };

    // Capture turned off through gateway a: b stops capturing.
    let put = http.put(a.url("/admin/endpoints/m/capture")).bearer_auth(&admin).json(&serde_json::json!({"enabled": false})).send().unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().unwrap());
    let capture_on_b = || -> Value { http.get(b.url("/admin/endpoints/m/capture")).bearer_auth(&admin).send().unwrap().json().unwrap() };
    let took = within_2s("the toggle on gateway b", &|| capture_on_b()["enabled"] == false);
    eprintln!("capture toggle reached the other gateway after {} ms", took.as_millis());
    let uncaptured = invoke(&b, r#"{"when": "off"}"#);
    assert_eq!(uncaptured.status(), 200, "serving goes on");
    let uncaptured_id = uncaptured.headers()["x-request-id"].to_str().unwrap().to_string();

    // Two changes at once, one through each gateway, to other fields: both are kept.
    std::thread::scope(|scope| {
        let on_a = scope.spawn(|| http.put(a.url("/admin/endpoints/m/capture")).bearer_auth(&admin).json(&serde_json::json!({"sampling_fraction": 0.25})).send().unwrap().status().as_u16());
        let on_b = scope.spawn(|| http.put(b.url("/admin/endpoints/m/capture")).bearer_auth(&admin).json(&serde_json::json!({"enabled": true})).send().unwrap().status().as_u16());
        assert_eq!((on_a.join().unwrap(), on_b.join().unwrap()), (200, 200));
    });
    for gw in [&a, &b] {
        within_2s("both concurrent changes on every gateway", &|| {
            let state: Value = http.get(gw.url("/admin/endpoints/m/capture")).bearer_auth(&admin).send().unwrap().json().unwrap();
            state == serde_json::json!({"enabled": true, "sampling_fraction": 0.25})
        });
    }

    // The caller's grant taken away through gateway a: b refuses it.
    let delete = http.delete(a.url("/admin/endpoints/m/grants/caller")).bearer_auth(&admin).send().unwrap();
    assert_eq!(delete.status(), 204);
    assert_eq!(invoke(&a, "{}").status(), 403, "at once on the gateway that changed it");
    let took = within_2s("the revoked grant on gateway b", &|| invoke(&b, "{}").status() == 403);
    eprintln!("grant removal reached the other gateway after {} ms", took.as_millis());
    // A token revoked by the command line is unknown everywhere.
    token(&["revoke", "--name", "admin"]);
    for gw in [&a, &b] {
        within_2s("the revoked token", &|| http.get(gw.url("/admin/endpoints/m/capture")).bearer_auth(&admin).send().unwrap().status() == 401);
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let ids = loop {
        let rows = query_store(&s3, dirs[0].path(), "SELECT request_id FROM m_payload");
        let ids: Vec<String> = rows.iter().filter_map(|r| r["request_id"].as_str().map(str::to_string)).collect();
        if ids.contains(&captured_id) || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(ids.contains(&captured_id), "captured while on: {ids:?}");
    assert!(!ids.contains(&uncaptured_id), "not captured while off: {ids:?}");
    for gw in [a, b] {
        assert_quiet(&gw);
    }
}

#[test]
fn a_baseline_made_anywhere_is_the_fleets_and_the_schedule_goes_on_across_lease_holders() {
    use crate::monitoring::{AlertReceiver, IrisModel};
    let _exclusive = exclusive();
    let s3 = S3Server::start();
    let model = IrisModel::start();
    let receiver = AlertReceiver::start();
    // The baseline is made from a machine of its own: it goes to the store, not its data dir.
    let cli = tempfile::tempdir().unwrap();
    let mut csv = String::from("sepal length (cm),sepal width (cm),petal length (cm),petal width (cm),species\n");
    for i in 0..150 {
        csv.push_str(&format!("{:.1},{:.1},{:.1},{:.1},{}\n", 5.0 + (i % 5) as f64 / 10.0, 2.0 + (i % 20) as f64 / 10.0,
            1.0 + (i * 7 % 60) as f64 / 10.0, 0.1 + (i * 11 % 24) as f64 / 10.0, ["setosa", "versicolor", "virginica"][i % 3]));
    }
    let train = cli.path().join("train.csv");
    std::fs::write(&train, csv).unwrap();
    let cli_dir = cli.path().to_str().unwrap();
    let out = s3.inferlog(&["baseline", "iris", "--from", train.to_str().unwrap(), "--label", "species", "--data-dir", cli_dir, "--tables-uri", TABLES]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("written to {TABLES}/_inferlog/monitoring/iris")), "{said}");
    assert!(!cli.path().join("monitoring").exists(), "nothing of it on local disk");
    let listed = |prefix: &str| -> Vec<String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_read.py");
        let out = Command::new(python()).args([script, "list", &format!("{TABLES}/{prefix}")]).envs(s3.env()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        names.sort();
        names
    };
    assert_eq!(listed("_inferlog/monitoring/iris"), ["constraints.json", "reference.parquet", "statistics.json"]);

    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let toml = |i: usize| {
        format!(
            "gateway_name = \"gw-{i}\"\nlease_ttl_ms = 3000\ncommit_interval_ms = 200\nunpack_interval_ms = 200\nupstream_timeout_ms = 2000\n\
             [[endpoints]]\nname = \"iris\"\nupstream = \"{}\"\nunpack = true\n\
             [endpoints.monitor]\nschedule = \"1s\"\nwindow = \"2s\"\nwebhook_url = \"{}\"\nwebhook_backoff_ms = 100\n",
            model.1, receiver.url
        )
    };
    let mut gateways: Vec<Gateway> = (0..2).map(|i| s3.gateway(dirs[i].path(), TABLES, &toml(i))).collect();
    let http = client();
    // Sepal lengths of 6.0 to 7.9, all out of the baseline's range, through both gateways.
    let send = |gateways: &[Gateway], n: usize| {
        for i in 0..n {
            let body = serde_json::json!({"dataframe_split": {
                "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
                "data": [[6.0 + (i % 20) as f64 / 10.0, 3.0, 1.5, 0.2]]}});
            let r = http.post(gateways[i % gateways.len()].url("/endpoints/iris/invocations")).json(&body).send().unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    send(&gateways, 20);
    let ids = |alerts: &[Value]| -> std::collections::BTreeMap<String, usize> {
        let mut ids = std::collections::BTreeMap::new();
        for a in alerts {
            *ids.entry(a["alert_id"].as_str().unwrap().to_string()).or_default() += 1;
        }
        ids
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !receiver.alerts().iter().any(|a| a["check"] == "range_check") {
        assert!(Instant::now() < deadline, "no range_check alert: {:?}", receiver.alerts());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The schedule's progress is beside the baseline, where the next holder finds it.
    assert!(listed("_inferlog/monitoring/iris").contains(&"schedule.json".to_string()));
    let holder = (0..2).find(|&i| metric(&gateways[i], "inferlog_lease_held{lease=\"iris\"}") == Some(1.0)).expect("a holder");
    // More traffic, then the holder dies: the other takes the lease and alerts what is new,
    // never again what was alerted.
    send(&gateways, 10);
    std::thread::sleep(Duration::from_secs(2));
    gateways[holder].kill9();
    let other = &gateways[1 - holder];
    let killed = Instant::now();
    while metric(other, "inferlog_lease_held{lease=\"iris\"}") != Some(1.0) {
        assert!(killed.elapsed() < Duration::from_secs(3 + 5), "the other gateway takes the lease");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = ids(&receiver.alerts()).len();
    send(std::slice::from_ref(other), 10);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids(&receiver.alerts()).len() == before {
        assert!(Instant::now() < deadline, "the new holder alerts new windows: {:?}", receiver.alerts());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let attempts = ids(&receiver.alerts());
    // Each alert: refused once by the receiver, delivered by the retry, and never sent again
    // (an alert the killed holder was sending when it died may be sent once more).
    let again: Vec<_> = attempts.iter().filter(|(_, n)| **n > 2).collect();
    assert!(again.len() <= 1, "alerted again: {again:?}");
    // The report from the machine that made the baseline reads the fleet's tables and files.
    let report = cli.path().join("report.html");
    let out = s3.inferlog(&["report", "iris", "--output", report.to_str().unwrap(), "--data-dir", cli_dir, "--tables-uri", TABLES]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for dir in &dirs {
        assert!(!dir.path().join("monitoring").exists(), "no monitoring files in a gateway's data dir");
    }
    assert_quiet(&other);
}

#[test]
fn oversize_bodies_are_offloaded_beside_tables_on_the_store_and_erased_with_their_rows() {
    let _exclusive = exclusive();
    let s3 = S3Server::start();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("commit_interval_ms = 200\n{}", endpoint_toml("docs", &up.url(), "max_payload_bytes = 1000\noversize = \"offload\""));
    let gw = s3.gateway(dir.path(), TABLES, &toml);
    let http = client();
    let big = format!("{{\"text\": \"{}\"}}", "word ".repeat(2000));
    let resp = http.post(gw.url("/endpoints/docs/echo")).body(big.clone()).send().unwrap();
    assert_eq!(resp.status(), 200);
    let big_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.text().unwrap(), big, "the caller gets the whole body");
    assert_eq!(http.post(gw.url("/endpoints/docs/echo")).body("{\"a\":1}").send().unwrap().status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = query_store(&s3, dir.path(), "SELECT request_id, request, request_offload, response_offload, logging_error_codes FROM docs_payload");
        if rows.len() == 2 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = rows.iter().find(|r| r["request_id"] == big_id.as_str()).unwrap();
    assert_eq!(row["request"].as_str().unwrap().len(), 1000, "the row keeps a prefix: {row}");
    let pointer = row["request_offload"].as_str().unwrap().to_string();
    assert!(pointer.starts_with("_offload/") && pointer.ends_with(".request"), "{row}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_read.py");
    let object = |relative: &str| Command::new(python()).args([script, "cat", &format!("{TABLES}/docs_payload/{relative}")]).envs(s3.env()).output().unwrap();
    let read = object(&pointer);
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    assert_eq!(String::from_utf8(read.stdout).unwrap(), big, "the whole body beside the table on the store");
    let response_pointer = row["response_offload"].as_str().unwrap().to_string();
    assert_eq!(String::from_utf8(object(&response_pointer).stdout).unwrap(), big);
    // Uploaded and committed: nothing waits in the gateway's spool.
    let spool = dir.path().join("offload/docs");
    let waiting: Vec<_> = walk_files(&spool);
    assert!(waiting.is_empty(), "{waiting:?}");

    let out = s3.inferlog(&["erase", "docs", "--request-id", &big_id, "--data-dir", dir.path().to_str().unwrap(), "--tables-uri", TABLES]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gone = object(&pointer);
    assert!(!gone.status.success(), "the body went with its row");
    assert!(!object(&response_pointer).status.success());
    assert_eq!(query_store(&s3, dir.path(), "SELECT count(*) AS n FROM docs_payload")[0]["n"], 1);
    assert_quiet(&gw);
}

/// Every file under `dir` (none if it does not exist).
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk_files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_gateway_whose_disk_is_lost_loses_only_what_it_had_not_committed_and_doubles_nothing() {
    let _exclusive = exclusive();
    let s3 = S3Server::start();
    let up = Upstream::start();
    let disk = tempfile::tempdir().unwrap();
    let toml = format!("gateway_name = \"gw-1\"\ncommit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), ""));
    let mut gw = s3.gateway(disk.path(), TABLES, &toml);
    let http = client();
    for i in 0..30 {
        assert_eq!(http.post(gw.url("/endpoints/m/echo")).body(format!("{{\"before\": {i}}}")).send().unwrap().status(), 200);
    }
    let counts = |expected: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = query_store(&s3, disk.path(), "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM m_payload");
            if rows[0]["n"].as_u64() >= Some(expected) || Instant::now() > deadline {
                return (rows[0]["n"].as_u64().unwrap(), rows[0]["d"].as_u64().unwrap());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    assert_eq!(counts(30), (30, 30));
    // The machine goes, and its disk with it: a new one starts on an empty data dir.
    gw.kill9();
    drop(gw);
    let replacement = tempfile::tempdir().unwrap();
    let gw = s3.gateway(replacement.path(), TABLES, &toml);
    for i in 0..20 {
        assert_eq!(http.post(gw.url("/endpoints/m/echo")).body(format!("{{\"after\": {i}}}")).send().unwrap().status(), 200);
    }
    assert_eq!(counts(50), (50, 50), "what was committed stays, once; the new gateway adds its own");
    assert_quiet(&gw);
}

#[test]
fn a_data_dir_moved_to_the_store_brings_its_tokens_toggles_and_baseline() {
    let _exclusive = exclusive();
    let s3 = S3Server::start();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // Made while the tables were local: a token, a capture toggle, a baseline.
    let out = s3.inferlog(&["token", "create", "--data-dir", d, "--name", "old", "--role", "owner", "--endpoint", "m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    std::fs::write(dir.path().join("state/capture.json"), r#"{"m": {"enabled": false, "sampling_fraction": 1.0}}"#).unwrap();
    std::fs::write(dir.path().join("train.csv"), "x,label\n1,a\n2,b\n3,a\n4,b\n").unwrap();
    let train = dir.path().join("train.csv");
    let out = s3.inferlog(&["baseline", "m", "--from", train.to_str().unwrap(), "--label", "label", "--data-dir", d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let toml = format!("[auth]\nenabled = true\n{}", endpoint_toml("m", &up.url(), ""));
    let gw = s3.gateway(dir.path(), TABLES, &toml);
    let http = client();
    let capture = http.get(gw.url("/admin/endpoints/m/capture")).bearer_auth(&secret).send().unwrap();
    assert_eq!(capture.status(), 200, "the old token still works");
    assert_eq!(capture.json::<Value>().unwrap()["enabled"], false, "capture stays off");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_read.py");
    let listed = Command::new(python()).args([script, "list", &format!("{TABLES}/_inferlog")]).envs(s3.env()).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for name in ["state/tokens.json", "state/capture.json", "monitoring/m/constraints.json", "monitoring/m/reference.parquet"] {
        assert!(listed.contains(name), "{name} in the store: {listed}");
    }
    assert!(gw.logs().contains("imported the data dir's"), "{}", gw.logs());
    assert_quiet(&gw);
}

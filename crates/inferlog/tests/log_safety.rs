//! The capture log's own safety: its writer identity (a lost or foreign `instance.id` never
//! commits a record twice), its free-space reserve, and who may read what it writes.

use crate::support::*;
use std::process::Command;
use std::time::Duration;

fn send(gw: &Gateway, n: usize) {
    let http = client();
    for i in 0..n {
        let resp = http.post(gw.url("/endpoints/m/echo")).body(format!("{{\"i\": {i}}}")).send().unwrap();
        assert_eq!(resp.status(), 200);
    }
}

fn duplicated_request_ids(data_dir: &std::path::Path) -> usize {
    let rows = query(data_dir, "SELECT count(*) AS n FROM (SELECT request_id FROM m_payload GROUP BY request_id HAVING count(*) > 1)");
    rows[0]["n"].as_u64().unwrap() as usize
}

/// Runs `inferlog serve` expecting it to refuse the start; returns its stderr.
fn refused_start(data_dir: &std::path::Path, upstream: &str) -> String {
    let stderr_path = data_dir.with_extension("refused.log");
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap(), "--endpoint", &format!("m={upstream}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "the start was refused: {stderr}");
    stderr
}

#[test]
fn a_lost_instance_id_is_restored_from_the_log_and_nothing_is_committed_twice() {
    let _exclusive = exclusive();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("commit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), ""));
    let mut gw = Gateway::start(dir.path(), &toml);
    send(&gw, 40);
    assert_eq!(wait_rows(dir.path(), "m_payload", 40, Duration::from_secs(30)), 40);
    gw.terminate();
    let id_path = dir.path().join("instance.id");
    let identity = std::fs::read_to_string(&id_path).unwrap();
    std::fs::remove_file(&id_path).unwrap();

    let gw = Gateway::start(dir.path(), &toml);
    send(&gw, 10);
    let rows = wait_rows(dir.path(), "m_payload", 50, Duration::from_secs(30));
    assert_eq!(duplicated_request_ids(dir.path()), 0, "committed records were committed again\n{}", gw.logs());
    assert_eq!(rows, 50, "{}", gw.logs());
    assert_eq!(std::fs::read_to_string(&id_path).unwrap(), identity, "the identity came back from the log");
}

#[test]
fn a_log_of_another_writer_identity_refuses_the_start() {
    let _exclusive = exclusive();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("commit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), ""));
    let mut gw = Gateway::start(dir.path(), &toml);
    send(&gw, 5);
    assert_eq!(wait_rows(dir.path(), "m_payload", 5, Duration::from_secs(30)), 5);
    gw.terminate();
    // As if another gateway's data dir (its own instance.id) had been given this log.
    std::fs::write(dir.path().join("instance.id"), "0190aaaa-0000-7000-8000-000000000000").unwrap();
    let stderr = refused_start(dir.path(), &up.url());
    assert!(stderr.contains("instance.id") && stderr.contains("wal"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert_eq!(count(dir.path(), "m_payload"), 5, "nothing was committed again");
}

#[test]
fn a_second_gateway_on_the_same_data_dir_refuses_to_start() {
    let _exclusive = exclusive();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("commit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), ""));
    let gw = Gateway::start(dir.path(), &toml);
    send(&gw, 5);
    let stderr = refused_start(dir.path(), &up.url());
    assert!(stderr.contains("in use") && stderr.contains(&dir.path().display().to_string()), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert_eq!(wait_rows(dir.path(), "m_payload", 5, Duration::from_secs(30)), 5);
}

#[test]
fn below_the_free_space_reserve_records_are_dropped_and_counted_and_requests_still_answered() {
    let _exclusive = exclusive();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    // A reserve larger than any disk here: nothing may be logged.
    let toml = format!("log_min_free_bytes = {}\ncommit_interval_ms = 200\n{}", u64::MAX / 2, endpoint_toml("m", &up.url(), ""));
    let mut gw = Gateway::start(dir.path(), &toml);
    send(&gw, 5);
    let metrics = client().get(gw.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("inferlog_capture_dropped_total") && l.contains("reason=\"low_disk_space\"") && l.ends_with(" 5")),
        "{metrics}"
    );
    gw.terminate();
    assert_eq!(count(dir.path(), "m_payload"), 0);
    let logs = gw.logs();
    assert!(!logs.lines().any(|l| l.contains("ERROR") && l.contains("inferlog_capture")), "{logs}");
    assert_eq!(logs.matches("below log_min_free_bytes").count(), 1, "said once, not per record: {logs}");
}

#[test]
fn data_dir_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let _exclusive = exclusive();
    let up = Upstream::start();
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("data");
    let config = parent.path().join("inferlog.toml");
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ncommit_interval_ms = 200\n{}",
        data_dir.display(),
        endpoint_toml("m", &up.url(), "max_payload_bytes = 1024\noversize = \"offload\"")
    );
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(bin())
        .args(["token", "create", "--data-dir", data_dir.to_str().unwrap(), "--name", "alice", "--role", "owner", "--endpoint", "m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut gw = Gateway::spawn(parent.path(), &["serve", "--config", config.to_str().unwrap()]);
    let http = client();
    let big = format!("{{\"text\": \"{}\"}}", "x".repeat(4096));
    assert_eq!(http.post(gw.url("/endpoints/m/echo")).body(big).send().unwrap().status(), 200);
    assert_eq!(wait_rows(&data_dir, "m_payload", 1, Duration::from_secs(30)), 1);
    gw.terminate();
    let mut seen = (0, 0);
    let mut open_to_others = Vec::new();
    let mut stack = vec![data_dir.clone()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.permissions().mode() & 0o077 != 0 {
            open_to_others.push(format!("{:o} {}", meta.permissions().mode() & 0o777, path.display()));
        }
        if meta.is_dir() {
            seen.0 += 1;
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            seen.1 += 1;
        }
    }
    assert!(open_to_others.is_empty(), "readable by others: {open_to_others:#?}");
    for file in ["state/tokens.json", "instance.id"] {
        assert!(data_dir.join(file).exists(), "{file} was checked");
    }
    assert!(std::fs::read_dir(data_dir.join("tables/m_payload/_offload")).is_ok(), "a side file was checked");
    assert!(seen.1 > 5, "files checked: {seen:?}");
}

/// A tmpfs of a few MiB, unmounted on drop: a disk that really fills (the test machines run
/// the tests as root with the right to mount; elsewhere the test says so and does not run).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// `None` (said on stderr) where this process may not mount file systems.
    fn mount(path: std::path::PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&path).output().ok()?;
        if !out.status.success() {
            eprintln!("not run: cannot mount a tmpfs at {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
        Some(SmallDisk { path })
    }

    fn grow(&self, size: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Bodies Parquet cannot shrink much: 16 KiB of hex from a fixed pseudo-random sequence.
fn incompressible_body(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut hex = String::with_capacity(16 * 1024);
    while hex.len() < 16 * 1024 - 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        hex.push_str(&format!("{x:016x}"));
    }
    format!("{{\"inputs\": [\"{hex}\"]}}")
}

#[test]
fn a_full_table_disk_holds_records_in_the_log_without_a_panic_and_commits_them_once_it_has_room() {
    let _exclusive = exclusive();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    // The tables on a 2 MiB disk; the log keeps its own disk.
    let Some(disk) = SmallDisk::mount(dir.path().join("small"), "2m") else { return };
    std::os::unix::fs::symlink(&disk.path, dir.path().join("tables")).unwrap();
    let toml = format!("commit_interval_ms = 200\n{}", endpoint_toml("m", &up.url(), ""));
    let mut gw = Gateway::start(dir.path(), &toml);
    let http = client();
    let n = 300;
    for i in 0..n {
        let resp = http.post(gw.url("/endpoints/m/echo")).header("content-type", "application/json").body(incompressible_body(i)).send().unwrap();
        assert_eq!(resp.status(), 200, "the full disk never reaches the caller");
    }
    let failing = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if metric(&gw, "inferlog_table_commit_failures_total").unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < failing, "the table's disk filled, and commits failed");
        std::thread::sleep(Duration::from_millis(200));
    }
    disk.grow("256m");
    assert_eq!(wait_rows(dir.path(), "m_payload", n as usize, Duration::from_secs(60)), n as usize);
    assert_eq!(duplicated_request_ids(dir.path()), 0);
    gw.terminate();
    let logs = gw.logs();
    assert!(logs.contains("No space left on device"), "the cause is named: {logs}");
    assert!(!logs.contains("panicked") && !logs.contains("stack backtrace"), "{logs}");
}

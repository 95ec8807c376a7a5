//! Retention and erasure through the real binary: rows go from every table of the endpoint,
//! and the Parquet files that held them go from disk.

use crate::support::*;
use std::process::Command;

fn inferlog(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every value of every Parquet file under `dir`, decoded, as text.
fn parquet_text(dir: &std::path::Path) -> String {
    let python = std::env::var("INTEROP_PYTHON").expect("INTEROP_PYTHON is not set: run the tests with scripts/test");
    let script = "import sys, pathlib, pyarrow.parquet as pq\n\
                  for p in pathlib.Path(sys.argv[1]).rglob('*.parquet'):\n    print(pq.read_table(p).to_pylist())";
    let out = Command::new(python).args(["-c", script, dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn erase_and_retention_remove_rows_everywhere_and_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    inferlog(&["generate", "iris", "--data-dir", dd, "--rows", "3000", "--days", "3", "--rows-per-commit", "1000"]);
    inferlog(&["unpack", "iris", "--data-dir", dd]);
    let victim = query(d, "SELECT client_request_id, request_id FROM iris_payload WHERE client_request_id IS NOT NULL LIMIT 1")[0].clone();
    let client = victim["client_request_id"].as_str().unwrap().to_string();
    let request_id = victim["request_id"].as_str().unwrap().to_string();
    let labels = d.join("labels.csv");
    std::fs::write(&labels, format!("request_id,y\n{request_id},setosa\n")).unwrap();
    inferlog(&["labels", "import", "iris", labels.to_str().unwrap(), "--label", "y", "--data-dir", dd]);
    let count = |sql: &str| query(d, sql)[0]["n"].as_i64().unwrap();
    let payload_before = count("SELECT count(*) AS n FROM iris_payload");
    let of_client = count(&format!("SELECT count(*) AS n FROM iris_payload WHERE client_request_id = '{client}'"));
    assert!(of_client >= 1);
    assert!(parquet_text(&d.join("tables")).contains(&request_id));

    // Optimize: the three payload commits of each day become one file, nothing lost.
    let files = |table: &str| walk_parquet(&d.join("tables").join(table));
    let before = files("iris_payload");
    let out = inferlog(&["optimize", "iris", "--data-dir", dd]);
    assert!(out.contains("iris_payload:") && out.contains("iris_unpacked:"), "{out}");
    assert!(files("iris_payload") < before, "{before} files before, {} after: {out}", files("iris_payload"));
    assert_eq!(count("SELECT count(*) AS n FROM iris_payload"), payload_before);

    // Erasure: the caller's exchanges, their unpacked rows and their labels.
    let out = inferlog(&["erase", "iris", "--client-request-id", &client, "--data-dir", dd]);
    assert!(out.contains(&format!("iris_payload: {of_client} rows deleted")), "{out}");
    assert!(out.contains("iris_labels: 1 rows deleted"), "{out}");
    assert_eq!(count(&format!("SELECT count(*) AS n FROM iris_payload WHERE client_request_id = '{client}'")), 0);
    assert_eq!(count(&format!("SELECT count(*) AS n FROM iris_unpacked WHERE request_id = '{request_id}'")), 0);
    assert_eq!(count("SELECT count(*) AS n FROM iris_labels"), 0);
    assert_eq!(count("SELECT count(*) AS n FROM iris_payload"), payload_before - of_client);
    // Gone from every data file on disk too, not only from the current version.
    assert!(!parquet_text(&d.join("tables")).contains(&request_id), "an erased request id is still in a Parquet file");

    // Retention: rows older than a day, from every table.
    let cutoff_ms = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let old = count(&format!("SELECT count(*) AS n FROM iris_payload WHERE timestamp_ms < {cutoff_ms}"));
    assert!(old > 0);
    let out = inferlog(&["retention", "iris", "--older-than", "1d", "--data-dir", dd]);
    assert!(out.contains("iris_payload:") && out.contains("iris_unpacked:"), "{out}");
    assert_eq!(count(&format!("SELECT count(*) AS n FROM iris_payload WHERE timestamp_ms < {cutoff_ms}")), 0);
    assert_eq!(count(&format!("SELECT count(*) AS n FROM iris_unpacked WHERE timestamp_ms < {cutoff_ms}")), 0);
    assert!(count("SELECT count(*) AS n FROM iris_payload") > 0, "newer rows stay");
    let audit = query(d, "SELECT action, endpoint, result FROM _audit ORDER BY at");
    let actions: Vec<&str> = audit.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions, ["labels.import", "optimize", "erase", "retention"], "{audit:?}");
    assert!(audit.iter().all(|r| r["result"] == "ok" && r["endpoint"] == "iris"));

    // Nothing to delete from an endpoint without tables; a bad duration is refused.
    assert!(inferlog(&["erase", "nope", "--request-id", "x", "--data-dir", dd]).contains("no tables"));
    let out = Command::new(bin()).args(["retention", "iris", "--older-than", "soon", "--data-dir", dd]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}

fn walk_parquet(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn serve_applies_retention_on_its_schedule_while_capturing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    inferlog(&["generate", "iris", "--data-dir", dd, "--rows", "2000", "--days", "3", "--rows-per-commit", "500"]);
    let count = |sql: &str| query(d, sql)[0]["n"].as_i64().unwrap();
    let cutoff_ms = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let old = count(&format!("SELECT count(*) AS n FROM iris_payload WHERE timestamp_ms < {cutoff_ms}"));
    let recent = count(&format!("SELECT count(*) AS n FROM iris_payload WHERE timestamp_ms >= {cutoff_ms}"));
    assert!(old > 0 && recent > 0);

    let upstream = Upstream::start();
    let gateway = Gateway::start(
        d,
        &format!(
            "commit_interval_ms = 100\n{}[endpoints.retention]\nolder_than = \"1d\"\nschedule = \"1s\"\n",
            endpoint_toml("iris", &upstream.url(), "")
        ),
    );
    // Traffic keeps committing while retention deletes: neither loses the other's rows.
    let http = client();
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < std::time::Duration::from_secs(4) {
        assert_eq!(http.post(gateway.url("/endpoints/iris/echo")).body("{\"x\": 1}").send().unwrap().status(), 200);
        sent += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Retention's first run comes 10 s after the start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count(&format!("SELECT count(*) AS n FROM iris_payload WHERE timestamp_ms < {cutoff_ms}")) > 0 {
        assert!(std::time::Instant::now() < deadline, "old rows still there: {}", gateway.logs());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    wait_rows(d, "iris_payload", (recent + sent) as usize, std::time::Duration::from_secs(30));
    assert_eq!(count("SELECT count(*) AS n FROM iris_payload"), recent + sent, "every recent and every new row stays");
    drop(gateway);
    let audit = query(d, "SELECT who, action, endpoint, result FROM _audit WHERE action = 'retention'");
    assert!(!audit.is_empty());
    // A run may meet a concurrent commit and fail; it is audited as such and tried again.
    assert!(audit.iter().all(|r| r["who"] == "schedule" && r["endpoint"] == "iris"), "{audit:?}");
    assert!(audit.iter().any(|r| r["result"] == "ok"), "{audit:?}");
}

//! Redaction: personal data named by rules never reaches a file under the data directory —
//! checked byte by byte in every file (log segments, Parquet, Delta log) and in every decoded
//! Parquet value, not only in query results.

use crate::support::*;
use std::process::Command;
use std::time::Duration;

const EMAIL: &str = "jane.doe@example.org";
const CARD: &str = "4111111111111111";
const PHONE: &str = "+49 30 1234 5678";
const SSN: &str = "078-05-1120";

#[test]
fn redacted_values_appear_in_no_file_under_the_data_dir() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = format!(
        "commit_interval_ms = 200\nredaction_key = \"test-key\"\n[[endpoints]]\nname = \"iris\"\nupstream = \"{}\"\n\
         [[endpoints.redact]]\npath = \"$.dataframe_records[*].email\"\naction = \"hash\"\n\
         [[endpoints.redact]]\npath = \"$.dataframe_records[*].ssn\"\naction = \"drop\"\n\
         [[endpoints.redact]]\ndetector = \"credit_card\"\naction = \"mask\"\n\
         [[endpoints.redact]]\ndetector = \"phone\"\n",
        upstream.url()
    );
    let mut gateway = Gateway::start(d, &toml);
    let http = client();
    // The echo upstream answers with the request, so the secrets are in both bodies.
    let body = serde_json::json!({"dataframe_records": [
        {"email": EMAIL, "ssn": SSN, "note": format!("card {CARD}, call {PHONE}"), "x": 1.5},
        {"email": EMAIL, "ssn": SSN, "note": "nothing", "x": 2.5},
    ]});
    for _ in 0..3 {
        let r = http.post(gateway.url("/endpoints/iris/echo")).json(&body).send().unwrap();
        assert_eq!(r.status(), 200);
        // The caller gets the upstream's answer untouched: redaction is for the record only.
        assert!(r.text().unwrap().contains(CARD));
    }
    assert_eq!(wait_rows(d, "iris_payload", 3, Duration::from_secs(30)), 3);
    gateway.terminate();
    let out = Command::new(bin()).args(["unpack", "iris", "--data-dir", d.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // What is kept instead: the hash (equal for equal emails), masks, the other fields.
    let row = &query(d, "SELECT request, response FROM iris_payload LIMIT 1")[0];
    let request: serde_json::Value = serde_json::from_str(row["request"].as_str().unwrap()).unwrap();
    let records = &request["dataframe_records"];
    assert!(records[0]["email"].as_str().unwrap().starts_with("hmac:"));
    assert_eq!(records[0]["email"], records[1]["email"]);
    assert!(records[0].get("ssn").is_none());
    assert_eq!(records[0]["note"], "card ***, call ***");
    assert_eq!(records[0]["x"], 1.5);
    assert!(row["response"].as_str().unwrap().contains("hmac:"));
    let emails = query(d, "SELECT count(DISTINCT email) AS n FROM iris_unpacked");
    assert_eq!(emails[0]["n"], 1, "hashed emails still group and join");

    let files = assert_in_no_file(d, &[EMAIL, CARD, PHONE, SSN], |_| false);
    let wal = files.iter().filter(|f| f.extension().is_some_and(|e| e == "wal")).count();
    let parquet = files.iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")).count();
    assert!(wal >= 1 && parquet >= 2, "{files:?}");
}

/// Asserts that no secret is in any byte of any file under `dir` (but those `skip` names),
/// nor in any decoded Parquet value (compression could hide a plain-text match). Returns the
/// files it read.
fn assert_in_no_file(dir: &std::path::Path, secrets: &[&str], skip: impl Fn(&std::path::Path) -> bool) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path)
            } else if !skip(&path) {
                files.push(path)
            }
        }
    }
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for secret in secrets {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in {}", file.display());
        }
    }
    let parquet: Vec<_> = files.iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")).collect();
    let python = std::env::var("INTEROP_PYTHON").expect("INTEROP_PYTHON is not set: run the tests with scripts/test");
    let script = "import sys, pyarrow.parquet as pq\n\
                  for path in sys.argv[2:]:\n    t = pq.read_table(path)\n    \
                  for column in t.columns:\n        for v in column.to_pylist():\n            \
                  text = repr(v)\n            assert all(s not in text for s in sys.argv[1].split('|')), (path, text)\nprint('clean')";
    let mut args = vec!["-c".to_string(), script.to_string(), secrets.join("|")];
    args.extend(parquet.iter().map(|p| p.display().to_string()));
    let out = Command::new(python).args(&args).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "clean", "{}", String::from_utf8_lossy(&out.stderr));
    files
}

/// Every recorded field goes through the rules, in any encoding: content types, the path
/// (which the Delta log's statistics repeat), metadata, the token's name (also in `_audit`),
/// JSON the parser gives up on, percent-encoded forms, addresses in any script or quoted, and
/// a body cut through an address.
#[test]
fn no_field_and_no_encoding_escapes_redaction() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = format!(
        "commit_interval_ms = 200\nmetadata_headers = [\"x-user\"]\n[auth]\nenabled = true\n{}[[endpoints.redact]]\ndetector = \"email\"\n",
        endpoint_toml("m", &upstream.url(), "max_payload_bytes = 400")
    );
    let gateway = Gateway::start(d, &toml);
    // Made while the gateway runs, so its own `_audit` event goes through the rules the
    // gateway saved; the gateway picks the new token up within a second.
    let out = Command::new(bin())
        .args(["token", "create", "--data-dir", d.to_str().unwrap(), "--name", "requester.person@example.com", "--role", "owner", "--endpoint", "m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let http = client();
    let send = |path: &str, content_type: &str, body: String| {
        let r = http
            .post(gateway.url(&format!("/endpoints/m/{path}")))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .header("x-user", "header.person@example.com")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-request-id"].to_str().unwrap().to_string()
    };
    let deep = format!("{}\"deep.person\\u0040example.com\"{}", "[".repeat(150), "]".repeat(150));
    let typed = send("echo", "application/json; owner=ctype.person@example.com", deep);
    let form = send("echo/path.person%40example.com", "application/x-www-form-urlencoded", "to=form.person%2540example.com&x=1".into());
    let scripts = send("echo", "application/json", r#"{"a": "jörg.person@exämple.de", "b": "\"quoted.person\"@example.com"}"#.into());
    // Cut at 400 bytes right after `cut.person@exa`.
    let cut = send("echo", "text/plain", format!("{} to cut.person@example.com, thanks", "x".repeat(382)));
    let changed = http.put(gateway.url("/admin/endpoints/m/capture")).bearer_auth(&token).json(&serde_json::json!({"enabled": true})).send().unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(wait_rows(d, "m_payload", 4, Duration::from_secs(30)), 4);
    drop(gateway);

    // What is kept instead.
    let typed = row(d, "m_payload", &typed);
    assert_eq!(typed["request_content_type"], "application/json; owner=***");
    assert_eq!(typed["response_content_type"], "application/json; owner=***");
    assert_eq!(typed["requester"], "***");
    assert_eq!(typed["request_metadata"]["x-user"], "***", "{typed}");
    assert_eq!(typed["request"].as_str().unwrap(), format!("{}\"***\"{}", "[".repeat(150), "]".repeat(150)));
    let form = row(d, "m_payload", &form);
    assert_eq!((form["path"].as_str(), form["request"].as_str()), (Some("/echo/***"), Some("to=***&x=1")));
    let scripts: serde_json::Value = serde_json::from_str(row(d, "m_payload", &scripts)["request"].as_str().unwrap()).unwrap();
    assert_eq!(scripts, serde_json::json!({"a": "***", "b": "***"}));
    let cut = row(d, "m_payload", &cut);
    assert_eq!(cut["request"].as_str().unwrap(), format!("{} to ***", "x".repeat(382)));
    assert_eq!(cut["logging_error_codes"], serde_json::json!(["MAX_REQUEST_SIZE_EXCEEDED", "MAX_RESPONSE_SIZE_EXCEEDED"]));
    let audit = query(d, "SELECT who, action, detail FROM _audit ORDER BY at");
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!((audit[0]["action"].as_str(), audit[0]["detail"].as_str()), (Some("token.create"), Some("name=*** role=owner")));
    assert_eq!((audit[1]["action"].as_str(), audit[1]["who"].as_str()), (Some("capture.change"), Some("***")));

    // And nothing else, in any file: the token store must name the token, the harness's
    // config and logs are not the gateway's records.
    let local_parts = ["ctype.person", "deep.person", "path.person", "form.person", "jörg.person", "quoted.person", "cut.person", "header.person", "requester.person"];
    let harness = |path: &std::path::Path| {
        let name = path.file_name().unwrap().to_string_lossy();
        name == "tokens.json" || name == "inferlog.toml" || name.starts_with("gateway-")
    };
    assert_in_no_file(d, &local_parts, harness);
}

#[test]
fn bad_redaction_rules_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (rule, reason) in [
        ("detector = \"ssn\"", "not a detector"),
        ("regex = \"(\"", "regex"),
        ("path = \"a.b\"", "must start with `$`"),
        ("detector = \"email\"\naction = \"hash\"", "redaction_key"),
        ("detector = \"email\"\npath = \"$.a\"", "exactly one of path, detector, regex"),
    ] {
        let config = dir.path().join("c.toml");
        std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[endpoints]]\nname = \"m\"\nupstream = \"http://127.0.0.1:9\"\n[[endpoints.redact]]\n{rule}\n", dir.path().display())).unwrap();
        let out = Command::new(bin()).args(["serve", "--config", config.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(reason), "{rule}: {err}");
    }
}

#[test]
fn metadata_only_capture_writes_no_body() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut gateway = Gateway::start(d, &format!("commit_interval_ms = 200\n{}", endpoint_toml("llm", &upstream.url(), "bodies = false")));
    let r = client().post(gateway.url("/endpoints/llm/v1/chat/completions")).json(&serde_json::json!({"model": "fake-model", "secret": EMAIL})).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("Hello"));
    assert_eq!(wait_rows(d, "llm_payload", 1, Duration::from_secs(30)), 1);
    gateway.terminate();
    let row = &query(d, "SELECT request, response, request_bytes, response_bytes, status_code, total_tokens FROM llm_payload")[0];
    assert!(row["request"].is_null() && row["response"].is_null(), "{row}");
    assert!(row["request_bytes"].as_i64().unwrap() > 0 && row["response_bytes"].as_i64().unwrap() > 0);
    assert_eq!((row["status_code"].as_i64(), row["total_tokens"].as_i64()), (Some(200), Some(17)), "token counts are kept");
    let mut stack = vec![d.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(!bytes.windows(EMAIL.len()).any(|w| w == EMAIL.as_bytes()), "body text in {}", path.display());
            }
        }
    }
}

#[test]
fn oversize_bodies_are_offloaded_whole_redacted_and_erased_with_their_rows() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = format!(
        "redaction_key = \"k\"\ncommit_interval_ms = 200\n{}[[endpoints.redact]]\ndetector = \"email\"\naction = \"mask\"\n{}",
        endpoint_toml("docs", &upstream.url(), "max_payload_bytes = 1000\noversize = \"offload\""),
        endpoint_toml("blobs", &upstream.url(), "max_payload_bytes = 1000\noversize = \"offload\""),
    );
    let gateway = Gateway::start(d, &toml);
    let http = client();
    // 50 kB of JSON with an address at the end; a small body; 5,000 bytes that are not text.
    let big = format!("{{\"text\": \"{}\", \"contact\": \"jane.doe@example.com\"}}", "x".repeat(50_000));
    let send = |endpoint: &str, body: Vec<u8>| {
        let resp = http.post(gateway.url(&format!("/endpoints/{endpoint}/echo"))).header("content-type", "application/octet-stream").body(body.clone()).send().unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(resp.bytes().unwrap().as_ref(), body.as_slice(), "the caller gets the whole answer");
        id
    };
    let big_id = send("docs", big.clone().into_bytes());
    let small_id = send("docs", b"{\"a\": 1}".to_vec());
    let binary: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    let blob_id = send("blobs", binary.clone());
    assert_eq!(wait_rows(d, "docs_payload", 2, Duration::from_secs(30)), 2);
    assert_eq!(wait_rows(d, "blobs_payload", 1, Duration::from_secs(30)), 1);

    let row = row(d, "docs_payload", &big_id);
    let pointer = row["request_offload"].as_str().unwrap().to_string();
    assert!(pointer.starts_with("_offload/") && pointer.ends_with(&format!("{big_id}.request")), "{pointer}");
    assert_eq!(row["request_bytes"], big.len());
    assert_eq!(row["logging_error_codes"], serde_json::json!([]), "nothing was lost");
    // The side file holds the whole body, redacted like the row.
    let table = d.join("tables/docs_payload");
    let stored = std::fs::read_to_string(table.join(&pointer)).unwrap();
    assert_eq!(row["request"].as_str().unwrap(), &stored[..1000], "the row keeps a prefix of the redacted body");
    let masked: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(masked["text"].as_str().unwrap().len(), 50_000);
    assert!(!stored.contains("jane.doe@example.com") && masked["contact"] != "jane.doe@example.com", "{}", masked["contact"]);
    let response_file = table.join(row["response_offload"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(&response_file).unwrap(), stored);
    let small = crate::support::row(d, "docs_payload", &small_id);
    assert!(small["request_offload"].is_null() && small["request"] == "{\"a\":1}");
    // Bytes that are not text are stored as they came.
    let blob = crate::support::row(d, "blobs_payload", &blob_id);
    assert_eq!(blob["request_encoding"], "base64");
    assert_eq!(std::fs::read(d.join("tables/blobs_payload").join(blob["request_offload"].as_str().unwrap())).unwrap(), binary);

    // Erasing the exchange removes its side files with its row; files no row names (a record
    // that never reached the log, a half-written file) go once they are an hour old.
    drop(gateway);
    let strays = table.join("_offload/2020-01-01");
    std::fs::create_dir_all(&strays).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for name in ["lost.request", "half.tmp", "recent.response"] {
        std::fs::write(strays.join(name), "x").unwrap();
        if name != "recent.response" {
            std::fs::File::options().write(true).open(strays.join(name)).unwrap().set_modified(two_hours_ago).unwrap();
        }
    }
    let out = std::process::Command::new(bin())
        .args(["erase", "docs", "--request-id", &big_id, "--data-dir", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!table.join(&pointer).exists() && !response_file.exists());
    assert!(!strays.join("lost.request").exists() && !strays.join("half.tmp").exists());
    assert!(strays.join("recent.response").exists(), "a file that may still be on its way to a row stays");
    assert_eq!(count(d, "docs_payload"), 1);
}

#[test]
fn offloaded_bodies_are_unpacked_whole() {
    let model = crate::monitoring::IrisModel::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = format!(
        "{}{}",
        endpoint_toml("whole", &model.1, "max_payload_bytes = 300\noversize = \"offload\""),
        endpoint_toml("cut", &model.1, "max_payload_bytes = 300"),
    );
    let gateway = Gateway::start(d, &toml);
    // 60 instances: about 2 kB of request and 1 kB of predictions, both over the limit.
    let rows: Vec<[f64; 4]> = (0..60).map(|i| [5.0 + (i % 10) as f64 / 10.0, 3.0, 1.4 + (i % 30) as f64 / 10.0, 0.2]).collect();
    let body = serde_json::json!({"dataframe_split": {
        "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
        "data": rows,
    }});
    let http = client();
    for endpoint in ["whole", "cut"] {
        let resp = http.post(gateway.url(&format!("/endpoints/{endpoint}/invocations"))).json(&body).send().unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(wait_rows(d, "whole_payload", 1, Duration::from_secs(30)), 1);
    assert_eq!(wait_rows(d, "cut_payload", 1, Duration::from_secs(30)), 1);
    drop(gateway);
    for endpoint in ["whole", "cut"] {
        let out = Command::new(bin()).args(["unpack", endpoint, "--data-dir", d.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // From the side files: every instance, with its prediction.
    let whole = query(d, "SELECT count(*) AS n, count(prediction) AS predicted, min(sepal_length_cm) AS lo, max(sepal_length_cm) AS hi FROM whole_unpacked");
    assert_eq!(whole[0]["n"], 60, "{whole:?}");
    assert_eq!(whole[0]["predicted"], 60);
    assert_eq!((whole[0]["lo"].as_f64(), whole[0]["hi"].as_f64()), (Some(5.0), Some(5.9)));
    // From a cut body: nothing to unpack, and the row says why.
    let cut = query(d, "SELECT * FROM cut_unpacked");
    assert!(!cut.is_empty() && cut.iter().all(|r| r.get("sepal_length_cm").is_none()), "no features: {cut:?}");
    assert!(cut.iter().all(|r| r["unpack_error"].as_str().is_some_and(|e| e.contains("not JSON"))), "{cut:?}");
}

#[test]
fn offloading_stops_at_the_memory_budget_and_cuts_instead() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Bodies kept whole for offloading may take queue_max_bytes (3,000) while in flight: a
    // 1,400-byte request fits (about 1,870 bytes as record text), its 1,400-byte echo does not.
    let toml = format!(
        "queue_max_bytes = 3000\n{}",
        endpoint_toml("tight", &upstream.url(), "max_payload_bytes = 100\noversize = \"offload\"\noffload_max_bytes = 1500")
    );
    let gateway = Gateway::start(d, &toml);
    let body = format!("{{\"x\": \"{}\"}}", "y".repeat(1390));
    let resp = client().post(gateway.url("/endpoints/tight/echo")).body(body.clone()).send().unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.text().unwrap(), body, "the caller gets everything regardless");
    assert_eq!(wait_rows(d, "tight_payload", 1, Duration::from_secs(30)), 1);
    let row = row(d, "tight_payload", &id);
    let table = d.join("tables/tight_payload");
    assert_eq!(std::fs::read_to_string(table.join(row["request_offload"].as_str().unwrap())).unwrap(), body);
    assert!(row["response_offload"].is_null(), "{row}");
    assert_eq!(row["response"].as_str().unwrap(), &body[..100]);
    assert_eq!(row["logging_error_codes"], serde_json::json!(["MAX_RESPONSE_SIZE_EXCEEDED"]));
    let metrics = client().get(gateway.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("inferlog_capture_offload_budget_exhausted_total 1"), "{metrics}");
}

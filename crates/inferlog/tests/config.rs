use crate::support::*;
use std::process::Command;
use std::time::Duration;

/// The example config in the README, between the `example-config` markers.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("<!-- example-config -->").expect("README marks its example config");
    let block = &readme[start..];
    let body = &block[block.find("```toml\n").unwrap() + 8..];
    body[..body.find("```").unwrap()].to_string()
}

#[test]
fn the_readme_example_config_starts_a_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inferlog.toml");
    std::fs::write(&path, readme_example()).unwrap();
    // Environment overrides move it to a free port and a temporary data dir.
    let out = Command::new(bin())
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("INFERLOG_LISTEN", "127.0.0.1:1")
        .env("INFERLOG_DATA_DIR", dir.path())
        .env("INFERLOG_ENDPOINTS__IRIS__CAPTURE__SAMPLING_FRACTION", "7")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("endpoints[0].capture.sampling_fraction") && stderr.contains("7"), "{stderr}");

    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let text = readme_example().replace("127.0.0.1:8080", "127.0.0.1:0").replace("./inferlog-data", data.to_str().unwrap());
    let gw = Gateway::start(&data, text.split_once("[[endpoints]]").map(|(_, e)| format!("[[endpoints]]{e}")).unwrap().as_str());
    let state: serde_json::Value = client().get(gw.url("/admin/endpoints/iris/capture")).send().unwrap().json().unwrap();
    assert_eq!(state["sampling_fraction"], 1.0);
}

#[test]
fn bad_config_stops_the_start_naming_the_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"127.0.0.1:0\"\nlisten_port = 3\n", "listen_port", "unknown field"),
        ("[[endpoints]]\nname = \"m\"\nupstream = \"http://127.0.0.1:1\"\n[endpoints.capture]\nsample = 1\n", "endpoints[0].capture", "sample"),
        ("[[endpoints]]\nname = \"m\"\nupstream = \"not a url\"\n", "endpoints[0].upstream", "not a URL"),
        ("durability = \"eventually\"\n[[endpoints]]\nname = \"m\"\nupstream = \"http://127.0.0.1:1\"\n", "durability", "eventually"),
        ("[[endpoints]]\nname = \"a b\"\nupstream = \"http://127.0.0.1:1\"\n", "endpoints[0].name", "letters"),
        ("listen = [\n", "inferlog.toml", "TOML"),
    ];
    for (text, key, reason) in cases {
        let path = dir.path().join("inferlog.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin()).args(["serve", "--config", path.to_str().unwrap()]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(key) && stderr.contains(reason), "{text} -> {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    }
    let out = Command::new(bin())
        .args(["serve", "--endpoint", "m=http://127.0.0.1:1", "--data-dir", dir.path().to_str().unwrap()])
        .env("INFERLOG_LISTN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("INFERLOG_LISTN"), "{stderr}");
}

#[test]
fn zero_config_flags_serve_an_endpoint_with_default_model_fields() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("iris={}", up.url());
    let gw = Gateway::spawn(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap(), "--endpoint", &endpoint, "--durability", "fsync"],
    );
    let resp = client().post(gw.url("/endpoints/iris/echo")).body("{}").send().unwrap();
    assert_eq!(resp.status(), 200);
    wait_rows(dir.path(), "iris_payload", 1, Duration::from_secs(30));
    let rows = query(dir.path(), "SELECT model_name, model_version FROM iris_payload");
    assert_eq!(rows, vec![serde_json::json!({"model_name": "iris", "model_version": "1"})]);
}

#[test]
fn query_cli_prints_formats_and_one_line_errors() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &endpoint_toml("m", &up.url(), ""));
    client().post(gw.url("/endpoints/m/echo")).body("{\"a\": 1}").send().unwrap();
    client().get(gw.url("/endpoints/m/status/500")).send().unwrap();
    wait_rows(dir.path(), "m_payload", 2, Duration::from_secs(30));
    let run = |args: &[&str]| {
        let out = Command::new(bin()).args(["query", "--data-dir", dir.path().to_str().unwrap()]).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let sql = "SELECT status_code, count(*) AS n FROM m_payload GROUP BY 1 ORDER BY 1";
    let (ok, out, _) = run(&["--format", "csv", sql]);
    assert!(ok);
    assert_eq!(out, "status_code,n\n200,1\n500,1\n");
    let (ok, out, _) = run(&["--format", "json", sql]);
    assert!(ok);
    assert_eq!(out, "{\"status_code\":200,\"n\":1}\n{\"status_code\":500,\"n\":1}\n");
    // Nested columns (a list, a map) are written as text in CSV.
    let (ok, out, err) = run(&["--format", "csv", "SELECT * FROM m_payload ORDER BY status_code"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3);
    assert!(out.lines().next().unwrap().contains("logging_error_codes") && out.contains("[]"), "{out}");
    let (ok, out, _) = run(&[sql]);
    assert!(ok && out.contains("| status_code | n |"), "{out}");
    for bad in ["SELEC 1", "SELECT nope FROM m_payload", "SELECT * FROM missing_table"] {
        let (ok, _, err) = run(&[bad]);
        assert!(!ok, "{bad}");
        assert!(err.starts_with("error: ") && err.trim().lines().count() == 1, "{bad} -> {err}");
    }
}

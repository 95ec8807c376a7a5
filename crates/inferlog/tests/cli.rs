//! The command line as a new user meets it: where every command finds its data, its help,
//! its errors and log lines, and listing what exists (`inferlog endpoints`,
//! `GET /admin/endpoints`, `SHOW TABLES`).

use crate::support::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `inferlog ARGS` run in `cwd`, with `env` set and no INFERLOG_* variable inherited.
fn inferlog_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(bin());
    command.args(args).current_dir(cwd);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("INFERLOG_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied()).output().unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of_failure(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A data directory holding one table, `_audit` (written by `inferlog token create`).
fn data_dir_with_a_table(root: &Path, token: &str) -> std::path::PathBuf {
    let data = root.join("elsewhere");
    let dir = data.to_str().unwrap();
    stdout_of(&inferlog_in(root, &[], &["token", "create", "--data-dir", dir, "--name", token, "--role", "read", "--endpoint", "*"]));
    data
}

#[test]
fn every_command_finds_the_data_dir_by_flag_then_environment_then_config_file() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir_with_a_table(root.path(), "alice");
    let dir = data.to_str().unwrap();
    // Run where no ./inferlog-data exists, so only the given location can work.
    let cwd = root.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let audit_rows = |output: Output| -> String {
        let text = stdout_of(&output);
        let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        rows[0]["n"].to_string()
    };
    let sql = "SELECT count(*) AS n FROM _audit";
    let by_env = inferlog_in(&cwd, &[("INFERLOG_DATA_DIR", dir)], &["query", "--format", "json", sql]);
    assert_eq!(audit_rows(by_env), "1");
    let config = root.path().join("gateway.toml");
    std::fs::write(&config, format!("data_dir = \"{dir}\"\n")).unwrap();
    let by_file = inferlog_in(&cwd, &[], &["query", "--config", config.to_str().unwrap(), "--format", "json", sql]);
    assert_eq!(audit_rows(by_file), "1");
    // The flag wins over the environment, which wins over the file.
    let bogus = root.path().join("bogus");
    let flag_first = inferlog_in(&cwd, &[("INFERLOG_DATA_DIR", bogus.to_str().unwrap())], &["query", "--data-dir", dir, "--format", "json", sql]);
    assert_eq!(audit_rows(flag_first), "1");
    std::fs::write(&config, format!("data_dir = \"{}\"\n", bogus.display())).unwrap();
    let env_first = inferlog_in(&cwd, &[("INFERLOG_DATA_DIR", dir)], &["query", "--config", config.to_str().unwrap(), "--format", "json", sql]);
    assert_eq!(audit_rows(env_first), "1");
    // Other commands too: the token store is found through the environment.
    let tokens = stdout_of(&inferlog_in(&cwd, &[("INFERLOG_DATA_DIR", dir)], &["token", "list"]));
    assert!(tokens.starts_with("alice\t"), "{tokens}");
}

#[test]
fn every_argument_has_help_and_data_dir_names_its_default() {
    let cwd = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| stdout_of(&inferlog_in(cwd.path(), &[], args));
    // `--flag <VALUE>` (or the positional `<NAME>`) has a description, on its line or, when
    // clap finds it too long, on the next one.
    let described = |text: &str, argument: &str| {
        let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
        lines.iter().position(|l| l.starts_with(argument)).is_some_and(|i| {
            let same_line = lines[i][argument.len()..].trim();
            let next_line = lines.get(i + 1).copied().filter(|l| !l.starts_with('-') && !l.starts_with('<')).unwrap_or("");
            same_line.len() > 3 || next_line.len() > 3
        })
    };
    for (command, arguments) in [
        (vec!["serve", "--help"], vec!["--data-dir <DIR>"]),
        (vec!["query", "--help"], vec!["--data-dir <DIR>", "--config <FILE>"]),
        (vec!["labels", "import", "--help"], vec!["<ENDPOINT>", "<FILE>"]),
        (vec!["erase", "--help"], vec!["<ENDPOINT>", "--client-request-id <CLIENT_REQUEST_ID>", "--request-id <REQUEST_ID>"]),
        (vec!["retention", "--help"], vec!["<ENDPOINT>", "--data-dir <DIR>"]),
        (vec!["token", "create", "--help"], vec!["--name <NAME>"]),
        (vec!["token", "grant", "--help"], vec!["--name <NAME>", "--role <ROLE>", "--endpoint <ENDPOINT>"]),
        (vec!["endpoints", "--help"], vec!["--config <FILE>"]),
    ] {
        let text = help(&command);
        for argument in arguments {
            assert!(described(&text, argument), "{command:?}: `{argument}` has no help:\n{text}");
        }
    }
    for command in [["serve", "--help"], ["query", "--help"]] {
        let text = help(&command);
        assert!(text.contains("./inferlog-data") && text.contains("INFERLOG_DATA_DIR"), "{command:?}:\n{text}");
    }
}

#[test]
fn a_missing_file_is_reported_once() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("absent.toml");
    let error = stderr_of_failure(&inferlog_in(root.path(), &[], &["serve", "--config", missing.to_str().unwrap()]));
    assert_eq!(error.matches("No such file or directory").count(), 1, "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    let error = stderr_of_failure(&inferlog_in(root.path(), &[], &["query", "--config", missing.to_str().unwrap(), "SELECT 1"]));
    assert_eq!(error.matches("No such file or directory").count(), 1, "{error}");
}

#[test]
fn the_text_table_shows_null_apart_from_the_empty_string() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir_with_a_table(root.path(), "alice");
    let sql = "SELECT CAST(NULL AS VARCHAR) AS missing, '' AS empty";
    let text = stdout_of(&inferlog_in(root.path(), &[], &["query", "--data-dir", data.to_str().unwrap(), sql]));
    let row = text.lines().filter(|l| l.starts_with('|')).nth(1).unwrap();
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(cells, ["NULL", ""], "{text}");
}

#[test]
fn baseline_prints_the_documented_names() {
    let root = tempfile::tempdir().unwrap();
    let training = root.path().join("train.csv");
    let mut csv = String::from("petal_length,species\n");
    for i in 0..50 {
        csv.push_str(&format!("{}.{},{}\n", 1 + i % 5, i % 10, ["setosa", "virginica"][i % 2]));
    }
    std::fs::write(&training, csv).unwrap();
    let data = root.path().join("data");
    let args = ["baseline", "iris", "--from", training.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let text = stdout_of(&inferlog_in(root.path(), &[], &args));
    let column = text.lines().find(|l| l.trim_start().starts_with("petal_length")).unwrap_or_else(|| panic!("{text}"));
    assert!(column.contains(" feature Fractional, drift by "), "{column}");
    let metric = column.split("drift by ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(["psi", "jensen_shannon", "normalized_wasserstein", "ks_p_value", "chi_squared_p_value"].contains(&metric), "{column}");
}

/// Dependencies whose log lines a normal run must not show.
const DEPENDENCIES: [&str; 6] = ["deltalake", "buoyant_kernel", "delta_kernel", "datafusion", "object_store", "hyper"];

#[test]
fn a_normal_start_and_commit_log_only_inferlog_lines_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let upstream = Upstream::start();
    let config = d.join("inferlog.toml");
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ncommit_interval_ms = 200\nunpack_interval_ms = 200\n{}unpack = true\n",
        d.display(),
        endpoint_toml("iris", &format!("{}/echo", upstream.url()), "").replace("[endpoints.capture]\n", "")
    );
    std::fs::write(&config, toml).unwrap();
    let log = d.join("gateway.log");
    let mut child = Command::new(bin());
    child.args(["serve", "--config", config.to_str().unwrap()]);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("INFERLOG_") || name == "NO_COLOR") {
        child.env_remove(name);
    }
    let mut child = child.stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let mut stdout = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let listening = stdout.next().unwrap().unwrap();
    let base = listening.strip_prefix("inferlog listening on ").unwrap_or_else(|| panic!("{listening}")).to_string();
    let http = client();
    for i in 0..3 {
        let resp = http.post(format!("{base}/endpoints/iris/invocations")).json(&json!({"inputs": [[i]]})).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert_eq!(wait_rows(d, "iris_payload", 3, Duration::from_secs(30)), 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(d, "iris_unpacked") < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = http.post(format!("{base}/api/query")).json(&json!({"sql": "SELECT count(*) AS n FROM iris_payload"})).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a redirected log:\n{text}");
    assert!(text.lines().any(|l| l.contains(" INFO ") && l.contains("durability=async")), "{text}");
    for line in text.lines() {
        assert!(!line.contains("ERROR") && !line.contains("WARN"), "{line}\n\nin:\n{text}");
        assert!(!DEPENDENCIES.iter().any(|dep| line.contains(&format!(" {dep}"))), "a dependency's line: {line}");
    }
}

fn create_token(data_dir: &Path, name: &str, role: &str, endpoint: &str) -> String {
    let args = ["token", "create", "--data-dir", data_dir.to_str().unwrap(), "--name", name, "--role", role, "--endpoint", endpoint];
    stdout_of(&inferlog_in(data_dir, &[], &args)).lines().last().unwrap().to_string()
}

#[test]
fn endpoints_and_tables_are_listed_as_far_as_the_caller_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d).unwrap();
    let upstream = Upstream::start();
    let reader = create_token(d, "reader", "read", "wine");
    let admin = create_token(d, "admin", "owner", "*");
    let endpoints = format!(
        "{}{}",
        endpoint_toml("iris", &upstream.url(), "sampling_fraction = 0.5"),
        endpoint_toml("wine", &upstream.url(), "enabled = false")
    );
    let gw = Gateway::start(d, &format!("[auth]\nenabled = true\n{endpoints}"));
    let http = client();
    let list = |token: &str| -> (u16, Value) {
        let resp = http.get(gw.url("/admin/endpoints")).bearer_auth(token).send().unwrap();
        (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
    };
    let (status, all) = list(&admin);
    assert_eq!(status, 200, "{all}");
    let names: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["iris", "wine"]);
    assert_eq!(all[0]["capture"], json!({"enabled": true, "sampling_fraction": 0.5}));
    assert_eq!(all[0]["targets"][0]["upstream"], format!("{}/", upstream.url()));
    assert_eq!(all[0]["traffic"]["weights"], json!({"default": 1}));
    assert_eq!(all[1]["capture"]["enabled"], false);
    let (status, visible) = list(&reader);
    assert_eq!(status, 200, "{visible}");
    let names: Vec<&str> = visible.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["wine"]);
    assert_eq!(list("not-a-token").0, 401);

    // A live change shows, through the API and in `inferlog endpoints`.
    let resp = http
        .put(gw.url("/admin/endpoints/iris/capture"))
        .bearer_auth(&admin)
        .json(&json!({"enabled": false}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(list(&admin).1[0]["capture"]["enabled"], false);
    let config = d.join("inferlog.toml");
    let text = stdout_of(&inferlog_in(d, &[], &["endpoints", "--config", config.to_str().unwrap()]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("iris\tcapture off, sampling 0.5\tdefault=http://"), "{text}");
    assert!(lines[1].starts_with("wine\tcapture off, sampling 1\tdefault="), "{text}");
    let json_text = stdout_of(&inferlog_in(d, &[], &["endpoints", "--config", config.to_str().unwrap(), "--json"]));
    assert_eq!(serde_json::from_str::<Value>(&json_text).unwrap(), list(&admin).1);

    // SHOW TABLES lists the caller's tables only.
    let show = |token: &str| -> Vec<String> {
        let resp = http.post(gw.url("/api/query")).bearer_auth(token).json(&json!({"sql": "SHOW TABLES"})).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().unwrap();
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["table_schema"] == "public")
            .map(|r| r["table_name"].as_str().unwrap().to_string())
            .collect()
    };
    let mut everything = show(&admin);
    everything.sort();
    assert_eq!(everything, ["_audit", "iris_payload", "wine_payload"]);
    assert_eq!(show(&reader), ["wine_payload"]);
}

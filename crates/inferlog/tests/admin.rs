use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn capture_toggles_at_runtime_and_the_state_survives_a_restart() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = endpoint_toml("m", &up.url(), "sampling_fraction = 1.0");
    let mut gw = Gateway::start(dir.path(), &toml);
    let http = client();
    let capture = gw.url("/admin/endpoints/m/capture");
    assert_eq!(http.get(&capture).send().unwrap().json::<Value>().unwrap(), json!({"enabled": true, "sampling_fraction": 1.0}));

    http.post(gw.url("/endpoints/m/echo")).body("recorded-1").send().unwrap();
    let resp = http.put(&capture).json(&json!({"enabled": false})).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().unwrap(), json!({"enabled": false, "sampling_fraction": 1.0}));
    let resp = http.post(gw.url("/endpoints/m/echo")).body("not-recorded").send().unwrap();
    assert_eq!(resp.status(), 200, "serving goes on with capture off");
    assert!(resp.headers().contains_key("x-request-id"));

    // Invalid changes are refused and change nothing.
    for (body, status) in [("{\"sampling_fraction\": 2}", 400), ("not json", 400), ("{\"enabled\": \"yes\"}", 400), ("{\"enabld\": true}", 400)] {
        let resp = http.put(&capture).header("content-type", "application/json").body(body).send().unwrap();
        assert_eq!(resp.status(), status, "{body}");
        assert_eq!(resp.headers()["x-inferlog-error"], "true");
        assert_eq!(resp.json::<Value>().unwrap()["error_code"], "INVALID_PARAMETER_VALUE");
    }
    let resp = http.put(gw.url("/admin/endpoints/nope/capture")).json(&json!({"enabled": true})).send().unwrap();
    assert_eq!(resp.status(), 404);

    assert!(gw.terminate().success());
    let gw = Gateway::start(dir.path(), &toml);
    let capture = gw.url("/admin/endpoints/m/capture");
    assert_eq!(http.get(&capture).send().unwrap().json::<Value>().unwrap(), json!({"enabled": false, "sampling_fraction": 1.0}));
    http.post(gw.url("/endpoints/m/echo")).body("still-not-recorded").send().unwrap();
    http.put(&capture).json(&json!({"enabled": true, "sampling_fraction": 1.0})).send().unwrap();
    http.post(gw.url("/endpoints/m/echo")).body("recorded-2").send().unwrap();

    wait_rows(dir.path(), "m_payload", 2, Duration::from_secs(30));
    let rows = query(dir.path(), "SELECT request FROM m_payload ORDER BY timestamp_ms");
    assert_eq!(rows, vec![json!({"request": "recorded-1"}), json!({"request": "recorded-2"})]);
}

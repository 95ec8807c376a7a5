//! Tokens and roles through a real gateway with authentication on: every API × every role ×
//! own and other endpoint × no and bad token, against the documented 200/401/403.

use crate::support::*;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) fn create_token(data_dir: &std::path::Path, name: &str, role: &str, endpoint: &str) -> String {
    let out = Command::new(bin())
        .args(["token", "create", "--data-dir", data_dir.to_str().unwrap(), "--name", name, "--role", role, "--endpoint", endpoint])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string()
}

/// A client whose connections come from `127.0.0.{n}`, so failed attempts of one case do
/// not slow down another (the gateway slows down repeated failures per address).
fn client_from(n: u8) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One API call: (method, path, body) for an endpoint.
fn call(api: &str, endpoint: &str) -> (&'static str, String, String) {
    match api {
        "invoke" => ("POST", format!("/endpoints/{endpoint}/echo"), r#"{"x": 1}"#.into()),
        "capture get" => ("GET", format!("/admin/endpoints/{endpoint}/capture"), String::new()),
        "capture put" => ("PUT", format!("/admin/endpoints/{endpoint}/capture"), r#"{"enabled": true}"#.into()),
        "traffic get" => ("GET", format!("/admin/endpoints/{endpoint}/traffic"), String::new()),
        "traffic put" => ("PUT", format!("/admin/endpoints/{endpoint}/traffic"), r#"{"weights": {"default": 1}}"#.into()),
        "query" => ("POST", "/api/query".into(), format!(r#"{{"sql": "SELECT count(*) AS n FROM {endpoint}_payload"}}"#)),
        "labels" => ("POST", format!("/api/endpoints/{endpoint}/labels"), r#"[{"client_request_id": "c1", "label": "setosa"}]"#.into()),
        "monitor" => ("POST", format!("/api/endpoints/{endpoint}/monitor"), "{}".into()),
        "grants get" => ("GET", format!("/admin/endpoints/{endpoint}/grants"), String::new()),
        "grants put" => ("PUT", format!("/admin/endpoints/{endpoint}/grants/guest"), r#"{"role": "read"}"#.into()),
        "grants delete" => ("DELETE", format!("/admin/endpoints/{endpoint}/grants/guest"), String::new()),
        _ => unreachable!(),
    }
}

const APIS: [&str; 11] = [
    "invoke", "capture get", "capture put", "traffic get", "traffic put", "query", "labels", "monitor", "grants get", "grants put",
    "grants delete",
];

/// What a permitted call answers (the monitor has no baseline, a valid refusal after the
/// check).
fn permitted(api: &str) -> u16 {
    match api {
        "monitor" => 400,
        "grants delete" => 204,
        _ => 200,
    }
}

fn send(client: &reqwest::blocking::Client, gateway: &Gateway, api: &str, endpoint: &str, token: Option<&str>) -> (u16, Value) {
    let (method, path, body) = call(api, endpoint);
    let mut request = match method {
        "GET" => client.get(gateway.url(&path)),
        "PUT" => client.put(gateway.url(&path)),
        "DELETE" => client.delete(gateway.url(&path)),
        _ => client.post(gateway.url(&path)),
    };
    if !body.is_empty() {
        request = request.header("content-type", "application/json").body(body);
    }
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn every_api_answers_each_role_on_own_and_other_endpoints_as_documented() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens: Vec<(&str, &str, String)> = vec![
        ("invoker", "invoke", create_token(d, "invoker", "invoke", "iris")),
        ("reader", "read", create_token(d, "reader", "read", "iris")),
        ("owner", "owner", create_token(d, "owner", "owner", "iris")),
    ];
    let admin = create_token(d, "admin", "owner", "*");
    // The token the grants API hands roles to and takes them from.
    create_token(d, "guest", "invoke", "open");
    let toml = format!(
        "commit_interval_ms = 200\n[auth]\nenabled = true\n{}{}[[endpoints]]\nname = \"open\"\nupstream = \"{}\"\npublic = true\n",
        endpoint_toml("iris", &upstream.url(), ""),
        endpoint_toml("other", &upstream.url(), ""),
        upstream.url(),
    );
    let gateway = Gateway::start(d, &toml);
    let http = client();
    // Traffic on both endpoints, so both have tables to query.
    for endpoint in ["iris", "other"] {
        assert_eq!(send(&http, &gateway, "invoke", endpoint, Some(&admin)).0, 200);
    }
    assert_eq!(wait_rows(d, "other_payload", 1, Duration::from_secs(30)), 1);
    assert_eq!(wait_rows(d, "iris_payload", 1, Duration::from_secs(30)), 1);

    let mut next_address = 10u8;
    let mut fresh_client = || {
        next_address += 1;
        client_from(next_address)
    };
    let mut failures = Vec::new();
    for api in APIS {
        for endpoint in ["iris", "other"] {
            // No token, a bad token: 401, whatever the endpoint.
            for token in [None, Some("ilg_not-a-token")] {
                let (status, body) = send(&fresh_client(), &gateway, api, endpoint, token);
                if status != 401 || body["error_code"] != "UNAUTHENTICATED" {
                    failures.push(format!("{api} on {endpoint} with {token:?}: {status} {body}"));
                }
            }
            for (name, role, token) in &tokens {
                let needed = match api {
                    "invoke" => "invoke",
                    "capture get" | "traffic get" | "query" => "read",
                    _ => "owner",
                };
                let holds = *role == needed || *role == "owner";
                if api == "grants delete" {
                    // Something to take away, whoever asks.
                    send(&http, &gateway, "grants put", endpoint, Some(&admin));
                }
                let expected = match (api, endpoint) {
                    // The query API needs `read` somewhere; other endpoints' tables are not
                    // visible to it, as if they did not exist.
                    ("query", "other") if holds => 400,
                    (_, "iris") if holds => permitted(api),
                    _ => 403,
                };
                let (status, body) = send(&http, &gateway, api, endpoint, Some(token));
                if status != expected {
                    failures.push(format!("{api} on {endpoint} as {name} ({role}): {status}, expected {expected}: {body}"));
                }
                if status == 403 && body["error_code"] != "PERMISSION_DENIED" {
                    failures.push(format!("{api} on {endpoint} as {name}: {body}"));
                }
            }
            if api == "grants delete" {
                send(&http, &gateway, "grants put", endpoint, Some(&admin));
            }
            let (status, body) = send(&http, &gateway, api, endpoint, Some(&admin));
            if status != permitted(api) {
                failures.push(format!("{api} on {endpoint} as admin: {status} {body}"));
            }
        }
        // An endpoint that does not exist: 403 to a token without rights on it (nothing is
        // revealed), 404 to one with rights everywhere.
        if api != "query" {
            let (status, _) = send(&http, &gateway, api, "ghost", Some(&tokens[2].2));
            let (admin_status, _) = send(&http, &gateway, api, "ghost", Some(&admin));
            if status != 403 || admin_status != 404 {
                failures.push(format!("{api} on ghost: {status} for owner of iris, {admin_status} for admin"));
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));

    // The gateway's tokens never reach the model server.
    assert!(upstream.seen.requests.lock().unwrap().iter().all(|(_, _, h)| h.get("authorization").is_none()));
    // Metrics name every endpoint: only for `read` on `*`.
    assert_eq!(fresh_client().get(gateway.url("/metrics")).send().unwrap().status(), 401);
    assert_eq!(http.get(gateway.url("/metrics")).bearer_auth(&tokens[2].2).send().unwrap().status(), 403);
    assert_eq!(http.get(gateway.url("/metrics")).bearer_auth(&admin).send().unwrap().status(), 200);
    // A public endpoint needs no token.
    assert_eq!(send(&fresh_client(), &gateway, "invoke", "open", None).0, 200);
    // Rows name the token that made them.
    let rows = wait_rows(d, "iris_payload", 4, Duration::from_secs(30));
    assert!(rows >= 4);
    let by = query(d, "SELECT requester, count(*) AS n FROM iris_payload GROUP BY 1 ORDER BY 1");
    let names: Vec<&str> = by.iter().filter_map(|r| r["requester"].as_str()).collect();
    assert_eq!(names, ["admin", "invoker", "owner"], "{by:?}");

    // Repeated failures from one address slow down; other addresses are not affected.
    let slow = client_from(99);
    let mut took = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        assert_eq!(send(&slow, &gateway, "invoke", "iris", Some("ilg_guess")).0, 401);
        took.push(started.elapsed());
    }
    assert!(took[..5].iter().all(|t| *t < Duration::from_millis(500)), "{took:?}");
    assert!(took[5..].iter().all(|t| *t >= Duration::from_millis(900)), "{took:?}");
    assert_eq!(send(&http, &gateway, "invoke", "iris", Some(&tokens[0].2)).0, 200);

    // A revoked token is refused within about a second, without a restart.
    let out = Command::new(bin()).args(["token", "revoke", "--data-dir", d.to_str().unwrap(), "--name", "invoker"]).output().unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(send(&fresh_client(), &gateway, "invoke", "iris", Some(&tokens[0].2)).0, 401);
    let listed = Command::new(bin()).args(["token", "list", "--data-dir", d.to_str().unwrap()]).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains("owner\towner on iris") && !listed.contains("invoker"), "{listed}");
    assert!(tokens.iter().all(|(_, _, secret)| !listed.contains(secret.as_str())));
    let stored = std::fs::read_to_string(d.join("state/tokens.json")).unwrap();
    assert!(tokens.iter().all(|(_, _, secret)| !stored.contains(secret.as_str())), "secrets are stored hashed");

    // Every administrative action is in `_audit`: who, what, on which endpoint, how it went.
    drop(gateway);
    let audit = query(d, "SELECT who, action, endpoint, result FROM _audit ORDER BY at");
    let has = |who: &str, action: &str, endpoint: Option<&str>, result: &str| {
        audit.iter().any(|r| {
            r["who"].as_str().is_some_and(|w| w.starts_with(who))
                && r["action"] == action
                && r["endpoint"].as_str() == endpoint
                && r["result"].as_str().is_some_and(|x| x.contains(result))
        })
    };
    for (who, action, endpoint, result) in [
        ("owner", "capture.change", Some("iris"), "ok"),
        ("owner", "traffic.change", Some("iris"), "ok"),
        ("admin", "capture.change", Some("other"), "ok"),
        ("owner", "labels.import", Some("iris"), "ok"),
        ("owner", "monitor.run", Some("iris"), "no baseline"),
        ("admin", "capture.change", Some("ghost"), "no endpoint named `ghost`"),
        ("owner", "grant", Some("iris"), "ok"),
        ("owner", "ungrant", Some("iris"), "ok"),
        ("cli:", "token.create", Some("iris"), "ok"),
        ("cli:", "token.create", Some("*"), "ok"),
        ("cli:", "token.revoke", None, "ok"),
    ] {
        assert!(has(who, action, endpoint, result), "no {who} {action} {endpoint:?} {result} in {audit:?}");
    }
    // Refused callers changed nothing, and are not in the audit trail as having done so.
    assert!(!audit.iter().any(|r| r["who"] == "reader" || r["who"] == "invoker"), "{audit:?}");
}

#[test]
fn owners_grant_and_take_back_roles_on_their_endpoints_with_immediate_effect() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let alice = create_token(d, "alice", "owner", "iris");
    let bob = create_token(d, "bob", "invoke", "other");
    let toml = format!(
        "[auth]\nenabled = true\n{}{}",
        endpoint_toml("iris", &upstream.url(), ""),
        endpoint_toml("other", &upstream.url(), "")
    );
    let gateway = Gateway::start(d, &toml);
    let http = client();
    let grants = |endpoint: &str, token: &str| gateway.url(&format!("/admin/endpoints/{endpoint}/grants/{token}"));
    assert_eq!(send(&http, &gateway, "invoke", "iris", Some(&bob)).0, 403);

    // Alice owns iris: she lets bob invoke it, and he can at once (no wait for a reload).
    let resp = http.put(grants("iris", "bob")).bearer_auth(&alice).json(&serde_json::json!({"role": "invoke"})).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().unwrap(), serde_json::json!({"token": "bob", "endpoint": "iris", "role": "invoke"}));
    assert_eq!(send(&http, &gateway, "invoke", "iris", Some(&bob)).0, 200);
    let listed: Value = http.get(gateway.url("/admin/endpoints/iris/grants")).bearer_auth(&alice).send().unwrap().json().unwrap();
    assert_eq!(
        listed,
        serde_json::json!([
            {"token": "alice", "endpoint": "iris", "role": "owner"},
            {"token": "bob", "endpoint": "iris", "role": "invoke"}
        ])
    );
    // Bob's grant on `other` is his own business.
    assert_eq!(send(&http, &gateway, "invoke", "other", Some(&bob)).0, 200);

    // What alice may not do, and bad requests.
    let put = |endpoint: &str, token: &str, as_token: &str, body: &str| {
        let resp = http.put(grants(endpoint, token)).bearer_auth(as_token).header("content-type", "application/json").body(body.to_string()).send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap_or(Value::Null)["error_code"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(put("other", "alice", &alice, r#"{"role": "owner"}"#), (403, "PERMISSION_DENIED".into()));
    assert_eq!(put("iris", "bob", &bob, r#"{"role": "owner"}"#), (403, "PERMISSION_DENIED".into()), "invoke cannot grant");
    assert_eq!(put("iris", "nobody", &alice, r#"{"role": "read"}"#), (404, "TOKEN_NOT_FOUND".into()));
    assert_eq!(put("iris", "bob", &alice, r#"{"role": "admin"}"#), (400, "INVALID_PARAMETER_VALUE".into()));
    assert_eq!(put("iris", "bob", &alice, "not json"), (400, "INVALID_PARAMETER_VALUE".into()));
    assert_eq!(http.put(grants("iris", "bob")).json(&serde_json::json!({"role": "read"})).send().unwrap().status(), 401);

    // Taking it back is as immediate; a second time there is nothing to take.
    assert_eq!(http.delete(grants("iris", "bob")).bearer_auth(&alice).send().unwrap().status(), 204);
    assert_eq!(send(&http, &gateway, "invoke", "iris", Some(&bob)).0, 403);
    let again = http.delete(grants("iris", "bob")).bearer_auth(&alice).send().unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(again.json::<Value>().unwrap()["error_code"], "GRANT_NOT_FOUND");

    // The CLI grants too (on `*` as well), and takes effect on the running gateway.
    let cli = |args: &[&str]| Command::new(bin()).args(args).args(["--data-dir", d.to_str().unwrap()]).output().unwrap();
    assert!(cli(&["token", "grant", "--name", "bob", "--role", "read", "--endpoint", "*"]).status.success());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(http.get(gateway.url("/admin/endpoints/iris/capture")).bearer_auth(&bob).send().unwrap().status(), 200);
    let out = cli(&["token", "ungrant", "--name", "bob", "--endpoint", "iris"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("holds no role on `iris`"));

    drop(gateway);
    let audit = query(d, "SELECT who, action, endpoint, detail, result FROM _audit WHERE action IN ('grant', 'ungrant') ORDER BY at");
    let summary: Vec<String> = audit
        .iter()
        .map(|r| format!("{} {} {} {}", r["who"].as_str().unwrap().split(':').next().unwrap(), r["action"].as_str().unwrap(), r["endpoint"].as_str().unwrap(), r["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            "alice grant iris ok",
            "alice grant iris no token named `nobody`",
            "alice grant iris invalid grant (send {\"role\": \"invoke|read|owner\"}): unknown variant `admin`, expected one of `invoke`, `read`, `owner` at line 1 column 16",
            "alice grant iris invalid grant (send {\"role\": \"invoke|read|owner\"}): expected ident at line 1 column 2",
            "alice ungrant iris ok",
            "alice ungrant iris the token `bob` holds no role on `iris` (a grant on `*` is changed with `inferlog token`)",
            "cli grant * ok",
            "cli ungrant iris token `bob` holds no role on `iris`",
        ],
        "{audit:?}"
    );
}

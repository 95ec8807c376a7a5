//! HTTPS: the gateway's listener with a certificate from a private CA, read by Python's
//! OpenSSL-based client, and https upstreams trusted through `tls.upstream_ca`.

use crate::support::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Writes `{name}.pem` and `{name}.key` for 127.0.0.1 and localhost, signed by `ca` (or
/// self-signed).
fn issue(dir: &Path, name: &str, ca: Option<&CertifiedIssuer<'_, KeyPair>>) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = match ca {
        Some(ca) => params.signed_by(&key, ca).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn private_ca(dir: &Path) -> (CertifiedIssuer<'static, KeyPair>, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "Inferlog test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    (ca, path)
}

/// A model server speaking HTTPS with the given identity: `POST /invocations` answers how
/// many bytes it got.
fn tls_upstream(cert: &Path, key: &Path) -> u16 {
    let config = inferlog_proxy::tls::server_config(cert, key).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(tcp.local_addr().unwrap().port()).unwrap();
            let app = axum::Router::new().route(
                "/invocations",
                axum::routing::post(|body: bytes::Bytes| async move { format!("{{\"predictions\": [{}]}}", body.len()) }),
            );
            let listener = inferlog_proxy::tls::TlsListener::new(tcp, config).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn the_gateway_serves_https_and_reaches_https_upstreams_through_a_private_ca() {
    let python = std::env::var("INTEROP_PYTHON")
        .expect("INTEROP_PYTHON is not set: run the tests with scripts/test");
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let (ca, ca_path) = private_ca(&pki);
    let (gw_cert, gw_key) = issue(&pki, "gateway", Some(&ca));
    let (up_cert, up_key) = issue(&pki, "upstream", Some(&ca));
    let (rogue_cert, rogue_key) = issue(&pki, "rogue", None);
    let secure_port = tls_upstream(&up_cert, &up_key);
    let rogue_port = tls_upstream(&rogue_cert, &rogue_key);

    let data = dir.path().join("data");
    let gw = Gateway::start(
        &data,
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nupstream_ca = \"{}\"\n\n{}\n{}",
            gw_cert.display(),
            gw_key.display(),
            ca_path.display(),
            endpoint_toml("secure", &format!("https://127.0.0.1:{secure_port}"), ""),
            endpoint_toml("rogue", &format!("https://localhost:{rogue_port}"), ""),
        ),
    );
    assert_eq!(gw.scheme, "https");

    // An outside TLS stack (Python's ssl, OpenSSL) trusting only the private CA; and the
    // same request with the system's roots only, which must be refused.
    let script = r#"
import json, socket, ssl, sys, urllib.error, urllib.parse, urllib.request
ca, url = sys.argv[1], sys.argv[2]
verified = ssl.create_default_context(cafile=ca)
host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
with verified.wrap_socket(socket.create_connection((host, port), timeout=30), server_hostname=host) as tls:
    version = tls.version()
request = urllib.request.Request(url, data=b'{"inputs": [[1, 2, 3]]}', headers={"content-type": "application/json"})
with urllib.request.urlopen(request, context=verified, timeout=30) as r:
    print(json.dumps({"status": r.status, "body": r.read().decode(), "request_id": r.headers["x-request-id"], "tls": version}))
try:
    urllib.request.urlopen(request, context=ssl.create_default_context(), timeout=30)
    print(json.dumps({"unverified": "accepted"}))
except urllib.error.URLError as e:
    print(json.dumps({"unverified": str(e.reason)}))
"#;
    let out = Command::new(&python)
        .args(["-c", script, ca_path.to_str().unwrap(), &gw.url("/endpoints/secure/invocations")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["status"], 200, "{lines:?}");
    assert_eq!(lines[0]["body"], "{\"predictions\": [23]}");
    assert!(lines[0]["tls"].as_str().unwrap().starts_with("TLSv1."), "{lines:?}");
    assert!(lines[1]["unverified"].as_str().unwrap().contains("CERTIFICATE_VERIFY_FAILED"), "{lines:?}");
    let request_id = lines[0]["request_id"].as_str().unwrap().to_string();

    // Our own client, trusting the same CA.
    let https = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(inferlog_proxy::tls::client_config(Some(&ca_path)).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // An upstream whose certificate no trusted CA signed: 502, and the row says why.
    let resp = https.post(gw.url("/endpoints/rogue/invocations")).body("{}").send().unwrap();
    assert_eq!(resp.status(), 502);
    let rogue_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error_code"], "UPSTREAM_UNREACHABLE");
    assert!(body["message"].as_str().unwrap().contains("TLS certificate was rejected"), "{body}");

    // Plain HTTP on the HTTPS port gets no answer, and the listener keeps serving.
    let plain = client().get(format!("http://{}/healthz", gw.addr)).send();
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    // A client that connects and never says hello does not hold the listener up.
    let _silent = std::net::TcpStream::connect(gw.addr).unwrap();
    let resp = https.post(gw.url("/endpoints/secure/invocations")).body("[1]").send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().unwrap(), "{\"predictions\": [3]}");

    assert_eq!(wait_rows(&data, "secure_payload", 2, Duration::from_secs(30)), 2);
    let row = row(&data, "secure_payload", &request_id);
    assert_eq!(row["status_code"], 200);
    assert_eq!(row["request"], "{\"inputs\": [[1, 2, 3]]}");
    assert_eq!(row["response"], "{\"predictions\": [23]}");
    assert_eq!(wait_rows(&data, "rogue_payload", 1, Duration::from_secs(30)), 1);
    let row = crate::support::row(&data, "rogue_payload", &rogue_id);
    assert_eq!(row["status_code"], 502);
    assert!(row["error"].as_str().unwrap().contains("UnknownIssuer"), "{row}");

    // A renewed certificate is served without a restart.
    let served_name = || {
        let script = "import socket, ssl, sys\n\
                      ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
                      s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[2]))), server_hostname='127.0.0.1')\n\
                      print(dict(x[0] for x in s.getpeercert()['subject'])['commonName'])";
        let out = Command::new(&python).args(["-c", script, ca_path.to_str().unwrap(), &gw.addr.port().to_string()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(served_name(), "gateway");
    let (renewed_cert, renewed_key) = issue(&pki, "renewed", Some(&ca));
    std::fs::copy(&renewed_key, &gw_key).unwrap();
    std::fs::copy(&renewed_cert, &gw_cert).unwrap();
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(served_name(), "renewed");
    assert!(gw.logs().contains("TLS certificate reloaded"));
}

/// The gateway's stderr if it exits (with a failure) within 30 s; `None` if it kept running.
fn start_failure(config: &Path) -> Option<String> {
    let log = config.with_extension("log");
    let mut child = Command::new(bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            return Some(std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn tls_settings_that_cannot_work_stop_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let (cert, key) = issue(&pki, "gateway", None);
    let (other_cert, _) = issue(&pki, "other", None);
    let not_pem = pki.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let cases = [
        (format!("[tls]\ncert = \"{}\"\n", cert.display()), "tls.key"),
        (format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", not_pem.display(), key.display()), "not.pem"),
        (format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), pki.join("missing.key").display()), "missing.key"),
        // A key that is not the certificate's.
        (format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", other_cert.display(), key.display()), "do not make a TLS identity"),
        (format!("[tls]\nupstream_ca = \"{}\"\n", not_pem.display()), "tls.upstream_ca"),
        ("[tls]\nport = 443\n".to_string(), "tls.port"),
    ];
    for (i, (tls, expected)) in cases.iter().enumerate() {
        let data = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let config = data.join("inferlog.toml");
        std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{tls}\n{}", data.display(), endpoint_toml("m", "http://127.0.0.1:9", ""))).unwrap();
        let stderr = start_failure(&config).unwrap_or_else(|| panic!("case {i}: the gateway started"));
        assert!(stderr.contains(expected), "case {i}: expected `{expected}` in {stderr}");
    }
}

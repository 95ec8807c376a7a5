//! Test harness: an upstream model server with scripted behaviours, a gateway process, and
//! helpers to read the table back.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Held by tests that load the machine (the kill -9 test) and by the test that measures how
/// fast a row appears, so the one does not skew the other on a 2-core machine.
pub static EXCLUSIVE: Mutex<()> = Mutex::new(());

pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the upstream saw, for assertions on forwarding.
#[derive(Clone, Default)]
pub struct Seen {
    pub requests: Arc<Mutex<Vec<(String, String, HeaderMap)>>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Seen,
    _runtime: tokio::runtime::Runtime,
}

async fn scripted(State(seen): State<Seen>, Path(route): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let pq = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    seen.requests.lock().unwrap().push((parts.method.to_string(), pq, parts.headers.clone()));
    let mut segments = route.split('/');
    match segments.next().unwrap_or("") {
        // Echoes the body with the request's content type and a custom header.
        "echo" | "invocations" => {
            let ct = parts.headers.get("content-type").cloned();
            let mut resp = (StatusCode::OK, body).into_response();
            if let Some(ct) = ct {
                resp.headers_mut().insert("content-type", ct);
            }
            resp.headers_mut().insert("x-upstream-header", "kept".parse().unwrap());
            resp
        }
        // Validates JSON like a model server would.
        "json" => match serde_json::from_slice::<Value>(&body) {
            Ok(v) => axum::Json(serde_json::json!({"predictions": [v.as_object().map(|o| o.len()).unwrap_or(0)]})).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error_code": "BAD_REQUEST", "message": e.to_string()}))).into_response(),
        },
        // A scoring model: answers `{"predictions": [<the JSON of the x-respond header>]}`.
        "scored" => {
            let respond = parts.headers.get("x-respond").and_then(|v| serde_json::from_slice::<Value>(v.as_bytes()).ok());
            match respond {
                Some(v) => axum::Json(serde_json::json!({"predictions": [v]})).into_response(),
                None => (StatusCode::BAD_REQUEST, "x-respond must hold JSON").into_response(),
            }
        }
        "status" => {
            let code: u16 = segments.next().and_then(|s| s.parse().ok()).unwrap_or(500);
            (StatusCode::from_u16(code).unwrap(), format!("{{\"upstream_status\": {code}}}")).into_response()
        }
        "slow" => {
            let ms: u64 = segments.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            "slow done".into_response()
        }
        "binary" => (StatusCode::OK, [("content-type", "application/octet-stream")], (0u8..=255).collect::<Vec<u8>>()).into_response(),
        "big" => {
            let n: usize = segments.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
            "x".repeat(n).into_response()
        }
        // Three chunks, 300 ms apart.
        "stream" => {
            let stream = futures::stream::unfold(0u32, |i| async move {
                if i == 3 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Some((Ok::<_, std::io::Error>(Bytes::from(format!("chunk-{}\n", i + 1))), i + 1))
            });
            Response::builder()
                .header("content-type", "text/plain")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        // One chunk, then the connection breaks.
        "break" => {
            let stream = futures::stream::unfold(0u32, |i| async move {
                match i {
                    0 => Some((Ok(Bytes::from_static(b"partial")), 1)),
                    _ => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Err(std::io::Error::other("upstream broke")), 2))
                    }
                }
            });
            Response::builder().body(Body::from_stream(stream)).unwrap()
        }
        // A fake OpenAI-compatible server: POST /v1/chat/completions.
        "v1" => fake_openai(&body),
        _ => (StatusCode::NOT_FOUND, "no such route").into_response(),
    }
}

/// The words a fake chat completion answers with, one streamed chunk each.
pub const FAKE_WORDS: [&str; 5] = ["Hello", " there", ",", " friend", "!"];
/// Delay between streamed chunks of the fake OpenAI server.
pub const FAKE_CHUNK_DELAY_MS: u64 = 150;

/// Chat completions like an OpenAI-compatible server. The model name picks the behaviour:
/// `fake-break` stops the stream with an error after two words, `fake-slow` streams 40 words
/// 100 ms apart (for callers that leave early); `stream_options.include_usage` adds a usage
/// chunk as OpenAI does.
fn fake_openai(body: &[u8]) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let model = request["model"].as_str().unwrap_or("fake-model").to_string();
    let usage = serde_json::json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17});
    if request["stream"] != true {
        return axum::Json(serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_800_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": FAKE_WORDS.concat()}, "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let include_usage = request["stream_options"]["include_usage"] == true;
    let (words, delay): (Vec<String>, u64) = match model.as_str() {
        "fake-slow" => ((0..40).map(|i| format!("w{i} ")).collect(), 100),
        _ => (FAKE_WORDS.iter().map(|w| w.to_string()).collect(), FAKE_CHUNK_DELAY_MS),
    };
    let chunk = |delta: Value, finish: Value, usage: Value| {
        let c = serde_json::json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_800_000_000,
            "model": model, "choices": if usage.is_null() { serde_json::json!([{"index": 0, "delta": delta, "finish_reason": finish}]) } else { serde_json::json!([]) },
            "usage": usage});
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut events: Vec<(u64, Result<Bytes, std::io::Error>)> = vec![(0, Ok(chunk(serde_json::json!({"role": "assistant", "content": ""}), Value::Null, Value::Null)))];
    for (i, word) in words.iter().enumerate() {
        if model == "fake-break" && i == 2 {
            events.push((delay, Err(std::io::Error::other("model server crashed"))));
            break;
        }
        events.push((delay, Ok(chunk(serde_json::json!({"content": word}), Value::Null, Value::Null))));
    }
    events.push((0, Ok(chunk(serde_json::json!({}), serde_json::json!("stop"), Value::Null))));
    if include_usage {
        events.push((0, Ok(chunk(Value::Null, Value::Null, usage))));
    }
    events.push((0, Ok(Bytes::from_static(b"data: [DONE]\n\n"))));
    let stream = futures::stream::unfold(events.into_iter(), |mut events| async move {
        let (delay, item) = events.next()?;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Some((item, events))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

impl Upstream {
    pub fn start() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seen = Seen::default();
        let app = Router::new().route("/{*route}", any(scripted)).with_state(seen.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream { addr, seen, _runtime: runtime }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A loopback port that refuses connections for as long as this value lives: it is bound but never
/// listened on, so no other test's `127.0.0.1:0` can be handed the same port in the meantime.
pub struct ClosedPort {
    _socket: socket2::Socket,
    port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        ClosedPort { _socket: socket, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A port free now, for a child process to listen on.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// `http` or `https` (with `[tls]` configured).
    pub scheme: String,
    pub stderr_path: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_inferlog")
}

impl Gateway {
    /// Starts `inferlog serve --config` with `extra_toml` appended to listen/data_dir lines.
    pub fn start(data_dir: &FsPath, toml_body: &str) -> Gateway {
        Self::start_command(data_dir, toml_body, Command::new(bin()))
    }

    /// As [`Gateway::start`], run by `command` (which runs the binary with the arguments it
    /// is given, e.g. under a lower open files limit).
    pub fn start_command(data_dir: &FsPath, toml_body: &str, mut command: Command) -> Gateway {
        std::fs::create_dir_all(data_dir).unwrap();
        let config = data_dir.join("inferlog.toml");
        let text = format!("listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{toml_body}", data_dir.display());
        std::fs::write(&config, text).unwrap();
        command.args(["serve", "--config", config.to_str().unwrap()]);
        Self::spawn_command(data_dir, command)
    }

    pub fn spawn(data_dir: &FsPath, args: &[&str]) -> Gateway {
        let mut command = Command::new(bin());
        command.args(args);
        Self::spawn_command(data_dir, command)
    }

    fn spawn_command(data_dir: &FsPath, mut command: Command) -> Gateway {
        let stderr_path = data_dir.join(format!("gateway-{}.log", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = command
            .env("INFERLOG_LOG", "info,inferlog_table=debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start inferlog");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((scheme, addr)) = line.strip_prefix("inferlog listening on ").and_then(|l| l.split_once("://")) {
                    let _ = tx.send((scheme.to_string(), addr.trim().to_string()));
                }
            }
        });
        let (scheme, addr) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((scheme, a)) => (scheme, a.parse().unwrap()),
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default());
            }
        };
        Gateway { child: Some(child), addr, scheme, stderr_path }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Peak resident memory of the gateway process so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Runs SQL over the data directory's tables; rows as JSON objects.
pub fn query(data_dir: &FsPath, sql: &str) -> Vec<Value> {
    try_query(data_dir, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn try_query(data_dir: &FsPath, sql: &str) -> Result<Vec<Value>, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ctx = inferlog_query::session(&inferlog_core::Layout::local(data_dir).unwrap(), None).await.map_err(|e| e.to_string())?;
        let result = inferlog_query::run_sql(&ctx, sql).await.map_err(|e| e.to_string())?;
        let text = inferlog_query::format(&result.batches, inferlog_query::OutputFormat::Json).map_err(|e| e.to_string())?;
        Ok(text.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
    })
}

pub fn count(data_dir: &FsPath, table: &str) -> usize {
    match try_query(data_dir, &format!("SELECT count(*) AS n FROM {table}")) {
        Ok(rows) => rows[0]["n"].as_u64().unwrap() as usize,
        Err(_) => 0,
    }
}

/// Waits until the table holds `n` rows, then one more commit interval to see that no
/// more arrive. Returns the final count.
pub fn wait_rows(data_dir: &FsPath, table: &str, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut c = count(data_dir, table);
    while c < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        c = count(data_dir, table);
    }
    std::thread::sleep(Duration::from_millis(1500));
    count(data_dir, table)
}

/// One row by request id.
pub fn row(data_dir: &FsPath, table: &str, request_id: &str) -> Value {
    let rows = query(data_dir, &format!("SELECT * FROM {table} WHERE request_id = '{request_id}'"));
    assert_eq!(rows.len(), 1, "row {request_id}: {rows:?}");
    rows.into_iter().next().unwrap()
}

pub fn endpoint_toml(name: &str, upstream: &str, capture: &str) -> String {
    format!("[[endpoints]]\nname = \"{name}\"\nupstream = \"{upstream}\"\n[endpoints.capture]\n{capture}\n")
}

/// The virtualenv's interpreter, which `scripts/test` makes and names in `INTEROP_PYTHON`.
pub fn python() -> String {
    std::env::var("INTEROP_PYTHON").expect("INTEROP_PYTHON is not set: run the tests with scripts/test, which installs the Python packages")
}

/// An S3-compatible server (moto, in memory, one request at a time so conditional writes are
/// atomic) on an ephemeral loopback port, with the bucket `inferlog`; stopped on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    pub fn start() -> S3Server {
        Self::start_with(&[])
    }

    /// With extra environment for moto (e.g. to make it check credentials).
    pub fn start_with(env: &[(&str, &str)]) -> S3Server {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/s3_server.py");
        let mut child = Command::new(python())
            .arg(script)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            // One line per request: nobody reads it, so it must not fill a pipe.
            .stderr(Stdio::null())
            .spawn()
            .expect("start the S3 server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let endpoint = line.trim().strip_prefix("s3 listening on ").unwrap_or_else(|| panic!("the S3 server did not start: {line:?}")).to_string();
        S3Server { child, endpoint }
    }

    /// The variables every client of the store is given (the documented set).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ]
    }

    /// Stops the server's process (SIGSTOP): connections open and requests hang, as with a
    /// store that stopped answering; its data stays.
    pub fn pause(&self) {
        // SAFETY: kill only sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGSTOP) }, 0);
    }

    pub fn resume(&self) {
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) }, 0);
    }

    /// `inferlog serve` with its tables under `tables_uri` on this store.
    pub fn gateway(&self, data_dir: &FsPath, tables_uri: &str, toml_body: &str) -> Gateway {
        let mut command = Command::new(bin());
        command.envs(self.env());
        Gateway::start_command(data_dir, &format!("tables_uri = \"{tables_uri}\"\n{toml_body}"), command)
    }

    /// `inferlog ARGS` with the store's variables; the output (status, stdout, stderr).
    pub fn inferlog(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin()).args(args).envs(self.env()).output().unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the first `/metrics` line starting with `series` (a name, or a name with
/// labels); `None` when there is no such line.
pub fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let text = client().get(gw.url("/metrics")).send().ok()?.text().ok()?;
    text.lines().find(|l| l.starts_with(series))?.rsplit(' ').next()?.parse().ok()
}

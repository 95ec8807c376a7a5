//! `inferlog serve`: wires configuration, capture, the table committers and the gateway.
//!
//! Start order: tables are opened (to learn which log records they already hold), logs are
//! recovered and their writer threads started, committers and compactors spawned, then the
//! listener opens. Stop order (SIGTERM or Ctrl-C): the listener stops accepting and
//! in-flight exchanges finish, the gateway is dropped so the log writers drain their queues
//! and exit, then the committers make their last commit, and last the unpackers (endpoints
//! with `unpack = true`) make a final pass over it.

use crate::api::{self, ApiState, BackgroundRuntime};
use crate::supervisor::{On, Stage, Supervisor};
use crate::ServeArgs;
use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use inferlog_capture::{start_log_writer, CaptureHandle, LogWriterHandle};
use inferlog_core::config::{self, Config};
use inferlog_core::EndpointTable;
use inferlog_table::lease::{Lease, LeaseFlag};
use inferlog_proxy::tls::ClientAddr;
use inferlog_proxy::server::{ConnectionLimits, ConnectionSlots};
use inferlog_core::SharedState;
use inferlog_proxy::auth::TokenStore;
use inferlog_proxy::{CaptureState, CaptureStateStore, Endpoint, Gateway, GatewayOptions, TrafficState, TrafficStateStore};
use inferlog_table::{Committer, CommitterOptions, CompactionOptions, Compactor};
use inferlog_monitor::ScheduledMonitor;
use inferlog_unpack::{UnpackOptions, Unpacker};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How long SIGTERM waits for in-flight exchanges before stopping regardless.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the config file (if any), then `INFERLOG_*` variables, then flags, and validates.
pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut tree = match &args.config {
        Some(path) => config::read_file(path)?,
        None => toml::Table::new(),
    };
    // Endpoints from flags first, so that environment overrides can reach them; then the
    // environment; then the scalar flags, which win over both.
    config::tree_from_flags(None, None, None, &args.endpoints, &mut tree);
    config::apply_env(&mut tree, std::env::vars())?;
    config::tree_from_flags(args.listen.as_deref(), args.data_dir.as_deref(), args.durability, &[], &mut tree);
    if let Some(uri) = &args.tables_uri {
        tree.insert("tables_uri".into(), toml::Value::String(uri.clone()));
    }
    let config = config::read_tree(tree)?.validate()?;
    if config.endpoints.is_empty() {
        anyhow::bail!("no endpoints configured: give --endpoint NAME=URL or an [[endpoints]] section");
    }
    Ok(config)
}

/// Where an endpoint's offloaded bodies are written: beside its local payload table, or to the
/// spool the committer uploads from.
fn offload_dir(layout: &inferlog_core::Layout, endpoint: &str) -> std::path::PathBuf {
    layout.local_table_dir(&EndpointTable::Payload.name(endpoint)).unwrap_or_else(|| layout.offload_spool_dir(endpoint))
}

/// Where the admin API saves capture and traffic changes: the shared control state.
pub fn state_stores(shared: &SharedState) -> (CaptureStateStore, TrafficStateStore) {
    (CaptureStateStore::capture(shared.clone()), TrafficStateStore::traffic(shared.clone()))
}

/// Each endpoint's capture and traffic settings as a start sets them, in the config's order:
/// the config's, with the changes saved through the admin API on top.
pub async fn live_settings(
    config: &Config,
    capture: &CaptureStateStore,
    traffic: &TrafficStateStore,
) -> anyhow::Result<Vec<(CaptureState, TrafficState)>> {
    let saved = capture.load().await.map_err(anyhow::Error::msg)?;
    let saved_traffic = traffic.load().await.map_err(anyhow::Error::msg)?;
    Ok(settings_with_changes(config, &saved, &saved_traffic))
}

/// Each endpoint's capture and traffic settings: the config's with `saved` changes on top.
pub fn settings_with_changes(
    config: &Config,
    saved: &std::collections::BTreeMap<String, CaptureState>,
    saved_traffic: &std::collections::BTreeMap<String, inferlog_proxy::TrafficChange>,
) -> Vec<(CaptureState, TrafficState)> {
    config
        .endpoints
        .iter()
        .map(|settings| {
            let state = saved.get(&settings.name).copied().unwrap_or(CaptureState {
                enabled: settings.capture.enabled,
                sampling_fraction: settings.capture.sampling_fraction,
            });
            let traffic = saved_traffic.get(&settings.name).cloned().unwrap_or_default().apply(settings);
            (state, traffic)
        })
        .collect()
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: draining requests and committing captured records");
}

fn prometheus() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        )?
        .set_buckets_for_metric(
            Matcher::Suffix("_tokens".into()),
            &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0, 128000.0],
        )?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe_metrics();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

async fn drain_metrics(handle: PrometheusHandle, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            _ = stop.changed() => return,
        }
    }
}

/// Every metric the gateway exports gets its `# HELP` line.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    inferlog_capture::describe_metrics();
    inferlog_proxy::describe_metrics();
    inferlog_table::describe_metrics();
    inferlog_unpack::describe_metrics();
    inferlog_monitor::describe_metrics();
    describe_gauge!("inferlog_capture_records_queued", "Records waiting in the endpoint's capture queue");
    describe_gauge!("inferlog_capture_log_bytes", "Bytes of the endpoint's write-ahead log on disk");
    describe_gauge!("inferlog_table_last_commit_age_seconds", "Seconds since the endpoint's last successful commit");
    describe_gauge!("inferlog_capture_uncommitted_records", "Records in the endpoint's write-ahead log not yet committed to its table (the commit lag, in records)");
    describe_counter!("inferlog_retention_rows_deleted_total", "Rows deleted by scheduled retention");
    describe_counter!("inferlog_retention_failures_total", "Scheduled retention runs that failed");
}

/// The instance id names this gateway's application transactions in the tables it writes.
/// Each log segment records it too: a lost `instance.id` is restored from the logs (a new
/// identity would commit their records a second time), and a log of another identity is
/// refused when it is opened.
fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty; restore it or remove it to start as a new writer", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (id, restored) = match logged_writer(&data_dir.join("wal"))? {
                Some(id) => (id, true),
                None => (uuid::Uuid::now_v7().to_string(), false),
            };
            // Made durable before any commit uses it.
            let tmp = path.with_extension("id.tmp");
            std::fs::write(&tmp, &id).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if restored {
                tracing::warn!(instance = %id, "instance.id was missing; restored the writer identity recorded in the capture logs");
            }
            Ok(id)
        }
        // Never replace an identity that merely could not be read: the log would be replayed.
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The one writer identity recorded in the endpoints' logs under `wal_dir`, if any.
fn logged_writer(wal_dir: &Path) -> anyhow::Result<Option<String>> {
    let entries = match std::fs::read_dir(wal_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", wal_dir.display())),
    };
    let mut found: Option<(String, std::path::PathBuf)> = None;
    for entry in entries {
        let dir = entry?.path();
        let writer = inferlog_capture::wal::log_writer(&dir).with_context(|| format!("capture log {}", dir.display()))?;
        match (writer, &found) {
            (Some(w), Some((f, other))) if w != *f => anyhow::bail!(
                "instance.id is missing and the capture logs {} and {} belong to two writers ({f}, {w}); restore instance.id",
                other.display(),
                dir.display()
            ),
            (Some(w), None) => found = Some((w, dir)),
            _ => {}
        }
    }
    Ok(found.map(|(w, _)| w))
}

/// Holds the data dir for this process: two gateways on one data dir would share one writer
/// identity and commit each other's LSNs. The lock goes with the process, also on `kill -9`.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("inferlog.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data dir {} is in use by another inferlog gateway (it holds {}); give each gateway its own data dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

#[derive(Clone)]
struct EndpointRuntime {
    name: String,
    capture: CaptureHandle,
    log: Arc<LogWriterHandle>,
    last_commit_ms: Arc<AtomicU64>,
}

struct MetricsState {
    handle: PrometheusHandle,
    auth: Arc<inferlog_proxy::auth::Authenticator>,
    endpoints: Vec<EndpointRuntime>,
}

async fn metrics_page(
    State(state): State<Arc<MetricsState>>,
    axum::extract::ConnectInfo(ClientAddr(peer)): axum::extract::ConnectInfo<ClientAddr>,
    headers: axum::http::HeaderMap,
) -> Result<String, inferlog_proxy::GatewayError> {
    // Metrics name every endpoint: with authentication on they need `read` on `*`.
    if state.auth.enabled() {
        state.auth.authorize(peer, &headers, Some(inferlog_proxy::auth::ANY_ENDPOINT), inferlog_proxy::auth::Role::Read).await?;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    for EndpointRuntime { name, capture, log, last_commit_ms } in &state.endpoints {
        metrics::gauge!("inferlog_capture_records_queued", "endpoint" => name.clone()).set(capture.queued() as f64);
        metrics::gauge!("inferlog_capture_log_bytes", "endpoint" => name.clone()).set(capture.log_bytes() as f64);
        metrics::gauge!("inferlog_capture_uncommitted_records", "endpoint" => name.clone()).set(log.uncommitted() as f64);
        let last = last_commit_ms.load(Ordering::Relaxed);
        if last > 0 {
            metrics::gauge!("inferlog_table_last_commit_age_seconds", "endpoint" => name.clone())
                .set(now_ms.saturating_sub(last) as f64 / 1000.0);
        }
    }
    Ok(state.handle.render())
}

/// Runs the gateway until `shutdown` resolves. `ready` receives the bound address.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let metrics_handle = prometheus()?;
    // Before anything else starts, so a busy port stops the start with its one-line error and
    // nothing running to wind down.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let open_files = inferlog_proxy::server::raise_open_files_limit()?;
    let max_connections = inferlog_proxy::server::connection_limit(open_files, config.max_connections)?;
    inferlog_proxy::server::report_open_files_limit(open_files);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    let instance = instance_id(&config.data_dir)?;
    // What each row names as the gateway that recorded it.
    let gateway_id = config.gateway_name.clone().unwrap_or_else(|| instance.clone());
    let background_runtime = Arc::new(BackgroundRuntime::new().context("cannot start the background runtime")?);
    let mut workers = Supervisor::new(background_runtime.clone()).context("cannot start the commit runtime")?;

    // Read before anything starts, so a bad certificate stops the start with its path.
    let upstream_tls = inferlog_proxy::tls::client_config(config.upstream_ca.as_deref())
        .context("tls.upstream_ca")?;
    let listener_tls = match &config.tls {
        Some(tls) => Some(inferlog_proxy::tls::server_config(&tls.cert, &tls.key).context("tls")?),
        None => None,
    };
    if !config.layout.tables_are_local() {
        let root = config.layout.tables_root();
        inferlog_table::check_store(root)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the tables at {root}: {e}"))?;
    }
    let shared = inferlog_table::shared_state(&config.layout).await.map_err(anyhow::Error::msg)?;
    for settings in &config.endpoints {
        inferlog_monitor::MonitoringFiles::import_local(&config.layout, &settings.name)
            .await
            .map_err(|e| anyhow::anyhow!("endpoint `{}`: {e}", settings.name))?;
    }
    let (state_store, traffic_store) = state_stores(&shared);
    let live = live_settings(&config, &state_store, &traffic_store).await?;
    // Administrative actions go to the `_audit` table, written in the background.
    let (audit, audit_events) = tokio::sync::mpsc::channel(10_000);
    // Events go through the text rules of every endpoint; commands run on the machine read
    // them from the data directory.
    let audit_rules = inferlog_capture::redact::audit_rules(config.endpoints.iter().map(|e| e.redact.as_slice()));
    inferlog_capture::redact::save_audit_rules(&config.data_dir, &audit_rules).context("cannot save the _audit table's redaction rules")?;
    let audit_redactor = inferlog_capture::redact::Redactor::new(&audit_rules, config.redaction_key.as_deref())
        .map_err(|e| anyhow::anyhow!("redaction of the _audit table: {e}"))?;
    // Ends once every sender is gone: the API's, the gateway's and retention's.
    workers.spawn(Stage::Audit, On::Background, "audit writer", write_audit(config.layout.clone(), audit_events, audit_redactor));
    let context = PipelineContext { config: &config, instance: &instance, gateway_id: &gateway_id, upstream_tls: &upstream_tls, audit: &audit };
    let mut runtimes = Vec::new();
    let mut endpoints = Vec::new();
    let mut writer_threads = Vec::new();
    let mut monitor_locks = std::collections::HashMap::new();
    for (settings, live) in config.endpoints.iter().zip(live) {
        let pipeline = start_pipeline(&context, settings, live, &mut workers).await?;
        monitor_locks.insert(settings.name.clone(), pipeline.monitor_lock);
        endpoints.push(pipeline.endpoint);
        runtimes.push(pipeline.runtime);
        writer_threads.push(pipeline.writer_thread);
    }

    // This gateway's report to the fleet, beside the tables.
    let report = {
        let (id, name) = (instance.clone(), gateway_id.clone());
        // Never a capture handle: the log writers end only once every handle is gone.
        let progress: Vec<_> = runtimes.iter().map(|r| (r.name.clone(), r.log.clone(), r.last_commit_ms.clone())).collect();
        move || {
            use inferlog_table::fleet::{now_ms, EndpointProgress, GatewayReport};
            let now = now_ms();
            GatewayReport {
                id: id.clone(),
                name: name.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                heartbeat_ms: now,
                endpoints: progress
                    .iter()
                    .map(|(endpoint, log, last_commit_ms)| {
                        let last = last_commit_ms.load(Ordering::Relaxed);
                        EndpointProgress {
                            endpoint: endpoint.clone(),
                            commit_lag_seconds: (last > 0).then(|| now.saturating_sub(last) as f64 / 1000.0),
                            records_in_log: log.uncommitted(),
                        }
                    })
                    .collect(),
            }
        }
    };
    // Histogram samples wait in the recorder until drained: without a scrape of /metrics they
    // would pile up for as long as the gateway serves (a few bytes per request).
    let upkeep_stop = workers.stop_signal(Stage::Fleet);
    workers.spawn(Stage::Fleet, On::Background, "metrics upkeep", drain_metrics(metrics_handle.clone(), upkeep_stop));
    let heartbeat_stop = workers.stop_signal(Stage::Fleet);
    workers.spawn(Stage::Fleet, On::Background, "fleet heartbeat", inferlog_table::fleet::heartbeat(config.layout.tables_root().clone(), report, heartbeat_stop));
    let auth = Arc::new(inferlog_proxy::auth::Authenticator::new(config.auth_enabled, TokenStore::new(shared.clone())));
    // The tokens are known before the first request; later changes arrive by polling.
    auth.poll().await.map_err(|e| anyhow::anyhow!("cannot read the tokens: {e}"))?;
    if config.auth_enabled && auth.token_count() == 0 {
        tracing::warn!("authentication is on and there are no tokens yet: create one with `inferlog token create`");
    }
    let gateway = Arc::new(Gateway::new(
        endpoints,
        GatewayOptions {
            upstream_timeout: config.upstream_timeout,
            request_body_timeout: config.request_body_timeout,
            max_request_bytes: config.max_request_bytes,
            metadata_headers: config.metadata_headers.clone(),
            audit: Some(audit.clone()),
            upstream_tls,
            // As much as the capture queue may hold: past submission, the queue bounds them.
            offload_memory_bytes: usize::try_from(config.queue_max_bytes).unwrap_or(usize::MAX),
            max_request_bytes_in_flight: config.max_request_bytes_in_flight,
        },
        state_store,
        traffic_store,
        auth.clone(),
    ));
    // Changes made through another gateway or the CLI reach this one within the interval.
    let follow_stop = workers.stop_signal(Stage::Fleet);
    workers.spawn(
        Stage::Fleet,
        On::Background,
        "control state follower",
        Gateway::follow_shared_state(Arc::downgrade(&gateway), inferlog_proxy::admin::FOLLOW_INTERVAL, follow_stop),
    );
    let metrics_state = Arc::new(MetricsState {
        handle: metrics_handle,
        auth: auth.clone(),
        endpoints: runtimes.clone(),
    });
    let api_state = Arc::new(ApiState {
        layout: config.layout.clone(),
        endpoints: config.endpoints.iter().map(|e| e.name.clone()).collect(),
        limits: inferlog_query::ReadLimits {
            max_rows: config.query_max_rows,
            max_result_bytes: config.query_max_result_bytes,
        },
        timeout: config.query_timeout,
        queries: crate::query_runner::QueryRunner::new(config.query_concurrency, config.query_memory_bytes)
            .context("cannot set up the query memory pool")?,
        checkpoint_interval: config.checkpoint_interval,
        background: background_runtime.clone(),
        monitors: config
            .endpoints
            .iter()
            .map(|e| {
                let defaults = api::MonitorDefaults {
                    window_ms: e.monitor.as_ref().map_or(3_600_000, |m| m.window_ms),
                    slices: e.monitor.as_ref().map(|m| m.slices.clone()).unwrap_or_default(),
                    lock: monitor_locks[&e.name].clone(),
                };
                (e.name.clone(), defaults)
            })
            .collect(),
        auth,
        audit,
    });
    let extra = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .with_state(metrics_state.clone())
        .merge(api::router(api_state));
    let app = inferlog_proxy::router(gateway, extra);

    let addr = listener.local_addr()?;
    let scheme = if listener_tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %addr, %scheme, gateway = %gateway_id, data_dir = %config.data_dir.display(), tables = %config.layout.tables_root(), durability = %config.durability,
        max_connections, open_files,
        endpoints = ?config.endpoints.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), "inferlog gateway ready");
    // Tools that start the gateway on port 0 read the address from this line.
    println!("inferlog listening on {scheme}://{addr}");
    if let Some(ready) = ready {
        let _ = ready.send(addr);
    }
    let (signal_tx, signal_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let mut server_signal = signal_rx.clone();
    let stopped = async move {
        let _ = server_signal.wait_for(|stop| *stop).await;
    };
    let slots = ConnectionSlots::new(max_connections);
    let limits = ConnectionLimits {
        header_read_timeout: config.header_read_timeout,
        keep_alive_timeout: config.keep_alive_timeout,
        request_body_timeout: config.request_body_timeout,
    };
    let mut server = match listener_tls {
        Some(tls) => {
            let listener = inferlog_proxy::tls::TlsListener::with_slots(listener, tls, slots)?;
            tokio::spawn(inferlog_proxy::server::serve(listener, app, limits, stopped))
        }
        None => tokio::spawn(inferlog_proxy::server::serve(inferlog_proxy::tls::PlainListener::new(listener, slots), app, limits, stopped)),
    };
    let mut drain_signal = signal_rx.clone();
    let drained = tokio::select! {
        result = &mut server => {
            result.context("gateway server panicked")?;
            true
        }
        _ = async {
            let _ = drain_signal.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => false,
    };

    // Every capture handle must go for the log writers to drain and stop. Exchanges still
    // open after the drain timeout keep theirs; their records may be lost.
    drop(metrics_state);
    drop(runtimes);
    if !drained {
        tracing::warn!(timeout_s = DRAIN_TIMEOUT.as_secs(), "requests still in flight after the drain timeout; stopping anyway");
    }
    for thread in writer_threads {
        let join = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(if drained { Duration::from_secs(60) } else { Duration::from_secs(1) }, join).await.is_err() {
            tracing::warn!("a capture log writer did not finish in time");
        }
    }
    // Then the background work, stage by stage (see supervisor).
    workers.stop().await;
    tracing::info!("stopped");
    Ok(())
}

async fn write_audit(
    layout: inferlog_core::Layout,
    mut events: tokio::sync::mpsc::Receiver<inferlog_core::record::AuditEvent>,
    redactor: inferlog_capture::redact::Redactor,
) {
    let mut batch = Vec::new();
    while events.recv_many(&mut batch, 1000).await > 0 {
        batch.iter_mut().for_each(|event| redactor.apply_to_audit(event));
        if let Err(e) = inferlog_table::audit::append(&layout, &batch).await {
            tracing::error!(error = %e, events = batch.len(), "cannot write to the _audit table");
        }
        batch.clear();
    }
}

/// One endpoint's capture pipeline, started: its queue and log writer, its committer, and
/// the work on its tables that runs under its lease.
struct Pipeline {
    endpoint: Endpoint,
    runtime: EndpointRuntime,
    writer_thread: std::thread::JoinHandle<()>,
    /// Held by scheduled and on-demand monitoring runs, so they never overlap.
    monitor_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What every pipeline of this gateway is started with.
struct PipelineContext<'a> {
    config: &'a Config,
    instance: &'a str,
    gateway_id: &'a str,
    upstream_tls: &'a rustls::ClientConfig,
    audit: &'a tokio::sync::mpsc::Sender<inferlog_core::record::AuditEvent>,
}

/// Starts `settings`' pipeline, its background work owned by `workers`.
async fn start_pipeline(
    context: &PipelineContext<'_>,
    settings: &inferlog_core::EndpointSettings,
    (state, traffic): (CaptureState, TrafficState),
    workers: &mut Supervisor,
) -> anyhow::Result<Pipeline> {
    let PipelineContext { config, instance, gateway_id, upstream_tls, audit } = *context;
    let name = settings.name.clone();
    let url = config.layout.payload(&name);
    let app_id = format!("inferlog-{instance}-{name}");
    // Which records the table already holds; if the table cannot be reached now the log's
    // own numbering carries on and the committer catches up later.
    let floor = match tokio::time::timeout(Duration::from_secs(10), async {
        let table = inferlog_table::open_or_create(&url, config.checkpoint_interval).await?;
        inferlog_table::committed_lsn(&table, &app_id).await
    })
    .await
    {
        Ok(Ok(lsn)) => lsn + 1,
        Ok(Err(e)) => {
            tracing::warn!(endpoint = %name, error = %e, "table not reachable at start; capturing to the log");
            1
        }
        Err(_) => {
            tracing::warn!(endpoint = %name, "table did not answer within 10 s; capturing to the log");
            1
        }
    };
    let log_dir = config.data_dir.join("wal").join(&name);
    let redactor = inferlog_capture::redact::Redactor::with_bodies(&settings.redact, config.redaction_key.as_deref(), settings.capture.bodies)
        .map_err(|e| anyhow::anyhow!("endpoint `{name}`: {e}"))?;
    let (capture, log, writer_thread) = start_log_writer(
        &name,
        &log_dir,
        floor,
        inferlog_capture::LogOptions {
            writer: instance.to_string(),
            durability: config.durability,
            queue_capacity: config.queue_capacity,
            queue_max_bytes: config.queue_max_bytes,
            log_max_bytes: config.log_max_bytes,
            log_min_free_bytes: config.log_min_free_bytes,
        },
        inferlog_capture::Prepare {
            gateway_id: Some(gateway_id.to_string()),
            redactor: (!redactor.is_empty()).then(|| Arc::new(redactor)),
            offloader: (settings.capture.oversize == inferlog_core::config::Oversize::Offload).then(|| inferlog_capture::offload::Offloader {
                dir: offload_dir(&config.layout, &name),
                inline_max: settings.capture.max_payload_bytes,
                fsync: config.durability == inferlog_core::Durability::Fsync,
            }),
        },
    )
    .with_context(|| format!("cannot open the capture log {}", log_dir.display()))?;
    let log = Arc::new(log);
    let last_commit_ms = Arc::new(AtomicU64::new(0));
    let committer = Committer {
        endpoint: name.clone(),
        url: url.clone(),
        app_id,
        log: log.clone(),
        // Also after `oversize` changed: the log may still hold records naming spooled bodies.
        offload_spool: (!config.layout.tables_are_local()).then(|| config.layout.offload_spool_dir(&name)),
        options: CommitterOptions {
            interval: config.commit_interval,
            checkpoint_interval: config.checkpoint_interval,
            max_batch_records: config.commit_max_records,
            max_batch_bytes: config.commit_max_bytes,
        },
        last_commit_ms: last_commit_ms.clone(),
    };
    let commit_stop = workers.stop_signal(Stage::Commit);
    workers.spawn(Stage::Commit, On::Commit, format!("committer of {name}"), committer.run(commit_stop));
    // The endpoint's singleton work (compaction, unpacking, scheduled monitoring,
    // retention) runs where its lease is held: anywhere for local tables, on one gateway
    // of a fleet sharing a tables root.
    let lease = if config.layout.tables_are_local() {
        metrics::gauge!("inferlog_lease_held", "lease" => name.clone()).set(1.0);
        LeaseFlag::always()
    } else {
        let lease = Lease::new(config.layout.tables_root(), &name, &instance, config.lease_ttl)
            .map_err(|e| anyhow::anyhow!("lease {name}: {e}"))?;
        let flag = lease.flag();
        let lease_stop = workers.stop_signal(Stage::Fleet);
        workers.spawn(Stage::Fleet, On::Background, format!("lease of {name}"), lease.run(lease_stop));
        flag
    };
    if let Some(interval) = config.compaction_interval {
        let compactor = Compactor {
            endpoint: name.clone(),
            url: url.clone(),
            options: CompactionOptions {
                interval,
                min_files: config.compaction_min_files,
                ..CompactionOptions::default()
            },
        };
        workers.spawn_periodic(Stage::Upkeep, compactor, lease.clone());
    }
    let unpack_options = UnpackOptions {
        checkpoint_interval: config.checkpoint_interval,
        feature_names: settings.feature_names.clone(),
        ..UnpackOptions::default()
    };
    if settings.unpack {
        let unpacker = Unpacker {
            layout: config.layout.clone(),
            endpoint: name.clone(),
            interval: config.unpack_interval,
            options: unpack_options.clone(),
        };
        workers.spawn_periodic(Stage::Unpack, unpacker, lease.clone());
        if let Some(interval) = config.compaction_interval {
            // The unpacked table gains a small file per pass too.
            let compactor = Compactor {
                endpoint: format!("{name}_unpacked"),
                url: config.layout.unpacked(&name),
                options: CompactionOptions {
                    interval,
                    min_files: config.compaction_min_files,
                    ..CompactionOptions::default()
                },
            };
            workers.spawn_periodic(Stage::Upkeep, compactor, lease.clone());
        }
    }
    let monitor_lock = Arc::new(tokio::sync::Mutex::new(()));
    if let Some(monitor) = &settings.monitor {
        let scheduled = ScheduledMonitor {
            layout: config.layout.clone(),
            endpoint: name.clone(),
            settings: monitor.clone(),
            unpack_first: (!settings.unpack).then(|| unpack_options.clone()),
            // An exchange received in a window is recorded when its response ends (up to the
            // upstream timeout later), then reaches the unpacked table within a commit and
            // an unpack interval; a second more for the work itself.
            settle: config.upstream_timeout + config.commit_interval + config.unpack_interval + Duration::from_secs(1),
            lock: monitor_lock.clone(),
            webhook_tls: Some(upstream_tls.clone()),
        };
        workers.spawn_periodic(Stage::Upkeep, scheduled, lease.clone());
    }
    if let Some(retention) = &settings.retention {
        let scheduled = crate::retention::ScheduledRetention {
            layout: config.layout.clone(),
            endpoint: name.clone(),
            settings: retention.clone(),
            audit: audit.clone(),
        };
        workers.spawn_periodic(Stage::Upkeep, scheduled, lease.clone());
    }
    Ok(Pipeline {
        endpoint: Endpoint::new(settings.clone(), state, traffic, Some(capture.clone())),
        runtime: EndpointRuntime { name, capture, log, last_commit_ms },
        writer_thread,
        monitor_lock,
    })
}

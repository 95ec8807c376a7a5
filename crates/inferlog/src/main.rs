//! `inferlog`: the capture gateway, SQL over its tables, and a demo.

mod api;
mod demo;
mod iris;
mod query_runner;
mod retention;
mod serve;
mod supervisor;
mod synth;

use anyhow::Context;
use inferlog_table::maintenance::Purge;
use clap::{Parser, Subcommand};
use inferlog_core::Durability;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "inferlog", version, about = "Record every request and response of your model servers into a Delta Lake inference table")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in front of one or more model servers.
    Serve(ServeArgs),
    /// The endpoints: their upstreams and capture and traffic settings (the config's, with the
    /// changes saved through the admin API on top).
    Endpoints {
        /// TOML config file, as for serve.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "DIR", help = DATA_DIR_HELP)]
        data_dir: Option<PathBuf>,
        /// NAME=URL, as for serve; repeatable.
        #[arg(long = "endpoint", value_parser = parse_endpoint)]
        endpoints: Vec<(String, String)>,
        /// Print them as JSON (the body of GET /admin/endpoints) instead of one line each.
        #[arg(long)]
        json: bool,
    },
    /// Run SQL over the tables of a data directory.
    Query {
        #[command(flatten)]
        data: DataDirArgs,
        /// table, csv, json (one object per line) or parquet (with --output); default: table,
        /// or the format --output's extension names.
        #[arg(long)]
        format: Option<inferlog_query::OutputFormat>,
        /// Write the result to FILE (.csv, .json, .parquet, .txt) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Read the tables as of a version number or a UTC time (Delta time travel).
        #[arg(long, value_name = "VERSION|TIMESTAMP")]
        as_of: Option<inferlog_query::AsOf>,
        /// e.g. "SELECT status_code, count(*) FROM inference_table('iris', since => '2026-11-20') GROUP BY 1"
        sql: String,
    },
    /// Unpack new payloads of an endpoint into {endpoint}_unpacked: one typed row per instance.
    Unpack {
        /// Endpoint name (reads {endpoint}_payload).
        endpoint: String,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Ground-truth labels for an endpoint's predictions.
    Labels {
        #[command(subcommand)]
        command: LabelsCommand,
    },
    /// Record what an endpoint's data looked like when all was well: statistics.json,
    /// constraints.json and reference.parquet under {data_dir}/monitoring/{endpoint}/ (with
    /// tables on an object store: {tables_uri}/_inferlog/monitoring/{endpoint}/).
    Baseline {
        /// Endpoint name.
        endpoint: String,
        /// Training data: a csv or parquet file.
        #[arg(long, value_name = "FILE", conflicts_with = "from_table", required_unless_present = "from_table")]
        from: Option<PathBuf>,
        /// Use a window of the endpoint's own unpacked table instead.
        #[arg(long)]
        from_table: bool,
        /// Start of the window (with --from-table), UTC.
        #[arg(long, value_name = "TIME", requires = "from_table")]
        since: Option<String>,
        /// End of the window, exclusive (with --from-table), UTC.
        #[arg(long, value_name = "TIME", requires = "from_table")]
        until: Option<String>,
        /// The file's column holding the ground truth.
        #[arg(long, value_name = "COLUMN")]
        label: Option<String>,
        /// The file's column holding the model's output.
        #[arg(long, value_name = "COLUMN")]
        prediction: Option<String>,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Data quality, drift and model quality of an endpoint per time window (and slice), into
    /// {endpoint}_profile_metrics, {endpoint}_drift_metrics and {endpoint}_violations.
    Monitor {
        /// Endpoint name.
        endpoint: String,
        /// Window length: 30m, 1h, 1d, ...
        #[arg(long, default_value = "1h", value_parser = parse_window)]
        window: i64,
        /// Start of the first window, UTC (default: one window before --until).
        #[arg(long, value_name = "TIME", conflicts_with = "backfill")]
        since: Option<String>,
        /// Recompute every window from the table's first row on.
        #[arg(long)]
        backfill: bool,
        /// End of the last window, exclusive, UTC (default: the end of the current window).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// A SQL expression over the unpacked table; each of its values is monitored on its
        /// own too (repeatable), e.g. --slice model_version.
        #[arg(long = "slice", value_name = "EXPR")]
        slices: Vec<String>,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Write one self-contained HTML page of an endpoint's monitoring: reference vs current
    /// distributions, drift and quality over time, violations.
    Report {
        /// Endpoint name.
        endpoint: String,
        #[arg(long, value_name = "FILE", default_value = "report.html")]
        output: PathBuf,
        /// Start of the current period, UTC (default: one day before --until).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// End of the current period, exclusive, UTC (default: now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Delete an endpoint's rows older than a duration from all its tables, and their files.
    Retention {
        /// Endpoint name.
        endpoint: String,
        /// 30d, 12h, ...
        #[arg(long, value_parser = parse_window)]
        older_than: i64,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// The gateways sharing the tables root (seen in the last minute) and who holds each lease.
    Fleet {
        #[command(flatten)]
        data: DataDirArgs,
        /// Print it as JSON (the body of GET /admin/fleet).
        #[arg(long)]
        json: bool,
    },
    /// Compact an endpoint's payload and unpacked tables now (every date partition with more
    /// than one file) and remove the files they no longer use.
    Optimize {
        /// Endpoint name.
        endpoint: String,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Remove one caller's (or one exchange's) rows from all of an endpoint's tables, and their
    /// files (right to erasure).
    Erase {
        /// Endpoint name.
        endpoint: String,
        /// Every exchange whose caller sent this x-client-request-id.
        #[arg(long, required_unless_present = "request_id")]
        client_request_id: Option<String>,
        /// The one exchange with this request id (the gateway's x-request-id).
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// API tokens: who may invoke endpoints, read their tables and change their settings.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Start a built-in iris model and the gateway, send traffic, and show what was recorded.
    Demo {
        #[arg(long, default_value = "./inferlog-demo-data")]
        data_dir: PathBuf,
        /// How many requests to send.
        #[arg(long, default_value_t = 300)]
        requests: usize,
    },
    /// Fill an endpoint's payload table with synthetic iris exchanges (for trying queries and
    /// measuring lookups at scale).
    #[command(hide = true)]
    Generate {
        /// Endpoint name.
        endpoint: String,
        #[command(flatten)]
        data: DataDirArgs,
        #[arg(long)]
        rows: u64,
        /// Spread the rows over this many days, ending now.
        #[arg(long, default_value_t = 3)]
        days: u32,
        #[arg(long, default_value_t = 500_000)]
        rows_per_commit: usize,
    },
    /// Serve the built-in iris classifier (MLflow scoring protocol) on its own.
    IrisModel {
        #[arg(long, default_value = "127.0.0.1:5001")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token and print its secret (the last line of the output; it is not stored).
    Create {
        #[command(flatten)]
        data: DataDirArgs,
        /// The token's name.
        #[arg(long)]
        name: String,
        /// invoke, read or owner (owner implies the other two).
        #[arg(long)]
        role: inferlog_proxy::auth::Role,
        /// The endpoint the role is on, or `*` for all.
        #[arg(long, default_value = inferlog_proxy::auth::ANY_ENDPOINT)]
        endpoint: String,
    },
    /// The tokens and their grants (never their secrets).
    List {
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Give a token a role on an endpoint (or `*`), replacing its role there.
    Grant {
        #[command(flatten)]
        data: DataDirArgs,
        /// The token's name.
        #[arg(long)]
        name: String,
        /// invoke, read or owner (owner implies the other two).
        #[arg(long)]
        role: inferlog_proxy::auth::Role,
        /// The endpoint the role is on, or `*` for all.
        #[arg(long)]
        endpoint: String,
    },
    /// Take a token's role on an endpoint (or `*`) away.
    Ungrant {
        #[command(flatten)]
        data: DataDirArgs,
        /// The token's name.
        #[arg(long)]
        name: String,
        /// The endpoint, or `*`.
        #[arg(long)]
        endpoint: String,
    },
    /// Remove a token; a running gateway refuses it within a second.
    Revoke {
        #[command(flatten)]
        data: DataDirArgs,
        /// The token's name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum LabelsCommand {
    /// Merge labels from a csv, parquet or json-lines file into {endpoint}_labels; a key
    /// imported again gets its new label.
    Import {
        /// Endpoint name (writes {endpoint}_labels).
        endpoint: String,
        /// The labels: a .csv, .parquet or .json/.jsonl (one object per line) file.
        file: PathBuf,
        /// Which id the file's key column holds (the column has the same name).
        #[arg(long, default_value = "request_id", value_name = "request_id|client_request_id")]
        key: inferlog_labels::KeyKind,
        /// The column holding the label.
        #[arg(long, value_name = "COLUMN")]
        label: String,
        /// The column holding the instance's row index within its request (default: 0).
        #[arg(long, value_name = "COLUMN")]
        row_index: Option<String>,
        #[command(flatten)]
        data: DataDirArgs,
    },
}

/// Help of every `--data-dir`: clap cannot show a default for a flag whose absence must stay
/// visible (the environment and the config file come next).
const DATA_DIR_HELP: &str =
    "Where the tables, logs and state live [default: $INFERLOG_DATA_DIR, else the config file's data_dir, else ./inferlog-data]";

/// Where a command finds its data: `--data-dir`, `INFERLOG_DATA_DIR`, or the `data_dir` of a
/// config file, as `serve` resolves it.
#[derive(clap::Args, Clone, Default)]
struct DataDirArgs {
    #[arg(long, value_name = "DIR", help = DATA_DIR_HELP)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_name = "URI", help = TABLES_URI_HELP)]
    tables_uri: Option<String>,
    /// The gateway's TOML config file, read for its data_dir and tables_uri (by unpack also for the endpoint's feature_names).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl DataDirArgs {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        let env = std::env::var_os(inferlog_core::config::DATA_DIR_ENV);
        Ok(inferlog_core::config::resolve_data_dir(self.data_dir.as_deref(), env, self.config.as_deref())?)
    }

    /// The data dir and the tables root, each found as `serve` finds it.
    fn layout(&self) -> anyhow::Result<inferlog_core::Layout> {
        let env = std::env::var(inferlog_core::layout::TABLES_URI_ENV).ok();
        let tables_uri = inferlog_core::config::resolve_tables_uri(self.tables_uri.as_deref(), env, self.config.as_deref())?;
        inferlog_core::Layout::new(&self.resolve()?, tables_uri.as_deref()).context("--tables-uri")
    }
}

const TABLES_URI_HELP: &str = "Where the tables live: a path, file:///…, s3://bucket/prefix, gs://…, az://… [default: $INFERLOG_TABLES_URI, else the config file's tables_uri, else DATA_DIR/tables]";

#[derive(clap::Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file; flags and INFERLOG_* variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    #[arg(long, value_name = "DIR", help = DATA_DIR_HELP)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_name = "URI", help = TABLES_URI_HELP)]
    tables_uri: Option<String>,
    /// NAME=URL of an upstream model server; repeatable.
    #[arg(long = "endpoint", value_parser = parse_endpoint)]
    endpoints: Vec<(String, String)>,
    /// async (default), sync or fsync.
    #[arg(long)]
    durability: Option<Durability>,
}

/// A `--since`/`--until` flag as Unix milliseconds.
fn utc_millis(time: Option<String>) -> anyhow::Result<Option<i64>> {
    time.map(|t| inferlog_query::parse_utc_time(&t).map(|t| t.timestamp_millis()))
        .transpose()
        .map_err(anyhow::Error::msg)
}

/// `90s`, `30m`, `1h`, `1d` → milliseconds.
fn parse_window(s: &str) -> Result<i64, String> {
    inferlog_core::config::parse_duration_ms(s)
}

fn parse_endpoint(s: &str) -> Result<(String, String), String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=URL"))?;
    Ok((name.to_string(), url.to_string()))
}

fn print_unpack_report(endpoint: &str, report: &inferlog_unpack::UnpackReport) {
    let Some((from, to)) = report.source_versions else {
        println!("{endpoint}_unpacked is up to date with {endpoint}_payload");
        return;
    };
    println!(
        "unpacked {} requests into {} rows of {endpoint}_unpacked (payload table versions {from}..={to}{})",
        report.requests,
        report.rows,
        if report.full_scan { ", compared by request id" } else { "" }
    );
    if report.errors > 0 {
        println!(
            "{} requests could not be fully unpacked; see: inferlog query \"SELECT request_id, unpack_error FROM {endpoint}_unpacked WHERE unpack_error IS NOT NULL\"",
            report.errors
        );
    }
    if !report.columns_added.is_empty() {
        println!("new columns: {}", report.columns_added.join(", "));
    }
    if !report.columns_widened.is_empty() {
        println!("widened to double: {}", report.columns_widened.join(", "));
    }
}

/// Records a command's administrative action in the `_audit` table, as `cli:{user}`.
async fn audit_cli(layout: &inferlog_core::Layout, action: &str, endpoint: Option<&str>, detail: String, result: Result<(), String>) -> anyhow::Result<()> {
    let who = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let mut event = inferlog_core::record::AuditEvent::now(&who, action, endpoint, detail, result);
    // The rules the gateway saved: a token's name is redacted here as in the gateway's events.
    let key = std::env::var(format!("{}REDACTION_KEY", inferlog_core::config::ENV_PREFIX)).ok();
    inferlog_capture::redact::load_audit_redactor(layout.data_dir(), key.as_deref()).map_err(anyhow::Error::msg)?.apply_to_audit(&mut event);
    inferlog_table::audit::append(layout, &[event]).await.context("cannot write the _audit table")?;
    Ok(())
}

async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    use inferlog_proxy::auth::Grant;
    match command {
        TokenCommand::Create { data, name, role, endpoint } => {
            let layout = data.layout()?;
            check_grant_target(&endpoint)?;
            let created = tokens(&layout).await?.create(&name, vec![Grant { endpoint: endpoint.clone(), role }]).await;
            let detail = format!("name={name} role={role}");
            audit_cli(&layout, "token.create", Some(&endpoint), detail, created.as_ref().map(|_| ()).map_err(Clone::clone)).await?;
            let secret = created.map_err(anyhow::Error::msg)?;
            println!("token `{name}` holds `{role}` on `{endpoint}`; its secret (shown once, send it as Authorization: Bearer ...):");
            println!("{secret}");
        }
        TokenCommand::List { data } => {
            let layout = data.layout()?;
            for t in tokens(&layout).await?.list().await.map_err(anyhow::Error::msg)? {
                let grants: Vec<String> = t.grants.iter().map(|g| format!("{} on {}", g.role, g.endpoint)).collect();
                println!("{}\t{}\tcreated {}", t.name, grants.join(", "), t.created_at);
            }
        }
        TokenCommand::Grant { data, name, role, endpoint } => {
            let layout = data.layout()?;
            check_grant_target(&endpoint)?;
            let result = match tokens(&layout).await?.grant(&name, &endpoint, role).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(format!("no token named `{name}`")),
                Err(e) => Err(e),
            };
            audit_cli(&layout, "grant", Some(&endpoint), format!("name={name} role={role}"), result.clone()).await?;
            result.map_err(anyhow::Error::msg)?;
            println!("token `{name}` holds `{role}` on `{endpoint}`");
        }
        TokenCommand::Ungrant { data, name, endpoint } => {
            let layout = data.layout()?;
            let result = match tokens(&layout).await?.ungrant(&name, &endpoint).await {
                Ok(Some(true)) => Ok(()),
                Ok(Some(false)) => Err(format!("token `{name}` holds no role on `{endpoint}`")),
                Ok(None) => Err(format!("no token named `{name}`")),
                Err(e) => Err(e),
            };
            audit_cli(&layout, "ungrant", Some(&endpoint), format!("name={name}"), result.clone()).await?;
            result.map_err(anyhow::Error::msg)?;
            println!("token `{name}` holds no role on `{endpoint}` now");
        }
        TokenCommand::Revoke { data, name } => {
            let layout = data.layout()?;
            let revoked = tokens(&layout).await?.revoke(&name).await.map_err(anyhow::Error::msg)?;
            let result = if revoked { Ok(()) } else { Err(format!("no token named `{name}`")) };
            audit_cli(&layout, "token.revoke", None, format!("name={name}"), result.clone()).await?;
            result.map_err(anyhow::Error::msg)?;
            println!("token `{name}` revoked");
        }
    }
    Ok(())
}

/// The tokens every gateway on these tables reads.
async fn tokens(layout: &inferlog_core::Layout) -> anyhow::Result<inferlog_proxy::auth::TokenStore> {
    let shared = inferlog_table::shared_state(layout).await.map_err(anyhow::Error::msg)?;
    Ok(inferlog_proxy::auth::TokenStore::new(shared))
}

fn check_grant_target(endpoint: &str) -> anyhow::Result<()> {
    if endpoint != inferlog_proxy::auth::ANY_ENDPOINT && !inferlog_core::is_valid_endpoint_name(endpoint) {
        anyhow::bail!("`{endpoint}` is not an endpoint name or `*`");
    }
    Ok(())
}

/// `iris  capture on, sampling 0.5  default=http://…/ weight 1  shadow next=http://…/ 0.1`
fn endpoint_line(view: &inferlog_proxy::EndpointView) -> String {
    let capture = if view.capture.enabled { "on" } else { "off" };
    let targets: Vec<String> = view
        .targets
        .iter()
        .map(|t| format!("{}={} weight {}", t.name, t.upstream, view.traffic.weights.get(&t.name).copied().unwrap_or(0)))
        .collect();
    let mut line = format!("{}\tcapture {capture}, sampling {}\t{}", view.name, view.capture.sampling_fraction, targets.join(", "));
    if let Some(shadow) = &view.shadow {
        line.push_str(&format!("\tshadow {}={} {}", shadow.name, shadow.upstream, view.traffic.shadow_fraction));
    }
    line
}

fn print_deleted(deleted: &[inferlog_table::maintenance::Deleted]) {
    if deleted.is_empty() {
        println!("no tables to delete from");
    }
    for d in deleted {
        println!("{}: {} rows deleted, {} files removed", d.table, d.rows, d.files_removed);
    }
}

/// Inferlog's own events from info, its dependencies' (Delta's every commit and snapshot load,
/// DataFusion, hyper) from warn: INFERLOG_LOG replaces this. Delta's transaction warns whenever
/// another writer committed first, which in a fleet is every other commit and nothing wrong
/// (`inferlog_table_commit_conflicts_total` counts them); its real conflicts are errors.
const DEFAULT_LOG_FILTER: &str = "warn,inferlog=info,deltalake_core::kernel::transaction=error";

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFERLOG_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour codes only for a terminal, never into a redirected log file; NO_COLOR (any
    // non-empty value) turns them off there too.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    if std::env::var("INFERLOG_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Keeps one caught panic of a dependency out of the output. object_store's `BufWriter::abort`
/// panics ("Already shut down") when asked to abort an upload whose completion already failed,
/// as on a full disk; delta-rs calls it under `catch_unwind`, logs its own warning and returns
/// the write error, which the committer retries. The default hook would still print that panic
/// with a backtrace. Every other panic is printed as the default hook prints it.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let from_buffered_upload = info
            .location()
            .is_some_and(|l| l.file().contains("object_store") && l.file().ends_with("buffered.rs"));
        let already_shut_down = info.payload().downcast_ref::<&str>().is_some_and(|m| *m == "Already shut down");
        if from_buffered_upload && already_shut_down {
            tracing::debug!("an upload whose completion failed cannot be aborted; the write error is retried");
            return;
        }
        default(info)
    }));
}

/// mimalloc serves the gateway's allocations: against glibc's malloc it gave 1.2-1.3x the
/// capture throughput at 350-byte bodies, and with freed memory purged at once (not after
/// mimalloc's default 10 ms) the same peak RSS under 16 KiB bodies (bench/RESULTS.md,
/// bench/MEMORY.md). `MIMALLOC_PURGE_DELAY` in the environment still decides.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc.h (the same position in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn tune_allocators() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it allows at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    limit_malloc_arenas();
}

/// What still allocates through glibc (the C code of TLS and compression libraries) gets two
/// arenas: glibc gives threads arenas of their own (up to eight per core), and memory freed in
/// one is not reused by another, so RSS grew to two or three times the live heap
/// (bench/MEMORY.md, before mimalloc). A `MALLOC_ARENA_MAX` in the environment still decides.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; called before other threads start.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

fn main() -> std::process::ExitCode {
    tune_allocators();
    let cli = Cli::parse();
    install_panic_hook();
    // Payloads, logs, side files, state and tables are for the data dir's owner only: every
    // file the process creates is 0600 and every folder 0700 (delta-rs creates the table files
    // with default modes, so this is set for the whole process). Output files the user names
    // (`query --output`, `report --output`) keep the user's umask.
    if !matches!(cli.command, Command::Query { .. } | Command::Report { .. } | Command::IrisModel { .. }) {
        // SAFETY: umask only swaps the process's file mode mask; no memory is involved.
        unsafe { libc::umask(0o077) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                init_logging();
                let config = serve::load_config(&args)?;
                serve::run(config, serve::shutdown_signal(), None).await
            }
            Command::Endpoints { config, data_dir, endpoints, json } => {
                let config = serve::load_config(&ServeArgs { config, data_dir, endpoints, ..ServeArgs::default() })?;
                let shared = inferlog_table::shared_state(&config.layout).await.map_err(anyhow::Error::msg)?;
                let (capture, traffic) = serve::state_stores(&shared);
                // The command also checks a config where its store cannot be reached: it says
                // so and shows the config's own settings.
                let live = match serve::live_settings(&config, &capture, &traffic).await {
                    Ok(live) => live,
                    Err(e) => {
                        eprintln!("inferlog: showing the config's settings without the changes saved through the admin API: {e:#}");
                        serve::settings_with_changes(&config, &Default::default(), &Default::default())
                    }
                };
                let views: Vec<inferlog_proxy::EndpointView> = config
                    .endpoints
                    .iter()
                    .zip(live)
                    .map(|(settings, (capture, traffic))| inferlog_proxy::EndpointView::new(settings, capture, traffic))
                    .collect();
                if json {
                    println!("{}", serde_json::to_string_pretty(&views)?);
                } else {
                    for view in &views {
                        println!("{}", endpoint_line(view));
                    }
                }
                Ok(())
            }
            Command::Query { data, format, output, as_of, sql } => {
                let layout = data.layout()?;
                let ctx = inferlog_query::session(&layout, as_of).await?;
                let result = inferlog_query::run_sql(&ctx, &sql).await?;
                if let Some(path) = output {
                    inferlog_query::write_output(&result, &path, format)?;
                    eprintln!("{} rows written to {}", inferlog_query::row_count(&result.batches), path.display());
                    return Ok(());
                }
                let format = format.unwrap_or(inferlog_query::OutputFormat::Table);
                print!("{}", inferlog_query::format(&result.batches, format)?);
                if format == inferlog_query::OutputFormat::Table {
                    println!();
                }
                Ok(())
            }
            Command::Unpack { endpoint, data } => {
                let layout = data.layout()?;
                let mut options = inferlog_unpack::UnpackOptions::default();
                // The endpoint's feature names, as the gateway's unpacker uses them.
                if let Some(config) = &data.config {
                    let config = serve::load_config(&ServeArgs { config: Some(config.clone()), ..ServeArgs::default() })?;
                    if let Some(settings) = config.endpoints.iter().find(|e| e.name == endpoint) {
                        options.feature_names = settings.feature_names.clone();
                    }
                }
                let report = inferlog_unpack::unpack_once(&layout, &endpoint, &options).await?;
                print_unpack_report(&endpoint, &report);
                Ok(())
            }
            Command::Labels {
                command: LabelsCommand::Import { endpoint, file, key, label, row_index, data },
            } => {
                let layout = data.layout()?;
                let source = file.display().to_string();
                let imported = async {
                    let labels = inferlog_labels::read_file(&file, key, &label, row_index.as_deref()).await?;
                    inferlog_labels::import(&layout, &endpoint, labels, &source, 100).await
                }
                .await;
                let result = imported.as_ref().map(|_| ()).map_err(|e| e.to_string());
                audit_cli(&layout, "labels.import", Some(&endpoint), source.clone(), result).await?;
                let report = imported?;
                println!(
                    "{} labels merged into {endpoint}_labels ({} replaced an earlier label; table version {})",
                    report.labels, report.replaced, report.version
                );
                Ok(())
            }
            Command::Generate { endpoint, data, rows, days, rows_per_commit } => {
                let layout = data.layout()?;
                let data_dir = layout.data_dir();
                synth::generate(synth::GenerateArgs {
                    data_dir: &data_dir,
                    endpoint: &endpoint,
                    rows,
                    days,
                    rows_per_commit,
                })
                .await
            }
            Command::Baseline { endpoint, from, from_table: _, since, until, label, prediction, data } => {
                let layout = data.layout()?;
                let source = match from {
                    Some(path) => inferlog_monitor::BaselineSource::File(path),
                    None => inferlog_monitor::BaselineSource::Table { since_ms: utc_millis(since)?, until_ms: utc_millis(until)? },
                };
                let options = inferlog_monitor::BaselineOptions { label, prediction };
                let report = inferlog_monitor::build_baseline(&layout, &endpoint, &source, &options).await?;
                println!(
                    "baseline of {} columns from {} rows written to {}",
                    report.statistics.features.len(),
                    report.rows,
                    report.location
                );
                for f in &report.constraints.features {
                    println!("  {:<24} {} {}, drift by {} at {}", f.name, f.role, f.inferred_type, f.drift.metric, f.drift.threshold);
                }
                Ok(())
            }
            Command::Monitor { endpoint, window, since, until, backfill, slices, data } => {
                let layout = data.layout()?;
                let options = inferlog_monitor::MonitorOptions {
                    window_ms: window,
                    since_ms: utc_millis(since)?,
                    until_ms: utc_millis(until)?,
                    slices,
                    backfill,
                };
                let report = inferlog_monitor::run_monitor(&layout, &endpoint, &options).await?;
                let drifted = report.drift.iter().filter(|d| d.drifted && d.compared_to == "baseline").count();
                // Every metric of every slice counts as drifted here; a violation is raised only
                // by each column's own drift metric (constraints.json), hence two numbers.
                println!(
                    "{} windows: {} profile metrics, {} drift metrics ({drifted} over their threshold against the baseline, \
                     counting every metric and slice), {} violations (each column's own drift metric, quality and schema checks)",
                    report.windows,
                    report.profile.len(),
                    report.drift.len(),
                    report.violations.len()
                );
                for v in report.violations.iter().take(20) {
                    let slice = match (&v.slice_key, &v.slice_value) {
                        (Some(key), Some(value)) => format!(" [{key}={value}]"),
                        (Some(key), None) => format!(" [{key} is null]"),
                        _ => String::new(),
                    };
                    println!("  {} {}{slice}: {}", v.check, v.column_name.as_deref().unwrap_or("-"), v.description);
                }
                Ok(())
            }
            Command::Report { endpoint, output, since, until, data } => {
                let layout = data.layout()?;
                let until_ms = utc_millis(until)?.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                let since_ms = utc_millis(since)?.unwrap_or(until_ms - 86_400_000);
                let options = inferlog_monitor::ReportOptions { since_ms, until_ms };
                let data = inferlog_monitor::build_report(&layout, &endpoint, &options).await?;
                std::fs::write(&output, inferlog_monitor::report_html::render(&data))
                    .with_context(|| format!("cannot write {}", output.display()))?;
                println!(
                    "report of {endpoint} ({} columns, {} drift and {} quality charts, {} violations) written to {}",
                    data.features.len(),
                    data.drift_series.len(),
                    data.quality_series.len(),
                    data.violations.len(),
                    output.display()
                );
                Ok(())
            }
            Command::Token { command } => token_command(command).await,
            Command::Fleet { data, json } => {
                let layout = data.layout()?;
                let fleet = inferlog_table::fleet::read_fleet(layout.tables_root())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot read the fleet at {}: {e}", layout.tables_root()))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&fleet)?);
                    return Ok(());
                }
                println!("gateway\tid\tversion\theartbeat_s_ago\tendpoint\tcommit_lag_s\trecords_in_log");
                for g in &fleet.gateways {
                    for e in &g.report.endpoints {
                        let lag = e.commit_lag_seconds.map_or_else(|| "-".to_string(), |l| format!("{l:.1}"));
                        println!("{}\t{}\t{}\t{:.1}\t{}\t{lag}\t{}", g.report.name, g.report.id, g.report.version, g.seconds_since_heartbeat, e.endpoint, e.records_in_log);
                    }
                }
                println!("\nlease\tholder\texpires_in_s");
                for l in &fleet.leases {
                    println!("{}\t{}\t{:.1}", l.lease, l.holder.as_deref().unwrap_or("-"), l.expires_in_seconds);
                }
                Ok(())
            }
            Command::Optimize { endpoint, data } => {
                let layout = data.layout()?;
                let options = inferlog_table::CompactionOptions {
                    min_files: 1,
                    vacuum_retention: std::time::Duration::ZERO,
                    ..Default::default()
                };
                let mut lines = Vec::new();
                let mut failure = None;
                for table in [format!("{endpoint}_payload"), format!("{endpoint}_unpacked")] {
                    let url = layout.table(&table);
                    if !inferlog_table::exists(&url).await? {
                        continue;
                    }
                    match inferlog_table::compact_once(&url, &options).await {
                        Ok(r) => lines.push(format!("{table}: {} files merged into {}, {} removed from disk", r.files_removed, r.files_added, r.files_vacuumed)),
                        Err(e) => failure = Some(format!("{table}: {e}")),
                    }
                }
                let result = failure.clone().map_or(Ok(()), Err);
                audit_cli(&layout, "optimize", Some(&endpoint), lines.join("; "), result).await?;
                if let Some(f) = failure {
                    anyhow::bail!(f);
                }
                if lines.is_empty() {
                    println!("no tables to optimize");
                }
                for line in lines {
                    println!("{line}");
                }
                Ok(())
            }
            Command::Retention { endpoint, older_than, data } => {
                let layout = data.layout()?;
                let cutoff = chrono::Utc::now().timestamp_millis() - older_than;
                let predicates = inferlog_table::maintenance::retention_predicates(&endpoint, cutoff);
                let result = inferlog_table::maintenance::delete_where(&layout, &predicates, Purge::AfterReaders).await;
                let detail = format!("older than {} ms (before {cutoff})", older_than);
                audit_cli(&layout, "retention", Some(&endpoint), detail, result.as_ref().map(|_| ()).map_err(|e| e.to_string())).await?;
                print_deleted(&result?);
                Ok(())
            }
            Command::Erase { endpoint, client_request_id, request_id, data } => {
                let layout = data.layout()?;
                // The exchanges' request ids, so labels keyed by them and shadows go too.
                let mut ids: Vec<String> = request_id.clone().into_iter().collect();
                if let Some(client) = &client_request_id {
                    let sql = format!(
                        "SELECT request_id FROM \"{endpoint}_payload\" WHERE client_request_id = '{}'",
                        client.replace('\'', "''")
                    );
                    // No payload table: nothing to find. Any other failure stops the erasure,
                    // which would otherwise leave the labels keyed by these request ids.
                    if inferlog_table::exists(&layout.payload(&endpoint)).await? {
                        let ctx = inferlog_query::session(&layout, None).await?;
                        let result = inferlog_query::run_sql(&ctx, &sql).await?;
                        let text = inferlog_query::format(&result.batches, inferlog_query::OutputFormat::Json)?;
                        ids.extend(text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["request_id"].as_str().map(str::to_string)));
                    }
                }
                let predicates = inferlog_table::maintenance::erasure_predicates(&endpoint, client_request_id.as_deref(), &ids);
                let result = inferlog_table::maintenance::delete_where(&layout, &predicates, Purge::Now).await;
                let detail = match (&client_request_id, &request_id) {
                    (Some(c), _) => format!("client_request_id={c}"),
                    (None, Some(r)) => format!("request_id={r}"),
                    _ => String::new(),
                };
                audit_cli(&layout, "erase", Some(&endpoint), detail, result.as_ref().map(|_| ()).map_err(|e| e.to_string())).await?;
                print_deleted(&result?);
                Ok(())
            }
            Command::Demo { data_dir, requests } => demo::run(&data_dir, requests).await,
            Command::IrisModel { listen } => {
                init_logging();
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                // The bound address, so `--listen 127.0.0.1:0` tells the port it got.
                let listen = listener.local_addr()?;
                tracing::info!(%listen, "iris model serving POST /invocations");
                iris::serve(listener, serve::shutdown_signal()).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, no backtrace.
            eprintln!("error: {}", one_line_error(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: many errors' messages already end
/// with their source's text, which `{:#}` would print a second time.
fn one_line_error(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let missing = std::fs::read("/nonexistent/inferlog.toml").unwrap_err();
        let config = inferlog_core::ConfigError::Read { path: "/nonexistent/inferlog.toml".into(), source: missing };
        let line = one_line_error(&anyhow::Error::new(config).context("cannot start"));
        assert_eq!(line, "cannot start: cannot read config file /nonexistent/inferlog.toml: No such file or directory (os error 2)");
        let plain = anyhow::Error::msg("inner").context("outer");
        assert_eq!(one_line_error(&plain), "outer: inner");
    }
}

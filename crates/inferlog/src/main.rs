//! `inferlog`: the capture gateway, SQL over its tables, and a demo.

mod api;
mod demo;
mod iris;
mod retention;
mod serve;
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
    /// Run SQL over the tables of a data directory.
    Query {
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
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
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Ground-truth labels for an endpoint's predictions.
    Labels {
        #[command(subcommand)]
        command: LabelsCommand,
    },
    /// Record what an endpoint's data looked like when all was well: statistics.json,
    /// constraints.json and reference.parquet under {data_dir}/monitoring/{endpoint}/.
    Baseline {
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
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Data quality, drift and model quality of an endpoint per time window (and slice), into
    /// {endpoint}_profile_metrics, {endpoint}_drift_metrics and {endpoint}_violations.
    Monitor {
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
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Write one self-contained HTML page of an endpoint's monitoring: reference vs current
    /// distributions, drift and quality over time, violations.
    Report {
        endpoint: String,
        #[arg(long, value_name = "FILE", default_value = "report.html")]
        output: PathBuf,
        /// Start of the current period, UTC (default: one day before --until).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// End of the current period, exclusive, UTC (default: now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Delete an endpoint's rows older than a duration from all its tables, and their files.
    Retention {
        endpoint: String,
        /// 30d, 12h, ...
        #[arg(long, value_parser = parse_window)]
        older_than: i64,
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Compact an endpoint's payload and unpacked tables now (every date partition with more
    /// than one file) and remove the files they no longer use.
    Optimize {
        endpoint: String,
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Remove one caller's (or one exchange's) rows from all of an endpoint's tables, and their
    /// files (right to erasure).
    Erase {
        endpoint: String,
        #[arg(long, required_unless_present = "request_id")]
        client_request_id: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
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
        endpoint: String,
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
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
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
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
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Give a token a role on an endpoint (or `*`), replacing its role there.
    Grant {
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: inferlog_proxy::auth::Role,
        #[arg(long)]
        endpoint: String,
    },
    /// Take a token's role on an endpoint (or `*`) away.
    Ungrant {
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        endpoint: String,
    },
    /// Remove a token; a running gateway refuses it within a second.
    Revoke {
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum LabelsCommand {
    /// Merge labels from a csv, parquet or json-lines file into {endpoint}_labels; a key
    /// imported again gets its new label.
    Import {
        endpoint: String,
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
        #[arg(long, default_value = inferlog_core::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file; flags and INFERLOG_* variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
async fn audit_cli(data_dir: &std::path::Path, action: &str, endpoint: Option<&str>, detail: String, result: Result<(), String>) -> anyhow::Result<()> {
    let who = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let mut event = inferlog_core::record::AuditEvent::now(&who, action, endpoint, detail, result);
    // The rules the gateway saved: a token's name is redacted here as in the gateway's events.
    let key = std::env::var(format!("{}REDACTION_KEY", inferlog_core::config::ENV_PREFIX)).ok();
    inferlog_capture::redact::load_audit_redactor(data_dir, key.as_deref()).map_err(anyhow::Error::msg)?.apply_to_audit(&mut event);
    inferlog_table::audit::append(data_dir, &[event]).await.context("cannot write the _audit table")?;
    Ok(())
}

async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    use inferlog_proxy::auth::{Grant, TokenStore};
    match command {
        TokenCommand::Create { data_dir, name, role, endpoint } => {
            check_grant_target(&endpoint)?;
            let created = TokenStore::new(&data_dir).create(&name, vec![Grant { endpoint: endpoint.clone(), role }]);
            let detail = format!("name={name} role={role}");
            audit_cli(&data_dir, "token.create", Some(&endpoint), detail, created.as_ref().map(|_| ()).map_err(Clone::clone)).await?;
            let secret = created.map_err(anyhow::Error::msg)?;
            println!("token `{name}` holds `{role}` on `{endpoint}`; its secret (shown once, send it as Authorization: Bearer ...):");
            println!("{secret}");
        }
        TokenCommand::List { data_dir } => {
            for t in TokenStore::new(&data_dir).list()? {
                let grants: Vec<String> = t.grants.iter().map(|g| format!("{} on {}", g.role, g.endpoint)).collect();
                println!("{}\t{}\tcreated {}", t.name, grants.join(", "), t.created_at);
            }
        }
        TokenCommand::Grant { data_dir, name, role, endpoint } => {
            check_grant_target(&endpoint)?;
            let result = match TokenStore::new(&data_dir).grant(&name, &endpoint, role) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(format!("no token named `{name}`")),
                Err(e) => Err(e),
            };
            audit_cli(&data_dir, "grant", Some(&endpoint), format!("name={name} role={role}"), result.clone()).await?;
            result.map_err(anyhow::Error::msg)?;
            println!("token `{name}` holds `{role}` on `{endpoint}`");
        }
        TokenCommand::Ungrant { data_dir, name, endpoint } => {
            let result = match TokenStore::new(&data_dir).ungrant(&name, &endpoint) {
                Ok(Some(true)) => Ok(()),
                Ok(Some(false)) => Err(format!("token `{name}` holds no role on `{endpoint}`")),
                Ok(None) => Err(format!("no token named `{name}`")),
                Err(e) => Err(e),
            };
            audit_cli(&data_dir, "ungrant", Some(&endpoint), format!("name={name}"), result.clone()).await?;
            result.map_err(anyhow::Error::msg)?;
            println!("token `{name}` holds no role on `{endpoint}` now");
        }
        TokenCommand::Revoke { data_dir, name } => {
            let revoked = TokenStore::new(&data_dir).revoke(&name).map_err(anyhow::Error::msg)?;
            let result = if revoked { Ok(()) } else { Err(format!("no token named `{name}`")) };
            audit_cli(&data_dir, "token.revoke", None, format!("name={name}"), result.clone()).await?;
            result.map_err(anyhow::Error::msg)?;
            println!("token `{name}` revoked");
        }
    }
    Ok(())
}

fn check_grant_target(endpoint: &str) -> anyhow::Result<()> {
    if endpoint != inferlog_proxy::auth::ANY_ENDPOINT && !inferlog_core::is_valid_endpoint_name(endpoint) {
        anyhow::bail!("`{endpoint}` is not an endpoint name or `*`");
    }
    Ok(())
}

fn print_deleted(deleted: &[inferlog_table::maintenance::Deleted]) {
    if deleted.is_empty() {
        println!("no tables to delete from");
    }
    for d in deleted {
        println!("{}: {} rows deleted, {} files removed", d.table, d.rows, d.files_removed);
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // Delta's kernel logs every snapshot load at info: too much for a gateway's log.
    let filter = EnvFilter::try_from_env("INFERLOG_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,buoyant_kernel=warn,delta_kernel=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("INFERLOG_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
            Command::Query { data_dir, format, output, as_of, sql } => {
                let ctx = inferlog_query::session(&data_dir, as_of).await?;
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
            Command::Unpack { endpoint, data_dir } => {
                let options = inferlog_unpack::UnpackOptions::default();
                let report = inferlog_unpack::unpack_once(&data_dir, &endpoint, &options).await?;
                print_unpack_report(&endpoint, &report);
                Ok(())
            }
            Command::Labels {
                command: LabelsCommand::Import { endpoint, file, key, label, row_index, data_dir },
            } => {
                let source = file.display().to_string();
                let imported = async {
                    let labels = inferlog_labels::read_file(&file, key, &label, row_index.as_deref()).await?;
                    inferlog_labels::import(&data_dir, &endpoint, labels, &source, 100).await
                }
                .await;
                let result = imported.as_ref().map(|_| ()).map_err(|e| e.to_string());
                audit_cli(&data_dir, "labels.import", Some(&endpoint), source.clone(), result).await?;
                let report = imported?;
                println!(
                    "{} labels merged into {endpoint}_labels ({} replaced an earlier label; table version {})",
                    report.labels, report.replaced, report.version
                );
                Ok(())
            }
            Command::Generate { endpoint, data_dir, rows, days, rows_per_commit } => {
                synth::generate(synth::GenerateArgs {
                    data_dir: &data_dir,
                    endpoint: &endpoint,
                    rows,
                    days,
                    rows_per_commit,
                })
                .await
            }
            Command::Baseline { endpoint, from, from_table: _, since, until, label, prediction, data_dir } => {
                let source = match from {
                    Some(path) => inferlog_monitor::BaselineSource::File(path),
                    None => inferlog_monitor::BaselineSource::Table { since_ms: utc_millis(since)?, until_ms: utc_millis(until)? },
                };
                let options = inferlog_monitor::BaselineOptions { label, prediction };
                let report = inferlog_monitor::build_baseline(&data_dir, &endpoint, &source, &options).await?;
                println!(
                    "baseline of {} columns from {} rows written to {}",
                    report.statistics.features.len(),
                    report.rows,
                    report.dir.display()
                );
                for f in &report.constraints.features {
                    println!("  {:<24} {:?} {:?}, drift by {:?} at {}", f.name, f.role, f.inferred_type, f.drift.metric, f.drift.threshold);
                }
                Ok(())
            }
            Command::Monitor { endpoint, window, since, until, backfill, slices, data_dir } => {
                let options = inferlog_monitor::MonitorOptions {
                    window_ms: window,
                    since_ms: utc_millis(since)?,
                    until_ms: utc_millis(until)?,
                    slices,
                    backfill,
                };
                let report = inferlog_monitor::run_monitor(&data_dir, &endpoint, &options).await?;
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
            Command::Report { endpoint, output, since, until, data_dir } => {
                let until_ms = utc_millis(until)?.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                let since_ms = utc_millis(since)?.unwrap_or(until_ms - 86_400_000);
                let options = inferlog_monitor::ReportOptions { since_ms, until_ms };
                let data = inferlog_monitor::build_report(&data_dir, &endpoint, &options).await?;
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
            Command::Optimize { endpoint, data_dir } => {
                let options = inferlog_table::CompactionOptions {
                    min_files: 1,
                    vacuum_retention: std::time::Duration::ZERO,
                    ..Default::default()
                };
                let mut lines = Vec::new();
                let mut failure = None;
                for table in [format!("{endpoint}_payload"), format!("{endpoint}_unpacked")] {
                    if !data_dir.join("tables").join(&table).join("_delta_log").is_dir() {
                        continue;
                    }
                    let url = inferlog_table::table_url(&data_dir, &table)?;
                    match inferlog_table::compact_once(&url, &options).await {
                        Ok(r) => lines.push(format!("{table}: {} files merged into {}, {} removed from disk", r.files_removed, r.files_added, r.files_vacuumed)),
                        Err(e) => failure = Some(format!("{table}: {e}")),
                    }
                }
                let result = failure.clone().map_or(Ok(()), Err);
                audit_cli(&data_dir, "optimize", Some(&endpoint), lines.join("; "), result).await?;
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
            Command::Retention { endpoint, older_than, data_dir } => {
                let cutoff = chrono::Utc::now().timestamp_millis() - older_than;
                let predicates = inferlog_table::maintenance::retention_predicates(&endpoint, cutoff);
                let result = inferlog_table::maintenance::delete_where(&data_dir, &predicates, Purge::AfterReaders).await;
                let detail = format!("older than {} ms (before {cutoff})", older_than);
                audit_cli(&data_dir, "retention", Some(&endpoint), detail, result.as_ref().map(|_| ()).map_err(|e| e.to_string())).await?;
                print_deleted(&result?);
                Ok(())
            }
            Command::Erase { endpoint, client_request_id, request_id, data_dir } => {
                // The exchanges' request ids, so labels keyed by them and shadows go too.
                let mut ids: Vec<String> = request_id.clone().into_iter().collect();
                if let Some(client) = &client_request_id {
                    let sql = format!(
                        "SELECT request_id FROM \"{endpoint}_payload\" WHERE client_request_id = '{}'",
                        client.replace('\'', "''")
                    );
                    // No payload table: nothing to find. Any other failure stops the erasure,
                    // which would otherwise leave the labels keyed by these request ids.
                    if data_dir.join("tables").join(format!("{endpoint}_payload")).is_dir() {
                        let ctx = inferlog_query::session(&data_dir, None).await?;
                        let result = inferlog_query::run_sql(&ctx, &sql).await?;
                        let text = inferlog_query::format(&result.batches, inferlog_query::OutputFormat::Json)?;
                        ids.extend(text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["request_id"].as_str().map(str::to_string)));
                    }
                }
                let predicates = inferlog_table::maintenance::erasure_predicates(&endpoint, client_request_id.as_deref(), &ids);
                let result = inferlog_table::maintenance::delete_where(&data_dir, &predicates, Purge::Now).await;
                let detail = match (&client_request_id, &request_id) {
                    (Some(c), _) => format!("client_request_id={c}"),
                    (None, Some(r)) => format!("request_id={r}"),
                    _ => String::new(),
                };
                audit_cli(&data_dir, "erase", Some(&endpoint), detail, result.as_ref().map(|_| ()).map_err(|e| e.to_string())).await?;
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
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

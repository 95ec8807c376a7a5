//! `inferlog`: the capture gateway, SQL over its tables, and a demo.

mod demo;
mod iris;
mod serve;

use anyhow::Context;
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
        /// table, csv or json (one object per line).
        #[arg(long, default_value = "table")]
        format: inferlog_query::OutputFormat,
        /// e.g. "SELECT status_code, count(*) FROM iris_payload GROUP BY 1"
        sql: String,
    },
    /// Start a built-in iris model and the gateway, send traffic, and show what was recorded.
    Demo {
        #[arg(long, default_value = "./inferlog-demo-data")]
        data_dir: PathBuf,
        /// How many requests to send.
        #[arg(long, default_value_t = 300)]
        requests: usize,
    },
    /// Serve the built-in iris classifier (MLflow scoring protocol) on its own.
    IrisModel {
        #[arg(long, default_value = "127.0.0.1:5001")]
        listen: std::net::SocketAddr,
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

fn parse_endpoint(s: &str) -> Result<(String, String), String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=URL"))?;
    Ok((name.to_string(), url.to_string()))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFERLOG_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("INFERLOG_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
            Command::Query { data_dir, format, sql } => {
                let ctx = inferlog_query::session(&data_dir).await?;
                let batches = inferlog_query::run_sql(&ctx, &sql).await?;
                print!("{}", inferlog_query::format(&batches, format)?);
                if format == inferlog_query::OutputFormat::Table {
                    println!();
                }
                Ok(())
            }
            Command::Demo { data_dir, requests } => demo::run(&data_dir, requests).await,
            Command::IrisModel { listen } => {
                init_logging();
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
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

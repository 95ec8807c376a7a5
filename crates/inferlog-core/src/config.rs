//! Configuration: the TOML file, `INFERLOG_*` environment overrides and command-line flags all
//! land in one [`toml::Value`] tree, which is then read into [`ConfigFile`] (unknown keys
//! rejected) and validated once into [`Config`]. Every error names the key it is about.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// When a request's record must reach the write-ahead log relative to its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The response is never delayed; records still in memory are lost if the process dies.
    #[default]
    Async,
    /// The response completes once its record is written to the log file (group-committed).
    Sync,
    /// As `Sync`, and the log file is flushed to the disk (fdatasync) first.
    Fsync,
}

crate::display_as_serde_name!(Durability, Oversize);

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "async" => Ok(Durability::Async),
            "sync" => Ok(Durability::Sync),
            "fsync" => Ok(Durability::Fsync),
            other => Err(format!("`{other}` is not one of async, sync, fsync")),
        }
    }
}

/// The file as written by a user. Every section rejects keys it does not know.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Where the tables live: a local path, `file:///…`, `s3://bucket/prefix`, `gs://…`,
    /// `az://…`; default `{data_dir}/tables`.
    pub tables_uri: Option<String>,
    /// This gateway's name in each row's `gateway_id` (default: its instance id).
    pub gateway_name: Option<String>,
    /// Time to live of the leases that pick the gateway doing an endpoint's singleton work.
    pub lease_ttl_ms: Option<u64>,
    pub durability: Option<Durability>,
    /// Upstream response deadline in milliseconds.
    pub upstream_timeout_ms: Option<u64>,
    /// A request body that has not fully arrived by then is answered 408.
    pub request_body_timeout_ms: Option<u64>,
    /// Largest request body the gateway accepts (413 above it).
    pub max_request_bytes: Option<usize>,
    /// Request bodies held in memory at once, over all requests (503 beyond).
    pub max_request_bytes_in_flight: Option<usize>,
    /// A connection must send a whole request head within this, from its opening or from the
    /// first byte of the request.
    pub header_read_timeout_ms: Option<u64>,
    /// A connection idle this long after a response is closed.
    pub keep_alive_timeout_ms: Option<u64>,
    /// Client connections served at once (default: derived from the open files limit).
    pub max_connections: Option<usize>,
    /// Bounded queue between the request path and the write-ahead log, in records.
    pub queue_capacity: Option<usize>,
    /// The same queue's bound in bytes of payload.
    pub queue_max_bytes: Option<u64>,
    /// Cap on the write-ahead log's size on disk per endpoint; above it new records are dropped.
    pub log_max_bytes: Option<u64>,
    /// Free space the log leaves on its disk; below it new records are dropped (0 disables).
    pub log_min_free_bytes: Option<u64>,
    /// How often pending records are committed to the table, in milliseconds.
    pub commit_interval_ms: Option<u64>,
    /// Largest commit, in bytes of logged records: a busy log is committed in several commits
    /// of at most this much, which bounds the committer's memory.
    pub commit_max_bytes: Option<u64>,
    /// Largest commit, in records.
    pub commit_max_records: Option<u64>,
    /// A checkpoint is written every this many commits.
    pub checkpoint_interval: Option<u64>,
    /// How often partitions are checked for compaction, in seconds (0 disables).
    pub compaction_interval_s: Option<u64>,
    /// A date partition is compacted once it holds more than this many data files.
    pub compaction_min_files: Option<usize>,
    /// How often endpoints with `unpack = true` unpack new payloads.
    pub unpack_interval_ms: Option<u64>,
    /// Most rows `POST /api/query` returns.
    pub query_max_rows: Option<usize>,
    /// Longest a `POST /api/query` statement may run.
    pub query_timeout_ms: Option<u64>,
    /// Memory all `POST /api/query` statements together may hold in sorts, joins and
    /// aggregations (beyond it they spill to disk or fail).
    pub query_memory_bytes: Option<usize>,
    /// Largest result `POST /api/query` returns, in bytes of Arrow data; beyond it the
    /// result is cut like at `query_max_rows`.
    pub query_max_result_bytes: Option<usize>,
    /// How many `POST /api/query` statements run at once; more wait (within their timeout).
    pub query_concurrency: Option<usize>,
    /// Extra request headers copied into `request_metadata` (lower-case names).
    pub metadata_headers: Option<Vec<String>>,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub tls: TlsFile,
    /// The key of `hash` redactions (HMAC-SHA256); better set as INFERLOG_REDACTION_KEY.
    pub redaction_key: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<EndpointFile>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Require tokens (default: only when the listener is not on loopback).
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain of the listener; with `key`, the gateway speaks HTTPS only.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    pub key: Option<PathBuf>,
    /// PEM certificates trusted for https upstreams and webhooks, besides the system's roots.
    pub upstream_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    pub name: String,
    /// The one upstream; or several in `targets`.
    pub upstream: Option<String>,
    /// Upstreams sharing the traffic by weight.
    pub targets: Option<Vec<TargetFile>>,
    /// A request header (e.g. a user id) whose value keeps a caller on one target.
    pub sticky_header: Option<String>,
    /// An upstream that gets a copy of (a share of) the requests; its answers are recorded,
    /// never returned.
    pub shadow: Option<ShadowFile>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub model_name: Option<String>,
    /// `model_version = 3` and `model_version = "3"` mean the same.
    #[serde(default, deserialize_with = "text_or_number")]
    pub model_version: Option<String>,
    #[serde(default)]
    pub capture: CaptureFile,
    /// Keep `{name}_unpacked` (typed features and predictions) a few seconds behind.
    pub unpack: Option<bool>,
    /// The model's feature names in its input order: columns for features sent by position.
    pub feature_names: Option<Vec<String>>,
    /// Scheduled monitoring inside `inferlog serve`.
    pub monitor: Option<MonitorFile>,
    /// With authentication on, anyone may invoke the endpoint without a token.
    pub public: Option<bool>,
    /// Personal data taken out of bodies before they are written anywhere.
    #[serde(default)]
    pub redact: Vec<RedactFile>,
    /// Rows older than this are deleted from all of the endpoint's tables on a schedule.
    pub retention: Option<RetentionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Age of the rows to delete, e.g. `30d`.
    pub older_than: String,
    /// How often to run: a duration or a cron expression (default `1h`).
    pub schedule: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactFile {
    /// A JSON path into request and response bodies: `$.a.b[*].c`.
    pub path: Option<String>,
    /// email, phone, credit_card, iban or ipv4.
    pub detector: Option<String>,
    pub regex: Option<String>,
    /// mask (default), hash or drop.
    pub action: Option<RedactAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedactAction {
    Mask,
    Hash,
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RedactTarget {
    Path(String),
    Detector(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedactRule {
    pub target: RedactTarget,
    pub action: RedactAction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    pub name: String,
    pub upstream: String,
    /// Defaults to the endpoint's model_version.
    #[serde(default, deserialize_with = "text_or_number")]
    pub model_version: Option<String>,
    /// Share of the traffic relative to the other targets' weights (default 1).
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowFile {
    /// Recorded in `served_target` (default `shadow`).
    pub name: Option<String>,
    pub upstream: String,
    #[serde(default, deserialize_with = "text_or_number")]
    pub model_version: Option<String>,
    /// Share of the captured requests copied to the shadow (default 1).
    pub fraction: Option<f64>,
    /// Default: upstream_timeout_ms.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MonitorFile {
    /// How often to run: a duration (`5m`) or a five-field cron expression (`*/5 * * * *`, UTC).
    pub schedule: Option<String>,
    /// Window length, e.g. `1h`.
    pub window: Option<String>,
    /// SQL expressions over the unpacked table, each monitored per value too.
    pub slices: Option<Vec<String>>,
    /// Violations of finished windows are POSTed here as JSON, one request each.
    pub webhook_url: Option<String>,
    pub webhook_attempts: Option<u32>,
    /// Delay before the first retry; doubled for each further one (at most 60 s).
    pub webhook_backoff_ms: Option<u64>,
}

fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Int(i64),
        Float(f64),
    }
    Ok(Option::<TextOrNumber>::deserialize(d)?.map(|v| match v {
        TextOrNumber::Text(s) => s,
        TextOrNumber::Int(i) => i.to_string(),
        TextOrNumber::Float(f) => f.to_string(),
    }))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaptureFile {
    pub enabled: Option<bool>,
    pub sampling_fraction: Option<f64>,
    pub max_payload_bytes: Option<usize>,
    /// `false` records metadata only: no request or response bodies.
    pub bodies: Option<bool>,
    /// A body over max_payload_bytes is `truncate`d (default) or `offload`ed whole to a side file.
    pub oversize: Option<Oversize>,
    /// Largest body kept whole for offloading (default 64 MiB); a larger one is cut.
    pub offload_max_bytes: Option<usize>,
    /// Seed for the sampling decisions, for reproducible tests.
    pub sampling_seed: Option<u64>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where the tables are, and the data dir's own files.
    pub layout: crate::Layout,
    /// The configured name of this gateway, if any.
    pub gateway_name: Option<String>,
    pub lease_ttl: Duration,
    pub durability: Durability,
    pub upstream_timeout: Duration,
    pub request_body_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_request_bytes_in_flight: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    /// `None`: as many as the open files limit allows, decided at start.
    pub max_connections: Option<usize>,
    pub queue_capacity: usize,
    pub queue_max_bytes: u64,
    pub log_max_bytes: u64,
    pub log_min_free_bytes: u64,
    pub commit_interval: Duration,
    /// Largest commit in bytes of logged records, and in records.
    pub commit_max_bytes: usize,
    pub commit_max_records: usize,
    pub checkpoint_interval: u64,
    pub compaction_interval: Option<Duration>,
    pub compaction_min_files: usize,
    pub unpack_interval: Duration,
    pub query_max_rows: usize,
    pub query_timeout: Duration,
    pub query_memory_bytes: usize,
    pub query_max_result_bytes: usize,
    pub query_concurrency: usize,
    pub metadata_headers: Vec<String>,
    /// Whether the APIs and non-public endpoints require tokens.
    pub auth_enabled: bool,
    pub redaction_key: Option<String>,
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<ListenerTls>,
    /// Extra roots for https upstreams and webhooks.
    pub upstream_ca: Option<PathBuf>,
    pub endpoints: Vec<EndpointSettings>,
}

#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub name: String,
    /// At least one; a plain `upstream` is the target `default`.
    pub targets: Vec<TargetSettings>,
    /// Lower-case header name.
    pub sticky_header: Option<String>,
    pub shadow: Option<ShadowSettings>,
    pub model_name: String,
    pub model_version: String,
    pub capture: CaptureSettings,
    pub unpack: bool,
    /// Names of positional features, in order (empty: `input_0`, `input_1`, …).
    pub feature_names: Vec<String>,
    pub monitor: Option<MonitorSettings>,
    pub public: bool,
    pub redact: Vec<RedactRule>,
    pub retention: Option<RetentionSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    pub name: String,
    pub upstream: Url,
    pub model_version: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSettings {
    pub name: String,
    pub upstream: Url,
    pub model_version: String,
    pub fraction: f64,
    pub timeout: Duration,
}

/// The name of the target of an endpoint configured with a single `upstream`.
pub const DEFAULT_TARGET: &str = "default";

/// Target and shadow names are recorded and used as keys in the admin API.
fn valid_target_name(name: &str) -> bool {
    crate::is_valid_endpoint_name(name)
}

/// When scheduled monitoring runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// `5m` (a duration) or a five-field cron expression such as `*/5 * * * *`, read in UTC.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().contains(' ') {
            let cron: croner::Cron = text
                .trim()
                .parse()
                .map_err(|e| format!("`{text}` is not a cron expression: {e}"))?;
            Ok(Schedule::Cron(Box::new(cron)))
        } else {
            Ok(Schedule::Every(Duration::from_millis(parse_duration_ms(text)? as u64)))
        }
    }

    /// The first run time strictly after `now`.
    pub fn next_after(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        match self {
            Schedule::Every(every) => now + *every,
            // A pattern that never matches again (e.g. a 30th of February) falls back to daily.
            Schedule::Cron(cron) => cron
                .find_next_occurrence(&now, false)
                .unwrap_or(now + chrono::Duration::days(1)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MonitorSettings {
    pub schedule: Schedule,
    pub window_ms: i64,
    pub slices: Vec<String>,
    pub webhook: Option<WebhookSettings>,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: Url,
    pub attempts: u32,
    pub backoff: Duration,
}

/// `90s`, `30m`, `1h`, `1d` → milliseconds (positive).
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number.parse().map_err(|_| format!("`{s}` is not a duration like 30m, 1h or 1d"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}`: the unit must be ms, s, m, h or d")),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(format!("`{s}` must be a positive duration")),
    }
}

fn monitor_settings(file: MonitorFile, key: impl Fn(&str) -> String) -> Result<MonitorSettings, ConfigError> {
    let schedule = Schedule::parse(file.schedule.as_deref().unwrap_or("5m")).map_err(|r| invalid(key("monitor.schedule"), r))?;
    let window_ms = parse_duration_ms(file.window.as_deref().unwrap_or("1h")).map_err(|r| invalid(key("monitor.window"), r))?;
    let webhook = match file.webhook_url {
        None => None,
        Some(raw) => {
            let url = Url::parse(&raw).map_err(|e| invalid(key("monitor.webhook_url"), format!("`{raw}` is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(key("monitor.webhook_url"), format!("`{raw}` must be an http(s) URL")));
            }
            let attempts = file.webhook_attempts.unwrap_or(5);
            if attempts == 0 {
                return Err(invalid(key("monitor.webhook_attempts"), "must be greater than 0"));
            }
            Some(WebhookSettings {
                url,
                attempts,
                backoff: Duration::from_millis(file.webhook_backoff_ms.unwrap_or(1000)),
            })
        }
    };
    Ok(MonitorSettings { schedule, window_ms, slices: file.slices.unwrap_or_default(), webhook })
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CaptureSettings {
    pub enabled: bool,
    pub sampling_fraction: f64,
    pub max_payload_bytes: usize,
    pub bodies: bool,
    pub oversize: Oversize,
    pub offload_max_bytes: usize,
    pub sampling_seed: Option<u64>,
}

impl CaptureSettings {
    /// How much of a body the gateway keeps for the record: all of it (up to
    /// `offload_max_bytes`) when oversize bodies are offloaded, else `max_payload_bytes`.
    pub fn kept_body_bytes(&self) -> usize {
        match self.oversize {
            Oversize::Truncate => self.max_payload_bytes,
            Oversize::Offload => self.offload_max_bytes,
        }
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./inferlog-data";
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
pub const DEFAULT_OFFLOAD_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What happens to a body larger than `max_payload_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// The row keeps the first max_payload_bytes and a `*_SIZE_EXCEEDED` code.
    #[default]
    Truncate,
    /// The whole body goes to a file under the table's `_offload` folder; the row keeps a
    /// prefix and the file's path.
    Offload,
}

/// When a scheduled retention runs and what it deletes.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub older_than_ms: i64,
    pub schedule: Schedule,
}

/// HTTPS on the listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}
/// Headers recorded in `request_metadata` unless configured otherwise. Credentials
/// (`authorization`, `cookie`, ...) are never recorded, whatever the configuration says.
pub const DEFAULT_METADATA_HEADERS: &[&str] = &[
    "user-agent",
    "content-type",
    "content-length",
    "accept",
    "x-forwarded-for",
    "traceparent",
];
pub const FORBIDDEN_METADATA_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
];

/// Prefix of the environment variables that override configuration keys. Nested keys use
/// `__`: `INFERLOG_ENDPOINTS__IRIS__CAPTURE__SAMPLING_FRACTION=0.5` sets that key of the
/// endpoint named `iris`; `INFERLOG_METADATA_HEADERS` takes a comma-separated list.
pub const ENV_PREFIX: &str = "INFERLOG_";
/// Top-level keys of [`ConfigFile`] that an `INFERLOG_<KEY>` variable may set.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "tables_uri",
    "gateway_name",
    "lease_ttl_ms",
    "durability",
    "upstream_timeout_ms",
    "request_body_timeout_ms",
    "max_request_bytes",
    "max_request_bytes_in_flight",
    "header_read_timeout_ms",
    "keep_alive_timeout_ms",
    "max_connections",
    "queue_capacity",
    "queue_max_bytes",
    "log_max_bytes",
    "log_min_free_bytes",
    "commit_interval_ms",
    "commit_max_bytes",
    "commit_max_records",
    "checkpoint_interval",
    "compaction_interval_s",
    "compaction_min_files",
    "unpack_interval_ms",
    "query_max_rows",
    "query_timeout_ms",
    "query_memory_bytes",
    "query_max_result_bytes",
    "query_concurrency",
    "redaction_key",
];
/// Top-level tables whose keys `INFERLOG_<SECTION>__<KEY>` sets (`INFERLOG_TLS__CERT`).
const SECTIONS: &[&str] = &["auth", "tls"];
/// Variables with the prefix that are not configuration keys.
const ENV_NOT_CONFIG: &[&str] = &["INFERLOG_LOG", "INFERLOG_LOG_FORMAT"];

/// Parses a config file's text into a value tree.
pub fn parse_toml(text: &str, path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads and parses a config file.
pub fn read_file(path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse_toml(&text, path)
}

/// The variable that names the data directory, as `data_dir` in the config file.
pub const DATA_DIR_ENV: &str = "INFERLOG_DATA_DIR";

/// The data directory of a command, in the order `serve` reads every key: the `--data-dir`
/// flag, then `INFERLOG_DATA_DIR` (`env`), then the config file's `data_dir`, then
/// [`DEFAULT_DATA_DIR`].
pub fn resolve_data_dir(
    flag: Option<&std::path::Path>,
    env: Option<std::ffi::OsString>,
    config_file: Option<&std::path::Path>,
) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = env.filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    Ok(file_string(config_file, "data_dir")?.map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from))
}

/// The tables root of a command, in the same order: `--tables-uri`, `INFERLOG_TABLES_URI`,
/// the config file's `tables_uri`; `None`: under the data dir.
pub fn resolve_tables_uri(
    flag: Option<&str>,
    env: Option<String>,
    config_file: Option<&std::path::Path>,
) -> Result<Option<String>, ConfigError> {
    if let Some(uri) = flag {
        return Ok(Some(uri.to_string()));
    }
    if let Some(uri) = env.filter(|u| !u.is_empty()) {
        return Ok(Some(uri));
    }
    file_string(config_file, "tables_uri")
}

/// A top-level string key of a config file, when a file is given and has it.
fn file_string(config_file: Option<&std::path::Path>, key: &str) -> Result<Option<String>, ConfigError> {
    let Some(path) = config_file else { return Ok(None) };
    match read_file(path)?.get(key) {
        Some(toml::Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(invalid(key, "must be a string")),
        None => Ok(None),
    }
}

/// Applies `INFERLOG_*` variables onto the tree. Values are read as TOML scalars when they
/// parse as one (`0.5`, `true`, `12`), otherwise as strings.
pub fn apply_env(
    tree: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_CONFIG.contains(&name.as_str()) || rest.is_empty() {
            continue;
        }
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let value = scalar(&raw);
        match parts.as_slice() {
            [key] if key == "metadata_headers" => {
                let list = raw.split(',').map(|h| toml::Value::String(h.trim().to_string()));
                tree.insert(key.clone(), toml::Value::Array(list.collect()));
            }
            [key] if TOP_LEVEL_KEYS.contains(&key.as_str()) => {
                tree.insert(key.clone(), value);
            }
            [section, key] if SECTIONS.contains(&section.as_str()) => {
                let table = tree
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                let toml::Value::Table(table) = table else {
                    return Err(invalid(section.as_str(), "must be a table"));
                };
                table.insert(key.clone(), value);
            }
            [section, endpoint, path @ ..] if section == "endpoints" && !path.is_empty() => {
                let endpoints = tree
                    .entry("endpoints")
                    .or_insert_with(|| toml::Value::Array(vec![]));
                let toml::Value::Array(list) = endpoints else {
                    return Err(invalid("endpoints", "must be an array of tables"));
                };
                let found = list.iter_mut().find(|e| {
                    e.get("name").and_then(|n| n.as_str()).map(str::to_ascii_lowercase)
                        == Some(endpoint.clone())
                });
                let Some(toml::Value::Table(ep)) = found else {
                    return Err(invalid(
                        name.as_str(),
                        format!("no endpoint named `{endpoint}` is configured"),
                    ));
                };
                let mut table = ep;
                for (i, key) in path.iter().enumerate() {
                    if i + 1 == path.len() {
                        table.insert(key.clone(), value.clone());
                    } else {
                        let next = table
                            .entry(key.clone())
                            .or_insert_with(|| toml::Value::Table(Default::default()));
                        let toml::Value::Table(t) = next else {
                            return Err(invalid(name.as_str(), format!("`{key}` is not a table")));
                        };
                        table = t;
                    }
                }
            }
            _ => {
                return Err(invalid(
                    name.as_str(),
                    "unknown environment override (use INFERLOG_<KEY> or INFERLOG_ENDPOINTS__<NAME>__<KEY>)",
                ))
            }
        }
    }
    Ok(())
}

fn scalar(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => v,
            _ => toml::Value::String(raw.to_string()),
        },
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Reads the merged tree into [`ConfigFile`], naming the offending key on error.
pub fn read_tree(tree: toml::Table) -> Result<ConfigFile, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
        let key = e.path().to_string();
        let reason = e.into_inner().to_string();
        let reason = reason.lines().next().unwrap_or_default().to_string();
        invalid(if key == "." { "(top level)".into() } else { key }, reason)
    })
}

impl ConfigFile {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let listen_raw = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_raw
            .parse()
            .map_err(|e| invalid("listen", format!("`{listen_raw}` is not a socket address: {e}")))?;
        let positive = |key: &str, v: Option<u64>, default: u64| -> Result<u64, ConfigError> {
            match v {
                Some(0) => Err(invalid(key, "must be greater than 0")),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        let upstream_timeout_ms = positive("upstream_timeout_ms", self.upstream_timeout_ms, 60_000)?;
        let request_body_timeout_ms = positive("request_body_timeout_ms", self.request_body_timeout_ms, 30_000)?;
        let max_request_bytes =
            positive("max_request_bytes", self.max_request_bytes.map(|v| v as u64), 16 << 20)? as usize;
        let max_request_bytes_in_flight =
            positive("max_request_bytes_in_flight", self.max_request_bytes_in_flight.map(|v| v as u64), 256 << 20)? as usize;
        if max_request_bytes_in_flight < max_request_bytes {
            return Err(invalid(
                "max_request_bytes_in_flight",
                format!("{max_request_bytes_in_flight} is below max_request_bytes ({max_request_bytes}): a body that size could never be read"),
            ));
        }
        let header_read_timeout_ms = positive("header_read_timeout_ms", self.header_read_timeout_ms, 10_000)?;
        let keep_alive_timeout_ms = positive("keep_alive_timeout_ms", self.keep_alive_timeout_ms, 60_000)?;
        let max_connections = match self.max_connections {
            Some(0) => return Err(invalid("max_connections", "must be greater than 0")),
            other => other,
        };
        let queue_capacity = positive("queue_capacity", self.queue_capacity.map(|v| v as u64), 65_536)? as usize;
        let queue_max_bytes = positive("queue_max_bytes", self.queue_max_bytes, 256 << 20)?;
        let log_max_bytes = positive("log_max_bytes", self.log_max_bytes, 4 << 30)?;
        let commit_interval_ms = positive("commit_interval_ms", self.commit_interval_ms, 1000)?;
        let commit_max_bytes = positive("commit_max_bytes", self.commit_max_bytes, 32 << 20)? as usize;
        let commit_max_records = positive("commit_max_records", self.commit_max_records, 50_000)? as usize;
        let checkpoint_interval = positive("checkpoint_interval", self.checkpoint_interval, 100)?;
        let compaction_min_files =
            positive("compaction_min_files", self.compaction_min_files.map(|v| v as u64), 64)? as usize;
        let unpack_interval_ms = positive("unpack_interval_ms", self.unpack_interval_ms, 2000)?;
        let query_max_rows = positive("query_max_rows", self.query_max_rows.map(|v| v as u64), 10_000)? as usize;
        let query_timeout_ms = positive("query_timeout_ms", self.query_timeout_ms, 30_000)?;
        let query_memory_bytes = positive("query_memory_bytes", self.query_memory_bytes.map(|v| v as u64), 512 << 20)? as usize;
        let query_max_result_bytes =
            positive("query_max_result_bytes", self.query_max_result_bytes.map(|v| v as u64), 64 << 20)? as usize;
        let query_concurrency = positive("query_concurrency", self.query_concurrency.map(|v| v as u64), 4)? as usize;
        let compaction_interval = match self.compaction_interval_s.unwrap_or(300) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let metadata_headers = match self.metadata_headers {
            None => DEFAULT_METADATA_HEADERS.iter().map(|s| s.to_string()).collect(),
            Some(list) => {
                let mut out = Vec::new();
                for (i, h) in list.into_iter().enumerate() {
                    let h = h.to_ascii_lowercase();
                    if FORBIDDEN_METADATA_HEADERS.contains(&h.as_str()) {
                        return Err(invalid(
                            format!("metadata_headers[{i}]"),
                            format!("`{h}` carries credentials and is never recorded"),
                        ));
                    }
                    out.push(h);
                }
                out
            }
        };

        let mut endpoints: Vec<EndpointSettings> = Vec::new();
        for (i, ep) in self.endpoints.into_iter().enumerate() {
            let key = |k: &str| format!("endpoints[{i}].{k}");
            if !crate::is_valid_endpoint_name(&ep.name) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` must be 1-64 characters of letters, digits, `_` or `-`", ep.name),
                ));
            }
            if endpoints.iter().any(|e| e.name == ep.name) {
                return Err(invalid(key("name"), format!("endpoint `{}` is defined twice", ep.name)));
            }
            let model_version = ep.model_version.unwrap_or_else(|| "1".to_string());
            let targets = match (ep.upstream, ep.targets) {
                (Some(_), Some(_)) => return Err(invalid(key("targets"), "give either `upstream` or `targets`, not both")),
                (None, None) => return Err(invalid(key("upstream"), "missing: give `upstream` or `[[endpoints.targets]]`")),
                (Some(raw), None) => vec![TargetSettings {
                    name: DEFAULT_TARGET.into(),
                    upstream: parse_upstream(&raw).map_err(|r| invalid(key("upstream"), r))?,
                    model_version: model_version.clone(),
                    weight: 1,
                }],
                (None, Some(list)) => {
                    let mut targets: Vec<TargetSettings> = Vec::new();
                    for (j, t) in list.into_iter().enumerate() {
                        let tkey = |k: &str| key(&format!("targets[{j}].{k}"));
                        if !valid_target_name(&t.name) {
                            return Err(invalid(tkey("name"), format!("`{}` must be 1-64 characters of letters, digits, `_` or `-`", t.name)));
                        }
                        if targets.iter().any(|o| o.name == t.name) {
                            return Err(invalid(tkey("name"), format!("target `{}` is defined twice", t.name)));
                        }
                        targets.push(TargetSettings {
                            upstream: parse_upstream(&t.upstream).map_err(|r| invalid(tkey("upstream"), r))?,
                            model_version: t.model_version.unwrap_or_else(|| model_version.clone()),
                            weight: t.weight.unwrap_or(1),
                            name: t.name,
                        });
                    }
                    if targets.iter().map(|t| u64::from(t.weight)).sum::<u64>() == 0 {
                        return Err(invalid(key("targets"), "at least one target needs a weight above 0"));
                    }
                    targets
                }
            };
            let sticky_header = match ep.sticky_header {
                Some(h) if is_header_name(&h) => Some(h.to_ascii_lowercase()),
                Some(h) => return Err(invalid(key("sticky_header"), format!("`{h}` is not a header name"))),
                None => None,
            };
            let shadow = match ep.shadow {
                None => None,
                Some(sh) => {
                    let name = sh.name.unwrap_or_else(|| "shadow".into());
                    if !valid_target_name(&name) || targets.iter().any(|t| t.name == name) {
                        return Err(invalid(key("shadow.name"), format!("`{name}` must be a valid name no target uses")));
                    }
                    let fraction = sh.fraction.unwrap_or(1.0);
                    if !(0.0..=1.0).contains(&fraction) {
                        return Err(invalid(key("shadow.fraction"), format!("{fraction} is not between 0 and 1")));
                    }
                    Some(ShadowSettings {
                        name,
                        upstream: parse_upstream(&sh.upstream).map_err(|r| invalid(key("shadow.upstream"), r))?,
                        model_version: sh.model_version.unwrap_or_else(|| model_version.clone()),
                        fraction,
                        timeout: Duration::from_millis(positive(&key("shadow.timeout_ms"), sh.timeout_ms, upstream_timeout_ms)?),
                    })
                }
            };
            let fraction = ep.capture.sampling_fraction.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&fraction) || fraction.is_nan() {
                return Err(invalid(
                    key("capture.sampling_fraction"),
                    format!("{fraction} is not between 0 and 1"),
                ));
            }
            let max_payload_bytes = ep.capture.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
            endpoints.push(EndpointSettings {
                model_name: ep.model_name.unwrap_or_else(|| ep.name.clone()),
                model_version,
                name: ep.name,
                targets,
                sticky_header,
                shadow,
                capture: CaptureSettings {
                    enabled: ep.capture.enabled.unwrap_or(true),
                    sampling_fraction: fraction,
                    max_payload_bytes,
                    bodies: ep.capture.bodies.unwrap_or(true),
                    oversize: ep.capture.oversize.unwrap_or_default(),
                    offload_max_bytes: {
                        let limit = ep.capture.offload_max_bytes.unwrap_or(DEFAULT_OFFLOAD_MAX_BYTES.max(max_payload_bytes));
                        if limit < max_payload_bytes {
                            return Err(invalid(key("capture.offload_max_bytes"), format!("{limit} is below max_payload_bytes ({max_payload_bytes})")));
                        }
                        // A record holds a request and a response: both must fit the queue.
                        if ep.capture.oversize == Some(Oversize::Offload) && (limit as u64).saturating_mul(2) > queue_max_bytes {
                            return Err(invalid(
                                key("capture.offload_max_bytes"),
                                format!("twice {limit} (a request and a response) exceeds queue_max_bytes ({queue_max_bytes})"),
                            ));
                        }
                        limit
                    },
                    sampling_seed: ep.capture.sampling_seed,
                },
                unpack: ep.unpack.unwrap_or(false),
                feature_names: {
                    let names = ep.feature_names.unwrap_or_default();
                    if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
                        return Err(invalid(key("feature_names"), format!("entry {i} is empty")));
                    }
                    let mut seen = std::collections::HashSet::new();
                    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
                        return Err(invalid(key("feature_names"), format!("{dup:?} is listed twice")));
                    }
                    names
                },
                monitor: ep.monitor.map(|m| monitor_settings(m, key)).transpose()?,
                public: ep.public.unwrap_or(false),
                retention: ep
                    .retention
                    .map(|r| -> Result<RetentionSettings, ConfigError> {
                        Ok(RetentionSettings {
                            older_than_ms: parse_duration_ms(&r.older_than).map_err(|e| invalid(key("retention.older_than"), e))?,
                            schedule: Schedule::parse(r.schedule.as_deref().unwrap_or("1h")).map_err(|e| invalid(key("retention.schedule"), e))?,
                        })
                    })
                    .transpose()?,
                redact: ep
                    .redact
                    .into_iter()
                    .enumerate()
                    .map(|(j, r)| {
                        let target = match (r.path, r.detector, r.regex) {
                            (Some(p), None, None) => RedactTarget::Path(p),
                            (None, Some(d), None) => RedactTarget::Detector(d),
                            (None, None, Some(x)) => RedactTarget::Regex(x),
                            _ => return Err(invalid(key(&format!("redact[{j}]")), "give exactly one of path, detector, regex")),
                        };
                        Ok(RedactRule { target, action: r.action.unwrap_or(RedactAction::Mask) })
                    })
                    .collect::<Result<_, _>>()?,
            });
        }

        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let layout = crate::Layout::new(&data_dir, self.tables_uri.as_deref())
            .map_err(|e| invalid("tables_uri", e.to_string()))?;
        let gateway_name = match self.gateway_name {
            Some(name) if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) => {
                return Err(invalid("gateway_name", "must be 1 to 128 printable characters"));
            }
            other => other,
        };
        Ok(Config {
            listen,
            data_dir,
            layout,
            gateway_name,
            lease_ttl: {
                let ms = positive("lease_ttl_ms", self.lease_ttl_ms, 30_000)?;
                if ms < 3_000 {
                    return Err(invalid("lease_ttl_ms", "must be at least 3000 (renewed every third of it)"));
                }
                Duration::from_millis(ms)
            },
            durability: self.durability.unwrap_or_default(),
            upstream_timeout: Duration::from_millis(upstream_timeout_ms),
            request_body_timeout: Duration::from_millis(request_body_timeout_ms),
            max_request_bytes,
            max_request_bytes_in_flight,
            header_read_timeout: Duration::from_millis(header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(keep_alive_timeout_ms),
            max_connections,
            queue_capacity,
            queue_max_bytes,
            log_max_bytes,
            // The largest commit's Parquet files fit in the default reserve.
            log_min_free_bytes: self.log_min_free_bytes.unwrap_or(256 << 20),
            commit_interval: Duration::from_millis(commit_interval_ms),
            commit_max_bytes,
            commit_max_records,
            checkpoint_interval,
            compaction_interval,
            compaction_min_files,
            unpack_interval: Duration::from_millis(unpack_interval_ms),
            query_max_rows,
            query_timeout: Duration::from_millis(query_timeout_ms),
            query_memory_bytes,
            query_max_result_bytes,
            query_concurrency,
            metadata_headers,
            // A gateway reachable from other machines requires tokens unless told otherwise.
            auth_enabled: self.auth.enabled.unwrap_or(!listen.ip().is_loopback()),
            redaction_key: self.redaction_key,
            tls: match (self.tls.cert, self.tls.key) {
                (Some(cert), Some(key)) => Some(ListenerTls { cert, key }),
                (None, None) => None,
                (Some(_), None) => return Err(invalid("tls.key", "is required with tls.cert")),
                (None, Some(_)) => return Err(invalid("tls.cert", "is required with tls.key")),
            },
            upstream_ca: self.tls.upstream_ca,
            endpoints,
        })
    }
}

/// RFC 9110 token characters: what a header name may hold.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Upstreams are `http(s)://host:port[/base]` URLs; the request's path is appended to the base.
pub fn parse_upstream(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("`{raw}`: only http:// and https:// upstreams are supported"));
    }
    if url.host_str().is_none() {
        return Err(format!("`{raw}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{raw}` must not carry a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // They would end up in every error row and log line naming the upstream.
        return Err(format!("`{}`: credentials in upstream URLs are not supported", url.host_str().unwrap_or_default()));
    }
    Ok(url)
}

/// The tree of a zero-config start: `--listen`, `--data-dir`, `--endpoint NAME=URL`.
pub fn tree_from_flags(
    listen: Option<&str>,
    data_dir: Option<&std::path::Path>,
    durability: Option<Durability>,
    endpoints: &[(String, String)],
    tree: &mut toml::Table,
) {
    if let Some(l) = listen {
        tree.insert("listen".into(), toml::Value::String(l.into()));
    }
    if let Some(d) = data_dir {
        tree.insert("data_dir".into(), toml::Value::String(d.display().to_string()));
    }
    if let Some(d) = durability {
        tree.insert("durability".into(), toml::Value::String(d.to_string()));
    }
    if !endpoints.is_empty() {
        let list = tree
            .entry("endpoints")
            .or_insert_with(|| toml::Value::Array(vec![]));
        if let toml::Value::Array(list) = list {
            for (name, url) in endpoints {
                let mut t = BTreeMap::new();
                t.insert("name".to_string(), toml::Value::String(name.clone()));
                t.insert("upstream".to_string(), toml::Value::String(url.clone()));
                list.push(toml::Value::Table(t.into_iter().collect()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_comes_from_the_flag_then_the_environment_then_the_file() {
        let dir = std::env::temp_dir().join(format!("inferlog-data-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "data_dir = \"/from/file\"\n").unwrap();
        let resolve = |flag: Option<&str>, env: Option<&str>, file: Option<&std::path::Path>| {
            resolve_data_dir(flag.map(std::path::Path::new), env.map(Into::into), file).unwrap()
        };
        assert_eq!(resolve(Some("/flag"), Some("/env"), Some(&file)), PathBuf::from("/flag"));
        assert_eq!(resolve(None, Some("/env"), Some(&file)), PathBuf::from("/env"));
        assert_eq!(resolve(None, Some(""), Some(&file)), PathBuf::from("/from/file"));
        assert_eq!(resolve(None, None, None), PathBuf::from(DEFAULT_DATA_DIR));
        let missing = resolve_data_dir(None, None, Some(&dir.join("absent.toml"))).unwrap_err().to_string();
        assert!(missing.contains("absent.toml"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn feature_names_are_checked_and_kept_in_order() {
        let config = |names: &str| {
            let text = format!("[[endpoints]]\nname = \"iris\"\nupstream = \"http://127.0.0.1:1\"\nfeature_names = {names}\n");
            read_tree(parse_toml(&text, std::path::Path::new("t.toml")).unwrap()).unwrap().validate()
        };
        let ok = config(r#"["sepal length (cm)", "sepal width (cm)"]"#).unwrap();
        assert_eq!(ok.endpoints[0].feature_names, ["sepal length (cm)", "sepal width (cm)"]);
        let twice = config(r#"["a", "b", "a"]"#).unwrap_err().to_string();
        assert!(twice.contains("endpoints[0].feature_names") && twice.contains("\"a\" is listed twice"), "{twice}");
        let empty = config(r#"["a", " "]"#).unwrap_err().to_string();
        assert!(empty.contains("entry 1 is empty"), "{empty}");
    }

    #[test]
    fn enums_print_their_documented_names() {
        assert_eq!(Durability::Async.to_string(), "async");
        assert_eq!(Durability::Fsync.to_string(), "fsync");
        assert_eq!(Oversize::Offload.to_string(), "offload");
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut tree = parse_toml(text, std::path::Path::new("t.toml"))?;
        apply_env(&mut tree, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        read_tree(tree)?.validate()
    }

    const EXAMPLE: &str = r#"
listen = "127.0.0.1:8080"
data_dir = "./inferlog-data"
[[endpoints]]
name = "iris"
upstream = "http://127.0.0.1:5001"
model_name = "iris-classifier"
model_version = "3"
[endpoints.capture]
enabled = true
sampling_fraction = 1.0
max_payload_bytes = 1048576
"#;

    #[test]
    fn monitor_section_reads_interval_or_cron_and_a_webhook() {
        let text = format!(
            "{EXAMPLE}[endpoints.monitor]\nschedule = \"*/5 * * * *\"\nwindow = \"30m\"\nslices = [\"model_version\"]\nwebhook_url = \"http://127.0.0.1:9/hook\"\n"
        );
        let c = load(&text, &[]).unwrap();
        let m = c.endpoints[0].monitor.as_ref().unwrap();
        assert_eq!(m.window_ms, 30 * 60_000);
        assert_eq!(m.slices, vec!["model_version".to_string()]);
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:02:30Z").unwrap().to_utc();
        assert_eq!(m.schedule.next_after(at).to_rfc3339(), "2026-11-22T10:05:00+00:00");
        let hook = m.webhook.as_ref().unwrap();
        assert_eq!((hook.attempts, hook.backoff), (5, Duration::from_secs(1)));

        let every = load(&format!("{EXAMPLE}[endpoints.monitor]\nschedule = \"90s\"\n"), &[]).unwrap();
        let m = every.endpoints[0].monitor.as_ref().unwrap();
        assert_eq!(m.schedule.next_after(at).to_rfc3339(), "2026-11-22T10:04:00+00:00");
        assert_eq!(m.window_ms, 3_600_000);
        assert!(m.webhook.is_none());
        assert!(load(EXAMPLE, &[]).unwrap().endpoints[0].monitor.is_none());
    }

    #[test]
    fn bad_monitor_settings_name_their_key() {
        for (line, key, reason) in [
            ("schedule = \"every hour\"", "endpoints[0].monitor.schedule", "not a cron expression"),
            ("schedule = \"5x\"", "endpoints[0].monitor.schedule", "unit must be"),
            ("window = \"0m\"", "endpoints[0].monitor.window", "positive"),
            ("webhook_url = \"ftp://x/y\"", "endpoints[0].monitor.webhook_url", "http(s)"),
            ("webhook_url = \"http://x\"\nwebhook_attempts = 0", "endpoints[0].monitor.webhook_attempts", "greater than 0"),
        ] {
            let err = load(&format!("{EXAMPLE}[endpoints.monitor]\n{line}\n"), &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(reason), "{line}: {err}");
        }
    }

    #[test]
    fn targets_and_shadow_are_read_and_checked() {
        let text = r#"
[[endpoints]]
name = "chat"
model_version = 7
sticky_header = "X-User"
[[endpoints.targets]]
name = "a"
upstream = "http://127.0.0.1:1"
weight = 90
[[endpoints.targets]]
name = "b"
upstream = "http://127.0.0.1:2"
model_version = "8"
weight = 10
[endpoints.shadow]
upstream = "http://127.0.0.1:3"
fraction = 0.25
"#;
        let c = load(text, &[]).unwrap();
        let e = &c.endpoints[0];
        assert_eq!(e.targets.iter().map(|t| (t.name.as_str(), t.model_version.as_str(), t.weight)).collect::<Vec<_>>(), [("a", "7", 90), ("b", "8", 10)]);
        assert_eq!(e.sticky_header.as_deref(), Some("x-user"));
        let shadow = e.shadow.as_ref().unwrap();
        assert_eq!((shadow.name.as_str(), shadow.model_version.as_str(), shadow.fraction, shadow.timeout), ("shadow", "7", 0.25, Duration::from_secs(60)));
        let single = load(EXAMPLE, &[]).unwrap();
        assert_eq!(single.endpoints[0].targets[0].name, DEFAULT_TARGET);

        let ep = "[[endpoints]]\nname = \"m\"\n";
        let target = |name: &str, weight: u32| format!("[[endpoints.targets]]\nname = \"{name}\"\nupstream = \"http://h:1\"\nweight = {weight}\n");
        for (text, key, reason) in [
            (ep.to_string(), "endpoints[0].upstream", "missing"),
            (format!("{ep}upstream = \"http://h:1\"\n{}", target("a", 1)), "endpoints[0].targets", "not both"),
            (format!("{ep}{}{}", target("a", 1), target("a", 1)), "endpoints[0].targets[1].name", "defined twice"),
            (format!("{ep}{}{}", target("a", 0), target("b", 0)), "endpoints[0].targets", "above 0"),
            (format!("{ep}{}", target("a b", 1)), "endpoints[0].targets[0].name", "letters, digits"),
            (format!("{ep}sticky_header = \"x user\"\n{}", target("a", 1)), "endpoints[0].sticky_header", "not a header name"),
            (format!("{ep}{}[endpoints.shadow]\nname = \"a\"\nupstream = \"http://h:2\"\n", target("a", 1)), "endpoints[0].shadow.name", "no target uses"),
            (format!("{ep}{}[endpoints.shadow]\nupstream = \"http://h:2\"\nfraction = 1.5\n", target("a", 1)), "endpoints[0].shadow.fraction", "between 0 and 1"),
        ] {
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(reason), "{text}\n→ {err}");
        }
    }

    #[test]
    fn example_config_is_valid() {
        let c = load(EXAMPLE, &[]).unwrap();
        assert_eq!(c.endpoints[0].model_name, "iris-classifier");
        assert_eq!(c.endpoints[0].capture.max_payload_bytes, 1 << 20);
        assert_eq!(c.durability, Durability::Async);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(&format!("{EXAMPLE}\nsampling = 2\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("sampling"), "{err}");
        let err = load(&EXAMPLE.replace("enabled = true", "enabeld = true"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("endpoints[0].capture") && err.contains("enabeld"), "{err}");
    }

    #[test]
    fn retention_and_oversize_settings_are_checked() {
        let c = load(&format!("{EXAMPLE}oversize = \"offload\"\n[endpoints.retention]\nolder_than = \"30d\"\n"), &[]).unwrap();
        let e = &c.endpoints[0];
        assert_eq!((e.capture.oversize, e.capture.offload_max_bytes, e.capture.kept_body_bytes()), (Oversize::Offload, DEFAULT_OFFLOAD_MAX_BYTES, DEFAULT_OFFLOAD_MAX_BYTES));
        let retention = e.retention.as_ref().unwrap();
        assert_eq!(retention.older_than_ms, 30 * 86_400_000);
        assert!(matches!(retention.schedule, Schedule::Every(d) if d == Duration::from_secs(3600)));
        let plain = load(EXAMPLE, &[]).unwrap();
        assert_eq!((plain.endpoints[0].capture.oversize, plain.endpoints[0].capture.kept_body_bytes()), (Oversize::Truncate, 1 << 20));
        for (extra, key) in [
            ("oversize = \"spill\"\n", "endpoints[0].capture.oversize"),
            ("offload_max_bytes = 10\n", "endpoints[0].capture.offload_max_bytes"),
            ("oversize = \"offload\"\noffload_max_bytes = 200000000\n", "endpoints[0].capture.offload_max_bytes"),
            ("[endpoints.retention]\nolder_than = \"soon\"\n", "endpoints[0].retention.older_than"),
            ("[endpoints.retention]\nolder_than = \"1d\"\nschedule = \"61 * * * *\"\n", "endpoints[0].retention.schedule"),
            ("[endpoints.retention]\nschedule = \"1h\"\n", "endpoints[0].retention"),
        ] {
            let err = load(&format!("{EXAMPLE}{extra}"), &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn invalid_values_are_named_with_reason() {
        let err = load(&EXAMPLE.replace("1.0\n", "1.5\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("endpoints[0].capture.sampling_fraction") && err.contains("1.5"), "{err}");
        let err = load(&EXAMPLE.replace("http://127.0.0.1:5001", "ftp://x"), &[]).unwrap_err().to_string();
        assert!(err.contains("endpoints[0].upstream"), "{err}");
        let err = load(&EXAMPLE.replace("http://127.0.0.1:5001", "https://svc:s3cret@models.internal"), &[]).unwrap_err().to_string();
        assert!(err.contains("credentials in upstream URLs") && !err.contains("s3cret"), "{err}");
        let tls = "[tls]\ncert = \"c.pem\"\n";
        let err = load(&format!("{EXAMPLE}{tls}"), &[]).unwrap_err().to_string();
        assert!(err.contains("tls.key"), "{err}");
        let c = load(&EXAMPLE.replace("http://127.0.0.1:5001", "https://models.internal/v1"), &[("INFERLOG_TLS__UPSTREAM_CA", "/etc/ca.pem")]).unwrap();
        assert_eq!(c.endpoints[0].targets[0].upstream.scheme(), "https");
        assert_eq!(c.upstream_ca.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        let err = load(&format!("durability = \"later\"\n{EXAMPLE}"), &[]).unwrap_err().to_string();
        assert!(err.contains("durability"), "{err}");
    }

    #[test]
    fn env_overrides_top_level_and_endpoint_keys() {
        let c = load(
            EXAMPLE,
            &[
                ("INFERLOG_DURABILITY", "fsync"),
                ("INFERLOG_ENDPOINTS__IRIS__CAPTURE__SAMPLING_FRACTION", "0.25"),
                ("INFERLOG_ENDPOINTS__IRIS__MODEL_VERSION", "7"),
                ("INFERLOG_METADATA_HEADERS", "user-agent, x-tenant"),
                ("INFERLOG_LOG", "debug"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(c.durability, Durability::Fsync);
        assert_eq!(c.endpoints[0].capture.sampling_fraction, 0.25);
        assert_eq!(c.endpoints[0].model_version, "7");
        assert_eq!(c.metadata_headers, vec!["user-agent", "x-tenant"]);
        let err = load(EXAMPLE, &[("INFERLOG_LISTN", "x")]).unwrap_err().to_string();
        assert!(err.contains("INFERLOG_LISTN"), "{err}");
        for key in TOP_LEVEL_KEYS {
            let var = format!("INFERLOG_{}", key.to_uppercase());
            let err = load(EXAMPLE, &[(var.as_str(), "\"not-a-value\"")]).err().map(|e| e.to_string());
            // Each listed key is a real key: any error is about its value, never an unknown field.
            assert!(err.as_deref().map_or(true, |e| !e.contains("unknown field")), "{key}: {err:?}");
        }
        let err = load(EXAMPLE, &[("INFERLOG_ENDPOINTS__WINE__UPSTREAM", "http://x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("wine"), "{err}");
    }

    #[test]
    fn credentials_are_never_metadata() {
        let err = load(&format!("metadata_headers = [\"Authorization\"]\n{EXAMPLE}"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata_headers[0]"), "{err}");
    }

    #[test]
    fn connection_and_request_memory_keys_have_defaults_and_are_checked() {
        let c = load(EXAMPLE, &[]).unwrap();
        assert_eq!((c.header_read_timeout, c.keep_alive_timeout), (Duration::from_secs(10), Duration::from_secs(60)));
        assert_eq!((c.max_connections, c.max_request_bytes_in_flight), (None, 256 << 20));
        let c = load(&format!("max_connections = 10\n{EXAMPLE}"), &[("INFERLOG_KEEP_ALIVE_TIMEOUT_MS", "5000")]).unwrap();
        assert_eq!((c.max_connections, c.keep_alive_timeout), (Some(10), Duration::from_secs(5)));
        for (line, key) in [
            ("max_connections = 0", "max_connections"),
            ("header_read_timeout_ms = 0", "header_read_timeout_ms"),
            ("max_request_bytes = 2048\nmax_request_bytes_in_flight = 1024", "max_request_bytes_in_flight"),
        ] {
            let err = load(&format!("{line}\n{EXAMPLE}"), &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{line}: {err}");
        }
    }
}

//! SQL over the inference tables: every Delta table under the tables root (local or on an
//! object store, see `inferlog_core::layout`) is registered in a DataFusion session under its
//! folder name (`iris_payload`, ...).

mod functions;
mod output;

pub use functions::InferlogFunctions;
pub use output::{arrow_stream, format, json_array, write_output, OutputFormat};

pub use deltalake::arrow::record_batch::RecordBatch;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use deltalake::datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::DeltaTableBuilder;
use inferlog_core::Layout;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no tables at {0} (has `inferlog serve` run with this --data-dir or --tables-uri?)")]
    NoTables(String),
    #[error("cannot list the tables at {root}: {message}")]
    Store { root: String, message: String },
    #[error("cannot open table {table}: {message}")]
    Table { table: String, message: String },
    #[error("{0}")]
    Sql(String),
    #[error("the query needs more memory than its limit (query_memory_bytes): {0}")]
    Memory(String),
    #[error("cannot format the result: {0}")]
    Format(String),
}

/// The Delta tables under the tables root, as (name, URL), by name.
pub async fn list_tables(layout: &Layout) -> Result<Vec<(String, url::Url)>, QueryError> {
    use deltalake::logstore::object_store::ObjectStore as _;
    let root = layout.tables_root();
    if let Ok(dir) = root.to_file_path() {
        // A data dir that never held a table, named as such.
        if !dir.is_dir() {
            return Err(QueryError::NoTables(dir.display().to_string()));
        }
    }
    let store_err = |e: String| QueryError::Store { root: root.to_string(), message: e };
    let store = deltalake::logstore::store_for(root, std::iter::empty::<(String, String)>()).map_err(|e| store_err(e.to_string()))?;
    let listing = store.list_with_delimiter(None).await.map_err(|e| store_err(e.to_string()))?;
    let mut out = Vec::new();
    for folder in listing.common_prefixes {
        let Some(name) = folder.filename().map(str::to_string) else { continue };
        let url = layout.table(&name);
        if is_delta_table(&url).await.map_err(|e| store_err(e.to_string()))? {
            out.push((name, url));
        }
    }
    out.sort();
    Ok(out)
}

async fn is_delta_table(url: &url::Url) -> Result<bool, deltalake::DeltaTableError> {
    use deltalake::logstore::LogStore as _;
    DeltaTableBuilder::from_url(url.clone())?.build()?.log_store().is_delta_table_location().await
}

/// Which version of the tables a session reads (Delta time travel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The same version number in every table; a table that had not reached it is left out.
    Version(u64),
    /// Each table as it was at that moment; a table created later is left out.
    Timestamp(chrono::DateTime<chrono::Utc>),
}

impl std::str::FromStr for AsOf {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(version) = s.trim().parse::<u64>() {
            return Ok(AsOf::Version(version));
        }
        parse_utc_time(s).map(AsOf::Timestamp).map_err(|_| {
            format!("`{}` is neither a table version (a number) nor a UTC time (2026-11-20, 2026-11-20T10:00:00Z)", s.trim())
        })
    }
}

/// A time given on the command line: RFC 3339, `YYYY-MM-DD[ HH:MM[:SS[.f]]]` (UTC) or a date.
pub fn parse_utc_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc());
        }
    }
    if let Some(midnight) = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)) {
        return Ok(midnight.and_utc());
    }
    Err(format!("`{s}` is not a UTC time (2026-11-20, 2026-11-20 10:00, 2026-11-20T10:00:00Z)"))
}

/// A session with every table of the data directory registered (at its latest version, or
/// as of `as_of`), and the `inference_table(...)` and `labeled(...)` table functions.
pub async fn session(layout: &Layout, as_of: Option<AsOf>) -> Result<SessionContext, QueryError> {
    session_with(layout, as_of, &|_| true).await
}

/// [`session`] with only the tables `visible` accepts (by name): a caller sees, and can name,
/// nothing else.
pub async fn session_with(
    layout: &Layout,
    as_of: Option<AsOf>,
    visible: &(dyn Fn(&str) -> bool + Sync),
) -> Result<SessionContext, QueryError> {
    session_in(layout, as_of, visible, Arc::new(RuntimeEnv::default())).await
}

/// Memory for the sessions that share it: sorts, joins and aggregations of all their
/// queries together hold at most `bytes`, spilling to disk or failing beyond. (Values a
/// function computes, such as `repeat()`'s, are not counted: see `ReadLimits`.)
pub fn memory_limited_runtime(bytes: usize) -> Result<Arc<RuntimeEnv>, QueryError> {
    // Names the largest consumers in the error when the pool runs out.
    let consumers = std::num::NonZeroUsize::new(3).expect("3 > 0");
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(TrackConsumersPool::new(FairSpillPool::new(bytes), consumers)))
        .build_arc()
        .map_err(sql_err)
}

/// [`session_with`] on a given runtime (its memory pool, disk manager and object stores).
pub async fn session_in(
    layout: &Layout,
    as_of: Option<AsOf>,
    visible: &(dyn Fn(&str) -> bool + Sync),
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionContext, QueryError> {
    let config = SessionConfig::new()
        // Point lookups (request_id = '…') skip row groups and pages by statistics and
        // bloom filters instead of decoding whole files.
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        // SHOW TABLES, SHOW COLUMNS and information_schema.*: they list only the registered
        // tables, which are the ones the caller may see.
        .with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let mut providers = std::collections::HashMap::new();
    for (name, url) in list_tables(layout).await?.into_iter().filter(|(name, _)| visible(name)) {
        let table_err = |message: String| QueryError::Table { table: name.clone(), message };
        let builder = DeltaTableBuilder::from_url(url).map_err(|e| table_err(e.to_string()))?;
        let table = match as_of {
            None => builder.load().await.map_err(|e| table_err(e.to_string()))?,
            Some(as_of) => {
                let builder = match as_of {
                    AsOf::Version(v) => builder.with_version(v),
                    AsOf::Timestamp(t) => builder.with_timestamp(t),
                };
                match builder.load().await {
                    Ok(table) if existed_at(&table, as_of) => table,
                    // The table did not exist yet at that point of history.
                    _ => continue,
                }
            }
        };
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| table_err(e.to_string()))?;
        let provider = table.table_provider().await.map_err(|e| table_err(e.to_string()))?;
        ctx.register_table(name.as_str(), provider.clone()).map_err(|e| table_err(e.to_string()))?;
        providers.insert(name, provider);
    }
    ctx.register_relation_planner(Arc::new(functions::InferlogFunctions::new(providers)))
        .map_err(|e| QueryError::Sql(e.to_string()))?;
    Ok(ctx)
}

/// Whether the loaded version was already committed at the `as_of` time (Delta falls back
/// to the first version for a time before the table existed).
fn existed_at(table: &deltalake::DeltaTable, as_of: AsOf) -> bool {
    let AsOf::Timestamp(t) = as_of else { return true };
    let (Some(version), Ok(state)) = (table.version(), table.snapshot()) else { return false };
    // Unknown for a version covered by a checkpoint; such a version is never the fallback.
    state.version_timestamp(version).is_none_or(|committed_ms| committed_ms <= t.timestamp_millis())
}

/// The result of a statement: its schema (known even when no row came back) and rows.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Runs one SQL statement and collects its result.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<QueryResult, QueryError> {
    let df = ctx.sql(sql).await.map_err(sql_err)?;
    collect(df).await
}

/// How much of a remote caller's result is kept.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_rows: usize,
    /// In bytes of Arrow data (the values' buffers), checked as batches arrive.
    pub max_result_bytes: usize,
}

/// Runs one read-only statement (no DDL, no `COPY`/`INSERT`, no `SET`) for a remote caller.
/// The result is read batch by batch and cut at `limits` (the boolean: whether it was);
/// the rest of the plan is never computed.
pub async fn run_read_only(ctx: &SessionContext, sql: &str, limits: ReadLimits) -> Result<(QueryResult, bool), QueryError> {
    use futures::StreamExt;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(sql_err)?;
    // One row more than the limit tells whether the result was cut.
    let df = df.limit(0, Some(limits.max_rows.saturating_add(1))).map_err(sql_err)?;
    let schema = df.schema().inner().clone();
    let mut stream = df.execute_stream().await.map_err(sql_err)?;
    let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(sql_err)?;
        let batch_bytes = data_bytes(&batch)?;
        let rows_left = limits.max_rows - rows;
        let bytes_left = limits.max_result_bytes - bytes;
        if batch.num_rows() <= rows_left && batch_bytes <= bytes_left {
            rows += batch.num_rows();
            bytes += batch_bytes;
            batches.push(batch);
            continue;
        }
        // Keep the rows that fit, by the batch's average row size.
        let per_row = batch_bytes.div_ceil(batch.num_rows().max(1)).max(1);
        let keep = rows_left.min(bytes_left / per_row);
        if keep > 0 {
            batches.push(batch.slice(0, keep));
        }
        return Ok((QueryResult { schema, batches }, true));
    }
    Ok((QueryResult { schema, batches }, false))
}

/// The bytes of a batch's values, counting only the rows it holds (a slice of a larger
/// batch shares its buffers).
fn data_bytes(batch: &RecordBatch) -> Result<usize, QueryError> {
    use deltalake::arrow::array::Array as _;
    batch.columns().iter().try_fold(0usize, |sum, column| {
        let size = column.to_data().get_slice_memory_size().map_err(|e| QueryError::Format(e.to_string()))?;
        Ok(sum.saturating_add(size))
    })
}

async fn collect(df: deltalake::datafusion::dataframe::DataFrame) -> Result<QueryResult, QueryError> {
    let schema = df.schema().inner().clone();
    let batches = df.collect().await.map_err(sql_err)?;
    Ok(QueryResult { schema, batches })
}

fn sql_err(e: deltalake::datafusion::error::DataFusionError) -> QueryError {
    use deltalake::datafusion::error::DataFusionError;
    match e.find_root() {
        DataFusionError::ResourcesExhausted(message) => QueryError::Memory(one_line(message)),
        _ => QueryError::Sql(one_line(&e.to_string())),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Total rows of a result.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

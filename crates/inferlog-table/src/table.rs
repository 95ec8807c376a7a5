//! Opening and creating inference tables, addressed by URL.

use crate::schema::{payload_schema, PARTITION_COLUMN};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::StructType;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table {url}: {source}")]
    Delta {
        url: String,
        #[source]
        source: DeltaTableError,
    },
    #[error("cannot read the capture log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the table folder {path}: {source}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build a batch of records: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    #[error("invalid table location `{0}`")]
    Location(String),
}

fn delta(url: &Url) -> impl FnOnce(DeltaTableError) -> TableError + '_ {
    move |source| TableError::Delta {
        url: url.to_string(),
        source,
    }
}

/// Whether a Delta table is at `url` (its log has a commit). Asks the store, so it holds for
/// tables on object storage as for local ones.
pub async fn exists(url: &Url) -> crate::Result<bool> {
    use deltalake::logstore::LogStore as _;
    let table = deltalake::DeltaTableBuilder::from_url(url.clone()).and_then(|b| b.build()).map_err(delta(url))?;
    table.log_store().is_delta_table_location().await.map_err(delta(url))
}

/// The table at `url` at its latest version, or an unloaded handle (no version) when no table
/// is there yet. Looking for the log first keeps Delta's kernel from logging a failed load,
/// an ERROR line, for every table about to be created.
pub async fn load_if_exists(url: &Url) -> Result<DeltaTable, DeltaTableError> {
    use deltalake::logstore::LogStore as _;
    let mut table = deltalake::DeltaTableBuilder::from_url(url.clone())?.build()?;
    if table.log_store().is_delta_table_location().await? {
        table.load().await?;
    }
    Ok(table)
}

/// Opens the inference table at `url`, creating it (partitioned by `date`) when absent.
/// Safe when another writer creates it at the same moment.
pub async fn open_or_create(url: &Url, checkpoint_interval: u64) -> crate::Result<DeltaTable> {
    open_or_create_with(url, &payload_schema(), &[PARTITION_COLUMN], checkpoint_interval).await
}

/// Opens the table at `url`, creating it with `schema` and `partition_columns` when absent.
pub async fn open_or_create_with(
    url: &Url,
    schema: &deltalake::arrow::datatypes::Schema,
    partition_columns: &[&str],
    checkpoint_interval: u64,
) -> crate::Result<DeltaTable> {
    if url.scheme() == "file" {
        // A local table's folder may have been removed; object stores need no folders.
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path).map_err(|source| TableError::Folder {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    let table = load_if_exists(url).await.map_err(delta(url))?;
    if table.version().is_some() {
        return Ok(table);
    }
    let schema: StructType = schema.try_into_kernel().map_err(|e| TableError::Delta {
        url: url.to_string(),
        source: e.into(),
    })?;
    let interval = checkpoint_interval.to_string();
    let created = table
        .create()
        .with_columns(schema.fields().cloned())
        .with_partition_columns(partition_columns.iter().copied())
        .with_save_mode(SaveMode::Ignore)
        .with_configuration_property(TableProperty::CheckpointInterval, Some(interval.as_str()))
        .with_configuration_property(TableProperty::LogRetentionDuration, Some("interval 7 days"))
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another writer won the race to create it: use theirs.
        Err(DeltaTableError::VersionAlreadyExists(_)) => {
            deltalake::open_table(url.clone()).await.map_err(delta(url))
        }
        Err(e) => Err(delta(url)(e)),
    }
}

/// The table's version as a signed number; -1 before its first commit.
pub fn version_of(table: &DeltaTable) -> i64 {
    table.version().map_or(-1, |v| v as i64)
}

/// The last log sequence number this writer (`app_id`) committed to the table; 0 if none.
pub async fn committed_lsn(table: &DeltaTable, app_id: &str) -> crate::Result<u64> {
    let version = application_version(table, app_id).await?;
    Ok(version.map(|v| v.max(0) as u64).unwrap_or(0))
}

/// The version the application `app_id` last recorded in the table (a Delta application
/// transaction committed atomically with its rows); `None` if it never did.
pub async fn application_version(table: &DeltaTable, app_id: &str) -> crate::Result<Option<i64>> {
    let url = table.table_url().clone();
    let snapshot = table.snapshot().map_err(delta(&url))?;
    snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(delta(&url))
}

/// How long a start waits for the tables' store to answer.
pub const STORE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Lists the tables root once: a store that cannot be reached, or refuses the credentials,
/// is named at start rather than discovered by the first commit.
pub async fn check_store(root: &Url) -> Result<(), String> {
    let store = root_store(root)?;
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.list_with_delimiter(None)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", STORE_CHECK_TIMEOUT.as_secs())),
    }
}

/// The object store rooted at the tables root, configured as delta-rs configures its tables'
/// (the `AWS_*`, `GOOGLE_*`, `AZURE_*` variables): for the objects Inferlog keeps beside them.
pub fn root_store(root: &Url) -> Result<std::sync::Arc<dyn deltalake::logstore::object_store::ObjectStore>, String> {
    deltalake::logstore::store_for(root, std::iter::empty::<(String, String)>()).map_err(|e| e.to_string())
}

/// The control state shared by every gateway writing these tables: beside tables on object
/// storage (`{tables_uri}/_inferlog/state/`), else in the gateway's `{data_dir}/state/`.
///
/// A data dir that kept its documents locally before its tables moved to a store (tokens,
/// capture and traffic changes) has each one the store lacks imported, so an upgrade neither
/// locks callers out nor turns a capture toggled off back on.
pub async fn shared_state(layout: &inferlog_core::Layout) -> Result<inferlog_core::SharedState, String> {
    use inferlog_core::shared_state::{CAPTURE, TOKENS, TRAFFIC};
    if layout.tables_are_local() {
        return Ok(inferlog_core::SharedState::local(layout.state_dir()));
    }
    let root = layout.tables_root();
    let shared = inferlog_core::SharedState::in_store(root_store(root)?, root.as_str());
    for name in [CAPTURE, TRAFFIC, TOKENS] {
        let local = layout.state_dir().join(format!("{name}.json"));
        let Ok(bytes) = std::fs::read(&local) else { continue };
        if shared.create_if_absent(name, bytes).await? {
            tracing::info!(from = %local.display(), to = %shared.location(name), "imported the data dir's saved state into the shared state");
        }
    }
    Ok(shared)
}

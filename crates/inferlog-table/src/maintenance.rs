//! Deleting rows for good: retention (rows older than a time) and erasure (one caller's or one
//! exchange's rows, everywhere). Each table's rows are deleted in one commit; the offloaded
//! bodies of the deleted rows are removed at once, and the table is vacuumed.
//!
//! Retention ([`Purge::AfterReaders`]) vacuums like compaction: data files replaced an hour or
//! more ago leave the disk, so a query or unpack pass reading the version just before the
//! delete keeps its files; the rows' files go at the next run or compaction after that hour.
//! Erasure ([`Purge::Now`]) removes every replaced file at once, because one may still hold
//! the erased rows; a reader of an older version may then fail and retry.

use crate::table::exists;
use deltalake::datafusion::prelude::{col, lit, Expr};
use deltalake::datafusion::scalar::ScalarValue;
use crate::TableError;
use deltalake::arrow::array::{Array, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTableError;
use inferlog_core::record::{is_offload_path, OFFLOAD_DIR};
use std::collections::HashSet;
use inferlog_core::Layout;
use deltalake::logstore::object_store::{self, path::Path as StorePath, ObjectStoreExt as _};
use futures::TryStreamExt as _;
use std::time::Duration;

/// What one table lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    pub table: String,
    pub rows: usize,
    pub files_removed: usize,
}

/// When the data files a delete replaced leave the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Retention: files replaced at least compaction's vacuum retention (an hour) ago, by this
    /// or earlier runs, so a reader of a recent version never loses a file under it.
    AfterReaders,
    /// Erasure: every replaced file at once (one may still hold the erased rows).
    Now,
}

/// An offloaded body no row names (its record was never logged, or a crash came between the
/// file and the log write) is removed once it is this old.
const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// Deletes the rows matching each predicate from its table (tables that do not exist are
/// skipped), then removes their data files and offloaded bodies from disk.
pub async fn delete_where(layout: &Layout, predicates: &[(String, Expr)], purge: Purge) -> Result<Vec<Deleted>, TableError> {
    let mut out = Vec::new();
    for (name, predicate) in predicates {
        let url = layout.table(name);
        if !exists(&url).await? {
            continue;
        }
        let err = |e| TableError::Delta { url: url.to_string(), source: e };
        let table = deltalake::open_table(url.clone()).await.map_err(err)?;
        let side_files = offloaded_files(&table, predicate).await.map_err(err)?;
        let (table, metrics) = table.delete().with_predicate(predicate.clone()).await.map_err(err)?;
        // First the bodies of the deleted rows: once the commit is in, nothing names them, and
        // a failure further down must not leave them behind for good.
        let mut files_removed = remove_side_files(&table, &side_files).await.map_err(err)?;
        let retention = match purge {
            Purge::AfterReaders => chrono::Duration::from_std(crate::CompactionOptions::default().vacuum_retention)
                .unwrap_or(chrono::Duration::hours(1)),
            Purge::Now => chrono::Duration::zero(),
        };
        let (table, vacuumed) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await
            .map_err(err)?;
        files_removed += vacuumed.files_deleted.len();
        files_removed += sweep_orphaned_side_files(&table).await.map_err(err)?;
        out.push(Deleted { table: name.clone(), rows: metrics.num_deleted_rows.unwrap_or(0), files_removed });
    }
    Ok(out)
}

/// Removes the offloaded bodies at `relative_paths` beside the table (on its own store, local
/// or not).
async fn remove_side_files(table: &deltalake::DeltaTable, relative_paths: &[String]) -> Result<usize, DeltaTableError> {
    let store = table.object_store();
    let mut removed = 0;
    for relative in relative_paths.iter().filter(|p| is_offload_path(p)) {
        match store.delete(&StorePath::from(relative.as_str())).await {
            Ok(()) => removed += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(DeltaTableError::Generic(format!("cannot remove the offloaded body {relative}: {e}"))),
        }
    }
    Ok(removed)
}

/// Removes offloaded bodies (and half-written `.tmp` files) that no row of the table names and
/// that are older than [`ORPHAN_GRACE`]: a body on its way to a row (written before its record
/// is logged, or uploaded before its commit) is always younger.
async fn sweep_orphaned_side_files(table: &deltalake::DeltaTable) -> Result<usize, DeltaTableError> {
    let store = table.object_store();
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&StorePath::from(OFFLOAD_DIR)))
        .try_collect()
        .await
        .map_err(|e| DeltaTableError::Generic(format!("cannot list the offloaded bodies: {e}")))?;
    if listed.is_empty() {
        return Ok(0);
    }
    let named: HashSet<String> = offloaded_files(table, &lit(true)).await?.into_iter().collect();
    let now = chrono::Utc::now();
    let grace = chrono::Duration::from_std(ORPHAN_GRACE).unwrap_or(chrono::Duration::hours(1));
    let mut removed = 0;
    for meta in listed {
        let relative = meta.location.to_string();
        if now - meta.last_modified >= grace && !named.contains(&relative) {
            match store.delete(&meta.location).await {
                Ok(()) => removed += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(DeltaTableError::Generic(format!("cannot remove the offloaded body {relative}: {e}"))),
            }
        }
    }
    Ok(removed)
}

/// The side files (`request_offload`, `response_offload`) of the rows `predicate` selects;
/// none for tables without those columns.
async fn offloaded_files(table: &deltalake::DeltaTable, predicate: &Expr) -> Result<Vec<String>, DeltaTableError> {
    let generic = |e: deltalake::datafusion::error::DataFusionError| DeltaTableError::Generic(e.to_string());
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let frame = ctx.read_table(table.table_provider().await?).map_err(generic)?;
    let columns: Vec<&str> = OFFLOAD_COLUMNS
        .into_iter()
        .filter(|c| frame.schema().has_column_with_unqualified_name(c))
        .collect();
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let batches = frame
        .filter(predicate.clone())
        .and_then(|f| f.select_columns(&columns))
        .map_err(generic)?
        .collect()
        .await
        .map_err(generic)?;
    let mut files = Vec::new();
    for batch in batches {
        for column in batch.columns() {
            let text = cast(column, &DataType::Utf8).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
            let Some(text) = text.as_any().downcast_ref::<StringArray>() else { continue };
            files.extend(text.iter().flatten().map(str::to_string));
        }
    }
    Ok(files)
}

const OFFLOAD_COLUMNS: [&str; 2] = ["request_offload", "response_offload"];

/// The predicates of a retention run: every table of `endpoint`, rows older than `cutoff_ms`.
pub fn retention_predicates(endpoint: &str, cutoff_ms: i64) -> Vec<(String, Expr)> {
    let at = lit(ScalarValue::TimestampMicrosecond(Some(cutoff_ms.saturating_mul(1000)), Some("UTC".into())));
    let older = |column: &str| col(column).lt(at.clone());
    vec![
        (format!("{endpoint}_payload"), col("timestamp_ms").lt(lit(cutoff_ms))),
        (format!("{endpoint}_unpacked"), col("timestamp_ms").lt(lit(cutoff_ms))),
        (format!("{endpoint}_labels"), older("arrived_at")),
        (format!("{endpoint}_profile_metrics"), older("window_start")),
        (format!("{endpoint}_drift_metrics"), older("window_start")),
        (format!("{endpoint}_violations"), older("window_start")),
    ]
}

/// The predicates erasing exchanges: those of `client_request_id` (if given) and the request
/// ids given (their shadows and labels too).
pub fn erasure_predicates(endpoint: &str, client_request_id: Option<&str>, request_ids: &[String]) -> Vec<(String, Expr)> {
    let ids: Vec<Expr> = request_ids.iter().map(|id| lit(id.as_str())).collect();
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    if let Some(client) = client_request_id {
        rows.push(col("client_request_id").eq(lit(client)));
        labels.push(col("key_kind").eq(lit("client_request_id")).and(col("key").eq(lit(client))));
    }
    if !ids.is_empty() {
        rows.push(col("request_id").in_list(ids.clone(), false));
        labels.push(col("key_kind").eq(lit("request_id")).and(col("key").in_list(ids.clone(), false)));
    }
    let any = |exprs: Vec<Expr>| exprs.into_iter().reduce(Expr::or);
    let (Some(rows), Some(labels)) = (any(rows), any(labels)) else { return Vec::new() };
    let with_shadows = if ids.is_empty() { rows.clone() } else { rows.clone().or(col("shadow_of").in_list(ids, false)) };
    vec![
        (format!("{endpoint}_payload"), with_shadows),
        (format!("{endpoint}_unpacked"), rows),
        (format!("{endpoint}_labels"), labels),
    ]
}

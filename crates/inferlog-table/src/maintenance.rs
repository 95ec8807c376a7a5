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
use std::path::Path;
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
        // Offloaded bodies exist only beside local tables (offloading needs local tables).
        let table_dir = layout.local_table_dir(name);
        let err = |e| TableError::Delta { url: url.to_string(), source: e };
        let table = deltalake::open_table(url.clone()).await.map_err(err)?;
        let side_files = offloaded_files(&table, predicate).await.map_err(err)?;
        let (table, metrics) = table.delete().with_predicate(predicate.clone()).await.map_err(err)?;
        // First the bodies of the deleted rows: once the commit is in, nothing names them, and
        // a failure further down must not leave them behind for good.
        let mut files_removed = match &table_dir {
            Some(dir) => remove_side_files(dir, &side_files).map_err(err)?,
            None => 0,
        };
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
        if let Some(dir) = &table_dir {
            files_removed += sweep_orphaned_side_files(&table, dir).await.map_err(err)?;
        }
        out.push(Deleted { table: name.clone(), rows: metrics.num_deleted_rows.unwrap_or(0), files_removed });
    }
    Ok(out)
}

fn remove_side_files(table_dir: &Path, relative_paths: &[String]) -> Result<usize, DeltaTableError> {
    let mut removed = 0;
    for relative in relative_paths.iter().filter(|p| is_offload_path(p)) {
        match std::fs::remove_file(table_dir.join(relative)) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DeltaTableError::Generic(format!("cannot remove the offloaded body {relative}: {e}"))),
        }
    }
    Ok(removed)
}

/// Removes offloaded bodies (and half-written `.tmp` files) that no row of the table names and
/// that are older than [`ORPHAN_GRACE`]; then the date folders left empty.
async fn sweep_orphaned_side_files(table: &deltalake::DeltaTable, table_dir: &Path) -> Result<usize, DeltaTableError> {
    let root = table_dir.join(OFFLOAD_DIR);
    if !root.is_dir() {
        return Ok(0);
    }
    let named: HashSet<String> = offloaded_files(table, &lit(true)).await?.into_iter().collect();
    let io = |e: std::io::Error| DeltaTableError::Generic(format!("cannot sweep {}: {e}", root.display()));
    let mut removed = 0;
    for day in std::fs::read_dir(&root).map_err(io)? {
        let day = day.map_err(io)?.path();
        if !day.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&day).map_err(io)? {
            let file = file.map_err(io)?;
            let relative = format!(
                "{OFFLOAD_DIR}/{}/{}",
                day.file_name().unwrap_or_default().to_string_lossy(),
                file.file_name().to_string_lossy()
            );
            let old = file.metadata().and_then(|m| m.modified()).ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= ORPHAN_GRACE);
            if old && !named.contains(&relative) {
                match std::fs::remove_file(file.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
        // Only succeeds when the folder is empty.
        let _ = std::fs::remove_dir(&day);
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

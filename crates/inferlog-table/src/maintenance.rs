//! Deleting rows for good: retention (rows older than a time) and erasure (one caller's or one
//! exchange's rows, everywhere). Each table's rows are deleted in one commit, then the table is
//! vacuumed with no retention period, so the files that held them are removed from disk, not
//! only from the table's current version.

use crate::table::table_url;
use deltalake::datafusion::prelude::{col, lit, Expr};
use deltalake::datafusion::scalar::ScalarValue;
use crate::TableError;
use deltalake::arrow::array::{Array, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTableError;
use std::path::Path;

/// What one table lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    pub table: String,
    pub rows: usize,
    pub files_removed: usize,
}

/// Deletes the rows matching each predicate from its table (tables that do not exist are
/// skipped), then vacuums them.
pub async fn delete_where(data_dir: &Path, predicates: &[(String, Expr)]) -> Result<Vec<Deleted>, TableError> {
    let mut out = Vec::new();
    for (name, predicate) in predicates {
        if !data_dir.join("tables").join(name).join("_delta_log").is_dir() {
            continue;
        }
        let url = table_url(data_dir, name)?;
        let err = |e| TableError::Delta { url: url.to_string(), source: e };
        let table = deltalake::open_table(url.clone()).await.map_err(err)?;
        // Offloaded bodies of the rows about to go: removed once the delete is committed.
        let side_files = offloaded_files(&table, predicate).await.map_err(err)?;
        let (table, metrics) = table.delete().with_predicate(predicate.clone()).await.map_err(err)?;
        let (_, vacuumed) = table
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .await
            .map_err(err)?;
        let table_dir = data_dir.join("tables").join(name);
        let mut side_files_removed = 0;
        // Only paths of the shape the log writer makes; a row never names anything else.
        for relative in side_files.iter().filter(|p| p.starts_with("_offload/") && !p.contains("..")) {
            match std::fs::remove_file(table_dir.join(relative)) {
                Ok(()) => side_files_removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(DeltaTableError::Generic(format!("cannot remove the offloaded body {relative}: {e}")))),
            }
        }
        out.push(Deleted {
            table: name.clone(),
            rows: metrics.num_deleted_rows.unwrap_or(0),
            files_removed: vacuumed.files_deleted.len() + side_files_removed,
        });
    }
    Ok(out)
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

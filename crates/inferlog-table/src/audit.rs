//! The `_audit` table: who changed what, when, and how it went.

use crate::table::open_or_create_with;
use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::protocol::SaveMode;
use inferlog_core::record::AuditEvent;
use inferlog_core::Layout;
use std::sync::Arc;

pub use inferlog_core::layout::AUDIT_TABLE;

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("who", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("endpoint", DataType::Utf8, true),
        Field::new("detail", DataType::Utf8, false),
        Field::new("result", DataType::Utf8, false),
    ])
}

/// Appends `events` to the `_audit` table in one commit.
pub async fn append(layout: &Layout, events: &[AuditEvent]) -> crate::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let schema = schema();
    let text = |f: &dyn Fn(&AuditEvent) -> Option<&str>| -> ArrayRef { Arc::new(StringArray::from_iter(events.iter().map(f))) };
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.at_ms * 1000)).with_timezone("UTC")),
            text(&|e| Some(&e.who)),
            text(&|e| Some(&e.action)),
            text(&|e| e.endpoint.as_deref()),
            text(&|e| Some(&e.detail)),
            text(&|e| Some(&e.result)),
        ],
    )?;
    let url = layout.audit();
    let table = open_or_create_with(&url, &schema, &[], 100).await?;
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .await
        .map_err(|e| crate::TableError::Delta { url: url.to_string(), source: e })?;
    Ok(())
}

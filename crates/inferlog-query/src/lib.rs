//! SQL over the inference tables: every Delta table under `{data_dir}/tables` is registered
//! in a DataFusion session under its folder name (`iris_payload`, ...).

use deltalake::datafusion::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no tables folder at {0} (has `inferlog serve` run with this --data-dir?)")]
    NoTables(String),
    #[error("cannot open table {table}: {message}")]
    Table { table: String, message: String },
    #[error("{0}")]
    Sql(String),
    #[error("cannot format the result: {0}")]
    Format(String),
}

/// Output formats of `inferlog query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!("unknown format `{other}` (table, csv or json)")),
        }
    }
}

/// The Delta tables under `{data_dir}/tables`, as (name, folder).
pub fn list_tables(data_dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, QueryError> {
    let dir = data_dir.join("tables");
    let entries = std::fs::read_dir(&dir).map_err(|_| QueryError::NoTables(dir.display().to_string()))?;
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("_delta_log").is_dir())
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect();
    out.sort();
    Ok(out)
}

/// A session with every table of the data directory registered at its latest version.
pub async fn session(data_dir: &Path) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    for (name, path) in list_tables(data_dir)? {
        let table_err = |message: String| QueryError::Table { table: name.clone(), message };
        let abs = std::fs::canonicalize(&path).map_err(|e| table_err(e.to_string()))?;
        let url = url::Url::from_directory_path(&abs).map_err(|_| table_err("not a directory".into()))?;
        let table = deltalake::open_table(url).await.map_err(|e| table_err(e.to_string()))?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| table_err(e.to_string()))?;
        let provider = table.table_provider().await.map_err(|e| table_err(e.to_string()))?;
        ctx.register_table(name.as_str(), provider).map_err(|e| table_err(e.to_string()))?;
    }
    Ok(ctx)
}

/// Runs one SQL statement and collects its result.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let df = ctx.sql(sql).await.map_err(|e| QueryError::Sql(one_line(&e.to_string())))?;
    df.collect().await.map_err(|e| QueryError::Sql(one_line(&e.to_string())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Renders batches in the given format.
pub fn format(batches: &[RecordBatch], format: OutputFormat) -> Result<String, QueryError> {
    let ferr = |e: arrow::error::ArrowError| QueryError::Format(e.to_string());
    match format {
        OutputFormat::Table => Ok(arrow::util::pretty::pretty_format_batches(batches).map_err(ferr)?.to_string()),
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    w.write(&flatten_nested(b).map_err(ferr)?).map_err(ferr)?;
                }
            }
            String::from_utf8(buf).map_err(|e| QueryError::Format(e.to_string()))
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
                for b in batches {
                    w.write(b).map_err(ferr)?;
                }
                w.finish().map_err(ferr)?;
            }
            String::from_utf8(buf).map_err(|e| QueryError::Format(e.to_string()))
        }
    }
}

/// CSV has no nested values: lists, maps and structs are written as their text form
/// (`[a, b]`, `{k: v}`).
fn flatten_nested(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Array, ArrayRef, StringBuilder};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use std::sync::Arc;
    let nested = |t: &DataType| t.is_nested();
    if !batch.schema().fields().iter().any(|f| nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !nested(field.data_type()) {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
        let mut text = StringBuilder::new();
        for i in 0..column.len() {
            if column.is_null(i) {
                text.append_null();
            } else {
                text.append_value(formatter.value(i).to_string());
            }
        }
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        columns.push(Arc::new(text.finish()));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Total rows of a result.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

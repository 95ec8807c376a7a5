//! Rendering query results: text for the terminal, files for `--output`, and the HTTP
//! API's JSON and Arrow stream bodies.

use crate::{QueryError, QueryResult};
use deltalake::datafusion::arrow::record_batch::RecordBatch;
use std::path::Path;

/// Output formats of `inferlog query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    /// One JSON object per line.
    Json,
    /// Files only (`--output x.parquet`).
    Parquet,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" | "jsonl" | "ndjson" => Ok(OutputFormat::Json),
            "parquet" => Ok(OutputFormat::Parquet),
            other => Err(format!("unknown format `{other}` (table, csv, json or parquet)")),
        }
    }
}

/// How the text table shows a missing value.
pub const TABLE_NULL: &str = "NULL";

/// Renders batches as text in the given format.
pub fn format(batches: &[RecordBatch], format: OutputFormat) -> Result<String, QueryError> {
    let ferr = |e: arrow::error::ArrowError| QueryError::Format(e.to_string());
    match format {
        OutputFormat::Parquet => Err(QueryError::Format(
            "parquet is a file format: use --output FILE.parquet".into(),
        )),
        OutputFormat::Table => {
            // NULL must not look like an empty string.
            let options = arrow::util::display::FormatOptions::default().with_null(TABLE_NULL);
            Ok(arrow::util::pretty::pretty_format_batches_with_options(batches, &options).map_err(ferr)?.to_string())
        }
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


/// Writes a result to `path`, in `format` or else the format its extension names
/// (`.csv`, `.json`/`.jsonl`/`.ndjson`, `.parquet`, `.txt` for the text table).
pub fn write_output(result: &QueryResult, path: &Path, format: Option<OutputFormat>) -> Result<(), QueryError> {
    let format = match format {
        Some(f) => f,
        None => {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_lowercase();
            if ext == "txt" {
                OutputFormat::Table
            } else {
                ext.parse().map_err(|_| {
                    QueryError::Format(format!(
                        "cannot tell the format of {} from its extension: use .csv, .json, .parquet or --format",
                        path.display()
                    ))
                })?
            }
        }
    };
    let io_err = |e: std::io::Error| QueryError::Format(format!("cannot write {}: {e}", path.display()));
    if format == OutputFormat::Parquet {
        let file = std::fs::File::create(path).map_err(io_err)?;
        let perr = |e: deltalake::parquet::errors::ParquetError| QueryError::Format(e.to_string());
        let mut writer =
            deltalake::parquet::arrow::ArrowWriter::try_new(file, result.schema.clone(), None).map_err(perr)?;
        for batch in &result.batches {
            writer.write(batch).map_err(perr)?;
        }
        writer.close().map_err(perr)?;
        return Ok(());
    }
    let mut text = self::format(&result.batches, format)?;
    if format == OutputFormat::Table {
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io_err)
}

/// The rows as one JSON array of objects (explicit nulls), the HTTP API's default body.
pub fn json_array(batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let ferr = |e: arrow::error::ArrowError| QueryError::Format(e.to_string());
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        for b in batches {
            w.write(b).map_err(ferr)?;
        }
        w.finish().map_err(ferr)?;
    }
    if buf.is_empty() {
        buf.extend_from_slice(b"[]");
    }
    Ok(buf)
}

/// The result as an Arrow IPC stream (`application/vnd.apache.arrow.stream`).
pub fn arrow_stream(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let ferr = |e: arrow::error::ArrowError| QueryError::Format(e.to_string());
    let mut buf = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &result.schema).map_err(ferr)?;
        for b in &result.batches {
            w.write(b).map_err(ferr)?;
        }
        w.finish().map_err(ferr)?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn the_table_shows_null_apart_from_the_empty_string() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, true)]));
        let column = StringArray::from(vec![Some(""), None]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(column)]).unwrap();
        let text = format(&[batch], OutputFormat::Table).unwrap();
        let cells: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).skip(1).map(|l| l.trim_matches('|').trim()).collect();
        assert_eq!(cells, ["", "NULL"], "{text}");
    }
}

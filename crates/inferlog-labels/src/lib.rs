//! `{endpoint}_labels`: the ground truth for an endpoint's predictions, arriving late and
//! possibly more than once.
//!
//! A label is keyed by `(key_kind, key, row_index)`: the request id (or the caller's client
//! request id) of the exchange and which instance of it. Importing a key again replaces its
//! label (a Delta MERGE), and each label keeps the time it arrived. The `labeled('iris')`
//! table function (inferlog-query) joins labels to the unpacked predictions.

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use deltalake::datafusion::prelude::{col, lit, CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use deltalake::DeltaTableError;
use inferlog_payload::Value;
use inferlog_unpack::columns::{build_array, Kind, KindCounts};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{0}")]
    Input(String),
    #[error("table {url}: {source}")]
    Delta {
        url: String,
        #[source]
        source: DeltaTableError,
    },
    #[error(transparent)]
    Table(#[from] inferlog_table::TableError),
    #[error("reading the labels: {0}")]
    Query(#[from] deltalake::datafusion::error::DataFusionError),
    #[error("building the labels: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
}

/// What identifies the exchange a label belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The gateway's `request_id` (returned to the caller in `x-request-id`).
    RequestId,
    /// The caller's own `client_request_id`.
    ClientRequestId,
}

impl KeyKind {
    pub fn column(self) -> &'static str {
        match self {
            KeyKind::RequestId => "request_id",
            KeyKind::ClientRequestId => "client_request_id",
        }
    }
}

impl std::str::FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "request_id" => Ok(KeyKind::RequestId),
            "client_request_id" => Ok(KeyKind::ClientRequestId),
            other => Err(format!("unknown key `{other}` (request_id or client_request_id)")),
        }
    }
}

/// One label before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub kind: KeyKind,
    pub key: String,
    pub row_index: i64,
    pub value: Value,
}

/// Result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Labels in the input (after keeping the last of repeated keys).
    pub labels: usize,
    /// Of those, how many replaced an existing label.
    pub replaced: usize,
    /// Table version written.
    pub version: i64,
}

/// The table's columns; `label`'s type is chosen by the first import.
fn labels_schema(label: DataType) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key_kind", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("row_index", DataType::Int64, false),
        Field::new("label", label, true),
        Field::new("arrived_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("source", DataType::Utf8, true),
    ]))
}

/// Reads labels from a csv, parquet or json-lines file: `key_column` holds the key,
/// `label_column` the label, `row_index_column` (optional; else 0) the instance.
pub async fn read_file(
    path: &Path,
    kind: KeyKind,
    label_column: &str,
    row_index_column: Option<&str>,
) -> Result<Vec<Label>, LabelError> {
    let ctx = SessionContext::new();
    let location = path.to_str().ok_or_else(|| LabelError::Input(format!("{} is not a UTF-8 path", path.display())))?;
    if !path.is_file() {
        return Err(LabelError::Input(format!("no file {}", path.display())));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_lowercase();
    let dotted = format!(".{ext}");
    let key_column = kind.column();
    let df = match ext.as_str() {
        "csv" => {
            let inferred = ctx.read_csv(location, CsvReadOptions::new()).await?;
            // Ids are text even when they look like numbers (`007` must stay `007`).
            let schema = with_text_column(inferred.schema().as_arrow(), key_column);
            ctx.read_csv(location, CsvReadOptions::new().schema(&schema)).await?
        }
        "parquet" => ctx.read_parquet(location, ParquetReadOptions::default()).await?,
        "json" | "jsonl" | "ndjson" => {
            let options = || JsonReadOptions::default().newline_delimited(true).file_extension(&dotted);
            let inferred = ctx.read_json(location, options()).await?;
            let schema = with_text_column(inferred.schema().as_arrow(), key_column);
            ctx.read_json(location, options().schema(&schema)).await?
        }
        _ => {
            return Err(LabelError::Input(format!(
                "cannot tell the format of {} (use .csv, .parquet, .json or .jsonl)",
                path.display()
            )))
        }
    };
    let present: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    for wanted in [Some(key_column), Some(label_column), row_index_column].into_iter().flatten() {
        if !present.iter().any(|p| p == wanted) {
            return Err(LabelError::Input(format!(
                "{} has no column `{wanted}` (it has: {})",
                path.display(),
                present.join(", ")
            )));
        }
    }
    let mut exprs = vec![col(format!("\"{key_column}\"")).alias("key"), col(format!("\"{label_column}\"")).alias("label")];
    exprs.push(match row_index_column {
        Some(c) => col(format!("\"{c}\"")).alias("row_index"),
        None => lit(0i64).alias("row_index"),
    });
    let batches = df.select(exprs)?.collect().await?;
    let mut labels = Vec::new();
    let mut line = 0usize;
    for batch in &batches {
        let keys = cast(batch.column(0), &DataType::Utf8)?;
        let keys = keys.as_string::<i32>();
        let rows = cast(batch.column(2), &DataType::Int64)
            .map_err(|e| LabelError::Input(format!("row index column: {e}")))?;
        let rows = rows.as_primitive::<Int64Type>();
        let values = arrow_values(batch.column(1))?;
        for i in 0..batch.num_rows() {
            line += 1;
            if keys.is_null(i) || keys.value(i).is_empty() {
                return Err(LabelError::Input(format!("row {line}: `{key_column}` is empty")));
            }
            let row_index = if rows.is_null(i) { 0 } else { rows.value(i) };
            if row_index < 0 {
                return Err(LabelError::Input(format!("row {line}: row index {row_index} is negative")));
            }
            labels.push(Label { kind, key: keys.value(i).to_string(), row_index, value: values[i].clone() });
        }
    }
    Ok(labels)
}

/// `schema` with `column` read as text.
fn with_text_column(schema: &Schema, column: &str) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == column {
                Field::new(column, DataType::Utf8, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Schema::new(fields)
}

/// Label cells as values, whatever type the file gave them.
fn arrow_values(column: &ArrayRef) -> Result<Vec<Value>, LabelError> {
    let n = column.len();
    let value_at = |i: usize, f: &dyn Fn(usize) -> Value| if column.is_null(i) { Value::Null } else { f(i) };
    Ok(match column.data_type() {
        DataType::Boolean => {
            let a = column.as_boolean();
            (0..n).map(|i| value_at(i, &|i| Value::Bool(a.value(i)))).collect()
        }
        t if t.is_integer() => {
            let a = cast(column, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            (0..n).map(|i| value_at(i, &|i| Value::Int(a.value(i)))).collect()
        }
        t if t.is_floating() || t.is_numeric() => {
            let a = cast(column, &DataType::Float64)?;
            let a = a.as_primitive::<deltalake::arrow::datatypes::Float64Type>();
            (0..n).map(|i| value_at(i, &|i| Value::Float(a.value(i)))).collect()
        }
        _ => {
            let a = cast(column, &DataType::Utf8)?;
            let a = a.as_string::<i32>();
            (0..n).map(|i| value_at(i, &|i| Value::Str(a.value(i).to_string()))).collect()
        }
    })
}

/// Reads labels sent as JSON: an array of objects (or `{"rows": [...]}`), each with
/// `request_id` or `client_request_id`, `label`, and optionally `row_index`.
pub fn from_json(body: &[u8]) -> Result<Vec<Label>, LabelError> {
    let parsed: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| LabelError::Input(format!("body is not JSON: {e}")))?;
    let rows = match parsed {
        serde_json::Value::Array(rows) => rows,
        serde_json::Value::Object(mut o) => match o.remove("rows") {
            Some(serde_json::Value::Array(rows)) => rows,
            _ => return Err(LabelError::Input("expected an array of label objects, or {\"rows\": [...]}".into())),
        },
        _ => return Err(LabelError::Input("expected an array of label objects, or {\"rows\": [...]}".into())),
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let row_err = |m: &str| LabelError::Input(format!("row {i}: {m}"));
            let serde_json::Value::Object(row) = row else { return Err(row_err("not an object")) };
            let (kind, key) = match (row.get("request_id"), row.get("client_request_id")) {
                (Some(serde_json::Value::String(k)), _) if !k.is_empty() => (KeyKind::RequestId, k.clone()),
                (_, Some(serde_json::Value::String(k))) if !k.is_empty() => (KeyKind::ClientRequestId, k.clone()),
                _ => return Err(row_err("needs a non-empty string request_id or client_request_id")),
            };
            let row_index = match row.get("row_index") {
                None | Some(serde_json::Value::Null) => 0,
                Some(v) => v.as_i64().filter(|r| *r >= 0).ok_or_else(|| row_err("row_index must be a non-negative integer"))?,
            };
            let value = match row.get("label") {
                None => return Err(row_err("has no label")),
                Some(serde_json::Value::Null) => Value::Null,
                Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
                Some(serde_json::Value::Number(n)) => match n.as_i64() {
                    Some(i) => Value::Int(i),
                    None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                Some(serde_json::Value::String(s)) => Value::Str(s.clone()),
                Some(_) => return Err(row_err("label must be a number, string, boolean or null")),
            };
            Ok(Label { kind, key, row_index, value })
        })
        .collect()
}

/// Merges labels into `{endpoint}_labels`: a label whose key is already there replaces it.
pub async fn import(
    layout: &inferlog_core::Layout,
    endpoint: &str,
    labels: Vec<Label>,
    source: &str,
    checkpoint_interval: u64,
) -> Result<ImportReport, LabelError> {
    // The last label of a repeated key wins, as if imported one after the other.
    let mut last: HashMap<(KeyKind, &str, i64), usize> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        last.insert((l.kind, l.key.as_str(), l.row_index), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let labels: Vec<&Label> = keep.iter().map(|&i| &labels[i]).collect();
    if labels.is_empty() {
        return Err(LabelError::Input("no labels to import".into()));
    }
    let url = layout.labels(endpoint);
    let delta_err = |source: DeltaTableError| LabelError::Delta { url: url.to_string(), source };
    let existing = inferlog_table::load_if_exists(&url).await.map_err(delta_err)?;
    let existing_kind = match existing.version() {
        Some(_) => {
            let schema = existing.snapshot().map_err(delta_err)?.snapshot().arrow_schema();
            let field = schema.field_with_name("label")?;
            let kind = Kind::from_arrow(field.data_type()).ok_or_else(|| {
                LabelError::Input(format!("the labels table's label column has a type labels cannot be written to ({})", field.data_type()))
            })?;
            Some(kind)
        }
        None => None,
    };
    let mut counts = KindCounts::default();
    labels.iter().for_each(|l| counts.add(&l.value));
    let kind = match (existing_kind, counts.choose()) {
        (Some(existing), _) => existing,
        (None, Some(kind)) => kind,
        (None, None) => Kind::Text,
    };
    if counts.widens(kind).is_some() {
        return Err(LabelError::Input(
            "the labels table stores whole numbers; these labels have fractions (the label column cannot change type)".into(),
        ));
    }
    let cells: Vec<Option<&Value>> = labels.iter().map(|l| Some(&l.value)).collect();
    let mut misfits = Vec::new();
    let label_array = build_array(kind, "label", &cells, |row, e| misfits.push((row, e)));
    if let Some((row, e)) = misfits.first() {
        return Err(LabelError::Input(format!("label for {}: {e}", labels[*row].key)));
    }
    let schema = labels_schema(kind.arrow());
    let now = chrono::Utc::now().timestamp_micros();
    let n = labels.len();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(labels.iter().map(|l| l.kind.column()))),
            Arc::new(StringArray::from_iter_values(labels.iter().map(|l| l.key.as_str()))),
            Arc::new(Int64Array::from_iter_values(labels.iter().map(|l| l.row_index))),
            label_array,
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![Some(source); n])),
        ],
    )?;
    let table = inferlog_table::table::open_or_create_with(&url, &schema, &[], checkpoint_interval).await?;
    let ctx = SessionContext::new();
    let source_df = ctx.read_batch(batch)?;
    let predicate = col("target.key_kind")
        .eq(col("source.key_kind"))
        .and(col("target.key").eq(col("source.key")))
        .and(col("target.row_index").eq(col("source.row_index")));
    let (table, metrics) = table
        .merge(source_df, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .when_matched_update(|u| {
            u.update("label", col("source.label"))
                .update("arrived_at", col("source.arrived_at"))
                .update("source", col("source.source"))
        })
        .map_err(delta_err)?
        .when_not_matched_insert(|i| {
            i.set("key_kind", col("source.key_kind"))
                .set("key", col("source.key"))
                .set("row_index", col("source.row_index"))
                .set("label", col("source.label"))
                .set("arrived_at", col("source.arrived_at"))
                .set("source", col("source.source"))
        })
        .map_err(delta_err)?
        .await
        .map_err(delta_err)?;
    Ok(ImportReport {
        labels: n,
        replaced: metrics.num_target_rows_updated,
        version: inferlog_table::table::version_of(&table),
    })
}

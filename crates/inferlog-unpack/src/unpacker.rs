//! One unpack run: read what the payload table gained since the last run, parse it, and
//! append the typed rows to `{endpoint}_unpacked` together with the source version reached
//! (a Delta application transaction), so a crash between runs neither loses nor repeats rows.

use crate::columns::{build_array, Kind, KindCounts};
use crate::source::{NewRequests, SourceRow};
use crate::UnpackError;
use deltalake::arrow::array::{
    new_null_array, ArrayRef, Date32Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use inferlog_payload::{parse_request, parse_response, Instances, Value};
use std::collections::{HashMap, HashSet};
use inferlog_core::{EndpointTable, Layout};
use std::sync::{Arc, LazyLock};

/// Application id under which the unpacked table records the last source version it holds.
/// Every unpack commit carries it, so two unpackers writing one table at once conflict
/// instead of both appending.
pub const APP_ID: &str = "inferlog-unpack";
/// Set while a comparison pass (see [`crate::source`]) is committing in parts: the source
/// version it compares up to. A later run that finds it above [`APP_ID`]'s version finishes
/// the pass by comparing, because the rows already committed carry no version of their own.
pub const COMPARE_APP_ID: &str = "inferlog-unpack-compare";

/// The columns every unpacked table starts with; features and predictions follow.
pub const FIXED_COLUMNS: [&str; 8] = [
    "request_id",
    "client_request_id",
    "row_index",
    "date",
    "timestamp_ms",
    "model_version",
    "status_code",
    "unpack_error",
];

static FIXED_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("client_request_id", DataType::Utf8, true),
        Field::new("row_index", DataType::Int64, true),
        Field::new("date", DataType::Date32, false),
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("status_code", DataType::Int32, true),
        Field::new("unpack_error", DataType::Utf8, true),
    ]))
});

/// The schema an unpacked table is created with.
pub fn fixed_schema() -> SchemaRef {
    FIXED_SCHEMA.clone()
}

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Checkpoint interval of a newly created unpacked table.
    pub checkpoint_interval: u64,
    /// Source rows read per commit to the unpacked table.
    pub rows_per_commit: usize,
    /// Names for features sent by position (`{"instances": [[…]]}`), in the model's input
    /// order; without them such features are `input_0`, `input_1`, ….
    pub feature_names: Vec<String>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { checkpoint_interval: 100, rows_per_commit: 50_000, feature_names: Vec::new() }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Source (payload table) versions read: `from..=to`; `None` when it was up to date.
    pub source_versions: Option<(i64, i64)>,
    /// Captured exchanges read.
    pub requests: usize,
    /// Rows appended to the unpacked table.
    pub rows: usize,
    /// Exchanges whose payload (or part of it) could not be unpacked; see `unpack_error`.
    pub errors: usize,
    /// Whether the run had to compare whole tables (the source's history it needed was gone).
    pub full_scan: bool,
    /// Columns added to the unpacked table (schema evolution).
    pub columns_added: Vec<String>,
    /// Columns widened from bigint to double.
    pub columns_widened: Vec<String>,
}

/// Unpacks what `{endpoint}_payload` gained since the last run into `{endpoint}_unpacked`.
pub async fn unpack_once(layout: &Layout, endpoint: &str, options: &UnpackOptions) -> Result<UnpackReport, UnpackError> {
    let source_url = layout.payload(endpoint);
    if !inferlog_table::exists(&source_url).await? {
        return Err(UnpackError::NoSource {
            endpoint: endpoint.to_string(),
            table: EndpointTable::Payload.name(endpoint),
        });
    }
    let source = deltalake::open_table(source_url.clone())
        .await
        .map_err(|e| UnpackError::delta(&source_url, e))?;
    let target_url = layout.unpacked(endpoint);
    let mut target =
        inferlog_table::table::open_or_create_with(
            &target_url,
            &fixed_schema(),
            &["date"],
            options.checkpoint_interval,
        )
        .await?;
    let mut done = inferlog_table::table::application_version(&target, APP_ID).await?;
    let comparing = inferlog_table::table::application_version(&target, COMPARE_APP_ID).await?;
    let unfinished_compare = comparing.is_some_and(|m| done.is_none_or(|d| m > d));
    let mut report = UnpackReport::default();
    let mut requests = NewRequests::since(&source, done, unfinished_compare, options.rows_per_commit).await?;
    report.source_versions = requests.range();
    while let Some(chunk) = requests.next_chunk(&source, &target).await? {
        report.requests += chunk.rows.len();
        let existing = target.snapshot().map_err(|e| UnpackError::delta(&target_url, e))?.snapshot().arrow_schema();
        // Parsing and typing are CPU work: keep them off the runtime's worker.
        let rows = chunk.rows;
        let feature_names = options.feature_names.clone();
        let (failed, built) = tokio::task::spawn_blocking(move || {
            let unpacked = unpack_rows(&rows, &feature_names);
            build_batch(&unpacked, &existing).map(|built| (unpacked.failed_requests, built))
        })
        .await
        .map_err(|e| UnpackError::Source(format!("unpacking stopped: {e}")))??;
        report.errors += failed;
        report.rows += built.batch.num_rows();
        report.columns_added.extend(built.added.iter().cloned());
        report.columns_widened.extend(built.widened.iter().cloned());
        let mut txns = vec![Transaction::new(APP_ID, chunk.reached.or(done).unwrap_or(-1))];
        if let Some(marker) = chunk.comparing_to.or(chunk.reached.filter(|_| requests.is_full_scan())) {
            txns.push(Transaction::new(COMPARE_APP_ID, marker));
        }
        target = commit(target, built, txns).await.map_err(|e| UnpackError::delta(&target_url, e))?;
        done = chunk.reached.or(done);
    }
    report.full_scan = requests.is_full_scan();
    Ok(report)
}

/// Appends a batch with the application transactions that say how far it got; when a column
/// had to widen, the table is rewritten with the wider type in the same commit.
async fn commit(
    target: DeltaTable,
    built: BuiltBatch,
    txns: Vec<Transaction>,
) -> Result<DeltaTable, deltalake::DeltaTableError> {
    let props = CommitProperties::default().with_application_transactions(txns);
    if built.widened.is_empty() {
        return target
            .write(vec![built.batch])
            .with_save_mode(SaveMode::Append)
            .with_schema_mode(SchemaMode::Merge)
            .with_partition_columns(["date"])
            .with_commit_properties(props)
            .await;
    }
    let ctx = SessionContext::new();
    target.update_datafusion_session(&ctx.state())?;
    let old = ctx.read_table(target.table_provider().await?)?.collect().await?;
    let schema = built.batch.schema();
    let mut batches = Vec::with_capacity(old.len() + 1);
    for batch in old {
        batches.push(align(&batch, &schema)?);
    }
    batches.push(built.batch);
    target
        .write(batches)
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite)
        .with_partition_columns(["date"])
        .with_commit_properties(props)
        .await
}

/// `batch` reshaped to `schema`: columns found by name and cast, missing ones null.
fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => cast(column, field.data_type()),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// One row of the unpacked table before it is typed.
struct UnpackedRow<'a> {
    source: &'a SourceRow,
    row_index: Option<i64>,
    errors: Vec<String>,
    /// (column id, value)
    cells: Vec<(usize, Value)>,
}

struct Unpacked<'a> {
    columns: Vec<String>,
    rows: Vec<UnpackedRow<'a>>,
    failed_requests: usize,
}

fn unpack_rows<'a>(sources: &'a [SourceRow], feature_names: &[String]) -> Unpacked<'a> {
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let mut failed_requests = 0;
    let mut id_of = |name: &str| -> usize {
        if let Some(&id) = ids.get(name) {
            return id;
        }
        columns.push(name.to_string());
        ids.insert(name.to_string(), columns.len() - 1);
        columns.len() - 1
    };
    for source in sources {
        let Some(request_body) = source.request_body() else {
            // No body (a GET through the gateway, a health check): nothing to unpack.
            continue;
        };
        let mut errors = Vec::new();
        let mut inputs = match request_body {
            Ok(body) => parse_request(&body, source.request_content_type.as_deref()).unwrap_or_else(|e| {
                errors.push(format!("request: {e}"));
                Instances::default()
            }),
            Err(e) => {
                errors.push(format!("request: {e}"));
                Instances::default()
            }
        };
        inputs.name_positional(feature_names);
        let succeeded = source.status_code.is_some_and(|s| (200..300).contains(&s));
        let outputs = match source.response_body() {
            Some(Ok(body)) if succeeded => parse_response(&body, source.response_content_type.as_deref())
                .unwrap_or_else(|e| {
                    errors.push(format!("response: {e}"));
                    Instances::default()
                }),
            Some(Err(e)) if succeeded => {
                errors.push(format!("response: {e}"));
                Instances::default()
            }
            _ => Instances::default(),
        };
        let (n_in, n_out) = (inputs.rows.len(), outputs.rows.len());
        if n_in > 0 && n_out > 0 && n_in != n_out {
            errors.push(format!("the request has {n_in} instances but the response {n_out} predictions"));
        }
        if !errors.is_empty() {
            failed_requests += 1;
        }
        // Features keep their names unless they could be taken for a fixed column or a
        // prediction (whatever this exchange's response holds, so a feature always lands in
        // the same column).
        let mut taken: HashSet<String> = outputs.columns.iter().cloned().collect();
        let input_ids: Vec<usize> = inputs
            .columns
            .iter()
            .map(|name| {
                let mut column = if FIXED_COLUMNS.contains(&name.as_str()) || name.starts_with("prediction") {
                    format!("input_{name}")
                } else {
                    name.clone()
                };
                while taken.contains(&column) {
                    column.push_str("_2");
                }
                taken.insert(column.clone());
                id_of(&column)
            })
            .collect();
        let output_ids: Vec<usize> = outputs.columns.iter().map(|name| id_of(name)).collect();
        let n = n_in.max(n_out);
        if n == 0 {
            if !errors.is_empty() {
                rows.push(UnpackedRow { source, row_index: None, errors, cells: Vec::new() });
            }
            continue;
        }
        let mut inputs = inputs.rows.into_iter();
        let mut outputs = outputs.rows.into_iter();
        for index in 0..n {
            let mut cells = Vec::with_capacity(input_ids.len() + output_ids.len());
            if let Some(values) = inputs.next() {
                cells.extend(input_ids.iter().copied().zip(values));
            }
            if let Some(values) = outputs.next() {
                cells.extend(output_ids.iter().copied().zip(values));
            }
            rows.push(UnpackedRow {
                source,
                row_index: Some(index as i64),
                errors: errors.clone(),
                cells,
            });
        }
    }
    Unpacked { columns, rows, failed_requests }
}

struct BuiltBatch {
    batch: RecordBatch,
    added: Vec<String>,
    widened: Vec<String>,
}

/// Types the rows against the table's current schema: existing columns keep their type
/// (or widen bigint → double), new columns take the kind most of their values have.
fn build_batch(unpacked: &Unpacked<'_>, existing: &SchemaRef) -> Result<BuiltBatch, UnpackError> {
    let n = unpacked.rows.len();
    // Cells per column, row-aligned.
    let mut by_column: Vec<Vec<Option<&Value>>> = vec![vec![None; n]; unpacked.columns.len()];
    let mut counts: Vec<KindCounts> = vec![KindCounts::default(); unpacked.columns.len()];
    for (row, r) in unpacked.rows.iter().enumerate() {
        for (id, value) in &r.cells {
            by_column[*id][row] = Some(value);
            counts[*id].add(value);
        }
    }
    let mut type_errors: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut fields: Vec<Field> = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut added = Vec::new();
    let mut widened = Vec::new();
    let column_ids: HashMap<&str, usize> =
        unpacked.columns.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();

    // Existing feature/prediction columns, in table order.
    for field in existing.fields().iter().filter(|f| !FIXED_COLUMNS.contains(&f.name().as_str())) {
        let Some(&id) = column_ids.get(field.name().as_str()) else {
            fields.push(field.as_ref().clone());
            arrays.push(new_null_array(field.data_type(), n));
            continue;
        };
        let Some(kind) = Kind::from_arrow(field.data_type()) else {
            // A column someone added with a type unpack does not write: leave it null.
            fields.push(field.as_ref().clone());
            arrays.push(new_null_array(field.data_type(), n));
            continue;
        };
        let kind = match counts[id].widens(kind) {
            Some(wider) => {
                widened.push(field.name().clone());
                wider
            }
            None => kind,
        };
        arrays.push(build_array(kind, field.name(), &by_column[id], |row, e| type_errors[row].push(e)));
        fields.push(Field::new(field.name(), kind.arrow(), true));
    }
    // New columns, in the order they were first seen.
    for (id, name) in unpacked.columns.iter().enumerate() {
        if existing.field_with_name(name).is_ok() {
            continue;
        }
        // A column whose values are all null so far waits until a value gives it a type.
        let Some(kind) = counts[id].choose() else { continue };
        arrays.push(build_array(kind, name, &by_column[id], |row, e| type_errors[row].push(e)));
        fields.push(Field::new(name, kind.arrow(), true));
        added.push(name.clone());
    }

    let mut request_id = StringBuilder::new();
    let mut client_request_id = StringBuilder::new();
    let mut row_index = Int64Builder::with_capacity(n);
    let mut date = Date32Builder::with_capacity(n);
    let mut timestamp = Int64Builder::with_capacity(n);
    let mut model_version = StringBuilder::new();
    let mut status = Int32Builder::with_capacity(n);
    let mut unpack_error = StringBuilder::new();
    for (r, row_type_errors) in unpacked.rows.iter().zip(&type_errors) {
        request_id.append_value(&r.source.request_id);
        client_request_id.append_option(r.source.client_request_id.as_deref());
        row_index.append_option(r.row_index);
        date.append_value(inferlog_core::record::date_days(r.source.timestamp_ms));
        timestamp.append_value(r.source.timestamp_ms);
        model_version.append_option(r.source.model_version.as_deref());
        status.append_option(r.source.status_code);
        let all: Vec<&str> = r.errors.iter().chain(row_type_errors).map(String::as_str).collect();
        unpack_error.append_option((!all.is_empty()).then(|| all.join("; ")));
    }
    let fixed: Vec<ArrayRef> = vec![
        Arc::new(request_id.finish()),
        Arc::new(client_request_id.finish()),
        Arc::new(row_index.finish()),
        Arc::new(date.finish()),
        Arc::new(timestamp.finish()),
        Arc::new(model_version.finish()),
        Arc::new(status.finish()),
        Arc::new(unpack_error.finish()),
    ];
    let mut all_fields: Vec<Field> = fixed_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    all_fields.extend(fields);
    let mut all_arrays = fixed;
    all_arrays.extend(arrays);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(all_fields)), all_arrays)?;
    Ok(BuiltBatch { batch, added, widened })
}

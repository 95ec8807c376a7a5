//! Reading what the payload table gained since a given version.
//!
//! The payload table is append-only apart from compaction, whose commits move rows without
//! changing them (`dataChange: false`). So the exchanges committed after version `v` are
//! exactly the files added with `dataChange: true` by commits `v+1..=latest`, read straight
//! from the Delta log. When that history is gone (log cleanup, vacuumed files) or too long,
//! the run compares whole tables instead: every source row whose request id the unpacked
//! table lacks. Both ways give each exchange once.

use crate::UnpackError;
use base64::Engine;
use inferlog_core::record::BodyEncoding;
use inferlog_table::schema::PayloadColumn;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int32Type, Int64Type};
use deltalake::datafusion::execution::SendableRecordBatchStream;
use deltalake::datafusion::prelude::{ParquetReadOptions, SessionContext};
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use std::borrow::Cow;
use std::collections::VecDeque;
use deltalake::logstore::object_store::{path::Path as StorePath, ObjectStore, ObjectStoreExt as _};
use std::sync::Arc;

/// Columns of the payload table an unpack reads.
const SOURCE_COLUMNS: [PayloadColumn; 11] = [
    PayloadColumn::RequestId,
    PayloadColumn::ClientRequestId,
    PayloadColumn::TimestampMs,
    PayloadColumn::ModelVersion,
    PayloadColumn::StatusCode,
    PayloadColumn::Request,
    PayloadColumn::Response,
    PayloadColumn::RequestContentType,
    PayloadColumn::ResponseContentType,
    PayloadColumn::RequestEncoding,
    PayloadColumn::ResponseEncoding,
];

/// Pointers to offloaded bodies (`oversize = "offload"`); older tables lack them.
const OFFLOAD_COLUMNS: [PayloadColumn; 2] = [PayloadColumn::RequestOffload, PayloadColumn::ResponseOffload];

/// Shadow exchanges (rows with `shadow_of`) are not unpacked: the unpacked table, monitoring
/// and `labeled()` describe the traffic callers were answered with. Older tables may lack the
/// column.
const SHADOW_OF: &str = PayloadColumn::ShadowOf.name();

/// Beyond this many commits to read one by one, comparing tables is cheaper.
const MAX_INCREMENTAL_VERSIONS: i64 = 10_000;
/// Commit entries read at once.
const LOG_READ_CONCURRENCY: usize = 16;

/// One captured exchange, as much of it as unpacking needs.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub request_id: String,
    pub client_request_id: Option<String>,
    pub timestamp_ms: i64,
    pub model_version: Option<String>,
    pub status_code: Option<i32>,
    pub request: Option<String>,
    pub response: Option<String>,
    pub request_content_type: Option<String>,
    pub response_content_type: Option<String>,
    pub request_encoding: Option<String>,
    pub response_encoding: Option<String>,
    /// Side files holding the whole bodies, relative to the table.
    pub request_offload: Option<String>,
    pub response_offload: Option<String>,
    /// The payload table's own store (local or not), where the side files holding whole
    /// bodies are, at `request_offload`/`response_offload` relative to the table.
    pub side_files: Option<Arc<dyn ObjectStore>>,
}

impl SourceRow {
    /// The request body's bytes (the whole offloaded body when there is one, read only now so
    /// a chunk never holds many large bodies at once); `None` when the exchange had none.
    pub fn request_body(&self) -> Option<Result<Cow<'_, [u8]>, String>> {
        self.offloaded(self.request_offload.as_deref())
            .or_else(|| decode(self.request.as_deref(), self.request_encoding.as_deref()))
    }

    pub fn response_body(&self) -> Option<Result<Cow<'_, [u8]>, String>> {
        self.offloaded(self.response_offload.as_deref())
            .or_else(|| decode(self.response.as_deref(), self.response_encoding.as_deref()))
    }

    /// Read on the unpacker's blocking thread (never a runtime worker), from the table's store.
    fn offloaded(&self, pointer: Option<&str>) -> Option<Result<Cow<'_, [u8]>, String>> {
        let pointer = pointer?;
        let store = self.side_files.as_ref()?;
        if !inferlog_core::record::is_offload_path(pointer) {
            return Some(Err(format!("`{pointer}` is not an offloaded body's path")));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Some(Err(format!("cannot read the offloaded body {pointer} outside the runtime")));
        };
        let location = StorePath::from(pointer);
        let read = runtime.block_on(async { store.get(&location).await?.bytes().await });
        Some(read.map(|bytes| Cow::Owned(bytes.to_vec())).map_err(|e| format!("cannot read the offloaded body {pointer}: {e}")))
    }
}

/// The columns to read from a payload table with this schema.
fn columns_to_read(schema: &deltalake::datafusion::common::DFSchema) -> Vec<&'static str> {
    let optional = OFFLOAD_COLUMNS.iter().filter(|c| schema.has_column_with_unqualified_name(c.name()));
    SOURCE_COLUMNS.iter().chain(optional).map(|c| c.name()).collect()
}

fn decode<'a>(text: Option<&'a str>, encoding: Option<&str>) -> Option<Result<Cow<'a, [u8]>, String>> {
    let text = text.filter(|t| !t.is_empty())?;
    Some(match encoding {
        Some(encoding) if BodyEncoding::parse(encoding) == Some(BodyEncoding::Base64) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Cow::Owned)
            .map_err(|e| format!("stored body is not valid base64: {e}")),
        _ => Ok(Cow::Borrowed(text.as_bytes())),
    })
}

/// A data file a commit added, with its row count when the log says it.
struct AddedFile {
    path: String,
    rows: usize,
}

enum Plan {
    /// Chunks of files, each with the source version that completes it.
    Incremental(VecDeque<(Vec<AddedFile>, i64)>),
    /// Source rows missing from the unpacked table, streamed.
    Compare {
        latest: i64,
        stream: Option<SendableRecordBatchStream>,
        pending: Vec<SourceRow>,
    },
    UpToDate,
}

/// Rows to unpack and how far they get.
pub struct Chunk {
    pub rows: Vec<SourceRow>,
    /// The source version this chunk completes; `None` for the parts of a comparison pass
    /// before its last.
    pub reached: Option<i64>,
    /// For those parts: the source version the comparison runs up to.
    pub comparing_to: Option<i64>,
}

/// The exchanges the unpacked table still lacks, handed out in chunks of about
/// `rows_per_chunk` rows.
pub struct NewRequests {
    plan: Plan,
    range: Option<(i64, i64)>,
    rows_per_chunk: usize,
    /// Whether this run compared tables (from the start or after falling back).
    compared: bool,
}

impl NewRequests {
    /// Plans reading source versions after `done` (`None`: nothing read yet).
    /// `force_compare`: an earlier comparison did not finish.
    pub async fn since(
        source: &DeltaTable,
        done: Option<i64>,
        force_compare: bool,
        rows_per_chunk: usize,
    ) -> Result<Self, UnpackError> {
        let latest = inferlog_table::table::version_of(source);
        let from = done.map_or(0, |v| v + 1).max(0);
        let rows_per_chunk = rows_per_chunk.max(1);
        if from > latest {
            return Ok(NewRequests { plan: Plan::UpToDate, range: None, rows_per_chunk, compared: false });
        }
        let range = Some((from, latest));
        let compare = || Plan::Compare { latest, stream: None, pending: Vec::new() };
        // Nothing read yet, or a long way behind: one pass over the table beats a walk
        // through its history.
        if force_compare || done.is_none() || latest - from >= MAX_INCREMENTAL_VERSIONS {
            return Ok(NewRequests { plan: compare(), range, rows_per_chunk, compared: true });
        }
        let plan = match added_files(source, from, latest).await? {
            Some(per_version) => Plan::Incremental(chunk(per_version, rows_per_chunk)),
            // Part of the history has been cleaned up.
            None => compare(),
        };
        let compared = matches!(plan, Plan::Compare { .. });
        Ok(NewRequests { plan, range, rows_per_chunk, compared })
    }

    pub fn range(&self) -> Option<(i64, i64)> {
        self.range
    }

    pub fn is_full_scan(&self) -> bool {
        self.compared
    }

    /// The next rows to unpack and how far they get (while a comparison is still streaming,
    /// only the comparison's target version is recorded: its rows are found again by
    /// request id if the pass stops half-way).
    pub async fn next_chunk(&mut self, source: &DeltaTable, target: &DeltaTable) -> Result<Option<Chunk>, UnpackError> {
        loop {
            match &mut self.plan {
                Plan::UpToDate => return Ok(None),
                Plan::Incremental(chunks) => {
                    let Some((files, reached)) = chunks.pop_front() else {
                        self.plan = Plan::UpToDate;
                        return Ok(None);
                    };
                    match read_files(source, &files).await {
                        Ok(rows) => return Ok(Some(Chunk { rows, reached: Some(reached), comparing_to: None })),
                        Err(e) => {
                            // Files vacuumed since they were committed: fall back to comparing.
                            tracing::warn!(error = %e, "unpack: cannot read added files, comparing tables instead");
                            self.compared = true;
                            self.plan = Plan::Compare {
                                latest: inferlog_table::table::version_of(source),
                                stream: None,
                                pending: Vec::new(),
                            };
                        }
                    }
                }
                Plan::Compare { latest, stream, pending } => {
                    if stream.is_none() {
                        *stream = Some(missing_rows(source, target).await?);
                    }
                    let Some(s) = stream.as_mut() else { continue };
                    while pending.len() < self.rows_per_chunk {
                        match s.try_next().await? {
                            Some(batch) => pending.extend(source_rows(&batch, &Some(source.object_store()))?),
                            None => {
                                let rows = std::mem::take(pending);
                                let reached = Some(*latest);
                                self.plan = Plan::UpToDate;
                                return Ok(Some(Chunk { rows, reached, comparing_to: None }));
                            }
                        }
                    }
                    let rows = std::mem::take(pending);
                    return Ok(Some(Chunk { rows, reached: None, comparing_to: Some(*latest) }));
                }
            }
        }
    }
}

/// Data files added by commits `from..=to`, per version; `None` when a commit is gone.
async fn added_files(source: &DeltaTable, from: i64, to: i64) -> Result<Option<Vec<(i64, Vec<AddedFile>)>>, UnpackError> {
    let store = source.log_store();
    let entries: Vec<(i64, Option<bytes::Bytes>)> = futures::stream::iter(from..=to)
        .map(|version| {
            let store = store.clone();
            async move { store.read_commit_entry(version as u64).await.map(|entry| (version, entry)) }
        })
        .buffered(LOG_READ_CONCURRENCY)
        .try_collect()
        .await
        .map_err(|e| UnpackError::delta(source.table_url(), e))?;
    let mut out = Vec::with_capacity(entries.len());
    for (version, entry) in entries {
        let Some(entry) = entry else { return Ok(None) };
        out.push((version, data_files(&entry)));
    }
    Ok(Some(out))
}

/// The `add` actions of one commit that brought new rows.
fn data_files(commit: &[u8]) -> Vec<AddedFile> {
    commit
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter_map(|action| {
            let add = action.get("add")?;
            if add.get("dataChange").and_then(|v| v.as_bool()) == Some(false) {
                return None;
            }
            let rows = add
                .get("stats")
                .and_then(|s| s.as_str())
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|s| s.get("numRecords").and_then(|n| n.as_u64()))
                .unwrap_or(1) as usize;
            Some(AddedFile { path: add.get("path")?.as_str()?.to_string(), rows })
        })
        .collect()
}

/// Groups versions into chunks of about `rows_per_chunk` rows; a chunk ends on a version
/// boundary so the version it completes can be recorded.
fn chunk(per_version: Vec<(i64, Vec<AddedFile>)>, rows_per_chunk: usize) -> VecDeque<(Vec<AddedFile>, i64)> {
    let mut chunks = VecDeque::new();
    let mut files = Vec::new();
    let mut rows = 0;
    let last = per_version.last().map(|(v, _)| *v);
    for (version, added) in per_version {
        rows += added.iter().map(|f| f.rows).sum::<usize>();
        files.extend(added);
        if rows >= rows_per_chunk || Some(version) == last {
            chunks.push_back((std::mem::take(&mut files), version));
            rows = 0;
        }
    }
    chunks
}

async fn read_files(source: &DeltaTable, files: &[AddedFile]) -> Result<Vec<SourceRow>, UnpackError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let base = source.table_url();
    let urls = files
        .iter()
        .map(|f| base.join(&f.path).map(|u| u.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UnpackError::Source(format!("bad file path in the table's log: {e}")))?;
    let ctx = SessionContext::new();
    source
        .update_datafusion_session(&ctx.state())
        .map_err(|e| UnpackError::delta(base, e))?;
    let files = ctx.read_parquet(urls, ParquetReadOptions::default()).await?;
    let primaries = if files.schema().has_column_with_unqualified_name(SHADOW_OF) {
        files.filter(deltalake::datafusion::prelude::col(SHADOW_OF).is_null())?
    } else {
        files
    };
    let columns = columns_to_read(primaries.schema());
    let batches = primaries.select_columns(&columns)?.collect().await?;
    let side_files = Some(source.object_store());
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(source_rows(batch, &side_files)?);
    }
    Ok(rows)
}

/// Source rows whose request id the unpacked table does not hold yet.
async fn missing_rows(source: &DeltaTable, target: &DeltaTable) -> Result<SendableRecordBatchStream, UnpackError> {
    let ctx = SessionContext::new();
    for (name, table) in [("source", source), ("target", target)] {
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| UnpackError::delta(table.table_url(), e))?;
        ctx.register_table(name, table.table_provider().await?)?;
    }
    let source_frame = ctx.table("source").await?;
    let columns = columns_to_read(source_frame.schema());
    let shadows = if source_frame.schema().has_column_with_unqualified_name(SHADOW_OF) {
        format!(" AND {SHADOW_OF} IS NULL")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {} FROM source WHERE request_id NOT IN (SELECT request_id FROM target){shadows}",
        columns.join(", ")
    );
    Ok(ctx.sql(&sql).await?.execute_stream().await?)
}

fn strings(batch: &RecordBatch, column: PayloadColumn) -> Result<std::vec::IntoIter<Option<String>>, UnpackError> {
    let name = column.name();
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| UnpackError::Source(format!("the payload table has no column {name}")))?;
    let column = cast(column, &DataType::Utf8)?;
    let column = column.as_string::<i32>();
    Ok((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i).to_string())).collect::<Vec<_>>().into_iter())
}

fn source_rows(batch: &RecordBatch, side_files: &Option<Arc<dyn ObjectStore>>) -> Result<Vec<SourceRow>, UnpackError> {
    let column = |column: PayloadColumn| {
        batch
            .column_by_name(column.name())
            .ok_or_else(|| UnpackError::Source(format!("the payload table has no column {}", column.name())))
    };
    let timestamps = cast(column(PayloadColumn::TimestampMs)?, &DataType::Int64)?;
    let timestamps = timestamps.as_primitive::<Int64Type>();
    let statuses = cast(column(PayloadColumn::StatusCode)?, &DataType::Int32)?;
    let statuses = statuses.as_primitive::<Int32Type>();
    // Older tables lack the offload columns: none of their rows has a side file.
    let optional = |column: PayloadColumn| -> Result<std::vec::IntoIter<Option<String>>, UnpackError> {
        if batch.column_by_name(column.name()).is_some() {
            strings(batch, column)
        } else {
            Ok(vec![None; batch.num_rows()].into_iter())
        }
    };
    let mut request_ids = strings(batch, PayloadColumn::RequestId)?;
    let mut client_request_ids = strings(batch, PayloadColumn::ClientRequestId)?;
    let mut model_versions = strings(batch, PayloadColumn::ModelVersion)?;
    let mut requests = strings(batch, PayloadColumn::Request)?;
    let mut responses = strings(batch, PayloadColumn::Response)?;
    let mut request_content_types = strings(batch, PayloadColumn::RequestContentType)?;
    let mut response_content_types = strings(batch, PayloadColumn::ResponseContentType)?;
    let mut request_encodings = strings(batch, PayloadColumn::RequestEncoding)?;
    let mut response_encodings = strings(batch, PayloadColumn::ResponseEncoding)?;
    let mut request_offloads = optional(PayloadColumn::RequestOffload)?;
    let mut response_offloads = optional(PayloadColumn::ResponseOffload)?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        rows.push(SourceRow {
            request_id: request_ids.next().flatten().unwrap_or_default(),
            client_request_id: client_request_ids.next().flatten(),
            model_version: model_versions.next().flatten(),
            request: requests.next().flatten(),
            response: responses.next().flatten(),
            request_content_type: request_content_types.next().flatten(),
            response_content_type: response_content_types.next().flatten(),
            request_encoding: request_encodings.next().flatten(),
            response_encoding: response_encodings.next().flatten(),
            timestamp_ms: timestamps.is_valid(i).then(|| timestamps.value(i)).unwrap_or_default(),
            status_code: statuses.is_valid(i).then(|| statuses.value(i)),
            request_offload: request_offloads.next().flatten(),
            response_offload: response_offloads.next().flatten(),
            side_files: side_files.clone(),
        });
    }
    Ok(rows)
}

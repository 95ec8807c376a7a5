//! The inference table's columns (documented in docs/inference-table.md) and the conversion
//! of records into an Arrow batch.
//!
//! [`PayloadColumn`] is the one list of the columns: the Arrow schema, the batch a commit
//! writes and the readers of the table (the unpacker's source) all take names, types and
//! order from it. A new column is one line there and, when it holds a new record field, that
//! field at the end of `Record`.

use deltalake::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
    MapFieldNames, RecordBatch, StringBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use inferlog_core::Record;
use std::sync::{Arc, LazyLock};

/// Partition column of every inference table.
pub const PARTITION_COLUMN: &str = PayloadColumn::Date.name();

/// How a column's values come out of a record, which also fixes its Arrow type.
enum Values {
    Text(fn(&Record) -> Option<&str>),
    Int64(fn(&Record) -> Option<i64>),
    Int32(fn(&Record) -> i32),
    Float64(fn(&Record) -> f64),
    /// `Date32`, the UTC day of `timestamp_ms`.
    Day,
    /// A list of strings: `logging_error_codes`.
    Codes,
    /// A string-to-string map: `request_metadata`.
    Metadata,
}

macro_rules! payload_columns {
    ($($(#[$doc:meta])* $column:ident = $name:literal, $nullable:literal, $values:expr;)*) => {
        /// A column of the payload table, in the table's order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum PayloadColumn {
            $($(#[$doc])* $column,)*
        }

        impl PayloadColumn {
            /// Every column, in the table's order.
            pub const ALL: &'static [PayloadColumn] = &[$(PayloadColumn::$column,)*];

            pub const fn name(self) -> &'static str {
                match self {
                    $(PayloadColumn::$column => $name,)*
                }
            }

            const fn nullable(self) -> bool {
                match self {
                    $(PayloadColumn::$column => $nullable,)*
                }
            }

            fn values(self) -> Values {
                match self {
                    $(PayloadColumn::$column => $values,)*
                }
            }
        }
    };
}

payload_columns! {
    RequestId = "request_id", false, Values::Text(|r| Some(&r.request_id));
    ClientRequestId = "client_request_id", true, Values::Text(|r| r.client_request_id.as_deref());
    Date = "date", false, Values::Day;
    TimestampMs = "timestamp_ms", false, Values::Int64(|r| Some(r.timestamp_ms));
    EndpointName = "endpoint_name", true, Values::Text(|r| Some(&r.endpoint_name));
    ModelName = "model_name", true, Values::Text(|r| Some(&r.model_name));
    ModelVersion = "model_version", true, Values::Text(|r| Some(&r.model_version));
    Method = "method", true, Values::Text(|r| Some(&r.method));
    Path = "path", true, Values::Text(|r| Some(&r.path));
    StatusCode = "status_code", true, Values::Int32(|r| r.status_code);
    ExecutionTimeMs = "execution_time_ms", true, Values::Int64(|r| r.execution_time_ms);
    LatencyMs = "latency_ms", true, Values::Int64(|r| Some(r.latency_ms));
    SamplingFraction = "sampling_fraction", true, Values::Float64(|r| r.sampling_fraction);
    Request = "request", true, Values::Text(|r| r.request.as_deref());
    Response = "response", true, Values::Text(|r| r.response.as_deref());
    RequestContentType = "request_content_type", true, Values::Text(|r| r.request_content_type.as_deref());
    ResponseContentType = "response_content_type", true, Values::Text(|r| r.response_content_type.as_deref());
    RequestEncoding = "request_encoding", true, Values::Text(|r| r.request_encoding.map(|e| e.as_str()));
    ResponseEncoding = "response_encoding", true, Values::Text(|r| r.response_encoding.map(|e| e.as_str()));
    RequestBytes = "request_bytes", true, Values::Int64(|r| Some(r.request_bytes));
    ResponseBytes = "response_bytes", true, Values::Int64(|r| Some(r.response_bytes));
    LoggingErrorCodes = "logging_error_codes", true, Values::Codes;
    Error = "error", true, Values::Text(|r| r.error.as_deref());
    Requester = "requester", true, Values::Text(|r| r.requester.as_deref());
    RequestMetadata = "request_metadata", true, Values::Metadata;
    // LLM and traffic columns: added to older tables by schema evolution on first write.
    ResponseStream = "response_stream", true, Values::Text(|r| r.response_stream.as_deref());
    TimeToFirstTokenMs = "time_to_first_token_ms", true, Values::Int64(|r| r.time_to_first_token_ms);
    StreamChunks = "stream_chunks", true, Values::Int64(|r| r.stream_chunks);
    StreamStatus = "stream_status", true, Values::Text(|r| r.stream_status.map(|s| s.as_str()));
    PromptTokens = "prompt_tokens", true, Values::Int64(|r| r.prompt_tokens);
    CompletionTokens = "completion_tokens", true, Values::Int64(|r| r.completion_tokens);
    TotalTokens = "total_tokens", true, Values::Int64(|r| r.total_tokens);
    LlmModel = "llm_model", true, Values::Text(|r| r.llm_model.as_deref());
    ServedTarget = "served_target", true, Values::Text(|r| r.served_target.as_deref());
    ShadowOf = "shadow_of", true, Values::Text(|r| r.shadow_of.as_deref());
    RequestOffload = "request_offload", true, Values::Text(|r| r.request_offload.as_deref());
    ResponseOffload = "response_offload", true, Values::Text(|r| r.response_offload.as_deref());
    GatewayId = "gateway_id", true, Values::Text(|r| r.gateway_id.as_deref());
}

fn list_item_field() -> Field {
    // Delta's name for list items; Arrow's default ("item") would not match the table.
    Field::new("element", DataType::Utf8, true)
}

fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

impl PayloadColumn {
    fn data_type(self) -> DataType {
        match self.values() {
            Values::Text(_) => DataType::Utf8,
            Values::Int64(_) => DataType::Int64,
            Values::Int32(_) => DataType::Int32,
            Values::Float64(_) => DataType::Float64,
            Values::Day => DataType::Date32,
            Values::Codes => DataType::List(Arc::new(list_item_field())),
            Values::Metadata => {
                let names = map_field_names();
                let entries = Field::new(
                    names.entry,
                    DataType::Struct(
                        vec![Field::new(names.key, DataType::Utf8, false), Field::new(names.value, DataType::Utf8, true)].into(),
                    ),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
        }
    }

    /// The column's values for `records`, one per record.
    fn array(self, records: &[Record]) -> Result<ArrayRef, deltalake::arrow::error::ArrowError> {
        let n = records.len();
        Ok(match self.values() {
            Values::Text(value) => {
                let mut b = StringBuilder::with_capacity(n, records.iter().map(|r| value(r).map_or(0, str::len)).sum());
                records.iter().for_each(|r| b.append_option(value(r)));
                Arc::new(b.finish())
            }
            Values::Int64(value) => {
                let mut b = Int64Builder::with_capacity(n);
                records.iter().for_each(|r| b.append_option(value(r)));
                Arc::new(b.finish())
            }
            Values::Int32(value) => {
                let mut b = Int32Builder::with_capacity(n);
                records.iter().for_each(|r| b.append_value(value(r)));
                Arc::new(b.finish())
            }
            Values::Float64(value) => {
                let mut b = Float64Builder::with_capacity(n);
                records.iter().for_each(|r| b.append_value(value(r)));
                Arc::new(b.finish())
            }
            Values::Day => {
                let mut b = Date32Builder::with_capacity(n);
                records.iter().for_each(|r| b.append_value(r.date_days()));
                Arc::new(b.finish())
            }
            Values::Codes => {
                let mut b = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(list_item_field()));
                for r in records {
                    for code in &r.logging_error_codes {
                        b.values().append_value(code);
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
            Values::Metadata => {
                let mut b = MapBuilder::new(Some(map_field_names()), StringBuilder::new(), StringBuilder::new());
                for r in records {
                    for (key, value) in &r.request_metadata {
                        b.keys().append_value(key);
                        b.values().append_value(value);
                    }
                    b.append(true)?;
                }
                Arc::new(b.finish())
            }
        })
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        PayloadColumn::ALL.iter().map(|c| Field::new(c.name(), c.data_type(), c.nullable())).collect::<Vec<_>>(),
    ))
});

/// Parquet settings of the payload table's files. Bloom filters on the two ids let a lookup
/// by `client_request_id` (random, so min/max statistics cannot skip files) skip row groups
/// after reading a few kilobytes; `request_id` is a UUID v7, time-ordered, so the file
/// statistics in the Delta log already skip most files and the filter covers the rest.
pub fn writer_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::Compression;
    use deltalake::parquet::file::properties::WriterProperties;
    use deltalake::parquet::schema::types::ColumnPath;
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_column_bloom_filter_enabled(ColumnPath::from(PayloadColumn::RequestId.name()), true)
        .set_column_bloom_filter_enabled(ColumnPath::from(PayloadColumn::ClientRequestId.name()), true)
        .build()
}

/// The Arrow schema of an inference table.
pub fn payload_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// One Arrow batch holding `records`, in the table's column order.
pub fn records_to_batch(records: &[Record]) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let columns = PayloadColumn::ALL.iter().map(|c| c.array(records)).collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(payload_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use inferlog_core::record::{BodyEncoding, StreamStatus};

    #[test]
    fn every_column_has_a_name_of_its_own_and_the_batch_the_schemas_types() {
        let mut names: Vec<_> = PayloadColumn::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PayloadColumn::ALL.len());
        assert_eq!(payload_schema().fields().len(), PayloadColumn::ALL.len());

        let record = Record {
            request_id: "r1".into(),
            timestamp_ms: 86_400_000 * 3 + 5,
            request_encoding: Some(BodyEncoding::Base64),
            stream_status: Some(StreamStatus::Cancelled),
            logging_error_codes: vec!["A".into(), "B".into()],
            request_metadata: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let batch = records_to_batch(&[record.clone(), Record::default()]).unwrap();
        let text = |column: PayloadColumn, row: usize| {
            let array = batch.column_by_name(column.name()).unwrap().as_string::<i32>();
            array.is_valid(row).then(|| array.value(row).to_string())
        };
        assert_eq!(text(PayloadColumn::RequestId, 0).as_deref(), Some("r1"));
        assert_eq!(text(PayloadColumn::RequestEncoding, 0).as_deref(), Some("base64"));
        assert_eq!(text(PayloadColumn::StreamStatus, 0).as_deref(), Some("cancelled"));
        assert_eq!(text(PayloadColumn::StreamStatus, 1), None);
        let days = batch.column_by_name(PARTITION_COLUMN).unwrap().as_primitive::<deltalake::arrow::datatypes::Date32Type>();
        assert_eq!(days.value(0), 3);
        let codes = batch.column_by_name(PayloadColumn::LoggingErrorCodes.name()).unwrap().as_list::<i32>();
        assert_eq!(codes.value(0).len(), 2);
        assert_eq!(codes.value(1).len(), 0);
    }
}

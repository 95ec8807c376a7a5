//! The inference table's columns (documented in docs/inference-table.md) and the conversion
//! of records into an Arrow batch.

use deltalake::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
    MapFieldNames, RecordBatch, StringBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use inferlog_core::Record;
use std::sync::{Arc, LazyLock};

/// Partition column of every inference table.
pub const PARTITION_COLUMN: &str = "date";

fn string(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
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

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let names = map_field_names();
    let entries = Field::new(
        names.entry,
        DataType::Struct(
            vec![
                Field::new(names.key, DataType::Utf8, false),
                Field::new(names.value, DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        string("client_request_id"),
        Field::new(PARTITION_COLUMN, DataType::Date32, false),
        Field::new("timestamp_ms", DataType::Int64, false),
        string("endpoint_name"),
        string("model_name"),
        string("model_version"),
        string("method"),
        string("path"),
        Field::new("status_code", DataType::Int32, true),
        Field::new("execution_time_ms", DataType::Int64, true),
        Field::new("latency_ms", DataType::Int64, true),
        Field::new("sampling_fraction", DataType::Float64, true),
        string("request"),
        string("response"),
        string("request_content_type"),
        string("response_content_type"),
        string("request_encoding"),
        string("response_encoding"),
        Field::new("request_bytes", DataType::Int64, true),
        Field::new("response_bytes", DataType::Int64, true),
        Field::new("logging_error_codes", DataType::List(Arc::new(list_item_field())), true),
        string("error"),
        string("requester"),
        Field::new("request_metadata", DataType::Map(Arc::new(entries), false), true),
        // LLM and traffic columns: added to older tables by schema evolution on first write.
        string("response_stream"),
        Field::new("time_to_first_token_ms", DataType::Int64, true),
        Field::new("stream_chunks", DataType::Int64, true),
        string("stream_status"),
        Field::new("prompt_tokens", DataType::Int64, true),
        Field::new("completion_tokens", DataType::Int64, true),
        Field::new("total_tokens", DataType::Int64, true),
        string("llm_model"),
        string("served_target"),
        string("shadow_of"),
        string("request_offload"),
        string("response_offload"),
        string("gateway_id"),
    ]))
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
        .set_column_bloom_filter_enabled(ColumnPath::from("request_id"), true)
        .set_column_bloom_filter_enabled(ColumnPath::from("client_request_id"), true)
        .build()
}

/// The Arrow schema of an inference table.
pub fn payload_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// One Arrow batch holding `records`, in the table's column order.
pub fn records_to_batch(records: &[Record]) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let n = records.len();
    let strings = |f: &dyn Fn(&Record) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for r in records {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let longs = |f: &dyn Fn(&Record) -> Option<i64>| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(n);
        for r in records {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let mut date = Date32Builder::with_capacity(n);
    let mut status = Int32Builder::with_capacity(n);
    let mut fraction = Float64Builder::with_capacity(n);
    let mut codes = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(list_item_field()));
    let mut metadata = MapBuilder::new(Some(map_field_names()), StringBuilder::new(), StringBuilder::new());
    for r in records {
        date.append_value(r.date_days());
        status.append_value(r.status_code);
        fraction.append_value(r.sampling_fraction);
        for c in &r.logging_error_codes {
            codes.values().append_value(c);
        }
        codes.append(true);
        for (k, v) in &r.request_metadata {
            metadata.keys().append_value(k);
            metadata.values().append_value(v);
        }
        metadata.append(true)?;
    }
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| Some(&r.request_id)),
        strings(&|r| r.client_request_id.as_deref()),
        Arc::new(date.finish()),
        longs(&|r| Some(r.timestamp_ms)),
        strings(&|r| Some(&r.endpoint_name)),
        strings(&|r| Some(&r.model_name)),
        strings(&|r| Some(&r.model_version)),
        strings(&|r| Some(&r.method)),
        strings(&|r| Some(&r.path)),
        Arc::new(status.finish()),
        longs(&|r| r.execution_time_ms),
        longs(&|r| Some(r.latency_ms)),
        Arc::new(fraction.finish()),
        strings(&|r| r.request.as_deref()),
        strings(&|r| r.response.as_deref()),
        strings(&|r| r.request_content_type.as_deref()),
        strings(&|r| r.response_content_type.as_deref()),
        strings(&|r| r.request_encoding.as_deref()),
        strings(&|r| r.response_encoding.as_deref()),
        longs(&|r| Some(r.request_bytes)),
        longs(&|r| Some(r.response_bytes)),
        Arc::new(codes.finish()),
        strings(&|r| r.error.as_deref()),
        strings(&|r| r.requester.as_deref()),
        Arc::new(metadata.finish()),
        strings(&|r| r.response_stream.as_deref()),
        longs(&|r| r.time_to_first_token_ms),
        longs(&|r| r.stream_chunks),
        strings(&|r| r.stream_status.as_deref()),
        longs(&|r| r.prompt_tokens),
        longs(&|r| r.completion_tokens),
        longs(&|r| r.total_tokens),
        strings(&|r| r.llm_model.as_deref()),
        strings(&|r| r.served_target.as_deref()),
        strings(&|r| r.shadow_of.as_deref()),
        strings(&|r| r.request_offload.as_deref()),
        strings(&|r| r.response_offload.as_deref()),
        strings(&|r| r.gateway_id.as_deref()),
    ];
    RecordBatch::try_new(payload_schema(), columns)
}

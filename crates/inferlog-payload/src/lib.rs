//! Turns captured model-server request and response bodies into rows of
//! typed cells, so the gateway can store one table row per model instance
//! instead of an opaque blob.
//!
//! Understood formats:
//! * MLflow scoring JSON (`dataframe_split`, `dataframe_records`,
//!   `instances`, `inputs`) and its `predictions` responses;
//! * TensorFlow Serving REST (row `instances` / columnar `inputs`,
//!   `predictions` / `outputs`), including `{"b64": ...}` binary values;
//! * Open Inference Protocol v2 (KServe, Triton) tensors;
//! * CSV bodies with a header line.
//!
//! The parsers face untrusted bytes, so they never panic and bound what they
//! allocate: a payload yielding more than 1,000,000 rows, 10,000 columns or
//! 10,000,000 cells (rows × columns) is rejected with a [`PayloadError`].

mod csv_body;
mod error;
mod json;
mod names;
mod table;
mod v2;

#[cfg(test)]
mod tests;

pub use error::PayloadError;
pub use names::sanitize_column_name;

use names::Side;

/// One cell.
///
/// The variants mirror what JSON, CSV and v2 tensors can carry, so the table
/// writer can pick a column type without re-parsing text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null`, an empty CSV field, or a key missing from one record.
    Null,
    /// JSON boolean, CSV `true`/`false`, or a v2 `BOOL` element.
    Bool(bool),
    /// Any integer that fits in `i64`.
    Int(i64),
    /// Any other number (fractions, exponents, integers beyond `i64`).
    Float(f64),
    /// Text.
    Str(String),
    /// Binary data, decoded from TF Serving's `{"b64": "..."}` wrapper.
    Bytes(Vec<u8>),
    /// Nested array/object kept as compact JSON text.
    Json(String),
}

/// Rows in column order.
///
/// `columns` are already sanitized with [`sanitize_column_name`] and unique,
/// so they can be used as Delta Lake column names directly. Every row has
/// exactly `columns.len()` cells; cells a row does not provide are
/// [`Value::Null`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Instances {
    /// Column names, sanitized and unique.
    pub columns: Vec<String>,
    /// One entry per model instance, each `columns.len()` cells long.
    pub rows: Vec<Vec<Value>>,
    /// The payload gave values by position only (`{"instances": [[…]]}`, `{"inputs": [[…]]}`,
    /// `dataframe_split` without `columns`): the columns are `input_0`, `input_1`, ….
    pub positional: bool,
}

impl Instances {
    /// Names positional columns after `names` (the model's feature names, in its input order);
    /// columns past the end of the list keep their positional names, and payloads that named
    /// their own columns are left as they are.
    pub fn name_positional(&mut self, names: &[String]) {
        if !self.positional || names.is_empty() {
            return;
        }
        for (column, name) in self.columns.iter_mut().zip(names) {
            *column = sanitize_column_name(name);
        }
        self.columns = names::make_unique(std::mem::take(&mut self.columns));
    }
}

/// Parses a captured request body into one row per model input instance.
///
/// `content_type` is the request's `Content-Type` header: `text/csv` and
/// `application/csv` select CSV, anything else (or none) is read as JSON.
/// Parameters such as `charset` are ignored. Feature columns are named after
/// the payload's own names, or `input` / `input_{i}` when it has none.
pub fn parse_request(body: &[u8], content_type: Option<&str>) -> Result<Instances, PayloadError> {
    parse(body, content_type, Side::Request)
}

/// Parses a captured response body into one row per prediction.
///
/// Content types are handled as in [`parse_request`]. Every column name
/// starts with `prediction`, so request and response columns never collide
/// when stored side by side.
pub fn parse_response(body: &[u8], content_type: Option<&str>) -> Result<Instances, PayloadError> {
    parse(body, content_type, Side::Response)
}

fn parse(body: &[u8], content_type: Option<&str>, side: Side) -> Result<Instances, PayloadError> {
    // Some clients (notably on Windows) prepend a UTF-8 byte order mark,
    // which neither serde_json nor a header name should see.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let table = if is_csv(content_type) {
        csv_body::parse(body, side)?
    } else {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| PayloadError::new(format!("{side} is not JSON: {e}")))?;
        json::parse(&value, side)?
    };
    Ok(table.finish())
}

/// Whether the media type (ignoring parameters and case) names CSV.
fn is_csv(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let media_type = ct
            .split_once(';')
            .map_or(ct, |(media_type, _)| media_type)
            .trim();
        media_type.eq_ignore_ascii_case("text/csv")
            || media_type.eq_ignore_ascii_case("application/csv")
    })
}

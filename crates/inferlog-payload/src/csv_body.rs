//! CSV bodies (`text/csv`, `application/csv`): a header line, then one row
//! per line, with cell types inferred from the text.

use crate::names::Side;
use crate::table::TableBuilder;
use crate::{PayloadError, Value};

/// Splits a CSV body into rows. Request columns are the sanitized headers;
/// response columns are `prediction_{header}`, or just `prediction` when
/// there is a single column.
pub(crate) fn parse(body: &[u8], side: Side) -> Result<TableBuilder, PayloadError> {
    let malformed = |e: csv::Error| PayloadError::new(format!("{side} CSV is malformed: {e}"));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body);
    let headers = reader.headers().map_err(malformed)?;
    let width = headers.len();
    let mut table = TableBuilder::new();
    for header in headers {
        let name = match side {
            Side::Response if width == 1 => side.scalar(),
            _ => side.keyed(header),
        };
        table.add_column(name)?;
    }
    // The reader is not `flexible`, so every record has exactly `width`
    // fields; a ragged line is reported as an error.
    for record in reader.records() {
        let record = record.map_err(malformed)?;
        table.push_row(record.iter().map(infer).collect())?;
    }
    Ok(table)
}

/// Infers a cell from CSV text: integer, then float, then boolean, else
/// string; an empty field is Null.
fn infer(field: &str) -> Value {
    if field.is_empty() {
        Value::Null
    } else if let Ok(i) = field.parse::<i64>() {
        Value::Int(i)
    } else if let Ok(f) = field.parse::<f64>() {
        Value::Float(f)
    } else if field.eq_ignore_ascii_case("true") {
        Value::Bool(true)
    } else if field.eq_ignore_ascii_case("false") {
        Value::Bool(false)
    } else {
        Value::Str(field.to_owned())
    }
}

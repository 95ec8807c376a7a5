//! JSON bodies: MLflow scoring and TF Serving shapes, plus the mapping of
//! JSON values to [`Value`] cells. v2 tensors are delegated to [`crate::v2`].

use std::collections::HashMap;
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Number, Value as Json};

use crate::error::shown;
use crate::names::{sanitize_column_name, Side};
use crate::table::TableBuilder;
use crate::{v2, PayloadError, Value};

type JsonObject = Map<String, Json>;

/// Top-level keys that select a request format; exactly one must be present.
const REQUEST_FORMATS: [&str; 4] = [
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
];

/// Top-level request keys that carry options or ids rather than features.
const REQUEST_IGNORED: [&str; 5] = [
    "client_request_id",
    "params",
    "signature_name",
    "parameters",
    "id",
];

/// Top-level keys that hold the predictions of a response.
const RESPONSE_FORMATS: [&str; 2] = ["predictions", "outputs"];

/// Standard-alphabet base64 as TF Serving clients send it. Padding is
/// optional because some encoders strip it and the data is still unambiguous.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Splits a parsed JSON body into rows.
pub(crate) fn parse(value: &Json, side: Side) -> Result<TableBuilder, PayloadError> {
    match side {
        Side::Request => request(value),
        Side::Response => response(value),
    }
}

fn request(value: &Json) -> Result<TableBuilder, PayloadError> {
    let side = Side::Request;
    let Json::Object(top) = value else {
        return Err(unrecognised(side, value));
    };
    let (format, body) = format_key(top, &REQUEST_FORMATS, side)?;
    let tensors = match body {
        Json::Array(items) if format == "inputs" && v2::is_tensor_list(items) => Some(items),
        _ => None,
    };
    // A v2 request may also name the outputs it wants back.
    let allowed = |key: &str| {
        key == format || REQUEST_IGNORED.contains(&key) || (tensors.is_some() && key == "outputs")
    };
    if let Some(extra) = top.keys().find(|key| !allowed(key)) {
        return Err(PayloadError::new(format!(
            "unrecognised request shape: unexpected key {} next to {format}",
            shown(extra)
        )));
    }
    if let Some(items) = tensors {
        return v2::parse(items, side);
    }
    match format {
        "dataframe_split" => dataframe_split(body),
        "dataframe_records" => dataframe_records(body),
        "instances" => match body {
            Json::Array(items) => list(items, side, format),
            _ => Err(PayloadError::new("instances is not a list")),
        },
        _ => any(body, side, format),
    }
}

fn response(value: &Json) -> Result<TableBuilder, PayloadError> {
    let side = Side::Response;
    match value {
        Json::Array(items) => list(items, side, "response"),
        // Other keys (model_name, model_version, id, ...) are metadata.
        Json::Object(top) => match format_key(top, &RESPONSE_FORMATS, side)? {
            ("outputs", Json::Array(items)) if v2::is_tensor_list(items) => v2::parse(items, side),
            (format, body) => any(body, side, format),
        },
        _ => Err(unrecognised(side, value)),
    }
}

/// Finds the one key of `formats` present in `top`.
fn format_key<'a>(
    top: &'a JsonObject,
    formats: &[&'static str],
    side: Side,
) -> Result<(&'static str, &'a Json), PayloadError> {
    let mut found = formats
        .iter()
        .filter_map(|&key| top.get(key).map(|body| (key, body)));
    match (found.next(), found.next()) {
        (Some(only), None) => Ok(only),
        (Some((a, _)), Some((b, _))) => Err(PayloadError::new(format!(
            "unrecognised {side} shape: both {a} and {b} present"
        ))),
        (None, _) => Err(PayloadError::new(format!(
            "unrecognised {side} shape: {}",
            describe_object(top)
        ))),
    }
}

/// `{"dataframe_split": {"columns": [...], "data": [[...], ...], "index": [...]}}`
fn dataframe_split(body: &Json) -> Result<TableBuilder, PayloadError> {
    let split = body
        .as_object()
        .ok_or_else(|| PayloadError::new("dataframe_split is not an object"))?;
    let data = split
        .get("data")
        .ok_or_else(|| PayloadError::new("dataframe_split has no data"))?
        .as_array()
        .ok_or_else(|| PayloadError::new("dataframe_split.data is not a list"))?;
    let rows = data
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.as_array().map(Vec::as_slice).ok_or_else(|| {
                PayloadError::new(format!("dataframe_split.data[{i}] is not a list"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(columns) = split.get("columns").filter(|columns| !columns.is_null()) else {
        return positional(rows, Side::Request);
    };
    let columns = columns
        .as_array()
        .ok_or_else(|| PayloadError::new("dataframe_split.columns is not a list"))?;
    let mut table = TableBuilder::new();
    for column in columns {
        let label = match column {
            Json::String(name) => sanitize_column_name(name),
            // pandas allows non-string labels such as integers.
            other => sanitize_column_name(&other.to_string()),
        };
        table.add_column(label)?;
    }
    for (i, row) in rows.into_iter().enumerate() {
        if row.len() != columns.len() {
            return Err(PayloadError::new(format!(
                "dataframe_split.data[{i}] has {} values but there are {} columns",
                row.len(),
                columns.len()
            )));
        }
        table.push_row(cells(row)?)?;
    }
    Ok(table)
}

/// `{"dataframe_records": [{"a": 1, "b": 2}, ...]}`
fn dataframe_records(body: &Json) -> Result<TableBuilder, PayloadError> {
    let items = body
        .as_array()
        .ok_or_else(|| PayloadError::new("dataframe_records is not a list"))?;
    let objects = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_object().ok_or_else(|| {
                PayloadError::new(format!("dataframe_records[{i}] is not an object"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    records(objects, Side::Request)
}

/// Any value under `inputs`, `predictions` or `outputs`.
fn any(body: &Json, side: Side, what: &str) -> Result<TableBuilder, PayloadError> {
    match body {
        Json::Array(items) => list(items, side, what),
        Json::Object(map) if b64(map).is_none() => object(map, side, what),
        scalar => scalars([scalar], side),
    }
}

/// What a list element is, for choosing between the list layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Anything that becomes a single cell, including `{"b64": ...}`.
    Scalar,
    Array,
    Object,
}

impl Kind {
    fn of(value: &Json) -> Self {
        match value {
            Json::Array(_) => Kind::Array,
            Json::Object(map) if b64(map).is_none() => Kind::Object,
            _ => Kind::Scalar,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Scalar => "a scalar",
            Kind::Array => "a list",
            Kind::Object => "an object",
        })
    }
}

/// A list of instances: scalars (one column), lists (positional columns) or
/// objects (one column per key). Mixing them has no row interpretation.
fn list(items: &[Json], side: Side, what: &str) -> Result<TableBuilder, PayloadError> {
    let Some(first) = items.first() else {
        return Ok(TableBuilder::new());
    };
    let kind = Kind::of(first);
    if let Some((i, other)) = items
        .iter()
        .map(Kind::of)
        .enumerate()
        .find(|&(_, k)| k != kind)
    {
        return Err(PayloadError::new(format!(
            "{what} mixes element kinds: {what}[0] is {kind} but {what}[{i}] is {other}"
        )));
    }
    match kind {
        Kind::Scalar => scalars(items, side),
        Kind::Array => positional(
            items.iter().filter_map(Json::as_array).map(Vec::as_slice),
            side,
        ),
        Kind::Object => records(items.iter().filter_map(Json::as_object), side),
    }
}

/// One row per scalar, in a single `input` / `prediction` column.
fn scalars<'a>(
    values: impl IntoIterator<Item = &'a Json>,
    side: Side,
) -> Result<TableBuilder, PayloadError> {
    let mut table = TableBuilder::new();
    table.add_column(side.scalar())?;
    for value in values {
        table.push_row(vec![cell(value)?])?;
    }
    Ok(table)
}

/// Rows of positional values; columns `input_{i}` / `prediction_{i}` up to
/// the longest row, shorter rows Null-padded.
fn positional<'a>(
    rows: impl IntoIterator<Item = &'a [Json]>,
    side: Side,
) -> Result<TableBuilder, PayloadError> {
    let mut table = TableBuilder::new();
    table.positional = true;
    for row in rows {
        while table.width() < row.len() {
            table.add_column(side.positional(table.width()))?;
        }
        table.push_row(cells(row)?)?;
    }
    Ok(table)
}

/// Rows of named values; columns are the union of keys in first-seen order,
/// a key missing from a record gives Null. Within one object, "first seen"
/// is serde_json's map order: sorted by key, or document order should the
/// workspace ever enable serde_json's `preserve_order` feature.
fn records<'a>(
    objects: impl IntoIterator<Item = &'a JsonObject>,
    side: Side,
) -> Result<TableBuilder, PayloadError> {
    let mut table = TableBuilder::new();
    // Keyed by the raw key: distinct keys that sanitize alike stay distinct
    // columns (and are told apart by `_2` suffixes).
    let mut column_of: HashMap<&str, usize> = HashMap::new();
    for record in objects {
        let mut row = Vec::with_capacity(record.len());
        for (key, value) in record {
            let column = match column_of.get(key.as_str()) {
                Some(&column) => column,
                None => {
                    let column = table.add_column(side.keyed(key))?;
                    column_of.insert(key, column);
                    column
                }
            };
            if row.len() <= column {
                row.resize(column + 1, Value::Null);
            }
            row[column] = cell(value)?;
        }
        table.push_row(row)?;
    }
    Ok(table)
}

/// An object under `inputs` / `predictions` / `outputs`: name→list is
/// columnar (row `i` takes element `i` of every list), anything else is a
/// single row with one column per name.
fn object(map: &JsonObject, side: Side, what: &str) -> Result<TableBuilder, PayloadError> {
    let mut table = TableBuilder::new();
    if !map.values().all(Json::is_array) {
        let mut row = Vec::with_capacity(map.len());
        for (name, value) in map {
            table.add_column(side.keyed(name))?;
            row.push(cell(value)?);
        }
        table.push_row(row)?;
        return Ok(table);
    }
    let mut lists: Vec<(&str, &[Json])> = Vec::with_capacity(map.len());
    for (name, value) in map {
        let list = value.as_array().map_or(&[][..], Vec::as_slice);
        if let Some(&(first_name, first)) = lists.first() {
            if first.len() != list.len() {
                return Err(PayloadError::new(format!(
                    "{what} columns have different lengths: {} has {}, {} has {}",
                    shown(first_name),
                    first.len(),
                    shown(name),
                    list.len()
                )));
            }
        }
        table.add_column(side.keyed(name))?;
        lists.push((name.as_str(), list));
    }
    let height = lists.first().map_or(0, |(_, list)| list.len());
    for i in 0..height {
        let row = lists
            .iter()
            .map(|(_, list)| list.get(i).map_or(Ok(Value::Null), cell))
            .collect::<Result<Vec<_>, _>>()?;
        table.push_row(row)?;
    }
    Ok(table)
}

fn cells(values: &[Json]) -> Result<Vec<Value>, PayloadError> {
    values.iter().map(cell).collect()
}

/// Maps one JSON value to a cell: `{"b64": s}` becomes bytes, other
/// arrays/objects are kept as compact JSON text.
pub(crate) fn cell(value: &Json) -> Result<Value, PayloadError> {
    Ok(match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => number(n),
        Json::String(s) => Value::Str(s.clone()),
        Json::Object(map) => match b64(map) {
            Some(encoded) => Value::Bytes(decode_b64(encoded)?),
            None => Value::Json(value.to_string()),
        },
        Json::Array(_) => Value::Json(value.to_string()),
    })
}

/// Integers that fit `i64` stay exact; everything else becomes a float.
pub(crate) fn number(n: &Number) -> Value {
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Value::Int(i),
        (None, Some(f)) => Value::Float(f),
        // Only reachable if serde_json's `arbitrary_precision` feature gets
        // enabled and the number exceeds f64; keep its text rather than fail.
        (None, None) => Value::Json(n.to_string()),
    }
}

/// The payload of TF Serving's binary wrapper: an object whose only key is
/// `b64`.
pub(crate) fn b64(map: &JsonObject) -> Option<&Json> {
    if map.len() == 1 {
        map.get("b64")
    } else {
        None
    }
}

/// Decodes the value of a `{"b64": ...}` wrapper.
pub(crate) fn decode_b64(encoded: &Json) -> Result<Vec<u8>, PayloadError> {
    let text = encoded
        .as_str()
        .ok_or_else(|| PayloadError::new("invalid {\"b64\": ...} value: not a string"))?;
    B64.decode(text).map_err(|e| {
        PayloadError::new(format!(
            "invalid base64 in {{\"b64\": \"{}\"}}: {e}",
            shown(text)
        ))
    })
}

fn unrecognised(side: Side, value: &Json) -> PayloadError {
    let shape = match value {
        Json::Object(map) => describe_object(map),
        Json::Array(_) => "array".to_owned(),
        Json::String(_) => "string".to_owned(),
        Json::Number(_) => "number".to_owned(),
        Json::Bool(_) => "boolean".to_owned(),
        Json::Null => "null".to_owned(),
    };
    PayloadError::new(format!("unrecognised {side} shape: {shape}"))
}

/// `object with keys [a, b]`, listing at most a handful of keys.
fn describe_object(map: &JsonObject) -> String {
    const MAX_KEYS: usize = 10;
    let mut keys: Vec<String> = map.keys().take(MAX_KEYS).map(|key| shown(key)).collect();
    if map.len() > MAX_KEYS {
        keys.push("…".to_owned());
    }
    format!("object with keys [{}]", keys.join(", "))
}

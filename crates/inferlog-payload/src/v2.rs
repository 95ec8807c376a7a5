//! Open Inference Protocol v2 (KServe, Triton) tensors.
//!
//! Each tensor has a `shape` whose first dimension is the batch: it gives the
//! rows, and the remaining dimensions are flattened into one column per
//! element. All tensors of a body must agree on the batch size.

use serde_json::Value as Json;

use crate::error::shown;
use crate::json::{b64, decode_b64, number};
use crate::names::Side;
use crate::table::{TableBuilder, MAX_COLUMNS, MAX_ROWS};
use crate::{PayloadError, Value};

/// Most dimensions a tensor shape may have (NumPy's limit); also keeps
/// shapes quoted in error messages short.
const MAX_DIMS: usize = 64;

/// Whether a list is v2 tensors rather than instances.
///
/// `data` is deliberately not required: an element that carries `name`,
/// `shape` and `datatype` is a tensor, and one without `data` (binary tensor
/// extension) is reported as such instead of being mistaken for a record.
pub(crate) fn is_tensor_list(items: &[Json]) -> bool {
    !items.is_empty()
        && items.iter().all(|item| {
            item.as_object().is_some_and(|t| {
                ["name", "shape", "datatype"]
                    .iter()
                    .all(|key| t.contains_key(*key))
            })
        })
}

/// Turns a list accepted by [`is_tensor_list`] into rows.
pub(crate) fn parse(items: &[Json], side: Side) -> Result<TableBuilder, PayloadError> {
    let tensors = items
        .iter()
        .map(|item| Tensor::parse(item, side))
        .collect::<Result<Vec<_>, _>>()?;
    let height = tensors.first().map_or(0, |t| t.rows);
    if let Some(other) = tensors.iter().find(|t| t.rows != height) {
        return Err(PayloadError::new(format!(
            "v2 {}s disagree on batch size: {} has {height} rows, {} has {}",
            side.tensor_role(),
            shown(tensors.first().map_or("", |t| t.name)),
            shown(other.name),
            other.rows
        )));
    }

    let mut table = TableBuilder::new();
    let only_tensor = tensors.len() == 1;
    for tensor in &tensors {
        if tensor.per_row == 1 {
            table.add_column(side.tensor(tensor.name, None, only_tensor))?;
        } else {
            for j in 0..tensor.per_row {
                table.add_column(side.tensor(tensor.name, Some(j), only_tensor))?;
            }
        }
    }
    let mut sources: Vec<_> = tensors
        .into_iter()
        .map(|t| (t.per_row, t.values.into_iter()))
        .collect();
    for _ in 0..height {
        let mut row = Vec::with_capacity(table.width());
        for (per_row, values) in &mut sources {
            row.extend(values.by_ref().take(*per_row));
        }
        table.push_row(row)?;
    }
    Ok(table)
}

/// One validated tensor with its elements converted to cells, row-major.
struct Tensor<'a> {
    name: &'a str,
    rows: usize,
    per_row: usize,
    values: Vec<Value>,
}

impl<'a> Tensor<'a> {
    fn parse(item: &'a Json, side: Side) -> Result<Self, PayloadError> {
        let role = side.tensor_role();
        let fields = item
            .as_object()
            .ok_or_else(|| PayloadError::new(format!("v2 {role} is not an object")))?;
        let name = fields
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| PayloadError::new(format!("v2 {role} name is not a string")))?;
        let fail = |what: String| PayloadError::new(format!("v2 {role} {}: {what}", shown(name)));

        let datatype = fields
            .get("datatype")
            .and_then(Json::as_str)
            .ok_or_else(|| fail("datatype is not a string".to_owned()))?;
        let kind = DataType::parse(datatype)
            .ok_or_else(|| fail(format!("unsupported datatype {}", shown(datatype))))?;

        let shape = fields
            .get("shape")
            .and_then(Json::as_array)
            .ok_or_else(|| fail("shape is not a list".to_owned()))?
            .iter()
            .map(|dim| dim.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| fail("shape must be a list of non-negative integers".to_owned()))?;
        if shape.len() > MAX_DIMS {
            return Err(fail(format!("shape has more than {MAX_DIMS} dimensions")));
        }
        let too_large = || fail(format!("shape {shape:?} is too large"));
        // Checked before touching the data, so a hostile shape costs nothing.
        let total = product(&shape).ok_or_else(too_large)?;
        let (rows, per_row) = match shape.split_first() {
            Some((&rows, rest)) => (rows, product(rest).ok_or_else(too_large)?),
            None => (1, 1),
        };
        if rows > MAX_ROWS {
            return Err(fail(format!("{rows} rows exceed the limit of {MAX_ROWS}")));
        }
        if per_row > MAX_COLUMNS {
            return Err(fail(format!(
                "{per_row} elements per row exceed the limit of {MAX_COLUMNS} columns"
            )));
        }

        let data = fields
            .get("data")
            .ok_or_else(|| fail("has no data (binary tensor data is not supported)".to_owned()))?;
        let found = count_elements(data);
        if found != total {
            return Err(fail(format!(
                "shape {shape:?} needs {total} values but data has {found}"
            )));
        }
        let mut values = Vec::with_capacity(total);
        flatten(data, &mut |element| {
            let value = kind
                .convert(element)
                .map_err(|e| fail(e.0))?
                .ok_or_else(|| fail(format!("{datatype} data contains {}", describe(element))))?;
            values.push(value);
            Ok(())
        })?;
        Ok(Tensor {
            name,
            rows,
            per_row,
            values,
        })
    }
}

/// The cell type a v2 datatype maps to.
#[derive(Debug, Clone, Copy)]
enum DataType {
    Bool,
    Int,
    Float,
    Bytes,
}

impl DataType {
    fn parse(datatype: &str) -> Option<Self> {
        Some(match datatype.to_ascii_uppercase().as_str() {
            "BOOL" => DataType::Bool,
            "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
                DataType::Int
            }
            "FP16" | "BF16" | "FP32" | "FP64" => DataType::Float,
            "BYTES" => DataType::Bytes,
            _ => return None,
        })
    }

    /// Converts one flattened element; `Ok(None)` if it does not fit the
    /// datatype.
    fn convert(self, element: &Json) -> Result<Option<Value>, PayloadError> {
        Ok(match (self, element) {
            (DataType::Bool, Json::Bool(b)) => Some(Value::Bool(*b)),
            // UINT64 values beyond i64 become floats, as in plain JSON.
            (DataType::Int, Json::Number(n)) if n.is_i64() || n.is_u64() => Some(number(n)),
            (DataType::Float, Json::Number(n)) => n.as_f64().map(Value::Float),
            (DataType::Bytes, Json::String(s)) => Some(Value::Str(s.clone())),
            (DataType::Bytes, Json::Object(map)) => match b64(map) {
                Some(encoded) => Some(Value::Bytes(decode_b64(encoded)?)),
                None => None,
            },
            _ => None,
        })
    }
}

/// Product of dimensions, `None` on overflow.
fn product(dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
}

/// Number of leaves in possibly nested data lists. Recursion depth is bounded
/// by serde_json's nesting limit.
fn count_elements(data: &Json) -> usize {
    match data {
        Json::Array(items) => items.iter().map(count_elements).sum(),
        _ => 1,
    }
}

/// Visits the leaves of possibly nested data lists in row-major order.
fn flatten<'j>(
    data: &'j Json,
    visit: &mut impl FnMut(&'j Json) -> Result<(), PayloadError>,
) -> Result<(), PayloadError> {
    match data {
        Json::Array(items) => items.iter().try_for_each(|item| flatten(item, visit)),
        leaf => visit(leaf),
    }
}

/// Short description of an element that does not fit its datatype.
fn describe(element: &Json) -> &'static str {
    match element {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a fractional number",
        Json::Number(_) => "an integer",
        Json::String(_) => "a string",
        Json::Object(map) if b64(map).is_some() => "a b64 object",
        Json::Object(_) => "an object",
        Json::Array(_) => "a list",
    }
}

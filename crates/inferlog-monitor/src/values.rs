//! Reading Arrow columns as plain values, in row order.

use crate::MonitorError;
use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Float64Type};

/// Values as doubles; null, non-finite (NaN, ±inf) and values too large for the statistics
/// (|x| ≥ 2^1022) are `None`, so one absurd input cannot stop a monitoring run.
pub(crate) fn numbers(arrays: &[ArrayRef]) -> Result<Vec<Option<f64>>, MonitorError> {
    let mut out = Vec::new();
    for array in arrays {
        let doubles = cast(array, &DataType::Float64)?;
        let doubles = doubles.as_primitive::<Float64Type>();
        out.extend((0..doubles.len()).map(|i| doubles.is_valid(i).then(|| doubles.value(i)).filter(|v| v.is_finite() && v.abs() < inferlog_stats::MAX_MAGNITUDE)));
    }
    Ok(out)
}

/// Values as text (booleans as `true`/`false`); null is `None`.
pub(crate) fn texts(arrays: &[ArrayRef]) -> Result<Vec<Option<String>>, MonitorError> {
    let mut out = Vec::new();
    for array in arrays {
        let text = cast(array, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        out.extend((0..text.len()).map(|i| text.is_valid(i).then(|| text.value(i).to_string())));
    }
    Ok(out)
}

/// Text values as codes into their distinct values.
pub(crate) struct Coded {
    /// Per row, the index of its value in `values`; `None` for null.
    pub codes: Vec<Option<u32>>,
    pub values: Vec<String>,
}

/// Values as text (booleans as `true`/`false`), coded.
pub(crate) fn coded(arrays: &[ArrayRef]) -> Result<Coded, MonitorError> {
    let mut index: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut coded = Coded { codes: Vec::new(), values: Vec::new() };
    for array in arrays {
        let text = cast(array, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        coded.codes.reserve(text.len());
        for i in 0..text.len() {
            let code = text.is_valid(i).then(|| {
                let value = text.value(i);
                match index.get(value) {
                    Some(&code) => code,
                    None => {
                        let code = coded.values.len() as u32;
                        index.insert(value.to_string(), code);
                        coded.values.push(value.to_string());
                        code
                    }
                }
            });
            coded.codes.push(code);
        }
    }
    Ok(coded)
}

/// The present values and how many were missing.
pub(crate) fn present<T>(values: Vec<Option<T>>) -> (Vec<T>, u64) {
    let total = values.len();
    let present: Vec<T> = values.into_iter().flatten().collect();
    let missing = (total - present.len()) as u64;
    (present, missing)
}

//! Typed feature and prediction columns: choosing a column's type from its values, widening
//! it when the data asks for it, and building the Arrow arrays.

use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use deltalake::arrow::datatypes::DataType;
use inferlog_payload::Value;
use std::sync::Arc;

/// The types a feature or prediction column can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Bool,
    Int,
    Float,
    Text,
    Binary,
}

impl Kind {
    pub fn of(value: &Value) -> Option<Kind> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(Kind::Bool),
            Value::Int(_) => Some(Kind::Int),
            Value::Float(_) => Some(Kind::Float),
            Value::Str(_) | Value::Json(_) => Some(Kind::Text),
            Value::Bytes(_) => Some(Kind::Binary),
        }
    }

    pub fn from_arrow(data_type: &DataType) -> Option<Kind> {
        match data_type {
            DataType::Boolean => Some(Kind::Bool),
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Some(Kind::Int),
            DataType::Float32 | DataType::Float64 => Some(Kind::Float),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Kind::Text),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Some(Kind::Binary),
            _ => None,
        }
    }

    pub fn arrow(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Text => DataType::Utf8,
            Kind::Binary => DataType::Binary,
        }
    }

    pub fn sql_name(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::Int => "bigint",
            Kind::Float => "double",
            Kind::Text => "string",
            Kind::Binary => "binary",
        }
    }
}

/// Counts of the kinds of values seen in one column of a batch.
#[derive(Debug, Default, Clone)]
pub struct KindCounts {
    counts: [usize; 5],
}

impl KindCounts {
    pub fn add(&mut self, value: &Value) {
        if let Some(kind) = Kind::of(value) {
            self.counts[kind as usize] += 1;
        }
    }

    fn count(&self, kind: Kind) -> usize {
        self.counts[kind as usize]
    }

    /// The type of a new column: the most common kind of its values, with integers counted
    /// as doubles as soon as one value has a fraction (int → double widening). Values of
    /// other kinds become nulls recorded as type errors. `None` when every value was null.
    pub fn choose(&self) -> Option<Kind> {
        let numeric = self.count(Kind::Int) + self.count(Kind::Float);
        let number_kind = if self.count(Kind::Float) > 0 { Kind::Float } else { Kind::Int };
        [
            (number_kind, numeric),
            (Kind::Text, self.count(Kind::Text)),
            (Kind::Bool, self.count(Kind::Bool)),
            (Kind::Binary, self.count(Kind::Binary)),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        // Ties go to the earlier entry: numbers, then text.
        .fold(None, |best: Option<(Kind, usize)>, (kind, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((kind, n)),
        })
        .map(|(kind, _)| kind)
    }

    /// Whether a column stored as `existing` must widen to hold these values.
    pub fn widens(&self, existing: Kind) -> Option<Kind> {
        (existing == Kind::Int && self.count(Kind::Float) > 0).then_some(Kind::Float)
    }
}

/// Why a value does not fit its column; the row keeps a null in its place.
pub fn type_error(column: &str, kind: Kind, value: &Value) -> String {
    let shown = match value {
        Value::Str(s) | Value::Json(s) => {
            let short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                format!("\"{short}…\"")
            } else {
                format!("\"{short}\"")
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        Value::Null => "null".into(),
    };
    format!("{column}: expected {}, got {shown}", kind.sql_name())
}

/// Builds one column of `kind` from per-row cells. A cell that does not fit is stored as null
/// and reported through `on_error(row, message)`.
pub fn build_array(
    kind: Kind,
    column: &str,
    cells: &[Option<&Value>],
    mut on_error: impl FnMut(usize, String),
) -> ArrayRef {
    let mut misfit = |row: usize, value: &Value| on_error(row, type_error(column, kind, value));
    match kind {
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(cells.len());
            for (row, cell) in cells.iter().enumerate() {
                match cell {
                    Some(Value::Bool(v)) => b.append_value(*v),
                    Some(Value::Null) | None => b.append_null(),
                    Some(other) => {
                        misfit(row, other);
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(cells.len());
            for (row, cell) in cells.iter().enumerate() {
                match cell {
                    Some(Value::Int(v)) => b.append_value(*v),
                    Some(Value::Null) | None => b.append_null(),
                    Some(other) => {
                        misfit(row, other);
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(cells.len());
            for (row, cell) in cells.iter().enumerate() {
                match cell {
                    Some(Value::Float(v)) => b.append_value(*v),
                    Some(Value::Int(v)) => b.append_value(*v as f64),
                    Some(Value::Null) | None => b.append_null(),
                    Some(other) => {
                        misfit(row, other);
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        Kind::Text => {
            let mut b = StringBuilder::with_capacity(cells.len(), cells.len() * 8);
            for cell in cells {
                // Every scalar has a faithful text form; a text column never rejects a value.
                match cell {
                    Some(Value::Str(s) | Value::Json(s)) => b.append_value(s),
                    Some(Value::Bool(v)) => b.append_value(v.to_string()),
                    Some(Value::Int(v)) => b.append_value(v.to_string()),
                    Some(Value::Float(v)) => b.append_value(v.to_string()),
                    Some(Value::Bytes(v)) => {
                        use base64::Engine;
                        b.append_value(base64::engine::general_purpose::STANDARD.encode(v))
                    }
                    Some(Value::Null) | None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Binary => {
            let mut b = BinaryBuilder::with_capacity(cells.len(), cells.len() * 8);
            for (row, cell) in cells.iter().enumerate() {
                match cell {
                    Some(Value::Bytes(v)) => b.append_value(v),
                    Some(Value::Null) | None => b.append_null(),
                    Some(other) => {
                        misfit(row, other);
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, Float64Array};

    fn counts(values: &[Value]) -> KindCounts {
        let mut c = KindCounts::default();
        values.iter().for_each(|v| c.add(v));
        c
    }

    #[test]
    fn integers_widen_to_double_when_a_fraction_appears() {
        assert_eq!(counts(&[Value::Int(1), Value::Int(2)]).choose(), Some(Kind::Int));
        assert_eq!(counts(&[Value::Int(1), Value::Float(2.5)]).choose(), Some(Kind::Float));
        assert_eq!(counts(&[Value::Float(2.5)]).widens(Kind::Int), Some(Kind::Float));
        assert_eq!(counts(&[Value::Int(2)]).widens(Kind::Float), None);
        assert_eq!(counts(&[Value::Null]).choose(), None);
    }

    #[test]
    fn the_most_common_kind_wins_and_the_rest_are_type_errors() {
        let values = [Value::Float(1.0), Value::Str("n/a".into()), Value::Int(3)];
        assert_eq!(counts(&values).choose(), Some(Kind::Float));
        let cells: Vec<Option<&Value>> = values.iter().map(Some).collect();
        let mut errors = Vec::new();
        let array = build_array(Kind::Float, "x", &cells, |row, e| errors.push((row, e)));
        let array = array.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(array.value(0), 1.0);
        assert!(array.is_null(1));
        assert_eq!(array.value(2), 3.0);
        assert_eq!(errors, vec![(1, "x: expected double, got \"n/a\"".to_string())]);
    }
}

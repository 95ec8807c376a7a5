/// Input that no statistic can be computed from. Undefined results (for example an empty
/// sample) are not errors: functions return `Ok(None)` or `None` for them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A numeric value is NaN, infinite, or so large (|x| ≥ 2^1022) that the range of a sample
    /// could overflow. Callers drop missing values before calling.
    #[error("value {value} at index {index} is not a finite number of magnitude below 2^1022")]
    InvalidValue { index: usize, value: f64 },
    /// Two inputs that pair up element by element have different lengths.
    #[error("{what}: lengths differ ({left} vs {right})")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
    /// A probability is NaN or outside [0, 1].
    #[error("probability {value} at row {row}, column {column} is not in [0, 1]")]
    InvalidProbability {
        row: usize,
        column: usize,
        value: f64,
    },
    /// `y_true` holds a label that the declared labels do not contain.
    #[error("y_true[{index}] is not one of the declared labels")]
    UnknownLabel { index: usize },
    /// The declared labels are fewer than two or contain a duplicate.
    #[error("labels must be at least two distinct values (got {count}, duplicates: {duplicates})")]
    InvalidLabels { count: usize, duplicates: bool },
}

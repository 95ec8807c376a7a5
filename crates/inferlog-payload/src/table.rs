//! Incremental construction of [`Instances`] under the size limits.

use crate::names::make_unique;
use crate::{Instances, PayloadError, Value};

/// Most rows one payload may produce; a larger batch is rejected rather than
/// logged, so a single capture cannot exhaust memory.
pub(crate) const MAX_ROWS: usize = 1_000_000;

/// Most columns one payload may produce (e.g. a wide tensor flattened into
/// one column per element).
pub(crate) const MAX_COLUMNS: usize = 10_000;

/// Most cells (rows × columns) one payload may produce. Rows are Null-padded
/// to the full width, so without this a small body with one wide row and many
/// empty ones could expand to `MAX_ROWS × MAX_COLUMNS` cells.
pub(crate) const MAX_CELLS: usize = 10_000_000;

/// Rows being collected. Rows may be shorter than the current column list
/// (columns can appear after a row was pushed); they are Null-padded in
/// [`TableBuilder::finish`]. The limits are checked on every growth step, so
/// the padded size is known to be bounded before anything is padded.
#[derive(Debug, Default)]
pub(crate) struct TableBuilder {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    /// Columns were named by position, see [`Instances::positional`].
    pub(crate) positional: bool,
}

impl TableBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of columns so far.
    pub(crate) fn width(&self) -> usize {
        self.columns.len()
    }

    /// Appends a column (not yet made unique) and returns its index.
    pub(crate) fn add_column(&mut self, name: String) -> Result<usize, PayloadError> {
        let width = self.columns.len() + 1;
        if width > MAX_COLUMNS {
            return Err(PayloadError::new(format!(
                "payload has more than {MAX_COLUMNS} columns"
            )));
        }
        check_cells(self.rows.len(), width)?;
        self.columns.push(name);
        Ok(width - 1)
    }

    /// Appends a row of at most [`Self::width`] cells.
    pub(crate) fn push_row(&mut self, row: Vec<Value>) -> Result<(), PayloadError> {
        debug_assert!(row.len() <= self.columns.len(), "row wider than the table");
        let height = self.rows.len() + 1;
        if height > MAX_ROWS {
            return Err(PayloadError::new(format!(
                "payload has more than {MAX_ROWS} rows"
            )));
        }
        check_cells(height, self.columns.len())?;
        self.rows.push(row);
        Ok(())
    }

    /// Pads every row to the full width and makes the column names unique.
    pub(crate) fn finish(self) -> Instances {
        let width = self.columns.len();
        let rows = self
            .rows
            .into_iter()
            .map(|mut row| {
                row.resize(width, Value::Null);
                row
            })
            .collect();
        Instances {
            columns: make_unique(self.columns),
            rows,
            positional: self.positional,
        }
    }
}

fn check_cells(rows: usize, columns: usize) -> Result<(), PayloadError> {
    if rows.saturating_mul(columns) > MAX_CELLS {
        return Err(PayloadError::new(format!(
            "payload has more than {MAX_CELLS} cells"
        )));
    }
    Ok(())
}

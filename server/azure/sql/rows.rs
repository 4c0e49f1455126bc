//! A batch of result rows, stored flat: the cells of every row one after
//! the other in a single vector, plus where each row ends: two allocations
//! per batch (besides each text cell's own) instead of a vector per row,
//! which at a million rows a second was a visible share of the gateway's
//! work (BENCHMARKS.md, QuerySql).

use super::SqlValue;

/// Rows of one result set, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlRows {
    cells: Vec<SqlValue>,
    /// `cells[ends[i - 1]..ends[i]]` is row `i`.
    ends: Vec<usize>,
}

impl SqlRows {
    /// Room for `rows` rows of `cells` cells in all.
    pub fn with_capacity(rows: usize, cells: usize) -> Self {
        Self {
            cells: Vec::with_capacity(cells),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends a row; returns its cells.
    pub fn push_row(&mut self, cells: impl IntoIterator<Item = SqlValue>) -> &[SqlValue] {
        let start = self.cells.len();
        self.cells.extend(cells);
        self.ends.push(self.cells.len());
        &self.cells[start..]
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Number of cells, all rows together.
    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    /// The rows, each as its cells.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[SqlValue]> + '_ {
        (0..self.ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.cells[start..self.ends[i]]
        })
    }
}

impl<R: IntoIterator<Item = SqlValue>> FromIterator<R> for SqlRows {
    fn from_iter<I: IntoIterator<Item = R>>(rows: I) -> Self {
        let mut out = Self::default();
        for row in rows {
            out.push_row(row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_any_width_come_back_in_order() {
        let rows: SqlRows = [
            vec![SqlValue::Int(1), SqlValue::String("a".into())],
            vec![],
            vec![SqlValue::Null],
        ]
        .into_iter()
        .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.cell_count(), 3);
        let back: Vec<&[SqlValue]> = rows.iter().collect();
        assert_eq!(
            back,
            [
                &[SqlValue::Int(1), SqlValue::String("a".into())][..],
                &[][..],
                &[SqlValue::Null][..],
            ]
        );
        assert!(SqlRows::default().is_empty());
        assert_eq!(SqlRows::default().iter().count(), 0);
    }
}

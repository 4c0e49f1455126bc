//! A batch of result rows, stored flat: every row's cells one after the
//! other in one vector, where each row ends, and the text and binary data
//! of all cells in two buffers. A batch is a handful of allocations, not a
//! vector per row and a string per text cell.
//!
//! That matters beyond counting allocations: the query task builds batches
//! and the HTTP/2 task encodes and drops them, on another thread. Strings
//! allocated on one thread and freed on another defeat glibc's per-thread
//! caches; both threads then queue on the allocator's arena lock, and at a
//! million rows a second that was most of the gateway's own cost
//! (BENCHMARKS.md, QuerySql). Here a cell's `String` is copied into the
//! batch and freed on the thread that allocated it.

use super::SqlValue;

/// Rows of one result set, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlRows {
    cells: Vec<Cell>,
    /// `cells[ends[i - 1]..ends[i]]` is row `i`.
    ends: Vec<usize>,
    /// The text of every text cell, back to back.
    text: String,
    /// The data of every binary cell, back to back.
    data: Vec<u8>,
}

/// A cell as stored: text and binary data as ranges of the batch's buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(TextKind, usize, usize),
    Bytes(usize, usize),
    Timestamp { seconds: i64, nanos: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TextKind {
    Decimal,
    String,
    Guid,
    Date,
    Time,
}

/// A cell of a [`SqlRows`] batch, borrowed from it: [`SqlValue`]'s kinds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SqlCell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(&'a str),
    String(&'a str),
    Bytes(&'a [u8]),
    Guid(&'a str),
    Timestamp { seconds: i64, nanos: u32 },
    Date(&'a str),
    Time(&'a str),
}

impl SqlCell<'_> {
    /// About the bytes this cell takes on the wire (for batch bounds).
    pub fn encoded_len(&self) -> usize {
        2 + match self {
            Self::Null | Self::Bool(_) => 1,
            Self::Int(_) | Self::Float(_) => 8,
            Self::Timestamp { .. } => 12,
            Self::Decimal(s) | Self::String(s) | Self::Guid(s) | Self::Date(s) | Self::Time(s) => {
                s.len()
            }
            Self::Bytes(b) => b.len(),
        }
    }

    /// The cell as an owned value.
    pub fn to_value(&self) -> SqlValue {
        match *self {
            Self::Null => SqlValue::Null,
            Self::Bool(b) => SqlValue::Bool(b),
            Self::Int(i) => SqlValue::Int(i),
            Self::Float(f) => SqlValue::Float(f),
            Self::Decimal(s) => SqlValue::Decimal(s.to_owned()),
            Self::String(s) => SqlValue::String(s.to_owned()),
            Self::Bytes(b) => SqlValue::Bytes(b.to_vec()),
            Self::Guid(s) => SqlValue::Guid(s.to_owned()),
            Self::Timestamp { seconds, nanos } => SqlValue::Timestamp { seconds, nanos },
            Self::Date(s) => SqlValue::Date(s.to_owned()),
            Self::Time(s) => SqlValue::Time(s.to_owned()),
        }
    }
}

impl SqlValue {
    /// The value as a cell, borrowing its text or data.
    pub fn as_cell(&self) -> SqlCell<'_> {
        match self {
            Self::Null => SqlCell::Null,
            Self::Bool(b) => SqlCell::Bool(*b),
            Self::Int(i) => SqlCell::Int(*i),
            Self::Float(f) => SqlCell::Float(*f),
            Self::Decimal(s) => SqlCell::Decimal(s),
            Self::String(s) => SqlCell::String(s),
            Self::Bytes(b) => SqlCell::Bytes(b),
            Self::Guid(s) => SqlCell::Guid(s),
            Self::Timestamp { seconds, nanos } => SqlCell::Timestamp {
                seconds: *seconds,
                nanos: *nanos,
            },
            Self::Date(s) => SqlCell::Date(s),
            Self::Time(s) => SqlCell::Time(s),
        }
    }
}

/// One row of a [`SqlRows`] batch.
#[derive(Debug, Clone, Copy)]
pub struct SqlRow<'a> {
    rows: &'a SqlRows,
    cells: &'a [Cell],
}

impl<'a> SqlRow<'a> {
    /// The row's cells, in column order.
    pub fn cells(&self) -> impl ExactSizeIterator<Item = SqlCell<'a>> + 'a {
        let rows = self.rows;
        self.cells.iter().map(move |cell| rows.view(*cell))
    }

    /// The row as owned values.
    pub fn to_values(&self) -> Vec<SqlValue> {
        self.cells().map(|c| c.to_value()).collect()
    }
}

impl SqlRows {
    /// Room for `rows` rows of `cells` cells and `text` bytes of text in all.
    pub fn with_capacity(rows: usize, cells: usize, text: usize) -> Self {
        Self {
            cells: Vec::with_capacity(cells),
            ends: Vec::with_capacity(rows),
            text: String::with_capacity(text),
            data: Vec::new(),
        }
    }

    /// Appends a row; returns about the bytes it takes on the wire
    /// ([`SqlCell::encoded_len`]).
    pub fn push_row(&mut self, values: impl IntoIterator<Item = SqlValue>) -> usize {
        let bytes = values
            .into_iter()
            .map(|value| self.push_cell(value.as_cell()))
            .sum();
        self.end_row();
        bytes
    }

    /// Appends a cell to the row being built, copying its text or data into
    /// the batch; returns about the bytes it takes on the wire
    /// ([`SqlCell::encoded_len`]). [`end_row`](Self::end_row) ends the row.
    pub fn push_cell(&mut self, cell: SqlCell<'_>) -> usize {
        let bytes = cell.encoded_len();
        let stored = match cell {
            SqlCell::Null => Cell::Null,
            SqlCell::Bool(b) => Cell::Bool(b),
            SqlCell::Int(i) => Cell::Int(i),
            SqlCell::Float(f) => Cell::Float(f),
            SqlCell::Decimal(s) => self.push_text(TextKind::Decimal, s),
            SqlCell::String(s) => self.push_text(TextKind::String, s),
            SqlCell::Guid(s) => self.push_text(TextKind::Guid, s),
            SqlCell::Date(s) => self.push_text(TextKind::Date, s),
            SqlCell::Time(s) => self.push_text(TextKind::Time, s),
            SqlCell::Bytes(b) => {
                let start = self.data.len();
                self.data.extend_from_slice(b);
                Cell::Bytes(start, b.len())
            }
            SqlCell::Timestamp { seconds, nanos } => Cell::Timestamp { seconds, nanos },
        };
        self.cells.push(stored);
        bytes
    }

    /// Ends the row whose cells were pushed since the last row ended.
    pub fn end_row(&mut self) {
        self.ends.push(self.cells.len());
    }

    fn push_text(&mut self, kind: TextKind, s: &str) -> Cell {
        let start = self.text.len();
        self.text.push_str(s);
        Cell::Text(kind, start, s.len())
    }

    fn view(&self, cell: Cell) -> SqlCell<'_> {
        match cell {
            Cell::Null => SqlCell::Null,
            Cell::Bool(b) => SqlCell::Bool(b),
            Cell::Int(i) => SqlCell::Int(i),
            Cell::Float(f) => SqlCell::Float(f),
            Cell::Text(kind, start, len) => {
                // Whole strings were pushed: the range is on char boundaries.
                let s = self.text.get(start..start + len).unwrap_or_default();
                match kind {
                    TextKind::Decimal => SqlCell::Decimal(s),
                    TextKind::String => SqlCell::String(s),
                    TextKind::Guid => SqlCell::Guid(s),
                    TextKind::Date => SqlCell::Date(s),
                    TextKind::Time => SqlCell::Time(s),
                }
            }
            Cell::Bytes(start, len) => {
                SqlCell::Bytes(self.data.get(start..start + len).unwrap_or_default())
            }
            Cell::Timestamp { seconds, nanos } => SqlCell::Timestamp { seconds, nanos },
        }
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

    /// Bytes of text, all cells together.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The rows, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SqlRow<'_>> + DoubleEndedIterator + '_ {
        (0..self.ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            SqlRow {
                rows: self,
                cells: &self.cells[start..self.ends[i]],
            }
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
    fn rows_of_any_width_and_every_kind_come_back_in_order() {
        let every_kind = vec![
            SqlValue::Null,
            SqlValue::Bool(true),
            SqlValue::Int(-3),
            SqlValue::Float(2.5),
            SqlValue::Decimal("12.30".into()),
            SqlValue::String("héllo".into()),
            SqlValue::String(String::new()),
            SqlValue::Bytes(vec![0, 255]),
            SqlValue::Guid("6F9619FF-8B86-D011-B42D-00C04FC964FF".into()),
            SqlValue::Timestamp {
                seconds: -1,
                nanos: 5,
            },
            SqlValue::Date("2024-05-31".into()),
            SqlValue::Time("13:45:00.5".into()),
        ];
        let input = vec![
            every_kind.clone(),
            vec![],
            vec![SqlValue::String("世界".into()), SqlValue::Bytes(vec![7])],
        ];
        let rows: SqlRows = input.iter().cloned().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.cell_count(), every_kind.len() + 2);
        let back: Vec<Vec<SqlValue>> = rows.iter().map(|r| r.to_values()).collect();
        assert_eq!(back, input);
        assert_eq!(
            rows.iter().nth(2).unwrap().cells().next(),
            Some(SqlCell::String("世界"))
        );
        assert!(SqlRows::default().is_empty());
        assert_eq!(SqlRows::default().iter().count(), 0);
    }

    #[test]
    fn push_row_and_push_cell_report_about_the_wire_size() {
        let mut rows = SqlRows::default();
        // A cell's key and length (2) plus its value: 8 for an int, the
        // bytes of a string.
        let row = vec![SqlValue::Int(1), SqlValue::String("abc".into())];
        assert_eq!(rows.push_row(row), 10 + 5);
        assert_eq!(rows.push_cell(SqlCell::String("héllo")), 2 + 6);
        assert_eq!(rows.push_cell(SqlCell::Null), 2 + 1);
        rows.end_row();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows.iter().nth(1).unwrap().to_values(),
            [SqlValue::String("héllo".into()), SqlValue::Null]
        );
    }
}

//! The wire form of a row batch (`SqlRowBatch`), written straight from the
//! SQL layer's flat [`SqlRows`].
//!
//! The generated type would need a `SqlRow` with its own vector per row and
//! a `SqlValue` per cell, built and freed for every row at a million rows a
//! second; `build.rs` maps the message to this type instead (prost
//! `extern_path`) and its encoding walks the cells in place. Fields are
//! written with prost's own encoders (text and binary cells, which prost's
//! helpers only take as owned `String`/`Vec`, as key, length and bytes), so
//! the bytes are those of the generated type, which a unit test checks
//! value kind by value kind.
//! The gateway only sends this message; decoding exists for completeness
//! (and the round-trip test).

use identity_gateway_azure::sql::{SqlCell, SqlRow, SqlRows, SqlValue};
use prost::{
    bytes::{Buf, BufMut},
    encoding::{
        self, encode_key, encode_varint, encoded_len_varint, key_len, skip_field, DecodeContext,
        WireType,
    },
    DecodeError, Message,
};

/// `SqlRowBatch`: a batch of rows of result set `result_set`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlRowBatch {
    result_set: u32,
    rows: SqlRows,
    /// Each row's encoded body length, measured once: prost asks for the
    /// message's length before it writes it, and every row is written
    /// behind its length.
    row_lens: Vec<usize>,
}

impl SqlRowBatch {
    pub fn new(result_set: u32, rows: SqlRows) -> Self {
        let row_lens = rows.iter().map(row_body_len).collect();
        Self {
            result_set,
            rows,
            row_lens,
        }
    }

    /// The result set the rows belong to.
    pub fn result_set(&self) -> u32 {
        self.result_set
    }

    /// The rows, in order.
    pub fn rows(&self) -> &SqlRows {
        &self.rows
    }
}

/// Field numbers of `SqlRowBatch`, `SqlRow` and `SqlValue`'s kinds.
const RESULT_SET: u32 = 1;
const ROWS: u32 = 2;
const ROW_VALUES: u32 = 1;

impl Message for SqlRowBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.result_set != 0 {
            encoding::uint32::encode(RESULT_SET, &self.result_set, buf);
        }
        // Each row is written into a scratch vector first and goes into
        // `buf` in one piece: prost writes a field byte by byte, and each
        // byte into tonic's buffer is a whole `put_slice` (capacity check,
        // copy, advance), most of the encoding's cost at a dozen fields a
        // row. Into a `Vec` it is a push.
        let mut scratch = Vec::new();
        for (row, &len) in self.rows.iter().zip(&self.row_lens) {
            scratch.clear();
            encode_key(ROWS, WireType::LengthDelimited, &mut scratch);
            encode_varint(len as u64, &mut scratch);
            for cell in row.cells() {
                encode_key(ROW_VALUES, WireType::LengthDelimited, &mut scratch);
                encode_varint(kind_len(cell) as u64, &mut scratch);
                encode_kind(cell, &mut scratch);
            }
            buf.put_slice(&scratch);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            RESULT_SET => encoding::uint32::merge(wire_type, &mut self.result_set, buf, ctx),
            ROWS => {
                let mut row = crate::proto::SqlRow::default();
                encoding::message::merge(wire_type, &mut row, buf, ctx)?;
                // A value the SQL layer cannot hold (one without a kind, as a
                // newer peer might send) reads as NULL.
                self.rows.push_row(row.values.into_iter().map(|value| {
                    super::convert::sql_value(value.kind, "rows").unwrap_or(SqlValue::Null)
                }));
                let last = self.rows.iter().next_back().map_or(0, row_body_len);
                self.row_lens.push(last);
                Ok(())
            }
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let result_set = if self.result_set != 0 {
            encoding::uint32::encoded_len(RESULT_SET, &self.result_set)
        } else {
            0
        };
        result_set
            + self
                .row_lens
                .iter()
                .map(|&body| key_len(ROWS) + encoded_len_varint(body as u64) + body)
                .sum::<usize>()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Bytes of a `SqlRow`'s body: each cell as a length-delimited `SqlValue`.
fn row_body_len(row: SqlRow<'_>) -> usize {
    row.cells()
        .map(|cell| {
            let kind = kind_len(cell);
            key_len(ROW_VALUES) + encoded_len_varint(kind as u64) + kind
        })
        .sum()
}

/// The `SqlValue.kind` oneof field a cell is sent as: its number and a
/// view of its value in the proto type.
enum Kind<'a> {
    Int32(u32, i32),
    Bool(u32, bool),
    Int64(u32, i64),
    Double(u32, f64),
    /// string and bytes fields: the same wire form.
    Data(u32, &'a [u8]),
    Timestamp(u32, prost_types::Timestamp),
}

fn kind(cell: SqlCell<'_>) -> Kind<'_> {
    match cell {
        SqlCell::Null => Kind::Int32(1, prost_types::NullValue::NullValue as i32),
        SqlCell::Bool(b) => Kind::Bool(2, b),
        SqlCell::Int(i) => Kind::Int64(3, i),
        SqlCell::Float(f) => Kind::Double(4, f),
        SqlCell::Decimal(s) => Kind::Data(5, s.as_bytes()),
        SqlCell::String(s) => Kind::Data(6, s.as_bytes()),
        SqlCell::Bytes(b) => Kind::Data(7, b),
        SqlCell::Guid(s) => Kind::Data(8, s.as_bytes()),
        SqlCell::Timestamp { seconds, nanos } => Kind::Timestamp(
            9,
            prost_types::Timestamp {
                seconds,
                nanos: nanos as i32,
            },
        ),
        SqlCell::Date(s) => Kind::Data(10, s.as_bytes()),
        SqlCell::Time(s) => Kind::Data(11, s.as_bytes()),
    }
}

fn kind_len(cell: SqlCell<'_>) -> usize {
    match kind(cell) {
        Kind::Int32(tag, v) => encoding::int32::encoded_len(tag, &v),
        Kind::Bool(tag, v) => encoding::bool::encoded_len(tag, &v),
        Kind::Int64(tag, v) => encoding::int64::encoded_len(tag, &v),
        Kind::Double(tag, v) => encoding::double::encoded_len(tag, &v),
        Kind::Data(tag, v) => key_len(tag) + encoded_len_varint(v.len() as u64) + v.len(),
        Kind::Timestamp(tag, v) => encoding::message::encoded_len(tag, &v),
    }
}

fn encode_kind(cell: SqlCell<'_>, buf: &mut impl BufMut) {
    match kind(cell) {
        Kind::Int32(tag, v) => encoding::int32::encode(tag, &v, buf),
        Kind::Bool(tag, v) => encoding::bool::encode(tag, &v, buf),
        Kind::Int64(tag, v) => encoding::int64::encode(tag, &v, buf),
        Kind::Double(tag, v) => encoding::double::encode(tag, &v, buf),
        Kind::Data(tag, v) => {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(v.len() as u64, buf);
            buf.put_slice(v);
        }
        Kind::Timestamp(tag, v) => encoding::message::encode(tag, &v, buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{sql_value::Kind as ProtoKind, SqlRow, SqlValue as ProtoValue};

    fn every_kind() -> Vec<SqlValue> {
        vec![
            SqlValue::Null,
            SqlValue::Bool(false),
            SqlValue::Bool(true),
            SqlValue::Int(0),
            SqlValue::Int(-1),
            SqlValue::Int(i64::MAX),
            SqlValue::Float(0.0),
            SqlValue::Float(-2.5),
            SqlValue::Decimal("-12.3400".into()),
            SqlValue::String(String::new()),
            SqlValue::String("héllo, 世界".repeat(20)),
            SqlValue::Bytes(vec![]),
            SqlValue::Bytes(vec![0, 1, 255]),
            SqlValue::Guid("6F9619FF-8B86-D011-B42D-00C04FC964FF".into()),
            SqlValue::Timestamp {
                seconds: 0,
                nanos: 0,
            },
            SqlValue::Timestamp {
                seconds: -62_135_596_800,
                nanos: 999_999_900,
            },
            SqlValue::Date("2024-05-31".into()),
            SqlValue::Time("13:45:00.5".into()),
        ]
    }

    /// The generated type's view of a cell: the reference encoding.
    fn generated(cell: &SqlValue) -> ProtoValue {
        let kind = match cell.clone() {
            SqlValue::Null => ProtoKind::Null(0),
            SqlValue::Bool(b) => ProtoKind::Bool(b),
            SqlValue::Int(i) => ProtoKind::Int(i),
            SqlValue::Float(f) => ProtoKind::Float(f),
            SqlValue::Decimal(s) => ProtoKind::Decimal(s),
            SqlValue::String(s) => ProtoKind::String(s),
            SqlValue::Bytes(b) => ProtoKind::Bytes(b),
            SqlValue::Guid(s) => ProtoKind::Guid(s),
            SqlValue::Timestamp { seconds, nanos } => {
                ProtoKind::Timestamp(prost_types::Timestamp {
                    seconds,
                    nanos: nanos as i32,
                })
            }
            SqlValue::Date(s) => ProtoKind::Date(s),
            SqlValue::Time(s) => ProtoKind::Time(s),
        };
        ProtoValue { kind: Some(kind) }
    }

    /// What prost would write for the same batch of generated messages.
    fn reference(result_set: u32, rows: &[Vec<SqlValue>]) -> Vec<u8> {
        let mut out = Vec::new();
        if result_set != 0 {
            encoding::uint32::encode(RESULT_SET, &result_set, &mut out);
        }
        for row in rows {
            let row = SqlRow {
                values: row.iter().map(generated).collect(),
            };
            encoding::message::encode(ROWS, &row, &mut out);
        }
        out
    }

    #[test]
    fn bytes_are_those_of_the_generated_type() {
        let kinds = every_kind();
        for result_set in [0, 1, 300] {
            let rows = vec![
                kinds.clone(),
                vec![],
                kinds.iter().rev().cloned().collect(),
                vec![SqlValue::String("x".repeat(200))],
            ];
            let batch = SqlRowBatch::new(result_set, rows.iter().cloned().collect());
            let encoded = batch.encode_to_vec();
            assert_eq!(encoded, reference(result_set, &rows));
            assert_eq!(batch.encoded_len(), encoded.len());
            // Each cell alone too, so a mismatch names its kind.
            for cell in &kinds {
                let one = SqlRowBatch::new(0, [vec![cell.clone()]].into_iter().collect());
                assert_eq!(
                    one.encode_to_vec(),
                    reference(0, &[vec![cell.clone()]]),
                    "{cell:?}"
                );
            }
        }
    }

    #[test]
    fn decoding_reads_back_what_was_encoded() {
        let batch = SqlRowBatch::new(
            7,
            [every_kind(), vec![], vec![SqlValue::Int(5)]]
                .into_iter()
                .collect(),
        );
        let back = SqlRowBatch::decode(&batch.encode_to_vec()[..]).unwrap();
        assert_eq!(back, batch);
        // A value without a kind reads as NULL.
        let mut unknown = Vec::new();
        let row = SqlRow {
            values: vec![ProtoValue { kind: None }, generated(&SqlValue::Int(2))],
        };
        encoding::message::encode(ROWS, &row, &mut unknown);
        let back = SqlRowBatch::decode(&unknown[..]).unwrap();
        let rows: Vec<_> = back.rows().iter().map(|r| r.to_values()).collect();
        assert_eq!(rows, [vec![SqlValue::Null, SqlValue::Int(2)]]);
    }
}

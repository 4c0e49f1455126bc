//! QuerySql for Rust callers: a stream of result events whose row batches
//! are read in place.
//!
//! Decoding a batch into the generated types allocates a `Vec` per row and a
//! `String` per text cell, and frees them all when the batch goes; at a
//! million rows a second that is most of a client's work. A [`RowBatch`]
//! instead keeps the bytes of its message (shared with the receive buffer,
//! not copied) and hands out [`Row`]s and [`Value`]s that borrow from them.
//! The whole batch is checked once, as it arrives (structure and UTF-8), so
//! reading it afterwards cannot fail. The wire format is the public
//! `SqlRowBatch` message: unknown fields are skipped, as a generated decoder
//! would, so a newer gateway's additions do not break this client.

use std::{fmt, ops::Range, pin::Pin, task};

use futures::{Stream, StreamExt};
use prost::{
    bytes::{Buf, Bytes},
    encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType},
    Message,
};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, Streaming},
    Status,
};
use tonic_prost::ProstEncoder;

use crate::{proto, Error};

/// One event of a query's result stream, in order: for each result set its
/// columns then its rows (in batches), and finally `Done`.
#[derive(Debug, Clone)]
pub enum SqlEvent {
    /// Column metadata opening a result set.
    Columns(proto::SqlResultSetColumns),
    /// A batch of rows of the current result set.
    Rows(RowBatch),
    /// The last event of a successful query.
    Done(proto::SqlQueryDone),
}

/// The events of one query ([`GatewayClient::query_sql`](crate::GatewayClient::query_sql)).
/// Errors of the query itself (a SQL error, a broken connection) arrive as
/// the stream's last item.
pub struct SqlStream {
    inner: Streaming<Option<SqlEvent>>,
}

impl SqlStream {
    pub(crate) fn new(inner: Streaming<Option<SqlEvent>>) -> Self {
        Self { inner }
    }

    /// The next event, `None` after the last.
    pub async fn next_event(&mut self) -> Result<Option<SqlEvent>, Error> {
        self.next().await.transpose()
    }
}

impl fmt::Debug for SqlStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStream").finish_non_exhaustive()
    }
}

impl Stream for SqlStream {
    type Item = Result<SqlEvent, Error>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> task::Poll<Option<Self::Item>> {
        loop {
            return match Pin::new(&mut self.inner).poll_next(cx) {
                // An event kind newer than this client: skipped.
                task::Poll::Ready(Some(Ok(None))) => continue,
                task::Poll::Ready(Some(Ok(Some(event)))) => task::Poll::Ready(Some(Ok(event))),
                task::Poll::Ready(Some(Err(status))) => {
                    task::Poll::Ready(Some(Err(Error::from(status))))
                }
                task::Poll::Ready(None) => task::Poll::Ready(None),
                task::Poll::Pending => task::Poll::Pending,
            };
        }
    }
}

/// A batch of rows, read in place from the message that carried it. Cheap
/// to clone (the bytes are shared).
#[derive(Clone)]
pub struct RowBatch {
    bytes: Bytes,
    result_set: u32,
    /// Where each row's `SqlRow` body lies in `bytes`.
    rows: Vec<Range<usize>>,
}

impl RowBatch {
    /// Checks an encoded `SqlRowBatch` and indexes its rows.
    pub fn parse(bytes: Bytes) -> Result<Self, MalformedReply> {
        let mut result_set = 0;
        let mut rows = Vec::new();
        let mut buf = &bytes[..];
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).map_err(|_| MalformedReply("bad key"))?;
            match (tag, wire_type) {
                (1, WireType::Varint) => {
                    result_set = varint(&mut buf)? as u32;
                }
                (2, WireType::LengthDelimited) => {
                    let row = length_delimited(&mut buf)?;
                    for value in Row::fields(row) {
                        parse_value(value?)?;
                    }
                    let end = bytes.len() - buf.len();
                    rows.push(end - row.len()..end);
                }
                (1 | 2, _) => return Err(MalformedReply("wrong wire type in SqlRowBatch")),
                _ => skip(wire_type, tag, &mut buf)?,
            }
        }
        Ok(Self {
            bytes,
            result_set,
            rows,
        })
    }

    /// The result set these rows belong to (0-based).
    pub fn result_set(&self) -> u32 {
        self.result_set
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True for a batch without rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `index`, if there is one.
    pub fn row(&self, index: usize) -> Option<Row<'_>> {
        self.rows.get(index).map(|range| Row {
            body: &self.bytes[range.clone()],
        })
    }

    /// The rows, in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        self.rows.iter().map(|range| Row {
            body: &self.bytes[range.clone()],
        })
    }

    /// The batch as the generated (owning) type.
    pub fn to_proto(&self) -> proto::SqlRowBatch {
        proto::SqlRowBatch {
            result_set: self.result_set,
            rows: self.rows().map(|row| row.to_proto()).collect(),
        }
    }
}

impl fmt::Debug for RowBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowBatch")
            .field("result_set", &self.result_set)
            .field("rows", &self.rows.len())
            .finish()
    }
}

/// One row of a [`RowBatch`].
#[derive(Clone, Copy)]
pub struct Row<'a> {
    body: &'a [u8],
}

impl<'a> Row<'a> {
    /// The row's cells, in column order.
    pub fn values(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        // Checked when the batch arrived: nothing here fails.
        Self::fields(self.body).map_while(|field| parse_value(field.ok()?).ok())
    }

    /// Cell `index` (counting from 0), if the row has that many.
    pub fn get(&self, index: usize) -> Option<Value<'a>> {
        self.values().nth(index)
    }

    /// The row as the generated (owning) type.
    pub fn to_proto(&self) -> proto::SqlRow {
        proto::SqlRow {
            values: self.values().map(|v| v.to_proto()).collect(),
        }
    }

    /// The encoded `SqlValue`s of a `SqlRow` body, skipping unknown fields.
    fn fields(mut body: &'a [u8]) -> impl Iterator<Item = Result<&'a [u8], MalformedReply>> {
        std::iter::from_fn(move || loop {
            if body.is_empty() {
                return None;
            }
            let (tag, wire_type) = match decode_key(&mut body) {
                Ok(key) => key,
                Err(_) => return Some(Err(MalformedReply("bad key"))),
            };
            match (tag, wire_type) {
                (1, WireType::LengthDelimited) => return Some(length_delimited(&mut body)),
                (1, _) => return Some(Err(MalformedReply("wrong wire type in SqlRow"))),
                _ => {
                    if let Err(e) = skip(wire_type, tag, &mut body) {
                        return Some(Err(e));
                    }
                }
            }
        })
    }
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.values()).finish()
    }
}

/// One cell, borrowed from its batch. The variants are `SqlValue`'s kinds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// bit.
    Bool(bool),
    /// tinyint, smallint, int, bigint.
    Int(i64),
    /// real, float.
    Float(f64),
    /// decimal, numeric, money as an exact string, e.g. "12.3400".
    Decimal(&'a str),
    /// char, varchar, nchar, nvarchar, text, xml.
    String(&'a str),
    /// binary, varbinary, image.
    Bytes(&'a [u8]),
    /// uniqueidentifier, e.g. "6F9619FF-8B86-D011-B42D-00C04FC964FF".
    Guid(&'a str),
    /// datetime, datetime2, smalldatetime, datetimeoffset (as UTC).
    Timestamp {
        /// Seconds since the Unix epoch.
        seconds: i64,
        /// Nanoseconds within the second.
        nanos: i32,
    },
    /// date, "YYYY-MM-DD".
    Date(&'a str),
    /// time, "hh:mm:ss[.fffffff]".
    Time(&'a str),
    /// A kind this client does not know (from a newer gateway).
    Unknown,
}

impl Value<'_> {
    /// The cell as the generated (owning) type.
    pub fn to_proto(&self) -> proto::SqlValue {
        use proto::sql_value::Kind;
        let kind = match *self {
            Value::Null => Some(Kind::Null(prost_types::NullValue::NullValue as i32)),
            Value::Bool(b) => Some(Kind::Bool(b)),
            Value::Int(i) => Some(Kind::Int(i)),
            Value::Float(f) => Some(Kind::Float(f)),
            Value::Decimal(s) => Some(Kind::Decimal(s.to_owned())),
            Value::String(s) => Some(Kind::String(s.to_owned())),
            Value::Bytes(b) => Some(Kind::Bytes(b.to_vec())),
            Value::Guid(s) => Some(Kind::Guid(s.to_owned())),
            Value::Timestamp { seconds, nanos } => {
                Some(Kind::Timestamp(prost_types::Timestamp { seconds, nanos }))
            }
            Value::Date(s) => Some(Kind::Date(s.to_owned())),
            Value::Time(s) => Some(Kind::Time(s.to_owned())),
            Value::Unknown => None,
        };
        proto::SqlValue { kind }
    }
}

/// The gateway sent bytes that are not the message they should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed QuerySql reply: {0}")]
pub struct MalformedReply(&'static str);

/// One encoded `SqlValue`; as with any protobuf oneof, the last kind wins.
fn parse_value(mut buf: &[u8]) -> Result<Value<'_>, MalformedReply> {
    let mut value = Value::Unknown;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|_| MalformedReply("bad key"))?;
        value = match (tag, wire_type) {
            (1, WireType::Varint) => {
                varint(&mut buf)?;
                Value::Null
            }
            (2, WireType::Varint) => Value::Bool(varint(&mut buf)? != 0),
            (3, WireType::Varint) => Value::Int(varint(&mut buf)? as i64),
            (4, WireType::SixtyFourBit) => {
                if buf.len() < 8 {
                    return Err(MalformedReply("truncated double"));
                }
                Value::Float(buf.get_f64_le())
            }
            (5, WireType::LengthDelimited) => Value::Decimal(text(&mut buf)?),
            (6, WireType::LengthDelimited) => Value::String(text(&mut buf)?),
            (7, WireType::LengthDelimited) => Value::Bytes(length_delimited(&mut buf)?),
            (8, WireType::LengthDelimited) => Value::Guid(text(&mut buf)?),
            (9, WireType::LengthDelimited) => {
                let ts = prost_types::Timestamp::decode(length_delimited(&mut buf)?)
                    .map_err(|_| MalformedReply("bad timestamp"))?;
                Value::Timestamp {
                    seconds: ts.seconds,
                    nanos: ts.nanos,
                }
            }
            (10, WireType::LengthDelimited) => Value::Date(text(&mut buf)?),
            (11, WireType::LengthDelimited) => Value::Time(text(&mut buf)?),
            (1..=11, _) => return Err(MalformedReply("wrong wire type in SqlValue")),
            _ => {
                skip(wire_type, tag, &mut buf)?;
                value
            }
        };
    }
    Ok(value)
}

fn varint(buf: &mut &[u8]) -> Result<u64, MalformedReply> {
    decode_varint(buf).map_err(|_| MalformedReply("bad varint"))
}

fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], MalformedReply> {
    let len = varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= buf.len())
        .ok_or(MalformedReply("length past the end of the message"))?;
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn text<'a>(buf: &mut &'a [u8]) -> Result<&'a str, MalformedReply> {
    std::str::from_utf8(length_delimited(buf)?).map_err(|_| MalformedReply("text is not UTF-8"))
}

fn skip(wire_type: WireType, tag: u32, buf: &mut &[u8]) -> Result<(), MalformedReply> {
    skip_field(wire_type, tag, buf, DecodeContext::default())
        .map_err(|_| MalformedReply("bad unknown field"))
}

/// One `QuerySqlResponse`; `None` for an event kind this client does not know.
fn parse_event(bytes: Bytes) -> Result<Option<SqlEvent>, MalformedReply> {
    let mut event = None;
    let mut buf = &bytes[..];
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|_| MalformedReply("bad key"))?;
        if !(1..=3).contains(&tag) {
            skip(wire_type, tag, &mut buf)?;
            continue;
        }
        if wire_type != WireType::LengthDelimited {
            return Err(MalformedReply("wrong wire type in QuerySqlResponse"));
        }
        let field = length_delimited(&mut buf)?;
        event = Some(match tag {
            1 => SqlEvent::Columns(
                proto::SqlResultSetColumns::decode(field)
                    .map_err(|_| MalformedReply("bad columns"))?,
            ),
            2 => SqlEvent::Rows(RowBatch::parse(bytes.slice_ref(field))?),
            _ => SqlEvent::Done(
                proto::SqlQueryDone::decode(field).map_err(|_| MalformedReply("bad done"))?,
            ),
        });
    }
    Ok(event)
}

/// QuerySql's codec: requests through prost, replies read in place.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QuerySqlCodec;

impl Codec for QuerySqlCodec {
    type Encode = proto::QuerySqlRequest;
    type Decode = Option<SqlEvent>;
    type Encoder = ProstEncoder<proto::QuerySqlRequest>;
    type Decoder = EventDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        EventDecoder
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct EventDecoder;

impl Decoder for EventDecoder {
    type Item = Option<SqlEvent>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        // Split off the receive buffer, not copied.
        let message = buf.copy_to_bytes(buf.remaining());
        parse_event(message)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::sql_value::Kind;

    fn value(kind: Kind) -> proto::SqlValue {
        proto::SqlValue { kind: Some(kind) }
    }

    fn every_kind() -> Vec<proto::SqlValue> {
        vec![
            value(Kind::Null(0)),
            value(Kind::Bool(true)),
            value(Kind::Bool(false)),
            value(Kind::Int(-7)),
            value(Kind::Int(i64::MAX)),
            value(Kind::Float(2.5)),
            value(Kind::Decimal("-12.3400".into())),
            value(Kind::String("héllo, 世界".into())),
            value(Kind::String(String::new())),
            value(Kind::Bytes(vec![0, 1, 255])),
            value(Kind::Guid("6F9619FF-8B86-D011-B42D-00C04FC964FF".into())),
            value(Kind::Timestamp(prost_types::Timestamp {
                seconds: 1_714_566_600,
                nanos: 125_000_000,
            })),
            value(Kind::Date("2024-05-31".into())),
            value(Kind::Time("13:45:00.5".into())),
            proto::SqlValue { kind: None },
        ]
    }

    fn batch(rows: Vec<Vec<proto::SqlValue>>) -> proto::SqlRowBatch {
        proto::SqlRowBatch {
            result_set: 3,
            rows: rows
                .into_iter()
                .map(|values| proto::SqlRow { values })
                .collect(),
        }
    }

    #[test]
    fn a_batch_reads_back_what_prost_encoded() {
        let kinds = every_kind();
        let original = batch(vec![
            kinds.clone(),
            vec![],
            kinds.iter().rev().cloned().collect(),
        ]);
        let parsed = RowBatch::parse(original.encode_to_vec().into()).unwrap();
        assert_eq!(parsed.result_set(), 3);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed.to_proto(), original);
        let first = parsed.row(0).unwrap();
        assert_eq!(first.get(7), Some(Value::String("héllo, 世界")));
        assert_eq!(first.get(3), Some(Value::Int(-7)));
        assert_eq!(first.get(14), Some(Value::Unknown));
        assert_eq!(first.get(15), None);
        assert_eq!(parsed.row(1).unwrap().values().count(), 0);
        assert!(parsed.row(3).is_none());
    }

    #[test]
    fn events_decode_like_the_generated_type() {
        use proto::query_sql_response::Event;
        let rows = batch(vec![every_kind()]);
        for event in [
            Event::Columns(proto::SqlResultSetColumns {
                result_set: 1,
                columns: vec![proto::SqlColumn {
                    name: "n".into(),
                    r#type: "bigint".into(),
                    nullable: true,
                }],
            }),
            Event::Rows(rows.clone()),
            Event::Done(proto::SqlQueryDone {
                rows_per_result_set: vec![1],
                rows_affected: vec![],
                truncated: true,
            }),
        ] {
            let message = proto::QuerySqlResponse {
                event: Some(event.clone()),
            };
            let parsed = parse_event(message.encode_to_vec().into())
                .unwrap()
                .unwrap();
            let back = match parsed {
                SqlEvent::Columns(c) => Event::Columns(c),
                SqlEvent::Rows(r) => Event::Rows(r.to_proto()),
                SqlEvent::Done(d) => Event::Done(d),
            };
            assert_eq!(back, event);
        }
        // A reply without a known event is skipped, not an error.
        assert!(parse_event(Bytes::new()).unwrap().is_none());
    }

    #[test]
    fn unknown_fields_are_skipped_at_every_level() {
        // SqlValue { string = "a", 99: varint 5 }, SqlRow { values, 7: "zz" },
        // SqlRowBatch { result_set = 2, rows, 15: fixed32 }.
        let value = [0x32, 1, b'a', 0x98, 0x06, 5];
        let mut row = vec![0x0A, value.len() as u8];
        row.extend_from_slice(&value);
        row.extend_from_slice(&[0x3A, 2, b'z', b'z']);
        let mut batch = vec![0x08, 2, 0x12, row.len() as u8];
        batch.extend_from_slice(&row);
        batch.extend_from_slice(&[0x7D, 1, 2, 3, 4]);
        let parsed = RowBatch::parse(batch.into()).unwrap();
        assert_eq!(parsed.result_set(), 2);
        let values: Vec<_> = parsed.row(0).unwrap().values().collect();
        assert_eq!(values, [Value::String("a")]);
    }

    #[test]
    fn malformed_batches_are_refused_not_panicked_on() {
        let good = batch(vec![every_kind()]).encode_to_vec();
        // Every truncation of a valid batch either parses (a cut at a field
        // boundary) or is refused; none panics.
        for cut in 0..good.len() {
            let _ = RowBatch::parse(Bytes::copy_from_slice(&good[..cut]));
        }
        for (bytes, why) in [
            (vec![0x12, 5, 0x0A], "length past the end of the message"),
            (
                vec![0x12, 4, 0x0A, 2, 0x32, 5],
                "length past the end of the message",
            ),
            (vec![0x12, 5, 0x0A, 3, 0x32, 1, 0xFF], "text is not UTF-8"),
            (vec![0x10, 1], "wrong wire type in SqlRowBatch"),
            (
                vec![0x12, 4, 0x0A, 2, 0x18 | 0x02, 0],
                "wrong wire type in SqlValue",
            ),
            (vec![0x12, 3, 0x0A, 1, 0x21], "truncated double"),
            (vec![0x08, 0xFF], "bad varint"),
        ] {
            assert_eq!(
                RowBatch::parse(bytes.clone().into()).unwrap_err(),
                MalformedReply(why),
                "{bytes:02X?}"
            );
        }
    }
}

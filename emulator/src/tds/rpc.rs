//! Client requests after login: SQL batches (0x01) and RPCs (0x03, e.g.
//! `sp_executesql` by ProcID 10 or by name), decoded into SQL text and
//! parameters SQLite can bind. Parameter TYPE_INFO follows what tiberius
//! sends (wire contracts §8).

use super::{
    login::utf16,
    types::{days_1970_from_0001, days_1970_from_1900, format_date, format_decimal, format_time},
};

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Batch {
        sql: String,
    },
    Rpc {
        procedure: Procedure,
        params: Vec<Param>,
    },
}

/// Which stored procedure an RPC calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Procedure {
    Id(u16),
    Name(String),
}

impl Procedure {
    /// True for `sp_executesql` however it was named.
    pub fn is_executesql(&self) -> bool {
        match self {
            Self::Id(id) => *id == 10,
            Self::Name(name) => {
                let name = name.to_ascii_lowercase();
                let name = name.trim_start_matches("sys.").trim_start_matches("dbo.");
                name == "sp_executesql" || name == "[sp_executesql]"
            }
        }
    }
}

/// One RPC parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// As sent, e.g. `@P1`, or empty for positional parameters.
    pub name: String,
    pub value: Value,
}

/// A parameter value, in the form SQLite binds (dates and times as ISO
/// text, GUIDs as upper-case text, decimals as exact text).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Why a request cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed request: {0}")]
pub struct RequestError(pub String);

fn err(msg: impl Into<String>) -> RequestError {
    RequestError(msg.into())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RequestError> {
        let out = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or_else(|| err(format!("truncated at byte {}", self.pos)))?;
        self.pos += n;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RequestError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RequestError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RequestError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RequestError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| err("u64"))?))
    }
    fn uint(&mut self, n: usize) -> Result<u64, RequestError> {
        let b = self.take(n)?;
        let mut raw = [0u8; 8];
        raw[..n.min(8)].copy_from_slice(&b[..n.min(8)]);
        Ok(u64::from_le_bytes(raw))
    }
    fn utf16(&mut self, chars: usize) -> Result<String, RequestError> {
        utf16(self.take(chars * 2)?).map_err(|e| err(e.0))
    }
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

/// Skips ALL_HEADERS (a u32 total length that counts itself).
fn skip_all_headers(c: &mut Cursor<'_>) -> Result<(), RequestError> {
    let total = c.u32()? as usize;
    if total < 4 {
        return Err(err("ALL_HEADERS shorter than its length field"));
    }
    c.take(total - 4)?;
    Ok(())
}

/// Decodes a SQL batch payload.
pub fn parse_batch(payload: &[u8]) -> Result<Request, RequestError> {
    let mut c = Cursor {
        bytes: payload,
        pos: 0,
    };
    skip_all_headers(&mut c)?;
    let sql = utf16(&payload[c.pos..]).map_err(|e| err(e.0))?;
    Ok(Request::Batch { sql })
}

/// Decodes an RPC payload (one call; batched RPCs are refused).
pub fn parse_rpc(payload: &[u8]) -> Result<Request, RequestError> {
    let mut c = Cursor {
        bytes: payload,
        pos: 0,
    };
    skip_all_headers(&mut c)?;
    let name_len = c.u16()?;
    let procedure = if name_len == 0xFFFF {
        Procedure::Id(c.u16()?)
    } else {
        Procedure::Name(c.utf16(name_len as usize)?)
    };
    let _options = c.u16()?;
    let mut params = Vec::new();
    while !c.done() {
        if matches!(c.bytes[c.pos], 0x80 | 0xFF | 0xFE) {
            return Err(err("batched RPC calls are not supported by the fake"));
        }
        let name_chars = c.u8()? as usize;
        let name = c.utf16(name_chars)?;
        let _status = c.u8()?;
        let value = read_value(&mut c)?;
        params.push(Param { name, value });
    }
    Ok(Request::Rpc { procedure, params })
}

fn read_plp(c: &mut Cursor<'_>) -> Result<Option<Vec<u8>>, RequestError> {
    let total = c.u64()?;
    if total == u64::MAX {
        return Ok(None);
    }
    let mut data = Vec::new();
    loop {
        let chunk = c.u32()? as usize;
        if chunk == 0 {
            return Ok(Some(data));
        }
        data.extend_from_slice(c.take(chunk)?);
        if data.len() > 64 << 20 {
            return Err(err("PLP value larger than 64 MiB"));
        }
    }
}

fn text_of(bytes: &[u8]) -> Result<Value, RequestError> {
    Ok(Value::Text(utf16(bytes).map_err(|e| err(e.0))?))
}

/// Reads TYPE_INFO and the value that follows it.
fn read_value(c: &mut Cursor<'_>) -> Result<Value, RequestError> {
    let ty = c.u8()?;
    match ty {
        0x1F => Ok(Value::Null),
        // Fixed-length types.
        0x30 => Ok(Value::Int(c.u8()? as i64)),
        0x34 => Ok(Value::Int(c.u16()? as i16 as i64)),
        0x38 => Ok(Value::Int(c.u32()? as i32 as i64)),
        0x7F => Ok(Value::Int(c.u64()? as i64)),
        0x32 => Ok(Value::Int((c.u8()? != 0) as i64)),
        0x3B => Ok(Value::Float(f32::from_bits(c.u32()?) as f64)),
        0x3E => Ok(Value::Float(f64::from_bits(c.u64()?))),
        // INTN, BITN, FLTN.
        0x26 | 0x68 | 0x6D => {
            let _max = c.u8()?;
            let len = c.u8()? as usize;
            if len == 0 {
                return Ok(Value::Null);
            }
            let raw = c.uint(len)?;
            Ok(match (ty, len) {
                (0x68, _) => Value::Int((raw != 0) as i64),
                (0x6D, 4) => Value::Float(f32::from_bits(raw as u32) as f64),
                (0x6D, 8) => Value::Float(f64::from_bits(raw)),
                (0x26, 1) => Value::Int(raw as u8 as i64),
                (0x26, 2) => Value::Int(raw as u16 as i16 as i64),
                (0x26, 4) => Value::Int(raw as u32 as i32 as i64),
                (0x26, 8) => Value::Int(raw as i64),
                _ => return Err(err(format!("bad length {len} for type {ty:#04x}"))),
            })
        }
        // DECIMALN / NUMERICN.
        0x6A | 0x6C => {
            let _max = c.u8()?;
            let _precision = c.u8()?;
            let scale = c.u8()?;
            let len = c.u8()? as usize;
            if len == 0 {
                return Ok(Value::Null);
            }
            if !(2..=17).contains(&len) {
                return Err(err("bad DECIMAL length"));
            }
            let sign = c.u8()?;
            let mut raw = [0u8; 16];
            raw[..len - 1].copy_from_slice(c.take(len - 1)?);
            let magnitude = u128::from_le_bytes(raw) as i128;
            let value = if sign == 0 { -magnitude } else { magnitude };
            Ok(Value::Text(format_decimal(value, scale)))
        }
        // GUID.
        0x24 => {
            let _max = c.u8()?;
            match c.u8()? {
                0 => Ok(Value::Null),
                16 => {
                    let mut b: [u8; 16] = c.take(16)?.try_into().map_err(|_| err("guid"))?;
                    b[0..4].reverse();
                    b[4..6].reverse();
                    b[6..8].reverse();
                    Ok(Value::Text(
                        uuid::Uuid::from_bytes(b)
                            .hyphenated()
                            .to_string()
                            .to_uppercase(),
                    ))
                }
                _ => Err(err("bad GUID length")),
            }
        }
        // NVARCHAR / NCHAR, BIGVARCHAR / BIGCHAR.
        0xE7 | 0xEF | 0xA7 | 0xAF => {
            let max = c.u16()?;
            let _collation = c.take(5)?;
            let bytes = if max == 0xFFFF {
                read_plp(c)?
            } else {
                match c.u16()? {
                    0xFFFF => None,
                    n => Some(c.take(n as usize)?.to_vec()),
                }
            };
            match bytes {
                None => Ok(Value::Null),
                Some(b) if ty == 0xE7 || ty == 0xEF => text_of(&b),
                Some(b) => Ok(Value::Text(String::from_utf8_lossy(&b).into_owned())),
            }
        }
        // BIGVARBIN / BIGBINARY.
        0xA5 | 0xAD => {
            let max = c.u16()?;
            let bytes = if max == 0xFFFF {
                read_plp(c)?
            } else {
                match c.u16()? {
                    0xFFFF => None,
                    n => Some(c.take(n as usize)?.to_vec()),
                }
            };
            Ok(bytes.map_or(Value::Null, Value::Bytes))
        }
        // XML: a schema-present byte, then PLP UTF-16.
        0xF1 => {
            if c.u8()? != 0 {
                return Err(err("XML schema collections are not supported"));
            }
            match read_plp(c)? {
                None => Ok(Value::Null),
                Some(b) => text_of(&b),
            }
        }
        // DATEN.
        0x28 => match c.u8()? {
            0 => Ok(Value::Null),
            3 => {
                let days = c.uint(3)? as i64;
                Ok(Value::Text(format_date(days_1970_from_0001(days))))
            }
            _ => Err(err("bad DATE length")),
        },
        // TIMEN, DATETIME2N, DATETIMEOFFSETN.
        0x29..=0x2B => {
            let scale = c.u8()?;
            if scale > 7 {
                return Err(err("time scale above 7"));
            }
            let len = c.u8()? as usize;
            if len == 0 {
                return Ok(Value::Null);
            }
            let time_len = super::types::time_len(scale) as usize;
            let expected = time_len
                + match ty {
                    0x29 => 0,
                    0x2A => 3,
                    _ => 5,
                };
            if len != expected {
                return Err(err(format!("bad length {len} for type {ty:#04x}")));
            }
            let increments = c.uint(time_len)?;
            let ticks = increments * 10u64.pow(7 - scale as u32);
            if ty == 0x29 {
                return Ok(Value::Text(format_time(ticks)));
            }
            let days = days_1970_from_0001(c.uint(3)? as i64);
            if ty == 0x2A {
                return Ok(Value::Text(format!(
                    "{} {}",
                    format_date(days),
                    format_time(ticks)
                )));
            }
            let offset = c.u16()? as i16 as i64;
            // Stored as UTC; shown as local time with its offset.
            let total =
                days as i128 * 864_000_000_000 + ticks as i128 + offset as i128 * 600_000_000;
            let local_days = total.div_euclid(864_000_000_000) as i64;
            let local_ticks = total.rem_euclid(864_000_000_000) as u64;
            let sign = if offset < 0 { '-' } else { '+' };
            Ok(Value::Text(format!(
                "{} {} {sign}{:02}:{:02}",
                format_date(local_days),
                format_time(local_ticks),
                offset.abs() / 60,
                offset.abs() % 60
            )))
        }
        // DATETIMEN / DATETIME / SMALLDATETIME.
        0x6F | 0x3D | 0x3A => {
            let len = match ty {
                0x3D => 8,
                0x3A => 4,
                _ => {
                    let _max = c.u8()?;
                    c.u8()? as usize
                }
            };
            match len {
                0 => Ok(Value::Null),
                8 => {
                    let days = c.u32()? as i32 as i64;
                    let ticks300 = c.u32()? as u64;
                    let ticks = (ticks300 * 10_000_000 + 150) / 300;
                    Ok(Value::Text(format!(
                        "{} {}",
                        format_date(days_1970_from_1900(days)),
                        format_time(ticks)
                    )))
                }
                4 => {
                    let days = c.u16()? as i64;
                    let minutes = c.u16()? as u64;
                    Ok(Value::Text(format!(
                        "{} {}",
                        format_date(days_1970_from_1900(days)),
                        format_time(minutes * 600_000_000)
                    )))
                }
                _ => Err(err("bad DATETIME length")),
            }
        }
        other => Err(err(format!(
            "parameter type {other:#04x} is not supported by the fake"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_headers() -> Vec<u8> {
        let mut v = vec![0x16, 0, 0, 0, 0x12, 0, 0, 0, 0x02, 0];
        v.extend([0u8; 8]);
        v.extend([1, 0, 0, 0]);
        v
    }

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    fn nvarchar_param(name: &str, value: &str) -> Vec<u8> {
        let mut v = vec![name.encode_utf16().count() as u8];
        v.extend(utf16le(name));
        v.push(0);
        v.extend([0xE7, 0x40, 0x1F, 0, 0, 0, 0, 0]);
        let bytes = utf16le(value);
        v.extend((bytes.len() as u16).to_le_bytes());
        v.extend(bytes);
        v
    }

    #[test]
    fn batch_text_follows_all_headers() {
        let mut p = all_headers();
        p.extend(utf16le("SELECT 1"));
        assert_eq!(
            parse_batch(&p).unwrap(),
            Request::Batch {
                sql: "SELECT 1".into()
            }
        );
        assert!(parse_batch(&[1, 0, 0, 0]).is_err());
    }

    #[test]
    fn executesql_by_id_with_tiberius_parameters() {
        let mut p = all_headers();
        p.extend([0xFF, 0xFF, 0x0A, 0x00, 0x00, 0x00]);
        p.extend(nvarchar_param("stmt", "SELECT @P1, @P2"));
        p.extend(nvarchar_param("params", "@P1 int,@P2 nvarchar(4000)"));
        // @P1 int 42
        p.push(3);
        p.extend(utf16le("@P1"));
        p.extend([0, 0x26, 4, 4, 42, 0, 0, 0]);
        // @P2 NULL as tiberius sends it (NULLTYPE)
        p.push(3);
        p.extend(utf16le("@P2"));
        p.extend([0, 0x1F]);
        let Request::Rpc { procedure, params } = parse_rpc(&p).unwrap() else {
            panic!("not an RPC")
        };
        assert!(procedure.is_executesql());
        assert_eq!(params.len(), 4);
        assert_eq!(params[0].value, Value::Text("SELECT @P1, @P2".into()));
        assert_eq!(params[2].name, "@P1");
        assert_eq!(params[2].value, Value::Int(42));
        assert_eq!(params[3].value, Value::Null);
    }

    #[test]
    fn typed_values_decode() {
        let decode = |bytes: &[u8]| read_value(&mut Cursor { bytes, pos: 0 });
        assert_eq!(decode(&[0x68, 1, 1, 1]).unwrap(), Value::Int(1));
        assert_eq!(
            decode(&[0x6D, 8, 8, 0, 0, 0, 0, 0, 0, 0xF8, 0x3F]).unwrap(),
            Value::Float(1.5)
        );
        // numeric(5,2) -12.34
        assert_eq!(
            decode(&[0x6C, 5, 5, 2, 5, 0, 0xD2, 0x04, 0, 0]).unwrap(),
            Value::Text("-12.34".into())
        );
        assert_eq!(
            decode(&[
                0x24, 16, 16, 0xFF, 0x19, 0x96, 0x6F, 0x86, 0x8B, 0x11, 0xD0, 0xB4, 0x2D, 0x00,
                0xC0, 0x4F, 0xC9, 0x64, 0xFF
            ])
            .unwrap(),
            Value::Text("6F9619FF-8B86-D011-B42D-00C04FC964FF".into())
        );
        assert_eq!(
            decode(&[0x28, 3, 0x07, 0x24, 0x0B]).unwrap(),
            Value::Text("2000-01-01".into())
        );
        // datetime2(7) 2000-01-01 00:00:01.5
        let mut dt2 = vec![0x2A, 7, 8];
        dt2.extend(&15_000_000u64.to_le_bytes()[..5]);
        dt2.extend([0x07, 0x24, 0x0B]);
        assert_eq!(
            decode(&dt2).unwrap(),
            Value::Text("2000-01-01 00:00:01.5".into())
        );
        // varbinary(max) PLP
        let mut plp = vec![0xA5, 0xFF, 0xFF];
        plp.extend(3u64.to_le_bytes());
        plp.extend(3u32.to_le_bytes());
        plp.extend([1, 2, 3]);
        plp.extend(0u32.to_le_bytes());
        assert_eq!(decode(&plp).unwrap(), Value::Bytes(vec![1, 2, 3]));
        assert!(decode(&[0x99]).is_err());
        assert!(decode(&[0x26, 4, 4, 1]).is_err());
    }
}

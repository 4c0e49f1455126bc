//! SQL types of the fake: choosing a TDS type for a SQLite column (by its
//! declared type, or by its first value for expressions), writing TYPE_INFO
//! and values in that type, and the date/time arithmetic both directions
//! need. Values are stored in SQLite the way the seed writes them: integers,
//! REALs, TEXT (decimals may be TEXT for exactness; GUIDs as
//! `6F9619FF-8B86-D011-B42D-00C04FC964FF`; dates and times as ISO text like
//! `2024-05-01 12:30:00.5`), BLOBs.

use bytes::{BufMut, BytesMut};
use rusqlite::types::ValueRef;

use super::tokens::{ServerMessage, COLLATION};

/// A TDS column type the fake can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// INTN of 1, 2, 4 or 8 bytes (tinyint, smallint, int, bigint).
    Int {
        bytes: u8,
    },
    Bit,
    /// FLTN of 4 or 8 bytes (real, float).
    Float {
        bytes: u8,
    },
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// NVARCHAR(n), or NVARCHAR(MAX) sent as PLP when `None`.
    NVarChar {
        max_chars: Option<u16>,
    },
    /// VARBINARY(n), or VARBINARY(MAX) sent as PLP when `None`.
    VarBinary {
        max_len: Option<u16>,
    },
    Guid,
    Date,
    Time {
        scale: u8,
    },
    DateTime2 {
        scale: u8,
    },
    DateTimeOffset {
        scale: u8,
    },
    DateTime,
}

const PLP_NULL: u64 = u64::MAX;

impl ColType {
    /// The TDS type for a column declared as `decl` in SQLite (e.g.
    /// `nvarchar(50)`, `decimal(10,2)`, `INTEGER`); `None` when the name is
    /// not a SQL type the fake knows.
    pub fn from_decl(decl: &str) -> Option<Self> {
        let decl = decl.trim().to_ascii_lowercase();
        let (name, args) = match decl.split_once('(') {
            Some((name, rest)) => (name.trim(), rest.trim_end_matches(')').trim()),
            None => (decl.as_str(), ""),
        };
        let mut nums = args.split(',').map(|a| a.trim());
        let first = nums.next().filter(|a| !a.is_empty());
        let second = nums.next();
        let max = first == Some("max");
        let n = first.and_then(|a| a.parse::<u32>().ok());
        let m = second.and_then(|a| a.parse::<u32>().ok());
        Some(match name {
            "tinyint" => Self::Int { bytes: 1 },
            "smallint" => Self::Int { bytes: 2 },
            "int" | "mediumint" => Self::Int { bytes: 4 },
            "bigint" | "integer" => Self::Int { bytes: 8 },
            "bit" | "bool" | "boolean" => Self::Bit,
            "real" => Self::Float { bytes: 4 },
            "float" | "double" | "double precision" => Self::Float { bytes: 8 },
            "decimal" | "numeric" | "dec" => {
                let precision = n.unwrap_or(18).clamp(1, 38) as u8;
                let scale = m.unwrap_or(0).min(precision as u32) as u8;
                Self::Decimal { precision, scale }
            }
            "money" => Self::Decimal {
                precision: 19,
                scale: 4,
            },
            "smallmoney" => Self::Decimal {
                precision: 10,
                scale: 4,
            },
            "nvarchar" | "varchar" | "nchar" | "char" | "character" | "sysname"
            | "varying character" | "nvarying character" => Self::NVarChar {
                max_chars: match (max, n) {
                    (true, _) => None,
                    (false, Some(n)) if (1..=4000).contains(&n) => Some(n as u16),
                    (false, Some(_)) => None,
                    (false, None) if name == "sysname" => Some(128),
                    (false, None) => Some(1),
                },
            },
            "text" | "ntext" | "clob" | "xml" => Self::NVarChar { max_chars: None },
            "varbinary" | "binary" => Self::VarBinary {
                max_len: match (max, n) {
                    (true, _) => None,
                    (false, Some(n)) if (1..=8000).contains(&n) => Some(n as u16),
                    (false, Some(_)) => None,
                    (false, None) => Some(1),
                },
            },
            "blob" | "image" => Self::VarBinary { max_len: None },
            "uniqueidentifier" => Self::Guid,
            "date" => Self::Date,
            "time" => Self::Time {
                scale: n.unwrap_or(7).min(7) as u8,
            },
            "datetime2" => Self::DateTime2 {
                scale: n.unwrap_or(7).min(7) as u8,
            },
            "datetimeoffset" => Self::DateTimeOffset {
                scale: n.unwrap_or(7).min(7) as u8,
            },
            "datetime" | "smalldatetime" => Self::DateTime,
            _ => return None,
        })
    }

    /// The type an expression column gets from its first value.
    pub fn for_value(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => Self::Int { bytes: 4 },
            ValueRef::Integer(_) => Self::Int { bytes: 8 },
            ValueRef::Real(_) => Self::Float { bytes: 8 },
            ValueRef::Text(t) => {
                let chars = String::from_utf8_lossy(t).encode_utf16().count();
                Self::NVarChar {
                    max_chars: (chars <= 4000).then_some(4000),
                }
            }
            ValueRef::Blob(b) => Self::VarBinary {
                max_len: (b.len() <= 8000).then_some(8000),
            },
        }
    }

    /// The SQL name used in conversion messages.
    pub fn sql_name(&self) -> &'static str {
        match self {
            Self::Int { bytes: 1 } => "tinyint",
            Self::Int { bytes: 2 } => "smallint",
            Self::Int { bytes: 4 } => "int",
            Self::Int { .. } => "bigint",
            Self::Bit => "bit",
            Self::Float { bytes: 4 } => "real",
            Self::Float { .. } => "float",
            Self::Decimal { .. } => "numeric",
            Self::NVarChar { .. } => "nvarchar",
            Self::VarBinary { .. } => "varbinary",
            Self::Guid => "uniqueidentifier",
            Self::Date => "date",
            Self::Time { .. } => "time",
            Self::DateTime2 { .. } => "datetime2",
            Self::DateTimeOffset { .. } => "datetimeoffset",
            Self::DateTime => "datetime",
        }
    }

    /// TYPE_INFO as COLMETADATA carries it.
    pub fn put_type_info(&self, out: &mut BytesMut) {
        match *self {
            Self::Int { bytes } => out.extend_from_slice(&[0x26, bytes]),
            Self::Bit => out.extend_from_slice(&[0x68, 1]),
            Self::Float { bytes } => out.extend_from_slice(&[0x6D, bytes]),
            Self::Decimal { precision, scale } => {
                out.extend_from_slice(&[0x6A, decimal_len(precision), precision, scale])
            }
            Self::NVarChar { max_chars } => {
                out.put_u8(0xE7);
                out.put_u16_le(max_chars.map_or(0xFFFF, |n| n * 2));
                out.extend_from_slice(&COLLATION);
            }
            Self::VarBinary { max_len } => {
                out.put_u8(0xA5);
                out.put_u16_le(max_len.unwrap_or(0xFFFF));
            }
            Self::Guid => out.extend_from_slice(&[0x24, 16]),
            Self::Date => out.put_u8(0x28),
            Self::Time { scale } => out.extend_from_slice(&[0x29, scale]),
            Self::DateTime2 { scale } => out.extend_from_slice(&[0x2A, scale]),
            Self::DateTimeOffset { scale } => out.extend_from_slice(&[0x2B, scale]),
            Self::DateTime => out.extend_from_slice(&[0x6F, 8]),
        }
    }

    fn is_plp(&self) -> bool {
        matches!(
            self,
            Self::NVarChar { max_chars: None } | Self::VarBinary { max_len: None }
        )
    }

    /// A NULL in ROW form (NBCROW leaves NULLs out instead).
    pub fn put_null(&self, out: &mut BytesMut) {
        match self {
            _ if self.is_plp() => out.put_u64_le(PLP_NULL),
            Self::NVarChar { .. } | Self::VarBinary { .. } => out.put_u16_le(0xFFFF),
            _ => out.put_u8(0),
        }
    }

    /// Writes a non-NULL SQLite value in this type, converting the way SQL
    /// Server would, or answers the error SQL Server would raise.
    pub fn put_value(&self, value: ValueRef<'_>, out: &mut BytesMut) -> Result<(), ServerMessage> {
        match *self {
            Self::Int { bytes } => {
                let v = as_i64(value, self)?;
                let (min, max) = match bytes {
                    1 => (0, u8::MAX as i64),
                    2 => (i16::MIN as i64, i16::MAX as i64),
                    4 => (i32::MIN as i64, i32::MAX as i64),
                    _ => (i64::MIN, i64::MAX),
                };
                if v < min || v > max {
                    return Err(overflow(self));
                }
                out.put_u8(bytes);
                match bytes {
                    1 => out.put_u8(v as u8),
                    2 => out.put_i16_le(v as i16),
                    4 => out.put_i32_le(v as i32),
                    _ => out.put_i64_le(v),
                }
            }
            Self::Bit => {
                let v = match value {
                    ValueRef::Text(t) => match text(t).trim().to_ascii_lowercase().as_str() {
                        "true" => 1,
                        "false" => 0,
                        _ => as_i64(value, self)?,
                    },
                    _ => as_i64(value, self)?,
                };
                out.extend_from_slice(&[1, (v != 0) as u8]);
            }
            Self::Float { bytes } => {
                let v = as_f64(value, self)?;
                if bytes == 4 {
                    out.put_u8(4);
                    out.put_f32_le(v as f32);
                } else {
                    out.put_u8(8);
                    out.put_f64_le(v);
                }
            }
            Self::Decimal { precision, scale } => {
                let scaled = as_scaled(value, scale, self)?;
                if scaled.unsigned_abs() >= 10u128.pow(precision as u32) {
                    return Err(overflow(self));
                }
                let len = decimal_len(precision);
                out.put_u8(len);
                out.put_u8(if scaled < 0 { 0 } else { 1 });
                let magnitude = scaled.unsigned_abs().to_le_bytes();
                out.extend_from_slice(&magnitude[..(len - 1) as usize]);
            }
            Self::NVarChar { max_chars } => {
                let s: std::borrow::Cow<'_, str> = match value {
                    ValueRef::Text(t) => text(t),
                    ValueRef::Integer(i) => i.to_string().into(),
                    ValueRef::Real(f) => f.to_string().into(),
                    ValueRef::Blob(_) | ValueRef::Null => return Err(conversion(value, self)),
                };
                let units = utf16_len(&s);
                match max_chars {
                    Some(max) => {
                        if units > max as usize {
                            return Err(truncation());
                        }
                        out.put_u16_le((units * 2) as u16);
                        put_utf16(out, &s, units);
                    }
                    None => put_plp_with(out, units * 2, |out| put_utf16(out, &s, units)),
                }
            }
            Self::VarBinary { max_len } => {
                let bytes: &[u8] = match value {
                    ValueRef::Blob(b) | ValueRef::Text(b) => b,
                    _ => return Err(conversion(value, self)),
                };
                match max_len {
                    Some(max) => {
                        if bytes.len() > max as usize {
                            return Err(truncation());
                        }
                        out.put_u16_le(bytes.len() as u16);
                        out.extend_from_slice(bytes);
                    }
                    None => put_plp(out, bytes),
                }
            }
            Self::Guid => {
                let raw = match value {
                    ValueRef::Blob(b) if b.len() == 16 => {
                        let mut raw = [0u8; 16];
                        raw.copy_from_slice(b);
                        raw
                    }
                    ValueRef::Text(t) => uuid::Uuid::parse_str(text(t).trim())
                        .map(|u| guid_to_wire(*u.as_bytes()))
                        .map_err(|_| conversion(value, self))?,
                    _ => return Err(conversion(value, self)),
                };
                out.put_u8(16);
                out.extend_from_slice(&raw);
            }
            Self::Date => {
                let (date, _, _) = as_datetime(value, self)?;
                out.put_u8(3);
                put_date(out, date);
            }
            Self::Time { scale } => {
                let t = match value {
                    ValueRef::Text(t) => {
                        let s = text(t);
                        let s = s.trim();
                        parse_time(s)
                            .or_else(|| parse_datetime(s).map(|(_, t, _)| t))
                            .ok_or_else(|| conversion(value, self))?
                    }
                    _ => return Err(conversion(value, self)),
                };
                let n = time_len(scale);
                out.put_u8(n);
                put_time(out, t, scale);
            }
            Self::DateTime2 { scale } => {
                let (date, time, offset) = as_datetime(value, self)?;
                // A stored offset is folded into the local time as SQL Server does
                // when converting datetimeoffset to datetime2 (it drops it).
                let _ = offset;
                out.put_u8(time_len(scale) + 3);
                put_time(out, time, scale);
                put_date(out, date);
            }
            Self::DateTimeOffset { scale } => {
                let (date, time, offset) = as_datetime(value, self)?;
                let offset = offset.unwrap_or(0);
                let (date, time) = shift(date, time, -(offset as i64));
                out.put_u8(time_len(scale) + 5);
                put_time(out, time, scale);
                put_date(out, date);
                out.put_i16_le(offset);
            }
            Self::DateTime => {
                let (date, time, _) = as_datetime(value, self)?;
                let days = date - days_from_civil(1900, 1, 1);
                let ticks = (time as u128 * 300 + 5_000_000) / 10_000_000;
                let (days, ticks) = if ticks >= 300 * 86_400 {
                    (days + 1, 0)
                } else {
                    (days, ticks as u32)
                };
                if days < i32::MIN as i64 || days > i32::MAX as i64 {
                    return Err(overflow(self));
                }
                out.put_u8(8);
                out.put_i32_le(days as i32);
                out.put_u32_le(ticks);
            }
        }
        Ok(())
    }
}

/// Byte length of a DECIMALN value (sign byte included) for `precision`.
pub fn decimal_len(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

fn put_plp(out: &mut BytesMut, bytes: &[u8]) {
    put_plp_with(out, bytes.len(), |out| out.extend_from_slice(bytes));
}

/// A PLP value of `len` bytes written by `write`: total length, one chunk,
/// the terminator.
fn put_plp_with(out: &mut BytesMut, len: usize, write: impl FnOnce(&mut BytesMut)) {
    out.put_u64_le(len as u64);
    if len > 0 {
        out.put_u32_le(len as u32);
        write(out);
    }
    out.put_u32_le(0);
}

/// UTF-16 code units of `s`.
fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

/// Appends `s` as UTF-16LE (`units` code units), in one reservation rather
/// than a buffer call per unit: result rows are mostly strings.
fn put_utf16(out: &mut BytesMut, s: &str, units: usize) {
    let start = out.len();
    out.resize(start + units * 2, 0);
    let dst = &mut out[start..];
    // As many units as bytes only when every char is one byte: ASCII.
    if units == s.len() {
        for (pair, b) in dst.chunks_exact_mut(2).zip(s.bytes()) {
            pair[0] = b;
        }
    } else {
        for (pair, unit) in dst.chunks_exact_mut(2).zip(s.encode_utf16()) {
            pair.copy_from_slice(&unit.to_le_bytes());
        }
    }
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    // SQLite's text is almost always valid UTF-8: check it the fast way
    // first, and repair it (lossy) only when it is not.
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

fn describe(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => text(t).chars().take(100).collect(),
        ValueRef::Blob(b) => format!(
            "0x{}",
            b.iter()
                .take(50)
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        ),
    }
}

/// Error 245 (or 8114 for non-text sources), as SQL Server words it.
fn conversion(value: ValueRef<'_>, ty: &ColType) -> ServerMessage {
    match value {
        ValueRef::Text(_) => ServerMessage::error(
            245,
            format!(
                "Conversion failed when converting the nvarchar value '{}' to data type {}.",
                describe(value),
                ty.sql_name()
            ),
        ),
        _ => ServerMessage::error(
            8114,
            format!("Error converting data type to {}.", ty.sql_name()),
        ),
    }
}

fn overflow(ty: &ColType) -> ServerMessage {
    ServerMessage::error(
        8115,
        format!(
            "Arithmetic overflow error converting expression to data type {}.",
            ty.sql_name()
        ),
    )
}

fn truncation() -> ServerMessage {
    ServerMessage::error(2628, "String or binary data would be truncated.")
}

fn as_i64(value: ValueRef<'_>, ty: &ColType) -> Result<i64, ServerMessage> {
    match value {
        ValueRef::Integer(i) => Ok(i),
        ValueRef::Real(f) if f.is_finite() && f.abs() < 9.2e18 => Ok(f.trunc() as i64),
        ValueRef::Real(_) => Err(overflow(ty)),
        ValueRef::Text(t) => text(t)
            .trim()
            .parse::<i64>()
            .map_err(|_| conversion(value, ty)),
        _ => Err(conversion(value, ty)),
    }
}

fn as_f64(value: ValueRef<'_>, ty: &ColType) -> Result<f64, ServerMessage> {
    match value {
        ValueRef::Integer(i) => Ok(i as f64),
        ValueRef::Real(f) => Ok(f),
        ValueRef::Text(t) => text(t)
            .trim()
            .parse::<f64>()
            .map_err(|_| conversion(value, ty)),
        _ => Err(conversion(value, ty)),
    }
}

/// The value times 10^scale, rounded half away from zero.
fn as_scaled(value: ValueRef<'_>, scale: u8, ty: &ColType) -> Result<i128, ServerMessage> {
    let factor = 10i128.pow(scale as u32);
    match value {
        ValueRef::Integer(i) => (i as i128).checked_mul(factor).ok_or_else(|| overflow(ty)),
        ValueRef::Real(f) => {
            let scaled = (f * factor as f64).round();
            if scaled.is_finite() && scaled.abs() < 1e38 {
                Ok(scaled as i128)
            } else {
                Err(overflow(ty))
            }
        }
        ValueRef::Text(t) => parse_decimal(text(t).trim(), scale)
            .ok_or_else(|| conversion(value, ty))?
            .ok_or_else(|| overflow(ty)),
        _ => Err(conversion(value, ty)),
    }
}

/// Parses `[+-]digits[.digits]` exactly into value × 10^scale. `None` for
/// text that is not a number, `Some(None)` when it does not fit.
pub fn parse_decimal(s: &str, scale: u8) -> Option<Option<i128>> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        // Exponent forms and the like: go through f64.
        let f: f64 = s.parse().ok()?;
        let scaled = (f * 10f64.powi(scale as i32)).round();
        return Some((scaled.is_finite() && scaled.abs() < 1e38).then_some(scaled as i128));
    }
    let mut value: i128 = 0;
    for b in int_part.bytes() {
        value = match value
            .checked_mul(10)
            .and_then(|v| v.checked_add((b - b'0') as i128))
        {
            Some(v) => v,
            None => return Some(None),
        };
    }
    let frac = frac_part.as_bytes();
    for i in 0..scale as usize {
        let digit = frac.get(i).map_or(0, |b| (b - b'0') as i128);
        value = match value.checked_mul(10).and_then(|v| v.checked_add(digit)) {
            Some(v) => v,
            None => return Some(None),
        };
    }
    if frac.get(scale as usize).is_some_and(|b| *b >= b'5') {
        value += 1;
    }
    Some(Some(if negative { -value } else { value }))
}

/// Formats value / 10^scale exactly.
pub fn format_decimal(value: i128, scale: u8) -> String {
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

// ---------------------------------------------------------------- calendar

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

const TICKS_PER_DAY: u64 = 864_000_000_000; // 100 ns units

/// `YYYY-MM-DD` → days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `hh:mm[:ss[.fffffff]]` → 100 ns units since midnight.
pub fn parse_time(s: &str) -> Option<u64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let sec: u64 = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let mut frac_ticks = 0u64;
    for i in 0..7 {
        frac_ticks = frac_ticks * 10 + frac.as_bytes().get(i).map_or(0, |b| (b - b'0') as u64);
    }
    Some((h * 3600 + m * 60 + sec) * 10_000_000 + frac_ticks)
}

/// `YYYY-MM-DD[( |T)hh:mm[:ss[.f]]][ ][Z|±hh:mm]` → (days, ticks, offset minutes).
pub fn parse_datetime(s: &str) -> Option<(i64, u64, Option<i16>)> {
    let s = s.trim();
    let date = parse_date(s.get(0..10)?)?;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some((date, 0, None));
    }
    let rest = rest.strip_prefix([' ', 'T'])?;
    let (time_part, offset) = split_offset(rest)?;
    Some((date, parse_time(time_part.trim())?, offset))
}

fn split_offset(s: &str) -> Option<(&str, Option<i16>)> {
    if let Some(t) = s.strip_suffix('Z') {
        return Some((t, Some(0)));
    }
    match s.rfind(['+', '-']) {
        Some(at) => {
            let (time, off) = s.split_at(at);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (h, m) = off[1..].split_once(':')?;
            let (h, m): (i16, i16) = (h.parse().ok()?, m.parse().ok()?);
            if h > 14 || m > 59 {
                return None;
            }
            Some((time, Some(sign * (h * 60 + m))))
        }
        None => Some((s, None)),
    }
}

fn as_datetime(
    value: ValueRef<'_>,
    ty: &ColType,
) -> Result<(i64, u64, Option<i16>), ServerMessage> {
    match value {
        ValueRef::Text(t) => parse_datetime(&text(t)).ok_or_else(|| conversion(value, ty)),
        // Unix seconds, as SQLite's own date functions understand them.
        ValueRef::Integer(secs) => Ok((
            secs.div_euclid(86_400),
            secs.rem_euclid(86_400) as u64 * 10_000_000,
            None,
        )),
        _ => Err(conversion(value, ty)),
    }
}

/// Moves a (days, ticks) pair by `minutes`.
fn shift(days: i64, ticks: u64, minutes: i64) -> (i64, u64) {
    let total =
        days as i128 * TICKS_PER_DAY as i128 + ticks as i128 + minutes as i128 * 600_000_000;
    (
        total.div_euclid(TICKS_PER_DAY as i128) as i64,
        total.rem_euclid(TICKS_PER_DAY as i128) as u64,
    )
}

fn days_since_0001(days_1970: i64) -> i64 {
    days_1970 - days_from_civil(1, 1, 1)
}

fn put_date(out: &mut BytesMut, days_1970: i64) {
    let d = days_since_0001(days_1970).max(0) as u32;
    out.extend_from_slice(&d.to_le_bytes()[..3]);
}

/// Bytes of a TIME value at `scale`.
pub fn time_len(scale: u8) -> u8 {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

fn put_time(out: &mut BytesMut, ticks: u64, scale: u8) {
    let divisor = 10u64.pow(7 - scale as u32);
    let max = TICKS_PER_DAY / divisor - 1;
    let increments = ((ticks + divisor / 2) / divisor).min(max);
    out.extend_from_slice(&increments.to_le_bytes()[..time_len(scale) as usize]);
}

/// GUID text bytes (RFC order) → the mixed-endian order SQL Server sends.
pub fn guid_to_wire(mut b: [u8; 16]) -> [u8; 16] {
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// Formats days since 1970 as `YYYY-MM-DD`.
pub fn format_date(days_1970: i64) -> String {
    let (y, m, d) = civil_from_days(days_1970);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Formats 100 ns ticks since midnight as `hh:mm:ss[.fffffff]` (trailing
/// zeros dropped).
pub fn format_time(ticks: u64) -> String {
    let secs = ticks / 10_000_000;
    let frac = ticks % 10_000_000;
    let base = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        base
    } else {
        let f = format!("{frac:07}");
        format!("{base}.{}", f.trim_end_matches('0'))
    }
}

/// Days since 0001-01-01 (as DATE carries them) → days since 1970.
pub fn days_1970_from_0001(days: i64) -> i64 {
    days + days_from_civil(1, 1, 1)
}

/// Days since 1900-01-01 (as DATETIME carries them) → days since 1970.
pub fn days_1970_from_1900(days: i64) -> i64 {
    days + days_from_civil(1900, 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ty: ColType, value: ValueRef<'_>) -> Result<Vec<u8>, ServerMessage> {
        let mut out = BytesMut::new();
        ty.put_value(value, &mut out).map(|_| out.to_vec())
    }

    #[test]
    fn declared_types_map_to_tds_types() {
        assert_eq!(
            ColType::from_decl("INTEGER"),
            Some(ColType::Int { bytes: 8 })
        );
        assert_eq!(ColType::from_decl("int"), Some(ColType::Int { bytes: 4 }));
        assert_eq!(
            ColType::from_decl("decimal(10, 2)"),
            Some(ColType::Decimal {
                precision: 10,
                scale: 2
            })
        );
        assert_eq!(
            ColType::from_decl("NVARCHAR(50)"),
            Some(ColType::NVarChar {
                max_chars: Some(50)
            })
        );
        assert_eq!(
            ColType::from_decl("nvarchar(max)"),
            Some(ColType::NVarChar { max_chars: None })
        );
        assert_eq!(
            ColType::from_decl("varbinary(16)"),
            Some(ColType::VarBinary { max_len: Some(16) })
        );
        assert_eq!(
            ColType::from_decl("datetime2(3)"),
            Some(ColType::DateTime2 { scale: 3 })
        );
        assert_eq!(ColType::from_decl("uniqueidentifier"), Some(ColType::Guid));
        assert_eq!(ColType::from_decl("geography"), None);
    }

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(
            encode(ColType::Int { bytes: 4 }, ValueRef::Integer(7)).unwrap(),
            [4, 7, 0, 0, 0]
        );
        assert_eq!(
            encode(ColType::Int { bytes: 4 }, ValueRef::Integer(1 << 40))
                .unwrap_err()
                .number,
            8115
        );
        let err = encode(ColType::Int { bytes: 8 }, ValueRef::Text(b"abc")).unwrap_err();
        assert_eq!(err.number, 245);
        assert!(err.text.contains("'abc'"), "{}", err.text);
    }

    #[test]
    fn decimals_are_exact() {
        let ty = ColType::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(
            encode(ty, ValueRef::Text(b"-12.345")).unwrap(),
            [9, 0, 0xD3, 0x04, 0, 0, 0, 0, 0, 0] // -1235 (half away from zero)
        );
        assert_eq!(
            encode(ty, ValueRef::Real(19.99)).unwrap()[2..4],
            [0xCF, 0x07]
        );
        assert_eq!(
            encode(ty, ValueRef::Text(b"123456789")).unwrap_err().number,
            8115
        );
        assert_eq!(parse_decimal("0.005", 2), Some(Some(1)));
        assert_eq!(parse_decimal("1e2", 1), Some(Some(1000)));
        assert_eq!(parse_decimal("x", 1), None);
        assert_eq!(format_decimal(-1235, 2), "-12.35");
        assert_eq!(format_decimal(5, 3), "0.005");
        assert_eq!(format_decimal(42, 0), "42");
    }

    #[test]
    fn strings_and_plp() {
        assert_eq!(
            encode(
                ColType::NVarChar {
                    max_chars: Some(10)
                },
                ValueRef::Text(b"ab")
            )
            .unwrap(),
            [4, 0, b'a', 0, b'b', 0]
        );
        assert_eq!(
            encode(
                ColType::NVarChar { max_chars: Some(1) },
                ValueRef::Text(b"ab")
            )
            .unwrap_err()
            .number,
            2628
        );
        assert_eq!(
            encode(ColType::NVarChar { max_chars: None }, ValueRef::Text(b"a")).unwrap(),
            [2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', 0, 0, 0, 0, 0]
        );
        let mut out = BytesMut::new();
        ColType::VarBinary { max_len: None }.put_null(&mut out);
        assert_eq!(&out[..], &[0xFF; 8]);
    }

    #[test]
    fn guids_use_sql_server_byte_order() {
        let out = encode(
            ColType::Guid,
            ValueRef::Text(b"6F9619FF-8B86-D011-B42D-00C04FC964FF"),
        )
        .unwrap();
        assert_eq!(
            out,
            [
                16, 0xFF, 0x19, 0x96, 0x6F, 0x86, 0x8B, 0x11, 0xD0, 0xB4, 0x2D, 0x00, 0xC0, 0x4F,
                0xC9, 0x64, 0xFF
            ]
        );
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-719_162, -1, 0, 1, 10_957, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(parse_date("2000-01-01"), Some(10_957));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(
            parse_time("12:30:00.5"),
            Some((12 * 3600 + 30 * 60) * 10_000_000 + 5_000_000)
        );
        assert_eq!(
            parse_datetime("2024-05-01T10:00:00+02:00"),
            Some((days_from_civil(2024, 5, 1), 36_000 * 10_000_000, Some(120)))
        );
        assert_eq!(format_time(5_000_000 + 10_000_000 * 61), "00:01:01.5");
        assert_eq!(format_date(10_957), "2000-01-01");
    }

    #[test]
    fn dates_and_times_encode_like_sql_server() {
        // 2000-01-01 is day 730119 since 0001-01-01.
        assert_eq!(
            encode(ColType::Date, ValueRef::Text(b"2000-01-01")).unwrap(),
            [3, 0x07, 0x24, 0x0B]
        );
        // datetime2(0) 2000-01-01 00:00:01 -> time 1 (3 bytes), then the date.
        assert_eq!(
            encode(
                ColType::DateTime2 { scale: 0 },
                ValueRef::Text(b"2000-01-01 00:00:01")
            )
            .unwrap(),
            [6, 1, 0, 0, 0x07, 0x24, 0x0B]
        );
        // datetimeoffset stores UTC plus the offset in minutes.
        let dto = encode(
            ColType::DateTimeOffset { scale: 0 },
            ValueRef::Text(b"2000-01-01 01:00:00+01:00"),
        )
        .unwrap();
        assert_eq!(dto, [8, 0, 0, 0, 0x07, 0x24, 0x0B, 60, 0]);
        // datetime: days since 1900 and 1/300 s ticks.
        let dt = encode(ColType::DateTime, ValueRef::Text(b"1900-01-02 00:00:01")).unwrap();
        assert_eq!(dt, [8, 1, 0, 0, 0, 44, 1, 0, 0]);
        assert_eq!(
            encode(ColType::Date, ValueRef::Text(b"yesterday"))
                .unwrap_err()
                .number,
            245
        );
    }
}

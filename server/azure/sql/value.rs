//! SQL values in and out: a request parameter becomes a tiberius
//! [`ColumnData`] bound as `@Pn` (never spliced into the text), with the
//! matching declaration for `sp_executesql`; a result cell becomes a
//! [`SqlCell`]; a result column's TDS type becomes its SQL type name.

use std::borrow::Cow;

use tiberius::{
    numeric::Numeric,
    time::{Date, DateTime2, Time},
    ColumnData, ColumnType, Uuid,
};

use super::SqlCell;
use crate::error::GatewayError;

/// A value crossing the gateway: a bound parameter or a result cell.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// decimal / numeric / money, exact, e.g. `"12.3400"`.
    Decimal(String),
    String(String),
    Bytes(Vec<u8>),
    /// Upper-case hyphenated, e.g. `6F9619FF-8B86-D011-B42D-00C04FC964FF`.
    Guid(String),
    /// datetime, datetime2, smalldatetime, datetimeoffset, as UTC.
    Timestamp {
        seconds: i64,
        nanos: u32,
    },
    /// `YYYY-MM-DD`.
    Date(String),
    /// `hh:mm:ss[.fffffff]`.
    Time(String),
}

/// Julian day number of 0001-01-01 (DATE's epoch) and of 1970-01-01.
const JD_0001: i64 = 1_721_426;
const JD_1900: i64 = 2_415_021;
const JD_1970: i64 = 2_440_588;
const TICKS_PER_SECOND: u64 = 10_000_000; // 100 ns

/// Parameter → `ColumnData` plus its `sp_executesql` declaration.
/// `field` names the request field in errors (e.g. `parameters[2]`).
pub(super) fn bind_value(
    value: &SqlValue,
    field: &str,
) -> Result<(ColumnData<'static>, String), GatewayError> {
    Ok(match value {
        // nvarchar NULL converts implicitly to most types; CAST it otherwise.
        SqlValue::Null => (ColumnData::String(None), "nvarchar(4000)".into()),
        SqlValue::Bool(b) => (ColumnData::Bit(Some(*b)), "bit".into()),
        SqlValue::Int(i) => (ColumnData::I64(Some(*i)), "bigint".into()),
        SqlValue::Float(f) => {
            if !f.is_finite() {
                return Err(GatewayError::invalid(
                    field,
                    "SQL floats cannot be NaN or infinite",
                ));
            }
            (ColumnData::F64(Some(*f)), "float".into())
        }
        SqlValue::Decimal(text) => {
            let (value, scale) = parse_decimal(text).ok_or_else(|| {
                GatewayError::invalid(
                    field,
                    format!("'{text}' is not a decimal number of at most 38 digits"),
                )
            })?;
            let numeric = Numeric::new_with_scale(value, scale);
            let precision = numeric.precision();
            if precision > 38 {
                return Err(GatewayError::invalid(
                    field,
                    format!("'{text}' needs more than 38 digits"),
                ));
            }
            (
                ColumnData::Numeric(Some(numeric)),
                format!("decimal({precision},{scale})"),
            )
        }
        SqlValue::String(s) => {
            // tiberius sends strings above 4000 UTF-8 bytes as nvarchar(max).
            let decl = if s.len() <= 4000 {
                "nvarchar(4000)"
            } else {
                "nvarchar(max)"
            };
            (ColumnData::String(Some(Cow::Owned(s.clone()))), decl.into())
        }
        SqlValue::Bytes(b) => {
            let decl = if b.len() <= 8000 {
                "varbinary(8000)"
            } else {
                "varbinary(max)"
            };
            (ColumnData::Binary(Some(Cow::Owned(b.clone()))), decl.into())
        }
        SqlValue::Guid(text) => {
            let uuid = Uuid::parse_str(text.trim())
                .map_err(|_| GatewayError::invalid(field, format!("'{text}' is not a GUID")))?;
            (ColumnData::Guid(Some(uuid)), "uniqueidentifier".into())
        }
        SqlValue::Timestamp { seconds, nanos } => {
            if *nanos >= 1_000_000_000 {
                return Err(GatewayError::invalid(
                    field,
                    "timestamp nanos must be below 1e9",
                ));
            }
            let days = seconds.div_euclid(86_400) + JD_1970 - JD_0001;
            let secs_of_day = seconds.rem_euclid(86_400) as u64;
            if !(0..=3_652_058).contains(&days) {
                return Err(GatewayError::invalid(
                    field,
                    "timestamp outside datetime2's range (years 1 to 9999)",
                ));
            }
            let time = Time::new(secs_of_day * TICKS_PER_SECOND + *nanos as u64 / 100, 7);
            (
                ColumnData::DateTime2(Some(DateTime2::new(Date::new(days as u32), time))),
                "datetime2(7)".into(),
            )
        }
        SqlValue::Date(text) => {
            let days = parse_date(text).ok_or_else(|| {
                GatewayError::invalid(field, format!("'{text}' is not a date like 2024-05-31"))
            })?;
            (ColumnData::Date(Some(Date::new(days))), "date".into())
        }
        SqlValue::Time(text) => {
            let ticks = parse_time(text).ok_or_else(|| {
                GatewayError::invalid(field, format!("'{text}' is not a time like 13:45:00.5"))
            })?;
            (
                ColumnData::Time(Some(Time::new(ticks, 7))),
                "time(7)".into(),
            )
        }
    })
}

/// Calls `f` with a column's value as a cell: text and binary data
/// borrowed from the column, the text of GUIDs, decimals, dates and times
/// formatted for the call.
pub(super) fn with_cell<R>(data: &ColumnData<'_>, f: impl FnOnce(SqlCell<'_>) -> R) -> R {
    let formatted: String;
    let cell = match data {
        ColumnData::U8(v) => v.map_or(SqlCell::Null, |v| SqlCell::Int(v.into())),
        ColumnData::I16(v) => v.map_or(SqlCell::Null, |v| SqlCell::Int(v.into())),
        ColumnData::I32(v) => v.map_or(SqlCell::Null, |v| SqlCell::Int(v.into())),
        ColumnData::I64(v) => v.map_or(SqlCell::Null, SqlCell::Int),
        ColumnData::F32(v) => v.map_or(SqlCell::Null, |v| SqlCell::Float(v.into())),
        ColumnData::F64(v) => v.map_or(SqlCell::Null, SqlCell::Float),
        ColumnData::Bit(v) => v.map_or(SqlCell::Null, SqlCell::Bool),
        ColumnData::String(v) => v.as_deref().map_or(SqlCell::Null, SqlCell::String),
        ColumnData::Guid(v) => match v {
            Some(g) => {
                formatted = g.hyphenated().to_string().to_uppercase();
                SqlCell::Guid(&formatted)
            }
            None => SqlCell::Null,
        },
        ColumnData::Binary(v) => v.as_deref().map_or(SqlCell::Null, SqlCell::Bytes),
        ColumnData::Numeric(v) => match v {
            Some(n) => {
                formatted = format_decimal(n.value(), n.scale());
                SqlCell::Decimal(&formatted)
            }
            None => SqlCell::Null,
        },
        ColumnData::Xml(v) => v
            .as_deref()
            .map_or(SqlCell::Null, |x| SqlCell::String(x.as_ref())),
        ColumnData::DateTime(v) => v.map_or(SqlCell::Null, |dt| {
            // 1/300 s ticks since midnight.
            let nanos = dt.seconds_fragments() as u64 * 1_000_000_000 / 300;
            timestamp(dt.days() as i64 + JD_1900, nanos)
        }),
        ColumnData::SmallDateTime(v) => v.map_or(SqlCell::Null, |dt| {
            timestamp(
                dt.days() as i64 + JD_1900,
                dt.seconds_fragments() as u64 * 60 * 1_000_000_000,
            )
        }),
        ColumnData::Time(v) => match v {
            Some(t) => {
                formatted = format_time(ticks(*t));
                SqlCell::Time(&formatted)
            }
            None => SqlCell::Null,
        },
        ColumnData::Date(v) => match v {
            Some(d) => {
                formatted = format_date(d.days() as i64 + JD_0001);
                SqlCell::Date(&formatted)
            }
            None => SqlCell::Null,
        },
        ColumnData::DateTime2(v) => v.map_or(SqlCell::Null, |dt| {
            timestamp(dt.date().days() as i64 + JD_0001, ticks(dt.time()) * 100)
        }),
        // TDS carries the UTC instant plus the offset; the instant is the value.
        ColumnData::DateTimeOffset(v) => v.map_or(SqlCell::Null, |dto| {
            let dt = dto.datetime2();
            timestamp(dt.date().days() as i64 + JD_0001, ticks(dt.time()) * 100)
        }),
    };
    f(cell)
}

/// 100 ns ticks of a TIME of any scale.
fn ticks(t: Time) -> u64 {
    t.increments() * 10u64.pow(7u32.saturating_sub(t.scale() as u32))
}

fn timestamp(julian_day: i64, nanos_of_day: u64) -> SqlCell<'static> {
    SqlCell::Timestamp {
        seconds: (julian_day - JD_1970) * 86_400 + (nanos_of_day / 1_000_000_000) as i64,
        nanos: (nanos_of_day % 1_000_000_000) as u32,
    }
}

/// The SQL type name of a result column.
pub(super) fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Null => "null",
        ColumnType::Bit | ColumnType::Bitn => "bit",
        ColumnType::Int1 => "tinyint",
        ColumnType::Int2 => "smallint",
        ColumnType::Int4 | ColumnType::Intn => "int",
        ColumnType::Int8 => "bigint",
        ColumnType::Datetime4 => "smalldatetime",
        ColumnType::Float4 => "real",
        ColumnType::Float8 | ColumnType::Floatn => "float",
        ColumnType::Money => "money",
        ColumnType::Money4 => "smallmoney",
        ColumnType::Datetime | ColumnType::Datetimen => "datetime",
        ColumnType::Guid => "uniqueidentifier",
        ColumnType::Decimaln => "decimal",
        ColumnType::Numericn => "numeric",
        ColumnType::Daten => "date",
        ColumnType::Timen => "time",
        ColumnType::Datetime2 => "datetime2",
        ColumnType::DatetimeOffsetn => "datetimeoffset",
        ColumnType::BigVarBin => "varbinary",
        ColumnType::BigVarChar => "varchar",
        ColumnType::BigBinary => "binary",
        ColumnType::BigChar => "char",
        ColumnType::NVarchar => "nvarchar",
        ColumnType::NChar => "nchar",
        ColumnType::Xml => "xml",
        ColumnType::Udt => "udt",
        ColumnType::Text => "text",
        ColumnType::Image => "image",
        ColumnType::NText => "ntext",
        ColumnType::SSVariant => "sql_variant",
    }
}

/// `[+-]digits[.digits]` → (value, scale); at most 38 significant digits.
fn parse_decimal(text: &str) -> Option<(i128, u8)> {
    let text = text.trim();
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let significant = int.trim_start_matches('0').len() + frac.len();
    if significant > 38 || frac.len() > 38 {
        return None;
    }
    let mut value: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        value = value.checked_mul(10)?.checked_add((b - b'0') as i128)?;
    }
    Some((if negative { -value } else { value }, frac.len() as u8))
}

/// value / 10^scale, exactly.
fn format_decimal(value: i128, scale: u8) -> String {
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

fn civil(julian_day: i64) -> Option<time::Date> {
    time::Date::from_julian_day(julian_day.try_into().ok()?).ok()
}

fn format_date(julian_day: i64) -> String {
    match civil(julian_day) {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day()),
        None => String::new(),
    }
}

/// `YYYY-MM-DD` → days since 0001-01-01.
fn parse_date(text: &str) -> Option<u32> {
    let text = text.trim();
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i32 = text[0..4].parse().ok()?;
    let month: u8 = text[5..7].parse().ok()?;
    let day: u8 = text[8..10].parse().ok()?;
    if year < 1 {
        return None;
    }
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    u32::try_from(date.to_julian_day() as i64 - JD_0001).ok()
}

/// `hh:mm[:ss[.fffffff]]` → 100 ns ticks since midnight.
fn parse_time(text: &str) -> Option<u64> {
    let (hms, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let mut parts = hms.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: u64 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    if parts.next().is_some() || h > 23 || m > 59 || s > 59 || frac.len() > 7 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ticks = format!("{frac:0<7}").parse::<u64>().ok()?;
    Some((h * 3600 + m * 60 + s) * TICKS_PER_SECOND + frac_ticks)
}

/// 100 ns ticks → `hh:mm:ss[.fffffff]` without trailing zeros.
fn format_time(ticks: u64) -> String {
    let secs = ticks / TICKS_PER_SECOND;
    let frac = ticks % TICKS_PER_SECOND;
    let base = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        base
    } else {
        format!("{base}.{}", format!("{frac:07}").trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_column(data: ColumnData<'static>) -> SqlValue {
        with_cell(&data, |cell| cell.to_value())
    }

    fn bound(v: SqlValue) -> (ColumnData<'static>, String) {
        bind_value(&v, "parameters[0]").unwrap()
    }

    #[test]
    fn parameters_become_typed_column_data_and_declarations() {
        assert_eq!(
            bound(SqlValue::Int(7)),
            (ColumnData::I64(Some(7)), "bigint".into())
        );
        assert_eq!(
            bound(SqlValue::Null),
            (ColumnData::String(None), "nvarchar(4000)".into())
        );
        assert_eq!(
            bound(SqlValue::Decimal("-12.340".into())),
            (
                ColumnData::Numeric(Some(Numeric::new_with_scale(-12340, 3))),
                "decimal(5,3)".into()
            )
        );
        assert_eq!(bound(SqlValue::Decimal("0.5".into())).1, "decimal(2,1)");
        assert_eq!(bound(SqlValue::String("x".repeat(4001))).1, "nvarchar(max)");
        let (data, decl) = bound(SqlValue::Guid(
            "6f9619ff-8b86-d011-b42d-00c04fc964ff".into(),
        ));
        assert_eq!(decl, "uniqueidentifier");
        assert_eq!(
            from_column(data),
            SqlValue::Guid("6F9619FF-8B86-D011-B42D-00C04FC964FF".into())
        );
    }

    #[test]
    fn bad_parameters_name_their_field() {
        for bad in [
            SqlValue::Float(f64::NAN),
            SqlValue::Decimal("1e5".into()),
            SqlValue::Decimal("1".repeat(39)),
            SqlValue::Guid("nope".into()),
            SqlValue::Date("2023-02-29".into()),
            SqlValue::Time("25:00".into()),
            SqlValue::Timestamp {
                seconds: -70_000_000_000,
                nanos: 0,
            },
        ] {
            let err = bind_value(&bad, "parameters[3]").unwrap_err();
            assert!(
                matches!(&err, GatewayError::InvalidArgument { field, .. } if field == "parameters[3]"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn temporal_values_round_trip() {
        // 2024-05-01 12:30:00.125 UTC
        let ts = SqlValue::Timestamp {
            seconds: 1_714_566_600,
            nanos: 125_000_000,
        };
        let (data, decl) = bound(ts.clone());
        assert_eq!(decl, "datetime2(7)");
        assert_eq!(from_column(data), ts);
        let (data, _) = bound(SqlValue::Date("2021-03-14".into()));
        assert_eq!(from_column(data), SqlValue::Date("2021-03-14".into()));
        let (data, _) = bound(SqlValue::Time("13:45:00.5".into()));
        assert_eq!(from_column(data), SqlValue::Time("13:45:00.5".into()));
        // datetime: 1900-01-02 00:00:01 (days 1, 300 ticks).
        assert_eq!(
            from_column(ColumnData::DateTime(Some(tiberius::time::DateTime::new(
                1, 300
            )))),
            SqlValue::Timestamp {
                seconds: -2_208_902_399,
                nanos: 0
            }
        );
        // datetime2(3): scale is honoured.
        let dt2 = DateTime2::new(Date::new(0), Time::new(1_500, 3));
        assert_eq!(
            from_column(ColumnData::DateTime2(Some(dt2))),
            SqlValue::Timestamp {
                seconds: -62_135_596_799,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn cells_convert_including_nulls() {
        assert_eq!(from_column(ColumnData::I32(None)), SqlValue::Null);
        assert_eq!(from_column(ColumnData::U8(Some(200))), SqlValue::Int(200));
        assert_eq!(
            from_column(ColumnData::Bit(Some(true))),
            SqlValue::Bool(true)
        );
        assert_eq!(
            from_column(ColumnData::Numeric(Some(Numeric::new_with_scale(1999, 2)))),
            SqlValue::Decimal("19.99".into())
        );
        assert_eq!(
            from_column(ColumnData::Numeric(Some(Numeric::new_with_scale(-5, 3)))),
            SqlValue::Decimal("-0.005".into())
        );
        assert_eq!(
            from_column(ColumnData::String(Some("é".into()))),
            SqlValue::String("é".into())
        );
        assert_eq!(type_name(ColumnType::Int8), "bigint");
        assert_eq!(type_name(ColumnType::NVarchar), "nvarchar");
    }
}

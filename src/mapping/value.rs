//! Typed field values: parsing JSON into a declared type, and writing the canonical JSON back out.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use serde_json::Value;

/// The types a mapped field can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int,
    Decimal,
    Bool,
    Date,
    DateTime,
    Enum,
}

impl FieldType {
    pub const NAMES: &'static str = "string, int, decimal, bool, date, datetime, enum";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => FieldType::String,
            "int" => FieldType::Int,
            "decimal" => FieldType::Decimal,
            "bool" => FieldType::Bool,
            "date" => FieldType::Date,
            "datetime" => FieldType::DateTime,
            "enum" => FieldType::Enum,
            _ => return None,
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Decimal => "decimal",
            FieldType::Bool => "bool",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::Enum => "enum",
        })
    }
}

/// A value on its way through a field's transforms.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Str(String),
    Int(i64),
    Dec(Decimal),
    Bool(bool),
    Date(Date),
    Time(Timestamp),
}

impl Val {
    pub fn is_blank(&self) -> bool {
        match self {
            Val::Null => true,
            Val::Str(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    /// Parses a JSON value as `ty`. `tz` is the zone of datetimes written without an offset.
    pub fn from_json(v: &Value, ty: FieldType, tz: &TimeZone) -> Result<Val, String> {
        if v.is_null() {
            return Ok(Val::Null);
        }
        match ty {
            FieldType::String | FieldType::Enum => Ok(Val::Str(match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => return Err(format!("expected text, found {}", kind(other))),
            })),
            FieldType::Int => match v {
                Value::Number(n) => n
                    .as_i64()
                    .map(Val::Int)
                    .ok_or_else(|| format!("{n} is not a whole number")),
                Value::String(s) => s
                    .trim()
                    .parse()
                    .map(Val::Int)
                    .map_err(|_| format!("{s:?} is not a whole number")),
                other => Err(format!("expected a whole number, found {}", kind(other))),
            },
            FieldType::Decimal => match v {
                // Through the number's own text, so 0.1 stays 0.1 and not 0.1000000000000000055.
                Value::Number(n) => Decimal::from_str(&n.to_string())
                    .or_else(|_| Decimal::from_scientific(&n.to_string()))
                    .map(Val::Dec)
                    .map_err(|_| format!("{n} is not a decimal")),
                Value::String(s) => Decimal::from_str(s.trim())
                    .map(Val::Dec)
                    .map_err(|_| format!("{s:?} is not a decimal number")),
                other => Err(format!("expected a decimal, found {}", kind(other))),
            },
            FieldType::Bool => match v {
                Value::Bool(b) => Ok(Val::Bool(*b)),
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => Ok(Val::Bool(true)),
                    "false" | "no" | "0" => Ok(Val::Bool(false)),
                    _ => Err(format!("{s:?} is not true or false")),
                },
                Value::Number(n) => match n.as_i64() {
                    Some(1) => Ok(Val::Bool(true)),
                    Some(0) => Ok(Val::Bool(false)),
                    _ => Err(format!("{n} is not true or false")),
                },
                other => Err(format!("expected true or false, found {}", kind(other))),
            },
            FieldType::Date => match v {
                Value::String(s) => parse_date(s.trim(), tz),
                Value::Number(n) => epoch_ms(n).map(|t| Val::Date(t.to_zoned(tz.clone()).date())),
                other => Err(format!("expected a date, found {}", kind(other))),
            },
            FieldType::DateTime => match v {
                Value::String(s) => parse_datetime(s.trim(), tz),
                Value::Number(n) => epoch_ms(n).map(Val::Time),
                other => Err(format!("expected a date-time, found {}", kind(other))),
            },
        }
    }

    /// Converts to `ty` where that loses nothing (int -> decimal, text -> number, ...).
    pub fn coerce(self, ty: FieldType, tz: &TimeZone) -> Result<Val, String> {
        match (&self, ty) {
            (Val::Null, _) => Ok(Val::Null),
            (Val::Str(_), FieldType::String | FieldType::Enum)
            | (Val::Int(_), FieldType::Int)
            | (Val::Dec(_), FieldType::Decimal)
            | (Val::Bool(_), FieldType::Bool)
            | (Val::Date(_), FieldType::Date)
            | (Val::Time(_), FieldType::DateTime) => Ok(self),
            (Val::Int(i), FieldType::Decimal) => Ok(Val::Dec(Decimal::from(*i))),
            (Val::Dec(d), FieldType::Int) => {
                if d.fract().is_zero() {
                    i64::try_from(d.trunc())
                        .map(Val::Int)
                        .map_err(|e| e.to_string())
                } else {
                    Err(format!("{d} has a fraction and the field is an int"))
                }
            }
            (Val::Time(t), FieldType::Date) => Ok(Val::Date(t.to_zoned(tz.clone()).date())),
            (Val::Date(d), FieldType::DateTime) => d
                .to_zoned(tz.clone())
                .map(|z| Val::Time(z.timestamp()))
                .map_err(|e| e.to_string()),
            (_, FieldType::String | FieldType::Enum) => Ok(Val::Str(self.to_text())),
            (Val::Str(s), _) => Val::from_json(&Value::String(s.clone()), ty, tz),
            _ => Err(format!("cannot turn {} into {ty}", self.to_text())),
        }
    }

    /// The value as text, as a template or a string field would show it.
    pub fn to_text(&self) -> String {
        match self {
            Val::Null => String::new(),
            Val::Str(s) => s.clone(),
            Val::Int(i) => i.to_string(),
            Val::Dec(d) => d.normalize().to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Date(d) => d.to_string(),
            Val::Time(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        }
    }

    /// [`Val::to_json`], moving text instead of copying it.
    pub fn into_json(self) -> Value {
        match self {
            Val::Str(s) => Value::String(s),
            other => other.to_json(),
        }
    }

    /// The value as text, borrowed when it already is text.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Val::Str(s) => std::borrow::Cow::Borrowed(s),
            other => std::borrow::Cow::Owned(other.to_text()),
        }
    }

    /// The canonical JSON form: ints and bools as JSON, decimals, dates and times as text.
    pub fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Int(i) => Value::from(*i),
            Val::Bool(b) => Value::Bool(*b),
            other => Value::String(other.to_text()),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn epoch_ms(n: &serde_json::Number) -> Result<Timestamp, String> {
    n.as_i64()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .ok_or_else(|| format!("{n} is not an epoch-millisecond time"))
}

fn parse_date(s: &str, tz: &TimeZone) -> Result<Val, String> {
    if let Ok(d) = s.parse::<Date>() {
        return Ok(Val::Date(d));
    }
    match parse_datetime(s, tz) {
        Ok(Val::Time(t)) => Ok(Val::Date(t.to_zoned(tz.clone()).date())),
        _ => Err(format!("{s:?} is not a date (expected YYYY-MM-DD)")),
    }
}

fn parse_datetime(s: &str, tz: &TimeZone) -> Result<Val, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(Val::Time(t));
    }
    if let Ok(dt) = s.parse::<DateTime>() {
        // No offset: the field's declared zone says what the wall-clock time means. In a DST gap
        // or fold, jiff's compatible strategy picks the later / earlier instant like most tools.
        return dt
            .to_zoned(tz.clone())
            .map(|z| Val::Time(z.timestamp()))
            .map_err(|e| format!("{s:?}: {e}"));
    }
    if let Ok(d) = s.parse::<Date>() {
        return d
            .to_zoned(tz.clone())
            .map(|z| Val::Time(z.timestamp()))
            .map_err(|e| format!("{s:?}: {e}"));
    }
    if let Ok(ms) = s.parse::<i64>()
        && let Ok(t) = Timestamp::from_millisecond(ms)
    {
        return Ok(Val::Time(t));
    }
    Err(format!(
        "{s:?} is not a date-time (expected RFC 3339, e.g. 2026-01-31T17:00:00Z)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value, ty: FieldType, tz: &str, expect: Result<Value, &str>) {
        let tz = TimeZone::get(tz).unwrap();
        let got = Val::from_json(&v, ty, &tz).map(|v| v.to_json());
        match expect {
            Ok(e) => assert_eq!(got, Ok(e), "{v} as {ty}"),
            Err(msg) => {
                let err = got.expect_err("expected an error");
                assert!(err.contains(msg), "{err:?} should contain {msg:?}");
            }
        }
    }

    #[test]
    fn parses_each_type() {
        let cases: Vec<(Value, FieldType, &str, Result<Value, &str>)> = vec![
            (json!("x"), FieldType::String, "UTC", Ok(json!("x"))),
            (json!(12), FieldType::String, "UTC", Ok(json!("12"))),
            (json!({}), FieldType::String, "UTC", Err("expected text")),
            (json!("42"), FieldType::Int, "UTC", Ok(json!(42))),
            (json!(4.5), FieldType::Int, "UTC", Err("not a whole number")),
            (
                json!("12000.50"),
                FieldType::Decimal,
                "UTC",
                Ok(json!("12000.5")),
            ),
            (json!(0.1), FieldType::Decimal, "UTC", Ok(json!("0.1"))),
            (
                json!("12,5"),
                FieldType::Decimal,
                "UTC",
                Err("not a decimal"),
            ),
            (json!("yes"), FieldType::Bool, "UTC", Ok(json!(true))),
            (
                json!("maybe"),
                FieldType::Bool,
                "UTC",
                Err("not true or false"),
            ),
            (
                json!("2026-03-01"),
                FieldType::Date,
                "UTC",
                Ok(json!("2026-03-01")),
            ),
            (
                json!("2026-02-30"),
                FieldType::Date,
                "UTC",
                Err("not a date"),
            ),
            (json!(null), FieldType::Date, "UTC", Ok(json!(null))),
            // Epoch ms at 23:30 UTC is already the next day in Berlin.
            (
                json!(1_767_223_800_000_i64),
                FieldType::Date,
                "Europe/Berlin",
                Ok(json!("2026-01-01")),
            ),
            (
                json!(1_767_223_800_000_i64),
                FieldType::Date,
                "UTC",
                Ok(json!("2025-12-31")),
            ),
            (
                json!("2026-01-31T17:00:00+01:00"),
                FieldType::DateTime,
                "UTC",
                Ok(json!("2026-01-31T16:00:00.000Z")),
            ),
            // Naive wall-clock time in a declared zone, around a DST change.
            (
                json!("2026-03-29T01:30:00"),
                FieldType::DateTime,
                "Europe/Berlin",
                Ok(json!("2026-03-29T00:30:00.000Z")),
            ),
            (
                json!("2026-03-29T03:30:00"),
                FieldType::DateTime,
                "Europe/Berlin",
                Ok(json!("2026-03-29T01:30:00.000Z")),
            ),
            (
                json!("2026-03-29T02:30:00"),
                FieldType::DateTime,
                "Europe/Berlin",
                Ok(json!("2026-03-29T01:30:00.000Z")),
            ),
            (
                json!("tomorrow"),
                FieldType::DateTime,
                "UTC",
                Err("not a date-time"),
            ),
        ];
        for (v, ty, tz, expect) in cases {
            check(v, ty, tz, expect);
        }
    }

    #[test]
    fn coerces_without_loss_only() {
        let utc = TimeZone::UTC;
        assert_eq!(
            Val::Int(3).coerce(FieldType::Decimal, &utc),
            Ok(Val::Dec(Decimal::from(3)))
        );
        assert!(
            Val::Dec(Decimal::new(35, 1))
                .coerce(FieldType::Int, &utc)
                .is_err()
        );
        assert_eq!(
            Val::Dec(Decimal::new(1200050, 0)).coerce(FieldType::Int, &utc),
            Ok(Val::Int(1200050))
        );
    }
}

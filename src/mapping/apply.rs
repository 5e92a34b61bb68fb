//! Apply a compiled mapping to a record, toward the target or back toward the source. Pure.

use std::fmt;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::value::{FieldType, Val};
use jiff::tz::TimeZone;

use super::{
    Field, FieldDirection, Lookups, Mapping, Missing, Normalise, Owner, Step, Unmapped, When,
};

/// Whether the target record is being created or updated (some fields apply to one only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
}

/// Why a record could not be mapped. Permanent: the same input fails the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    pub flow: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: field {}: {}", self.flow, self.field, self.message)
    }
}

impl std::error::Error for MapError {}

impl Field {
    /// Whether this field is written toward the target for `op`.
    fn applies_forward(&self, op: Op) -> bool {
        let direction = match self.direction {
            FieldDirection::ToTarget => true,
            FieldDirection::ToSource => false,
            FieldDirection::Both(Owner::Source | Owner::Latest) => true,
            // The target owns it: set it when the record is created, then leave it to the target.
            FieldDirection::Both(Owner::Target) => op == Op::Create,
        };
        let when = match self.when {
            When::Always => true,
            When::CreateOnly => op == Op::Create,
            When::UpdateOnly => op == Op::Update,
        };
        direction && when
    }

    /// Whether this field flows back from the target to the source.
    pub fn applies_reverse(&self) -> bool {
        matches!(
            self.direction,
            FieldDirection::ToSource | FieldDirection::Both(Owner::Target | Owner::Latest)
        )
    }
}

impl Mapping {
    fn err(&self, field: &str, message: impl Into<String>) -> MapError {
        MapError {
            flow: self.name.clone(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// Maps a source record to the target fields to write for `op`. Blank values are left out
    /// (never overwrite with blank) unless the field says `allow_blank`.
    pub fn to_target(
        &self,
        record: &Map<String, Value>,
        op: Op,
    ) -> Result<Map<String, Value>, MapError> {
        self.to_target_with(record, op, &Lookups::NONE)
    }

    /// [`Mapping::to_target`] with the links `lookup` transforms read.
    pub fn to_target_with(
        &self,
        record: &Map<String, Value>,
        op: Op,
        lookups: &Lookups,
    ) -> Result<Map<String, Value>, MapError> {
        let mut out = Map::new();
        for f in self.fields.iter().filter(|f| f.applies_forward(op)) {
            let v = self.forward_field(f, record, lookups)?;
            if v.is_blank() && !f.allow_blank {
                continue;
            }
            out.insert(f.target.clone(), v.into_json());
        }
        Ok(out)
    }

    fn forward_field(
        &self,
        f: &Field,
        record: &Map<String, Value>,
        lookups: &Lookups,
    ) -> Result<Val, MapError> {
        let name = f.source.as_deref().unwrap_or(&f.target);
        let mut v = if let Some(c) = &f.constant {
            c.clone()
        } else if let Some(path) = &f.source {
            let raw = get_path(record, path).unwrap_or(&Value::Null);
            Val::from_json(raw, f.source_ty, &f.tz).map_err(|e| self.err(name, e))?
        } else {
            Val::Null
        };
        if v.is_blank()
            && let Some(d) = &f.default
        {
            v = d.clone();
        }
        if v.is_blank() && f.required {
            return Err(self.err(name, "is required but missing or blank"));
        }
        for step in &f.steps {
            v = forward_step(step, v, record, &f.tz, lookups).map_err(|e| self.err(name, e))?;
        }
        v.coerce(f.ty, &f.tz).map_err(|e| self.err(name, e))
    }

    /// Maps a target record back to the source fields it owns (fields flowing `to_source`, and
    /// `both` fields owned by the target).
    pub fn to_source(&self, record: &Map<String, Value>) -> Result<Map<String, Value>, MapError> {
        let mut out = Map::new();
        for f in self.fields.iter().filter(|f| f.applies_reverse()) {
            let Some(source) = &f.source else { continue };
            let raw = record.get(&f.target).unwrap_or(&Value::Null);
            let mut v = Val::from_json(raw, f.ty, &f.tz).map_err(|e| self.err(&f.target, e))?;
            if v.is_blank() && !f.allow_blank {
                continue;
            }
            for step in f.steps.iter().rev() {
                v = reverse_step(step, v).map_err(|e| self.err(&f.target, e))?;
            }
            let v = v
                .coerce(f.source_ty, &f.tz)
                .map_err(|e| self.err(&f.target, e))?;
            out.insert(source.clone(), v.into_json());
        }
        Ok(out)
    }

    /// The source record's current values of the fields that flow back, in the same canonical
    /// form as [`Mapping::to_source`] produces: what the source "has" for echo comparisons.
    pub fn source_state(&self, record: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for f in self.fields.iter().filter(|f| f.applies_reverse()) {
            let Some(source) = &f.source else { continue };
            let raw = record.get(source).unwrap_or(&Value::Null);
            if let Ok(v) = Val::from_json(raw, f.source_ty, &f.tz)
                && (!v.is_blank() || f.allow_blank)
            {
                out.insert(source.clone(), v.to_json());
            }
        }
        out
    }

    /// The (flow, source path) pairs whose links `lookup` transforms read, so the engine can
    /// prefetch them.
    pub fn lookup_sources(&self) -> Vec<(&str, &str)> {
        self.fields
            .iter()
            .flat_map(|f| {
                f.steps.iter().filter_map(move |s| match (s, &f.source) {
                    (Step::Lookup { flow, .. }, Some(path)) => Some((flow.as_str(), path.as_str())),
                    _ => None,
                })
            })
            .collect()
    }

    /// For each flow that `lookup` transforms read, the distinct keys these source records carry:
    /// what the engine prefetches from the store's links before applying the mapping.
    pub fn lookup_keys<'a>(
        &self,
        records: impl IntoIterator<Item = &'a Map<String, Value>> + Clone,
    ) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (flow, path) in self.lookup_sources() {
            let mut keys: Vec<String> = records
                .clone()
                .into_iter()
                .filter_map(|r| match get_path(r, path)? {
                    Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect();
            match out.iter_mut().find(|(f, _)| f == flow) {
                Some((_, existing)) => existing.append(&mut keys),
                None => out.push((flow.to_owned(), keys)),
            }
        }
        for (_, keys) in &mut out {
            keys.sort();
            keys.dedup();
        }
        out.retain(|(_, k)| !k.is_empty());
        out
    }

    /// The target fields this mapping reads back from the target (for pollers' field lists).
    pub fn target_fields(&self) -> Vec<String> {
        let mut v: Vec<String> = self.fields.iter().map(|f| f.target.clone()).collect();
        v.push(self.external_id.clone());
        v
    }
}

/// Looks up a dotted path (`account.domain`) in a JSON object.
pub fn get_path<'a>(record: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = record.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn forward_step(
    step: &Step,
    v: Val,
    record: &Map<String, Value>,
    tz: &TimeZone,
    lookups: &Lookups,
) -> Result<Val, String> {
    Ok(match step {
        Step::Round(n) => match to_decimal(v)? {
            Some(d) => Val::Dec(
                d.round_dp_with_strategy(*n, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
            ),
            None => Val::Null,
        },
        Step::Decimals(n) => match to_decimal(v)? {
            Some(d) => {
                let mut d = d.round_dp_with_strategy(
                    *n,
                    rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                );
                d.rescale(*n);
                Val::Str(d.to_string())
            }
            None => Val::Null,
        },
        Step::FormatDate(pattern) => match v {
            Val::Null => Val::Null,
            Val::Date(d) => Val::Str(
                jiff::fmt::strtime::format(pattern.as_str(), d)
                    .map_err(|e| format!("cannot format {d} with {pattern:?}: {e}"))?,
            ),
            Val::Time(t) => {
                let z = t.to_zoned(tz.clone());
                Val::Str(
                    jiff::fmt::strtime::format(pattern.as_str(), &z)
                        .map_err(|e| format!("cannot format {t} with {pattern:?}: {e}"))?,
                )
            }
            other => return Err(format!("{:?} is not a date to format", other.to_text())),
        },
        Step::ParseDate(pattern) => match v {
            Val::Str(s) if !s.trim().is_empty() => Val::Date(
                jiff::civil::Date::strptime(pattern.as_str(), s.trim())
                    .map_err(|_| format!("{s:?} does not match the date pattern {pattern:?}"))?,
            ),
            Val::Str(_) | Val::Null => Val::Null,
            other => other,
        },
        Step::ParseDateTime(pattern) => match v {
            Val::Str(s) if !s.trim().is_empty() => {
                let dt =
                    jiff::civil::DateTime::strptime(pattern.as_str(), s.trim()).map_err(|_| {
                        format!("{s:?} does not match the date-time pattern {pattern:?}")
                    })?;
                Val::Time(
                    dt.to_zoned(tz.clone())
                        .map_err(|e| format!("{s:?}: {e}"))?
                        .timestamp(),
                )
            }
            Val::Str(_) | Val::Null => Val::Null,
            other => other,
        },
        Step::Lookup { flow, missing } => {
            if v.is_blank() {
                return Ok(v);
            }
            let key = v.to_text();
            match (lookups.get(flow, &key), missing) {
                (Some(id), _) => Val::Str(id.to_owned()),
                (None, Missing::Blank) => Val::Null,
                (None, Missing::Error) => {
                    return Err(format!(
                        "{key:?} has no linked record in flow {flow:?} yet (sync that flow first)"
                    ));
                }
            }
        }
        Step::Trim => match v {
            Val::Str(s) if s.trim().len() != s.len() => Val::Str(s.trim().to_owned()),
            other => other,
        },
        Step::Lower => map_text(v, |s| s.to_lowercase()),
        Step::Upper => map_text(v, |s| s.to_uppercase()),
        Step::Domain => match v {
            Val::Str(s) => Normalise::Domain.apply(&s).map_or(Val::Null, Val::Str),
            other => other,
        },
        Step::Scale(n) => scale(v, *n)?,
        Step::Template(t) => Val::Str(render(t, &v, record)),
        Step::Values { map, unmapped, .. } => {
            if v.is_blank() {
                return Ok(v);
            }
            let found = {
                let key = v.text();
                map.iter().find(|(from, _)| *from == *key).map(|(_, to)| to)
            };
            match found {
                Some(to) => Val::Str(to.clone()),
                None => match unmapped {
                    Unmapped::Error => {
                        let known: Vec<&str> = map.iter().map(|(f, _)| f.as_str()).collect();
                        return Err(format!(
                            "value {:?} is not in the value map (known: {})",
                            v.to_text(),
                            known.join(", ")
                        ));
                    }
                    Unmapped::Default(d) => Val::Str(d.clone()),
                    Unmapped::Pass => v,
                },
            }
        }
    })
}

fn reverse_step(step: &Step, v: Val) -> Result<Val, String> {
    Ok(match step {
        // Case and whitespace changes have no inverse; the value goes back as the target has it.
        Step::Trim | Step::Lower | Step::Upper | Step::Domain => v,
        Step::Scale(n) => scale(v, -*n)?,
        Step::Round(_) | Step::Decimals(_) => v,
        Step::Template(_)
        | Step::FormatDate(_)
        | Step::ParseDate(_)
        | Step::ParseDateTime(_)
        | Step::Lookup { .. } => return Err("this transform cannot be reversed".into()),
        Step::Values { unmapped, back, .. } => {
            if v.is_blank() {
                return Ok(v);
            }
            let key = v.to_text();
            match back.iter().find(|(to, _)| *to == key) {
                Some((_, from)) => Val::Str(from.clone()),
                None => match unmapped {
                    Unmapped::Pass => v,
                    Unmapped::Error | Unmapped::Default(_) => {
                        let known: Vec<&str> = back.iter().map(|(t, _)| t.as_str()).collect();
                        return Err(format!(
                            "value {key:?} is not in the value map (known: {})",
                            known.join(", ")
                        ));
                    }
                },
            }
        }
    })
}

fn map_text(v: Val, f: impl Fn(&str) -> String) -> Val {
    match v {
        Val::Str(s) => Val::Str(f(&s)),
        other => other,
    }
}

/// A number as a decimal; `None` for blank.
fn to_decimal(v: Val) -> Result<Option<Decimal>, String> {
    Ok(Some(match v {
        Val::Null => return Ok(None),
        Val::Str(s) if s.trim().is_empty() => return Ok(None),
        Val::Int(i) => Decimal::from(i),
        Val::Dec(d) => d,
        Val::Str(s) => s
            .trim()
            .parse::<Decimal>()
            .map_err(|_| format!("{s:?} is not a number"))?,
        other => return Err(format!("{:?} is not a number", other.to_text())),
    }))
}

fn scale(v: Val, n: i32) -> Result<Val, String> {
    let Some(d) = to_decimal(v)? else {
        return Ok(Val::Null);
    };
    let factor = Decimal::from_i128_with_scale(10_i128.pow(n.unsigned_abs()), 0);
    let out = if n >= 0 {
        d.checked_mul(factor)
    } else {
        d.checked_div(factor)
    };
    out.map(Val::Dec)
        .ok_or_else(|| format!("{d} scaled by 10^{n} overflows"))
}

/// Fills `{path}` placeholders from the record, and `{value}` with the field's current value;
/// missing values render empty.
fn render(template: &str, current: &Val, record: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let path = rest[open + 1..open + close].trim();
        if path == "value" {
            out.push_str(&current.to_text());
            rest = &rest[open + close + 1..];
            continue;
        }
        match get_path(record, path) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

impl FieldType {
    /// Whether values of this type are numbers in canonical JSON.
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Int)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn render_fills_placeholders_and_nested_paths() {
        let r = obj(json!({"a": "x", "n": 3, "o": {"b": "y"}}));
        assert_eq!(
            render("{a}-{n}-{o.b}-{missing}!", &Val::Null, &r),
            "x-3-y-!"
        );
        assert_eq!(render("no braces", &Val::Null, &r), "no braces");
        assert_eq!(render("<{value}>", &Val::Str("v".into()), &r), "<v>");
    }

    #[test]
    fn scale_is_exact() {
        assert_eq!(
            scale(Val::Int(1_200_050), -2).map(|v| v.to_text()),
            Ok("12000.5".to_owned())
        );
        assert_eq!(
            scale(Val::Str("12000.50".into()), 2).map(|v| v.to_text()),
            Ok("1200050".to_owned())
        );
        assert_eq!(
            scale(Val::Str("0.29".into()), 2).map(|v| v.to_text()),
            Ok("29".to_owned())
        );
    }
}

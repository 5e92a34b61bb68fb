//! Parse a mapping file's TOML and compile it into a [`Mapping`], collecting every error with its
//! line and column. Pure: no I/O.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use crate::file_error::{collect, line_col};

mod associations;
mod convert;
mod lifecycle;

use jiff::tz::TimeZone;
use serde::Deserialize;
use toml::Spanned;

use super::filter::{Condition, Test};
use super::schema::{self, ObjectSchema};
use super::value::{FieldType, Val};
use super::{
    DeletePolicy, Example, Field, FieldDirection, LookupRef, Lookups, Mapping, MappingError,
    MatchRule, MatchRules, Missing, Normalise, OnMany, OnNone, Op, Owner, Step, Unmapped, When,
};
use crate::model::{ObjectRef, SystemKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    name: Spanned<String>,
    description: Option<String>,
    source: Spanned<RawEnd>,
    target: Spanned<RawEnd>,
    #[serde(default)]
    filter: Vec<Spanned<RawCondition>>,
    delete: Option<Spanned<RawDelete>>,
    on_target_delete: Option<Spanned<lifecycle::RawTargetDelete>>,
    on_convert: Option<Spanned<convert::RawConvert>>,
    #[serde(default)]
    association: Vec<Spanned<associations::RawAssociation>>,
    #[serde(rename = "match")]
    matching: Option<Spanned<RawMatch>>,
    #[serde(default)]
    field: Vec<Spanned<RawField>>,
    #[serde(default)]
    example: Vec<Spanned<RawExample>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    field: Spanned<String>,
    #[serde(rename = "in")]
    one_of: Option<Vec<toml::Value>>,
    not_in: Option<Vec<toml::Value>>,
    equals: Option<toml::Value>,
    present: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelete {
    policy: Spanned<String>,
    field: Option<Spanned<String>>,
    value: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    on_none: Option<Spanned<String>>,
    on_many: Option<Spanned<String>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    source: String,
    target: Spanned<String>,
    normalise: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnd {
    system: Spanned<String>,
    object: String,
    external_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    source: Option<Spanned<String>>,
    target: Spanned<String>,
    #[serde(rename = "type")]
    ty: Option<Spanned<String>>,
    source_type: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    direction: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    on: Option<Spanned<String>>,
    #[serde(default)]
    transforms: Vec<Spanned<RawStep>>,
    values: Option<Spanned<BTreeMap<String, toml::Value>>>,
    values_back: Option<Spanned<BTreeMap<String, String>>>,
    unmapped: Option<Spanned<String>>,
    default: Option<Spanned<toml::Value>>,
    #[serde(rename = "const")]
    constant: Option<Spanned<toml::Value>>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    allow_blank: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawStep {
    Name(String),
    Table(BTreeMap<String, toml::Value>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    name: Option<String>,
    direction: Option<String>,
    op: Option<String>,
    #[serde(default)]
    lookups: BTreeMap<String, BTreeMap<String, String>>,
    input: toml::Table,
    expect: Option<toml::Table>,
    expect_error: Option<String>,
    #[serde(default)]
    expect_filtered: bool,
}

/// Errors for one file, positioned by byte offsets into its text.
struct Errs<'a> {
    file: &'a str,
    text: &'a str,
    list: Vec<MappingError>,
    /// Positions later checks say nothing more about (see `collect::Problem::quiet`).
    quiet: HashSet<usize>,
}

impl Errs<'_> {
    fn at(
        &mut self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        if self.quiet.contains(&span.start) {
            return;
        }
        let (line, column) = line_col(self.text, span.start);
        self.list.push(MappingError {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }
}

/// The file's raw shape, with every unknown key and wrong type reported; `None` when the file
/// cannot be read as a mapping at all (not TOML, or a required key missing).
fn parse(text: &str, errs: &mut Errs<'_>) -> Option<RawMapping> {
    let (raw, problems) = collect::from_str::<RawMapping>(text);
    for p in problems {
        let hint = p
            .message
            .starts_with("unknown field")
            .then_some("see docs/mappings.md for the keys a mapping file may use");
        errs.at(p.span.clone(), &p.key, p.message, hint);
        errs.quiet.extend(p.quiet);
    }
    raw
}

pub(super) fn compile(file: &str, text: &str) -> Result<Mapping, Vec<MappingError>> {
    let mut errs = Errs {
        file,
        text,
        list: Vec::new(),
        quiet: HashSet::new(),
    };
    let Some(raw) = parse(text, &mut errs) else {
        return Err(errs.list);
    };
    let source = end(&raw.source, "source", &mut errs);
    let target = end(&raw.target, "target", &mut errs);
    let external_id = match &raw.target.get_ref().external_id {
        Some(x) => x.clone(),
        None => {
            errs.at(
                raw.target.span(),
                "target.external_id",
                "is required",
                Some("name the target field that stores the source record's id, so writes are upserts"),
            );
            String::new()
        }
    };
    if raw.name.get_ref().trim().is_empty() {
        errs.at(raw.name.span(), "name", "must not be empty", None);
    }
    let target_schema = target
        .as_ref()
        .and_then(|t| schema::object(t.system, &t.object));
    let mut seen_targets = HashSet::new();
    let mut fields = Vec::new();
    for (i, f) in raw.field.iter().enumerate() {
        let key = format!("field[{i}]");
        if let Some(field) = field(f, &key, target_schema, &mut errs) {
            if !seen_targets.insert(field.target.clone()) {
                errs.at(
                    f.get_ref().target.span(),
                    &format!("{key}.target"),
                    format!("target field {:?} is mapped twice", field.target),
                    Some("each target field may appear in one [[field]] only"),
                );
            }
            if field.target == external_id {
                errs.at(
                    f.get_ref().target.span(),
                    &format!("{key}.target"),
                    format!(
                        "{:?} is the external id field; prmsync fills it",
                        field.target
                    ),
                    Some("remove this [[field]]"),
                );
            }
            fields.push(field);
        }
    }
    if raw.field.is_empty() {
        errs.at(
            0..0,
            "field",
            "a mapping needs at least one [[field]]",
            None,
        );
    }
    let filter = raw
        .filter
        .iter()
        .enumerate()
        .filter_map(|(i, c)| condition(c, &format!("filter[{i}]"), &mut errs))
        .collect();
    let on_delete = match &raw.delete {
        Some(d) => delete_policy(d, target_schema, &mut errs),
        None => DeletePolicy::Ignore,
    };
    let on_target_delete =
        lifecycle::target_delete_policy(raw.on_target_delete.as_ref(), source.as_ref(), &mut errs);
    let associations = associations::associations(&raw.association, target.as_ref(), &mut errs);
    let on_convert = convert::on_convert(raw.on_convert.as_ref(), target.as_ref(), &mut errs);
    let matching = raw
        .matching
        .as_ref()
        .and_then(|m| match_rules(m, target_schema, &mut errs));
    let mut examples = Vec::new();
    for (i, ex) in raw.example.iter().enumerate() {
        if let Some(e) = example(ex, &format!("example[{i}]"), &mut errs) {
            examples.push(e);
        }
    }
    if !errs.list.is_empty() {
        return Err(errs.list);
    }
    let (Some(source), Some(target)) = (source, target) else {
        return Err(errs.list);
    };
    let lookup_refs = lookup_refs(&raw, &errs);
    Ok(Mapping {
        name: raw.name.into_inner(),
        file: file.to_owned(),
        version: version_of(text),
        description: raw.description,
        source,
        target,
        external_id,
        target_at: line_col(text, raw.target.span().start),
        fields,
        filter,
        on_delete,
        on_target_delete,
        on_convert,
        matching,
        lookup_refs,
        associations,
        examples,
    })
}

/// Reports `field` when the target schema is known and does not have it.
fn check_target_field(
    schema: Option<&ObjectSchema>,
    field: &Spanned<String>,
    key: &str,
    errs: &mut Errs<'_>,
) {
    let Some(schema) = schema else { return };
    if let Some(hint) = schema::unknown_field(schema, field.get_ref()) {
        let hint = hint.unwrap_or_else(|| {
            format!(
                "known fields: {}; custom fields are named {}",
                schema.fields.join(", "),
                match schema.system {
                    SystemKind::Salesforce => "Name__c",
                    _ => "prm_*",
                }
            )
        });
        errs.at(
            field.span(),
            key,
            format!(
                "{}/{} has no field {:?}",
                schema.system,
                schema.object,
                field.get_ref()
            ),
            Some(&hint),
        );
    }
}

fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn condition(raw: &Spanned<RawCondition>, key: &str, errs: &mut Errs<'_>) -> Option<Condition> {
    let c = raw.get_ref();
    let list = |vals: &[toml::Value], errs: &mut Errs<'_>| -> Option<Vec<String>> {
        let out: Option<Vec<String>> = vals.iter().map(scalar_text).collect();
        if out.is_none() {
            errs.at(
                raw.span(),
                key,
                "filter values must be text, numbers or booleans",
                None,
            );
        }
        out
    };
    let tests = usize::from(c.one_of.is_some())
        + usize::from(c.not_in.is_some())
        + usize::from(c.equals.is_some())
        + usize::from(c.present.is_some());
    if tests != 1 {
        errs.at(
            raw.span(),
            key,
            "a filter needs exactly one of in, not_in, equals or present",
            Some("e.g. { field = \"stage\", in = [\"submitted\", \"approved\"] }"),
        );
        return None;
    }
    let test = if let Some(v) = &c.one_of {
        Test::In(list(v, errs)?)
    } else if let Some(v) = &c.not_in {
        Test::NotIn(list(v, errs)?)
    } else if let Some(v) = &c.equals {
        Test::In(list(std::slice::from_ref(v), errs)?)
    } else {
        Test::Present(c.present.unwrap_or(true))
    };
    Some(Condition {
        path: c.field.get_ref().clone(),
        test,
    })
}

fn delete_policy(
    raw: &Spanned<RawDelete>,
    schema: Option<&ObjectSchema>,
    errs: &mut Errs<'_>,
) -> DeletePolicy {
    let d = raw.get_ref();
    match d.policy.get_ref().as_str() {
        "ignore" | "propagate" | "archive" if d.field.is_some() || d.value.is_some() => {
            errs.at(
                d.policy.span(),
                "delete.policy",
                "field and value only apply to policy = \"flag\"",
                None,
            );
            DeletePolicy::Ignore
        }
        "ignore" => DeletePolicy::Ignore,
        // HubSpot calls its delete "archive"; both names delete the target record.
        "propagate" | "archive" => DeletePolicy::Propagate,
        "flag" => match (&d.field, &d.value) {
            (Some(field), Some(value)) => {
                check_target_field(schema, field, "delete.field", errs);
                DeletePolicy::Flag {
                    field: field.get_ref().clone(),
                    value: toml_to_json(value),
                }
            }
            _ => {
                errs.at(
                    d.policy.span(),
                    "delete.policy",
                    "policy = \"flag\" needs a field and a value",
                    Some("e.g. field = \"prm_deleted\", value = \"true\""),
                );
                DeletePolicy::Ignore
            }
        },
        other => {
            errs.at(
                d.policy.span(),
                "delete.policy",
                format!("unknown delete policy {other:?}"),
                Some("use ignore, flag, archive or propagate"),
            );
            DeletePolicy::Ignore
        }
    }
}

fn match_rules(
    raw: &Spanned<RawMatch>,
    schema: Option<&ObjectSchema>,
    errs: &mut Errs<'_>,
) -> Option<MatchRules> {
    let m = raw.get_ref();
    let before = errs.list.len();
    let on_none = match m.on_none.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("create", _)) => OnNone::Create,
        Some(("skip", _)) => OnNone::Skip,
        Some((other, span)) => {
            errs.at(
                span,
                "match.on_none",
                format!("unknown value {other:?}"),
                Some("use create or skip"),
            );
            OnNone::Create
        }
    };
    let on_many = match m.on_many.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("fail", _)) => OnMany::Fail,
        Some(("skip", _)) => OnMany::Skip,
        Some(("oldest", _)) => OnMany::Oldest,
        Some((other, span)) => {
            errs.at(
                span,
                "match.on_many",
                format!("unknown value {other:?}"),
                Some("use fail, skip or oldest"),
            );
            OnMany::Fail
        }
    };
    if m.rule.is_empty() {
        errs.at(
            raw.span(),
            "match.rule",
            "match needs at least one [[match.rule]]",
            Some("e.g. source = \"website\", target = \"domain\", normalise = \"domain\""),
        );
    }
    let mut rules = Vec::new();
    for (i, r) in m.rule.iter().enumerate() {
        let r = r.get_ref();
        let key = format!("match.rule[{i}]");
        check_target_field(schema, &r.target, &format!("{key}.target"), errs);
        let normalise = match r
            .normalise
            .as_ref()
            .map(|v| (v.get_ref().as_str(), v.span()))
        {
            None | Some(("exact", _)) => Normalise::Exact,
            Some(("lower", _)) => Normalise::Lower,
            Some(("email", _)) => Normalise::Email,
            Some(("domain", _)) => Normalise::Domain,
            Some((other, span)) => {
                errs.at(
                    span,
                    &format!("{key}.normalise"),
                    format!("unknown normalisation {other:?}"),
                    Some("use exact, lower, email or domain"),
                );
                Normalise::Exact
            }
        };
        rules.push(MatchRule {
            source: r.source.clone(),
            target: r.target.get_ref().clone(),
            normalise,
        });
    }
    (errs.list.len() == before).then_some(MatchRules {
        rules,
        on_none,
        on_many,
    })
}

/// Checks that every `lookup` names a flow in the set, and that the flow's target is where the
/// looked-up ids live. Runs across files, after each compiled on its own.
pub(super) fn check_lookups(mappings: &[std::sync::Arc<Mapping>]) -> Vec<MappingError> {
    let mut out = lookups_exist(mappings);
    out.extend(associations::check(mappings));
    out.extend(convert::check(mappings));
    out
}

fn lookups_exist(mappings: &[std::sync::Arc<Mapping>]) -> Vec<MappingError> {
    let names: Vec<&str> = mappings.iter().map(|m| m.name.as_str()).collect();
    mappings
        .iter()
        .flat_map(|m| &m.lookup_refs)
        .filter(|r| !names.contains(&r.flow.as_str()))
        .map(|r| MappingError {
            file: r.at.file.clone(),
            line: r.at.line,
            column: r.at.column,
            key: r.at.key.clone(),
            message: format!(
                "lookup names flow {:?}, which no mapping file defines",
                r.flow
            ),
            hint: Some(match schema::closest(&r.flow, &names) {
                Some(c) => format!("did you mean {c:?}?"),
                None => format!("flows in this set: {}", names.join(", ")),
            }),
        })
        .collect()
}

/// Where each `lookup` transform names a flow, for the cross-file check.
fn lookup_refs(raw: &RawMapping, errs: &Errs<'_>) -> Vec<LookupRef> {
    let mut out = Vec::new();
    for (i, f) in raw.field.iter().enumerate() {
        for (j, step) in f.get_ref().transforms.iter().enumerate() {
            if let RawStep::Table(t) = step.get_ref()
                && let Some(toml::Value::String(flow)) = t.get("lookup")
            {
                let (line, column) = line_col(errs.text, step.span().start);
                out.push(LookupRef {
                    flow: flow.clone(),
                    at: MappingError {
                        file: errs.file.to_owned(),
                        line,
                        column,
                        key: format!("field[{i}].transforms[{j}]"),
                        message: String::new(),
                        hint: None,
                    },
                });
            }
        }
    }
    out
}

fn version_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

fn end(raw: &Spanned<RawEnd>, key: &str, errs: &mut Errs<'_>) -> Option<ObjectRef> {
    let r = raw.get_ref();
    match SystemKind::parse(r.system.get_ref()) {
        Some(system) => Some(ObjectRef {
            system,
            object: r.object.clone(),
        }),
        None => {
            let known: Vec<_> = SystemKind::ALL.iter().map(|s| s.as_str()).collect();
            errs.at(
                r.system.span(),
                &format!("{key}.system"),
                format!("unknown system {:?}", r.system.get_ref()),
                Some(&format!("known systems: {}", known.join(", "))),
            );
            None
        }
    }
}

fn field_type(raw: Option<&Spanned<String>>, key: &str, errs: &mut Errs<'_>) -> Option<FieldType> {
    let Some(raw) = raw else {
        return Some(FieldType::String);
    };
    let t = FieldType::parse(raw.get_ref());
    if t.is_none() {
        errs.at(
            raw.span(),
            key,
            format!("unknown type {:?}", raw.get_ref()),
            Some(&format!("use one of {}", FieldType::NAMES)),
        );
    }
    t
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn field(
    raw: &Spanned<RawField>,
    key: &str,
    schema: Option<&ObjectSchema>,
    errs: &mut Errs<'_>,
) -> Option<Field> {
    let f = raw.get_ref();
    let before = errs.list.len();
    check_target_field(schema, &f.target, &format!("{key}.target"), errs);
    let (ty, source_ty, tz) = field_types(f, key, errs);
    let direction = field_direction(f, key, errs);
    let when = field_when(f, key, errs);
    let reverse = !matches!(direction, FieldDirection::ToTarget);
    let mut steps = field_transforms(f, key, reverse, errs);
    if let Some(values) = &f.values {
        steps.push(value_map(f, values, key, schema, reverse, errs));
    } else if let Some(u) = &f.unmapped {
        errs.at(
            u.span(),
            &format!("{key}.unmapped"),
            "unmapped needs a values map",
            None,
        );
    }
    field_consistency(raw, key, ty, reverse, &steps, errs);
    let ty = ty?;
    let source_ty = source_ty?;
    let (default, constant) = field_values(f, key, ty, source_ty, &tz, errs);
    if errs.list.len() > before {
        return None;
    }
    Some(Field {
        source: f.source.as_ref().map(|s| s.get_ref().clone()),
        target: f.target.get_ref().clone(),
        ty,
        source_ty,
        tz,
        direction,
        when,
        steps,
        required: f.required,
        allow_blank: f.allow_blank,
        default,
        constant,
        target_at: line_col(errs.text, f.target.span().start),
    })
}

/// `type`, `source_type` (defaults to `type`) and `timezone` (defaults to UTC).
fn field_types(
    f: &RawField,
    key: &str,
    errs: &mut Errs<'_>,
) -> (Option<FieldType>, Option<FieldType>, TimeZone) {
    let ty = field_type(f.ty.as_ref(), &format!("{key}.type"), errs);
    let source_ty = match &f.source_type {
        Some(_) => field_type(f.source_type.as_ref(), &format!("{key}.source_type"), errs),
        None => ty,
    };
    let tz = match &f.timezone {
        None => TimeZone::UTC,
        Some(z) => TimeZone::get(z.get_ref()).unwrap_or_else(|_| {
            errs.at(
                z.span(),
                &format!("{key}.timezone"),
                format!("unknown time zone {:?}", z.get_ref()),
                Some("use an IANA name such as \"Europe/Berlin\" or \"UTC\""),
            );
            TimeZone::UTC
        }),
    };
    (ty, source_ty, tz)
}

/// `direction` and `owner`: both ways needs an owner; an owner only applies to both ways.
fn field_direction(f: &RawField, key: &str, errs: &mut Errs<'_>) -> FieldDirection {
    let owner = f.owner.as_ref().and_then(|o| match o.get_ref().as_str() {
        "source" | "prm" => Some(Owner::Source),
        "target" | "crm" => Some(Owner::Target),
        "latest" => Some(Owner::Latest),
        other => {
            errs.at(
                o.span(),
                &format!("{key}.owner"),
                format!("unknown owner {other:?}"),
                Some("use \"source\" (prm), \"target\" (crm) or \"latest\" (latest change wins)"),
            );
            None
        }
    });
    let direction = match f
        .direction
        .as_ref()
        .map(|d| (d.get_ref().as_str(), d.span()))
    {
        None | Some(("to_target", _)) => FieldDirection::ToTarget,
        Some(("to_source", _)) => FieldDirection::ToSource,
        Some(("both", span)) => match owner {
            Some(o) => FieldDirection::Both(o),
            None => {
                if f.owner.is_none() {
                    errs.at(
                        span,
                        &format!("{key}.direction"),
                        "a field that syncs both ways needs an owner",
                        Some("add owner = \"source\", \"target\" or \"latest\" to say who wins a conflict"),
                    );
                }
                FieldDirection::ToTarget
            }
        },
        Some((other, span)) => {
            errs.at(
                span,
                &format!("{key}.direction"),
                format!("unknown direction {other:?}"),
                Some("use to_target, to_source or both"),
            );
            FieldDirection::ToTarget
        }
    };
    if f.owner.is_some() && !matches!(direction, FieldDirection::Both(_)) && f.direction.is_some() {
        errs.at(
            f.owner.as_ref().map_or(0..0, Spanned::span),
            &format!("{key}.owner"),
            "owner only applies to direction = \"both\"",
            None,
        );
    }
    direction
}

/// `on`: create_and_update (default), create_only, update_only.
fn field_when(f: &RawField, key: &str, errs: &mut Errs<'_>) -> When {
    match f.on.as_ref().map(|o| (o.get_ref().as_str(), o.span())) {
        None | Some(("create_and_update", _)) => When::Always,
        Some(("create_only", _)) => When::CreateOnly,
        Some(("update_only", _)) => When::UpdateOnly,
        Some((other, span)) => {
            errs.at(
                span,
                &format!("{key}.on"),
                format!("unknown value {other:?}"),
                Some("use create_and_update, create_only or update_only"),
            );
            When::Always
        }
    }
}

/// `transforms`, in order; a field that flows back may use only reversible ones.
fn field_transforms(f: &RawField, key: &str, reverse: bool, errs: &mut Errs<'_>) -> Vec<Step> {
    let mut steps = Vec::new();
    for (j, s) in f.transforms.iter().enumerate() {
        let skey = format!("{key}.transforms[{j}]");
        if let Some(step) = step(s, &skey, errs) {
            if reverse && !step.is_reversible() {
                errs.at(
                    s.span(),
                    &skey,
                    "this transform cannot be reversed, so the field cannot flow to the source",
                    Some("use direction = \"to_target\", or a separate to_source field"),
                );
            }
            steps.push(step);
        }
    }
    steps
}

/// `values`, `unmapped` and `values_back` → the value-map step, checked against the target's
/// picklist where it is known, and one-to-one (or covered by `values_back`) for fields that
/// flow back.
fn value_map(
    f: &RawField,
    values: &Spanned<BTreeMap<String, toml::Value>>,
    key: &str,
    schema: Option<&ObjectSchema>,
    reverse: bool,
    errs: &mut Errs<'_>,
) -> Step {
    let mut map = Vec::new();
    for (k, v) in values.get_ref() {
        match v {
            toml::Value::String(s) => map.push((k.clone(), s.clone())),
            toml::Value::Integer(i) => map.push((k.clone(), i.to_string())),
            toml::Value::Boolean(b) => map.push((k.clone(), b.to_string())),
            _ => errs.at(
                values.span(),
                &format!("{key}.values.{k}"),
                "value map entries must be text, numbers or booleans",
                None,
            ),
        }
    }
    let unmapped = match f
        .unmapped
        .as_ref()
        .map(|u| (u.get_ref().as_str(), u.span()))
    {
        None | Some(("error", _)) => Unmapped::Error,
        Some(("pass", _)) => Unmapped::Pass,
        Some((other, span)) => match other.strip_prefix("default:") {
            Some(d) => Unmapped::Default(d.to_owned()),
            None => {
                errs.at(
                    span,
                    &format!("{key}.unmapped"),
                    format!("unknown value {other:?}"),
                    Some("use \"error\", \"pass\" or \"default:VALUE\""),
                );
                Unmapped::Error
            }
        },
    };
    if let Some(options) = schema.and_then(|s| schema::options(s, f.target.get_ref())) {
        for (from, to) in &map {
            if !options.contains(&to.as_str()) {
                let hint = match schema::closest(to, options) {
                    Some(c) => format!("did you mean {c:?}?"),
                    None => format!("options: {}", options.join(", ")),
                };
                errs.at(
                    values.span(),
                    &format!("{key}.values.{from}"),
                    format!("{to:?} is not an option of {}", f.target.get_ref()),
                    Some(&hint),
                );
            }
        }
        if reverse && unmapped == Unmapped::Error {
            let back_keys: Vec<&String> = match &f.values_back {
                Some(b) => b.get_ref().keys().collect(),
                None => map.iter().map(|(_, to)| to).collect(),
            };
            let missing: Vec<&str> = options
                .iter()
                .filter(|o| !back_keys.iter().any(|to| to == *o))
                .copied()
                .collect();
            if !missing.is_empty() {
                errs.at(
                    values.span(),
                    &format!("{key}.values"),
                    format!(
                        "the value map does not cover the {} options {}",
                        f.target.get_ref(),
                        missing.join(", ")
                    ),
                    Some("map every option, or set unmapped = \"pass\" to send others back unchanged"),
                );
            }
        }
    }
    if let Some(b) = &f.values_back {
        if !reverse {
            errs.at(
                b.span(),
                &format!("{key}.values_back"),
                "values_back only applies to fields that flow to the source",
                None,
            );
        }
        for (to, from) in b.get_ref() {
            if !map.iter().any(|(f, _)| f == from) {
                errs.at(
                    b.span(),
                    &format!("{key}.values_back.{to}"),
                    format!("{from:?} is not a source value of the values map"),
                    Some("values_back maps target values to source values listed in values"),
                );
            }
        }
    } else if reverse {
        let mut seen = HashSet::new();
        for (_, v) in &map {
            if !seen.insert(v) {
                errs.at(
                    values.span(),
                    &format!("{key}.values"),
                    format!("two source values map to {v:?}, so the way back is ambiguous"),
                    Some("a field that flows to the source needs a one-to-one value map"),
                );
            }
        }
    }
    let back = match &f.values_back {
        Some(b) => b
            .get_ref()
            .iter()
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect(),
        None => map.iter().map(|(s, t)| (t.clone(), s.clone())).collect(),
    };
    Step::Values {
        map,
        unmapped,
        back,
    }
}

/// What a field needs as a whole: an enum its value map; a field that flows back no constant
/// and a top-level source; every field a source, a constant or a template.
fn field_consistency(
    raw: &Spanned<RawField>,
    key: &str,
    ty: Option<FieldType>,
    reverse: bool,
    steps: &[Step],
    errs: &mut Errs<'_>,
) {
    let f = raw.get_ref();
    if ty == Some(FieldType::Enum) && f.values.is_none() {
        errs.at(
            f.ty.as_ref().map_or(raw.span(), Spanned::span),
            &format!("{key}.values"),
            "an enum field needs a values map",
            Some("add values = { source_value = \"target_value\", ... }"),
        );
    }
    if reverse {
        if let Some(c) = &f.constant {
            errs.at(
                c.span(),
                &format!("{key}.const"),
                "a constant cannot flow to the source",
                None,
            );
        }
        if f.source.as_ref().is_some_and(|s| s.get_ref().contains('.')) {
            errs.at(
                f.source.as_ref().map_or(0..0, Spanned::span),
                &format!("{key}.source"),
                "a field that flows to the source needs a top-level source field",
                None,
            );
        }
    }
    if f.source.is_none()
        && f.constant.is_none()
        && !steps.iter().any(|s| matches!(s, Step::Template(_)))
    {
        errs.at(
            raw.span(),
            &format!("{key}.source"),
            "needs a source field, a const or a template",
            None,
        );
    }
}

/// `default` (of the source type) and `const` (of the field's type), parsed at compile time.
fn field_values(
    f: &RawField,
    key: &str,
    ty: FieldType,
    source_ty: FieldType,
    tz: &TimeZone,
    errs: &mut Errs<'_>,
) -> (Option<Val>, Option<Val>) {
    let parse_val = |v: &Spanned<toml::Value>, which: &str, t: FieldType, errs: &mut Errs<'_>| {
        Val::from_json(&toml_to_json(v.get_ref()), t, tz)
            .map_err(|e| {
                errs.at(
                    v.span(),
                    &format!("{key}.{which}"),
                    format!("{e} (the field's type is {t})"),
                    None,
                )
            })
            .ok()
    };
    let default = f
        .default
        .as_ref()
        .and_then(|d| parse_val(d, "default", source_ty, errs));
    let constant = f
        .constant
        .as_ref()
        .and_then(|c| parse_val(c, "const", ty, errs));
    (default, constant)
}

const STEP_NAMES: &str = "trim, lower, upper, domain, { scale = N }, { round = N }, { decimals = N }, \
{ template = \"...\" }, { format_date = \"%d.%m.%Y\" }, { parse_date = \"...\" }, \
{ parse_datetime = \"...\" }, { lookup = \"flow\", missing = \"error\"|\"blank\" }";

/// Checks a strftime pattern by formatting and parsing a sample with it.
fn pattern_ok(pattern: &str, parse: bool) -> bool {
    let sample = jiff::civil::date(2026, 1, 31).at(17, 5, 9, 0);
    match jiff::fmt::strtime::format(pattern, sample) {
        Ok(text) => {
            !parse
                || jiff::civil::DateTime::strptime(pattern, &text).is_ok()
                || jiff::civil::Date::strptime(pattern, &text).is_ok()
        }
        Err(_) => false,
    }
}

fn step(raw: &Spanned<RawStep>, key: &str, errs: &mut Errs<'_>) -> Option<Step> {
    let bad = |errs: &mut Errs<'_>, what: String| {
        errs.at(
            raw.span(),
            key,
            what,
            Some(&format!("transforms are {STEP_NAMES}")),
        );
        None
    };
    let places = |n: &i64| u32::try_from(*n).ok().filter(|n| *n <= 18);
    match raw.get_ref() {
        RawStep::Name(n) => match n.as_str() {
            "trim" => Some(Step::Trim),
            "lower" => Some(Step::Lower),
            "upper" => Some(Step::Upper),
            "domain" => Some(Step::Domain),
            other => {
                let names = ["trim", "lower", "upper", "domain"];
                match schema::closest(other, &names) {
                    Some(c) => {
                        errs.at(
                            raw.span(),
                            key,
                            format!("unknown transform {other:?}"),
                            Some(&format!("did you mean {c:?}?")),
                        );
                        None
                    }
                    None => bad(errs, format!("unknown transform {other:?}")),
                }
            }
        },
        RawStep::Table(t) if t.contains_key("lookup") => {
            let flow = match t.get("lookup") {
                Some(toml::Value::String(f)) => f.clone(),
                _ => return bad(errs, "lookup names a flow, as text".into()),
            };
            let missing = match t.get("missing") {
                None => Missing::Error,
                Some(toml::Value::String(m)) if m == "error" => Missing::Error,
                Some(toml::Value::String(m)) if m == "blank" => Missing::Blank,
                Some(_) => return bad(errs, "lookup's missing is \"error\" or \"blank\"".into()),
            };
            if let Some(k) = t.keys().find(|k| *k != "lookup" && *k != "missing") {
                return bad(errs, format!("lookup has no option {k:?}"));
            }
            Some(Step::Lookup { flow, missing })
        }
        RawStep::Table(t) if t.len() == 1 => {
            let (k, v) = t.iter().next()?;
            match (k.as_str(), v) {
                ("scale", toml::Value::Integer(n)) if (-18..=18).contains(n) => {
                    Some(Step::Scale(*n as i32))
                }
                ("round", toml::Value::Integer(n)) if places(n).is_some() => {
                    places(n).map(Step::Round)
                }
                ("decimals", toml::Value::Integer(n)) if places(n).is_some() => {
                    places(n).map(Step::Decimals)
                }
                ("template", toml::Value::String(s)) => {
                    if s.matches('{').count() != s.matches('}').count() {
                        return bad(errs, format!("template {s:?} has unbalanced braces"));
                    }
                    Some(Step::Template(s.clone()))
                }
                ("format_date" | "parse_date" | "parse_datetime", toml::Value::String(p)) => {
                    let parse = k != "format_date";
                    if !pattern_ok(p, parse) {
                        errs.at(
                            raw.span(),
                            key,
                            format!("{p:?} is not a usable date pattern for {k}"),
                            Some("use strftime directives such as %Y-%m-%d, %d.%m.%Y or %H:%M"),
                        );
                        return None;
                    }
                    Some(match k.as_str() {
                        "format_date" => Step::FormatDate(p.clone()),
                        "parse_date" => Step::ParseDate(p.clone()),
                        _ => Step::ParseDateTime(p.clone()),
                    })
                }
                (other, _) => bad(errs, format!("unknown transform {other:?} or bad argument")),
            }
        }
        RawStep::Table(_) => bad(errs, "a transform table has exactly one key".into()),
    }
}

fn example(raw: &Spanned<RawExample>, key: &str, errs: &mut Errs<'_>) -> Option<Example> {
    let e = raw.get_ref();
    let (line, _) = line_col(errs.text, raw.span().start);
    let reverse = match e.direction.as_deref() {
        None | Some("to_target") => false,
        Some("to_source") => true,
        Some(other) => {
            errs.at(
                raw.span(),
                &format!("{key}.direction"),
                format!("unknown direction {other:?}"),
                Some("use to_target or to_source"),
            );
            return None;
        }
    };
    let op = match e.op.as_deref() {
        None | Some("create") => Op::Create,
        Some("update") => Op::Update,
        Some(other) => {
            errs.at(
                raw.span(),
                &format!("{key}.op"),
                format!("unknown op {other:?}"),
                Some("use create or update"),
            );
            return None;
        }
    };
    let outcomes = usize::from(e.expect.is_some())
        + usize::from(e.expect_error.is_some())
        + usize::from(e.expect_filtered);
    if outcomes != 1 {
        errs.at(
            raw.span(),
            key,
            "an example needs exactly one of expect, expect_error or expect_filtered = true",
            None,
        );
        return None;
    }
    let to_map = |t: &toml::Table| match toml_to_json(&toml::Value::Table(t.clone())) {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let mut lookups = Lookups::default();
    for (flow, table) in &e.lookups {
        for (from, to) in table {
            lookups.insert(flow, from.clone(), to.clone());
        }
    }
    Some(Example {
        line,
        name: e.name.clone(),
        reverse,
        op,
        lookups,
        input: to_map(&e.input),
        expect: e.expect.as_ref().map(to_map),
        expect_error: e.expect_error.clone(),
        expect_filtered: e.expect_filtered,
    })
}

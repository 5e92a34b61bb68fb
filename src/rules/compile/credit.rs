//! `[credit]` in a rules file: how partners other than the sourcing one earn credit on a deal
//! (the registration field declaring a role, the evidence and where leads and activities are
//! read from, the window), compiled with located errors. Pure: no I/O.

use serde::Deserialize;
use toml::Spanned;

use super::Errs;
use crate::rules::credit::{CreditRule, Evidence, EvidenceSource};

/// Longest window a file may give: ten years.
const MAX_DAYS: i64 = 3_650;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredit {
    role_field: Option<Spanned<String>>,
    influence_from: Option<Spanned<Vec<Spanned<String>>>>,
    influence_within_days: Spanned<i64>,
    lead: Option<Spanned<RawSource>>,
    activity: Option<Spanned<RawSource>>,
}

/// `[credit.lead]` / `[credit.activity]`: which PRM records, and which of their fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    object: Option<Spanned<String>>,
    partner: Option<Spanned<String>>,
    customer: Option<Spanned<Vec<Spanned<String>>>>,
    at: Option<Spanned<String>>,
}

/// A source's defaults: (object, partner field, customer fields, time field). PartnerStack's
/// documented names: a lead's `partner_key`, `email`, `created_at`; an action's
/// `partnership_key`, `created_at` (its `customer`'s fields are not documented, so an
/// activity's customer field has no default).
fn defaults(
    kind: Evidence,
) -> (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
) {
    match kind {
        Evidence::Activity => ("actions", "partnership_key", &[], "created_at"),
        _ => ("leads", "partner_key", &["email"], "created_at"),
    }
}

/// One evidence source, with its defaults filled in; `None` (with the errors noted) when it is
/// unusable. `listed`: the span of its name in `influence_from`.
fn source(
    kind: Evidence,
    raw: Option<&Spanned<RawSource>>,
    listed: std::ops::Range<usize>,
    errs: &mut Errs<'_>,
) -> Option<EvidenceSource> {
    let (object, partner, customer, at) = defaults(kind);
    let section = format!("credit.{}", kind.as_str());
    let mut ok = true;
    let mut name = |v: Option<&Spanned<String>>, key: &str, default: &str, errs: &mut Errs<'_>| {
        let Some(v) = v else {
            return default.to_owned();
        };
        let t = v.get_ref().trim();
        if t.is_empty() || t.split('.').any(str::is_empty) {
            errs.at(
                v.span(),
                &format!("{section}.{key}"),
                format!("{:?} is not a field or object name", v.get_ref()),
                Some("name one, e.g. \"created_at\" or \"customer.email\""),
            );
            ok = false;
        }
        t.to_owned()
    };
    let r = raw.map(Spanned::get_ref);
    let object = name(r.and_then(|r| r.object.as_ref()), "object", object, errs);
    let partner = name(r.and_then(|r| r.partner.as_ref()), "partner", partner, errs);
    let at = name(r.and_then(|r| r.at.as_ref()), "at", at, errs);
    let customer: Vec<String> = match r.and_then(|r| r.customer.as_ref()) {
        None => customer.iter().map(|c| (*c).to_owned()).collect(),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|c| name(Some(c), "customer", "", errs))
            .collect(),
    };
    if customer.is_empty() {
        let span = r
            .and_then(|r| r.customer.as_ref())
            .map_or(listed, Spanned::span);
        errs.at(
            span,
            &format!("{section}.customer"),
            format!(
                "{} evidence needs the field(s) holding the customer's email or domain",
                kind.as_str()
            ),
            Some("e.g. [credit.activity] customer = [\"customer.email\"] (PartnerStack documents an action's customer without its fields)"),
        );
        return None;
    }
    ok.then_some(EvidenceSource {
        kind,
        object,
        partner,
        customer,
        at,
    })
}

/// The compiled `[credit]`, or `None` when the file has none (no partner credit is written).
pub(super) fn credit(raw: Option<&Spanned<RawCredit>>, errs: &mut Errs<'_>) -> Option<CreditRule> {
    let raw = raw?;
    let c = raw.get_ref();
    let days = *c.influence_within_days.get_ref();
    if !(0..=MAX_DAYS).contains(&days) {
        errs.at(
            c.influence_within_days.span(),
            "credit.influence_within_days",
            format!("{days} is not a number of days from 0 to {MAX_DAYS}"),
            None,
        );
    }
    let role_field = c.role_field.as_ref().and_then(|f| {
        let name = f.get_ref().trim();
        if name.is_empty() {
            errs.at(
                f.span(),
                "credit.role_field",
                "must name a registration field",
                Some("leave the key out when registrations carry no role"),
            );
            None
        } else {
            Some(name.to_owned())
        }
    });
    let mut influence_from = Vec::new();
    let mut sources = Vec::new();
    match &c.influence_from {
        None => influence_from.push(Evidence::Registration),
        Some(list) => {
            for e in list.get_ref() {
                let Some(kind) = Evidence::parse(e.get_ref()) else {
                    errs.at(
                        e.span(),
                        "credit.influence_from",
                        format!("unknown evidence {:?}", e.get_ref()),
                        Some("use registration, lead or activity"),
                    );
                    continue;
                };
                if influence_from.contains(&kind) {
                    errs.at(
                        e.span(),
                        "credit.influence_from",
                        format!("{} is listed twice", kind.as_str()),
                        None,
                    );
                    continue;
                }
                influence_from.push(kind);
                let raw = match kind {
                    Evidence::Registration => continue,
                    Evidence::Lead => c.lead.as_ref(),
                    Evidence::Activity => c.activity.as_ref(),
                };
                sources.extend(source(kind, raw, e.span(), errs));
            }
        }
    }
    for (kind, raw) in [(Evidence::Lead, &c.lead), (Evidence::Activity, &c.activity)] {
        if let Some(raw) = raw
            && !influence_from.contains(&kind)
        {
            errs.at(
                raw.span(),
                &format!("credit.{}", kind.as_str()),
                format!(
                    "{} is not in influence_from, so this is never read",
                    kind.as_str()
                ),
                Some("add it to influence_from, or remove the table"),
            );
        }
    }
    if let [a, b] = sources.as_slice()
        && a.object == b.object
    {
        let span = c.activity.as_ref().map_or(raw.span(), Spanned::span);
        errs.at(
            span,
            "credit.activity.object",
            format!("{:?} is already the leads' object", b.object),
            Some("leads and activities are different PRM objects"),
        );
    }
    Some(CreditRule {
        line: errs.section_line("credit", raw.span()),
        role_field,
        influence_from,
        influence_within_days: days,
        sources,
    })
}

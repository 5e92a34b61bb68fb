//! `[credit]` in a rules file: how partners other than the sourcing one earn credit on a deal
//! (the registration field declaring a role, the evidence, the window), compiled with located
//! errors. Pure: no I/O.

use serde::Deserialize;
use toml::Spanned;

use super::Errs;
use crate::rules::credit::{CreditRule, Evidence};

/// Longest window a file may give: ten years.
const MAX_DAYS: i64 = 3_650;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredit {
    role_field: Option<Spanned<String>>,
    influence_from: Option<Spanned<Vec<Spanned<String>>>>,
    influence_within_days: Spanned<i64>,
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
    match &c.influence_from {
        None => influence_from.push(Evidence::Registration),
        Some(list) => {
            for e in list.get_ref() {
                match e.get_ref().as_str() {
                    "registration" if !influence_from.contains(&Evidence::Registration) => {
                        influence_from.push(Evidence::Registration);
                    }
                    "registration" => errs.at(
                        e.span(),
                        "credit.influence_from",
                        "registration is listed twice",
                        None,
                    ),
                    "lead" | "activity" => errs.at(
                        e.span(),
                        "credit.influence_from",
                        format!("{:?} evidence is not read by prmsync yet", e.get_ref()),
                        Some("use registration (see docs/rules.md)"),
                    ),
                    other => errs.at(
                        e.span(),
                        "credit.influence_from",
                        format!("unknown evidence {other:?}"),
                        Some("use registration"),
                    ),
                }
            }
        }
    }
    Some(CreditRule {
        line: errs.section_line("credit", raw.span()),
        role_field,
        influence_from,
        influence_within_days: days,
    })
}

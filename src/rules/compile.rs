//! Parse a rules file's TOML and compile it into [`Rules`], collecting every error with its line
//! and column. Pure: no I/O.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use crate::file_error::{collect, line_col};

mod credit;
mod crm;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{
    CrmAccount, CrmCriterion, CrmFacts, CrmOpportunity, Example, ExpectedDecision, Input, KeyPart,
    NamedContact, Normalize, OnExpiry, OpenDirect, OpenDirectAction, PriorDecision, Protection,
    Qualification, RegistrationEvent, RegistrationFields, Reserved, ReviewOutcome, ReviewRule,
    Rules, RulesError, Status, Step, TieBreaker, Tiers, normalize,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Spanned<String>,
    description: Option<String>,
    decision_order: Spanned<Vec<Spanned<String>>>,
    tie_breakers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    registration: Option<RawFields>,
    duplicate_key: Spanned<Vec<Spanned<RawKeyPart>>>,
    qualification: Option<Spanned<RawQualification>>,
    tiers: Option<Spanned<RawTiers>>,
    reserved_accounts: Option<Spanned<RawReserved>>,
    open_direct_opportunity: Option<Spanned<RawOpenDirect>>,
    review: Option<Spanned<RawReview>>,
    protection: Spanned<RawProtection>,
    crm: Option<crm::RawCrm>,
    credit: Option<Spanned<credit::RawCredit>>,
    #[serde(default)]
    example: Vec<Spanned<RawExample>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFields {
    partner: Option<String>,
    amount: Option<String>,
    close_date: Option<String>,
    extensions: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyPart {
    fields: Vec<String>,
    normalize: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQualification {
    #[serde(default)]
    required: Vec<String>,
    min_amount: Option<Spanned<i64>>,
    named_contact: Option<RawNamedContact>,
    close_within_days: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamedContact {
    first_name: String,
    last_name: String,
    email: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiers {
    order: Spanned<Vec<String>>,
    field: Option<String>,
    #[serde(default)]
    partners: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReserved {
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    #[serde(default)]
    account_ids: Vec<Spanned<String>>,
    #[serde(default)]
    crm: Vec<Spanned<RawCriterion>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriterion {
    /// The account field on any CRM ...
    field: Option<String>,
    /// ... or its name on each CRM.
    hubspot: Option<String>,
    salesforce: Option<String>,
    equals: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenDirect {
    action: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReview {
    qualified_within_secs: Option<Spanned<i64>>,
    #[serde(default)]
    tiers: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtection {
    days: Spanned<i64>,
    #[serde(default)]
    extensions: i64,
    #[serde(default)]
    extension_days: i64,
    on_expiry: Option<Spanned<String>>,
    #[serde(default)]
    rules_change_may_revoke: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    name: String,
    as_of: Option<Spanned<toml::Value>>,
    #[serde(default)]
    registration: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    account: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    opportunity: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    review: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    prior: Vec<Spanned<toml::Table>>,
    expect: Spanned<BTreeMap<String, Spanned<toml::Table>>>,
}

/// Errors for one file, positioned by byte offsets into its text.
struct Errs<'a> {
    file: &'a str,
    text: &'a str,
    list: Vec<RulesError>,
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
        self.list.push(RulesError {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }

    fn line(&self, span: Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    /// The line a section is written on: its `[name]` header, else where its value starts.
    fn section_line(&self, name: &str, span: Range<usize>) -> usize {
        header_line(self.text, name).unwrap_or_else(|| self.line(span))
    }
}

/// The line a table header `[name]` is written on, for tables given as sections.
fn header_line(text: &str, name: &str) -> Option<usize> {
    let want = format!("[{name}]");
    text.lines()
        .position(|l| l.trim_start().starts_with(&want))
        .map(|i| i + 1)
}

/// The file's raw shape, with every unknown key and wrong type reported; `None` when the file
/// cannot be read as a rules file at all (not TOML, or a required key missing).
fn parse(text: &str, errs: &mut Errs<'_>) -> Option<Raw> {
    let (raw, problems) = collect::from_str::<Raw>(text);
    for p in problems {
        let hint =
            if p.message.starts_with("unknown field") || p.message.starts_with("missing field") {
                Some("see docs/rules.md for the keys a rules file may use")
            } else {
                None
            };
        errs.at(p.span.clone(), &p.key, p.message, hint);
        errs.quiet.extend(p.quiet);
    }
    raw
}

pub(super) fn compile(file: &str, text: &str) -> Result<Rules, Vec<RulesError>> {
    let mut errs = Errs {
        file,
        text,
        list: Vec::new(),
        quiet: HashSet::new(),
    };
    let Some(raw) = parse(text, &mut errs) else {
        return Err(errs.list);
    };
    if raw.name.get_ref().trim().is_empty() {
        errs.at(raw.name.span(), "name", "must not be empty", None);
    }
    let fields = registration_fields(raw.registration.as_ref());
    let key = duplicate_key(&raw, &mut errs);
    let has_domain = key.iter().any(|k| k.normalize == Normalize::Domain);
    let qualification = qualification(&raw, has_domain, &mut errs);
    let tiers = tiers(&raw, &mut errs);
    let reserved = reserved(&raw, has_domain, &mut errs);
    let open_direct = open_direct(&raw, &mut errs);
    let review = review(&raw, &mut errs);
    let protection = protection(&raw, &mut errs);
    let order = decision_order(&raw, &mut errs);
    let (tie_breakers, tie_line) = tie_breakers(&raw, &mut errs);
    let crm = crm::crm_names(raw.crm.as_ref(), &mut errs);
    let credit = credit::credit(raw.credit.as_ref(), &mut errs);
    let examples = examples(&raw, &mut errs);
    if !errs.list.is_empty() {
        return Err(errs.list);
    }
    let mut rules = Rules {
        file: file.to_owned(),
        version: String::new(),
        name: raw.name.into_inner(),
        description: raw.description,
        fields,
        key,
        qualification,
        tiers,
        reserved,
        open_direct,
        review,
        protection,
        order,
        tie_breakers,
        tie_line,
        crm,
        credit,
        examples,
    };
    rules.version = fingerprint(&rules);
    Ok(rules)
}

/// Which registration fields the rules read (defaults for those not named).
fn registration_fields(rf: Option<&RawFields>) -> RegistrationFields {
    RegistrationFields {
        partner: rf
            .and_then(|r| r.partner.clone())
            .unwrap_or_else(|| "partner_key".into()),
        amount: rf
            .and_then(|r| r.amount.clone())
            .unwrap_or_else(|| "amount".into()),
        close_date: rf
            .and_then(|r| r.close_date.clone())
            .unwrap_or_else(|| "close_date".into()),
        extensions: rf.and_then(|r| r.extensions.clone()),
    }
}

/// `[[duplicate_key]]`: at least one part, each with a known normalisation.
fn duplicate_key(raw: &Raw, errs: &mut Errs<'_>) -> Vec<KeyPart> {
    let mut key = Vec::new();
    if raw.duplicate_key.get_ref().is_empty() {
        errs.at(
            raw.duplicate_key.span(),
            "duplicate_key",
            "needs at least one part",
            Some("e.g. [[duplicate_key]] fields = [\"contact_email\"] normalize = \"domain\""),
        );
    }
    for (i, p) in raw.duplicate_key.get_ref().iter().enumerate() {
        let k = format!("duplicate_key[{i}]");
        let r = p.get_ref();
        if r.fields.is_empty() {
            errs.at(p.span(), &format!("{k}.fields"), "names no field", None);
        }
        let normalize = match r.normalize.get_ref().as_str() {
            "domain" => Normalize::Domain,
            "email" => Normalize::Email,
            "company" => Normalize::Company,
            "lower" => Normalize::Lower,
            "exact" => Normalize::Exact,
            other => {
                errs.at(
                    r.normalize.span(),
                    &format!("{k}.normalize"),
                    format!("unknown normalisation {other:?}"),
                    Some("use one of: domain, email, company, lower, exact"),
                );
                Normalize::Exact
            }
        };
        key.push(KeyPart {
            fields: r.fields.clone(),
            normalize,
            line: errs.line(p.span()),
        });
    }
    key
}

/// `[qualification]`: the evidence a registration must carry.
fn qualification(raw: &Raw, has_domain: bool, errs: &mut Errs<'_>) -> Qualification {
    let qualification = match &raw.qualification {
        None => Qualification {
            line: 0,
            required: Vec::new(),
            min_amount: None,
            named_contact: None,
            close_within_days: None,
        },
        Some(q) => {
            let line = errs.section_line("qualification", q.span());
            let r = q.get_ref();
            for (name, v) in [
                ("min_amount", &r.min_amount),
                ("close_within_days", &r.close_within_days),
            ] {
                if let Some(v) = v
                    && *v.get_ref() < 0
                {
                    errs.at(
                        v.span(),
                        &format!("qualification.{name}"),
                        "must not be negative",
                        None,
                    );
                }
            }
            Qualification {
                line,
                required: r.required.clone(),
                min_amount: r.min_amount.as_ref().map(|v| *v.get_ref()),
                named_contact: r.named_contact.as_ref().map(|n| NamedContact {
                    first_name: n.first_name.clone(),
                    last_name: n.last_name.clone(),
                    email: n.email.clone(),
                }),
                close_within_days: r.close_within_days.as_ref().map(|v| *v.get_ref()),
            }
        }
    };
    if qualification.named_contact.is_some() && !has_domain {
        let span = raw.qualification.as_ref().map_or(0..0, |q| q.span());
        errs.at(
            span,
            "qualification.named_contact",
            "needs a duplicate_key part with normalize = \"domain\" to know the customer's domain",
            None,
        );
    }

    qualification
}

/// `[tiers]`: best first; every partner's tier must be listed.
fn tiers(raw: &Raw, errs: &mut Errs<'_>) -> Tiers {
    match &raw.tiers {
        None => Tiers::default(),
        Some(t) => {
            let r = t.get_ref();
            let order: Vec<String> = r.order.get_ref().iter().map(|s| s.to_lowercase()).collect();
            let mut seen = HashSet::new();
            for o in &order {
                if !seen.insert(o.clone()) {
                    errs.at(
                        r.order.span(),
                        "tiers.order",
                        format!("tier {o:?} is listed twice"),
                        None,
                    );
                }
            }
            let mut partners = Vec::new();
            for (p, tier) in &r.partners {
                let tl = tier.get_ref().to_lowercase();
                if !order.contains(&tl) {
                    errs.at(
                        tier.span(),
                        &format!("tiers.partners.{p}"),
                        format!("tier {tl:?} is not in tiers.order"),
                        Some("add it to tiers.order or fix the spelling"),
                    );
                }
                partners.push((p.clone(), tl));
            }
            Tiers {
                order,
                field: r.field.clone(),
                partners,
                line: errs.section_line("tiers", t.span()),
            }
        }
    }
}

/// `[reserved_accounts]`: domains (normalised), CRM account ids and CRM criteria.
fn reserved(raw: &Raw, has_domain: bool, errs: &mut Errs<'_>) -> Reserved {
    match &raw.reserved_accounts {
        None => Reserved::default(),
        Some(rs) => {
            let r = rs.get_ref();
            let mut domains = Vec::new();
            for (i, d) in r.domains.iter().enumerate() {
                match normalize::domain(d.get_ref()) {
                    Some(n) => domains.push((n, errs.line(d.span()))),
                    None => errs.at(
                        d.span(),
                        &format!("reserved_accounts.domains[{i}]"),
                        format!("{:?} is not a domain", d.get_ref()),
                        Some("write a domain such as example.com"),
                    ),
                }
            }
            if !r.domains.is_empty() && !has_domain {
                errs.at(
                    rs.span(),
                    "reserved_accounts.domains",
                    "needs a duplicate_key part with normalize = \"domain\"",
                    None,
                );
            }
            Reserved {
                line: errs.section_line("reserved_accounts", rs.span()),
                domains,
                account_ids: r
                    .account_ids
                    .iter()
                    .map(|a| (a.get_ref().clone(), errs.line(a.span())))
                    .collect(),
                crm: r
                    .crm
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| criterion(i, c, errs))
                    .collect(),
            }
        }
    }
}

/// One `reserved_accounts.crm` entry: a field name for any CRM, or one per CRM (not both), each
/// an API name (letters, digits and `_`).
fn criterion(i: usize, c: &Spanned<RawCriterion>, errs: &mut Errs<'_>) -> Option<CrmCriterion> {
    let r = c.get_ref();
    let path = format!("reserved_accounts.crm[{i}]");
    let names = [&r.field, &r.hubspot, &r.salesforce];
    let mut ok = true;
    if names.iter().all(|n| n.is_none()) {
        errs.at(
            c.span(),
            &path,
            "names no field",
            Some("add field = \"...\" (any CRM) or hubspot = \"...\" and salesforce = \"...\""),
        );
        ok = false;
    } else if r.field.is_some() && (r.hubspot.is_some() || r.salesforce.is_some()) {
        errs.at(
            c.span(),
            &path,
            "names a field for any CRM and one per CRM",
            Some("keep either field or the per-CRM names"),
        );
        ok = false;
    }
    for n in names.into_iter().flatten() {
        if n.is_empty() || !n.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            errs.at(
                c.span(),
                &path,
                format!("{n:?} is not a field name"),
                Some("use the field's API name: letters, digits and _"),
            );
            ok = false;
        }
    }
    ok.then(|| CrmCriterion {
        field: r.field.clone(),
        hubspot: r.hubspot.clone(),
        salesforce: r.salesforce.clone(),
        equals: r.equals.clone(),
        line: errs.line(c.span()),
    })
}

/// `[open_direct_opportunity]`: what an open direct deal does to a registration.
fn open_direct(raw: &Raw, errs: &mut Errs<'_>) -> OpenDirect {
    match &raw.open_direct_opportunity {
        None => OpenDirect {
            action: OpenDirectAction::Reject,
            line: 0,
        },
        Some(o) => {
            let action = match o.get_ref().action.get_ref().as_str() {
                "reject" => OpenDirectAction::Reject,
                "influenced" => OpenDirectAction::Influenced,
                other => {
                    errs.at(
                        o.get_ref().action.span(),
                        "open_direct_opportunity.action",
                        format!("unknown action {other:?}"),
                        Some("use reject or influenced"),
                    );
                    OpenDirectAction::Reject
                }
            };
            OpenDirect {
                action,
                line: errs.section_line("open_direct_opportunity", o.span()),
            }
        }
    }
}

/// `[review]`: when the head of the line goes to a person.
fn review(raw: &Raw, errs: &mut Errs<'_>) -> ReviewRule {
    match &raw.review {
        None => ReviewRule::default(),
        Some(rv) => {
            let r = rv.get_ref();
            let mut tiers = Vec::new();
            for t in &r.tiers {
                let tl = t.get_ref().to_lowercase();
                if !tiers_contains(raw, &tl) {
                    errs.at(
                        t.span(),
                        "review.tiers",
                        format!("tier {tl:?} is not in tiers.order"),
                        None,
                    );
                }
                tiers.push(tl);
            }
            if let Some(w) = &r.qualified_within_secs
                && *w.get_ref() < 0
            {
                errs.at(
                    w.span(),
                    "review.qualified_within_secs",
                    "must not be negative",
                    None,
                );
            }
            ReviewRule {
                line: errs.section_line("review", rv.span()),
                qualified_within_ms: r.qualified_within_secs.as_ref().map(|w| w.get_ref() * 1000),
                tiers,
            }
        }
    }
}

/// `[protection]`: how long a winner is protected, and what happens when that ends.
fn protection(raw: &Raw, errs: &mut Errs<'_>) -> Protection {
    let p = raw.protection.get_ref();
    if *p.days.get_ref() <= 0 {
        errs.at(p.days.span(), "protection.days", "must be at least 1", None);
    }
    if p.extensions < 0 || p.extension_days < 0 {
        errs.at(
            raw.protection.span(),
            "protection.extensions",
            "extensions and extension_days must not be negative",
            None,
        );
    }
    let on_expiry = match &p.on_expiry {
        None => OnExpiry::Reopen,
        Some(v) => OnExpiry::parse(v.get_ref()).unwrap_or_else(|| {
            errs.at(
                v.span(),
                "protection.on_expiry",
                format!("unknown action {:?}", v.get_ref()),
                Some("use reopen, next_in_line or review"),
            );
            OnExpiry::Reopen
        }),
    };
    Protection {
        line: errs.section_line("protection", raw.protection.span()),
        days: *p.days.get_ref(),
        extensions: p.extensions,
        extension_days: p.extension_days,
        on_expiry,
        rules_change_may_revoke: p.rules_change_may_revoke,
    }
}

/// `decision_order`: known rules, each once, per-registration rules first, `first_qualified`
/// last, and a section for every rule listed.
fn decision_order(raw: &Raw, errs: &mut Errs<'_>) -> Vec<(Step, usize)> {
    let mut order = Vec::new();
    for s in raw.decision_order.get_ref() {
        match Step::ALL.into_iter().find(|x| x.as_str() == s.get_ref()) {
            Some(step) if order.iter().any(|(o, _)| *o == step) => errs.at(s.span(), "decision_order", format!("{:?} is listed twice", s.get_ref()), None),
            Some(step) => order.push((step, errs.line(s.span()))),
            None => errs.at(s.span(), "decision_order", format!("unknown rule {:?}", s.get_ref()), Some("use manual_review, reserved_accounts, open_direct_opportunity, qualification, review, first_qualified")),
        }
    }
    if order.last().map(|(s, _)| *s) != Some(Step::FirstQualified) {
        errs.at(
            raw.decision_order.span(),
            "decision_order",
            "must end with \"first_qualified\"",
            Some("the group contest decides whatever the earlier rules leave open"),
        );
    }
    let mut group_seen = false;
    for (s, line) in &order {
        if !s.is_per_registration() {
            group_seen = true;
        } else if group_seen {
            errs.list.push(RulesError {
                file: errs.file.to_owned(),
                line: *line,
                column: 1,
                key: "decision_order".into(),
                message: format!(
                    "{:?} decides one registration and must come before review and first_qualified",
                    s.as_str()
                ),
                hint: None,
            });
        }
    }
    for (step, needed, name) in [
        (
            Step::Reserved,
            raw.reserved_accounts.is_some(),
            "reserved_accounts",
        ),
        (
            Step::OpenDirect,
            raw.open_direct_opportunity.is_some(),
            "open_direct_opportunity",
        ),
        (
            Step::Qualification,
            raw.qualification.is_some(),
            "qualification",
        ),
        (Step::Review, raw.review.is_some(), "review"),
    ] {
        if order.iter().any(|(s, _)| *s == step) && !needed {
            errs.at(
                raw.decision_order.span(),
                "decision_order",
                format!("lists {name:?} but the file has no [{name}] section"),
                None,
            );
        }
    }
    order
}

/// `tie_breakers` (default tier, submitted, id) and the line they are written on.
fn tie_breakers(raw: &Raw, errs: &mut Errs<'_>) -> (Vec<TieBreaker>, usize) {
    let mut tie_breakers = Vec::new();
    let tie_line = match &raw.tie_breakers {
        None => {
            tie_breakers = vec![TieBreaker::Tier, TieBreaker::Submitted, TieBreaker::Id];
            0
        }
        Some(t) => {
            for s in t.get_ref() {
                let tb = match s.get_ref().as_str() {
                    "tier" => TieBreaker::Tier,
                    "submitted" => TieBreaker::Submitted,
                    "id" => TieBreaker::Id,
                    other => {
                        errs.at(
                            s.span(),
                            "tie_breakers",
                            format!("unknown tie-breaker {other:?}"),
                            Some("use tier, submitted, id"),
                        );
                        continue;
                    }
                };
                if tie_breakers.contains(&tb) {
                    errs.at(
                        s.span(),
                        "tie_breakers",
                        format!("{:?} is listed twice", tb.as_str()),
                        None,
                    );
                }
                tie_breakers.push(tb);
            }
            if !tie_breakers.contains(&TieBreaker::Id) {
                errs.at(
                    t.span(),
                    "tie_breakers",
                    "must include \"id\" so every tie is broken",
                    None,
                );
            }
            errs.line(t.span())
        }
    };

    (tie_breakers, tie_line)
}

/// The `[[example]]`s that compile.
fn examples(raw: &Raw, errs: &mut Errs<'_>) -> Vec<Example> {
    let mut examples = Vec::new();
    for (i, ex) in raw.example.iter().enumerate() {
        if let Some(e) = example(ex, &format!("example[{i}]"), errs) {
            examples.push(e);
        }
    }
    examples
}

/// The rules' version: a short hash of what decides registrations, the compiled rules without
/// their file name, name, description, line numbers and examples, and with listed accounts in a
/// fixed order. A comment, a moved line or a new example changes nothing; a changed rule does.
fn fingerprint(r: &Rules) -> String {
    let mut c = r.clone();
    c.file.clear();
    c.name.clear();
    c.description = None;
    c.examples.clear();
    c.tie_line = 0;
    c.key.iter_mut().for_each(|k| k.line = 0);
    c.qualification.line = 0;
    c.tiers.line = 0;
    c.reserved.line = 0;
    for list in [&mut c.reserved.domains, &mut c.reserved.account_ids] {
        list.iter_mut().for_each(|(_, line)| *line = 0);
        list.sort();
        list.dedup();
    }
    c.reserved.crm.iter_mut().for_each(|k| k.line = 0);
    c.reserved.crm.sort_by(|a, b| {
        (&a.field, &a.hubspot, &a.salesforce, &a.equals).cmp(&(
            &b.field,
            &b.hubspot,
            &b.salesforce,
            &b.equals,
        ))
    });
    c.open_direct.line = 0;
    c.review.line = 0;
    c.protection.line = 0;
    c.order.iter_mut().for_each(|(_, line)| *line = 0);
    if let Some(credit) = &mut c.credit {
        credit.line = 0;
    }
    hex::encode(&Sha256::digest(format!("{c:?}").as_bytes())[..6])
}

fn tiers_contains(raw: &Raw, tier: &str) -> bool {
    raw.tiers.as_ref().is_some_and(|t| {
        t.get_ref()
            .order
            .get_ref()
            .iter()
            .any(|o| o.to_lowercase() == tier)
    })
}

/// A time in an example: epoch ms or an RFC 3339 timestamp / date.
fn time_value(v: &toml::Value) -> Option<i64> {
    match v {
        toml::Value::Integer(i) => Some(*i),
        toml::Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .ok()
            .or_else(|| {
                s.parse::<jiff::civil::Date>()
                    .ok()
                    .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
                    .map(|z| z.timestamp().as_millisecond())
            }),
        toml::Value::Datetime(d) => time_value(&toml::Value::String(d.to_string())),
        _ => None,
    }
}

fn to_json(t: &toml::Table) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

fn take_time(t: &mut toml::Table, k: &str) -> Result<Option<i64>, String> {
    match t.remove(k) {
        None => Ok(None),
        Some(v) => time_value(&v).map(Some).ok_or_else(|| {
            format!(
                "{k} must be epoch milliseconds or an RFC 3339 time such as 2026-01-05T10:00:00Z"
            )
        }),
    }
}

fn take_str(t: &mut toml::Table, k: &str) -> Option<String> {
    match t.remove(k) {
        Some(toml::Value::String(s)) => Some(s),
        _ => None,
    }
}

fn example(ex: &Spanned<RawExample>, key: &str, errs: &mut Errs<'_>) -> Option<Example> {
    let r = ex.get_ref();
    let before = errs.list.len();
    let mut events = Vec::new();
    for (i, reg) in r.registration.iter().enumerate() {
        let k = format!("{key}.registration[{i}]");
        let mut t = reg.get_ref().clone();
        let id = take_str(&mut t, "id");
        let at = take_time(&mut t, "at");
        let submitted = take_time(&mut t, "submitted");
        match (id, at, submitted) {
            (Some(id), Ok(Some(at)), Ok(sub)) => events.push(RegistrationEvent {
                id,
                at_ms: at,
                submitted_ms: sub.unwrap_or(at),
                fields: to_json(&t),
            }),
            (None, _, _) => errs.at(reg.span(), &format!("{k}.id"), "is required", None),
            (_, Ok(None), _) => errs.at(
                reg.span(),
                &format!("{k}.at"),
                "is required (when this version was made)",
                None,
            ),
            (_, Err(m), _) | (_, _, Err(m)) => errs.at(reg.span(), &k, m, None),
        }
    }
    let mut crm = CrmFacts::default();
    for (i, a) in r.account.iter().enumerate() {
        match toml::Value::Table(a.get_ref().clone()).try_into::<CrmAccount>() {
            Ok(acc) => crm.accounts.push(acc),
            Err(e) => errs.at(
                a.span(),
                &format!("{key}.account[{i}]"),
                e.message().to_owned(),
                Some("an account has id, domain and optional fields = { ... }"),
            ),
        }
    }
    for (i, o) in r.opportunity.iter().enumerate() {
        match toml::Value::Table(o.get_ref().clone()).try_into::<CrmOpportunity>() {
            Ok(op) => crm.opportunities.push(op),
            Err(e) => errs.at(
                o.span(),
                &format!("{key}.opportunity[{i}]"),
                e.message().to_owned(),
                Some("an opportunity has id, domain, open, partner_sourced"),
            ),
        }
    }
    let mut reviews = Vec::new();
    for (i, rv) in r.review.iter().enumerate() {
        let k = format!("{key}.review[{i}]");
        let mut t = rv.get_ref().clone();
        let id = take_str(&mut t, "id");
        let outcome = take_str(&mut t, "outcome");
        let reason = take_str(&mut t, "reason").unwrap_or_default();
        match (id, outcome.as_deref(), take_time(&mut t, "at")) {
            (Some(id), Some(o @ ("approve" | "reject")), Ok(Some(at))) => {
                reviews.push(ReviewOutcome {
                    registration_id: id,
                    approve: o == "approve",
                    reason,
                    at_ms: at,
                })
            }
            _ => errs.at(
                rv.span(),
                &k,
                "a review needs id, outcome = \"approve\" | \"reject\" and at",
                None,
            ),
        }
    }
    let mut prior = Vec::new();
    for (i, p) in r.prior.iter().enumerate() {
        let k = format!("{key}.prior[{i}]");
        let mut t = p.get_ref().clone();
        let id = take_str(&mut t, "id");
        let status = take_str(&mut t, "status")
            .as_deref()
            .and_then(Status::parse);
        let version = take_str(&mut t, "rules_version").unwrap_or_default();
        match (id, status, take_time(&mut t, "protected_until")) {
            (Some(id), Some(status), Ok(until)) => prior.push(PriorDecision {
                registration_id: id,
                status,
                protected_until: until,
                rules_version: version,
            }),
            _ => errs.at(
                p.span(),
                &k,
                "a prior decision needs id, status and (optional) protected_until",
                None,
            ),
        }
    }
    let as_of = match &r.as_of {
        None => events.iter().map(|e| e.at_ms).max().unwrap_or(0),
        Some(v) => match time_value(v.get_ref()) {
            Some(t) => t,
            None => {
                errs.at(
                    v.span(),
                    &format!("{key}.as_of"),
                    "must be epoch milliseconds or an RFC 3339 time",
                    None,
                );
                0
            }
        },
    };
    let mut expect = Vec::new();
    for (id, e) in r.expect.get_ref() {
        let k = format!("{key}.expect.{id}");
        let mut t = e.get_ref().clone();
        let status = take_str(&mut t, "status");
        let Some(status) = status.as_deref().and_then(Status::parse) else {
            errs.at(e.span(), &format!("{k}.status"), "is required: one of approved, influenced, rejected, duplicate, pending, review, expired", None);
            continue;
        };
        let until = match take_time(&mut t, "protected_until") {
            Ok(u) => u,
            Err(m) => {
                errs.at(e.span(), &k, m, None);
                None
            }
        };
        let dup = take_str(&mut t, "duplicate_of");
        let reason = take_str(&mut t, "reason");
        if let Some(extra) = t.keys().next() {
            errs.at(
                e.span(),
                &format!("{k}.{extra}"),
                "unknown key",
                Some("expect entries take status, duplicate_of, reason, protected_until"),
            );
        }
        expect.push(ExpectedDecision {
            registration_id: id.clone(),
            status,
            duplicate_of: dup,
            reason_contains: reason,
            protected_until: until,
        });
    }
    if expect.is_empty() {
        errs.at(
            r.expect.span(),
            &format!("{key}.expect"),
            "expects nothing",
            Some("add expect.<registration id> = { status = \"...\" }"),
        );
    }
    (errs.list.len() == before).then(|| Example {
        line: errs.line(ex.span()),
        name: r.name.clone(),
        input: Input {
            events,
            crm,
            reviews,
            prior,
            partner_names: BTreeMap::new(),
            as_of_ms: as_of,
        },
        expect,
    })
}

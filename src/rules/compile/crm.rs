//! `[crm.hubspot]` and `[crm.salesforce]` in a rules file: the CRM field names the rules write a
//! decision to and read facts from, the partner role names and (Salesforce) the object partner
//! credit rows live in, each CRM with its own defaults. Pure: no I/O.

use serde::Deserialize;
use toml::Spanned;

use super::Errs;
use crate::rules::credit::Role;
use crate::rules::{CrmNames, CrmNamesByCrm, PartnerObject};

/// `[crm]`: one optional table per CRM.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrm {
    hubspot: Option<RawNames>,
    salesforce: Option<RawNames>,
}

/// One CRM's names; a key left out keeps that CRM's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNames {
    status: Option<Spanned<String>>,
    protected_until: Option<Spanned<String>>,
    attribution: Option<Spanned<String>>,
    account_domain: Option<Spanned<String>>,
    partner_roles: Option<RawRoles>,
    partner_object: Option<Spanned<String>>,
    partner_fields: Option<Spanned<RawPartnerFields>>,
}

/// `partner_fields`: the custom partner object's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartnerFields {
    opportunity: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    primary: Option<Spanned<String>>,
}

fn is_api_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// `partner_object` and `partner_fields` of `[crm.salesforce]`: a custom object instead of
/// `Partner`, with all four fields named; `None` when either is unusable (errors noted).
fn partner_object(crm: &str, raw: &RawNames, errs: &mut Errs<'_>) -> Option<Option<PartnerObject>> {
    let (object, fields) = (&raw.partner_object, &raw.partner_fields);
    if crm != "salesforce" {
        for span in [
            object.as_ref().map(Spanned::span),
            fields.as_ref().map(Spanned::span),
        ]
        .into_iter()
        .flatten()
        {
            errs.at(
                span,
                &format!("crm.{crm}.partner_object"),
                "HubSpot credits partners with deal-to-company association labels, not an object",
                Some("name the labels in partner_roles; partner_object is for [crm.salesforce]"),
            );
        }
        return Some(None);
    }
    let Some(object) = object else {
        if let Some(f) = fields {
            errs.at(
                f.span(),
                "crm.salesforce.partner_fields",
                "partner_fields without partner_object: Partner's fields are fixed",
                Some("add partner_object = \"Your_Object__c\", or remove partner_fields"),
            );
            return None;
        }
        return Some(Some(PartnerObject::standard()));
    };
    let name = object.get_ref().trim();
    if name == "Partner" && fields.is_none() {
        return Some(Some(PartnerObject::standard()));
    }
    let mut ok = true;
    if !(is_api_name(name) && name.ends_with("__c") && !name.contains("___")) {
        errs.at(
            object.span(),
            "crm.salesforce.partner_object",
            format!("{:?} is not a custom object's API name", object.get_ref()),
            Some("a custom object's API name ends in __c (e.g. Partner_Credit__c); leave the key out for Partner"),
        );
        ok = false;
    }
    let Some(fields) = fields else {
        errs.at(
            object.span(),
            "crm.salesforce.partner_object",
            format!("{name} needs its fields named"),
            Some("add partner_fields = { opportunity = \"...\", account = \"...\", role = \"...\", primary = \"...\" }"),
        );
        return None;
    };
    let f = fields.get_ref();
    let mut out = PartnerObject {
        object: name.to_owned(),
        ..PartnerObject::standard()
    };
    let mut seen: Vec<String> = Vec::new();
    for (key, value, slot) in [
        ("opportunity", &f.opportunity, &mut out.opportunity),
        ("account", &f.account, &mut out.account),
        ("role", &f.role, &mut out.role),
        ("primary", &f.primary, &mut out.primary),
    ] {
        let Some(v) = value else {
            errs.at(
                fields.span(),
                &format!("crm.salesforce.partner_fields.{key}"),
                format!("the {key} field of {name} is not named"),
                Some("name all four: opportunity, account, role, primary"),
            );
            ok = false;
            continue;
        };
        let field = v.get_ref().trim();
        if !is_api_name(field) {
            errs.at(
                v.span(),
                &format!("crm.salesforce.partner_fields.{key}"),
                format!("{:?} is not a Salesforce field name", v.get_ref()),
                Some("use the field's API name, e.g. Opportunity__c"),
            );
            ok = false;
        } else if seen.iter().any(|s| s.eq_ignore_ascii_case(field)) {
            errs.at(
                v.span(),
                &format!("crm.salesforce.partner_fields.{key}"),
                format!("{field} is already named for another field"),
                Some("each of the four is its own field"),
            );
            ok = false;
        } else {
            seen.push(field.to_owned());
            *slot = field.to_owned();
        }
    }
    ok.then_some(Some(out))
}

/// `partner_roles`: each role's name in the CRM; a role left out keeps its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    sourced: Option<Spanned<String>>,
    influenced: Option<Spanned<String>>,
    referral: Option<Spanned<String>>,
    reseller: Option<Spanned<String>>,
}

/// The names for both CRMs: what the file says over each CRM's defaults. A name must be a field
/// name the CRM accepts (letters, digits and `_`; Salesforce custom fields end in `__c`).
pub(super) fn crm_names(raw: Option<&RawCrm>, errs: &mut Errs<'_>) -> CrmNamesByCrm {
    let default = RawCrm::default();
    let raw = raw.unwrap_or(&default);
    CrmNamesByCrm {
        hubspot: names(
            "hubspot",
            raw.hubspot.as_ref(),
            CrmNames::hubspot_default(),
            errs,
        ),
        salesforce: names(
            "salesforce",
            raw.salesforce.as_ref(),
            CrmNames::salesforce_default(),
            errs,
        ),
    }
}

fn names(crm: &str, raw: Option<&RawNames>, mut out: CrmNames, errs: &mut Errs<'_>) -> CrmNames {
    let Some(raw) = raw else {
        return out;
    };
    for (key, value, slot) in [
        ("status", &raw.status, &mut out.status),
        (
            "protected_until",
            &raw.protected_until,
            &mut out.protected_until,
        ),
        ("attribution", &raw.attribution, &mut out.attribution),
        (
            "account_domain",
            &raw.account_domain,
            &mut out.account_domain,
        ),
    ] {
        let Some(v) = value else { continue };
        let name = v.get_ref().trim();
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            *slot = name.to_owned();
        } else {
            errs.at(
                v.span(),
                &format!("crm.{crm}.{key}"),
                format!("{:?} is not a {crm} field name", v.get_ref()),
                Some("use the field's API name: letters, digits and _"),
            );
        }
    }
    if let Some(p) = partner_object(crm, raw, errs) {
        out.partner_object = p;
    }
    if let Some(r) = &raw.partner_roles {
        for (role, value) in [
            (Role::Sourced, &r.sourced),
            (Role::Influenced, &r.influenced),
            (Role::Referral, &r.referral),
            (Role::Reseller, &r.reseller),
        ] {
            let Some(v) = value else { continue };
            let name = v.get_ref().trim();
            if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
                errs.at(
                    v.span(),
                    &format!("crm.{crm}.partner_roles.{}", role.as_str()),
                    format!("{:?} is not a role name", v.get_ref()),
                    Some("use the label or role value as the CRM shows it (1 to 255 characters)"),
                );
            } else {
                out.partner_roles.insert(role, name.to_owned());
            }
        }
    }
    out
}

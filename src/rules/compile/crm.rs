//! `[crm.hubspot]` and `[crm.salesforce]` in a rules file: the CRM field names the rules write a
//! decision to and read facts from, each CRM with its own defaults. Pure: no I/O.

use serde::Deserialize;
use toml::Spanned;

use super::Errs;
use crate::rules::credit::Role;
use crate::rules::{CrmNames, CrmNamesByCrm};

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

//! The HubSpot simulator's property definitions per object (HubSpot's standard properties plus the
//! `prm_*` ones prmsync's install creates), with the changes an admin made since ([`Edits`]:
//! renamed or deleted properties, read-only ones, deleted options): the one definition that both
//! validates every write (unknown property, option, number, date, read-only) and answers
//! `GET /crm/v3/properties/{objectType}`.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Call, DEAL_PROPERTIES, DEAL_STAGES, HubSpotSim, error};

/// A property's value type (`type` in HubSpot's property model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Number,
    /// A calendar day: `YYYY-MM-DD` or epoch milliseconds at midnight UTC.
    Date,
    /// An instant: RFC 3339 or epoch milliseconds.
    DateTime,
    Enumeration(&'static [&'static str]),
    Bool,
}

/// One property: name, type, and whether the API may write it.
#[derive(Debug, Clone, Copy)]
pub struct Property {
    pub name: &'static str,
    pub kind: Kind,
    pub read_only: bool,
}

const fn p(name: &'static str, kind: Kind) -> Property {
    Property {
        name,
        kind,
        read_only: false,
    }
}

const fn ro(name: &'static str, kind: Kind) -> Property {
    Property {
        name,
        kind,
        read_only: true,
    }
}

use Kind::{Bool, Date, DateTime, Enumeration, Number, String as Text};

const LIFECYCLE_STAGES: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
];
const LEAD_STATUSES: &[&str] = &[
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
];
const COMPANY_TYPES: &[&str] = &["PROSPECT", "PARTNER", "RESELLER", "VENDOR", "OTHER"];
const TASK_STATUSES: &[&str] = &[
    "NOT_STARTED",
    "IN_PROGRESS",
    "WAITING",
    "COMPLETED",
    "DEFERRED",
];
const TASK_TYPES: &[&str] = &["CALL", "EMAIL", "TODO"];
const TASK_PRIORITIES: &[&str] = &["LOW", "MEDIUM", "HIGH"];

/// Properties every object has, which HubSpot computes.
const SYSTEM: &[Property] = &[
    ro("hs_object_id", Number),
    ro("createdate", DateTime),
    ro("hs_lastmodifieddate", DateTime),
    ro("hs_merged_object_ids", Text),
    p("hubspot_owner_id", Text),
];

/// Deal properties with a type other than text (the names are [`DEAL_PROPERTIES`]).
const DEAL_TYPES: &[Property] = &[
    p("amount", Number),
    p("closedate", Date),
    p("dealstage", Enumeration(DEAL_STAGES)),
];

const COMPANIES: &[Property] = &[
    p("name", Text),
    p("domain", Text),
    p("website", Text),
    p("phone", Text),
    p("city", Text),
    p("state", Text),
    p("country", Text),
    p("industry", Text),
    p("type", Enumeration(COMPANY_TYPES)),
    p("description", Text),
    p("prm_partner_key", Text),
    p("prm_partner_tier", Text),
    p("prm_partner_status", Text),
    p("prm_partner_since", Date),
    p("prm_direct_reserved", Bool),
];

const CONTACTS: &[Property] = &[
    p("email", Text),
    p("firstname", Text),
    p("lastname", Text),
    p("jobtitle", Text),
    p("company", Text),
    p("phone", Text),
    p("lifecyclestage", Enumeration(LIFECYCLE_STAGES)),
    p("hs_lead_status", Enumeration(LEAD_STATUSES)),
    p("prm_partner_user_key", Text),
    p("prm_partner_key", Text),
    p("prm_partner_role", Text),
    p("prm_partner_status", Text),
    p("prm_lead_key", Text),
    p("prm_campaign", Text),
    p("prm_lead_created", DateTime),
];

const TASKS: &[Property] = &[
    p("hs_task_subject", Text),
    p("hs_task_body", Text),
    p("hs_timestamp", DateTime),
    p("hs_task_status", Enumeration(TASK_STATUSES)),
    p("hs_task_type", Enumeration(TASK_TYPES)),
    p("hs_task_priority", Enumeration(TASK_PRIORITIES)),
    p("prm_activity_key", Text),
];

/// What an admin changed in the portal's properties since install, by canonical object type.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    removed: BTreeSet<(String, String)>,
    /// (object, old name) -> new name.
    renamed: BTreeMap<(String, String), String>,
    read_only: BTreeSet<(String, String)>,
    /// (object, property, option) deleted from an enumeration.
    removed_options: BTreeSet<(String, String, String)>,
}

impl Edits {
    fn key(object: &str, name: &str) -> Option<(String, String)> {
        Some((canonical(object)?.to_owned(), name.to_owned()))
    }

    /// Deletes a property; false if the object has no such property.
    pub fn remove(&mut self, object: &str, name: &str) -> bool {
        let Some(original) = self.original(object, name) else {
            return false;
        };
        self.removed.extend(Self::key(object, original));
        true
    }

    /// Renames a property; false if the object has no such property.
    pub fn rename(&mut self, object: &str, from: &str, to: &str) -> bool {
        let Some(original) = self.original(object, from) else {
            return false;
        };
        let Some(k) = Self::key(object, original) else {
            return false;
        };
        self.renamed.insert(k, to.to_owned());
        true
    }

    /// Makes a property read-only (or writable again).
    pub fn set_read_only(&mut self, object: &str, name: &str, read_only: bool) -> bool {
        let Some(k) = self
            .original(object, name)
            .and_then(|o| Self::key(object, o))
        else {
            return false;
        };
        if read_only {
            self.read_only.insert(k);
        } else {
            self.read_only.remove(&k);
        }
        true
    }

    /// Deletes one option of an enumeration (or puts it back).
    pub fn set_option(&mut self, object: &str, name: &str, option: &str, present: bool) -> bool {
        let Some((o, n)) = self
            .original(object, name)
            .and_then(|o| Self::key(object, o))
        else {
            return false;
        };
        let k = (o, n, option.to_owned());
        if present {
            self.removed_options.remove(&k);
        } else {
            self.removed_options.insert(k);
        }
        true
    }

    /// The install-time name of the property called `name` now.
    fn original(&self, object: &str, name: &str) -> Option<&'static str> {
        of(object)?
            .iter()
            .map(|p| p.name)
            .find(|n| self.live_name(object, n).as_deref() == Some(name))
    }

    /// What the install-time property `name` is called now (`None`: deleted).
    fn live_name(&self, object: &str, name: &str) -> Option<String> {
        let k = Self::key(object, name)?;
        if self.removed.contains(&k) {
            return None;
        }
        Some(
            self.renamed
                .get(&k)
                .cloned()
                .unwrap_or_else(|| name.to_owned()),
        )
    }
}

/// One property as the portal has it now.
#[derive(Debug, Clone)]
pub struct LiveProperty {
    pub name: String,
    pub kind: Kind,
    pub read_only: bool,
    /// An enumeration's options now (deleted ones left out).
    pub options: Vec<&'static str>,
}

/// Every property of `object` as the portal has it now (`None`: no such object type).
pub fn live(edits: &Edits, object: &str) -> Option<Vec<LiveProperty>> {
    let canon = canonical(object)?;
    Some(
        of(object)?
            .into_iter()
            .filter_map(|p| {
                let name = edits.live_name(object, p.name)?;
                let k = (canon.to_owned(), p.name.to_owned());
                let options = match p.kind {
                    Enumeration(o) => o
                        .iter()
                        .copied()
                        .filter(|v| {
                            !edits.removed_options.contains(&(
                                k.0.clone(),
                                k.1.clone(),
                                (*v).to_owned(),
                            ))
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                Some(LiveProperty {
                    name,
                    kind: p.kind,
                    read_only: p.read_only || edits.read_only.contains(&k),
                    options,
                })
            })
            .collect(),
    )
}

/// The canonical name of an object type (`0-3` is `deals`).
fn canonical(object: &str) -> Option<&'static str> {
    Some(match object {
        "deals" | "0-3" => "deals",
        "companies" | "0-2" => "companies",
        "contacts" | "0-1" => "contacts",
        "tasks" | "0-27" => "tasks",
        _ => return None,
    })
}

/// Every property of `object` (`None` for an object type the portal does not have).
pub fn of(object: &str) -> Option<Vec<Property>> {
    let own: Vec<Property> = match canonical(object)? {
        "deals" => DEAL_PROPERTIES
            .iter()
            .map(|name| {
                DEAL_TYPES
                    .iter()
                    .find(|d| d.name == *name)
                    .copied()
                    .unwrap_or(p(name, Text))
            })
            .collect(),
        "companies" => COMPANIES.to_vec(),
        "contacts" => CONTACTS.to_vec(),
        _ => TASKS.to_vec(),
    };
    let extra: Vec<Property> = SYSTEM
        .iter()
        .filter(|s| !own.iter().any(|o| o.name == s.name))
        .copied()
        .collect();
    Some(own.into_iter().chain(extra).collect())
}

/// Why HubSpot refuses `value` for property `name` of `object`, or `None` when it is valid.
/// Unknown objects pass (the caller answers 404 for them). An empty value clears any property.
#[cfg(test)]
fn invalid(edits: &Edits, object: &str, name: &str, value: &str) -> Option<String> {
    invalid_in(&live(edits, object)?, name, value)
}

/// [`invalid`] against `props`, the object's live properties (built once per write, not once
/// per value: the simulator validates every value of every batch).
fn invalid_in(props: &[LiveProperty], name: &str, value: &str) -> Option<String> {
    let Some(prop) = props.iter().find(|x| x.name == name) else {
        return Some(format!("Property \"{name}\" does not exist"));
    };
    if prop.read_only {
        return Some(format!(
            "Property \"{name}\" is a read only property; its value cannot be set."
        ));
    }
    if value.is_empty() {
        return None;
    }
    let ok = match prop.kind {
        Text => true,
        Number => value.parse::<f64>().is_ok_and(f64::is_finite),
        Bool => matches!(value, "true" | "false"),
        Date => {
            value.parse::<jiff::civil::Date>().is_ok()
                || value.parse::<i64>().is_ok_and(|ms| ms % 86_400_000 == 0)
                || value
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t.as_millisecond() % 86_400_000 == 0)
        }
        DateTime => value.parse::<jiff::Timestamp>().is_ok() || value.parse::<i64>().is_ok(),
        Enumeration(_) => prop.options.contains(&value),
    };
    if ok {
        return None;
    }
    Some(match prop.kind {
        Enumeration(_) => format!(
            "{value} was not one of the allowed options: [{}] for {name}",
            prop.options.join(", ")
        ),
        Number => format!("{value} is not a valid number for {name}"),
        Bool => format!("{value} is not a valid boolean for {name} (true or false)"),
        Date => format!(
            "{value} is not a valid date for {name}: use YYYY-MM-DD or epoch milliseconds at midnight UTC"
        ),
        _ => format!("{value} is not a valid datetime for {name}"),
    })
}

/// The first invalid property of a write, as HubSpot's message.
pub fn first_invalid<'a>(
    edits: &Edits,
    object: &str,
    props: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Option<String> {
    let live = live(edits, object)?;
    props.into_iter().find_map(|(k, v)| invalid_in(&live, k, v))
}

fn json_of(prop: &LiveProperty) -> Value {
    let (ty, field_type, options): (&str, &str, &[&str]) = match prop.kind {
        Text => ("string", "text", &[]),
        Number => ("number", "number", &[]),
        Date => ("date", "date", &[]),
        DateTime => ("datetime", "date", &[]),
        Bool => ("bool", "booleancheckbox", &["true", "false"]),
        Enumeration(_) => ("enumeration", "select", &prop.options),
    };
    let options: Vec<Value> = options
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"label": v, "value": v, "hidden": false, "displayOrder": i}))
        .collect();
    json!({
        "name": prop.name,
        "label": prop.name,
        "type": ty,
        "fieldType": field_type,
        "groupName": if prop.name.starts_with("prm_") { "prmsync" } else { "information" },
        "options": options,
        "calculated": prop.read_only,
        "hasUniqueValue": prop.name.ends_with("_key") || prop.name == "prm_deal_id",
        "hidden": false,
        "formField": !prop.read_only,
        "modificationMetadata": {
            "archivable": !prop.read_only,
            "readOnlyDefinition": !prop.name.starts_with("prm_"),
            "readOnlyValue": prop.read_only,
        },
    })
}

/// `GET /crm/v3/properties/{objectType}`: `{results: [property]}` from the same definitions
/// writes are validated with.
pub async fn list(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
) -> Response {
    if let Err(r) = sim.gate(&headers, Call::Read) {
        return r;
    }
    let props = live(&sim.lock().schema_edits, &object);
    let Some(props) = props else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object}"),
        );
    };
    let results: Vec<Value> = props.iter().map(json_of).collect();
    sim.limit_headers(Json(json!({ "results": results })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(object: &str, name: &str, value: &str) -> Option<String> {
        super::invalid(&Edits::default(), object, name, value)
    }

    #[test]
    fn an_admins_changes_change_what_is_refused() {
        let mut e = Edits::default();
        assert!(e.rename("deals", "description", "deal_summary"));
        assert!(super::invalid(&e, "deals", "description", "x").is_some());
        assert_eq!(super::invalid(&e, "deals", "deal_summary", "x"), None);
        assert!(e.set_read_only("deals", "deal_summary", true));
        assert!(
            super::invalid(&e, "deals", "deal_summary", "x")
                .unwrap()
                .contains("read only")
        );
        assert!(e.set_option("deals", "dealstage", "closedlost", false));
        assert!(super::invalid(&e, "deals", "dealstage", "closedlost").is_some());
        assert_eq!(super::invalid(&e, "deals", "dealstage", "closedwon"), None);
        assert!(e.remove("0-3", "amount"));
        assert!(super::invalid(&e, "deals", "amount", "5").is_some());
        assert!(!e.remove("deals", "no_such_property"));
        let names: Vec<String> = live(&e, "deals")
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(
            names.contains(&"deal_summary".to_owned()) && !names.contains(&"amount".to_owned())
        );
    }

    #[test]
    fn every_object_refuses_what_hubspot_refuses() {
        assert_eq!(invalid("contacts", "email", "a@b.example"), None);
        assert_eq!(
            invalid("contacts", "emial", "a@b.example").as_deref(),
            Some("Property \"emial\" does not exist")
        );
        assert!(invalid("tasks", "hs_task_type", "MEETING").is_some());
        assert_eq!(invalid("tasks", "hs_task_type", "CALL"), None);
        assert!(invalid("companies", "prm_direct_reserved", "yes").is_some());
        assert!(invalid("companies", "hs_object_id", "7").is_some());
        assert_eq!(invalid("deals", "amount", "12.5"), None);
        assert!(invalid("deals", "amount", "twelve").is_some());
        assert_eq!(invalid("deals", "closedate", "2026-03-31"), None);
        assert!(invalid("deals", "closedate", "31/03/2026").is_some());
        assert_eq!(invalid("contacts", "hs_lead_status", ""), None, "clearing");
        assert_eq!(invalid("widgets", "x", "y"), None, "404 is the caller's");
    }
}

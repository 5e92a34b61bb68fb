//! The Salesforce simulator's live schema: every sObject's fields (name, type, create and update
//! access, nillable, picklist values, external ids) built at install from the tables in
//! `salesforce.rs`, `objects.rs` and `partners.rs`, changed at run time as an admin would
//! (rename or delete a field, make it read-only, deactivate a picklist value). The same schema
//! validates every write and answers `GET /services/data/vXX.X/sobjects/{SObject}/describe`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{COMPUTED, Describe, STAGES, SYSTEM_FIELDS, SalesforceSim, errors};

/// One field as `describe` tells it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FieldDef {
    pub name: String,
    /// Salesforce's field type (`string`, `currency`, `date`, `picklist`, `reference`, ...).
    pub ty: &'static str,
    pub createable: bool,
    pub updateable: bool,
    pub nillable: bool,
    pub external_id: bool,
    /// Picklist values and whether each is active.
    pub picklist: Vec<(String, bool)>,
    /// A restricted picklist refuses values it does not list (active ones).
    pub restricted: bool,
}

/// Every sObject's fields, as the org has them now.
#[derive(Debug, Default)]
pub(super) struct Schema {
    objects: BTreeMap<String, Vec<FieldDef>>,
}

/// The Lead statuses of a new org.
const LEAD_STATUSES: &[&str] = &[
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
];
const TASK_STATUSES: &[&str] = &[
    "Not Started",
    "In Progress",
    "Completed",
    "Waiting on someone else",
    "Deferred",
];
const TASK_PRIORITIES: &[&str] = &["High", "Normal", "Low"];
const CAMPAIGN_STATUSES: &[&str] = &["Planned", "In Progress", "Completed", "Aborted"];

/// A field's type in a new org (standard fields by Salesforce's object reference; the custom ones
/// as prmsync's install creates them).
fn type_of(name: &str) -> &'static str {
    match name {
        "Id" => "id",
        "SystemModstamp" | "LastModifiedDate" | "CreatedDate" => "datetime",
        "IsDeleted"
        | "IsClosed"
        | "IsWon"
        | "IsConverted"
        | "IsActive"
        | "IsPrimary"
        | "PRM_Direct_Reserved__c"
        | "Registration_Withdrawn__c"
        | "Partner_User_Removed__c"
        | "Primary__c" => "boolean",
        "Opportunity__c" | "Account__c" => "reference",
        "CloseDate" | "ActivityDate" | "StartDate" | "EndDate" | "ConvertedDate"
        | "Partner_Since__c" | "Event_Date__c" => "date",
        "PRM_Protected_Until__c" => "datetime",
        "Amount" | "BudgetedCost" | "ActualCost" | "Approved_Amount__c" => "currency",
        "Email" | "PRM_Contact_Email__c" => "email",
        "Phone" => "phone",
        "Website" => "url",
        "Description" => "textarea",
        "StageName" | "Status" | "Priority" | "Type" | "LeadSource" | "Role" | "Role__c" => {
            "picklist"
        }
        n if n.ends_with("Id") && !n.ends_with("__c") => "reference",
        _ => "string",
    }
}

/// Whether a field is a checkbox (a write must send a JSON boolean).
pub(super) fn is_checkbox(name: &str) -> bool {
    type_of(name) == "boolean"
}

/// A field's picklist values in a new org, and whether the picklist is restricted.
fn picklist_of(object: &str, name: &str) -> (&'static [&'static str], bool) {
    match (object, name) {
        ("Opportunity", "StageName") => (STAGES, true),
        ("Lead", "Status") => (LEAD_STATUSES, false),
        ("Task", "Status") => (TASK_STATUSES, false),
        ("Task", "Priority") => (TASK_PRIORITIES, false),
        ("Campaign", "Status") => (CAMPAIGN_STATUSES, false),
        ("Partner", "Role") => (super::partners::DEFAULT_ROLES, false),
        (super::partners::CUSTOM, "Role__c") => (super::partners::DEFAULT_ROLES, true),
        _ => (&[], false),
    }
}

impl Schema {
    /// The schema of a new org with prmsync's install: every simulated sObject.
    pub fn installed<'a>(objects: impl IntoIterator<Item = &'a Describe>) -> Schema {
        let mut out = BTreeMap::new();
        for d in objects {
            let computed = COMPUTED
                .iter()
                .filter(|(o, _)| *o == d.name)
                .map(|(_, f)| *f);
            let mut fields = Vec::new();
            for name in SYSTEM_FIELDS.iter().copied().chain(computed) {
                fields.push(FieldDef {
                    name: name.to_owned(),
                    ty: type_of(name),
                    createable: false,
                    updateable: false,
                    nillable: name != "Id",
                    external_id: false,
                    picklist: Vec::new(),
                    restricted: false,
                });
            }
            for name in d.fields {
                let (values, restricted) = picklist_of(d.name, name);
                fields.push(FieldDef {
                    name: (*name).to_owned(),
                    ty: type_of(name),
                    createable: true,
                    updateable: true,
                    nillable: !d.required.contains(name),
                    external_id: d.external_ids.contains(name),
                    picklist: values.iter().map(|v| ((*v).to_owned(), true)).collect(),
                    restricted,
                });
            }
            out.insert(d.name.to_owned(), fields);
        }
        Schema { objects: out }
    }

    fn field(&self, object: &str, name: &str) -> Option<&FieldDef> {
        self.objects.get(object)?.iter().find(|f| f.name == name)
    }

    fn field_mut(&mut self, object: &str, name: &str) -> Option<&mut FieldDef> {
        self.objects
            .get_mut(object)?
            .iter_mut()
            .find(|f| f.name == name)
    }

    /// Deletes a field (its values are no longer readable or writable).
    pub fn remove(&mut self, object: &str, name: &str) -> bool {
        let Some(fields) = self.objects.get_mut(object) else {
            return false;
        };
        let before = fields.len();
        fields.retain(|f| f.name != name);
        fields.len() < before
    }

    /// Renames a field's API name.
    pub fn rename(&mut self, object: &str, from: &str, to: &str) -> bool {
        self.field_mut(object, from)
            .map(|f| f.name = to.to_owned())
            .is_some()
    }

    /// Makes a field read-only for the integration user (field-level security), or writable.
    pub fn set_read_only(&mut self, object: &str, name: &str, read_only: bool) -> bool {
        self.field_mut(object, name)
            .map(|f| {
                f.createable = !read_only;
                f.updateable = !read_only;
            })
            .is_some()
    }

    /// Deactivates (or activates again) one picklist value.
    pub fn set_picklist_value(
        &mut self,
        object: &str,
        name: &str,
        value: &str,
        active: bool,
    ) -> bool {
        let Some(f) = self.field_mut(object, name) else {
            return false;
        };
        match f.picklist.iter_mut().find(|(v, _)| v == value) {
            Some(entry) => entry.1 = active,
            None => f.picklist.push((value.to_owned(), active)),
        }
        true
    }

    /// Validates one record's fields for `d` as Salesforce does; `Err` is a per-record
    /// SaveError (`statusCode`, `message`, `fields`).
    pub fn check(
        &self,
        d: &Describe,
        fields: &Map<String, Value>,
        creating: bool,
    ) -> Result<(), Value> {
        let err = |code: &str, msg: String, f: &str| json!({"statusCode": code, "message": msg, "fields": [f]});
        for (k, v) in fields {
            if k == "attributes" {
                continue;
            }
            let Some(def) = self.field(d.name, k) else {
                return Err(err(
                    "INVALID_FIELD",
                    format!("No such column '{k}' on sobject of type {}", d.name),
                    k,
                ));
            };
            let writable = if creating {
                def.createable
            } else {
                def.updateable
            };
            if !writable {
                return Err(err(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!(
                        "Unable to create/update fields: {k}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                    ),
                    k,
                ));
            }
            if def.restricted
                && !v.is_null()
                && !v
                    .as_str()
                    .is_some_and(|s| def.picklist.iter().any(|(p, on)| *on && p == s))
            {
                return Err(err(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!("{k}: bad value for restricted picklist field: {v}"),
                    k,
                ));
            }
            // The REST API deserialises numeric strings into currency fields too.
            let numeric = v.is_number()
                || v.is_null()
                || v.as_str().is_some_and(|s| s.parse::<f64>().is_ok());
            if def.ty == "currency" && !numeric {
                return Err(err(
                    "JSON_PARSER_ERROR",
                    format!("Cannot deserialize instance of currency from {v}"),
                    k,
                ));
            }
            if def.ty == "date"
                && !v.is_null()
                && v.as_str()
                    .is_none_or(|s| s.parse::<jiff::civil::Date>().is_err())
            {
                return Err(err(
                    "JSON_PARSER_ERROR",
                    format!("Cannot deserialize instance of date from {v}"),
                    k,
                ));
            }
        }
        if creating && let Some(f) = d.required.iter().find(|f| !fields.contains_key(**f)) {
            return Err(err(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{f}]"),
                f,
            ));
        }
        Ok(())
    }

    /// The `describe` answer for `object` (`DescribeSObjectResult`, the parts prmsync reads and
    /// a few more), or `None` when the org has no such sObject.
    fn describe_json(&self, d: &Describe) -> Option<Value> {
        let fields = self.objects.get(d.name)?;
        let fields: Vec<Value> = fields
            .iter()
            .map(|f| {
                let picklist: Vec<Value> = f
                    .picklist
                    .iter()
                    .map(|(v, active)| {
                        json!({"value": v, "label": v, "active": active, "defaultValue": false, "validFor": null})
                    })
                    .collect();
                json!({
                    "name": f.name,
                    "label": f.name.trim_end_matches("__c").replace('_', " "),
                    "type": f.ty,
                    "soapType": soap_type(f.ty),
                    "custom": f.name.ends_with("__c"),
                    "createable": f.createable,
                    "updateable": f.updateable,
                    "nillable": f.nillable,
                    "externalId": f.external_id,
                    "idLookup": f.external_id || f.name == "Id",
                    "unique": f.external_id,
                    "calculated": COMPUTED.iter().any(|(o, n)| *o == d.name && *n == f.name),
                    "restrictedPicklist": f.restricted,
                    "picklistValues": picklist,
                    "filterable": true,
                    "length": if matches!(f.ty, "string" | "picklist" | "email" | "phone" | "url") { 255 } else { 0 },
                })
            })
            .collect();
        Some(json!({
            "name": d.name,
            "label": d.name,
            "keyPrefix": d.prefix,
            "custom": d.name.ends_with("__c"),
            "createable": true,
            "updateable": true,
            "deletable": true,
            "queryable": true,
            "fields": fields,
        }))
    }
}

fn soap_type(ty: &str) -> &'static str {
    match ty {
        "id" | "reference" => "tns:ID",
        "boolean" => "xsd:boolean",
        "date" => "xsd:date",
        "datetime" => "xsd:dateTime",
        "currency" | "double" | "percent" => "xsd:double",
        _ => "xsd:string",
    }
}

/// `GET /services/data/vXX.X/sobjects/{SObject}/describe`.
pub(super) async fn describe(
    State(sim): State<SalesforceSim>,
    headers: HeaderMap,
    Path(object): Path<String>,
) -> Response {
    if let Err(r) = sim.gate(&headers) {
        return r;
    }
    let answer = super::describe(&object).and_then(|d| sim.lock().schema.describe_json(d));
    match answer {
        Some(body) => Json(body).into_response(),
        None => errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opportunity() -> &'static Describe {
        super::super::describe("Opportunity").unwrap()
    }

    fn schema() -> Schema {
        Schema::installed(super::super::all_objects())
    }

    fn one(k: &str, v: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(k.into(), v);
        m
    }

    #[test]
    fn writes_follow_the_schema_as_the_admin_changes_it() {
        let mut s = schema();
        let d = opportunity();
        assert_eq!(s.check(d, &one("Description", json!("x")), false), Ok(()));
        assert!(s.rename("Opportunity", "Description", "Summary__c"));
        let e = s
            .check(d, &one("Description", json!("x")), false)
            .unwrap_err();
        assert_eq!(e["statusCode"], "INVALID_FIELD");
        assert_eq!(s.check(d, &one("Summary__c", json!("x")), false), Ok(()));
        assert!(s.set_read_only("Opportunity", "Summary__c", true));
        let e = s
            .check(d, &one("Summary__c", json!("x")), false)
            .unwrap_err();
        assert_eq!(e["statusCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
        assert_eq!(
            s.check(d, &one("StageName", json!("Closed Won")), false),
            Ok(())
        );
        assert!(s.set_picklist_value("Opportunity", "StageName", "Closed Won", false));
        let e = s
            .check(d, &one("StageName", json!("Closed Won")), false)
            .unwrap_err();
        assert_eq!(e["statusCode"], "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
        assert!(s.remove("Opportunity", "Amount"));
        assert!(s.check(d, &one("Amount", json!(5)), false).is_err());
        let e = s.check(d, &one("IsWon", json!(true)), false).unwrap_err();
        assert_eq!(e["statusCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
    }

    #[test]
    fn describe_tells_what_writes_are_checked_against() {
        let mut s = schema();
        s.set_picklist_value("Opportunity", "StageName", "Closed Lost", false);
        let body = s.describe_json(opportunity()).unwrap();
        let fields = body["fields"].as_array().unwrap();
        let field = |n: &str| fields.iter().find(|f| f["name"] == n).unwrap().clone();
        assert_eq!(field("Amount")["type"], "currency");
        assert_eq!(field("PRM_Deal_Id__c")["externalId"], true);
        assert_eq!(field("IsClosed")["updateable"], false);
        assert_eq!(field("Name")["nillable"], false);
        let stage = field("StageName");
        assert_eq!(stage["restrictedPicklist"], true);
        let lost = stage["picklistValues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["value"] == "Closed Lost")
            .unwrap()
            .clone();
        assert_eq!(lost["active"], false);
    }
}

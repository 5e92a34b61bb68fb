//! Salesforce simulator merges and lead conversion, as a user does them in the UI: a merge keeps
//! the master and deletes the losers with `MasterRecordId` set (Account, Contact, Lead; at most
//! two losers; an Account's contacts and opportunities move to the master); a conversion creates
//! (or reuses) an Account, creates a Contact and optionally an Opportunity, and marks the Lead
//! `IsConverted` with the `Converted*Id` fields, after which the Lead can no longer be updated.

use serde_json::{Map, Value, json};

use super::{Inner, SalesforceSim, insert_rec, sf_time};
use crate::sim::salesforce_table::Rec;

/// Objects Salesforce merges.
const MERGEABLE: &[&str] = &["Account", "Contact", "Lead"];

/// The records a lead conversion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub account_id: String,
    pub contact_id: String,
    pub opportunity_id: Option<String>,
}

/// Whether `rec` is a converted Lead (which Salesforce refuses to update).
pub(super) fn is_converted(rec: Option<&Rec>) -> bool {
    rec.and_then(|r| r.fields.get("IsConverted"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The SaveError Salesforce gives for an update of a converted Lead.
pub(super) fn converted_lead_error(id: &str) -> Value {
    json!({
        "statusCode": "CANNOT_UPDATE_CONVERTED_LEAD",
        "message": format!("cannot reference converted lead: {id}"),
        "fields": [],
    })
}

impl Inner {
    /// Points `field` of every live `object` record holding `from` at `to` (a merge reparenting
    /// the losers' children).
    fn reparent(&mut self, object: &str, field: &str, from: &str, to: &str, now: i64) {
        let Some(table) = self.objects.get_mut(object) else {
            return;
        };
        for id in table.find(field, from, false) {
            if let Some(mut r) = table.get(&id).cloned() {
                r.fields.insert(field.into(), json!(to));
                r.modstamp_ms = now;
                table.put(&id, r);
            }
        }
    }
}

impl SalesforceSim {
    /// Merges `losers` (one or two) into `master`, all of `object`: the losers go to the recycle
    /// bin with `MasterRecordId` = `master` (getDeleted lists them, queryAll shows them), their
    /// child records move to the master, and the master is modified. False if any record is
    /// missing or the object is not mergeable.
    pub fn merge(&self, object: &str, master: &str, losers: &[&str]) -> bool {
        if !MERGEABLE.contains(&object) || losers.is_empty() || losers.len() > 2 {
            return false;
        }
        let now = self.clock.tick();
        let mut inner = self.lock();
        let Some(table) = inner.objects.get(object) else {
            return false;
        };
        let present = |id: &str| table.get(id).is_some();
        if !present(master) || !losers.iter().all(|l| present(l) && *l != master) {
            return false;
        }
        for loser in losers {
            if let Some(table) = inner.objects.get_mut(object)
                && let Some(mut r) = table.get(loser).cloned()
            {
                r.fields.insert("MasterRecordId".into(), json!(master));
                table.put(loser, r);
            }
            if inner.delete_id(loser, now).is_err() {
                return false;
            }
            if object == "Account" {
                inner.reparent("Contact", "AccountId", loser, master, now);
                inner.reparent("Opportunity", "AccountId", loser, master, now);
            }
        }
        if let Some(table) = inner.objects.get_mut(object)
            && let Some(mut r) = table.get(master).cloned()
        {
            r.modstamp_ms = now;
            table.put(master, r);
        }
        true
    }

    /// Converts the Lead `lead`: into `account` (an existing Account) or a new one named after
    /// the Lead's company, a new Contact, and a new Opportunity when `opportunity` is true. None
    /// if the Lead is missing or already converted.
    pub fn convert_lead(
        &self,
        lead: &str,
        account: Option<&str>,
        opportunity: bool,
    ) -> Option<Conversion> {
        let now = self.clock.tick();
        let mut inner = self.lock();
        let rec = inner.objects.get("Lead")?.get(lead)?.clone();
        if is_converted(Some(&rec)) {
            return None;
        }
        let text = |f: &str| rec.fields.get(f).cloned().unwrap_or(Value::Null);
        let company = rec
            .fields
            .get("Company")
            .and_then(Value::as_str)
            .unwrap_or("Unknown")
            .to_owned();
        let account_id = match account {
            Some(a) => {
                inner.objects.get("Account")?.get(a)?;
                a.to_owned()
            }
            None => {
                let mut f = Map::new();
                f.insert("Name".into(), json!(company));
                insert_rec(&mut inner, "Account", f, now)
            }
        };
        let mut c = Map::new();
        for k in ["FirstName", "LastName", "Email"] {
            c.insert(k.into(), text(k));
        }
        c.insert("AccountId".into(), json!(account_id));
        let contact_id = insert_rec(&mut inner, "Contact", c, now);
        let opportunity_id = opportunity.then(|| {
            let mut o = Map::new();
            o.insert("Name".into(), json!(format!("{company}-")));
            o.insert("StageName".into(), json!("Prospecting"));
            o.insert("CloseDate".into(), json!(sf_time(now)[..10].to_owned()));
            o.insert("AccountId".into(), json!(account_id));
            insert_rec(&mut inner, "Opportunity", o, now)
        });
        let mut done = rec;
        for (k, v) in [
            ("IsConverted", json!(true)),
            ("ConvertedDate", json!(sf_time(now)[..10].to_owned())),
            ("ConvertedAccountId", json!(account_id)),
            ("ConvertedContactId", json!(contact_id)),
            ("ConvertedOpportunityId", json!(opportunity_id)),
            ("Status", json!("Closed - Converted")),
        ] {
            done.fields.insert(k.into(), v);
        }
        done.modstamp_ms = now;
        inner.objects.get_mut("Lead")?.put(lead, done);
        Some(Conversion {
            account_id,
            contact_id,
            opportunity_id,
        })
    }
}

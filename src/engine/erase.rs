//! Erasure of a person (GDPR Art. 17 / CCPA), for `prmsync erase` and HubSpot's
//! `contact.privacyDeletion`: find the records that hold the person (the named record or the
//! records whose staged data holds the address, and the records linked to them), erase or
//! anonymise them in the systems per `[erasure]` (HubSpot gdpr-delete for contacts, a delete or a
//! field scrub on Salesforce, a field scrub on the PRM), then purge the person from the state file
//! and keep an audit row without personal data. Nothing is logged that names the person.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::RetryPolicy;
use crate::config::ErasureConfig;
use crate::connector::{Connector, ConnectorError, WriteRequest};
use crate::mapping::Mapping;
use crate::model::{ObjectRef, SystemKind};
use crate::store::erasure::{Audit, Purge, PurgeReport, RecordKey};
use crate::store::{Store, StoreError};

/// Who to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Everyone's records holding this address (any case).
    Email(String),
    /// One record (`system/object/id`) and the person it holds.
    Record(ObjectRef, String),
}

/// Why an erasure could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("--record {0:?}: expected SYSTEM/OBJECT/ID, e.g. hubspot/contacts/101")]
    BadRecord(String),
    #[error("--email: not an email address")]
    BadEmail,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A system refused or failed a call: nothing was purged from the state file, so running the
    /// erasure again finds the same records (every call is safe to repeat).
    #[error(
        "{system} {what}: {error} (nothing was purged from the state file; run the erasure again)"
    )]
    Vendor {
        system: SystemKind,
        what: String,
        error: ConnectorError,
    },
}

impl Subject {
    /// `--email ADDR`.
    pub fn email(text: &str) -> Result<Subject, EraseError> {
        let e = text.trim().to_lowercase();
        if !looks_like_email(&e) {
            return Err(EraseError::BadEmail);
        }
        Ok(Subject::Email(e))
    }

    /// The subject as an erasure request stores it (`email:ADDR`, `record:SYSTEM/OBJECT/ID`).
    pub fn to_request(&self) -> String {
        match self {
            Subject::Email(e) => format!("email:{e}"),
            Subject::Record(o, id) => format!("record:{}/{}/{id}", o.system, o.object),
        }
    }

    /// A stored request's subject.
    pub fn from_request(text: &str) -> Result<Subject, EraseError> {
        match text.split_once(':') {
            Some(("email", e)) => Subject::email(e),
            Some(("record", r)) => Subject::record(r),
            _ => Err(EraseError::BadRecord(String::new())),
        }
    }

    /// `--record SYSTEM/OBJECT/ID`.
    pub fn record(text: &str) -> Result<Subject, EraseError> {
        let bad = || EraseError::BadRecord(text.to_owned());
        let mut parts = text.trim().splitn(3, '/');
        let (Some(system), Some(object), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let system = SystemKind::parse(system).ok_or_else(bad)?;
        if object.is_empty() || id.is_empty() {
            return Err(bad());
        }
        Ok(Subject::Record(
            ObjectRef {
                system,
                object: object.to_owned(),
            },
            id.to_owned(),
        ))
    }

    fn kind(&self) -> &'static str {
        match self {
            Subject::Email(_) => "email",
            Subject::Record(..) => "record",
        }
    }
}

fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.contains(char::is_whitespace)
}

/// One call to a system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// HubSpot `POST /crm/v3/objects/contacts/gdpr-delete` by id, or by email.
    GdprDelete { id: String, by_email: bool },
    /// The system's delete call (Salesforce).
    Delete {
        system: SystemKind,
        object: String,
        id: String,
    },
    /// Blank these fields of the record.
    Scrub {
        system: SystemKind,
        object: String,
        id: String,
        fields: Vec<String>,
    },
}

impl Action {
    fn system(&self) -> SystemKind {
        match self {
            Action::GdprDelete { .. } => SystemKind::HubSpot,
            Action::Delete { system, .. } | Action::Scrub { system, .. } => *system,
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Action::GdprDelete { .. } => "gdpr-delete",
            Action::Delete { .. } => "delete",
            Action::Scrub { .. } => "scrub",
        }
    }

    /// One line for the operator (record ids, never the address).
    fn describe(&self) -> String {
        match self {
            Action::GdprDelete { by_email: true, .. } => {
                "hubspot: gdpr-delete the contact with the address (if HubSpot has one)".into()
            }
            Action::GdprDelete { id, .. } => format!("hubspot: gdpr-delete contacts {id}"),
            Action::Delete { system, object, id } => format!("{system}: delete {object} {id}"),
            Action::Scrub {
                system,
                object,
                id,
                fields,
            } => format!("{system}: blank {} on {object} {id}", fields.join(", ")),
        }
    }
}

/// What an erasure does (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub subject: &'static str,
    /// The records that hold the person, as prmsync knows them.
    pub records: Vec<RecordKey>,
    pub actions: Vec<Action>,
    /// Personal data a system keeps (policy `keep`, or a field its API cannot change): the
    /// records' links are tombstoned so prmsync copies nothing of them again.
    pub left: Vec<String>,
    pub(super) purge: Purge,
}

/// What an erasure did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plan: Plan,
    pub dry_run: bool,
    /// (rows that would go, values that would be rewritten) in a dry run; the purge otherwise.
    pub counts: (usize, usize),
    pub purge: Option<PurgeReport>,
}

/// Where an erasure runs: the state, the connectors, the flows and the policy.
#[derive(Debug)]
pub struct Eraser<'a> {
    pub store: &'a Store,
    pub connectors: Vec<&'a Connector>,
    pub mappings: &'a [Arc<Mapping>],
    pub policy: &'a ErasureConfig,
    pub retry: &'a RetryPolicy,
}

/// CRM objects that are a person.
fn person_object(object: &ObjectRef) -> bool {
    matches!(
        (object.system, object.object.as_str()),
        (SystemKind::HubSpot, "contacts") | (SystemKind::Salesforce, "Contact" | "Lead")
    )
}

fn is_crm(system: SystemKind) -> bool {
    matches!(system, SystemKind::HubSpot | SystemKind::Salesforce)
}

impl Eraser<'_> {
    fn connector(&self, system: SystemKind) -> Option<&Connector> {
        self.connectors.iter().copied().find(|c| c.kind() == system)
    }

    /// Finds the records and plans the calls; reads only (the state file, and Salesforce
    /// searches for contacts and leads with the address).
    pub async fn plan(
        &self,
        subject: &Subject,
        already_gone: Option<&RecordKey>,
    ) -> Result<Plan, EraseError> {
        let mut records: BTreeSet<RecordKey> = BTreeSet::new();
        let mut emails: BTreeSet<String> = BTreeSet::new();
        match subject {
            Subject::Email(e) => {
                emails.insert(e.clone());
            }
            Subject::Record(o, id) => {
                records.insert((o.clone(), id.clone()));
            }
        }
        // The records linked to the named one may hold its address (a contact flow's PRM side).
        let mut links = self.linked(&mut records).await?;
        if let Subject::Record(..) = subject {
            for r in &records {
                if let Some(p) = self.store.latest_payload(r.clone()).await? {
                    emails.extend(self.addresses(&p));
                }
            }
        }
        for e in &emails {
            records.extend(self.store.records_holding(e.clone()).await?);
        }
        // Salesforce keeps people as contacts and leads: search them by the address.
        if let Some(sf) = self.connector(SystemKind::Salesforce) {
            let wanted: Vec<String> = emails.iter().cloned().collect();
            for object in ["Contact", "Lead"] {
                let found = self
                    .retry
                    .run(|| sf.find_matches(object, "Email", &wanted, &[]))
                    .await
                    .map_err(|error| EraseError::Vendor {
                        system: SystemKind::Salesforce,
                        what: format!("search {object} by email"),
                        error,
                    })?;
                for c in found.into_values().flatten() {
                    records.insert((
                        ObjectRef {
                            system: SystemKind::Salesforce,
                            object: object.into(),
                        },
                        c.id,
                    ));
                }
            }
        }
        links.extend(self.linked(&mut records).await?);

        let mut plan = Plan {
            subject: subject.kind(),
            ..Plan::default()
        };
        let mut tombstones: BTreeSet<RecordKey> = BTreeSet::new();
        for r in &records {
            if Some(r) == already_gone {
                tombstones.insert(r.clone());
                continue;
            }
            let (object, id) = r;
            let fields = self.personal_fields(r).await?;
            if is_crm(object.system) && person_object(object) && self.policy.delete_crm_person {
                plan.actions.push(match object.system {
                    SystemKind::HubSpot => Action::GdprDelete {
                        id: id.clone(),
                        by_email: false,
                    },
                    system => Action::Delete {
                        system,
                        object: object.object.clone(),
                        id: id.clone(),
                    },
                });
                tombstones.insert(r.clone());
            } else if is_crm(object.system) {
                if !fields.is_empty() {
                    plan.actions.push(Action::Scrub {
                        system: object.system,
                        object: object.object.clone(),
                        id: id.clone(),
                        fields,
                    });
                }
            } else if !self.policy.scrub_prm {
                plan.left.push(format!(
                    "{object} {id}: kept (erasure.prm = \"keep\"); prmsync stops syncing it"
                ));
                tombstones.insert(r.clone());
            } else {
                let (writable, fixed): (Vec<String>, Vec<String>) = fields
                    .into_iter()
                    .partition(|f| crate::connector::field_writable(object, f));
                if !fixed.is_empty() {
                    plan.left.push(format!(
                        "{object} {id}: {} cannot be changed through the {} API; erase it there (prmsync stops syncing the record)",
                        fixed.join(", "),
                        object.system
                    ));
                    tombstones.insert(r.clone());
                }
                if !writable.is_empty() {
                    plan.actions.push(Action::Scrub {
                        system: object.system,
                        object: object.object.clone(),
                        id: id.clone(),
                        fields: writable,
                    });
                }
            }
        }
        // A HubSpot contact prmsync never saw may still hold the address.
        if let Subject::Email(e) = subject
            && self.policy.delete_crm_person
            && self.connector(SystemKind::HubSpot).is_some()
            && !records
                .iter()
                .any(|(o, _)| o.system == SystemKind::HubSpot && o.object == "contacts")
        {
            plan.actions.push(Action::GdprDelete {
                id: e.clone(),
                by_email: true,
            });
        }
        let suppress: Vec<RecordKey> = plan_suppress(&records, &tombstones, already_gone);
        plan.purge = Purge {
            suppress,
            records: records.iter().cloned().collect(),
            links: links
                .into_iter()
                .map(|(flow, sid, ends)| {
                    let gone = ends.iter().any(|e| tombstones.contains(e));
                    let reason = gone.then(|| {
                        "erased: a record of this link was erased for a privacy request".to_owned()
                    });
                    (flow, sid, reason)
                })
                .collect(),
            emails: emails.into_iter().collect(),
            request: None,
        };
        plan.records = records.into_iter().collect();
        Ok(plan)
    }

    /// Adds to `records` the records linked to them by any flow; returns those links as (flow,
    /// source id, both ends).
    async fn linked(
        &self,
        records: &mut BTreeSet<RecordKey>,
    ) -> Result<Vec<(String, String, [RecordKey; 2])>, EraseError> {
        let mut out = Vec::new();
        for m in self.mappings {
            let as_source: Vec<String> = records
                .iter()
                .filter(|(o, _)| *o == m.source)
                .map(|(_, id)| id.clone())
                .collect();
            let as_target: Vec<String> = records
                .iter()
                .filter(|(o, _)| *o == m.target)
                .map(|(_, id)| id.clone())
                .collect();
            let mut pairs: Vec<(String, Option<String>)> = Vec::new();
            if !as_source.is_empty() {
                for (sid, link) in self
                    .store
                    .links_by_source(m.name.clone(), as_source)
                    .await?
                {
                    pairs.push((sid, link.target_id));
                }
            }
            if !as_target.is_empty() {
                for (tid, sid, _) in self
                    .store
                    .links_by_target(m.name.clone(), as_target)
                    .await?
                {
                    pairs.push((sid, Some(tid)));
                }
            }
            for (sid, tid) in pairs {
                let source = (m.source.clone(), sid.clone());
                let target = tid.map(|t| (m.target.clone(), t));
                records.insert(source.clone());
                if let Some(t) = &target {
                    records.insert(t.clone());
                }
                let ends = [source.clone(), target.unwrap_or(source)];
                out.push((m.name.clone(), sid, ends));
            }
        }
        Ok(out)
    }

    /// The addresses in a record's personal fields.
    fn addresses(&self, payload: &Map<String, Value>) -> Vec<String> {
        self.policy
            .fields
            .iter()
            .filter_map(|f| payload.get(f).and_then(Value::as_str))
            .map(|s| s.trim().to_lowercase())
            .filter(|s| looks_like_email(s))
            .collect()
    }

    /// The personal fields a record has: those its staged payload carries, and those the flows
    /// write to it (the deal flow's `prm_contact_email`) or read from it.
    async fn personal_fields(&self, record: &RecordKey) -> Result<Vec<String>, EraseError> {
        let personal: BTreeSet<&str> = self.policy.fields.iter().map(String::as_str).collect();
        let mut out: BTreeSet<String> = BTreeSet::new();
        if let Some(p) = self.store.latest_payload(record.clone()).await? {
            out.extend(
                p.iter()
                    .filter(|(k, v)| personal.contains(k.as_str()) && !is_blank(v))
                    .map(|(k, _)| k.clone()),
            );
        }
        for m in self.mappings {
            for f in &m.fields {
                let src = f.source.as_deref().unwrap_or_default();
                let is_personal = personal.contains(f.target.as_str()) || personal.contains(src);
                if !is_personal {
                    continue;
                }
                if m.target == record.0 {
                    out.insert(f.target.clone());
                }
                if m.source == record.0 && !src.is_empty() && !src.contains('.') {
                    out.insert(src.to_owned());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Carries out `plan`'s calls, then purges the state file and writes the audit row.
    pub async fn execute(
        &self,
        plan: &Plan,
        origin: &str,
        now_ms: i64,
    ) -> Result<PurgeReport, EraseError> {
        let mut done: BTreeMap<(SystemKind, &'static str), usize> = BTreeMap::new();
        for action in &plan.actions {
            let system = action.system();
            let Some(conn) = self.connector(system) else {
                continue;
            };
            let vendor = |error| EraseError::Vendor {
                system,
                what: action.describe(),
                error,
            };
            match action {
                Action::GdprDelete { id, by_email } => {
                    let Connector::HubSpot(hs) = conn else {
                        continue;
                    };
                    self.retry
                        .run(|| hs.gdpr_delete(id, *by_email))
                        .await
                        .map_err(vendor)?;
                }
                Action::Delete { object, id, .. } => {
                    let ids = [id.clone()];
                    let results = self
                        .retry
                        .run(|| conn.delete(object, &ids))
                        .await
                        .map_err(vendor)?;
                    if let Some(Err(e)) = results.into_iter().next() {
                        return Err(vendor(e));
                    }
                }
                Action::Scrub {
                    object, id, fields, ..
                } => {
                    let write = WriteRequest {
                        key: id.clone(),
                        id_property: None,
                        target_id: Some(id.clone()),
                        fields: fields
                            .iter()
                            .map(|f| (f.clone(), Value::String(String::new())))
                            .collect(),
                    };
                    let writes = [write];
                    let results = self
                        .retry
                        .run(|| conn.write(object, &writes))
                        .await
                        .map_err(vendor)?;
                    if let Some(Err(e)) = results.into_iter().next() {
                        return Err(vendor(e));
                    }
                }
            }
            *done.entry((system, action.verb())).or_default() += 1;
        }
        let actions = done
            .iter()
            .map(|((s, v), n)| format!("{s} {v} {n}"))
            .collect::<Vec<_>>()
            .join("; ");
        let audit = Audit {
            origin: origin.to_owned(),
            subject: plan.subject.to_owned(),
            records: plan.records.len(),
            actions,
        };
        let report = self
            .store
            .purge_erasure(plan.purge.clone(), audit, now_ms)
            .await?;
        tracing::info!(
            audit = report.audit_id,
            origin,
            records = plan.records.len(),
            calls = plan.actions.len(),
            purged_rows = report.purged_rows,
            scrubbed = report.scrubbed,
            "person erased"
        );
        Ok(report)
    }

    /// Plans and, unless `dry_run`, carries out an erasure.
    pub async fn run(
        &self,
        subject: &Subject,
        origin: &str,
        dry_run: bool,
        now_ms: i64,
    ) -> Result<Outcome, EraseError> {
        let plan = self.plan(subject, None).await?;
        if dry_run {
            let counts = self.store.erasure_counts(plan.purge.clone()).await?;
            return Ok(Outcome {
                plan,
                dry_run,
                counts,
                purge: None,
            });
        }
        let report = self.execute(&plan, origin, now_ms).await?;
        Ok(Outcome {
            counts: (report.purged_rows, report.scrubbed),
            plan,
            dry_run,
            purge: Some(report),
        })
    }
}

impl super::Engine {
    /// Erases a person with this engine's connectors, flows and `[erasure]` policy (the demo;
    /// `prmsync erase` builds its own connectors, the daemon may not be running).
    pub async fn erase(
        &self,
        subject: &Subject,
        origin: &str,
        dry_run: bool,
    ) -> Result<Outcome, EraseError> {
        let mappings = self.mappings();
        let policy = self.erasure_policy();
        let eraser = Eraser {
            store: &self.store,
            connectors: vec![&self.prm, &self.crm],
            mappings: &mappings,
            policy: &policy,
            retry: &self.settings.retry,
        };
        let _planning = self.planning.lock().await;
        eraser.run(subject, origin, dry_run, (self.clock)()).await
    }

    /// HubSpot deleted a contact for a privacy request (`contact.privacyDeletion`): erase the
    /// person everywhere else and purge them from the state file. A failure is alerted and
    /// dead-lettered (the event only, no personal data), so `prmsync dlq replay` runs it again.
    pub(super) async fn erase_privacy_deletion(
        &self,
        change: &crate::model::Change,
    ) -> Result<(), super::EngineError> {
        let record = (change.object.clone(), change.record.id.clone());
        let mappings = self.mappings();
        let policy = self.erasure_policy();
        let eraser = Eraser {
            store: &self.store,
            connectors: vec![&self.prm, &self.crm],
            mappings: &mappings,
            policy: &policy,
            retry: &self.settings.retry,
        };
        let subject = Subject::Record(record.0.clone(), record.1.clone());
        let now = (self.clock)();
        let result = match eraser.plan(&subject, Some(&record)).await {
            Ok(plan) => {
                eraser
                    .execute(&plan, "hubspot contact.privacyDeletion", now)
                    .await
            }
            Err(e) => Err(e),
        };
        let Err(e) = result else {
            return Ok(());
        };
        tracing::error!(alert = "erasure_failed", error = %e, "a privacy deletion could not be carried out; it is in the dead letters (replay it)");
        let letter = crate::store::DeadLetter {
            origin: "inbox",
            flow: None,
            system: record.0.system,
            object: record.0.object.clone(),
            record_id: record.1.clone(),
            payload: Value::Object(change.record.fields.clone()),
            reason: format!("erasure failed: {e}"),
            attempts: 0,
        };
        self.store
            .commit_plan(
                crate::store::PlanCommit {
                    dead_letters: vec![letter],
                    ..crate::store::PlanCommit::default()
                },
                now,
            )
            .await?;
        Ok(())
    }
}

/// The records whose system keeps the person (not deleted there by this erasure): PRM records
/// left with a field its API cannot change, or kept by policy.
fn plan_suppress(
    records: &BTreeSet<RecordKey>,
    tombstones: &BTreeSet<RecordKey>,
    already_gone: Option<&RecordKey>,
) -> Vec<RecordKey> {
    records
        .iter()
        .filter(|r| tombstones.contains(*r) && !is_crm(r.0.system) && Some(*r) != already_gone)
        .cloned()
        .collect()
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The outcome as `prmsync erase` prints it (record ids; never the address).
pub fn render(o: &Outcome) -> String {
    let mut s = String::new();
    let head = if o.dry_run {
        "dry run: would"
    } else {
        "erased:"
    };
    let _ = writeln!(
        s,
        "{head} {} record(s) prmsync knows hold the person",
        o.plan.records.len()
    );
    for a in &o.plan.actions {
        let _ = writeln!(s, "  {}", a.describe());
    }
    for l in &o.plan.left {
        let _ = writeln!(s, "  left: {l}");
    }
    let (rows, values) = o.counts;
    match &o.purge {
        None => {
            let _ = writeln!(
                s,
                "  state file: would delete {rows} row(s) and rewrite {values} value(s)\ndry run: nothing was changed"
            );
        }
        Some(p) => {
            let _ = writeln!(
                s,
                "  state file: deleted {rows} row(s), rewrote {values} value(s); audit #{} (no personal data){}",
                p.audit_id,
                if p.checkpoint_busy {
                    "; the WAL checkpoint was busy: old pages leave the -wal file at the next checkpoint"
                } else if p.vacuumed > 0 {
                    "; PostgreSQL: the changed tables were vacuumed (see docs/postgres.md, \"Erasure\")"
                } else {
                    ""
                }
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_and_bad_ones_are_refused() {
        assert_eq!(
            Subject::email(" Sam@Acme.Example ").expect("email"),
            Subject::Email("sam@acme.example".into())
        );
        assert!(matches!(Subject::email("sam"), Err(EraseError::BadEmail)));
        assert_eq!(
            Subject::record("hubspot/contacts/101").expect("record"),
            Subject::Record(
                ObjectRef {
                    system: SystemKind::HubSpot,
                    object: "contacts".into()
                },
                "101".into()
            )
        );
        for bad in ["hubspot/contacts", "nowhere/contacts/1", "hubspot//1"] {
            assert!(
                matches!(Subject::record(bad), Err(EraseError::BadRecord(_))),
                "{bad}"
            );
        }
    }
}

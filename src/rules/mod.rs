//! Rules of engagement for deal registrations: parse and compile the rules file (pure, every error
//! with file:line:column), then decide every registration of a duplicate-key group (pure).
//!
//! Time inside the rules comes only from the inputs (event timestamps and an `as_of` taken from
//! events), never from the clock, so the same inputs always give the same decisions.

mod compile;
pub mod credit;
mod evaluate;
mod examples;
pub mod normalize;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

pub use evaluate::{evaluate, key_of};
pub use examples::{ExampleFailure, run_examples};

/// The file name the rules live under in a mappings folder (the mapping loader skips it).
pub const RULES_FILE: &str = "rules-of-engagement.toml";

/// The rules file built into the binary.
pub const BUILTIN: (&str, &str) = (
    "mappings/rules-of-engagement.toml",
    include_str!("../../mappings/rules-of-engagement.toml"),
);

const DAY_MS: i64 = 86_400_000;

/// A compiled rules file.
#[derive(Debug, Clone)]
pub struct Rules {
    pub file: String,
    /// A short hash of the compiled rules (not the text: comments, line numbers and examples do
    /// not count); stored with each decision, and a change re-decides every registration.
    pub version: String,
    pub name: String,
    pub description: Option<String>,
    pub fields: RegistrationFields,
    pub key: Vec<KeyPart>,
    pub qualification: Qualification,
    pub tiers: Tiers,
    pub reserved: Reserved,
    pub open_direct: OpenDirect,
    pub review: ReviewRule,
    pub protection: Protection,
    pub order: Vec<(Step, usize)>,
    pub tie_breakers: Vec<TieBreaker>,
    pub tie_line: usize,
    /// The CRM fields decisions are written to and facts read from, per CRM (`[crm.*]`).
    pub crm: CrmNamesByCrm,
    /// Multi-partner credit (`[credit]`); `None`: no partner credit is written.
    pub credit: Option<credit::CreditRule>,
    pub examples: Vec<Example>,
}

/// The CRM fields the rules write a decision to and read facts from, in one CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmNames {
    /// The deal's registration status (`approved`, `duplicate`, ...).
    pub status: String,
    /// The deal's protection end (RFC 3339, UTC), empty when unprotected.
    pub protected_until: String,
    /// The deal's attribution (`partner_sourced`, `partner_influenced`, `none`).
    pub attribution: String,
    /// The account (company) field holding the customer's domain or website, for CRM facts.
    pub account_domain: String,
    /// Each partner role's name in this CRM (`[credit]`): a HubSpot deal-to-company association
    /// label, a Salesforce `Partner.Role` value. Both must exist in the portal or org.
    pub partner_roles: BTreeMap<credit::Role, String>,
    /// Salesforce: the object credit rows are read from, created in and deleted from (`Partner`,
    /// or a custom object the rules file names); `None` for HubSpot (association labels).
    pub partner_object: Option<PartnerObject>,
}

/// The Salesforce object holding one row per credited partner on an opportunity, and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerObject {
    pub object: String,
    /// The opportunity the row credits (a lookup).
    pub opportunity: String,
    /// The partner's account (a lookup).
    pub account: String,
    /// The role's name (`partner_roles`).
    pub role: String,
    /// The primary flag (a checkbox).
    pub primary: String,
}

impl PartnerObject {
    /// The standard `Partner` object (`OpportunityPartner` is derived from it).
    pub fn standard() -> PartnerObject {
        PartnerObject {
            object: "Partner".into(),
            opportunity: "OpportunityId".into(),
            account: "AccountToId".into(),
            role: "Role".into(),
            primary: "IsPrimary".into(),
        }
    }

    /// Whether this is the standard `Partner` (rows cannot be updated, only deleted and made).
    pub fn is_standard(&self) -> bool {
        self.object == "Partner"
    }
}

impl CrmNames {
    /// HubSpot: the deal properties prmsync's install creates, and the company `domain`.
    pub fn hubspot_default() -> CrmNames {
        CrmNames {
            status: "prm_registration_status".into(),
            protected_until: "prm_protected_until".into(),
            attribution: "prm_attribution".into(),
            account_domain: "domain".into(),
            partner_roles: roles([
                "Sourcing partner",
                "Influencing partner",
                "Referral partner",
                "Reseller partner",
            ]),
            partner_object: None,
        }
    }

    /// Salesforce: custom Opportunity fields, and the Account's standard `Website`.
    pub fn salesforce_default() -> CrmNames {
        CrmNames {
            status: "PRM_Registration_Status__c".into(),
            protected_until: "PRM_Protected_Until__c".into(),
            attribution: "PRM_Attribution__c".into(),
            account_domain: "Website".into(),
            partner_roles: roles(["Sourcing Partner", "Influencer", "Referral", "Reseller"]),
            partner_object: Some(PartnerObject::standard()),
        }
    }

    /// This CRM's name for `role`.
    pub fn role_name(&self, role: credit::Role) -> &str {
        self.partner_roles.get(&role).map_or("", String::as_str)
    }
}

/// Role names in [`credit::Role::ALL`] order.
fn roles(names: [&str; 4]) -> BTreeMap<credit::Role, String> {
    credit::Role::ALL
        .into_iter()
        .zip(names)
        .map(|(r, n)| (r, n.to_owned()))
        .collect()
}

/// [`CrmNames`] for each CRM prmsync writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmNamesByCrm {
    pub hubspot: CrmNames,
    pub salesforce: CrmNames,
}

impl Default for CrmNamesByCrm {
    fn default() -> Self {
        CrmNamesByCrm {
            hubspot: CrmNames::hubspot_default(),
            salesforce: CrmNames::salesforce_default(),
        }
    }
}

/// Which registration fields the rules read.
#[derive(Debug, Clone)]
pub struct RegistrationFields {
    pub partner: String,
    pub amount: String,
    pub close_date: String,
    pub extensions: Option<String>,
}

/// How values are normalised in a duplicate key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    Domain,
    Email,
    Company,
    Lower,
    Exact,
}

/// One part of the duplicate key: the first non-empty of `fields`, normalised.
#[derive(Debug, Clone)]
pub struct KeyPart {
    pub fields: Vec<String>,
    pub normalize: Normalize,
    pub line: usize,
}

/// Evidence a registration must carry to be protected.
#[derive(Debug, Clone)]
pub struct Qualification {
    pub line: usize,
    pub required: Vec<String>,
    pub min_amount: Option<i64>,
    pub named_contact: Option<NamedContact>,
    pub close_within_days: Option<i64>,
}

/// A named contact at the customer: names present and an email at the customer's domain.
#[derive(Debug, Clone)]
pub struct NamedContact {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// Partner tiers, best first, and where each partner's tier comes from.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    pub order: Vec<String>,
    pub field: Option<String>,
    pub partners: Vec<(String, String)>,
    pub line: usize,
}

/// A CRM criterion for a direct-reserved account: the account field equals `equals`. The field
/// is named per CRM (`hubspot`, `salesforce`), or once for any CRM (`field`).
#[derive(Debug, Clone)]
pub struct CrmCriterion {
    /// The name on any CRM without its own name.
    pub field: Option<String>,
    pub hubspot: Option<String>,
    pub salesforce: Option<String>,
    pub equals: String,
    pub line: usize,
}

impl CrmCriterion {
    /// The account field this criterion reads on `crm`, if it names one there.
    pub fn field_for(&self, crm: crate::model::SystemKind) -> Option<&str> {
        let own = match crm {
            crate::model::SystemKind::HubSpot => self.hubspot.as_deref(),
            crate::model::SystemKind::Salesforce => self.salesforce.as_deref(),
            _ => None,
        };
        own.or(self.field.as_deref())
    }

    /// Every field name the criterion gives, for facts whose CRM is not known (examples).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [&self.hubspot, &self.salesforce, &self.field]
            .into_iter()
            .filter_map(|n| n.as_deref())
    }
}

/// Accounts the direct team keeps.
#[derive(Debug, Clone, Default)]
pub struct Reserved {
    pub line: usize,
    /// Normalised domain and the line it is listed on.
    pub domains: Vec<(String, usize)>,
    pub account_ids: Vec<(String, usize)>,
    pub crm: Vec<CrmCriterion>,
}

/// What an open direct opportunity on the account does to a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenDirectAction {
    Reject,
    Influenced,
}

#[derive(Debug, Clone)]
pub struct OpenDirect {
    pub action: OpenDirectAction,
    pub line: usize,
}

/// When the rules hand a group to a person.
#[derive(Debug, Clone, Default)]
pub struct ReviewRule {
    pub line: usize,
    pub qualified_within_ms: Option<i64>,
    pub tiers: Vec<String>,
}

/// What happens when protection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    /// Registrations submitted after the expiry compete for the account; earlier losers stay
    /// duplicates unless a person revives them (the default).
    Reopen,
    /// The next registration in line, however old, takes the account from the moment protection
    /// ended (`release` is accepted as its old name).
    NextInLine,
    /// The rest of the group goes to manual review.
    Review,
}

impl OnExpiry {
    pub const ALL: [OnExpiry; 3] = [OnExpiry::Reopen, OnExpiry::NextInLine, OnExpiry::Review];

    pub fn as_str(self) -> &'static str {
        match self {
            OnExpiry::Reopen => "reopen",
            OnExpiry::NextInLine => "next_in_line",
            OnExpiry::Review => "review",
        }
    }

    /// The value's name in a rules file; `release` is the old name of `next_in_line`.
    pub fn parse(s: &str) -> Option<OnExpiry> {
        match s {
            "release" => Some(OnExpiry::NextInLine),
            _ => Self::ALL.into_iter().find(|x| x.as_str() == s),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Protection {
    pub line: usize,
    pub days: i64,
    pub extensions: i64,
    pub extension_days: i64,
    pub on_expiry: OnExpiry,
    pub rules_change_may_revoke: bool,
}

/// One step of the decision order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ManualReview,
    Reserved,
    OpenDirect,
    Qualification,
    Review,
    FirstQualified,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::ManualReview,
        Step::Reserved,
        Step::OpenDirect,
        Step::Qualification,
        Step::Review,
        Step::FirstQualified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::ManualReview => "manual_review",
            Step::Reserved => "reserved_accounts",
            Step::OpenDirect => "open_direct_opportunity",
            Step::Qualification => "qualification",
            Step::Review => "review",
            Step::FirstQualified => "first_qualified",
        }
    }

    /// Steps that decide one registration on its own (the others compare a group).
    pub fn is_per_registration(self) -> bool {
        !matches!(self, Step::Review | Step::FirstQualified)
    }
}

/// Tie-breakers after "qualified first".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TieBreaker {
    Tier,
    Submitted,
    Id,
}

impl TieBreaker {
    pub fn as_str(self) -> &'static str {
        match self {
            TieBreaker::Tier => "tier",
            TieBreaker::Submitted => "submitted",
            TieBreaker::Id => "id",
        }
    }
}

/// One observed version of a registration (a PRM deal registration as read at `at_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RegistrationEvent {
    pub id: String,
    /// When this version was made (the PRM's update time), epoch ms.
    pub at_ms: i64,
    /// When the partner first submitted the registration, epoch ms.
    pub submitted_ms: i64,
    pub fields: Map<String, Value>,
}

/// A CRM account, as far as the rules need it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CrmAccount {
    pub id: String,
    pub domain: String,
    #[serde(default)]
    pub fields: Map<String, Value>,
}

/// A CRM opportunity on an account.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CrmOpportunity {
    pub id: String,
    pub domain: String,
    #[serde(default = "yes")]
    pub open: bool,
    /// Sourced by a partner (then it is not "direct").
    #[serde(default)]
    pub partner_sourced: bool,
}

fn yes() -> bool {
    true
}

/// What the CRM says about accounts and pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CrmFacts {
    #[serde(default)]
    pub accounts: Vec<CrmAccount>,
    #[serde(default)]
    pub opportunities: Vec<CrmOpportunity>,
}

/// An operator's review decision.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReviewOutcome {
    pub registration_id: String,
    pub approve: bool,
    #[serde(default)]
    pub reason: String,
    pub at_ms: i64,
}

/// A decision stored earlier, so a rules change cannot silently revoke protection.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PriorDecision {
    pub registration_id: String,
    pub status: Status,
    pub protected_until: Option<i64>,
    /// For approvals, the rules version the protection was granted under.
    pub rules_version: String,
}

/// Everything one evaluation reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub events: Vec<RegistrationEvent>,
    pub crm: CrmFacts,
    pub reviews: Vec<ReviewOutcome>,
    pub prior: Vec<PriorDecision>,
    /// Partner key -> the partner's name in the PRM, for reasons a person can read.
    pub partner_names: BTreeMap<String, String>,
    /// "Now" for expiry, taken from events (the newest event time the caller has seen).
    pub as_of_ms: i64,
}

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Approved,
    Influenced,
    Rejected,
    Duplicate,
    Pending,
    Review,
    Expired,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Approved,
        Status::Influenced,
        Status::Rejected,
        Status::Duplicate,
        Status::Pending,
        Status::Review,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Influenced => "influenced",
            Status::Rejected => "rejected",
            Status::Duplicate => "duplicate",
            Status::Pending => "pending",
            Status::Review => "review",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The attribution written to the CRM opportunity.
    pub fn attribution(self) -> &'static str {
        match self {
            Status::Approved => "partner_sourced",
            Status::Influenced => "partner_influenced",
            _ => "none",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule looked at while deciding a registration, for `registrations explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TraceStep {
    pub rule: String,
    pub line: usize,
    pub outcome: String,
}

/// The decision for one registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Decision {
    pub registration_id: String,
    /// The normalised duplicate key (empty when the registration has none yet).
    pub key: String,
    pub partner: String,
    pub status: Status,
    /// The rule that decided, and the line of the rules file it is written on.
    pub rule: String,
    pub line: usize,
    /// In plain words, citing the rules file line.
    pub reason: String,
    pub protected_until: Option<i64>,
    /// For approvals: the rules version the protection was granted under (kept across rules
    /// changes that may not revoke it).
    pub protected_under: Option<String>,
    pub duplicate_of: Option<String>,
    pub trace: Vec<TraceStep>,
}

/// An `[[example]]`: registrations and CRM facts, and the decisions they must give.
#[derive(Debug, Clone)]
pub struct Example {
    pub line: usize,
    pub name: String,
    pub input: Input,
    /// Registration id -> expected status, duplicate-of, and reason fragment.
    pub expect: Vec<ExpectedDecision>,
}

#[derive(Debug, Clone)]
pub struct ExpectedDecision {
    pub registration_id: String,
    pub status: Status,
    pub duplicate_of: Option<String>,
    pub reason_contains: Option<String>,
    pub protected_until: Option<i64>,
}

/// One problem in a rules file, with where it is.
pub type RulesError = crate::file_error::FileError;

/// Every problem found in a rules file. Never retryable: the file must be fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesErrors(pub Vec<RulesError>);

impl fmt::Display for RulesErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesErrors {}

impl Rules {
    /// Compiles a rules file's text; every problem is returned at once.
    pub fn compile(file: &str, text: &str) -> Result<Rules, RulesErrors> {
        compile::compile(file, text).map_err(RulesErrors)
    }

    /// The rules file built into the binary.
    pub fn builtin() -> Result<Rules, RulesErrors> {
        Self::compile(BUILTIN.0, BUILTIN.1)
    }

    /// The rules for a mappings folder: `<dir>/rules-of-engagement.toml` if it exists, else none;
    /// without a folder, the built-in file. Never writes.
    pub fn load(mappings_dir: Option<&std::path::Path>) -> Result<Option<Rules>, RulesErrors> {
        let Some(dir) = mappings_dir else {
            return Self::builtin().map(Some);
        };
        let path = dir.join(RULES_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::compile(&path.display().to_string(), &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RulesErrors(vec![RulesError {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                key: "(file)".into(),
                message: e.to_string(),
                hint: Some("the rules file must be readable by prmsync".into()),
            }])),
        }
    }

    /// A partner's tier: from the registration field named in `[tiers]`, else the partner table.
    pub fn tier_of(&self, partner: &str, fields: &Map<String, Value>) -> Option<String> {
        self.tiers
            .field
            .as_ref()
            .and_then(|f| fields.get(f))
            .and_then(Value::as_str)
            .map(str::to_lowercase)
            .or_else(|| {
                self.tiers
                    .partners
                    .iter()
                    .find(|(p, _)| p == partner)
                    .map(|(_, t)| t.clone())
            })
    }

    /// The CRM field names for `crm` (`None` for a system that is not a CRM).
    pub fn crm_names(&self, crm: crate::model::SystemKind) -> Option<&CrmNames> {
        match crm {
            crate::model::SystemKind::HubSpot => Some(&self.crm.hubspot),
            crate::model::SystemKind::Salesforce => Some(&self.crm.salesforce),
            crate::model::SystemKind::PartnerStack | crate::model::SystemKind::Rest => None,
        }
    }

    /// Rank of a tier (0 = best); unknown tiers rank after every listed one.
    pub fn tier_rank(&self, tier: Option<&str>) -> usize {
        tier.and_then(|t| self.tiers.order.iter().position(|o| o == t))
            .unwrap_or(self.tiers.order.len())
    }
}

#[cfg(test)]
mod tests;

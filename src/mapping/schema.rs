//! What the mapping compiler knows about each system's objects: their field names and the options
//! of their picklists, so a typo in a target field is caught before it reaches a vendor.

use crate::model::SystemKind;

/// The known shape of one object in one system.
#[derive(Debug)]
pub struct ObjectSchema {
    pub system: SystemKind,
    pub object: &'static str,
    pub fields: &'static [&'static str],
    /// Picklist fields and their allowed values.
    pub enums: &'static [(&'static str, &'static [&'static str])],
}

/// How custom fields are named in each system: such names are accepted without a schema entry.
fn is_custom(system: SystemKind, field: &str) -> bool {
    match system {
        // prmsync's own HubSpot properties, created at install time.
        SystemKind::HubSpot => field.starts_with("prm_"),
        SystemKind::Salesforce => field.ends_with("__c"),
        SystemKind::PartnerStack | SystemKind::Rest => false,
    }
}

/// HubSpot's default sales pipeline stages.
pub const HUBSPOT_DEAL_STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];

/// Salesforce's standard opportunity stages.
pub const SALESFORCE_OPPORTUNITY_STAGES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];

/// Every object whose schema prmsync knows.
pub static SCHEMAS: &[ObjectSchema] = &[
    ObjectSchema {
        system: SystemKind::HubSpot,
        object: "deals",
        fields: &[
            "dealname",
            "amount",
            "closedate",
            "dealstage",
            "pipeline",
            "closed_lost_reason",
            "closed_won_reason",
            "description",
            "dealtype",
            "hubspot_owner_id",
            "hs_priority",
        ],
        enums: &[("dealstage", HUBSPOT_DEAL_STAGES)],
    },
    ObjectSchema {
        system: SystemKind::HubSpot,
        object: "companies",
        fields: &[
            "name",
            "domain",
            "website",
            "phone",
            "city",
            "state",
            "country",
            "industry",
            "numberofemployees",
            "annualrevenue",
            "description",
            "type",
            "lifecyclestage",
            "hubspot_owner_id",
        ],
        enums: &[(
            "type",
            &["PROSPECT", "PARTNER", "RESELLER", "VENDOR", "OTHER"],
        )],
    },
    ObjectSchema {
        system: SystemKind::HubSpot,
        object: "contacts",
        fields: &[
            "email",
            "firstname",
            "lastname",
            "phone",
            "mobilephone",
            "company",
            "jobtitle",
            "website",
            "city",
            "country",
            "lifecyclestage",
            "hs_lead_status",
            "hubspot_owner_id",
            "associatedcompanyid",
        ],
        enums: &[
            (
                "lifecyclestage",
                &[
                    "subscriber",
                    "lead",
                    "marketingqualifiedlead",
                    "salesqualifiedlead",
                    "opportunity",
                    "customer",
                    "evangelist",
                    "other",
                ],
            ),
            (
                "hs_lead_status",
                &[
                    "NEW",
                    "OPEN",
                    "IN_PROGRESS",
                    "OPEN_DEAL",
                    "UNQUALIFIED",
                    "ATTEMPTED_TO_CONTACT",
                    "CONNECTED",
                    "BAD_TIMING",
                ],
            ),
        ],
    },
    ObjectSchema {
        system: SystemKind::HubSpot,
        object: "tasks",
        fields: &[
            "hs_task_subject",
            "hs_task_body",
            "hs_timestamp",
            "hs_task_status",
            "hs_task_type",
            "hs_task_priority",
            "hubspot_owner_id",
        ],
        enums: &[
            (
                "hs_task_status",
                &[
                    "NOT_STARTED",
                    "IN_PROGRESS",
                    "WAITING",
                    "COMPLETED",
                    "DEFERRED",
                ],
            ),
            ("hs_task_type", &["CALL", "EMAIL", "TODO"]),
            ("hs_task_priority", &["NONE", "LOW", "MEDIUM", "HIGH"]),
        ],
    },
    ObjectSchema {
        system: SystemKind::Salesforce,
        object: "Opportunity",
        fields: &[
            "Name",
            "Amount",
            "CloseDate",
            "StageName",
            "AccountId",
            "CampaignId",
            "Description",
            "LeadSource",
            "NextStep",
            "OwnerId",
            "Probability",
            "Type",
        ],
        enums: &[("StageName", SALESFORCE_OPPORTUNITY_STAGES)],
    },
    ObjectSchema {
        system: SystemKind::Salesforce,
        object: "Account",
        fields: &[
            "Name",
            "Website",
            "Phone",
            "BillingCity",
            "BillingState",
            "BillingCountry",
            "Industry",
            "NumberOfEmployees",
            "AnnualRevenue",
            "Description",
            "OwnerId",
            "ParentId",
            "Type",
        ],
        enums: &[],
    },
    ObjectSchema {
        system: SystemKind::Salesforce,
        object: "Contact",
        fields: &[
            "FirstName",
            "LastName",
            "Email",
            "Phone",
            "MobilePhone",
            "Title",
            "AccountId",
            "LeadSource",
            "MailingCity",
            "MailingCountry",
            "Description",
            "OwnerId",
        ],
        enums: &[],
    },
    ObjectSchema {
        system: SystemKind::Salesforce,
        object: "Lead",
        fields: &[
            "FirstName",
            "LastName",
            "Email",
            "Company",
            "Phone",
            "Title",
            "Status",
            "LeadSource",
            "Website",
            "Industry",
            "City",
            "Country",
            "Description",
            "OwnerId",
        ],
        enums: &[(
            "Status",
            &[
                "Open - Not Contacted",
                "Working - Contacted",
                "Closed - Converted",
                "Closed - Not Converted",
            ],
        )],
    },
    ObjectSchema {
        system: SystemKind::Salesforce,
        object: "Task",
        fields: &[
            "Subject",
            "Description",
            "ActivityDate",
            "Status",
            "Priority",
            "Type",
            "TaskSubtype",
            "WhatId",
            "WhoId",
            "OwnerId",
        ],
        enums: &[
            (
                "Status",
                &[
                    "Not Started",
                    "In Progress",
                    "Completed",
                    "Waiting on someone else",
                    "Deferred",
                ],
            ),
            ("Priority", &["High", "Normal", "Low"]),
        ],
    },
    ObjectSchema {
        system: SystemKind::Salesforce,
        object: "Campaign",
        fields: &[
            "Name",
            "Type",
            "Status",
            "StartDate",
            "EndDate",
            "BudgetedCost",
            "ActualCost",
            "ExpectedRevenue",
            "Description",
            "IsActive",
            "ParentId",
            "OwnerId",
        ],
        enums: &[(
            "Status",
            &["Planned", "In Progress", "Completed", "Aborted"],
        )],
    },
];

/// The schema of `object` in `system`, if prmsync knows it.
pub fn object(system: SystemKind, object: &str) -> Option<&'static ObjectSchema> {
    SCHEMAS
        .iter()
        .find(|s| s.system == system && s.object == object)
}

/// What is wrong with `field` as a field of `schema`, with the closest known name as a hint.
pub fn unknown_field(schema: &ObjectSchema, field: &str) -> Option<Option<String>> {
    if schema.fields.contains(&field) || is_custom(schema.system, field) {
        return None;
    }
    Some(closest(field, schema.fields).map(|c| format!("did you mean {c:?}?")))
}

/// The allowed values of a picklist field, where known.
pub fn options(schema: &ObjectSchema, field: &str) -> Option<&'static [&'static str]> {
    schema
        .enums
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, o)| *o)
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_lowercase(), &c.to_lowercase()),
                *c,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_field() {
        let deals = object(SystemKind::HubSpot, "deals").unwrap();
        assert_eq!(
            unknown_field(deals, "dealnme"),
            Some(Some("did you mean \"dealname\"?".into()))
        );
        assert_eq!(unknown_field(deals, "zzz"), Some(None));
        assert_eq!(unknown_field(deals, "amount"), None);
        assert_eq!(unknown_field(deals, "prm_anything"), None);
        let opp = object(SystemKind::Salesforce, "Opportunity").unwrap();
        assert_eq!(unknown_field(opp, "Partner__c"), None);
        assert_eq!(
            unknown_field(opp, "Stagename"),
            Some(Some("did you mean \"StageName\"?".into()))
        );
    }
}

//! The Salesforce simulator's further standard sObjects (Contact, Task, Campaign) with the custom
//! fields the shipped mappings name, created at install like the others in `salesforce.rs`.

use super::Describe;

pub(super) const MORE: &[Describe] = &[
    Describe {
        name: "Contact",
        prefix: "003",
        fields: &[
            "FirstName",
            "LastName",
            "Email",
            "Title",
            "Phone",
            "AccountId",
            "LeadSource",
            "OwnerId",
            "PRM_User_Key__c",
            "Partner_User_Removed__c",
        ],
        external_ids: &["PRM_User_Key__c"],
        required: &["LastName"],
    },
    Describe {
        name: "Task",
        prefix: "00T",
        fields: &[
            "Subject",
            "Description",
            "ActivityDate",
            "Status",
            "Priority",
            "Type",
            "WhatId",
            "WhoId",
            "OwnerId",
            "PRM_Activity_Key__c",
        ],
        external_ids: &["PRM_Activity_Key__c"],
        required: &[],
    },
    Describe {
        name: "Campaign",
        prefix: "701",
        fields: &[
            "Name",
            "Type",
            "Status",
            "StartDate",
            "EndDate",
            "BudgetedCost",
            "ActualCost",
            "IsActive",
            "OwnerId",
            "PRM_MDF_Key__c",
            "Approved_Amount__c",
        ],
        external_ids: &["PRM_MDF_Key__c"],
        required: &["Name"],
    },
];

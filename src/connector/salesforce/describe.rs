//! Salesforce's live schema of an sObject: `GET /services/data/vXX.X/sobjects/{SObject}/describe`,
//! read as [`LiveObject`] (type, `createable`, `updateable`, a restricted picklist's active
//! values).

use serde::Deserialize;

use super::{Salesforce, check_name, data_url};
use crate::connector::ConnectorError;
use crate::connector::schema::{LiveField, LiveKind, LiveObject};
use crate::model::SystemKind;

#[derive(Debug, Deserialize)]
struct Describe {
    fields: Vec<Field>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Field {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    createable: bool,
    #[serde(default)]
    updateable: bool,
    #[serde(default)]
    restricted_picklist: bool,
    #[serde(default)]
    picklist_values: Vec<PicklistValue>,
}

#[derive(Debug, Deserialize)]
struct PicklistValue {
    value: String,
    #[serde(default)]
    active: bool,
}

impl Salesforce {
    /// The fields `object` has now, as the integration user may use them.
    pub async fn read_schema(&self, object: &str) -> Result<LiveObject, ConnectorError> {
        check_name(object)?;
        let path = format!("sobjects/{object}/describe");
        let (_, body) = self
            .call(|http, base| http.get(data_url(base, &path)))
            .await?;
        parse(object, &body)
    }
}

/// Reads a describe answer.
pub fn parse(object: &str, body: &str) -> Result<LiveObject, ConnectorError> {
    let d: Describe = serde_json::from_str(body).map_err(|e| {
        ConnectorError::Transient(format!("unexpected Salesforce describe answer: {e}"))
    })?;
    let fields = d
        .fields
        .into_iter()
        .map(|f| {
            let kind = match f.ty.as_str() {
                "string" | "textarea" | "email" | "phone" | "url" | "encryptedstring" => {
                    LiveKind::Text
                }
                "double" | "currency" | "int" | "long" | "percent" => LiveKind::Number,
                "boolean" => LiveKind::Bool,
                "date" => LiveKind::Date,
                "datetime" => LiveKind::DateTime,
                "picklist" | "multipicklist" | "combobox" => LiveKind::Enum,
                "reference" | "id" => LiveKind::Reference,
                other => LiveKind::Other(other.to_owned()),
            };
            // An unrestricted picklist takes any value; a restricted one only its active values.
            let options = (kind == LiveKind::Enum && f.restricted_picklist).then(|| {
                f.picklist_values
                    .into_iter()
                    .filter(|p| p.active)
                    .map(|p| p.value)
                    .collect()
            });
            let field = LiveField {
                kind,
                createable: f.createable,
                updateable: f.updateable,
                options,
            };
            (f.name, field)
        })
        .collect();
    Ok(LiveObject {
        system: SystemKind::Salesforce,
        object: object.to_owned(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_types_access_and_active_values_of_restricted_picklists() {
        let body = r#"{"name":"Opportunity","fields":[
            {"name":"Amount","type":"currency","createable":true,"updateable":true},
            {"name":"IsWon","type":"boolean","createable":false,"updateable":false},
            {"name":"StageName","type":"picklist","createable":true,"updateable":true,
             "restrictedPicklist":true,"picklistValues":[
                {"value":"Prospecting","active":true},{"value":"Closed Lost","active":false}]},
            {"name":"LeadSource","type":"picklist","createable":true,"updateable":true,
             "restrictedPicklist":false,"picklistValues":[{"value":"Web","active":true}]}]}"#;
        let o = parse("Opportunity", body).unwrap();
        assert_eq!(o.fields["Amount"].kind, LiveKind::Number);
        assert!(!o.fields["IsWon"].updateable);
        assert_eq!(
            o.fields["StageName"].options.as_deref(),
            Some(&["Prospecting".to_owned()][..])
        );
        assert_eq!(o.fields["LeadSource"].options, None);
        assert!(parse("Opportunity", "[]").is_err());
    }
}

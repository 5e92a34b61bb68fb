//! HubSpot's live schema of an object: `GET /crm/v3/properties/{objectType}`, read as
//! [`LiveObject`] (type, whether the API may set the value, an enumeration's visible options).

use serde::Deserialize;

use super::HubSpot;
use crate::connector::ConnectorError;
use crate::connector::schema::{LiveField, LiveKind, LiveObject};
use crate::model::SystemKind;

#[derive(Debug, Deserialize)]
struct Properties {
    results: Vec<Property>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Property {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    options: Vec<PropertyOption>,
    #[serde(default)]
    calculated: bool,
    #[serde(default)]
    modification_metadata: Option<Modification>,
}

#[derive(Debug, Deserialize)]
struct PropertyOption {
    value: String,
    #[serde(default)]
    hidden: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Modification {
    #[serde(default)]
    read_only_value: bool,
}

impl HubSpot {
    /// The properties `object` has now.
    pub async fn read_schema(&self, object: &str) -> Result<LiveObject, ConnectorError> {
        let url = self.url(&format!("crm/v3/properties/{object}"));
        let (_, body) = self.send(self.http.get(url)).await?;
        parse(object, &body)
    }
}

/// Reads a properties answer.
pub fn parse(object: &str, body: &str) -> Result<LiveObject, ConnectorError> {
    let props: Properties = serde_json::from_str(body).map_err(|e| {
        ConnectorError::Transient(format!("unexpected HubSpot properties answer: {e}"))
    })?;
    let fields = props
        .results
        .into_iter()
        .map(|p| {
            let writable = !p.calculated
                && !p
                    .modification_metadata
                    .as_ref()
                    .is_some_and(|m| m.read_only_value);
            let kind = match p.ty.as_str() {
                "string" | "phone_number" => LiveKind::Text,
                "number" => LiveKind::Number,
                "bool" => LiveKind::Bool,
                "date" => LiveKind::Date,
                "datetime" => LiveKind::DateTime,
                "enumeration" => LiveKind::Enum,
                other => LiveKind::Other(other.to_owned()),
            };
            // HubSpot refuses any value of an enumeration that is not one of its options.
            let options = (kind == LiveKind::Enum).then(|| {
                p.options
                    .into_iter()
                    .filter(|o| !o.hidden)
                    .map(|o| o.value)
                    .collect()
            });
            let field = LiveField {
                kind,
                createable: writable,
                updateable: writable,
                options,
            };
            (p.name, field)
        })
        .collect();
    Ok(LiveObject {
        system: SystemKind::HubSpot,
        object: object.to_owned(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_types_writability_and_visible_options() {
        let body = r#"{"results":[
            {"name":"amount","type":"number","fieldType":"number","options":[],"calculated":false,
             "modificationMetadata":{"readOnlyValue":false,"archivable":true}},
            {"name":"hs_object_id","type":"number","calculated":true,
             "modificationMetadata":{"readOnlyValue":true}},
            {"name":"dealstage","type":"enumeration","options":[
                {"label":"Won","value":"closedwon","hidden":false},
                {"label":"Old","value":"legacy","hidden":true}]},
            {"name":"odd","type":"object_coordinates"}]}"#;
        let o = parse("deals", body).unwrap();
        assert_eq!(o.fields["amount"].kind, LiveKind::Number);
        assert!(o.fields["amount"].updateable);
        assert!(!o.fields["hs_object_id"].createable);
        assert_eq!(
            o.fields["dealstage"].options.as_deref(),
            Some(&["closedwon".to_owned()][..])
        );
        assert_eq!(
            o.fields["odd"].kind,
            LiveKind::Other("object_coordinates".into())
        );
        assert!(parse("deals", "<html>").is_err());
    }
}

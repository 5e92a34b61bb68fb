//! HubSpot associations v4 writes: pairs of records associated with the default type
//! (`batch/associate/default`), a type id, or a portal's label (its type id read from
//! `GET /crm/v4/associations/{from}/{to}/labels`, then `batch/create`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{HubSpot, api, id_str};
use crate::connector::ConnectorError;
use crate::model::AssociationType;

/// `batch/create` body.
#[derive(Debug, Serialize)]
struct CreateBody {
    inputs: Vec<CreateInput>,
}

#[derive(Debug, Serialize)]
struct CreateInput {
    from: api::ObjectId,
    to: api::ObjectId,
    types: Vec<TypeSpec>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TypeSpec {
    association_category: String,
    association_type_id: u32,
}

/// `GET .../labels` answer.
#[derive(Debug, Deserialize)]
struct Labels {
    #[serde(default)]
    results: Vec<LabelDef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LabelDef {
    category: String,
    type_id: u32,
    #[serde(default)]
    label: Option<String>,
}

impl HubSpot {
    /// Associates each (from id, to id) pair of `from_type` and `to_type` records with `kind`.
    /// One result per pair; a pair HubSpot did not confirm gets its error (a missing record is
    /// permanent). An unknown label fails every pair, permanently.
    pub async fn associate_as(
        &self,
        from_type: &str,
        to_type: &str,
        kind: &AssociationType,
        pairs: &[(String, String)],
    ) -> Result<Vec<Result<(), ConnectorError>>, ConnectorError> {
        let (category, type_id) = match kind {
            AssociationType::Default => return self.associate(from_type, to_type, pairs).await,
            AssociationType::Typed { category, type_id } => (category.clone(), *type_id),
            AssociationType::Label(label) => self.label_type(from_type, to_type, label).await?,
        };
        let body = CreateBody {
            inputs: pairs
                .iter()
                .map(|(f, t)| CreateInput {
                    from: api::ObjectId { id: f.clone() },
                    to: api::ObjectId { id: t.clone() },
                    types: vec![TypeSpec {
                        association_category: category.clone(),
                        association_type_id: type_id,
                    }],
                })
                .collect(),
        };
        let url = self.url(&format!(
            "crm/v4/associations/{from_type}/{to_type}/batch/create"
        ));
        let (_, text) = self.send(self.http.post(url).json(&body)).await?;
        let resp: Value = serde_json::from_str(&text).map_err(|e| {
            ConnectorError::Transient(format!("unexpected HubSpot associations shape: {e}"))
        })?;
        let done = |f: &str, t: &str| {
            resp["results"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    id_str(&r["fromObjectId"]).as_deref() == Some(f)
                        && id_str(&r["toObjectId"]).as_deref() == Some(t)
                })
            })
        };
        let message = resp["errors"][0]["message"]
            .as_str()
            .unwrap_or("HubSpot did not confirm the association")
            .to_owned();
        Ok(pairs
            .iter()
            .map(|(f, t)| {
                if done(f, t) {
                    Ok(())
                } else {
                    Err(ConnectorError::Permanent(format!(
                        "{from_type} {f} -> {to_type} {t}: {message}"
                    )))
                }
            })
            .collect())
    }

    /// The (category, type id) of `label` between `from_type` and `to_type` in this portal.
    pub(super) async fn label_type(
        &self,
        from_type: &str,
        to_type: &str,
        label: &str,
    ) -> Result<(String, u32), ConnectorError> {
        let url = self.url(&format!("crm/v4/associations/{from_type}/{to_type}/labels"));
        let (_, text) = self.send(self.http.get(url)).await?;
        let labels: Labels = serde_json::from_str(&text).map_err(|e| {
            ConnectorError::Transient(format!("unexpected HubSpot labels shape: {e}"))
        })?;
        let known: Vec<&str> = labels
            .results
            .iter()
            .filter_map(|l| l.label.as_deref())
            .collect();
        labels
            .results
            .iter()
            .find(|l| l.label.as_deref() == Some(label))
            .map(|l| (l.category.clone(), l.type_id))
            .ok_or_else(|| {
                ConnectorError::Permanent(format!(
                    "HubSpot has no association label {label:?} from {from_type} to {to_type} (labels: {})",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ))
            })
    }
}

//! Partner credit on a HubSpot deal: deal-to-company associations (the partner's company) with
//! one label per role, through the v4 associations calls. A role change archives the old label
//! (`batch/labels/archive`) and creates the new one (`batch/create`, which HubSpot treats as
//! already done for a label the pair has). HubSpot has no primary partner on a deal: the primary
//! is known by its role's label.

use serde_json::json;

use super::HubSpot;
use crate::connector::{ConnectorError, PartnerRow};
use crate::model::AssociationType;

impl HubSpot {
    /// Makes the deal's role labels on the companies in `desired` and `previous` equal
    /// `desired`: archives the labels of `previous` that are no longer wanted, then creates
    /// every wanted one.
    pub async fn set_partners(
        &self,
        deal_type: &str,
        deal_id: &str,
        company_type: &str,
        desired: &[PartnerRow],
        previous: &[PartnerRow],
    ) -> Result<(), ConnectorError> {
        let key = |p: &PartnerRow| (p.company_id.clone(), p.role.clone());
        let wanted: Vec<(String, String)> = desired.iter().map(key).collect();
        let mut gone: Vec<(String, String)> = previous
            .iter()
            .map(key)
            .filter(|k| !wanted.contains(k))
            .collect();
        gone.sort();
        gone.dedup();
        for (company, role) in &gone {
            let (category, type_id) = self.label_type(deal_type, company_type, role).await?;
            let body = json!({"inputs": [{
                "from": {"id": deal_id},
                "to": {"id": company},
                "types": [{"associationCategory": category, "associationTypeId": type_id}],
            }]});
            let url = self.url(&format!(
                "crm/v4/associations/{deal_type}/{company_type}/batch/labels/archive"
            ));
            self.send(self.http.post(url).json(&body)).await?;
        }
        let mut roles: Vec<&str> = wanted.iter().map(|(_, r)| r.as_str()).collect();
        roles.sort_unstable();
        roles.dedup();
        for role in roles {
            let pairs: Vec<(String, String)> = wanted
                .iter()
                .filter(|(_, r)| r == role)
                .map(|(c, _)| (deal_id.to_owned(), c.clone()))
                .collect();
            let kind = AssociationType::Label(role.to_owned());
            for r in self
                .associate_as(deal_type, company_type, &kind, &pairs)
                .await?
            {
                r?;
            }
        }
        Ok(())
    }
}

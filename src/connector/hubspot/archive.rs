//! HubSpot deletes: `POST /crm/v3/objects/{type}/batch/archive` (archived records stay
//! restorable for 90 days and show in `?archived=true` listings).

use serde_json::{Value, json};

use super::{HubSpot, api, parse_time};
use crate::connector::{ConnectorError, Deletion};

/// Pages of archived records one [`HubSpot::read_archived`] call reads at most.
const MAX_ARCHIVED_PAGES: usize = 50;

/// The most ids one `batch/archive` call takes.
pub const MAX_ARCHIVE: usize = 100;

impl HubSpot {
    /// Archives objects by id, `MAX_ARCHIVE` per call. HubSpot answers 204 for the whole batch
    /// (an id that is already archived is no error), so every id of a call that succeeded is done.
    pub async fn archive(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<Vec<Result<(), ConnectorError>>, ConnectorError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_ARCHIVE) {
            let inputs: Vec<_> = chunk.iter().map(|id| json!({ "id": id })).collect();
            let url = self.url(&format!("crm/v3/objects/{object}/batch/archive"));
            match self
                .send(self.http.post(url).json(&json!({ "inputs": inputs })))
                .await
            {
                Ok(_) => out.extend(chunk.iter().map(|_| Ok(()))),
                // Nothing of this call is known to be done; earlier calls' results stand.
                Err(e) if out.is_empty() => return Err(e),
                Err(e) => out.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
        }
        Ok(out)
    }

    /// Records of `object` archived at or after `since_ms`, from `GET …?archived=true` (HubSpot
    /// lists archived records by id, not by time: every page is read, at most
    /// `MAX_ARCHIVED_PAGES` of 100, and filtered on `archivedAt`).
    pub async fn read_archived(
        &self,
        object: &str,
        since_ms: i64,
    ) -> Result<Vec<Deletion>, ConnectorError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_ARCHIVED_PAGES {
            let mut url = self.url(&format!("crm/v3/objects/{object}"));
            url.query_pairs_mut()
                .append_pair("archived", "true")
                .append_pair("limit", "100");
            if let Some(a) = &after {
                url.query_pairs_mut().append_pair("after", a);
            }
            let (_, body) = self.send(self.http.get(url)).await?;
            let page: Value = serde_json::from_str(&body).map_err(|e| {
                ConnectorError::Transient(format!("unexpected HubSpot archived listing: {e}"))
            })?;
            for r in page["results"].as_array().into_iter().flatten() {
                let (Some(id), Some(at)) = (
                    r["id"].as_str(),
                    r["archivedAt"].as_str().and_then(parse_time),
                ) else {
                    continue;
                };
                if at >= since_ms {
                    out.push(Deletion {
                        id: id.to_owned(),
                        deleted_ms: at,
                        merged_into: None,
                    });
                }
            }
            let paging: Option<api::Paging> = serde_json::from_value(page["paging"].clone()).ok();
            match paging.and_then(|p| p.next) {
                Some(n) => after = Some(n.after),
                None => break,
            }
        }
        Ok(out)
    }
}

//! Which records of a flow still have a write to the target queued in the outbox (for the
//! planner: a lookup into such a record waits for it instead of failing).

use rusqlite::params_from_iter;

use super::{Store, StoreError};
use crate::model::Direction;

impl Store {
    /// Of `source_ids`, those whose `flow` has a `to_target` write still in the outbox.
    pub async fn queued_to_target(
        &self,
        flow: String,
        source_ids: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        if source_ids.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| super::pg::dlq::queued_to_target(c, &flow, &source_ids))
                .await;
        }
        self.call(move |conn| {
            let mut out = Vec::new();
            for chunk in source_ids.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "SELECT source_id FROM outbox WHERE flow = ? AND direction = ? AND source_id IN ({marks})"
                );
                let mut stmt = conn.prepare(&sql)?;
                let args = [flow.as_str(), Direction::ToTarget.as_str()]
                    .into_iter()
                    .chain(chunk.iter().map(String::as_str));
                let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(0))?;
                for r in rows {
                    out.push(r?);
                }
            }
            Ok(out)
        })
        .await
    }
}

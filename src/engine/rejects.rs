//! Poll rejects: list items a connector could not read as records (no key, no modification
//! time) go to the dead letters with their raw payload, once each, so one bad item stops only
//! itself and the object's poll goes on.

use crate::connector::Reject;
use crate::model::ObjectRef;
use crate::store::{DeadLetter, Store, StoreError};

/// The dead-letter origin of poll rejects (not replayable: the poller reads the item again once
/// it is fixed at the vendor).
pub const ORIGIN: &str = "poll";

/// Dead-letters `rejects` read from `object`; returns how many were new.
pub async fn dead_letter(
    store: &Store,
    object: &ObjectRef,
    rejects: Vec<Reject>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    if rejects.is_empty() {
        return Ok(0);
    }
    let letters = rejects
        .into_iter()
        .map(|r| {
            tracing::warn!(system = %object.system, object = %object.object, id = ?r.id, reason = %r.reason, "unreadable item dead-lettered; the poll goes on");
            DeadLetter {
                origin: ORIGIN,
                flow: None,
                system: object.system,
                object: object.object.clone(),
                record_id: r.id.unwrap_or_default(),
                payload: r.raw,
                reason: r.reason,
                attempts: 0,
            }
        })
        .collect();
    store.dead_letter_poll_rejects(letters, now_ms).await
}

//! Resync (`prmsync resync`): reads a flow's source object again, page by page from the
//! request's start, and stages every record (or the requested ones) under an event id of its
//! own, so the planner plans each again with the mapping in force even though its content did
//! not change (staging otherwise dedupes on content). Each page commits with the resync's next
//! position, so a restart continues where it stopped; writes go through the normal outbox.

use std::sync::Arc;

use super::{Engine, EngineError, poll_targets};
use crate::mapping::Mapping;
use crate::model::{Change, ObjectRef};
use crate::store::{Resync, Store};

/// Why a resync request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("no active flow is named {flow:?}; flows: {known}")]
    UnknownFlow { flow: String, known: String },
    #[error("--since {0:?}: expected a date (YYYY-MM-DD) or an RFC 3339 instant")]
    BadSince(String),
    #[error("--ids: name at least one record id")]
    NoIds,
}

/// What to read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every record of the flow's source.
    All,
    /// Records modified at or after this instant (epoch ms).
    Since(i64),
    /// Only these source records.
    Ids(Vec<String>),
}

impl Scope {
    /// Parses `--since` text: a calendar date (midnight UTC) or an RFC 3339 instant.
    pub fn since(text: &str) -> Result<Scope, ResyncError> {
        let t = text.trim();
        if let Ok(ts) = t.parse::<jiff::Timestamp>() {
            return Ok(Scope::Since(ts.as_millisecond()));
        }
        let date: jiff::civil::Date = t
            .parse()
            .map_err(|_| ResyncError::BadSince(text.to_owned()))?;
        let ts = date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|_| ResyncError::BadSince(text.to_owned()))?
            .timestamp();
        Ok(Scope::Since(ts.as_millisecond()))
    }

    /// `--ids`: at least one.
    pub fn ids(ids: Vec<String>) -> Result<Scope, ResyncError> {
        let ids: Vec<String> = ids
            .into_iter()
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect();
        if ids.is_empty() {
            return Err(ResyncError::NoIds);
        }
        Ok(Scope::Ids(ids))
    }
}

/// The event id of a record version staged by resync `id`: unique to the resync, so the version
/// is planned again, and stable within it, so a page read twice (after a restart) stages once.
pub fn resync_change(object: &ObjectRef, record: crate::model::Record, id: i64) -> Change {
    let mut c = Change::versioned(object.clone(), record);
    c.event_id = format!("{}:resync{id}", c.event_id);
    c
}

/// Records a resync of `flow` (one of `mappings`) in the state file, for the poller of the
/// flow's source object to carry out; returns the request's id and that object.
pub async fn request(
    store: &Store,
    mappings: &[Arc<Mapping>],
    flow: &str,
    scope: Scope,
    now_ms: i64,
) -> Result<(i64, ObjectRef), EngineError> {
    let Some(m) = mappings.iter().find(|m| m.name == flow) else {
        let known: Vec<&str> = mappings.iter().map(|m| m.name.as_str()).collect();
        return Err(EngineError::Resync(ResyncError::UnknownFlow {
            flow: flow.to_owned(),
            known: known.join(", "),
        }));
    };
    let (since, ids) = match scope {
        Scope::All => (0, None),
        Scope::Since(ms) => (ms, None),
        Scope::Ids(ids) => (0, Some(ids)),
    };
    let id = store
        .request_resync(m.name.clone(), m.source.clone(), since, ids, now_ms)
        .await?;
    Ok((id, m.source.clone()))
}

impl Engine {
    /// [`request`] against the mappings in force, waking the poller of the flow's source.
    pub async fn request_resync(&self, flow: &str, scope: Scope) -> Result<i64, EngineError> {
        let (id, source) =
            request(&self.store, &self.mappings(), flow, scope, (self.clock)()).await?;
        tracing::info!(flow, resync = id, "resync requested");
        self.signals.poller(&source).notify_one();
        Ok(id)
    }

    /// Reads up to `max_pages` pages of the oldest unfinished resync of `object`, each page staged
    /// with the resync's next position. Returns (changes staged, whether no resync of `object`
    /// is left unfinished).
    pub async fn resync_pages(
        &self,
        object: &ObjectRef,
        max_pages: usize,
    ) -> Result<(usize, bool), EngineError> {
        let mut staged = 0;
        for _ in 0..max_pages.max(1) {
            let Some(r) = self.store.open_resync(object.clone()).await? else {
                return Ok((staged, true));
            };
            staged += self.resync_page(&r).await?;
        }
        Ok((
            staged,
            self.store.open_resync(object.clone()).await?.is_none(),
        ))
    }

    /// One page of resync `r`.
    async fn resync_page(&self, r: &Resync) -> Result<usize, EngineError> {
        let object = &r.object;
        let Some(conn) = self.connector(object.system) else {
            // The source system is not connected (a config change): nothing can be read.
            return Ok(self
                .store
                .stage_resync_page(r.id, Vec::new(), None, (self.clock)())
                .await?);
        };
        let fields = poll_targets(&self.mappings())
            .into_iter()
            .find(|(o, _)| o == object)
            .map(|(_, f)| f)
            .unwrap_or_default();
        let read = self
            .settings
            .retry
            .run(|| async {
                conn.read_changes(&object.object, r.since_ms, &fields, r.page.as_deref())
                    .await
            })
            .await;
        let read = match read {
            Ok(read) => read,
            // A stored page token the system no longer honours: read this resync again from
            // its start (records already staged by it are not staged twice).
            Err(error) if r.page.is_some() && !error.is_retryable() => {
                tracing::warn!(resync = r.id, object = %object, error = %error, "the resync's page token was refused; reading it again from its start");
                self.store.restart_resync(r.id).await?;
                return Ok(0);
            }
            Err(error) => {
                return Err(EngineError::Connector {
                    system: object.system,
                    error,
                });
            }
        };
        let changes: Vec<Change> = read
            .records
            .into_iter()
            .filter(|rec| r.ids.as_ref().is_none_or(|ids| ids.contains(&rec.id)))
            .map(|rec| resync_change(object, rec, r.id))
            .collect();
        let finished = read.next_page.is_none();
        let n = self
            .store
            .stage_resync_page(r.id, changes, read.next_page, (self.clock)())
            .await?;
        if n > 0 {
            self.signals.planner.notify_one();
        }
        if finished {
            tracing::info!(resync = r.id, flow = %r.flow, staged = r.staged + n as i64, "resync read finished");
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_an_instant_and_refuses_other_text() {
        assert_eq!(
            Scope::since("2026-01-02").expect("date"),
            Scope::Since(1_767_312_000_000)
        );
        assert_eq!(
            Scope::since("2026-01-02T00:00:01Z").expect("instant"),
            Scope::Since(1_767_312_001_000)
        );
        let e = Scope::since("last tuesday").expect_err("not a date");
        assert!(e.to_string().contains("expected a date"), "{e}");
        assert!(matches!(
            Scope::ids(vec![" ".into()]),
            Err(ResyncError::NoIds)
        ));
    }

    #[test]
    fn a_resync_stages_a_version_again_under_its_own_event_id() {
        let object = ObjectRef {
            system: crate::model::SystemKind::PartnerStack,
            object: "deals".into(),
        };
        let rec = crate::model::Record {
            id: "deal_1".into(),
            modified_ms: 5,
            fields: serde_json::Map::new(),
        };
        let normal = Change::versioned(object.clone(), rec.clone());
        let first = resync_change(&object, rec.clone(), 1);
        let again = resync_change(&object, rec.clone(), 1);
        let second = resync_change(&object, rec, 2);
        assert_ne!(first.event_id, normal.event_id);
        assert_eq!(first.event_id, again.event_id);
        assert_ne!(first.event_id, second.event_id);
    }
}

//! `prmsync dlq list|show|replay|drop`: dead letters for operators, printed for a terminal or JSON.

use std::path::Path;

use serde::Serialize;

use crate::cli::DlqAction;
use crate::store::dlq::{DeadLetterRow, Selection};
use crate::store::{Store, StoreError};

/// Why a dlq verb failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no dead letter with id {0} (see `prmsync dlq list`)")]
    NotFound(i64),
    #[error("cannot print JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl DlqError {
    /// Whether trying again later can help (a locked or busy state file).
    pub fn is_retryable(&self) -> bool {
        matches!(self, DlqError::Store(e) if e.is_retryable())
    }
}

fn selection(ids: Vec<i64>, all: bool) -> Selection {
    if all {
        Selection::All
    } else {
        Selection::Ids(ids)
    }
}

fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

fn line(d: &DeadLetterRow) -> String {
    format!(
        "{:>6}  {}  {:<6} {} {}/{} {}  ({} attempt(s)): {}",
        d.id,
        time(d.created_ms),
        d.origin,
        d.flow.as_deref().unwrap_or("-"),
        d.system,
        d.object,
        d.record_id,
        d.attempts,
        d.reason
    )
}

fn out<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<String, DlqError> {
    if json {
        Ok(format!("{}\n", serde_json::to_string_pretty(value)?))
    } else {
        Ok(text(value))
    }
}

/// Runs one dlq verb against the state file at `state` and returns what to print.
pub async fn run(
    state: &Path,
    action: DlqAction,
    json: bool,
    now_ms: i64,
) -> Result<String, DlqError> {
    run_on(&Store::open(state)?, action, json, now_ms).await
}

/// Runs one dlq verb against an open store (a SQLite file or a PostgreSQL schema).
pub async fn run_on(
    store: &Store,
    action: DlqAction,
    json: bool,
    now_ms: i64,
) -> Result<String, DlqError> {
    match action {
        DlqAction::List { limit } => {
            let rows = store.dead_letters(limit).await?;
            out(json, &rows, |rows| {
                if rows.is_empty() {
                    return "no dead letters\n".to_owned();
                }
                let mut s: String = rows.iter().map(|d| line(d) + "\n").collect();
                s.push_str("inspect one with `prmsync dlq show ID`; put it back with `prmsync dlq replay ID`\n");
                s
            })
        }
        DlqAction::Show { id } => {
            let d = store.dead_letter(id).await?.ok_or(DlqError::NotFound(id))?;
            let payload = serde_json::to_string_pretty(&d.payload)?;
            out(json, &d, |d| {
                format!(
                    "{}\nreplayable: {}\npayload:\n{}\n",
                    line(d),
                    if d.replayable {
                        "yes"
                    } else {
                        "no (recorded before replay support)"
                    },
                    payload
                )
            })
        }
        DlqAction::Replay { ids, all } => {
            let r = store
                .replay_dead_letters(selection(ids, all), now_ms)
                .await?;
            out(json, &r, |r| {
                let mut s = format!(
                    "requeued {} write(s), restaged {} change(s); {} superseded by a newer queued write\n",
                    r.requeued_writes, r.restaged_changes, r.superseded
                );
                if !r.missing.is_empty() {
                    s.push_str(&format!("no dead letter with id(s) {:?}\n", r.missing));
                }
                if !r.not_replayable.is_empty() {
                    s.push_str(&format!("not replayable (kept): {:?}\n", r.not_replayable));
                }
                s
            })
        }
        DlqAction::Drop { ids, all } => {
            let (n, missing) = store.drop_dead_letters(selection(ids, all)).await?;
            let value = serde_json::json!({ "dropped": n, "missing": missing });
            out(json, &value, |_| {
                let mut s = format!("dropped {n} dead letter(s)\n");
                if !missing.is_empty() {
                    s.push_str(&format!("no dead letter with id(s) {missing:?}\n"));
                }
                s
            })
        }
    }
}

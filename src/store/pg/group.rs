//! The PostgreSQL writer thread's loop, with group commit exactly as `store/group.rs` does it for
//! SQLite: webhook stagings queued together share one transaction, each in its own savepoint.

use postgres::Client;
use tokio::sync::{mpsc, oneshot};

use super::super::StoreError;
use super::conn::Conn;
use super::queries;
use crate::model::Change;

/// At most this many stagings share one commit.
const MAX_GROUP: usize = 256;

/// Work for the writer thread.
pub(super) enum Job {
    /// Any store verb: runs alone, in the order it was queued.
    Run(Box<dyn FnOnce(&mut Conn) + Send>),
    /// Changes for the inbox (a webhook's): committed with the stagings queued right behind it.
    Stage(Staging),
}

/// One request's changes and where its answer goes.
pub(super) struct Staging {
    pub changes: Vec<Change>,
    pub now_ms: i64,
    pub reply: oneshot::Sender<Result<usize, StoreError>>,
}

/// Runs jobs until every handle is gone (see `store/group.rs`).
pub(super) fn run(conn: &mut Conn, rx: &mut mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match super::conn::next_job(rx, conn) {
                Some(job) => job,
                None => return,
            },
        };
        match job {
            Job::Run(f) => f(conn),
            Job::Stage(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Job::Stage(s)) => group.push(s),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit(conn, group);
            }
        }
    }
}

/// Stages every request of `group` in one transaction and answers each after the commit. While
/// the connection is lost every request gets that error.
fn commit(conn: &mut Conn, group: Vec<Staging>) {
    match conn.run(|client| stage_all(client, &group)) {
        Ok(results) => {
            for (s, r) in group.into_iter().zip(results) {
                // The receiver is gone only if the caller was cancelled.
                let _ = s.reply.send(r);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, requests = group.len(), "group commit of webhook changes failed");
            let why = e.to_string();
            for s in group {
                // Another daemon holds the state now: said as such, not as a retryable failure.
                let err = match &e {
                    StoreError::DaemonLockLost(schema) => {
                        StoreError::DaemonLockLost(schema.clone())
                    }
                    _ => StoreError::GroupCommit(why.clone()),
                };
                let _ = s.reply.send(Err(err));
            }
        }
    }
}

/// Each request in its own savepoint: a request whose insert fails is rolled back and answered
/// with its error, the others commit. An error here (begin, commit) fails them all.
fn stage_all(
    client: &mut Client,
    group: &[Staging],
) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
    let mut tx = client.transaction()?;
    let mut results = Vec::with_capacity(group.len());
    for s in group {
        let mut sp = tx.transaction()?;
        match queries::insert_changes(&mut sp, &s.changes, s.now_ms) {
            Ok(n) => {
                sp.commit()?;
                results.push(Ok(n));
            }
            // Dropping the savepoint rolls this request back.
            Err(e) => results.push(Err(e)),
        }
    }
    // Fleet mode: the daemon holding this tenant's lease may be another one; it LISTENs
    // (`fleet::listen`) and wakes the tenant's planner. Delivered at commit, never before.
    if results.iter().any(|r| matches!(r, Ok(n) if *n > 0)) {
        tx.execute(
            "SELECT pg_notify($1, current_schema())",
            &[&super::fleet::INBOX_CHANNEL],
        )?;
    }
    tx.commit()?;
    Ok(results)
}

//! The writer thread's loop, with group commit: webhook stagings queued together share one
//! transaction (one WAL sync), each in its own savepoint so a failing request fails alone.

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, queries};
use crate::model::Change;

/// At most this many stagings share one commit.
const MAX_GROUP: usize = 256;

/// Work for the writer thread.
pub(super) enum Job {
    /// Any store verb: runs alone, in the order it was queued.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Changes for the inbox (a webhook's): committed with the stagings queued right behind it.
    Stage(Staging),
}

/// One request's changes and where its answer goes.
pub(super) struct Staging {
    pub changes: Vec<Change>,
    pub now_ms: i64,
    pub reply: oneshot::Sender<Result<usize, StoreError>>,
}

/// Runs jobs until every handle is gone. Consecutive stagings commit together; a staging never
/// waits for more to arrive (it takes only what is already queued), so a lone webhook costs what
/// it did before and a burst shares its syncs.
pub(super) fn run(conn: &mut Connection, rx: &mut mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.blocking_recv() {
                Some(job) => job,
                None => return,
            },
        };
        match job {
            Job::Run(f) => f(conn),
            Job::Stage(first) => {
                let (group, after) = gather(first, rx);
                next = after;
                commit(conn, group);
            }
        }
    }
}

/// `first` and the stagings already queued right behind it (up to [`MAX_GROUP`]); also the
/// first other job taken from the queue, which runs next.
fn gather(first: Staging, rx: &mut mpsc::Receiver<Job>) -> (Vec<Staging>, Option<Job>) {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(Job::Stage(s)) => group.push(s),
            Ok(other) => return (group, Some(other)),
            Err(_) => break,
        }
    }
    (group, None)
}

/// Stages every request of `group` in one transaction and answers each after the commit.
fn commit(conn: &mut Connection, group: Vec<Staging>) {
    let staged = stage_all(conn, &group);
    match staged {
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
                let _ = s.reply.send(Err(StoreError::GroupCommit(why.clone())));
            }
        }
    }
}

/// Each request in its own savepoint: a request whose insert fails is rolled back and answered
/// with its error, the others commit. An error here (begin, commit) fails them all.
fn stage_all(
    conn: &mut Connection,
    group: &[Staging],
) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for s in group {
        let sp = tx.savepoint()?;
        match queries::insert_changes(&sp, &s.changes, s.now_ms) {
            Ok(n) => {
                sp.commit()?;
                results.push(Ok(n));
            }
            // Dropping the savepoint rolls this request back.
            Err(e) => results.push(Err(e)),
        }
    }
    tx.commit()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::failpoint::FailPoints;
    use crate::model::{ObjectRef, Record, SystemKind};

    fn change(id: &str) -> Change {
        let object = ObjectRef {
            system: SystemKind::PartnerStack,
            object: "deals".into(),
        };
        let fields = json!({"key": id}).as_object().cloned().unwrap_or_default();
        Change::versioned(
            object,
            Record {
                id: id.into(),
                modified_ms: 1,
                fields,
            },
        )
    }

    fn staging(ids: &[&str]) -> (Staging, oneshot::Receiver<Result<usize, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let changes = ids.iter().map(|id| change(id)).collect();
        let s = Staging {
            changes,
            now_ms: 5,
            reply,
        };
        (s, rx)
    }

    fn inbox_ids(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT record_id FROM inbox ORDER BY record_id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// One request whose insert fails is answered with its error and leaves nothing behind; the
    /// requests committed with it are stored and answered with their counts, a repeated event
    /// counted once across the group.
    #[test]
    fn a_failing_request_fails_alone_in_its_group() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate(&mut conn, &FailPoints::none()).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON inbox WHEN NEW.record_id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;",
        )
        .unwrap();
        let (a, mut ra) = staging(&["a1", "a2"]);
        let (bad, mut rbad) = staging(&["b1", "poison"]);
        let (c, mut rc) = staging(&["c1", "a1"]);
        commit(&mut conn, vec![a, bad, c]);
        assert_eq!(ra.try_recv().unwrap().unwrap(), 2);
        let err = rbad.try_recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("poisoned row"), "{err}");
        assert_eq!(rc.try_recv().unwrap().unwrap(), 1, "a1 was staged by a");
        assert_eq!(inbox_ids(&conn), ["a1", "a2", "c1"]);
    }

    /// Stagings queued behind each other form one group, which stops at the next other job.
    #[test]
    fn a_group_takes_the_stagings_queued_behind_it() {
        let (tx, mut rx) = mpsc::channel(16);
        let (first, _r0) = staging(&["x0"]);
        let mut answers = Vec::new();
        for i in 1..3 {
            let (s, r) = staging(&[&format!("x{i}")]);
            tx.try_send(Job::Stage(s)).unwrap();
            answers.push(r);
        }
        tx.try_send(Job::Run(Box::new(|_| {}))).unwrap();
        let (s, _r3) = staging(&["y"]);
        tx.try_send(Job::Stage(s)).unwrap();
        let (group, next) = gather(first, &mut rx);
        assert_eq!(group.len(), 3);
        assert!(matches!(next, Some(Job::Run(_))));
        let (group, next) = gather(staging(&["z"]).0, &mut rx);
        assert_eq!(group.len(), 2, "z and y");
        assert!(next.is_none());
    }

    /// A store verb queued among stagings runs after the stagings before it and before those
    /// after it, and every staging is answered once durable.
    #[test]
    fn stagings_and_verbs_keep_queue_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate(&mut conn, &FailPoints::none()).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let mut answers = Vec::new();
        for i in 0..3 {
            let (s, r) = staging(&[&format!("x{i}")]);
            tx.try_send(Job::Stage(s)).unwrap();
            answers.push(r);
        }
        let (seen_tx, mut seen) = oneshot::channel();
        tx.try_send(Job::Run(Box::new(move |conn| {
            let _ = seen_tx.send(inbox_ids(conn));
        })))
        .unwrap();
        let (s, mut last) = staging(&["y"]);
        tx.try_send(Job::Stage(s)).unwrap();
        drop(tx);
        run(&mut conn, &mut rx);
        for mut r in answers {
            assert_eq!(r.try_recv().unwrap().unwrap(), 1);
        }
        assert_eq!(seen.try_recv().unwrap(), ["x0", "x1", "x2"]);
        assert_eq!(last.try_recv().unwrap().unwrap(), 1);
        assert_eq!(inbox_ids(&conn), ["x0", "x1", "x2", "y"]);
    }
}

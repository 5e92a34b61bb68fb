//! The PostgreSQL backend's plumbing: a writer thread and a reader thread, each owning one connection.
//!
//! It mirrors the SQLite backend: verbs run as closures on the writer thread in queue order, every
//! write in one transaction, and webhook stagings queued together commit together (each in its own
//! savepoint). Status and metrics reads run on a second connection, never behind the writer. A
//! `postgres::Client` blocks on its own small runtime, so both live on plain threads (a client must
//! not be created or dropped on an async worker). Each thread's connection is made again when the
//! server ends the session or the socket breaks (`conn.rs`).

pub(super) mod associations;
mod conn;
pub(super) mod dlq;
pub(super) mod erase_requests;
pub(super) mod erasure;
pub mod fleet;
mod group;
pub(super) mod migrations;
pub(super) mod queries;
pub(super) mod read_only;
pub(super) mod registrations;
pub(super) mod resync;
pub(super) mod retention;
pub(super) mod schema_drift;

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use conn::Conn;
use postgres::{Client, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::model::Change;

/// Bound on queued jobs, as for SQLite: callers wait (async) when the writer is this far behind.
const QUEUE_DEPTH: usize = 256;
/// A fenced (fleet) store's connection closes after this many leases without a job.
pub const PARK_AFTER_LEASES: u32 = 2;

/// Where a PostgreSQL state lives: the server and the schema that holds this state's tables.
#[derive(Clone)]
pub struct PgTarget {
    /// `postgres://user:password@host:port/db` or a key=value connection string.
    pub url: String,
    /// The schema of this state (one per tenant); created when missing.
    pub schema: String,
}

impl std::fmt::Debug for PgTarget {
    // The URL may hold a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &"<redacted>")
            .field("schema", &self.schema)
            .finish()
    }
}

impl PgTarget {
    /// Checks the schema name: it is spliced into `search_path` and DDL, so only a plain
    /// lower-case identifier is accepted.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.schema;
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "state schema {s:?} must be a lower-case identifier (a-z, 0-9, _; at most 63)"
            ))
        }
    }
}

type WriterJob = group::Job;
type ReadJob = Box<dyn FnOnce(&mut Conn) + Send>;

/// How a writer transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Waits for the WAL flush (acknowledged work).
    Durable,
    /// Durable, and in fleet mode the lease must also be unexpired (taking work to send).
    Claim,
    /// Does not wait for the WAL flush (work that can be derived again).
    Relaxed,
}

/// A handle to a PostgreSQL state. Cheap to clone; both threads stop when the last handle drops.
#[derive(Debug, Clone)]
pub struct PgStore {
    jobs: mpsc::Sender<WriterJob>,
    reads: mpsc::Sender<ReadJob>,
    schema: String,
    schema_version: i64,
    /// Fleet mode: the lease every write-side commit checks (`fleet.rs`).
    fence: Option<Arc<fleet::Fence>>,
}

impl PgStore {
    /// Connects, creates the schema and applies pending migrations, and starts both threads.
    /// Blocks the calling thread while it connects (as opening a SQLite file does).
    pub fn open(target: &PgTarget) -> Result<PgStore, StoreError> {
        PgStore::open_steps(target, migrations::STEPS, None, None)
    }

    /// A tenant's state in fleet mode: every write-side commit checks `fence`, and the server
    /// ends the writer's session if it sits in a transaction for a lease (a stalled daemon's
    /// open transaction would otherwise keep the lease row locked from the next holder). Each
    /// of its two connections is closed after [`PARK_AFTER_LEASES`] leases without use and made
    /// again when next needed: every daemon opens every tenant, but keeps connections only to
    /// those it runs (or that webhooks, status and `prmsync` commands use).
    pub fn open_fenced(target: &PgTarget, fence: Arc<fleet::Fence>) -> Result<PgStore, StoreError> {
        let idle = fence.lease;
        PgStore::open_steps(target, migrations::STEPS, Some(fence), Some(idle))
    }

    /// `idle`: the writer connection's `idle_in_transaction_session_timeout`; a fenced store's
    /// connections also close after [`PARK_AFTER_LEASES`] leases without a job.
    fn open_steps(
        target: &PgTarget,
        steps: &'static [(i64, &'static str, &'static str)],
        fence: Option<Arc<fleet::Fence>>,
        idle: Option<std::time::Duration>,
    ) -> Result<PgStore, StoreError> {
        target.validate().map_err(StoreError::PgMigration)?;
        let park_after = fence.as_ref().map(|f| f.lease * PARK_AFTER_LEASES);
        let (jobs, mut rx) = mpsc::channel::<WriterJob>(QUEUE_DEPTH);
        let (reads, mut read_rx) = mpsc::channel::<ReadJob>(QUEUE_DEPTH);
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let t = target.clone();
        spawn("prmsync-pg-writer", move || {
            // Migrations run once, here; a reconnect only restores the session's settings.
            let mut conn = match Conn::open(&t, "writer", idle, park_after).and_then(|mut c| {
                let v = c.run(|client| migrations::apply(client, &t.schema, steps))?;
                Ok((c, v))
            }) {
                Ok((c, v)) => {
                    let _ = ready_tx.send(Ok(v));
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            group::run(&mut conn, &mut rx);
        })?;
        let schema_version = ready_rx.recv().map_err(|_| StoreError::Closed)??;
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let t = target.clone();
        spawn("prmsync-pg-reader", move || {
            let mut conn = match Conn::open(&t, "reader", None, park_after) {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Some(job) = conn::next_job(&mut read_rx, &mut conn) {
                job(&mut conn);
            }
        })?;
        ready_rx.recv().map_err(|_| StoreError::Closed)??;
        Ok(PgStore {
            jobs,
            reads,
            schema: target.schema.clone(),
            schema_version,
            fence,
        })
    }

    /// The schema holding this state.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The migration step the schema is at.
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// Takes the daemon lock of this schema (a session advisory lock on the writer connection,
    /// released when the store closes or the connection drops): `false` when another daemon
    /// holds it. A reconnect takes it again; if another daemon took it meanwhile, every later
    /// write fails with [`StoreError::DaemonLockLost`].
    pub async fn hold_daemon_lock(&self) -> Result<bool, StoreError> {
        self.on_conn(Conn::hold_daemon_lock).await
    }

    /// Runs `f` on the writer thread's connection itself (not only its client).
    async fn on_conn<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = group::Job::Run(Box::new(move |conn| {
            if tx.send(f(conn)).is_err() {
                tracing::debug!("store caller went away before its result was ready");
            }
        }));
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the writer thread (outside any transaction) and returns its result. While the
    /// connection is lost it answers [`StoreError::PgConnect`] without running `f`.
    pub(in crate::store) async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Client) -> Result<R, StoreError> + Send + 'static,
    {
        self.on_conn(move |conn| conn.run(f)).await
    }

    /// Runs `f` on the reader connection: never behind the writer.
    pub(in crate::store) async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Client) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(conn.run(f));
        });
        self.reads.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in one transaction on the writer thread; durable when this returns.
    pub(in crate::store) async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.transact(Commit::Durable, f).await
    }

    /// Like [`PgStore::write`] for taking work that will be sent to a system (the outbox claim):
    /// in fleet mode the lease must also be unexpired, so a batch is never taken under a lease
    /// another daemon may already hold.
    pub(in crate::store) async fn write_claim<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.transact(Commit::Claim, f).await
    }

    /// Like [`PgStore::write`] for work that can be derived again after a server crash (as the
    /// SQLite backend's `synchronous = NORMAL` writes): the commit does not wait for the WAL
    /// flush. A crash may lose the last such commits, never corrupt anything.
    pub(in crate::store) async fn write_relaxed<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.transact(Commit::Relaxed, f).await
    }

    /// Runs `f` in one transaction on the writer, behind the fence (fleet mode), and commits.
    async fn transact<R, F>(&self, kind: Commit, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let fence = self.fence.clone();
        self.call(move |client| {
            let mut tx = client.transaction()?;
            if kind == Commit::Relaxed {
                tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            }
            if let Some(fence) = &fence {
                fence.check(&mut tx, kind == Commit::Claim)?;
            }
            let r = f(&mut tx)?;
            tx.commit()?;
            Ok(r)
        })
        .await
    }

    /// Stages webhook changes: stagings queued together commit together (see `group.rs`); each
    /// answers once its changes are durable.
    pub(in crate::store) async fn stage(
        &self,
        changes: Vec<Change>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(group::Job::Stage(group::Staging {
                changes,
                now_ms,
                reply,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| StoreError::PgConnect(format!("cannot start the {name} thread: {e}")))
}

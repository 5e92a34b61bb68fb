//! The state store: one SQLite file behind one writer thread; the only module that knows SQL.
//!
//! Every write runs in `BEGIN IMMEDIATE` on the writer thread, so the async runtime never blocks on
//! SQLite and two writes never interleave. Callers speak in domain verbs (`stage_changes`,
//! `commit_plan`, `complete_writes`); no SQL leaves this module.

mod associations;
pub mod attribution;
mod busy;
#[cfg(test)]
mod conformance;
pub mod copy;
mod counters;
mod credentials;
mod credits;
mod digest;
pub mod dlq;
pub mod erase_requests;
pub mod erasure;
mod group;
mod migrations;
mod pending;
pub mod pg;
mod queries;
mod registrations;
mod resync;
pub mod retention;
mod schema_drift;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::failpoint::FailPoints;
use crate::model::{Change, Cursor, Direction, ObjectRef, SystemKind};

pub use associations::{AssociationIntent, AssociationOutcome, ReadyAssociation};
pub use credits::{DesiredCredits, StoredCredits, UnsentCredits};
pub use digest::StateDigest;
pub use queries::StatusReport;
pub use registrations::{DecisionChange, KeyedEvent, RegistrationGroup, StoredRegistration};
pub use resync::Resync;
pub use retention::{FilePages, PruneReport, RetentionPolicy};
pub use schema_drift::{DriftChanges, DriftRow, DriftStatus, SchemaSkip, SkipCount, SkippedField};

/// How long a statement waits on a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on queued store jobs: callers wait (async) when the writer is this far behind.
const QUEUE_DEPTH: usize = 256;

/// Errors from the store. All are worth a retry except a broken or newer schema.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database migration failed: {0} (is this state file from a newer prmsync?)")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("corrupt JSON in the state database: {0}")]
    Json(#[from] serde_json::Error),
    #[error("corrupt {0} in the state database")]
    Corrupt(&'static str),
    #[error("the store's writer thread has stopped")]
    Closed,
    #[error("state database error (group commit): {0}")]
    GroupCommit(String),
    #[error("PostgreSQL state error: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("cannot connect to the PostgreSQL state: {0}")]
    PgConnect(String),
    #[error(
        "another prmsync daemon took the PostgreSQL state schema {0} (its daemon lock) while this daemon's connection was down: this daemon writes nothing more to it; stop one of the two"
    )]
    DaemonLockLost(String),
    #[error("PostgreSQL state migration failed: {0}")]
    PgMigration(String),
    #[error(
        "tenant {tenant}: commit refused, this daemon's lease generation {held} is not the lease's {current} (another daemon holds the tenant now)"
    )]
    Fenced {
        tenant: String,
        held: i64,
        current: i64,
    },
    #[error("{0} is not available on the PostgreSQL state backend yet")]
    NotOnPostgres(&'static str),
}

impl StoreError {
    /// Whether trying the same operation again later can succeed (locked, disk full, I/O).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(_)
                | StoreError::GroupCommit(_)
                | StoreError::Postgres(_)
                | StoreError::PgConnect(_)
        )
    }
}

use group::Job;

/// A handle to the state store. Cheap to clone; the writer thread stops when the last handle drops.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

/// Where the state lives. Each verb matches on it once (see ARCHITECTURE.md, "State store").
#[derive(Debug, Clone)]
enum Backend {
    /// One SQLite file (the default).
    Sqlite(Sqlite),
    /// One schema of a PostgreSQL database (`state.url`).
    Postgres(pg::PgStore),
}

/// The SQLite backend: one writer thread and a read-only connection.
#[derive(Debug, Clone)]
struct Sqlite {
    jobs: mpsc::Sender<Job>,
    /// A read-only connection for status and metrics: they never queue behind the writer.
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// A staged change waiting in the inbox.
#[derive(Debug, Clone)]
pub struct InboxItem {
    pub id: i64,
    pub change: Change,
}

/// What prmsync knows about one linked pair of records in a flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Link {
    pub target_id: Option<String>,
    /// The mapped values prmsync last wrote to (or saw on) the target, as field digests.
    pub target_state: StateDigest,
    /// The reverse-mapped values prmsync last wrote to (or saw on) the source, as field digests.
    pub source_state: StateDigest,
    /// Vendor modification time of the newest source version processed (older ones are stale).
    pub source_modified_ms: Option<i64>,
    /// Vendor modification time of the newest target version processed.
    pub target_modified_ms: Option<i64>,
    /// The last writes queued for this link, oldest first: (at_ms, "side:state hash").
    pub write_history: Vec<(i64, String)>,
    /// Whether the record is quarantined (a `quarantine` dead letter holds it).
    pub quarantined: bool,
    /// Why the link is no longer live (a side's record was deleted); a tombstoned link is never
    /// written through until a restore relinks it.
    pub tombstone: Option<String>,
}

/// What an outbox row does to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteOp {
    /// Create or update (by external id, or by the known record id).
    #[default]
    Upsert,
    /// Delete (archive) the record with the write's `target_id`, or the source record for a
    /// `to_source` write.
    Delete,
}

impl WriteOp {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOp::Upsert => "upsert",
            WriteOp::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upsert" => Some(WriteOp::Upsert),
            "delete" => Some(WriteOp::Delete),
            _ => None,
        }
    }
}

/// A change to a link's liveness, committed with a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkMark {
    /// A side's record was deleted: keep the link, tombstoned with the reason.
    Tombstone {
        flow: String,
        source_id: String,
        reason: String,
    },
    /// The deleted record is back (restored, undeleted): the link is live again.
    Relink { flow: String, source_id: String },
    /// Forget the target record (`recreate`): the next source change creates a new one.
    ForgetTarget { flow: String, source_id: String },
    /// The target record was merged into (or converted to) `target_id`: the link points there,
    /// live, with no known state of it until a write lands.
    Retarget {
        flow: String,
        source_id: String,
        target_id: String,
    },
}

/// A write the planner decided on, to commit durably to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWrite {
    pub flow: String,
    pub direction: Direction,
    pub source_id: String,
    pub target_id: Option<String>,
    pub system: SystemKind,
    pub object: String,
    /// The target's external-id field for upserts (to_target), if any.
    pub id_property: Option<String>,
    /// Only the values to send.
    pub payload: Map<String, Value>,
    /// The full state of that side after the write succeeds (stored in the link).
    pub state_after: StateDigest,
    pub content_hash: String,
    pub mapping_version: String,
    pub op: WriteOp,
}

impl PlannedWrite {
    /// What the written side looks like after this write, for flip-flop detection.
    pub fn state_key(&self) -> String {
        format!("{}:{}", self.direction.as_str(), self.state_after.key())
    }

    /// The same plan for the same record and content always has the same key.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.flow,
            self.direction.as_str(),
            self.source_id,
            &self.content_hash[..16.min(self.content_hash.len())]
        )
    }
}

/// A record the planner could not handle, with the reason an operator reads.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub origin: &'static str,
    pub flow: Option<String>,
    pub system: SystemKind,
    pub object: String,
    pub record_id: String,
    pub payload: Value,
    pub reason: String,
    pub attempts: u32,
}

/// One line of the ledger: what was decided for a record and why.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub flow: String,
    pub direction: Direction,
    pub source_id: String,
    pub target_id: Option<String>,
    pub action: &'static str,
    pub content_hash: Option<String>,
    pub mapping_version: Option<String>,
    pub detail: Option<String>,
}

/// A change to the remembered state of one side of a link, without a write (e.g. the source moved).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkObservation {
    pub flow: String,
    pub source_id: String,
    pub side: Direction,
    pub state: StateDigest,
}

/// Everything the planner decided for a batch of inbox items, committed in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanCommit {
    pub inbox_ids: Vec<i64>,
    pub writes: Vec<PlannedWrite>,
    pub dead_letters: Vec<DeadLetter>,
    pub ledger: Vec<LedgerEntry>,
    pub observations: Vec<LinkObservation>,
    /// (flow, direction, source id) whose pending outbox write is obsolete: the other side
    /// already shows what the latest version wants, so an older queued write must not land.
    pub cancelled: Vec<(String, Direction, String)>,
    /// (flow, source id, side, vendor modification time) of each version processed, so a
    /// version older than one already processed is recognised as stale when it arrives late.
    pub versions: Vec<(String, String, Direction, i64)>,
    /// Records quarantined for flip-flopping, with the write that was held back.
    pub quarantined: Vec<(DeadLetter, PlannedWrite)>,
    /// (flow, direction, source id) of writes that are backfill: drained after live ones.
    pub backfill: Vec<(String, Direction, String)>,
    /// Tombstones set or cleared, targets forgotten (record lifecycle).
    pub marks: Vec<LinkMark>,
    /// Associations the planned records ask for (kept until both records exist).
    pub associations: Vec<AssociationIntent>,
    /// (flow, source object, source id) to read again and plan anew: a record whose target was
    /// merged away, so the survivor gets every mapped value (a link keeps digests, not values).
    pub rereads: Vec<(String, ObjectRef, String)>,
    /// (flow, source object, read from, source ids) of records that wait for a lookup's record
    /// to be written: their source is read again from that time for those ids.
    pub waits: Vec<(String, ObjectRef, i64, Vec<String>)>,
}

/// Decisions for some duplicate-key groups, with their write-backs, committed in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionCommit {
    pub rules_version: String,
    /// The groups evaluated (their dirty flags are cleared).
    pub keys: Vec<String>,
    pub decisions: Vec<crate::rules::Decision>,
    /// Each decided registration's desired partner credits (empty for one that sourced no
    /// deal), with their reasons, see `credits.rs`.
    pub credits: Vec<DesiredCredits>,
    /// Write-backs and ledger lines (no inbox items).
    pub plan: PlanCommit,
}

/// A due outbox row, ready for a writer.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub attempts: u32,
    pub write: PlannedWrite,
}

/// What happened to one outbox row when its batch was sent.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The target accepted it; `target_id` is the record's id there.
    Done {
        outbox_id: i64,
        /// The key of the write that was sent; a row replaced since by a newer plan stays queued.
        idempotency_key: String,
        target_id: String,
        created: bool,
        /// Fields the write went out without (drifted in the live schema, or a picklist value
        /// it refuses): the link does not remember them as written, and the skip is stored so
        /// the record is planned again when the field recovers.
        skipped: Vec<SkippedField>,
    },
    /// Try again at `next_attempt_ms`.
    Retry {
        outbox_id: i64,
        idempotency_key: String,
        next_attempt_ms: i64,
        error: String,
        /// Whether this try counts toward `max_attempts`: a real failure does; back-pressure
        /// (a rate limit, a paused connection) does not.
        counted: bool,
    },
    /// Give up: move it to the dead letters with the reason.
    Dead {
        outbox_id: i64,
        idempotency_key: String,
        error: String,
    },
}

impl Store {
    /// Opens (creating if needed) the state file, applies pending migrations and starts the writer.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, &FailPoints::none())
    }

    /// [`Store::open`] with fail points armed (crash tests walk `migrate.between_steps`).
    pub fn open_with(path: &Path, failpoints: &FailPoints) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The directory is the operator's (StateDirectory=); a missing one is reported by open.
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                    path: path.to_owned(),
                    source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
                })?;
            }
        }
        let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        busy::install(&conn)?;
        retention::enable_incremental_vacuum(&conn)?;
        configure(&conn)?;
        migrate(&mut conn, failpoints)?;
        let reader = Arc::new(Mutex::new(open_read_only(path)?));
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("prmsync-store".into())
            .spawn(move || {
                group::run(&mut conn, &mut rx);
            })
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store {
            backend: Backend::Sqlite(Sqlite {
                jobs,
                reader,
                path: path.to_owned(),
            }),
        })
    }

    /// Opens the configured state: the PostgreSQL schema when `postgres` is set, else the file.
    pub fn open_configured(
        postgres: Option<&pg::PgTarget>,
        path: &Path,
    ) -> Result<Store, StoreError> {
        match postgres {
            Some(target) => Store::open_postgres(target),
            None => Store::open(path),
        }
    }

    /// Connects to a PostgreSQL state (creating its schema and applying pending migrations).
    pub fn open_postgres(target: &pg::PgTarget) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(pg::PgStore::open(target)?),
        })
    }

    /// Connects to a tenant's PostgreSQL state in fleet mode: every write-side commit checks
    /// `fence` (see `pg/fleet.rs`).
    pub fn open_postgres_fenced(
        target: &pg::PgTarget,
        fence: std::sync::Arc<pg::fleet::Fence>,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(pg::PgStore::open_fenced(target, fence)?),
        })
    }

    /// Takes the single-daemon lock of a PostgreSQL state (`false`: another daemon holds it).
    /// A SQLite state is locked by its lock file (`state_lock.rs`), so this is always `true`.
    pub async fn hold_daemon_lock(&self) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Postgres(p) => p.hold_daemon_lock().await,
            Backend::Sqlite(_) => Ok(true),
        }
    }

    /// The state file's path (`None` for a PostgreSQL state).
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(s) => Some(&s.path),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL backend, when the state lives there.
    fn pg(&self) -> Option<&pg::PgStore> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    /// The SQLite backend; on PostgreSQL, an error naming the verb not ported yet.
    fn sqlite(&self, verb: &'static str) -> Result<&Sqlite, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(s),
            Backend::Postgres(_) => Err(StoreError::NotOnPostgres(verb)),
        }
    }

    /// Runs `f` on the writer thread and returns its result.
    async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Run(Box::new(move |conn| {
            // The receiver is gone only if the caller was cancelled; the result is then unwanted.
            if tx.send(f(conn)).is_err() {
                tracing::debug!("store caller went away before its result was ready");
            }
        }));
        self.sqlite("this operation")?
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the read-only connection, on a blocking-pool thread: never behind the writer.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let reader = self.sqlite("this operation")?.reader.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection itself usable.
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer thread.
    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let r = f(&tx)?;
            tx.commit()?;
            Ok(r)
        })
        .await
    }

    /// [`Store::write`] for the engine's own hot commits (poll pages, plans, write outcomes,
    /// decisions), without waiting for the disk: in WAL mode a crash keeps them, and the next
    /// synced commit (a webhook's, a credential's) makes them durable with it. A power loss can
    /// undo the last few, which the engine redoes from what is durable: a page is re-read, a
    /// plan re-planned from its inbox rows, a write re-sent as the idempotent upsert it is.
    async fn write_relaxed<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.call(move |conn| {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let r = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let r = f(&tx)?;
                tx.commit()?;
                Ok(r)
            })();
            conn.pragma_update(None, "synchronous", "FULL")?;
            r
        })
        .await
    }

    /// Stages changes in the inbox (a repeated event id is ignored) and, in the same transaction,
    /// moves the object's cursor. Returns how many changes were new. Without a cursor (webhooks),
    /// stagings queued together commit together (`group.rs`); each still answers only once its
    /// changes are durable.
    pub async fn stage_changes(
        &self,
        changes: Vec<Change>,
        cursor: Option<(ObjectRef, Cursor)>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            let Some((object, cursor)) = cursor else {
                return pg.stage(changes, now_ms).await;
            };
            return pg
                .write_relaxed(move |tx| {
                    let n = pg::queries::insert_changes(tx, &changes, now_ms)?;
                    pg::queries::set_cursor(tx, &object, &cursor, now_ms)?;
                    Ok(n)
                })
                .await;
        }
        let Some((object, cursor)) = cursor else {
            let (reply, rx) = oneshot::channel();
            let staging = group::Staging {
                changes,
                now_ms,
                reply,
            };
            self.sqlite("staging")?
                .jobs
                .send(Job::Stage(staging))
                .await
                .map_err(|_| StoreError::Closed)?;
            return rx.await.map_err(|_| StoreError::Closed)?;
        };
        self.write_relaxed(move |tx| {
            let n = queries::insert_changes(tx, &changes, now_ms)?;
            queries::set_cursor(tx, &object, &cursor, now_ms)?;
            Ok(n)
        })
        .await
    }

    /// Records a resync of `flow` (its source `object`, from `since_ms`, only `ids` when given)
    /// for the poller of that object to carry out; returns its id.
    pub async fn request_resync(
        &self,
        flow: String,
        object: ObjectRef,
        since_ms: i64,
        ids: Option<Vec<String>>,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| {
                    pg::resync::request(tx, &flow, &object, since_ms, ids.as_deref(), now_ms)
                })
                .await;
        }
        self.write(move |tx| resync::request(tx, &flow, &object, since_ms, ids.as_deref(), now_ms))
            .await
    }

    /// The oldest unfinished resync of `object`.
    pub async fn open_resync(&self, object: ObjectRef) -> Result<Option<Resync>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(move |c| pg::resync::next_open(c, &object)).await;
        }
        self.call(move |conn| resync::next_open(conn, &object))
            .await
    }

    /// Resyncs, newest first (at most `limit`).
    pub async fn resyncs(&self, limit: usize) -> Result<Vec<Resync>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.read(move |c| pg::resync::list(c, limit)).await;
        }
        self.read(move |conn| resync::list(conn, limit)).await
    }

    /// Stages one page of resync `id` with its next position (`None`: finished), in one
    /// transaction; returns how many changes were new.
    pub async fn stage_resync_page(
        &self,
        id: i64,
        changes: Vec<Change>,
        next_page: Option<String>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| {
                    pg::resync::stage_page(tx, id, &changes, next_page.as_deref(), now_ms)
                })
                .await;
        }
        self.write(move |tx| resync::stage_page(tx, id, &changes, next_page.as_deref(), now_ms))
            .await
    }

    /// Starts resync `id`'s read over from its first page.
    pub async fn restart_resync(&self, id: i64) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg.write(move |tx| pg::resync::restart(tx, id)).await;
        }
        self.write(move |tx| resync::restart(tx, id)).await
    }

    /// The records whose staged changes or dead letters contain `email` (lower case).
    pub async fn records_holding(
        &self,
        email: String,
    ) -> Result<std::collections::BTreeSet<erasure::RecordKey>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::erasure::records_holding(c, &email))
                .await;
        }
        self.call(move |conn| erasure::records_holding(conn, &email))
            .await
    }

    /// The newest staged payload of a record.
    pub async fn latest_payload(
        &self,
        record: erasure::RecordKey,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::erasure::latest_payload(c, &record))
                .await;
        }
        self.call(move |conn| erasure::latest_payload(conn, &record))
            .await
    }

    /// How many rows a purge would delete and how many values it would rewrite (dry run).
    pub async fn erasure_counts(
        &self,
        purge: erasure::Purge,
    ) -> Result<(usize, usize), StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(move |c| pg::erasure::count(c, &purge)).await;
        }
        self.call(move |conn| erasure::count(conn, &purge)).await
    }

    /// Purges a person's data with its audit row, overwriting what is deleted, then checkpoints
    /// the WAL (see [`erasure`]); on PostgreSQL, vacuums the tables it changed.
    pub async fn purge_erasure(
        &self,
        purge: erasure::Purge,
        audit: erasure::Audit,
        now_ms: i64,
    ) -> Result<erasure::PurgeReport, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::erasure::purge_and_vacuum(c, &purge, &audit, now_ms))
                .await;
        }
        self.call(move |conn| erasure::purge_securely(conn, &purge, &audit, now_ms))
            .await
    }

    /// Records an erasure request for the running daemon; returns its id.
    pub async fn request_erasure(&self, subject: String, now_ms: i64) -> Result<i64, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::erase_requests::request(tx, &subject, now_ms))
                .await;
        }
        self.call(move |conn| erase_requests::request(conn, &subject, now_ms))
            .await
    }

    /// Open erasure requests with attempts left, oldest first.
    pub async fn open_erase_requests(
        &self,
        max_attempts: u32,
    ) -> Result<Vec<erase_requests::EraseRequest>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .read(move |c| pg::erase_requests::open(c, max_attempts))
                .await;
        }
        self.read(move |conn| erase_requests::open(conn, max_attempts))
            .await
    }

    /// One erasure request (read from the written state).
    pub async fn erase_request(
        &self,
        id: i64,
    ) -> Result<Option<erase_requests::EraseRequest>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.read(move |c| pg::erase_requests::get(c, id)).await;
        }
        self.read(move |conn| erase_requests::get(conn, id)).await
    }

    /// The erasure requests, newest first.
    pub async fn erase_requests(
        &self,
        limit: usize,
    ) -> Result<Vec<erase_requests::EraseRequest>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.read(move |c| pg::erase_requests::list(c, limit)).await;
        }
        self.read(move |conn| erase_requests::list(conn, limit))
            .await
    }

    /// Keeps what a carried-out erasure request did, for the waiting `prmsync erase`.
    pub async fn erase_request_report(&self, id: i64, text: String) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::erase_requests::report(tx, id, &text))
                .await;
        }
        self.call(move |conn| erase_requests::report(conn, id, &text))
            .await
    }

    /// Counts a failed attempt of an erasure request.
    pub async fn erase_request_failed(&self, id: i64, error: String) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::erase_requests::failed(tx, id, &error))
                .await;
        }
        self.call(move |conn| erase_requests::failed(conn, id, &error))
            .await
    }

    /// The erasure audit rows, newest first.
    pub async fn erasures(&self, limit: usize) -> Result<Vec<erasure::AuditRow>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.read(move |c| pg::erasure::audits(c, limit)).await;
        }
        self.read(move |conn| erasure::audits(conn, limit)).await
    }

    /// The stored incremental-read position for an object.
    pub async fn cursor(&self, object: ObjectRef) -> Result<Option<Cursor>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(move |c| pg::queries::cursor(c, &object)).await;
        }
        self.call(move |conn| queries::cursor(conn, &object)).await
    }

    /// Saves a connector credential (e.g. a rotated refresh token); durable when this returns.
    pub async fn save_credential(
        &self,
        name: String,
        value: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::queries::save_credential(tx, &name, &value, now_ms))
                .await;
        }
        self.write(move |tx| credentials::save(tx, &name, &value, now_ms))
            .await
    }

    /// The saved credential `name`, if any.
    pub async fn credential(&self, name: String) -> Result<Option<String>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(move |c| pg::queries::credential(c, &name)).await;
        }
        self.call(move |conn| credentials::load(conn, &name)).await
    }

    /// Deletes the saved credentials named `prefix` or `prefix.*` (`prmsync auth reset`);
    /// returns how many were deleted.
    pub async fn delete_credentials(&self, prefix: String) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::queries::delete_credentials(tx, &prefix))
                .await;
        }
        self.write(move |tx| credentials::delete(tx, &prefix)).await
    }

    /// Every saved credential's name and save time (never the value), for `prmsync auth status`.
    pub async fn credential_names(&self) -> Result<Vec<(String, i64)>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(pg::queries::credential_names).await;
        }
        self.call(|c| credentials::list(c)).await
    }

    /// The oldest pending inbox items, at most `limit`.
    pub async fn pending_inbox(&self, limit: usize) -> Result<Vec<InboxItem>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(move |c| pg::queries::pending_inbox(c, limit)).await;
        }
        self.call(move |conn| queries::pending_inbox(conn, limit))
            .await
    }

    /// The links of `flow` for the given source ids (absent ids have no link yet).
    pub async fn links_by_source(
        &self,
        flow: String,
        source_ids: Vec<String>,
    ) -> Result<Vec<(String, Link)>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::queries::links_by_source(c, &flow, &source_ids))
                .await;
        }
        self.call(move |conn| queries::links_by_source(conn, &flow, &source_ids))
            .await
    }

    /// The links of `flow` for the given target ids, keyed by target id, with their source ids.
    pub async fn links_by_target(
        &self,
        flow: String,
        target_ids: Vec<String>,
    ) -> Result<Vec<(String, String, Link)>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::queries::links_by_target(c, &flow, &target_ids))
                .await;
        }
        self.call(move |conn| queries::links_by_target(conn, &flow, &target_ids))
            .await
    }

    /// Commits a batch of planning decisions: outbox rows, dead letters, ledger lines, link
    /// observations, and marks the inbox items processed, all in one transaction.
    pub async fn commit_plan(&self, plan: PlanCommit, now_ms: i64) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write_relaxed(move |tx| pg::queries::commit_plan(tx, &plan, now_ms))
                .await;
        }
        self.write_relaxed(move |tx| queries::commit_plan(tx, &plan, now_ms))
            .await
    }

    /// Sourced deals whose partner credits the CRM has not confirmed yet, at most `limit`.
    pub async fn unsent_credits(&self, limit: usize) -> Result<Vec<UnsentCredits>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::registrations::unsent_credits(c, limit))
                .await;
        }
        self.call(move |conn| credits::unsent(conn, limit)).await
    }

    /// The credits the CRM last confirmed for each of `ids` (those with a confirmation).
    pub async fn sent_credits(
        &self,
        ids: Vec<String>,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::registrations::sent_credits(c, &ids))
                .await;
        }
        self.call(move |conn| credits::sent(conn, &ids)).await
    }

    /// A deal's stored partner credits (desired, confirmed, reasons), for `registrations show`.
    pub async fn credits_of(&self, id: String) -> Result<Option<StoredCredits>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::registrations::credits_of(c, &id))
                .await;
        }
        self.call(move |conn| credits::of(conn, &id)).await
    }

    /// Records the CRM's answers for sent partner credits.
    pub async fn complete_credits(
        &self,
        outcomes: Vec<(UnsentCredits, Result<(), String>)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::registrations::complete_credits(tx, &outcomes, now_ms))
                .await;
        }
        self.write(move |tx| credits::complete(tx, &outcomes, now_ms))
            .await
    }

    /// Pending associations of `flows` whose two records both exist and are live, at most `limit`.
    pub async fn ready_associations(
        &self,
        flows: Vec<String>,
        limit: usize,
    ) -> Result<Vec<ReadyAssociation>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::associations::ready(c, &flows, limit))
                .await;
        }
        self.call(move |conn| associations::ready(conn, &flows, limit))
            .await
    }

    /// Records what became of sent associations, with a ledger line for each done or refused.
    pub async fn complete_associations(
        &self,
        outcomes: Vec<(ReadyAssociation, AssociationOutcome)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::associations::complete(tx, &outcomes, now_ms))
                .await;
        }
        self.write(move |tx| associations::complete(tx, &outcomes, now_ms))
            .await
    }

    /// Outbox rows for `system` whose next attempt is due, oldest first, at most `limit`.
    pub async fn due_outbox(
        &self,
        system: SystemKind,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write_claim(move |tx| pg::queries::due_outbox(tx, system, now_ms, limit))
                .await;
        }
        self.call(move |conn| queries::due_outbox(conn, system, now_ms, limit))
            .await
    }

    /// Records the outcome of sent writes: links, hashes and outbox rows change together.
    pub async fn complete_writes(
        &self,
        outcomes: Vec<WriteOutcome>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write_relaxed(move |tx| pg::queries::complete_writes(tx, &outcomes, now_ms))
                .await;
        }
        self.write_relaxed(move |tx| queries::complete_writes(tx, &outcomes, now_ms))
            .await
    }

    /// The earliest time any outbox row becomes due, if any row is waiting.
    pub async fn next_outbox_due(&self) -> Result<Option<i64>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(pg::queries::next_outbox_due).await;
        }
        self.call(|conn| queries::next_outbox_due(conn)).await
    }

    /// The earliest time an outbox row for `system` becomes due, if any is waiting.
    pub async fn next_outbox_due_for(&self, system: SystemKind) -> Result<Option<i64>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::queries::next_outbox_due_for(c, system))
                .await;
        }
        self.call(move |conn| queries::next_outbox_due_for(conn, system))
            .await
    }

    /// Caps the state file at about `max_bytes` (`None`: no cap): a write that would grow it past
    /// the cap fails with "database or disk is full" and rolls back, exactly as on a full disk.
    /// Operators use it to keep prmsync from filling a shared volume; tests use it to fill one.
    pub async fn set_size_limit(&self, max_bytes: Option<u64>) -> Result<(), StoreError> {
        self.call(move |conn| queries::set_size_limit(conn, max_bytes))
            .await
    }

    /// Records that `system` is paused (`state`, e.g. `needs_reauth`), for `prmsync status`.
    pub async fn set_connection_hold(
        &self,
        system: SystemKind,
        state: &'static str,
        detail: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| {
                    pg::queries::set_connection_hold(tx, system, state, &detail, now_ms)
                })
                .await;
        }
        self.write(move |tx| queries::set_connection_hold(tx, system, state, &detail, now_ms))
            .await
    }

    /// Makes every queued write to `system` due now (its connection just resumed).
    pub async fn resume_outbox(&self, system: SystemKind, now_ms: i64) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::queries::resume_outbox(tx, system, now_ms))
                .await;
        }
        self.write(move |tx| queries::resume_outbox(tx, system, now_ms))
            .await
    }

    /// Clears a recorded pause of `system`.
    pub async fn clear_connection_hold(&self, system: SystemKind) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::queries::clear_connection_hold(tx, system))
                .await;
        }
        self.write(move |tx| queries::clear_connection_hold(tx, system))
            .await
    }

    // --- Deal registrations (rules of engagement) ---

    /// Records observed registration versions (repeats ignored) and marks their groups dirty,
    /// with the groups of `touched` registrations (their CRM record changed).
    pub async fn record_registrations(
        &self,
        events: Vec<KeyedEvent>,
        touched: Vec<String>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write_relaxed(move |tx| {
                    let n = pg::registrations::record_events(tx, &events, now_ms)?;
                    pg::registrations::touch(tx, &touched)?;
                    Ok(n)
                })
                .await;
        }
        self.write_relaxed(move |tx| {
            let n = registrations::record_events(tx, &events, now_ms)?;
            registrations::touch(tx, &touched)?;
            Ok(n)
        })
        .await
    }

    /// Stores partners' names as the PRM sent them (key, name).
    pub async fn record_partner_names(
        &self,
        names: Vec<(String, String)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write_relaxed(move |tx| pg::registrations::record_partners(tx, &names, now_ms))
                .await;
        }
        self.write_relaxed(move |tx| registrations::record_partners(tx, &names, now_ms))
            .await
    }

    /// Stores partners' leads and activities as credit evidence (customer key, item) and forgets
    /// `gone` ones; each change marks the customer's registration group for deciding again.
    pub async fn record_credit_evidence(
        &self,
        rows: Vec<(String, crate::rules::credit::EvidenceItem)>,
        gone: Vec<(crate::rules::credit::Evidence, String)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::registrations::record_evidence(tx, &rows, &gone, now_ms))
                .await;
        }
        self.write(move |tx| credits::record_evidence(tx, &rows, &gone, now_ms))
            .await
    }

    /// Stores the PRM's MDF requests (id, fields) for the attribution report.
    pub async fn record_mdf_requests(
        &self,
        rows: Vec<(String, Map<String, Value>)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::registrations::record_mdf(tx, &rows, now_ms))
                .await;
        }
        self.write(move |tx| attribution::record_mdf(tx, &rows, now_ms))
            .await
    }

    /// Whether any registration was last decided under rules other than `rules_version`.
    pub async fn registrations_outdated(&self, rules_version: String) -> Result<bool, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::registrations::outdated(c, &rules_version))
                .await;
        }
        self.call(move |conn| registrations::outdated(conn, &rules_version))
            .await
    }

    /// The newest version of each registration decided under other rules (to recompute keys).
    pub async fn outdated_registrations(
        &self,
        rules_version: String,
    ) -> Result<Vec<crate::rules::RegistrationEvent>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::registrations::outdated_latest(c, &rules_version))
                .await;
        }
        self.call(move |conn| registrations::outdated_latest(conn, &rules_version))
            .await
    }

    /// Re-points registrations at recomputed keys; old and new groups are re-decided.
    pub async fn rekey_registrations(
        &self,
        keys: Vec<(String, String, String)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| {
                    for (id, key, partner) in &keys {
                        pg::registrations::set_key(tx, id, key, partner, now_ms)?;
                    }
                    Ok(())
                })
                .await;
        }
        self.write(move |tx| {
            for (id, key, partner) in &keys {
                registrations::set_key(tx, id, key, partner, now_ms)?;
            }
            Ok(())
        })
        .await
    }

    /// The newest registration event time (the rules' "now"), if any registration was seen.
    pub async fn registrations_as_of(&self) -> Result<Option<i64>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(pg::registrations::as_of).await;
        }
        self.call(|conn| registrations::as_of(conn)).await
    }

    /// Keys of the groups that need a decision under `rules_version` as of `as_of_ms`.
    pub async fn registration_keys_to_decide(
        &self,
        rules_version: String,
        as_of_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::registrations::keys_to_decide(c, &rules_version, as_of_ms))
                .await;
        }
        self.call(move |conn| registrations::keys_to_decide(conn, &rules_version, as_of_ms))
            .await
    }

    /// The registrations, review outcomes and prior decisions of one group.
    pub async fn registration_group(&self, key: String) -> Result<RegistrationGroup, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::registrations::group(c, Some(&key)))
                .await;
        }
        self.call(move |conn| registrations::group(conn, Some(&key)))
            .await
    }

    /// Stores decisions, their before/after history, write-backs and ledger lines together.
    /// Returns how many decisions changed.
    pub async fn commit_decisions(
        &self,
        commit: DecisionCommit,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write_relaxed(move |tx| pg::registrations::commit_decisions(tx, &commit, now_ms))
                .await;
        }
        self.write_relaxed(move |tx| registrations::commit_decisions(tx, &commit, now_ms))
            .await
    }

    /// Registrations, optionally only those with `status` (e.g. "review").
    pub async fn registrations(
        &self,
        status: Option<String>,
    ) -> Result<Vec<StoredRegistration>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::registrations::list(c, status.as_deref()))
                .await;
        }
        self.call(move |conn| registrations::list(conn, status.as_deref()))
            .await
    }

    /// One registration and its decision history.
    pub async fn registration(
        &self,
        id: String,
    ) -> Result<Option<(StoredRegistration, Vec<DecisionChange>)>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.call(move |c| pg::registrations::get(c, &id)).await;
        }
        self.call(move |conn| registrations::get(conn, &id)).await
    }

    /// Stores an operator's review outcome; the daemon decides and writes back on its next pass.
    /// `false` when no registration has that id.
    pub async fn add_review(
        &self,
        id: String,
        approve: bool,
        reason: String,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::registrations::add_review(tx, &id, approve, &reason, now_ms))
                .await;
        }
        self.write(move |tx| registrations::add_review(tx, &id, approve, &reason, now_ms))
            .await
    }

    /// Records what a live-schema check of `system` found: for each checked object its drifted
    /// mapped fields (a field drifted before keeps its `since`); objects no flow writes any more
    /// (not in `mapped`) lose theirs. Returns what appeared and what cleared.
    pub async fn record_schema_drift(
        &self,
        system: SystemKind,
        checked: Vec<(String, Vec<DriftRow>)>,
        mapped: Vec<String>,
        now_ms: i64,
    ) -> Result<DriftChanges, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::schema_drift::record(tx, system, &checked, &mapped, now_ms))
                .await;
        }
        self.write(move |tx| schema_drift::record(tx, system, &checked, &mapped, now_ms))
            .await
    }

    /// The links whose writes to `object` left a field out, and which.
    pub async fn schema_skips(
        &self,
        system: SystemKind,
        object: String,
    ) -> Result<Vec<SchemaSkip>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .call(move |c| pg::schema_drift::skips(c, system, &object))
                .await;
        }
        self.call(move |conn| schema_drift::skips(conn, system, &object))
            .await
    }

    /// Forgets stored skips (their records were asked to be planned again).
    pub async fn clear_schema_skips(&self, skips: Vec<SchemaSkip>) -> Result<(), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .write(move |tx| pg::schema_drift::clear_skips(tx, &skips))
                .await;
        }
        self.write(move |tx| schema_drift::clear_skips(tx, &skips))
            .await
    }

    /// Counts and ages for `prmsync status`, `/metrics` and the demo summary: kept counters and
    /// indexed lookups on the read-only connection, so the cost does not grow with the links.
    pub async fn status(&self, now_ms: i64) -> Result<StatusReport, StoreError> {
        if let Some(pg) = self.pg() {
            let v = pg.schema_version();
            return pg.read(move |c| pg::queries::status(c, v, now_ms)).await;
        }
        self.read(move |conn| queries::status(conn, now_ms)).await
    }

    /// The counters as kept, and the same counts from a full scan (tests compare the two).
    pub async fn counts_kept_and_recounted(
        &self,
    ) -> Result<(counters::Counts, counters::Counts), StoreError> {
        if let Some(pg) = self.pg() {
            return pg
                .read(|c| Ok((pg::queries::counts(c)?, pg::queries::recount(c)?)))
                .await;
        }
        self.read(|conn| Ok((counters::read(conn)?, counters::recount(conn)?)))
            .await
    }
}

pub use counters::Counts;

/// Opens an existing state file read-only (for `prmsync status`), without migrating it.
pub fn status_read_only(path: &Path, now_ms: i64) -> Result<StatusReport, StoreError> {
    queries::status(&open_read_only(path)?, now_ms)
}

fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    busy::install(&conn)?;
    Ok(conn)
}

/// Applies pending migrations one step at a time: each step commits on its own, so a crash
/// between steps leaves a valid older schema that the next start carries forward.
fn migrate(conn: &mut Connection, failpoints: &FailPoints) -> Result<(), StoreError> {
    let steps = migrations::all();
    let pending = usize::try_from(steps.pending_migrations(conn)?).unwrap_or(0);
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    for version in current + 1..=current + pending {
        steps.to_version(conn, version)?;
        if version < current + pending {
            failpoints.hit("migrate.between_steps");
        }
    }
    Ok(())
}

/// A state opened read-only, for commands that must not write (`prmsync plan`, `report
/// attribution`): the SQLite file, or a PostgreSQL schema through a read-only connection.
#[derive(Debug)]
pub struct ReadOnlyStore {
    backend: ReadOnly,
}

#[derive(Debug)]
enum ReadOnly {
    Sqlite(Connection),
    Postgres(pg::read_only::PgReadOnly),
}

impl ReadOnlyStore {
    /// Opens an existing state file without migrating or writing anything.
    pub fn open(path: &Path) -> Result<ReadOnlyStore, StoreError> {
        Ok(ReadOnlyStore {
            backend: ReadOnly::Sqlite(open_read_only(path)?),
        })
    }

    /// Opens an existing PostgreSQL state without creating, migrating or writing anything.
    pub fn open_postgres(target: &pg::PgTarget) -> Result<ReadOnlyStore, StoreError> {
        Ok(ReadOnlyStore {
            backend: ReadOnly::Postgres(pg::read_only::PgReadOnly::open(target)?),
        })
    }

    /// The configured state read-only: the PostgreSQL schema when `postgres` is set, else the
    /// file (`None` when there is no file yet: nothing was synced).
    pub fn open_configured(
        postgres: Option<&pg::PgTarget>,
        path: &Path,
    ) -> Result<Option<ReadOnlyStore>, StoreError> {
        match postgres {
            Some(target) => ReadOnlyStore::open_postgres(target).map(Some),
            None if path.exists() => ReadOnlyStore::open(path).map(Some),
            None => Ok(None),
        }
    }

    /// The saved credential `name`, if any (`prmsync plan` reads the daemon's session).
    pub fn credential(&self, name: &str) -> Result<Option<String>, StoreError> {
        match &self.backend {
            ReadOnly::Sqlite(conn) => credentials::load(conn, name),
            ReadOnly::Postgres(pg) => {
                let name = name.to_owned();
                pg.read(move |c| pg::queries::credential(c, &name))
            }
        }
    }

    /// The links of `flow` for the given source ids.
    pub fn links_by_source(
        &self,
        flow: &str,
        source_ids: &[String],
    ) -> Result<Vec<(String, Link)>, StoreError> {
        match &self.backend {
            ReadOnly::Sqlite(conn) => queries::links_by_source(conn, flow, source_ids),
            ReadOnly::Postgres(pg) => {
                let (flow, ids) = (flow.to_owned(), source_ids.to_vec());
                pg.read(move |c| pg::queries::links_by_source(c, &flow, &ids))
            }
        }
    }

    /// Every registration's versions, reviews, prior decisions and partner names, and the
    /// rules' "now" (`prmsync plan` decides them again under the rules on disk).
    pub fn all_registrations(&self) -> Result<(RegistrationGroup, Option<i64>), StoreError> {
        match &self.backend {
            ReadOnly::Sqlite(conn) => Ok((
                registrations::group(conn, None)?,
                registrations::as_of(conn)?,
            )),
            ReadOnly::Postgres(pg) => pg.read(|c| {
                Ok((
                    pg::registrations::group(c, None)?,
                    pg::registrations::as_of(c)?,
                ))
            }),
        }
    }

    /// Every registration's stored decision.
    pub fn registrations(&self) -> Result<Vec<StoredRegistration>, StoreError> {
        match &self.backend {
            ReadOnly::Sqlite(conn) => registrations::list(conn, None),
            ReadOnly::Postgres(pg) => pg.read(|c| pg::registrations::list(c, None)),
        }
    }

    /// What the attribution report computes from (`prmsync report attribution`).
    pub fn attribution(&self) -> Result<attribution::AttributionState, StoreError> {
        match &self.backend {
            ReadOnly::Sqlite(conn) => attribution::load(conn),
            ReadOnly::Postgres(pg) => pg.read(|c| {
                let all = pg::registrations::group(c, None)?;
                Ok(attribution::AttributionState {
                    registrations: pg::registrations::list(c, None)?,
                    versions: all.events,
                    evidence: all.evidence,
                    partner_names: pg::read_only::partner_names(c)?,
                    mdf: pg::read_only::mdf(c)?,
                    as_of_ms: pg::registrations::as_of(c)?,
                })
            }),
        }
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit that acknowledges a webhook or advances a cursor survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Freed space inside a page is zeroed (no extra I/O), so a deleted or rewritten row's old
    // bytes do not linger in the file (an erasure relies on it; see erasure.rs).
    conn.pragma_update(None, "secure_delete", "FAST")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Record;

    fn deals() -> ObjectRef {
        ObjectRef {
            system: SystemKind::PartnerStack,
            object: "deals".into(),
        }
    }

    fn change(id: &str, ms: i64) -> Change {
        Change::versioned(
            deals(),
            Record {
                id: id.into(),
                modified_ms: ms,
                fields: json!({"key": id}).as_object().cloned().unwrap_or_default(),
            },
        )
    }

    fn write(source_id: &str, hash: &str) -> PlannedWrite {
        PlannedWrite {
            flow: "f".into(),
            direction: Direction::ToTarget,
            source_id: source_id.into(),
            target_id: None,
            system: SystemKind::HubSpot,
            object: "deals".into(),
            id_property: Some("prm_deal_id".into()),
            payload: json!({"amount": hash})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            state_after: StateDigest::of(
                &json!({"amount": hash})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
            content_hash: format!("{hash:0>16}"),
            mapping_version: "v1".into(),
            op: crate::store::WriteOp::Upsert,
        }
    }

    #[tokio::test]
    async fn staging_is_idempotent_and_moves_the_cursor_with_the_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let cursor = Cursor::at(2, "b");
        let n = store
            .stage_changes(
                vec![change("a", 1), change("b", 2)],
                Some((deals(), cursor.clone())),
                10,
            )
            .await
            .unwrap();
        assert_eq!(n, 2);
        let again = store
            .stage_changes(vec![change("b", 2)], None, 11)
            .await
            .unwrap();
        assert_eq!(again, 0, "the same record version is staged once");
        assert_eq!(store.cursor(deals()).await.unwrap(), Some(cursor));
        assert_eq!(store.pending_inbox(10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn reopening_keeps_state_and_migrations_are_not_reapplied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .stage_changes(vec![change("a", 1)], None, 1)
                .await
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let status = store.status(0).await.unwrap();
        assert_eq!(status.inbox_pending, 1);
        assert!(status.schema_version >= 1, "migrated");
    }

    #[tokio::test]
    async fn a_completion_for_a_replaced_write_keeps_the_newer_one_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let plan = |w: PlannedWrite| PlanCommit {
            writes: vec![w],
            ..PlanCommit::default()
        };
        store.commit_plan(plan(write("d1", "1")), 0).await.unwrap();
        let sent = store
            .due_outbox(SystemKind::HubSpot, 0, 10)
            .await
            .unwrap()
            .remove(0);
        // A newer version is planned while the first is in flight.
        store.commit_plan(plan(write("d1", "2")), 0).await.unwrap();
        store
            .complete_writes(
                vec![WriteOutcome::Done {
                    outbox_id: sent.id,
                    idempotency_key: sent.write.idempotency_key(),
                    target_id: "9001".into(),
                    created: true,
                    skipped: Vec::new(),
                }],
                1,
            )
            .await
            .unwrap();
        let left = store.due_outbox(SystemKind::HubSpot, 10, 10).await.unwrap();
        assert_eq!(left.len(), 1, "the newer write is still queued");
        assert_eq!(left[0].write.payload.get("amount"), Some(&json!("2")));
        // When the newer write lands, the link holds its state.
        store
            .complete_writes(
                vec![WriteOutcome::Done {
                    outbox_id: left[0].id,
                    idempotency_key: left[0].write.idempotency_key(),
                    target_id: "9001".into(),
                    created: false,
                    skipped: Vec::new(),
                }],
                2,
            )
            .await
            .unwrap();
        let links = store
            .links_by_source("f".into(), vec!["d1".into()])
            .await
            .unwrap();
        assert!(links[0].1.target_state.holds("amount", &json!("2")));
        assert_eq!(links[0].1.target_id.as_deref(), Some("9001"));
        assert_eq!(store.status(0).await.unwrap().outbox_depth, 0);
    }

    #[tokio::test]
    async fn a_dead_write_moves_to_the_dead_letters_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store
            .commit_plan(
                PlanCommit {
                    writes: vec![write("d1", "1")],
                    ..PlanCommit::default()
                },
                0,
            )
            .await
            .unwrap();
        let item = store
            .due_outbox(SystemKind::HubSpot, 0, 10)
            .await
            .unwrap()
            .remove(0);
        store
            .complete_writes(
                vec![WriteOutcome::Dead {
                    outbox_id: item.id,
                    idempotency_key: item.write.idempotency_key(),
                    error: "rejected: dealstage is not an option".into(),
                }],
                1,
            )
            .await
            .unwrap();
        let s = store.status(0).await.unwrap();
        assert_eq!((s.outbox_depth, s.dead_letters), (0, 1));
        assert!(
            s.last_errors[0].contains("dealstage"),
            "{:?}",
            s.last_errors
        );
    }
}

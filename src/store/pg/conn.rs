//! One thread's PostgreSQL connection, made again when it breaks.
//!
//! The server may end a session (`idle_in_transaction_session_timeout`, `pg_terminate_backend`, a
//! restart) and a socket may die. A `postgres::Client` never recovers from that: every later call
//! answers "connection closed". So before each job the writer and reader threads ask their
//! [`Conn`] for the client; a closed one is dropped and connected again with the same settings
//! (schema and `search_path`, `idle_in_transaction_session_timeout`, the daemon lock if it was
//! held), at most once per backoff step (1 s, doubling, at most [`MAX_BACKOFF`]). While it is down
//! a job fails at once with [`StoreError::PgConnect`] saying so; the job that was running when
//! the connection died gets its own error (callers retry their stage, the store does not).
//!
//! A fleet tenant's connections (`Conn::open` with `park_after`) are closed after that long
//! without a job and made again by the next one ([`next_job`]): a daemon keeps connections only
//! to the tenants it runs or that are in use, not two to every tenant of the fleet.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use postgres::{Client, NoTls};
use tokio::sync::mpsc;

use super::PgTarget;
use crate::store::StoreError;

/// Bound on connecting (TCP and the start-up handshake) unless the URL sets `connect_timeout`:
/// a server that does not answer must not hold a store thread for ever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalives (unless the URL sets them): a peer that vanished without closing the socket is
/// noticed after about `idle + retries × interval` (one minute) instead of the kernel's hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
/// tokio-postgres's own `keepalives_idle` default (two hours): seen there, the URL did not set it.
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// Reconnect attempts after the first: 1 s apart, then doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The single-daemon session advisory lock on the writer connection (`PgStore::hold_daemon_lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DaemonLock {
    NotTaken,
    Held,
    /// Lost with a connection and taken by another daemon before this one reconnected: nothing
    /// is written through this connection any more.
    TakenByAnother,
}

/// While the connection is down: why, since when, and when the next attempt may run.
struct Down {
    cause: String,
    since: Instant,
    next: Instant,
    attempts: u32,
    backoff: ExponentialBackoff,
}

/// A store thread's connection (`role`: "writer" or "reader").
pub(super) struct Conn {
    target: PgTarget,
    role: &'static str,
    /// The session's `idle_in_transaction_session_timeout` (fenced stores, the lease store).
    idle: Option<Duration>,
    client: Option<Client>,
    down: Option<Down>,
    lock: DaemonLock,
    /// Close the connection after this long without a job (fleet tenants); the waiting is done
    /// on this small runtime (the job queue is a tokio channel, the thread is a plain one).
    park: Option<(Duration, tokio::runtime::Runtime)>,
    /// Closed for idleness (not lost): the next job connects without the reconnect's pacing.
    parked: bool,
}

impl Conn {
    /// Connects for the first time: an error here fails the store's `open`.
    /// `park_after`: close the connection after that long without a job (fleet tenants).
    pub(super) fn open(
        target: &PgTarget,
        role: &'static str,
        idle: Option<Duration>,
        park_after: Option<Duration>,
    ) -> Result<Conn, StoreError> {
        let park = match park_after {
            Some(after) => Some((
                after,
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|e| {
                        StoreError::PgConnect(format!(
                            "cannot start the {role} thread's timer: {e}"
                        ))
                    })?,
            )),
            None => None,
        };
        let client = establish(target, role, idle)?;
        Ok(Conn {
            target: target.clone(),
            role,
            idle,
            client: Some(client),
            down: None,
            lock: DaemonLock::NotTaken,
            park,
            parked: false,
        })
    }

    /// Closes an idle connection that may be closed (one without the daemon lock, which lives
    /// only as long as its session); the next job connects again.
    fn park(&mut self) {
        if self.lock != DaemonLock::NotTaken || self.down.is_some() || self.client.is_none() {
            return;
        }
        self.client = None;
        self.parked = true;
        tracing::debug!(schema = %self.target.schema, connection = self.role, "idle PostgreSQL connection closed");
    }

    /// Runs `f` on the client, connecting again first if the connection was lost. An error that
    /// leaves the client closed (the connection died under `f`) marks it lost with that cause.
    pub(super) fn run<R>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let client = self.client()?;
        let r = f(client);
        if let Err(e) = &r
            && (ends_session(e) || self.client.as_ref().is_some_and(Client::is_closed))
        {
            self.lost(e.to_string());
        }
        r
    }

    /// Takes the daemon lock of the schema on this connection (`false`: another session holds
    /// it); once taken it is taken again after every reconnect.
    pub(super) fn hold_daemon_lock(&mut self) -> Result<bool, StoreError> {
        let held = self.run(try_daemon_lock)?;
        if held {
            self.lock = DaemonLock::Held;
        }
        Ok(held)
    }

    /// The live client: a closed one is dropped and replaced, paced by the backoff.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.lost("the server ended the session or the socket broke".into());
        }
        if self.client.is_none() && self.parked {
            self.parked = false;
            match establish(&self.target, self.role, self.idle) {
                Ok(client) => self.client = Some(client),
                Err(e) => {
                    let cause = e.to_string();
                    self.lost(cause.clone());
                    if let Some(down) = &mut self.down {
                        down.next = Instant::now() + down.backoff.next().unwrap_or(MAX_BACKOFF);
                    }
                    return Err(StoreError::PgConnect(format!(
                        "the {} connection to PostgreSQL could not be made again: {cause}",
                        self.role
                    )));
                }
            }
        }
        if self.client.is_none() {
            self.reconnect()?;
        }
        if self.lock == DaemonLock::TakenByAnother {
            return Err(StoreError::DaemonLockLost(self.target.schema.clone()));
        }
        self.client.as_mut().ok_or(StoreError::Closed)
    }

    fn lost(&mut self, cause: String) {
        // Dropping a closed client only frees it (its terminate message has nowhere to go).
        self.client = None;
        if self.down.is_some() {
            return;
        }
        tracing::warn!(
            schema = %self.target.schema,
            connection = self.role,
            cause = %cause,
            "PostgreSQL connection lost; reconnecting"
        );
        let now = Instant::now();
        self.down = Some(Down {
            cause,
            since: now,
            // The first attempt right away: most often the server only ended this session.
            next: now,
            attempts: 0,
            backoff: ExponentialBuilder::new()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(MAX_BACKOFF)
                .without_max_times()
                .build(),
        });
    }

    fn reconnect(&mut self) -> Result<(), StoreError> {
        let now = Instant::now();
        let down = self.down.get_or_insert_with(|| Down {
            cause: "not connected".into(),
            since: now,
            next: now,
            attempts: 0,
            backoff: ExponentialBuilder::new()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(MAX_BACKOFF)
                .without_max_times()
                .build(),
        });
        if now < down.next {
            return Err(StoreError::PgConnect(format!(
                "the {} connection to PostgreSQL was lost {} ms ago; reconnecting (next attempt in {} ms): {}",
                self.role,
                now.duration_since(down.since).as_millis(),
                down.next.duration_since(now).as_millis(),
                down.cause
            )));
        }
        down.attempts += 1;
        let attempt = establish(&self.target, self.role, self.idle).and_then(|mut client| {
            let relocked = match self.lock {
                DaemonLock::Held => Some(try_daemon_lock(&mut client)?),
                DaemonLock::NotTaken | DaemonLock::TakenByAnother => None,
            };
            Ok((client, relocked))
        });
        match attempt {
            Ok((client, relocked)) => {
                tracing::info!(
                    schema = %self.target.schema,
                    connection = self.role,
                    attempts = down.attempts,
                    down_ms = u64::try_from(down.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "PostgreSQL connection back"
                );
                self.client = Some(client);
                self.down = None;
                if relocked == Some(false) {
                    self.lock = DaemonLock::TakenByAnother;
                    tracing::error!(
                        schema = %self.target.schema,
                        "another prmsync daemon took this PostgreSQL state's daemon lock while the connection was down: this daemon writes nothing more to it (stop one of the two)"
                    );
                }
                Ok(())
            }
            Err(e) => {
                down.cause = e.to_string();
                down.next = now + down.backoff.next().unwrap_or(MAX_BACKOFF);
                Err(StoreError::PgConnect(format!(
                    "the {} connection to PostgreSQL was lost {} ms ago; reconnecting: {}",
                    self.role,
                    now.duration_since(down.since).as_millis(),
                    down.cause
                )))
            }
        }
    }
}

/// The next job for a store thread, or `None` once every handle is gone. A connection that parks
/// is closed when no job came for its `park_after`, and the wait goes on.
pub(super) fn next_job<T>(rx: &mut mpsc::Receiver<T>, conn: &mut Conn) -> Option<T> {
    let waited = match &conn.park {
        Some((after, rt)) if conn.client.is_some() => {
            rt.block_on(async { tokio::time::timeout(*after, rx.recv()).await })
        }
        _ => return rx.blocking_recv(),
    };
    match waited {
        Ok(job) => job,
        Err(_) => {
            conn.park();
            rx.blocking_recv()
        }
    }
}

/// An error after which the session is gone even if the client has not seen the socket close
/// yet: a `FATAL` from the server (`pg_terminate_backend`, the idle-in-transaction timeout, a
/// shutdown) or a closed connection.
fn ends_session(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(e) => {
            e.is_closed()
                || e.as_db_error().is_some_and(|d| {
                    matches!(
                        d.parsed_severity(),
                        Some(postgres::error::Severity::Fatal | postgres::error::Severity::Panic)
                    )
                })
        }
        _ => false,
    }
}

/// `pg_try_advisory_lock` on the schema's daemon lock (see `docs/postgres.md`).
fn try_daemon_lock(c: &mut Client) -> Result<bool, StoreError> {
    Ok(c.query_one(
        "SELECT pg_try_advisory_lock(hashtext('prmsync daemon ' || current_schema()))",
        &[],
    )?
    .try_get(0)?)
}

/// Connects with the store's settings and session state: the schema (created when missing) on
/// `search_path`, `idle` as `idle_in_transaction_session_timeout`.
fn establish(target: &PgTarget, role: &str, idle: Option<Duration>) -> Result<Client, StoreError> {
    let mut client = config(target, role)?
        .connect(NoTls)
        .map_err(|e| StoreError::PgConnect(e.to_string()))?;
    let schema = &target.schema;
    client.batch_execute(&format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('prmsync migrations {schema}'));
         CREATE SCHEMA IF NOT EXISTS {schema};
         COMMIT;
         SET search_path TO {schema}"
    ))?;
    if let Some(idle) = idle {
        client.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {}",
            idle.as_millis().max(1)
        ))?;
    }
    Ok(client)
}

/// The URL's settings plus what it leaves out: a connect timeout, TCP keepalives, and an
/// `application_name` naming the thread (`prmsync writer SCHEMA`; it shows in
/// `pg_stat_activity`).
fn config(target: &PgTarget, role: &str) -> Result<postgres::Config, StoreError> {
    let mut config: postgres::Config = target
        .url
        .parse()
        .map_err(|e: postgres::Error| StoreError::PgConnect(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // `keepalives=0` in the URL turns them off; left as it is.
    if config.get_keepalives() {
        if config.get_keepalives_idle() == DEFAULT_KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(&format!("prmsync {role} {}", target.schema));
    }
    Ok(config)
}

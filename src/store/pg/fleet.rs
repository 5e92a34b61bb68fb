//! Fleet mode on PostgreSQL: the lease table several daemons share (one lease per tenant, with a
//! fencing generation), the daemons' heartbeats, and the fence every write-side commit of a
//! tenant's state checks in its own transaction.
//!
//! Claiming follows the job queues that run on PostgreSQL (River, Oban, graphile-worker): a
//! `SELECT ... FOR UPDATE SKIP LOCKED LIMIT n` picks free rows without waiting on rows another
//! daemon is claiming, and the `UPDATE` in the same statement takes them. The generation is the
//! fencing token (Kleppmann's "How to do distributed locking"): it grows by one at every claim,
//! and a commit whose generation is not the lease row's is refused. The commit reads the row
//! `FOR KEY SHARE`: a claim (`FOR UPDATE`) skips a row a commit in flight holds, so no commit
//! lands after a claim, while the holder's renewal (an `UPDATE` of `expires_at` only, which
//! takes the weaker `FOR NO KEY UPDATE` lock) neither waits for its own tenants' commits nor
//! holds them up.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use postgres::Transaction;

use super::{PgStore, PgTarget};
use crate::store::StoreError;

/// The stream name of a lease that covers all of a tenant's streams (pollers, planner, decider,
/// writers): the only kind of lease fleet mode takes today.
pub const TENANT_STREAM: &str = "tenant";

/// How a fenced commit locks its lease row (see the module's doc); the conformance suite holds a
/// row the same way to stand for a commit in flight.
pub(in crate::store) const COMMIT_LOCK: &str = "FOR KEY SHARE";

/// The channel a webhook staging notifies (payload: the tenant's schema) at its commit.
pub const INBOX_CHANNEL: &str = "prmsync_inbox";

/// The fleet schema's own numbered steps (tracked in its `schema_migrations`).
const STEPS: &[(i64, &str, &str)] = &[(1, "leases", V1)];

const V1: &str = r#"
CREATE TABLE leases (
    tenant      TEXT NOT NULL,
    stream      TEXT NOT NULL,
    holder      TEXT,
    generation  BIGINT NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    claimed_at  TIMESTAMPTZ,
    PRIMARY KEY (tenant, stream)
);
CREATE INDEX leases_by_holder ON leases (holder);
CREATE TABLE daemons (
    id          TEXT PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at     TIMESTAMPTZ NOT NULL
);
"#;

/// What a tenant's state store checks before each write-side commit: the lease it writes under.
/// `generation` is 0 while this daemon does not hold the lease (every fenced commit is refused),
/// and -1 before the fence is armed (the tenant's start-up writes).
#[derive(Debug)]
pub struct Fence {
    /// The fleet schema holding `leases`.
    pub fleet_schema: String,
    pub tenant: String,
    pub stream: String,
    pub holder: String,
    /// How long the lease lasts: the longest a fenced transaction may sit open.
    pub lease: Duration,
    generation: AtomicI64,
}

impl Fence {
    pub fn new(
        fleet_schema: &str,
        tenant: &str,
        stream: &str,
        holder: &str,
        lease: Duration,
    ) -> Arc<Fence> {
        Arc::new(Fence {
            fleet_schema: fleet_schema.to_owned(),
            tenant: tenant.to_owned(),
            stream: stream.to_owned(),
            holder: holder.to_owned(),
            lease,
            generation: AtomicI64::new(-1),
        })
    }

    /// The generation commits carry from now on (0: none, refuse every fenced commit).
    pub fn set(&self, generation: i64) {
        self.generation.store(generation, Ordering::SeqCst);
    }

    pub fn generation(&self) -> i64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// In the commit's transaction: the lease row (locked `FOR KEY SHARE` until the commit) must
    /// still be this daemon's at the generation it holds; `live` also wants it unexpired (the
    /// outbox claim: a batch is never taken under a lease that may already be someone else's).
    pub(in crate::store) fn check(
        &self,
        tx: &mut Transaction<'_>,
        live: bool,
    ) -> Result<(), StoreError> {
        let held = self.generation();
        if held < 0 {
            return Ok(());
        }
        let row = tx.query_opt(
            &format!(
                "SELECT generation, holder, expires_at > now() FROM {}.leases
                 WHERE tenant = $1 AND stream = $2 {COMMIT_LOCK}",
                self.fleet_schema
            ),
            &[&self.tenant, &self.stream],
        )?;
        let (current, holder, unexpired) = match row {
            Some(r) => (
                r.try_get::<_, i64>(0)?,
                r.try_get::<_, Option<String>>(1)?,
                r.try_get::<_, bool>(2)?,
            ),
            None => (0, None, false),
        };
        let mine = held > 0 && current == held && holder.as_deref() == Some(&self.holder);
        if mine && (unexpired || !live) {
            return Ok(());
        }
        crate::telemetry::meters::meters().fenced_commit();
        Err(StoreError::Fenced {
            tenant: self.tenant.clone(),
            held,
            current,
        })
    }
}

/// One lease row, for `prmsync status` and tests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRow {
    pub tenant: String,
    pub stream: String,
    pub holder: Option<String>,
    pub generation: i64,
    /// Whether it is held now (unexpired).
    pub live: bool,
    /// Milliseconds until it expires (negative: expired that long ago; -1 for a released or
    /// never claimed lease).
    pub expires_in_ms: i64,
    /// When it expires, epoch milliseconds (`None`: released or never claimed).
    pub expires_at_ms: Option<i64>,
    /// When its holder claimed it (at this generation), epoch milliseconds.
    pub claimed_at_ms: Option<i64>,
}

/// What one heartbeat did for this daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Leases still held after renewal: (tenant, generation).
    pub held: Vec<(String, i64)>,
    /// Leases newly claimed: (tenant, generation).
    pub claimed: Vec<(String, i64)>,
    /// How many leases this daemon should hold for an even spread (leases / live daemons,
    /// rounded up); held beyond it are released by the caller.
    pub fair_share: usize,
}

/// The fleet's shared schema: leases and daemons.
#[derive(Debug, Clone)]
pub struct Leases {
    store: PgStore,
}

impl Leases {
    /// Connects to the fleet schema, creating and migrating it. `lease`: the longest a
    /// heartbeat's transaction may sit open before the server ends the session (a stalled
    /// daemon must not keep lease rows locked).
    pub fn open(target: &PgTarget, lease: Duration) -> Result<Leases, StoreError> {
        Ok(Leases {
            store: PgStore::open_steps(target, STEPS, None, Some(lease))?,
        })
    }

    pub fn schema(&self) -> &str {
        self.store.schema()
    }

    /// One heartbeat of daemon `me` running `tenants`: records it alive, makes sure every tenant
    /// has a lease row, renews the leases it holds (for `lease`), and claims free or expired ones
    /// up to its fair share. One transaction.
    pub async fn heartbeat(
        &self,
        me: String,
        tenants: Vec<String>,
        lease: Duration,
    ) -> Result<Heartbeat, StoreError> {
        self.store
            .write(move |tx| heartbeat(tx, &me, &tenants, lease))
            .await
    }

    /// [`Leases::heartbeat`] that does nothing (answers [`StoreError::Closed`]) if the writer
    /// connection reaches it only after `deadline`: its caller has given up on it by then.
    pub async fn heartbeat_until(
        &self,
        me: String,
        tenants: Vec<String>,
        lease: Duration,
        deadline: std::time::Instant,
    ) -> Result<Heartbeat, StoreError> {
        self.store
            .call(move |c| {
                if std::time::Instant::now() > deadline {
                    return Err(StoreError::Closed);
                }
                let mut tx = c.transaction()?;
                let beat = heartbeat(&mut tx, &me, &tenants, lease)?;
                tx.commit()?;
                Ok(beat)
            })
            .await
    }

    /// Gives up `tenant`'s lease (clean shutdown, rebalancing, tenant removed) if this daemon
    /// still holds it at `generation`: it expires now and the next claim bumps the generation.
    pub async fn release(
        &self,
        me: String,
        tenant: String,
        generation: i64,
    ) -> Result<bool, StoreError> {
        self.store
            .write(move |tx| {
                Ok(tx.execute(
                    "UPDATE leases SET expires_at = '-infinity'
                     WHERE tenant = $1 AND stream = $2 AND holder = $3 AND generation = $4
                       AND expires_at > '-infinity'",
                    &[&tenant, &TENANT_STREAM, &me, &generation],
                )? == 1)
            })
            .await
    }

    /// This daemon has stopped: its heartbeat row goes (its leases were released one by one).
    pub async fn leave(&self, me: String) -> Result<(), StoreError> {
        self.store
            .write(move |tx| {
                tx.execute("DELETE FROM daemons WHERE id = $1", &[&me])?;
                Ok(())
            })
            .await
    }

    /// Every lease row, by tenant.
    pub async fn list(&self) -> Result<Vec<LeaseRow>, StoreError> {
        self.store.read(list).await
    }

    /// Moves `tenant`'s lease to `holder` at the next generation now, whoever held it (tests and
    /// conformance: a takeover without waiting for the expiry). Returns the new generation.
    pub async fn take_over(
        &self,
        holder: String,
        tenant: String,
        lease: Duration,
    ) -> Result<i64, StoreError> {
        self.store
            .write(move |tx| {
                ensure_rows(tx, std::slice::from_ref(&tenant))?;
                // Waits for the commits in flight under the old generation, as a claim's
                // `SKIP LOCKED` does not.
                tx.execute(
                    "SELECT 1 FROM leases WHERE tenant = $1 AND stream = $2 FOR UPDATE",
                    &[&tenant, &TENANT_STREAM],
                )?;
                let secs = lease.as_secs_f64();
                Ok(tx
                    .query_one(
                        "UPDATE leases SET holder = $3, generation = generation + 1,
                             expires_at = now() + make_interval(secs => $4::FLOAT8), claimed_at = now()
                         WHERE tenant = $1 AND stream = $2 RETURNING generation",
                        &[&tenant, &TENANT_STREAM, &holder, &secs],
                    )?
                    .try_get(0)?)
            })
            .await
    }
}

fn ensure_rows(tx: &mut Transaction<'_>, tenants: &[String]) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO leases (tenant, stream) SELECT t, $2 FROM unnest($1::TEXT[]) AS t
         ON CONFLICT (tenant, stream) DO NOTHING",
        &[&tenants, &TENANT_STREAM],
    )?;
    Ok(())
}

fn heartbeat(
    tx: &mut Transaction<'_>,
    me: &str,
    tenants: &[String],
    lease: Duration,
) -> Result<Heartbeat, StoreError> {
    let secs = lease.as_secs_f64();
    tx.execute(
        "INSERT INTO daemons (id, seen_at) VALUES ($1, now())
         ON CONFLICT (id) DO UPDATE SET seen_at = now()",
        &[&me],
    )?;
    // A daemon silent for three lease periods is gone (killed): it no longer counts in the spread.
    tx.execute(
        "DELETE FROM daemons WHERE seen_at < now() - make_interval(secs => $1::FLOAT8 * 3)",
        &[&secs],
    )?;
    ensure_rows(tx, tenants)?;
    let live: i64 = tx
        .query_one(
            "SELECT count(*) FROM daemons WHERE seen_at > now() - make_interval(secs => $1::FLOAT8)",
            &[&secs],
        )?
        .try_get(0)?;
    let total: i64 = tx
        .query_one(
            "SELECT count(*) FROM leases WHERE stream = $1",
            &[&TENANT_STREAM],
        )?
        .try_get(0)?;
    let fair_share = usize::try_from((total + live.max(1) - 1) / live.max(1)).unwrap_or(0);
    // Renew what is still ours (an expired lease nobody took yet is ours again, same generation).
    let held: Vec<(String, i64)> = tx
        .query(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $3::FLOAT8)
             WHERE holder = $1 AND stream = $2 AND tenant = ANY($4)
               AND expires_at > '-infinity'
             RETURNING tenant, generation",
            &[&me, &TENANT_STREAM, &secs, &tenants],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, StoreError>>()?;
    let mut held = held;
    held.sort();
    let room = fair_share.saturating_sub(held.len());
    let claimed: Vec<(String, i64)> = if room == 0 {
        Vec::new()
    } else {
        tx.query(
            "WITH free AS (
                 SELECT tenant, stream FROM leases
                 WHERE stream = $2 AND tenant = ANY($4) AND expires_at <= now()
                 ORDER BY expires_at, tenant
                 LIMIT $5
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE leases l SET holder = $1, generation = l.generation + 1,
                 expires_at = now() + make_interval(secs => $3::FLOAT8), claimed_at = now()
             FROM free WHERE l.tenant = free.tenant AND l.stream = free.stream
             RETURNING l.tenant, l.generation",
            &[&me, &TENANT_STREAM, &secs, &tenants, &(room as i64)],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, StoreError>>()?
    };
    let mut claimed = claimed;
    claimed.sort();
    Ok(Heartbeat {
        held,
        claimed,
        fair_share,
    })
}

fn list(c: &mut postgres::Client) -> Result<Vec<LeaseRow>, StoreError> {
    c.query(
        "SELECT tenant, stream, holder, generation, expires_at > now(),
                CASE WHEN expires_at = '-infinity' THEN -1
                     ELSE (EXTRACT(EPOCH FROM expires_at - now()) * 1000)::BIGINT END,
                CASE WHEN expires_at = '-infinity' THEN NULL
                     ELSE (EXTRACT(EPOCH FROM expires_at) * 1000)::BIGINT END,
                (EXTRACT(EPOCH FROM claimed_at) * 1000)::BIGINT
         FROM leases ORDER BY tenant, stream",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(LeaseRow {
            tenant: r.try_get(0)?,
            stream: r.try_get(1)?,
            holder: r.try_get(2)?,
            generation: r.try_get(3)?,
            live: r.try_get(4)?,
            expires_in_ms: r.try_get(5)?,
            expires_at_ms: r.try_get(6)?,
            claimed_at_ms: r.try_get(7)?,
        })
    })
    .collect()
}

/// Listens on [`INBOX_CHANNEL`] on a connection of its own and sends each notification's schema
/// name (a tenant's state whose inbox gained webhook changes, staged by any daemon). Reconnects
/// after a lost connection (every second); the thread ends when the receiver is dropped.
pub fn listen(target: &PgTarget) -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let url = target.url.clone();
    let spawned = std::thread::Builder::new()
        .name("prmsync-pg-listen".into())
        .spawn(move || {
            while !tx.is_closed() {
                if let Err(e) = listen_once(&url, &tx) {
                    tracing::warn!(error = %e, "inbox notifications lost; reconnecting (planners still check every poll interval)");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the inbox listener; planners check every poll interval");
    }
    rx
}

fn listen_once(url: &str, tx: &tokio::sync::mpsc::Sender<String>) -> Result<(), postgres::Error> {
    use postgres::fallible_iterator::FallibleIterator as _;
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(&format!("LISTEN {INBOX_CHANNEL}"))?;
    while !tx.is_closed() {
        let mut notes = client.notifications();
        let mut it = notes.timeout_iter(Duration::from_secs(1));
        while let Some(n) = it.next()? {
            // Full: the planner is woken anyway; a dropped wake-up is caught by its interval.
            let _ = tx.try_send(n.payload().to_owned());
        }
    }
    Ok(())
}

//! A read-only connection to a PostgreSQL state, for commands that must not write (`prmsync
//! plan`, `report attribution`): the counterpart of opening the SQLite file read-only.
//!
//! The blocking client lives on its own thread (it must not be created or dropped on an async
//! worker); callers block on their answer as they would on a SQLite read. Every read runs in one
//! `READ ONLY, REPEATABLE READ` transaction, so what it returns is one consistent state.

use std::sync::mpsc;

use postgres::{Client, IsolationLevel, NoTls, Transaction};

use super::super::StoreError;
use super::PgTarget;

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// A handle to the reading thread; the connection closes when this drops.
#[derive(Debug)]
pub(in crate::store) struct PgReadOnly {
    jobs: mpsc::Sender<Job>,
}

impl PgReadOnly {
    /// Connects to an existing state's schema without creating or migrating anything.
    pub(in crate::store) fn open(target: &PgTarget) -> Result<PgReadOnly, StoreError> {
        target.validate().map_err(StoreError::PgMigration)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let t = target.clone();
        std::thread::Builder::new()
            .name("prmsync-pg-read-only".into())
            .spawn(move || {
                let mut client = match connect(&t) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut client);
                }
            })
            .map_err(|e| StoreError::PgConnect(format!("cannot start the reading thread: {e}")))?;
        ready_rx.recv().map_err(|_| StoreError::Closed)??;
        Ok(PgReadOnly { jobs })
    }

    /// Runs `f` in one read-only, repeatable-read transaction and waits for its result.
    pub(in crate::store) fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |client| {
            let r = (|| {
                let mut t = client
                    .build_transaction()
                    .read_only(true)
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .start()?;
                let r = f(&mut t)?;
                t.commit()?;
                Ok(r)
            })();
            let _ = tx.send(r);
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }
}

/// Connects, refuses a schema prmsync never migrated, and points `search_path` at it.
fn connect(target: &PgTarget) -> Result<Client, StoreError> {
    let mut client =
        Client::connect(&target.url, NoTls).map_err(|e| StoreError::PgConnect(e.to_string()))?;
    let schema = &target.schema;
    let migrated: bool = client
        .query_one(
            "SELECT to_regclass(quote_ident($1) || '.schema_migrations') IS NOT NULL",
            &[schema],
        )?
        .try_get(0)?;
    if !migrated {
        return Err(StoreError::PgConnect(format!(
            "schema {schema} holds no prmsync state (has the daemon run on it yet?)"
        )));
    }
    client.batch_execute(&format!(
        "SET search_path TO {schema}; SET default_transaction_read_only = on"
    ))?;
    Ok(client)
}

/// The MDF requests as stored, for the attribution report.
pub(in crate::store) fn mdf(
    c: &mut impl postgres::GenericClient,
) -> Result<Vec<super::super::attribution::StoredMdf>, StoreError> {
    c.query(
        "SELECT id, fields, updated_ms FROM mdf_requests ORDER BY id",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(super::super::attribution::StoredMdf {
            id: r.try_get(0)?,
            fields: serde_json::from_str(r.try_get::<_, &str>(1)?)?,
            updated_ms: r.try_get(2)?,
        })
    })
    .collect()
}

/// Every partner's name from the PRM, for the attribution report (as SQLite's `attribution.rs`).
pub(in crate::store) fn partner_names(
    c: &mut impl postgres::GenericClient,
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    c.query("SELECT partner, name FROM registration_partners", &[])?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

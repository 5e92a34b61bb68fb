//! `prmsync state copy --from sqlite:PATH --to postgres://… [--schema S]`: moves an
//! installation's state to PostgreSQL without re-syncing (the SQL is `store/copy.rs`); refuses
//! while a daemon holds the state file, and prints what was copied.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::store::copy::{self, CopyError, CopyReport};
use crate::store::pg::PgTarget;

/// Rows per INSERT (PostgreSQL's parameter cap lowers it for wide tables).
const BATCH_ROWS: usize = 500;

/// Why `state copy` did not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum StateCopyError {
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Copy(#[from] CopyError),
}

/// `--from sqlite:PATH` as a path.
pub fn parse_from(from: &str) -> Result<PathBuf, StateCopyError> {
    match from.strip_prefix("sqlite:") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(StateCopyError::Usage(format!(
            "--from takes sqlite:PATH (the state file), not {from:?}"
        ))),
    }
}

/// `--to` and `--schema` as a PostgreSQL target.
pub fn parse_to(to: &str, schema: &str) -> Result<PgTarget, StateCopyError> {
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(StateCopyError::Usage(
            "--to takes a postgres:// URL (for example postgres://prmsync@db:5432/prmsync)".into(),
        ));
    }
    let target = PgTarget {
        url: to.to_owned(),
        schema: schema.to_owned(),
    };
    target.validate().map_err(StateCopyError::Usage)?;
    Ok(target)
}

/// Copies the state file at `from` into `to`, holding the file's lock meanwhile.
pub fn run(from: &Path, to: &PgTarget) -> Result<CopyReport, StateCopyError> {
    if !from.exists() {
        return Err(StateCopyError::Usage(format!(
            "no state file at {}",
            from.display()
        )));
    }
    let lock = crate::state_lock::try_hold(from).map_err(|e| {
        StateCopyError::Busy(format!(
            "cannot lock {}: {e}",
            crate::state_lock::lock_path(from).display()
        ))
    })?;
    let Some(_lock) = lock else {
        return Err(StateCopyError::Busy(format!(
            "a prmsync daemon holds {} (its lock file {}): stop it before copying its state",
            from.display(),
            crate::state_lock::lock_path(from).display()
        )));
    };
    Ok(copy::sqlite_to_postgres(from, to, BATCH_ROWS)?)
}

/// The summary for a terminal (the URL is not printed: it may hold a password).
pub fn render(from: &Path, to: &PgTarget, r: &CopyReport) -> String {
    let mut s = format!(
        "copied {} into PostgreSQL schema {} (migration step {}), in one transaction:\n",
        from.display(),
        to.schema,
        r.schema_version
    );
    let total: i64 = r.tables.iter().map(|(_, n)| n).sum();
    for (table, rows) in &r.tables {
        let _ = writeln!(s, "  {table:<24} {rows:>10} row(s)");
    }
    let _ = writeln!(
        s,
        "{total} row(s) in {} table(s), each count checked on both sides.\n\
         Next: set [state] url (and schema = \"{}\") in the config and start the daemon; it goes on \
         from the copied cursors. Keep {} as it is until the daemon runs on PostgreSQL.",
        r.tables.len(),
        to.schema,
        from.display()
    );
    s
}

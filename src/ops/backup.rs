//! `prmsync backup PATH`: a consistent copy of the state file taken while the daemon runs
//! (SQLite `VACUUM INTO` inside one read transaction), checked before it is put in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// How long the copy waits for a writer holding a lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a backup failed; the state file is never changed, and a partial copy is removed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; choose a new file name (a backup never overwrites)")]
    Exists(PathBuf),
    #[error("no state file at {0} (has prmsync run yet?)")]
    NoState(PathBuf),
    #[error("reading {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// The state file's schema version (`PRAGMA user_version`): a restore needs a prmsync that
    /// knows this version (the same release or a newer one).
    pub schema_version: i64,
}

/// Copies `state` to `dest` as one consistent snapshot, even while the daemon writes: the copy is
/// written to `dest.partial`, must pass `PRAGMA integrity_check`, is synced to disk and only then
/// renamed to `dest`.
pub fn backup(state: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    if !state.exists() {
        return Err(BackupError::NoState(state.to_owned()));
    }
    if dest.exists() {
        return Err(BackupError::Exists(dest.to_owned()));
    }
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    if partial.exists() {
        return Err(BackupError::Exists(partial));
    }
    let result = copy_and_check(state, &partial);
    match result {
        Ok(schema_version) => {
            std::fs::rename(&partial, dest).map_err(|source| BackupError::Io {
                path: dest.to_owned(),
                source,
            })?;
            sync_dir(dest);
            let bytes = std::fs::metadata(dest).map_or(0, |m| m.len());
            Ok(BackupReport {
                path: dest.to_owned(),
                bytes,
                schema_version,
            })
        }
        Err(e) => {
            // Best effort: the partial copy is useless; the error says what went wrong.
            if let Err(rm) = std::fs::remove_file(&partial)
                && rm.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %partial.display(), error = %rm, "cannot remove the partial backup");
            }
            Err(e)
        }
    }
}

fn copy_and_check(state: &Path, partial: &Path) -> Result<i64, BackupError> {
    let sql = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Sqlite { path, source }
    };
    let src = Connection::open_with_flags(
        state,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(state))?;
    src.busy_timeout(BUSY_TIMEOUT).map_err(sql(state))?;
    let target = partial.to_str().ok_or_else(|| BackupError::Io {
        path: partial.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path is not UTF-8"),
    })?;
    // VACUUM INTO reads the database in one transaction: a snapshot, whatever the writer does.
    src.execute("VACUUM INTO ?1", [target])
        .map_err(sql(state))?;
    drop(src);

    let copy = Connection::open_with_flags(partial, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sql(partial))?;
    let verdict: Vec<String> = copy
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql(partial))?;
    if verdict != ["ok"] {
        return Err(BackupError::Corrupt(verdict.join("; ")));
    }
    let schema_version: i64 = copy
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql(partial))?;
    drop(copy);
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|source| BackupError::Io {
            path: partial.to_owned(),
            source,
        })?;
    Ok(schema_version)
}

/// Makes the rename durable (best effort: some file systems refuse to sync a directory).
fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all())
    {
        tracing::debug!(dir = %dir.display(), error = %e, "directory sync failed");
    }
}

/// What `prmsync backup` says for a PostgreSQL state: it copies no database; the schema is
/// backed up with PostgreSQL's own tool (the URL is not printed: it may hold a password).
pub fn postgres_refusal(schema: &str, dest: &Path) -> String {
    format!(
        "prmsync backup copies the SQLite state file; this state is in PostgreSQL (schema {schema}), \
         which prmsync does not copy. Back it up with pg_dump, for example:\n  \
         pg_dump --schema={schema} --format=custom --file={} \"$DATABASE_URL\"\n\
         (restore with pg_restore; see docs/postgres.md, \"Backup\")\n",
        dest.display()
    )
}

/// The report for a terminal.
pub fn render(r: &BackupReport) -> String {
    format!(
        "backup written: {} ({} bytes, schema v{}); integrity check ok\n\
         restore: stop prmsync, copy it over the state file (remove its -wal and -shm files), start prmsync\n",
        r.path.display(),
        r.bytes,
        r.schema_version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_overwrite_and_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let store = crate::store::Store::open(&state).unwrap();
        drop(store);
        let dest = dir.path().join("copy.db");
        std::fs::write(&dest, b"keep me").unwrap();
        let err = backup(&state, &dest).unwrap_err();
        assert!(matches!(err, BackupError::Exists(_)), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"keep me");
    }

    #[test]
    fn a_missing_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = backup(&dir.path().join("none.db"), &dir.path().join("b.db")).unwrap_err();
        assert!(err.to_string().contains("no state file"), "{err}");
        assert!(!dir.path().join("b.db").exists());
    }
}

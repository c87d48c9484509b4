//! The SQLite index beside SOURCE: per-context limits and the last saved
//! usage counters.
//!
//! # Persistence
//!
//! The request path never touches SQLite: counters live in memory
//! ([`crate::dlimit`]) and a background thread saves them in one
//! transaction every few seconds and at unmount. The `clean` flag is cleared
//! while mounted and set only after the final save, so after a crash (kill
//! -9, power loss) the next mount sees it unset and recounts from the tree
//! instead of trusting stale counters.
//!
//! # Compatibility
//!
//! The schema is versioned by `PRAGMA user_version` with append-only
//! migrations applied in one exclusive transaction (cargo's model): never
//! edit or remove a shipped migration.
//!
//! # Locking
//!
//! WAL mode with a busy timeout, so the daemon and offline tools can open the
//! same file; the daemon holds its connection for the mount's life.
//!
//! # Corruption
//!
//! An index that SQLite finds damaged, that fails `PRAGMA quick_check`, or
//! that is not what vxfs writes (another schema, triggers or views, values
//! no vxfs stores: [`check_schema`], `check_rows`) is moved aside
//! (`*.corrupt-<unix time>`, nothing is deleted) and a fresh one is
//! created; usage is then recounted from the tree's xattrs. Limits cannot
//! be recovered from the tree and must be set again (logged as an error).
//! Nothing read from an index is trusted before these checks. A file of a
//! newer vxfs, missing permissions or a full disk are errors, not damage.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::dlimit::{Limit, Usage};
use crate::tagging::Xid;

/// Table of per-context limits.
const LIMITS: &str = "limits";
/// Table of saved usage counters.
const USAGE: &str = "usage";

/// Append-only schema migrations; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &["CREATE TABLE limits (
        xid INTEGER PRIMARY KEY,
        space_kib INTEGER,
        inodes INTEGER,
        reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved BETWEEN 0 AND 100)
    );
    CREATE TABLE usage (
        xid INTEGER PRIMARY KEY,
        space_bytes INTEGER NOT NULL,
        inodes INTEGER NOT NULL
    );
    CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);"];

/// Errors of the index, with the file they concern.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite failed.
    #[error("index {path}: {error}")]
    Sqlite {
        /// The index file.
        path: PathBuf,
        /// What SQLite said.
        error: rusqlite::Error,
    },
    /// The file could not be moved aside.
    #[error("index {path}: cannot move the corrupt file aside: {error}")]
    MoveAside {
        /// The index file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is a database, but not one this vxfs wrote: another schema
    /// (tables, triggers, views), or values no vxfs stores.
    #[error("index {path}: not a vxfs index as written by vxfs: {why}")]
    Hostile {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file was written by a newer vxfs.
    #[error("index {path}: schema version {found} is newer than this vxfs ({known})")]
    TooNew {
        /// The index file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Latest version known.
        known: usize,
    },
}

/// An open index.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

/// The exclusive claim of a mounted daemon on an index file (an `flock`,
/// independent of SQLite's own byte-range locks), held for the mount's life:
/// a second mount of the same index would count everything twice, and
/// offline tools must not change limits the daemon would never see.
#[derive(Debug)]
pub struct MountClaim {
    _file: std::fs::File,
}

/// Claims `path` for a mount, or fails when another process holds it.
pub fn claim(path: &Path) -> std::io::Result<MountClaim> {
    let file = std::fs::File::open(path)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(MountClaim { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(std::io::Error::other(format!(
            "index {} is in use by another vxfs mount",
            path.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Whether a mounted daemon holds `path` (see [`claim`]).
pub fn in_use(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared)
        == Err(rustix::io::Errno::WOULDBLOCK)
}

impl IndexError {
    /// Whether the file is damaged or not vxfs's, so that moving it aside
    /// and starting afresh is the cure (not for missing permissions, a
    /// full disk or a newer vxfs's file).
    fn is_damage(&self) -> bool {
        match self {
            IndexError::Sqlite { error, .. } => is_corruption(error),
            IndexError::Hostile { .. } => true,
            IndexError::MoveAside { .. } | IndexError::TooNew { .. } => false,
        }
    }
}

/// Checks that `conn` holds exactly the schema that `migrations` make, and
/// is at their version: the same tables and indexes with the same SQL, and
/// nothing else (no trigger, no view; SQLite's own statistics tables
/// aside). A database that passes cannot run code of its own on our
/// statements, and every column our queries name exists with the
/// constraints we declared. Shared with hashify's index.
pub fn check_schema(conn: &Connection, migrations: &[&str]) -> Result<(), String> {
    type Object = (String, String, String, Option<String>);
    fn objects(conn: &Connection) -> rusqlite::Result<Vec<Object>> {
        let mut stmt = conn.prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite\\_stat%' ESCAPE '\\' ORDER BY type, name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect()
    }
    let reference = Connection::open_in_memory().map_err(|e| e.to_string())?;
    for sql in migrations {
        reference.execute_batch(sql).map_err(|e| e.to_string())?;
    }
    let want = objects(&reference).map_err(|e| e.to_string())?;
    let got = objects(conn).map_err(|e| format!("reading its schema: {e}"))?;
    if let Some((kind, name, ..)) = got.iter().find(|o| !want.contains(o)) {
        return Err(format!("{kind} {name:?} is not part of the schema"));
    }
    if let Some((kind, name, ..)) = want.iter().find(|o| !got.contains(o)) {
        return Err(format!("{kind} {name:?} is missing"));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version != migrations.len() as i64 {
        return Err(format!(
            "schema version {version} with the schema of version {}",
            migrations.len()
        ));
    }
    Ok(())
}

/// Checks every row holds what vxfs writes: context ids in `0..2^32`,
/// counts and limits that are non-negative integers (or no limit), a
/// reserved percentage, a clean flag of 0 or 1.
fn check_rows(conn: &Connection) -> Result<(), String> {
    let checks = [
        (
            "limits",
            "xid < 0 OR xid > 4294967295 \
             OR (space_kib IS NOT NULL AND (typeof(space_kib) != 'integer' OR space_kib < 0)) \
             OR (inodes IS NOT NULL AND (typeof(inodes) != 'integer' OR inodes < 0)) \
             OR typeof(reserved) != 'integer'",
        ),
        (
            "usage",
            "xid < 0 OR xid > 4294967295 \
             OR typeof(space_bytes) != 'integer' OR space_bytes < 0 \
             OR typeof(inodes) != 'integer' OR inodes < 0",
        ),
        ("state", "key = 'clean' AND value NOT IN ('0', '1')"),
    ];
    for (table, bad) in checks {
        let sql = format!("SELECT count(*) FROM {table} WHERE {bad}");
        let n: i64 = conn
            .query_row(&sql, [], |r| r.get(0))
            .map_err(|e| format!("checking {table}: {e}"))?;
        if n > 0 {
            return Err(format!("{n} rows of {table} hold values vxfs never writes"));
        }
    }
    Ok(())
}

/// Whether SQLite refused a statement as such (`SQLITE_ERROR`: no such
/// table, already exists, ...), as opposed to failing to run it.
pub fn is_sql_error(e: &rusqlite::Error) -> bool {
    let code = match e {
        rusqlite::Error::SqlInputError { error, .. } => Some(error.code),
        other => other.sqlite_error_code(),
    };
    code == Some(rusqlite::ErrorCode::Unknown)
}

/// Whether SQLite's error means the file is damaged (as opposed to, say,
/// missing permissions or a missing directory, which moving it aside would
/// not fix and must be reported as they are).
fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// The default index path for SOURCE: `<SOURCE>.vxfs.db` beside it.
pub fn default_path(source: &Path) -> PathBuf {
    let mut name = source.as_os_str().to_owned();
    name.push(".vxfs.db");
    PathBuf::from(name)
}

impl Index {
    /// Opens (creating if needed) the index at `path`. A corrupt file is
    /// moved aside and replaced; the returned flag says so.
    pub fn open(path: &Path) -> Result<(Index, bool), IndexError> {
        match Self::open_checked(path) {
            Ok(index) => Ok((index, false)),
            Err(error) if error.is_damage() => {
                log::error!(
                    "{error}: moving it aside and rebuilding usage from the tree. Limits \
                     must be set again."
                );
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                for suffix in ["", "-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", path.display()));
                    if from.exists() {
                        let to = format!("{}.corrupt-{stamp}{suffix}", path.display());
                        std::fs::rename(&from, to).map_err(|error| IndexError::MoveAside {
                            path: path.to_path_buf(),
                            error,
                        })?;
                    }
                }
                Ok((Self::open_checked(path)?, true))
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path) -> Result<Index, IndexError> {
        let err = |error| IndexError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "normal")
            .map_err(err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(check),
            )));
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > MIGRATIONS.len() as i64 {
            return Err(IndexError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        let hostile = |why: String| IndexError::Hostile {
            path: path.to_path_buf(),
            why,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let applied = tx
                .execute_batch(sql)
                .and_then(|()| tx.pragma_update(None, "user_version", (i + 1) as i64));
            match applied {
                // A plain SQL error: the file's schema is not what the
                // version it claims makes (I/O and space errors stay such).
                Err(e) if is_sql_error(&e) => {
                    return Err(hostile(format!("migration {} fails: {e}", i + 1)));
                }
                other => other.map_err(err)?,
            }
        }
        tx.commit().map_err(err)?;
        check_schema(&conn, MIGRATIONS).map_err(hostile)?;
        check_rows(&conn).map_err(hostile)?;
        Ok(Index {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, error: rusqlite::Error) -> IndexError {
        IndexError::Sqlite {
            path: self.path.clone(),
            error,
        }
    }

    /// Every context's limit.
    pub fn limits(&self) -> Result<Vec<(Xid, Limit)>, IndexError> {
        let sql = format!("SELECT xid, space_kib, inodes, reserved FROM {LIMITS} ORDER BY xid");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let space: Option<i64> = r.get(1)?;
                let inodes: Option<i64> = r.get(2)?;
                Ok((
                    Xid(r.get::<_, u32>(0)?),
                    Limit {
                        space: space.map(|k| (k as u64).saturating_mul(1024)),
                        inodes: inodes.map(|n| n as u64),
                        reserved: r.get(3)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Sets (or, with `None`, removes) a context's limit.
    pub fn set_limit(&self, xid: Xid, limit: Option<Limit>) -> Result<(), IndexError> {
        let result = match limit {
            Some(l) => self.conn.execute(
                &format!(
                    "INSERT INTO {LIMITS} (xid, space_kib, inodes, reserved) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(xid) DO UPDATE SET space_kib = ?2, inodes = ?3, reserved = ?4"
                ),
                params![
                    xid.0,
                    l.space.map(|b| (b / 1024) as i64),
                    l.inodes.map(|n| n as i64),
                    l.reserved
                ],
            ),
            None => self
                .conn
                .execute(&format!("DELETE FROM {LIMITS} WHERE xid = ?1"), [xid.0]),
        };
        result.map(drop).map_err(|e| self.err(e))
    }

    /// The saved usage, if the last mount ended cleanly.
    pub fn clean_usage(&self) -> Result<Option<Vec<(Xid, Usage)>>, IndexError> {
        let clean: Option<String> = self
            .conn
            .query_row("SELECT value FROM state WHERE key = 'clean'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        if clean.as_deref() != Some("1") {
            return Ok(None);
        }
        let sql = format!("SELECT xid, space_bytes, inodes FROM {USAGE}");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    Xid(r.get::<_, u32>(0)?),
                    Usage {
                        space: r.get::<_, i64>(1)? as u64,
                        inodes: r.get::<_, i64>(2)? as u64,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|e| self.err(e))
    }

    /// Marks the saved counters as not to be trusted: the next mount
    /// recounts the tree (its files were changed behind the daemon's back).
    pub fn mark_unclean(&self) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT INTO state (key, value) VALUES ('clean', '0')
                 ON CONFLICT(key) DO UPDATE SET value = '0'",
                [],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Saves every context's usage in one transaction, marking the index
    /// clean (only at unmount) or in use.
    pub fn save_usage(&mut self, usage: &[(Xid, Usage)], clean: bool) -> Result<(), IndexError> {
        let path = self.path.clone();
        let err = |error| IndexError::Sqlite {
            path: path.clone(),
            error,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(&format!("DELETE FROM {USAGE}"), [])
            .map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO {USAGE} (xid, space_bytes, inodes) VALUES (?1, ?2, ?3)"
                ))
                .map_err(err)?;
            for (xid, u) in usage {
                insert
                    .execute(params![xid.0, u.space as i64, u.inodes as i64])
                    .map_err(err)?;
            }
        }
        tx.execute(
            "INSERT INTO state (key, value) VALUES ('clean', ?1)
             ON CONFLICT(key) DO UPDATE SET value = ?1",
            [if clean { "1" } else { "0" }],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_twice_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.db");
        let (mut index, rebuilt) = Index::open(&path).unwrap();
        assert!(!rebuilt);
        let limit = Limit {
            space: Some(1 << 20),
            inodes: Some(100),
            reserved: 5,
        };
        index.set_limit(Xid(42), Some(limit)).unwrap();
        assert_eq!(index.clean_usage().unwrap(), None, "never saved clean");
        let usage = vec![(
            Xid(42),
            Usage {
                space: 8192,
                inodes: 3,
            },
        )];
        index.save_usage(&usage, false).unwrap();
        assert_eq!(index.clean_usage().unwrap(), None, "in use is not clean");
        index.save_usage(&usage, true).unwrap();
        drop(index);
        let (index, _) = Index::open(&path).unwrap();
        assert_eq!(index.limits().unwrap(), vec![(Xid(42), limit)]);
        assert_eq!(index.clean_usage().unwrap(), Some(usage));
        index.set_limit(Xid(42), None).unwrap();
        assert!(index.limits().unwrap().is_empty());
    }

    #[test]
    fn one_mount_claims_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.db");
        Index::open(&path).unwrap();
        assert!(!in_use(&path));
        // `in_use`'s probe lock lives on in a child another test thread
        // forks before that child's exec closes the descriptor: retry.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let held = loop {
            match claim(&path) {
                Ok(held) => break held,
                Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        assert!(in_use(&path));
        assert!(claim(&path).is_err(), "a second mount is refused");
        drop(held);
        assert!(!in_use(&path));
    }

    #[test]
    fn a_corrupt_index_is_moved_aside_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.db");
        std::fs::write(&path, b"this is not a database, but it is 32+ bytes long").unwrap();
        let (index, rebuilt) = Index::open(&path).unwrap();
        assert!(rebuilt);
        assert!(index.limits().unwrap().is_empty());
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(kept.len(), 1, "the corrupt file is kept for inspection");
    }

    /// Opens a fresh index at `path` with a limit and clean usage, then
    /// runs `sql` on it behind vxfs's back.
    fn tampered(path: &Path, sql: &str) {
        let (mut index, _) = Index::open(path).unwrap();
        let limit = Limit {
            space: Some(1 << 20),
            inodes: Some(10),
            reserved: 0,
        };
        index.set_limit(Xid(7), Some(limit)).unwrap();
        let usage = Usage {
            space: 4096,
            inodes: 1,
        };
        index.save_usage(&[(Xid(7), usage)], true).unwrap();
        drop(index);
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(sql).unwrap();
    }

    #[test]
    fn a_hostile_index_is_moved_aside_not_trusted() {
        let cases = [
            "UPDATE usage SET space_bytes = -1",
            "UPDATE usage SET inodes = 'many'",
            "UPDATE limits SET space_kib = -5",
            "UPDATE limits SET inodes = 2.5",
            "INSERT INTO usage VALUES (-3, 0, 0)",
            "INSERT INTO limits (xid) VALUES (4294967296)",
            "UPDATE state SET value = 'yes' WHERE key = 'clean'",
            "CREATE TRIGGER t AFTER INSERT ON usage BEGIN DELETE FROM limits; END",
            "CREATE VIEW v AS SELECT * FROM usage",
            "CREATE TABLE extra (x)",
            "DROP TABLE state",
            "ALTER TABLE usage ADD COLUMN more INTEGER",
            "DROP TABLE usage; CREATE TABLE usage (xid, space_bytes, inodes)",
            "PRAGMA user_version = -1",
            "PRAGMA user_version = 0",
        ];
        for sql in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("i.db");
            tampered(&path, sql);
            let (index, rebuilt) = Index::open(&path).unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(rebuilt, "{sql}: trusted");
            assert!(index.limits().unwrap().is_empty(), "{sql}");
            assert_eq!(index.clean_usage().unwrap(), None, "{sql}: recounted");
            let aside = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
            assert!(aside, "{sql}: kept for inspection");
        }
        // Statistics of an ANALYZE are SQLite's own, and a newer vxfs's
        // file is refused, not moved.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.db");
        tampered(&path, "ANALYZE");
        assert!(!Index::open(&path).unwrap().1);
        tampered(&path, "PRAGMA user_version = 99");
        assert!(matches!(
            Index::open(&path),
            Err(IndexError::TooNew { found: 99, .. })
        ));
    }
}

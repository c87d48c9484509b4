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
//! An index that fails to open, to migrate or `PRAGMA quick_check` is moved
//! aside (`*.corrupt-<unix time>`, nothing is deleted) and a fresh one is
//! created; usage is then recounted from the tree's xattrs. Limits cannot
//! be recovered from the tree and must be set again (logged as an error).

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
            Err(IndexError::Sqlite { error, .. }) if is_corruption(&error) => {
                log::error!(
                    "index {} is unusable ({error}); moving it aside and rebuilding \
                     usage from the tree. Limits must be set again.",
                    path.display()
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
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
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
        let held = claim(&path).unwrap();
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
}

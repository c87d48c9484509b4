//! The hash index: content hashes of earlier runs, so that a re-run reads
//! only new or changed files.
//!
//! # Key
//!
//! A row maps an inode number to the hash of its content as it was with a
//! given size, mtime and ctime (nanoseconds). A hash is reused only when
//! all three are unchanged: writing a file moves its mtime and ctime, and
//! nothing can set a ctime back. The device number is not part of the key:
//! a FUSE mount gets a new one at every mount, while the backing inode
//! numbers vxfs shows stay; one index belongs to one SOURCE (it lives
//! beside its vxfs index). Nothing is trusted blindly anyway: every file is
//! byte-compared with the shared copy before it is linked.
//!
//! # Persistence and compatibility
//!
//! New hashes are written in one transaction after the hash phase; rows
//! not seen for [`STALE_AFTER`] are dropped then. The schema is versioned
//! by `PRAGMA user_version` with append-only migrations.
//!
//! # Corruption
//!
//! A file that SQLite finds damaged, that fails `PRAGMA quick_check`, has
//! an unknown schema version or another schema than ours (extra tables,
//! triggers, views: `vxfs::index::check_schema`) is moved aside
//! (`*.corrupt-<unix time>`) and a fresh one is created. Any other failure (a missing directory, missing
//! permissions) leaves the run without an index: everything is hashed and
//! nothing saved, with a warning. The index is never fatal. A dry run opens
//! it read-only and never moves or creates it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{Digest, FileStat, Reporter};

/// Append-only schema migrations; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE hashes (
        ino INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        hash BLOB NOT NULL,
        seen INTEGER NOT NULL
    );",
    // The digests cover the kept xattrs too (hashify::xattrs): those of
    // earlier runs are not comparable.
    "DELETE FROM hashes;",
];

/// Rows of inodes no run has seen for this long are dropped.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// The index of a run (or none, when it could not be opened).
#[derive(Debug)]
pub struct HashDb {
    conn: Option<Connection>,
    path: PathBuf,
}

/// Nanoseconds since the epoch as SQLite stores them.
fn ns((s, ns): (i64, u32)) -> i64 {
    s.saturating_mul(1_000_000_000)
        .saturating_add(i64::from(ns))
}

/// Why opening failed: damage (move aside and rebuild) or anything else.
enum OpenError {
    Damaged(String),
    Other(rusqlite::Error),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> OpenError {
        // Damage, or a statement of ours refused by the file's schema.
        let damaged = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        ) || vxfs::index::is_sql_error(&e);
        if damaged {
            OpenError::Damaged(e.to_string())
        } else {
            OpenError::Other(e)
        }
    }
}

impl HashDb {
    /// Opens the index at `path`: read-write (created, migrated, rebuilt if
    /// damaged) or, for a dry run, read-only and only if it exists.
    pub fn open(path: &Path, writable: bool, report: &Reporter) -> HashDb {
        let shown = path.display();
        let conn = if !writable {
            if !path.exists() {
                None
            } else {
                match open_checked(path, false) {
                    Ok(c) => Some(c),
                    Err(OpenError::Damaged(why)) => {
                        report.message(&format!(
                            "warning: hash index {shown} is damaged ({why}): ignored, every \
                             candidate is hashed"
                        ));
                        None
                    }
                    Err(OpenError::Other(e)) => {
                        report.message(&format!("warning: hash index {shown}: {e}: ignored"));
                        None
                    }
                }
            }
        } else {
            match open_checked(path, true) {
                Ok(c) => Some(c),
                Err(OpenError::Damaged(why)) => match move_aside(path) {
                    Ok(aside) => {
                        report.message(&format!(
                            "warning: hash index {shown} was damaged ({why}): moved aside to {}; \
                             rebuilding it",
                            aside.display()
                        ));
                        open_checked(path, true).ok()
                    }
                    Err(e) => {
                        report.message(&format!(
                            "warning: hash index {shown} is damaged ({why}) and cannot be moved \
                             aside ({e}): running without it"
                        ));
                        None
                    }
                },
                Err(OpenError::Other(e)) => {
                    report.message(&format!(
                        "warning: hash index {shown}: {e}: running without it (every candidate \
                         is hashed, nothing is saved)"
                    ));
                    None
                }
            }
        };
        HashDb {
            conn,
            path: path.to_path_buf(),
        }
    }

    /// The hash of `st`'s inode if it was hashed with this size, mtime and
    /// ctime.
    pub fn lookup(&self, st: &FileStat) -> Option<Digest> {
        let conn = self.conn.as_ref()?;
        let row: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT hash FROM hashes WHERE ino = ?1 AND size = ?2 AND mtime_ns = ?3 \
                 AND ctime_ns = ?4",
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![st.ino as i64, st.size as i64, ns(st.mtime), ns(st.ctime)],
                    |r| r.get(0),
                )
                .optional()
            })
            .ok()
            .flatten();
        // A row of another length is not a hash of ours.
        row.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
            .map(Digest)
    }

    /// Records new hashes, marks reused ones as seen and drops stale rows,
    /// in one transaction. A failure is a warning: the hashes are only
    /// recomputed next time.
    pub fn save(&mut self, fresh: &[(FileStat, Digest)], reused: &[FileStat], report: &Reporter) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut put = tx.prepare_cached(
                    "INSERT OR REPLACE INTO hashes (ino, size, mtime_ns, ctime_ns, hash, seen) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (st, d) in fresh {
                    put.execute(params![
                        st.ino as i64,
                        st.size as i64,
                        ns(st.mtime),
                        ns(st.ctime),
                        &d.0[..],
                        now
                    ])?;
                }
                let mut seen = tx.prepare_cached("UPDATE hashes SET seen = ?2 WHERE ino = ?1")?;
                for st in reused {
                    seen.execute(params![st.ino as i64, now])?;
                }
                tx.execute(
                    "DELETE FROM hashes WHERE seen < ?1",
                    [now - STALE_AFTER.as_secs() as i64],
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = result {
            report.message(&format!(
                "warning: saving hashes in {}: {e}",
                self.path.display()
            ));
        }
    }
}

/// Opens and checks the file, applying pending migrations when writable.
fn open_checked(path: &Path, writable: bool) -> Result<Connection, OpenError> {
    let flags = if writable {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(OpenError::Damaged(check));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known || (!writable && version != known) {
        return Err(OpenError::Damaged(format!(
            "schema version {version}, this hashify knows {known}"
        )));
    }
    if writable {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
    }
    // Another schema (tables, triggers, views): not an index of ours.
    vxfs::index::check_schema(&conn, MIGRATIONS).map_err(OpenError::Damaged)?;
    Ok(conn)
}

/// Renames a damaged index (and its journal) to `PATH.corrupt-<unix time>`.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    let _ = std::fs::remove_file(journal);
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ino: u64, mtime: i64, ctime: i64) -> FileStat {
        FileStat {
            ino,
            size: 100,
            mtime: (mtime, 5),
            ctime: (ctime, 7),
            ..FileStat::default()
        }
    }

    /// A writable index in a new directory.
    fn fresh() -> (tempfile::TempDir, PathBuf, Reporter, HashDb) {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("h.db");
        let report = Reporter::quiet();
        let db = HashDb::open(&path, true, &report);
        (t, path, report, db)
    }

    #[test]
    fn reuses_only_unchanged_files() {
        let (_t, path, report, mut db) = fresh();
        let d = Digest([9; 32]);
        db.save(&[(st(1, 10, 20), d)], &[], &report);
        drop(db);
        let db = HashDb::open(&path, true, &report);
        assert_eq!(db.lookup(&st(1, 10, 20)), Some(d));
        assert_eq!(db.lookup(&st(1, 11, 20)), None, "mtime moved");
        assert_eq!(db.lookup(&st(1, 10, 21)), None, "ctime moved");
        assert_eq!(
            db.lookup(&FileStat {
                size: 99,
                ..st(1, 10, 20)
            }),
            None
        );
        assert_eq!(db.lookup(&st(2, 10, 20)), None, "other inode");
        // Read-only (dry run) sees it too.
        let ro = HashDb::open(&path, false, &report);
        assert_eq!(ro.lookup(&st(1, 10, 20)), Some(d));
    }

    #[test]
    fn stale_rows_are_dropped() {
        let (_t, _path, report, mut db) = fresh();
        db.save(
            &[
                (st(1, 1, 1), Digest([1; 32])),
                (st(2, 1, 1), Digest([2; 32])),
            ],
            &[],
            &report,
        );
        let old = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - STALE_AFTER.as_secs() as i64
            - 10;
        db.conn
            .as_ref()
            .unwrap()
            .execute("UPDATE hashes SET seen = ?1", [old])
            .unwrap();
        // Inode 1 is reused by this run, inode 2 was not seen.
        db.save(&[], &[st(1, 1, 1)], &report);
        assert!(db.lookup(&st(1, 1, 1)).is_some());
        assert!(db.lookup(&st(2, 1, 1)).is_none());
    }

    #[test]
    fn damaged_files_are_moved_aside_and_missing_ones_created() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("h.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let report = Reporter::quiet();
        // A dry run neither trusts nor moves it.
        let ro = HashDb::open(&path, false, &report);
        assert!(ro.conn.is_none());
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
        let mut db = HashDb::open(&path, true, &report);
        assert!(db.conn.is_some(), "rebuilt");
        db.save(&[(st(1, 1, 1), Digest([1; 32]))], &[], &report);
        let aside: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("h.db.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::read(t.path().join(&aside[0])).unwrap(),
            vec![0x5a; 8192],
            "kept, not deleted"
        );
        // A newer schema is not trusted either.
        db.conn
            .as_ref()
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(db);
        let db = HashDb::open(&path, true, &report);
        assert_eq!(db.lookup(&st(1, 1, 1)), None, "rebuilt empty");
        // A dry run without an index creates none.
        let none = t.path().join("none.db");
        assert!(HashDb::open(&none, false, &report).conn.is_none());
        assert!(!none.exists());
        // An impossible path: no index, not fatal.
        let nodir = t.path().join("no/such/dir/h.db");
        let mut db = HashDb::open(&nodir, true, &report);
        assert!(db.conn.is_none());
        db.save(&[(st(1, 1, 1), Digest([1; 32]))], &[], &report);
        assert_eq!(db.lookup(&st(1, 1, 1)), None);
    }

    #[test]
    fn an_index_with_another_schema_is_rebuilt() {
        for sql in [
            "CREATE TRIGGER t AFTER INSERT ON hashes BEGIN DELETE FROM hashes; END",
            "CREATE TABLE extra (x)",
            "DROP TABLE hashes; CREATE TABLE hashes (ino, size)",
            "PRAGMA user_version = 0",
        ] {
            let (_t, path, report, mut db) = fresh();
            db.save(&[(st(1, 1, 1), Digest([1; 32]))], &[], &report);
            db.conn.as_ref().unwrap().execute_batch(sql).unwrap();
            drop(db);
            let mut db = HashDb::open(&path, true, &report);
            assert!(db.conn.is_some(), "{sql}: rebuilt");
            assert_eq!(db.lookup(&st(1, 1, 1)), None, "{sql}: not trusted");
            db.save(&[(st(2, 1, 1), Digest([2; 32]))], &[], &report);
            assert_eq!(db.lookup(&st(2, 1, 1)), Some(Digest([2; 32])), "{sql}");
        }
    }
}

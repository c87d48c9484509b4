//! The context event journal (VServer's `vx history`, docs/SEMANTICS.md,
//! "The context core"): `RUNDIR/events.jsonl`, one JSON object per line,
//! appended by whoever acted: the supervisor (start, reboot, stop), the
//! commands that enter a context (enter), and the tools that change a
//! running one (limit, sched, uts, attribute). `vxctl history` shows it.
//!
//! Each event is one `write(2)` with `O_APPEND`, so concurrent writers
//! never interleave within a line. At 4 MiB the journal is renamed to
//! `events.jsonl.1` (the older one dropped) under an `flock`, so it stays
//! bounded; like VServer's ring buffer it lives in `/run` and starts
//! afresh at boot.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::registry::Registry;
use crate::xid::Xid;

/// Journal size at which it is rotated.
const ROTATE_AT: u64 = 4 << 20;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// When, milliseconds since the epoch.
    pub time_ms: u64,
    /// The context.
    pub xid: Xid,
    /// Its guest's name (`#XID` for a context without one).
    pub name: String,
    /// What happened: `start`, `reboot`, `stop`, `enter`, `limit`,
    /// `sched`, `uts`, `attribute`.
    pub event: String,
    /// Details (the init's pid, the command entered, the settings given).
    pub detail: String,
    /// The process that recorded it, and its user.
    pub pid: u32,
    /// Its real user id.
    pub uid: u32,
}

impl Registry {
    fn journal(&self) -> PathBuf {
        journal_of(self.root())
    }

    /// Appends an event of context `xid` (guest `name`). Failing to
    /// record never fails what was recorded: it is said on stderr.
    pub fn record(&self, xid: Xid, name: &str, event: &str, detail: &str) {
        let e = Event {
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            xid,
            name: name.to_string(),
            event: event.to_string(),
            detail: detail.to_string(),
            pid: std::process::id(),
            uid: rustix::process::getuid().as_raw(),
        };
        if let Err(err) = self.append(&e) {
            log::warn!(
                "recording event {event} of context {xid} in {}: {err}",
                self.journal().display()
            );
        }
    }

    fn append(&self, e: &Event) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root())?;
        let path = self.journal();
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&path)?;
        if file.metadata()?.len() >= ROTATE_AT {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
            // Another writer may have rotated it meanwhile.
            use std::os::unix::fs::MetadataExt;
            let ours = file.metadata()?.ino();
            let still = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.len() >= ROTATE_AT && m.ino() == ours);
            if still {
                std::fs::rename(&path, path.with_extension("jsonl.1"))?;
            }
            drop(file);
            file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .open(&path)?;
        }
        file.write_all(&line)
    }

    /// The journal, oldest first, and how many lines could not be read.
    pub fn history(&self) -> (Vec<Event>, usize) {
        let path = self.journal();
        let mut events = Vec::new();
        let mut bad = 0;
        for p in [path.with_extension("jsonl.1"), path] {
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str::<Event>(line) {
                    Ok(e) => events.push(e),
                    Err(_) => bad += 1,
                }
            }
        }
        (events, bad)
    }
}

/// The journal of the registry at `root`.
pub fn journal_of(root: &Path) -> PathBuf {
    root.join("events.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_appended_and_read_back_in_order() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::at(d.path());
        r.record(Xid(42), "web", "start", "init 1234");
        r.record(Xid(42), "web", "enter", "ps ax");
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal_of(d.path()))
            .unwrap()
            .write_all(b"{broken\n")
            .unwrap();
        r.record(Xid(42), "web", "stop", "init ended 0");
        let (events, bad) = r.history();
        let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["start", "enter", "stop"]);
        assert_eq!(bad, 1);
        assert!(
            events
                .iter()
                .all(|e| e.xid == Xid(42) && e.pid == std::process::id())
        );
    }

    #[test]
    fn a_full_journal_rotates_once() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::at(d.path());
        std::fs::write(journal_of(d.path()), vec![b'\n'; ROTATE_AT as usize]).unwrap();
        r.record(Xid(7), "g", "start", "");
        assert!(d.path().join("events.jsonl.1").exists());
        let (events, bad) = r.history();
        assert_eq!((events.len(), bad), (1, 0));
    }
}

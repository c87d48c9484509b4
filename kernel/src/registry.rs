//! Running contexts: `/run/vxfs/ctx/` (or `VXFS_RUNDIR`).
//!
//! * `XID/lock`: an `flock` the guest's supervisor holds for its life;
//!   taking it is how a context id is claimed (static or dynamic), and a
//!   state whose lock nobody holds is a dead supervisor's, ignored and
//!   swept.
//! * `XID/state.json`: what the supervisor set up ([`State`]).
//! * `names/NAME.lock`: held by the supervisor too, so one guest never
//!   runs twice, whatever its context; `names/NAME` holds its xid.
//! * `names/NAME.console`: the output of the guest's init and supervisor
//!   (kept after the guest stops, started afresh at the next start).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::cgroup::CgroupSet;
use crate::xid::Xid;

/// The default registry directory.
pub const DEFAULT_RUNDIR: &str = "/run/vxfs/ctx";

/// What a running context is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// The guest's name.
    pub name: String,
    /// Its context.
    pub xid: Xid,
    /// Its configuration directory.
    pub config: PathBuf,
    /// Its root directory.
    pub root: PathBuf,
    /// The supervisor's pid.
    pub supervisor: u32,
    /// The guest init's pid (in the host's pid namespace).
    pub init: u32,
    /// The init's start time (`/proc/PID/stat` field 22), to tell a reused
    /// pid apart.
    pub init_start: u64,
    /// When the guest started (seconds since the epoch).
    pub started: u64,
    /// Its cgroups.
    pub cgroups: CgroupSet,
    /// Context flags, bounding set and context capabilities.
    pub cflags: u64,
    /// Bounding set.
    pub bcaps: u64,
    /// Context capabilities.
    pub ccaps: u64,
    /// Its own network namespace.
    pub netns: bool,
    /// Host ends of its interfaces (removed at stop).
    pub host_interfaces: Vec<String>,
    /// Base of its user namespace's id range, if it has one.
    pub user_base: Option<u32>,
    /// Its processes' personality (`personality`), if set.
    #[serde(default)]
    pub personality: Option<u64>,
    /// Its processes' I/O priority (`ionice/`), if set.
    #[serde(default)]
    pub ionice: Option<u32>,
    /// Its intercepted `uname`/`sysinfo` calls, if any (entered commands
    /// install the same filter).
    #[serde(default)]
    pub intercept: Option<crate::intercept::Plan>,
    /// Its addresses in the host's network stack (`nonetns`), if
    /// restricted.
    #[serde(default)]
    pub chbind: Option<crate::chbind::Policy>,
    /// Addresses added to host devices for it (removed at stop).
    #[serde(default)]
    pub host_addresses: Vec<crate::config::interfaces::HostAddress>,
}

impl State {
    /// Hundredths of a second (`USER_HZ` ticks) since its init started,
    /// or `None` if that init is gone.
    pub fn uptime_centis(&self) -> Option<u64> {
        let start = start_time(self.init)?;
        if start != self.init_start {
            return None;
        }
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let now = now.tv_sec as u64 * 100 + now.tv_nsec as u64 / 10_000_000;
        Some(now.saturating_sub(start))
    }
}

/// A registry error.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The context id is taken by another guest.
    #[error("context {xid} is in use by vserver '{by}'")]
    XidInUse {
        /// The id.
        xid: Xid,
        /// The guest using it.
        by: String,
    },
    /// No dynamic id is free.
    #[error("no free dynamic context (49152..65535 are all in use)")]
    NoFreeXid,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |error| RegistryError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// An `flock` held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path` without waiting; `None` when held.
    fn take(path: &Path) -> Result<Option<Lock>, RegistryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io(path))?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(io(path)(e.into())),
            }
            // Only the file at the path counts (a sweep may just have
            // removed it).
            let held = file.metadata().map_err(io(path))?.ino();
            if std::fs::metadata(path).is_ok_and(|m| m.ino() == held) {
                return Ok(Some(Lock {
                    _file: file,
                    path: path.to_path_buf(),
                }));
            }
        }
    }

    /// Whether a live process holds the lock at `path`.
    fn held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) == Err(Errno::WOULDBLOCK)
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The registry.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

/// The locks of a running guest: its name's and its context's.
#[derive(Debug)]
pub struct Claim {
    /// The context.
    pub xid: Xid,
    /// The name's lock.
    pub name_lock: Lock,
    /// The context's lock.
    pub xid_lock: Lock,
    /// What a supervisor of this context that died without cleaning up
    /// recorded (its host interfaces and addresses are to remove).
    pub left: Option<State>,
}

impl Registry {
    /// The registry at `VXFS_RUNDIR` or `/run/vxfs/ctx`.
    pub fn open() -> Registry {
        let root = std::env::var_os("VXFS_RUNDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNDIR));
        Registry { root }
    }

    /// The registry at `root`.
    pub fn at(root: &Path) -> Registry {
        Registry {
            root: root.to_path_buf(),
        }
    }

    /// The registry's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where guest `name`'s console output goes.
    pub fn console(&self, name: &str) -> PathBuf {
        self.root.join("names").join(format!("{name}.console"))
    }

    /// Guest `name`'s supervisor pid file (`names/NAME.pid`, for a
    /// service manager's `PIDFile=`), there while it runs.
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.root.join("names").join(format!("{name}.pid"))
    }

    /// The record a dead supervisor of `xid` left (the caller holds its
    /// lock now), removed.
    fn take_left(&self, xid: Xid) -> Option<State> {
        let path = self.dir(xid).join("state.json");
        let left = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok());
        let _ = std::fs::remove_file(&path);
        left
    }

    /// A context's directory.
    pub fn dir(&self, xid: Xid) -> PathBuf {
        self.root.join(xid.0.to_string())
    }

    /// Where `vsched` leaves new scheduler settings for the context's
    /// supervisor (which SIGUSR1 tells to read them).
    pub fn sched_request(&self, xid: Xid) -> PathBuf {
        self.dir(xid).join("sched.json")
    }

    fn name_path(&self, name: &str) -> PathBuf {
        self.root.join("names").join(name)
    }

    /// Claims guest `name` and a context for it (`xid`, or a free dynamic
    /// one). `Ok(None)`: the guest is running already.
    pub fn claim(&self, name: &str, xid: Option<Xid>) -> Result<Option<Claim>, RegistryError> {
        let mut lock_path = self.name_path(name).into_os_string();
        lock_path.push(".lock");
        let Some(name_lock) = Lock::take(Path::new(&lock_path))? else {
            return Ok(None);
        };
        let take = |x: Xid| Lock::take(&self.dir(x).join("lock"));
        let (xid, xid_lock) = match xid {
            Some(x) => match take(x)? {
                Some(l) => (x, l),
                None => {
                    let by = self.state_of(x).map_or_else(|| "?".to_string(), |s| s.name);
                    return Err(RegistryError::XidInUse { xid: x, by });
                }
            },
            None => {
                let mut found = None;
                for n in Xid::MIN_DYNAMIC..=Xid::MAX {
                    if let Some(l) = take(Xid(n))? {
                        found = Some((Xid(n), l));
                        break;
                    }
                }
                found.ok_or(RegistryError::NoFreeXid)?
            }
        };
        // What a dead supervisor left of this context is not ours.
        let left = self.take_left(xid);
        Ok(Some(Claim {
            xid,
            name_lock,
            xid_lock,
            left,
        }))
    }

    /// Claims a context without a guest (`vcontext --create`): `xid`, or a
    /// free dynamic one. It is registered under [`anonymous_name`], which
    /// no guest can have. `Ok(None)`: that context exists already.
    pub fn claim_anonymous(&self, xid: Option<Xid>) -> Result<Option<Claim>, RegistryError> {
        let take = |x: Xid| -> Result<Option<Claim>, RegistryError> {
            let Some(xid_lock) = Lock::take(&self.dir(x).join("lock"))? else {
                return Ok(None);
            };
            let mut lock_path = self.name_path(&anonymous_name(x)).into_os_string();
            lock_path.push(".lock");
            // Free whenever the context's lock was: only its holder takes it.
            let Some(name_lock) = Lock::take(Path::new(&lock_path))? else {
                return Ok(None);
            };
            let left = self.take_left(x);
            Ok(Some(Claim {
                xid: x,
                name_lock,
                xid_lock,
                left,
            }))
        };
        match xid {
            Some(x) => take(x),
            None => {
                for n in Xid::MIN_DYNAMIC..=Xid::MAX {
                    if let Some(claim) = take(Xid(n))? {
                        return Ok(Some(claim));
                    }
                }
                Err(RegistryError::NoFreeXid)
            }
        }
    }

    /// Records `state` (the claim's holder does).
    pub fn write(&self, state: &State) -> Result<(), RegistryError> {
        let dir = self.dir(state.xid);
        let tmp = dir.join(".state.json");
        let text = serde_json::to_vec_pretty(state).expect("serializable");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            std::fs::rename(&tmp, dir.join("state.json"))?;
            let name = self.name_path(&state.name);
            let tmp_name = name.with_extension("tmp");
            std::fs::write(&tmp_name, state.xid.to_string())?;
            std::fs::rename(&tmp_name, &name)
        };
        write().map_err(io(&dir))
    }

    /// The state of context `xid`, if a live supervisor holds it.
    pub fn state_of(&self, xid: Xid) -> Option<State> {
        let dir = self.dir(xid);
        if !Lock::held(&dir.join("lock")) {
            return None;
        }
        let text = std::fs::read(dir.join("state.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The state of guest `name`, if it runs.
    pub fn find(&self, name: &str) -> Option<State> {
        let xid: u32 = std::fs::read_to_string(self.name_path(name))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        self.state_of(Xid(xid)).filter(|s| s.name == name)
    }

    /// Whether guest `name` runs (its supervisor holds its name), also
    /// while it is still starting.
    pub fn running(&self, name: &str) -> bool {
        let mut lock_path = self.name_path(name).into_os_string();
        lock_path.push(".lock");
        Lock::held(Path::new(&lock_path))
    }

    /// Every running context, by xid.
    pub fn list(&self) -> Vec<State> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<State> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|x| self.state_of(Xid(x)))
            .collect();
        out.sort_by_key(|s| s.xid);
        out
    }

    /// Records how context `xid`'s init ended (`code`: its exit code, or
    /// 128 plus its signal; `None`: unknown), for `vwait`, keyed by this
    /// supervisor's pid so a waiter tells it from an older run's.
    pub fn record_exit(&self, xid: Xid, code: Option<i32>) {
        let dir = self.root.join("exits");
        let _ = std::fs::create_dir_all(&dir);
        let text = format!(
            "{} {}\n",
            std::process::id(),
            code.map_or("?".to_string(), |c| c.to_string())
        );
        let tmp = dir.join(format!(".{xid}"));
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(xid.to_string()));
        }
    }

    /// How the run of context `xid` under supervisor `supervisor` ended,
    /// if it has.
    pub fn exit_of(&self, xid: Xid, supervisor: u32) -> Option<Option<i32>> {
        let text = std::fs::read_to_string(self.root.join("exits").join(xid.to_string())).ok()?;
        let (pid, code) = text.trim().split_once(' ')?;
        (pid.parse() == Ok(supervisor)).then(|| code.parse().ok())
    }

    /// Removes a stopped context's files (called by the claim's holder,
    /// before it lets go of the locks).
    pub fn release(&self, claim: &Claim, name: &str) {
        let dir = self.dir(claim.xid);
        let _ = std::fs::remove_file(dir.join("state.json"));
        let name_path = self.name_path(name);
        if std::fs::read_to_string(&name_path).is_ok_and(|x| x.trim() == claim.xid.to_string()) {
            let _ = std::fs::remove_file(&name_path);
        }
        let _ = std::fs::remove_file(claim.xid_lock.path());
        let _ = std::fs::remove_dir(&dir);
        let pid_file = self.pid_file(name);
        if std::fs::read_to_string(&pid_file)
            .is_ok_and(|p| p.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(&pid_file);
        }
        let _ = std::fs::remove_file(claim.name_lock.path());
    }
}

/// The registry's name of context `xid` when it has no guest
/// (`vcontext --create`): `#XID`, never a guest's name.
pub fn anonymous_name(xid: Xid) -> String {
    format!("#{xid}")
}

/// Whether `name` is a context's without a guest ([`anonymous_name`]).
pub fn is_anonymous(name: &str) -> bool {
    name.starts_with('#')
}

/// The start time of process `pid` (`/proc/PID/stat` field 22).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, xid: Xid) -> State {
        State {
            name: name.into(),
            xid,
            config: "/etc/vservers/x".into(),
            root: "/vservers/x".into(),
            supervisor: std::process::id(),
            init: std::process::id(),
            init_start: start_time(std::process::id()).unwrap(),
            started: 0,
            cgroups: CgroupSet {
                members: Vec::new(),
            },
            cflags: 0,
            bcaps: 0,
            ccaps: 0,
            netns: false,
            host_interfaces: Vec::new(),
            user_base: None,
            personality: None,
            ionice: None,
            intercept: None,
            chbind: None,
            host_addresses: Vec::new(),
        }
    }

    #[test]
    fn claims_are_exclusive_and_die_with_their_holder() {
        let t = tempfile::tempdir().unwrap();
        let r = Registry::at(t.path());
        let a = r.claim("a", Some(Xid(42))).unwrap().unwrap();
        r.write(&state("a", Xid(42))).unwrap();
        assert!(r.claim("a", None).unwrap().is_none(), "running already");
        let e = r.claim("b", Some(Xid(42))).unwrap_err().to_string();
        assert_eq!(e, "context 42 is in use by vserver 'a'");
        assert_eq!(r.find("a").unwrap().xid, Xid(42));
        assert!(r.running("a"));
        let b = r.claim("b", None).unwrap().unwrap();
        assert_eq!(b.xid, Xid(Xid::MIN_DYNAMIC));
        let c = r.claim("c", None).unwrap().unwrap();
        assert_eq!(c.xid, Xid(Xid::MIN_DYNAMIC + 1));
        r.write(&state("b", b.xid)).unwrap();
        assert_eq!(
            r.list().iter().map(|s| s.xid).collect::<Vec<_>>(),
            [Xid(42), b.xid]
        );
        // A supervisor that died without cleaning up: its state is not
        // trusted, its ids are free again.
        drop(a);
        assert!(r.find("a").is_none());
        assert!(!r.running("a"));
        let again = r.claim("d", Some(Xid(42))).unwrap().unwrap();
        assert!(
            !r.dir(Xid(42)).join("state.json").exists(),
            "the dead one's state is gone"
        );
        r.release(&again, "d");
        r.release(&b, "b");
        assert!(!r.dir(b.xid).exists());
        assert!(r.find("b").is_none());
    }

    #[test]
    fn start_times_read_past_odd_command_names() {
        assert!(start_time(std::process::id()).unwrap() > 0);
        assert_eq!(start_time(u32::MAX), None);
    }
}

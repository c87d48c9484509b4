//! The daemon side of vroot, the quota proxy (protocol in the `vroot`
//! crate): an admin socket for the host and a guest socket that answers
//! each peer for its own context only, decided from `SO_PEERCRED` exactly
//! as the mount decides a request's context.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::io::Errno;
use vroot::{Entry, Request};

use crate::accounting::Accounting;
use crate::context::Resolver;
use crate::dlimit::{Limit, MAX_INODES, MAX_SPACE_KIB};
use crate::tagging::{ContextMode, Xid};

/// Longest request line accepted.
const MAX_LINE: u64 = 4096;
/// How long a connection may stay idle (or a reply unread) before it is
/// closed.
const IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections one context may have open at once.
const MAX_CONNECTIONS: usize = 8;

/// Who a socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The host: uid 0 peers, any context.
    Admin,
    /// Guests: their own context, read only.
    Guest,
}

/// The running proxy; its sockets are removed on drop.
#[derive(Debug)]
pub struct VrootServer {
    dir: PathBuf,
    /// Each file's (socket's, description's) path and inode number.
    sockets: Vec<(PathBuf, u64)>,
    /// The directory's lock, held for the mount's life (see [`RuntimeDir`]).
    lock: RuntimeDir,
}

/// The lock of a runtime directory (`/run/vxfs/MAJ:MIN/lock`, an `flock`):
/// its daemon holds it from before it writes anything there until it has
/// removed everything, so a directory whose lock nobody holds belongs to a
/// daemon that died (`kill -9`, OOM) and is removed by the next daemon that
/// starts, and a daemon that gets the device number of a dead one's mount
/// waits for that sweep instead of having its files removed.
#[derive(Debug)]
struct RuntimeDir {
    /// Holds the lock until dropped.
    _file: std::fs::File,
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates (if needed) and locks the runtime directory `dir`.
    fn acquire(dir: &Path) -> std::io::Result<RuntimeDir> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            std::fs::create_dir_all(dir)?;
            match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)) {
                // Swept (it was empty and a dead daemon's) right after it
                // was made: again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other?,
            }
            let path = dir.join("lock");
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            {
                Ok(file) => file,
                // Removed by a sweep right after it was made: again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    // The dying daemon of the same device number, or a
                    // sweep: it is done soon.
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                Err(Errno::WOULDBLOCK) => {
                    return Err(std::io::Error::other(format!(
                        "{} is locked by another process for more than 10 s",
                        path.display()
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            // The lock counts only if it is still the directory's.
            let held = file.metadata()?.ino();
            if std::fs::symlink_metadata(&path).is_ok_and(|st| st.ino() == held) {
                let dir = RuntimeDir { _file: file, path };
                // Whatever is there was left by a dead daemon (one from
                // before these locks, too): not this mount's.
                dir.clear();
                return Ok(dir);
            }
        }
    }

    /// Locks the existing runtime directory `dir` if no daemon holds it.
    fn try_stale(dir: &Path) -> Option<RuntimeDir> {
        let path = dir.join("lock");
        let file = std::fs::File::open(&path).ok()?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
        let held = file.metadata().ok()?.ino();
        std::fs::symlink_metadata(&path)
            .is_ok_and(|st| st.ino() == held)
            .then_some(RuntimeDir { _file: file, path })
    }

    /// Removes every entry but the lock.
    fn clear(&self) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name() != "lock" {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Removes the directory's remaining entries, the lock and the
    /// directory (still holding the lock, so nobody writes there meanwhile).
    fn remove(&self) {
        self.clear();
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Removes the runtime directories of daemons that died: those whose lock
/// no process holds. Run by every daemon as it starts.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_dev = name
            .to_str()
            .and_then(|n| n.split_once(':'))
            .is_some_and(|(a, b)| {
                [a, b]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
            });
        if !is_dev {
            continue;
        }
        if let Some(stale) = RuntimeDir::try_stale(&entry.path()) {
            log::info!(
                "removed {}, left by a vxfs daemon that died",
                entry.path().display()
            );
            stale.remove();
        }
    }
}

/// What one mount is, for the tools (`view.json` in its runtime
/// directory): its tree, its SOURCE, how it decides contexts, where the
/// counters are kept.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ViewInfo {
    /// The tree the daemon serves.
    pub tree: PathBuf,
    /// The directory of the tree this mount shows.
    pub source: PathBuf,
    /// Its `-o xid=` (`off` for none).
    pub xid: String,
    /// Whether the daemon tags inodes.
    pub tagged: bool,
    /// The daemon's index, when it keeps disk accounts.
    pub index: Option<PathBuf>,
    /// The daemon's pid.
    pub pid: u32,
    /// Whether the daemon watches SOURCE's filesystem (`-o watch`), so
    /// that the kernel may cache it for long.
    #[serde(default)]
    pub watched: bool,
}

impl ViewInfo {
    /// The description of the vxfs mount with device number `dev`, if it
    /// is one.
    pub fn of_dev(dev: u64) -> Option<ViewInfo> {
        let text = std::fs::read(vroot::dir_for_dev(dev).join("view.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

impl VrootServer {
    /// Creates the runtime directory of the mount with device `dev`: its
    /// description, and with `accounting` the vroot sockets, served on
    /// background threads.
    pub fn start(
        dev: u64,
        accounting: Option<Arc<Accounting>>,
        resolver: Arc<Resolver>,
        info: &ViewInfo,
        possible: Possible,
    ) -> std::io::Result<VrootServer> {
        sweep_stale(Path::new(vroot::RUN_DIR));
        let dir = vroot::dir_for_dev(dev);
        let lock = RuntimeDir::acquire(&dir)?;
        let view = dir.join("view.json");
        let text = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
        // A complete description or none: written aside, renamed in.
        let temp = dir.join(format!(".view.{}", std::process::id()));
        std::fs::write(&temp, &text)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&temp, &view)?;
        let mut sockets = vec![(view.clone(), std::fs::symlink_metadata(&view)?.ino())];
        let Some(accounting) = accounting else {
            return Ok(VrootServer { dir, sockets, lock });
        };
        for (name, mode, role) in [
            ("admin.sock", 0o600, Role::Admin),
            ("guest.sock", 0o666, Role::Guest),
        ] {
            let path = dir.join(name);
            // A stale socket from a daemon that died: nobody listens on it.
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            sockets.push((path.clone(), std::fs::symlink_metadata(&path)?.ino()));
            let accounting = Arc::clone(&accounting);
            let resolver = Arc::clone(&resolver);
            let possible = Arc::clone(&possible);
            let open = Arc::new(Mutex::new(HashMap::new()));
            std::thread::Builder::new()
                .name(format!("vroot-{name}"))
                .spawn(move || {
                    for stream in listener.incoming().flatten() {
                        let accounting = Arc::clone(&accounting);
                        let resolver = Arc::clone(&resolver);
                        let possible = Arc::clone(&possible);
                        let open = Arc::clone(&open);
                        let daemon = Daemon {
                            accounting,
                            possible,
                        };
                        if let Err(e) = accept(stream, role, daemon, resolver, open) {
                            log::debug!("vroot {name}: {e}");
                        }
                    }
                })?;
        }
        log::info!("vroot sockets in {}", dir.display());
        Ok(VrootServer { dir, sockets, lock })
    }

    /// The socket directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl VrootServer {
    /// Writes `name` in the mount's runtime directory (whole, by rename),
    /// removed with the directory.
    pub fn write_file(&self, name: &str, text: &str) -> std::io::Result<()> {
        let temp = self.dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&temp, text)?;
        std::fs::rename(&temp, self.dir.join(name))
    }
}

/// Files [`VrootServer::write_file`] may have written.
const WRITTEN: &[&str] = &["requests", "daemon", "transport"];

impl Drop for VrootServer {
    fn drop(&mut self) {
        for name in WRITTEN {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        for (path, ino) in &self.sockets {
            let ours = std::fs::symlink_metadata(path).is_ok_and(|st| st.ino() == *ino);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
        // Then the lock and the directory, before the lock is let go.
        self.lock.remove();
    }
}

/// Connections open per context, to bound them.
type OpenConnections = Arc<Mutex<HashMap<Xid, usize>>>;

/// Whether a context can appear on the daemon's mounts at all (`Err` with
/// what can): setting a limit for one that cannot is refused.
pub type Possible = Arc<dyn Fn(Xid) -> Result<(), String> + Send + Sync>;

/// Takes a new connection: decides who the peer is and serves it on a
/// thread of its own, so that no connection (an idle one included) holds
/// up another context's queries; a context with too many connections open
/// is refused.
/// What a connection answers from.
struct Daemon {
    accounting: Arc<Accounting>,
    possible: Possible,
}

fn accept(
    stream: UnixStream,
    role: Role,
    daemon: Daemon,
    resolver: Arc<Resolver>,
    open: OpenConnections,
) -> std::io::Result<()> {
    let cred = rustix::net::sockopt::socket_peercred(&stream)?;
    let pid = cred.pid.as_raw_nonzero().get() as u32;
    let xid = resolver.xid(cred.uid.as_raw(), cred.gid.as_raw(), pid);
    let peer = Peer {
        xid,
        // The socket is not a request through the mount: on a view with a
        // fixed context the administrator is told apart by capability
        // alone (the socket directory is root's and not a guest's).
        admin: crate::creds::has_host_sys_admin(pid)
            && (xid == Xid::HOST || matches!(resolver.mode(), ContextMode::Fixed(_))),
    };
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    {
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(xid).or_default();
        if *n >= MAX_CONNECTIONS {
            drop(open);
            let refused = Err(refuse(
                Errno::AGAIN,
                &format!("context {xid} has {MAX_CONNECTIONS} connections open already"),
            ));
            (&stream).write_all(vroot::encode_response(&refused).as_bytes())?;
            return Ok(());
        }
        *n += 1;
    }
    std::thread::Builder::new()
        .name("vroot-conn".into())
        .spawn(move || {
            if let Err(e) = serve(stream, role, &peer, &daemon) {
                log::debug!("vroot connection of context {}: {e}", peer.xid);
            }
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&peer.xid) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&peer.xid);
                }
            }
        })
        .map(drop)
}

/// Answers the requests of one connection, in order, until it closes, is
/// idle for [`IDLE`] or sends a line longer than [`MAX_LINE`].
fn serve(stream: UnixStream, role: Role, peer: &Peer, daemon: &Daemon) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::Read::take(&mut reader, MAX_LINE + 1).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 > MAX_LINE {
            let long = Err((
                libc::EINVAL,
                format!("request longer than {MAX_LINE} bytes"),
            ));
            writer.write_all(vroot::encode_response(&long).as_bytes())?;
            return Ok(());
        }
        let result = match Request::decode(line.trim_end()) {
            Ok(request) => answer(&request, role, peer, daemon),
            Err(e) => Err((libc::EINVAL, e.to_string())),
        };
        writer.write_all(vroot::encode_response(&result).as_bytes())?;
    }
}

fn refuse(errno: Errno, message: &str) -> (i32, String) {
    (errno.raw_os_error(), message.to_string())
}

/// One context's entry: its limit (unlimited when none was set) and its
/// usage; `ESRCH` only for a context with neither (the kernel's
/// `vc_get_dlimit` knew only limited contexts, but usage is counted for
/// every one, and an admin wants to see it before choosing a limit).
fn entry(accounting: &Accounting, xid: Xid) -> Result<Entry, (i32, String)> {
    let account = accounting.account(xid);
    let usage = account.usage();
    let limit = match account.configured() {
        Some(limit) => limit,
        None if usage != crate::dlimit::Usage::default() => Limit::default(),
        None => {
            return Err(refuse(
                Errno::SRCH,
                &format!("no disk limit and no usage for context {xid}"),
            ));
        }
    };
    Ok(to_entry(xid, limit, usage))
}

fn to_entry(xid: Xid, limit: Limit, usage: crate::dlimit::Usage) -> Entry {
    Entry {
        xid: xid.0,
        space_used: usage.space / 1024,
        space_total: limit.space.map(|b| b / 1024),
        inodes_used: usage.inodes,
        inodes_total: limit.inodes,
        reserved: limit.reserved,
    }
}

/// Who is connected to a socket.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// Its context, decided as for the mount's requests.
    xid: Xid,
    /// Whether it is the host administrator.
    admin: bool,
}

fn answer(
    request: &Request,
    role: Role,
    peer: &Peer,
    daemon: &Daemon,
) -> Result<Vec<Entry>, (i32, String)> {
    let accounting = &*daemon.accounting;
    if role == Role::Admin && !peer.admin {
        return Err(refuse(
            Errno::PERM,
            "the admin socket serves the host administrator only (CAP_SYS_ADMIN in the host context)",
        ));
    }
    if role == Role::Guest && peer.xid == Xid::UNMAPPED {
        return Err(refuse(
            Errno::PERM,
            "your ids are not mapped to a context on this mount",
        ));
    }
    let own = match role {
        Role::Admin => None,
        Role::Guest => Some(peer.xid),
    };
    match (request, own) {
        (Request::Get(None), Some(xid)) | (Request::List, Some(xid)) => {
            Ok(vec![entry(accounting, xid)?])
        }
        (Request::Get(Some(x)), Some(xid)) if Xid(*x) == xid => Ok(vec![entry(accounting, xid)?]),
        (_, Some(_)) => Err(refuse(
            Errno::PERM,
            "a guest may only read its own context's limits",
        )),
        (Request::Get(x), None) => Ok(vec![entry(accounting, Xid(x.unwrap_or(0)))?]),
        (Request::List, None) => Ok(accounting
            .limits
            .all()
            .into_iter()
            .filter_map(|(xid, _, _)| entry(accounting, xid).ok())
            .collect()),
        (Request::Remove(x), None) => {
            let xid = Xid(*x);
            if accounting.account(xid).configured().is_none() {
                return Err(refuse(
                    Errno::SRCH,
                    &format!("no disk limit for context {xid}"),
                ));
            }
            accounting
                .set_limit(xid, None)
                .map_err(|e| refuse(Errno::IO, &e.to_string()))?;
            Ok(Vec::new())
        }
        (
            Request::Set {
                xid,
                space_total,
                inodes_total,
                reserved,
            },
            None,
        ) => {
            let xid = Xid(*xid);
            (daemon.possible)(xid).map_err(|why| refuse(Errno::INVAL, &why))?;
            let current = accounting.account(xid).configured().unwrap_or_default();
            let space = space_total.apply(current.space.map(|b| b / 1024));
            let inodes = inodes_total.apply(current.inodes);
            if space.is_some_and(|k| k > MAX_SPACE_KIB) {
                return Err(refuse(
                    Errno::INVAL,
                    &format!("space_total: at most {MAX_SPACE_KIB} KiB"),
                ));
            }
            if inodes.is_some_and(|n| n > MAX_INODES) {
                return Err(refuse(
                    Errno::INVAL,
                    &format!("inodes_total: at most {MAX_INODES}"),
                ));
            }
            let limit = Limit {
                space: space.map(|k| k * 1024),
                inodes,
                reserved: reserved.unwrap_or(current.reserved),
            };
            accounting
                .set_limit(xid, Some(limit))
                .map_err(|e| refuse(Errno::IO, &e.to_string()))?;
            Ok(vec![entry(accounting, xid)?])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_only_directories_whose_lock_nobody_holds() {
        let base = tempfile::tempdir().unwrap();
        let dir = |name: &str| base.path().join(name);
        // A daemon that died: its lock is free.
        let dead = RuntimeDir::acquire(&dir("0:99")).unwrap();
        std::fs::write(dir("0:99/view.json"), b"{}").unwrap();
        std::fs::write(dir("0:99/admin.sock"), b"").unwrap();
        drop(dead);
        // A live one holds its lock (another open file description).
        let live = RuntimeDir::acquire(&dir("0:98")).unwrap();
        std::fs::write(dir("0:98/view.json"), b"{}").unwrap();
        // One being made (no lock yet), and what is not a runtime directory.
        for name in ["0:97", "daemons", "1:x"] {
            std::fs::create_dir(dir(name)).unwrap();
        }
        sweep_stale(base.path());
        assert!(!dir("0:99").exists());
        assert!(dir("0:98/view.json").exists());
        for name in ["0:97", "daemons", "1:x"] {
            assert!(dir(name).exists(), "{name}");
        }
        // A later daemon of the same device number gets a fresh directory;
        // the live one's removal takes everything.
        let again = RuntimeDir::acquire(&dir("0:99")).unwrap();
        assert!(dir("0:99/lock").exists());
        // A directory left by a daemon from before the locks: its sockets
        // are cleared by the daemon that takes it over.
        std::fs::write(dir("0:97/guest.sock"), b"").unwrap();
        let taken = RuntimeDir::acquire(&dir("0:97")).unwrap();
        assert!(!dir("0:97/guest.sock").exists());
        assert!(dir("0:97/lock").exists());
        drop(taken);
        again.remove();
        assert!(!dir("0:99").exists());
        live.remove();
        assert!(!dir("0:98").exists());
    }

    #[test]
    fn a_lock_is_waited_for_while_its_holder_finishes() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("0:5");
        let old = RuntimeDir::acquire(&dir).unwrap();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || RuntimeDir::acquire(&dir).map(|l| l.path.clone()))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The holder removes everything, then lets go.
        old.remove();
        drop(old);
        let got = waiter.join().unwrap().unwrap();
        assert!(
            got.exists(),
            "the waiter holds a lock file that is in place"
        );
    }
}

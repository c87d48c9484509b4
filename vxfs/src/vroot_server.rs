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
use crate::dlimit::Limit;
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
    /// Each file's (socket's, description's) path and inode number: a later
    /// mount that got the same device number may have replaced them by the
    /// time this one exits.
    sockets: Vec<(PathBuf, u64)>,
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
        let dir = vroot::dir_for_dev(dev);
        let view = dir.join("view.json");
        let text = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
        // An earlier mount that had the same device number may be removing
        // the (then empty) directory right now: make it again.
        // A new file renamed into place: the earlier mount removes only its
        // own inode.
        let temp = dir.join(format!(".view.{}", std::process::id()));
        let mut tries = 0;
        let written = loop {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            let placed = std::fs::write(&temp, &text)
                .and_then(|()| {
                    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))
                })
                .and_then(|()| std::fs::rename(&temp, &view));
            match placed {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 10 => tries += 1,
                other => break other,
            }
        };
        written?;
        let mut sockets = vec![(view.clone(), std::fs::symlink_metadata(&view)?.ino())];
        let Some(accounting) = accounting else {
            return Ok(VrootServer { dir, sockets });
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
        Ok(VrootServer { dir, sockets })
    }

    /// The socket directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for VrootServer {
    fn drop(&mut self) {
        for (path, ino) in &self.sockets {
            let ours = std::fs::symlink_metadata(path).is_ok_and(|st| st.ino() == *ino);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
        // Only once empty: a newer mount's sockets keep it.
        let _ = std::fs::remove_dir(&self.dir);
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
            let limit = Limit {
                space: space_total
                    .apply(current.space.map(|b| b / 1024))
                    .map(|k| k.saturating_mul(1024)),
                inodes: inodes_total.apply(current.inodes),
                reserved: reserved.unwrap_or(current.reserved),
            };
            accounting
                .set_limit(xid, Some(limit))
                .map_err(|e| refuse(Errno::IO, &e.to_string()))?;
            Ok(vec![entry(accounting, xid)?])
        }
    }
}

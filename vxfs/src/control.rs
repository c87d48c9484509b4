//! The control socket of a daemon: how a `vxfs` command finds the daemon
//! already serving the tree its SOURCE is in, and joins it as one more
//! mount (a view) instead of starting a second daemon over the same files.
//!
//! Each daemon listens on `/run/vxfs/daemons/<DEV>-<INO>.sock`, named by the
//! device and inode numbers of its tree's root directory (mode 0600, in a
//! 0700 directory; peers must be the host administrator), and holds an
//! `flock` on `<DEV>-<INO>.lock` beside it for its life: one daemon per
//! tree, and dead daemons' sockets told apart and removed. A command walks
//! up from its SOURCE, directory by directory, and joins the first daemon
//! it finds; before starting a new daemon it asks every live one for its
//! tree and refuses to start over an ancestor of it.
//!
//! The protocol is one JSON line per message. A join carries two
//! descriptors (`SCM_RIGHTS`): the `/dev/fuse` connection the command has
//! mounted, and an `O_PATH` descriptor of its SOURCE (so the daemon never
//! resolves a path the command gave it).

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// Where the daemons' sockets are.
pub const DIR: &str = "/run/vxfs/daemons";

/// Longest message accepted.
const MAX_MESSAGE: usize = 64 * 1024;

/// A message to a daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Which tree it serves, and where.
    Info,
    /// Whether a mount with these `-o` words could join (before mounting
    /// anything).
    Check {
        /// The `-o` words of the command.
        options: Vec<String>,
    },
    /// Serve one more mount (the descriptors come with the message).
    Join {
        /// The `-o` words of the command.
        options: Vec<String>,
        /// The SOURCE it names (as bytes; for display: the directory itself
        /// comes as a descriptor).
        source: Vec<u8>,
        /// The mount point (as bytes).
        mountpoint: Vec<u8>,
        /// Send [`Reply::Ended`] on this connection when the mount ends.
        wait: bool,
    },
    /// hashify: swap these names, in order, for links to their entries
    /// (the host administrator only; see [`crate::unify`]). The daemon
    /// stops at the first that is not linked.
    Unify {
        /// The swaps.
        swaps: Vec<crate::unify::Swap>,
    },
    /// hashify: as [`Request::Unify`], after the daemon itself compared
    /// the inode the swaps name with its store entry
    /// ([`crate::fs::Vxfs::verified`]). A daemon that does not know this
    /// request refuses it, so hashify never has names swapped uncompared.
    UnifyVerified {
        /// What hashify verified of the inode.
        twin: crate::unify::Twin,
        /// The swaps of its names (all of the inode `twin` names).
        swaps: Vec<crate::unify::Swap>,
    },
}

/// A daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// What [`Request::Info`] asks.
    Info {
        /// The tree (as bytes).
        tree: Vec<u8>,
        /// The daemon's pid.
        pid: u32,
        /// Its mount points (as bytes).
        mounts: Vec<Vec<u8>>,
    },
    /// The join succeeded: the mount is served.
    Ok,
    /// The request was refused, with the reason.
    Error(String),
    /// The joined mount ended.
    Ended,
    /// The daemon is ending (its last mount went): wait for it to exit,
    /// then start a new one.
    Ending,
    /// What became of each swap of [`Request::Unify`] or
    /// [`Request::UnifyVerified`] done (the first that is not linked ends
    /// the list). Empty for an `UnifyVerified` whose inode or entry the
    /// daemon does not know: nothing was compared or swapped.
    Unified(Vec<crate::unify::Swapped>),
}

/// A join that met a daemon on its way out.
#[derive(Debug, thiserror::Error)]
#[error("the vxfs daemon serving this tree is ending")]
pub struct DaemonEnding;

/// How long a new daemon waits for an ending one to exit.
pub const ENDING_DAEMON_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The socket of the daemon whose tree root has this stat.
pub fn socket_path(dev: u64, ino: u64) -> PathBuf {
    Path::new(DIR).join(format!("{dev:x}-{ino:x}.sock"))
}

/// A connection to a daemon.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket at `path`; `None` when no daemon listens
    /// there (a dead daemon's socket is left to the next daemon to remove).
    pub fn connect(path: &Path) -> std::io::Result<Option<Client>> {
        match UnixStream::connect(path) {
            Ok(stream) => {
                let reader = BufReader::new(stream.try_clone()?);
                Ok(Some(Client { stream, reader }))
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `request` with `fds` attached.
    pub fn send(&mut self, request: &Request, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        send_with_fds(&self.stream, &line, fds)
    }

    /// The next reply (`None`: the daemon closed the connection).
    pub fn reply(&mut self) -> std::io::Result<Option<Reply>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("bad reply from the daemon: {e}")))
    }

    /// Sends `request` and waits for its reply.
    pub fn call(&mut self, request: &Request, fds: &[BorrowedFd<'_>]) -> std::io::Result<Reply> {
        self.send(request, fds)?;
        self.reply()?
            .ok_or_else(|| std::io::Error::other("the daemon closed the connection"))
    }
}

fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many descriptors to send"));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::empty(),
    )?;
    // The descriptors went with the first bytes; the rest is plain data.
    (&*stream).write_all(&data[sent..])
}

/// Reads one message, and the descriptors sent with it.
pub fn receive(stream: &UnixStream) -> std::io::Result<(Request, Vec<OwnedFd>)> {
    thread_local! {
        /// Each connection's thread reads into its own buffer, kept.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.resize(MAX_MESSAGE, 0);
        receive_into(stream, buf)
    })
}

fn receive_into(stream: &UnixStream, buf: &mut [u8]) -> std::io::Result<(Request, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let mut len = got.bytes;
    if len == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    while !buf[..len].contains(&b'\n') {
        if len == buf.len() {
            return Err(std::io::Error::other("control message too long"));
        }
        let n = std::io::Read::read(&mut &*stream, &mut buf[len..])?;
        if n == 0 {
            return Err(std::io::Error::other("control message cut short"));
        }
        len += n;
    }
    let line = &buf[..len];
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(len);
    let request = serde_json::from_slice(&line[..end])
        .map_err(|e| std::io::Error::other(format!("bad control message: {e}")))?;
    Ok((request, fds))
}

/// Writes one reply line.
pub fn answer(mut stream: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// The daemon serving the tree `source` is in, if any: the nearest
/// ancestor of `source` (itself included) with a live daemon, and a
/// connection to it.
pub fn find(source: &Path) -> anyhow::Result<Option<(PathBuf, Client)>> {
    for dir in source.ancestors() {
        let st = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
        let path = socket_path(st.dev(), st.ino());
        if let Some(client) = Client::connect(&path)
            .with_context(|| format!("connecting to the daemon at {}", path.display()))?
        {
            return Ok(Some((dir.to_path_buf(), client)));
        }
    }
    Ok(None)
}

/// Every live daemon's answer to [`Request::Info`].
pub fn daemons() -> Vec<Reply> {
    let Ok(entries) = std::fs::read_dir(DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.path().extension().is_some_and(|x| x == "sock")
                && !e.file_name().as_bytes().starts_with(b".")
        })
        .filter_map(|e| Client::connect(&e.path()).ok().flatten())
        .filter_map(|mut c| c.call(&Request::Info, &[]).ok())
        .collect()
}

/// Refuses to start a daemon for `tree` when a running daemon serves a
/// tree inside it: its files would be counted by two daemons.
pub fn refuse_overlap(tree: &Path) -> anyhow::Result<()> {
    let ours = std::fs::metadata(tree)?;
    for info in daemons() {
        let Reply::Info {
            tree: theirs,
            pid,
            mounts,
        } = info
        else {
            continue;
        };
        let theirs = PathBuf::from(std::ffi::OsStr::from_bytes(&theirs));
        let inside = theirs.ancestors().any(|dir| {
            std::fs::metadata(dir).is_ok_and(|st| st.dev() == ours.dev() && st.ino() == ours.ino())
        });
        if inside {
            let mounts: Vec<String> = mounts
                .iter()
                .map(|m| {
                    std::ffi::OsStr::from_bytes(m)
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            bail!(
                "{} is already served by the vxfs daemon {pid} (mounted at {}), inside {}: \
                 one tree has one daemon. Unmount it first, mount {} and then its directories \
                 (they join that daemon)",
                theirs.display(),
                mounts.join(", "),
                tree.display(),
                tree.display()
            );
        }
    }
    Ok(())
}

/// A bound control socket, removed on drop if it is still this one.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
    /// The tree's lock, let go after the socket is removed (fields drop
    /// after `drop`).
    _lock: TreeLock,
}

/// The `flock` on `/run/vxfs/daemons/<DEV>-<INO>.lock` that the daemon of
/// a tree holds from before it makes its socket until it has removed it: a
/// second daemon for the tree is refused at once, and a socket whose lock
/// nobody holds is a dead daemon's, which the next daemon removes. No
/// client removes a socket (one it finds refusing may be a daemon between
/// binding and listening).
#[derive(Debug)]
struct TreeLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl TreeLock {
    /// Takes the lock at `path`; `None` when a live process holds it.
    fn take(path: &Path, create: bool) -> std::io::Result<Option<TreeLock>> {
        loop {
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .mode(0o600)
                .open(path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => continue,
                Err(e) => return Err(e),
            };
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            // Only the file at the path counts (a dying holder unlinks it).
            let held = file.metadata()?.ino();
            match std::fs::symlink_metadata(path) {
                Ok(st) if st.ino() == held => {
                    return Ok(Some(TreeLock {
                        _file: file,
                        path: path.to_path_buf(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
                _ => continue,
            }
        }
    }
}

impl Drop for TreeLock {
    fn drop(&mut self) {
        // Unlinked while held; a daemon waiting on this file retries.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the sockets of dead daemons: those whose lock nobody holds, and
/// those from before the locks that nobody listens on.
fn sweep_dead_sockets() {
    let Ok(entries) = std::fs::read_dir(DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name.as_bytes().starts_with(b".") {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("lock") => {
                if let Ok(Some(_dead)) = TreeLock::take(&path, false) {
                    log::info!(
                        "removed the socket of a vxfs daemon that died: {}",
                        path.display()
                    );
                    let _ = std::fs::remove_file(path.with_extension("sock"));
                }
            }
            Some("sock") if !path.with_extension("lock").exists() => {
                if matches!(Client::connect(&path), Ok(None)) {
                    let _ = std::fs::remove_file(&path);
                }
            }
            _ => {}
        }
    }
}

impl Listener {
    /// Claims the control socket of the tree whose root has `root_st`:
    /// fails when a live daemon holds it. Sockets of dead daemons are
    /// removed on the way.
    pub fn bind(root_st: &std::fs::Metadata) -> anyhow::Result<Listener> {
        std::fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
        std::fs::set_permissions(DIR, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {DIR}"))?;
        sweep_dead_sockets();
        let path = socket_path(root_st.dev(), root_st.ino());
        let lock_path = path.with_extension("lock");
        // A daemon whose last mount just went still holds the lock while it
        // saves its counters and exits: wait for it, as long as nothing
        // listens on the socket.
        let deadline = std::time::Instant::now() + ENDING_DAEMON_WAIT;
        let lock = loop {
            if let Some(lock) = TreeLock::take(&lock_path, true)
                .with_context(|| format!("locking {}", lock_path.display()))?
            {
                break lock;
            }
            let answering = matches!(Client::connect(&path), Ok(Some(_)));
            if answering || std::time::Instant::now() > deadline {
                bail!("another vxfs daemon serves this tree, or started to meanwhile");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // Made aside and renamed into place: the socket at the path is
        // always listening, and a dead daemon's is replaced.
        let temp = Path::new(DIR).join(format!(".{}-{}.sock", std::process::id(), root_st.ino()));
        let _ = std::fs::remove_file(&temp);
        let placed = UnixListener::bind(&temp)
            .and_then(|listener| {
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
                std::fs::rename(&temp, &path)?;
                Ok(listener)
            })
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            });
        let listener = placed.with_context(|| format!("binding {}", path.display()))?;
        let ino = std::fs::symlink_metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .ino();
        Ok(Listener {
            listener,
            path,
            ino,
            _lock: lock,
        })
    }

    /// Serves each connection with `handle` on a thread of its own (a
    /// joined mount in the foreground keeps its connection for its life).
    pub fn serve(
        &self,
        handle: impl Fn(UnixStream) + Send + Sync + 'static,
    ) -> std::io::Result<()> {
        let listener = self.listener.try_clone()?;
        let handle = std::sync::Arc::new(handle);
        std::thread::Builder::new()
            .name("vxfs-control".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let handle = std::sync::Arc::clone(&handle);
                    let spawned = std::thread::Builder::new()
                        .name("vxfs-control-conn".into())
                        .spawn(move || handle(stream));
                    if let Err(e) = spawned {
                        log::warn!("control connection: {e}");
                    }
                }
            })
            .map(drop)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Still holding the lock: nobody else made this socket.
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|st| st.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = rustix::net::shutdown(self.listener.as_fd(), rustix::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_listener_per_tree_and_dead_sockets_are_swept() {
        let tree = tempfile::tempdir().unwrap();
        let st = std::fs::metadata(tree.path()).unwrap();
        let path = socket_path(st.dev(), st.ino());
        let first = Listener::bind(&st).unwrap();
        assert!(Client::connect(&path).unwrap().is_some());
        let second = Listener::bind(&st).unwrap_err().to_string();
        assert!(second.contains("another vxfs daemon"), "{second}");
        drop(first);
        assert!(!path.exists() && !path.with_extension("lock").exists());
        // A daemon that died: its socket and an unheld lock stay behind,
        // nobody listens; a client does not remove them, a daemon does.
        let dead = UnixListener::bind(&path).unwrap();
        drop(dead);
        std::fs::write(path.with_extension("lock"), b"").unwrap();
        assert!(Client::connect(&path).unwrap().is_none());
        assert!(path.exists());
        let other = tempfile::tempdir().unwrap();
        let next = Listener::bind(&std::fs::metadata(other.path()).unwrap()).unwrap();
        assert!(!path.exists(), "the dead socket is swept");
        drop(next);
        // And the tree's next daemon binds.
        drop(Listener::bind(&st).unwrap());
    }

    #[test]
    fn messages_round_trip_with_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Client {
            reader: BufReader::new(a.try_clone().unwrap()),
            stream: a,
        };
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let join = Request::Join {
            options: vec!["xid=5".into(), "nodev".into()],
            source: b"/srv/g1".to_vec(),
            mountpoint: b"/mnt/with space/\xff".to_vec(),
            wait: true,
        };
        client.send(&join, &[file.as_fd()]).unwrap();
        let (got, fds) = receive(&b).unwrap();
        assert_eq!(got, join);
        assert_eq!(fds.len(), 1);
        answer(&b, &Reply::Error("no".into())).unwrap();
        assert_eq!(client.reply().unwrap(), Some(Reply::Error("no".into())));
        drop(b);
        assert_eq!(client.reply().unwrap(), None);
    }
}

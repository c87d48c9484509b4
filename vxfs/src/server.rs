//! The serving daemon of one tree: the shared core ([`Vxfs`]) and every
//! mount (view) of it, the first one and those that join later through the
//! control socket ([`crate::control`]).
//!
//! Each view is one FUSE connection with its own session threads, context
//! mode and runtime directory (`/run/vxfs/MAJ:MIN`: the vroot sockets and
//! the `view` description the tools read); all of them share one inode
//! table, one set of counters and one index. The daemon ends when its last
//! view does.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, bail};
use rustix::fs::{Mode, OFlags};

use crate::context::Resolver;
use crate::control::{self, Reply, Request};
use crate::fs::Vxfs;
use crate::fuse::FuseFs;
use crate::inode::ROOT_ID;
use crate::options::{Args, DAEMON_OPTIONS, DEFAULT_TIMEOUT, FsOptions, WATCHED_TIMEOUT};
use crate::view::{Ttls, View};
use crate::vroot_server::{ViewInfo, VrootServer};

/// One mount being served.
#[derive(Debug)]
struct Served {
    mountpoint: PathBuf,
    /// Its device number (to tell whether it is still mounted).
    dev: u64,
    /// How the mount decides contexts.
    mode: crate::tagging::ContextMode,
    /// Its runtime directory (sockets, description); removed on drop.
    runtime: VrootServer,
    /// The joiner waiting for the end of its mount (`-f`).
    waiter: Option<UnixStream>,
    /// Its requests, counted per operation.
    requests: Arc<crate::stats::Requests>,
}

/// The other end of a control connection.
struct Peer {
    stream: UnixStream,
    /// Whether it is the host administrator, read at its first request
    /// that needs it (hashify sends one per inode): the peer is the
    /// process that called `connect(2)`, whoever writes to the socket
    /// later, so each request would only read that process's capabilities
    /// again; one that drops them keeps this connection's answer.
    admin: std::cell::OnceCell<bool>,
}

/// The daemon's state.
#[derive(Debug)]
pub struct Server {
    core: Arc<Vxfs>,
    tree: PathBuf,
    /// The daemon-wide options it runs with.
    opts: FsOptions,
    views: Mutex<HashMap<u64, Served>>,
    next_conn: Mutex<u64>,
    all_ended: Condvar,
    /// Set when the last view ended: no view may be added any more.
    closing: std::sync::atomic::AtomicBool,
}

impl Server {
    /// A daemon over `tree` with no view yet.
    pub fn new(core: Arc<Vxfs>, tree: PathBuf, opts: FsOptions) -> Arc<Server> {
        Arc::new(Server {
            core,
            tree,
            opts,
            views: Mutex::new(HashMap::new()),
            next_conn: Mutex::new(0),
            all_ended: Condvar::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The core.
    pub fn core(&self) -> &Arc<Vxfs> {
        &self.core
    }

    /// The mount points being served.
    pub fn mountpoints(&self) -> Vec<PathBuf> {
        self.lock().values().map(|v| v.mountpoint.clone()).collect()
    }

    /// Writes each mount's request counts to `requests` in its runtime
    /// directory and the log, and the daemon's inode table size and memory
    /// to `daemon` beside them (SIGUSR1).
    pub fn report_requests(&self) {
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        let daemon = format!(
            "inodes {}\nrss_bytes {}\nconnections {}\n",
            self.core.inodes().len(),
            rss * 1024,
            self.core.kernels().all().len()
        );
        for v in self.lock().values() {
            if let Err(e) = v.runtime.write_file("daemon", &daemon) {
                log::warn!(
                    "{}: writing the daemon's figures: {e}",
                    v.mountpoint.display()
                );
            }
            let table = v.requests.table();
            if let Err(e) = v.runtime.write_file("requests", &table) {
                log::warn!(
                    "{}: writing its request counts: {e}",
                    v.mountpoint.display()
                );
            }
            log::info!(
                "requests on {}: {}",
                v.mountpoint.display(),
                table.trim_end().replace('\n', ", ")
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Served>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The core node id of directory `dir` (an `O_PATH` descriptor of a
    /// directory inside the tree), holding one reference for a view's root.
    pub fn root_of(&self, dir: OwnedFd) -> anyhow::Result<u64> {
        let st = rustix::fs::fstat(&dir)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
            bail!("SOURCE is not a directory");
        }
        let tree = std::fs::metadata(&self.tree)?;
        if (st.st_dev, st.st_ino) == (tree.dev(), tree.ino()) {
            return Ok(ROOT_ID);
        }
        if !inside(dir.as_fd(), (tree.dev(), tree.ino()))? {
            bail!(
                "SOURCE is not inside the tree {} this daemon serves",
                self.tree.display()
            );
        }
        Ok(self.core.inodes().insert(dir, &st).id)
    }

    /// Serves `fuse`, a `/dev/fuse` connection mounted at `mountpoint` by
    /// a command with `args`, as a view rooted at core node `root`: checks
    /// the options, does the FUSE handshake and runs the session on
    /// threads of its own. Returns the connection id.
    pub fn add_view(
        self: &Arc<Self>,
        fuse: OwnedFd,
        root: u64,
        args: &Args,
        mountpoint: &Path,
        waiter: Option<UnixStream>,
    ) -> anyhow::Result<u64> {
        self.check_options(args)?;
        let conn = {
            let mut next = self.next_conn.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            *next
        };
        let resolver = Arc::new(Resolver::new(args.fs.tagging.mode));
        let view = View {
            root,
            resolver: Arc::clone(&resolver),
            read_only: args.fs.read_only,
            watched: Ttls {
                attr: args.fs.attr_timeout.unwrap_or(WATCHED_TIMEOUT),
                entry: args.fs.entry_timeout.unwrap_or(WATCHED_TIMEOUT),
            },
            unwatched: Ttls {
                attr: args.fs.attr_timeout.unwrap_or(DEFAULT_TIMEOUT),
                entry: args.fs.entry_timeout.unwrap_or(DEFAULT_TIMEOUT),
            },
        };
        let dev = mounted_dev(mountpoint)?;
        let info = ViewInfo {
            tree: self.tree.clone(),
            source: args.source.clone(),
            xid: args.fs.tagging.mode.to_string(),
            tagged: self.core.options().tagging.mode.is_on(),
            index: self.core.accounting().map(|a| a.index_path().to_path_buf()),
            pid: std::process::id(),
            watched: self.core.kernels().watching(),
        };
        let server = Arc::downgrade(self);
        let possible: crate::vroot_server::Possible = Arc::new(move |xid| match server.upgrade() {
            Some(server) => server.possible(xid),
            None => Ok(()),
        });
        let runtime = VrootServer::start(
            dev,
            self.core.accounting().cloned(),
            resolver,
            &info,
            possible,
        )
        .context("starting the mount's runtime directory and vroot sockets")?;
        let mut config = fuser::Config::default();
        config.n_threads = Some(args.fs.threads);
        config.clone_fd = args.fs.threads > 1;
        config.io_uring = args.fs.io_uring != Some(false);
        let requests = Arc::new(crate::stats::Requests::default());
        let (fs, kernel) = FuseFs::new(Arc::clone(&self.core), view, conn, Arc::clone(&requests));
        let session = match fuser::Session::from_fd(fs, fuse, fuser::SessionACL::All, config) {
            Ok(session) => session,
            Err(e) => {
                self.core.connection_ended(conn);
                return Err(e).context("FUSE handshake with the kernel");
            }
        };
        let transport = transport(args.fs.io_uring, session.transport());
        if let Err(e) = runtime.write_file("transport", &format!("{transport}\n")) {
            log::warn!("writing the mount's transport file: {e}");
        }
        kernel.connect(session.notifier());
        self.core.kernels().connected(kernel);
        let mut views = self.lock();
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            drop(views);
            drop(session);
            self.core.connection_ended(conn);
            return Err(control::DaemonEnding.into());
        }
        views.insert(
            conn,
            Served {
                mountpoint: mountpoint.to_path_buf(),
                dev,
                mode: args.fs.tagging.mode,
                runtime,
                waiter,
                requests,
            },
        );
        drop(views);
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("vxfs-view-{conn}"))
            .spawn(move || {
                match session.run() {
                    Ok(()) => {}
                    // A detached connection the kernel ended while threads
                    // still read: the same clean end as ENODEV.
                    Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                        log::info!("view {conn}: the kernel ended the connection");
                    }
                    Err(e) => log::error!("view {conn}: {e}"),
                }
                this.ended(conn);
            })?;
        log::info!(
            "serving {} on {}",
            self.tree.display(),
            mountpoint.display()
        );
        Ok(conn)
    }

    /// Whether context `xid` can appear on any mount of the daemon (`Err`:
    /// what can), for refusing limits nobody could ever use: a mount with a
    /// fixed context has only that one, one of id ranges its ranges and
    /// the host, a cgroup mount every context, a host mount the host.
    pub fn possible(&self, xid: crate::tagging::Xid) -> Result<(), String> {
        use crate::tagging::{ContextMode, Xid};
        let modes: Vec<ContextMode> = self.lock().values().map(|v| v.mode).collect();
        let can = |mode: &ContextMode| match *mode {
            ContextMode::Off => xid == Xid::HOST,
            ContextMode::Fixed(n) => xid == n,
            ContextMode::Ids(r) => xid == Xid::HOST || (r.first..=r.last).contains(&xid.0),
            ContextMode::Cgroup => true,
        };
        if modes.iter().any(can) {
            return Ok(());
        }
        let shown: Vec<String> = modes.iter().map(|m| format!("xid={m}")).collect();
        Err(format!(
            "no mount of {} can ever be context {xid} ({}): mount the guest's root with \
             -o xid={xid} first, then set its limits",
            self.tree.display(),
            shown.join(", ")
        ))
    }

    /// A view's session ended.
    fn ended(&self, conn: u64) {
        let mut views = self.lock();
        if let Some(served) = views.remove(&conn) {
            log::info!("unmounted {}", served.mountpoint.display());
            if let Some(waiter) = &served.waiter {
                let _ = control::answer(waiter, &Reply::Ended);
            }
        }
        if views.is_empty() {
            // Set under the lock add_view inserts under: a join from now
            // on is told to wait for this daemon's end.
            self.closing
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.all_ended.notify_all();
        }
    }

    /// When none of the views is mounted any more, their sessions may just
    /// not have seen the end yet (umount returns first): waits a moment
    /// for them, so that a join right after the last unmount is told the
    /// daemon is ending instead of meeting its old options. Views detached
    /// with files still open keep being served, and joined.
    fn settle_unmounted_views(&self) {
        let mounted: std::collections::HashSet<u64> =
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(line_dev)
                .collect();
        let mut views = self.lock();
        if views.is_empty() || views.values().any(|v| mounted.contains(&v.dev)) {
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !views.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            views = self
                .all_ended
                .wait_timeout(views, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Blocks until no view is left.
    pub fn wait_until_unmounted(&self) {
        let mut views = self.lock();
        while !views.is_empty() {
            views = self
                .all_ended
                .wait(views)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Refuses daemon-wide options a joining command gives with values the
    /// daemon does not run with, and tagging a daemon that does not tag.
    fn check_options(&self, args: &Args) -> anyhow::Result<()> {
        let ours = &self.opts;
        let theirs = &args.fs;
        for &name in &theirs.explicit {
            let same = match name {
                "passthrough" => theirs.passthrough == ours.passthrough,
                "dlimits" => theirs.dlimits == ours.dlimits,
                "index" => theirs.index == ours.index,
                "inode_fds" => theirs.inode_fds == ours.inode_fds,
                "notagcheck" => theirs.tagging.no_check == ours.tagging.no_check,
                "watch" => theirs.watch == ours.watch,
                // Checked by finding the daemon.
                "tree" => true,
                other => unreachable!("{other} is not one of {DAEMON_OPTIONS:?}"),
            };
            if !same {
                bail!(
                    "-o {name} is the daemon's and it runs with another value: a mount of \
                     {} shares the daemon's (leave {name} out, or unmount every mount of the \
                     tree to change it)",
                    self.tree.display()
                );
            }
        }
        if theirs.tagging.mode.is_on() && !ours.tagging.mode.is_on() {
            bail!(
                "the daemon serving {} does not tag (it was mounted without -o xid=); a mount \
                 with contexts needs a tagging daemon: unmount every mount of the tree and \
                 mount it with -o xid=... first",
                self.tree.display()
            );
        }
        Ok(())
    }

    /// Answers the requests of one control connection until it closes.
    pub fn handle(self: &Arc<Self>, stream: UnixStream) {
        let peer = Peer {
            stream,
            admin: std::cell::OnceCell::new(),
        };
        while let Ok((request, fds)) = control::receive(&peer.stream) {
            let reply = self.answer(&peer, request, fds);
            if let Err(e) = control::answer(&peer.stream, &reply) {
                log::debug!("control connection: {e}");
                return;
            }
        }
    }

    fn answer(self: &Arc<Self>, peer: &Peer, request: Request, fds: Vec<OwnedFd>) -> Reply {
        let stream = &peer.stream;
        if matches!(request, Request::Check { .. } | Request::Join { .. }) {
            self.settle_unmounted_views();
        }
        let ending = self.closing.load(std::sync::atomic::Ordering::SeqCst);
        match request {
            Request::Check { .. } | Request::Join { .. } if ending => Reply::Ending,
            Request::Info => Reply::Info {
                tree: self.tree.as_os_str().as_bytes().to_vec(),
                pid: std::process::id(),
                mounts: self
                    .mountpoints()
                    .iter()
                    .map(|m| m.as_os_str().as_bytes().to_vec())
                    .collect(),
            },
            Request::Check { options } => match view_args(options, Path::new("/")) {
                Ok(args) => match self.check_options(&args) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error(format!("{e:#}")),
                },
                Err(e) => Reply::Error(format!("{e:#}")),
            },
            Request::Join {
                options,
                source,
                mountpoint,
                wait,
            } => match self.join(stream, options, &source, &mountpoint, wait, fds) {
                Ok(()) => Reply::Ok,
                Err(e) if e.is::<control::DaemonEnding>() => Reply::Ending,
                Err(e) => Reply::Error(format!("{e:#}")),
            },
            Request::Unify { swaps } => match self.unify(peer, None, &swaps) {
                Ok(done) => Reply::Unified(done),
                Err(e) => Reply::Error(format!("{e:#}")),
            },
            Request::UnifyVerified { twin, swaps } => match self.unify(peer, Some(&twin), &swaps) {
                Ok(done) => Reply::Unified(done),
                Err(e) => Reply::Error(format!("{e:#}")),
            },
        }
    }

    /// hashify's swaps ([`crate::unify`]), for the host administrator at
    /// the other end of `stream`, in order, up to the first not linked;
    /// with `twin`, only once the daemon has compared that inode with its
    /// store entry (none done if it does not know them).
    fn unify(
        &self,
        peer: &Peer,
        twin: Option<&crate::unify::Twin>,
        swaps: &[crate::unify::Swap],
    ) -> anyhow::Result<Vec<crate::unify::Swapped>> {
        /// Above what hashify's own counter reaches: the daemon's temporary
        /// names never meet those hashify makes through the mount.
        const SERIALS: u64 = 1 << 48;
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(SERIALS);
        let cred = rustix::net::sockopt::socket_peercred(&peer.stream)?;
        let pid = cred.pid.as_raw_nonzero().get() as u32;
        if !*peer
            .admin
            .get_or_init(|| crate::creds::has_host_sys_admin(pid))
        {
            bail!("only the host administrator may unify files");
        }
        let caller = crate::creds::Caller {
            pid,
            may_administer: true,
            ..crate::creds::Caller::ROOT
        };
        let swap_all = || {
            let mut done = Vec::with_capacity(swaps.len());
            for swap in swaps {
                let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // hashify's reserved name, of its process: a crash's leftover
                // is removed once that process is gone.
                let tmp = format!("{}{pid}.{n}", crate::leftovers::HASHIFY_PREFIX);
                let result = self.core.unify(&caller, swap, OsStr::new(&tmp));
                done.push(result);
                if result != crate::unify::Swapped::Linked {
                    break;
                }
            }
            done
        };
        let Some(twin) = twin else {
            return Ok(swap_all());
        };
        if swaps
            .iter()
            .any(|s| (s.ino, s.entry) != (twin.ino, twin.entry))
        {
            bail!("the swaps of a verified unify name its inode and entry");
        }
        Ok(match self.core.verified(twin, swap_all) {
            crate::unify::Verified::Done(done) => done,
            crate::unify::Verified::Refused(first) => vec![first],
            crate::unify::Verified::Unknown => Vec::new(),
        })
    }

    fn join(
        self: &Arc<Self>,
        stream: &UnixStream,
        options: Vec<String>,
        source: &[u8],
        mountpoint: &[u8],
        wait: bool,
        fds: Vec<OwnedFd>,
    ) -> anyhow::Result<()> {
        let cred = rustix::net::sockopt::socket_peercred(stream)?;
        let pid = cred.pid.as_raw_nonzero().get() as u32;
        if !crate::creds::has_host_sys_admin(pid) {
            bail!("only the host administrator may add mounts to a vxfs daemon");
        }
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
        if ns(&pid.to_string()) != ns("self") {
            bail!("the mount must be made in the daemon's mount namespace");
        }
        let Ok::<[OwnedFd; 2], _>([fuse, dir]) = fds.try_into() else {
            bail!("a join carries the FUSE connection and SOURCE");
        };
        let mountpoint = PathBuf::from(OsStr::from_bytes(mountpoint));
        let mut args = view_args(options, &mountpoint)?;
        args.source = PathBuf::from(OsStr::from_bytes(source));
        let root = self.root_of(dir)?;
        let waiter = if wait {
            Some(stream.try_clone()?)
        } else {
            None
        };
        if let Err(e) = self.add_view(fuse, root, &args, &mountpoint, waiter) {
            if root != ROOT_ID {
                self.core.op_forget(root, 1);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// The fuse module's switch for FUSE-over-io_uring (Linux 6.14+).
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// The name of how a view's requests travel (its runtime directory's
/// `transport`), logging the one line that says why when io_uring was
/// wanted (`-o io_uring=`, default on) and the view did not get it: a
/// warning when the option asked for it, else for information.
fn transport(wanted: Option<bool>, got: fuser::Transport) -> &'static str {
    match got {
        fuser::Transport::IoUring => "io_uring",
        fuser::Transport::DevFuse if wanted == Some(false) => "dev_fuse",
        fuser::Transport::DevFuse => {
            let why = match std::fs::read_to_string(ENABLE_URING) {
                Ok(v) if v.trim() == "N" => format!(
                    "the kernel does not offer it ({ENABLE_URING} is N; root may set it to Y \
                     before mounting)"
                ),
                Ok(_) => "its rings could not be set up (logged above)".to_string(),
                Err(_) => "this kernel has no FUSE-over-io_uring".to_string(),
            };
            let level = match wanted {
                Some(true) => log::Level::Warn,
                _ => log::Level::Info,
            };
            log::log!(
                level,
                "FUSE-over-io_uring: {why}; serving through /dev/fuse"
            );
            "dev_fuse"
        }
    }
}

/// The arguments of a joining command with `-o` words `options`.
fn view_args(options: Vec<String>, mountpoint: &Path) -> anyhow::Result<Box<Args>> {
    let mut argv: Vec<std::ffi::OsString> = vec!["SOURCE".into(), mountpoint.into()];
    for word in options {
        argv.push("-o".into());
        argv.push(word.into());
    }
    match crate::options::parse_args(argv)? {
        crate::options::Command::Mount(args) => Ok(args),
        _ => bail!("not a mount"),
    }
}

/// Whether directory `dir` lies below the directory with identity `top`,
/// by walking `..` (which the kernel resolves, never a symlink).
fn inside(dir: rustix::fd::BorrowedFd<'_>, top: (u64, u64)) -> anyhow::Result<bool> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut here = rustix::fs::openat(dir, ".", flags, Mode::empty())?;
    for _ in 0..4096 {
        let up = rustix::fs::openat(&here, "..", flags, Mode::empty())?;
        let st = rustix::fs::fstat(&up)?;
        if (st.st_dev, st.st_ino) == top {
            return Ok(true);
        }
        let was = rustix::fs::fstat(&here)?;
        if (was.st_dev, was.st_ino) == (st.st_dev, st.st_ino) {
            return Ok(false);
        }
        here = up;
    }
    Ok(false)
}

/// The device number of the filesystem mounted at `mountpoint`, from
/// /proc/self/mountinfo (asking the mount itself would be a FUSE request
/// to this very daemon, which may not serve it yet).
pub fn mounted_dev(mountpoint: &Path) -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = mountpoint.to_string_lossy();
    let line = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m) == wanted))
        .with_context(|| format!("{} is not in /proc/self/mountinfo", mountpoint.display()))?;
    line_dev(line).context("malformed /proc/self/mountinfo")
}

/// The device number (`MAJOR:MINOR`, field 3) of a mountinfo line.
fn line_dev(line: &str) -> Option<u64> {
    let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
    Some(rustix::fs::makedev(
        major.parse().ok()?,
        minor.parse().ok()?,
    ))
}

/// Undoes the octal escapes of /proc/self/mountinfo paths.
pub fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

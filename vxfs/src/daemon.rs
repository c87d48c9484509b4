//! Mounting, daemonizing and the life cycle of a daemon and its mounts.
//!
//! One daemon serves one tree. `vxfs SOURCE MOUNTPOINT` first looks for a
//! daemon already serving a tree SOURCE is in ([`crate::control`]): if one
//! runs, the command mounts `/dev/fuse` itself and hands the connection to
//! that daemon, which serves it as one more view; otherwise the command
//! becomes a new daemon for the tree (`-o tree=`, else SOURCE), refusing to
//! start over a tree that contains one already served.
//!
//! A new daemon opens `/dev/fuse`, mounts it with `mount(2)` as type
//! `fuse.vxfs` (so /proc/mounts, `umount` and `mount -t fuse.vxfs` all see a
//! normal filesystem), completes the FUSE handshake and only then reports
//! success: in daemon mode the parent process waits on a pipe and exits 0
//! once the mount is usable, or non-zero with the child's error.
//!
//! It ends when its last mount ends: after `umount`/`fusermount3 -u` of
//! each, or after SIGTERM/SIGINT/SIGHUP, on which it detaches them all
//! itself, then saves the counters.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustix::fs::{Mode, OFlags};
use rustix::mount::UnmountFlags;

use crate::control::{self, Reply, Request};
use crate::fs::Vxfs;
use crate::options::Args;
use crate::server::Server;
use crate::sys::{self, Forked, SignalSet};
use crate::tagging::{ContextMode, IdKind};

/// The daemon's signals: SIGTERM, SIGINT and SIGHUP end it (after
/// unmounting), SIGUSR1 writes each mount's request counts
/// (`crate::stats`).
const DAEMON_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

/// Mounts and serves until unmounted, as a new daemon or as one more
/// mount of the daemon serving SOURCE's tree. In daemon mode this returns
/// only in the child; the parent exits from within.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let source = std::fs::canonicalize(&args.source)
        .with_context(|| format!("source {}", args.source.display()))?;
    let mountpoint = canonical_mountpoint(&args.mountpoint)?;
    check_dir(&source, "source")?;
    if !rustix::process::geteuid().is_root() {
        bail!("vxfs must run as root (it mounts directly and serves every user)");
    }
    recover_dead_mount(&mountpoint)?;
    check_dir(&mountpoint, "mount point")?;
    check_id_mapping(args.fs.tagging.mode)?;
    refuse_stacking(&mountpoint)?;
    let tree = args
        .fs
        .tree
        .as_ref()
        .map(|t| std::fs::canonicalize(t).with_context(|| format!("tree {}", t.display())))
        .transpose()?;
    if let Some(tree) = &tree {
        check_dir(tree, "tree")?;
        if !source.starts_with(tree) {
            bail!(
                "SOURCE {} is not inside tree={}",
                source.display(),
                tree.display()
            );
        }
    }
    // A daemon on its way out (its last mount just went) refuses joins:
    // wait for it to exit, then serve the tree anew.
    let deadline = std::time::Instant::now() + control::ENDING_DAEMON_WAIT;
    while let Some((served, client)) = control::find(&source)? {
        if tree.as_ref().is_some_and(|t| *t != served) {
            bail!(
                "{} is in the tree {} a vxfs daemon serves already, not in tree={}",
                source.display(),
                served.display(),
                tree.as_deref().unwrap_or(&served).display()
            );
        }
        match join(args, &source, &mountpoint, client) {
            Err(e) if e.is::<control::DaemonEnding>() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
    let tree = tree.unwrap_or_else(|| source.clone());
    if args.fs.explicit.contains(&"dlimits") && args.fs.dlimits && !args.fs.tagging.mode.is_on() {
        bail!(
            "-o dlimits=on needs contexts to account: a tree mounted without -o xid= tags \
             nothing (give -o xid=...)"
        );
    }
    control::refuse_overlap(&tree)?;
    raise_fd_limit();
    let ready = if args.foreground {
        None
    } else {
        Some(daemonize()?)
    };
    // main() prints the error; in daemon mode the parent does.
    serve(args, &tree, &source, &mountpoint, ready)
}

/// The mount point's canonical path. Its parent is resolved, not the
/// point itself: a dead FUSE mount there answers every stat with ENOTCONN.
fn canonical_mountpoint(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    let what = || format!("mount point {}", path.display());
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            let parent =
                std::fs::canonicalize(parent.unwrap_or(Path::new("."))).with_context(what)?;
            let name = path.file_name().with_context(what)?;
            Ok(parent.join(name))
        }
        Err(e) => Err(e).with_context(what),
    }
}

/// A FUSE mount whose daemon is gone ("Transport endpoint is not
/// connected") cannot be unmounted while anything still uses it (a guest
/// holding /proc mounted inside it, a shell's cwd): detach it, so that the
/// tree can be mounted afresh, and say so.
fn recover_dead_mount(mountpoint: &Path) -> anyhow::Result<()> {
    // statfs always asks the daemon (a stat may be answered from the
    // kernel's attribute cache of a mount that died a moment ago).
    match rustix::fs::statfs(mountpoint) {
        Err(rustix::io::Errno::NOTCONN) => {}
        _ => return Ok(()),
    }
    if !top_fstype(mountpoint)?.is_some_and(|t| t == "fuse" || t.starts_with("fuse.")) {
        return Ok(());
    }
    rustix::mount::unmount(mountpoint, UnmountFlags::DETACH).with_context(|| {
        format!(
            "{} is a dead FUSE mount (its daemon is gone) and cannot be detached",
            mountpoint.display()
        )
    })?;
    eprintln!(
        "vxfs: {} was a dead FUSE mount (its daemon is gone): detached it (processes still \
         using it keep the dead one); mounting afresh",
        mountpoint.display()
    );
    Ok(())
}

/// The type of the topmost mount at `mountpoint`, if it is a mount point.
fn top_fstype(mountpoint: &Path) -> anyhow::Result<Option<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = mountpoint.to_string_lossy();
    let top = info.lines().rev().find(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| crate::server::unescape(m) == wanted)
    });
    Ok(top.and_then(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        fields.get(sep + 1).map(|t| t.to_string())
    }))
}

/// Refuses to mount on a mount point that already is the root of a FUSE
/// mount: mounting over it would hide it, not replace it.
fn refuse_stacking(mountpoint: &Path) -> anyhow::Result<()> {
    match top_fstype(mountpoint)? {
        Some(t) if t == "fuse" || t.starts_with("fuse.") => bail!(
            "{} is already mounted ({t}): unmount it first",
            mountpoint.display()
        ),
        _ => Ok(()),
    }
}

/// Joins the daemon `client` talks to: mounts a new FUSE connection at
/// `mountpoint` and hands it over with SOURCE. In the foreground, waits
/// until the mount ends (and unmounts it on a stop signal).
fn join(
    args: &Args,
    source: &Path,
    mountpoint: &Path,
    mut client: control::Client,
) -> anyhow::Result<()> {
    // SIGUSR1 too, which is the daemon's (request counts): a joiner sent
    // it by mistake must not die of it.
    let signals = args
        .foreground
        .then(|| SignalSet::block(&DAEMON_SIGNALS))
        .transpose()?;
    let dir = rustix::fs::open(
        source,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", source.display()))?;
    // Refused options refuse the mount before anything is mounted.
    let check = Request::Check {
        options: args.option_words.clone(),
    };
    match client.call(&check, &[]) {
        Ok(Reply::Ok) => {}
        Ok(Reply::Ending) => return Err(control::DaemonEnding.into()),
        // It exited between our connect and its answer.
        Err(e) => {
            log::info!("asking the daemon: {e}");
            return Err(control::DaemonEnding.into());
        }
        Ok(Reply::Error(why)) => bail!("{why}"),
        Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
    }
    let fuse = mount(args, source, mountpoint)?;
    let request = Request::Join {
        options: args.option_words.clone(),
        source: source.as_os_str().as_bytes().to_vec(),
        mountpoint: mountpoint.as_os_str().as_bytes().to_vec(),
        wait: args.foreground,
    };
    let reply = client.call(&request, &[fuse.as_fd(), dir.as_fd()]);
    drop(fuse);
    match reply {
        Ok(Reply::Ok) => {}
        Ok(Reply::Error(why)) => {
            detach(mountpoint);
            bail!("{why}");
        }
        Ok(Reply::Ending) => {
            detach(mountpoint);
            return Err(control::DaemonEnding.into());
        }
        Ok(other) => {
            detach(mountpoint);
            bail!("unexpected answer from the daemon: {other:?}");
        }
        Err(e) => {
            // It went away meanwhile (ended, or died): mount afresh.
            detach(mountpoint);
            log::info!("handing the mount to the daemon: {e}");
            return Err(control::DaemonEnding.into());
        }
    }
    log::info!(
        "{} joined the daemon serving its tree",
        mountpoint.display()
    );
    let Some(signals) = signals else {
        return Ok(());
    };
    let mountpoint = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("vxfs-signals".into())
        .spawn(move || {
            while let Ok(sig) = signals.wait() {
                if sig == libc::SIGUSR1 {
                    log::info!("SIGUSR1 is the daemon's (its pid is in view.json)");
                    continue;
                }
                log::info!("signal {sig}: unmounting {}", mountpoint.display());
                detach(&mountpoint);
                break;
            }
        })?;
    // Until the daemon says the mount ended (or is gone).
    while let Ok(Some(reply)) = client.reply() {
        if reply == Reply::Ended {
            break;
        }
    }
    Ok(())
}

/// Refuses an id-range mapping that would make some host user's
/// subordinate ids (a rootless container's) the host or part of a guest.
fn check_id_mapping(mode: ContextMode) -> anyhow::Result<()> {
    let ContextMode::Ids(ranges) = mode else {
        return Ok(());
    };
    let file = match ranges.kind {
        IdKind::Uid => "/etc/subuid",
        IdKind::Gid => "/etc/subgid",
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("reading {file}: {e}"),
    };
    crate::tagging::check_subordinate_ranges(&ranges, &text)
        .map_err(|why| anyhow::anyhow!("xid={}: {file}: {why}", describe_mode(mode)))?;
    log::info!("contexts: {}", ranges.describe());
    Ok(())
}

/// The `xid=` value of an id-range mode, for messages.
fn describe_mode(mode: ContextMode) -> String {
    match mode {
        ContextMode::Ids(r) => {
            let id = match r.kind {
                IdKind::Uid => "uid",
                IdKind::Gid => "gid",
            };
            format!("{id}/{}:{}-{}", r.size, r.first, r.last)
        }
        other => format!("{other:?}"),
    }
}

fn check_dir(path: &Path, what: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if !meta.is_dir() {
        bail!("{what} {} is not a directory", path.display());
    }
    Ok(())
}

/// One descriptor per known inode is held open, so allow as many as the
/// system does.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    // Raise the hard limit to the system's if allowed, else the soft limit
    // to the hard one.
    let candidates = [nr_open, lim.maximum];
    for max in candidates.into_iter().flatten() {
        let wanted = rustix::process::Rlimit {
            current: Some(max),
            maximum: Some(max.max(lim.maximum.unwrap_or(0))),
        };
        if setrlimit(Resource::Nofile, wanted).is_ok() {
            return;
        }
    }
    log::warn!("cannot raise RLIMIT_NOFILE above {:?}", lim.current);
}

/// The write end of the pipe to the waiting parent.
#[derive(Debug)]
struct ReadyPipe(File);

impl ReadyPipe {
    fn report(mut self, message: &str) {
        let _ = self.0.write_all(message.as_bytes());
    }
}

/// Forks; the parent waits for the child's report and exits with it.
fn daemonize() -> anyhow::Result<ReadyPipe> {
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    match sys::fork_single_threaded()? {
        Forked::Parent(_) => {
            drop(write_end);
            let mut report = String::new();
            let _ = File::from(read_end).read_to_string(&mut report);
            if report == "ok" {
                std::process::exit(0);
            }
            if report.is_empty() {
                report = "vxfs daemon exited before the mount was ready".into();
            }
            eprintln!("vxfs: {report}");
            std::process::exit(1);
        }
        Forked::Child => {
            drop(read_end);
            rustix::process::setsid()?;
            Ok(ReadyPipe(File::from(write_end)))
        }
    }
}

/// Serves `tree` as a new daemon: the core, the control socket, the first
/// mount (`source` at `mountpoint`), until the last mount ends.
fn serve(
    args: &Args,
    tree: &Path,
    source: &Path,
    mountpoint: &Path,
    ready: Option<ReadyPipe>,
) -> anyhow::Result<()> {
    let started = (|| {
        // Before any thread exists (the counters' saver is one), so that
        // every thread blocks the stop signals and only the signal thread
        // takes them.
        let signals = SignalSet::block(&DAEMON_SIGNALS)?;
        let listener = control::Listener::bind(&std::fs::metadata(tree)?)?;
        let core = Vxfs::new(tree, args.fs.clone())
            .with_context(|| format!("opening tree {}", tree.display()))?;
        let core = Arc::new(core);
        crate::watch::start(&core, args.fs.watch, tree)?;
        let server = Server::new(core, tree.to_path_buf(), args.fs.clone());
        let dir = rustix::fs::open(
            source,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let root = server.root_of(dir)?;
        let fuse = mount(args, source, mountpoint)?;
        server
            .add_view(fuse, root, args, mountpoint, None)
            .inspect_err(|_| detach(mountpoint))?;
        let handler = Arc::clone(&server);
        listener.serve(move |stream| handler.handle(stream))?;
        spawn_signal_thread(signals, Arc::clone(&server))?;
        anyhow::Ok((server, listener))
    })();
    let (server, listener) = match started {
        Ok(started) => started,
        Err(e) => {
            if let Some(pipe) = ready {
                // The waiting parent prints it and exits 1.
                pipe.report(&format!("{e:#}"));
                std::process::exit(1);
            }
            return Err(e);
        }
    };
    log::info!("mounted {} on {}", source.display(), mountpoint.display());
    if let Some(pipe) = ready {
        pipe.report("ok");
        redirect_stdio_to_null();
    }
    // Once the last view ends no join is taken (they are told the daemon
    // is ending and wait for its exit).
    server.wait_until_unmounted();
    if let Some(accounting) = server.core().accounting() {
        accounting.shutdown();
    }
    log::info!("every mount of {} ended", tree.display());
    // The tree's lock goes last: a new daemon starts only once the
    // counters are saved and the index is free.
    drop(listener);
    Ok(())
}

/// Opens /dev/fuse and mounts it at `mountpoint`.
fn mount(args: &Args, source: &Path, mountpoint: &Path) -> anyhow::Result<OwnedFd> {
    let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .context("opening /dev/fuse (is the fuse module loaded?)")?;
    let fsname = args
        .mount
        .fsname
        .clone()
        .unwrap_or_else(|| source.to_string_lossy().into_owned());
    let fstype = format!("fuse.{}", args.mount.subtype);
    // vxfs serves every user (allow_other) and lets the kernel check
    // permissions against the backing modes and ACLs (default_permissions).
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
        dev.as_raw_fd()
    );
    rustix::mount::mount(
        fsname.as_str(),
        mountpoint,
        fstype.as_str(),
        args.mount.flags,
        Some(std::ffi::CString::new(data)?.as_c_str()),
    )
    .with_context(|| format!("mounting {} on {}", source.display(), mountpoint.display()))?;
    Ok(dev)
}

/// Lazily unmounts: the mount disappears now and the connection ends once
/// the last open file on it is closed.
fn detach(mountpoint: &Path) {
    if let Err(e) = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH) {
        log::warn!("unmounting {}: {e}", mountpoint.display());
    }
}

fn spawn_signal_thread(signals: SignalSet, server: Arc<Server>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("vxfs-signals".into())
        .spawn(move || {
            while let Ok(sig) = signals.wait() {
                if sig == libc::SIGUSR1 {
                    server.report_requests();
                    continue;
                }
                for mountpoint in server.mountpoints() {
                    log::info!("signal {sig}: unmounting {}", mountpoint.display());
                    detach(&mountpoint);
                }
                break;
            }
        })?;
    Ok(())
}

fn redirect_stdio_to_null() {
    if let Ok(null) = rustix::fs::open("/dev/null", OFlags::RDWR, Mode::empty()) {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    // The log goes where an administrator finds it (see vxfs_log).
    vxfs_log::detached(
        &vxfs_log::syslog_socket(),
        vxfs_log::Keep::FileWithoutSyslog(Path::new(vxfs_log::FALLBACK_LOG)),
    );
    let _ = std::env::set_current_dir("/");
}

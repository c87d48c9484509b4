//! Mounting, daemonizing and the life cycle of one vxfs mount.
//!
//! The daemon opens `/dev/fuse`, mounts it with `mount(2)` as type
//! `fuse.vxfs` (so /proc/mounts, `umount` and `mount -t fuse.vxfs` all see a
//! normal filesystem), completes the FUSE handshake and only then reports
//! success: in daemon mode the parent process waits on a pipe and exits 0
//! once the mount is usable, or non-zero with the child's error.
//!
//! It ends when the kernel connection ends: after `umount`/`fusermount3 -u`,
//! or after SIGTERM/SIGINT/SIGHUP, on which it detaches the mount itself.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, bail};
use rustix::fs::{Mode, OFlags};
use rustix::mount::UnmountFlags;

use crate::context::Resolver;
use crate::fs::{StaleAttrs, Vxfs};
use crate::fuse::FuseFs;
use crate::options::Args;
use crate::sys::{self, Forked, SignalSet};
use crate::tagging::{ContextMode, IdKind};
use crate::vroot_server::VrootServer;

/// Signals that end the daemon (after unmounting).
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Mounts and serves until unmounted. In daemon mode this returns only in
/// the child; the parent exits from within.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let source = std::fs::canonicalize(&args.source)
        .with_context(|| format!("source {}", args.source.display()))?;
    let mountpoint = std::fs::canonicalize(&args.mountpoint)
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    check_dir(&source, "source")?;
    check_dir(&mountpoint, "mount point")?;
    check_id_mapping(args.fs.tagging.mode)?;
    if !rustix::process::geteuid().is_root() {
        bail!("vxfs must run as root (it mounts directly and serves every user)");
    }
    raise_fd_limit();

    let ready = if args.foreground {
        None
    } else {
        Some(daemonize()?)
    };
    // main() prints the error; in daemon mode the parent does.
    mount_and_serve(args, &source, &mountpoint, ready)
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

fn mount_and_serve(
    args: &Args,
    source: &Path,
    mountpoint: &Path,
    ready: Option<ReadyPipe>,
) -> anyhow::Result<()> {
    let served = (|| {
        let fs = Vxfs::new(source, args.fs.clone())
            .with_context(|| format!("opening source {}", source.display()))?;
        let signals = SignalSet::block(&STOP_SIGNALS)?;
        let accounting = fs.accounting().cloned();
        let resolver = Arc::new(Resolver::new(args.fs.tagging.mode));
        let dev = mount(args, source, mountpoint)?;
        let vroot = match accounting {
            Some(accounting) => {
                let mount_dev = mounted_dev(mountpoint).inspect_err(|_| detach(mountpoint))?;
                Some(
                    VrootServer::start(mount_dev, accounting, Arc::clone(&resolver))
                        .inspect_err(|_| detach(mountpoint))
                        .context("starting the vroot quota proxy")?,
                )
            }
            None => None,
        };
        let mut config = fuser::Config::default();
        config.n_threads = Some(args.fs.threads);
        config.clone_fd = args.fs.threads > 1;
        let notifier = Arc::new(OnceLock::<fuser::Notifier>::new());
        let sender = Arc::clone(&notifier);
        fs.on_stale_attrs(StaleAttrs(Box::new(move |ino| {
            if let Some(n) = sender.get() {
                // A negative offset: attributes only, no page cache.
                if let Err(e) = n.inval_inode(fuser::INodeNo(ino), -1, 0) {
                    log::debug!("inode {ino}: invalidating attributes: {e}");
                }
            }
        })));
        let session = fuser::Session::from_fd(
            FuseFs::new(fs, resolver),
            dev,
            fuser::SessionACL::All,
            config,
        )
        .inspect_err(|_| detach(mountpoint))
        .context("FUSE handshake with the kernel")?;
        let _ = notifier.set(session.notifier());
        spawn_signal_thread(signals, mountpoint.to_path_buf())?;
        anyhow::Ok((session, vroot))
    })();
    let (session, _vroot) = match served {
        Ok(served) => served,
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
    session.run().context("serving FUSE requests")?;
    log::info!("unmounted {}", mountpoint.display());
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

/// The device number of the filesystem mounted at `mountpoint`, from
/// /proc/self/mountinfo (asking the mount itself would be a FUSE request
/// to this very daemon, which is not serving yet).
fn mounted_dev(mountpoint: &Path) -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = mountpoint.to_string_lossy();
    let line = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m) == wanted))
        .with_context(|| format!("{} is not in /proc/self/mountinfo", mountpoint.display()))?;
    let (major, minor) = line
        .split(' ')
        .nth(2)
        .and_then(|d| d.split_once(':'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .context("malformed /proc/self/mountinfo")?;
    Ok(rustix::fs::makedev(major, minor))
}

/// Undoes the octal escapes of /proc/self/mountinfo paths.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Lazily unmounts: the mount disappears now and the connection ends once
/// the last open file on it is closed.
fn detach(mountpoint: &Path) {
    if let Err(e) = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH) {
        log::warn!("unmounting {}: {e}", mountpoint.display());
    }
}

fn spawn_signal_thread(signals: SignalSet, mountpoint: PathBuf) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("vxfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                log::info!("signal {sig}: unmounting {}", mountpoint.display());
                detach(&mountpoint);
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
    let _ = std::env::set_current_dir("/");
}

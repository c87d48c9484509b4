//! The daemon: one per host (per registry), claimed by an `flock` on
//! `MOUNTPOINT.lock` (which holds its pid), mounted read-only at
//! `MOUNTPOINT` (a dead predecessor's mount is detached first), forked
//! into the background once the kernel's handshake is done, logging to
//! `MOUNTPOINT.log`, and unmounted on SIGTERM, SIGINT or SIGHUP.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::mount::{MountFlags, UnmountFlags};
use vxfs_kernel::procview;
use vxfs_kernel::registry::Registry;
use vxfs_kernel::sys::{self, Forked, SignalFd};

use crate::fs::ProcFs;
use crate::sampler::Loads;

/// A failure, said in words.
pub type Result<T> = std::result::Result<T, String>;

fn beside(mountpoint: &Path, suffix: &str) -> PathBuf {
    let mut p: OsString = mountpoint.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The lock file of the daemon at `mountpoint`.
pub fn lock_path(mountpoint: &Path) -> PathBuf {
    beside(mountpoint, ".lock")
}

/// The log of the daemon at `mountpoint`.
pub fn log_path(mountpoint: &Path) -> PathBuf {
    beside(mountpoint, ".log")
}

fn open_lock(mountpoint: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        lock_path(mountpoint),
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| format!("{}: {e}", lock_path(mountpoint).display()))
}

/// The pid of the daemon holding `mountpoint`'s lock, if one does.
pub fn holder(mountpoint: &Path) -> Option<u32> {
    let fd = open_lock(mountpoint).ok()?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockShared) {
        Ok(()) => None,
        Err(_) => std::fs::read_to_string(lock_path(mountpoint))
            .ok()?
            .trim()
            .parse()
            .ok(),
    }
}

/// Whether a vxproc mount (live or dead) is on top at `dir`.
fn vxproc_mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy().replace(' ', "\\040");
    info.lines().rev().any(|l| {
        let mut halves = l.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        left.split(' ').nth(4) == Some(want.as_str())
            && right.split(' ').next() == Some("fuse.vxproc")
    })
}

fn mount(dir: &Path) -> Result<OwnedFd> {
    let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening /dev/fuse (is the fuse module loaded?): {e}"))?;
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
        dev.as_raw_fd()
    );
    let data = std::ffi::CString::new(data).map_err(|e| e.to_string())?;
    rustix::mount::mount(
        "vxproc",
        dir,
        "fuse.vxproc",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(data.as_c_str()),
    )
    .map_err(|e| format!("mounting on {}: {e}", dir.display()))?;
    Ok(dev)
}

/// Serves `registry`'s contexts at `mountpoint` until a signal; in the
/// background (the caller returns once it serves) unless `foreground`.
/// Exits 0 at once when a live daemon already serves there.
pub fn serve(registry: Registry, mountpoint: &Path, foreground: bool) -> Result<()> {
    if let Some(parent) = mountpoint.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let lock = open_lock(mountpoint)?;
    if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        let pid = holder(mountpoint).map_or("?".to_string(), |p| p.to_string());
        if procview::probe(mountpoint).is_some() {
            log::info!("already serving {} (pid {pid})", mountpoint.display());
            return Ok(());
        }
        return Err(format!(
            "another vxproc (pid {pid}) holds {} but does not serve yet",
            lock_path(mountpoint).display()
        ));
    }
    // A killed predecessor's mount: its connection is dead.
    for _ in 0..16 {
        if !vxproc_mounted(mountpoint) {
            break;
        }
        rustix::mount::unmount(mountpoint, UnmountFlags::DETACH)
            .map_err(|e| format!("detaching the dead {}: {e}", mountpoint.display()))?;
    }
    std::fs::create_dir_all(mountpoint)
        .map_err(|e| format!("creating {}: {e}", mountpoint.display()))?;
    let fuse = mount(mountpoint)?;
    let ready = if foreground {
        None
    } else {
        Some(background(mountpoint)?)
    };
    let pid = std::process::id().to_string();
    let _ = rustix::fs::ftruncate(&lock, 0);
    let _ = rustix::io::pwrite(&lock, pid.as_bytes(), 0);
    // Blocked before any thread starts, so that all of them inherit it.
    let signals =
        SignalFd::new(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]).map_err(|e| e.to_string())?;
    let loads = Loads::default();
    loads
        .spawn(registry.clone())
        .map_err(|e| format!("starting the sampler: {e}"))?;
    let mut config = fuser::Config::default();
    config.n_threads = Some(2);
    let fs = ProcFs::new(registry, loads);
    let notifier = fs.notifier_slot();
    let session = fuser::Session::from_fd(fs, fuse, fuser::SessionACL::All, config);
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            let _ = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH);
            return Err(format!("FUSE handshake: {e}"));
        }
    };
    let _ = notifier.set(session.notifier());
    if let Some(r) = ready {
        let _ = rustix::io::write(&r, b"r");
    }
    log::info!("serving {}", mountpoint.display());
    let dir = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("vxproc-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.read() {
                log::info!("signal {sig}: unmounting {}", dir.display());
                let _ = rustix::mount::unmount(&dir, UnmountFlags::DETACH);
            }
        })
        .map_err(|e| e.to_string())?;
    match session.run() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        Err(e) => Err(format!("serving: {e}")),
    }
    .inspect(|()| log::info!("{} unmounted", mountpoint.display()))
}

/// Forks: the parent waits until the child serves (or says why not) and
/// exits with that; the child returns the descriptor to say it on, in a
/// session of its own, its output in the log.
fn background(mountpoint: &Path) -> Result<OwnedFd> {
    let one = sys::one_thread().map_err(|e| format!("multi-threaded: {e}"))?;
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    match sys::fork(&one).map_err(|e| format!("fork: {e}"))? {
        Forked::Parent { .. } => {
            drop(w);
            let mut said = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut said);
            if said.starts_with('r') {
                std::process::exit(0);
            }
            eprintln!(
                "vxproc: the server ended before serving; see {}",
                log_path(mountpoint).display()
            );
            std::process::exit(1);
        }
        Forked::Child => {
            drop(r);
            let _ = rustix::process::setsid();
            let log = rustix::fs::open(
                log_path(mountpoint),
                OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            );
            let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty());
            if let (Ok(log), Ok(null)) = (log, null) {
                let _ = rustix::stdio::dup2_stdin(&null);
                let _ = rustix::stdio::dup2_stdout(&null);
                let _ = rustix::stdio::dup2_stderr(&log);
            }
            // Its lines go to its log and to syslog (vxfs_log).
            vxfs_log::detached(&vxfs_log::syslog_socket(), vxfs_log::Keep::Stderr);
            Ok(w)
        }
    }
}

/// Stops the daemon at `mountpoint` (SIGTERM, then waits up to `timeout`
/// for its lock); detaches a dead one's mount. `false`: none ran.
pub fn stop(mountpoint: &Path, timeout: Duration) -> Result<bool> {
    let Some(pid) = holder(mountpoint) else {
        if vxproc_mounted(mountpoint) {
            rustix::mount::unmount(mountpoint, UnmountFlags::DETACH)
                .map_err(|e| format!("detaching the dead {}: {e}", mountpoint.display()))?;
        }
        return Ok(false);
    };
    let target = rustix::process::Pid::from_raw(pid as i32).ok_or("pid 0 in the lock")?;
    rustix::process::kill_process(target, rustix::process::Signal::TERM)
        .map_err(|e| format!("signalling vxproc {pid}: {e}"))?;
    let deadline = Instant::now() + timeout;
    while holder(mountpoint).is_some() {
        if Instant::now() > deadline {
            return Err(format!("vxproc {pid} did not stop within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(true)
}

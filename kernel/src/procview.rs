//! The guest side of `vxproc`, the host daemon that serves each context's
//! own `/proc/meminfo`, `loadavg`, `stat`, ... (docs/SEMANTICS.md, "A
//! guest's own /proc figures"): which files a guest's flags ask for, where
//! the daemon's tree is, starting it when it is not running, and binding
//! its files read-only over the guest's.
//!
//! vxproc is never a single point of failure: a guest whose files cannot
//! be bound starts anyway and reads the kernel's, and its supervisor
//! ([`Watch`]) starts the daemon again when it died and binds the new
//! files over the dead ones.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};

use crate::error::{Error, Result, io, os};
use crate::names::cflag;
use crate::registry::{Registry, State};
use crate::sys::{self, Forked};

/// One file vxproc serves per context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcFile {
    /// Its name in the context's directory of the daemon's tree.
    pub name: &'static str,
    /// The guest's file it covers.
    pub target: &'static str,
}

/// Every file, in the order they are bound.
pub const FILES: &[ProcFile] = &[
    ProcFile {
        name: "meminfo",
        target: "/proc/meminfo",
    },
    ProcFile {
        name: "swaps",
        target: "/proc/swaps",
    },
    ProcFile {
        name: "loadavg",
        target: "/proc/loadavg",
    },
    ProcFile {
        name: "stat",
        target: "/proc/stat",
    },
    ProcFile {
        name: "cpuinfo",
        target: "/proc/cpuinfo",
    },
    ProcFile {
        name: "cpu_online",
        target: "/sys/devices/system/cpu/online",
    },
    ProcFile {
        name: "uptime",
        target: "/proc/uptime",
    },
    ProcFile {
        name: "diskstats",
        target: "/proc/diskstats",
    },
];

/// The files a context with flags `cflags` gets (util-vserver's names):
/// `virt_mem` meminfo and swaps, `virt_load` loadavg, `virt_cpu` stat,
/// cpuinfo and the online CPUs, `virt_uptime` with `virt_cpu` uptime (the
/// time namespace alone already gives `virt_uptime`'s first field), and
/// diskstats with any of them.
pub fn wanted(cflags: u64) -> Vec<ProcFile> {
    let any = cflags & (cflag::VIRT_MEM | cflag::VIRT_LOAD | cflag::VIRT_CPU) != 0;
    FILES
        .iter()
        .filter(|f| match f.name {
            "meminfo" | "swaps" => cflags & cflag::VIRT_MEM != 0,
            "loadavg" => cflags & cflag::VIRT_LOAD != 0,
            "stat" | "cpuinfo" | "cpu_online" => cflags & cflag::VIRT_CPU != 0,
            "uptime" => cflags & cflag::VIRT_CPU != 0 && cflags & cflag::VIRT_UPTIME != 0,
            _ => any,
        })
        .copied()
        .collect()
}

/// The daemon's mount point: `proc` beside the registry (`/run/vxfs/proc`).
pub fn mount_dir(registry: &Registry) -> PathBuf {
    registry.root().with_file_name("proc")
}

/// The daemon's program: `$VXFS_VXPROC`, else `vxproc` beside the running
/// program, else `vxproc` from `PATH`.
pub fn program() -> PathBuf {
    if let Some(p) = std::env::var_os("VXFS_VXPROC") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vxproc")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("vxproc"))
}

/// `statfs` magic of FUSE.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether `st` is a FUSE filesystem's.
fn is_fuse(st: &rustix::fs::StatFs) -> bool {
    // f_type's C type differs between targets.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    magic == FUSE_SUPER_MAGIC
}

/// The device of the live vxproc mount at `dir`, if there is one.
pub fn probe(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statfs(dir).ok()?;
    if !is_fuse(&st) {
        return None;
    }
    // Its root says what it is (a dead connection fails here, ENOTCONN).
    let version = std::fs::read_to_string(dir.join("version")).ok()?;
    if !version.starts_with("vxproc ") {
        return None;
    }
    rustix::fs::stat(dir).ok().map(|s| s.st_dev)
}

/// Starts vxproc unless it runs; the device of its mount.
pub fn ensure_running(registry: &Registry) -> Result<u64> {
    let dir = mount_dir(registry);
    if let Some(dev) = probe(&dir) {
        return Ok(dev);
    }
    let program = program();
    let mut cmd = std::process::Command::new(&program);
    cmd.arg("--mountpoint")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    sys::unblock_signals_at_exec(&mut cmd);
    // vxproc forks its server and exits once it serves (or failed).
    let out = cmd
        .output()
        .map_err(io(format!("running {}", program.display())))?;
    if let Some(dev) = probe(&dir) {
        return Ok(dev);
    }
    Err(Error::Other(format!(
        "{} did not start ({}): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Binds `files` of the vxproc tree at `dir` read-only over the running
/// context `state`'s own, replacing any vxproc file already there (a dead
/// daemon's). The caller must be single-threaded (it forks).
pub fn bind_into(state: &State, dir: &Path, files: &[ProcFile]) -> Result<()> {
    let own = dir.join(state.xid.0.to_string());
    let mut trees = Vec::new();
    for f in files {
        let path = own.join(f.name);
        let tree = rustix::mount::open_tree(
            CWD,
            &path,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(os(format!("cloning {}", path.display())))?;
        trees.push((f.target, tree));
    }
    let one = sys::one_thread().map_err(os("binding vxproc's files: multi-threaded"))?;
    let (report_r, report_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(os("pipe"))?;
    match sys::fork(&one).map_err(os("fork"))? {
        Forked::Child => {
            drop(report_r);
            let result = crate::space::enter_mount_namespace(state)
                .and_then(|()| trees.iter().try_for_each(|(t, tree)| cover(t, tree)));
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    let _ = rustix::io::write(&report_w, e.to_string().as_bytes());
                    1
                }
            };
            std::process::exit(code);
        }
        Forked::Parent { pid, pidfd: _ } => {
            drop(report_w);
            let mut message = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(report_r), &mut message);
            let status = rustix::process::waitpid(
                rustix::process::Pid::from_raw(pid as i32),
                rustix::process::WaitOptions::empty(),
            );
            match status {
                Ok(Some((_, s))) if s.exit_status() == Some(0) => Ok(()),
                _ => Err(Error::Other(format!(
                    "binding vxproc's files into the guest: {message}"
                ))),
            }
        }
    }
}

/// In the guest's mount namespace: `tree` over `target`, after whatever
/// FUSE file covered it (an earlier vxproc's) is detached. A target the
/// guest does not have is left alone; no symlink is followed.
fn cover(target: &str, tree: &OwnedFd) -> Result<()> {
    let open = || {
        rustix::fs::openat2(
            CWD,
            target,
            OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    };
    for _ in 0..8 {
        let fd = match open() {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(Errno::NOTCONN) => {
                detach(target)?;
                continue;
            }
            Err(e) => return Err(os(format!("opening {target} in the guest"))(e)),
        };
        match rustix::fs::fstatfs(&fd) {
            Ok(st) if !is_fuse(&st) => {
                rustix::mount::move_mount(
                    tree.as_fd(),
                    "",
                    &fd,
                    "",
                    MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                        | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
                )
                .map_err(os(format!("binding vxproc's file over {target}")))?;
                return rustix::mount::mount_remount(
                    target,
                    MountFlags::BIND
                        | MountFlags::RDONLY
                        | MountFlags::NOSUID
                        | MountFlags::NODEV
                        | MountFlags::NOEXEC,
                    "",
                )
                .map_err(os(format!("making {target} read-only")));
            }
            // A FUSE file (live or dead) over the kernel's: an old one.
            Ok(_) | Err(Errno::NOTCONN) => detach(target)?,
            Err(e) => return Err(os(format!("statfs {target} in the guest"))(e)),
        }
    }
    Err(Error::Other(format!(
        "{target}: still covered after 8 detaches"
    )))
}

fn detach(target: &str) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH)
        .map_err(os(format!("detaching the old {target}")))
}

/// A rate no device reaches (bytes per second): the rule that makes
/// cgroup v1's blkio count a cgroup's I/O without limiting it.
const UNREACHED_BPS: u64 = 1_000_000_000_000_000;

/// For every context (`vserver-stat --json`, vxproc's `diskstats`), on a
/// host whose block I/O controller is cgroup v1: blkio keeps a cgroup's
/// I/O counters only
/// for devices with a throttle rule (measured on this kernel: none
/// without one, exact with one), so every block device gets a read and a write
/// rule of [`UNREACHED_BPS`]. The guest's own `cgroup/blkio.throttle.*`
/// files are written after and win. v2's `io.stat` counts without rules.
/// Returns what could not be set, as warnings.
pub fn count_block_io(
    cgroups: &crate::cgroup::CgroupSet,
    fs: &dyn crate::cgroup::CgroupFs,
) -> Vec<String> {
    let v1 = cgroups
        .members
        .iter()
        .any(|m| m.hierarchy.has("blkio") && m.hierarchy.version == crate::cgroup::Version::V1);
    if !v1 {
        return Vec::new();
    }
    let Ok(disks) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for disk in disks.flatten() {
        // Every block device, virtual ones too: a guest's tree may sit on
        // device-mapper (LVM), md or a loop device, where its I/O is
        // submitted and counted.
        let Ok(dev) = std::fs::read_to_string(disk.path().join("dev")) else {
            continue;
        };
        let rule = format!("{} {UNREACHED_BPS}", dev.trim());
        for file in [
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
        ] {
            if let Err(e) = cgroups.write_raw(fs, file, &rule) {
                warnings.push(format!(
                    "diskstats: counting {}'s I/O: {e}",
                    disk.file_name().to_string_lossy()
                ));
            }
        }
    }
    warnings
}

/// How often a supervisor checks that its guest's vxproc files are live.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A supervisor's watch over its guest's vxproc files.
#[derive(Debug)]
pub struct Watch {
    files: Vec<ProcFile>,
    dir: PathBuf,
    /// The daemon mount whose files are bound (`None`: none are).
    bound: Option<u64>,
    /// The last failure said, not to repeat it every interval.
    said: Option<String>,
}

impl Watch {
    /// The watch for a context with flags `cflags` (`None` if it asks for
    /// no vxproc file).
    pub fn new(registry: &Registry, cflags: u64) -> Option<Watch> {
        let files = wanted(cflags);
        (!files.is_empty()).then(|| Watch {
            files,
            dir: mount_dir(registry),
            bound: None,
            said: None,
        })
    }

    /// Makes sure the daemon runs and its live files cover the guest's:
    /// starts it when it is not running and binds again when the bound
    /// files are not the running daemon's (a new guest, a new daemon).
    /// A failure is said once on the supervisor's stderr (the console);
    /// the guest keeps the kernel's files, or the dead ones until the
    /// next check.
    pub fn check(&mut self, registry: &Registry, state: &State, name: &str) {
        let result = ensure_running(registry).and_then(|dev| {
            if self.bound != Some(dev) {
                bind_into(state, &self.dir, &self.files)?;
                if self.bound.is_some() {
                    log::info!("{name}: vxproc restarted; its files are bound again");
                }
                self.bound = Some(dev);
            }
            Ok(())
        });
        match result {
            Ok(()) => self.said = None,
            Err(e) => {
                let text = e.to_string();
                if self.said.as_deref() != Some(&text) {
                    log::warn!(
                        "{name}: vxproc: {text} (the guest reads the kernel's files until it works)"
                    );
                    self.said = Some(text);
                }
            }
        }
    }

    /// A new init (a reboot) has a new mount namespace: nothing is bound.
    pub fn forget_binding(&mut self) {
        self.bound = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_choose_the_files() {
        let names = |f: u64| -> Vec<&str> { wanted(f).iter().map(|p| p.name).collect() };
        assert!(names(cflag::VIRT_UPTIME).is_empty(), "the time namespace");
        assert_eq!(names(cflag::VIRT_MEM), ["meminfo", "swaps", "diskstats"]);
        assert_eq!(names(cflag::VIRT_LOAD), ["loadavg", "diskstats"]);
        assert_eq!(
            names(cflag::VIRT_CPU | cflag::VIRT_UPTIME),
            ["stat", "cpuinfo", "cpu_online", "uptime", "diskstats"]
        );
        assert_eq!(
            wanted(cflag::VIRT_MEM | cflag::VIRT_LOAD | cflag::VIRT_CPU | cflag::VIRT_UPTIME),
            FILES
        );
    }

    #[test]
    fn the_tree_sits_beside_the_registry() {
        let r = Registry::at(Path::new("/run/vxfs/ctx"));
        assert_eq!(mount_dir(&r), Path::new("/run/vxfs/proc"));
    }
}

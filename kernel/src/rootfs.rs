//! The guest's mounts, made by its first process in its own mount
//! namespace (docs/SEMANTICS.md, "The context core"):
//!
//! 1. the host's mounts become slaves (nothing the guest mounts reaches the
//!    host), and what comes from the host (device nodes, bind sources of
//!    the guest's `fstab`) is cloned as detached trees *before* the root
//!    changes;
//! 2. the guest's directory is bound onto itself and made the root with
//!    `pivot_root` (never `chroot`), the old root detached: from then on
//!    every path resolves inside the guest's tree, so a symlink a guest
//!    planted (`/proc` -> `/etc`, say) can only lead inside it;
//! 3. a fresh `/proc` (the guest's pid namespace) and `/sys` read-only,
//!    mounted before the pivot on directories of the guest's root opened
//!    without following symlinks (a user namespace may mount procfs only
//!    while the host's is visible), then a small `/dev` (null zero full
//!    random urandom tty, devpts, shm, mqueue; no kmsg), the guest's
//!    `fstab`;
//! 4. the guest's sysctls are written, then the masked paths are covered
//!    and the read-only ones remounted read-only.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{CWD, Mode};
use rustix::io::Errno;
use rustix::mount::{
    MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

use crate::config::FstabEntry;
use crate::security::{MASKED, READ_ONLY};

/// A mount step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {error}")]
pub struct RootfsError {
    /// What was being done.
    pub step: String,
    /// Why it failed.
    pub error: Errno,
}

fn step(what: impl Into<String>) -> impl FnOnce(Errno) -> RootfsError {
    let step = what.into();
    move |error| RootfsError { step, error }
}

/// Device nodes the guest gets, bound from the host's.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What the host supplies, cloned before the root changes.
#[derive(Debug)]
pub struct HostTrees {
    devices: Vec<(&'static str, OwnedFd)>,
    binds: Vec<Option<OwnedFd>>,
}

/// Clones the host's device nodes and the bind sources of `fstab`.
pub fn clone_host_trees(fstab: &[FstabEntry]) -> Result<HostTrees, RootfsError> {
    let clone = |path: &str, recursive: bool| {
        let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        if recursive {
            flags |= OpenTreeFlags::AT_RECURSIVE;
        }
        rustix::mount::open_tree(CWD, path, flags).map_err(step(format!("cloning {path}")))
    };
    let mut devices = Vec::new();
    for d in DEVICES {
        devices.push((*d, clone(&format!("/dev/{d}"), false)?));
    }
    let mut binds = Vec::new();
    for e in fstab {
        let opts = options(&e.options);
        binds.push(if e.fstype == "bind" || opts.bind {
            Some(clone(&e.source, opts.recursive)?)
        } else {
            None
        });
    }
    Ok(HostTrees { devices, binds })
}

/// An fstab options field, split into flags and filesystem data.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    flags: MountFlags,
    bind: bool,
    recursive: bool,
    data: Vec<String>,
}

fn options(text: &str) -> Options {
    let mut o = Options {
        flags: MountFlags::empty(),
        bind: false,
        recursive: false,
        data: Vec::new(),
    };
    for opt in text.split(',').filter(|s| !s.is_empty()) {
        match opt {
            "defaults" | "rw" | "auto" | "noauto" | "nofail" | "user" | "nouser" => {}
            "ro" => o.flags |= MountFlags::RDONLY,
            "nosuid" => o.flags |= MountFlags::NOSUID,
            "nodev" => o.flags |= MountFlags::NODEV,
            "noexec" => o.flags |= MountFlags::NOEXEC,
            "noatime" => o.flags |= MountFlags::NOATIME,
            "nodiratime" => o.flags |= MountFlags::NODIRATIME,
            "relatime" => o.flags |= MountFlags::RELATIME,
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive = true;
            }
            other => o.data.push(other.to_string()),
        }
    }
    o
}

/// Makes `path` (and its parents) a directory inside the new root, or
/// checks that it is one.
fn ensure_dir(path: &str) -> Result<(), RootfsError> {
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        match rustix::fs::mkdir(at.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(step(format!("mkdir {at}"))(e)),
        }
    }
    let st = rustix::fs::stat(path).map_err(step(format!("stat {path}")))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Err(step(format!("{path} in the guest is not a directory"))(
            Errno::NOTDIR,
        ));
    }
    Ok(())
}

/// Makes an empty file at `path` (a mount point for a file).
fn ensure_file(path: &str) -> Result<(), RootfsError> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map(drop)
    .map_err(step(format!("creating {path}")))
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), RootfsError> {
    let data =
        CString::new(data).map_err(|_| step(format!("options of {target}"))(Errno::INVAL))?;
    rustix::mount::mount(source, target, fstype, flags, data.as_c_str())
        .map_err(step(format!("mounting {fstype} on {target}")))
}

fn attach(tree: &OwnedFd, target: &str) -> Result<(), RootfsError> {
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(step(format!("attaching {target}")))
}

/// A directory `name` of the guest's root, opened without following any
/// symlink (made if missing): what a guest planted there cannot send a
/// mount elsewhere.
fn guest_dir(root: &OwnedFd, name: &str) -> Result<OwnedFd, RootfsError> {
    use rustix::fs::{OFlags, ResolveFlags};
    match rustix::fs::mkdirat(root, name, Mode::from_raw_mode(0o555)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(step(format!("mkdir /{name} in the guest"))(e)),
    }
    rustix::fs::openat2(
        root,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(step(format!(
        "the guest's /{name} (a directory, not a symlink)"
    )))
}

/// Whether `path` exists in the guest tree at `root`, resolved as the
/// guest would resolve it: symlinks (absolute ones too) stay inside the
/// tree, so the host never follows a guest's link out of it.
pub fn exists_in_guest(root: &Path, path: &str) -> bool {
    use rustix::fs::{OFlags, ResolveFlags};
    let Ok(root) = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    rustix::fs::openat2(
        &root,
        path.trim_start_matches('/'),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .is_ok()
}

/// Mounts a new `fstype` with `attrs` on the directory `target`.
fn mount_new(
    fstype: &str,
    target: &OwnedFd,
    attrs: rustix::mount::MountAttrFlags,
) -> Result<(), RootfsError> {
    use rustix::mount::{FsMountFlags, FsOpenFlags};
    let what = || format!("mounting {fstype}");
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(step(what()))?;
    rustix::mount::fsconfig_create(&fs).map_err(step(what()))?;
    let mnt =
        rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(step(what()))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(step(what()))
}

/// Before the pivot: a fresh /proc (the guest's pid namespace) and /sys
/// (read-only) in the guest's root, while the host's /proc is still
/// visible (the kernel lets a user namespace mount procfs only then).
/// Without a network namespace of its own, a guest in a user namespace
/// cannot mount sysfs: it gets the host's, bound read-only.
pub fn mount_kernel_filesystems(root: &Path, own_sysfs: bool) -> Result<(), RootfsError> {
    use rustix::mount::MountAttrFlags as A;
    let root = rustix::fs::open(
        root,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step(format!("opening {}", root.display())))?;
    let hard = A::MOUNT_ATTR_NOSUID | A::MOUNT_ATTR_NODEV | A::MOUNT_ATTR_NOEXEC;
    mount_new("proc", &guest_dir(&root, "proc")?, hard)?;
    let sys = guest_dir(&root, "sys")?;
    if own_sysfs {
        mount_new("sysfs", &sys, hard | A::MOUNT_ATTR_RDONLY)?;
    } else {
        let tree = rustix::mount::open_tree(
            CWD,
            "/sys",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE,
        )
        .map_err(step("cloning /sys"))?;
        rustix::mount::move_mount(
            &tree,
            "",
            &sys,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(step("binding /sys"))?;
    }
    Ok(())
}

/// Step 2: `root` becomes `/`.
pub fn pivot_into(root: &Path) -> Result<(), RootfsError> {
    make_host_mounts_slaves()?;
    rustix::mount::mount_bind_recursive(root, root)
        .map_err(step(format!("binding {} onto itself", root.display())))?;
    rustix::process::chdir(root).map_err(step(format!("chdir {}", root.display())))?;
    rustix::process::pivot_root(".", ".").map_err(step("pivot_root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(step("detaching the old root"))?;
    rustix::process::chdir("/").map_err(step("chdir /"))?;
    Ok(())
}

/// For a context that keeps the host's tree as its root (`vcontext
/// --create` without `--chroot`, a `vdir` of `/`): the host's mounts
/// become slaves, and a fresh `/proc` (the context's pid namespace) and
/// the small `/dev` cover the host's, with steps 3 and 4 as for a guest.
/// It shares the host's files, as such a context did in VServer.
pub fn share_host_root(
    host: HostTrees,
    fstab: &[FstabEntry],
    sysctls: &[(String, String)],
) -> Result<(), RootfsError> {
    make_host_mounts_slaves()?;
    mount(
        "proc",
        "/proc",
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        "",
    )?;
    populate(host, fstab, sysctls)
}

fn make_host_mounts_slaves() -> Result<(), RootfsError> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(step("making the host's mounts slaves"))
}

/// Steps 3 and 4 inside the new root.
pub fn populate(
    host: HostTrees,
    fstab: &[FstabEntry],
    sysctls: &[(String, String)],
) -> Result<(), RootfsError> {
    let hard = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    ensure_dir("/dev")?;
    mount(
        "tmpfs",
        "/dev",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "mode=755,size=65536k",
    )?;
    for (name, tree) in &host.devices {
        let target = format!("/dev/{name}");
        ensure_file(&target)?;
        attach(tree, &target)?;
    }
    ensure_dir("/dev/pts")?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    ensure_dir("/dev/shm")?;
    mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        "mode=1777,size=65536k",
    )?;
    ensure_dir("/dev/mqueue")?;
    mount("mqueue", "/dev/mqueue", "mqueue", hard, "")?;
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlink(target, link).map_err(step(format!("symlink {link}")))?;
    }
    for (entry, tree) in fstab.iter().zip(host.binds) {
        let o = options(&entry.options);
        match tree {
            Some(tree) => {
                let is_dir = rustix::fs::fstat(&tree)
                    .map(|st| {
                        rustix::fs::FileType::from_raw_mode(st.st_mode)
                            == rustix::fs::FileType::Directory
                    })
                    .unwrap_or(true);
                if is_dir {
                    ensure_dir(&entry.target)?;
                } else {
                    ensure_file(&entry.target)?;
                }
                attach(&tree, &entry.target)?;
                if o.flags.contains(MountFlags::RDONLY) {
                    rustix::mount::mount_remount(&*entry.target, MountFlags::BIND | o.flags, "")
                        .map_err(step(format!("making {} read-only", entry.target)))?;
                }
            }
            None => {
                ensure_dir(&entry.target)?;
                mount(
                    &entry.source,
                    &entry.target,
                    &entry.fstype,
                    o.flags,
                    &o.data.join(","),
                )?;
            }
        }
    }
    for (key, value) in sysctls {
        let path = format!("/proc/sys/{key}");
        std::fs::write(&path, value).map_err(|e| RootfsError {
            step: format!("setting {key} = {value}"),
            error: Errno::from_io_error(&e).unwrap_or(Errno::IO),
        })?;
    }
    for path in MASKED {
        match rustix::fs::stat(*path) {
            Err(_) => continue,
            Ok(st)
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Directory =>
            {
                mount("tmpfs", path, "tmpfs", MountFlags::RDONLY | hard, "size=0")?;
            }
            Ok(_) => rustix::mount::mount_bind("/dev/null", *path)
                .map_err(step(format!("masking {path}")))?,
        }
    }
    for path in READ_ONLY {
        if rustix::fs::stat(*path).is_err() {
            continue;
        }
        rustix::mount::mount_bind(*path, *path).map_err(step(format!("binding {path}")))?;
        rustix::mount::mount_remount(*path, MountFlags::BIND | MountFlags::RDONLY | hard, "")
            .map_err(step(format!("making {path} read-only")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_options() {
        let o = options("defaults,ro,nosuid,size=16m,mode=1777");
        assert_eq!(o.flags, MountFlags::RDONLY | MountFlags::NOSUID);
        assert_eq!(o.data, ["size=16m", "mode=1777"]);
        assert!(!o.bind);
        let o = options("rbind,ro");
        assert!(o.bind && o.recursive);
    }

    #[test]
    fn guest_paths_resolve_inside_the_guest() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/sbin/init"), "").unwrap();
        // An absolute link: on the host it would lead to the host's /usr.
        std::os::unix::fs::symlink("/usr/sbin", root.join("sbin")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
        assert!(exists_in_guest(&root, "/sbin/init"));
        assert!(!exists_in_guest(&root, "/passwd"), "the host's /etc/passwd");
        assert!(!exists_in_guest(&root, "/../../etc/passwd"));
        assert!(!exists_in_guest(&d.path().join("missing"), "/"));
    }
}

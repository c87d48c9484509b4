//! Acting with the caller's identity.
//!
//! The daemon runs as root. Permission checks are left to the kernel (vxfs
//! always mounts with `default_permissions`), but the backing filesystem must
//! still see the caller as the creator of new inodes so that owner, group
//! (including set-group-ID directory inheritance), default ACLs and the umask
//! come out exactly as natively. Each worker thread therefore has its own
//! filesystem context (`unshare(CLONE_FS)`, for a private umask) and switches
//! its fsuid/fsgid, and if needed its supplementary groups, per request.

use std::cell::Cell;

use rustix::fs::Mode;
use rustix::process::{Gid, Pid};

use crate::error::Result;
use crate::sys;
use crate::tagging::{IdShift, Xid};

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's fsuid.
    pub uid: u32,
    /// The caller's fsgid.
    pub gid: u32,
    /// The calling thread's id (0 when unknown).
    pub pid: u32,
    /// The caller's umask, applied to created inodes.
    pub umask: u32,
    /// The caller's context, as the mount (view) it came through decides.
    pub xid: Xid,
    /// Whether the caller may be the host administrator at all: false on a
    /// view with a fixed context, where every caller is the guest.
    pub may_administer: bool,
    /// How its view shows host-owned ids (a private copy it gets of a
    /// shared file is owned as it was shown).
    pub shift: Option<IdShift>,
    /// Every caller of its view is the same context (a fixed `xid=`, or a
    /// host view): what the view's kernel caches for one caller holds for
    /// every other.
    pub one_context: bool,
}

impl Caller {
    /// The daemon itself (root, host context, no umask).
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
        umask: 0,
        xid: Xid::HOST,
        may_administer: false,
        shift: None,
        one_context: true,
    };
}

/// `CAP_SYS_ADMIN`'s bit in the capability sets of /proc/PID/status.
const CAP_SYS_ADMIN: u32 = 21;

/// `CAP_FSETID`'s bit: changing a file keeps its set-user-ID and
/// set-group-ID bits.
pub const CAP_FSETID: u32 = 4;

/// Whether thread `pid` holds `CAP_SYS_ADMIN` in the daemon's own (the
/// initial) user namespace: the host administrator. A guest's root in
/// its own user namespace holds it only there, and a root without it (a
/// guest whose bounding set dropped it) is not the administrator either.
/// The requesting thread is blocked in its request while this is read,
/// so its id cannot be reused meanwhile.
pub fn has_host_sys_admin(pid: u32) -> bool {
    has_host_cap(pid, CAP_SYS_ADMIN)
}

/// Whether thread `pid` holds capability `cap` in the daemon's own user
/// namespace (what the kernel's `capable()` asks); false for pid 0 or a
/// thread that is gone.
pub fn has_host_cap(pid: u32, cap: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/user")).ok();
    let same_userns = ns(&pid.to_string()).is_some_and(|theirs| Some(theirs) == ns("self"));
    same_userns
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| effective_caps(&status))
            .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// Whether `caller` is in group `gid` (its fsgid or a supplementary
/// group; the kernel's `in_group_p`).
pub fn in_group(caller: &Caller, gid: u32) -> bool {
    caller.gid == gid
        || supplementary_groups(caller.pid)
            .iter()
            .any(|g| g.as_raw() == gid)
}

/// The `CapEff:` mask of a /proc/PID/status text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

thread_local! {
    static PRIVATE_FS: Cell<bool> = const { Cell::new(false) };
    /// The thread's current umask, to skip the syscall when unchanged.
    static UMASK: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// Gives the calling thread its own umask/cwd/root context, once.
fn ensure_private_fs() -> Result<()> {
    if !PRIVATE_FS.get() {
        sys::unshare_thread_fs()?;
        PRIVATE_FS.set(true);
    }
    Ok(())
}

/// The caller's identity on the current thread, undone on drop.
#[derive(Debug)]
pub struct CallerCreds {
    caller: Caller,
    groups_set: bool,
}

impl CallerCreds {
    /// Switches the current thread to `caller`'s fsuid, fsgid and umask.
    pub fn enter(caller: &Caller) -> Result<CallerCreds> {
        ensure_private_fs()?;
        let umask = caller.umask & 0o777;
        if UMASK.replace(umask) != umask {
            rustix::process::umask(Mode::from_raw_mode(umask));
        }
        // Worker threads are root between requests: nothing to switch for
        // a root caller.
        if caller.uid != 0 || caller.gid != 0 {
            sys::set_thread_fsgid(caller.gid);
            sys::set_thread_fsuid(caller.uid);
        }
        Ok(CallerCreds {
            caller: *caller,
            groups_set: false,
        })
    }

    /// Whether the supplementary groups are the caller's already.
    pub fn has_groups(&self) -> bool {
        self.groups_set || self.caller.uid == 0
    }

    /// Adds the caller's supplementary groups (read from /proc, so only done
    /// when an operation needs them).
    pub fn load_groups(&mut self) -> Result<()> {
        let groups = supplementary_groups(self.caller.pid);
        rustix::thread::set_thread_groups(&groups)?;
        self.groups_set = true;
        Ok(())
    }
}

impl Drop for CallerCreds {
    fn drop(&mut self) {
        if self.groups_set {
            // The daemon needs no supplementary groups of its own.
            let _ = rustix::thread::set_thread_groups(&[]);
        }
        if self.caller.uid != 0 || self.caller.gid != 0 {
            sys::set_thread_fsuid(0);
            sys::set_thread_fsgid(0);
        }
    }
}

/// The supplementary groups of thread `pid`, or none if it is gone.
fn supplementary_groups(pid: u32) -> Vec<Gid> {
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return Vec::new();
    };
    std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw_nonzero()))
        .map(|status| parse_groups(&status))
        .unwrap_or_default()
}

/// The `Groups:` line of a /proc/PID/status text.
fn parse_groups(status: &str) -> Vec<Gid> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|g| g.parse::<u32>().ok())
                .map(Gid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert_eq!(effective_caps(""), None);
        // This test process runs as root in the initial namespaces.
        let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        assert!(has_host_sys_admin(me));
        assert!(!has_host_sys_admin(0));
    }

    #[test]
    fn parses_groups_line() {
        let status = "Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 24 1000 \nNgid:\t0\n";
        let raw: Vec<u32> = parse_groups(status).iter().map(|g| g.as_raw()).collect();
        assert_eq!(raw, vec![4, 24, 1000]);
        assert!(parse_groups("Groups:\t\n").is_empty());
        assert!(parse_groups("").is_empty());
    }
}

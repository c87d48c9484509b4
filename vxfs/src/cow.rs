//! Copy-on-write link breaking (docs/VSERVER.md §4).
//!
//! A unified file (immutable + iunlink, made by `hashify`) is one inode
//! shared by hard link between guests. When a guest opens it for writing,
//! truncates it or changes its attributes, the name it used must be given a
//! private copy first, leaving every other link untouched.
//!
//! # Finding the name
//!
//! FUSE `OPEN`, `SETATTR` and `SETXATTR` name an inode, not the path that
//! reached it. So a change to a shared unified file is answered `ESTALE`
//! and the thread is marked ([`Pending`]). The kernel's path-based calls
//! (`open`, `truncate`, `chmod`, `chown`, `utimensat`, `setxattr`, ...)
//! redo their path walk once on `ESTALE`, with `LOOKUP_REVAL`, which makes
//! the kernel revalidate the final name with a `LOOKUP` from that same
//! thread: that lookup carries the parent and the name, breaks the link
//! and answers with the private copy, on which the retried call then
//! proceeds. This is the original's "restart the open" (§4.1), with the
//! copy made during the restarted walk.
//!
//! A change that does not come through a path (`fchmod`, `fchown`,
//! `fsetxattr` on a descriptor opened read-only, `open_by_handle_at`) is
//! not retried by the kernel, so it must never leave a mark behind (a
//! later, unrelated lookup of another name of the inode would consume it).
//! Before marking, the daemon reads which syscall the requesting thread is
//! blocked in (`/proc/TID/syscall`, [`kernel_retries`]); anything but a
//! known path-based call is refused as the original did (`EPERM`, `EACCES`
//! for opens) and the link stays shared. A mark is consumed by the next
//! `LOOKUP` of that inode from that thread only, and lives one second.
//!
//! # Breaking the link
//!
//! The copy is written to an unnamed `O_TMPFILE` in the same directory (a
//! crash leaves nothing behind), with the original's data (holes kept),
//! owner, mode, xattrs (minus vxfs's own), and times, then synced, given a
//! temporary name and exchanged with the shared name in one
//! `renameat2(RENAME_EXCHANGE)`; the temporary name, which now holds the
//! shared link, is removed. At no moment is the name missing or naming a
//! partial file. If the name stopped naming the shared inode meanwhile, the
//! exchange is undone and nothing is lost.
//!
//! The copy is tagged with and charged to the writer's context; when its
//! limit cannot hold the copy the lookup, and so the call, fails with
//! `ENOSPC` and the name stays shared. A unified file with a single link
//! needs no copy: its flags are cleared in place (§4.1).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Mode, OFlags, SeekFrom, Stat, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::Error;
use crate::tagging::is_reserved_xattr;

/// How long a thread told to redo its walk stays marked (the retry comes
/// at once, from inside the same syscall).
const FRESH: Duration = Duration::from_secs(1);

/// Threads remembered at most (stale entries go first).
const CAPACITY: usize = 4096;

/// Why a thread was told to redo its path walk.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The node id of the unified file to break.
    ino: u64,
    /// When it was told.
    at: Instant,
    /// Set when the break failed: the errno its retried call gets.
    failed: Option<Error>,
}

/// Threads told to redo their path walk to break a link, by thread id.
#[derive(Debug, Default)]
pub struct Pending {
    by_thread: Mutex<HashMap<u32, Mark>>,
    /// Entries in `by_thread`, read without the lock: almost always 0, so
    /// that lookups never touch the mutex.
    len: AtomicUsize,
}

impl Pending {
    fn insert(&self, tid: u32, ino: u64, failed: Option<Error>) {
        if tid == 0 {
            return;
        }
        let mut map = self.by_thread.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CAPACITY {
            map.retain(|_, m| m.at.elapsed() < FRESH);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        let at = Instant::now();
        map.insert(tid, Mark { ino, at, failed });
        self.len.store(map.len(), Ordering::Release);
    }

    /// Removes and returns thread `tid`'s fresh mark for `ino`, if
    /// `wanted` accepts it (a stale mark is dropped on the way).
    fn take_if(&self, tid: u32, ino: u64, wanted: impl Fn(&Mark) -> bool) -> Option<Mark> {
        if tid == 0 || self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut map = self.by_thread.lock().unwrap_or_else(|e| e.into_inner());
        let mark = *map.get(&tid)?;
        let fresh = mark.at.elapsed() < FRESH;
        let hit = fresh && mark.ino == ino && wanted(&mark);
        if hit || !fresh {
            map.remove(&tid);
            self.len.store(map.len(), Ordering::Release);
        }
        hit.then_some(mark)
    }

    /// Thread `tid` was answered `ESTALE` to change unified file `ino`.
    pub fn mark(&self, tid: u32, ino: u64) {
        self.insert(tid, ino, None);
    }

    /// Whether thread `tid`'s lookup that found `ino` is the revalidation
    /// of a walk it was told to redo (consuming the mark if so).
    pub fn take(&self, tid: u32, ino: u64) -> bool {
        self.take_if(tid, ino, |m| m.failed.is_none()).is_some()
    }

    /// Breaking `ino`'s link for thread `tid` failed with `error`, which
    /// its retried call is to get.
    pub fn fail(&self, tid: u32, ino: u64, error: Error) {
        self.insert(tid, ino, Some(error));
    }

    /// The error a failed break left for thread `tid`'s retried call on
    /// `ino` (consumed).
    pub fn failure(&self, tid: u32, ino: u64) -> Option<Error> {
        self.take_if(tid, ino, |m| m.failed.is_some())?.failed
    }
}

/// Which request would change a unified file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeBy {
    /// An open for writing or truncating.
    Open,
    /// A truncate (`SETATTR` of the size only).
    Truncate,
    /// chmod, chown, utimes (`SETATTR`).
    Attr,
    /// setxattr, removexattr.
    Xattr,
}

impl ChangeBy {
    /// The errno of a change that cannot break the link: what the original
    /// answered for an immutable file.
    pub fn refusal(self) -> Errno {
        match self {
            ChangeBy::Open | ChangeBy::Truncate => Errno::ACCESS,
            ChangeBy::Attr | ChangeBy::Xattr => Errno::PERM,
        }
    }
}

/// `AT_EMPTY_PATH`: the call works on a descriptor, not a name.
const AT_EMPTY_PATH: u64 = 0x1000;
/// Generic syscall numbers (the same on every architecture) that libc
/// does not name yet.
const SYS_SETXATTRAT: i64 = 463;
const SYS_REMOVEXATTRAT: i64 = 466;

/// Whether the call thread `tid` is blocked in will redo its path walk
/// with `LOOKUP_REVAL` after `ESTALE`, so that the mark is consumed by
/// that call's own revalidating `LOOKUP` of the name.
pub fn kernel_retries(tid: u32, by: ChangeBy) -> bool {
    let text = std::fs::read_to_string(format!("/proc/{tid}/syscall")).unwrap_or_default();
    let mut fields = text.split_whitespace();
    let nr = fields
        .next()
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1);
    let args: Vec<u64> = fields
        .take(6)
        .filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .collect();
    retried(by, nr, &args)
}

/// [`kernel_retries`] for syscall `nr` with arguments `args`.
fn retried(by: ChangeBy, nr: i64, args: &[u64]) -> bool {
    let arg = |i: usize| args.get(i).copied();
    // A call that names a path and does not ask to work on a descriptor.
    let path_unless_empty = |path: usize, flags: usize| {
        arg(path).is_some_and(|p| p != 0) && arg(flags).is_some_and(|f| f & AT_EMPTY_PATH == 0)
    };
    match by {
        // do_filp_open retries every path-based open itself (whichever
        // syscall or io_uring request it came from); only a handle names
        // no path.
        ChangeBy::Open => nr != libc::SYS_open_by_handle_at,
        // truncate(2), or an open with O_TRUNC (the kernel truncates after
        // FUSE_OPEN, inside do_filp_open, which retries).
        ChangeBy::Truncate => {
            nr == libc::SYS_truncate
                || nr == libc::SYS_openat
                || nr == libc::SYS_openat2
                || is_legacy(nr, Legacy::Open)
        }
        ChangeBy::Attr => match nr {
            libc::SYS_fchmodat => true,
            libc::SYS_fchmodat2 => path_unless_empty(1, 3),
            libc::SYS_fchownat => path_unless_empty(1, 4),
            libc::SYS_utimensat => path_unless_empty(1, 3),
            _ => is_legacy(nr, Legacy::Attr),
        },
        ChangeBy::Xattr => match nr {
            libc::SYS_setxattr | libc::SYS_lsetxattr => true,
            libc::SYS_removexattr | libc::SYS_lremovexattr => true,
            SYS_SETXATTRAT | SYS_REMOVEXATTRAT => path_unless_empty(1, 2),
            _ => false,
        },
    }
}

/// Path-based syscalls only some architectures have.
#[derive(Clone, Copy)]
enum Legacy {
    Open,
    Attr,
}

#[cfg(target_arch = "x86_64")]
fn is_legacy(nr: i64, which: Legacy) -> bool {
    match which {
        Legacy::Open => nr == libc::SYS_open || nr == libc::SYS_creat,
        Legacy::Attr => [
            libc::SYS_chmod,
            libc::SYS_chown,
            libc::SYS_lchown,
            libc::SYS_utime,
            libc::SYS_utimes,
            libc::SYS_futimesat,
        ]
        .contains(&nr),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn is_legacy(nr: i64, which: Legacy) -> bool {
    let _ = (nr, which);
    false
}

/// A private copy of a file, complete and synced, not yet named.
#[derive(Debug)]
pub struct Copy {
    /// The copy, open for writing.
    pub file: OwnedFd,
    /// Its attributes after copying.
    pub stat: Stat,
    /// Whether it already has a (temporary) name: `O_TMPFILE` was not
    /// available.
    named: Option<OsString>,
}

/// Distinguishes the temporary names of concurrent copies.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A temporary name in the copy's directory.
fn temp_name(ino: u64) -> OsString {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!(".vxfs-cow.{ino:x}.{n:x}"))
}

/// Copies the open file `src` (with attributes `st`) into a new file in
/// directory `dir`: data with holes, owner, mode, times and every xattr but
/// vxfs's own; `tag` (an xattr value, if any) is stored as the copy's tag.
/// The copy is synced before it is returned.
pub fn copy(
    dir: BorrowedFd<'_>,
    src: BorrowedFd<'_>,
    st: &Stat,
    proc_path: impl Fn(BorrowedFd<'_>) -> std::ffi::CString,
    tag: Option<(&str, &[u8])>,
) -> Result<Copy, Errno> {
    let mode = Mode::from_raw_mode(0o600);
    let (file, named) = match rustix::fs::openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        mode,
    ) {
        Ok(fd) => (fd, None),
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
            let (fd, name) = create_named(dir, st.st_ino, mode)?;
            (fd, Some(name))
        }
        Err(e) => return Err(e),
    };
    let copy = Copy {
        file,
        stat: *st,
        named,
    };
    match fill(&copy.file, src, st, &proc_path, tag) {
        Ok(stat) => Ok(Copy { stat, ..copy }),
        Err(e) => {
            copy.discard(dir);
            Err(e)
        }
    }
}

/// Creates a uniquely named temporary file (no `O_TMPFILE`).
fn create_named(dir: BorrowedFd<'_>, ino: u64, mode: Mode) -> Result<(OwnedFd, OsString), Errno> {
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for _ in 0..8 {
        let name = temp_name(ino);
        match rustix::fs::openat(dir, &name, flags, mode) {
            Ok(fd) => return Ok((fd, name)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::LOOP)
}

/// Writes data, xattrs, owner, mode and times into `dst`, then syncs it.
fn fill(
    dst: &OwnedFd,
    src: BorrowedFd<'_>,
    st: &Stat,
    proc_path: &impl Fn(BorrowedFd<'_>) -> std::ffi::CString,
    tag: Option<(&str, &[u8])>,
) -> Result<Stat, Errno> {
    copy_data(src, dst.as_fd(), st.st_size as u64)?;
    let (from, to) = (proc_path(src), proc_path(dst.as_fd()));
    rustix::fs::fchown(
        dst,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )?;
    // After the chown, which clears set-user/group-ID and removes
    // security.capability.
    rustix::fs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    set_xattrs(&to, &kept_xattrs(&from)?)?;
    if let Some((name, value)) = tag {
        rustix::fs::setxattr(to.as_c_str(), name, value, XattrFlags::empty())?;
    }
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rustix::fs::futimens(dst, &times)?;
    rustix::fs::fsync(dst)?;
    rustix::fs::fstat(dst)
}

/// Copies `size` bytes, skipping holes (so a sparse file stays sparse).
fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> Result<(), Errno> {
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(Errno::NXIO) => break,
            Err(e) => return Err(e),
        };
        let hole = rustix::fs::seek(src, SeekFrom::Hole(data))?.min(size);
        let (mut from, mut to) = (data, data);
        while from < hole {
            let len = (hole - from).min(1 << 30) as usize;
            let n = rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), len)?;
            if n == 0 {
                // The source shrank under us: the copy would be partial.
                return Err(Errno::NOSPC);
            }
        }
        pos = hole;
    }
    rustix::fs::ftruncate(dst, size)
}

/// Every xattr of the inode at `path` but vxfs's own (ACLs and
/// capabilities included), sorted by name: what a copy of it must carry.
pub fn kept_xattrs(path: &std::ffi::CStr) -> Result<Vec<(OsString, Vec<u8>)>, Errno> {
    let size = match rustix::fs::listxattr_query(path) {
        Ok(0) | Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Ok(n) => n,
        Err(e) => return Err(e),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::listxattr(path, &mut names[..])?;
    let mut kept = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if is_reserved_xattr(name) {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let len = match rustix::fs::getxattr_query(path, name) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e),
        };
        let mut value = vec![0u8; len];
        let len = rustix::fs::getxattr(path, name, &mut value[..])?;
        value.truncate(len);
        kept.push((name.to_os_string(), value));
    }
    kept.sort();
    Ok(kept)
}

/// Sets each of `xattrs` on the inode at `path`. After any chown of it:
/// a chown removes `security.capability`.
pub fn set_xattrs(path: &std::ffi::CStr, xattrs: &[(OsString, Vec<u8>)]) -> Result<(), Errno> {
    for (name, value) in xattrs {
        rustix::fs::setxattr(path, name, value, XattrFlags::empty())?;
    }
    Ok(())
}

impl Copy {
    /// Gives the copy a temporary name in `dir` (returned).
    pub fn link(&mut self, dir: BorrowedFd<'_>, ino: u64) -> Result<OsString, Errno> {
        if let Some(name) = &self.named {
            return Ok(name.clone());
        }
        for _ in 0..8 {
            let name = temp_name(ino);
            match rustix::fs::linkat(&self.file, "", dir, &name, AtFlags::EMPTY_PATH) {
                Ok(()) => {
                    self.named = Some(name.clone());
                    return Ok(name);
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Errno::LOOP)
    }

    /// Throws the copy away (removing its temporary name, if it has one).
    pub fn discard(self, dir: BorrowedFd<'_>) {
        if let Some(name) = &self.named {
            if let Err(e) = rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                log::warn!("cannot remove copy {name:?}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_path_based_calls_are_retried() {
        let path = 0x7fff_0000u64;
        let table: &[(ChangeBy, i64, &[u64], bool)] = &[
            (ChangeBy::Open, libc::SYS_openat, &[0, path], true),
            (ChangeBy::Open, 426, &[], true), // io_uring: do_filp_open retries
            (
                ChangeBy::Open,
                libc::SYS_open_by_handle_at,
                &[3, path],
                false,
            ),
            (ChangeBy::Truncate, libc::SYS_truncate, &[path, 0], true),
            (ChangeBy::Truncate, libc::SYS_ftruncate, &[3, 0], false),
            (
                ChangeBy::Truncate,
                libc::SYS_openat,
                &[0, path, 0o1000],
                true,
            ),
            (ChangeBy::Truncate, 426, &[], false), // io_uring ftruncate
            (ChangeBy::Attr, libc::SYS_fchmodat, &[0, path, 0o644], true),
            (ChangeBy::Attr, libc::SYS_fchmod, &[3, 0o644], false),
            (
                ChangeBy::Attr,
                libc::SYS_fchmodat2,
                &[0, path, 0o644, 0],
                true,
            ),
            (
                ChangeBy::Attr,
                libc::SYS_fchmodat2,
                &[3, path, 0o644, AT_EMPTY_PATH],
                false,
            ),
            (
                ChangeBy::Attr,
                libc::SYS_fchownat,
                &[0, path, 1, 1, 0x100],
                true,
            ),
            (
                ChangeBy::Attr,
                libc::SYS_fchownat,
                &[3, path, 1, 1, AT_EMPTY_PATH],
                false,
            ),
            (ChangeBy::Attr, libc::SYS_fchown, &[3, 1, 1], false),
            (
                ChangeBy::Attr,
                libc::SYS_utimensat,
                &[0, path, 0, 0x100],
                true,
            ),
            (ChangeBy::Attr, libc::SYS_utimensat, &[3, 0, 0, 0], false), // futimens
            (ChangeBy::Xattr, libc::SYS_lsetxattr, &[path], true),
            (ChangeBy::Xattr, libc::SYS_removexattr, &[path], true),
            (ChangeBy::Xattr, libc::SYS_fsetxattr, &[3], false),
            (ChangeBy::Xattr, libc::SYS_fremovexattr, &[3], false),
            (ChangeBy::Xattr, SYS_SETXATTRAT, &[0, path, 0x100], true),
            (
                ChangeBy::Xattr,
                SYS_SETXATTRAT,
                &[3, path, AT_EMPTY_PATH],
                false,
            ),
            (ChangeBy::Xattr, 426, &[], false), // io_uring: not known to retry
            (ChangeBy::Xattr, -1, &[], false),  // not in a syscall, or unreadable
        ];
        for &(by, nr, args, expect) in table {
            assert_eq!(retried(by, nr, args), expect, "{by:?} nr {nr} {args:x?}");
        }
        assert!(!kernel_retries(0, ChangeBy::Xattr));
        assert_eq!(ChangeBy::Open.refusal(), Errno::ACCESS);
        assert_eq!(ChangeBy::Xattr.refusal(), Errno::PERM);
    }

    #[test]
    fn a_mark_is_taken_once_by_its_thread_and_inode() {
        let pending = Pending::default();
        assert!(!pending.take(7, 42), "nothing marked");
        pending.mark(7, 42);
        assert!(!pending.take(8, 42), "another thread");
        assert!(!pending.take(7, 41), "the walk's other components");
        assert!(pending.take(7, 42));
        assert!(!pending.take(7, 42), "consumed");
        pending.mark(0, 42);
        assert!(!pending.take(0, 42), "unknown threads are not tracked");
        pending.fail(7, 42, Error::Os(Errno::NOSPC));
        assert!(!pending.take(7, 42), "a failed break is not retried");
        assert_eq!(pending.failure(7, 42), Some(Error::Os(Errno::NOSPC)));
        assert_eq!(pending.failure(7, 42), None, "consumed");
    }
}

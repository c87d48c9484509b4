//! The passthrough filesystem: every FUSE operation as an `op_*` method that
//! returns [`Result`], free of fuser reply types so it can be called (and
//! tested) directly.
//!
//! # Safety rules
//!
//! * Names from the kernel are validated ([`check_name`]) before any `*at`
//!   call and are always resolved relative to the parent's `O_PATH`
//!   descriptor, never as host paths.
//! * Nothing follows a symlink on the host: lookups use `O_NOFOLLOW`, and
//!   operations on an inode go through its descriptor (`AT_EMPTY_PATH`) or
//!   `/proc/self/fd/N` re-opens of it, which name the inode itself.
//! * Only regular files and directories are ever opened for I/O.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, RawDir, RenameFlags, SeekFrom, Stat, StatVfs, Timespec,
    Timestamps, XattrFlags,
};
use rustix::io::Errno;

use crate::accounting::{Accounting, Admission, Growth};
use crate::cow::{self, ChangeBy, Pending};
use crate::creds::{Caller, CallerCreds};
use crate::dlimit::{Account, StatfsView};
use crate::error::{Error, Result};
use crate::handle::{Handle, HandleTable};
use crate::iattr::{self, Change, IATTR_XATTR, IAttr};
use crate::inode::{IATTR_UNKNOWN, Inode, InodeStore, ROOT_ID, XID_UNKNOWN};
use crate::options::FsOptions;
use crate::tagging::{XID_XATTR, Xid, is_reserved_xattr};
use crate::watch::Kernels;

/// A looked-up inode with fresh attributes; the kernel now holds one more
/// reference to it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The inode.
    pub inode: Arc<Inode>,
    /// Its attributes.
    pub stat: Stat,
    /// The kernel must not cache the name (entry lifetime 0): a name in a
    /// barrier directory, or one whose inode belongs to another guest than
    /// its directory, which every walk must ask about again.
    pub volatile: bool,
    /// The kernel must not cache the attributes (attribute lifetime 0): a
    /// barrier directory, whose every permission check must reach the
    /// daemon (a guest walking through it by `..` included).
    pub volatile_attr: bool,
}

/// Attributes of an inode and whether the kernel may cache them
/// ([`Entry::volatile_attr`]).
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// The attributes.
    pub stat: Stat,
    /// The kernel must not cache them.
    pub volatile: bool,
    /// The inode is open for writing: its size and times change without
    /// a notification until the last writer closes it.
    pub writing: bool,
}

/// A new value for a timestamp in [`SetAttr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    /// The current time.
    Now,
    /// This time.
    At(Timespec),
}

/// The attribute changes of one `setattr` request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (and setuid/setgid/sticky).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSet>,
    /// New modification time.
    pub mtime: Option<TimeSet>,
}

/// An inode about to lose a name ([`Vxfs::victim`]).
#[derive(Debug)]
struct Victim {
    /// The inode, when the kernel knows it (its charge is then exact).
    inode: Option<Arc<Inode>>,
    /// Its tag.
    tag: Xid,
    /// Its attributes before the removal.
    stat: Stat,
}

/// One directory entry for readdir.
#[derive(Debug)]
pub struct DirEntry<'a> {
    /// The entry's name.
    pub name: &'a OsStr,
    /// Its inode number as the caller should see it.
    pub ino: u64,
    /// Its file type.
    pub kind: FileType,
    /// The cookie to resume reading after this entry.
    pub next_offset: u64,
    /// For readdirplus: the looked-up entry (a kernel reference was taken).
    pub entry: Option<Entry>,
}

/// The answer to a getxattr/listxattr request.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The caller asked for the size only.
    Size(u32),
    /// The value or name list.
    Data(Vec<u8>),
}

/// The passthrough filesystem over one SOURCE directory.
#[derive(Debug)]
pub struct Vxfs {
    /// Inodes the kernel knows, by node id and backing identity.
    inodes: InodeStore,
    /// Open files and directories.
    handles: HandleTable,
    /// `/proc/self/fd`, to re-open `O_PATH` descriptors with real access.
    proc_self_fd: OwnedFd,
    /// The `st_dev` of SOURCE.
    root_dev: u64,
    /// Mount-wide behaviour.
    opts: FsOptions,
    /// Per-context disk accounting, when tagging and dlimits are on.
    accounting: Option<Arc<Accounting>>,
    /// Threads told to redo their path walk to break a unified file's link.
    pending: Pending,
    /// Every connection's kernel, told what changed behind its back.
    kernels: Kernels,
}

/// The process's descriptor limit.
fn fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20)
}

/// Three quarters of the descriptor limit: the rest is for open files
/// (one descriptor per open handle) and the daemon itself.
fn default_fd_budget() -> usize {
    usize::try_from(fd_limit() / 4 * 3).unwrap_or(usize::MAX)
}

/// Descriptors the daemon keeps for itself (the index, sockets, the FUSE
/// device clones, /proc, a recount's directories).
const OWN_FDS: u64 = 256;

/// Open handles at most: what `inode_fds` inodes and the daemon leave of
/// the descriptor limit (at least the guests' minimum shares).
fn handle_budget(inode_fds: usize) -> u64 {
    let inode_fds = u64::try_from(inode_fds).unwrap_or(u64::MAX);
    fd_limit()
        .saturating_sub(inode_fds)
        .saturating_sub(OWN_FDS)
        .max(4 * crate::handle::MIN_SHARE)
}

/// How long setting a flag that freezes a file waits for its writers'
/// releases: the kernel sends a RELEASE after `close(2)` has returned, so
/// a writer closed just before may still be counted.
const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether `inode` has no writer open, once the releases in flight are in
/// (waits up to [`RELEASE_GRACE`]; new writable opens wait on the inode's
/// `write_lock`, which the caller holds).
pub(crate) fn writers_gone(inode: &Inode) -> bool {
    let deadline = std::time::Instant::now() + RELEASE_GRACE;
    while inode.open_for_writing() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    true
}

/// Whether writing `len` bytes at `offset` can allocate blocks: past the
/// end of the file, or over a hole.
fn may_allocate(file: &File, offset: u64, len: u64) -> Result<bool> {
    let end = offset.saturating_add(len);
    if end > rustix::fs::fstat(file)?.st_size as u64 {
        return Ok(true);
    }
    Ok(rustix::fs::seek(file, SeekFrom::Hole(offset))? < end)
}

/// The whole xattr name list of `path`, however long.
fn read_xattr_list(path: &CStr) -> Result<Vec<u8>> {
    loop {
        let len = rustix::fs::listxattr_query(path)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::listxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // The list grew between the two calls.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What one allocating request may allocate beyond its data (a new
/// directory's first block, an extent or indirect block of a write): the
/// bound by which concurrent writers may overshoot a space limit.
const BLOCK: u64 = 4096;

/// Alignment that satisfies `O_DIRECT` on any backing device.
const DIRECT_ALIGN: usize = 4096;

/// A zeroed buffer aligned for `O_DIRECT` writes, for handles whose
/// backing descriptor has it, when the request's data is not aligned (it is
/// not in fuser's /dev/fuse buffer).
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + DIRECT_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Clears the set-user-ID bit of the open file `file`, and its
/// set-group-ID bit when the group may execute it or `caller` is not in
/// its group (the kernel's `should_remove_suid`, for a changer without
/// `CAP_FSETID`).
fn drop_privs(file: BorrowedFd<'_>, caller: &Caller) -> Result<()> {
    drop_privs_of(file, &rustix::fs::fstat(file)?, caller)
}

/// [`drop_privs`] of `file` whose state is `st`.
fn drop_privs_of(file: BorrowedFd<'_>, st: &rustix::fs::Stat, caller: &Caller) -> Result<()> {
    let mode = st.st_mode;
    let mut kill = libc::S_ISUID & mode;
    // The kernel's setattr_should_drop_sgid: with group execute, or when
    // the changer is not in the file's group.
    if mode & libc::S_ISGID != 0
        && (mode & libc::S_IXGRP != 0 || !crate::creds::in_group(caller, st.st_gid))
    {
        kill |= libc::S_ISGID;
    }
    if kill != 0 {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode & 0o7777 & !kill))?;
    }
    Ok(())
}

/// What a write, truncate or fallocate by `caller` clears of the file
/// (`FUSE_HANDLE_KILLPRIV_V2` makes this the daemon's job): its
/// set-user-ID and set-group-ID bits as [`drop_privs`] says, unless the
/// caller has `CAP_FSETID` (read from /proc only for a file that has one
/// of them). The backing kernel removes `security.capability` itself on
/// the daemon's own change.
fn kill_privs(file: BorrowedFd<'_>, caller: &Caller) -> Result<()> {
    let st = rustix::fs::fstat(file)?;
    if st.st_mode & (libc::S_ISUID | libc::S_ISGID) == 0
        || crate::creds::has_host_cap(caller.pid, crate::creds::CAP_FSETID)
    {
        return Ok(());
    }
    drop_privs_of(file, &st, caller)
}

/// Refuses names that could escape the parent directory.
fn check_name(name: &OsStr) -> Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(Error::BadName);
    }
    Ok(name)
}

fn path_flags() -> OFlags {
    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Sets xattr `name` at `path` to `value`, or removes it (absent is fine).
fn store_xattr(path: &CStr, name: &str, value: Option<Vec<u8>>) -> Result<()> {
    match value {
        Some(v) => Ok(rustix::fs::setxattr(path, name, &v, XattrFlags::empty())?),
        None => match rustix::fs::removexattr(path, name) {
            Ok(()) | Err(Errno::NODATA) => Ok(()),
            Err(e) => Err(e.into()),
        },
    }
}

/// Whether an open may change the file: for writing, or truncating.
fn opens_for_change(flags: OFlags) -> bool {
    flags.intersects(OFlags::WRONLY | OFlags::RDWR | OFlags::TRUNC)
}

pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

fn to_timestamp(t: Option<TimeSet>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeSet::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeSet::At(ts)) => ts,
    }
}

/// Runs `op` with the caller's identity, retrying once with the caller's
/// supplementary groups when the first attempt is refused (or up front when
/// `need_groups`): reading them costs a /proc read, which most requests skip.
fn as_caller<T>(caller: &Caller, need_groups: bool, op: impl Fn() -> Result<T>) -> Result<T> {
    let mut creds = CallerCreds::enter(caller)?;
    if need_groups && !creds.has_groups() {
        creds.load_groups()?;
    }
    match op() {
        Err(e) if (e.is(Errno::ACCESS) || e.is(Errno::PERM)) && !creds.has_groups() => {
            creds.load_groups()?;
            op()
        }
        other => other,
    }
}

impl Vxfs {
    /// Opens SOURCE and prepares an empty inode table.
    pub fn new(source: &Path, opts: FsOptions) -> std::io::Result<Vxfs> {
        let root = rustix::fs::open(
            source,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&root)?;
        let proc_self_fd = rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let accounting = if opts.tagging.mode.is_on() && opts.dlimits {
            let path = opts
                .index
                .clone()
                .unwrap_or_else(|| crate::index::default_path(source));
            // Guests must never reach their own limits through the mount.
            let parent = path.parent().and_then(|p| std::fs::canonicalize(p).ok());
            if parent.is_some_and(|p| p.starts_with(source)) {
                return Err(std::io::Error::other(format!(
                    "the index {} must not be inside SOURCE {}: set -o index=PATH",
                    path.display(),
                    source.display()
                )));
            }
            let accounting = Accounting::open(&path, root.as_fd(), opts.threads.max(2))
                .map_err(std::io::Error::other)?;
            let accounting = Arc::new(accounting);
            accounting.spawn_saver()?;
            Some(accounting)
        } else {
            None
        };
        let inode_fds = opts.inode_fds.unwrap_or_else(default_fd_budget);
        Ok(Vxfs {
            inodes: InodeStore::new(root, &st, inode_fds),
            handles: HandleTable::new(handle_budget(inode_fds)),
            proc_self_fd,
            root_dev: st.st_dev,
            opts,
            accounting,
            pending: Pending::default(),
            kernels: Kernels::default(),
        })
    }

    /// The mount's accounting, when on.
    pub fn accounting(&self) -> Option<&Arc<Accounting>> {
        self.accounting.as_ref()
    }

    /// The disk account charged for `inode` (its tag's), when accounting.
    fn account_of(&self, inode: &Inode) -> Result<Option<Arc<Account>>> {
        match &self.accounting {
            Some(a) => Ok(Some(a.account(self.tag(inode)?))),
            None => Ok(None),
        }
    }

    /// Whether every write to `inode`, by any path (`write`, a shared
    /// mapping, splice), must reach the daemon, to be charged and held to
    /// its context's limit as it is at that moment: always when accounting,
    /// unless nobody can write the inode (immutable, or a read-only mount).
    /// Kernel passthrough would let a writer, or an mmap of any descriptor
    /// sharing the inode's passthrough file, bypass the daemon for as long
    /// as it stays open, and a limit may be set while it is.
    pub fn writes_must_reach_daemon(&self, inode: &Inode, read_only: bool) -> Result<bool> {
        if self.accounting.is_none() || read_only || inode.kind != FileType::RegularFile {
            return Ok(false);
        }
        Ok(!self.iattr(inode)?.has(IAttr::IMMUTABLE))
    }

    /// Charges or credits the change of `inode`'s allocation since it was
    /// last charged (measured under the inode's charge lock, so that
    /// measurements, its removal and its last close are ordered). An inode
    /// that was credited in full is left alone.
    fn settle(&self, inode: &Inode, fd: BorrowedFd<'_>) -> Result<()> {
        let Some(account) = self.account_of(inode)? else {
            return Ok(());
        };
        let mut charge = inode.charge.lock().unwrap_or_else(|e| e.into_inner());
        let st = stat_fd(fd)?;
        let delta = charge.measure(st.st_blocks as u64 * 512);
        drop(charge);
        if delta >= 0 {
            account.charge_space(delta as u64);
        } else {
            account.free_space(delta.unsigned_abs() as u64);
        }
        Ok(())
    }

    /// Measures `inode`'s allocation after an operation that may have
    /// grown it (a directory by a new name, an inode by an xattr), logging
    /// rather than failing: the operation itself succeeded.
    fn settle_after(&self, inode: &Inode, fd: BorrowedFd<'_>) {
        if self.accounting.is_some() {
            if let Err(e) = self.settle(inode, fd) {
                log::warn!("inode {}: cannot measure allocation: {e}", inode.id);
            }
        }
    }

    /// Room for one block that an operation on `inode` may allocate (a new
    /// name in a directory, an xattr, ...), reserved from its tag's limit
    /// before the operation: `ENOSPC` when not even a block is left. Held
    /// until the allocation has been measured ([`Vxfs::settle_after`]).
    fn growth(&self, inode: &Inode) -> Result<Growth> {
        match self.account_of(inode)? {
            Some(account) => Ok(Growth::take(account, BLOCK)?),
            None => Ok(Growth::NONE),
        }
    }

    /// Runs a data operation on `handle` that may allocate space for bytes
    /// `offset..offset + len`, holding the inode's tag to its space limit:
    /// the worst case is reserved before and the measured allocation settled
    /// after, and only then is the reservation given back (so concurrent
    /// writers never see the same room twice). `op` receives how many of
    /// the `len` bytes it may touch (fewer near the limit: a short write);
    /// with `all_or_nothing` (fallocate) a shortfall is `ENOSPC` instead.
    fn allocating<T>(
        &self,
        handle: &Handle,
        offset: u64,
        len: u64,
        all_or_nothing: bool,
        op: impl FnOnce(u64) -> Result<T>,
    ) -> Result<T> {
        let Some(account) = self.account_of(&handle.inode)? else {
            return op(len);
        };
        let limited = account.limit().space.is_some();
        // Measuring before and after must not interleave with another
        // write to the same inode.
        let _serial = limited.then(|| handle.inode.write_lock.lock());
        let mut reserved = 0;
        let mut allowed = len;
        if limited && len > 0 && may_allocate(&handle.file, offset, len)? {
            let start = offset / BLOCK * BLOCK;
            let need = (offset + len).div_ceil(BLOCK) * BLOCK - start + BLOCK;
            reserved = account.reserve_space(need);
            if reserved < need {
                let fits = (start + reserved.saturating_sub(BLOCK))
                    .saturating_sub(offset)
                    .min(len);
                if fits == 0 || all_or_nothing {
                    account.free_space(reserved);
                    return Err(Errno::NOSPC.into());
                }
                allowed = fits;
            }
        }
        let result = op(allowed);
        self.settle_after(&handle.inode, handle.file.as_fd());
        account.free_space(reserved);
        result
    }

    /// Admits a new inode created by `caller` against its context's limits,
    /// reserving `reserve` bytes for what creating it allocates.
    fn admit_new(&self, caller: &Caller, reserve: u64) -> Result<Admission> {
        if caller.xid == Xid::UNMAPPED {
            // Its inodes could belong to no context.
            return Err(Errno::ACCESS.into());
        }
        match &self.accounting {
            Some(a) => Ok(Admission::take(a.account(caller.xid), reserve)?),
            None => Ok(Admission::NONE),
        }
    }

    /// The inode that `name` in `dir` names now (`None`: no such name),
    /// about to lose that name; the caller must be allowed to use it: no
    /// guest removes, renames or replaces another guest's inode (`EACCES`).
    fn victim(&self, caller: &Caller, dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<Victim>> {
        if !self.opts.tagging.mode.is_on() {
            return Ok(None);
        }
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let inode = self
            .inodes
            .id_of(crate::inode::BackingKey::of(&st))
            .and_then(|id| self.inodes.get(id).ok());
        let tag = match &inode {
            Some(inode) => self.tag(inode)?,
            None => crate::recount::tag_at(dir, name)?,
        };
        self.opts.tagging.check_access(caller.xid, tag)?;
        Ok(Some(Victim {
            inode,
            tag,
            stat: st,
        }))
    }

    /// `victim` lost a name: when that was its last link it no longer
    /// counts, once its last handle is closed too (an inode the kernel
    /// does not know has none, and its link count is the one seen before).
    fn removed(&self, victim: Option<Victim>) {
        let (Some(accounting), Some(victim)) = (&self.accounting, victim) else {
            return;
        };
        let Some(inode) = victim.inode else {
            let is_dir = FileType::from_raw_mode(victim.stat.st_mode) == FileType::Directory;
            if is_dir || victim.stat.st_nlink <= 1 {
                accounting.credit(victim.tag, victim.stat.st_blocks as u64 * 512);
            }
            return;
        };
        self.lost_link(&inode);
    }

    /// `inode` lost a name: credited when none is left and no handle is
    /// open (else at its last close).
    fn lost_link(&self, inode: &Inode) {
        let Some(accounting) = &self.accounting else {
            return;
        };
        let mut charge = inode.charge.lock().unwrap_or_else(|e| e.into_inner());
        // The link count after the removal decides, whichever removal of
        // two links came last; a handle-only inode that is gone is stale.
        let linked = match inode.fd().and_then(|fd| stat_fd(fd.as_fd())) {
            Ok(st) => st.st_nlink > 0,
            Err(_) => false,
        };
        let credit = if linked { None } else { charge.unlink() };
        drop(charge);
        if let Some(bytes) = credit {
            match self.tag(inode) {
                Ok(tag) => accounting.credit(tag, bytes),
                Err(e) => log::warn!("inode {}: cannot credit its removal: {e}", inode.id),
            }
        }
    }

    /// Every connection's kernel.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Connection `conn` ended.
    pub fn connection_ended(&self, conn: u64) {
        self.kernels.ended(conn);
    }

    /// The backing inode of `id` changed its attributes behind the
    /// daemon's back (seen by the watch): its tag and flags are read again
    /// at their next use.
    pub fn backing_attrs_changed(&self, id: u64) {
        if let Ok(inode) = self.inodes.get(id) {
            inode.iattr.store(IATTR_UNKNOWN, Ordering::Relaxed);
            inode.xid.store(XID_UNKNOWN, Ordering::Relaxed);
            inode.tag_ctime.store(0, Ordering::Relaxed);
        }
    }

    /// Mount-wide options.
    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    /// The tag of the known inode `id` (`None`: tagging off, or unknown).
    pub fn tag_of(&self, id: u64) -> Option<Xid> {
        if !self.opts.tagging.mode.is_on() {
            return None;
        }
        let inode = self.inodes.get(id).ok()?;
        self.tag(&inode).ok()
    }

    /// The inode table.
    pub fn inodes(&self) -> &InodeStore {
        &self.inodes
    }

    /// The open handle `fh`.
    pub fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles.get(fh)
    }

    /// The `/proc/self/fd/N` name of a descriptor, relative to
    /// [`Vxfs::proc_self_fd`].
    fn proc_name(fd: BorrowedFd<'_>) -> CString {
        CString::new(fd.as_raw_fd().to_string()).expect("digits have no NUL")
    }

    /// The absolute `/proc/self/fd/N` path of a descriptor.
    pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> CString {
        CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
    }

    /// Re-opens an inode with real access `flags` through /proc/self/fd.
    pub(crate) fn reopen(&self, inode: &Inode, flags: OFlags) -> Result<OwnedFd> {
        if !matches!(inode.kind, FileType::RegularFile | FileType::Directory) {
            // Devices, fifos and sockets are opened by the kernel itself;
            // the daemon must never open them on the host.
            return Err(Errno::NXIO.into());
        }
        let flags = (flags - (OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::NOFOLLOW))
            | OFlags::CLOEXEC;
        let fd = inode.fd()?;
        Ok(rustix::fs::openat(
            &self.proc_self_fd,
            Self::proc_name(fd.as_fd()).as_c_str(),
            flags,
            Mode::empty(),
        )?)
    }

    /// Looks `name` up in `parent` and takes a kernel reference to it.
    fn do_lookup(&self, parent: &Inode, name: &OsStr) -> Result<Entry> {
        self.lookup_at(parent, name, false)
    }

    /// Looks `name` up in `parent`. With `probe`, the name is first only
    /// stat'ed: when it names an inode the table already holds, that inode
    /// gains a reference without being opened (one syscall instead of
    /// `openat` + `fstat` + `close`). Either way nothing is followed and the
    /// result names the inode the name had at that moment.
    fn lookup_at(&self, parent: &Inode, name: &OsStr, probe: bool) -> Result<Entry> {
        let name = check_name(name)?;
        let dir = parent.fd()?;
        if probe {
            let stat = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if let Some(inode) = self.inodes.acquire(crate::inode::BackingKey::of(&stat)) {
                return Ok(Entry {
                    inode,
                    stat,
                    volatile: false,
                    volatile_attr: false,
                });
            }
        }
        let fd = rustix::fs::openat(&dir, name, path_flags(), Mode::empty())?;
        let stat = stat_fd(fd.as_fd())?;
        let inode = self.inodes.insert(fd, &stat);
        Ok(Entry {
            inode,
            stat,
            volatile: false,
            volatile_attr: false,
        })
    }

    /// The tag of an inode, read from the backing inode once and cached.
    fn tag(&self, inode: &Inode) -> Result<Xid> {
        if !self.opts.tagging.mode.is_on() {
            return Ok(Xid::HOST);
        }
        match inode.xid.load(Ordering::Relaxed) {
            XID_UNKNOWN => self.read_tag(inode, inode.fd()?.as_fd()),
            xid => Ok(Xid(xid)),
        }
    }

    /// Reads an inode's tag from its backing inode and caches it. A tag
    /// that does not parse belongs to nobody: only the host and the
    /// spectator may then use the inode.
    fn read_tag(&self, inode: &Inode, fd: BorrowedFd<'_>) -> Result<Xid> {
        let mut buf = [0u8; 16];
        let xid = match rustix::fs::getxattr(Self::proc_path(fd).as_c_str(), XID_XATTR, &mut buf) {
            Ok(n) => Xid::from_xattr(&buf[..n]),
            Err(Errno::NODATA | Errno::OPNOTSUPP) => Some(Xid::HOST),
            Err(Errno::RANGE) => None,
            Err(e) => return Err(e.into()),
        };
        let xid = xid.unwrap_or_else(|| {
            log::warn!(
                "inode {}: corrupt {XID_XATTR}, no guest may use it",
                inode.id
            );
            Xid(XID_UNKNOWN - 1)
        });
        inode.xid.store(xid.0, Ordering::Relaxed);
        Ok(xid)
    }

    /// `EACCES` unless the caller's context may access `inode`: its tag
    /// must allow it, and no guest may use a barrier directory (§3.3).
    fn check_access(&self, caller: &Caller, inode: &Inode) -> Result<()> {
        if !self.opts.tagging.mode.is_on() {
            return Ok(());
        }
        let (tagging, who) = (&self.opts.tagging, caller.xid);
        tagging.check_access(who, self.tag(inode)?)?;
        if self.barred(who, inode)? {
            return Err(Errno::ACCESS.into());
        }
        Ok(())
    }

    /// Whether `inode` is a barrier directory context `who` may not use.
    fn barred(&self, who: Xid, inode: &Inode) -> Result<bool> {
        Ok(!who.is_privileged() && self.is_barrier(inode)?)
    }

    /// An inode's flags, read from the backing inode once and cached.
    fn iattr(&self, inode: &Inode) -> Result<IAttr> {
        match inode.iattr.load(Ordering::Relaxed) {
            IATTR_UNKNOWN => self.fresh_iattr(inode, inode.fd()?.as_fd()),
            bits => Ok(IAttr(bits)),
        }
    }

    /// Reads the flags stored at `path`: an inode's `/proc/self/fd/N`
    /// path, or, with `at_name`, a directory's followed by a name (whose
    /// final symlink is not followed). A value that does not parse freezes
    /// the file (immutable) until the host sets the flags again; `what`
    /// names the file in that warning.
    fn read_iattr(
        &self,
        path: &CStr,
        what: std::fmt::Arguments<'_>,
        at_name: bool,
    ) -> Result<IAttr> {
        let mut buf = [0u8; 16];
        let read = if at_name {
            rustix::fs::lgetxattr(path, IATTR_XATTR, &mut buf)
        } else {
            rustix::fs::getxattr(path, IATTR_XATTR, &mut buf)
        };
        let flags = match read {
            Ok(n) => IAttr::from_xattr(&buf[..n]),
            Err(Errno::NODATA | Errno::OPNOTSUPP) => Some(IAttr::NONE),
            Err(Errno::RANGE) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(flags.unwrap_or_else(|| {
            log::warn!("{what}: corrupt {IATTR_XATTR}, treated as immutable");
            IAttr(IAttr::IMMUTABLE)
        }))
    }

    /// The flags of the inode `name` in `dir` names, read afresh in one
    /// syscall (none if it is gone: the operation itself then fails as
    /// natively).
    fn iattr_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<IAttr> {
        let mut path = Self::proc_path(dir).into_bytes();
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        let path = CString::new(path).map_err(|_| Error::BadName)?;
        match self.read_iattr(&path, format_args!("{name:?}"), true) {
            Err(e) if e.is(Errno::NOENT) => Ok(IAttr::NONE),
            other => other,
        }
    }

    /// `EPERM` if the name `name` in `dir` may not be removed, renamed or
    /// replaced (its inode is link-protected, §3.3).
    fn check_name_change(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        Ok(iattr::name_change(self.iattr_at(dir, name)?)?)
    }

    /// `EACCES` for adding or removing names in an immutable directory.
    fn check_dir_write(&self, dir: &Inode) -> Result<()> {
        if self.iattr(dir)?.frozen() {
            return Err(Errno::ACCESS.into());
        }
        Ok(())
    }

    /// What the kernel of `caller`'s view may cache of `entry`, found in
    /// `parent`: not the name of an entry in a barrier directory, nor, on a
    /// view whose callers may be of different contexts, of a guest's inode
    /// in a directory not its own (every walk to it must ask again, as the
    /// answer depends on who walks); not the attributes of a barrier
    /// directory (every permission check on it must ask again).
    fn mark_volatile(&self, caller: &Caller, parent: &Inode, entry: &mut Entry) -> Result<()> {
        if !self.opts.tagging.mode.is_on() {
            return Ok(());
        }
        let tag = self.tag(&entry.inode)?;
        let by_caller = !caller.one_context && tag != Xid::HOST && tag != self.tag(parent)?;
        entry.volatile = self.iattr(parent)?.barrier() || by_caller;
        entry.volatile_attr = self.is_barrier(&entry.inode)?;
        Ok(())
    }

    /// Whether `inode` is a barrier directory.
    fn is_barrier(&self, inode: &Inode) -> Result<bool> {
        Ok(inode.kind == FileType::Directory && self.iattr(inode)?.barrier())
    }

    /// Applies the flags' rule before a change `by` to `inode`'s content
    /// or attributes: refuses it, lets it go, or breaks a unified file's
    /// link first.
    fn before_change(&self, caller: &Caller, inode: &Inode, by: ChangeBy) -> Result<()> {
        let rule = match by {
            ChangeBy::Open | ChangeBy::Truncate => iattr::write_open,
            ChangeBy::Attr | ChangeBy::Xattr => iattr::attr_change,
        };
        match rule(self.iattr(inode)?) {
            Change::Allowed => Ok(()),
            Change::Refused(e) => Err(e.into()),
            Change::BreakLink if inode.kind != FileType::RegularFile => Err(Errno::PERM.into()),
            Change::BreakLink => self.break_link(caller, inode, by),
        }
    }

    /// Makes the unified file `inode` private to the caller (§4). The
    /// caller is told to redo its path walk (`ESTALE`); the walk's final
    /// `LOOKUP` then finds the name the caller used, and replaces it with a
    /// private copy, or, for the last link, clears the flags in place
    /// ([`Vxfs::break_at_lookup`]). The retried call then proceeds, or gets
    /// the error that breaking the link met.
    fn break_link(&self, caller: &Caller, inode: &Inode, by: ChangeBy) -> Result<()> {
        if let Some(error) = self.pending.failure(caller.pid, inode.id) {
            return Err(error);
        }
        let fd = inode.fd()?;
        let flags = self.fresh_iattr(inode, fd.as_fd())?;
        if !flags.unified() {
            // Made private meanwhile.
            return Ok(());
        }
        if !cow::kernel_retries(caller.pid, by) {
            // No path to break (a change through a descriptor or a
            // handle): a mark would wait for some later lookup.
            return Err(by.refusal().into());
        }
        self.pending.mark(caller.pid, inode.id);
        Err(Errno::STALE.into())
    }

    /// The revalidating lookup of a thread told to redo its walk for a
    /// change to the unified file `entry`, reached as `name` in `parent`:
    /// make that name private and answer with what it names then. A failure
    /// is kept for the retried call, and the lookup answers the shared file.
    fn break_at_lookup(
        &self,
        caller: &Caller,
        parent: &Inode,
        name: &OsStr,
        entry: Entry,
    ) -> Result<Entry> {
        let inode = &entry.inode;
        let broken = {
            // One break per inode at a time: a second thread finds the
            // flags cleared or its name replaced.
            let _serial = inode.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.make_private(caller, inode, parent, name)
        };
        match broken {
            Ok(false) => Ok(entry),
            Ok(true) => {
                self.inodes.forget(entry.inode.id, 1);
                self.lookup_at(parent, name, true)
            }
            Err(e) => {
                log::debug!("inode {}: cannot break link {name:?}: {e}", inode.id);
                self.pending.fail(caller.pid, inode.id, e);
                Ok(entry)
            }
        }
    }

    /// Makes `name` in `parent`, which names the unified `inode`, private
    /// to the caller; whether the name now names another inode.
    fn make_private(
        &self,
        caller: &Caller,
        inode: &Inode,
        parent: &Inode,
        name: &OsStr,
    ) -> Result<bool> {
        let fd = inode.fd()?;
        let flags = self.fresh_iattr(inode, fd.as_fd())?;
        if !flags.unified() {
            return Ok(false);
        }
        // Another thread may have replaced the name while this one waited.
        let dir = parent.fd()?;
        let now = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if crate::inode::BackingKey::of(&now) != inode.key {
            return Ok(true);
        }
        let st = stat_fd(fd.as_fd())?;
        self.check_may_replace(caller, inode, parent, dir.as_fd(), &st)?;
        if st.st_nlink <= 1 {
            self.privatize(caller, inode, fd.as_fd(), flags)?;
            return Ok(false);
        }
        match self.replace_with_copy(caller, inode, &st, parent, dir.as_fd(), name) {
            // The name changed meanwhile: answer with what it is now.
            Err(e) if e.is(Errno::STALE) => Ok(true),
            other => other.map(|()| true),
        }
    }

    /// Breaking a link replaces (or, for the last link, takes over) the
    /// name the caller used, so the caller must be allowed to do that: use
    /// the file by its tag, and write and search the directory as itself
    /// (mode, ACLs, the sticky bit; not an immutable directory). The kernel
    /// already checked that the caller may write the file.
    fn check_may_replace(
        &self,
        caller: &Caller,
        inode: &Inode,
        parent: &Inode,
        dir: BorrowedFd<'_>,
        st: &Stat,
    ) -> Result<()> {
        self.check_access(caller, inode)?;
        self.check_dir_write(parent)?;
        let name = Self::proc_name(dir);
        as_caller(caller, false, || {
            Ok(rustix::fs::accessat(
                &self.proc_self_fd,
                name.as_c_str(),
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
                AtFlags::EACCESS,
            )?)
        })?;
        let dir_st = stat_fd(dir)?;
        let sticky = dir_st.st_mode & libc::S_ISVTX != 0;
        if sticky && caller.uid != 0 && caller.uid != st.st_uid && caller.uid != dir_st.st_uid {
            return Err(Errno::ACCESS.into());
        }
        Ok(())
    }

    /// The last link of a unified file: clear its flags in place and, when
    /// the caller's context differs from its tag, move it (and its charge)
    /// to the caller's context, which must have room for it.
    fn privatize(
        &self,
        caller: &Caller,
        inode: &Inode,
        fd: BorrowedFd<'_>,
        flags: IAttr,
    ) -> Result<()> {
        let path = Self::proc_path(fd);
        let (old, new) = (self.tag(inode)?, caller.xid);
        if self.opts.tagging.mode.is_on() && old != new {
            let charge = inode.charge.lock().unwrap_or_else(|e| e.into_inner());
            let space = charge.bytes;
            let admission = self.admit_new(caller, space)?;
            let st = stat_fd(fd)?;
            let owned = self.owned_as_shown(caller, inode, &st)?;
            if (owned.st_uid, owned.st_gid) != (st.st_uid, st.st_gid) {
                rustix::fs::chownat(
                    fd,
                    "",
                    Some(rustix::fs::Uid::from_raw(owned.st_uid)),
                    Some(rustix::fs::Gid::from_raw(owned.st_gid)),
                    AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
                )?;
                // chown drops set-id bits; the file keeps its mode.
                rustix::fs::chmodat(
                    &self.proc_self_fd,
                    Self::proc_name(fd).as_c_str(),
                    Mode::from_raw_mode(st.st_mode & 0o7777),
                    AtFlags::empty(),
                )?;
            }
            self.store_tag(path.as_c_str(), new)?;
            inode.xid.store(new.0, Ordering::Relaxed);
            if let Some(accounting) = &self.accounting {
                accounting.credit(old, space);
            }
            admission.commit_space(space);
            drop(charge);
        }
        let rest = IAttr(flags.0 & !(IAttr::IMMUTABLE | IAttr::IUNLINK));
        self.store_iattr(path.as_c_str(), rest)?;
        inode.iattr.store(rest.0, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces `name` in `dir` (which names the shared `inode`, with
    /// attributes `st`) by a private copy tagged with and charged to the
    /// caller's context (`ENOSPC` if its limit cannot hold it).
    fn replace_with_copy(
        &self,
        caller: &Caller,
        inode: &Inode,
        st: &Stat,
        parent: &Inode,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> Result<()> {
        let xid = caller.xid;
        let admission = self.admit_new(caller, st.st_blocks as u64 * 512)?;
        // The temporary name may grow the directory.
        let growth = self.growth(parent)?;
        // The daemon (root, CAP_FOWNER) may always read without touching atime.
        let src = self.reopen(inode, OFlags::RDONLY | OFlags::NOATIME)?;
        let tag = xid.to_xattr();
        let tag = (self.opts.tagging.mode.is_on() && xid != Xid::HOST)
            .then_some((XID_XATTR, tag.as_slice()));
        let owned = self.owned_as_shown(caller, inode, st)?;
        let mut copy = cow::copy(dir, src.as_fd(), &owned, Self::proc_path, tag)?;
        let temp = match copy.link(dir, inode.id) {
            Ok(temp) => temp,
            Err(e) => {
                copy.discard(dir);
                return Err(e.into());
            }
        };
        let exchange = RenameFlags::EXCHANGE;
        if let Err(e) = rustix::fs::renameat_with(dir, &temp, dir, name, exchange) {
            copy.discard(dir);
            return Err(e.into());
        }
        // `temp` now holds what `name` held: the shared link, unless the
        // name changed since it was checked; then put everything back.
        let swapped = rustix::fs::statat(dir, &temp, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|now| crate::inode::BackingKey::of(&now) == inode.key);
        if !swapped {
            rustix::fs::renameat_with(dir, &temp, dir, name, exchange)?;
            copy.discard(dir);
            return Err(Errno::STALE.into());
        }
        rustix::fs::unlinkat(dir, &temp, AtFlags::empty())?;
        self.lost_link(inode);
        if let Err(e) = self.sync_dir(dir) {
            log::warn!("directory {}: fsync after copy-on-write: {e}", parent.id);
        }
        admission.commit_space(copy.stat.st_blocks as u64 * 512);
        self.settle_after(parent, dir);
        drop(growth);
        // The shared inode lost a link the kernel did not see go.
        self.attrs_changed(inode.id);
        log::debug!("inode {}: link {name:?} broken for context {xid}", inode.id);
        Ok(())
    }

    /// `st` with the owner the caller saw: a view for one user-namespace
    /// guest shows host-owned files inside the guest's id range, and the
    /// guest's private copy of one keeps the owner it showed.
    fn owned_as_shown(&self, caller: &Caller, inode: &Inode, st: &Stat) -> Result<Stat> {
        let mut owned = *st;
        if let Some(shift) = caller.shift {
            if self.tag(inode)? == Xid::HOST {
                owned.st_uid = shift.show(st.st_uid);
                owned.st_gid = shift.show(st.st_gid);
            }
        }
        Ok(owned)
    }

    /// Makes a directory's entries durable.
    fn sync_dir(&self, dir: BorrowedFd<'_>) -> Result<()> {
        let fd = rustix::fs::openat(
            &self.proc_self_fd,
            Self::proc_name(dir).as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(rustix::fs::fsync(fd)?)
    }

    /// Stores (or, for the host, removes) a tag at `path`.
    fn store_tag(&self, path: &CStr, xid: Xid) -> Result<()> {
        store_xattr(path, XID_XATTR, (xid != Xid::HOST).then(|| xid.to_xattr()))
    }

    /// Stores (or, when empty, removes) flags at `path`.
    fn store_iattr(&self, path: &CStr, flags: IAttr) -> Result<()> {
        store_xattr(
            path,
            IATTR_XATTR,
            (flags != IAttr::NONE).then(|| flags.to_xattr()),
        )
    }

    /// Re-reads an inode's flags from the backing inode (under its lock,
    /// where the cache may be stale) and caches them.
    fn fresh_iattr(&self, inode: &Inode, fd: BorrowedFd<'_>) -> Result<IAttr> {
        let flags = self.read_iattr(
            Self::proc_path(fd).as_c_str(),
            format_args!("inode {}", inode.id),
            false,
        )?;
        inode.iattr.store(flags.0, Ordering::Relaxed);
        Ok(flags)
    }

    /// `EPERM` unless the caller's context may change `inode`'s attributes.
    fn check_change(&self, caller: &Caller, inode: &Inode) -> Result<()> {
        if !self.opts.tagging.mode.is_on() {
            return Ok(());
        }
        let tagging = &self.opts.tagging;
        Ok(tagging.check_change(caller.xid, self.tag(inode)?)?)
    }

    /// Tags an inode the caller just created as `name` in `dir` with the
    /// caller's context (§1.3: the creator's, not the parent's). If the tag
    /// cannot be stored the new name is removed again (when it still names
    /// the inode), so that no untagged, host-owned inode is left behind.
    fn tag_new(
        &self,
        caller: &Caller,
        inode: &Inode,
        fd: BorrowedFd<'_>,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> Result<()> {
        // A new inode carries no flags (§3.3: not even inherited ones).
        inode.iattr.store(IAttr::NONE.0, Ordering::Relaxed);
        if !self.opts.tagging.mode.is_on() {
            return Ok(());
        }
        let xid = caller.xid;
        if xid != Xid::HOST {
            let path = Self::proc_path(fd);
            let set = rustix::fs::setxattr(
                path.as_c_str(),
                XID_XATTR,
                &xid.to_xattr(),
                XattrFlags::empty(),
            );
            if let Err(e) = set {
                log::error!("cannot tag new inode {} for context {xid}: {e}", inode.id);
                let same = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| crate::inode::BackingKey::of(&st) == inode.key);
                if same {
                    let flags = if inode.kind == FileType::Directory {
                        AtFlags::REMOVEDIR
                    } else {
                        AtFlags::empty()
                    };
                    let _ = rustix::fs::unlinkat(dir, name, flags);
                }
                return Err(e.into());
            }
        }
        inode.xid.store(xid.0, Ordering::Relaxed);
        Ok(())
    }

    /// `lookup`: resolve a name in a directory (searching it needs access
    /// to its tag).
    pub fn op_lookup(&self, caller: &Caller, parent: u64, name: &OsStr) -> Result<Entry> {
        let parent = self.inodes.get(parent)?;
        self.check_access(caller, &parent)?;
        // The kernel asks again for names whose entries expired or were
        // listed by readdirplus: the inode is usually known already.
        let mut entry = self.lookup_at(&parent, name, true)?;
        // Another guest's inode is not even found (its name, in a directory
        // both may use, can still be listed).
        if let Err(e) = self.check_tag(caller, &entry.inode) {
            self.inodes.forget(entry.inode.id, 1);
            return Err(e);
        }
        if self.pending.take(caller.pid, entry.inode.id) {
            entry = self.break_at_lookup(caller, &parent, name, entry)?;
        }
        if let Err(e) = self.mark_volatile(caller, &parent, &mut entry) {
            self.inodes.forget(entry.inode.id, 1);
            return Err(e);
        }
        Ok(entry)
    }

    /// `EACCES` unless the caller's context may use `inode` by its tag.
    fn check_tag(&self, caller: &Caller, inode: &Inode) -> Result<()> {
        if !self.opts.tagging.mode.is_on() {
            return Ok(());
        }
        Ok(self
            .opts
            .tagging
            .check_access(caller.xid, self.tag(inode)?)?)
    }

    /// `forget`: the kernel dropped `n` references.
    pub fn op_forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// `getattr`. Also re-reads the tag when the inode changed, so a retag
    /// on the host shows once the kernel's attribute cache expires. A
    /// guest is refused a barrier directory's attributes: the kernel asks
    /// for them before every permission check on it (they are never
    /// cached), so this is what stops a guest walking through it by `..`.
    pub fn op_getattr(&self, caller: &Caller, ino: u64) -> Result<Attr> {
        let inode = self.inodes.get(ino)?;
        let fd = inode.fd()?;
        let st = stat_fd(fd.as_fd())?;
        // Setting an xattr changes ctime: re-read the tag and the flags
        // only then (the flags lazily).
        let ctime = (st.st_ctime as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(st.st_ctime_nsec as u64);
        if inode.tag_ctime.swap(ctime, Ordering::Relaxed) != ctime {
            inode.iattr.store(IATTR_UNKNOWN, Ordering::Relaxed);
            if self.opts.tagging.mode.is_on() {
                self.read_tag(&inode, fd.as_fd())?;
            }
        }
        self.attr_of(caller, &inode, st)
    }

    /// The reply to a request for `inode`'s attributes `stat`.
    fn attr_of(&self, caller: &Caller, inode: &Inode, stat: Stat) -> Result<Attr> {
        let writing = inode.open_for_writing();
        if !self.opts.tagging.mode.is_on() {
            return Ok(Attr {
                stat,
                volatile: false,
                writing,
            });
        }
        let volatile = self.is_barrier(inode)?;
        if volatile && !caller.xid.is_privileged() {
            return Err(Errno::ACCESS.into());
        }
        Ok(Attr {
            stat,
            volatile,
            writing,
        })
    }

    /// `setattr`: chown, chmod, truncate and utimens, in that order (so a
    /// chown cannot clear bits a chmod in the same request just set, and
    /// explicit times win over the truncate's implicit mtime update).
    pub fn op_setattr(
        &self,
        caller: &Caller,
        ino: u64,
        fh: Option<u64>,
        set: &SetAttr,
    ) -> Result<Attr> {
        let inode = self.inodes.get(ino)?;
        let only_size = set.size.is_some()
            && *set
                == SetAttr {
                    size: set.size,
                    ..SetAttr::default()
                };
        if only_size {
            // truncate(2) needs write access: EACCES, like open for write.
            self.check_access(caller, &inode)?;
            self.before_change(caller, &inode, ChangeBy::Truncate)?;
        } else {
            self.check_change(caller, &inode)?;
            self.before_change(caller, &inode, ChangeBy::Attr)?;
        }
        let fd = inode.fd()?;
        // chown(f, -1, -1) sends a SETATTR with nothing to set; natively it
        // still changes ctime, so it does here (a chown to nothing).
        if set.uid.is_some() || set.gid.is_some() || *set == SetAttr::default() {
            rustix::fs::chownat(
                &fd,
                "",
                set.uid.map(rustix::fs::Uid::from_raw),
                set.gid.map(rustix::fs::Gid::from_raw),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(mode) = set.mode {
            self.chmod(caller, &inode, fd.as_fd(), mode)?;
        }
        if let Some(size) = set.size {
            self.truncate(caller, &inode, fh, size)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let times = Timestamps {
                last_access: to_timestamp(set.atime),
                last_modification: to_timestamp(set.mtime),
            };
            rustix::fs::utimensat(
                &fd,
                "",
                &times,
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        self.attr_of(caller, &inode, stat_fd(fd.as_fd())?)
    }

    fn chmod(&self, caller: &Caller, inode: &Inode, fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
        if inode.kind == FileType::Symlink {
            return Err(Errno::OPNOTSUPP.into());
        }
        let mode = Mode::from_raw_mode(mode & 0o7777);
        let name = Self::proc_name(fd);
        let chmod = || {
            Ok(rustix::fs::chmodat(
                &self.proc_self_fd,
                name.as_c_str(),
                mode,
                AtFlags::empty(),
            )?)
        };
        // The kernel (default_permissions) has already allowed the request.
        // An owner's chmod runs as the caller, so the backing filesystem
        // drops set-group-ID exactly as natively for an owner outside the
        // file's group. Anyone else's mode change can only be the kernel
        // dropping set-user/group-ID after a write or truncate, which the
        // kernel does with its own authority: run it as root.
        let owner = stat_fd(fd)?.st_uid;
        if caller.uid != 0 && caller.uid == owner {
            as_caller(caller, mode.contains(Mode::SGID), chmod)
        } else {
            chmod()
        }
    }

    /// Truncating never allocates (growth is sparse); what it frees is
    /// credited.
    fn truncate(&self, caller: &Caller, inode: &Inode, fh: Option<u64>, size: u64) -> Result<()> {
        let fd = match fh {
            Some(fh) => self.handles.get(fh)?.file.try_clone()?.into(),
            None if inode.kind == FileType::Directory => return Err(Errno::ISDIR.into()),
            None => self.reopen(inode, OFlags::WRONLY)?,
        };
        kill_privs(fd.as_fd(), caller)?;
        rustix::fs::ftruncate(&fd, size)?;
        self.settle(inode, fd.as_fd())
    }

    /// `readlink`.
    pub fn op_readlink(&self, caller: &Caller, ino: u64) -> Result<Vec<u8>> {
        let inode = self.inodes.get(ino)?;
        self.check_tag(caller, &inode)?;
        if inode.kind != FileType::Symlink {
            return Err(Errno::INVAL.into());
        }
        let target = rustix::fs::readlinkat(inode.fd()?, "", Vec::new())?;
        Ok(target.into_bytes())
    }

    /// Creates an inode named `name` in `parent` as `caller` with `create`,
    /// then looks it up.
    fn create_node(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        need_groups: bool,
        reserve: u64,
        create: impl Fn(BorrowedFd<'_>, &OsStr) -> Result<()>,
    ) -> Result<Entry> {
        let parent = self.inodes.get(parent)?;
        self.check_access(caller, &parent)?;
        self.check_dir_write(&parent)?;
        let name = self.check_new_name(caller, name)?;
        let dir = parent.fd()?;
        let admission = self.admit_new(caller, reserve)?;
        let growth = self.growth(&parent)?;
        as_caller(caller, need_groups, || create(dir.as_fd(), name))?;
        self.settle_after(&parent, dir.as_fd());
        drop(growth);
        let mut entry = self.do_lookup(&parent, name)?;
        admission.commit(&entry.inode);
        let tagged = entry
            .inode
            .fd()
            .and_then(|fd| self.tag_new(caller, &entry.inode, fd.as_fd(), dir.as_fd(), name))
            .and_then(|()| self.mark_volatile(caller, &parent, &mut entry));
        if let Err(e) = tagged {
            self.inodes.forget(entry.inode.id, 1);
            return Err(e);
        }
        Ok(entry)
    }

    /// `mknod`: regular files, fifos, sockets and device nodes.
    pub fn op_mknod(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> Result<Entry> {
        let kind = FileType::from_raw_mode(mode);
        let perm = Mode::from_raw_mode(mode & 0o7777);
        self.create_node(
            caller,
            parent,
            name,
            perm.contains(Mode::SGID),
            0,
            |dir, name| Ok(rustix::fs::mknodat(dir, name, kind, perm, rdev)?),
        )
    }

    /// `mkdir`.
    pub fn op_mkdir(&self, caller: &Caller, parent: u64, name: &OsStr, mode: u32) -> Result<Entry> {
        let perm = Mode::from_raw_mode(mode & 0o7777);
        // A new directory allocates its first block at once.
        self.create_node(caller, parent, name, false, BLOCK, |dir, name| {
            Ok(rustix::fs::mkdirat(dir, name, perm)?)
        })
    }

    /// `symlink`.
    pub fn op_symlink(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> Result<Entry> {
        // A target too long for the inode itself takes a block (ext4 keeps
        // up to 59 bytes inline).
        let reserve = if target.as_os_str().len() >= 60 {
            BLOCK
        } else {
            0
        };
        self.create_node(caller, parent, name, false, reserve, |dir, name| {
            Ok(rustix::fs::symlinkat(target, dir, name)?)
        })
    }

    /// `unlink`.
    pub fn op_unlink(&self, caller: &Caller, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(caller, parent, name, AtFlags::empty())
    }

    /// `rmdir`.
    pub fn op_rmdir(&self, caller: &Caller, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(caller, parent, name, AtFlags::REMOVEDIR)
    }

    /// unlink or rmdir, crediting the disk account when the last link goes.
    fn remove(&self, caller: &Caller, parent: u64, name: &OsStr, flags: AtFlags) -> Result<()> {
        let parent = self.inodes.get(parent)?;
        self.check_access(caller, &parent)?;
        self.check_dir_write(&parent)?;
        let (dir, name) = (parent.fd()?, check_name(name)?);
        self.check_name_change(dir.as_fd(), name)?;
        let victim = self.victim(caller, dir.as_fd(), name)?;
        rustix::fs::unlinkat(&dir, name, flags)?;
        self.removed(victim);
        Ok(())
    }

    /// `rename`, with `RENAME_NOREPLACE`, `RENAME_EXCHANGE` and
    /// `RENAME_WHITEOUT` passed on.
    pub fn op_rename(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let flags = RenameFlags::from_bits(flags).ok_or(Error::Os(Errno::INVAL))?;
        let (old_dir, new_dir) = (self.inodes.get(parent)?, self.inodes.get(newparent)?);
        self.check_access(caller, &old_dir)?;
        self.check_access(caller, &new_dir)?;
        self.check_dir_write(&old_dir)?;
        self.check_dir_write(&new_dir)?;
        let (old_fd, new_fd) = (old_dir.fd()?, new_dir.fd()?);
        let (name, newname) = (check_name(name)?, self.check_new_name(caller, newname)?);
        self.check_name_change(old_fd.as_fd(), name)?;
        if !flags.contains(RenameFlags::NOREPLACE) {
            self.check_name_change(new_fd.as_fd(), newname)?;
        }
        let rename = || {
            Ok(rustix::fs::renameat_with(
                &old_fd, name, &new_fd, newname, flags,
            )?)
        };
        // Both names must be the caller's to move (or to swap).
        self.victim(caller, old_fd.as_fd(), name)?;
        let target = self.victim(caller, new_fd.as_fd(), newname)?;
        let replaced = if flags.intersects(RenameFlags::NOREPLACE | RenameFlags::EXCHANGE) {
            None
        } else {
            target
        };
        let growth = self.growth(&new_dir)?;
        if flags.contains(RenameFlags::WHITEOUT) {
            // The whiteout is a new inode: it must belong to the caller (and
            // counts as one of the caller's inodes; it allocates no blocks).
            let admission = self.admit_new(caller, 0)?;
            as_caller(caller, false, rename)?;
            admission.commit_space(0);
            self.tag_whiteout(caller, old_fd.as_fd(), name);
        } else {
            rename()?;
        }
        self.removed(replaced);
        self.settle_after(&new_dir, new_fd.as_fd());
        drop(growth);
        Ok(())
    }

    /// Tags the whiteout a `RENAME_WHITEOUT` left at `name` in `dir` with
    /// the caller's context, so that it counts (and is credited at its
    /// removal) for the context it was charged to.
    fn tag_whiteout(&self, caller: &Caller, dir: BorrowedFd<'_>, name: &OsStr) {
        if !self.opts.tagging.mode.is_on() || caller.xid == Xid::HOST {
            return;
        }
        let tagged = rustix::fs::openat(dir, name, path_flags(), Mode::empty())
            .map_err(Error::from)
            .and_then(|fd| {
                let st = stat_fd(fd.as_fd())?;
                let whiteout = FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                    && st.st_rdev == 0;
                if !whiteout {
                    // Something else took the name meanwhile.
                    return Ok(());
                }
                self.store_tag(Self::proc_path(fd.as_fd()).as_c_str(), caller.xid)
            });
        if let Err(e) = tagged {
            log::warn!(
                "cannot tag the whiteout {name:?} for context {}: {e}",
                caller.xid
            );
        }
    }

    /// `link`: a new name for an existing inode.
    pub fn op_link(
        &self,
        caller: &Caller,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> Result<Entry> {
        let inode = self.inodes.get(ino)?;
        let parent = self.inodes.get(newparent)?;
        // Linking someone else's inode fails like protected_hardlinks does.
        self.check_change(caller, &inode)?;
        self.check_access(caller, &parent)?;
        self.check_dir_write(&parent)?;
        iattr::name_change(self.iattr(&inode)?)?;
        let newname = self.check_new_name(caller, newname)?;
        let dir = parent.fd()?;
        let growth = self.growth(&parent)?;
        rustix::fs::linkat(inode.fd()?, "", &dir, newname, AtFlags::EMPTY_PATH)?;
        self.settle_after(&parent, dir.as_fd());
        drop(growth);
        let mut entry = self.do_lookup(&parent, newname)?;
        if let Err(e) = self.mark_volatile(caller, &parent, &mut entry) {
            self.inodes.forget(entry.inode.id, 1);
            return Err(e);
        }
        Ok(entry)
    }

    /// `open` of a regular file.
    pub fn op_open(&self, caller: &Caller, ino: u64, flags: i32) -> Result<(u64, Arc<Handle>)> {
        let inode = self.inodes.get(ino)?;
        self.check_access(caller, &inode)?;
        let oflags = OFlags::from_bits_retain(flags as u32);
        if !opens_for_change(oflags) {
            let fd = self.reopen(&inode, oflags)?;
            return self.open_handle(Handle::new(inode, File::from(fd), flags, caller.xid));
        }
        // The flags are checked and the writer counted under the lock that
        // setting the flags takes: no file becomes immutable with a writer
        // open (see `set_iattr`).
        let _serial = inode.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.before_change(caller, &inode, ChangeBy::Open)?;
        let fd = self.reopen(&inode, oflags)?;
        let handle = Handle::new(Arc::clone(&inode), File::from(fd), flags, caller.xid);
        self.open_handle(handle)
    }

    /// `create`: atomically create and open a regular file.
    pub fn op_create(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Entry, u64, Arc<Handle>)> {
        let parent = self.inodes.get(parent)?;
        self.check_access(caller, &parent)?;
        self.check_dir_write(&parent)?;
        let name = self.check_new_name(caller, name)?;
        let flags = OFlags::from_bits_retain(flags as u32)
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC;
        let perm = Mode::from_raw_mode(mode & 0o7777);
        let dir = parent.fd()?;
        let admission = self.admit_new(caller, 0)?;
        let growth = self.growth(&parent)?;
        let open = |flags| {
            as_caller(caller, perm.contains(Mode::SGID), || {
                Ok(rustix::fs::openat(&dir, name, flags, perm)?)
            })
        };
        // Exclusively first, so that only an inode this request really
        // created is tagged and charged; the kernel asks to create only
        // names it believes absent, so the fallback is a rare race.
        let (fd, admission) = match open(flags | OFlags::EXCL) {
            Err(e) if e.is(Errno::EXIST) && !flags.contains(OFlags::EXCL) => {
                drop(admission);
                // The name appeared meanwhile; a flagged file must go
                // through `open`, after a fresh walk.
                if opens_for_change(flags) && self.iattr_at(dir.as_fd(), name)? != IAttr::NONE {
                    return Err(Errno::STALE.into());
                }
                (open(flags - OFlags::CREATE)?, None)
            }
            other => (other?, Some(admission)),
        };
        // The inode's O_PATH descriptor comes from the open file itself, so a
        // concurrent rename of `name` cannot make it name another inode.
        let path_fd = rustix::fs::openat(
            &self.proc_self_fd,
            Self::proc_name(fd.as_fd()).as_c_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        self.settle_after(&parent, dir.as_fd());
        drop(growth);
        let stat = stat_fd(fd.as_fd())?;
        let inode = self.inodes.insert(path_fd, &stat);
        if let Some(admission) = admission {
            admission.commit(&inode);
            if let Err(e) = self.tag_new(caller, &inode, fd.as_fd(), dir.as_fd(), name) {
                self.inodes.forget(inode.id, 1);
                return Err(e);
            }
        }
        let mut entry = Entry {
            inode: Arc::clone(&inode),
            stat,
            volatile: false,
            volatile_attr: false,
        };
        if let Err(e) = self.mark_volatile(caller, &parent, &mut entry) {
            self.inodes.forget(entry.inode.id, 1);
            return Err(e);
        }
        let (fh, handle) = self.open_handle(Handle::new(
            inode,
            File::from(fd),
            flags.bits() as i32,
            caller.xid,
        ))?;
        Ok((entry, fh, handle))
    }

    /// `read` (without passthrough) into `buf`, which the transport gives
    /// (page-aligned, for `O_DIRECT` handles): fills it unless at EOF, as
    /// FUSE treats a short read as end of file. Returns the bytes read.
    pub fn op_read(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let handle = self.handles.get(fh)?;
        let mut done = 0;
        while done < buf.len() {
            match handle.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if done > 0 => {
                    log::debug!("short read after {done} bytes: {e}");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }

    /// `write` (without passthrough): returns the bytes written. With
    /// `kill_privs` (`FUSE_WRITE_KILL_SUIDGID`: the writer lacks
    /// `CAP_FSETID`) the write drops set-user-ID, and set-group-ID of a
    /// group-executable file, as the kernel does natively.
    pub fn op_write(
        &self,
        caller: &Caller,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_privs: bool,
    ) -> Result<usize> {
        let handle = self.handles.get(fh)?;
        if kill_privs {
            drop_privs(handle.file.as_fd(), caller)?;
        }
        self.allocating(&handle, offset, data.len() as u64, false, |allowed| {
            self.write_at(&handle, offset, &data[..allowed as usize])
        })
    }

    fn write_at(&self, handle: &Handle, offset: u64, data: &[u8]) -> Result<usize> {
        let mut aligned;
        // The io_uring transport's payload buffer is page-aligned already.
        let data = if handle.direct && (data.as_ptr() as usize) % DIRECT_ALIGN != 0 {
            aligned = AlignedBuf::new(data.len());
            aligned.as_mut_slice().copy_from_slice(data);
            aligned.as_mut_slice()
        } else {
            data
        };
        let mut done = 0;
        while done < data.len() {
            match handle.file.write_at(&data[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) if done > 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }

    /// Registers an open handle (its inode counts one more open), or
    /// `ENFILE` when its context has used up its share of descriptors.
    fn open_handle(&self, handle: Handle) -> Result<(u64, Arc<Handle>)> {
        let inode = Arc::clone(&handle.inode);
        let opened = self.handles.insert(handle)?;
        inode
            .charge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open();
        Ok(opened)
    }

    /// `release` / `releasedir`: the last close of a handle. An inode whose
    /// last link went while it was open stops counting now.
    pub fn op_release(&self, fh: u64) -> Result<()> {
        let handle = self.handles.get(fh)?;
        // Passthrough and mmap writes bypass the daemon: charge them now.
        if self.accounting.is_some() && handle.inode.kind == FileType::RegularFile {
            self.settle_after(&handle.inode, handle.file.as_fd());
        }
        let credit = handle
            .inode
            .charge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close();
        if let (Some(bytes), Some(accounting)) = (credit, &self.accounting) {
            accounting.credit(self.tag(&handle.inode)?, bytes);
        }
        self.handles.remove(fh)
    }

    /// `fsync` / `fsyncdir`.
    pub fn op_fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let handle = self.handles.get(fh)?;
        if datasync {
            rustix::fs::fdatasync(&handle.file)?;
        } else {
            rustix::fs::fsync(&handle.file)?;
        }
        Ok(())
    }

    /// `opendir`.
    pub fn op_opendir(&self, caller: &Caller, ino: u64, flags: i32) -> Result<u64> {
        let inode = self.inodes.get(ino)?;
        self.check_access(caller, &inode)?;
        if inode.kind != FileType::Directory {
            return Err(Errno::NOTDIR.into());
        }
        let flags = (OFlags::from_bits_retain(flags as u32) & OFlags::NOATIME)
            | OFlags::RDONLY
            | OFlags::DIRECTORY;
        let fd = self.reopen(&inode, flags)?;
        Ok(self
            .open_handle(Handle::new(inode, File::from(fd), 0, caller.xid))?
            .0)
    }

    /// Whether the kernels may keep directory `id`'s listing between opens:
    /// when it is on the watched filesystem, whose every change of names
    /// drops the listing (a listing is the same for every caller).
    pub fn listing_cacheable(&self, id: u64) -> bool {
        self.inodes
            .get(id)
            .is_ok_and(|dir| self.kernels.watches(dir.key.dev))
    }

    /// `readdir` / `readdirplus`: feeds entries from cookie `offset` on to
    /// `sink` until it returns `false` (reply buffer full). With `plus`,
    /// every entry but `.` and `..` is looked up (taking a kernel reference);
    /// a looked-up entry the sink refuses is forgotten again.
    pub fn op_readdir(
        &self,
        caller: &Caller,
        fh: u64,
        offset: u64,
        plus: bool,
        sink: &mut dyn FnMut(&DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let handle = self.handles.get(fh)?;
        let _cursor = handle.dir_cursor.lock().unwrap_or_else(|e| e.into_inner());
        rustix::fs::seek(&handle.file, SeekFrom::Start(offset))?;
        let same_dev = handle.inode.key.dev == self.root_dev;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 32 * 1024];
        let mut dir = RawDir::new(&handle.file, &mut buf);
        while let Some(raw) = dir.next() {
            let raw = raw?;
            let name = OsStr::from_bytes(raw.file_name().to_bytes());
            let dots = name == "." || name == "..";
            let entry = if plus && !dots {
                // getdents already says which inode the name has: only an
                // inode not known yet needs opening.
                let key = crate::inode::BackingKey {
                    dev: handle.inode.key.dev,
                    ino: raw.ino(),
                };
                let known = self.inodes.id_of(key).is_some();
                match self.lookup_at(&handle.inode, name, known) {
                    // Another guest's inode: its name only, as plain
                    // readdir gives it.
                    Ok(entry) if self.check_tag(caller, &entry.inode).is_err() => {
                        self.inodes.forget(entry.inode.id, 1);
                        None
                    }
                    Ok(mut entry) => {
                        let marked = self.mark_volatile(caller, &handle.inode, &mut entry);
                        if let Err(e) = marked {
                            self.inodes.forget(entry.inode.id, 1);
                            return Err(e);
                        }
                        Some(entry)
                    }
                    // Removed since getdents saw it: skip it.
                    Err(Error::Os(Errno::NOENT)) => continue,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            let ino = match &entry {
                Some(e) => e.inode.id,
                None => self.inodes.dirent_ino(same_dev, raw.ino()),
            };
            let dirent = DirEntry {
                name,
                ino,
                kind: raw.file_type(),
                next_offset: raw.next_entry_cookie(),
                entry,
            };
            if !sink(&dirent) {
                if let Some(e) = dirent.entry {
                    self.inodes.forget(e.inode.id, 1);
                }
                break;
            }
        }
        Ok(())
    }

    /// `statfs`: the backing filesystem's figures.
    /// A limited context sees its limit, usage and free space (§2.5).
    pub fn op_statfs(&self, caller: &Caller) -> Result<StatVfs> {
        let mut st = rustix::fs::fstatvfs(self.inodes.get(ROOT_ID)?.fd()?)?;
        let xid = caller.xid;
        if let (Some(accounting), false) = (&self.accounting, xid.is_privileged()) {
            let account = accounting.account(xid);
            let view = StatfsView {
                blocks: st.f_blocks,
                bfree: st.f_bfree,
                bavail: st.f_bavail,
                files: st.f_files,
                ffree: st.f_ffree,
            }
            .clamp(st.f_frsize, account.limit(), account.usage());
            st.f_blocks = view.blocks;
            st.f_bfree = view.bfree;
            st.f_bavail = view.bavail;
            st.f_files = view.files;
            st.f_ffree = view.ffree;
        }
        Ok(st)
    }

    /// Runs an xattr syscall on the `/proc/self/fd/N` path of inode `ino`
    /// (the xattr calls have no `*at` form; the path names the inode itself,
    /// even a symlink).
    fn with_proc_path<T>(
        &self,
        caller: &Caller,
        ino: u64,
        op: impl FnOnce(&CStr) -> Result<T>,
    ) -> Result<T> {
        let inode = self.inodes.get(ino)?;
        self.check_access(caller, &inode)?;
        let fd = inode.fd()?;
        op(Self::proc_path(fd.as_fd()).as_c_str())
    }

    /// `setxattr`.
    pub fn op_setxattr(
        &self,
        caller: &Caller,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        if is_reserved_xattr(name.as_bytes()) {
            return self.set_reserved(caller, ino, name, Some(value));
        }
        let flags = XattrFlags::from_bits(flags as u32).ok_or(Error::Os(Errno::INVAL))?;
        self.change_xattr(caller, ino, |path| {
            Ok(rustix::fs::setxattr(path, name, value, flags)?)
        })
    }

    /// Sets or removes an xattr of `ino` with `op` on its /proc path: an
    /// attribute change (§3.3), allowed only on an inode the caller may use
    /// (checked before a unified file's link is broken for it).
    fn change_xattr(
        &self,
        caller: &Caller,
        ino: u64,
        op: impl FnOnce(&CStr) -> Result<()>,
    ) -> Result<()> {
        let inode = self.inodes.get(ino)?;
        self.check_access(caller, &inode)?;
        self.before_change(caller, &inode, ChangeBy::Xattr)?;
        let fd = inode.fd()?;
        // Xattrs too big for the inode itself take a block of their own.
        let growth = self.growth(&inode)?;
        op(Self::proc_path(fd.as_fd()).as_c_str())?;
        self.settle_after(&inode, fd.as_fd());
        drop(growth);
        Ok(())
    }

    /// Setting or removing a reserved xattr through the mount: only the
    /// host administrator may (guests get `EPERM`), and only the tag
    /// (`chxid`) and the flags (`setattr`).
    fn set_reserved(
        &self,
        caller: &Caller,
        ino: u64,
        name: &OsStr,
        value: Option<&[u8]>,
    ) -> Result<()> {
        if !self.is_host_admin(caller) {
            return Err(Errno::PERM.into());
        }
        if name == XID_XATTR {
            // A unified file is shared by several names: the one used gets
            // a private copy first, which is then retagged.
            let inode = self.inodes.get(ino)?;
            self.before_change(caller, &inode, ChangeBy::Xattr)?;
            self.retag(ino, value)
        } else if name == IATTR_XATTR {
            self.set_iattr(ino, value)
        } else {
            Err(Errno::PERM.into())
        }
    }

    /// Setting the flags (§3.1): a decimal `IATTR_*` mask; barrier sticks
    /// to directories and cow to regular files only, procfs-only and
    /// unknown bits are `EINVAL`. Retagging and flagging bypass the flags
    /// themselves, as `vc_set_iattr` did.
    fn set_iattr(&self, ino: u64, value: Option<&[u8]>) -> Result<()> {
        let requested = match value {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u32>().ok())
                .ok_or(Error::Os(Errno::INVAL))?,
        };
        let inode = self.inodes.get(ino)?;
        let flags = IAttr::for_kind(requested, inode.kind)?;
        let fd = inode.fd()?;
        let _serial = inode.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let was_barrier = self.is_barrier(&inode)?;
        let freezes = |f: IAttr| !matches!(iattr::write_open(f), Change::Allowed);
        if freezes(flags) && !freezes(self.iattr(&inode)?) && !writers_gone(&inode) {
            // Writers open through passthrough, or mapping the file, would
            // go on writing: ext4 fails their writes, vxfs cannot reach
            // them, so the file may not freeze while they are open.
            return Err(Errno::TXTBSY.into());
        }
        self.store_iattr(Self::proc_path(fd.as_fd()).as_c_str(), flags)?;
        inode.iattr.store(flags.0, Ordering::Relaxed);
        if flags.barrier() != was_barrier {
            // The kernel may hold the directory's attributes for a while:
            // make it ask again, so the barrier holds from now on.
            self.attrs_changed(inode.id);
        }
        Ok(())
    }

    /// Tells every connection's kernel that an inode's cached attributes
    /// are stale.
    fn attrs_changed(&self, ino: u64) {
        for kernel in self.kernels.all() {
            kernel.drop_stale(&crate::view::Stale::Attrs(ino));
        }
    }

    /// Setting (or removing) `trusted.vxfs.xid` through the mount: `chxid`
    /// (§1.5). The inode's usage moves to the new context with it (unlike
    /// the original, whose counters drifted, §2.4).
    fn retag(&self, ino: u64, value: Option<&[u8]>) -> Result<()> {
        let new = match value {
            Some(v) => Xid::from_xattr(v).ok_or(Error::Os(Errno::INVAL))?,
            None => Xid::HOST,
        };
        let inode = self.inodes.get(ino)?;
        let fd = inode.fd()?;
        // Serialise with writes and measurements of this inode's charge.
        let _serial = inode.write_lock.lock();
        let charge = inode.charge.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.tag(&inode)?;
        self.store_tag(Self::proc_path(fd.as_fd()).as_c_str(), new)?;
        inode.xid.store(new.0, Ordering::Relaxed);
        if let (Some(accounting), false) = (&self.accounting, charge.gone) {
            accounting.transfer(old, new, charge.bytes);
        }
        Ok(())
    }

    /// Whether the caller is the host's administrator: in the host
    /// context, on a view that can have one (never one with a fixed
    /// context, where every caller is the guest, root or not, chrooted or
    /// not), and holding `CAP_SYS_ADMIN` in the initial user namespace.
    fn is_host_admin(&self, caller: &Caller) -> bool {
        caller.may_administer
            && caller.xid == Xid::HOST
            && crate::creds::has_host_sys_admin(caller.pid)
    }

    /// [`check_name`] for a name to be created (by create, mknod, mkdir,
    /// symlink, link or rename): the temporary names that recovery removes
    /// ([`crate::leftovers`]) are the host administrator's (`hashify`'s)
    /// alone, `EPERM` for anyone else.
    fn check_new_name<'a>(&self, caller: &Caller, name: &'a OsStr) -> Result<&'a OsStr> {
        let name = check_name(name)?;
        if crate::leftovers::is_reserved(name.as_bytes()) && !self.is_host_admin(caller) {
            return Err(Errno::PERM.into());
        }
        Ok(name)
    }

    /// `getxattr`; `size` 0 asks for the value's length.
    pub fn op_getxattr(
        &self,
        caller: &Caller,
        ino: u64,
        name: &OsStr,
        size: u32,
    ) -> Result<XattrReply> {
        self.with_proc_path(caller, ino, |path| {
            if size == 0 {
                let len = rustix::fs::getxattr_query(path, name)?;
                return Ok(XattrReply::Size(len as u32));
            }
            let mut buf = vec![0u8; size as usize];
            let len = rustix::fs::getxattr(path, name, &mut buf[..])?;
            buf.truncate(len);
            Ok(XattrReply::Data(buf))
        })
    }

    /// `listxattr`; `size` 0 asks for the list's length. `trusted.*` names
    /// are listed only to root, as natively (the daemon itself sees them all).
    pub fn op_listxattr(&self, caller: &Caller, ino: u64, size: u32) -> Result<XattrReply> {
        let list = self.with_proc_path(caller, ino, read_xattr_list)?;
        let shown = |name: &[u8]| {
            !is_reserved_xattr(name) && (caller.uid == 0 || !name.starts_with(b"trusted."))
        };
        let list: Vec<u8> = list
            .split_inclusive(|&b| b == 0)
            .filter(|name| shown(name))
            .flatten()
            .copied()
            .collect();
        if size == 0 {
            Ok(XattrReply::Size(list.len() as u32))
        } else if list.len() > size as usize {
            Err(Errno::RANGE.into())
        } else {
            Ok(XattrReply::Data(list))
        }
    }

    /// `removexattr`.
    pub fn op_removexattr(&self, caller: &Caller, ino: u64, name: &OsStr) -> Result<()> {
        if is_reserved_xattr(name.as_bytes()) {
            return self.set_reserved(caller, ino, name, None);
        }
        self.change_xattr(caller, ino, |path| Ok(rustix::fs::removexattr(path, name)?))
    }

    /// `access`: checked as the caller by the backing filesystem. (With
    /// `default_permissions`, which vxfs always sets, the kernel answers
    /// access(2) itself; this serves kernels that still ask.)
    pub fn op_access(&self, caller: &Caller, ino: u64, mask: i32) -> Result<()> {
        let inode = self.inodes.get(ino)?;
        self.check_access(caller, &inode)?;
        let access = rustix::fs::Access::from_bits_truncate(mask as u32);
        if access.is_empty() {
            return Ok(());
        }
        if inode.kind == FileType::Symlink {
            return Ok(());
        }
        let fd = inode.fd()?;
        let name = Self::proc_name(fd.as_fd());
        as_caller(caller, false, || {
            Ok(rustix::fs::accessat(
                &self.proc_self_fd,
                name.as_c_str(),
                access,
                AtFlags::EACCESS,
            )?)
        })
    }

    /// `fallocate`, with the mode bits passed on.
    pub fn op_fallocate(
        &self,
        caller: &Caller,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<()> {
        use rustix::fs::FallocateFlags as F;
        let handle = self.handles.get(fh)?;
        kill_privs(handle.file.as_fd(), caller)?;
        let mode = F::from_bits_retain(mode as u32);
        let frees = mode.intersects(F::PUNCH_HOLE | F::COLLAPSE_RANGE);
        let reserve = if frees { 0 } else { length };
        self.allocating(&handle, offset, reserve, true, |_| {
            Ok(rustix::fs::fallocate(&handle.file, mode, offset, length)?)
        })
    }

    /// `lseek`, for SEEK_DATA and SEEK_HOLE.
    pub fn op_lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let handle = self.handles.get(fh)?;
        let pos = match whence {
            libc::SEEK_SET => SeekFrom::Start(u64::try_from(offset).map_err(|_| Errno::INVAL)?),
            libc::SEEK_CUR => SeekFrom::Current(offset),
            libc::SEEK_END => SeekFrom::End(offset),
            libc::SEEK_DATA => SeekFrom::Data(u64::try_from(offset).map_err(|_| Errno::NXIO)?),
            libc::SEEK_HOLE => SeekFrom::Hole(u64::try_from(offset).map_err(|_| Errno::NXIO)?),
            _ => return Err(Errno::INVAL.into()),
        };
        let pos = rustix::fs::seek(&handle.file, pos)?;
        i64::try_from(pos).map_err(|_| Errno::OVERFLOW.into())
    }

    /// `copy_file_range` between two open handles.
    pub fn op_copy_file_range(
        &self,
        caller: &Caller,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> Result<usize> {
        let src = self.handles.get(fh_in)?;
        let dst = self.handles.get(fh_out)?;
        kill_privs(dst.file.as_fd(), caller)?;
        self.allocating(&dst, offset_out, len, false, |allowed| {
            let (mut off_in, mut off_out) = (offset_in, offset_out);
            Ok(rustix::fs::copy_file_range(
                &src.file,
                Some(&mut off_in),
                &dst.file,
                Some(&mut off_out),
                usize::try_from(allowed).unwrap_or(usize::MAX),
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for bad in ["", ".", "..", "a/b", "/", "../x"] {
            assert_eq!(check_name(OsStr::new(bad)), Err(Error::BadName), "{bad:?}");
        }
        for good in ["a", "...", ".hidden", "-rf", "with space", "\u{e9}"] {
            assert!(check_name(OsStr::new(good)).is_ok(), "{good:?}");
        }
        assert!(check_name(OsStr::from_bytes(b"\xff\xfe")).is_ok());
    }

    #[test]
    fn timestamps_map_to_utime_specials() {
        assert_eq!(to_timestamp(None).tv_nsec, rustix::fs::UTIME_OMIT);
        assert_eq!(
            to_timestamp(Some(TimeSet::Now)).tv_nsec,
            rustix::fs::UTIME_NOW
        );
        let t = Timespec {
            tv_sec: 5,
            tv_nsec: 7,
        };
        assert_eq!(to_timestamp(Some(TimeSet::At(t))), t);
    }
}

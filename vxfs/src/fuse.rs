//! The fuser adapter: each FUSE operation converts its arguments, calls the
//! matching `op_*` of [`Vxfs`] and replies. No policy lives here; errors
//! become errnos in one place, [`errno`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType as FuseType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::{FileType, OFlags, Stat};

use crate::creds::Caller;
use crate::error::Error;
use crate::fs::{Attr, DirEntry, Entry, SetAttr, TimeSet, Vxfs, XattrReply};
use crate::handle::{Backing, Handle};
use crate::stats::{Op, Requests};
use crate::view::{IoModes, Kernel, Ledger, Stale, View};

/// Largest write the kernel may send in one request.
const MAX_WRITE: u32 = 1 << 20;

/// The one place where an [`Error`] becomes the errno the caller sees.
fn errno(e: Error) -> Errno {
    if let Error::UnknownInode(_) | Error::UnknownHandle(_) = e {
        log::warn!("{e}");
    }
    Errno::from_i32(e.errno())
}

fn system_time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = nsec.clamp(0, 999_999_999) as u32;
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec.into())
    }
}

fn fuse_type(kind: FileType) -> FuseType {
    match kind {
        FileType::Directory => FuseType::Directory,
        FileType::Symlink => FuseType::Symlink,
        FileType::Fifo => FuseType::NamedPipe,
        FileType::Socket => FuseType::Socket,
        FileType::CharacterDevice => FuseType::CharDevice,
        FileType::BlockDevice => FuseType::BlockDevice,
        _ => FuseType::RegularFile,
    }
}

/// FUSE attributes of a backing stat, reported under node id `ino`.
fn attr(ino: u64, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: system_time(st.st_atime, st.st_atime_nsec as i64),
        mtime: system_time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: system_time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: fuse_type(FileType::from_raw_mode(st.st_mode)),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let nsec = d.subsec_nanos() as i64;
                    if nsec == 0 {
                        (-(d.as_secs() as i64), 0)
                    } else {
                        (-(d.as_secs() as i64) - 1, 1_000_000_000 - nsec)
                    }
                }
            };
            TimeSet::At(rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            })
        }
    })
}

/// The fuser-facing filesystem of one connection (a [`View`] of the
/// daemon's tree).
#[derive(Debug)]
pub struct FuseFs {
    fs: Arc<Vxfs>,
    view: View,
    /// This connection's id in the core (for its attribute notifier).
    conn: u64,
    /// Passthrough is on and the kernel accepted it; cleared for the rest of
    /// the mount if registering a backing file ever fails.
    passthrough: AtomicBool,
    /// The kernel references this connection holds.
    ledger: Arc<Ledger>,
    /// Its kernel, for dropping what a reply let it cache.
    kernel: Arc<Kernel>,
    /// Passthrough registrations and page-cache opens, per inode.
    io: IoModes,
    /// Its requests, counted per operation.
    requests: Arc<Requests>,
}

impl FuseFs {
    /// Connection `conn` to the core `fs`, showing `view`. The view's root
    /// must hold one reference of the core's for the connection's life (it
    /// is dropped when the connection ends). Returns its kernel too, to be
    /// connected once the handshake is done.
    pub fn new(
        fs: Arc<Vxfs>,
        view: View,
        conn: u64,
        requests: Arc<Requests>,
    ) -> (FuseFs, Arc<Kernel>) {
        let ledger = Arc::new(Ledger::default());
        if view.root != crate::inode::ROOT_ID {
            ledger.took(view.root);
        }
        let kernel = Arc::new(Kernel::new(conn, view.root, Arc::clone(&ledger)));
        let fuse = FuseFs {
            fs,
            view,
            conn,
            passthrough: AtomicBool::new(false),
            ledger,
            kernel: Arc::clone(&kernel),
            io: IoModes::default(),
            requests,
        };
        (fuse, kernel)
    }

    /// Every request begins here: counted, and its thread known as one
    /// serving this connection (see [`crate::watch`]).
    fn begin(&self, op: Op) {
        self.requests.count(op);
        self.fs.kernels().serving(self.conn);
    }

    /// The watch's epoch, before an operation whose reply may be cached.
    fn seen(&self) -> u64 {
        self.fs.kernels().epoch()
    }

    /// After a reply that let the kernel cache `stale`: drops it again if
    /// something changed behind the kernel's back since `seen`.
    fn recheck(&self, seen: u64, stale: impl FnOnce() -> Vec<Stale>) {
        self.fs.kernels().recheck(seen, &self.kernel, stale);
    }

    /// How long the kernel may remember that a name in `dir` (the core's
    /// node id) does not exist.
    fn negative_ttl(&self, dir: u64) -> Duration {
        match self.fs.inodes().get(dir) {
            Ok(d) => self.view.ttls(self.fs.kernels().watches(d.key.dev)).entry,
            Err(_) => Duration::ZERO,
        }
    }

    /// Who sent `req` (with the umask the kernel passed, if any).
    fn caller(&self, req: &Request, umask: u32) -> Caller {
        self.view
            .resolver
            .caller(req.uid(), req.gid(), req.pid(), umask)
    }

    /// The core's node id for this connection's `ino`.
    fn node(&self, ino: INodeNo) -> u64 {
        self.view.inward(ino.0)
    }

    /// A reply gave the kernel a reference to `e`.
    fn took(&self, e: &Entry) {
        self.ledger.took(e.inode.id);
    }

    /// FUSE attributes of a core inode `id` with stat `st`, as this view
    /// shows them (host-owned files shifted into a single user-namespace
    /// guest's id range).
    fn attr(&self, id: u64, st: &Stat) -> FileAttr {
        let mut a = attr(self.view.outward(id), st);
        if let Some(shift) = self.view.id_shift() {
            if self.fs.tag_of(id) == Some(crate::tagging::Xid::HOST) {
                a.uid = shift.show(a.uid);
                a.gid = shift.show(a.gid);
            }
        }
        a
    }

    /// How long the kernel may cache an entry's name: not at all for a
    /// volatile one (see [`Entry::volatile`]).
    fn entry_ttl_of(&self, e: &Entry) -> Duration {
        if e.volatile {
            Duration::ZERO
        } else {
            self.view
                .ttls(self.fs.kernels().watches(e.stat.st_dev))
                .entry
        }
    }

    /// How long the kernel may cache attributes of an inode on device
    /// `dev`: not at all for volatile ones (see [`Entry::volatile_attr`]),
    /// briefly while it is open for `writing` (the watch sees a write at
    /// the writer's close, not at each write).
    fn attr_ttl_of(&self, volatile: bool, dev: u64, writing: bool) -> Duration {
        if volatile {
            Duration::ZERO
        } else {
            let watched = self.fs.kernels().watches(dev) && !writing;
            self.view.ttls(watched).attr
        }
    }

    /// How long the kernel may cache the attributes of entry `e`.
    fn entry_attr_ttl(&self, e: &Entry) -> Duration {
        self.attr_ttl_of(e.volatile_attr, e.stat.st_dev, e.inode.open_for_writing())
    }

    /// Replies with the entry `name` in `parent` (the core's node id)
    /// found, an operation begun at epoch `seen` (see [`FuseFs::recheck`]).
    fn reply_entry(
        &self,
        reply: ReplyEntry,
        result: Result<Entry, Error>,
        seen: u64,
        parent: u64,
        name: &OsStr,
    ) {
        match result {
            Ok(e) => {
                self.took(&e);
                reply.entry_with_ttls(
                    &self.entry_attr_ttl(&e),
                    &self.entry_ttl_of(&e),
                    &self.attr(e.inode.id, &e.stat),
                    Generation(e.inode.generation),
                );
                self.recheck(seen, || vec![Stale::Entry(parent, name.to_os_string())]);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn reply_stat(&self, reply: ReplyAttr, ino: INodeNo, result: Result<Attr, Error>, seen: u64) {
        match result {
            Ok(a) => {
                let id = self.node(ino);
                let mut attr = self.attr(id, &a.stat);
                if ino.0 == crate::inode::ROOT_ID {
                    // Node id 1 is fixed; the root shows its real number.
                    attr.ino = INodeNo(a.stat.st_ino);
                }
                reply.attr(
                    &self.attr_ttl_of(a.volatile, a.stat.st_dev, a.writing),
                    &attr,
                );
                self.recheck(seen, || vec![Stale::Attrs(id)]);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Decides how an open handle's data flows: through a (shared)
    /// passthrough registration when possible, else served by the daemon.
    ///
    /// The kernel allows one backing file per inode and refuses to mix
    /// passthrough opens with page-cache ones, so: an inode whose writes
    /// must all reach the daemon ([`Vxfs::writes_must_reach_daemon`]: any
    /// writable inode under accounting) is never passed through; an open
    /// needing more access than the inode's registration has is served by
    /// the daemon beside it (`FOPEN_DIRECT_IO`, reads and writes only); and
    /// while page-cached opens exist no new open may use passthrough.
    fn data_path(
        &self,
        handle: &Handle,
        flags: i32,
        open_backing: impl FnOnce(&Handle) -> std::io::Result<fuser::BackingId>,
    ) -> Result<DataPath, Error> {
        // flush() has nothing to do (data goes straight to the backing file,
        // locks are the kernel's), so spare every close a round trip.
        let base = FopenFlags::FOPEN_NOFLUSH;
        let direct = flags & libc::O_DIRECT != 0;
        let cached = || {
            if direct {
                DataPath::Daemon(base | FopenFlags::FOPEN_DIRECT_IO)
            } else {
                DataPath::Daemon(base)
            }
        };
        if !self.passthrough.load(Ordering::Relaxed) {
            // Page-cache opens of an inode only matter beside passthrough.
            return Ok(cached());
        }
        let access = OFlags::from_bits_retain(flags as u32) & OFlags::RWMODE;
        // A write by a user outside its group clears set-group-ID even
        // without group execute; the kernel's passthrough path does that
        // only with group execute, the daemon always (FUSE_HANDLE_KILLPRIV_V2).
        let sgid_without_gx = access != OFlags::RDONLY
            && rustix::fs::fstat(&handle.file)
                .is_ok_and(|st| st.st_mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID);
        let counted = self
            .fs
            .writes_must_reach_daemon(&handle.inode, self.view.read_only)?;
        self.io.with(handle.inode.id, |io| {
            // Through the daemon; page-cached unless O_DIRECT.
            let cached = |io: &mut crate::view::IoMode| {
                if !direct {
                    handle.cached.store(true, Ordering::Relaxed);
                    io.cached_opens += 1;
                }
                cached()
            };
            let mut open_flags = base;
            let backing = match io.backing.upgrade() {
                // Registered while the inode was immutable and opened again
                // since its flags were cleared: readers may share it, but a
                // writer would write through its mappings unseen.
                Some(_) if counted && access != OFlags::RDONLY => {
                    return Err(Error::Os(rustix::io::Errno::TXTBSY));
                }
                Some(b) if b.covers(access) && !sgid_without_gx => b,
                // The inode's one backing file was opened with less access
                // than this open needs (or its writes must clear what the
                // kernel's passthrough keeps): share the registration (mmap
                // goes to it) but take reads and writes through the daemon
                // (FOPEN_DIRECT_IO), on this handle's own descriptor.
                Some(b) => {
                    open_flags |= FopenFlags::FOPEN_DIRECT_IO;
                    b
                }
                None if counted || sgid_without_gx || io.cached_opens > 0 => {
                    return Ok(cached(io));
                }
                None => match open_backing(handle) {
                    Ok(id) => {
                        let b = Arc::new(Backing { id, access });
                        io.backing = Arc::downgrade(&b);
                        b
                    }
                    Err(e) => {
                        log::warn!(
                            "FUSE passthrough unavailable, serving file data in the daemon: {e}"
                        );
                        self.passthrough.store(false, Ordering::Relaxed);
                        return Ok(cached(io));
                    }
                },
            };
            let _ = handle.backing.set(Arc::clone(&backing));
            Ok(DataPath::Passthrough(backing, open_flags))
        })
    }

    /// Closes handle `fh` of this connection.
    fn release_handle(&self, fh: u64) -> Result<(), Error> {
        let handle = self.fs.handle(fh)?;
        if handle.cached.load(Ordering::Relaxed) {
            self.io.with(handle.inode.id, |io| {
                io.cached_opens = io.cached_opens.saturating_sub(1)
            });
        }
        // The registration dies with the last handle holding it.
        drop(handle);
        self.fs.op_release(fh)
    }
}

/// How the data of one open file flows.
#[derive(Debug)]
enum DataPath {
    /// Kernel passthrough to this backing registration, with these open
    /// flags.
    Passthrough(Arc<Backing>, FopenFlags),
    /// Through the daemon, with these open flags.
    Daemon(FopenFlags),
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Error>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, result: Result<XattrReply, Error>) {
    match result {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_BIG_WRITES
            // The daemon clears set-user-ID and set-group-ID on writes,
            // truncates and fallocates itself (the backing kernel removes
            // security.capability and handles chown): the kernel then asks
            // no GETXATTR security.capability per write, and no GETATTR
            // and SETATTR to kill the bits.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let _ = config.add_capabilities(wanted & config.capabilities());
        if !config.capabilities().contains(InitFlags::FUSE_DONT_MASK) {
            log::warn!("kernel lacks FUSE_DONT_MASK: default ACLs may be masked by the umask");
        }
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        if self.fs.options().passthrough {
            let ok = config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !ok {
                log::warn!("kernel has no FUSE passthrough: serving file data in the daemon");
            }
            self.passthrough.store(ok, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The connection ended (unmounted, or the daemon stops): the kernel
    /// sends no `FORGET`s then, so drop every reference it still held.
    fn destroy(&mut self) {
        for (id, n) in self.ledger.drain() {
            self.fs.op_forget(id, n);
        }
        self.fs.connection_ended(self.conn);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.begin(Op::Lookup);
        let seen = self.seen();
        let dir = self.node(parent);
        match self.fs.op_lookup(&self.caller(req, 0), dir, name) {
            // A negative entry (node id 0) lets the kernel cache the absence
            // for entry_timeout, sparing the lookups that untar, compilers
            // and shells repeat for names that do not exist.
            Err(Error::Os(rustix::io::Errno::NOENT)) => {
                let ttl = self.negative_ttl(dir);
                if ttl.is_zero() {
                    return reply.error(Errno::ENOENT);
                }
                let a = dot_attr(0, FileType::RegularFile);
                reply.entry_with_ttls(&Duration::ZERO, &ttl, &a, Generation(0));
                self.recheck(seen, || vec![Stale::Entry(dir, name.to_os_string())]);
            }
            result => self.reply_entry(reply, result, seen, dir, name),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.begin(Op::Forget);
        let id = self.node(ino);
        self.fs.op_forget(id, self.ledger.dropped(id, nlookup));
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.begin(Op::Getattr);
        let seen = self.seen();
        let result = self.fs.op_getattr(&self.caller(req, 0), self.node(ino));
        self.reply_stat(reply, ino, result, seen);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.begin(Op::Setattr);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_set(atime),
            mtime: time_set(mtime),
        };
        let seen = self.seen();
        let result =
            self.fs
                .op_setattr(&self.caller(req, 0), self.node(ino), fh.map(|f| f.0), &set);
        self.reply_stat(reply, ino, result, seen);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.begin(Op::Readlink);
        match self.fs.op_readlink(&self.caller(req, 0), self.node(ino)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.begin(Op::Mknod);
        let (seen, dir) = (self.seen(), self.node(parent));
        let caller = self.caller(req, umask);
        let result = self.fs.op_mknod(&caller, dir, name, mode, rdev.into());
        self.reply_entry(reply, result, seen, dir, name);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.begin(Op::Mkdir);
        let (seen, dir) = (self.seen(), self.node(parent));
        let result = self.fs.op_mkdir(&self.caller(req, umask), dir, name, mode);
        self.reply_entry(reply, result, seen, dir, name);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.begin(Op::Unlink);
        reply_empty(
            reply,
            self.fs
                .op_unlink(&self.caller(req, 0), self.node(parent), name),
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.begin(Op::Rmdir);
        reply_empty(
            reply,
            self.fs
                .op_rmdir(&self.caller(req, 0), self.node(parent), name),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.begin(Op::Symlink);
        let (seen, dir) = (self.seen(), self.node(parent));
        let result = self
            .fs
            .op_symlink(&self.caller(req, 0), dir, link_name, target);
        self.reply_entry(reply, result, seen, dir, link_name);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Rename);
        let result = self.fs.op_rename(
            &self.caller(req, 0),
            self.node(parent),
            name,
            self.node(newparent),
            newname,
            flags.bits(),
        );
        reply_empty(reply, result);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.begin(Op::Link);
        let (seen, dir) = (self.seen(), self.node(newparent));
        let result = self
            .fs
            .op_link(&self.caller(req, 0), self.node(ino), dir, newname);
        self.reply_entry(reply, result, seen, dir, newname);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.begin(Op::Open);
        match self
            .fs
            .op_open(&self.caller(req, 0), self.node(ino), flags.0)
        {
            Ok((fh, handle)) => {
                if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                    // The other mounts' kernels cached its attributes for
                    // long; from now on they cache them briefly.
                    let stale = Stale::Attrs(handle.inode.id);
                    self.fs.kernels().tell_others(self.conn, stale);
                }
                match self.data_path(&handle, flags.0, |h| reply.open_backing(&h.file)) {
                    Ok(DataPath::Passthrough(b, open_flags)) => {
                        reply.opened_passthrough(FileHandle(fh), open_flags, &b.id)
                    }
                    Ok(DataPath::Daemon(open_flags)) => reply.opened(FileHandle(fh), open_flags),
                    Err(e) => {
                        let _ = self.release_handle(fh);
                        reply.error(errno(e))
                    }
                }
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.begin(Op::Read);
        // Read straight into the transport's buffer (over io_uring, the
        // ring's payload buffer: no copy of the data in the daemon).
        reply.data_with(size as usize, |buf| {
            self.fs.op_read(fh.0, offset, buf).map_err(errno)
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.begin(Op::Write);
        let kill_privs = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self
            .fs
            .op_write(&self.caller(req, 0), fh.0, offset, data, kill_privs)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Flush);
        // Data goes straight to the backing file and locks are handled by the
        // kernel, so a close has nothing to flush.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Release);
        reply_empty(reply, self.release_handle(fh.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Fsync);
        reply_empty(reply, self.fs.op_fsync(fh.0, datasync));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.begin(Op::Opendir);
        let id = self.node(ino);
        match self.fs.op_opendir(&self.caller(req, 0), id, flags.0) {
            Ok(fh) => {
                let keep = if self.fs.listing_cacheable(id) {
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), keep)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.begin(Op::Readdir);
        let mut sink = |d: &DirEntry<'_>| {
            let ino = INodeNo(self.view.outward(d.ino));
            !reply.add(ino, d.next_offset, fuse_type(d.kind), d.name)
        };
        let caller = self.caller(req, 0);
        match self.fs.op_readdir(&caller, fh.0, offset, false, &mut sink) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.begin(Op::Readdirplus);
        let seen = self.seen();
        // The names given with entries, NUL-separated, for a recheck (only
        // a watch moves the epoch).
        let watching = self.fs.kernels().watching();
        let mut named: Vec<u8> = Vec::new();
        let mut sink = |d: &DirEntry<'_>| {
            let full = match &d.entry {
                Some(e) => {
                    let full = reply.add(
                        INodeNo(self.view.outward(e.inode.id)),
                        d.next_offset,
                        d.name,
                        // One lifetime for both name and attributes here.
                        &self.entry_ttl_of(e).min(self.entry_attr_ttl(e)),
                        &self.attr(e.inode.id, &e.stat),
                        Generation(e.inode.generation),
                    );
                    if !full {
                        self.took(e);
                        if watching {
                            named.extend_from_slice(d.name.as_bytes());
                            named.push(0);
                        }
                    }
                    full
                }
                // `.`, `..` and another guest's inode: no lookup, so node id
                // 0 (the kernel takes no reference and caches nothing) and
                // only the type matters.
                None => reply.add(
                    INodeNo(0),
                    d.next_offset,
                    d.name,
                    &Duration::ZERO,
                    &dot_attr(d.ino, d.kind),
                    Generation(0),
                ),
            };
            !full
        };
        let caller = self.caller(req, 0);
        match self.fs.op_readdir(&caller, fh.0, offset, true, &mut sink) {
            Ok(()) => {
                reply.ok();
                let dir = self.node(ino);
                self.recheck(seen, || {
                    named
                        .split(|b| *b == 0)
                        .filter(|n| !n.is_empty())
                        .map(|n| Stale::Entry(dir, OsStr::from_bytes(n).to_os_string()))
                        .collect()
                });
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Releasedir);
        reply_empty(reply, self.release_handle(fh.0));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Fsyncdir);
        reply_empty(reply, self.fs.op_fsync(fh.0, datasync));
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.begin(Op::Statfs);
        match self.fs.op_statfs(&self.caller(req, 0)) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Setxattr);
        let result = self
            .fs
            .op_setxattr(&self.caller(req, 0), self.node(ino), name, value, flags);
        reply_empty(reply, result);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.begin(Op::Getxattr);
        reply_xattr(
            reply,
            self.fs
                .op_getxattr(&self.caller(req, 0), self.node(ino), name, size),
        );
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.begin(Op::Listxattr);
        reply_xattr(
            reply,
            self.fs
                .op_listxattr(&self.caller(req, 0), self.node(ino), size),
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.begin(Op::Removexattr);
        reply_empty(
            reply,
            self.fs
                .op_removexattr(&self.caller(req, 0), self.node(ino), name),
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.begin(Op::Access);
        reply_empty(
            reply,
            self.fs
                .op_access(&self.caller(req, 0), self.node(ino), mask.bits()),
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.begin(Op::Create);
        let (seen, dir) = (self.seen(), self.node(parent));
        let caller = self.caller(req, umask);
        match self.fs.op_create(&caller, dir, name, mode, flags) {
            Ok((entry, fh, handle)) => {
                let a = self.attr(entry.inode.id, &entry.stat);
                let ttl = self.entry_ttl_of(&entry).min(self.entry_attr_ttl(&entry));
                let generation = Generation(entry.inode.generation);
                match self.data_path(&handle, flags, |h| reply.open_backing(&h.file)) {
                    Ok(DataPath::Passthrough(b, open_flags)) => {
                        self.took(&entry);
                        reply.created_passthrough(
                            &ttl,
                            &a,
                            generation,
                            FileHandle(fh),
                            open_flags,
                            &b.id,
                        );
                    }
                    Ok(DataPath::Daemon(open_flags)) => {
                        self.took(&entry);
                        reply.created(&ttl, &a, generation, FileHandle(fh), open_flags);
                    }
                    Err(e) => {
                        // Undo the kernel reference the entry would have given.
                        let _ = self.fs.op_release(fh);
                        self.fs.op_forget(entry.inode.id, 1);
                        return reply.error(errno(e));
                    }
                }
                self.recheck(seen, || vec![Stale::Entry(dir, name.to_os_string())]);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Fallocate);
        let caller = self.caller(req, 0);
        reply_empty(
            reply,
            self.fs.op_fallocate(&caller, fh.0, offset, length, mode),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.begin(Op::Lseek);
        match self.fs.op_lseek(fh.0, offset, whence) {
            Ok(pos) => reply.offset(pos),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.begin(Op::CopyFileRange);
        let result = self.fs.op_copy_file_range(
            &self.caller(req, 0),
            fh_in.0,
            offset_in,
            fh_out.0,
            offset_out,
            len,
        );
        match result {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// Attributes that carry no inode: for the `.` and `..` entries of
/// readdirplus (only the type is used) and for negative lookup entries.
fn dot_attr(ino: u64, kind: FileType) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuse_type(kind),
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

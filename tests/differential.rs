//! Differential tests: the same sequence of syscalls runs against a plain
//! directory on the backing filesystem (`native/`, the oracle) and against a
//! vxfs mount of `src/`, and every step's result (value or errno) as well as
//! the final tree state must agree.
//!
//! Each scenario is a function returning a list of [`Op`]s. The
//! `differential_tests!` macro at the bottom turns every scenario into three
//! tests:
//!
//! * `passthrough_on::NAME` — vxfs with default options (kernel passthrough),
//! * `passthrough_off::NAME` — vxfs with `-o passthrough=off`,
//! * `inode_fds_0::NAME` — vxfs with `-o inode_fds=0` (every inode re-opened
//!   by file handle),
//! * `native_twin::NAME` — native against a second native directory, which
//!   checks the scenario itself (its expectations and its determinism) without
//!   involving the daemon.
//!
//! A step may be wrapped in an expectation ([`fails`], [`ok`], [`gives`]); the
//! expectation is checked against the native result so that a scenario really
//! exercises the case it claims to (e.g. `EEXIST`), and the mount is then
//! compared with native.

// Unsafe is needed for path-based truncate(2) (libc) and unshare(CLONE_FS)
// for a per-thread umask; each unsafe block carries its own SAFETY note.
#![allow(unsafe_code)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr};
use std::fmt::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Mount, Scratch};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::Timespec;
use rustix::fs::{
    Access, AtFlags, Dir, FallocateFlags, FileType, FlockOperation, Gid, Mode, OFlags, RenameFlags,
    SeekFrom, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// A byte string with a readable, bounded `Debug`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct B(Vec<u8>);

impl B {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for B {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        let shown = &self.0[..self.0.len().min(SHOWN)];
        let text: String = shown
            .iter()
            .flat_map(|&c| std::ascii::escape_default(c))
            .map(char::from)
            .collect();
        if self.0.len() > SHOWN {
            write!(f, "b\"{text}\"...({} bytes)", self.0.len())
        } else {
            write!(f, "b\"{text}\"")
        }
    }
}

fn b(x: impl AsRef<[u8]>) -> B {
    B(x.as_ref().to_vec())
}

/// The parts of `struct stat` that must agree between native and vxfs.
#[derive(Clone, PartialEq, Eq)]
struct StatSum {
    kind: FileType,
    perm: u32,
    uid: u32,
    gid: u32,
    size: i64,
    nlink: u64,
    rdev: (u32, u32),
}

impl fmt::Debug for StatSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} mode={:04o} uid={} gid={} size={} nlink={} rdev={}:{}",
            self.kind,
            self.perm,
            self.uid,
            self.gid,
            self.size,
            self.nlink,
            self.rdev.0,
            self.rdev.1
        )
    }
}

fn stat_sum(st: &rustix::fs::Stat) -> StatSum {
    StatSum {
        kind: FileType::from_raw_mode(st.st_mode),
        perm: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size,
        nlink: st.st_nlink,
        rdev: (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)),
    }
}

/// The successful result of a step.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Unit,
    Num(u64),
    Bool(bool),
    Bytes(B),
    Stat(StatSum),
    /// `(atime, mtime)` as `(seconds, nanoseconds)`.
    Times((i64, i64), (i64, i64)),
    /// `(mtime, ctime)` later than a reference time.
    Newer(bool, bool),
    /// `st_blocks`; compared roughly (allocation may legitimately differ).
    Blocks(u64),
    /// Sorted xattr names (without `security.selinux`).
    Names(Vec<B>),
    /// Sorted directory entries with their `d_type`.
    Dirents(Vec<(B, FileType)>),
    Statfs(StatfsSum),
}

#[derive(Debug, Clone, PartialEq)]
struct StatfsSum {
    bsize: i64,
    frsize: i64,
    blocks: u64,
    files: u64,
    namelen: i64,
    /// Free counts: compared roughly, other tests share the disk.
    bfree: u64,
    bavail: u64,
    ffree: u64,
}

type Res = Result<Val, Errno>;

/// Whether two step results count as equal.
fn same(a: &Res, b: &Res) -> bool {
    match (a, b) {
        (Ok(Val::Blocks(x)), Ok(Val::Blocks(y))) => {
            // The same writes on the same filesystem allocate the same
            // blocks; ext4 may preallocate differently for a large file
            // written in other chunks, so one 4 KiB block per MiB is let go.
            x.abs_diff(*y) <= 8 * (x.max(y) / 2048)
        }
        (Ok(Val::Statfs(x)), Ok(Val::Statfs(y))) => {
            let near = |p: u64, q: u64, total: u64| p.abs_diff(q) <= total / 100 + 1024;
            x.bsize == y.bsize
                && x.frsize == y.frsize
                && x.blocks == y.blocks
                && x.files == y.files
                && x.namelen == y.namelen
                && near(x.bfree, y.bfree, x.blocks)
                && near(x.bavail, y.bavail, x.blocks)
                && near(x.ffree, y.ffree, x.files)
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// Which lock another process tries to take (see [`Op::Child`]).
#[derive(Debug, Clone, Copy)]
enum ChildLock {
    FcntlExclusive,
    FcntlShared,
    FlockExclusive,
    FlockShared,
}

impl ChildLock {
    fn name(self) -> &'static str {
        match self {
            ChildLock::FcntlExclusive => "fcntl-ex",
            ChildLock::FcntlShared => "fcntl-sh",
            ChildLock::FlockExclusive => "flock-ex",
            ChildLock::FlockShared => "flock-sh",
        }
    }
}

/// What a step is expected to give on native (a scenario self-check).
#[derive(Debug, Clone)]
enum Want {
    Ok,
    Err(Errno),
    Val(Val),
}

/// One syscall-level step. Paths are relative to the tree root; `slot`s
/// name file descriptors held across steps.
#[derive(Debug, Clone)]
enum Op {
    /// Runs `op` and checks its native result against `want`.
    Expect(Want, Box<Op>),
    /// Runs `op` on a thread with these credentials (no supplementary
    /// groups beyond `groups`).
    As {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
        op: Box<Op>,
    },
    /// Runs `op` on a thread with its own umask.
    Umask(u32, Box<Op>),
    Open {
        path: B,
        flags: OFlags,
        mode: u32,
        slot: u8,
    },
    Close(u8),
    Write(u8, B),
    Read(u8, usize),
    Pwrite(u8, B, u64),
    Pread(u8, usize, u64),
    Seek(u8, SeekFrom),
    Ftruncate(u8, u64),
    Fallocate(u8, FallocateFlags, u64, u64),
    Fsync(u8),
    Fdatasync(u8),
    Fstat(u8),
    Fchmod(u8, u32),
    /// `linkat(fd, "", root, path, AT_EMPTY_PATH)`.
    LinkFd(u8, B),
    /// `O_DIRECT`-friendly pwrite of `len` bytes of `fill` from an aligned buffer.
    DirectPwrite(u8, u64, usize, u8),
    /// `O_DIRECT`-friendly pread into an aligned buffer.
    DirectPread(u8, u64, usize),
    CopyFileRange {
        from: u8,
        to: u8,
        off_in: u64,
        off_out: u64,
        len: usize,
    },
    Flock(u8, FlockOperation),
    FcntlLock(u8, FlockOperation),
    /// Another process opens `path` and tries a non-blocking lock.
    Child(B, ChildLock),
    /// Creates/truncates `path` (mode 0644 before umask) and writes the data.
    WriteFile(B, B),
    /// Reads the whole file.
    ReadAll(B),
    Truncate(B, u64),
    Stat(B),
    Lstat(B),
    /// `(atime, mtime)` of the path itself (no follow).
    Times(B),
    /// Whether the path's `(mtime, ctime)` are later than the given second.
    NewerThan(B, i64),
    /// `st_blocks` of the path.
    Blocks(B),
    /// Whether both paths name the same inode (on the tree under test).
    SameIno(B, B),
    Mkdir(B, u32),
    Rmdir(B),
    Unlink(B),
    Rename(B, B, RenameFlags),
    Link(B, B),
    Symlink {
        target: B,
        path: B,
    },
    Readlink(B),
    Mknod {
        path: B,
        kind: FileType,
        mode: u32,
        dev: (u32, u32),
    },
    Chmod(B, u32),
    Chown {
        path: B,
        uid: Option<u32>,
        gid: Option<u32>,
        nofollow: bool,
    },
    /// `utimensat` with `(sec, nsec)` pairs; nsec may be `UTIME_OMIT`/`UTIME_NOW`.
    Utimens {
        path: B,
        atime: (i64, i64),
        mtime: (i64, i64),
        nofollow: bool,
    },
    CheckAccess(B, Access),
    SetXattr {
        path: B,
        name: B,
        value: B,
        flags: XattrFlags,
        nofollow: bool,
    },
    /// `size == 0` queries the length.
    GetXattr {
        path: B,
        name: B,
        size: usize,
    },
    /// `None` lists with an exact buffer and returns sorted names; `Some(0)`
    /// queries the length; `Some(n)` uses an n-byte buffer.
    ListXattr {
        path: B,
        size: Option<usize>,
        nofollow: bool,
    },
    RemoveXattr(B, B),
    Readdir(B),
    Statfs(B),
    /// `f_namelen` of the filesystem holding the path.
    Namelen(B),
    /// Maps the whole file `MAP_SHARED`, writes `data` at `off`, msyncs, unmaps.
    MmapWrite(B, usize, B),
    /// Maps the whole file `MAP_SHARED` and returns `len` bytes at `off`.
    MmapRead(B, usize, usize),
}

// ---------------------------------------------------------------------------
// Interpreter
// ---------------------------------------------------------------------------

/// One side of the comparison: a tree root and the descriptors of a run.
struct Ctx {
    root: PathBuf,
    dir: OwnedFd,
    fds: HashMap<u8, OwnedFd>,
    /// The libtest name of the running test, for re-executing a lock child.
    test: String,
}

impl Ctx {
    fn new(root: PathBuf, test: &str) -> Ctx {
        let dir = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("open root {}: {e}", root.display()));
        Ctx {
            root,
            dir,
            fds: HashMap::new(),
            test: test.to_string(),
        }
    }

    fn fd(&self, slot: u8) -> Result<BorrowedFd<'_>, Errno> {
        self.fds.get(&slot).map(|f| f.as_fd()).ok_or(Errno::BADF)
    }

    fn abs(&self, rel: &B) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel.bytes()))
    }
}

fn mode(m: u32) -> Mode {
    Mode::from_raw_mode(m)
}

fn open_at(ctx: &Ctx, path: &B, flags: OFlags, m: u32) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(&ctx.dir, path.bytes(), flags | OFlags::CLOEXEC, mode(m))
}

fn read_to_end(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = rustix::io::read(fd, &mut buf[..])?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        let n = rustix::io::write(fd, data)?;
        if n == 0 {
            return Err(Errno::IO);
        }
        data = &data[n..];
    }
    Ok(())
}

/// A zeroed buffer with a 4096-byte aligned window of `len` bytes.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + 4096];
        let start = buf.as_ptr().align_offset(4096);
        Aligned { buf, start, len }
    }

    fn slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

fn xattr_list(path: &Path, size: Option<usize>, nofollow: bool) -> Res {
    let list = |buf: &mut [u8]| {
        if nofollow {
            rustix::fs::llistxattr(path, buf)
        } else {
            rustix::fs::listxattr(path, buf)
        }
    };
    let query = || {
        if nofollow {
            rustix::fs::llistxattr_query(path)
        } else {
            rustix::fs::listxattr_query(path)
        }
    };
    match size {
        Some(0) => Ok(Val::Num(query()? as u64)),
        Some(n) => {
            let mut buf = vec![0u8; n];
            let got = list(&mut buf)?;
            Ok(Val::Names(split_names(&buf[..got])))
        }
        None => {
            let need = query()?;
            let mut buf = vec![0u8; need + 64];
            let got = list(&mut buf)?;
            Ok(Val::Names(split_names(&buf[..got])))
        }
    }
}

fn split_names(raw: &[u8]) -> Vec<B> {
    let mut names: Vec<B> = raw
        .split(|&c| c == 0)
        .filter(|n| !n.is_empty() && *n != b"security.selinux")
        .map(b)
        .collect();
    names.sort();
    names
}

fn to_ts((sec, nsec): (i64, i64)) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

fn run(ctx: &mut Ctx, op: &Op) -> Res {
    use Val::{Bool, Bytes, Num, Unit};
    match op {
        Op::Expect(_, op) => run(ctx, op),
        Op::As {
            uid,
            gid,
            groups,
            op,
        } => std::thread::scope(|s| {
            s.spawn(|| {
                let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
                rustix::thread::set_thread_groups(&groups).expect("setgroups");
                let g = Gid::from_raw(*gid);
                rustix::thread::set_thread_res_gid(g, g, g).expect("setresgid");
                let u = Uid::from_raw(*uid);
                rustix::thread::set_thread_res_uid(u, u, u).expect("setresuid");
                run(ctx, op)
            })
            .join()
            .expect("credential thread panicked")
        }),
        Op::Umask(mask, op) => std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: only CLONE_FS is unshared: this thread gets its own
                // copy of cwd/root/umask; the fd table stays shared.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                    .expect("unshare(CLONE_FS)");
                rustix::process::umask(mode(*mask));
                run(ctx, op)
            })
            .join()
            .expect("umask thread panicked")
        }),
        Op::Open {
            path,
            flags,
            mode: m,
            slot,
        } => {
            let fd = open_at(ctx, path, *flags, *m)?;
            ctx.fds.insert(*slot, fd);
            Ok(Unit)
        }
        Op::Close(slot) => {
            ctx.fds.remove(slot).ok_or(Errno::BADF)?;
            Ok(Unit)
        }
        Op::Write(slot, data) => Ok(Num(rustix::io::write(ctx.fd(*slot)?, data.bytes())? as u64)),
        Op::Read(slot, len) => {
            let mut buf = vec![0u8; *len];
            let n = rustix::io::read(ctx.fd(*slot)?, &mut buf[..])?;
            buf.truncate(n);
            Ok(Bytes(B(buf)))
        }
        Op::Pwrite(slot, data, off) => {
            Ok(Num(
                rustix::io::pwrite(ctx.fd(*slot)?, data.bytes(), *off)? as u64
            ))
        }
        Op::Pread(slot, len, off) => {
            let mut buf = vec![0u8; *len];
            let n = rustix::io::pread(ctx.fd(*slot)?, &mut buf[..], *off)?;
            buf.truncate(n);
            Ok(Bytes(B(buf)))
        }
        Op::Seek(slot, pos) => Ok(Num(rustix::fs::seek(ctx.fd(*slot)?, *pos)?)),
        Op::Ftruncate(slot, len) => {
            rustix::fs::ftruncate(ctx.fd(*slot)?, *len)?;
            Ok(Unit)
        }
        Op::Fallocate(slot, flags, off, len) => {
            rustix::fs::fallocate(ctx.fd(*slot)?, *flags, *off, *len)?;
            Ok(Unit)
        }
        Op::Fsync(slot) => {
            rustix::fs::fsync(ctx.fd(*slot)?)?;
            Ok(Unit)
        }
        Op::Fdatasync(slot) => {
            rustix::fs::fdatasync(ctx.fd(*slot)?)?;
            Ok(Unit)
        }
        Op::Fstat(slot) => Ok(Val::Stat(stat_sum(&rustix::fs::fstat(ctx.fd(*slot)?)?))),
        Op::Fchmod(slot, m) => {
            rustix::fs::fchmod(ctx.fd(*slot)?, mode(*m))?;
            Ok(Unit)
        }
        Op::LinkFd(slot, path) => {
            rustix::fs::linkat(
                ctx.fd(*slot)?,
                "",
                &ctx.dir,
                path.bytes(),
                AtFlags::EMPTY_PATH,
            )?;
            Ok(Unit)
        }
        Op::DirectPwrite(slot, off, len, fill) => {
            let mut buf = Aligned::new(*len);
            buf.slice().fill(*fill);
            Ok(Num(
                rustix::io::pwrite(ctx.fd(*slot)?, buf.slice(), *off)? as u64
            ))
        }
        Op::DirectPread(slot, off, len) => {
            let mut buf = Aligned::new(*len);
            let n = rustix::io::pread(ctx.fd(*slot)?, buf.slice(), *off)?;
            Ok(Bytes(B(buf.slice()[..n].to_vec())))
        }
        Op::CopyFileRange {
            from,
            to,
            off_in,
            off_out,
            len,
        } => {
            let (mut i, mut o) = (*off_in, *off_out);
            let n = rustix::fs::copy_file_range(
                ctx.fd(*from)?,
                Some(&mut i),
                ctx.fd(*to)?,
                Some(&mut o),
                *len,
            )?;
            Ok(Num(n as u64))
        }
        Op::Flock(slot, how) => {
            rustix::fs::flock(ctx.fd(*slot)?, *how)?;
            Ok(Unit)
        }
        Op::FcntlLock(slot, how) => {
            rustix::fs::fcntl_lock(ctx.fd(*slot)?, *how)?;
            Ok(Unit)
        }
        Op::Child(path, kind) => child_lock(&ctx.test, &ctx.abs(path), *kind),
        Op::WriteFile(path, data) => {
            let fd = open_at(
                ctx,
                path,
                OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
                0o644,
            )?;
            write_all(fd.as_fd(), data.bytes())?;
            Ok(Unit)
        }
        Op::ReadAll(path) => {
            let fd = open_at(ctx, path, OFlags::RDONLY, 0)?;
            Ok(Bytes(B(read_to_end(fd.as_fd())?)))
        }
        Op::Truncate(path, len) => {
            let c = CString::new(ctx.abs(path).into_os_string().into_encoded_bytes())
                .map_err(|_| Errno::INVAL)?;
            let len = libc::off_t::try_from(*len).map_err(|_| Errno::INVAL)?;
            // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
            let rc = unsafe { libc::truncate(c.as_ptr(), len) };
            if rc == 0 {
                Ok(Unit)
            } else {
                Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
            }
        }
        Op::Stat(path) => Ok(Val::Stat(stat_sum(&rustix::fs::statat(
            &ctx.dir,
            path.bytes(),
            AtFlags::empty(),
        )?))),
        Op::Lstat(path) => Ok(Val::Stat(stat_sum(&rustix::fs::statat(
            &ctx.dir,
            path.bytes(),
            AtFlags::SYMLINK_NOFOLLOW,
        )?))),
        Op::Times(path) => {
            let st = rustix::fs::statat(&ctx.dir, path.bytes(), AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(Val::Times(
                (st.st_atime, st.st_atime_nsec as i64),
                (st.st_mtime, st.st_mtime_nsec as i64),
            ))
        }
        Op::NewerThan(path, t) => {
            let st = rustix::fs::statat(&ctx.dir, path.bytes(), AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(Val::Newer(st.st_mtime > *t, st.st_ctime > *t))
        }
        Op::Blocks(path) => {
            let st = rustix::fs::statat(&ctx.dir, path.bytes(), AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(Val::Blocks(st.st_blocks as u64))
        }
        Op::SameIno(a, c) => {
            let x = rustix::fs::statat(&ctx.dir, a.bytes(), AtFlags::SYMLINK_NOFOLLOW)?;
            let y = rustix::fs::statat(&ctx.dir, c.bytes(), AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(Bool(x.st_ino == y.st_ino && x.st_dev == y.st_dev))
        }
        Op::Mkdir(path, m) => {
            rustix::fs::mkdirat(&ctx.dir, path.bytes(), mode(*m))?;
            Ok(Unit)
        }
        Op::Rmdir(path) => {
            rustix::fs::unlinkat(&ctx.dir, path.bytes(), AtFlags::REMOVEDIR)?;
            Ok(Unit)
        }
        Op::Unlink(path) => {
            rustix::fs::unlinkat(&ctx.dir, path.bytes(), AtFlags::empty())?;
            Ok(Unit)
        }
        Op::Rename(from, to, flags) => {
            rustix::fs::renameat_with(&ctx.dir, from.bytes(), &ctx.dir, to.bytes(), *flags)?;
            Ok(Unit)
        }
        Op::Link(from, to) => {
            rustix::fs::linkat(
                &ctx.dir,
                from.bytes(),
                &ctx.dir,
                to.bytes(),
                AtFlags::empty(),
            )?;
            Ok(Unit)
        }
        Op::Symlink { target, path } => {
            rustix::fs::symlinkat(target.bytes(), &ctx.dir, path.bytes())?;
            Ok(Unit)
        }
        Op::Readlink(path) => Ok(Bytes(B(rustix::fs::readlinkat(
            &ctx.dir,
            path.bytes(),
            Vec::new(),
        )?
        .into_bytes()))),
        Op::Mknod {
            path,
            kind,
            mode: m,
            dev,
        } => {
            rustix::fs::mknodat(
                &ctx.dir,
                path.bytes(),
                *kind,
                mode(*m),
                rustix::fs::makedev(dev.0, dev.1),
            )?;
            Ok(Unit)
        }
        Op::Chmod(path, m) => {
            rustix::fs::chmodat(&ctx.dir, path.bytes(), mode(*m), AtFlags::empty())?;
            Ok(Unit)
        }
        Op::Chown {
            path,
            uid,
            gid,
            nofollow,
        } => {
            let flags = if *nofollow {
                AtFlags::SYMLINK_NOFOLLOW
            } else {
                AtFlags::empty()
            };
            rustix::fs::chownat(
                &ctx.dir,
                path.bytes(),
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                flags,
            )?;
            Ok(Unit)
        }
        Op::Utimens {
            path,
            atime,
            mtime,
            nofollow,
        } => {
            let flags = if *nofollow {
                AtFlags::SYMLINK_NOFOLLOW
            } else {
                AtFlags::empty()
            };
            let times = Timestamps {
                last_access: to_ts(*atime),
                last_modification: to_ts(*mtime),
            };
            rustix::fs::utimensat(&ctx.dir, path.bytes(), &times, flags)?;
            Ok(Unit)
        }
        Op::CheckAccess(path, how) => {
            rustix::fs::accessat(&ctx.dir, path.bytes(), *how, AtFlags::empty())?;
            Ok(Unit)
        }
        Op::SetXattr {
            path,
            name,
            value,
            flags,
            nofollow,
        } => {
            let p = ctx.abs(path);
            if *nofollow {
                rustix::fs::lsetxattr(&p, name.bytes(), value.bytes(), *flags)?;
            } else {
                rustix::fs::setxattr(&p, name.bytes(), value.bytes(), *flags)?;
            }
            Ok(Unit)
        }
        Op::GetXattr { path, name, size } => {
            let p = ctx.abs(path);
            if *size == 0 {
                return Ok(Num(rustix::fs::getxattr_query(&p, name.bytes())? as u64));
            }
            let mut buf = vec![0u8; *size];
            let n = rustix::fs::getxattr(&p, name.bytes(), &mut buf[..])?;
            buf.truncate(n);
            Ok(Bytes(B(buf)))
        }
        Op::ListXattr {
            path,
            size,
            nofollow,
        } => xattr_list(&ctx.abs(path), *size, *nofollow),
        Op::RemoveXattr(path, name) => {
            rustix::fs::removexattr(ctx.abs(path), name.bytes())?;
            Ok(Unit)
        }
        Op::Readdir(path) => {
            let fd = open_at(ctx, path, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
            let mut dir = Dir::new(fd)?;
            let mut out = Vec::new();
            while let Some(entry) = dir.read() {
                let entry = entry?;
                out.push((b(entry.file_name().to_bytes()), entry.file_type()));
            }
            out.sort_by(|x, y| x.0.cmp(&y.0));
            Ok(Val::Dirents(out))
        }
        Op::Statfs(path) => {
            let st = rustix::fs::statfs(ctx.abs(path))?;
            Ok(Val::Statfs(StatfsSum {
                bsize: st.f_bsize,
                frsize: st.f_frsize,
                blocks: st.f_blocks,
                files: st.f_files,
                namelen: st.f_namelen,
                bfree: st.f_bfree,
                bavail: st.f_bavail,
                ffree: st.f_ffree,
            }))
        }
        Op::Namelen(path) => Ok(Num(rustix::fs::statfs(ctx.abs(path))?.f_namelen as u64)),
        Op::MmapWrite(path, off, data) => {
            let fd = open_at(ctx, path, OFlags::RDWR, 0)?;
            let (off, data) = (*off, data.bytes());
            common::with_shared_map(fd.as_fd(), |map| {
                assert!(
                    off + data.len() <= map.len(),
                    "scenario bug: MmapWrite beyond the file size"
                );
                map[off..off + data.len()].copy_from_slice(data);
            })?;
            Ok(Unit)
        }
        Op::MmapRead(path, off, len) => {
            let fd = open_at(ctx, path, OFlags::RDWR, 0)?;
            let (off, len) = (*off, *len);
            let got = common::with_shared_map(fd.as_fd(), |map| {
                assert!(
                    off + len <= map.len(),
                    "scenario bug: MmapRead beyond the file size"
                );
                map[off..off + len].to_vec()
            })?;
            Ok(Bytes(B(got)))
        }
    }
}

// ---------------------------------------------------------------------------
// Lock child: the test binary re-executes itself to get a second process.
// ---------------------------------------------------------------------------

const CHILD_OP_ENV: &str = "VXFS_DIFF_CHILD_OP";
const CHILD_PATH_ENV: &str = "VXFS_DIFF_CHILD_PATH";
const CHILD_MARK: &str = "VXFS-DIFF-CHILD-RESULT";

/// In a re-executed child: performs the requested lock attempt, prints the
/// result and returns true. In a normal test run: returns false.
fn child_main() -> bool {
    let Some(op) = std::env::var_os(CHILD_OP_ENV) else {
        return false;
    };
    let path = std::env::var_os(CHILD_PATH_ENV).expect("lock child without a path");
    let res = (|| -> Result<(), Errno> {
        let fd = rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        match op.to_str() {
            Some("fcntl-ex") => {
                rustix::fs::fcntl_lock(&fd, FlockOperation::NonBlockingLockExclusive)
            }
            Some("fcntl-sh") => rustix::fs::fcntl_lock(&fd, FlockOperation::NonBlockingLockShared),
            Some("flock-ex") => rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive),
            Some("flock-sh") => rustix::fs::flock(&fd, FlockOperation::NonBlockingLockShared),
            other => panic!("unknown lock child op {other:?}"),
        }
    })();
    let code = match res {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    };
    println!("{CHILD_MARK} {code}");
    true
}

fn child_lock(test: &str, path: &Path, kind: ChildLock) -> Res {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_OP_ENV, kind.name())
        .env(CHILD_PATH_ENV, path)
        .output()
        .expect("spawn lock child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints on the same line, so look for the marker anywhere.
    let code: i32 = stdout
        .split(CHILD_MARK)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "lock child gave no result ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    if code == 0 {
        Ok(Val::Unit)
    } else {
        Err(Errno::from_raw_os_error(code))
    }
}

// ---------------------------------------------------------------------------
// Tree snapshots
// ---------------------------------------------------------------------------

/// Everything compared about one tree entry at the end of a scenario.
#[derive(Clone, PartialEq)]
struct Node {
    stat: StatSum,
    target: Option<B>,
    content: Option<B>,
    xattrs: Vec<(B, B)>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.stat)?;
        if let Some(t) = &self.target {
            write!(f, " -> {t:?}")?;
        }
        if let Some(c) = &self.content {
            write!(f, " content={c:?}")?;
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs={:?}", self.xattrs)?;
        }
        Ok(())
    }
}

type Tree = BTreeMap<B, Result<Node, String>>;

fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    walk(root, Vec::new(), &mut tree);
    tree
}

fn walk(root: &Path, rel: Vec<u8>, tree: &mut Tree) {
    let path = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(&rel))
    };
    let key = if rel.is_empty() {
        b(".")
    } else {
        B(rel.clone())
    };
    let node = node(&path);
    let is_dir = matches!(&node, Ok(n) if n.stat.kind == FileType::Directory);
    tree.insert(key, node);
    if !is_dir {
        return;
    }
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) => {
            tree.insert(B([&rel[..], b"/<readdir>"].concat()), Err(e.to_string()));
            return;
        }
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name().as_bytes().to_vec()),
            Err(e) => {
                tree.insert(B([&rel[..], b"/<readdir>"].concat()), Err(e.to_string()));
            }
        }
    }
    names.sort();
    for name in names {
        let child = if rel.is_empty() {
            name
        } else {
            [&rel[..], b"/", &name[..]].concat()
        };
        walk(root, child, tree);
    }
}

fn node(path: &Path) -> Result<Node, String> {
    let st = rustix::fs::lstat(path).map_err(|e| format!("lstat: {e}"))?;
    let stat = stat_sum(&st);
    let target = match stat.kind {
        FileType::Symlink => Some(B(std::fs::read_link(path)
            .map_err(|e| format!("readlink: {e}"))?
            .into_os_string()
            .into_encoded_bytes())),
        _ => None,
    };
    let content = match stat.kind {
        FileType::RegularFile => Some(B(std::fs::read(path).map_err(|e| format!("read: {e}"))?)),
        _ => None,
    };
    let need = rustix::fs::llistxattr_query(path).map_err(|e| format!("llistxattr: {e}"))?;
    let mut raw = vec![0u8; need + 64];
    let got = rustix::fs::llistxattr(path, &mut raw[..]).map_err(|e| format!("llistxattr: {e}"))?;
    let mut xattrs = Vec::new();
    for name in split_names(&raw[..got]) {
        let len = rustix::fs::lgetxattr_query(path, name.bytes())
            .map_err(|e| format!("lgetxattr {name:?}: {e}"))?;
        let mut value = vec![0u8; len + 64];
        let n = rustix::fs::lgetxattr(path, name.bytes(), &mut value[..])
            .map_err(|e| format!("lgetxattr {name:?}: {e}"))?;
        value.truncate(n);
        xattrs.push((name, B(value)));
    }
    Ok(Node {
        stat,
        target,
        content,
        xattrs,
    })
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

fn tree_diff(native: &Tree, mounted: &Tree) -> String {
    let mut out = String::new();
    let keys: BTreeSet<&B> = native.keys().chain(mounted.keys()).collect();
    for key in keys {
        match (native.get(key), mounted.get(key)) {
            (Some(n), None) => writeln!(out, "  {key:?}: only in native: {n:?}").unwrap(),
            (None, Some(m)) => writeln!(out, "  {key:?}: only in vxfs: {m:?}").unwrap(),
            (Some(n), Some(m)) if n != m => {
                writeln!(
                    out,
                    "  {key:?} differs:\n    native: {n:?}\n    vxfs:   {m:?}"
                )
                .unwrap();
                if let (Ok(n), Ok(m)) = (n, m) {
                    if let (Some(x), Some(y)) = (&n.content, &m.content) {
                        if let Some(at) = first_difference(x.bytes(), y.bytes()) {
                            writeln!(
                                out,
                                "    content: first difference at offset {at} (native {} bytes, vxfs {} bytes)",
                                x.0.len(),
                                y.0.len()
                            )
                            .unwrap();
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

fn describe(op: &Op) -> String {
    match op {
        Op::Expect(want, op) => format!("{:?}   [expect {want:?}]", strip(op)),
        op => format!("{op:?}"),
    }
}

fn strip(op: &Op) -> &Op {
    match op {
        Op::Expect(_, op) => strip(op),
        op => op,
    }
}

fn want_matches(want: &Want, res: &Res) -> bool {
    match (want, res) {
        (Want::Ok, Ok(_)) => true,
        (Want::Err(e), Err(got)) => e == got,
        (Want::Val(v), Ok(got)) => same(&Ok(v.clone()), &Ok(got.clone())),
        _ => false,
    }
}

/// Runs `scenario` on native and on the tree under test (a vxfs mount with
/// `opts`, or a second native directory when `opts` is `None`).
fn entry(test: &str, scenario: fn() -> Vec<Op>, opts: Option<&str>) {
    if child_main() {
        return;
    }
    let ops = scenario();
    let scratch = Scratch::new();
    let (mount, other_root) = match opts {
        Some(opts) => (Some(Mount::scratch(&scratch, opts)), scratch.mnt()),
        None => {
            let twin = scratch.path().join("twin");
            std::fs::create_dir(&twin).expect("create twin dir");
            (None, twin)
        }
    };
    let label = match opts {
        None => "native twin".to_string(),
        Some("") => "vxfs (default options)".to_string(),
        Some(o) => format!("vxfs -o {o}"),
    };
    let mut native = Ctx::new(scratch.native(), test);
    let mut other = Ctx::new(other_root.clone(), test);

    let mut report = String::new();
    let mut mismatches = 0;
    for (i, op) in ops.iter().enumerate() {
        let a = run(&mut native, op);
        let z = run(&mut other, op);
        if let Op::Expect(want, _) = op {
            assert!(
                want_matches(want, &a),
                "{test}: scenario bug at step {i}: {}\n  native gave {a:?}",
                describe(op)
            );
        }
        if !same(&a, &z) {
            mismatches += 1;
            if mismatches <= 20 {
                writeln!(
                    report,
                    "step {i}: {}\n  native: {a:?}\n  {label}: {z:?}",
                    describe(op)
                )
                .unwrap();
                if let (Ok(Val::Bytes(x)), Ok(Val::Bytes(y))) = (&a, &z) {
                    if let Some(at) = first_difference(x.bytes(), y.bytes()) {
                        writeln!(report, "  first differing byte at offset {at}").unwrap();
                    }
                }
            }
        }
    }
    if mismatches > 20 {
        writeln!(report, "... and {} more differing steps", mismatches - 20).unwrap();
    }
    if let (Some(m), Some("")) = (&mount, opts) {
        // Default options: the data of this scenario went through passthrough.
        m.assert_no_passthrough_fallback();
    }
    drop(native);
    drop(other);

    let diff = tree_diff(&snapshot(&scratch.native()), &snapshot(&other_root));
    if !diff.is_empty() {
        writeln!(report, "final tree differs (native vs {label}):\n{diff}").unwrap();
    }
    if !report.is_empty() {
        let log = mount.as_ref().map(|m| m.log_text()).unwrap_or_default();
        panic!("{test}: {label} diverged from native\n{report}\n--- daemon log ---\n{log}");
    }
    drop(mount);
}

// ---------------------------------------------------------------------------
// Scenario building blocks
// ---------------------------------------------------------------------------

fn ok(op: Op) -> Op {
    Op::Expect(Want::Ok, Box::new(op))
}

fn fails(e: Errno, op: Op) -> Op {
    Op::Expect(Want::Err(e), Box::new(op))
}

fn gives(v: Val, op: Op) -> Op {
    Op::Expect(Want::Val(v), Box::new(op))
}

fn put(path: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Op {
    Op::WriteFile(b(path), b(data))
}

fn read_all(path: impl AsRef<[u8]>) -> Op {
    Op::ReadAll(b(path))
}

fn open(path: impl AsRef<[u8]>, flags: OFlags, slot: u8) -> Op {
    open_mode(path, flags, 0o644, slot)
}

fn open_mode(path: impl AsRef<[u8]>, flags: OFlags, mode: u32, slot: u8) -> Op {
    Op::Open {
        path: b(path),
        flags,
        mode,
        slot,
    }
}

fn create(path: impl AsRef<[u8]>, mode: u32) -> Vec<Op> {
    vec![
        open_mode(
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            mode,
            200,
        ),
        Op::Close(200),
    ]
}

fn mkdir(path: impl AsRef<[u8]>, mode: u32) -> Op {
    Op::Mkdir(b(path), mode)
}

fn stat(path: impl AsRef<[u8]>) -> Op {
    Op::Stat(b(path))
}

fn lstat(path: impl AsRef<[u8]>) -> Op {
    Op::Lstat(b(path))
}

fn chmod(path: impl AsRef<[u8]>, mode: u32) -> Op {
    Op::Chmod(b(path), mode)
}

fn chown(path: impl AsRef<[u8]>, uid: Option<u32>, gid: Option<u32>) -> Op {
    Op::Chown {
        path: b(path),
        uid,
        gid,
        nofollow: false,
    }
}

fn unlink(path: impl AsRef<[u8]>) -> Op {
    Op::Unlink(b(path))
}

fn rename(from: impl AsRef<[u8]>, to: impl AsRef<[u8]>, flags: RenameFlags) -> Op {
    Op::Rename(b(from), b(to), flags)
}

fn link(from: impl AsRef<[u8]>, to: impl AsRef<[u8]>) -> Op {
    Op::Link(b(from), b(to))
}

fn symlink(target: impl AsRef<[u8]>, path: impl AsRef<[u8]>) -> Op {
    Op::Symlink {
        target: b(target),
        path: b(path),
    }
}

fn mknod(path: impl AsRef<[u8]>, kind: FileType, mode: u32, dev: (u32, u32)) -> Op {
    Op::Mknod {
        path: b(path),
        kind,
        mode,
        dev,
    }
}

fn setx(path: impl AsRef<[u8]>, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Op {
    setx_flags(path, name, value, XattrFlags::empty())
}

fn setx_flags(
    path: impl AsRef<[u8]>,
    name: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
    flags: XattrFlags,
) -> Op {
    Op::SetXattr {
        path: b(path),
        name: b(name),
        value: b(value),
        flags,
        nofollow: false,
    }
}

fn getx(path: impl AsRef<[u8]>, name: impl AsRef<[u8]>, size: usize) -> Op {
    Op::GetXattr {
        path: b(path),
        name: b(name),
        size,
    }
}

fn listx(path: impl AsRef<[u8]>) -> Op {
    Op::ListXattr {
        path: b(path),
        size: None,
        nofollow: false,
    }
}

fn utimens(path: impl AsRef<[u8]>, atime: (i64, i64), mtime: (i64, i64)) -> Op {
    Op::Utimens {
        path: b(path),
        atime,
        mtime,
        nofollow: false,
    }
}

/// Runs `op` as uid/gid 1000 with no supplementary groups.
fn user(op: Op) -> Op {
    as_ids(1000, 1000, &[], op)
}

fn as_ids(uid: u32, gid: u32, groups: &[u32], op: Op) -> Op {
    Op::As {
        uid,
        gid,
        groups: groups.to_vec(),
        op: Box::new(op),
    }
}

/// A POSIX ACL in the kernel's xattr format (version 2, little endian).
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;
const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

mod scenarios {
    use super::*;
    use Errno as E;
    use FileType as T;
    use OFlags as O;
    use Op::*;

    const NONE: RenameFlags = RenameFlags::empty();

    // --- open ----------------------------------------------------------------

    pub fn open_excl_existing() -> Vec<Op> {
        vec![
            put("f", "x"),
            fails(E::EXIST, open("f", O::WRONLY | O::CREATE | O::EXCL, 0)),
            mkdir("d", 0o755),
            fails(E::EXIST, open("d", O::RDONLY | O::CREATE | O::EXCL, 0)),
            ok(open("f", O::WRONLY | O::CREATE, 1)),
            Fstat(1),
            Close(1),
            ok(open("new", O::RDWR | O::CREATE | O::EXCL, 2)),
            Fstat(2),
            stat("new"),
        ]
    }

    pub fn open_directory_on_file() -> Vec<Op> {
        vec![
            put("f", "x"),
            fails(E::NOTDIR, open("f", O::RDONLY | O::DIRECTORY, 0)),
            fails(E::NOTDIR, open("f/", O::RDONLY, 0)),
            fails(E::NOTDIR, open("f/x", O::RDONLY, 0)),
            mkdir("d", 0o755),
            ok(open("d", O::RDONLY | O::DIRECTORY, 1)),
            Fstat(1),
        ]
    }

    pub fn open_nofollow_symlink() -> Vec<Op> {
        vec![
            put("f", "content"),
            symlink("f", "l"),
            fails(E::LOOP, open("l", O::RDONLY | O::NOFOLLOW, 0)),
            ok(open("l", O::RDONLY, 1)),
            Read(1, 100),
            ok(open("l", O::PATH | O::NOFOLLOW, 2)),
            Fstat(2),
            symlink("loop2", "loop1"),
            symlink("loop1", "loop2"),
            fails(E::LOOP, open("loop1", O::RDONLY, 3)),
            fails(E::LOOP, stat("loop1")),
        ]
    }

    pub fn open_missing() -> Vec<Op> {
        vec![
            fails(E::NOENT, open("nope", O::RDONLY, 0)),
            fails(E::NOENT, open("nodir/f", O::WRONLY | O::CREATE, 0)),
            fails(E::NOENT, stat("nope")),
            fails(E::NOENT, lstat("nodir/nope")),
            fails(E::NOENT, read_all("")),
        ]
    }

    pub fn open_dir_for_write() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            fails(E::ISDIR, open("d", O::WRONLY, 0)),
            fails(E::ISDIR, open("d", O::RDWR, 0)),
            fails(E::ISDIR, open("d", O::WRONLY | O::CREATE, 0)),
            fails(E::ISDIR, open("newdir/", O::WRONLY | O::CREATE, 0)),
        ]
    }

    pub fn open_create_through_dangling_symlink() -> Vec<Op> {
        vec![
            symlink("target", "l"),
            fails(E::EXIST, open("l", O::WRONLY | O::CREATE | O::EXCL, 0)),
            ok(open_mode("l", O::WRONLY | O::CREATE, 0o640, 1)),
            Write(1, b("via link")),
            Close(1),
            stat("target"),
            read_all("target"),
        ]
    }

    /// `linkat(fd, "", ..., AT_EMPTY_PATH)` gives an open file a second name.
    pub fn link_open_fd() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            ok(open("d/f", O::RDWR | O::CREATE, 0)),
            Write(0, b("linked by fd")),
            ok(LinkFd(0, b("d/named"))),
            Fstat(0),
            Close(0),
            read_all("d/named"),
            stat("d/named"),
            stat("d/f"),
        ]
    }

    pub fn read_write_basic() -> Vec<Op> {
        vec![
            ok(open("f", O::RDWR | O::CREATE, 0)),
            gives(Val::Num(11), Write(0, b("hello world"))),
            Seek(0, SeekFrom::Start(0)),
            Read(0, 5),
            Read(0, 100),
            gives(Val::Bytes(b("")), Read(0, 10)),
            Pwrite(0, b("HELLO"), 0),
            Pread(0, 11, 0),
            Pread(0, 10, 6),
            Pread(0, 10, 100),
            Seek(0, SeekFrom::End(-3)),
            Read(0, 10),
            Seek(0, SeekFrom::Current(0)),
            Fsync(0),
            Fdatasync(0),
            Fstat(0),
            Close(0),
            read_all("f"),
            ok(open("g", O::WRONLY | O::CREATE, 1)),
            Write(1, B(pattern(300_000, 7))),
            Close(1),
            read_all("g"),
        ]
    }

    pub fn pwrite_beyond_eof() -> Vec<Op> {
        vec![
            ok(open("f", O::RDWR | O::CREATE, 0)),
            Pwrite(0, b("end"), 100_000),
            Fstat(0),
            Pread(0, 16, 99_990),
            Pread(0, 100, 0),
            Close(0),
            read_all("f"),
        ]
    }

    pub fn bad_fd_mode() -> Vec<Op> {
        vec![
            put("f", "data"),
            ok(open("f", O::WRONLY, 0)),
            fails(E::BADF, Read(0, 4)),
            fails(E::BADF, Pread(0, 4, 0)),
            ok(open("f", O::RDONLY, 1)),
            fails(E::BADF, Write(1, b("x"))),
            fails(E::BADF, Pwrite(1, b("x"), 0)),
            fails(E::INVAL, Ftruncate(1, 0)),
        ]
    }

    pub fn o_append() -> Vec<Op> {
        vec![
            put("f", "abc"),
            ok(open("f", O::WRONLY | O::APPEND, 0)),
            Seek(0, SeekFrom::Start(0)),
            Write(0, b("def")),
            // On Linux pwrite on an O_APPEND descriptor appends as well.
            Pwrite(0, b("XY"), 0),
            Seek(0, SeekFrom::Current(0)),
            Close(0),
            gives(Val::Bytes(b("abcdefXY")), read_all("f")),
            ok(open("f", O::RDWR | O::APPEND, 1)),
            Write(1, b("!")),
            Pread(1, 100, 0),
            Fstat(1),
        ]
    }

    pub fn o_trunc() -> Vec<Op> {
        vec![
            put("f", "0123456789"),
            ok(open("f", O::WRONLY | O::TRUNC, 0)),
            Fstat(0),
            Close(0),
            stat("f"),
            put("f", "0123456789"),
            // O_RDONLY|O_TRUNC truncates too on Linux.
            ok(open("f", O::RDONLY | O::TRUNC, 1)),
            Close(1),
            stat("f"),
            put("f", "abc"),
            ok(open("f", O::RDWR | O::CREATE | O::TRUNC, 2)),
            Read(2, 10),
            Close(2),
            stat("f"),
        ]
    }

    // --- directories -----------------------------------------------------------

    pub fn mkdir_errors() -> Vec<Op> {
        vec![
            ok(mkdir("d", 0o755)),
            fails(E::EXIST, mkdir("d", 0o755)),
            put("f", ""),
            fails(E::EXIST, mkdir("f", 0o755)),
            fails(E::NOENT, mkdir("x/y", 0o755)),
            fails(E::NOTDIR, mkdir("f/y", 0o755)),
            ok(mkdir("d/sub/", 0o700)),
            stat("d"),
            stat("d/sub"),
            stat("."),
            ok(mkdir("modes", 0o1777)),
            stat("modes"),
        ]
    }

    pub fn rmdir_errors() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            put("d/f", "x"),
            fails(E::NOTEMPTY, Rmdir(b("d"))),
            fails(E::NOTDIR, Rmdir(b("d/f"))),
            fails(E::NOENT, Rmdir(b("nope"))),
            fails(E::INVAL, Rmdir(b("d/."))),
            fails(E::NOTEMPTY, Rmdir(b("d/.."))),
            ok(unlink("d/f")),
            ok(Rmdir(b("d"))),
            fails(E::NOENT, stat("d")),
            stat("."),
        ]
    }

    pub fn unlink_errors() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            fails(E::ISDIR, unlink("d")),
            fails(E::NOENT, unlink("nope")),
            put("f", "x"),
            fails(E::NOTDIR, unlink("f/")),
            fails(E::NOTDIR, unlink("f/x")),
            ok(unlink("f")),
            fails(E::NOENT, stat("f")),
        ]
    }

    pub fn unlink_open_file() -> Vec<Op> {
        vec![
            put("f", "still readable"),
            ok(open("f", O::RDWR, 0)),
            ok(unlink("f")),
            fails(E::NOENT, stat("f")),
            Pread(0, 100, 0),
            Pwrite(0, b("STILL"), 0),
            Pread(0, 100, 0),
            Fstat(0),
            Close(0),
        ]
    }

    // --- rename ------------------------------------------------------------------

    pub fn rename_file_over_file() -> Vec<Op> {
        vec![
            put("a", "AAAA"),
            put("b", "B"),
            link("b", "b2"),
            ok(rename("a", "b", NONE)),
            fails(E::NOENT, stat("a")),
            stat("b"),
            read_all("b"),
            stat("b2"),
        ]
    }

    pub fn rename_dir_over_empty_dir() -> Vec<Op> {
        vec![
            mkdir("d1", 0o755),
            put("d1/f", "x"),
            mkdir("d2", 0o700),
            ok(rename("d1", "d2", NONE)),
            stat("d2"),
            stat("d2/f"),
            fails(E::NOENT, stat("d1")),
            stat("."),
        ]
    }

    pub fn rename_dir_over_nonempty_dir() -> Vec<Op> {
        vec![
            mkdir("d1", 0o755),
            mkdir("d2", 0o755),
            put("d2/f", "x"),
            fails(E::NOTEMPTY, rename("d1", "d2", NONE)),
            stat("d1"),
            stat("d2/f"),
        ]
    }

    pub fn rename_file_over_dir() -> Vec<Op> {
        vec![
            put("f", "x"),
            mkdir("d", 0o755),
            fails(E::ISDIR, rename("f", "d", NONE)),
            fails(E::NOTDIR, rename("d", "f", NONE)),
            stat("f"),
            stat("d"),
        ]
    }

    pub fn rename_dir_into_own_subdir() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            mkdir("d/s", 0o755),
            fails(E::INVAL, rename("d", "d/s/x", NONE)),
            fails(E::INVAL, rename("d", "d/x", NONE)),
            stat("d/s"),
        ]
    }

    pub fn rename_noreplace() -> Vec<Op> {
        vec![
            put("a", "A"),
            put("b", "B"),
            fails(E::EXIST, rename("a", "b", RenameFlags::NOREPLACE)),
            read_all("b"),
            ok(rename("a", "c", RenameFlags::NOREPLACE)),
            read_all("c"),
            fails(E::NOENT, stat("a")),
        ]
    }

    pub fn rename_exchange() -> Vec<Op> {
        vec![
            put("f", "file"),
            mkdir("d", 0o750),
            put("d/g", "inner"),
            ok(rename("f", "d", RenameFlags::EXCHANGE)),
            stat("f"),
            stat("d"),
            read_all("f/g"),
            read_all("d"),
            fails(E::NOENT, rename("f", "missing", RenameFlags::EXCHANGE)),
            fails(
                E::INVAL,
                rename("f", "d", RenameFlags::EXCHANGE | RenameFlags::NOREPLACE),
            ),
        ]
    }

    pub fn rename_misc() -> Vec<Op> {
        vec![
            put("a", "A"),
            link("a", "b"),
            // Renaming one hard link onto another is a successful no-op.
            ok(rename("a", "b", NONE)),
            stat("a"),
            stat("b"),
            ok(rename("a", "a", NONE)),
            fails(E::NOENT, rename("nope", "x", NONE)),
            mkdir("p", 0o755),
            mkdir("q", 0o755),
            mkdir("p/c", 0o755),
            put("p/c/f", "moved"),
            ok(rename("p/c", "q/c", NONE)),
            stat("p"),
            stat("q"),
            read_all("q/c/f"),
            ok(rename("q/c/f", "top", NONE)),
            read_all("top"),
            symlink("top", "sl"),
            ok(rename("sl", "q/sl2", NONE)),
            Readlink(b("q/sl2")),
        ]
    }

    pub fn rename_whiteout() -> Vec<Op> {
        vec![
            put("a", "A"),
            ok(rename("a", "b", RenameFlags::WHITEOUT)),
            lstat("a"),
            read_all("b"),
        ]
    }

    // --- hard links ----------------------------------------------------------------

    pub fn link_same_inode() -> Vec<Op> {
        vec![
            put("a", "data"),
            ok(link("a", "b")),
            gives(Val::Bool(true), SameIno(b("a"), b("b"))),
            stat("a"),
            stat("b"),
            ok(unlink("b")),
            stat("a"),
            fails(E::NOENT, stat("b")),
            mkdir("d", 0o755),
            ok(link("a", "c")),
            ok(link("a", "d/e")),
            gives(Val::Bool(true), SameIno(b("c"), b("d/e"))),
            stat("a"),
            put("d/e", "new content"),
            read_all("a"),
        ]
    }

    pub fn link_errors() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            fails(E::PERM, link("d", "d2")),
            put("a", "A"),
            put("b", "B"),
            fails(E::EXIST, link("a", "b")),
            fails(E::NOENT, link("nope", "x")),
            fails(E::NOENT, link("a", "nodir/x")),
            symlink("a", "l"),
            ok(link("l", "l2")),
            lstat("l2"),
            gives(Val::Bool(true), SameIno(b("l"), b("l2"))),
            lstat("l"),
            Readlink(b("l2")),
        ]
    }

    // --- symlinks --------------------------------------------------------------------

    pub fn symlink_readlink() -> Vec<Op> {
        vec![
            put("f", "target content"),
            ok(symlink("f", "l")),
            gives(Val::Bytes(b("f")), Readlink(b("l"))),
            lstat("l"),
            stat("l"),
            read_all("l"),
            ok(symlink("/nonexistent/abs/target", "abs")),
            Readlink(b("abs")),
            fails(E::NOENT, stat("abs")),
            ok(symlink("missing", "dang")),
            Readlink(b("dang")),
            lstat("dang"),
            fails(E::NOENT, stat("dang")),
            symlink("/", "rootlink"),
            stat("rootlink"),
            fails(E::INVAL, Readlink(b("f"))),
            mkdir("d", 0o755),
            fails(E::INVAL, Readlink(b("d"))),
            fails(E::EXIST, symlink("x", "f")),
            symlink("l", "l2"),
            read_all("l2"),
            symlink("../f", "d/up"),
            read_all("d/up"),
            symlink("d", "dl"),
            put("dl/through", "via dir link"),
            stat("d/through"),
            symlink("odd target\n\u{7f}", "odd"),
            Readlink(b("odd")),
        ]
    }

    pub fn symlink_long_target() -> Vec<Op> {
        vec![
            ok(symlink(vec![b'x'; 4095], "long")),
            Readlink(b("long")),
            lstat("long"),
            fails(E::NAMETOOLONG, symlink(vec![b'x'; 4096], "toolong")),
        ]
    }

    // --- special files -----------------------------------------------------------------

    pub fn mknod_special() -> Vec<Op> {
        vec![
            ok(mknod("fifo", T::Fifo, 0o644, (0, 0))),
            ok(mknod("sock", T::Socket, 0o755, (0, 0))),
            ok(mknod("chr", T::CharacterDevice, 0o600, (1, 3))),
            ok(mknod("blk", T::BlockDevice, 0o640, (7, 0))),
            ok(mknod("reg", T::RegularFile, 0o600, (0, 0))),
            stat("fifo"),
            stat("sock"),
            stat("chr"),
            stat("blk"),
            stat("reg"),
            fails(E::EXIST, mknod("fifo", T::Fifo, 0o644, (0, 0))),
            fails(E::NOENT, mknod("nodir/fifo", T::Fifo, 0o644, (0, 0))),
            ok(rename("fifo", "fifo2", NONE)),
            ok(link("chr", "chr2")),
            stat("chr"),
        ]
    }

    // --- attributes ---------------------------------------------------------------------

    pub fn chmod_bits() -> Vec<Op> {
        vec![
            put("f", "x"),
            ok(chmod("f", 0o2755)),
            stat("f"),
            ok(chmod("f", 0o4711)),
            stat("f"),
            ok(chmod("f", 0o1644)),
            stat("f"),
            ok(chmod("f", 0o7777)),
            stat("f"),
            ok(chmod("f", 0)),
            stat("f"),
            read_all("f"),
            mkdir("d", 0o755),
            ok(chmod("d", 0o3777)),
            stat("d"),
            mkdir("d/sub", 0o755),
            stat("d/sub"),
            put("d/file", ""),
            stat("d/file"),
            symlink("f", "l"),
            ok(chmod("l", 0o640)),
            stat("f"),
            lstat("l"),
            ok(open("f", O::RDONLY, 0)),
            ok(Fchmod(0, 0o604)),
            Fstat(0),
            fails(E::NOENT, chmod("nope", 0o644)),
        ]
    }

    pub fn chown_as_root() -> Vec<Op> {
        vec![
            put("f", "x"),
            ok(chown("f", Some(1000), Some(1000))),
            stat("f"),
            ok(chown("f", None, Some(2000))),
            stat("f"),
            ok(chown("f", Some(1001), None)),
            stat("f"),
            symlink("f", "l"),
            ok(Chown {
                path: b("l"),
                uid: Some(1002),
                gid: Some(1003),
                nofollow: true,
            }),
            lstat("l"),
            stat("f"),
            ok(chown("l", Some(1004), None)),
            lstat("l"),
            stat("f"),
            mkdir("d", 0o2755),
            ok(chown("d", Some(5), Some(6))),
            stat("d"),
        ]
    }

    pub fn chown_clears_setid() -> Vec<Op> {
        vec![
            put("f", "x"),
            chmod("f", 0o6755),
            ok(chown("f", Some(1000), Some(1000))),
            stat("f"),
            put("g", "x"),
            chmod("g", 0o2745),
            ok(chown("g", None, Some(1000))),
            stat("g"),
            mkdir("d", 0o755),
            chmod("d", 0o2755),
            ok(chown("d", Some(1000), Some(1000))),
            stat("d"),
        ]
    }

    pub fn truncate_up_down() -> Vec<Op> {
        vec![
            put("f", "0123456789"),
            ok(Truncate(b("f"), 4)),
            read_all("f"),
            ok(Truncate(b("f"), 10_000)),
            stat("f"),
            read_all("f"),
            ok(open("f", O::RDWR, 0)),
            ok(Ftruncate(0, 3)),
            Fstat(0),
            Pread(0, 100, 0),
            ok(Ftruncate(0, 5000)),
            Pread(0, 100, 0),
            Fstat(0),
            ok(Truncate(b("f"), 0)),
            Fstat(0),
            Close(0),
            mkdir("d", 0o755),
            fails(E::ISDIR, Truncate(b("d"), 0)),
            fails(E::NOENT, Truncate(b("nope"), 0)),
            put("big", pattern(200_000, 3)),
            ok(Truncate(b("big"), 150_001)),
            read_all("big"),
        ]
    }

    pub fn utimens_explicit() -> Vec<Op> {
        let omit = rustix::fs::UTIME_OMIT;
        vec![
            put("f", "x"),
            ok(utimens(
                "f",
                (1_000_000_000, 123_456_789),
                (1_200_000_000, 987_654_321),
            )),
            gives(
                Val::Times((1_000_000_000, 123_456_789), (1_200_000_000, 987_654_321)),
                Times(b("f")),
            ),
            ok(utimens("f", (0, omit), (1_300_000_000, 5))),
            Times(b("f")),
            ok(utimens("f", (1_400_000_000, 0), (0, omit))),
            Times(b("f")),
            ok(utimens("f", (0, omit), (0, omit))),
            Times(b("f")),
            ok(utimens("f", (-1, 0), (4_000_000_000, 1))),
            Times(b("f")),
            symlink("f", "l"),
            ok(Utimens {
                path: b("l"),
                atime: (1_100_000_000, 1),
                mtime: (1_100_000_000, 2),
                nofollow: true,
            }),
            Times(b("l")),
            Times(b("f")),
            mkdir("d", 0o755),
            ok(utimens("d", (123, 456), (789, 0))),
            Times(b("d")),
            fails(E::INVAL, utimens("f", (0, 1_000_000_000), (0, 0))),
        ]
    }

    pub fn access_modes() -> Vec<Op> {
        vec![
            put("f", "x"),
            ok(CheckAccess(b("f"), Access::EXISTS)),
            ok(CheckAccess(b("f"), Access::READ_OK | Access::WRITE_OK)),
            // Root gets X_OK only if some execute bit is set.
            fails(E::ACCESS, CheckAccess(b("f"), Access::EXEC_OK)),
            chmod("f", 0o744),
            ok(CheckAccess(b("f"), Access::EXEC_OK)),
            chmod("f", 0),
            ok(CheckAccess(b("f"), Access::READ_OK | Access::WRITE_OK)),
            mkdir("d", 0o755),
            ok(CheckAccess(b("d"), Access::EXEC_OK | Access::WRITE_OK)),
            fails(E::NOENT, CheckAccess(b("nope"), Access::EXISTS)),
        ]
    }

    // --- xattrs ------------------------------------------------------------------------

    pub fn xattr_user() -> Vec<Op> {
        vec![
            put("f", "x"),
            ok(setx("f", "user.a", "1")),
            gives(Val::Bytes(b("1")), getx("f", "user.a", 64)),
            ok(setx_flags("f", "user.a", "22", XattrFlags::REPLACE)),
            gives(Val::Num(2), getx("f", "user.a", 0)),
            fails(E::RANGE, getx("f", "user.a", 1)),
            fails(E::EXIST, setx_flags("f", "user.a", "3", XattrFlags::CREATE)),
            fails(
                E::NODATA,
                setx_flags("f", "user.b", "3", XattrFlags::REPLACE),
            ),
            ok(setx_flags("f", "user.b", "3", XattrFlags::CREATE)),
            ok(setx("f", "user.empty", "")),
            getx("f", "user.empty", 16),
            getx("f", "user.empty", 0),
            ok(setx("f", "user.bin", b"\x00\x01\xff\x00")),
            getx("f", "user.bin", 16),
            ok(setx("f", "user.big", pattern(3000, 1))),
            getx("f", "user.big", 4096),
            fails(E::NODATA, getx("f", "user.zz", 64)),
            listx("f"),
            ListXattr {
                path: b("f"),
                size: Some(0),
                nofollow: false,
            },
            fails(
                E::RANGE,
                ListXattr {
                    path: b("f"),
                    size: Some(3),
                    nofollow: false,
                },
            ),
            ok(Op::RemoveXattr(b("f"), b("user.a"))),
            fails(E::NODATA, Op::RemoveXattr(b("f"), b("user.a"))),
            fails(E::NODATA, getx("f", "user.a", 64)),
            listx("f"),
            mkdir("d", 0o755),
            ok(setx("d", "user.dir", "on a dir")),
            getx("d", "user.dir", 64),
            fails(E::NOENT, setx("nope", "user.x", "1")),
        ]
    }

    pub fn xattr_namespaces() -> Vec<Op> {
        vec![
            put("f", "x"),
            ok(setx("f", "trusted.t", "trusted value")),
            ok(setx("f", "security.s", "security value")),
            ok(setx("f", "user.u", "user value")),
            getx("f", "trusted.t", 64),
            getx("f", "security.s", 64),
            listx("f"),
            fails(
                E::EXIST,
                setx_flags("f", "trusted.t", "v", XattrFlags::CREATE),
            ),
            fails(
                E::NODATA,
                setx_flags("f", "trusted.no", "v", XattrFlags::REPLACE),
            ),
            fails(E::RANGE, getx("f", "security.s", 2)),
            ok(Op::RemoveXattr(b("f"), b("trusted.t"))),
            ok(Op::RemoveXattr(b("f"), b("security.s"))),
            listx("f"),
            fails(E::OPNOTSUPP, setx("f", "foo.bar", "1")),
            fails(
                E::RANGE,
                setx("f", [&b"user."[..], &[b'n'; 251][..]].concat(), "1"),
            ),
            fails(E::TOOBIG, setx("f", "user.huge", vec![0u8; 70_000])),
            symlink("f", "l"),
            fails(
                E::PERM,
                SetXattr {
                    path: b("l"),
                    name: b("user.x"),
                    value: b("1"),
                    flags: XattrFlags::empty(),
                    nofollow: true,
                },
            ),
            ok(SetXattr {
                path: b("l"),
                name: b("trusted.onlink"),
                value: b("link"),
                flags: XattrFlags::empty(),
                nofollow: true,
            }),
            ListXattr {
                path: b("l"),
                size: None,
                nofollow: true,
            },
            listx("l"),
            mknod("fifo", T::Fifo, 0o666, (0, 0)),
            fails(E::PERM, setx("fifo", "user.x", "1")),
            ok(setx("fifo", "trusted.x", "1")),
        ]
    }

    // --- POSIX ACLs ----------------------------------------------------------------------

    fn file_acl() -> Vec<u8> {
        acl(&[
            (ACL_USER_OBJ, 6, NO_ID),
            (ACL_USER, 6, 1000),
            (ACL_GROUP_OBJ, 4, NO_ID),
            (ACL_MASK, 6, NO_ID),
            (ACL_OTHER, 0, NO_ID),
        ])
    }

    fn dir_default_acl() -> Vec<u8> {
        acl(&[
            (ACL_USER_OBJ, 7, NO_ID),
            (ACL_USER, 7, 1000),
            (ACL_GROUP_OBJ, 5, NO_ID),
            (ACL_MASK, 7, NO_ID),
            (ACL_OTHER, 5, NO_ID),
        ])
    }

    pub fn acl_access() -> Vec<Op> {
        vec![
            put("f", "x"),
            chmod("f", 0o640),
            ok(setx("f", ACL_ACCESS, file_acl())),
            // Setting an access ACL rewrites the group bits from the mask.
            stat("f"),
            getx("f", ACL_ACCESS, 256),
            listx("f"),
            ok(chmod("f", 0o600)),
            getx("f", ACL_ACCESS, 256),
            stat("f"),
            ok(Op::RemoveXattr(b("f"), b(ACL_ACCESS))),
            stat("f"),
            fails(E::NODATA, getx("f", ACL_ACCESS, 256)),
            fails(E::OPNOTSUPP, setx("f", ACL_ACCESS, b"garbage!")),
            fails(
                E::INVAL,
                setx("f", ACL_ACCESS, [&acl(&[])[..], b"1234"].concat()),
            ),
            fails(E::ACCESS, setx("f", ACL_DEFAULT, dir_default_acl())),
        ]
    }

    pub fn acl_default_inherit() -> Vec<Op> {
        let mut ops = vec![
            mkdir("d", 0o755),
            ok(setx("d", ACL_DEFAULT, dir_default_acl())),
            getx("d", ACL_DEFAULT, 256),
            stat("d"),
        ];
        ops.extend(create("d/f", 0o666));
        ops.extend([
            stat("d/f"),
            getx("d/f", ACL_ACCESS, 256),
            mkdir("d/sub", 0o777),
            stat("d/sub"),
            getx("d/sub", ACL_DEFAULT, 256),
            getx("d/sub", ACL_ACCESS, 256),
            // With a default ACL the umask is not applied.
            Umask(
                0o077,
                Box::new(open_mode("d/g", O::WRONLY | O::CREATE, 0o666, 0)),
            ),
            Close(0),
            stat("d/g"),
            Umask(0o077, Box::new(mkdir("d/sub2", 0o777))),
            stat("d/sub2"),
            mknod("d/fifo", T::Fifo, 0o666, (0, 0)),
            stat("d/fifo"),
        ]);
        ops
    }

    // --- allocation ------------------------------------------------------------------------

    pub fn fallocate_modes() -> Vec<Op> {
        let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        vec![
            ok(open("f", O::RDWR | O::CREATE, 0)),
            ok(Fallocate(0, FallocateFlags::empty(), 0, MIB)),
            Fstat(0),
            Blocks(b("f")),
            Pread(0, 64, 1000),
            Pwrite(0, B(vec![b'a'; 16384]), 0),
            ok(Fallocate(0, punch, 4096, 8192)),
            gives(Val::Bytes(B(vec![0; 8192])), Pread(0, 8192, 4096)),
            Pread(0, 16384, 0),
            Fstat(0),
            ok(Fallocate(0, FallocateFlags::KEEP_SIZE, MIB, MIB)),
            Fstat(0),
            Blocks(b("f")),
            fails(
                E::OPNOTSUPP,
                Fallocate(0, FallocateFlags::PUNCH_HOLE, 0, 4096),
            ),
            ok(Fallocate(0, FallocateFlags::ZERO_RANGE, 100, 100)),
            Pread(0, 300, 0),
            ok(Fallocate(0, FallocateFlags::empty(), 2 * MIB, 64 * KIB)),
            Fstat(0),
            Close(0),
            Blocks(b("f")),
        ]
    }

    pub fn seek_data_hole() -> Vec<Op> {
        vec![
            ok(open("f", O::RDWR | O::CREATE, 0)),
            Pwrite(0, B(vec![b'a'; 4096]), 0),
            Pwrite(0, B(vec![b'b'; 4096]), MIB),
            Ftruncate(0, 2 * MIB),
            gives(Val::Num(0), Seek(0, SeekFrom::Data(0))),
            gives(Val::Num(4096), Seek(0, SeekFrom::Hole(0))),
            gives(Val::Num(MIB), Seek(0, SeekFrom::Data(4096))),
            Seek(0, SeekFrom::Data(100)),
            gives(Val::Num(MIB + 4096), Seek(0, SeekFrom::Hole(MIB))),
            fails(E::NXIO, Seek(0, SeekFrom::Data(MIB + MIB / 2))),
            gives(
                Val::Num(MIB + MIB / 2),
                Seek(0, SeekFrom::Hole(MIB + MIB / 2)),
            ),
            fails(E::NXIO, Seek(0, SeekFrom::Data(3 * MIB))),
            fails(E::NXIO, Seek(0, SeekFrom::Hole(3 * MIB))),
            Fsync(0),
            Seek(0, SeekFrom::Hole(0)),
            Seek(0, SeekFrom::Data(4096)),
            Blocks(b("f")),
        ]
    }

    pub fn copy_file_range() -> Vec<Op> {
        vec![
            put("src", pattern(20_000, 9)),
            ok(open("src", O::RDONLY, 0)),
            ok(open("dst", O::RDWR | O::CREATE, 1)),
            gives(
                Val::Num(10_000),
                CopyFileRange {
                    from: 0,
                    to: 1,
                    off_in: 100,
                    off_out: 50,
                    len: 10_000,
                },
            ),
            gives(
                Val::Num(5_000),
                CopyFileRange {
                    from: 0,
                    to: 1,
                    off_in: 15_000,
                    off_out: 20_000,
                    len: 10_000,
                },
            ),
            gives(
                Val::Num(0),
                CopyFileRange {
                    from: 0,
                    to: 1,
                    off_in: 30_000,
                    off_out: 0,
                    len: 100,
                },
            ),
            Fstat(1),
            Close(1),
            read_all("dst"),
            ok(open("src", O::RDWR, 2)),
            fails(
                E::INVAL,
                CopyFileRange {
                    from: 2,
                    to: 2,
                    off_in: 0,
                    off_out: 100,
                    len: 1000,
                },
            ),
            fails(
                E::BADF,
                CopyFileRange {
                    from: 2,
                    to: 0,
                    off_in: 0,
                    off_out: 0,
                    len: 10,
                },
            ),
        ]
    }

    pub fn statfs() -> Vec<Op> {
        vec![
            put("f", "x"),
            Statfs(b(".")),
            Statfs(b("f")),
            gives(Val::Num(255), Namelen(b("."))),
            fails(E::NOENT, Statfs(b("nope"))),
        ]
    }

    pub fn attr_coherence() -> Vec<Op> {
        vec![
            ok(open("f", O::RDWR | O::CREATE, 0)),
            ok(open("f", O::RDONLY, 1)),
            Write(0, B(pattern(5000, 1))),
            stat("f"),
            Fstat(1),
            Pread(1, 6000, 0),
            Pwrite(0, b("tail"), 9000),
            stat("f"),
            Fstat(1),
            Pread(1, 10, 8995),
            ok(Truncate(b("f"), 100)),
            Fstat(0),
            Fstat(1),
            Pread(1, 200, 0),
            ok(chmod("f", 0o600)),
            Fstat(0),
            ok(chown("f", Some(7), Some(8))),
            Fstat(1),
            put("f", "rewritten by path"),
            Pread(1, 100, 0),
            Fstat(1),
            link("f", "g"),
            Fstat(0),
            unlink("f"),
            Fstat(0),
            stat("g"),
        ]
    }

    pub fn rename_over_open_file() -> Vec<Op> {
        vec![
            put("a", "new content"),
            put("b", "old content"),
            ok(open("b", O::RDWR, 0)),
            ok(rename("a", "b", NONE)),
            Pread(0, 100, 0),
            Fstat(0),
            read_all("b"),
            Pwrite(0, b("OLD"), 0),
            read_all("b"),
            Close(0),
            stat("b"),
        ]
    }

    pub fn times_update() -> Vec<Op> {
        let old = (1_000_000_000, 0);
        vec![
            mkdir("d", 0o755),
            put("d/f", "x"),
            ok(utimens("d/f", old, old)),
            ok(utimens("d", old, old)),
            gives(Val::Newer(false, true), Op::NewerThan(b("d/f"), old.0)),
            ok(open("d/f", O::RDWR, 0)),
            Read(0, 10),
            Op::NewerThan(b("d/f"), old.0),
            Write(0, b("more")),
            gives(Val::Newer(true, true), Op::NewerThan(b("d/f"), old.0)),
            ok(utimens("d/f", old, old)),
            Ftruncate(0, 1),
            gives(Val::Newer(true, true), Op::NewerThan(b("d/f"), old.0)),
            ok(utimens("d/f", old, old)),
            Close(0),
            ok(MmapWrite(b("d/f"), 0, b("m"))),
            Op::NewerThan(b("d/f"), old.0),
            gives(Val::Newer(false, true), Op::NewerThan(b("d"), old.0)),
            put("d/new", ""),
            gives(Val::Newer(true, true), Op::NewerThan(b("d"), old.0)),
            ok(utimens("d", old, old)),
            unlink("d/new"),
            gives(Val::Newer(true, true), Op::NewerThan(b("d"), old.0)),
            ok(utimens("d", old, old)),
            setx("d", "user.x", "1"),
            gives(Val::Newer(false, true), Op::NewerThan(b("d"), old.0)),
            Times(b("d")),
        ]
    }

    // --- names ----------------------------------------------------------------------------

    pub fn long_names() -> Vec<Op> {
        let n255 = vec![b'n'; 255];
        let n256 = vec![b'n'; 256];
        let d255 = vec![b'd'; 255];
        let deep: Vec<u8> = b"a/".repeat(2100);
        vec![
            ok(put(&n255, "255")),
            stat(&n255),
            read_all(&n255),
            ok(mkdir(&d255, 0o755)),
            put([&d255[..], b"/", &n255[..]].concat(), "nested"),
            fails(E::NAMETOOLONG, open(&n256, O::WRONLY | O::CREATE, 0)),
            fails(E::NAMETOOLONG, open(&n256, O::RDONLY, 0)),
            fails(E::NAMETOOLONG, mkdir(&n256, 0o755)),
            fails(E::NAMETOOLONG, stat(&n256)),
            fails(E::NAMETOOLONG, lstat([&d255[..], b"/", &n256[..]].concat())),
            fails(E::NAMETOOLONG, unlink(&n256)),
            fails(E::NAMETOOLONG, symlink("x", &n256)),
            fails(E::NAMETOOLONG, rename(&n255, &n256, NONE)),
            fails(E::NAMETOOLONG, link(&n255, &n256)),
            fails(E::NAMETOOLONG, mknod(&n256, T::Fifo, 0o644, (0, 0))),
            fails(E::NAMETOOLONG, stat(&deep)),
            fails(E::NAMETOOLONG, open(&deep, O::WRONLY | O::CREATE, 0)),
            fails(E::NAMETOOLONG, mkdir(&deep, 0o755)),
            Readdir(b(".")),
        ]
    }

    pub fn odd_names() -> Vec<Op> {
        let names: [&[u8]; 13] = [
            b"with space",
            b"new\nline",
            b"\xff\xfe\xfd",
            b"-leading-dash",
            b"--",
            b"...",
            b" ",
            b"tab\tname",
            "ünïcödé-名前".as_bytes(),
            b"back\\slash",
            b"star*?[x]",
            b"#hash;$dollar&",
            b"\x01ctl\x7f",
        ];
        let mut ops = Vec::new();
        for name in names {
            ops.push(ok(put(name, name)));
            ops.push(stat(name));
            ops.push(read_all(name));
            let mut dir = name.to_vec();
            dir.extend_from_slice(b".d");
            ops.push(ok(mkdir(&dir, 0o755)));
            let mut inner = dir.clone();
            inner.push(b'/');
            inner.extend_from_slice(name);
            ops.push(ok(symlink(name, &inner)));
            ops.push(Readlink(B(inner)));
        }
        ops.push(Readdir(b(".")));
        ops.push(rename(b"\xff\xfe\xfd", b"renamed \xfe", NONE));
        ops.push(Readdir(b(".")));
        ops
    }

    // --- locks -----------------------------------------------------------------------------

    pub fn flock_conflict() -> Vec<Op> {
        use FlockOperation as L;
        vec![
            put("f", "x"),
            ok(open("f", O::RDONLY, 0)),
            ok(open("f", O::RDONLY, 1)),
            ok(Flock(0, L::LockExclusive)),
            fails(E::WOULDBLOCK, Flock(1, L::NonBlockingLockExclusive)),
            fails(E::WOULDBLOCK, Flock(1, L::NonBlockingLockShared)),
            fails(E::WOULDBLOCK, Child(b("f"), ChildLock::FlockExclusive)),
            ok(Flock(0, L::Unlock)),
            ok(Flock(1, L::NonBlockingLockShared)),
            ok(Flock(0, L::NonBlockingLockShared)),
            ok(Child(b("f"), ChildLock::FlockShared)),
            fails(E::WOULDBLOCK, Child(b("f"), ChildLock::FlockExclusive)),
            // Unlock explicitly: a close alone may not drop the lock while a
            // concurrently forked process (another test) still shares the
            // open file description until its exec.
            ok(Flock(1, L::Unlock)),
            ok(Flock(0, L::Unlock)),
            ok(Child(b("f"), ChildLock::FlockExclusive)),
            Close(1),
            Close(0),
        ]
    }

    pub fn fcntl_lock_conflict() -> Vec<Op> {
        use FlockOperation as L;
        vec![
            put("f", "x"),
            ok(open("f", O::RDWR, 0)),
            ok(FcntlLock(0, L::NonBlockingLockExclusive)),
            fails(E::AGAIN, Child(b("f"), ChildLock::FcntlExclusive)),
            fails(E::AGAIN, Child(b("f"), ChildLock::FcntlShared)),
            ok(FcntlLock(0, L::NonBlockingUnlock)),
            ok(Child(b("f"), ChildLock::FcntlExclusive)),
            ok(FcntlLock(0, L::NonBlockingLockShared)),
            ok(Child(b("f"), ChildLock::FcntlShared)),
            fails(E::AGAIN, Child(b("f"), ChildLock::FcntlExclusive)),
            // Closing any descriptor of the file drops the process's locks.
            ok(open("f", O::RDONLY, 1)),
            Close(1),
            ok(Child(b("f"), ChildLock::FcntlExclusive)),
        ]
    }

    // --- data paths ------------------------------------------------------------------------

    pub fn o_direct_aligned() -> Vec<Op> {
        vec![
            ok(open("f", O::RDWR | O::CREATE | O::DIRECT, 0)),
            gives(Val::Num(4096), DirectPwrite(0, 0, 4096, b'a')),
            gives(Val::Num(4096), DirectPwrite(0, 8192, 4096, b'b')),
            DirectPread(0, 0, 12288),
            DirectPread(0, 4096, 4096),
            DirectPread(0, 8192, 8192),
            Fstat(0),
            Close(0),
            read_all("f"),
            put("g", pattern(10_000, 4)),
            ok(open("g", O::RDONLY | O::DIRECT, 1)),
            DirectPread(1, 0, 16384),
            Close(1),
        ]
    }

    pub fn o_direct_unaligned() -> Vec<Op> {
        vec![
            ok(open("f", O::RDWR | O::CREATE | O::DIRECT, 0)),
            DirectPwrite(0, 0, 100, b'a'),
            DirectPwrite(0, 100, 4096, b'b'),
            Fstat(0),
            Close(0),
            read_all("f"),
        ]
    }

    pub fn mmap_shared_write() -> Vec<Op> {
        vec![
            put("f", pattern(3 * 4096 + 100, 2)),
            ok(MmapWrite(b("f"), 10, b("hello"))),
            ok(MmapWrite(b("f"), 12_290, b("world"))),
            ok(MmapWrite(b("f"), 4095, b("straddles a page"))),
            read_all("f"),
            ok(open("f", O::RDWR, 0)),
            Pwrite(0, b("XYZ"), 5000),
            gives(Val::Bytes(b("XYZ")), MmapRead(b("f"), 5000, 3)),
            MmapRead(b("f"), 0, 3 * 4096 + 100),
            Fstat(0),
            Close(0),
            stat("f"),
        ]
    }

    pub fn readdir_large() -> Vec<Op> {
        let mut ops = vec![mkdir("big", 0o755)];
        for i in 0..1100u32 {
            let name = format!("big/entry-{i:04}-{}", "x".repeat((i % 40) as usize));
            ops.push(match i % 10 {
                0 => mkdir(&name, 0o755),
                1 => symlink("target", &name),
                2 => mknod(&name, T::Fifo, 0o644, (0, 0)),
                _ => put(&name, ""),
            });
        }
        ops.push(Readdir(b("big")));
        ops.push(stat("big"));
        for i in (0..1100u32).step_by(3) {
            let name = format!("big/entry-{i:04}-{}", "x".repeat((i % 40) as usize));
            ops.push(if i % 10 == 0 {
                Rmdir(b(&name))
            } else {
                unlink(&name)
            });
        }
        ops.push(Readdir(b("big")));
        ops.push(stat("big"));
        ops
    }

    // --- umask ----------------------------------------------------------------------------

    pub fn umask_applied() -> Vec<Op> {
        vec![
            Umask(
                0,
                Box::new(open_mode("u0", O::WRONLY | O::CREATE, 0o777, 0)),
            ),
            Close(0),
            stat("u0"),
            Umask(0, Box::new(mkdir("d0", 0o777))),
            stat("d0"),
            Umask(0, Box::new(mknod("p0", T::Fifo, 0o666, (0, 0)))),
            stat("p0"),
            Umask(
                0o077,
                Box::new(open_mode("u77", O::WRONLY | O::CREATE, 0o666, 1)),
            ),
            Close(1),
            stat("u77"),
            Umask(0o027, Box::new(mkdir("d27", 0o777))),
            stat("d27"),
            Umask(0, Box::new(mkdir("s0", 0o3777))),
            stat("s0"),
        ]
    }

    // --- credentials (uid/gid 1000, no supplementary groups) -------------------------------

    pub fn user_create_owner() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            chmod("d", 0o777),
            ok(user(Umask(
                0o022,
                Box::new(open("d/f", O::WRONLY | O::CREATE | O::EXCL, 0)),
            ))),
            Close(0),
            gives(
                Val::Stat(StatSum {
                    kind: T::RegularFile,
                    perm: 0o644,
                    uid: 1000,
                    gid: 1000,
                    size: 0,
                    nlink: 1,
                    rdev: (0, 0),
                }),
                stat("d/f"),
            ),
            ok(user(mkdir("d/sub", 0o755))),
            stat("d/sub"),
            ok(user(symlink("f", "d/l"))),
            lstat("d/l"),
            ok(user(mknod("d/p", T::Fifo, 0o644, (0, 0)))),
            stat("d/p"),
            ok(user(link("d/f", "d/f2"))),
            ok(user(rename("d/f2", "d/sub/f3", NONE))),
            stat("d/sub/f3"),
            ok(user(put("d/sub/data", "mine"))),
            stat("d/sub/data"),
        ]
    }

    pub fn user_create_in_root_dir() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            put("d/existing", "root"),
            fails(E::ACCESS, user(open("d/f", O::WRONLY | O::CREATE, 0))),
            fails(E::ACCESS, user(mkdir("d/x", 0o755))),
            fails(E::ACCESS, user(symlink("t", "d/l"))),
            fails(E::ACCESS, user(mknod("d/p", T::Fifo, 0o644, (0, 0)))),
            fails(E::ACCESS, user(unlink("d/existing"))),
            fails(E::ACCESS, user(rename("d/existing", "d/moved", NONE))),
            fails(E::ACCESS, user(open("d/existing", O::WRONLY, 0))),
            ok(user(read_all("d/existing"))),
            mkdir("private", 0o700),
            put("private/f", "x"),
            fails(E::ACCESS, user(stat("private/f"))),
            fails(E::ACCESS, user(Readdir(b("private")))),
        ]
    }

    pub fn user_chmod_chown_others_file() -> Vec<Op> {
        vec![
            put("f", "x"),
            chmod("f", 0o666),
            fails(E::PERM, user(chmod("f", 0o777))),
            fails(E::PERM, user(chown("f", Some(1000), Some(1000)))),
            fails(E::PERM, user(chown("f", None, Some(1000)))),
            fails(
                E::PERM,
                user(utimens("f", (1_000_000_000, 0), (1_000_000_000, 0))),
            ),
            ok(user(utimens(
                "f",
                (0, rustix::fs::UTIME_NOW),
                (0, rustix::fs::UTIME_NOW),
            ))),
            stat("f"),
        ]
    }

    pub fn user_chown_own_file() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            chmod("d", 0o777),
            ok(user(put("d/f", "mine"))),
            fails(E::PERM, user(chown("d/f", Some(0), Some(0)))),
            fails(E::PERM, user(chown("d/f", Some(0), None))),
            fails(E::PERM, user(chown("d/f", None, Some(0)))),
            ok(user(chown("d/f", Some(1000), Some(1000)))),
            ok(as_ids(1000, 1000, &[2000], chown("d/f", None, Some(2000)))),
            stat("d/f"),
            ok(user(chmod("d/f", 0o600))),
            stat("d/f"),
            ok(user(utimens("d/f", (5, 0), (6, 0)))),
            Times(b("d/f")),
        ]
    }

    pub fn user_read_root_0600() -> Vec<Op> {
        vec![
            put("f", "secret"),
            chmod("f", 0o600),
            fails(E::ACCESS, user(read_all("f"))),
            fails(E::ACCESS, user(open("f", O::WRONLY, 0))),
            fails(E::ACCESS, user(CheckAccess(b("f"), Access::READ_OK))),
            ok(user(CheckAccess(b("f"), Access::EXISTS))),
            ok(user(stat("f"))),
            fails(E::ACCESS, user(Truncate(b("f"), 0))),
            put("g", "readable"),
            chmod("g", 0o644),
            ok(user(read_all("g"))),
            fails(E::ACCESS, user(Truncate(b("g"), 0))),
            fails(E::ACCESS, user(setx("g", "user.x", "1"))),
            fails(E::NODATA, user(getx("g", "user.none", 0))),
        ]
    }

    pub fn user_access_group() -> Vec<Op> {
        vec![
            put("f", "x"),
            chmod("f", 0o640),
            chown("f", None, Some(1000)),
            ok(user(CheckAccess(b("f"), Access::READ_OK))),
            fails(E::ACCESS, user(CheckAccess(b("f"), Access::WRITE_OK))),
            fails(E::ACCESS, user(CheckAccess(b("f"), Access::EXEC_OK))),
            fails(E::ACCESS, as_ids(1001, 1001, &[], read_all("f"))),
            ok(as_ids(1001, 1001, &[1000], read_all("f"))),
        ]
    }

    pub fn user_sticky_dir() -> Vec<Op> {
        let mut ops = vec![
            mkdir("t", 0o755),
            chmod("t", 0o1777),
            put("t/other", "not yours"),
            chmod("t/other", 0o666),
            chown("t/other", Some(1001), Some(1001)),
            fails(E::PERM, user(unlink("t/other"))),
            fails(E::PERM, user(rename("t/other", "t/x", NONE))),
            ok(user(put("t/mine", "mine"))),
        ];
        ops.extend([
            fails(E::PERM, as_ids(1001, 1001, &[], unlink("t/mine"))),
            ok(user(unlink("t/mine"))),
            ok(unlink("t/other")),
            stat("t"),
        ]);
        ops
    }

    pub fn user_setgid_dir() -> Vec<Op> {
        vec![
            mkdir("g", 0o755),
            chown("g", None, Some(2000)),
            chmod("g", 0o2777),
            ok(user(put("g/f", "x"))),
            stat("g/f"),
            ok(user(mkdir("g/sub", 0o755))),
            stat("g/sub"),
            ok(user(mknod("g/p", T::Fifo, 0o644, (0, 0)))),
            stat("g/p"),
            ok(user(open_mode("g/s", O::WRONLY | O::CREATE, 0o2755, 0))),
            Close(0),
            stat("g/s"),
            ok(user(chmod("g/f", 0o2755))),
            stat("g/f"),
            ok(as_ids(1000, 1000, &[2000], chmod("g/f", 0o2755))),
            stat("g/f"),
        ]
    }

    pub fn user_write_clears_setuid() -> Vec<Op> {
        vec![
            put("f", "x"),
            chmod("f", 0o4777),
            ok(user(open("f", O::WRONLY, 0))),
            ok(user(Write(0, b("y")))),
            Close(0),
            stat("f"),
            put("g", "x"),
            chmod("g", 0o2777),
            ok(user(open("g", O::WRONLY, 1))),
            ok(user(Pwrite(1, b("y"), 10))),
            Close(1),
            stat("g"),
            put("r", "x"),
            chmod("r", 0o6777),
            ok(user(Truncate(b("r"), 0))),
            stat("r"),
            // Root (CAP_FSETID) keeps the bits.
            put("k", "x"),
            chmod("k", 0o4755),
            ok(open("k", O::WRONLY, 2)),
            ok(Write(2, b("z"))),
            Close(2),
            stat("k"),
            // A user's O_TRUNC open, ftruncate and fallocate clear them
            // too; root's truncate keeps them; set-group-ID without group
            // execute stays (mandatory-locking marker).
            put("t", "x"),
            chmod("t", 0o6777),
            ok(user(open("t", O::WRONLY | O::TRUNC, 3))),
            Close(3),
            stat("t"),
            put("u", "xyz"),
            chmod("u", 0o4777),
            ok(user(open("u", O::RDWR, 4))),
            ok(user(Ftruncate(4, 1))),
            Close(4),
            stat("u"),
            put("v", "x"),
            chmod("v", 0o4777),
            ok(user(open("v", O::RDWR, 5))),
            ok(user(Fallocate(5, FallocateFlags::empty(), 0, 8192))),
            Close(5),
            stat("v"),
            put("w", "x"),
            chmod("w", 0o6755),
            ok(Truncate(b("w"), 0)),
            stat("w"),
            put("m", "x"),
            chmod("m", 0o2766),
            ok(user(open("m", O::WRONLY, 6))),
            ok(user(Write(6, b("y")))),
            Close(6),
            stat("m"),
        ]
    }

    pub fn user_xattr_namespaces() -> Vec<Op> {
        vec![
            put("f", "x"),
            chmod("f", 0o666),
            setx("f", "trusted.t", "root only"),
            setx("f", "user.u", "anyone"),
            // trusted.* names are hidden from unprivileged callers.
            user(listx("f")),
            user(ListXattr {
                path: b("f"),
                size: Some(0),
                nofollow: false,
            }),
            fails(E::NODATA, user(getx("f", "trusted.t", 64))),
            fails(E::PERM, user(setx("f", "trusted.x", "1"))),
            fails(E::PERM, user(Op::RemoveXattr(b("f"), b("trusted.t")))),
            ok(user(setx("f", "user.v", "from user"))),
            ok(user(getx("f", "user.u", 64))),
            listx("f"),
        ]
    }

    pub fn user_acl_grants_access() -> Vec<Op> {
        vec![
            put("f", "secret"),
            chmod("f", 0o600),
            ok(setx(
                "f",
                ACL_ACCESS,
                acl(&[
                    (ACL_USER_OBJ, 6, NO_ID),
                    (ACL_USER, 4, 1000),
                    (ACL_GROUP_OBJ, 0, NO_ID),
                    (ACL_MASK, 4, NO_ID),
                    (ACL_OTHER, 0, NO_ID),
                ]),
            )),
            stat("f"),
            ok(user(read_all("f"))),
            fails(E::ACCESS, user(open("f", O::WRONLY, 0))),
            fails(E::ACCESS, as_ids(1001, 1001, &[], read_all("f"))),
            mkdir("d", 0o755),
            ok(setx(
                "d",
                ACL_ACCESS,
                acl(&[
                    (ACL_USER_OBJ, 7, NO_ID),
                    (ACL_USER, 7, 1000),
                    (ACL_GROUP_OBJ, 5, NO_ID),
                    (ACL_MASK, 7, NO_ID),
                    (ACL_OTHER, 5, NO_ID),
                ]),
            )),
            ok(user(put("d/created", "by acl"))),
            stat("d/created"),
            fails(E::ACCESS, as_ids(1001, 1001, &[], put("d/denied", "x"))),
        ]
    }

    pub fn user_acl_default_inherit() -> Vec<Op> {
        let mut ops = vec![
            mkdir("d", 0o755),
            ok(setx("d", ACL_DEFAULT, dir_default_acl())),
            ok(setx(
                "d",
                ACL_ACCESS,
                acl(&[
                    (ACL_USER_OBJ, 7, NO_ID),
                    (ACL_USER, 7, 1000),
                    (ACL_GROUP_OBJ, 5, NO_ID),
                    (ACL_MASK, 7, NO_ID),
                    (ACL_OTHER, 5, NO_ID),
                ]),
            )),
        ];
        ops.extend([
            ok(user(open_mode("d/f", O::WRONLY | O::CREATE, 0o666, 0))),
            Close(0),
            stat("d/f"),
            getx("d/f", ACL_ACCESS, 256),
            ok(user(mkdir("d/s", 0o777))),
            stat("d/s"),
            ok(user(put("d/s/inner", "x"))),
            stat("d/s/inner"),
        ]);
        ops
    }

    pub fn user_misc_denials() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            chmod("d", 0o777),
            mkdir("r", 0o755),
            put("rootfile", "x"),
            chmod("rootfile", 0o600),
            ok(user(put("d/f", "x"))),
            fails(E::ACCESS, user(rename("d/f", "r/f", NONE))),
            fails(
                E::PERM,
                user(mknod("d/c", T::CharacterDevice, 0o644, (1, 3))),
            ),
            ok(user(mknod("d/p", T::Fifo, 0o644, (0, 0)))),
            // fs.protected_hardlinks: no links to files the caller can't write.
            user(link("rootfile", "d/l")),
            user(rename("d/f", "d/g", RenameFlags::WHITEOUT)),
            fails(E::ACCESS, user(mkdir("r/sub", 0o755))),
            fails(E::ACCESS, user(Rmdir(b("r")))),
            stat("d"),
        ]
    }

    pub fn user_owner_without_write_bit() -> Vec<Op> {
        vec![
            mkdir("d", 0o755),
            chmod("d", 0o777),
            ok(user(put("d/f", "x"))),
            ok(user(chmod("d/f", 0o400))),
            fails(E::ACCESS, user(open("d/f", O::WRONLY, 0))),
            ok(user(read_all("d/f"))),
            ok(user(chmod("d/f", 0o000))),
            fails(E::ACCESS, user(read_all("d/f"))),
            ok(user(unlink("d/f"))),
            ok(user(mkdir("d/nox", 0o600))),
            ok(user(put("d/nox2", "x"))),
            fails(E::ACCESS, user(stat("d/nox/anything"))),
        ]
    }
}

/// What `passthrough_on` claims: file data bypasses the daemon (and
/// without passthrough it does not, so the meter is proven too).
#[test]
fn passthrough_serves_file_data_in_the_kernel() {
    for (opts, passthrough) in [("", true), ("passthrough=off", false)] {
        let scratch = Scratch::new();
        let m = Mount::scratch(&scratch, opts);
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let before = m.daemon_io();
        std::fs::write(m.path().join("big"), &data).unwrap();
        assert!(std::fs::read(m.path().join("big")).unwrap() == data);
        m.assert_data_path(before, 2 * data.len() as u64, passthrough);
    }
}

macro_rules! differential_tests {
    ($($name:ident),* $(,)?) => {
        /// vxfs with default options (kernel passthrough on).
        mod passthrough_on {
            $(
                #[test]
                fn $name() {
                    super::entry(
                        concat!("passthrough_on::", stringify!($name)),
                        super::scenarios::$name,
                        Some(""),
                    );
                }
            )*
        }

        /// vxfs with `-o passthrough=off`: every byte goes through the daemon.
        mod passthrough_off {
            $(
                #[test]
                fn $name() {
                    super::entry(
                        concat!("passthrough_off::", stringify!($name)),
                        super::scenarios::$name,
                        Some("passthrough=off"),
                    );
                }
            )*
        }

        /// vxfs with `-o inode_fds=0`: no inode keeps a descriptor, every
        /// one is re-opened by its kernel file handle.
        mod inode_fds_0 {
            $(
                #[test]
                fn $name() {
                    super::entry(
                        concat!("inode_fds_0::", stringify!($name)),
                        super::scenarios::$name,
                        Some("inode_fds=0"),
                    );
                }
            )*
        }

        /// Native against native: validates the scenarios themselves.
        mod native_twin {
            $(
                #[test]
                fn $name() {
                    super::entry(
                        concat!("native_twin::", stringify!($name)),
                        super::scenarios::$name,
                        None,
                    );
                }
            )*
        }
    };
}

differential_tests!(
    open_excl_existing,
    open_directory_on_file,
    open_nofollow_symlink,
    open_missing,
    open_dir_for_write,
    open_create_through_dangling_symlink,
    read_write_basic,
    pwrite_beyond_eof,
    bad_fd_mode,
    o_append,
    o_trunc,
    mkdir_errors,
    rmdir_errors,
    unlink_errors,
    unlink_open_file,
    rename_file_over_file,
    rename_dir_over_empty_dir,
    rename_dir_over_nonempty_dir,
    rename_file_over_dir,
    rename_dir_into_own_subdir,
    rename_noreplace,
    rename_exchange,
    rename_misc,
    rename_whiteout,
    link_same_inode,
    link_errors,
    symlink_readlink,
    symlink_long_target,
    mknod_special,
    chmod_bits,
    chown_as_root,
    chown_clears_setid,
    truncate_up_down,
    utimens_explicit,
    access_modes,
    attr_coherence,
    rename_over_open_file,
    times_update,
    xattr_user,
    xattr_namespaces,
    acl_access,
    acl_default_inherit,
    fallocate_modes,
    link_open_fd,
    seek_data_hole,
    copy_file_range,
    statfs,
    long_names,
    odd_names,
    flock_conflict,
    fcntl_lock_conflict,
    o_direct_aligned,
    o_direct_unaligned,
    mmap_shared_write,
    readdir_large,
    umask_applied,
    user_create_owner,
    user_create_in_root_dir,
    user_chmod_chown_others_file,
    user_chown_own_file,
    user_read_root_0600,
    user_access_group,
    user_sticky_dir,
    user_setgid_dir,
    user_write_clears_setuid,
    user_xattr_namespaces,
    user_acl_grants_access,
    user_acl_default_inherit,
    user_misc_denials,
    user_owner_without_write_bit,
);

/// What the kernel's FUSE client cannot forward is refused with
/// `EOPNOTSUPP`, so programs take their usual fallback, instead of failing
/// in some other way: `FALLOC_FL_COLLAPSE_RANGE`/`INSERT_RANGE` (the kernel
/// refuses them for every FUSE filesystem) and `O_TMPFILE` (fuser has no
/// `tmpfile` operation); `FS_IOC_GETFLAGS`/`SETFLAGS` get `ENOTTY`.
/// Documented in the README; this test notices if any starts working.
#[test]
fn fuse_limits_are_eopnotsupp() {
    let scratch = Scratch::new();
    let mount = Mount::scratch(&scratch, "");
    let root = mount.path();
    let f = rustix::fs::open(
        root.join("f"),
        OFlags::RDWR | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, 65536).unwrap();
    for mode in [FallocateFlags::COLLAPSE_RANGE, FallocateFlags::INSERT_RANGE] {
        assert_eq!(
            rustix::fs::fallocate(&f, mode, 0, 4096),
            Err(Errno::OPNOTSUPP),
            "{mode:?}"
        );
    }
    assert_eq!(
        rustix::fs::open(
            root,
            OFlags::RDWR | OFlags::TMPFILE,
            Mode::from_raw_mode(0o600)
        )
        .map(drop),
        Err(Errno::OPNOTSUPP)
    );
    // lsattr/chattr: the kernel answers an ioctl the daemon does not take
    // with ENOTTY, as on any filesystem without inode flags.
    assert_eq!(rustix::fs::ioctl_getflags(&f).map(drop), Err(Errno::NOTTY));
    assert_eq!(
        rustix::fs::ioctl_setflags(&f, rustix::fs::IFlags::NOATIME),
        Err(Errno::NOTTY)
    );
    drop(f);
    drop(mount);
}

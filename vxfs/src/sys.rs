//! The only module with `unsafe`: thin, safe wrappers over the few syscalls
//! that rustix does not cover (per-thread fsuid/fsgid, fork, signal waiting,
//! file handles, fanotify).
//!
//! Every wrapper checks its return value and hands back `rustix::io::Errno`,
//! so callers keep the raw errno.

#![allow(unsafe_code)]

use rustix::io::Errno;

fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret == -1 {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ))
    } else {
        Ok(ret)
    }
}

/// Sets the calling *thread's* filesystem uid and returns the previous one.
///
/// The raw syscall is per thread (glibc's wrapper is too, unlike `setuid`),
/// which is what lets each FUSE worker act with its caller's identity.
pub fn set_thread_fsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes a plain integer, touches no memory of ours and
    // cannot fail in a way that leaves the thread in an undefined state; it
    // always returns the previous fsuid.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid as libc::c_long) as u32 }
}

/// Sets the calling thread's filesystem gid and returns the previous one.
pub fn set_thread_fsgid(gid: u32) -> u32 {
    // SAFETY: as for `set_thread_fsuid`.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid as libc::c_long) as u32 }
}

/// Which side of a `fork` this process is on.
#[derive(Debug)]
pub enum Forked {
    /// The original process; holds the child's pid.
    Parent(i32),
    /// The new process.
    Child,
}

/// Forks the process, refusing with `EBUSY` unless it is single-threaded
/// (after a fork only the calling thread exists in the child, and locks held
/// by other threads would stay locked forever).
pub fn fork_single_threaded() -> Result<Forked, Errno> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|_| Errno::NOSYS)?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    if threads != Some(1) {
        return Err(Errno::BUSY);
    }
    // SAFETY: the process has a single thread, checked just above; nothing
    // can spawn another one between the check and the fork since this is
    // that thread.
    let pid = check(unsafe { libc::fork() } as libc::c_long)?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid as i32)
    })
}

/// A set of signals blocked in the calling thread (and inherited by every
/// thread it spawns afterwards), to be received synchronously with
/// [`SignalSet::wait`].
#[derive(Debug)]
pub struct SignalSet {
    set: libc::sigset_t,
}

impl SignalSet {
    /// Blocks `signals` in the calling thread.
    pub fn block(signals: &[i32]) -> Result<SignalSet, Errno> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, initialised sigset_t owned by us.
        unsafe { libc::sigemptyset(&mut set) };
        for &sig in signals {
            // SAFETY: as above; sigaddset only writes into `set`.
            check(unsafe { libc::sigaddset(&mut set, sig) } as libc::c_long)?;
        }
        // SAFETY: `set` is valid; the old mask is not requested (null).
        let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(Errno::from_raw_os_error(ret));
        }
        Ok(SignalSet { set })
    }

    /// Waits until one of the blocked signals arrives and returns it.
    pub fn wait(&self) -> Result<i32, Errno> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` is an initialised sigset_t and `sig` a valid
        // out-pointer for the duration of the call.
        let ret = unsafe { libc::sigwait(&self.set, &mut sig) };
        if ret != 0 {
            return Err(Errno::from_raw_os_error(ret));
        }
        Ok(sig)
    }
}

/// Gives the calling thread a private filesystem context (umask, cwd, root)
/// with `unshare(CLONE_FS)`, so a per-request umask affects no other thread.
pub fn unshare_thread_fs() -> Result<(), Errno> {
    // SAFETY: only CLONE_FS is unshared; the descriptor table stays shared,
    // which is the hazard rustix's safety contract is about.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
}

/// Largest file handle the kernel hands out (`MAX_HANDLE_SZ`).
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// A kernel file handle: names an inode on one mount without holding it
/// open, and re-opens it with [`open_by_handle`] (which needs
/// `CAP_DAC_READ_SEARCH`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FileHandle {
    handle_type: i32,
    bytes: Box<[u8]>,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileHandle(type {}, {} bytes)",
            self.handle_type,
            self.bytes.len()
        )
    }
}

impl FileHandle {
    /// A handle the kernel reported (a fanotify event's): its type and
    /// bytes, `None` if longer than any handle the kernel makes.
    pub fn from_raw(handle_type: i32, bytes: &[u8]) -> Option<FileHandle> {
        (bytes.len() <= MAX_HANDLE_SZ).then(|| FileHandle {
            handle_type,
            bytes: bytes.into(),
        })
    }
}

/// The file handle of the inode `fd` refers to (an `O_PATH` descriptor is
/// fine), and the id of the mount it is on.
pub fn name_to_handle(fd: std::os::fd::BorrowedFd<'_>) -> Result<(FileHandle, i32), Errno> {
    name_to_handle_at(fd, c"", libc::AT_EMPTY_PATH)
}

/// The file handle of `name` in directory `dir`, without following a
/// final symlink, and the id of the mount it is on.
pub fn entry_handle(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
) -> Result<(FileHandle, i32), Errno> {
    name_to_handle_at(dir, name, 0)
}

fn name_to_handle_at(
    fd: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
    flags: libc::c_int,
) -> Result<(FileHandle, i32), Errno> {
    use std::os::fd::AsRawFd;
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` is a file_handle header followed by MAX_HANDLE_SZ bytes,
    // as announced in handle_bytes; `name` is a valid NUL-terminated string
    // and `mount_id` a valid out-pointer.
    let ret = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            name.as_ptr(),
            (&mut raw as *mut RawHandle).cast::<libc::file_handle>(),
            &mut mount_id,
            flags,
        )
    };
    check(ret as libc::c_long)?;
    let len = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok((
        FileHandle {
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..len].into(),
        },
        mount_id,
    ))
}

/// Opens the inode named by `handle` on the mount `mount_fd` is on.
pub fn open_by_handle(
    mount_fd: std::os::fd::BorrowedFd<'_>,
    handle: &FileHandle,
    flags: rustix::fs::OFlags,
) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut raw = RawHandle {
        handle_bytes: handle.bytes.len() as libc::c_uint,
        handle_type: handle.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `raw` is a valid file_handle of handle_bytes bytes; the kernel
    // only reads it. The flags are plain open flags.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            (&mut raw as *mut RawHandle).cast::<libc::file_handle>(),
            flags.bits() as libc::c_int,
        )
    };
    let fd = check(fd as libc::c_long)? as libc::c_int;
    // SAFETY: the kernel just returned this new descriptor; we own it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `getxattrat(2)` (Linux 6.13): reads xattr `attr` of `name` in `dir`
/// without following a final symlink, in one syscall. `ENOSYS` on older
/// kernels.
pub fn getxattr_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
    attr: &std::ffi::CStr,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    use std::os::fd::AsRawFd;
    /// The syscall number, shared by every architecture since 5.x.
    const SYS_GETXATTRAT: libc::c_long = 464;
    #[repr(C)]
    struct XattrArgs {
        value: u64,
        size: u32,
        flags: u32,
    }
    let mut args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: u32::try_from(buf.len()).unwrap_or(u32::MAX),
        flags: 0,
    };
    // SAFETY: the kernel writes at most `args.size` bytes into `buf`, which
    // is valid and exclusively borrowed for the call; the names are valid
    // NUL-terminated strings; `args` is a properly sized xattr_args.
    let ret = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            attr.as_ptr(),
            &mut args as *mut XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    check(ret).map(|n| n as usize)
}

/// Gives the calling *thread* its own mount namespace (and filesystem
/// context), so that mounts it makes are seen by nobody else and vanish
/// with it. Used by a short-lived helper thread only.
pub fn unshare_thread_mount_ns() -> Result<(), Errno> {
    // SAFETY: CLONE_NEWNS (which implies CLONE_FS) only detaches this
    // thread's mount namespace and fs context; the descriptor table, which
    // rustix's safety contract is about, stays shared and valid.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
}

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER0`, the fields a
/// tracepoint sampler needs (the kernel accepts the short size).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_ATTR_SIZE_VER0: u32 = 64;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
/// Offsets of `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// One record read from a [`PerfRing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfRecord {
    /// The tracepoint fired in thread `tid` (ids in the daemon's pid
    /// namespace).
    Sample {
        /// Its thread group.
        pid: u32,
        /// The thread.
        tid: u32,
    },
    /// The ring was full and the kernel dropped records.
    Lost,
}

/// The ring buffer of one tracepoint on one CPU, sampling every hit with
/// the hitting thread's ids. Unmapped and closed on drop.
#[derive(Debug)]
pub struct PerfRing {
    fd: std::os::fd::OwnedFd,
    base: std::ptr::NonNull<u8>,
    map_len: usize,
    page: usize,
    data_len: usize,
}

// SAFETY: the mapping is owned by the ring and only read through atomics
// (`pending`) or under `&mut self` (`drain`); the kernel is the only other
// writer, and it synchronises through data_head/data_tail by design.
unsafe impl Send for PerfRing {}
// SAFETY: as above; `&self` methods only do atomic loads.
unsafe impl Sync for PerfRing {}

impl PerfRing {
    /// Samples tracepoint `id` (from tracefs `events/*/*/id`) on `cpu`
    /// for every thread, into a ring of `pages` pages (a power of two).
    pub fn open(id: u64, cpu: i32, pages: usize) -> Result<PerfRing, Errno> {
        use std::os::fd::FromRawFd;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_TRACEPOINT,
            size: PERF_ATTR_SIZE_VER0,
            config: id,
            sample_period: 1,
            sample_type: PERF_SAMPLE_TID,
            ..PerfEventAttr::default()
        };
        // SAFETY: `attr` is a valid, fully initialised perf_event_attr of
        // the announced size, read by the kernel only for the call.
        let fd = check(unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        })?;
        // SAFETY: the kernel just returned this new descriptor; we own it.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        let page = rustix::param::page_size();
        let map_len = page * (pages + 1);
        // SAFETY: a fresh shared mapping of the perf descriptor chosen by
        // the kernel (null hint), aliasing no Rust object; it lives until
        // `drop` unmaps it.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                map_len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let base = std::ptr::NonNull::new(base.cast::<u8>()).ok_or(Errno::NOMEM)?;
        Ok(PerfRing {
            fd,
            base,
            map_len,
            page,
            data_len: page * pages,
        })
    }

    fn word(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: DATA_HEAD/DATA_TAIL lie in the first (metadata) page of
        // the mapping, 8-byte aligned, and live as long as `self`.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(offset)
                .cast::<std::sync::atomic::AtomicU64>()
        }
    }

    /// Whether records are waiting to be read.
    pub fn pending(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.word(DATA_HEAD).load(Ordering::Acquire) != self.word(DATA_TAIL).load(Ordering::Relaxed)
    }

    /// Reads every waiting record, in order.
    pub fn drain(&mut self, mut f: impl FnMut(PerfRecord)) {
        use std::sync::atomic::Ordering;
        let head = self.word(DATA_HEAD).load(Ordering::Acquire);
        let mut tail = self.word(DATA_TAIL).load(Ordering::Relaxed);
        while head.wrapping_sub(tail) >= 8 {
            let header = self.read_bytes::<8>(tail);
            let kind = u32::from_ne_bytes(header[..4].try_into().expect("4 bytes"));
            let size = u16::from_ne_bytes(header[6..8].try_into().expect("2 bytes"));
            if size < 8 || head.wrapping_sub(tail) < u64::from(size) {
                // A torn or bogus record: drop everything and say so.
                tail = head;
                f(PerfRecord::Lost);
                break;
            }
            match kind {
                PERF_RECORD_SAMPLE if size >= 16 => {
                    let body = self.read_bytes::<8>(tail + 8);
                    f(PerfRecord::Sample {
                        pid: u32::from_ne_bytes(body[..4].try_into().expect("4 bytes")),
                        tid: u32::from_ne_bytes(body[4..].try_into().expect("4 bytes")),
                    });
                }
                PERF_RECORD_LOST => f(PerfRecord::Lost),
                _ => {}
            }
            tail += u64::from(size);
        }
        self.word(DATA_TAIL).store(tail, Ordering::Release);
    }

    /// `N` bytes of the data area at ring position `pos`, wrapping.
    fn read_bytes<const N: usize>(&self, pos: u64) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, byte) in out.iter_mut().enumerate() {
            let at = (pos as usize + i) % self.data_len;
            // SAFETY: `at` < data_len, so page + at lies inside the mapped
            // data area; the kernel does not write there before data_tail
            // passes it (the mapping is writable, so the ring never
            // overwrites unread data).
            *byte = unsafe { *self.base.as_ptr().add(self.page + at) };
        }
        out
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping created in `open`, unused from now on.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.map_len) };
        let _ = &self.fd;
    }
}

/// A fanotify group of class `FAN_CLASS_NOTIF` with `flags` (`FAN_*`
/// reporting and queue flags); events carry file handles, not descriptors.
pub fn fanotify_init(flags: libc::c_uint) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain flags; the kernel returns a new descriptor or -1.
    let fd = unsafe {
        libc::fanotify_init(
            flags | libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC,
            (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint,
        )
    };
    let fd = check(fd as libc::c_long)? as libc::c_int;
    // SAFETY: the kernel just returned this new descriptor; we own it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Adds the events of `mask` on the whole filesystem `dir` is on
/// (`FAN_MARK_FILESYSTEM`) to fanotify group `group`. `dir` must not be an
/// `O_PATH` descriptor.
pub fn fanotify_mark_filesystem(
    group: std::os::fd::BorrowedFd<'_>,
    mask: u64,
    dir: std::os::fd::BorrowedFd<'_>,
) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: descriptors and flags only; a null path makes the kernel use
    // `dir` itself.
    let ret = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            mask,
            dir.as_raw_fd(),
            std::ptr::null(),
        )
    };
    check(ret as libc::c_long).map(drop)
}

/// The filesystem id (`statfs`'s `f_fsid`) of the filesystem `fd` is on, as
/// fanotify reports it in its events.
pub fn fsid(fd: std::os::fd::BorrowedFd<'_>) -> Result<[i32; 2], Errno> {
    let st = rustix::fs::fstatfs(fd)?;
    // SAFETY: rustix's `Fsid` is `repr(C)` two `int`s, as the kernel's
    // (its field is private).
    Ok(unsafe { std::mem::transmute::<rustix::fs::Fsid, [i32; 2]>(st.f_fsid) })
}

/// Fixes glibc's threshold above which `malloc` maps memory of its own
/// (`M_MMAP_THRESHOLD`), turning off its dynamic growth.
///
/// fuser gives every request thread a 16 MiB zeroed buffer. Once glibc has
/// raised its threshold (it does after the first large free), such a
/// buffer comes from a thread's heap and is zeroed page by page: 12 MiB
/// resident per mount for nothing. Above a fixed threshold it is a fresh
/// mapping whose untouched pages cost nothing.
pub fn fix_mmap_threshold(bytes: usize) -> bool {
    let Ok(bytes) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt only changes the allocator's tuning; called before
    // any other thread exists.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
}

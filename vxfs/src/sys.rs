//! The only module with `unsafe`: thin, safe wrappers over the few syscalls
//! that rustix does not cover (per-thread fsuid/fsgid, fork, signal waiting).
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
#[derive(Clone, PartialEq, Eq)]
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

/// The file handle of the inode `fd` refers to (an `O_PATH` descriptor is
/// fine), and the id of the mount it is on.
pub fn name_to_handle(fd: std::os::fd::BorrowedFd<'_>) -> Result<(FileHandle, i32), Errno> {
    use std::os::fd::AsRawFd;
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` is a file_handle header followed by MAX_HANDLE_SZ bytes,
    // as announced in handle_bytes; the path is a valid NUL-terminated empty
    // string and `mount_id` a valid out-pointer. AT_EMPTY_PATH makes the call
    // act on `fd` itself.
    let ret = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            (&mut raw as *mut RawHandle).cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
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

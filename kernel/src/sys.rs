//! The context core's only `unsafe` code: `clone3(2)` (rustix has no
//! wrapper), a `signalfd(2)` for the supervisor, seccomp filters and
//! listeners, and `bpf(2)` for chbind's programs.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::Errno;

/// `CLONE_INTO_CGROUP` (libc's constant overflows its type).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (linux/sched.h), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Which side of a `clone3` this is.
#[derive(Debug)]
pub enum Forked {
    /// The new process.
    Child,
    /// The caller, with the child's pid and a pidfd of it.
    Parent {
        /// The child's pid.
        pid: u32,
        /// A pidfd of the child.
        pidfd: OwnedFd,
    },
}

/// Proof that the calling process had one thread when it was made:
/// forking is only safe then (in the child, locks other threads held would
/// stay locked). Take it while `/proc` is the host's (before entering a
/// guest's mount namespace) and spawn no thread while holding it.
#[derive(Debug)]
pub struct OneThread(());

/// Checks that the calling process has one thread (`/proc/self/stat`
/// field 20).
pub fn one_thread() -> Result<OneThread, Errno> {
    let threads = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(17)?.parse::<u32>().ok()
        });
    match threads {
        Some(1) => Ok(OneThread(())),
        _ => Err(Errno::AGAIN),
    }
}

/// `clone3` with `flags` (`CLONE_NEW*`), a pidfd of the child, SIGCHLD at
/// its exit and, with `cgroup`, the child started in that cgroup2 directory
/// (`CLONE_INTO_CGROUP`: it is never outside it). Like `fork`: the child
/// continues here with a copy of the address space; `one` proves the
/// caller is single-threaded.
pub fn clone3(
    one: &OneThread,
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<Forked, Errno> {
    let _ = one;
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed, `pidfd` a
    // valid out-pointer for the call; no stack is given, so the child runs
    // on a copy of ours, as after fork (the caller's contract).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        )),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: pid as u32,
            // SAFETY: the kernel stored a new descriptor that nothing else
            // owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// Signals taken as readable events instead of handled: blocked in the
/// calling thread (and inherited by its children until they unblock).
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

fn sigset(signals: &[i32]) -> Result<libc::sigset_t, Errno> {
    // SAFETY: sigset_t is plain data, fully initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is ours and valid.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: as above.
        if unsafe { libc::sigaddset(&mut set, s) } != 0 {
            return Err(Errno::INVAL);
        }
    }
    Ok(set)
}

impl SignalFd {
    /// Blocks `signals` and opens a signalfd for them.
    pub fn new(signals: &[i32]) -> Result<SignalFd, Errno> {
        let set = sigset(signals)?;
        // SAFETY: `set` is valid; the old mask is not asked for.
        let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(Errno::from_raw_os_error(ret));
        }
        // SAFETY: `set` is valid for the call; -1 asks for a new fd.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::from_raw_os_error(
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL),
            ));
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(SignalFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor, to poll.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// The next pending signal (blocks until one arrives).
    pub fn read(&self) -> Result<i32, Errno> {
        let mut info = [0u8; 128];
        let n = rustix::io::read(&self.fd, &mut info)?;
        if n < 4 {
            return Err(Errno::IO);
        }
        // ssi_signo is the first u32 of struct signalfd_siginfo.
        Ok(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32)
    }
}

/// Unblocks every signal in the calling thread (before a child execs what
/// the guest runs).
pub fn unblock_all_signals() -> Result<(), Errno> {
    // SAFETY: sigset_t is plain data, fully initialised by sigfillset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is ours and valid.
    unsafe { libc::sigfillset(&mut set) };
    // SAFETY: `set` is valid; the old mask is not asked for.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(Errno::from_raw_os_error(ret));
    }
    Ok(())
}

/// Forks the single-threaded caller (no new namespaces); see [`clone3`].
pub fn fork(one: &OneThread) -> Result<Forked, Errno> {
    clone3(one, 0, None)
}

/// Makes `cmd`'s child unblock every signal before it execs (a process
/// that blocked signals for a signalfd must not pass the mask on).
pub fn unblock_signals_at_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls pthread_sigmask, which is
    // async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| unblock_all_signals().map_err(std::io::Error::from));
    }
}

/// Installs a compiled seccomp filter on the calling thread without
/// setting `no_new_privs` (the caller holds `CAP_SYS_ADMIN`): a guest's
/// set-id programs (su, sudo, passwd) keep working.
pub fn install_seccomp(program: &[seccompiler::sock_filter]) -> Result<(), Errno> {
    if program.is_empty() || program.len() > u16::MAX as usize {
        return Err(Errno::INVAL);
    }
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        // seccompiler's sock_filter has libc's layout (repr(C), same
        // fields).
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `len` valid instructions for the call; the
    // kernel copies them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret != 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        ));
    }
    Ok(())
}

/// Closes every descriptor above 2 except `keep`, for a process that is
/// about to exec what the guest runs (or never returns to its callers):
/// no host descriptor (locks, sockets) may reach the guest.
pub fn close_other_fds(keep: &[RawFd]) {
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: the descriptor is closed once and the caller's
            // contract is that nothing uses it again (exec follows).
            unsafe { libc::close(fd) };
        }
    }
}

/// `unshare(2)` of namespaces, in a single-threaded process (a guest's
/// first process, or a tool before it forks).
pub fn unshare(flags: rustix::thread::UnshareFlags) -> Result<(), Errno> {
    // SAFETY: the flags asked for here are namespaces only, never
    // CLONE_FILES or CLONE_FS (the descriptor and fs sharing that
    // rustix's contract is about); callers are single-threaded.
    debug_assert!(
        !flags.intersects(rustix::thread::UnshareFlags::FILES | rustix::thread::UnshareFlags::FS)
    );
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// Restores the default action of signal `sig` (before dying of it).
pub fn reset_signal(sig: i32) {
    // SAFETY: SIG_DFL installs no handler; nothing else runs meanwhile.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// `fexecve(2)`: executes the file open at `fd`; returns only on failure.
pub fn fexecve(fd: OwnedFd, argv: &[std::ffi::CString], env: &[std::ffi::CString]) -> Errno {
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // SAFETY: both arrays are NULL-terminated and point to NUL-terminated
    // strings that outlive the call; `fd` is an open descriptor we own.
    unsafe { libc::fexecve(fd.as_raw_fd(), argv_p.as_ptr(), env_p.as_ptr()) };
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL),
    )
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, self, value)`.
pub fn set_ioprio(value: u32) -> Result<(), Errno> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    // SAFETY: a syscall taking three integers; no memory is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            value as libc::c_long,
        )
    };
    if ret < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL));
    }
    Ok(())
}

/// `personality(value)`: the execution domain of what the caller execs.
pub fn set_personality(value: u64) -> Result<(), Errno> {
    // SAFETY: takes an integer, changes only the calling process.
    let ret = unsafe { libc::personality(value as libc::c_ulong) };
    if ret < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL));
    }
    Ok(())
}

/// A seccomp user notification: a guest's thread waits in `nr` until it
/// is answered.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    /// Its id, for the answer.
    pub id: u64,
    /// The thread (in the listener's pid namespace: the host's).
    pub pid: u32,
    /// The system call.
    pub nr: i64,
    /// Its arguments.
    pub args: [u64; 6],
}

/// Installs on the calling thread a filter that hands the system calls
/// `nrs` (of this build's architecture) to a listener, whose descriptor
/// it returns; every other call goes on to the filters below. Without
/// `no_new_privs`, like [`install_seccomp`].
pub fn install_notifier(nrs: &[i64]) -> Result<OwnedFd, Errno> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld, jeq, ret) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    if nrs.is_empty() || nrs.len() > 16 {
        return Err(Errno::INVAL);
    }
    let n = nrs.len() as u8;
    // seccomp_data: nr at 0, arch at 4.
    let mut prog = vec![
        ins(ld, 0, 0, 4),
        ins(jeq, 1, 0, AUDIT_ARCH),
        ins(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
        ins(ld, 0, 0, 0),
    ];
    for (i, &nr) in nrs.iter().enumerate() {
        // Matched: jump past the remaining tests and the ALLOW.
        prog.push(ins(jeq, n - i as u8, 0, nr as u32));
    }
    prog.push(ins(ret, 0, 0, libc::SECCOMP_RET_ALLOW));
    prog.push(ins(ret, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `len` valid instructions for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(last_errno());
    }
    // SAFETY: the kernel returned a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL),
    )
}

/// The next notification of `listener` (blocks until one comes).
pub fn receive_notification(listener: BorrowedFd<'_>) -> Result<Notification, Errno> {
    // SAFETY: plain data the kernel fills; it must be zeroed first.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: `n` is a valid seccomp_notif for the ioctl to fill.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            &mut n as *mut libc::seccomp_notif,
        )
    };
    if ret != 0 {
        return Err(last_errno());
    }
    Ok(Notification {
        id: n.id,
        pid: n.pid,
        nr: i64::from(n.data.nr),
        args: n.data.args,
    })
}

/// Whether notification `id` still waits (its thread did not die and
/// its pid was not reused): checked right before touching its memory.
pub fn notification_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the ioctl reads the u64 it is given.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
            &id as *const u64,
        ) == 0
    }
}

/// Answers notification `id`: the call returns `val`, or fails with
/// `error` when it is not 0.
pub fn answer_notification(
    listener: BorrowedFd<'_>,
    id: u64,
    val: i64,
    error: i32,
) -> Result<(), Errno> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error: -error,
        flags: 0,
    };
    // SAFETY: `resp` is a valid seccomp_notif_resp for the ioctl.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    };
    if ret != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Writes `data` at `addr` in process `pid`'s memory.
pub fn write_process_memory(pid: u32, addr: u64, data: &[u8]) -> Result<(), Errno> {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` describes `data`, valid for reads; the kernel checks
    // `remote` against the target's address space.
    let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    match n {
        n if n < 0 => Err(last_errno()),
        n if n as usize != data.len() => Err(Errno::FAULT),
        _ => Ok(()),
    }
}

/// The host's `sysinfo(2)`.
pub fn sysinfo() -> Result<libc::sysinfo, Errno> {
    // SAFETY: plain data the call fills.
    let mut s: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is valid for the call to fill.
    if unsafe { libc::sysinfo(&mut s) } != 0 {
        return Err(last_errno());
    }
    Ok(s)
}

/// The bytes of a `struct sysinfo`, as the guest's call receives them.
pub fn sysinfo_bytes(s: &libc::sysinfo) -> Vec<u8> {
    // SAFETY: `s` is a plain C struct; its bytes (padding included, which
    // the zeroed start of [`sysinfo`] and the copies keep zero) are read
    // for its size only.
    unsafe {
        std::slice::from_raw_parts(
            (s as *const libc::sysinfo).cast::<u8>(),
            std::mem::size_of::<libc::sysinfo>(),
        )
        .to_vec()
    }
}

/// One eBPF instruction (`struct bpf_insn`): opcode, `dst | src << 4`,
/// offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// The opcode.
    pub code: u8,
    /// Destination register (low nibble) and source register (high).
    pub regs: u8,
    /// The offset (memory access, jump).
    pub off: i16,
    /// The immediate.
    pub imm: i32,
}

/// `bpf(2)` commands used here (linux/bpf.h `enum bpf_cmd`).
const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_ATTACH: i32 = 8;
const BPF_PROG_DETACH: i32 = 9;
const BPF_PROG_GET_FD_BY_ID: i32 = 13;
const BPF_PROG_QUERY: i32 = 16;

/// `union bpf_attr` as `BPF_PROG_LOAD` reads it, up to
/// `expected_attach_type` (the kernel zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`/`DETACH`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `union bpf_attr` for `BPF_PROG_QUERY`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

fn bpf<T>(cmd: i32, attr: &mut T) -> Result<RawFd, Errno> {
    // SAFETY: `attr` is a `repr(C)` prefix of `union bpf_attr` for `cmd`,
    // valid for its size; pointers inside it point at live buffers the
    // caller owns for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as u32,
        )
    };
    if ret < 0 {
        return Err(last_errno());
    }
    Ok(ret as RawFd)
}

/// Loads `insns` as a program of `prog_type` for `attach_type`, named
/// `name` (15 bytes at most); on a verifier refusal, the error and the
/// verifier's log.
pub fn bpf_prog_load(
    prog_type: u32,
    attach_type: u32,
    name: &str,
    insns: &[BpfInsn],
) -> Result<OwnedFd, (Errno, String)> {
    let license = c"Dual MIT/GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: attach_type,
        ..Default::default()
    };
    let n = name.len().min(15);
    attr.prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new descriptor nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) => {
            // Again with the verifier's log, to say why.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                // SAFETY: as above.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..end]).into_owned()))
        }
    }
}

/// Attaches `prog` to the cgroup `cgroup` at `attach_type` with `flags`.
pub fn bpf_prog_attach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> Result<(), Errno> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// Detaches `prog` from the cgroup `cgroup` at `attach_type`.
pub fn bpf_prog_detach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
) -> Result<(), Errno> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    bpf(BPF_PROG_DETACH, &mut attr).map(drop)
}

/// The ids of the programs attached to the cgroup `cgroup` itself at
/// `attach_type` (not its ancestors').
pub fn bpf_prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> Result<Vec<u32>, Errno> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// A descriptor of the loaded program `id`.
pub fn bpf_prog_by_id(id: u32) -> Result<OwnedFd, Errno> {
    #[repr(C)]
    #[derive(Default)]
    struct ById {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = ById {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: the kernel returned a new descriptor nothing else owns.
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

//! A guest's `uname(2)` and `sysinfo(2)`, answered by its supervisor
//! through a seccomp user notification (docs/SEMANTICS.md, "A guest's own
//! /proc figures"): mainline keeps the uts fields other than the node and
//! domain names global, and `sysinfo(2)` (busybox's `free` and `uptime`,
//! glibc's `get_phys_pages`) shows the host's memory, load and process
//! count whatever the guest's `/proc` says.
//!
//! Opt-in per guest: `uts/{sysname,release,version,machine}` ask for
//! `uname`, the flags `virt_mem`, `virt_cpu` or `virt_load` for
//! `sysinfo`. The guest's first process installs the filter last, just
//! before its init runs, and passes the listener to the supervisor over
//! a socket; the supervisor answers in its loop. A command entered later
//! (`vserver NAME exec`) installs the same filter and passes its listener
//! over the supervisor's socket `notify.sock` in the registry (root only:
//! the peer must be the host's root). If the supervisor is gone, the
//! calls fail with ENOSYS (the kernel's rule for a listener that closed).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rustix::event::PollFlags;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::thread::LinkNameSpaceType;

use crate::config::GuestConfig;
use crate::error::{Error, Result, os};
use crate::names::cflag;
use crate::registry::{Registry, State};
use crate::sys;

/// What a guest's calls are answered with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// `sysinfo(2)` from the guest's figures.
    pub sysinfo: bool,
    /// `uname(2)` fields set by `uts/` (the others stay the kernel's).
    pub uts: Vec<(String, String)>,
}

impl Plan {
    /// The plan for `cfg` (`None`: nothing is intercepted).
    pub fn of(cfg: &GuestConfig) -> Option<Plan> {
        let sysinfo = cfg.cflags & (cflag::VIRT_MEM | cflag::VIRT_CPU | cflag::VIRT_LOAD) != 0;
        (sysinfo || !cfg.uts_fields.is_empty()).then(|| Plan {
            sysinfo,
            uts: cfg.uts_fields.clone(),
        })
    }

    /// The calls to hand to the supervisor: on x86_64 their x32 numbers
    /// too (`__X32_SYSCALL_BIT`, same audit architecture; the kernel
    /// answers ENOSYS to them where x32 is not built), whose `utsname`
    /// and `sysinfo` have the x86_64 layout.
    fn calls(&self) -> Vec<i64> {
        let mut nrs = Vec::new();
        if self.sysinfo {
            nrs.push(libc::SYS_sysinfo);
        }
        if !self.uts.is_empty() {
            nrs.push(libc::SYS_uname);
        }
        #[cfg(target_arch = "x86_64")]
        {
            let x32: Vec<i64> = nrs.iter().map(|n| n | X32_SYSCALL_BIT).collect();
            nrs.extend(x32);
        }
        nrs
    }
}

/// x86_64's `__X32_SYSCALL_BIT`.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// Call number `nr` as its native one (an x32 call's without its bit).
fn native(nr: i64) -> i64 {
    #[cfg(target_arch = "x86_64")]
    {
        nr & !X32_SYSCALL_BIT
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        nr
    }
}

/// A socket pair to pass the listener on: (the guest's end, the
/// supervisor's).
pub fn channel() -> Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(os("socketpair"))
}

/// The supervisor's socket for entered commands' listeners.
pub fn socket_path(registry: &Registry, xid: crate::Xid) -> PathBuf {
    registry.dir(xid).join("notify.sock")
}

/// For a command entering context `xid`, before it leaves the host's
/// mount namespace: a connection to the supervisor's socket.
pub fn connect(registry: &Registry, xid: crate::Xid) -> Result<OwnedFd> {
    let path = socket_path(registry, xid);
    UnixStream::connect(&path)
        .map(OwnedFd::from)
        .map_err(crate::error::io(format!(
            "connecting to {}",
            path.display()
        )))
}

/// In the guest's first process (or an entered command): installs the
/// filter and sends its listener to the supervisor.
pub fn install(plan: &Plan, guest_end: &impl AsFd) -> Result<()> {
    let listener = sys::install_notifier(&plan.calls())
        .map_err(os("installing the uname/sysinfo notification filter"))?;
    let fds = [listener.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        guest_end,
        &[std::io::IoSlice::new(b"l")],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(os("passing the notification listener"))?;
    Ok(())
}

/// In the supervisor, once the guest's init runs: the listener it sent.
pub fn receive(supervisor_end: &impl AsFd) -> Result<OwnedFd> {
    receive_with(supervisor_end, RecvFlags::DONTWAIT)
}

/// The descriptor sent on `socket`.
fn receive_with(socket: &impl AsFd, flags: RecvFlags) -> Result<OwnedFd> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    rustix::net::recvmsg(
        socket,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        flags | RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(os("receiving the notification listener"))?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(Error::Other("no notification listener was sent".into()))
}

impl AsFd for Listener {
    /// The descriptor to poll.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The supervisor's side: answers each waiting call.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    plan: Plan,
    /// The supervisor's own uts namespace and the guest's, to read the
    /// guest's node and domain names (which it may change).
    host_uts: OwnedFd,
    guest_uts: OwnedFd,
    /// The last `sysinfo` answer, reused for [`REUSE`] (what a guest
    /// calling it in a loop costs its supervisor).
    recent: std::cell::RefCell<Option<(std::time::Instant, Vec<u8>)>>,
}

/// How long a `sysinfo` answer is reused.
pub const REUSE: std::time::Duration = std::time::Duration::from_millis(20);

impl Listener {
    /// The listener `fd` of the guest whose init is `init`.
    pub fn new(fd: OwnedFd, plan: Plan, init: u32) -> Result<Listener> {
        let open = |path: String| {
            rustix::fs::open(
                path.as_str(),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(os(path))
        };
        Ok(Listener {
            fd,
            plan,
            host_uts: open("/proc/self/ns/uts".into())?,
            guest_uts: open(format!("/proc/{init}/ns/uts"))?,
            recent: std::cell::RefCell::new(None),
        })
    }

    /// Answers the call that is waiting (the listener polled readable).
    pub fn answer_one(&self, state: &State, registry: &Registry) {
        let Ok(n) = sys::receive_notification(self.fd.as_fd()) else {
            return; // its thread died meanwhile
        };
        let reply = match native(n.nr) {
            libc::SYS_sysinfo if self.plan.sysinfo => self.sysinfo(state, registry),
            libc::SYS_uname => self.uname(),
            _ => Err(rustix::io::Errno::NOSYS),
        };
        let error = match reply {
            _ if n.args[0] == 0 => libc::EFAULT,
            Ok(bytes) => {
                // The thread must still be the one that asked (not a
                // reused pid) when its memory is written.
                if !sys::notification_valid(self.fd.as_fd(), n.id) {
                    return;
                }
                match sys::write_process_memory(n.pid, n.args[0], &bytes) {
                    Ok(()) => 0,
                    Err(e) => e.raw_os_error(),
                }
            }
            Err(e) => e.raw_os_error(),
        };
        let _ = sys::answer_notification(self.fd.as_fd(), n.id, 0, error);
    }

    fn sysinfo(
        &self,
        state: &State,
        registry: &Registry,
    ) -> std::result::Result<Vec<u8>, rustix::io::Errno> {
        let mut recent = self.recent.borrow_mut();
        if let Some((at, bytes)) = recent.as_ref() {
            if at.elapsed() < REUSE {
                return Ok(bytes.clone());
            }
        }
        let bytes = sysinfo_of(state, registry)?;
        *recent = Some((std::time::Instant::now(), bytes.clone()));
        Ok(bytes)
    }

    /// A `struct utsname`: the guest's node and domain names (read in its
    /// uts namespace), its `uts/` fields, the kernel's for the rest.
    fn uname(&self) -> std::result::Result<Vec<u8>, rustix::io::Errno> {
        rustix::thread::move_into_link_name_space(
            self.guest_uts.as_fd(),
            Some(LinkNameSpaceType::HostNameAndNISDomainName),
        )?;
        let u = rustix::system::uname();
        rustix::thread::move_into_link_name_space(
            self.host_uts.as_fd(),
            Some(LinkNameSpaceType::HostNameAndNISDomainName),
        )?;
        let given = |f: &str| self.plan.uts.iter().find(|(k, _)| *k == f).map(|(_, v)| v);
        let field = |name: &str, kernel: &std::ffi::CStr| -> Vec<u8> {
            given(name).map_or_else(|| kernel.to_bytes().to_vec(), |v| v.as_bytes().to_vec())
        };
        Ok(utsname_bytes(&[
            field("sysname", u.sysname()),
            u.nodename().to_bytes().to_vec(),
            field("release", u.release()),
            field("version", u.version()),
            field("machine", u.machine()),
            u.domainname().to_bytes().to_vec(),
        ]))
    }
}

/// Every listener of one guest, and the socket entered commands pass
/// theirs on: what the supervisor polls.
#[derive(Debug)]
pub struct Hub {
    plan: Plan,
    socket: UnixListener,
    path: PathBuf,
    listeners: Vec<Listener>,
}

impl Hub {
    /// Binds the socket at `path` (a stale one is replaced).
    pub fn bind(plan: Plan, path: &Path) -> Result<Hub> {
        let _ = std::fs::remove_file(path);
        let socket = UnixListener::bind(path)
            .map_err(crate::error::io(format!("binding {}", path.display())))?;
        socket
            .set_nonblocking(true)
            .map_err(crate::error::io("a non-blocking socket"))?;
        Ok(Hub {
            plan,
            socket,
            path: path.to_path_buf(),
            listeners: Vec::new(),
        })
    }

    /// What the guest's init is answered with.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Takes over a listener.
    pub fn add(&mut self, l: Listener) {
        self.listeners.push(l);
    }

    /// A new init (a reboot): the old listeners' processes are gone.
    pub fn clear(&mut self) {
        self.listeners.clear();
    }

    /// The descriptors to poll: the socket, then each listener.
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.socket.as_fd())
            .chain(self.listeners.iter().map(AsFd::as_fd))
            .collect()
    }

    /// Serves what `ready` (each poll result, in [`Hub::poll_fds`]'s
    /// order) says: a new entered command's listener, a waiting call, a
    /// listener whose processes all ended.
    pub fn serve(&mut self, ready: &[PollFlags], state: &State, registry: &Registry) {
        if ready.first().is_some_and(|r| r.contains(PollFlags::IN)) {
            self.accept(state);
        }
        let mut gone = Vec::new();
        for (i, r) in ready.iter().enumerate().skip(1) {
            let Some(l) = self.listeners.get(i - 1) else {
                break;
            };
            if r.contains(PollFlags::IN) {
                l.answer_one(state, registry);
            } else if r.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                gone.push(i - 1);
            }
        }
        for i in gone.into_iter().rev() {
            self.listeners.remove(i);
        }
    }

    /// Polls and serves for `d` (while the supervisor waits for
    /// something else).
    pub fn serve_for(&mut self, d: std::time::Duration, state: &State, registry: &Registry) {
        let deadline = std::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let fds = self.poll_fds();
            let mut polled: Vec<rustix::event::PollFd<'_>> = fds
                .iter()
                .map(|fd| rustix::event::PollFd::new(fd, PollFlags::IN))
                .collect();
            let timeout = rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let n = rustix::event::poll(&mut polled, Some(&timeout)).unwrap_or(0);
            let ready: Vec<PollFlags> = polled.iter().map(|f| f.revents()).collect();
            drop(polled);
            drop(fds);
            if n > 0 {
                self.serve(&ready, state, registry);
            }
        }
    }

    fn accept(&mut self, state: &State) {
        while let Ok((stream, _)) = self.socket.accept() {
            let root =
                rustix::net::sockopt::socket_peercred(&stream).is_ok_and(|c| c.uid.is_root());
            if !root {
                continue;
            }
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let listener = receive_with(&stream, RecvFlags::empty())
                .and_then(|fd| Listener::new(fd, self.plan.clone(), state.init));
            match listener {
                Ok(l) => self.listeners.push(l),
                Err(e) => log::warn!("{}: an entered command's uname/sysinfo: {e}", state.name),
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `struct utsname`: six fields of 65 bytes, each NUL-terminated.
pub fn utsname_bytes(fields: &[Vec<u8>; 6]) -> Vec<u8> {
    const LEN: usize = 65;
    let mut out = vec![0u8; LEN * 6];
    for (i, f) in fields.iter().enumerate() {
        let n = f.len().min(LEN - 1);
        out[i * LEN..i * LEN + n].copy_from_slice(&f[..n]);
    }
    out
}

/// `sysinfo(2)` as the guest's `/proc` view has it: its memory limit and
/// usage (lxcfs's rules, as vxproc's `meminfo`), its swap, its threads,
/// its uptime and, when vxproc serves it, its load average; the rest the
/// host's.
// struct sysinfo's c_ulong fields are u64 here, u32 on 32-bit targets.
#[allow(clippy::unnecessary_cast)]
fn sysinfo_of(
    state: &State,
    registry: &Registry,
) -> std::result::Result<Vec<u8>, rustix::io::Errno> {
    let mut s = sys::sysinfo()?;
    let unit = u64::from(s.mem_unit.max(1));
    let host_total = s.totalram as u64 * unit;
    let host_swap = s.totalswap as u64 * unit;
    let m = crate::memory::of(&state.cgroups, &crate::cgroup::RealFs);
    let total = m.total(host_total);
    let (swap_total, swap_used) = m.swap(host_total, host_swap);
    s.mem_unit = 1;
    s.totalram = total as _;
    s.freeram = total.saturating_sub(m.usage) as _;
    s.sharedram = m.stat.get("Shmem").copied().unwrap_or(0) as _;
    s.bufferram = 0;
    s.totalswap = swap_total as _;
    s.freeswap = (swap_total - swap_used) as _;
    s.totalhigh = 0;
    s.freehigh = 0;
    s.procs = crate::tasks::tasks(&state.cgroups)
        .threads
        .min(u64::from(u16::MAX)) as u16;
    if let Some(up) = state.uptime_centis() {
        s.uptime = (up / 100) as _;
    }
    let served = crate::procview::mount_dir(registry)
        .join(state.xid.0.to_string())
        .join("loadavg");
    if let Ok(text) = std::fs::read_to_string(served) {
        for (slot, v) in s.loads.iter_mut().zip(text.split_whitespace()) {
            if let Ok(x) = v.parse::<f64>() {
                // SI_LOAD_SHIFT: 16 bits of fraction.
                *slot = (x * 65536.0) as _;
            }
        }
    }
    Ok(sys::sysinfo_bytes(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utsname_fields_are_nul_terminated_and_cut() {
        let long = vec![b'x'; 100];
        let b = utsname_bytes(&[
            b"Linux".to_vec(),
            b"web".to_vec(),
            b"2.6.32".to_vec(),
            long,
            b"x86_64".to_vec(),
            Vec::new(),
        ]);
        assert_eq!(b.len(), 390);
        assert_eq!(&b[..6], b"Linux\0");
        assert_eq!(&b[65..69], b"web\0");
        assert_eq!(&b[130..137], b"2.6.32\0");
        assert_eq!(b[195 + 63], b'x');
        assert_eq!(b[195 + 64], 0, "cut to 64 bytes and a NUL");
        assert_eq!(b[325], 0, "an empty field");
    }

    #[test]
    fn calls_include_their_x32_numbers() {
        let plan = Plan {
            sysinfo: true,
            uts: vec![("release".into(), "2.6.32".into())],
        };
        let calls = plan.calls();
        assert!(calls.contains(&libc::SYS_sysinfo) && calls.contains(&libc::SYS_uname));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(calls.len(), 4);
            assert!(calls.contains(&(libc::SYS_uname | 0x4000_0000)));
            assert_eq!(native(libc::SYS_uname | 0x4000_0000), libc::SYS_uname);
        }
        assert_eq!(native(libc::SYS_sysinfo), libc::SYS_sysinfo);
    }
}

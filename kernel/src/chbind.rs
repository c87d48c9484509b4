//! chbind: a context that shares the host's network stack may bind and
//! send only from its own IPv4 addresses (VServer's network context,
//! docs/SEMANTICS.md "chbind"), enforced by cgroup-BPF `sock_addr`
//! programs on its cgroup2 cgroup, which the kernel runs at every
//! `bind`, `connect` and unconnected `sendmsg` of a socket made in that
//! cgroup or below:
//!
//! * `bind`: one of its addresses (or its broadcast address) is kept;
//!   `0.0.0.0` becomes its first address; `127.0.0.0/8` becomes its
//!   loopback address; anything else is refused (`EPERM`).
//! * `connect`: a destination in `127.0.0.0/8` (or `0.0.0.0`) becomes its
//!   loopback address; an unbound socket is bound to its address on the
//!   destination's subnet (else its first); a bound socket must be bound
//!   to one of its addresses.
//! * unconnected UDP `sendmsg`: the same destination rewrite; the source
//!   (bound, `IP_PKTINFO`, or chosen like `connect`'s) must be its own.
//! * `recvmsg`, `getpeername`, `getsockname`: its loopback address reads
//!   as `127.0.0.1`, so a resolver at `127.0.0.1` answers as itself.
//! * IPv6 sockets: the same rules for v4-mapped addresses (`::` and `::1`
//!   taken as `::ffff:0.0.0.0` and `::ffff:127.0.0.1`, so a dual-stack
//!   `bind(::)` gets its first address); any other IPv6 address is
//!   refused (its addresses are IPv4).
//!
//! Programs are attached with `BPF_F_ALLOW_MULTI` by `BPF_PROG_ATTACH`
//! (not a BPF link): they stay with the cgroup while it exists, whatever
//! becomes of the process that attached them, so a crashed supervisor
//! does not open the guest's network.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::bpf::{Asm, FP};
use crate::error::{Error, Result, os};
use crate::sys;
use crate::xid::Xid;

/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
const SOCK_ADDR: u32 = 18;
/// `BPF_F_ALLOW_MULTI`.
const ALLOW_MULTI: u32 = 1 << 1;
/// `BPF_FUNC_bind`.
const HELPER_BIND: i32 = 64;

// struct bpf_sock_addr: user_ip4 at 4, msg_src_ip4 at 40, sk at 64;
// struct bpf_sock: src_ip4 at 24.
const USER_IP4: i16 = 4;
const USER_IP6: i16 = 8;
const MSG_SRC_IP4: i16 = 40;
const SK: i16 = 64;
const SK_SRC_IP4: i16 = 24;

/// Where a program is attached (`enum bpf_attach_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Bind4 = 8,
    Bind6 = 9,
    Connect4 = 10,
    Connect6 = 11,
    Sendmsg4 = 14,
    Sendmsg6 = 15,
    Recvmsg4 = 19,
    Getpeername4 = 29,
    Getsockname4 = 31,
}

impl Hook {
    /// The program's name (`bpftool prog` shows it).
    fn name(self) -> &'static str {
        match self {
            Hook::Bind4 => "vx_bind4",
            Hook::Bind6 => "vx_bind6",
            Hook::Connect4 => "vx_connect4",
            Hook::Connect6 => "vx_connect6",
            Hook::Sendmsg4 => "vx_sendmsg4",
            Hook::Sendmsg6 => "vx_sendmsg6",
            Hook::Recvmsg4 => "vx_recvmsg4",
            Hook::Getpeername4 => "vx_getpeer4",
            Hook::Getsockname4 => "vx_getsock4",
        }
    }
}

/// Which socket address a program reads.
#[derive(Debug, Clone, Copy)]
enum Family {
    /// `sockaddr_in`: `user_ip4`.
    V4,
    /// `sockaddr_in6`, v4-mapped: the last word of `user_ip6`.
    V6,
}

impl Family {
    /// The offset of the IPv4 address in `struct bpf_sock_addr`.
    fn at(self) -> i16 {
        match self {
            Family::V4 => USER_IP4,
            Family::V6 => USER_IP6 + 12,
        }
    }
}

/// Every hook chbind uses (to replace or list what is attached).
const HOOKS: [Hook; 9] = [
    Hook::Bind4,
    Hook::Bind6,
    Hook::Connect4,
    Hook::Connect6,
    Hook::Sendmsg4,
    Hook::Sendmsg6,
    Hook::Recvmsg4,
    Hook::Getpeername4,
    Hook::Getsockname4,
];

/// A context's addresses in the host's stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Its addresses with their prefix lengths; the first is where
    /// `0.0.0.0` goes and the source when no subnet matches.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// A broadcast address it may also bind.
    pub bcast: Option<Ipv4Addr>,
    /// Its loopback: where `127.0.0.0/8` goes; `127.0.0.1`: the host's
    /// loopback, shared (127/8 binds and destinations stay as they are).
    pub lback: Ipv4Addr,
}

/// The loopback address of context `xid` when none is configured:
/// `127.X_HIGH.X_LOW.1`, its own, so that what it binds to `localhost`
/// is neither the host's nor reachable from another context.
pub fn auto_lback(xid: Xid) -> Ipv4Addr {
    let [hi, lo] = (xid.0 as u16).to_be_bytes();
    Ipv4Addr::new(127, hi, lo, 1)
}

/// An address as the programs compare it: the `u32` a 4-byte load of the
/// network-order bytes gives on this (little-endian or big-endian) CPU.
fn word(ip: Ipv4Addr) -> i32 {
    u32::from_ne_bytes(ip.octets()) as i32
}

/// The netmask of `prefix` as [`word`] gives it.
fn mask(prefix: u8) -> i32 {
    let m = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    word(Ipv4Addr::from(m))
}

impl Policy {
    /// A policy; refuses an empty address list and a loopback that is not
    /// in `127.0.0.0/8`.
    pub fn new(
        addrs: Vec<(Ipv4Addr, u8)>,
        bcast: Option<Ipv4Addr>,
        lback: Ipv4Addr,
    ) -> std::result::Result<Policy, String> {
        if addrs.is_empty() {
            return Err("no address to bind to".into());
        }
        if let Some((a, _)) = addrs
            .iter()
            .find(|(a, _)| a.is_unspecified() || a.is_loopback())
        {
            return Err(format!(
                "{a} cannot be a context's address (0.0.0.0 and 127.0.0.0/8 are rewritten)"
            ));
        }
        // 127.0.0.6 is what a socket bound to a real IPv6 address shows
        // as its IPv4 one.
        if !lback.is_loopback() || lback == Ipv4Addr::new(127, 0, 0, 6) {
            return Err(format!(
                "loopback address {lback} is not in 127.0.0.0/8 (or is 127.0.0.6)"
            ));
        }
        Ok(Policy {
            addrs,
            bcast,
            lback,
        })
    }

    /// Whether the loopback is private (rewritten back to 127.0.0.1 when
    /// read).
    fn private_lback(&self) -> bool {
        self.lback != Ipv4Addr::LOCALHOST
    }

    /// Every address a socket of the context may be bound to.
    fn own(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.addrs.iter().map(|(a, _)| *a).collect();
        v.extend(self.bcast);
        v.push(self.lback);
        v.dedup();
        v
    }

    /// `if r_reg is one of ours goto to`.
    fn jump_if_own(&self, a: &mut Asm, reg: u8, to: &str) {
        for ip in self.own() {
            a.jeq32(reg, word(ip), to);
        }
    }

    /// `goto src<N>` for the address on `r2`'s subnet, else `src0`
    /// (clobbers r3).
    fn jump_to_source(&self, a: &mut Asm) {
        for (n, (ip, prefix)) in self.addrs.iter().enumerate() {
            if *prefix > 0 {
                a.mov32(3, 2).and32_imm(3, mask(*prefix)).jeq32(
                    3,
                    word(*ip) & mask(*prefix),
                    &format!("src{n}"),
                );
            }
        }
        a.ja("src0");
    }

    /// `if r2 is 0.0.0.0 or in 127/8 goto to` (clobbers r3).
    fn jump_if_local(a: &mut Asm, to: &str) {
        a.jeq32(2, 0, to).mov32(3, 2).and32_imm(3, mask(8)).jeq32(
            3,
            word(Ipv4Addr::new(127, 0, 0, 0)),
            to,
        );
    }

    /// For a `sockaddr_in6`: `r2` = the IPv4 address of a v4-mapped
    /// `user_ip6` (`::` and `::1` are first rewritten to `::ffff:0.0.0.0`
    /// and `::ffff:127.0.0.1`, which the IPv4 rules then map); any other
    /// IPv6 address is refused.
    fn mapped_prologue(a: &mut Asm) {
        let mapped = u32::from_ne_bytes([0, 0, 0xff, 0xff]) as i32;
        let one = u32::from_ne_bytes([0, 0, 0, 1]) as i32;
        a.load32(2, 6, USER_IP6)
            .jne32(2, 0, "deny6")
            .load32(2, 6, USER_IP6 + 4)
            .jne32(2, 0, "deny6")
            .load32(2, 6, USER_IP6 + 8)
            .jeq32(2, mapped, "v4")
            .jne32(2, 0, "deny6")
            .load32(2, 6, USER_IP6 + 12)
            .jeq32(2, 0, "unspec6")
            .jeq32(2, one, "lo6");
        a.label("deny6").ret(0);
        a.label("unspec6")
            .mov_imm(3, mapped)
            .store32(6, USER_IP6 + 8, 3)
            .ja("v4");
        a.label("lo6")
            .mov_imm(3, mapped)
            .store32(6, USER_IP6 + 8, 3)
            .mov_imm(2, word(Ipv4Addr::LOCALHOST))
            .store32(6, USER_IP6 + 12, 2);
        a.label("v4").load32(2, 6, USER_IP6 + 12);
    }

    /// `r6` = the context, `r2` = the IPv4 address to load from `at`.
    fn prologue(family: Family, a: &mut Asm) {
        a.mov(6, 1);
        match family {
            Family::V4 => {
                a.load32(2, 6, family.at());
            }
            Family::V6 => Self::mapped_prologue(a),
        }
    }

    fn bind(&self, family: Family) -> Asm {
        let mut a = Asm::new();
        let at = family.at();
        Self::prologue(family, &mut a);
        a.jeq32(2, 0, "any");
        self.jump_if_own(&mut a, 2, "allow");
        Self::jump_if_local(&mut a, "loop");
        a.ret(0);
        a.label("any")
            .mov_imm(2, word(self.addrs[0].0))
            .store32(6, at, 2)
            .ja("allow");
        a.label("loop");
        if self.private_lback() {
            a.mov_imm(2, word(self.lback)).store32(6, at, 2);
        }
        a.label("allow").ret(1);
        a
    }

    /// With the host's loopback shared: a destination in 127/8 stays (and
    /// the kernel picks its 127/8 source), `0.0.0.0` becomes 127.0.0.1.
    fn shared_loopback(a: &mut Asm, at: i16) {
        a.jne32(2, 0, "allow")
            .mov_imm(2, word(Ipv4Addr::LOCALHOST))
            .store32(6, at, 2)
            .ja("allow");
    }

    fn connect(&self, family: Family) -> Asm {
        let mut a = Asm::new();
        let at = family.at();
        Self::prologue(family, &mut a);
        Self::jump_if_local(&mut a, "loop");
        self.jump_to_source(&mut a);
        a.label("loop");
        if self.private_lback() {
            a.mov_imm(2, word(self.lback)).store32(6, at, 2).ja("srcL");
        } else {
            Self::shared_loopback(&mut a, at);
        }
        // The source address on the stack, for bpf_bind: a sockaddr_in
        // { AF_INET, port 0, address, zero } at fp-16, or a sockaddr_in6
        // { AF_INET6, port 0, flow 0, ::ffff:address, scope 0 } at fp-32.
        let sources = self.addrs.iter().map(|(ip, _)| *ip).enumerate();
        // (A private loopback's source only: the verifier refuses code no
        // path reaches.)
        let lback = self
            .private_lback()
            .then(|| ("srcL".to_string(), self.lback));
        for (label, ip) in sources.map(|(n, ip)| (format!("src{n}"), ip)).chain(lback) {
            a.label(&label);
            match family {
                Family::V4 => {
                    a.store32_imm(FP, -16, libc::AF_INET)
                        .store32_imm(FP, -12, word(ip))
                        .store64_imm(FP, -8, 0);
                }
                Family::V6 => {
                    a.store32_imm(FP, -32, libc::AF_INET6)
                        .store32_imm(FP, -28, 0)
                        .store64_imm(FP, -24, 0)
                        .store32_imm(FP, -16, u32::from_ne_bytes([0, 0, 0xff, 0xff]) as i32)
                        .store32_imm(FP, -12, word(ip))
                        .store64_imm(FP, -8, 0);
                }
            }
            a.ja("bind");
        }
        let (from, len) = match family {
            Family::V4 => (-16, 16),
            Family::V6 => (-32, 28),
        };
        a.label("bind")
            .mov(1, 6)
            .mov(2, FP)
            .add_imm(2, from)
            .mov_imm(3, len)
            .call(HELPER_BIND)
            .jeq64(0, 0, "allow");
        // Already bound: to one of ours (a v4-mapped bind shows its IPv4
        // address there too), or refused.
        a.load64(1, 6, SK).load32(2, 1, SK_SRC_IP4);
        self.jump_if_own(&mut a, 2, "allow");
        a.ret(0);
        a.label("allow").ret(1);
        a
    }

    fn sendmsg4(&self) -> Asm {
        let mut a = Asm::new();
        a.mov(6, 1).load32(2, 6, USER_IP4);
        Self::jump_if_local(&mut a, "loop");
        a.load32(4, 6, MSG_SRC_IP4).jeq32(4, 0, "choose");
        a.label("check");
        self.jump_if_own(&mut a, 4, "allow");
        a.ret(0);
        a.label("choose");
        self.jump_to_source(&mut a);
        for (n, (ip, _)) in self.addrs.iter().enumerate() {
            a.label(&format!("src{n}"))
                .mov_imm(4, word(*ip))
                .store32(6, MSG_SRC_IP4, 4)
                .ja("allow");
        }
        a.label("loop");
        if self.private_lback() {
            a.mov_imm(2, word(self.lback))
                .store32(6, USER_IP4, 2)
                .load32(4, 6, MSG_SRC_IP4)
                .jne32(4, 0, "check")
                .mov_imm(4, word(self.lback))
                .store32(6, MSG_SRC_IP4, 4);
        } else {
            Self::shared_loopback(&mut a, USER_IP4);
        }
        a.label("allow").ret(1);
        a
    }

    /// recvmsg, getpeername, getsockname: the loopback reads as 127.0.0.1.
    fn unmap_lback(&self) -> Asm {
        let mut a = Asm::new();
        a.load32(2, 1, USER_IP4)
            .jne32(2, word(self.lback), "out")
            .mov_imm(2, word(Ipv4Addr::LOCALHOST))
            .store32(1, USER_IP4, 2);
        a.label("out").ret(1);
        a
    }

    fn refuse() -> Asm {
        let mut a = Asm::new();
        a.ret(0);
        a
    }

    /// The programs, by hook.
    fn programs(&self) -> Vec<(Hook, Asm)> {
        let mut v = vec![
            (Hook::Bind4, self.bind(Family::V4)),
            (Hook::Connect4, self.connect(Family::V4)),
            (Hook::Sendmsg4, self.sendmsg4()),
            (Hook::Bind6, self.bind(Family::V6)),
            (Hook::Connect6, self.connect(Family::V6)),
            // A datagram to a v4-mapped address goes through the IPv4
            // hook; any other is refused.
            (Hook::Sendmsg6, Self::refuse()),
        ];
        if self.private_lback() {
            for hook in [Hook::Recvmsg4, Hook::Getpeername4, Hook::Getsockname4] {
                v.push((hook, self.unmap_lback()));
            }
        }
        v
    }

    /// Loads the programs and attaches them to the cgroup2 directory
    /// `cgroup`, replacing what chbind attached there before (the new
    /// ones are attached first, so no socket call finds none).
    pub fn apply(&self, cgroup: &Path) -> Result<()> {
        let dir = open_cgroup(cgroup)?;
        let mut old = Vec::new();
        for hook in HOOKS {
            let ids = sys::bpf_prog_query(dir.as_fd(), hook as u32)
                .map_err(os(format!("querying {}'s BPF programs", cgroup.display())))?;
            old.extend(ids.into_iter().map(|id| (hook, id)));
        }
        for (hook, asm) in self.programs() {
            let insns = asm.finish().map_err(Error::Other)?;
            let prog = sys::bpf_prog_load(SOCK_ADDR, hook as u32, hook.name(), &insns).map_err(
                |(e, log)| {
                    Error::Other(format!(
                        "loading the {} program: {e}{}",
                        hook.name(),
                        if log.is_empty() {
                            String::new()
                        } else {
                            format!("\n{log}")
                        }
                    ))
                },
            )?;
            sys::bpf_prog_attach(dir.as_fd(), prog.as_fd(), hook as u32, ALLOW_MULTI).map_err(
                os(format!("attaching {} to {}", hook.name(), cgroup.display())),
            )?;
        }
        for (hook, id) in old {
            // A program another process detached meanwhile is gone already.
            if let Ok(prog) = sys::bpf_prog_by_id(id) {
                let _ = sys::bpf_prog_detach(dir.as_fd(), prog.as_fd(), hook as u32);
            }
        }
        Ok(())
    }
}

fn open_cgroup(cgroup: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        cgroup,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(os(format!("opening cgroup {}", cgroup.display())))
}

/// How many chbind programs are attached to the cgroup2 directory
/// `cgroup` itself (0: its sockets are not restricted by it).
pub fn attached(cgroup: &Path) -> Result<usize> {
    let dir = open_cgroup(cgroup)?;
    let mut n = 0;
    for hook in HOOKS {
        n += sys::bpf_prog_query(dir.as_fd(), hook as u32)
            .map_err(os(format!("querying {}'s BPF programs", cgroup.display())))?
            .len();
    }
    Ok(n)
}

/// Puts the calling process (and what it starts) under `policy`: in a
/// new cgroup2 cgroup `vxfs/chbind-PID` below its own, with the programs
/// attached first. Empty `chbind-*` cgroups that earlier runs left (their
/// processes ended) are removed on the way; one whose processes live on
/// stays, and so does its restriction. Returns the cgroup.
pub fn confine_self(policy: &Policy) -> Result<std::path::PathBuf> {
    let layout =
        crate::cgroup::Layout::detect().map_err(crate::error::io("reading the cgroup layout"))?;
    let v2 = layout
        .hierarchies
        .iter()
        .find(|h| h.version == crate::cgroup::Version::V2)
        .ok_or_else(|| {
            Error::Other(
                "a cgroup2 hierarchy is needed for the BPF programs (mount cgroup2, e.g. at \
                 /sys/fs/cgroup/unified)"
                    .into(),
            )
        })?;
    let base = v2.own_dir().join("vxfs");
    match std::fs::create_dir(&base) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(crate::error::io(format!("making {}", base.display()))(e));
        }
        _ => {}
    }
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("chbind-") {
                // Refused (EBUSY) while it has processes.
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let dir = base.join(format!("chbind-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(crate::error::io(format!("making {}", dir.display())))?;
    let joined = policy.apply(&dir).and_then(|()| {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
            .map_err(crate::error::io(format!("joining {}", dir.display())))
    });
    if let Err(e) = joined {
        let _ = std::fs::remove_dir(&dir);
        return Err(e);
    }
    Ok(dir)
}

/// Keeps the calling process (about to exec a program under chbind) from
/// undoing it: a mount namespace of its own in which every cgroup mount is
/// read-only (so it cannot write itself into another cgroup: without the
/// `nsdelegate` mount option a cgroup namespace alone does not stop a root
/// process), then a cgroup namespace. The caller drops `CAP_SYS_ADMIN`
/// after, so that neither can be reverted.
pub fn seal() -> Result<()> {
    crate::space::new_mount_namespace()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(crate::error::io("reading /proc/self/mountinfo"))?;
    for line in table.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or("");
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        if fstype == "cgroup" || fstype == "cgroup2" {
            let point = point.replace("\\040", " ").replace("\\011", "\t");
            rustix::mount::mount_remount(
                point.as_str(),
                rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
                "",
            )
            .map_err(os(format!("making {point} read-only")))?;
        }
    }
    crate::sys::unshare(rustix::thread::UnshareFlags::NEWCGROUP)
        .map_err(os("unshare(CLONE_NEWCGROUP)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(
            vec![
                (Ipv4Addr::new(10, 77, 0, 5), 24),
                (Ipv4Addr::new(192, 168, 9, 200), 16),
            ],
            Some(Ipv4Addr::new(10, 77, 0, 255)),
            auto_lback(Xid(4242)),
        )
        .unwrap()
    }

    #[test]
    fn loopback_per_context() {
        assert_eq!(auto_lback(Xid(4242)), Ipv4Addr::new(127, 16, 146, 1));
        assert_eq!(auto_lback(Xid(2)), Ipv4Addr::new(127, 0, 2, 1));
        assert!(policy().private_lback());
    }

    #[test]
    fn words_are_memory_order() {
        // The kernel stores user_ip4 in network order: the first octet in
        // the lowest byte of memory.
        let w = word(Ipv4Addr::new(10, 77, 0, 5)) as u32;
        assert_eq!(w.to_ne_bytes(), [10, 77, 0, 5]);
        assert_eq!((mask(24) as u32).to_ne_bytes(), [255, 255, 255, 0]);
        assert_eq!((mask(8) as u32).to_ne_bytes(), [255, 0, 0, 0]);
        assert_eq!(mask(0), 0);
        assert_eq!(mask(32), -1);
    }

    #[test]
    fn bad_policies_are_refused() {
        let lb = auto_lback(Xid(7));
        assert!(Policy::new(vec![], None, lb).is_err());
        assert!(Policy::new(vec![(Ipv4Addr::LOCALHOST, 8)], None, lb).is_err());
        assert!(Policy::new(vec![(Ipv4Addr::UNSPECIFIED, 0)], None, lb).is_err());
        let e = Policy::new(
            vec![(Ipv4Addr::new(10, 0, 0, 1), 8)],
            None,
            "10.0.0.2".parse().unwrap(),
        )
        .unwrap_err();
        assert!(e.contains("127.0.0.0/8"), "{e}");
    }

    #[test]
    fn every_program_assembles() {
        let p = policy();
        let progs = p.programs();
        assert_eq!(progs.len(), 9);
        for (hook, asm) in progs {
            let insns = asm.finish().unwrap();
            assert!(insns.len() < 200, "{hook:?}");
            assert_eq!(insns.last().unwrap().code, 0x95, "{hook:?} ends in exit");
        }
        // A shared loopback: no rewrite back.
        let shared = Policy::new(
            vec![(Ipv4Addr::new(10, 0, 0, 1), 8)],
            None,
            Ipv4Addr::LOCALHOST,
        )
        .unwrap();
        assert_eq!(shared.programs().len(), 6);
        // Its own addresses: first, second, broadcast, loopback.
        assert_eq!(p.own().len(), 4);
    }
}

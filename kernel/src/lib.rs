//! vxfs-kernel: the half of Linux-VServer that the kernel patch supplied,
//! on mainline namespaces and cgroups (docs/VSERVER.md §10,
//! docs/ARCHITECTURE.md "The context core").
//!
//! * [`xid`], [`names`]: context ids, util-vserver's flag and capability
//!   names;
//! * [`config`]: a guest's `/etc/vservers/NAME/` configuration;
//! * [`cgroup`]: one cgroup per context in every hierarchy (v1, v2,
//!   hybrid);
//! * [`memory`], [`tasks`]: a context's memory figures and threads (for
//!   vxproc and sysinfo);
//! * [`sched`], [`limits`]: the token bucket and context limits mapped to
//!   cgroup knobs, sysctls and rlimits;
//! * [`registry`]: running contexts (`/run/vxfs/ctx/XID/`);
//! * [`sys`]: the only `unsafe` code (clone3, seccomp, bpf);
//! * [`chbind`], [`bpf`]: a context's addresses in the host's network
//!   stack, by cgroup-BPF programs;
//! * [`rootfs`], [`security`]: the guest's mounts, capabilities and
//!   seccomp filter;
//! * [`procview`]: the guest side of vxproc (its own /proc figures);
//! * [`start`], [`enter`]: starting, supervising, stopping and entering
//!   guests.

pub mod bpf;
pub mod cgroup;
pub mod chbind;
pub mod config;
pub mod enter;
pub mod error;
pub mod governor;
pub mod history;
pub mod intercept;
pub mod limits;
pub mod live;
pub mod memory;
pub mod names;
pub mod net;
pub mod procview;
pub mod registry;
pub mod rootfs;
pub mod sched;
pub mod security;
pub mod space;
pub mod start;
pub mod sys;
pub mod tasks;
pub mod xid;

pub use xid::Xid;

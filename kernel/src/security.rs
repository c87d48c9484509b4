//! What a guest may do beyond its namespaces (docs/SEMANTICS.md, "The
//! context core"): its bounding set (util-vserver's `bcapabilities` over
//! its `--secure` default), and a seccomp filter that refuses (`EPERM`) the
//! calls no guest needs and no namespace confines: loading kernel code
//! (modules, kexec, BPF), perf events, the kernel keyring, handles to host
//! inodes (`open_by_handle_at`), the wall clock (unless the guest keeps
//! `SYS_TIME`), userfaultfd, swap, accounting; new namespaces and `setns`
//! unless the context capability `namespace`; mounting unless
//! `secure_mount`. `clone3` answers `ENOSYS` (its flags cannot be
//! inspected), so the C library falls back to `clone`, whose flags are.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::names::{BCAPS, ccap};

/// An error applying the policy.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A prctl or capset failed.
    #[error("{what}: {error}")]
    Os {
        /// What was done.
        what: String,
        /// Why it failed.
        error: rustix::io::Errno,
    },
    /// The filter could not be built.
    #[error("building the seccomp filter: {0}")]
    Filter(String),
}

/// The highest capability this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(crate::names::LAST_CAP)
}

/// Limits the calling thread (about to exec the guest's program) to the
/// bounding set `bcaps`, with no ambient and no inheritable capabilities.
pub fn restrict_capabilities(bcaps: u64) -> Result<(), SecurityError> {
    use rustix::thread::CapabilitySet;
    let os = |what: String| move |error| SecurityError::Os { what, error };
    for cap in 0..=last_cap().min(63) {
        if bcaps & (1 << cap) == 0 {
            rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
                1 << cap,
            ))
            .map_err(os(format!(
                "dropping {} from the bounding set",
                BCAPS.format(1 << cap)
            )))?;
        }
    }
    rustix::thread::clear_ambient_capability_set()
        .map_err(os("clearing ambient capabilities".into()))?;
    let mut sets = rustix::thread::capabilities(None).map_err(os("capget".into()))?;
    sets.inheritable = CapabilitySet::empty();
    rustix::thread::set_capabilities(None, sets).map_err(os("capset".into()))?;
    Ok(())
}

/// Syscalls refused with EPERM whatever the guest's capabilities.
const ALWAYS_DENIED: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "userfaultfd",
    "swapon",
    "swapoff",
    "acct",
    "lookup_dcookie",
    "quotactl",
];

/// The namespace flags of `clone`/`unshare`.
const NEW_NAMESPACES: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWTIME as u64,
];

fn nr(name: &str) -> Option<i64> {
    Some(match name {
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "bpf" => libc::SYS_bpf,
        "perf_event_open" => libc::SYS_perf_event_open,
        "keyctl" => libc::SYS_keyctl,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "userfaultfd" => libc::SYS_userfaultfd,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "acct" => libc::SYS_acct,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "quotactl" => libc::SYS_quotactl,
        "settimeofday" => libc::SYS_settimeofday,
        "clock_settime" => libc::SYS_clock_settime,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "adjtimex" => libc::SYS_adjtimex,
        "setns" => libc::SYS_setns,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "pivot_root" => libc::SYS_pivot_root,
        "fsopen" => libc::SYS_fsopen,
        "fsmount" => libc::SYS_fsmount,
        "fspick" => libc::SYS_fspick,
        "move_mount" => libc::SYS_move_mount,
        "open_tree" => libc::SYS_open_tree,
        "mount_setattr" => libc::SYS_mount_setattr,
        "syslog" => libc::SYS_syslog,
        _ => return None,
    })
}

fn arch() -> Result<seccompiler::TargetArch, SecurityError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| SecurityError::Filter(e.to_string()))
}

/// The syscall names a guest with `bcaps` and `ccaps` is refused.
pub fn denied(bcaps: u64, ccaps: u64) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ALWAYS_DENIED.to_vec();
    if bcaps & crate::names::BCAPS.lookup("SYS_TIME").unwrap_or(0) == 0 {
        names.extend(["settimeofday", "clock_settime", "clock_adjtime", "adjtimex"]);
    }
    if ccaps & ccap::NAMESPACE == 0 {
        names.push("setns");
    }
    if ccaps & ccap::SECURE_MOUNT == 0 {
        names.extend([
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
        ]);
    }
    if ccaps & ccap::SYSLOG == 0 {
        names.push("syslog");
    }
    names
}

/// The guest's filters: refused calls (EPERM) and `clone3` (ENOSYS).
pub fn filters(bcaps: u64, ccaps: u64) -> Result<Vec<BpfProgram>, SecurityError> {
    let err = |e: seccompiler::BackendError| SecurityError::Filter(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in denied(bcaps, ccaps) {
        if let Some(n) = nr(name) {
            rules.insert(n, Vec::new());
        }
    }
    if ccaps & ccap::NAMESPACE == 0 {
        // clone(flags, ...) and unshare(flags) with any namespace flag.
        for (sys, arg) in [(libc::SYS_clone, 0u8), (libc::SYS_unshare, 0u8)] {
            let any_flag: Result<Vec<SeccompRule>, _> = NEW_NAMESPACES
                .iter()
                .map(|&bit| {
                    SeccompRule::new(vec![SeccompCondition::new(
                        arg,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(bit),
                        bit,
                    )?])
                })
                .collect();
            rules.insert(sys, any_flag.map_err(err)?);
        }
    }
    let arch = arch()?;
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(err)?;
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    let nosys = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(err)?;
    let compile = |f: SeccompFilter| -> Result<BpfProgram, SecurityError> {
        f.try_into()
            .map_err(|e: seccompiler::BackendError| SecurityError::Filter(e.to_string()))
    };
    Ok(vec![compile(refuse)?, compile(nosys)?])
}

/// Installs the guest's filters on the calling thread.
pub fn install(filters: &[BpfProgram]) -> Result<(), SecurityError> {
    for f in filters {
        crate::sys::install_seccomp(f).map_err(|error| SecurityError::Os {
            what: "installing the seccomp filter".into(),
            error,
        })?;
    }
    Ok(())
}

/// Paths of the guest's `/proc` and `/sys` hidden behind an empty file or
/// directory (the OCI runtimes' list).
pub const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths of the guest's `/proc` made read-only (sysctls are set before).
pub const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The guest's I/O priority and personality, for its init and every
/// command entered into it (inherited from there on).
pub fn take_process_settings(
    ionice: Option<u32>,
    personality: Option<u64>,
) -> crate::error::Result<()> {
    use crate::error::os;
    if let Some(prio) = ionice {
        crate::sys::set_ioprio(prio).map_err(os("ionice (ioprio_set)"))?;
    }
    if let Some(persona) = personality {
        crate::sys::set_personality(persona).map_err(os("personality"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{BCAPS_SECURE, CCAPS_DEFAULT};

    #[test]
    fn the_default_policy() {
        let d = denied(BCAPS_SECURE, CCAPS_DEFAULT);
        for name in [
            "mount",
            "setns",
            "settimeofday",
            "bpf",
            "init_module",
            "syslog",
        ] {
            assert!(d.contains(&name), "{name}");
        }
        let trusted = denied(
            BCAPS_SECURE | BCAPS.lookup("SYS_TIME").unwrap(),
            CCAPS_DEFAULT | ccap::NAMESPACE | ccap::SECURE_MOUNT | ccap::SYSLOG,
        );
        for name in ["mount", "setns", "settimeofday", "syslog"] {
            assert!(!trusted.contains(&name), "{name}");
        }
        // Every name has a number on this architecture.
        for name in denied(BCAPS_SECURE, CCAPS_DEFAULT) {
            assert!(nr(name).is_some(), "{name}");
        }
        let f = filters(BCAPS_SECURE, CCAPS_DEFAULT).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|p| !p.is_empty()));
    }
}

//! VServer's context limits (`rlimits/`, docs/VSERVER.md §10.5) mapped to
//! what mainline has (docs/SEMANTICS.md, "The context core"):
//!
//! | resource | becomes |
//! |---|---|
//! | nproc | `pids.max` (hard) |
//! | rss (pages) | memory limit (hard), `memory.high`/soft limit (soft) |
//! | as (pages) | the memory limit if rss is not set (no cgroup limits address space) |
//! | shmem (pages), semary, nsems | the guest's IPC namespace sysctls `kernel.shmall`/`shmmax`, `kernel.sem` |
//! | nofile, locks, cpu, fsize, data, stack, core, memlock (pages), msgqueue | rlimits of the guest's init, inherited |
//! | openfd, nsock, dentry, anon | nothing: reported (their memory is bounded by the memory limit) |
//!
//! Soft limits with no mainline counterpart and explicit minimums are
//! reported too; nothing is dropped silently.

use crate::config::{Rlimit, RlimitValue, Rlimits};
use crate::names::cflag;

/// Bytes per VServer page.
pub const PAGE: u64 = 4096;

/// What to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitPlan {
    /// `pids.max` (`Some(None)`: write "max").
    pub pids_max: Option<Option<u64>>,
    /// The memory limit and soft limit, bytes.
    pub memory: Option<(Option<u64>, Option<u64>)>,
    /// Sysctls to set inside the guest's IPC namespace.
    pub sysctls: Vec<(String, String)>,
    /// Rlimits of the guest's init: (resource, soft, hard); `u64::MAX` is
    /// infinity.
    pub rlimits: Vec<(i32, u64, u64)>,
    /// One line per setting that mainline cannot express.
    pub warnings: Vec<String>,
}

fn value(v: Option<RlimitValue>) -> Option<u64> {
    match v? {
        RlimitValue::Infinite => None,
        RlimitValue::Of(n) => Some(n),
    }
}

/// The rlimit resources, with their unit factor.
const PROCESS: &[(&str, i32, u64)] = &[
    ("cpu", libc::RLIMIT_CPU as i32, 1),
    ("fsize", libc::RLIMIT_FSIZE as i32, 1),
    ("data", libc::RLIMIT_DATA as i32, 1),
    ("stack", libc::RLIMIT_STACK as i32, 1),
    ("core", libc::RLIMIT_CORE as i32, 1),
    ("nofile", libc::RLIMIT_NOFILE as i32, 1),
    ("memlock", libc::RLIMIT_MEMLOCK as i32, PAGE),
    ("locks", libc::RLIMIT_LOCKS as i32, 1),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as i32, 1),
];

/// The rustix resource of an `RLIMIT_*` number the plans use.
pub fn resource(res: i32) -> Option<rustix::process::Resource> {
    use rustix::process::Resource;
    Some(match res as u32 {
        libc::RLIMIT_CPU => Resource::Cpu,
        libc::RLIMIT_FSIZE => Resource::Fsize,
        libc::RLIMIT_DATA => Resource::Data,
        libc::RLIMIT_STACK => Resource::Stack,
        libc::RLIMIT_CORE => Resource::Core,
        libc::RLIMIT_NOFILE => Resource::Nofile,
        libc::RLIMIT_MEMLOCK => Resource::Memlock,
        libc::RLIMIT_LOCKS => Resource::Locks,
        libc::RLIMIT_MSGQUEUE => Resource::Msgqueue,
        _ => return None,
    })
}

/// The default `kernel.sem`: SEMMSL SEMMNS SEMOPM SEMMNI.
const SEM_DEFAULT: [u64; 4] = [32000, 1_024_000_000, 500, 32000];

/// Maps a guest's `rlimits/` (with its flags `cflags`).
pub fn plan(rl: &Rlimits, cflags: u64) -> LimitPlan {
    let mut p = LimitPlan::default();
    let get = |name: &str| rl.get(name).copied().unwrap_or_default();
    for (name, lim) in rl {
        if let (Some(min), hard) = (lim.min, lim.hard) {
            if min != RlimitValue::Of(0) && Some(min) != hard && min != RlimitValue::Infinite {
                p.warnings.push(format!(
                    "rlimits/{name}.min: not representable on mainline (no guaranteed minimum)"
                ));
            }
        }
    }
    let nproc = get("nproc");
    if nproc.hard.is_some() {
        if cflags & cflag::PROLIFIC != 0 {
            p.warnings
                .push("rlimits/nproc: not applied, the guest has the prolific flag".into());
        } else {
            p.pids_max = Some(value(nproc.hard));
        }
        if nproc.soft.is_some() && nproc.soft != nproc.hard {
            p.warnings
                .push("rlimits/nproc.soft: not representable (pids.max has no soft limit)".into());
        }
    }
    let rss = get("rss");
    let address = get("as");
    let pages = |v: Option<RlimitValue>| value(v).map(|n| n.saturating_mul(PAGE));
    if rss.hard.is_some() || rss.soft.is_some() {
        p.memory = Some((
            pages(rss.hard),
            pages(rss.soft).filter(|_| rss.soft != rss.hard),
        ));
        if address.hard.is_some() {
            p.warnings.push("rlimits/as: not representable (no address-space limit for a context); rss limits its memory".into());
        }
    } else if address.hard.is_some() {
        p.memory = Some((pages(address.hard), None));
        p.warnings.push(
            "rlimits/as: approximated by the memory limit (a cgroup limits resident memory, not \
             address space)"
                .into(),
        );
    }
    let shmem = get("shmem");
    if let Some(n) = value(shmem.hard) {
        p.sysctls.push(("kernel/shmall".into(), n.to_string()));
        p.sysctls
            .push(("kernel/shmmax".into(), n.saturating_mul(PAGE).to_string()));
    }
    let (semary, nsems) = (value(get("semary").hard), value(get("nsems").hard));
    if semary.is_some() || nsems.is_some() {
        let mut sem = SEM_DEFAULT;
        if let Some(n) = nsems {
            sem[1] = n;
        }
        if let Some(n) = semary {
            sem[3] = n;
        }
        p.sysctls.push((
            "kernel/sem".into(),
            sem.iter().map(u64::to_string).collect::<Vec<_>>().join(" "),
        ));
    }
    for &(name, resource, unit) in PROCESS {
        let l: Rlimit = get(name);
        if l.hard.is_none() && l.soft.is_none() {
            continue;
        }
        let scale = |v: Option<RlimitValue>| value(v).map_or(u64::MAX, |n| n.saturating_mul(unit));
        let hard = scale(l.hard);
        let soft = scale(l.soft.or(l.hard)).min(hard);
        p.rlimits.push((resource, soft, hard));
        if name == "msgqueue" {
            p.warnings.push(
                "rlimits/msgqueue: per user inside the guest, not for the context as a whole"
                    .into(),
            );
        }
    }
    for name in ["openfd", "nsock", "dentry", "anon"] {
        if rl.contains_key(name) {
            p.warnings.push(format!(
                "rlimits/{name}: not representable on mainline (no context-wide count); the \
                 memory limit bounds its kernel memory"
            ));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(hard: u64) -> Rlimit {
        Rlimit {
            min: Some(RlimitValue::Of(hard)),
            soft: Some(RlimitValue::Of(hard)),
            hard: Some(RlimitValue::Of(hard)),
        }
    }

    #[test]
    fn the_mapping_table() {
        let mut rl = Rlimits::new();
        rl.insert("nproc".into(), lim(20));
        rl.insert(
            "rss".into(),
            Rlimit {
                min: None,
                soft: Some(RlimitValue::Of(1024)),
                hard: Some(RlimitValue::Of(2048)),
            },
        );
        rl.insert("shmem".into(), lim(100));
        rl.insert("semary".into(), lim(8));
        rl.insert("nofile".into(), lim(512));
        rl.insert("memlock".into(), lim(16));
        rl.insert("openfd".into(), lim(100));
        let p = plan(&rl, 0);
        assert_eq!(p.pids_max, Some(Some(20)));
        assert_eq!(p.memory, Some((Some(2048 * PAGE), Some(1024 * PAGE))));
        assert_eq!(
            p.sysctls,
            [
                ("kernel/shmall".into(), "100".into()),
                ("kernel/shmmax".into(), (100 * PAGE).to_string()),
                ("kernel/sem".into(), "32000 1024000000 500 8".into()),
            ]
        );
        assert!(p.rlimits.contains(&(libc::RLIMIT_NOFILE as i32, 512, 512)));
        assert!(
            p.rlimits
                .contains(&(libc::RLIMIT_MEMLOCK as i32, 16 * PAGE, 16 * PAGE))
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].starts_with("rlimits/openfd"));
    }

    #[test]
    fn infinity_prolific_and_approximations() {
        let mut rl = Rlimits::new();
        rl.insert(
            "nproc".into(),
            Rlimit {
                min: None,
                soft: None,
                hard: Some(RlimitValue::Infinite),
            },
        );
        rl.insert("as".into(), lim(256));
        let p = plan(&rl, 0);
        assert_eq!(p.pids_max, Some(None));
        assert_eq!(p.memory, Some((Some(256 * PAGE), None)));
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("rlimits/as: approximated"))
        );
        let p = plan(&rl, cflag::PROLIFIC);
        assert_eq!(p.pids_max, None);
        let mut rl = Rlimits::new();
        rl.insert(
            "stack".into(),
            Rlimit {
                min: Some(RlimitValue::Of(5)),
                soft: Some(RlimitValue::Of(1 << 20)),
                hard: Some(RlimitValue::Infinite),
            },
        );
        let p = plan(&rl, 0);
        assert_eq!(p.rlimits, [(libc::RLIMIT_STACK as i32, 1 << 20, u64::MAX)]);
        assert_eq!(p.warnings.len(), 1, "the minimum");
    }
}

//! Changing a running context (`vlimit`, `vsched`, `vuname`,
//! `vattribute`), as util-vserver's tools changed a live one: cgroup knobs
//! at once; per-process rlimits on every process it has now (new ones
//! inherit them); IPC sysctls and uts names inside its namespaces (the
//! caller enters them: call from a short-lived, single-threaded tool).

use std::os::fd::AsFd;

use rustix::thread::LinkNameSpaceType;

use crate::cgroup::RealFs;
use crate::config::{Rlimits, SchedConfig};
use crate::error::{Error, Result, io, os};
use crate::registry::{Registry, State, start_time};
use crate::{limits, sched};

/// Enters namespace `ns` (`ipc`, `uts`) of the context's init.
fn enter(state: &State, ns: &str, kind: LinkNameSpaceType) -> Result<()> {
    if start_time(state.init) != Some(state.init_start) {
        return Err(Error::Other(format!(
            "pid {} is no longer the guest's init",
            state.init
        )));
    }
    let path = format!("/proc/{}/ns/{ns}", state.init);
    let fd = std::fs::File::open(&path).map_err(io(format!("opening {path}")))?;
    rustix::thread::move_into_link_name_space(fd.as_fd(), Some(kind))
        .map_err(os(format!("entering the guest's {ns} namespace")))
}

/// Applies `rl` to running context `state`; warnings for what mainline
/// cannot express.
pub fn apply_limits(state: &State, rl: &Rlimits) -> Result<Vec<String>> {
    let plan = limits::plan(rl, state.cflags);
    let fs = RealFs;
    if let Some(max) = plan.pids_max {
        state.cgroups.set_pids_max(&fs, max)?;
    }
    if let Some((max, high)) = plan.memory {
        state.cgroups.set_memory(&fs, max, high)?;
    }
    let mut warnings = plan.warnings;
    if !plan.rlimits.is_empty() {
        for pid in state.cgroups.procs(&fs)? {
            for &(res, soft, hard) in &plan.rlimits {
                if let Err(e) = prlimit(pid, res, soft, hard) {
                    warnings.push(format!("rlimit {res} of process {pid}: {e}"));
                }
            }
        }
    }
    if !plan.sysctls.is_empty() {
        enter(state, "ipc", LinkNameSpaceType::InterProcessCommunication)?;
        for (key, value) in &plan.sysctls {
            std::fs::write(format!("/proc/sys/{key}"), value)
                .map_err(io(format!("setting {key} = {value}")))?;
        }
    }
    Ok(warnings)
}

fn prlimit(pid: u32, res: i32, soft: u64, hard: u64) -> std::result::Result<(), rustix::io::Errno> {
    use rustix::process::Rlimit;
    let resource = limits::resource(res).ok_or(rustix::io::Errno::INVAL)?;
    let opt = |v: u64| (v != u64::MAX).then_some(v);
    let pid = rustix::process::Pid::from_raw(pid as i32).ok_or(rustix::io::Errno::SRCH)?;
    rustix::process::prlimit(
        Some(pid),
        resource,
        Rlimit {
            current: opt(soft),
            maximum: opt(hard),
        },
    )
    .map(drop)
}

/// Applies `sched` to running context `state`; warnings for what mainline
/// cannot express.
pub fn apply_sched(registry: &Registry, state: &State, s: &SchedConfig) -> Result<Vec<String>> {
    let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let plan = sched::plan(s, state.cflags, ncpus);
    let fs = RealFs;
    if plan.cpu != Default::default() {
        state.cgroups.set_cpu(&fs, &plan.cpu)?;
    }
    if plan.freeze {
        state.cgroups.freeze(&fs, true)?;
    }
    // The supervisor's governor takes them over (or gives up a bucket it
    // no longer needs): the file, then SIGUSR1.
    let path = registry.sched_request(state.xid);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(s).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(io(format!("writing {}", path.display())))?;
    // Only to a supervisor that takes it (blocked into its signalfd): one
    // started by an older vxfs would die of it.
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    let takes_it = std::fs::read_to_string(format!("/proc/{}/status", state.supervisor))
        .ok()
        .and_then(|t| {
            let hex = t.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|blocked| blocked & usr1 != 0);
    match rustix::process::Pid::from_raw(state.supervisor as i32) {
        Some(pid) if takes_it => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::USR1);
        }
        _ => {}
    }
    Ok(plan.warnings)
}

/// The guest's uts names: nodename, domainname, sysname, release,
/// version, machine.
pub fn uts(state: &State) -> Result<[String; 6]> {
    enter(state, "uts", LinkNameSpaceType::HostNameAndNISDomainName)?;
    let u = rustix::system::uname();
    let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    Ok([
        s(u.nodename()),
        s(u.domainname()),
        s(u.sysname()),
        s(u.release()),
        s(u.version()),
        s(u.machine()),
    ])
}

/// Sets the guest's nodename and domainname.
pub fn set_uts(state: &State, nodename: Option<&str>, domainname: Option<&str>) -> Result<()> {
    enter(state, "uts", LinkNameSpaceType::HostNameAndNISDomainName)?;
    if let Some(n) = nodename {
        rustix::system::sethostname(n.as_bytes()).map_err(os("sethostname"))?;
    }
    if let Some(d) = domainname {
        rustix::system::setdomainname(d.as_bytes()).map_err(os("setdomainname"))?;
    }
    Ok(())
}

/// One line of `/proc/PID/limits`: its name, soft and hard limit (`None`:
/// unlimited).
pub type ProcLimit = (String, Option<u64>, Option<u64>);

/// The per-process limits of the guest's init (`/proc/PID/limits`), by
/// the names that file uses.
pub fn init_limits(state: &State) -> Result<Vec<ProcLimit>> {
    let text = std::fs::read_to_string(format!("/proc/{}/limits", state.init))
        .map_err(io("reading the init's limits"))?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        // "Max open files            1024                 4096                 files"
        let name = line.get(..26).unwrap_or("").trim().to_string();
        let rest: Vec<&str> = line.get(26..).unwrap_or("").split_whitespace().collect();
        if rest.len() < 2 {
            continue;
        }
        let v = |t: &str| t.parse::<u64>().ok();
        out.push((name, v(rest[0]), v(rest[1])));
    }
    Ok(out)
}

/// The rlimits of the guest's init as rustix values, for a process that
/// enters the guest to take (its processes inherit them from init).
pub fn init_rlimits(
    state: &State,
) -> Result<Vec<(rustix::process::Resource, rustix::process::Rlimit)>> {
    use rustix::process::{Resource, Rlimit};
    let by_name = [
        ("Max cpu time", Resource::Cpu),
        ("Max file size", Resource::Fsize),
        ("Max data size", Resource::Data),
        ("Max stack size", Resource::Stack),
        ("Max core file size", Resource::Core),
        ("Max resident set", Resource::Rss),
        ("Max processes", Resource::Nproc),
        ("Max open files", Resource::Nofile),
        ("Max locked memory", Resource::Memlock),
        ("Max address space", Resource::As),
        ("Max file locks", Resource::Locks),
        ("Max pending signals", Resource::Sigpending),
        ("Max msgqueue size", Resource::Msgqueue),
        ("Max nice priority", Resource::Nice),
        ("Max realtime priority", Resource::Rtprio),
        ("Max realtime timeout", Resource::Rttime),
    ];
    Ok(init_limits(state)?
        .into_iter()
        .filter_map(|(name, soft, hard)| {
            let (_, r) = by_name.iter().find(|(n, _)| *n == name)?;
            Some((
                *r,
                Rlimit {
                    current: soft,
                    maximum: hard,
                },
            ))
        })
        .collect())
}

/// Sets the calling process's rlimits to `limits`; a hard limit it may not
/// raise stays where it is.
pub fn take_rlimits(limits: &[(rustix::process::Resource, rustix::process::Rlimit)]) {
    for (resource, want) in limits {
        if rustix::process::setrlimit(*resource, *want).is_err() {
            let now = rustix::process::getrlimit(*resource);
            let max = now.maximum;
            let current = match (want.current, max) {
                (Some(c), Some(m)) => Some(c.min(m)),
                (c, None) => c,
                (None, m) => m,
            };
            let _ = rustix::process::setrlimit(
                *resource,
                rustix::process::Rlimit {
                    current,
                    maximum: max,
                },
            );
        }
    }
}

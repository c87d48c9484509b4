//! A context's figures, read from its cgroups (the registry's record of
//! them) and the host's `/proc`, and the files rendered from them.

use std::collections::BTreeMap;
use std::path::Path;

use vxfs_kernel::cgroup::{CgroupSet, RealFs};
use vxfs_kernel::registry::State;

use vxfs_kernel::memory::{number, pairs};

use vxfs_kernel::tasks::tasks;

use crate::figures::{self, CpuUse, DeviceIo, Load};

/// `USER_HZ`: the unit of `/proc/stat` and of `/proc/PID/stat`'s times.
const USER_HZ: u64 = 100;

fn read(cg: &CgroupSet, name: &str) -> Option<String> {
    cg.read_raw(&RealFs, name)
}

/// The CPUs the context sees and its use of each (folded onto them).
pub fn cpus(cg: &CgroupSet) -> (Vec<u32>, Vec<(u32, CpuUse)>) {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| figures::parse_cpu_list(&t))
        .unwrap_or_default();
    let cpuset = [
        "cpuset.cpus.effective",
        "cpuset.effective_cpus",
        "cpuset.cpus",
    ]
    .iter()
    .find_map(|f| read(cg, f).and_then(|t| figures::parse_cpu_list(&t)))
    .filter(|c| !c.is_empty())
    .unwrap_or_else(|| online.clone());
    let quota = match read(cg, "cpu.max") {
        Some(max) => {
            let mut w = max.split_whitespace();
            match (w.next().and_then(|q| q.parse().ok()), w.next()) {
                (Some(q), Some(p)) => p.parse().ok().map(|p| (q, p)),
                _ => None,
            }
        }
        None => match (
            read(cg, "cpu.cfs_quota_us").and_then(|q| q.parse::<i64>().ok()),
            number(read(cg, "cpu.cfs_period_us")),
        ) {
            (Some(q), Some(p)) if q > 0 => Some((q as u64, p)),
            _ => None,
        },
    };
    let visible = figures::visible_cpus(&cpuset, &online, quota);
    let ticks = |ns: u64| ns / (1_000_000_000 / USER_HZ);
    let used: Vec<(u32, CpuUse)> = match read(cg, "cpuacct.usage_all") {
        // v1: "cpu user system" in ns per CPU.
        Some(all) => all
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut w = l.split_whitespace().map(|x| x.parse::<u64>().ok());
                let (cpu, user, system) = (w.next()??, w.next()??, w.next()??);
                Some((
                    cpu as u32,
                    CpuUse {
                        user: ticks(user),
                        system: ticks(system),
                    },
                ))
            })
            .filter(|(cpu, _)| cpuset.contains(cpu))
            .collect(),
        // v2 has totals only: spread evenly over the visible CPUs.
        None => {
            let stat = read(cg, "cpu.stat").unwrap_or_default();
            let s = pairs(&stat);
            let n = visible.len().max(1) as u64;
            let share = |key: &str| s.get(key).copied().unwrap_or(0) * 1000 / n;
            visible
                .iter()
                .map(|&c| {
                    (
                        c,
                        CpuUse {
                            user: ticks(share("user_usec")),
                            system: ticks(share("system_usec")),
                        },
                    )
                })
                .collect()
        }
    };
    let folded = figures::fold_use(&used, &visible);
    (visible, folded)
}

/// The context's block I/O per device (`io.stat` on v2, blkio's
/// throttle counters on v1).
pub fn io(cg: &CgroupSet) -> BTreeMap<(u32, u32), DeviceIo> {
    let mut out: BTreeMap<(u32, u32), DeviceIo> = BTreeMap::new();
    let dev = |s: &str| {
        let (a, b) = s.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    if let Some(stat) = read(cg, "io.stat") {
        for line in stat.lines() {
            let mut w = line.split_whitespace();
            let Some(d) = w.next().and_then(dev) else {
                continue;
            };
            let e = out.entry(d).or_default();
            for kv in w {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.read_bytes = v,
                    "wbytes" => e.write_bytes = v,
                    "rios" => e.reads = v,
                    "wios" => e.writes = v,
                    _ => {}
                }
            }
        }
        return out;
    }
    for (file, bytes) in [
        ("blkio.throttle.io_service_bytes_recursive", true),
        ("blkio.throttle.io_serviced_recursive", false),
    ] {
        for line in read(cg, file).unwrap_or_default().lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let [d, op, v] = w[..] else { continue };
            let (Some(d), Ok(v)) = (dev(d), v.parse::<u64>()) else {
                continue;
            };
            let e = out.entry(d).or_default();
            match (op, bytes) {
                ("Read", true) => e.read_bytes = v,
                ("Write", true) => e.write_bytes = v,
                ("Read", false) => e.reads = v,
                ("Write", false) => e.writes = v,
                _ => {}
            }
        }
    }
    out.retain(|_, d| *d != DeviceIo::default());
    out
}

/// Hundredths of a second since the context's init started (from its
/// `/proc/PID/stat` start time), or `None` if it is gone.
pub fn up_centis(state: &State) -> Option<u64> {
    let start = vxfs_kernel::registry::start_time(state.init)?;
    if start != state.init_start {
        return None;
    }
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let now = now.tv_sec as u64 * USER_HZ + now.tv_nsec as u64 / (1_000_000_000 / USER_HZ);
    Some(now.saturating_sub(start))
}

fn host(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(Path::new(path))
}

/// The file `name` of context `state`, whose load average is `load`.
pub fn render(name: &str, state: &State, load: &Load) -> std::io::Result<String> {
    let cg = &state.cgroups;
    let memory = vxfs_kernel::memory::of;
    Ok(match name {
        "meminfo" => figures::meminfo(&host("/proc/meminfo")?, &memory(cg)),
        "swaps" => figures::swaps(&host("/proc/meminfo")?, &memory(cg)),
        "loadavg" => figures::loadavg(load, &tasks(cg)),
        "stat" => {
            let (_, used) = cpus(cg);
            figures::stat(
                &host("/proc/stat")?,
                &used,
                &tasks(cg),
                state.init_start / USER_HZ,
            )
        }
        "cpuinfo" => figures::cpuinfo(&host("/proc/cpuinfo")?, &cpus(cg).0),
        "cpu_online" => figures::online(&cpus(cg).0),
        "uptime" => {
            let up =
                up_centis(state).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
            let (visible, used) = cpus(cg);
            let used: u64 = used.iter().map(|(_, u)| u.user + u.system).sum();
            figures::uptime(up, visible.len(), used)
        }
        "diskstats" => figures::diskstats(&host("/proc/diskstats")?, &io(cg)),
        _ => return Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
    })
}

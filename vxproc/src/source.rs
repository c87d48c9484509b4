//! A context's figures, read from its cgroups (the registry's record of
//! them) and the host's `/proc`, and the files rendered from them.

use std::collections::BTreeMap;
use std::path::Path;

use vxfs_kernel::cgroup::{CgroupSet, RealFs};
use vxfs_kernel::registry::State;

use crate::figures::{self, CpuUse, DeviceIo, Load, Memory, Swap, Tasks};

/// `USER_HZ`: the unit of `/proc/stat` and of `/proc/PID/stat`'s times.
const USER_HZ: u64 = 100;

fn read(cg: &CgroupSet, name: &str) -> Option<String> {
    cg.read_raw(&RealFs, name)
}

fn number(text: Option<String>) -> Option<u64> {
    text?.trim().parse::<u64>().ok().filter(|&n| n < (1 << 62))
}

/// `key value` lines.
fn pairs(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// `memory.stat` keys of v1 (hierarchical totals) and v2, by the meminfo
/// line each one fills.
const MEMORY_STAT: &[(&str, &str, &str)] = &[
    ("Cached", "total_cache", "file"),
    ("AnonPages", "total_rss", "anon"),
    ("Shmem", "total_shmem", "shmem"),
    ("Mapped", "total_mapped_file", "file_mapped"),
    ("Active(anon)", "total_active_anon", "active_anon"),
    ("Inactive(anon)", "total_inactive_anon", "inactive_anon"),
    ("Active(file)", "total_active_file", "active_file"),
    ("Inactive(file)", "total_inactive_file", "inactive_file"),
    ("Unevictable", "total_unevictable", "unevictable"),
    ("Dirty", "total_dirty", "file_dirty"),
    ("Writeback", "total_writeback", "file_writeback"),
    ("SReclaimable", "", "slab_reclaimable"),
    ("SUnreclaim", "", "slab_unreclaimable"),
];

/// The context's memory figures.
pub fn memory(cg: &CgroupSet) -> Memory {
    let v2 = read(cg, "memory.max").is_some();
    let stat_text = read(cg, "memory.stat").unwrap_or_default();
    let stat = pairs(&stat_text);
    let mut m = Memory {
        limit: cg.memory_limits(&RealFs).0,
        ..Memory::default()
    };
    for (line, v1_key, v2_key) in MEMORY_STAT {
        let key = if v2 { v2_key } else { v1_key };
        if let Some(&v) = stat.get(key) {
            m.stat.insert(line, v);
        }
    }
    if v2 {
        m.usage = number(read(cg, "memory.current")).unwrap_or(0);
        if let Some(current) = number(read(cg, "memory.swap.current")) {
            m.swap = Swap::Own {
                max: number(read(cg, "memory.swap.max")),
                current,
            };
        }
    } else {
        m.usage = number(read(cg, "memory.usage_in_bytes")).unwrap_or(0);
        if let Some(usage) = number(read(cg, "memory.memsw.usage_in_bytes")) {
            m.swap = Swap::MemSw {
                limit: number(read(cg, "memory.memsw.limit_in_bytes")),
                usage,
            };
        }
    }
    m
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

/// At most this many of a context's cgroups are walked for its tasks (a
/// guest that may make sub-cgroups must not make the host's sampler walk
/// without end).
pub const MAX_CGROUPS: usize = 4096;

/// The context's threads and their states, over its cgroup and every
/// cgroup below it (a guest's own sub-cgroups, [`MAX_CGROUPS`] at most).
pub fn tasks(cg: &CgroupSet) -> Tasks {
    let mut t = Tasks::default();
    let mut dirs = vec![cg.tracking().dir.clone()];
    let mut walked = 0;
    while let Some(dir) = dirs.pop() {
        walked += 1;
        if walked > MAX_CGROUPS {
            break;
        }
        let list = std::fs::read_to_string(dir.join("cgroup.threads"))
            .or_else(|_| std::fs::read_to_string(dir.join("tasks")))
            .unwrap_or_default();
        for tid in list.split_whitespace() {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
                continue; // gone meanwhile
            };
            t.threads += 1;
            for line in status.lines() {
                if let Some(state) = line.strip_prefix("State:") {
                    match state.trim_start().chars().next() {
                        Some('R') => t.running += 1,
                        Some('D') => t.blocked += 1,
                        _ => {}
                    }
                } else if let Some(ns) = line.strip_prefix("NSpid:") {
                    if let Some(pid) = ns.split_whitespace().last().and_then(|p| p.parse().ok()) {
                        t.last_pid = t.last_pid.max(pid);
                    }
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    t
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

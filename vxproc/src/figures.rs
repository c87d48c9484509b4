//! The files vxproc serves, rendered from a context's figures and the
//! host's own files (pure, table-tested against the kernel's formats and
//! constants). Lines the context has no figure for are the host's.

use std::collections::BTreeMap;
use std::fmt::Write;

pub use vxfs_kernel::memory::{Memory, Swap};
pub use vxfs_kernel::tasks::Tasks;

/// The kernel's fixed-point load average (`include/linux/sched/loadavg.h`).
pub const FSHIFT: u32 = 11;
/// 1.0 in fixed point.
pub const FIXED_1: u64 = 1 << FSHIFT;
/// 1/exp(5 s / 1 min) in fixed point.
pub const EXP_1: u64 = 1884;
/// 1/exp(5 s / 5 min).
pub const EXP_5: u64 = 2014;
/// 1/exp(5 s / 15 min).
pub const EXP_15: u64 = 2037;
/// The sampling period the constants are for.
pub const LOAD_FREQ: std::time::Duration = std::time::Duration::from_secs(5);

/// The kernel's `calc_load`: one step of the exponential average.
pub fn calc_load(load: u64, exp: u64, active: u64) -> u64 {
    let mut new = load * exp + active * (FIXED_1 - exp);
    if active >= load {
        new += FIXED_1 - 1;
    }
    new / FIXED_1
}

/// A context's 1, 5 and 15 minute load averages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// The averages in fixed point.
    pub avenrun: [u64; 3],
}

impl Load {
    /// One sample of `active` tasks (running plus uninterruptible), taken
    /// every [`LOAD_FREQ`].
    pub fn sample(&mut self, active: u64) {
        let active = active * FIXED_1;
        for (avg, exp) in self.avenrun.iter_mut().zip([EXP_1, EXP_5, EXP_15]) {
            *avg = calc_load(*avg, exp, active);
        }
    }
}

/// `x` as `/proc/loadavg` prints it (`LOAD_INT.LOAD_FRAC`, after the
/// kernel's rounding offset of `FIXED_1/200`).
fn load_text(x: u64) -> String {
    let x = x + FIXED_1 / 200;
    format!(
        "{}.{:02}",
        x >> FSHIFT,
        ((x & (FIXED_1 - 1)) * 100) >> FSHIFT
    )
}

/// `/proc/loadavg`.
pub fn loadavg(load: &Load, tasks: &Tasks) -> String {
    format!(
        "{} {} {} {}/{} {}\n",
        load_text(load.avenrun[0]),
        load_text(load.avenrun[1]),
        load_text(load.avenrun[2]),
        tasks.running,
        tasks.threads,
        tasks.last_pid
    )
}

/// A `/proc/meminfo`-style file as `(key, kB)` pairs.
fn kb_values(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim(), n))
        })
        .collect()
}

/// `/proc/meminfo`: the host's file with the context's figures; lines it
/// has no figure for (page tables, vmalloc, huge pages) stay the host's.
pub fn meminfo(host: &str, m: &Memory) -> String {
    let host_kb = kb_values(host);
    let host_total = host_kb.get("MemTotal").copied().unwrap_or(0) * 1024;
    let host_swap = host_kb.get("SwapTotal").copied().unwrap_or(0) * 1024;
    let total = m.total(host_total);
    let free = total.saturating_sub(m.usage);
    let file = m.stat.get("Active(file)").copied().unwrap_or(0)
        + m.stat.get("Inactive(file)").copied().unwrap_or(0);
    let (swap_total, swap_used) = m.swap(host_total, host_swap);
    let mut ours: BTreeMap<&str, u64> = m.stat.clone();
    ours.insert("MemTotal", total);
    ours.insert("MemFree", free);
    ours.insert("MemAvailable", (free + file).min(total));
    ours.insert("Buffers", 0);
    ours.insert("SwapCached", 0);
    ours.insert(
        "Active",
        m.stat.get("Active(anon)").copied().unwrap_or(0)
            + m.stat.get("Active(file)").copied().unwrap_or(0),
    );
    ours.insert(
        "Inactive",
        m.stat.get("Inactive(anon)").copied().unwrap_or(0)
            + m.stat.get("Inactive(file)").copied().unwrap_or(0),
    );
    let slab = m.stat.get("SReclaimable").copied().unwrap_or(0)
        + m.stat.get("SUnreclaim").copied().unwrap_or(0);
    ours.insert("Slab", slab);
    ours.entry("SReclaimable").or_insert(0);
    ours.entry("SUnreclaim").or_insert(0);
    ours.insert("SwapTotal", swap_total);
    ours.insert("SwapFree", swap_total - swap_used);
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        match line.split_once(':') {
            Some((key, _)) if ours.contains_key(key.trim()) => {
                let kb = ours[key.trim()] / 1024;
                // The kernel's layout: the label padded to 16, the number
                // right-aligned in 8.
                let _ = writeln!(out, "{:<16}{kb:>8} kB", format!("{key}:"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `/proc/swaps`: one virtual device of the context's swap, as lxcfs
/// shows it, or only the header when it has none.
pub fn swaps(host_meminfo: &str, m: &Memory) -> String {
    let host_kb = kb_values(host_meminfo);
    let (total, used) = m.swap(
        host_kb.get("MemTotal").copied().unwrap_or(0) * 1024,
        host_kb.get("SwapTotal").copied().unwrap_or(0) * 1024,
    );
    let mut out = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    if total > 0 {
        let _ = writeln!(
            out,
            "none\t\t\t\t\tvirtual\t\t{}\t\t{}\t\t0",
            total / 1024,
            used / 1024
        );
    }
    out
}

/// A CPU list as the kernel writes one (`0-3,6`).
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

/// Parses a kernel CPU list (`0-3,6`); `None` if malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 65536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// The CPUs a context sees: its cpuset's online CPUs, the first
/// `ceil(quota / period)` of them when a CPU quota allows fewer.
pub fn visible_cpus(cpuset: &[u32], online: &[u32], quota: Option<(u64, u64)>) -> Vec<u32> {
    let mut cpus: Vec<u32> = cpuset
        .iter()
        .copied()
        .filter(|c| online.contains(c))
        .collect();
    if let Some((quota, period)) = quota.filter(|&(_, p)| p > 0) {
        let n = quota.div_ceil(period).max(1) as usize;
        cpus.truncate(n);
    }
    cpus
}

/// Time a context used on one CPU, in `USER_HZ` ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuUse {
    /// In user mode.
    pub user: u64,
    /// In kernel mode.
    pub system: u64,
}

/// Folds per-CPU use over the cpuset onto the visible CPUs (CPU `i` of the
/// cpuset onto visible CPU `i mod n`), so that totals are kept when a
/// quota shows fewer CPUs than the context runs on.
pub fn fold_use(used: &[(u32, CpuUse)], visible: &[u32]) -> Vec<(u32, CpuUse)> {
    let mut out: Vec<(u32, CpuUse)> = visible.iter().map(|&c| (c, CpuUse::default())).collect();
    if out.is_empty() {
        return out;
    }
    let mut spill = 0;
    for (cpu, u) in used {
        let slot = match visible.iter().position(|v| v == cpu) {
            Some(i) => i,
            None => {
                spill += 1;
                (spill - 1) % out.len()
            }
        };
        out[slot].1.user += u.user;
        out[slot].1.system += u.system;
    }
    out
}

/// `/proc/stat`: a `cpuN` line per visible CPU with the context's user and
/// system time and the rest of the CPU's time as idle, the `cpu` line
/// their sum, the context's running and blocked tasks, and `btime` moved
/// to its start (`boot_shift` seconds after the host's boot).
pub fn stat(host: &str, used: &[(u32, CpuUse)], tasks: &Tasks, boot_shift: u64) -> String {
    let mut per_cpu: Vec<String> = Vec::new();
    let mut sum = [0u64; 3];
    let mut rest = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        let Some(key) = words.next() else { continue };
        if let Some(n) = key.strip_prefix("cpu") {
            let Ok(cpu) = n.parse::<u32>() else {
                continue; // the host's "cpu" sum
            };
            let Some((_, u)) = used.iter().find(|(c, _)| *c == cpu) else {
                continue;
            };
            let total: u64 = words.take(8).filter_map(|w| w.parse::<u64>().ok()).sum();
            let user = u.user.min(total);
            let system = u.system.min(total - user);
            let idle = total - user - system;
            sum[0] += user;
            sum[1] += system;
            sum[2] += idle;
            per_cpu.push(format!("cpu{cpu} {user} 0 {system} {idle} 0 0 0 0 0 0\n"));
            continue;
        }
        match key {
            "procs_running" => {
                let _ = writeln!(rest, "procs_running {}", tasks.running);
            }
            "procs_blocked" => {
                let _ = writeln!(rest, "procs_blocked {}", tasks.blocked);
            }
            "btime" => {
                let b: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let _ = writeln!(rest, "btime {}", b + boot_shift);
            }
            _ => {
                rest.push_str(line);
                rest.push('\n');
            }
        }
    }
    let mut out = format!("cpu  {} 0 {} {} 0 0 0 0 0 0\n", sum[0], sum[1], sum[2]);
    for l in per_cpu {
        out.push_str(&l);
    }
    out.push_str(&rest);
    out
}

/// `/proc/cpuinfo`: the host's entries of the visible CPUs (numbered as
/// the host numbers them, as `sched_getaffinity` does), and any entry
/// that is not a processor's.
pub fn cpuinfo(host: &str, visible: &[u32]) -> String {
    let mut out = String::new();
    for block in host.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let cpu = block.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "processor")
                .then(|| v.trim().parse::<u32>().ok())
                .flatten()
        });
        if cpu.is_none_or(|c| visible.contains(&c)) {
            out.push_str(block.trim_matches('\n'));
            out.push_str("\n\n");
        }
    }
    out
}

/// `/sys/devices/system/cpu/online`.
pub fn online(visible: &[u32]) -> String {
    format!("{}\n", cpu_list(visible))
}

/// `/proc/uptime`: seconds since the context started, and the idle time
/// of its CPUs (each visible CPU's time since then less what the context
/// used), both in hundredths.
pub fn uptime(up_centis: u64, cpus: usize, used_centis: u64) -> String {
    let idle = (up_centis * cpus as u64).saturating_sub(used_centis);
    format!(
        "{}.{:02} {}.{:02}\n",
        up_centis / 100,
        up_centis % 100,
        idle / 100,
        idle % 100
    )
}

/// A context's I/O on one block device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// Reads completed.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// `/proc/diskstats`: a line per device the context did I/O on, with its
/// requests and sectors (times and merges are not counted per cgroup:
/// 0).
pub fn diskstats(host: &str, io: &BTreeMap<(u32, u32), DeviceIo>) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        let (Some(major), Some(minor), Some(name)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let Some(d) = io.get(&(major, minor)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{major:4} {minor:7} {name} {} 0 {} 0 {} 0 {} 0 0 0 0 0 0 0 0 0 0",
            d.reads,
            d.read_bytes / 512,
            d.writes,
            d.write_bytes / 512
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_MEMINFO: &str = "MemTotal:       24151292 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\nBuffers:          100000 kB\nCached:          1000000 kB\nSwapCached:            0 kB\nActive:           500000 kB\nInactive:         400000 kB\nActive(anon):     200000 kB\nInactive(anon):   100000 kB\nActive(file):     300000 kB\nInactive(file):   300000 kB\nUnevictable:           0 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097148 kB\nDirty:                12 kB\nAnonPages:        300000 kB\nMapped:            50000 kB\nShmem:              1000 kB\nSlab:             200000 kB\nSReclaimable:     150000 kB\nSUnreclaim:        50000 kB\nPageTables:         4000 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";

    fn kb(text: &str, key: &str) -> u64 {
        kb_values(text)[key]
    }

    #[test]
    fn the_load_average_is_the_kernels() {
        // Two busy tasks for one minute (12 samples) from idle: the 1 min
        // average reaches 2·(1 - 1/e) as the kernel's fixed point has it.
        let mut l = Load::default();
        for _ in 0..12 {
            l.sample(2);
        }
        let one = l.avenrun[0] as f64 / FIXED_1 as f64;
        assert!((one - 2.0 * (1.0 - (-1f64).exp())).abs() < 0.02, "{one}");
        assert!(l.avenrun[1] < l.avenrun[0] && l.avenrun[2] < l.avenrun[1]);
        // The kernel's rounding up while rising and its printout.
        // (0·1884 + 2048·164 + 2047) / 2048
        assert_eq!(calc_load(0, EXP_1, FIXED_1), 164);
        assert_eq!(calc_load(FIXED_1, EXP_1, FIXED_1), FIXED_1);
        assert_eq!(load_text(0), "0.00");
        assert_eq!(load_text(FIXED_1), "1.00");
        assert_eq!(load_text(FIXED_1 / 2), "0.50");
        // Idle again: it decays to zero, never below.
        for _ in 0..2000 {
            l.sample(0);
        }
        assert_eq!(l.avenrun, [0, 0, 0]);
        let tasks = Tasks {
            threads: 7,
            running: 2,
            blocked: 0,
            last_pid: 42,
        };
        assert_eq!(loadavg(&l, &tasks), "0.00 0.00 0.00 2/7 42\n");
    }

    fn memory(limit: Option<u64>, usage: u64, swap: Swap) -> Memory {
        let mut stat = BTreeMap::new();
        stat.insert("Cached", 8 << 20);
        stat.insert("Active(file)", 4 << 20);
        stat.insert("Inactive(file)", 2 << 20);
        stat.insert("Active(anon)", 16 << 20);
        stat.insert("AnonPages", 16 << 20);
        Memory {
            limit,
            usage,
            stat,
            swap,
        }
    }

    #[test]
    fn meminfo_shows_the_limit_and_the_usage() {
        let m = memory(
            Some(64 << 20),
            24 << 20,
            Swap::MemSw {
                limit: Some(96 << 20),
                usage: 28 << 20,
            },
        );
        let t = meminfo(HOST_MEMINFO, &m);
        assert_eq!(kb(&t, "MemTotal"), 65536);
        assert_eq!(kb(&t, "MemFree"), 40960);
        assert_eq!(kb(&t, "MemAvailable"), 40960 + 6144);
        assert_eq!(kb(&t, "Cached"), 8192);
        assert_eq!(kb(&t, "Buffers"), 0);
        assert_eq!(kb(&t, "Active"), 16384 + 4096);
        assert_eq!(kb(&t, "Inactive"), 2048);
        assert_eq!(kb(&t, "SwapTotal"), 32768, "memsw beyond memory");
        assert_eq!(kb(&t, "SwapFree"), 32768 - 4096);
        assert_eq!(kb(&t, "Slab"), 0, "v1 has no slab figure");
        assert_eq!(kb(&t, "PageTables"), 4000, "the host's");
        assert!(t.contains("HugePages_Total:       0\n"));
        assert!(t.starts_with("MemTotal:          65536 kB\n"), "{t}");
        assert_eq!(t.lines().count(), HOST_MEMINFO.lines().count());
    }

    #[test]
    fn meminfo_is_capped_at_the_host() {
        // No limit, or one above the host's memory: the host's total.
        for limit in [None, Some(1 << 50)] {
            let t = meminfo(HOST_MEMINFO, &memory(limit, 1 << 30, Swap::Unknown));
            assert_eq!(kb(&t, "MemTotal"), 24151292);
            assert_eq!(kb(&t, "MemFree"), 24151292 - (1 << 20));
            assert_eq!(kb(&t, "SwapTotal"), 0, "unknown swap");
        }
        // Usage above the limit (just raised): no negative free memory.
        let t = meminfo(HOST_MEMINFO, &memory(Some(1 << 20), 2 << 20, Swap::Unknown));
        assert_eq!(kb(&t, "MemFree"), 0);
        assert_eq!(kb(&t, "MemAvailable"), 1024);
        // Swap: never more than the host has; v2's own swap counter.
        let unlimited = Swap::MemSw {
            limit: None,
            usage: 0,
        };
        let t = meminfo(HOST_MEMINFO, &memory(Some(64 << 20), 0, unlimited));
        assert_eq!(kb(&t, "SwapTotal"), 2097148);
        let v2 = Swap::Own {
            max: Some(1 << 20),
            current: 1 << 19,
        };
        let t = meminfo(HOST_MEMINFO, &memory(Some(64 << 20), 0, v2));
        assert_eq!((kb(&t, "SwapTotal"), kb(&t, "SwapFree")), (1024, 512));
        let s = swaps(HOST_MEMINFO, &memory(Some(64 << 20), 0, v2));
        assert_eq!(
            s.lines().nth(1).unwrap(),
            "none\t\t\t\t\tvirtual\t\t1024\t\t512\t\t0"
        );
        let s = swaps(HOST_MEMINFO, &memory(Some(64 << 20), 0, Swap::Unknown));
        assert_eq!(s.lines().count(), 1);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_list(&[1]), "1");
        let online = [0, 1, 2, 3];
        assert_eq!(visible_cpus(&[1, 2, 3, 7], &online, None), [1, 2, 3]);
        assert_eq!(
            visible_cpus(&[0, 1, 2, 3], &online, Some((150_000, 100_000))),
            [0, 1]
        );
        assert_eq!(visible_cpus(&[2, 3], &online, Some((1000, 100_000))), [2]);
        assert_eq!(online_text(), "0-1\n");
    }

    fn online_text() -> String {
        online(&[0, 1])
    }

    const HOST_STAT: &str = "cpu  300 5 300 1000 10 0 5 0 0 0\ncpu0 100 5 100 500 5 0 5 0 0 0\ncpu1 200 0 200 500 5 0 0 0 0 0\nintr 1 2 3\nctxt 99\nbtime 1000\nprocesses 50\nprocs_running 3\nprocs_blocked 1\nsoftirq 1 2\n";

    #[test]
    fn stat_shows_the_contexts_use_of_its_cpus() {
        let used = [(
            1,
            CpuUse {
                user: 50,
                system: 20,
            },
        )];
        let tasks = Tasks {
            running: 2,
            blocked: 0,
            ..Tasks::default()
        };
        let t = stat(HOST_STAT, &used, &tasks, 30);
        assert_eq!(
            t,
            "cpu  50 0 20 835 0 0 0 0 0 0\ncpu1 50 0 20 835 0 0 0 0 0 0\nintr 1 2 3\nctxt 99\nbtime 1030\nprocesses 50\nprocs_running 2\nprocs_blocked 0\nsoftirq 1 2\n"
        );
        // More use than the CPU had time (folded from others): capped.
        let used = [(
            0,
            CpuUse {
                user: 700,
                system: 100,
            },
        )];
        let t = stat(HOST_STAT, &used, &tasks, 0);
        assert!(t.contains("cpu0 700 0 15 0 0"), "{t}");
    }

    #[test]
    fn folding_keeps_the_total() {
        let u = |user| CpuUse { user, system: 1 };
        let used = [(0, u(10)), (1, u(20)), (2, u(30)), (3, u(40))];
        let f = fold_use(&used, &[0, 1]);
        assert_eq!(
            f,
            [
                (
                    0,
                    CpuUse {
                        user: 40,
                        system: 2
                    }
                ),
                (
                    1,
                    CpuUse {
                        user: 60,
                        system: 2
                    }
                )
            ]
        );
        assert!(fold_use(&used, &[]).is_empty());
    }

    #[test]
    fn cpuinfo_keeps_the_visible_processors() {
        let host = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n\n";
        assert_eq!(cpuinfo(host, &[1]), "processor\t: 1\nmodel name\t: X\n\n");
        assert_eq!(cpuinfo(host, &[0, 1]), host);
        // An entry that is no processor's (arm64's, s390's) stays.
        let host = "processor\t: 0\n\nprocessor\t: 1\n\nHardware\t: Y\n";
        assert_eq!(cpuinfo(host, &[0]), "processor\t: 0\n\nHardware\t: Y\n\n");
    }

    #[test]
    fn uptime_and_idle() {
        assert_eq!(uptime(12_345, 2, 4_690), "123.45 200.00\n");
        assert_eq!(uptime(100, 1, 500), "1.00 0.00\n");
    }

    #[test]
    fn diskstats_lists_the_contexts_devices() {
        let host = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n 254       0 vda 9 9 9 9 9 9 9 9 0 9 9 0 0 0 0 0 0\n";
        let mut io = BTreeMap::new();
        io.insert(
            (254, 0),
            DeviceIo {
                reads: 3,
                read_bytes: 4096,
                writes: 2,
                write_bytes: 1024,
            },
        );
        assert_eq!(
            diskstats(host, &io),
            " 254       0 vda 3 0 8 0 2 0 2 0 0 0 0 0 0 0 0 0 0\n"
        );
        assert_eq!(diskstats(host, &BTreeMap::new()), "");
    }
}

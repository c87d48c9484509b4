//! A context's figures, read from its cgroups (the registry's record of
//! them) and the host's `/proc`, and the files rendered from them.

use std::collections::BTreeMap;
use std::path::Path;

use vxfs_kernel::cgroup::{CgroupFs, CgroupSet, RealFs};
use vxfs_kernel::registry::State;

use vxfs_kernel::memory::pairs;

use vxfs_kernel::tasks::tasks;

use crate::figures::{self, CpuUse, DeviceIo, Load};

/// `USER_HZ`: the unit of `/proc/stat` and of `/proc/PID/stat`'s times.
const USER_HZ: u64 = 100;

fn read(cg: &CgroupSet, fs: &dyn CgroupFs, name: &str) -> Option<String> {
    cg.read_raw(fs, name)
}

/// The CPUs the context sees and its use of each (folded onto them).
/// `online` is the host's online CPUs.
pub fn cpus(cg: &CgroupSet, fs: &dyn CgroupFs, online: &[u32]) -> (Vec<u32>, Vec<(u32, CpuUse)>) {
    let online = online.to_vec();
    let cpuset = [
        "cpuset.cpus.effective",
        "cpuset.effective_cpus",
        "cpuset.cpus",
    ]
    .iter()
    .find_map(|f| read(cg, fs, f).and_then(|t| figures::parse_cpu_list(&t)))
    .filter(|c| !c.is_empty())
    .unwrap_or_else(|| online.clone());
    let quota = cg.cpu_quota(fs);
    let visible = figures::visible_cpus(&cpuset, &online, quota);
    let ticks = |ns: u64| ns / (1_000_000_000 / USER_HZ);
    let used: Vec<(u32, CpuUse)> = match cg.cpu_use_per_cpu(fs) {
        Some(per_cpu) => per_cpu
            .into_iter()
            .filter(|(cpu, _, _)| cpuset.contains(cpu))
            .map(|(cpu, user, system)| {
                (
                    cpu,
                    CpuUse {
                        user: ticks(user),
                        system: ticks(system),
                    },
                )
            })
            .collect(),
        // v2 has totals only: spread evenly over the visible CPUs.
        None => {
            let stat = read(cg, fs, "cpu.stat").unwrap_or_default();
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
pub fn io(cg: &CgroupSet, fs: &dyn CgroupFs) -> BTreeMap<(u32, u32), DeviceIo> {
    let mut out: BTreeMap<(u32, u32), DeviceIo> = BTreeMap::new();
    let dev = |s: &str| {
        let (a, b) = s.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    if let Some(stat) = read(cg, fs, "io.stat") {
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
        for line in read(cg, fs, file).unwrap_or_default().lines() {
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

fn host(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(Path::new(path))
}

/// The file `name` of context `state`, whose load average is `load`.
pub fn render(name: &str, state: &State, load: &Load) -> std::io::Result<String> {
    let cg = &state.cgroups;
    let fs = &RealFs;
    let memory = |cg| vxfs_kernel::memory::of(cg, fs);
    let online = || {
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|t| figures::parse_cpu_list(&t))
            .unwrap_or_default()
    };
    let cpus = |cg| cpus(cg, fs, &online());
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
            let up = state
                .uptime_centis()
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
            let (visible, used) = cpus(cg);
            let used: u64 = used.iter().map(|(_, u)| u.user + u.system).sum();
            figures::uptime(up, visible.len(), used)
        }
        "diskstats" => figures::diskstats(&host("/proc/diskstats")?, &io(cg, fs)),
        _ => return Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vxfs_kernel::Xid;
    use vxfs_kernel::cgroup::Mode;
    use vxfs_kernel::cgroup::fake::{FakeFs, host};
    use vxfs_kernel::memory::Swap;

    fn fake(mode: Mode) -> (tempfile::TempDir, CgroupSet, FakeFs) {
        let t = tempfile::tempdir().unwrap();
        let set = CgroupSet::of(&host(t.path(), mode), Xid(42)).unwrap();
        let fs = FakeFs::default();
        set.create(&fs).unwrap();
        (t, set, fs)
    }

    fn put(set: &CgroupSet, controller: &str, file: &str, text: &str) {
        let m = set
            .members
            .iter()
            .find(|m| m.hierarchy.has(controller))
            .unwrap_or_else(|| panic!("no {controller} hierarchy"));
        std::fs::write(m.dir.join(file), text).unwrap();
    }

    #[test]
    fn figures_from_a_pure_cgroup2_host() {
        let (_t, set, fs) = fake(Mode::Unified);
        put(&set, "cpuset", "cpuset.cpus.effective", "2-3\n");
        put(&set, "cpu", "cpu.max", "150000 100000\n");
        put(
            &set,
            "cpu",
            "cpu.stat",
            "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n",
        );
        let (visible, used) = cpus(&set, &fs, &[0, 1, 2, 3]);
        assert_eq!(visible, [2, 3], "the cpuset, two CPUs by the quota");
        // v2 has totals only: 2 s user, 1 s system over two CPUs.
        let half = CpuUse {
            user: 100,
            system: 50,
        };
        assert_eq!(used, [(2, half), (3, half)]);
        put(
            &set,
            "io",
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let d = io(&set, &fs);
        assert_eq!(
            d[&(8, 0)],
            DeviceIo {
                reads: 1,
                read_bytes: 4096,
                writes: 2,
                write_bytes: 8192
            }
        );
        put(&set, "memory", "memory.max", "67108864\n");
        put(&set, "memory", "memory.current", "1048576\n");
        put(
            &set,
            "memory",
            "memory.stat",
            "anon 4096\nfile 8192\nshmem 512\nactive_file 4096\ninactive_file 4096\nslab_reclaimable 100\nslab_unreclaimable 200\n",
        );
        put(&set, "memory", "memory.swap.current", "0\n");
        put(&set, "memory", "memory.swap.max", "max\n");
        let m = vxfs_kernel::memory::of(&set, &fs);
        assert_eq!((m.limit, m.usage), (Some(64 << 20), 1 << 20));
        assert_eq!(m.stat["Cached"], 8192);
        assert_eq!(m.stat["Shmem"], 512);
        assert_eq!(m.stat["SUnreclaim"], 200);
        assert_eq!(
            m.swap,
            Swap::Own {
                max: None,
                current: 0
            }
        );
    }

    #[test]
    fn figures_from_a_hybrid_host() {
        let (_t, set, fs) = fake(Mode::Hybrid);
        put(&set, "cpuset", "cpuset.effective_cpus", "1\n");
        put(
            &set,
            "cpuacct",
            "cpuacct.usage_all",
            "cpu user system\n0 10000000 0\n1 20000000 30000000\n",
        );
        let (visible, used) = cpus(&set, &fs, &[0, 1]);
        assert_eq!(visible, [1]);
        // CPU 0's use (not in the cpuset) is not the guest's.
        assert_eq!(used, [(1, CpuUse { user: 2, system: 3 })]);
        put(&set, "memory", "memory.usage_in_bytes", "2097152\n");
        put(
            &set,
            "memory",
            "memory.stat",
            "cache 4096\nrss 8192\ntotal_cache 65536\ntotal_rss 16384\ntotal_shmem 0\n",
        );
        put(&set, "memory", "memory.memsw.usage_in_bytes", "3145728\n");
        put(
            &set,
            "memory",
            "memory.memsw.limit_in_bytes",
            "9223372036854771712\n",
        );
        let m = vxfs_kernel::memory::of(&set, &fs);
        assert_eq!(m.limit, None, "v1's unlimited");
        assert_eq!(m.usage, 2 << 20);
        assert_eq!(m.stat["Cached"], 65536, "the hierarchical total");
        assert_eq!(m.stat["AnonPages"], 16384);
        assert!(
            !m.stat.contains_key("SReclaimable"),
            "v1 has no slab figure"
        );
        assert_eq!(
            m.swap,
            Swap::MemSw {
                limit: None,
                usage: 3 << 20
            }
        );
    }
}

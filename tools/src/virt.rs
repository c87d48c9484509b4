//! `vxctl virtual [XID] [FILE]`: VServer's `/proc/virtual` files, in their
//! formats (docs/VSERVER.md; K@01155df1 kernel/vserver/proc.c and the
//! `*_proc.h` helpers), from the registry, the context's cgroups and its
//! processes. What mainline does not count is printed as VServer printed
//! an unused entry (0, -1 for no limit) and listed in docs/SEMANTICS.md;
//! `cacct` (per-context socket accounting) has no source at all and is
//! refused.

use std::fmt::Write as _;

use vxfs_kernel::cgroup::RealFs;
use vxfs_kernel::registry::{Registry, State};

use crate::cli::{CliError, UsageError};

/// The VCI version of the last VServer API (2.3), which util-vserver's
/// tools check.
const VCI_VERSION: (u32, u32) = (0x0002, 0x0003);
/// `__NR_vserver` on x86_64, where the patch's syscall lived.
const VCI_SYSCALL: u32 = 236;

/// `/proc/virtual/info`. `VCIKernel` (the patch's configuration bits) is
/// 0: there is no patch.
pub fn global_info() -> String {
    format!(
        "VCIVersion:\t{:04x}:{:04x}\nVCISyscall:\t{VCI_SYSCALL}\nVCIKernel:\t{:08x}\n",
        VCI_VERSION.0, VCI_VERSION.1, 0
    )
}

/// `/proc/virtual/status`: contexts registered and running (the same
/// here: a context lives while it runs), and the namespace sets they pin
/// (each has its own mount, uts and ipc namespace).
pub fn global_status(running: usize) -> String {
    format!(
        "#CTotal:\t{running}\n#CActive:\t{running}\n#NSProxy:\t{running}\t{running} {running} {running} {running}\n"
    )
}

/// The `CLONE_NEW*` mask of a context's namespaces.
pub fn spaces(state: &State) -> u64 {
    let mut m = (libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWCGROUP) as u64;
    if state.netns {
        m |= libc::CLONE_NEWNET as u64;
    }
    if state.user_base.is_some() {
        m |= libc::CLONE_NEWUSER as u64;
    }
    if state.cflags & vxfs_kernel::names::cflag::VIRT_UPTIME != 0 {
        m |= libc::CLONE_NEWTIME as u64;
    }
    m
}

/// `/proc/virtual/XID/info`.
pub fn info(state: &State) -> String {
    format!(
        "ID:\t{}\nInfo:\t{:016x}\nInit:\t{}\n",
        state.xid.0, 0, state.init
    )
}

/// `/proc/virtual/XID/status`: `UseCnt` counts the context's processes
/// and its supervisor's hold, `Tasks` its processes.
pub fn status(state: &State, tasks: usize) -> String {
    format!(
        "UseCnt:\t{}\nTasks:\t{tasks}\nFlags:\t{:016x}\nBCaps:\t{:016x}\nCCaps:\t{:016x}\nSpaces:\t{:08x}\n",
        tasks + 1,
        state.cflags,
        state.bcaps,
        state.ccaps,
        spaces(state)
    )
}

/// One row of the `limit` file; `None` limits print as -1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRow {
    /// Now.
    pub current: i64,
    /// The most seen (VServer's max; 0 when not tracked).
    pub max_seen: i64,
    /// Soft limit.
    pub soft: Option<i64>,
    /// Hard limit.
    pub hard: Option<i64>,
    /// Times the limit refused.
    pub hits: i64,
}

/// The rows of `limit`, in VServer's order.
pub const LIMIT_ROWS: &[&str] = &[
    "PROC", "VM", "VML", "RSS", "ANON", "RMAP", "FILES", "OFD", "LOCKS", "SOCK", "MSGQ", "SHM",
    "SEMA", "SEMS", "DENT",
];

/// `/proc/virtual/XID/limit`: `rows` by name; a row not given is not
/// counted (0, no limit). The minimum seen is 0 (a context starts
/// empty).
pub fn limit(rows: &[(&str, LimitRow)]) -> String {
    let mut out = String::from("Limit\t current\t     min/max\t\t    soft/hard\t\thits\n");
    for name in LIMIT_ROWS {
        let r = rows
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| *r)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{name}:\t{:8}\t{:8}/{:8}\t{:8}/{:8}\t{:6}",
            r.current,
            0,
            r.max_seen.max(r.current),
            r.soft.unwrap_or(-1),
            r.hard.unwrap_or(-1),
            r.hits
        );
    }
    out
}

/// What `/proc/PID/status` and `/proc/PID/fd` say about a context's
/// processes, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSums {
    /// Processes.
    pub procs: usize,
    /// Virtual memory, pages.
    pub vm_pages: i64,
    /// Locked memory, pages.
    pub locked_pages: i64,
    /// Open descriptors.
    pub fds: i64,
    /// Of which sockets.
    pub sockets: i64,
}

/// Sums over `pids`' `/proc` entries (on demand: each process's
/// descriptors are listed).
pub fn proc_sums(pids: &[u32]) -> ProcSums {
    let page_kb = (rustix::param::page_size() / 1024) as i64;
    let mut s = ProcSums::default();
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        s.procs += 1;
        let kb = |key: &str| -> i64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        s.vm_pages += kb("VmSize:") / page_kb;
        s.locked_pages += kb("VmLck:") / page_kb;
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                s.fds += 1;
                if std::fs::read_link(fd.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                {
                    s.sockets += 1;
                }
            }
        }
    }
    s
}

/// The `limit` rows mainline counts, from `state`'s cgroups and `sums`.
pub fn limit_rows(state: &State, sums: &ProcSums) -> Vec<(&'static str, LimitRow)> {
    let cg = &state.cgroups;
    let fs = RealFs;
    let num = |name: &str| -> Option<i64> {
        cg.read_raw(&fs, name)?
            .split_whitespace()
            .next()?
            .parse::<i64>()
            .ok()
    };
    let event = |file: &str, key: &str| -> i64 {
        cg.read_raw(&fs, file)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let page = rustix::param::page_size() as i64;
    let pages = |b: Option<i64>| b.map(|b| b / page);
    let (hard, soft) = cg.memory_limits(&fs);
    let usage = cg.usage(&fs);
    let v2_memory = cg.read_raw(&fs, "memory.max").is_some();
    let rss_max = if v2_memory {
        num("memory.peak")
    } else {
        num("memory.max_usage_in_bytes")
    };
    let rss_hits = if v2_memory {
        event("memory.events", "max ")
    } else {
        num("memory.failcnt").unwrap_or(0)
    };
    let anon = vxfs_kernel::memory::of(cg, &fs)
        .stat
        .get("AnonPages")
        .map_or(0, |&a| a as i64);
    let pids_max = cg.read_raw(&fs, "pids.max").and_then(|t| t.parse().ok());
    vec![
        (
            "PROC",
            LimitRow {
                current: num("pids.current").unwrap_or(sums.procs as i64),
                max_seen: num("pids.peak").unwrap_or(0),
                soft: pids_max,
                hard: pids_max,
                hits: event("pids.events", "max "),
            },
        ),
        (
            "VM",
            LimitRow {
                current: sums.vm_pages,
                ..LimitRow::default()
            },
        ),
        (
            "VML",
            LimitRow {
                current: sums.locked_pages,
                ..LimitRow::default()
            },
        ),
        (
            "RSS",
            LimitRow {
                current: usage.rss as i64 / page,
                max_seen: pages(rss_max).unwrap_or(0),
                soft: pages(soft.map(|s| s as i64)),
                hard: pages(hard.map(|h| h as i64)),
                hits: rss_hits,
            },
        ),
        (
            "ANON",
            LimitRow {
                current: anon / page,
                ..LimitRow::default()
            },
        ),
        (
            "FILES",
            LimitRow {
                current: sums.fds,
                ..LimitRow::default()
            },
        ),
        (
            "OFD",
            LimitRow {
                current: sums.fds,
                ..LimitRow::default()
            },
        ),
        (
            "SOCK",
            LimitRow {
                current: sums.sockets,
                ..LimitRow::default()
            },
        ),
    ]
    .into_iter()
    .map(|(n, mut r)| {
        r.max_seen = r.max_seen.max(r.current);
        if let Some(h) = r.hard {
            if h >= 1 << 50 {
                r.hard = None;
            }
        }
        (n, r)
    })
    .collect()
}

/// The `sched` file's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sched {
    /// Fill rate and interval (in 250 Hz ticks), from the CPU quota and
    /// period: `None` without a quota.
    pub bucket: Option<(u64, u64)>,
    /// The weight as VServer's priority bias (a nice value).
    pub prio_bias: i32,
    /// Per CPU: (cpu, user ticks, system ticks).
    pub cpus: Vec<(u32, u64, u64)>,
    /// Time held back by the quota, ticks.
    pub hold_ticks: u64,
}

/// `/proc/virtual/XID/sched`. Tokens are not kept on mainline (CFS keeps
/// the quota): min/max are one fill, the current level 0; the hold time
/// is the quota's throttled time, on the first CPU line.
pub fn sched(s: &Sched) -> String {
    let (fill, interval) = s.bucket.unwrap_or((0, 0));
    let mut out = format!(
        "FillRate:\t{fill:8},{fill}\nInterval:\t{interval:8},{interval}\nTokensMin:\t{fill:8}\nTokensMax:\t{interval:8}\nPrioBias:\t{:8}\n",
        s.prio_bias
    );
    for (i, (cpu, user, sys)) in s.cpus.iter().enumerate() {
        let hold = if i == 0 { s.hold_ticks } else { 0 };
        let _ = writeln!(
            out,
            "cpu {cpu}: {user} {sys} {hold} 0 0 R- 0 {fill} {interval} {fill}/{interval} {fill}/{interval} {} 0",
            s.prio_bias
        );
    }
    out
}

/// The `sched` figures of `state`'s cgroups (250 Hz ticks, as VServer's
/// configuration counts them).
pub fn sched_of(state: &State) -> Sched {
    let cg = &state.cgroups;
    let fs = RealFs;
    let read = |n: &str| cg.read_raw(&fs, n);
    let usec_to_ticks = |us: u64| us / 4000;
    let bucket = cg
        .cpu_quota(&fs)
        .map(|(q, p)| (usec_to_ticks(q), usec_to_ticks(p)));
    let prio_bias = read("cpu.weight.nice")
        .and_then(|n| n.parse().ok())
        .or_else(|| {
            let shares: u64 = read("cpu.shares")?.parse().ok()?;
            (-20..=19).min_by_key(|&n| vxfs_kernel::cgroup::shares_of_nice(n).abs_diff(shares))
        })
        .unwrap_or(0);
    let ns_to_ticks = |ns: u64| ns / 4_000_000;
    let cpus = cg
        .cpu_use_per_cpu(&fs)
        .map(|per_cpu| {
            per_cpu
                .into_iter()
                .map(|(cpu, user, system)| (cpu, ns_to_ticks(user), ns_to_ticks(system)))
                .collect()
        })
        .unwrap_or_else(|| {
            let u = cg.usage(&fs);
            vec![(0, usec_to_ticks(u.user_usec), usec_to_ticks(u.system_usec))]
        });
    let stat = read("cpu.stat").unwrap_or_default();
    let field = |k: &str| -> u64 {
        stat.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let hold_ticks = match field("throttled_usec ") {
        0 => ns_to_ticks(field("throttled_time ")),
        us => usec_to_ticks(us),
    };
    Sched {
        bucket,
        prio_bias,
        cpus,
        hold_ticks,
    }
}

/// `/proc/virtual/XID/cvirt`: uptime since the context started, its uts
/// fields, its tasks and load average (vxproc's when it serves the
/// context, else the tasks alone and a load of 0).
pub fn cvirt(
    uptime_centis: u64,
    uts: &[String; 6],
    tasks: (u64, u64, u64),
    loadavg: Option<&str>,
) -> String {
    let [node, domain, sys, release, version, machine] = uts;
    let load = loadavg
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "0.00 0.00 0.00".into());
    format!(
        "BiasUptime:\t{}.{:02}\nSysName:\t{sys}\nNodeName:\t{node}\nRelease:\t{release}\nVersion:\t{version}\nMachine:\t{machine}\nDomainName:\t{domain}\nnr_threads:\t{}\nnr_running:\t{}\nnr_unintr:\t{}\nnr_onhold:\t0\nload_updates:\t0\nloadavg:\t{load}\ntotal_forks:\t0\n",
        uptime_centis / 100,
        uptime_centis % 100,
        tasks.0,
        tasks.1,
        tasks.2
    )
}

/// The context's block I/O (not a VServer file: its patch did not count
/// I/O per context): totals, each device, and what the counters cover.
pub fn io(
    devices: &std::collections::BTreeMap<(u32, u32), vxproc::figures::DeviceIo>,
    writeback: bool,
) -> String {
    let total = devices.values().fold((0, 0, 0, 0), |t, d| {
        (
            t.0 + d.read_bytes,
            t.1 + d.write_bytes,
            t.2 + d.reads,
            t.3 + d.writes,
        )
    });
    let mut out = format!(
        "ReadBytes:\t{}\nWriteBytes:\t{}\nReads:\t{}\nWrites:\t{}\n",
        total.0, total.1, total.2, total.3
    );
    for ((major, minor), d) in devices {
        if d.reads + d.writes + d.read_bytes + d.write_bytes > 0 {
            out.push_str(&format!(
                "Device[{major}:{minor}]:\t{} {} {} {}\n",
                d.read_bytes, d.write_bytes, d.reads, d.writes
            ));
        }
    }
    out.push_str(if writeback {
        "Counted:\tall (io and memory on cgroup v2: buffered writeback included)\n"
    } else {
        "Counted:\tdirect and synchronous only (blkio on cgroup v1: buffered writeback is charged to the host)\n"
    });
    out
}

/// `/proc/virtual/XID/nsproxy`: the nsfs inode of each namespace of the
/// context's init (what `ls -i /proc/PID/ns` shows; VServer printed
/// kernel pointers).
pub fn nsproxy(init: u32) -> String {
    let mut out = String::new();
    for ns in ["mnt", "uts", "ipc", "pid", "net", "user", "cgroup", "time"] {
        let ino = std::fs::read_link(format!("/proc/{init}/ns/{ns}"))
            .ok()
            .and_then(|t| {
                let t = t.to_string_lossy().into_owned();
                t.split_once('[')?.1.strip_suffix(']').map(str::to_string)
            })
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "{ns}:\t{ino}");
    }
    out
}

/// The files of a context.
pub const FILES: &[&str] = &["info", "status", "limit", "sched", "cvirt", "nsproxy", "io"];

/// `vxctl virtual [info|status]` and `vxctl virtual XID [FILE]`.
pub fn show(args: &[&String]) -> Result<String, CliError> {
    let registry = Registry::open();
    let usage = || {
        CliError::Usage(UsageError::new(format!(
            "virtual [info|status] | virtual XID [{}]",
            FILES.join("|")
        )))
    };
    match args {
        [] => Ok(global_info() + &global_status(registry.list().len())),
        [f] if f.as_str() == "info" => Ok(global_info()),
        [f] if f.as_str() == "status" => Ok(global_status(registry.list().len())),
        [x] => context_file(&registry, x, "status"),
        [x, f] => context_file(&registry, x, f),
        _ => Err(usage()),
    }
}

fn context_file(registry: &Registry, xid: &str, file: &str) -> Result<String, CliError> {
    if file == "cacct" {
        return Err(anyhow::anyhow!(
            "cacct: mainline keeps no per-context socket accounting (docs/SEMANTICS.md)"
        )
        .into());
    }
    if !FILES.contains(&file) {
        return Err(CliError::Usage(UsageError::new(format!(
            "'{file}' is not one of {}",
            FILES.join(", ")
        ))));
    }
    let state = crate::ctx::running(registry, xid)?;
    let pids = state.cgroups.procs(&RealFs).unwrap_or_default();
    Ok(match file {
        "info" => info(&state),
        "status" => status(&state, pids.len()),
        "io" => io(
            &vxproc::source::io(&state.cgroups, &RealFs),
            state.cgroups.counts_writeback(),
        ),
        "limit" => limit(&limit_rows(&state, &proc_sums(&pids))),
        "sched" => sched(&sched_of(&state)),
        "cvirt" => {
            let uts = vxfs_kernel::live::uts(&state).map_err(anyhow::Error::from)?;
            let t = vxfs_kernel::tasks::tasks(&state.cgroups);
            let served = vxfs_kernel::procview::mount_dir(registry)
                .join(state.xid.0.to_string())
                .join("loadavg");
            let load = std::fs::read_to_string(served).ok();
            cvirt(
                state.uptime_centis().unwrap_or(0),
                &uts,
                (t.threads, t.running, t.blocked),
                load.as_deref(),
            )
        }
        _ => nsproxy(state.init),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_files() {
        assert_eq!(
            global_info(),
            "VCIVersion:\t0002:0003\nVCISyscall:\t236\nVCIKernel:\t00000000\n"
        );
        assert_eq!(
            global_status(2),
            "#CTotal:\t2\n#CActive:\t2\n#NSProxy:\t2\t2 2 2 2\n"
        );
    }

    #[test]
    fn limit_rows_in_vservers_format() {
        let rows = [(
            "PROC",
            LimitRow {
                current: 3,
                max_seen: 7,
                soft: Some(20),
                hard: Some(20),
                hits: 1,
            },
        )];
        let t = limit(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 1 + LIMIT_ROWS.len());
        assert_eq!(
            lines[0],
            "Limit\t current\t     min/max\t\t    soft/hard\t\thits"
        );
        assert_eq!(
            lines[1],
            "PROC:\t       3\t       0/       7\t      20/      20\t     1"
        );
        assert_eq!(
            lines[2],
            "VM:\t       0\t       0/       0\t      -1/      -1\t     0"
        );
        assert!(lines[15].starts_with("DENT:\t"));
    }

    #[test]
    fn sched_and_cvirt_formats() {
        let s = Sched {
            bucket: Some((25, 100)),
            prio_bias: -5,
            cpus: vec![(0, 10, 2), (1, 3, 4)],
            hold_ticks: 9,
        };
        let t = sched(&s);
        assert!(
            t.starts_with("FillRate:\t      25,25\nInterval:\t     100,100\n"),
            "{t}"
        );
        assert!(t.contains("PrioBias:\t      -5\n"));
        assert!(
            t.contains("\ncpu 0: 10 2 9 0 0 R- 0 25 100 25/100 25/100 -5 0\n"),
            "{t}"
        );
        assert!(
            t.ends_with("cpu 1: 3 4 0 0 0 R- 0 25 100 25/100 25/100 -5 0\n"),
            "{t}"
        );
        let uts = ["web", "(none)", "Linux", "6.18", "#1", "x86_64"].map(String::from);
        let c = cvirt(12345, &uts, (5, 1, 0), Some("0.50 0.20 0.10 1/5 42\n"));
        assert!(
            c.starts_with("BiasUptime:\t123.45\nSysName:\tLinux\nNodeName:\tweb\n"),
            "{c}"
        );
        assert!(c.contains("nr_threads:\t5\nnr_running:\t1\n"));
        assert!(c.contains("loadavg:\t0.50 0.20 0.10\n"));
        assert!(cvirt(0, &uts, (0, 0, 0), None).contains("loadavg:\t0.00 0.00 0.00\n"));
    }
}

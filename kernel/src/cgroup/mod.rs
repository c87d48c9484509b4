//! One cgroup per context in every hierarchy (docs/ARCHITECTURE.md "The
//! context core", cgroups).
//!
//! A context's cgroup is `vx-XID` below `vxfs/` below the cgroup of the
//! process that starts it, in *every* mounted hierarchy: the cgroup2 one
//! (tracking: membership, `cgroup.kill`, `cgroup.freeze`, and the
//! controllers it has) and each v1 one (the controllers it has). The
//! filesystem's `-o xid=cgroup` mode reads a request's context back from
//! that name in `/proc/PID/cgroup`. Hosts may be pure v2 (unified), pure v1
//! (legacy) or mixed (hybrid, like this project's test machine, where
//! every controller is on v1 and cgroup2 only tracks); [`Layout`] finds
//! which hierarchy has which controller and every knob goes to the one
//! that has it.
//!
//! All file access goes through [`CgroupFs`], so the same code runs on the
//! kernel's cgroupfs and on [`fake::FakeFs`], a directory tree that behaves
//! like it (files made at mkdir, as the kernel makes them), on which every
//! layout is unit-tested without root.

pub mod fake;
mod io;
mod layout;

pub use io::weight_warning;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use layout::{Hierarchy, Layout, Mode, Version};

use crate::xid::Xid;

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file or directory operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The cgroup file or directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// No mounted hierarchy has a controller a setting needs.
    #[error("no cgroup hierarchy has the {controller} controller (needed for {what})")]
    NoController {
        /// The controller.
        controller: String,
        /// The setting.
        what: String,
    },
    /// No cgroup hierarchy is mounted at all.
    #[error("no cgroup hierarchy is mounted (mount cgroup2 at /sys/fs/cgroup)")]
    NoHierarchy,
    /// The cgroup still has processes after the kill.
    #[error("cgroup {0} still has processes")]
    Busy(PathBuf),
    /// The caller's own v2 cgroup holds other processes, so no cgroup
    /// below it can have controllers.
    #[error(
        "cgroup {} holds {others} other processes, so the contexts below it cannot have \
         controllers (cgroup v2's no-internal-process rule: {error}); start guests from a cgroup \
         of their own, e.g. `systemd-run --scope -p Delegate=yes vserver NAME start`, or from a \
         service with Delegate=yes",
        own.display()
    )]
    InternalProcesses {
        /// The caller's cgroup.
        own: PathBuf,
        /// How many processes are still in it.
        others: usize,
        /// The kernel's refusal.
        error: std::io::Error,
    },
}

/// Access to cgroup files: the kernel's, or a fake tree's.
pub trait CgroupFs: Send + Sync + std::fmt::Debug {
    /// Makes a cgroup directory (nothing if it exists).
    fn mkdir(&self, path: &Path, hierarchy: &Hierarchy) -> std::io::Result<()>;
    /// Removes a cgroup directory.
    fn rmdir(&self, path: &Path) -> std::io::Result<()>;
    /// Writes a control file (which must exist).
    fn write(&self, path: &Path, value: &str) -> std::io::Result<()>;
    /// Reads a control file.
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// The kernel's cgroupfs.
#[derive(Debug, Default)]
pub struct RealFs;

impl CgroupFs for RealFs {
    fn mkdir(&self, path: &Path, _: &Hierarchy) -> std::io::Result<()> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    fn rmdir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn write(&self, path: &Path, value: &str) -> std::io::Result<()> {
        use std::io::Write;
        // One write(2) per value, never O_CREAT: cgroupfs takes each write
        // as one command.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// A context's cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The hierarchy.
    pub hierarchy: Hierarchy,
    /// The cgroup's directory.
    pub dir: PathBuf,
}

/// A context's cgroups, one per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupSet {
    /// Each hierarchy's cgroup; the tracking one first.
    pub members: Vec<Member>,
}

/// CPU bandwidth settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSettings {
    /// `(quota, period)` in µs; `None` quota = unlimited.
    pub bandwidth: Option<(Option<u64>, u64)>,
    /// Burst in µs.
    pub burst: Option<u64>,
    /// Weight as a nice value (-20..19).
    pub nice: Option<i32>,
}

/// Usage figures of a context's cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time in user mode, µs.
    pub user_usec: u64,
    /// CPU time in system mode, µs.
    pub system_usec: u64,
    /// Resident memory: anonymous plus mapped file pages, bytes.
    pub rss: u64,
    /// Memory charged in all, bytes.
    pub memory: u64,
    /// Tasks.
    pub tasks: u64,
}

/// The kernel's `sched_prio_to_weight`, for `cpu.shares` from a nice value
/// (v1; v2 takes the nice value itself in `cpu.weight.nice`).
const NICE_TO_WEIGHT: [u64; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904,
    3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87,
    70, 56, 45, 36, 29, 23, 18, 15,
];

/// `cpu.shares` for a nice value.
pub fn shares_of_nice(nice: i32) -> u64 {
    NICE_TO_WEIGHT[(nice.clamp(-20, 19) + 20) as usize]
}

impl CgroupSet {
    /// The cgroups of context `xid` in `layout` (not created).
    pub fn of(layout: &Layout, xid: Xid) -> Result<CgroupSet, CgroupError> {
        if layout.hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let mut members: Vec<Member> = layout
            .hierarchies
            .iter()
            .map(|h| Member {
                hierarchy: h.clone(),
                dir: h.own_dir().join("vxfs").join(xid.cgroup_name()),
            })
            .collect();
        // The tracking hierarchy (v2 if mounted) first.
        members.sort_by_key(|m| m.hierarchy.version != Version::V2);
        Ok(CgroupSet { members })
    }

    /// The tracking cgroup.
    pub fn tracking(&self) -> &Member {
        &self.members[0]
    }

    /// The v2 cgroup, if any.
    pub fn v2(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.hierarchy.version == Version::V2)
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
        move |error| CgroupError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    /// The member that has `controller`.
    fn with(&self, controller: &str, what: &str) -> Result<&Member, CgroupError> {
        self.members
            .iter()
            .find(|m| m.hierarchy.has(controller))
            .ok_or_else(|| CgroupError::NoController {
                controller: controller.to_string(),
                what: what.to_string(),
            })
    }

    fn write(
        &self,
        fs: &dyn CgroupFs,
        m: &Member,
        file: &str,
        value: &str,
    ) -> Result<(), CgroupError> {
        let path = m.dir.join(file);
        log::debug!("cgroup: {} <- {value}", path.display());
        fs.write(&path, value).map_err(Self::io(&path))
    }

    fn read(&self, fs: &dyn CgroupFs, m: &Member, file: &str) -> Result<String, CgroupError> {
        let path = m.dir.join(file);
        fs.read(&path).map_err(Self::io(&path))
    }

    /// Makes the cgroups (and `vxfs/` above them), ready for tasks: v1
    /// cpusets get their parent's CPUs and memory nodes, v2 parents enable
    /// the controllers the hierarchy has.
    pub fn create(&self, fs: &dyn CgroupFs) -> Result<(), CgroupError> {
        for m in &self.members {
            let parent = m.dir.parent().expect("below vxfs/");
            // v2: what the hierarchy has is enabled for the children of
            // each level before the next level is made.
            let enable: Vec<String> = match m.hierarchy.version {
                Version::V2 => m
                    .hierarchy
                    .controllers
                    .iter()
                    .filter(|c| ["cpu", "memory", "pids", "io", "cpuset"].contains(&c.as_str()))
                    .map(|c| format!("+{c}"))
                    .collect(),
                Version::V1 => Vec::new(),
            };
            let own = m.hierarchy.own_dir();
            for (above, dir) in [(own.as_path(), parent), (parent, m.dir.as_path())] {
                if !enable.is_empty() {
                    let path = above.join("cgroup.subtree_control");
                    match fs.write(&path, &enable.join(" ")) {
                        // cgroup v2's no-internal-process rule: the caller's
                        // own cgroup holds processes (the caller at least).
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && above == own => {
                            Self::leave_own(fs, m, &own)?;
                            fs.write(&path, &enable.join(" "))
                                .map_err(|error| Self::internal_processes(fs, &own, error))?;
                        }
                        other => other.map_err(Self::io(&path))?,
                    }
                }
                let made = !dir.exists();
                fs.mkdir(dir, &m.hierarchy).map_err(Self::io(dir))?;
                if m.hierarchy.version == Version::V1 && m.hierarchy.has("cpuset") {
                    // A v1 cpuset takes no task until it has CPUs and
                    // memory nodes: its parent's.
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let current = fs.read(&dir.join(file)).map_err(Self::io(dir))?;
                        if made || current.trim().is_empty() {
                            let from = above.join(file);
                            let value = fs.read(&from).map_err(Self::io(&from))?;
                            let path = dir.join(file);
                            fs.write(&path, value.trim()).map_err(Self::io(&path))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves the calling process out of its own v2 cgroup `own` into the
    /// leaf `own/supervisor` (the systemd delegation pattern), so that
    /// `own` may enable controllers for the contexts below it; its
    /// children (the supervisor) are born there.
    fn leave_own(fs: &dyn CgroupFs, m: &Member, own: &Path) -> Result<(), CgroupError> {
        let leaf = own.join("supervisor");
        fs.mkdir(&leaf, &m.hierarchy).map_err(Self::io(&leaf))?;
        let procs = leaf.join("cgroup.procs");
        fs.write(&procs, &std::process::id().to_string())
            .map_err(Self::io(&procs))
    }

    /// Why controllers cannot be enabled below `own` when other processes
    /// than the caller's are in it.
    fn internal_processes(fs: &dyn CgroupFs, own: &Path, error: std::io::Error) -> CgroupError {
        let others = fs
            .read(&own.join("cgroup.procs"))
            .map(|t| t.split_whitespace().count())
            .unwrap_or(0);
        CgroupError::InternalProcesses {
            own: own.to_path_buf(),
            others,
            error,
        }
    }

    /// Moves task `pid` into every cgroup (`skip_v2`: already there, by
    /// `CLONE_INTO_CGROUP`).
    pub fn join(&self, fs: &dyn CgroupFs, pid: u32, skip_v2: bool) -> Result<(), CgroupError> {
        for m in &self.members {
            if skip_v2 && m.hierarchy.version == Version::V2 {
                continue;
            }
            self.write(fs, m, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// The task limit (`pids.max`).
    pub fn set_pids_max(&self, fs: &dyn CgroupFs, max: Option<u64>) -> Result<(), CgroupError> {
        let m = self.with("pids", "the process limit (rlimits/nproc)")?;
        let value = max.map_or("max".to_string(), |n| n.to_string());
        self.write(fs, m, "pids.max", &value)
    }

    /// The memory limits: `max` (hard) and `high` (soft: throttling on v2,
    /// reclaim target on v1), bytes.
    pub fn set_memory(
        &self,
        fs: &dyn CgroupFs,
        max: Option<u64>,
        high: Option<u64>,
    ) -> Result<(), CgroupError> {
        let m = self.with("memory", "the memory limit (rlimits/rss)")?;
        let num = |v: Option<u64>, none: &str| v.map_or(none.to_string(), |n| n.to_string());
        match m.hierarchy.version {
            Version::V2 => {
                self.write(fs, m, "memory.max", &num(max, "max"))?;
                self.write(fs, m, "memory.high", &num(high, "max"))?;
            }
            Version::V1 => {
                self.write(fs, m, "memory.limit_in_bytes", &num(max, "-1"))?;
                self.write(fs, m, "memory.soft_limit_in_bytes", &num(high, "-1"))?;
            }
        }
        Ok(())
    }

    /// CPU bandwidth and weight.
    pub fn set_cpu(&self, fs: &dyn CgroupFs, cpu: &CpuSettings) -> Result<(), CgroupError> {
        let m = self.with("cpu", "the CPU limit (sched/)")?;
        match m.hierarchy.version {
            Version::V2 => {
                if let Some((quota, period)) = cpu.bandwidth {
                    let q = quota.map_or("max".to_string(), |q| q.to_string());
                    self.write(fs, m, "cpu.max", &format!("{q} {period}"))?;
                }
                if let Some(b) = cpu.burst {
                    self.write(fs, m, "cpu.max.burst", &b.to_string())?;
                }
                if let Some(n) = cpu.nice {
                    self.write(fs, m, "cpu.weight.nice", &n.to_string())?;
                }
            }
            Version::V1 => {
                if let Some((quota, period)) = cpu.bandwidth {
                    // The quota first may be refused against the old
                    // period; unlimited first, then the period, then it.
                    self.write(fs, m, "cpu.cfs_quota_us", "-1")?;
                    self.write(fs, m, "cpu.cfs_period_us", &period.to_string())?;
                    if let Some(q) = quota {
                        self.write(fs, m, "cpu.cfs_quota_us", &q.to_string())?;
                    }
                }
                if let Some(b) = cpu.burst {
                    self.write(fs, m, "cpu.cfs_burst_us", &b.to_string())?;
                }
                if let Some(n) = cpu.nice {
                    self.write(fs, m, "cpu.shares", &shares_of_nice(n).to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The CPUs and memory nodes (`cpuset/`).
    pub fn set_cpuset(
        &self,
        fs: &dyn CgroupFs,
        cpus: Option<&str>,
        mems: Option<&str>,
    ) -> Result<(), CgroupError> {
        let m = self.with("cpuset", "cpuset/")?;
        if let Some(c) = cpus {
            self.write(fs, m, "cpuset.cpus", c)?;
        }
        if let Some(n) = mems {
            self.write(fs, m, "cpuset.mems", n)?;
        }
        Ok(())
    }

    /// Writes `value` into the file `name` (`CONTROLLER.KNOB`) of the
    /// hierarchy that has the controller (util-vserver's `cgroup/` files).
    pub fn write_raw(&self, fs: &dyn CgroupFs, name: &str, value: &str) -> Result<(), CgroupError> {
        let controller = name.split('.').next().unwrap_or(name);
        let m = if controller == "cgroup" {
            self.tracking()
        } else {
            match self.with(controller, &format!("cgroup/{name}")) {
                Ok(m) => m,
                // blkio's files on a v2 host, io's on a v1 one: as the
                // other version names them (io.rs).
                Err(e) if controller == "io" || controller == "blkio" => {
                    let other = if controller == "io" { "blkio" } else { "io" };
                    let Ok(m) = self.with(other, "") else {
                        return Err(e);
                    };
                    let files =
                        io::translate(name, value, controller == "blkio").map_err(|message| {
                            CgroupError::Io {
                                path: m.dir.join(name),
                                error: std::io::Error::new(
                                    std::io::ErrorKind::InvalidInput,
                                    message,
                                ),
                            }
                        })?;
                    for (file, rule) in files {
                        self.write(fs, m, &file, &rule)?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        };
        if controller == "io" || controller == "blkio" {
            // One rule per write, as the kernel reads them.
            for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                self.write(fs, m, name, line)?;
            }
            return Ok(());
        }
        self.write(fs, m, name, value)
    }

    /// Reads the file `name` (`CONTROLLER.KNOB`) of the hierarchy that has
    /// the controller; `None` if there is none or it cannot be read.
    pub fn read_raw(&self, fs: &dyn CgroupFs, name: &str) -> Option<String> {
        let controller = name.split('.').next().unwrap_or(name);
        let m = if controller == "cgroup" {
            self.tracking()
        } else {
            self.with(controller, name).ok()?
        };
        self.read(fs, m, name).ok().map(|t| t.trim().to_string())
    }

    /// The memory limits in bytes (`None`: unlimited): (hard, soft).
    pub fn memory_limits(&self, fs: &dyn CgroupFs) -> (Option<u64>, Option<u64>) {
        let num = |t: Option<String>| {
            t.and_then(|t| t.parse::<u64>().ok())
                // v1 says "unlimited" with a huge page-aligned number.
                .filter(|&n| n < (1 << 62))
        };
        match self.with("memory", "").map(|m| m.hierarchy.version) {
            Ok(Version::V2) => (
                num(self.read_raw(fs, "memory.max")),
                num(self.read_raw(fs, "memory.high")),
            ),
            Ok(Version::V1) => (
                num(self.read_raw(fs, "memory.limit_in_bytes")),
                num(self.read_raw(fs, "memory.soft_limit_in_bytes")),
            ),
            Err(_) => (None, None),
        }
    }

    /// The CPU bandwidth limit as (quota, period) in µs (`cpu.max` on v2,
    /// `cpu.cfs_quota_us`/`cpu.cfs_period_us` on v1); `None`: no limit.
    pub fn cpu_quota(&self, fs: &dyn CgroupFs) -> Option<(u64, u64)> {
        match self.read_raw(fs, "cpu.max") {
            Some(max) => {
                let mut w = max.split_whitespace();
                Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
            }
            None => {
                let quota: i64 = self.read_raw(fs, "cpu.cfs_quota_us")?.parse().ok()?;
                let period: u64 = self.read_raw(fs, "cpu.cfs_period_us")?.parse().ok()?;
                (quota > 0).then_some((quota as u64, period))
            }
        }
    }

    /// Per-CPU time in user and system mode, ns: (cpu, user, system) from
    /// v1's `cpuacct.usage_all`; `None` where there is none (v2 keeps
    /// totals only).
    pub fn cpu_use_per_cpu(&self, fs: &dyn CgroupFs) -> Option<Vec<(u32, u64, u64)>> {
        let all = self.read_raw(fs, "cpuacct.usage_all")?;
        Some(
            all.lines()
                .skip(1)
                .filter_map(|l| {
                    let mut w = l.split_whitespace().map(|x| x.parse::<u64>().ok());
                    Some((w.next()?? as u32, w.next()??, w.next()??))
                })
                .collect(),
        )
    }

    /// The CPU time its tasks used, µs: v1's `cpuacct.usage` where a
    /// hierarchy has cpuacct, else cgroup2's `cpu.stat` (every v2 cgroup
    /// has `usage_usec`).
    pub fn cpu_usage_usec(&self, fs: &dyn CgroupFs) -> Option<u64> {
        if let Some(m) = self
            .members
            .iter()
            .find(|m| m.hierarchy.version == Version::V1 && m.hierarchy.has("cpuacct"))
        {
            return self
                .read(fs, m, "cpuacct.usage")
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|ns| ns / 1000);
        }
        let stat = self.read(fs, self.v2()?, "cpu.stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether its block I/O counters include buffered writeback: only
    /// with the io and memory controllers both on cgroup v2 (cgroup
    /// writeback); v1's blkio (and io without memory beside it) counts
    /// direct and synchronous I/O only, buffered writes being written back
    /// by the kernel's flusher threads, charged to the host.
    pub fn counts_writeback(&self) -> bool {
        let on_v2 = |c: &str| {
            self.with(c, "")
                .is_ok_and(|m| m.hierarchy.version == Version::V2)
        };
        on_v2("io") && on_v2("memory")
    }

    /// Freezes (`true`) or thaws every task.
    pub fn freeze(&self, fs: &dyn CgroupFs, frozen: bool) -> Result<(), CgroupError> {
        if let Some(m) = self.v2() {
            return self.write(fs, m, "cgroup.freeze", if frozen { "1" } else { "0" });
        }
        let m = self.with("freezer", "freezing (sched_pause)")?;
        self.write(
            fs,
            m,
            "freezer.state",
            if frozen { "FROZEN" } else { "THAWED" },
        )
    }

    /// The pids of the context's processes (the tracking cgroup's).
    pub fn procs(&self, fs: &dyn CgroupFs) -> Result<Vec<u32>, CgroupError> {
        let text = self.read(fs, self.tracking(), "cgroup.procs")?;
        Ok(text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Whether any process is left.
    pub fn populated(&self, fs: &dyn CgroupFs) -> Result<bool, CgroupError> {
        if let Some(m) = self.v2() {
            let events = self.read(fs, m, "cgroup.events")?;
            return Ok(events
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["populated", "1"]));
        }
        Ok(!self.procs(fs)?.is_empty())
    }

    /// Sends `signal` to every process (not `cgroup.kill`: any signal).
    pub fn signal_all(&self, fs: &dyn CgroupFs, signal: i32) -> Result<usize, CgroupError> {
        let mut sent = 0;
        for pid in self.procs(fs)? {
            let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
                continue;
            };
            let Some(sig) = signal_of(signal) else {
                continue;
            };
            if rustix::process::kill_process(pid, sig).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Kills every process and waits until none is left (`timeout`).
    pub fn kill_all(&self, fs: &dyn CgroupFs, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = std::time::Instant::now() + timeout;
        if let Some(m) = self.v2() {
            if m.dir.join("cgroup.kill").exists() {
                self.write(fs, m, "cgroup.kill", "1")?;
            }
        }
        loop {
            if !self.populated(fs)? {
                return Ok(());
            }
            // No cgroup.kill (older v2, v1 only): SIGKILL each, again and
            // again, until forks stop.
            self.signal_all(fs, libc::SIGKILL)?;
            if std::time::Instant::now() > deadline {
                return Err(CgroupError::Busy(self.tracking().dir.clone()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Usage figures from the controllers' own counters.
    pub fn usage(&self, fs: &dyn CgroupFs) -> Usage {
        let mut u = Usage {
            tasks: self.procs(fs).map_or(0, |p| p.len() as u64),
            ..Usage::default()
        };
        let stat = |m: &Member, file: &str| -> Vec<(String, u64)> {
            self.read(fs, m, file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_string(), v.trim().parse().ok()?))
                })
                .collect()
        };
        let get = |stat: &[(String, u64)], key: &str| {
            stat.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
        };
        if let Ok(m) = self.with("cpu", "") {
            if m.hierarchy.version == Version::V2 {
                let s = stat(m, "cpu.stat");
                u.user_usec = get(&s, "user_usec");
                u.system_usec = get(&s, "system_usec");
            }
        }
        if let Ok(m) = self.with("cpuacct", "") {
            // USER_HZ ticks (100 per second on Linux).
            let s = stat(m, "cpuacct.stat");
            u.user_usec = get(&s, "user") * 10_000;
            u.system_usec = get(&s, "system") * 10_000;
        }
        if let Ok(m) = self.with("memory", "") {
            let s = stat(m, "memory.stat");
            match m.hierarchy.version {
                Version::V2 => {
                    u.rss = get(&s, "anon") + get(&s, "file_mapped");
                    u.memory = self
                        .read(fs, m, "memory.current")
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .unwrap_or(0);
                }
                Version::V1 => {
                    u.rss = get(&s, "rss") + get(&s, "mapped_file");
                    u.memory = self
                        .read(fs, m, "memory.usage_in_bytes")
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .unwrap_or(0);
                }
            }
        }
        u
    }

    /// Removes the cgroups (and `vxfs/` if empty); the kernel may take a
    /// moment to release a cgroup whose last task just died (EBUSY).
    pub fn remove(&self, fs: &dyn CgroupFs) -> Result<(), CgroupError> {
        if self.tracking().dir.exists() && self.populated(fs)? {
            return Err(CgroupError::Busy(self.tracking().dir.clone()));
        }
        let mut first_error = None;
        for m in &self.members {
            let mut delay = Duration::from_millis(1);
            loop {
                match fs.rmdir(&m.dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && delay < Duration::from_secs(2) =>
                    {
                        std::thread::sleep(delay);
                        delay *= 2;
                    }
                    Err(error) => {
                        first_error.get_or_insert(CgroupError::Io {
                            path: m.dir.clone(),
                            error,
                        });
                        break;
                    }
                }
            }
            // Only once no other context is below it.
            let _ = fs.rmdir(m.dir.parent().expect("below vxfs/"));
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The rustix signal of a number.
pub fn signal_of(n: i32) -> Option<rustix::process::Signal> {
    rustix::process::Signal::from_named_raw(n)
}

#[cfg(test)]
mod tests;

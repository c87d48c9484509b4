//! A directory tree that behaves like cgroupfs where the backend relies
//! on it: a new cgroup's control files appear at mkdir (for the
//! controllers its hierarchy has, on v2 those its parent enabled), control
//! files cannot be created by writing, enabling a controller the parent
//! does not have fails with ENOENT (as on a hybrid host), a cgroup with
//! tasks or children cannot be removed (EBUSY), and cgroup v2's
//! no-internal-process rule holds below the root (EBUSY). Used by the unit tests of
//! every layout; never by the tools.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{CgroupFs, Hierarchy, Layout, Version};

/// The fake filesystem (its tree lives in a directory the caller owns).
#[derive(Debug, Default)]
pub struct FakeFs {
    /// Every write, in order (path, value), for the tests to inspect.
    pub writes: Mutex<Vec<(PathBuf, String)>>,
}

fn files_of(h: &Hierarchy, enabled: &[String]) -> Vec<(&'static str, &'static str)> {
    let mut files = vec![("cgroup.procs", "")];
    match h.version {
        Version::V2 => {
            files.extend([
                ("cgroup.controllers", ""),
                ("cgroup.subtree_control", ""),
                ("cgroup.events", "populated 0\nfrozen 0\n"),
                ("cgroup.freeze", "0\n"),
                ("cgroup.kill", ""),
                ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
            ]);
            for c in enabled {
                files.extend(match c.as_str() {
                    "cpu" => &[
                        ("cpu.max", "max 100000\n"),
                        ("cpu.max.burst", "0\n"),
                        ("cpu.weight", "100\n"),
                        ("cpu.weight.nice", "0\n"),
                    ][..],
                    "memory" => &[
                        ("memory.max", "max\n"),
                        ("memory.high", "max\n"),
                        ("memory.current", "0\n"),
                        ("memory.stat", "anon 0\nfile_mapped 0\n"),
                    ][..],
                    "pids" => &[("pids.max", "max\n"), ("pids.current", "0\n")][..],
                    "cpuset" => &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")][..],
                    "io" => &[
                        ("io.max", ""),
                        ("io.weight", "default 100\n"),
                        ("io.bfq.weight", "default 100\n"),
                        ("io.stat", ""),
                    ][..],
                    _ => &[][..],
                });
            }
        }
        Version::V1 => {
            for c in &h.controllers {
                files.extend(match c.as_str() {
                    "cpu" => &[
                        ("cpu.cfs_quota_us", "-1\n"),
                        ("cpu.cfs_period_us", "100000\n"),
                        ("cpu.cfs_burst_us", "0\n"),
                        ("cpu.shares", "1024\n"),
                    ][..],
                    "cpuacct" => &[
                        ("cpuacct.stat", "user 0\nsystem 0\n"),
                        ("cpuacct.usage", "0\n"),
                    ][..],
                    "memory" => &[
                        ("memory.limit_in_bytes", "9223372036854771712\n"),
                        ("memory.soft_limit_in_bytes", "9223372036854771712\n"),
                        ("memory.usage_in_bytes", "0\n"),
                        ("memory.stat", "rss 0\nmapped_file 0\n"),
                    ][..],
                    "pids" => &[("pids.max", "max\n"), ("pids.current", "0\n")][..],
                    "cpuset" => &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")][..],
                    "freezer" => &[("freezer.state", "THAWED\n")][..],
                    "blkio" => &[
                        ("blkio.throttle.read_bps_device", ""),
                        ("blkio.throttle.write_bps_device", ""),
                        ("blkio.throttle.read_iops_device", ""),
                        ("blkio.throttle.write_iops_device", ""),
                        ("blkio.throttle.io_service_bytes_recursive", "Total 0\n"),
                        ("blkio.throttle.io_serviced_recursive", "Total 0\n"),
                        ("blkio.bfq.weight", "100\n"),
                        ("blkio.bfq.weight_device", ""),
                    ][..],
                    _ => &[][..],
                });
            }
        }
    }
    files
}

impl FakeFs {
    /// The values written to `path`, in order.
    pub fn written(&self, path: &Path) -> Vec<String> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl CgroupFs for FakeFs {
    fn mkdir(&self, path: &Path, h: &Hierarchy) -> std::io::Result<()> {
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir(path)?;
        let enabled: Vec<String> = match h.version {
            Version::V2 => {
                std::fs::read_to_string(path.parent().unwrap().join("cgroup.subtree_control"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            }
            Version::V1 => Vec::new(),
        };
        for (file, content) in files_of(h, &enabled) {
            std::fs::write(path.join(file), content)?;
        }
        if h.version == Version::V2 {
            std::fs::write(path.join("cgroup.controllers"), enabled.join(" "))?;
        }
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> std::io::Result<()> {
        if !path.exists() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        let busy = std::fs::read_to_string(path.join("cgroup.procs"))
            .is_ok_and(|t| !t.trim().is_empty())
            || std::fs::read_dir(path)?
                .flatten()
                .any(|e| e.path().is_dir());
        if busy {
            return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
        }
        std::fs::remove_dir_all(path)
    }

    fn write(&self, path: &Path, value: &str) -> std::io::Result<()> {
        if !path.is_file() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        let dir = path.parent().expect("a file in a cgroup");
        // The root of a hierarchy: its parent is no cgroup.
        let is_root = !dir.parent().is_some_and(|p| {
            p.join("cgroup.controllers").exists() || p.join("cgroup.procs").exists()
        });
        let has_procs = |d: &Path| {
            std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|t| !t.trim().is_empty())
        };
        let enables_controllers = |d: &Path| {
            std::fs::read_to_string(d.join("cgroup.subtree_control"))
                .is_ok_and(|t| !t.trim().is_empty())
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // cgroup v2's no-internal-process rule: below the root, a cgroup
        // with processes cannot enable controllers for children, and one
        // that does cannot take processes.
        let v2 = dir.join("cgroup.controllers").exists();
        if v2 && !is_root {
            let enabling = name == "cgroup.subtree_control" && value.contains('+');
            if (enabling && has_procs(dir)) || (name == "cgroup.procs" && enables_controllers(dir))
            {
                return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
            }
        }
        if name == "cgroup.procs" {
            // A migration: the task leaves its old cgroup (here: the
            // parent, the case the code under test makes).
            if let Ok(old) = std::fs::read_to_string(dir.parent().unwrap().join("cgroup.procs")) {
                let left: Vec<&str> = old
                    .split_whitespace()
                    .filter(|p| *p != value.trim())
                    .collect();
                let _ = std::fs::write(dir.parent().unwrap().join("cgroup.procs"), left.join("\n"));
            }
        }
        if name == "cgroup.subtree_control" {
            let available = std::fs::read_to_string(path.with_file_name("cgroup.controllers"))?;
            let mut enabled: Vec<String> = std::fs::read_to_string(path)?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            for word in value.split_whitespace() {
                let (on, c) = word.split_at(1);
                if !available.split_whitespace().any(|a| a == c) {
                    return Err(std::io::ErrorKind::NotFound.into());
                }
                enabled.retain(|e| e != c);
                if on == "+" {
                    enabled.push(c.to_string());
                }
            }
            std::fs::write(path, enabled.join(" "))?;
        } else {
            std::fs::write(path, value)?;
        }
        self.writes
            .lock()
            .unwrap()
            .push((path.to_path_buf(), value.to_string()));
        Ok(())
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        if path.file_name().is_some_and(|n| n == "cgroup.events") {
            // As the kernel keeps it: from the tasks.
            let procs = std::fs::read_to_string(path.with_file_name("cgroup.procs"))?;
            let frozen = std::fs::read_to_string(path.with_file_name("cgroup.freeze"))?;
            return Ok(format!(
                "populated {}\nfrozen {}\n",
                u8::from(!procs.trim().is_empty()),
                frozen.trim()
            ));
        }
        std::fs::read_to_string(path)
    }
}

/// A fake host: its tree under `root`, its mountinfo and `/proc/self/cgroup`
/// texts, for a layout like `mode`'s (hybrid = this project's test machine).
pub fn host(root: &Path, mode: super::Mode) -> Layout {
    let mut mountinfo = String::new();
    let mut own = String::new();
    let mut mount = |n: usize, point: &str, fstype: &str, options: &str| {
        mountinfo.push_str(&format!(
            "{} 20 0:{} / {point} rw,nosuid - {fstype} {fstype} rw,{options}\n",
            30 + n,
            40 + n
        ));
    };
    let v1 = [
        ("cpu", "cpu"),
        ("cpuacct", "cpuacct"),
        ("cpuset", "cpuset"),
        ("memory", "memory"),
        ("pids", "pids"),
        ("freezer", "freezer"),
        ("blkio", "blkio"),
        ("systemd", "name=systemd"),
    ];
    let base = |dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
    };
    match mode {
        super::Mode::Unified => {
            mount(0, "/sys/fs/cgroup", "cgroup2", "nsdelegate");
            let dir = root.join("sys/fs/cgroup/user.slice/session");
            base(&dir);
            for d in [
                root.join("sys/fs/cgroup"),
                root.join("sys/fs/cgroup/user.slice"),
                dir.clone(),
            ] {
                std::fs::write(d.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
                std::fs::write(d.join("cgroup.subtree_control"), "").unwrap();
            }
            own.push_str("0::/user.slice/session\n");
        }
        super::Mode::Hybrid | super::Mode::Legacy => {
            for (n, (dir, options)) in v1.iter().enumerate() {
                mount(n + 1, &format!("/sys/fs/cgroup/{dir}"), "cgroup", options);
                let mut path = root.join("sys/fs/cgroup").join(dir);
                if *dir == "memory" {
                    path = path.join("process_api/me");
                    own.push_str(&format!("{}:{options}:/process_api/me\n", 9 - n));
                } else {
                    own.push_str(&format!("{}:{options}:/\n", 9 - n));
                }
                base(&path);
                if *dir == "cpuset" {
                    std::fs::write(path.join("cpuset.cpus"), "0-1\n").unwrap();
                    std::fs::write(path.join("cpuset.mems"), "0\n").unwrap();
                }
            }
            if mode == super::Mode::Hybrid {
                mount(0, "/sys/fs/cgroup/unified", "cgroup2", "nsdelegate");
                let dir = root.join("sys/fs/cgroup/unified");
                base(&dir);
                std::fs::write(dir.join("cgroup.controllers"), "hugetlb").unwrap();
                std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
                own.push_str("0::/\n");
            }
        }
    }
    Layout::parse(&mountinfo, &own, root)
}

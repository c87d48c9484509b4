//! A context's threads and their states, over its cgroups: what
//! vxproc's load average and `procs_running` count, and the intercepted
//! `sysinfo(2)`'s `procs`.

use crate::cgroup::CgroupSet;

/// A context's tasks at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tasks {
    /// Threads in all.
    pub threads: u64,
    /// Running or runnable.
    pub running: u64,
    /// In uninterruptible sleep.
    pub blocked: u64,
    /// The highest pid in the context's pid namespace.
    pub last_pid: u64,
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

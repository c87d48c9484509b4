//! A context's memory figures from its memory cgroup (v1 or v2), in
//! bytes: what vxproc's `/proc/meminfo` and `/proc/swaps` and the
//! intercepted `sysinfo(2)` show, with lxcfs's rules for the totals.

use std::collections::BTreeMap;

use crate::cgroup::{CgroupFs, CgroupSet};

/// A context's memory figures, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// Its hard limit (`None`: none).
    pub limit: Option<u64>,
    /// Charged now.
    pub usage: u64,
    /// `memory.stat` under the kernel's meminfo names: `Cached`,
    /// `AnonPages`, `Shmem`, `Mapped`, `Active(anon)`, `Inactive(anon)`,
    /// `Active(file)`, `Inactive(file)`, `Unevictable`, `Dirty`,
    /// `Writeback`, `SReclaimable`, `SUnreclaim`.
    pub stat: BTreeMap<&'static str, u64>,
    /// Its swap.
    pub swap: Swap,
}

/// What a context's swap accounting says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Swap {
    /// Nothing (swap accounting is off): the guest is shown none.
    #[default]
    Unknown,
    /// cgroup v1: memory plus swap (`memory.memsw.*`).
    MemSw {
        /// `memory.memsw.limit_in_bytes` (`None`: unlimited).
        limit: Option<u64>,
        /// `memory.memsw.usage_in_bytes`.
        usage: u64,
    },
    /// cgroup v2: swap alone (`memory.swap.*`).
    Own {
        /// `memory.swap.max`.
        max: Option<u64>,
        /// `memory.swap.current`.
        current: u64,
    },
}

impl Memory {
    /// MemTotal: the limit, never above the host's memory.
    pub fn total(&self, host_total: u64) -> u64 {
        self.limit.map_or(host_total, |l| l.min(host_total))
    }

    /// (SwapTotal, SwapUsed), capped at the host's swap (lxcfs's rules:
    /// v1 swap is what memsw allows beyond memory).
    pub fn swap(&self, host_total: u64, host_swap: u64) -> (u64, u64) {
        match self.swap {
            Swap::Unknown => (0, 0),
            Swap::MemSw { limit, usage } => {
                let total = limit
                    .map_or(host_swap, |l| l.saturating_sub(self.total(host_total)))
                    .min(host_swap);
                (total, usage.saturating_sub(self.usage).min(total))
            }
            Swap::Own { max, current } => {
                let total = max.unwrap_or(host_swap).min(host_swap);
                (total, current.min(total))
            }
        }
    }
}

fn read(cg: &CgroupSet, fs: &dyn CgroupFs, name: &str) -> Option<String> {
    cg.read_raw(fs, name)
}

/// A cgroup file's number (`None`: unreadable, or v1's "unlimited").
pub fn number(text: Option<String>) -> Option<u64> {
    text?.trim().parse::<u64>().ok().filter(|&n| n < (1 << 62))
}

/// A cgroup `.stat` file's `key value` lines.
pub fn pairs(text: &str) -> BTreeMap<&str, u64> {
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
pub fn of(cg: &CgroupSet, fs: &dyn CgroupFs) -> Memory {
    let v2 = read(cg, fs, "memory.max").is_some();
    let stat_text = read(cg, fs, "memory.stat").unwrap_or_default();
    let stat = pairs(&stat_text);
    let mut m = Memory {
        limit: cg.memory_limits(fs).0,
        ..Memory::default()
    };
    for (line, v1_key, v2_key) in MEMORY_STAT {
        let key = if v2 { v2_key } else { v1_key };
        if let Some(&v) = stat.get(key) {
            m.stat.insert(line, v);
        }
    }
    if v2 {
        m.usage = number(read(cg, fs, "memory.current")).unwrap_or(0);
        if let Some(current) = number(read(cg, fs, "memory.swap.current")) {
            m.swap = Swap::Own {
                max: number(read(cg, fs, "memory.swap.max")),
                current,
            };
        }
    } else {
        m.usage = number(read(cg, fs, "memory.usage_in_bytes")).unwrap_or(0);
        if let Some(usage) = number(read(cg, fs, "memory.memsw.usage_in_bytes")) {
            m.swap = Swap::MemSw {
                limit: number(read(cg, fs, "memory.memsw.limit_in_bytes")),
                usage,
            };
        }
    }
    m
}

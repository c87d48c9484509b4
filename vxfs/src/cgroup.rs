//! `-o xid=cgroup`: a request's context is its calling thread's cgroup.
//!
//! A thread in a cgroup named `vx-<XID>` (in any hierarchy: cgroup v1, v2
//! or both, as on hybrid hosts) is context XID; any other thread is the
//! host (0). The component nearest the hierarchy's root wins, so a guest
//! that may create cgroups below its own cannot name itself another
//! context; lines of different hierarchies that disagree make the thread
//! [`Xid::UNMAPPED`] (fail closed), as does a thread that is gone or a
//! request without a thread.
//!
//! # Cache
//!
//! Reading `/proc/TID/cgroup` costs microseconds, so contexts are cached by
//! thread id. The cache must never outlive the truth: a thread moved to
//! another cgroup (the host entering a guest), or a thread that exits and
//! whose id comes back as another thread, must be seen at once. The kernel
//! reports both through tracepoints (`cgroup:cgroup_attach_task`,
//! `cgroup:cgroup_transfer_tasks`, `sched:sched_process_exit`), sampled
//! into per-CPU perf ring buffers that the daemon checks before every
//! cache hit (two memory loads per CPU when nothing happened). A move
//! anywhere empties the cache; an exit drops that thread; a lost record
//! empties it. Where tracepoints cannot be opened (no tracefs, perf
//! blocked), nothing is cached and every request reads /proc.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use crate::sys::{PerfRecord, PerfRing};
use crate::tagging::Xid;

/// Threads whose context is cached at most.
const CAPACITY: usize = 64 * 1024;
/// Pages per CPU ring of the exit tracepoint (a busy host exits often).
const EXIT_PAGES: usize = 16;
/// Pages per CPU ring of the move tracepoints.
const MOVE_PAGES: usize = 1;

/// The context named by a `/proc/TID/cgroup` text.
pub fn parse_xid(text: &str) -> Xid {
    let mut found: Option<Xid> = None;
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let Some(xid) = path.split('/').find_map(component_xid) else {
            continue;
        };
        match found {
            Some(other) if other != xid => return Xid::UNMAPPED,
            _ => found = Some(xid),
        }
    }
    found.unwrap_or(Xid::HOST)
}

/// The xid of a cgroup path component `vx-<XID>` (canonical decimal).
fn component_xid(name: &str) -> Option<Xid> {
    let digits = name.strip_prefix("vx-")?;
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse::<Xid>().ok()
}

/// The context of thread `tid` read from /proc now.
pub fn read_xid(tid: u32) -> Xid {
    match std::fs::read_to_string(format!("/proc/{tid}/cgroup")) {
        Ok(text) => parse_xid(&text),
        Err(_) => Xid::UNMAPPED,
    }
}

#[derive(Debug, Default)]
struct Cache {
    by_tid: HashMap<u32, Xid>,
    /// Bumped by every invalidation, so that a context read from /proc
    /// before it is not cached after it.
    generation: u64,
}

/// The tracepoint rings that invalidate the cache.
#[derive(Debug)]
struct Rings {
    moves: Vec<PerfRing>,
    exits: Vec<PerfRing>,
}

impl Rings {
    fn pending(&self) -> bool {
        self.moves.iter().chain(&self.exits).any(PerfRing::pending)
    }
}

/// Cached contexts of threads, exact under moves and exits.
#[derive(Debug)]
pub struct CgroupContexts {
    cache: RwLock<Cache>,
    /// `None`: no tracepoints, no cache.
    rings: Option<RwLock<Rings>>,
    /// Serialises draining.
    draining: Mutex<()>,
}

impl CgroupContexts {
    /// Opens the tracepoints; without them, every lookup reads /proc (the
    /// reason is logged once).
    pub fn new() -> CgroupContexts {
        let rings = match open_rings() {
            Ok(rings) => Some(RwLock::new(rings)),
            Err(e) => {
                log::warn!(
                    "xid=cgroup: cannot follow cgroup moves and exits through tracepoints ({e}); \
                     every request reads /proc/PID/cgroup"
                );
                None
            }
        };
        CgroupContexts {
            cache: RwLock::default(),
            rings,
            draining: Mutex::new(()),
        }
    }

    /// Whether contexts are cached (tracepoints are followed).
    pub fn caching(&self) -> bool {
        self.rings.is_some()
    }

    /// The context of thread `tid` (0: no thread, unmapped).
    pub fn xid_of(&self, tid: u32) -> Xid {
        if tid == 0 {
            return Xid::UNMAPPED;
        }
        let Some(rings) = &self.rings else {
            return read_xid(tid);
        };
        if rings.read().unwrap_or_else(|e| e.into_inner()).pending() {
            self.drain(rings);
        }
        let generation = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if let Some(&xid) = cache.by_tid.get(&tid) {
                return xid;
            }
            cache.generation
        };
        let xid = read_xid(tid);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.generation == generation {
            if cache.by_tid.len() >= CAPACITY {
                cache.by_tid.clear();
            }
            cache.by_tid.insert(tid, xid);
        }
        xid
    }

    fn drain(&self, rings: &RwLock<Rings>) {
        let _one = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        let mut rings = rings.write().unwrap_or_else(|e| e.into_inner());
        let mut flush = false;
        for ring in &mut rings.moves {
            ring.drain(|_| flush = true);
        }
        let mut exited = Vec::new();
        for ring in &mut rings.exits {
            ring.drain(|record| match record {
                PerfRecord::Sample { tid, .. } => exited.push(tid),
                PerfRecord::Lost => flush = true,
            });
        }
        drop(rings);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.generation += 1;
        if flush {
            cache.by_tid.clear();
        } else {
            for tid in exited {
                cache.by_tid.remove(&tid);
            }
        }
    }
}

impl Default for CgroupContexts {
    fn default() -> Self {
        Self::new()
    }
}

/// One ring per online CPU for each tracepoint.
fn open_rings() -> std::io::Result<Rings> {
    let ids = tracepoint_ids(&[
        ("cgroup", "cgroup_attach_task"),
        ("cgroup", "cgroup_transfer_tasks"),
        ("sched", "sched_process_exit"),
    ])?;
    let cpus = online_cpus()?;
    let open = |id: u64, pages: usize| -> std::io::Result<Vec<PerfRing>> {
        cpus.iter()
            .map(|&cpu| PerfRing::open(id, cpu, pages).map_err(std::io::Error::from))
            .collect()
    };
    let mut moves = open(ids[0], MOVE_PAGES)?;
    moves.extend(open(ids[1], MOVE_PAGES)?);
    Ok(Rings {
        moves,
        exits: open(ids[2], EXIT_PAGES)?,
    })
}

/// The online CPUs, from `/sys/devices/system/cpu/online` ("0-3,5").
fn online_cpus() -> std::io::Result<Vec<i32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(text.trim())
        .ok_or_else(|| std::io::Error::other(format!("cannot parse the online CPU list {text:?}")))
}

fn parse_cpu_list(text: &str) -> Option<Vec<i32>> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (i32, i32) = (a.parse().ok()?, b.parse().ok()?);
        if a > b {
            return None;
        }
        cpus.extend(a..=b);
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// The perf ids of tracepoints `(system, name)`, from tracefs where it is
/// mounted, else from a tracefs mounted for a moment in a mount namespace
/// of a helper thread's own (nothing changes on the host).
fn tracepoint_ids(points: &[(&str, &str)]) -> std::io::Result<Vec<u64>> {
    let read = |root: &str| -> std::io::Result<Vec<u64>> {
        points
            .iter()
            .map(|(system, name)| {
                let path = format!("{root}/events/{system}/{name}/id");
                let text = std::fs::read_to_string(&path)?;
                text.trim()
                    .parse()
                    .map_err(|_| std::io::Error::other(format!("{path}: not a number")))
            })
            .collect()
    };
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if let Ok(ids) = read(root) {
            return Ok(ids);
        }
    }
    let points: Vec<(String, String)> = points
        .iter()
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .collect();
    std::thread::spawn(move || -> std::io::Result<Vec<u64>> {
        use rustix::mount::{MountFlags, MountPropagationFlags};
        crate::sys::unshare_thread_mount_ns()?;
        rustix::mount::mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )?;
        let root = "/sys/kernel/tracing";
        rustix::mount::mount("tracefs", root, "tracefs", MountFlags::empty(), None)?;
        let refs: Vec<(&str, &str)> = points
            .iter()
            .map(|(s, n)| (s.as_str(), n.as_str()))
            .collect();
        let ids = refs
            .iter()
            .map(|(system, name)| {
                let path = format!("{root}/events/{system}/{name}/id");
                std::fs::read_to_string(&path)?
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| std::io::Error::other(format!("{path}: not a number")))
            })
            .collect();
        let _ = rustix::mount::unmount(root, rustix::mount::UnmountFlags::DETACH);
        ids
    })
    .join()
    .map_err(|_| std::io::Error::other("tracefs helper thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_files() {
        // This machine's hybrid layout, a host process.
        let host = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/4e82\n1:cpu:/\n0::/\n";
        assert_eq!(parse_xid(host), Xid::HOST);
        // A guest: vx-42 in v2 and in v1 controllers.
        let guest = "8:pids:/vxfs/vx-42\n4:memory:/process_api/4e82/vxfs/vx-42\n0::/vxfs/vx-42\n";
        assert_eq!(parse_xid(guest), Xid(42));
        // Pure v2, with sub-cgroups the guest made itself: the outermost wins.
        assert_eq!(parse_xid("0::/system.slice/vxfs/vx-7/vx-0/vx-9\n"), Xid(7));
        // One hierarchy is enough; disagreeing ones fail closed.
        assert_eq!(parse_xid("4:memory:/vx-5\n0::/\n"), Xid(5));
        assert_eq!(parse_xid("4:memory:/vx-5\n0::/vx-6\n"), Xid::UNMAPPED);
        // Names that only look like contexts.
        for not in ["vx-", "vx-007", "vx-4x", "vx-4294967295", "xvx-4", "vx--1"] {
            assert_eq!(parse_xid(&format!("0::/{not}\n")), Xid::HOST, "{not}");
        }
        assert_eq!(parse_xid(""), Xid::HOST);
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4"), Some(vec![0, 2, 3, 4]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }

    #[test]
    fn a_thread_is_read_then_cached_and_a_move_is_seen_at_once() {
        let contexts = CgroupContexts::new();
        assert!(contexts.caching(), "tracepoints must work on this machine");
        let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        assert_eq!(contexts.xid_of(me), read_xid(me));
        assert_eq!(contexts.xid_of(0), Xid::UNMAPPED);
        assert_eq!(
            contexts.xid_of(u32::MAX - 5),
            Xid::UNMAPPED,
            "no such thread"
        );
    }
}

//! The load-average sampler: every [`LOAD_FREQ`] it counts each running
//! context's running and uninterruptible tasks and steps its averages, as
//! the kernel does for the whole host. A context's averages start at zero
//! when vxproc first sees it and are dropped when it stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vxfs_kernel::Xid;
use vxfs_kernel::registry::Registry;

use crate::figures::{LOAD_FREQ, Load};

/// Every context's load averages, shared with the tree.
#[derive(Debug, Clone, Default)]
pub struct Loads(Arc<Mutex<HashMap<Xid, Load>>>);

impl Loads {
    /// Context `xid`'s averages (zero before its first sample).
    pub fn of(&self, xid: Xid) -> Load {
        self.lock().get(&xid).copied().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Xid, Load>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One sample of every running context of `registry`.
    pub fn sample(&self, registry: &Registry) {
        let states = registry.list();
        let counts: Vec<(Xid, u64)> = states
            .iter()
            .map(|s| {
                let t = vxfs_kernel::tasks::tasks(&s.cgroups);
                (s.xid, t.running + t.blocked)
            })
            .collect();
        let mut loads = self.lock();
        loads.retain(|x, _| counts.iter().any(|(c, _)| c == x));
        for (xid, active) in counts {
            loads.entry(xid).or_default().sample(active);
        }
    }

    /// Samples forever on a thread of its own.
    pub fn spawn(&self, registry: Registry) -> std::io::Result<()> {
        let loads = self.clone();
        std::thread::Builder::new()
            .name("vxproc-load".into())
            .spawn(move || {
                let mut next = std::time::Instant::now();
                loop {
                    loads.sample(&registry);
                    next += LOAD_FREQ;
                    let now = std::time::Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
            .map(drop)
    }
}

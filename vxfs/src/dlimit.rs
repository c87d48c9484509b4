//! Per-context disk limits (docs/VSERVER.md §2): usage counters and limits
//! per xid, kept in memory on the request path.
//!
//! # Accounting rules
//!
//! * Space is the backing inode's allocation (`st_blocks * 512`), not its
//!   size; inodes count once however many links they have (§2.4).
//! * Usage is charged to the *inode's* tag (§2.3), so the host writing into
//!   a guest file uses the guest's limit.
//! * Exhaustion is `ENOSPC` (§9 open question 1: the documented "simulated
//!   free disk space" model; `EDQUOT` would make `df` and the error disagree).
//! * The reserved percentage only lowers what `df` shows as available to
//!   the guest (§2.5, §9 question 2); it is not enforced on allocation.
//!
//! # Concurrency
//!
//! Allocations reserve their worst case with a compare-and-swap before the
//! backing syscall and settle to the measured allocation after it, so
//! concurrent writers from any number of contexts never push usage past a
//! limit by more than the backing filesystem's own metadata growth (at most
//! one block per allocating request, see `BLOCK_SLACK` in `fs.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustix::io::Errno;

use crate::tagging::Xid;

/// Largest space limit in KiB (its byte count must fit in a `u64`).
pub const MAX_SPACE_KIB: u64 = u64::MAX / 1024;
/// Largest inode limit (the index stores SQLite integers).
pub const MAX_INODES: u64 = i64::MAX as u64;

/// The limits of one context. `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    /// Space in bytes.
    pub space: Option<u64>,
    /// Number of inodes.
    pub inodes: Option<u64>,
    /// Percent of `space` shown as reserved (not available) by `df`.
    pub reserved: u8,
}

/// Usage figures of one context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Allocated bytes.
    pub space: u64,
    /// Inodes.
    pub inodes: u64,
}

/// Counters and limits of one context.
#[derive(Debug, Default)]
pub struct Account {
    limit: RwLock<Limit>,
    /// Whether a limit was set (vdlimit's "exists"); usage is counted for
    /// every context either way.
    configured: AtomicBool,
    space: AtomicU64,
    inodes: AtomicU64,
}

/// Adds to `counter` unless that would pass `max`; returns whether it did.
fn add_within(counter: &AtomicU64, n: u64, max: Option<u64>) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            let new = used.checked_add(n)?;
            match max {
                Some(max) if new > max => None,
                _ => Some(new),
            }
        })
        .is_ok()
}

fn sub_saturating(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
        Some(used.saturating_sub(n))
    });
}

impl Account {
    /// The current limit.
    pub fn limit(&self) -> Limit {
        *self.limit.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The current usage.
    pub fn usage(&self) -> Usage {
        Usage {
            space: self.space.load(Ordering::Acquire),
            inodes: self.inodes.load(Ordering::Acquire),
        }
    }

    /// Takes one inode, or `ENOSPC` at the limit (§2.3: fail iff
    /// `used >= total`).
    pub fn alloc_inode(&self) -> Result<(), Errno> {
        if add_within(&self.inodes, 1, self.limit().inodes) {
            Ok(())
        } else {
            Err(Errno::NOSPC)
        }
    }

    /// Takes one inode regardless of the limit (the host moving an inode
    /// into this context).
    pub fn force_inode(&self) {
        self.inodes.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives one inode back (clamped at 0).
    pub fn free_inode(&self) {
        sub_saturating(&self.inodes, 1);
    }

    /// Reserves up to `want` bytes: all of it if it fits, else whatever is
    /// left under the limit (possibly 0). Returns the bytes reserved.
    pub fn reserve_space(&self, want: u64) -> u64 {
        let limit = self.limit().space;
        let mut granted = 0;
        let _ = self
            .space
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                granted = match limit {
                    Some(max) => want.min(max.saturating_sub(used)),
                    None => want,
                };
                Some(used.saturating_add(granted))
            });
        granted
    }

    /// Charges `n` bytes without a limit check (allocation that already
    /// happened, such as a new directory's first block).
    pub fn charge_space(&self, n: u64) {
        self.space.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives `n` bytes back (clamped at 0).
    pub fn free_space(&self, n: u64) {
        sub_saturating(&self.space, n);
    }

    /// Sets the limit, or with `None` removes it (unlimited, not listed).
    pub fn set_limit(&self, limit: Option<Limit>) {
        *self.limit.write().unwrap_or_else(|e| e.into_inner()) = limit.unwrap_or_default();
        self.configured.store(limit.is_some(), Ordering::Release);
    }

    /// The limit, if one was set.
    pub fn configured(&self) -> Option<Limit> {
        self.configured
            .load(Ordering::Acquire)
            .then(|| self.limit())
    }

    /// Replaces the usage (recount results, the index's saved figures).
    pub fn set_usage(&self, usage: Usage) {
        self.space.store(usage.space, Ordering::Release);
        self.inodes.store(usage.inodes, Ordering::Release);
    }
}

/// All contexts' accounts on one mount.
#[derive(Debug, Default)]
pub struct DiskLimits {
    accounts: RwLock<HashMap<Xid, Arc<Account>>>,
}

impl DiskLimits {
    /// The account of `xid`, created (unlimited, empty) on first use.
    pub fn account(&self, xid: Xid) -> Arc<Account> {
        if let Some(a) = self.read().get(&xid) {
            return Arc::clone(a);
        }
        let mut map = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(xid).or_default())
    }

    /// Every account, sorted by xid.
    pub fn all(&self) -> Vec<(Xid, Limit, Usage)> {
        let mut all: Vec<_> = self
            .read()
            .iter()
            .map(|(x, a)| (*x, a.limit(), a.usage()))
            .collect();
        all.sort_by_key(|(x, _, _)| *x);
        all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Xid, Arc<Account>>> {
        self.accounts.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `statfs` shows a context with limits (§2.5): the real figures,
/// clamped down, never raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatfsView {
    /// Total blocks of `bsize`.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
}

impl StatfsView {
    /// Clamps the backing filesystem's figures (`bsize` bytes per block) to
    /// a context's limit and usage.
    pub fn clamp(mut self, bsize: u64, limit: Limit, usage: Usage) -> StatfsView {
        if let Some(total) = limit.inodes {
            self.files = self.files.min(total);
            self.ffree = self.ffree.min(total.saturating_sub(usage.inodes));
        }
        if let (Some(total), true) = (limit.space, bsize > 0) {
            let free = total.saturating_sub(usage.space);
            let usable = total / 100 * u64::from(100 - limit.reserved.min(100));
            self.blocks = self.blocks.min(total / bsize);
            self.bfree = self.bfree.min(free / bsize);
            self.bavail = self.bavail.min(usable.saturating_sub(usage.space) / bsize);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(space: u64, inodes: u64) -> Account {
        let a = Account::default();
        a.set_limit(Some(Limit {
            space: Some(space),
            inodes: Some(inodes),
            reserved: 0,
        }));
        a
    }

    #[test]
    fn inode_limit_is_exact() {
        let a = limited(0, 2);
        assert_eq!(a.alloc_inode(), Ok(()));
        assert_eq!(a.alloc_inode(), Ok(()));
        assert_eq!(a.alloc_inode(), Err(Errno::NOSPC));
        a.free_inode();
        assert_eq!(a.alloc_inode(), Ok(()));
        a.set_usage(Usage::default());
        a.free_inode();
        assert_eq!(a.usage().inodes, 0, "freeing clamps at zero");
    }

    #[test]
    fn space_reservations_never_pass_the_limit() {
        let a = limited(10_000, 0);
        assert_eq!(a.reserve_space(4096), 4096);
        assert_eq!(a.reserve_space(8192), 10_000 - 4096, "partial grant");
        assert_eq!(a.reserve_space(1), 0);
        a.free_space(5000);
        assert_eq!(a.usage().space, 5000);
        let unlimited = Account::default();
        assert_eq!(unlimited.reserve_space(u64::MAX / 2), u64::MAX / 2);
    }

    #[test]
    fn concurrent_reservations_stay_within_the_limit() {
        let a = Arc::new(limited(1 << 20, 0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let a = Arc::clone(&a);
                std::thread::spawn(move || (0..1000).map(|_| a.reserve_space(777)).sum::<u64>())
            })
            .collect();
        let granted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 1 << 20);
        assert_eq!(a.usage().space, 1 << 20);
    }

    #[test]
    fn statfs_view_clamps_down_only() {
        let real = StatfsView {
            blocks: 1000,
            bfree: 500,
            bavail: 400,
            files: 100,
            ffree: 50,
        };
        let limit = Limit {
            space: Some(100 * 4096),
            inodes: Some(10),
            reserved: 10,
        };
        let usage = Usage {
            space: 40 * 4096,
            inodes: 4,
        };
        let v = real.clamp(4096, limit, usage);
        assert_eq!((v.blocks, v.bfree, v.bavail), (100, 60, 50));
        assert_eq!((v.files, v.ffree), (10, 6));
        // A limit above the real figures changes nothing.
        let huge = Limit {
            space: Some(u64::MAX / 2),
            inodes: Some(u64::MAX / 2),
            reserved: 0,
        };
        assert_eq!(real.clamp(4096, huge, Usage::default()), real);
        // Over the limit: nothing free, no underflow.
        let over = Usage {
            space: 200 * 4096,
            inodes: 20,
        };
        let v = real.clamp(4096, limit, over);
        assert_eq!((v.bfree, v.bavail, v.ffree), (0, 0, 0));
    }
}

//! One view: a FUSE connection (a mount) served by the daemon of a tree.
//!
//! A daemon serves one tagged tree (one inode table, one set of counters,
//! one index) through any number of mounts: the tree itself, or any
//! directory of it as a guest's root, each with its own context mode. What
//! belongs to one connection lives here, not in the shared [`crate::fs`]
//! core: how its node ids map to the core's (its root is node 1), the
//! kernel references it holds (dropped when it ends, as the kernel sends no
//! `FORGET`s at unmount), and its passthrough registrations (the kernel
//! keeps one backing file per inode *per connection*).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::context::Resolver;
use crate::handle::Backing;
use crate::inode::ROOT_ID;
use crate::tagging::IdShift;

/// What one mount looks like.
#[derive(Debug)]
pub struct View {
    /// The core's node id of the view's root.
    pub root: u64,
    /// Decides its callers' contexts.
    pub resolver: Arc<Resolver>,
    /// Mounted read-only: nobody writes through it.
    pub read_only: bool,
    /// How long the kernel may cache inodes of the watched filesystem.
    pub watched: Ttls,
    /// How long the kernel may cache other inodes: all of them when
    /// SOURCE is not watched, those of filesystems mounted below it when it
    /// is.
    pub unwatched: Ttls,
}

/// How long the kernel may cache an inode's attributes and its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// Attributes.
    pub attr: Duration,
    /// Names (and the absence of names).
    pub entry: Duration,
}

impl View {
    /// The core's node id for node id `ino` of this connection.
    pub fn inward(&self, ino: u64) -> u64 {
        if ino == ROOT_ID { self.root } else { ino }
    }

    /// This connection's node id for the core's `id`.
    pub fn outward(&self, id: u64) -> u64 {
        if id == self.root { ROOT_ID } else { id }
    }

    /// The lifetimes for an inode on a watched filesystem or not.
    pub fn ttls(&self, watched: bool) -> Ttls {
        if watched {
            self.watched
        } else {
            self.unwatched
        }
    }

    /// How this view shows host-owned ids ([`IdShift`]), if it does.
    pub fn id_shift(&self) -> Option<IdShift> {
        self.resolver.mode().id_shift()
    }
}

/// The kernel references one connection holds, by core node id.
#[derive(Debug, Default)]
pub struct Ledger {
    shards: [Mutex<HashMap<u64, u64>>; 16],
}

impl Ledger {
    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.shards[(id as usize) % 16]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The kernel took a reference to `id`.
    pub fn took(&self, id: u64) {
        *self.shard(id).entry(id).or_default() += 1;
    }

    /// The kernel dropped `n` references to `id`; how many it really held
    /// of them (a confused kernel may not drop more than it took).
    pub fn dropped(&self, id: u64, n: u64) -> u64 {
        let mut shard = self.shard(id);
        let Some(held) = shard.get_mut(&id) else {
            return 0;
        };
        let n = n.min(*held);
        *held -= n;
        if *held == 0 {
            shard.remove(&id);
        }
        n
    }

    /// Whether the kernel holds a reference to `id`.
    pub fn holds(&self, id: u64) -> bool {
        self.shard(id).contains_key(&id)
    }

    /// Every reference still held, emptying the ledger.
    pub fn drain(&self) -> Vec<(u64, u64)> {
        self.shards
            .iter()
            .flat_map(|s| std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner())))
            .collect()
    }
}

/// What the daemon may tell one connection's kernel about its caches: that
/// an inode's attributes or data, or a name in a directory, changed behind
/// its back. Only inodes the kernel holds are named ([`Kernel::knows`]): a
/// kernel that does not hold an inode caches nothing of it or under it.
#[derive(Debug)]
pub struct Kernel {
    /// The connection.
    pub conn: u64,
    /// The core's node id of the view's root.
    root: u64,
    /// The kernel's references.
    ledger: Arc<Ledger>,
    /// Set once the FUSE handshake is done.
    notifier: std::sync::OnceLock<fuser::Notifier>,
}

/// A cache entry of one kernel to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// An inode's attributes (by core node id).
    Attrs(u64),
    /// An inode's attributes and cached data (a file's pages, a
    /// directory's listing).
    Data(u64),
    /// A name in a directory (by the directory's core node id), negative
    /// entries included.
    Entry(u64, std::ffi::OsString),
}

impl Kernel {
    /// Connection `conn`, whose root is the core's `root`, holding the
    /// references of `ledger`.
    pub fn new(conn: u64, root: u64, ledger: Arc<Ledger>) -> Kernel {
        Kernel {
            conn,
            root,
            ledger,
            notifier: std::sync::OnceLock::new(),
        }
    }

    /// The handshake is done: notifications can go out.
    pub fn connect(&self, notifier: fuser::Notifier) {
        let _ = self.notifier.set(notifier);
    }

    /// Whether the kernel holds the core's inode `id` (its root always).
    pub fn knows(&self, id: u64) -> bool {
        id == self.root || self.ledger.holds(id)
    }

    /// Drops `stale` from the kernel's caches. The kernel answers `ENOENT`
    /// for what it no longer has, which is no failure.
    pub fn drop_stale(&self, stale: &Stale) {
        let Some(n) = self.notifier.get() else {
            return;
        };
        let outward = |id: u64| fuser::INodeNo(if id == self.root { ROOT_ID } else { id });
        let sent = match stale {
            // A negative offset: attributes only, no page cache.
            Stale::Attrs(id) => n.inval_inode(outward(*id), -1, 0),
            Stale::Data(id) => n.inval_inode(outward(*id), 0, 0),
            Stale::Entry(dir, name) => n.inval_entry(outward(*dir), name),
        };
        match sent {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => log::debug!("connection {}: dropping {stale:?}: {e}", self.conn),
        }
    }
}

/// One inode's data path on this connection.
#[derive(Debug, Default)]
pub struct IoMode {
    /// The passthrough registration shared by its passthrough opens.
    pub backing: Weak<Backing>,
    /// Opens served through the daemon's page-cache mode; while any exist
    /// the kernel refuses passthrough opens of the inode.
    pub cached_opens: usize,
}

/// Data paths of the inodes open on this connection.
#[derive(Debug, Default)]
pub struct IoModes {
    by_id: Mutex<HashMap<u64, IoMode>>,
}

impl IoModes {
    /// Runs `f` on inode `id`'s data path (created empty), dropping it
    /// again once nothing uses it.
    pub fn with<T>(&self, id: u64, f: impl FnOnce(&mut IoMode) -> T) -> T {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let mode = map.entry(id).or_default();
        let out = f(mode);
        if mode.cached_opens == 0 && mode.backing.strong_count() == 0 {
            map.remove(&id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_counts_per_id_and_never_below_zero() {
        let l = Ledger::default();
        l.took(5);
        l.took(5);
        l.took(21);
        assert_eq!(l.dropped(5, 1), 1);
        assert_eq!(l.dropped(5, 7), 1, "only what it held");
        assert_eq!(l.dropped(5, 1), 0);
        assert_eq!(l.drain(), vec![(21, 1)]);
        assert!(l.drain().is_empty());
    }
}

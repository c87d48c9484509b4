//! Open file and directory handles.
//!
//! A handle owns a real (non-`O_PATH`) descriptor of the backing inode,
//! opened on `open`/`create`/`opendir` and closed on `release`. Handle ids
//! come from a counter and are never reused within a mount.
//!
//! # Descriptor shares
//!
//! Handles take descriptors from the daemon's limit, which every context
//! shares, so no guest may take them all: open handles are bounded by a
//! budget (what the inode table and the daemon itself leave of
//! `RLIMIT_NOFILE`), of which guests together may hold seven eighths, and
//! a guest context at most half of what is left of that besides its own
//! (at least [`MIN_SHARE`]). A guest that tries for more gets `ENFILE`;
//! one greedy guest leaves half for the others, and however many there
//! are, the host always finds an eighth left. The host context is bounded
//! by the budget only.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use rustix::fs::OFlags;

use crate::error::{Error, Result};
use crate::inode::Inode;
use crate::tagging::Xid;

/// Handles a guest context may always hold, whatever the others hold.
pub const MIN_SHARE: u64 = 64;

/// One open file or directory.
#[derive(Debug)]
pub struct Handle {
    /// The inode it was opened from.
    pub inode: Arc<Inode>,
    /// The open backing descriptor.
    pub file: File,
    /// The descriptor has `O_DIRECT`: daemon-side I/O needs aligned buffers.
    pub direct: bool,
    /// Counted in the inode's `cached_opens` (page-cache mode).
    pub cached: std::sync::atomic::AtomicBool,
    /// Serialises seek + getdents on directory handles.
    pub dir_cursor: Mutex<()>,
    /// The kernel passthrough registration, when file data is passed through;
    /// shared by every passthrough handle of the inode and unregistered when
    /// the last of them is released.
    pub backing: OnceLock<Arc<Backing>>,
    /// The context that opened it (whose share it counts in).
    pub owner: Xid,
    /// Opened with write access: counted in the inode's `writers`.
    writer: bool,
}

/// A backing file registered with the kernel for passthrough.
///
/// The kernel allows one backing file per FUSE inode at a time (a second,
/// different one makes the open fail), so all concurrent passthrough opens
/// of an inode share the first one's registration. It carries that open's
/// access mode; an open needing more access is served by the daemon instead.
#[derive(Debug)]
pub struct Backing {
    /// The registration; unregistered on drop.
    pub id: fuser::BackingId,
    /// `O_RDONLY`, `O_WRONLY` or `O_RDWR` of the registered file.
    pub access: OFlags,
}

impl Backing {
    /// Whether I/O for an open with `access` may go through this file.
    pub fn covers(&self, access: OFlags) -> bool {
        self.access == OFlags::RDWR || self.access == access
    }
}

impl Handle {
    /// A handle for `file`, opened by context `owner` from `inode` with
    /// open `flags`.
    pub fn new(inode: Arc<Inode>, file: File, flags: i32, owner: Xid) -> Handle {
        let writer = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writer {
            inode.writers.fetch_add(1, Ordering::SeqCst);
        }
        Handle {
            inode,
            file,
            direct: flags & libc::O_DIRECT != 0,
            cached: std::sync::atomic::AtomicBool::new(false),
            dir_cursor: Mutex::new(()),
            backing: OnceLock::new(),
            owner,
            writer,
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.writer {
            self.inode.writers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// How many handles each context holds.
#[derive(Debug, Default)]
struct Shares {
    total: u64,
    by_xid: HashMap<Xid, u64>,
}

/// All open handles of the mount.
#[derive(Debug)]
pub struct HandleTable {
    map: RwLock<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
    /// Open handles at most.
    budget: u64,
    shares: Mutex<Shares>,
}

/// Whether a context holding `mine` of `total` open handles may open one
/// more within `budget` (see the module's "Descriptor shares").
pub fn may_open(owner: Xid, mine: u64, total: u64, budget: u64) -> bool {
    if owner == Xid::HOST {
        return total < budget;
    }
    let guests = budget - budget / 8;
    total < guests && mine < MIN_SHARE.max((guests - total + mine) / 2)
}

impl HandleTable {
    /// An empty table for at most `budget` open handles.
    pub fn new(budget: u64) -> HandleTable {
        HandleTable {
            map: RwLock::default(),
            next: AtomicU64::new(0),
            budget,
            shares: Mutex::default(),
        }
    }

    /// Registers `handle` and returns its id, or `ENFILE` when its owner's
    /// share (or the budget) is used up.
    pub fn insert(&self, handle: Handle) -> Result<(u64, Arc<Handle>)> {
        {
            let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
            let mine = shares.by_xid.get(&handle.owner).copied().unwrap_or(0);
            if !may_open(handle.owner, mine, shares.total, self.budget) {
                return Err(Error::Os(rustix::io::Errno::NFILE));
            }
            shares.total += 1;
            *shares.by_xid.entry(handle.owner).or_default() += 1;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(handle);
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&handle));
        Ok((id, handle))
    }

    /// The handle with id `fh`.
    pub fn get(&self, fh: u64) -> Result<Arc<Handle>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(Error::UnknownHandle(fh))
    }

    /// Forgets handle `fh`; its descriptor closes when the last user is done.
    pub fn remove(&self, fh: u64) -> Result<()> {
        let handle = self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)
            .ok_or(Error::UnknownHandle(fh))?;
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        shares.total = shares.total.saturating_sub(1);
        if let Some(n) = shares.by_xid.get_mut(&handle.owner) {
            *n -= 1;
            if *n == 0 {
                shares.by_xid.remove(&handle.owner);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_guest_takes_every_handle() {
        let budget = 1000;
        // One greedy guest stops at half of the guests' 875 ...
        let mut total = 0;
        let mut a = 0;
        while may_open(Xid(5), a, total, budget) {
            a += 1;
            total += 1;
        }
        assert_eq!(a, 437);
        // ... a second at half of the rest, and so on: the host always
        // finds its eighth.
        let mut b = 0;
        while may_open(Xid(6), b, total, budget) {
            b += 1;
            total += 1;
        }
        assert_eq!(b, 219);
        let mut others = 0;
        for x in 7..40 {
            let mut n = 0;
            while may_open(Xid(x), n, total, budget) {
                n += 1;
                total += 1;
            }
            others += n;
        }
        assert!(total <= 875, "{total} of {budget} after {others} more");
        assert!(may_open(Xid::HOST, 0, total, budget));
        assert!(may_open(Xid::HOST, 0, budget - 1, budget));
        assert!(!may_open(Xid::HOST, 0, budget, budget));
        // Every guest gets at least MIN_SHARE while the guests' part lasts.
        assert!(may_open(Xid(99), MIN_SHARE - 1, 874, budget));
        assert!(!may_open(Xid(99), 0, 875, budget));
    }
}

//! Open file and directory handles.
//!
//! A handle owns a real (non-`O_PATH`) descriptor of the backing inode,
//! opened on `open`/`create`/`opendir` and closed on `release`. Handle ids
//! come from a counter and are never reused within a mount.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use rustix::fs::OFlags;

use crate::error::{Error, Result};
use crate::inode::Inode;

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
    /// A handle for `file`, opened from `inode` with open `flags`.
    pub fn new(inode: Arc<Inode>, file: File, flags: i32) -> Handle {
        Handle {
            inode,
            file,
            direct: flags & libc::O_DIRECT != 0,
            cached: std::sync::atomic::AtomicBool::new(false),
            dir_cursor: Mutex::new(()),
            backing: OnceLock::new(),
        }
    }
}

/// All open handles of the mount.
#[derive(Debug, Default)]
pub struct HandleTable {
    map: RwLock<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl HandleTable {
    /// Registers `handle` and returns its id.
    pub fn insert(&self, handle: Handle) -> (u64, Arc<Handle>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(handle);
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&handle));
        (id, handle)
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
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)
            .map(drop)
            .ok_or(Error::UnknownHandle(fh))
    }
}

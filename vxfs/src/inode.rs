//! The inode table: which backing inode each FUSE node id stands for.
//!
//! # Identity
//!
//! A backing inode is identified by `(st_dev, st_ino)` and held open by an
//! `O_PATH | O_NOFOLLOW` file descriptor for as long as the kernel knows its
//! node id. No path is ever stored: every operation works relative to these
//! descriptors, so renames in the backing tree cost nothing and a symlink
//! planted later cannot redirect an operation outside SOURCE.
//!
//! Holding the descriptor also pins the inode number: it cannot be reused
//! while the entry exists, so `(dev, ino)` stays unambiguous.
//!
//! # Node ids
//!
//! fuser reports the node id as `st_ino`, so a backing inode on SOURCE's own
//! device gets its real inode number as node id, which keeps `st_ino` equal to
//! the backing one (tools like `tar`, `du` and `find -samefile` depend on
//! that). Inodes on other devices (filesystems mounted below SOURCE) and the
//! reserved number 1 get synthetic ids from a counter with the top bit set;
//! those never collide with real inode numbers of SOURCE's device.
//!
//! # Lookup counts
//!
//! Each entry counts the kernel's references (one per successful lookup,
//! create, mkdir, ... reply); `forget` lowers it with saturation and drops the
//! entry, closing its descriptor, at zero.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustix::fs::{FileType, Stat};

use crate::error::{Error, Result};

/// The FUSE node id of the mount's root.
pub const ROOT_ID: u64 = 1;

/// First synthetic node id; real inode numbers never have the top bit set.
const SYNTHETIC_BASE: u64 = 1 << 63;

/// The identity of a backing inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackingKey {
    /// `st_dev` of the backing inode.
    pub dev: u64,
    /// `st_ino` of the backing inode.
    pub ino: u64,
}

impl BackingKey {
    /// The key of a stat result.
    pub fn of(st: &Stat) -> BackingKey {
        BackingKey {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// One backing inode known to the kernel.
#[derive(Debug)]
pub struct Inode {
    /// The FUSE node id.
    pub id: u64,
    /// Its backing identity.
    pub key: BackingKey,
    /// The file type, fixed for the inode's life.
    pub kind: FileType,
    /// `O_PATH | O_NOFOLLOW` descriptor of the backing inode.
    fd: OwnedFd,
    /// The kernel's lookup count.
    lookups: AtomicU64,
}

impl Inode {
    /// The `O_PATH` descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[derive(Debug, Default)]
struct Maps {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<BackingKey, u64>,
}

/// All inodes the kernel currently knows.
#[derive(Debug)]
pub struct InodeStore {
    maps: RwLock<Maps>,
    root_dev: u64,
    next_synthetic: AtomicU64,
}

impl InodeStore {
    /// A store holding only the root, whose descriptor and stat are given.
    pub fn new(root_fd: OwnedFd, root_st: &Stat) -> InodeStore {
        let key = BackingKey::of(root_st);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            key,
            kind: FileType::Directory,
            fd: root_fd,
            // The root is never forgotten.
            lookups: AtomicU64::new(u64::MAX / 2),
        });
        let mut maps = Maps::default();
        maps.by_id.insert(ROOT_ID, root);
        maps.by_key.insert(key, ROOT_ID);
        InodeStore {
            maps: RwLock::new(maps),
            root_dev: root_st.st_dev,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
        }
    }

    /// The inode with node id `id`.
    pub fn get(&self, id: u64) -> Result<Arc<Inode>> {
        self.read()
            .by_id
            .get(&id)
            .cloned()
            .ok_or(Error::UnknownInode(id))
    }

    /// The node id the kernel sees as `st_ino` for a backing stat, if known.
    pub fn id_of(&self, key: BackingKey) -> Option<u64> {
        self.read().by_key.get(&key).copied()
    }

    /// The node id to report in a plain readdir entry, which takes no
    /// reference: the known id if the inode is in the table, else its real
    /// inode number (or a stable-looking synthetic one for other devices).
    pub fn dirent_ino(&self, dev_is_root: bool, ino: u64) -> u64 {
        if dev_is_root && ino != ROOT_ID && ino < SYNTHETIC_BASE {
            ino
        } else {
            ino | SYNTHETIC_BASE
        }
    }

    /// Registers one kernel reference to the backing inode open as `fd` with
    /// stat `st`, reusing the existing entry when the inode is already known
    /// (then `fd` is dropped).
    pub fn insert(&self, fd: OwnedFd, st: &Stat) -> Arc<Inode> {
        let key = BackingKey::of(st);
        let mut maps = self.write();
        if let Some(inode) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
            inode.lookups.fetch_add(1, Ordering::Relaxed);
            return Arc::clone(inode);
        }
        let id = if key.dev == self.root_dev && key.ino != ROOT_ID && key.ino < SYNTHETIC_BASE {
            key.ino
        } else {
            self.next_synthetic.fetch_add(1, Ordering::Relaxed)
        };
        let inode = Arc::new(Inode {
            id,
            key,
            kind: FileType::from_raw_mode(st.st_mode),
            fd,
            lookups: AtomicU64::new(1),
        });
        maps.by_id.insert(id, Arc::clone(&inode));
        maps.by_key.insert(key, id);
        inode
    }

    /// Drops `n` kernel references to `id`, removing it at zero.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut maps = self.write();
        let Some(inode) = maps.by_id.get(&id) else {
            return;
        };
        // Saturate: a confused kernel must not wrap the count around.
        let old = inode.lookups.load(Ordering::Relaxed);
        let new = old.saturating_sub(n);
        inode.lookups.store(new, Ordering::Relaxed);
        if new == 0 {
            let key = inode.key;
            maps.by_id.remove(&id);
            maps.by_key.remove(&key);
        }
    }

    /// Number of inodes in the table (root included).
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether only the root is known.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Mode, OFlags};

    fn open_path(path: &std::path::Path) -> (OwnedFd, Stat) {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        let st = rustix::fs::fstat(&fd).unwrap();
        (fd, st)
    }

    fn store(dir: &std::path::Path) -> InodeStore {
        let (fd, st) = open_path(dir);
        InodeStore::new(fd, &st)
    }

    #[test]
    fn same_inode_same_entry_and_counted_lookups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        let store = store(dir.path());
        let (fd_a, st_a) = open_path(&dir.path().join("a"));
        let (fd_b, st_b) = open_path(&dir.path().join("b"));
        let a = store.insert(fd_a, &st_a);
        let b = store.insert(fd_b, &st_b);
        assert!(Arc::ptr_eq(&a, &b), "hard links must share one entry");
        assert_eq!(a.id, st_a.st_ino, "node id is the backing inode number");
        assert_eq!(store.len(), 2);
        store.forget(a.id, 1);
        assert!(store.get(a.id).is_ok(), "one reference is left");
        store.forget(a.id, 5);
        assert_eq!(store.get(a.id).unwrap_err(), Error::UnknownInode(a.id));
        assert!(store.is_empty());
        // Saturating: forgetting an unknown or already-dropped id is harmless.
        store.forget(a.id, u64::MAX);
    }

    #[test]
    fn root_is_never_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store.forget(ROOT_ID, u64::MAX);
        assert_eq!(store.get(ROOT_ID).unwrap().kind, FileType::Directory);
    }

    #[test]
    fn foreign_devices_get_synthetic_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        // /proc is always another filesystem than the temp dir.
        let (fd, st) = open_path(std::path::Path::new("/proc/self"));
        let inode = store.insert(fd, &st);
        assert!(inode.id >= SYNTHETIC_BASE);
        assert_eq!(store.id_of(BackingKey::of(&st)), Some(inode.id));
        assert_eq!(store.dirent_ino(false, 5), 5 | SYNTHETIC_BASE);
        assert_eq!(store.dirent_ino(true, 5), 5);
    }
}

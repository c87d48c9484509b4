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
//! # Descriptor budget
//!
//! The kernel may know far more inodes than the process may hold descriptors
//! (an untar of 20k files into a guest, with `RLIMIT_NOFILE` at 20k). Only up
//! to a budget of inodes keep their `O_PATH` descriptor; past it an inode is
//! kept as a kernel file handle (`name_to_handle_at`) and re-opened for each
//! operation with `open_by_handle_at`, which names the inode, not a path, so
//! the no-symlink guarantee is the same. Each mount below SOURCE keeps one
//! descriptor to open its handles against. A handle-only inode does not pin
//! its inode number, but the kernel's reference keeps the inode in use, and
//! a stale handle fails with `ESTALE` rather than reaching another file.
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
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustix::fs::{FileType, OFlags, Stat};

use crate::error::{Error, Result};
use crate::sys::{self, FileHandle};

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

/// How an inode reaches its backing inode.
#[derive(Debug)]
enum InodeFile {
    /// An open `O_PATH | O_NOFOLLOW` descriptor.
    Fd(OwnedFd),
    /// A kernel file handle, re-opened against its mount's descriptor.
    Handle {
        handle: FileHandle,
        mount: Arc<OwnedFd>,
    },
}

/// A usable `O_PATH` descriptor of an inode: borrowed from the table, or
/// opened from a file handle for the duration of one operation.
#[derive(Debug)]
pub enum InodeFd<'a> {
    /// The inode's own descriptor.
    Borrowed(BorrowedFd<'a>),
    /// Opened for this use, closed on drop.
    Owned(OwnedFd),
}

impl AsFd for InodeFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InodeFd::Borrowed(fd) => fd.as_fd(),
            InodeFd::Owned(fd) => fd.as_fd(),
        }
    }
}

/// A descriptor `open_by_handle_at` accepts for the mount `fd` is on: it
/// refuses `O_PATH` ones, so the inode is re-opened read-only. Only
/// directories and regular files are ever opened.
pub(crate) fn mount_fd(fd: BorrowedFd<'_>) -> std::result::Result<OwnedFd, rustix::io::Errno> {
    use std::os::fd::AsRawFd;
    let kind = FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode);
    // Only a directory: the descriptor is kept for the daemon's life, and
    // a file's would keep a deleted file's blocks allocated that long.
    if kind != FileType::Directory {
        return Err(rustix::io::Errno::NOTSUP);
    }
    rustix::fs::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
}

/// One backing inode known to the kernel.
#[derive(Debug)]
pub struct Inode {
    /// The FUSE node id.
    pub id: u64,
    /// Its generation under that id (above 0 once the backing inode number
    /// was reused, see [`InodeStore::insert`]).
    pub generation: u64,
    /// Its backing identity.
    pub key: BackingKey,
    /// The file type, fixed for the inode's life.
    pub kind: FileType,
    /// How to reach the backing inode.
    file: InodeFile,
    /// The kernel's lookup count.
    lookups: AtomicU64,
    /// Cached xid tag ([`XID_UNKNOWN`] until read from the backing inode).
    pub xid: AtomicU32,
    /// Cached [`crate::iattr::IAttr`] bits ([`IATTR_UNKNOWN`] until read).
    pub iattr: AtomicU32,
    /// The ctime (ns) at which [`Inode::xid`] was last known current.
    pub tag_ctime: AtomicU64,
    /// Open handles with write access (see [`crate::handle::Handle`]):
    /// while any exist, kernels cache its attributes only briefly.
    pub writers: AtomicU32,
    /// What the inode is charged to its tag's disk account, and whether it
    /// still counts (see [`Charge`]).
    pub charge: Mutex<Charge>,
    /// Serialises measured writes when the inode's space is limited.
    pub write_lock: Mutex<()>,
}

impl Inode {
    /// Whether a handle has it open for writing (its size and times then
    /// change without a notification until the last writer closes).
    pub fn open_for_writing(&self) -> bool {
        self.writers.load(Ordering::SeqCst) > 0
    }
}

/// An inode's standing with its tag's disk account.
///
/// An inode counts (one inode and its allocated bytes) from its creation
/// until its last link is gone *and* its last open handle is closed: a
/// file kept open after unlink still holds its blocks. Every change runs
/// under the inode's `charge` lock, so that a measurement, a removal and a
/// last close never interleave: whatever order they come in, the inode is
/// credited exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// Allocated bytes last charged.
    pub bytes: u64,
    /// Open handles (files and directories).
    pub opens: u64,
    /// The last link is gone.
    pub unlinked: bool,
    /// Credited in full: nothing is charged or credited any more.
    pub gone: bool,
}

impl Charge {
    /// A linked, unopened inode charged with its current allocation.
    pub fn new(st: &Stat) -> Charge {
        Charge {
            bytes: st.st_blocks as u64 * 512,
            opens: 0,
            unlinked: false,
            gone: false,
        }
    }

    /// The inode now allocates `now` bytes: the change to charge (positive)
    /// or credit (negative), none once it is gone.
    pub fn measure(&mut self, now: u64) -> i128 {
        if self.gone {
            return 0;
        }
        let delta = i128::from(now) - i128::from(self.bytes);
        self.bytes = now;
        delta
    }

    /// A handle was opened.
    pub fn open(&mut self) {
        self.opens += 1;
    }

    /// A handle was closed: the bytes to credit with the inode, if that
    /// was the last use of an unlinked inode.
    pub fn close(&mut self) -> Option<u64> {
        self.opens = self.opens.saturating_sub(1);
        self.finish()
    }

    /// Its last link is gone: the bytes to credit with the inode, unless
    /// handles keep it (then at the last close) or it was credited already.
    pub fn unlink(&mut self) -> Option<u64> {
        if self.unlinked {
            return None;
        }
        self.unlinked = true;
        self.finish()
    }

    fn finish(&mut self) -> Option<u64> {
        if self.gone || !self.unlinked || self.opens > 0 {
            return None;
        }
        self.gone = true;
        Some(self.bytes)
    }
}

/// [`Inode::xid`] before the tag has been read.
pub const XID_UNKNOWN: u32 = u32::MAX;

/// [`Inode::iattr`] before the flags have been read.
pub const IATTR_UNKNOWN: u32 = u32::MAX;

impl Inode {
    /// An `O_PATH` descriptor of the backing inode.
    pub fn fd(&self) -> Result<InodeFd<'_>> {
        match &self.file {
            InodeFile::Fd(fd) => Ok(InodeFd::Borrowed(fd.as_fd())),
            InodeFile::Handle { handle, mount } => Ok(InodeFd::Owned(sys::open_by_handle(
                mount.as_fd(),
                handle,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            )?)),
        }
    }

    fn holds_fd(&self) -> bool {
        matches!(self.file, InodeFile::Fd(_))
    }
}

#[derive(Debug, Default)]
struct Maps {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<BackingKey, u64>,
    /// One descriptor per mount id, to open file handles against.
    mounts: HashMap<i32, Arc<OwnedFd>>,
}

/// All inodes the kernel currently knows.
#[derive(Debug)]
pub struct InodeStore {
    maps: RwLock<Maps>,
    root_dev: u64,
    next_synthetic: AtomicU64,
    /// Inodes that may keep a descriptor open.
    fd_budget: usize,
    /// Inodes currently keeping one.
    fds_held: AtomicUsize,
}

impl InodeStore {
    /// A store holding only the root, whose descriptor and stat are given;
    /// at most `fd_budget` other inodes keep a descriptor open.
    pub fn new(root_fd: OwnedFd, root_st: &Stat, fd_budget: usize) -> InodeStore {
        let key = BackingKey::of(root_st);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            generation: 0,
            key,
            kind: FileType::Directory,
            file: InodeFile::Fd(root_fd),
            // The root is never forgotten.
            lookups: AtomicU64::new(u64::MAX / 2),
            xid: AtomicU32::new(XID_UNKNOWN),
            iattr: AtomicU32::new(IATTR_UNKNOWN),
            tag_ctime: AtomicU64::new(0),
            writers: AtomicU32::new(0),
            charge: Mutex::new(Charge::new(root_st)),
            write_lock: Mutex::new(()),
        });
        let mut maps = Maps::default();
        // The root's mount reopens the handles of every inode on it.
        if let InodeFile::Fd(fd) = &root.file {
            if let (Ok((_, mount_id)), Ok(mount)) =
                (sys::name_to_handle(fd.as_fd()), mount_fd(fd.as_fd()))
            {
                maps.mounts.insert(mount_id, Arc::new(mount));
            }
        }
        maps.by_id.insert(ROOT_ID, root);
        maps.by_key.insert(key, ROOT_ID);
        InodeStore {
            maps: RwLock::new(maps),
            root_dev: root_st.st_dev,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
            fd_budget,
            fds_held: AtomicUsize::new(0),
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

    /// Takes one more kernel reference to the known, live inode `key`, if
    /// there is one (shared lock only).
    pub fn acquire(&self, key: BackingKey) -> Option<Arc<Inode>> {
        let maps = self.read();
        let inode = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id))?;
        inode
            .lookups
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 0).then_some(n + 1)
            })
            .ok()?;
        Some(Arc::clone(inode))
    }

    /// Registers one kernel reference to the backing inode open as `fd` with
    /// stat `st`, reusing the existing entry when the inode is already known
    /// (then `fd` is dropped).
    pub fn insert(&self, fd: OwnedFd, st: &Stat) -> Arc<Inode> {
        let key = BackingKey::of(st);
        let reused = self.reused_number(key, &fd);
        // Fast path, shared lock: a known, live inode gains a reference. A
        // count at zero means a forget is removing it; that is settled under
        // the exclusive lock below.
        if reused.is_none() {
            if let Some(inode) = self.acquire(key) {
                return inode;
            }
        }
        let mut maps = self.write();
        // The older inode of a reused number, if it is still the key's.
        let older = reused
            .filter(|id| maps.by_key.get(&key) == Some(id))
            .and_then(|id| maps.by_id.get(&id))
            .map(|old| (old.id, old.generation, old.lookups.load(Ordering::Acquire)));
        if older.is_none() {
            if let Some(inode) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
                // Still in the table: the forget that took it to zero has
                // not removed it yet and will see the new reference.
                inode.lookups.fetch_add(1, Ordering::AcqRel);
                return Arc::clone(inode);
            }
        }
        // A reused number keeps its node id with the next generation: the
        // kernel then marks its inode of the old file bad and makes a new
        // one, and forgets both under the id (their counts add up here).
        let (id, generation, lookups) = match older {
            Some((id, generation, lookups)) => (id, generation + 1, lookups + 1),
            None if key.dev == self.root_dev
                && key.ino != ROOT_ID
                && key.ino < SYNTHETIC_BASE
                && !maps.by_id.contains_key(&key.ino) =>
            {
                (key.ino, 0, 1)
            }
            None => (self.next_synthetic.fetch_add(1, Ordering::Relaxed), 0, 1),
        };
        let file = self.keep(&mut maps, fd);
        let inode = Arc::new(Inode {
            id,
            generation,
            key,
            kind: FileType::from_raw_mode(st.st_mode),
            file,
            lookups: AtomicU64::new(lookups),
            xid: AtomicU32::new(XID_UNKNOWN),
            iattr: AtomicU32::new(IATTR_UNKNOWN),
            tag_ctime: AtomicU64::new(0),
            writers: AtomicU32::new(0),
            charge: Mutex::new(Charge::new(st)),
            write_lock: Mutex::new(()),
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
        {
            let maps = self.read();
            let Some(inode) = maps.by_id.get(&id) else {
                return;
            };
            // Saturate: a confused kernel must not wrap the count around.
            let old = inode
                .lookups
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    Some(c.saturating_sub(n))
                })
                .unwrap_or(0);
            if old > n {
                return;
            }
        }
        let mut maps = self.write();
        let dead = maps
            .by_id
            .get(&id)
            .is_some_and(|inode| inode.lookups.load(Ordering::Acquire) == 0);
        if !dead {
            // Revived by a lookup in between.
            return;
        }
        let removed = maps.by_id.remove(&id);
        if let Some(inode) = &removed {
            // The key may name a newer inode of the same number by now.
            if maps.by_key.get(&inode.key) == Some(&id) {
                maps.by_key.remove(&inode.key);
            }
            if inode.holds_fd() {
                self.fds_held.fetch_sub(1, Ordering::Relaxed);
            }
        }
        drop(maps);
        // Closing the descriptor happens outside the lock.
        drop(removed);
    }

    /// An entry kept by file handle does not pin its inode: once the file
    /// is deleted its number may come back for a new one while the kernel
    /// still holds the old entry. The id of such an entry when `fd`'s
    /// handle is not the entry's. (An entry with a descriptor pins its
    /// inode, whose number cannot be reused meanwhile.)
    fn reused_number(&self, key: BackingKey, fd: &OwnedFd) -> Option<u64> {
        let maps = self.read();
        let inode = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id))?;
        match &inode.file {
            InodeFile::Handle { handle, .. } => sys::name_to_handle(fd.as_fd())
                .is_ok_and(|(now, _)| now != *handle)
                .then_some(inode.id),
            InodeFile::Fd(_) => None,
        }
    }

    /// Keeps `fd` while the budget allows, else trades it for a file handle.
    fn keep(&self, maps: &mut Maps, fd: OwnedFd) -> InodeFile {
        if self.fds_held.load(Ordering::Relaxed) < self.fd_budget {
            self.fds_held.fetch_add(1, Ordering::Relaxed);
            return InodeFile::Fd(fd);
        }
        let handle = sys::name_to_handle(fd.as_fd()).and_then(|(handle, mount_id)| {
            let mount = match maps.mounts.get(&mount_id) {
                Some(mount) => Arc::clone(mount),
                None => {
                    let mount = Arc::new(mount_fd(fd.as_fd())?);
                    maps.mounts.insert(mount_id, Arc::clone(&mount));
                    mount
                }
            };
            Ok(InodeFile::Handle { handle, mount })
        });
        handle.unwrap_or_else(|e| {
            // No file handles here: holding the descriptor over budget is
            // the only way to keep the inode.
            log::warn!("cannot use a file handle ({e}); holding a descriptor over budget");
            self.fds_held.fetch_add(1, Ordering::Relaxed);
            InodeFile::Fd(fd)
        })
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
        InodeStore::new(fd, &st, 1000)
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
    fn over_budget_inodes_are_reopened_by_handle() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let (fd, st) = open_path(dir.path());
        let store = InodeStore::new(fd, &st, 1);
        let inodes: Vec<Arc<Inode>> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                let (fd, st) = open_path(&dir.path().join(n));
                store.insert(fd, &st)
            })
            .collect();
        assert!(inodes[0].holds_fd());
        assert!(!inodes[1].holds_fd() && !inodes[2].holds_fd());
        for inode in &inodes {
            let st = rustix::fs::fstat(inode.fd().unwrap()).unwrap();
            assert_eq!(
                BackingKey::of(&st),
                inode.key,
                "handle reopens the same inode"
            );
        }
        // Forgetting a descriptor-holding inode frees budget for the next one.
        store.forget(inodes[0].id, 1);
        std::fs::write(dir.path().join("d"), "d").unwrap();
        let (fd, st) = open_path(&dir.path().join("d"));
        assert!(store.insert(fd, &st).holds_fd());
    }

    #[test]
    fn an_inode_is_credited_once_after_its_last_link_and_last_close() {
        let st = rustix::fs::stat("/").unwrap();
        let mut c = Charge::new(&st);
        c.bytes = 4096;
        assert_eq!(c.measure(8192), 4096);
        c.open();
        c.open();
        assert_eq!(c.unlink(), None, "still open");
        assert_eq!(c.unlink(), None, "a second unlink");
        assert_eq!(c.measure(12288), 4096, "orphans are still charged");
        assert_eq!(c.close(), None);
        assert_eq!(c.close(), Some(12288));
        assert!(c.gone);
        assert_eq!(c.close(), None);
        assert_eq!(c.unlink(), None);
        assert_eq!(c.measure(0), 0, "gone: nothing moves");
        let mut d = Charge::new(&st);
        d.bytes = 100;
        assert_eq!(d.unlink(), Some(100), "unopened: credited at once");
        assert_eq!(d.close(), None, "a late release credits nothing");
    }

    /// An entry kept by handle does not pin its inode: a deleted file's
    /// number, reused for a new file while the kernel still holds the old
    /// entry, gets the same node id with the next generation, and both
    /// entries' references count.
    #[test]
    fn a_reused_inode_number_is_a_new_generation() {
        // ext4 (not tmpfs) hands a freed number out again at once.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (fd, st) = open_path(dir.path());
        let store = InodeStore::new(fd, &st, 0);
        std::fs::write(dir.path().join("old"), b"x").unwrap();
        let (fd, st) = open_path(&dir.path().join("old"));
        let old = store.insert(fd, &st);
        assert!(!old.holds_fd());
        std::fs::remove_file(dir.path().join("old")).unwrap();
        let reused = (0..200).find_map(|i| {
            let path = dir.path().join(format!("new{i}"));
            std::fs::write(&path, b"y").unwrap();
            let (fd, st) = open_path(&path);
            (st.st_ino == old.key.ino).then_some((fd, st))
        });
        let (fd, st) = reused.expect("ext4 reused the freed inode number");
        let new = store.insert(fd, &st);
        assert_eq!((new.id, new.generation), (old.id, old.generation + 1));
        assert!(new.fd().is_ok(), "the new entry reaches the new inode");
        assert!(old.fd().is_err(), "the old one is stale");
        // The kernel forgets the old inode's reference and the new one's.
        store.forget(new.id, 1);
        assert!(store.get(new.id).is_ok());
        store.forget(new.id, 1);
        assert!(store.get(new.id).is_err());
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

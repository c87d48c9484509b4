//! Recounting usage from the tree (docs/VSERVER.md §6.3, `vdu`): a
//! parallel walk of SOURCE summing, per xid tag, allocated bytes and inodes.
//!
//! Run at mount when the index holds no clean counters (first mount, crash,
//! corrupt index), so counters are always exact after a mount. The walk
//! stays on SOURCE's filesystem, never follows symlinks, counts hard-linked
//! inodes once, and reads each tag with one `getxattrat(2)` beside the
//! `fstatat(2)` that `du` also does.
//!
//! Directories waiting to be read are kept as kernel file handles, not
//! open descriptors, and re-opened by handle when their turn comes: a
//! directory with a million subdirectories costs memory, not a million
//! descriptors, so the walk needs one descriptor per thread whatever the
//! tree (it falls back to descriptors where the filesystem has no handles).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
use rustix::io::Errno;

use crate::dlimit::Usage;
use crate::sys;
use crate::tagging::{XID_XATTR, Xid};

/// Per-xid usage found by a walk.
pub type Counts = HashMap<Xid, Usage>;

/// A directory waiting to be read.
#[derive(Debug)]
enum Pending {
    /// Its file handle, to open against the walk's root.
    Handle(sys::FileHandle),
    /// An open descriptor (filesystems without file handles).
    Open(OwnedFd),
}

/// Work shared by the walker threads.
#[derive(Debug, Default)]
struct Queue {
    dirs: Vec<Pending>,
    /// Directories queued or being read; the walk ends at zero.
    pending: usize,
}

/// Walks the tree under `root` with `threads` threads. With `tagged` off,
/// everything counts for the host.
pub fn recount(root: BorrowedFd<'_>, tagged: bool, threads: usize) -> Result<Counts, Errno> {
    walk(root, tagged, threads, false, &AtomicU64::new(0)).map(|(counts, _)| counts)
}

/// [`recount`], adding every inode counted to `seen` as it goes (what a
/// progress display reads while it runs).
pub fn recount_seen(
    root: BorrowedFd<'_>,
    tagged: bool,
    threads: usize,
    seen: &AtomicU64,
) -> Result<Counts, Errno> {
    walk(root, tagged, threads, false, seen).map(|(counts, _)| counts)
}

/// [`recount`] for a tree no daemon serves (its index claimed): removes the
/// temporary names a crash left ([`crate::leftovers`]) instead of counting
/// them, and says how many it removed.
pub fn recount_sweeping(
    root: BorrowedFd<'_>,
    tagged: bool,
    threads: usize,
) -> Result<(Counts, u64), Errno> {
    walk(root, tagged, threads, true, &AtomicU64::new(0))
}

/// [`recount_sweeping`], adding every inode counted to `seen`.
pub fn recount_sweeping_seen(
    root: BorrowedFd<'_>,
    tagged: bool,
    threads: usize,
    seen: &AtomicU64,
) -> Result<(Counts, u64), Errno> {
    walk(root, tagged, threads, true, seen)
}

fn walk(
    root: BorrowedFd<'_>,
    tagged: bool,
    threads: usize,
    sweep: bool,
    seen: &AtomicU64,
) -> Result<(Counts, u64), Errno> {
    let root_st = rustix::fs::fstat(root)?;
    let dir = rustix::fs::openat(
        root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mount_id = sys::name_to_handle(dir.as_fd()).ok().map(|(_, id)| id);
    let walk = Walk {
        dev: root_st.st_dev,
        tagged,
        root: dir
            .try_clone()
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?,
        mount_id,
        queue: Mutex::new(Queue {
            dirs: vec![Pending::Open(dir)],
            pending: 1,
        }),
        wake: Condvar::new(),
        links: Mutex::new(HashSet::new()),
        sweep,
        swept: AtomicU64::new(0),
        seen,
    };
    let mut totals = Counts::new();
    // The root directory itself counts too.
    let root_xid = if tagged {
        read_tag(root, c".")?
    } else {
        Xid::HOST
    };
    add(&mut totals, root_xid, root_st.st_blocks as u64 * 512);
    let results: Vec<Result<Counts, Errno>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| s.spawn(|| walk.worker()))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Err(Errno::IO)))
            .collect()
    });
    for counts in results {
        for (xid, u) in counts? {
            let t = totals.entry(xid).or_default();
            t.space += u.space;
            t.inodes += u.inodes;
        }
    }
    Ok((totals, walk.swept.into_inner()))
}

fn add(counts: &mut Counts, xid: Xid, space: u64) {
    let u = counts.entry(xid).or_default();
    u.space += space;
    u.inodes += 1;
}

/// The tag of `name` in `dir`, without following a final symlink.
pub fn tag_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> Result<Xid, Errno> {
    use std::os::unix::ffi::OsStrExt;
    let name = CString::new(name.as_bytes()).map_err(|_| Errno::INVAL)?;
    read_tag(dir, &name)
}

/// The tag of `name` in `dir`; corrupt tags count for nobody's limit but
/// are kept apart under an impossible xid.
fn read_tag(dir: BorrowedFd<'_>, name: &CStr) -> Result<Xid, Errno> {
    let mut buf = [0u8; 16];
    let attr = CString::new(XID_XATTR).expect("no NUL");
    let got = match sys::getxattr_at(dir, name, &attr, &mut buf) {
        Err(Errno::NOSYS) => {
            // Before Linux 6.13: through an O_PATH descriptor of the entry.
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            rustix::fs::getxattr(path.as_str(), XID_XATTR, &mut buf[..])
        }
        other => other,
    };
    match got {
        Ok(n) => Ok(Xid::from_xattr(&buf[..n]).unwrap_or(Xid(u32::MAX - 1))),
        Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(Xid::HOST),
        Err(Errno::RANGE) => Ok(Xid(u32::MAX - 1)),
        Err(e) => Err(e),
    }
}

struct Walk<'a> {
    dev: u64,
    tagged: bool,
    /// The root, to open queued handles against.
    root: OwnedFd,
    /// Its mount's id, when the filesystem gives file handles.
    mount_id: Option<i32>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Inodes with several links already counted.
    links: Mutex<HashSet<(u64, u64)>>,
    /// Whether leftover temporary names are removed.
    sweep: bool,
    /// How many were.
    swept: AtomicU64,
    /// Inodes counted so far.
    seen: &'a AtomicU64,
}

impl Walk<'_> {
    fn worker(&self) -> Result<Counts, Errno> {
        let mut counts = Counts::new();
        while let Some(dir) = self.next_dir() {
            let result = self.open(dir).and_then(|dir| match dir {
                Some(dir) => self.read_dir(dir.as_fd(), &mut counts),
                None => Ok(()),
            });
            self.done_dir();
            result?;
        }
        Ok(counts)
    }

    /// Opens a queued directory (`None`: removed since it was queued).
    fn open(&self, dir: Pending) -> Result<Option<OwnedFd>, Errno> {
        match dir {
            Pending::Open(fd) => Ok(Some(fd)),
            Pending::Handle(handle) => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                match sys::open_by_handle(self.root.as_fd(), &handle, flags) {
                    Ok(fd) => Ok(Some(fd)),
                    Err(Errno::STALE | Errno::NOENT) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn next_dir(&self) -> Option<Pending> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(dir) = q.dirs.pop() {
                return Some(dir);
            }
            if q.pending == 0 {
                return None;
            }
            q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn done_dir(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.pending -= 1;
        if q.pending == 0 {
            self.wake.notify_all();
        }
    }

    fn push_dir(&self, dir: Pending) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.dirs.push(dir);
        q.pending += 1;
        self.wake.notify_one();
    }

    /// The subdirectory `name` of `dir`, to read later: by file handle when
    /// it is on the root's mount, else opened now.
    fn queue_entry(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<Pending, Errno> {
        if let Some(root_mount) = self.mount_id {
            if let Ok((handle, mount)) = sys::entry_handle(dir, name) {
                if mount == root_mount {
                    return Ok(Pending::Handle(handle));
                }
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat(dir, name, flags, Mode::empty()).map(Pending::Open)
    }

    fn read_dir(&self, dir: BorrowedFd<'_>, counts: &mut Counts) -> Result<(), Errno> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64 * 1024];
        let mut entries = RawDir::new(dir, &mut buf);
        while let Some(entry) = entries.next() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed since the directory was read.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e),
            };
            if st.st_dev != self.dev {
                continue;
            }
            if self.sweep
                && FileType::from_raw_mode(st.st_mode) != FileType::Directory
                && self.remove_leftover(dir, name)
            {
                continue;
            }
            if st.st_nlink > 1 && FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                let mut seen = self.links.lock().unwrap_or_else(|e| e.into_inner());
                if !seen.insert((st.st_dev, st.st_ino)) {
                    continue;
                }
            }
            let xid = if self.tagged {
                read_tag(dir, name)?
            } else {
                Xid::HOST
            };
            add(counts, xid, st.st_blocks as u64 * 512);
            self.seen.fetch_add(1, Ordering::Relaxed);
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                match self.queue_entry(dir, name) {
                    Ok(sub) => self.push_dir(sub),
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Removes `name` in `dir` if it is a leftover temporary name; whether
    /// it is gone.
    fn remove_leftover(&self, dir: BorrowedFd<'_>, name: &CStr) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let os = std::ffi::OsStr::from_bytes(name.to_bytes());
        if !crate::leftovers::is_left_over_at_mount(os) {
            return false;
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {
                log::info!("removed {os:?}, a temporary name left by a crash");
                self.swept.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                log::warn!("could not remove the leftover temporary name {os:?}: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inodes_and_blocks_with_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("a/b/c")).unwrap();
        std::fs::write(p.join("a/f"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(p.join("a/f"), p.join("a/b/g")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("a/b/c/l")).unwrap();
        rustix::fs::setxattr(
            p.join("a/b/c").as_path(),
            XID_XATTR,
            b"9",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let root = rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for threads in [1, 3] {
            let counts = recount(root.as_fd(), true, threads).unwrap();
            // root, a, b, f (once), c's symlink l: host; c: xid 9.
            assert_eq!(counts[&Xid::HOST].inodes, 5, "threads={threads}");
            assert_eq!(counts[&Xid(9)].inodes, 1);
            let du: u64 = ["", "a", "a/b", "a/f", "a/b/c/l"]
                .iter()
                .map(|n| rustix::fs::lstat(p.join(n).as_path()).unwrap().st_blocks as u64 * 512)
                .sum();
            assert_eq!(counts[&Xid::HOST].space, du);
            let untagged = recount(root.as_fd(), false, threads).unwrap();
            assert_eq!(untagged[&Xid::HOST].inodes, 6);
            // The progress count: every inode below the root, once.
            let seen = AtomicU64::new(0);
            recount_seen(root.as_fd(), false, threads, &seen).unwrap();
            assert_eq!(seen.load(Ordering::Relaxed), 5);
        }
    }

    #[test]
    fn a_sweeping_recount_removes_leftovers_and_does_not_count_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("g/etc")).unwrap();
        std::fs::write(p.join("g/etc/f"), vec![1u8; 10_000]).unwrap();
        let mine = format!(".vxfs-hashify.{}.0", std::process::id());
        std::fs::hard_link(p.join("g/etc/f"), p.join("g/etc").join(&mine)).unwrap();
        std::fs::write(p.join("g/etc/.vxfs-cow.12.0"), vec![2u8; 10_000]).unwrap();
        std::fs::hard_link(p.join("g/etc/f"), p.join("g/.vxfs-hashify.0.3")).unwrap();
        // A directory of that name is not one of ours.
        std::fs::create_dir(p.join("g/.vxfs-cow.d")).unwrap();
        let root = rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let plain = recount(root.as_fd(), true, 2).unwrap();
        assert_eq!(plain[&Xid::HOST].inodes, 6);
        let (counts, swept) = recount_sweeping(root.as_fd(), true, 2).unwrap();
        assert_eq!(swept, 2);
        // root, g, etc, f, the directory; the live hashify link is f again.
        assert_eq!(counts[&Xid::HOST].inodes, 5);
        assert!(!p.join("g/etc/.vxfs-cow.12.0").exists());
        assert!(!p.join("g/.vxfs-hashify.0.3").exists());
        assert!(p.join("g/etc").join(&mine).exists());
        assert!(p.join("g/.vxfs-cow.d").is_dir());
        assert_eq!(std::fs::read(p.join("g/etc/f")).unwrap(), vec![1u8; 10_000]);
    }
}

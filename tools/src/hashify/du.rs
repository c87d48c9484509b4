//! What `du` would say of the guest roots and the store: allocated bytes,
//! every inode once (hard links, and a store entry linked from many
//! guests), the directories themselves included, staying on one
//! filesystem and following nothing. hashify measures before and after a
//! run, so that the "saved" figure is what `du` shows: the guests' copies
//! freed, less the store's new entries *and* its directories.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

/// Sums the allocation under `tops` (directories on device `dev`);
/// `seen` counts the inodes examined, for a progress line.
pub fn allocated(tops: &[BorrowedFd<'_>], dev: u64, seen: &AtomicU64) -> Result<u64, Errno> {
    let mut walk = Du {
        dev,
        inodes: HashSet::new(),
        bytes: 0,
        seen,
    };
    for top in tops {
        let st = rustix::fs::fstat(top)?;
        if walk.count(&st) {
            walk.dir(*top)?;
        }
    }
    Ok(walk.bytes)
}

struct Du<'a> {
    dev: u64,
    inodes: HashSet<(u64, u64)>,
    bytes: u64,
    seen: &'a AtomicU64,
}

impl Du<'_> {
    /// Counts `st` unless seen already; whether it was new.
    fn count(&mut self, st: &rustix::fs::Stat) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed);
        if !self.inodes.insert((st.st_dev, st.st_ino)) {
            return false;
        }
        self.bytes += st.st_blocks as u64 * 512;
        true
    }

    fn dir(&mut self, dir: BorrowedFd<'_>) -> Result<(), Errno> {
        for (name, _) in super::scan::sorted_names(dir)? {
            let name = OsStr::from_bytes(&name);
            let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e),
            };
            if st.st_dev != self.dev || !self.count(&st) {
                continue;
            }
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                match crate::walk::open_dir(dir, name, &st) {
                    Ok(sub) => self.dir(sub.as_fd())?,
                    Err(Errno::NOENT | Errno::STALE) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_links_once_and_directories_too() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/f"), vec![1u8; 20_000]).unwrap();
        std::fs::hard_link(p.join("a/f"), p.join("a/b/g")).unwrap();
        std::os::unix::fs::symlink("f", p.join("a/l")).unwrap();
        let open = |d: &str| {
            rustix::fs::open(
                p.join(d),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap()
        };
        let (a, b) = (open("a"), open("a/b"));
        let dev = rustix::fs::fstat(&a).unwrap().st_dev;
        let seen = AtomicU64::new(0);
        let got = allocated(&[a.as_fd(), b.as_fd()], dev, &seen).unwrap();
        let du: u64 = ["a", "a/b", "a/f", "a/l"]
            .iter()
            .map(|n| rustix::fs::lstat(p.join(n)).unwrap().st_blocks as u64 * 512)
            .sum();
        assert_eq!(got, du, "a/b twice and a/f's second link count once");
    }
}

//! The walk over the guest roots (docs/VSERVER.md §5.3): which regular
//! files are candidates for unification.
//!
//! Depth first from each root, entries in name order; each path is matched
//! against the exclude list as `/rel/path` before it is examined, and an
//! excluded directory is not entered. Nothing is followed: entries are
//! examined with `lstat` semantics, directories are opened `O_NOFOLLOW`
//! and checked to be the inode examined, and a directory on another
//! filesystem (a mount point inside a guest) is not entered. Symlinks,
//! devices, fifos and sockets are skipped, so are regular files under 16
//! bytes and files already linked to the hash store.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Stat};
use rustix::io::Errno;

use super::exclude::ExcludeList;
use super::{FileStat, Reporter, Root};

/// Files smaller than this are never unified (§5.3: `st_size < 16`).
pub const MIN_SIZE: u64 = 16;

/// A regular file the walk found worth considering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index of its root in the roots given.
    pub root: usize,
    /// Its path below the root, without a leading `/` (`usr/bin/ls`).
    pub rel: Vec<u8>,
    /// What it was when examined.
    pub st: FileStat,
}

impl Candidate {
    /// The parent directory below the root (`.` for the root itself) and
    /// the file's name.
    pub fn split(&self) -> (&OsStr, &OsStr) {
        match self.rel.iter().rposition(|&b| b == b'/') {
            Some(slash) => (
                OsStr::from_bytes(&self.rel[..slash]),
                OsStr::from_bytes(&self.rel[slash + 1..]),
            ),
            None => (OsStr::new("."), OsStr::from_bytes(&self.rel)),
        }
    }
}

/// What the walk counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCounts {
    /// Regular files seen (not excluded).
    pub files: u64,
    /// Directories entered.
    pub dirs: u64,
    /// Paths the exclude list left out (a directory counts once).
    pub excluded: u64,
    /// Regular files under [`MIN_SIZE`].
    pub too_small: u64,
    /// Symlinks, devices, fifos, sockets.
    pub not_regular: u64,
    /// Directories on another filesystem, not entered.
    pub other_fs: u64,
    /// Files already linked to the hash store.
    pub already_unified: u64,
    /// Entries that could not be examined (reported).
    pub failed: u64,
    /// Swap names left by interrupted runs: removed (or, in a dry run,
    /// that would be).
    pub leftovers: u64,
}

/// What the walk skips besides the exclude list: the hash store.
#[derive(Debug, Clone, Default)]
pub struct Skip {
    /// The store directory (`(dev, ino)`), never entered.
    pub store_dir: Option<(u64, u64)>,
    /// The store's entries (`(dev, ino)`): a file that is one of them is
    /// already unified.
    pub store_inodes: HashSet<(u64, u64)>,
    /// Whether swap names left by interrupted runs are removed (this run
    /// holds the store's lock and is not a dry run).
    pub remove_leftovers: bool,
}

/// Walks every root; returns the candidates in root order, then path order.
pub fn scan(
    roots: &[Root],
    excludes: &ExcludeList,
    skip: &Skip,
    report: &Reporter,
    seen: &std::sync::atomic::AtomicU64,
) -> (Vec<Candidate>, ScanCounts) {
    let mut walker = Walker {
        excludes,
        skip,
        report,
        counts: ScanCounts::default(),
        out: Vec::new(),
        seen,
    };
    for (index, root) in roots.iter().enumerate() {
        let st = match rustix::fs::fstat(&root.fd) {
            Ok(st) => st,
            Err(e) => {
                report.error(root.path.as_os_str().as_bytes(), e);
                walker.counts.failed += 1;
                continue;
            }
        };
        walker.counts.dirs += 1;
        let mut rel = Vec::new();
        walker.dir(index, root, root.fd.as_fd(), st.st_dev, &mut rel);
    }
    (walker.out, walker.counts)
}

struct Walker<'a> {
    excludes: &'a ExcludeList,
    skip: &'a Skip,
    report: &'a Reporter,
    counts: ScanCounts,
    out: Vec<Candidate>,
    /// Entries examined, for the progress line.
    seen: &'a std::sync::atomic::AtomicU64,
}

impl Walker<'_> {
    /// Handles the entries of the directory `dir` (at `rel` below the
    /// root), recursing into its subdirectories after its files.
    fn dir(&mut self, index: usize, root: &Root, dir: BorrowedFd<'_>, dev: u64, rel: &mut Vec<u8>) {
        let names = match sorted_names(dir) {
            Ok(names) => names,
            Err(e) => {
                self.report.error(&root.display(rel), e);
                self.counts.failed += 1;
                return;
            }
        };
        let mut subdirs = Vec::new();
        self.seen
            .fetch_add(names.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for (name, kind) in names {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            self.entry(index, root, dir, dev, &name, kind, rel, &mut subdirs);
            rel.truncate(len);
        }
        for (name, st) in subdirs {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            match crate::walk::open_dir(dir, OsStr::from_bytes(&name), &st) {
                Ok(sub) => {
                    self.counts.dirs += 1;
                    self.dir(index, root, sub.as_fd(), dev, rel);
                }
                Err(e) => {
                    self.report.error(&root.display(rel), e);
                    self.counts.failed += 1;
                }
            }
            rel.truncate(len);
        }
    }

    /// Examines one entry (`rel` is its path below the root).
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        index: usize,
        root: &Root,
        dir: BorrowedFd<'_>,
        dev: u64,
        name: &[u8],
        kind: FileType,
        rel: &[u8],
        subdirs: &mut Vec<(Vec<u8>, Stat)>,
    ) {
        if vxfs::leftovers::is_reserved(name) {
            self.temporary(root, dir, name, kind, rel);
            return;
        }
        let mut matched = Vec::with_capacity(rel.len() + 1);
        matched.push(b'/');
        matched.extend_from_slice(rel);
        if self.excludes.excludes(&matched) {
            self.counts.excluded += 1;
            return;
        }
        // readdir's type saves the lstat of what is skipped anyway.
        if !matches!(
            kind,
            FileType::RegularFile | FileType::Directory | FileType::Unknown
        ) {
            self.counts.not_regular += 1;
            return;
        }
        let raw = match rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)
        {
            Ok(st) => st,
            // Removed since the listing.
            Err(Errno::NOENT) => return,
            Err(e) => {
                self.report.error(&root.display(rel), e);
                self.counts.failed += 1;
                return;
            }
        };
        let st = FileStat::from(&raw);
        match FileType::from_raw_mode(st.mode) {
            FileType::Directory => {
                if st.dev != dev {
                    self.counts.other_fs += 1;
                } else if self.skip.store_dir != Some((st.dev, st.ino)) {
                    subdirs.push((name.to_vec(), raw));
                }
            }
            FileType::RegularFile => {
                self.counts.files += 1;
                if st.size < MIN_SIZE {
                    self.counts.too_small += 1;
                } else if st.nlink > 1 && self.skip.store_inodes.contains(&(st.dev, st.ino)) {
                    self.counts.already_unified += 1;
                } else {
                    self.out.push(Candidate {
                        root: index,
                        rel: rel.to_vec(),
                        st,
                    });
                }
            }
            _ => self.counts.not_regular += 1,
        }
    }

    /// A temporary name (`rel` in `dir`): never a candidate. One of an
    /// interrupted hashify run is removed (its real name holds the file,
    /// `link.rs`); a copy-on-write name is the daemon's, which is serving.
    fn temporary(
        &mut self,
        root: &Root,
        dir: BorrowedFd<'_>,
        name: &[u8],
        kind: FileType,
        rel: &[u8],
    ) {
        if kind == FileType::Directory || !vxfs::leftovers::is_stale_hashify(name) {
            self.counts.excluded += 1;
            return;
        }
        self.counts.leftovers += 1;
        if self.skip.remove_leftovers {
            match rustix::fs::unlinkat(dir, OsStr::from_bytes(name), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    self.counts.leftovers -= 1;
                    self.counts.failed += 1;
                    self.report.error(&root.display(rel), e);
                }
            }
        }
    }
}

/// The names in `dir` with their readdir types, sorted, without `.` and
/// `..`.
pub(super) fn sorted_names(dir: BorrowedFd<'_>) -> Result<Vec<(Vec<u8>, FileType)>, Errno> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((name.to_vec(), entry.file_type()));
        }
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashify::exclude::DEFAULT_EXCLUDES;

    fn root(path: &std::path::Path) -> Root {
        Root::open(path).unwrap()
    }

    #[test]
    fn finds_candidates_and_counts_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path().join("g");
        for d in ["usr/bin", "etc", "var/lib", "sub/deep"] {
            std::fs::create_dir_all(g.join(d)).unwrap();
        }
        let big = [7u8; 64];
        std::fs::write(g.join("usr/bin/tool"), big).unwrap();
        std::fs::write(g.join("usr/bin/.dot"), big).unwrap();
        std::fs::write(g.join("usr/bin/tiny"), b"0123456789abcde").unwrap();
        std::fs::write(g.join("usr/bin/edge"), b"0123456789abcdef").unwrap();
        std::fs::write(g.join("etc/passwd"), big).unwrap();
        std::fs::write(g.join("var/lib/x"), big).unwrap();
        std::fs::write(g.join("sub/deep/f"), big).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", g.join("usr/bin/link")).unwrap();
        std::os::unix::fs::symlink("../etc", g.join("sub/dirlink")).unwrap();
        // Temporary names: an interrupted run's (pid 0 is nobody's), a
        // running one's, the daemon's copy-on-write name.
        let live = format!(".vxfs-hashify.{}.0", std::process::id());
        for name in [".vxfs-hashify.0.1", live.as_str(), ".vxfs-cow.3.1"] {
            std::fs::write(g.join("usr/bin").join(name), big).unwrap();
        }
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            g.join("sub/fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();

        let mut excludes = ExcludeList::new();
        excludes.add_text(DEFAULT_EXCLUDES.as_bytes());
        let report = Reporter::quiet();
        let roots = [root(&g)];
        let seen = std::sync::atomic::AtomicU64::new(0);
        let (found, counts) = scan(&roots, &excludes, &Skip::default(), &report, &seen);
        let rels: Vec<&[u8]> = found.iter().map(|c| c.rel.as_slice()).collect();
        assert_eq!(
            rels,
            [
                &b"sub/deep/f"[..],
                b"usr/bin/.dot",
                b"usr/bin/edge",
                b"usr/bin/tool"
            ]
        );
        assert_eq!(
            counts,
            ScanCounts {
                files: 5,
                dirs: 6,
                excluded: 4,
                too_small: 1,
                not_regular: 3,
                other_fs: 0,
                already_unified: 0,
                failed: 0,
                leftovers: 1,
            }
        );
        // Not removed unless asked (a dry run is not).
        assert!(g.join("usr/bin/.vxfs-hashify.0.1").exists());
        let removing = Skip {
            remove_leftovers: true,
            ..Skip::default()
        };
        let (again, counts) = scan(&roots, &excludes, &removing, &report, &seen);
        assert_eq!((again.len(), counts.leftovers), (found.len(), 1));
        assert!(!g.join("usr/bin/.vxfs-hashify.0.1").exists());
        assert!(g.join("usr/bin").join(&live).exists());
        assert!(g.join("usr/bin/.vxfs-cow.3.1").exists());
        assert_eq!(found[0].split(), (OsStr::new("sub/deep"), OsStr::new("f")));

        // The store's directory and inodes are skipped.
        let tool = std::fs::metadata(g.join("usr/bin/tool")).unwrap();
        std::fs::hard_link(g.join("usr/bin/tool"), g.join("sub/tool2")).unwrap();
        let deep = std::fs::metadata(g.join("sub/deep")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let skip = Skip {
            store_dir: Some((deep.dev(), deep.ino())),
            store_inodes: [(tool.dev(), tool.ino())].into(),
            remove_leftovers: false,
        };
        let seen = std::sync::atomic::AtomicU64::new(0);
        let (found, counts) = scan(&roots, &excludes, &skip, &report, &seen);
        let rels: Vec<&[u8]> = found.iter().map(|c| c.rel.as_slice()).collect();
        assert_eq!(rels, [&b"usr/bin/.dot"[..], b"usr/bin/edge"]);
        assert_eq!(counts.already_unified, 2);
        assert_eq!(counts.dirs, 5, "the store directory is not entered");
    }

    #[test]
    fn a_root_level_file_splits_to_dot() {
        let c = Candidate {
            root: 0,
            rel: b"f".to_vec(),
            st: FileStat::default(),
        };
        assert_eq!(c.split(), (OsStr::new("."), OsStr::new("f")));
    }
}

//! The traversal util-vserver's fstool gives chxid, lsxid, setattr and
//! showattr (docs/VSERVER.md §7).
//!
//! For each operand: a non-directory, or a directory when directories are
//! handled as files (`-d` for the listing tools, chxid without `-R`), is
//! visited itself. Otherwise the directory is iterated: first the
//! directory itself (shown under the operand's name), then its entries
//! (`.` and `..` never; other dot names only with `-a`), named
//! `OPERAND/ENTRY`. With `-R`, subdirectories are not visited with the
//! other entries but iterated in turn, after them; with `-x` those on
//! another filesystem are skipped entirely.
//!
//! Entries are taken in name order (fstool used `readdir` order) so that
//! output is reproducible. Nothing is followed: every entry is examined
//! with `lstat` semantics and subdirectories are opened `O_NOFOLLOW` and
//! checked to be the inode that was examined.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::tag::{At, trim_slashes};

/// What the traversal does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkOptions {
    /// `-R`: recurse into subdirectories.
    pub recurse: bool,
    /// `-x`: do not enter subdirectories on another filesystem.
    pub one_fs: bool,
    /// `-a`: include names starting with `.`.
    pub dot_files: bool,
    /// Handle directory operands as files instead of iterating them.
    pub dirs_as_files: bool,
}

/// The tool's action on each visited inode.
pub trait Visitor {
    /// Handles one inode; returns whether it succeeded (a failure must have
    /// been reported by the visitor).
    fn visit(&mut self, at: At<'_>, st: &Stat, display: &OsStr) -> bool;

    /// Reports a file that could not be examined or opened.
    fn walk_error(&mut self, display: &OsStr, err: Errno);
}

/// Runs the traversal over one operand; returns the number of failures.
pub fn walk(operand: &Path, opts: WalkOptions, visitor: &mut dyn Visitor) -> u64 {
    let display = operand.as_os_str();
    let st = match rustix::fs::lstat(operand) {
        Ok(st) => st,
        Err(e) => {
            visitor.walk_error(display, e);
            return 1;
        }
    };
    if !is_dir(&st) || opts.dirs_as_files {
        return u64::from(!visitor.visit(At::Path(operand), &st, display));
    }
    let dir = match open_dir(rustix::fs::CWD, operand.as_os_str(), &st) {
        Ok(fd) => fd,
        Err(e) => {
            visitor.walk_error(display, e);
            return 1;
        }
    };
    iterate(dir.as_fd(), &st, trim_slashes(display), opts, visitor)
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Opens the directory `name` (relative to `at`), refusing anything but the
/// inode `expected` describes.
pub(crate) fn open_dir(
    at: BorrowedFd<'_>,
    name: &OsStr,
    expected: &Stat,
) -> Result<OwnedFd, Errno> {
    let fd = rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino) {
        // Replaced between the examination and the open.
        return Err(Errno::STALE);
    }
    Ok(fd)
}

/// `parent/name` as util-vserver displays it.
fn join(parent: &OsStr, name: &OsStr) -> OsString {
    let mut out = parent.as_bytes().to_vec();
    if !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(name.as_bytes());
    OsString::from_vec(out)
}

/// The names in `dir`, sorted, without `.`, `..` and (unless `dot_files`)
/// other dot names.
fn entries(dir: BorrowedFd<'_>, dot_files: bool) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || (name.starts_with(b".") && !dot_files) {
            continue;
        }
        names.push(OsString::from_vec(name.to_vec()));
    }
    names.sort();
    Ok(names)
}

fn iterate(
    dir: BorrowedFd<'_>,
    dir_st: &Stat,
    display: &OsStr,
    opts: WalkOptions,
    visitor: &mut dyn Visitor,
) -> u64 {
    let mut failures = u64::from(!visitor.visit(At::Dir(dir), dir_st, display));
    let names = match entries(dir, opts.dot_files) {
        Ok(names) => names,
        Err(e) => {
            visitor.walk_error(display, e);
            return failures + 1;
        }
    };
    let mut subdirs = Vec::new();
    for name in names {
        let shown = join(display, &name);
        let st = match rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) => {
                visitor.walk_error(&shown, e);
                failures += 1;
                continue;
            }
        };
        if opts.recurse && is_dir(&st) {
            subdirs.push((name, shown, st));
            continue;
        }
        failures += u64::from(!visitor.visit(At::Entry(dir, &name), &st, &shown));
    }
    for (name, shown, st) in subdirs {
        if opts.one_fs && st.st_dev != dir_st.st_dev {
            continue;
        }
        match open_dir(dir, &name, &st) {
            Ok(sub) => failures += iterate(sub.as_fd(), &st, &shown, opts, visitor),
            Err(e) => {
                visitor.walk_error(&shown, e);
                failures += 1;
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what was visited, as (display name, kind of `At`).
    #[derive(Default)]
    struct Record(Vec<(String, &'static str)>, Vec<String>);

    impl Visitor for Record {
        fn visit(&mut self, at: At<'_>, _st: &Stat, display: &OsStr) -> bool {
            let kind = match at {
                At::Path(_) => "path",
                At::Dir(_) => "dir",
                At::Entry(..) => "entry",
            };
            self.0.push((display.to_string_lossy().into_owned(), kind));
            true
        }

        fn walk_error(&mut self, display: &OsStr, err: Errno) {
            self.1.push(format!("{}: {err}", display.to_string_lossy()));
        }
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir_all(p.join("d/sub")).unwrap();
        std::fs::write(p.join("d/b"), "").unwrap();
        std::fs::write(p.join("d/.hidden"), "").unwrap();
        std::fs::write(p.join("d/sub/c"), "").unwrap();
        std::os::unix::fs::symlink("sub", p.join("d/a-link")).unwrap();
        t
    }

    fn run(root: &Path, operand: &str, opts: WalkOptions) -> Vec<(String, &'static str)> {
        let mut r = Record::default();
        let failures = walk(&root.join(operand), opts, &mut r);
        assert_eq!(failures, 0, "{:?}", r.1);
        let prefix = format!("{}/", root.display());
        r.0.into_iter()
            .map(|(d, k)| (d.strip_prefix(&prefix).unwrap_or(&d).to_string(), k))
            .collect()
    }

    #[test]
    fn traversal_orders() {
        let t = tree();
        let own = |v: &[(&str, &'static str)]| -> Vec<(String, &'static str)> {
            v.iter().map(|(d, k)| (d.to_string(), *k)).collect()
        };
        let listing = WalkOptions::default();
        assert_eq!(
            run(t.path(), "d/", listing),
            own(&[
                ("d", "dir"),
                ("d/a-link", "entry"),
                ("d/b", "entry"),
                ("d/sub", "entry")
            ])
        );
        let recursive_all = WalkOptions {
            recurse: true,
            dot_files: true,
            ..listing
        };
        assert_eq!(
            run(t.path(), "d", recursive_all),
            own(&[
                ("d", "dir"),
                ("d/.hidden", "entry"),
                ("d/a-link", "entry"),
                ("d/b", "entry"),
                ("d/sub", "dir"),
                ("d/sub/c", "entry"),
            ])
        );
        let as_file = WalkOptions {
            dirs_as_files: true,
            recurse: true,
            ..listing
        };
        assert_eq!(run(t.path(), "d", as_file), own(&[("d", "path")]));
        // A symlink operand is never followed.
        assert_eq!(
            run(t.path(), "d/a-link", listing),
            own(&[("d/a-link", "path")])
        );
    }

    #[test]
    fn missing_operand_is_one_failure() {
        let t = tree();
        let mut r = Record::default();
        assert_eq!(
            walk(&t.path().join("nope"), WalkOptions::default(), &mut r),
            1
        );
        assert_eq!(r.1.len(), 1);
        assert!(
            r.1[0].ends_with("No such file or directory (os error 2)"),
            "{:?}",
            r.1
        );
    }

    #[test]
    fn joins_display_names() {
        assert_eq!(join(OsStr::new("/"), OsStr::new("a")), "/a");
        assert_eq!(join(OsStr::new("d"), OsStr::new("a")), "d/a");
    }
}

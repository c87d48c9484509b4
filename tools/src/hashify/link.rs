//! Replacing guest names by links to the shared copy (docs/VSERVER.md
//! §5.5), verified and atomic.
//!
//! # Verification
//!
//! Right before an inode's names are swapped, its first name is opened and
//! must still be the inode the scan examined with the size, mtime, ctime,
//! mode and owner it was hashed with; its content is then byte-compared
//! with the shared copy and its state checked again. Anything different and
//! the inode is left alone ("changed during the run"). Before each further
//! name the state is checked once more, against what this run's own
//! renames did to it.
//!
//! # Swap
//!
//! `link(entry, DIR/.vxfs-hashify.PID.N)`, then
//! `renameat2(tmp, name, RENAME_EXCHANGE)`: the name points to the shared
//! copy at once and the temporary name now holds what the name held. If
//! that is not the verified inode (the name was replaced meanwhile) or the
//! inode was written meanwhile, the two are exchanged back. Otherwise the
//! temporary name is unlinked. The name is never missing, and a guest's
//! file is never removed unless it is the one verified.
//!
//! A crash between the link and the unlink leaves a
//! `.vxfs-hashify.PID.N` name beside the file: either a link to the store
//! or the guest's old file.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, OFlags, RenameFlags, SeekFrom};
use rustix::io::Errno;

use super::hash::BLOCK;
use super::scan::Candidate;
use super::store::{Entry, EntryName, Store};
use super::{FileStat, Group, Prepared, Reporter, Root, Summary};
use vxfs::unify::{Swap, Swapped, Twin, read_full};

/// Prefix of the temporary names in guest directories.
pub const TMP_PREFIX: &str = ".vxfs-hashify.";

/// Phase 4 over the groups of one run.
pub struct Linker<'a> {
    /// The guest roots.
    pub roots: &'a [Root],
    /// The store.
    pub store: &'a Store,
    /// The daemon that swaps names itself, where it can.
    pub daemon: Option<&'a super::daemon::Daemon>,
    /// How files are compared.
    pub keying: &'a super::Keying,
    /// What phases 1-3 found.
    pub prepared: &'a Prepared,
    /// `-n`.
    pub dry_run: bool,
    /// `-v`.
    pub verbose: u8,
    /// Errors.
    pub report: &'a Reporter,
    /// The counters.
    pub summary: &'a mut Summary,
    /// Where `-v` lines go.
    pub out: &'a mut dyn Write,
}

impl std::fmt::Debug for Linker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linker")
            .field("dry_run", &self.dry_run)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// Why an inode was not (fully) linked.
enum Skip {
    /// It changed since it was hashed (counted, shown with `-v`).
    Changed,
    /// An error (reported).
    Failed,
}

impl Linker<'_> {
    /// Links every inode of `group` to its store entry, creating the entry
    /// from the first inode that verifies if there is none yet.
    pub fn group(&mut self, group: &Group) -> anyhow::Result<()> {
        let name = EntryName::new(&group.meta, &group.content);
        let mut todo = group.inodes.iter().copied();
        let entry = match self.store.find(&name, &group.meta, self.keying)? {
            Ok(entry) => entry,
            Err(_) if group.inodes.len() < 2 => return Ok(()),
            Err(_) if self.dry_run => {
                // Would copy the first inode and link the others; only the
                // state checks are done.
                let blocks = self.prepared.inodes[group.inodes[0]].st.allocated();
                self.summary.bytes_saved -= i64::try_from(blocks).unwrap_or(0);
                self.summary.entries_new += 1;
                self.summary.entries_used += 1;
                for i in todo {
                    self.dry_inode(i)?;
                }
                return Ok(());
            }
            Err(free) => match self.create(&name, group, free, &mut todo)? {
                Some(Created::Copied(entry, opened, first)) => {
                    self.summary.entries_new += 1;
                    self.summary.entries_used += 1;
                    self.summary.bytes_saved -= i64::try_from(entry.st.allocated()).unwrap_or(0);
                    self.swap_names(&entry, first, opened)?;
                    for i in todo {
                        self.inode(&entry, i)?;
                    }
                    return Ok(());
                }
                Some(Created::Adopted(entry, first)) => {
                    // Its names already are the entry's.
                    self.summary.entries_new += 1;
                    self.summary.entries_used += 1;
                    for n in self.prepared.inodes[first].names.clone() {
                        self.summary.linked += 1;
                        self.unifying(n)?;
                    }
                    for i in todo {
                        self.inode(&entry, i)?;
                    }
                    return Ok(());
                }
                None => return Ok(()),
            },
        };
        self.summary.entries_used += 1;
        for i in todo {
            if self.dry_run {
                self.dry_inode(i)?;
            } else {
                self.inode(&entry, i)?;
            }
        }
        Ok(())
    }

    /// Creates the store entry from the first inode of `todo` that
    /// verifies: that inode itself when it can be ([`Store::adopt`]: its
    /// owner is the group's and every name it has is one this run
    /// unifies), else a copy of it.
    fn create(
        &mut self,
        name: &EntryName,
        group: &Group,
        free: u32,
        todo: &mut impl Iterator<Item = usize>,
    ) -> anyhow::Result<Option<Created>> {
        let meta = &group.meta;
        for i in todo.by_ref() {
            let opened = match self.open_verified(i) {
                Ok(o) => o,
                Err(skip) => {
                    self.skipped(i, skip)?;
                    continue;
                }
            };
            let all_names = self.prepared.inodes[i].names.len() as u64 == opened.st.nlink;
            if all_names && (opened.st.uid, opened.st.gid) == (meta.uid, meta.gid) {
                let adopted =
                    self.store
                        .adopt(name, free, opened.fd.as_fd(), &opened.st, group.content)?;
                if let Some(pending) = adopted {
                    return Ok(Some(Created::Adopted(pending.publish()?, i)));
                }
                // Open for writing, or changed: left alone (a copy of a
                // file being written would not stay its twin).
                self.skipped(i, Skip::Changed)?;
                continue;
            }
            // Owned as the group is keyed (a guest file's owner in the
            // host's range, on a mount of id ranges).
            let owned = super::FileStat {
                uid: meta.uid,
                gid: meta.gid,
                ..opened.st
            };
            let pending = self.store.create(name, free, opened.fd.as_fd(), &owned)?;
            match self.verify_content(&opened, pending.fd.as_fd(), None) {
                Ok(()) => return Ok(Some(Created::Copied(pending.publish()?, opened, i))),
                Err(skip) => {
                    pending.discard();
                    self.skipped(i, skip)?;
                }
            }
        }
        Ok(None)
    }

    /// Verifies inode `i` against `entry` and swaps its names: the daemon
    /// compares and swaps where it can (one request), else the compare and
    /// then the swaps go through the mount.
    fn inode(&mut self, entry: &Entry, i: usize) -> anyhow::Result<()> {
        let opened = match self.open_verified(i) {
            Ok(o) => o,
            Err(skip) => return self.skipped(i, skip),
        };
        let names = self.prepared.inodes[i].names.clone();
        if let Some(done) = self.in_daemon(entry, &names, &opened, true) {
            return self.swapped(entry, &names, opened, Some(done), false);
        }
        match self.verify_content(&opened, entry.fd.as_fd(), Some(&entry.xattrs)) {
            Ok(()) => self.swap_names(entry, i, opened),
            Err(skip) => self.skipped(i, skip),
        }
    }

    /// Dry run: counts inode `i`'s names as linked if it is unchanged.
    fn dry_inode(&mut self, i: usize) -> anyhow::Result<()> {
        let opened = match self.open_verified(i) {
            Ok(o) => o,
            Err(skip) => return self.skipped(i, skip),
        };
        let inode = &self.prepared.inodes[i];
        for &n in &inode.names {
            self.unifying(n)?;
        }
        if inode.names.len() as u64 >= opened.st.nlink {
            self.summary.bytes_saved += i64::try_from(opened.st.allocated()).unwrap_or(0);
        }
        Ok(())
    }

    /// Opens inode `i`'s first name, which must be unchanged since the scan.
    fn open_verified(&self, i: usize) -> Result<Opened, Skip> {
        let inode = &self.prepared.inodes[i];
        let c = &self.prepared.candidates[inode.names[0]];
        let root = &self.roots[c.root];
        let fd = match root.open_at(OsStr::from_bytes(&c.rel), OFlags::RDONLY | OFlags::NONBLOCK) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Err(Skip::Changed),
            Err(e) => {
                self.report
                    .error(&root.display(&c.rel), std::io::Error::from(e));
                return Err(Skip::Failed);
            }
        };
        let st = self.fstat(&fd, c)?;
        if !inode.st.unchanged(&st) {
            return Err(Skip::Changed);
        }
        Ok(Opened { fd, st })
    }

    /// Compares the opened file's xattrs and bytes with `copy`'s (its
    /// xattrs `copy_xattrs` when known), then checks it did not change
    /// while being read.
    fn verify_content(
        &self,
        opened: &Opened,
        copy: BorrowedFd<'_>,
        copy_xattrs: Option<&super::xattrs::Xattrs>,
    ) -> Result<(), Skip> {
        let same_xattrs = super::xattrs::read(opened.fd.as_fd()).and_then(|mine| {
            Ok(match copy_xattrs {
                Some(theirs) => mine == *theirs,
                None => mine == super::xattrs::read(copy)?,
            })
        });
        let same = same_xattrs.and_then(|same| {
            if same {
                same_content(opened.fd.as_fd(), copy)
            } else {
                Ok(false)
            }
        });
        match same {
            Ok(true) => {}
            Ok(false) => return Err(Skip::Changed),
            Err(e) => {
                self.report
                    .message(&format!("comparing contents: {}", std::io::Error::from(e)));
                return Err(Skip::Failed);
            }
        }
        match FileStat::of(&opened.fd) {
            Ok(now) if opened.st.unchanged(&now) => Ok(()),
            Ok(_) => Err(Skip::Changed),
            Err(e) => {
                self.report
                    .message(&format!("fstat: {}", std::io::Error::from(e)));
                Err(Skip::Failed)
            }
        }
    }

    fn fstat(&self, fd: &OwnedFd, c: &Candidate) -> Result<FileStat, Skip> {
        rustix::fs::fstat(fd)
            .map(|s| FileStat::from(&s))
            .map_err(|e| {
                self.report
                    .error(&self.roots[c.root].display(&c.rel), std::io::Error::from(e));
                Skip::Failed
            })
    }

    /// Swaps every name of the verified inode `i` (open as `opened`) for a
    /// link to `entry`.
    fn swap_names(&mut self, entry: &Entry, i: usize, opened: Opened) -> anyhow::Result<()> {
        let names = self.prepared.inodes[i].names.clone();
        let done = self.in_daemon(entry, &names, &opened, false);
        self.swapped(entry, &names, opened, done, true)
    }

    /// Counts what the daemon did of the swaps of `names` (`done`), and
    /// swaps the rest through the mount. `verified`: the content was
    /// compared through the mount; else (the daemon compared, and stopped
    /// at a failure) it is compared again before the rest are swapped.
    fn swapped(
        &mut self,
        entry: &Entry,
        names: &[usize],
        mut opened: Opened,
        done: Option<Vec<Swapped>>,
        verified: bool,
    ) -> anyhow::Result<()> {
        let mut start = 0;
        if let Some(mut done) = done {
            // A node the daemon does not know (EBADF): that name and the
            // rest go through the mount.
            if let Some(k) = done.iter().position(|d| *d == Swapped::Failed(libc::EBADF)) {
                done.truncate(k);
            }
            for (k, result) in done.iter().enumerate() {
                let n = names[k];
                match *result {
                    Swapped::Linked => {
                        self.summary.linked += 1;
                        self.unifying(n)?;
                    }
                    Swapped::Changed => return self.skip_names(&names[k..], Skip::Changed),
                    Swapped::Failed(errno) => {
                        let c = &self.prepared.candidates[n];
                        self.report.error(
                            &self.roots[c.root].display(&c.rel),
                            std::io::Error::from_raw_os_error(errno),
                        );
                        self.summary.failed += 1;
                    }
                }
            }
            // The daemon stops at a failure: the names after it go
            // through the mount.
            start = done.len();
            let all = done.len() == names.len() && done.iter().all(|d| *d == Swapped::Linked);
            if all && names.len() as u64 == opened.st.nlink {
                // Its last name went: it is freed (no need to ask).
                self.summary.bytes_saved += i64::try_from(opened.st.allocated()).unwrap_or(0);
                return Ok(());
            }
            match FileStat::of(&opened.fd) {
                Ok(now) => opened.st = now,
                Err(_) => return self.skip_names(&names[start..], Skip::Failed),
            }
            if !verified && start < names.len() {
                let compared = self.verify_content(&opened, entry.fd.as_fd(), Some(&entry.xattrs));
                if let Err(skip) = compared {
                    return self.skip_names(&names[start..], skip);
                }
            }
        }
        for (k, &n) in names.iter().enumerate().skip(start) {
            let c = &self.prepared.candidates[n];
            let outcome = match FileStat::of(&opened.fd) {
                Ok(now) if opened.st.unchanged(&now) => self.swap(entry, c, &opened),
                Ok(_) => Err(Skip::Changed),
                Err(e) => {
                    self.report
                        .error(&self.roots[c.root].display(&c.rel), std::io::Error::from(e));
                    Err(Skip::Failed)
                }
            };
            match outcome {
                Ok(()) => {
                    self.summary.linked += 1;
                    self.unifying(n)?;
                    // Our own rename and unlink moved its ctime.
                    match FileStat::of(&opened.fd) {
                        Ok(now) => opened.st = now,
                        Err(_) => return self.skip_names(&names[k + 1..], Skip::Failed),
                    }
                }
                Err(Skip::Changed) => return self.skip_names(&names[k..], Skip::Changed),
                Err(Skip::Failed) => {
                    self.summary.failed += 1;
                }
            }
        }
        if opened.st.nlink == 0 {
            self.summary.bytes_saved += i64::try_from(opened.st.allocated()).unwrap_or(0);
        }
        Ok(())
    }

    /// Has the daemon swap `names` of the inode `opened` (checked
    /// unchanged just before) for links to `entry`, in one request, after
    /// comparing the two itself when `compare` (else hashify compared them
    /// through the mount); `None` when it cannot (no daemon reached, or one
    /// that does not know the request), and nothing was swapped.
    fn in_daemon(
        &self,
        entry: &Entry,
        names: &[usize],
        opened: &Opened,
        compare: bool,
    ) -> Option<Vec<Swapped>> {
        // The daemon checks each name's inode, size and mtime again.
        let daemon = self.daemon?;
        let (parents, swaps) = self.daemon_swaps(entry, names, opened)?;
        let done = if compare {
            let twin = Twin {
                ino: opened.st.ino,
                entry: entry.st.ino,
                size: opened.st.size,
                mtime: opened.st.mtime,
                ctime: opened.st.ctime,
            };
            daemon.unify_verified(twin, swaps)
        } else {
            daemon.unify(swaps)
        };
        drop(parents);
        done
    }

    /// The daemon's swaps of `names` of inode `opened` for links to
    /// `entry`, with their parents' descriptors, to be held open until the
    /// daemon answered (the kernel keeps each directory's node, which a
    /// swap names); `None` where a request cannot name them.
    fn daemon_swaps(
        &self,
        entry: &Entry,
        names: &[usize],
        opened: &Opened,
    ) -> Option<(Vec<OwnedFd>, Vec<Swap>)> {
        let mut parents = Vec::with_capacity(names.len());
        let mut swaps = Vec::with_capacity(names.len());
        for &n in names {
            let c = &self.prepared.candidates[n];
            let (parent_rel, name) = c.split();
            let parent = self.roots[c.root]
                .open_at(parent_rel, OFlags::PATH | OFlags::DIRECTORY)
                .ok()?;
            // Only its number, which never changes: from the kernel's
            // cache (each swap drops the directory's attributes, and
            // asking for them again would be a round trip per name).
            let cached = AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC;
            let node = rustix::fs::statx(&parent, "", cached, rustix::fs::StatxFlags::INO)
                .ok()?
                .stx_ino;
            // Every mount shows backing inode numbers (the daemon maps its
            // tree's root): 1 would be ambiguous.
            if node == vxfs::inode::ROOT_ID {
                return None;
            }
            parents.push(parent);
            swaps.push(Swap {
                parent: node,
                name: name.as_bytes().to_vec(),
                entry: entry.st.ino,
                ino: opened.st.ino,
                size: opened.st.size,
                mtime: opened.st.mtime,
            });
        }
        Some((parents, swaps))
    }

    /// Swaps one name; `Changed` if what it names is not the verified
    /// inode or was written meanwhile (then nothing is changed).
    fn swap(&self, entry: &Entry, c: &Candidate, opened: &Opened) -> Result<(), Skip> {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let root = &self.roots[c.root];
        let fail = |e: Errno| {
            self.report
                .error(&root.display(&c.rel), std::io::Error::from(e));
            Skip::Failed
        };
        let (parent_rel, name) = c.split();
        let parent = match root.open_at(parent_rel, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Err(Skip::Changed),
            Err(e) => return Err(fail(e)),
        };
        let tmp = loop {
            let tmp = OsString::from(format!(
                "{TMP_PREFIX}{}.{}",
                std::process::id(),
                SERIAL.fetch_add(1, Ordering::Relaxed)
            ));
            match rustix::fs::linkat(&entry.leaf, &entry.name, &parent, &tmp, AtFlags::empty()) {
                Ok(()) => break tmp,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(fail(e)),
            }
        };
        let unlink_tmp = || {
            let _ = rustix::fs::unlinkat(&parent, &tmp, AtFlags::empty());
        };
        if let Err(e) =
            rustix::fs::renameat_with(&parent, &tmp, &parent, name, RenameFlags::EXCHANGE)
        {
            unlink_tmp();
            return Err(if e == Errno::NOENT {
                Skip::Changed
            } else {
                fail(e)
            });
        }
        let got = rustix::fs::statat(&parent, &tmp, AtFlags::SYMLINK_NOFOLLOW);
        let now = FileStat::of(&opened.fd);
        let same = match (&got, &now) {
            (Ok(got), Ok(now)) => {
                (got.st_dev, got.st_ino) == (opened.st.dev, opened.st.ino)
                    && (now.size, now.mtime) == (opened.st.size, opened.st.mtime)
            }
            _ => false,
        };
        if !same {
            // Put back what was there; the name never went missing.
            if let Err(e) =
                rustix::fs::renameat_with(&parent, &tmp, &parent, name, RenameFlags::EXCHANGE)
            {
                return Err(fail(e));
            }
            unlink_tmp();
            return Err(Skip::Changed);
        }
        rustix::fs::unlinkat(&parent, &tmp, AtFlags::empty()).map_err(fail)
    }

    /// Counts the names `names` as not linked.
    fn skip_names(&mut self, names: &[usize], why: Skip) -> anyhow::Result<()> {
        for &n in names {
            match why {
                Skip::Changed => {
                    self.summary.changed += 1;
                    if self.verbose > 0 {
                        writeln!(
                            self.out,
                            "changed during the run, not linked: '{}'",
                            self.shown(n)
                        )?;
                    }
                }
                Skip::Failed => self.summary.failed += 1,
            }
        }
        Ok(())
    }

    /// Counts all names of inode `i` as not linked.
    fn skipped(&mut self, i: usize, why: Skip) -> anyhow::Result<()> {
        let names = self.prepared.inodes[i].names.clone();
        self.skip_names(&names, why)
    }

    /// Counts name `n` as linked (dry run: as it would be), printing the
    /// `-v` line.
    fn unifying(&mut self, n: usize) -> anyhow::Result<()> {
        if self.dry_run {
            self.summary.linked += 1;
        }
        if self.verbose > 0 {
            writeln!(self.out, "unifying '{}'", self.shown(n))?;
        }
        Ok(())
    }

    fn shown(&self, n: usize) -> String {
        let c = &self.prepared.candidates[n];
        String::from_utf8_lossy(&self.roots[c.root].display(&c.rel)).into_owned()
    }
}

/// A new store entry and the inode it was made from.
enum Created {
    /// A copy of inode `.2`, open as `.1`, whose names are still to swap.
    Copied(Entry, Opened, usize),
    /// Inode `.1` itself.
    Adopted(Entry, usize),
}

/// A verified file, open, with the state it must keep.
struct Opened {
    fd: OwnedFd,
    st: FileStat,
}

/// Whether `a` and `b` hold the same bytes (read from their starts).
pub fn same_content(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<bool, Errno> {
    vxfs::unify::same_content(a, b, BLOCK)
}

/// Copies the first `size` bytes of `src` into the empty `dst`, keeping
/// holes: only the data ranges `SEEK_DATA`/`SEEK_HOLE` report are copied
/// (with `copy_file_range`, or read and write where it is refused), and
/// the size is set at the end.
pub fn copy_sparse(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> Result<(), Errno> {
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data after pos: the rest is a hole.
            Err(Errno::NXIO) => break,
            // No SEEK_DATA support: all of it is data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) if pos == 0 => 0,
            Err(e) => return Err(e),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(Errno::INVAL | Errno::OPNOTSUPP) => size,
            Err(e) => return Err(e),
        };
        copy_range(src, dst, data, hole - data)?;
        pos = hole;
    }
    rustix::fs::ftruncate(dst, size)
}

/// Copies `len` bytes at `offset` from `src` to the same offset of `dst`.
fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    offset: u64,
    len: u64,
) -> Result<(), Errno> {
    let end = offset + len;
    let (mut from, mut to) = (offset, offset);
    while from < end {
        let chunk = usize::try_from(end - from)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), chunk) {
            Ok(0) => return Err(Errno::NODATA),
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                return copy_range_rw(src, dst, from, end - from);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`copy_range`] by `pread`/`pwrite`.
pub fn copy_range_rw(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    offset: u64,
    len: u64,
) -> Result<(), Errno> {
    let mut buf = vec![0u8; BLOCK];
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = read_full(src, &mut buf[..want], pos)?;
        if n == 0 {
            // The source shrank under us; the comparison will notice.
            return Err(Errno::NODATA);
        }
        let mut written = 0;
        while written < n {
            match rustix::io::pwrite(dst, &buf[written..n], pos + written as u64) {
                Ok(w) => written += w,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    fn file(dir: &std::path::Path, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(name))
            .unwrap()
    }

    #[test]
    fn sparse_copies_keep_holes_and_bytes() {
        let t = tempfile::tempdir().unwrap();
        let src = file(t.path(), "src");
        // data, 8 MiB hole, data, trailing hole
        src.write_all_at(&[1u8; 5000], 0).unwrap();
        src.write_all_at(&[2u8; 70_000], 8 << 20).unwrap();
        let size = (16 << 20) + 3;
        src.set_len(size).unwrap();
        let dst = file(t.path(), "dst");
        copy_sparse(src.as_fd(), dst.as_fd(), size).unwrap();
        assert_eq!(dst.metadata().unwrap().len(), size);
        assert!(same_content(src.as_fd(), dst.as_fd()).unwrap());
        let (a, b) = (src.metadata().unwrap(), dst.metadata().unwrap());
        assert!(
            b.blocks() <= a.blocks() + 8,
            "holes kept: {} vs {}",
            b.blocks(),
            a.blocks()
        );
        assert!(b.blocks() * 512 < 1 << 20, "not filled in: {}", b.blocks());

        // The read/write fallback copies the same bytes.
        let rw = file(t.path(), "rw");
        copy_range_rw(src.as_fd(), rw.as_fd(), 0, size).unwrap();
        assert!(same_content(src.as_fd(), rw.as_fd()).unwrap());
        // A source shorter than claimed is an error, not a silent short copy.
        let short = file(t.path(), "short");
        assert_eq!(
            copy_range_rw(src.as_fd(), short.as_fd(), size - 3, 10),
            Err(Errno::NODATA)
        );

        // An all-hole file and an empty one.
        let holes = file(t.path(), "holes");
        holes.set_len(1 << 20).unwrap();
        let out = file(t.path(), "out");
        copy_sparse(holes.as_fd(), out.as_fd(), 1 << 20).unwrap();
        assert_eq!(out.metadata().unwrap().len(), 1 << 20);
        assert!(same_content(holes.as_fd(), out.as_fd()).unwrap());
        let empty = file(t.path(), "empty");
        let out2 = file(t.path(), "out2");
        copy_sparse(empty.as_fd(), out2.as_fd(), 0).unwrap();
        assert_eq!(out2.metadata().unwrap().len(), 0);
    }

    #[test]
    fn comparisons() {
        let t = tempfile::tempdir().unwrap();
        let a = file(t.path(), "a");
        let b = file(t.path(), "b");
        let big = vec![7u8; BLOCK * 2 + 5];
        a.write_all_at(&big, 0).unwrap();
        b.write_all_at(&big, 0).unwrap();
        assert!(same_content(a.as_fd(), b.as_fd()).unwrap());
        b.write_all_at(&[8], BLOCK as u64 * 2 + 4).unwrap();
        assert!(!same_content(a.as_fd(), b.as_fd()).unwrap(), "last byte");
        b.write_all_at(&[7], BLOCK as u64 * 2 + 4).unwrap();
        b.write_all_at(&[7], BLOCK as u64 * 2 + 5).unwrap();
        assert!(!same_content(a.as_fd(), b.as_fd()).unwrap(), "longer");
        let (e1, e2) = (file(t.path(), "e1"), file(t.path(), "e2"));
        assert!(same_content(e1.as_fd(), e2.as_fd()).unwrap());
    }
}

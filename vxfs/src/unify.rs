//! hashify's swap of a guest's name for a link to a store entry, done by
//! the daemon on its own descriptors (the control request
//! [`Request::Unify`](crate::control::Request::Unify)): through the mount
//! each swap took five round trips (link, exchange, lookup, unlink and the
//! attributes), here one request carries every name of an inode.
//!
//! The steps are the mount's own operations, with the host administrator
//! as the caller, so the checks, the accounting and the inode table are
//! those of any link, rename and unlink: `link(entry, DIR/TMP)`, then
//! `RENAME_EXCHANGE(TMP, NAME)`; what came back must be the inode hashify
//! verified, with the size and mtime it verified (else the two are
//! exchanged back: the guest replaced or wrote its file meanwhile), and
//! only then is `TMP` unlinked. The name never goes missing. The kernels
//! of the mounts are told at once which names and attributes changed,
//! before the reply, so hashify's caller sees the new links as soon as it
//! returns (with or without the watch).
//!
//! With [`Request::UnifyVerified`](crate::control::Request::UnifyVerified)
//! the daemon also does hashify's last check itself, the byte and xattr
//! compare of the inode with the store entry ([`Vxfs::verified`]): on its
//! own descriptors, where through the mount every block was a READ. That
//! is safe only while the backing file holds everything written to the
//! inode, which is while no handle has it open for writing: vxfs keeps no
//! dirty pages (no writeback cache), and the kernel writes a shared
//! mapping's dirty pages back when the mapping goes, before the handle's
//! RELEASE. So the compare runs under the inode's `write_lock`, once its
//! writers are gone (else the inode counts as changed), and the swaps
//! follow under the same lock: no writer can open it between the compare
//! and the swaps.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, OFlags, RenameFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::creds::Caller;
use crate::error::Result;
use crate::fs::{Vxfs, stat_fd, writers_gone};
use crate::inode::{Inode, ROOT_ID};
use crate::view::Stale;

/// One name to swap, by the inode numbers any mount of the daemon shows
/// (`st_ino`: the core's node id, but for the tree's root, which shows its
/// backing inode number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    /// The directory holding the name.
    pub parent: u64,
    /// The name (one component).
    pub name: Vec<u8>,
    /// The store entry to link there.
    pub entry: u64,
    /// The inode the name must still hold: its node id, size and mtime.
    pub ino: u64,
    /// Its size.
    pub size: u64,
    /// Its mtime (seconds, nanoseconds).
    pub mtime: (i64, u32),
}

/// What became of a [`Swap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Swapped {
    /// The name is a link to the entry now.
    Linked,
    /// The name held another inode, or the inode changed: left as it was.
    Changed,
    /// An error (the errno): left as it was.
    Failed(i32),
}

/// What hashify saw of an inode it asks the daemon to compare with a
/// store entry ([`Vxfs::verified`]): the inode must still have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Twin {
    /// The inode (`st_ino` as the mounts show it).
    pub ino: u64,
    /// The store entry it must equal (`st_ino`).
    pub entry: u64,
    /// Its size.
    pub size: u64,
    /// Its mtime (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Its ctime, which any change of content or attributes moves.
    pub ctime: (i64, u32),
}

/// The outcome of [`Vxfs::verified`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verified<T> {
    /// The inode is the entry's twin; what the swaps made.
    Done(T),
    /// It is not, or is being written (`Changed`), or the compare failed:
    /// what the first swap became instead. Nothing was swapped.
    Refused(Swapped),
    /// The daemon does not know the inode or the entry (hashify then
    /// compares through the mount). Nothing was swapped.
    Unknown,
}

/// Read unit of the daemon's compare.
const COMPARE_BLOCK: usize = 256 << 10;

/// Whether the files open as `a` and `b` have the same bytes, read in
/// blocks of `block` bytes.
pub fn same_content(
    a: BorrowedFd<'_>,
    b: BorrowedFd<'_>,
    block: usize,
) -> std::result::Result<bool, Errno> {
    same_content_in(a, b, &mut vec![0u8; block], &mut vec![0u8; block])
}

/// [`same_content`] reading into `x` and `y` (blocks of their length, the
/// same), so that a caller comparing many files reuses them.
fn same_content_in(
    a: BorrowedFd<'_>,
    b: BorrowedFd<'_>,
    x: &mut [u8],
    y: &mut [u8],
) -> std::result::Result<bool, Errno> {
    let mut offset = 0u64;
    loop {
        let n = read_full(a, x, offset)?;
        let m = read_full(b, y, offset)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n < x.len() {
            return Ok(true);
        }
        offset += n as u64;
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    offset: u64,
) -> std::result::Result<usize, Errno> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::pread(fd, &mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Vxfs {
    /// Compares inode `twin.ino` with store entry `twin.entry` on the
    /// daemon's own descriptors (see the module's documentation), and if
    /// it is still what hashify saw and has the entry's bytes and kept
    /// xattrs, runs `swaps` while no writer can open it.
    pub fn verified<T>(&self, twin: &Twin, swaps: impl FnOnce() -> T) -> Verified<T> {
        let inodes = self.inodes();
        let (Ok(inode), Ok(entry)) = (
            inodes.get(self.node_of(twin.ino)),
            inodes.get(self.node_of(twin.entry)),
        ) else {
            return Verified::Unknown;
        };
        if (inode.kind, entry.kind) != (FileType::RegularFile, FileType::RegularFile) {
            return Verified::Refused(Swapped::Changed);
        }
        // New writable opens wait on this lock (`op_open`).
        let _serial = inode.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !writers_gone(&inode) {
            return Verified::Refused(Swapped::Changed);
        }
        match self.twins(&inode, &entry, twin) {
            Ok(true) => Verified::Done(swaps()),
            Ok(false) => Verified::Refused(Swapped::Changed),
            Err(e) => Verified::Refused(Swapped::Failed(e.errno())),
        }
    }

    /// Whether `inode` still has `twin`'s size and times and the bytes and
    /// kept xattrs of `entry`, and kept its times through the compare.
    fn twins(&self, inode: &Inode, entry: &Inode, twin: &Twin) -> Result<bool> {
        let unchanged = |fd: BorrowedFd<'_>| -> Result<bool> {
            let st = stat_fd(fd)?;
            let mtime = (st.st_mtime, st.st_mtime_nsec as u32);
            let ctime = (st.st_ctime, st.st_ctime_nsec as u32);
            Ok((st.st_size as u64, mtime, ctime) == (twin.size, twin.mtime, twin.ctime))
        };
        let flags = OFlags::RDONLY | OFlags::NOATIME;
        let mine = self.reopen(inode, flags)?;
        if !unchanged(mine.as_fd())? {
            return Ok(false);
        }
        let theirs = self.reopen(entry, flags)?;
        let kept = |fd: BorrowedFd<'_>| crate::cow::kept_xattrs(Self::proc_path(fd).as_c_str());
        if kept(mine.as_fd())? != kept(theirs.as_fd())? {
            return Ok(false);
        }
        thread_local! {
            /// The compare's blocks, kept by each thread that compares
            /// (allocating and freeing them per file cost more than the
            /// reads: zeroing, and the allocator's trims shooting down
            /// the other CPUs' TLBs).
            static BLOCKS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let same = BLOCKS.with_borrow_mut(|blocks| {
            blocks.resize(2 * COMPARE_BLOCK, 0);
            let (x, y) = blocks.split_at_mut(COMPARE_BLOCK);
            same_content_in(mine.as_fd(), theirs.as_fd(), x, y)
        })?;
        if !same {
            return Ok(false);
        }
        unchanged(mine.as_fd())
    }

    /// Swaps `swap.name` for a link to `swap.entry`, through the temporary
    /// name `tmp` (one of hashify's reserved `.vxfs-hashify.PID.N`).
    pub fn unify(&self, caller: &Caller, swap: &Swap, tmp: &OsStr) -> Swapped {
        let swap = &Swap {
            parent: self.node_of(swap.parent),
            entry: self.node_of(swap.entry),
            ino: self.node_of(swap.ino),
            ..swap.clone()
        };
        let result = self.swap_name(caller, swap, tmp);
        // Whatever happened, the kernels may hold the old state.
        let name = OsStr::from_bytes(&swap.name);
        for kernel in self.kernels().all() {
            if kernel.knows(swap.parent) {
                kernel.drop_stale(&Stale::Entry(swap.parent, name.to_os_string()));
                kernel.drop_stale(&Stale::Entry(swap.parent, tmp.to_os_string()));
                kernel.drop_stale(&Stale::Data(swap.parent));
            }
            for id in [swap.ino, swap.entry] {
                if kernel.knows(id) {
                    kernel.drop_stale(&Stale::Attrs(id));
                }
            }
        }
        match result {
            Ok(true) => Swapped::Linked,
            Ok(false) => Swapped::Changed,
            // The name went away meanwhile.
            Err(e) if e.is(rustix::io::Errno::NOENT) => Swapped::Changed,
            Err(e) => Swapped::Failed(e.errno()),
        }
    }

    /// The node id of the inode a mount shows as `st_ino`.
    fn node_of(&self, st_ino: u64) -> u64 {
        match self.inodes().get(ROOT_ID) {
            Ok(root) if root.key.ino == st_ino => ROOT_ID,
            _ => st_ino,
        }
    }

    fn swap_name(&self, caller: &Caller, swap: &Swap, tmp: &OsStr) -> Result<bool> {
        let (parent, name) = (swap.parent, OsStr::from_bytes(&swap.name));
        let linked = self.op_link(caller, swap.entry, parent, tmp)?;
        self.op_forget(linked.inode.id, 1);
        let exchange = RenameFlags::EXCHANGE.bits();
        if let Err(e) = self.op_rename(caller, parent, tmp, parent, name, exchange) {
            let _ = self.op_unlink(caller, parent, tmp);
            return Err(e);
        }
        let back = self.op_lookup(caller, parent, tmp).map(|e| {
            self.op_forget(e.inode.id, 1);
            let st = &e.stat;
            (
                e.inode.id,
                st.st_size as u64,
                (st.st_mtime, st.st_mtime_nsec as u32),
            )
        });
        if back.ok() != Some((swap.ino, swap.size, swap.mtime)) {
            // Put back what was there.
            self.op_rename(caller, parent, tmp, parent, name, exchange)?;
            self.op_unlink(caller, parent, tmp)?;
            return Ok(false);
        }
        self.op_unlink(caller, parent, tmp)?;
        Ok(true)
    }
}

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

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::RenameFlags;
use serde::{Deserialize, Serialize};

use crate::creds::Caller;
use crate::error::Result;
use crate::fs::Vxfs;
use crate::inode::ROOT_ID;
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

impl Vxfs {
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

//! Disk-limit accounting for one mount: the in-memory counters
//! ([`DiskLimits`]), loaded from the index or recounted at mount, and saved
//! back in batches by a background thread and at unmount.
//!
//! Accounting is on whenever tagging is (`-o xid=...`) unless
//! `-o dlimits=off`; without tags every inode is the host's and there is
//! nothing to account.

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::dlimit::{Account, DiskLimits, Limit};
use crate::index::{Index, IndexError};
use crate::inode::Inode;
use crate::recount;
use crate::tagging::Xid;

/// How often the counters are saved while mounted.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Why accounting could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Another mount holds the index.
    #[error("{0}")]
    Claim(std::io::Error),
    /// The recount walk failed.
    #[error("recounting usage under SOURCE: {0}")]
    Recount(Errno),
}

/// The accounting state of a mount.
#[derive(Debug)]
pub struct Accounting {
    /// Counters and limits per xid.
    pub limits: DiskLimits,
    index: Mutex<Index>,
    /// Where the index is.
    path: std::path::PathBuf,
    /// This mount's exclusive claim on the index file (given up at
    /// shutdown, once the counters are saved).
    claim: Mutex<Option<crate::index::MountClaim>>,
    /// Set at shutdown to stop the saver thread.
    stop: (Mutex<bool>, Condvar),
}

impl Accounting {
    /// Opens the index at `path`, loads limits, and loads the saved usage
    /// if the last mount ended cleanly, else recounts the tree under `root`.
    pub fn open(
        path: &Path,
        root: BorrowedFd<'_>,
        threads: usize,
    ) -> Result<Accounting, AccountingError> {
        let (mut index, _rebuilt) = Index::open(path)?;
        let claim = crate::index::claim(path).map_err(AccountingError::Claim)?;
        let limits = DiskLimits::default();
        for (xid, limit) in index.limits()? {
            limits.account(xid).set_limit(Some(limit));
        }
        match index.clean_usage()? {
            Some(saved) => {
                for (xid, usage) in saved {
                    limits.account(xid).set_usage(usage);
                }
            }
            None => {
                let started = Instant::now();
                // No daemon serves the tree (the claim is ours): what a
                // crash left is removed, not counted.
                let (counts, swept) = recount::recount_sweeping(root, true, threads)
                    .map_err(AccountingError::Recount)?;
                log::info!(
                    "recounted usage of {} contexts in {:?} (no clean counters in {}){}",
                    counts.len(),
                    started.elapsed(),
                    path.display(),
                    if swept > 0 {
                        format!("; removed {swept} temporary names left by a crash")
                    } else {
                        String::new()
                    }
                );
                for (xid, usage) in counts {
                    limits.account(xid).set_usage(usage);
                }
            }
        }
        // From now on the saved figures are "in use", not clean.
        index.save_usage(&Self::snapshot(&limits), false)?;
        Ok(Accounting {
            limits,
            index: Mutex::new(index),
            path: path.to_path_buf(),
            claim: Mutex::new(Some(claim)),
            stop: (Mutex::new(false), Condvar::new()),
        })
    }

    /// Where the index is.
    pub fn index_path(&self) -> &Path {
        &self.path
    }

    /// The account of context `xid`.
    pub fn account(&self, xid: Xid) -> Arc<Account> {
        self.limits.account(xid)
    }

    /// Sets or removes a context's limit, in the index and at once.
    pub fn set_limit(&self, xid: Xid, limit: Option<Limit>) -> Result<(), IndexError> {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.set_limit(xid, limit)?;
        self.limits.account(xid).set_limit(limit);
        Ok(())
    }

    /// An inode and the `space` it allocated no longer count for `xid`.
    pub fn credit(&self, xid: Xid, space: u64) {
        let account = self.account(xid);
        account.free_inode();
        account.free_space(space);
    }

    /// Moves an inode's charge from one context to another (a retag).
    pub fn transfer(&self, from: Xid, to: Xid, space: u64) {
        if from == to {
            return;
        }
        let (old, new) = (self.account(from), self.account(to));
        old.free_inode();
        old.free_space(space);
        new.force_inode();
        new.charge_space(space);
    }

    fn snapshot(limits: &DiskLimits) -> Vec<(Xid, crate::dlimit::Usage)> {
        limits.all().into_iter().map(|(x, _, u)| (x, u)).collect()
    }

    /// Saves the counters; `clean` only at unmount.
    pub fn save(&self, clean: bool) {
        let usage = Self::snapshot(&self.limits);
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = index.save_usage(&usage, clean) {
            log::error!("saving usage counters: {e}");
        }
    }

    /// Saves every [`SAVE_INTERVAL`] until [`Accounting::shutdown`].
    pub fn spawn_saver(self: &Arc<Self>) -> std::io::Result<()> {
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name("vxfs-saver".into())
            .spawn(move || {
                let (lock, wake) = &this.stop;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*stopped {
                    let (guard, _) = wake
                        .wait_timeout(stopped, SAVE_INTERVAL)
                        .unwrap_or_else(|e| e.into_inner());
                    stopped = guard;
                    if !*stopped {
                        this.save(false);
                    }
                }
            })
            .map(drop)
    }

    /// Final save, marking the counters clean, and stops the saver.
    pub fn shutdown(&self) {
        let (lock, wake) = &self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        self.save(true);
        // Saved: the next daemon of this index may start now.
        self.claim.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A new inode admitted against its creator's limits (one inode, plus a
/// space reservation for what creating it allocates); given back on drop
/// unless [`Admission::commit`]ted.
#[derive(Debug)]
pub struct Admission {
    account: Option<Arc<Account>>,
    reserved: u64,
}

impl Admission {
    /// Nothing to account.
    pub const NONE: Admission = Admission {
        account: None,
        reserved: 0,
    };

    /// Takes an inode and `reserve` bytes from `account`, or `ENOSPC`.
    pub fn take(account: Arc<Account>, reserve: u64) -> Result<Admission, Errno> {
        account.alloc_inode()?;
        let admission = Admission {
            reserved: account.reserve_space(reserve),
            account: Some(account),
        };
        if admission.reserved < reserve {
            return Err(Errno::NOSPC);
        }
        Ok(admission)
    }

    /// The inode exists: replace the reservation with its real allocation.
    pub fn commit(self, inode: &Inode) {
        let bytes = inode.charge.lock().unwrap_or_else(|e| e.into_inner()).bytes;
        self.commit_space(bytes);
    }

    /// The inode exists and allocates `space` bytes.
    pub fn commit_space(mut self, space: u64) {
        if let Some(account) = self.account.take() {
            account.charge_space(space);
            account.free_space(self.reserved);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(account) = self.account.take() {
            account.free_space(self.reserved);
            account.free_inode();
        }
    }
}

/// Room for a block an operation may allocate (a directory growing by a
/// new name, a large xattr, a long symlink target), taken from a limited
/// account before the operation and given back after its allocation was
/// measured (so concurrent operations never see room twice).
#[derive(Debug)]
pub struct Growth {
    account: Option<Arc<Account>>,
    reserved: u64,
}

impl Growth {
    /// Nothing to reserve.
    pub const NONE: Growth = Growth {
        account: None,
        reserved: 0,
    };

    /// Reserves `bytes` from `account` when it has a space limit, or
    /// `ENOSPC` when they do not fit.
    pub fn take(account: Arc<Account>, bytes: u64) -> Result<Growth, Errno> {
        if account.limit().space.is_none() {
            return Ok(Growth::NONE);
        }
        let reserved = account.reserve_space(bytes);
        let growth = Growth {
            account: Some(account),
            reserved,
        };
        if reserved < bytes {
            return Err(Errno::NOSPC);
        }
        Ok(growth)
    }
}

impl Drop for Growth {
    fn drop(&mut self) {
        if let Some(account) = self.account.take() {
            account.free_space(self.reserved);
        }
    }
}

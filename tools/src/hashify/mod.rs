//! `hashify [options] DIR...`: unifies identical files across guest trees
//! into hard links to one shared, immutable copy (docs/VSERVER.md §5,
//! util-vserver's vhashify).
//!
//! # Phases
//!
//! 1. [`scan`]: walk the guest roots on one vxfs mount, apply the exclude
//!    list, keep regular files of at least 16 bytes that are not already
//!    linked to the hash store.
//! 2. Narrow down before reading anything: only files whose size, mode,
//!    owner, group and mtime (unless `--ignore-mtime`) are shared with
//!    another inode or with a store entry can be unified (§5.4).
//! 3. [`hash`]: BLAKE3 of each remaining inode's content on a pool of
//!    threads, reusing the [`db`] of earlier runs when (ino, size, mtime,
//!    ctime) are unchanged.
//! 4. [`link`]: per group of equal content and metadata, find or create
//!    the shared copy in the [`store`], then replace each guest name by a
//!    hard link to it, after re-checking that the file is unchanged and
//!    byte-comparing it with the shared copy.
//!
//! # Accounting
//!
//! hashify runs as the host administrator through a vxfs mount, so the
//! daemon accounts for it: the shared copy is created by the host and so
//! tagged 0, and replacing a guest's last name of an inode credits the
//! guest. The store directory carries the barrier flag, so guests cannot
//! use it; the shared copies carry immutable + iunlink, so a guest writing
//! its name breaks the link (copy-on-write) instead of changing the others'.
//!
//! # Test hook
//!
//! [`Session::prepare`] (phases 1-3) and [`Session::apply`] (phase 4) are
//! separate so that tests can change a file in between and check that it
//! is left alone.

pub mod daemon;
pub mod db;
pub mod du;
pub mod exclude;
pub mod hash;
pub mod link;
pub mod options;
pub mod scan;
pub mod store;
pub mod summary;
pub mod xattrs;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rustix::fs::{Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::cli::{CliError, Outcome, UsageError};
use crate::mountinfo::MountTable;

pub use options::{Options, USAGE};
pub use summary::Summary;

/// Linking threads per `--jobs` (hashing) thread.
const LINKERS_PER_JOB: usize = 2;

/// What hashify keeps of a file's `lstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileStat {
    /// Device.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Hard links.
    pub nlink: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    /// Last access, (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Last modification.
    pub mtime: (i64, u32),
    /// Last status change.
    pub ctime: (i64, u32),
}

impl From<&Stat> for FileStat {
    fn from(st: &Stat) -> FileStat {
        let ts = |s: i64, ns: i64| (s, u32::try_from(ns).unwrap_or(0));
        FileStat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            nlink: st.st_nlink,
            blocks: u64::try_from(st.st_blocks).unwrap_or(0),
            atime: ts(st.st_atime, st.st_atime_nsec as i64),
            mtime: ts(st.st_mtime, st.st_mtime_nsec as i64),
            ctime: ts(st.st_ctime, st.st_ctime_nsec as i64),
        }
    }
}

impl FileStat {
    /// `fstat` of `fd` but for its atime, which the kernel holds stale
    /// after every read through the mount: asking for it would cost a
    /// GETATTR each time (`statx` without `STATX_ATIME`; the atime field is
    /// what the kernel has).
    pub fn of(fd: impl AsFd) -> Result<FileStat, Errno> {
        use rustix::fs::StatxFlags as F;
        let wanted = F::TYPE
            | F::MODE
            | F::NLINK
            | F::UID
            | F::GID
            | F::MTIME
            | F::CTIME
            | F::INO
            | F::SIZE
            | F::BLOCKS;
        let x = rustix::fs::statx(fd, "", rustix::fs::AtFlags::EMPTY_PATH, wanted)?;
        let ts = |t: rustix::fs::StatxTimestamp| (t.tv_sec, t.tv_nsec);
        Ok(FileStat {
            dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
            ino: x.stx_ino,
            mode: u32::from(x.stx_mode),
            uid: x.stx_uid,
            gid: x.stx_gid,
            size: x.stx_size,
            nlink: u64::from(x.stx_nlink),
            blocks: x.stx_blocks,
            atime: ts(x.stx_atime),
            mtime: ts(x.stx_mtime),
            ctime: ts(x.stx_ctime),
        })
    }

    /// Whether `now` is the same inode with the same content and metadata
    /// as `self` (ctime moves with every change, content or attribute).
    pub fn unchanged(&self, now: &FileStat) -> bool {
        (self.dev, self.ino, self.size, self.mtime, self.ctime)
            == (now.dev, now.ino, now.size, now.mtime, now.ctime)
            && (self.mode, self.uid, self.gid) == (now.mode, now.uid, now.gid)
    }

    /// Whether `backing`, a stat of a file on the mount's SOURCE, is the
    /// backing inode of `self` (a stat through the mount) unchanged: the
    /// inode number (the mount shows the backing one), type, size, mtime
    /// and ctime (owners may be shown shifted).
    pub fn backed_by(&self, backing: &FileStat) -> bool {
        (self.ino, self.mode, self.size, self.mtime, self.ctime)
            == (
                backing.ino,
                backing.mode,
                backing.size,
                backing.mtime,
                backing.ctime,
            )
    }

    /// Bytes allocated.
    pub fn allocated(&self) -> u64 {
        self.blocks.saturating_mul(512)
    }

    /// The metadata that must match for files to share an inode.
    pub fn meta(&self, k: &Keying) -> MetaKey {
        let (uid, gid) = k.owner(self.uid, self.gid);
        MetaKey {
            size: self.size,
            mode: self.mode,
            uid,
            gid,
            mtime: (!k.ignore_mtime).then_some(self.mtime),
        }
    }
}

/// How files are compared: with or without their mtime, and, on a mount
/// whose contexts are id ranges, with owners shifted by whole ranges
/// counted as equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keying {
    /// `--ignore-mtime`.
    pub ignore_mtime: bool,
    /// The mount's id ranges (`xid=uid/SIZE:FIRST-LAST` or `gid/...`).
    pub ranges: Option<vxfs::tagging::IdRanges>,
}

impl Keying {
    /// The owner a file is compared (and shared) with: a guest file whose
    /// uid and gid are both in one guest context's range is taken as the
    /// same ids in the host's range, where the shared copy is owned (each
    /// guest's single-guest view shows it shifted back into its range).
    pub fn owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        let Some(r) = self.ranges else {
            return (uid, gid);
        };
        let (cu, cg) = (uid / r.size, gid / r.size);
        if cu == cg && (r.first..=r.last).contains(&cu) {
            (uid % r.size, gid % r.size)
        } else {
            (uid, gid)
        }
    }
}

/// What must be equal, besides the content, for two files to be unified
/// (§5.4: mode, uid, gid, size, and mtime unless `--ignore-mtime`; the
/// mtime to the nanosecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetaKey {
    /// Size.
    pub size: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, `None` with `--ignore-mtime`.
    pub mtime: Option<(i64, u32)>,
}

/// A BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.hex())
    }
}

impl Digest {
    /// Lowercase hex.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A guest root: its canonical path and an open descriptor every file
/// below it is reached through (never by path from `/`).
#[derive(Debug)]
pub struct Root {
    /// Canonical path, for messages.
    pub path: PathBuf,
    /// `O_RDONLY | O_DIRECTORY` descriptor.
    pub fd: OwnedFd,
    /// The same directory on the mount's SOURCE (`O_PATH`), when this
    /// host can reach it: the hash phase reads from there, at the backing
    /// filesystem's speed ([`Root::open_backing`]).
    pub backing: Option<OwnedFd>,
}

impl Root {
    /// Opens the directory `path` (which must not be a symlink itself).
    pub fn open(path: &Path) -> Result<Root, Errno> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            path: path.to_path_buf(),
            fd,
            backing: None,
        })
    }

    /// The backing file of `rel` for reading, if it is the inode `st` (a
    /// stat through the mount) unchanged: opened `O_PATH` beneath the
    /// backing root without following any symlink or crossing a mount,
    /// checked, then reopened for reading (so nothing but that regular
    /// file is ever opened for real).
    pub fn open_backing(&self, rel: &OsStr, st: &FileStat) -> Option<OwnedFd> {
        let backing = self.backing.as_ref()?;
        let path = rustix::fs::openat2(
            backing,
            rel,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS
                | ResolveFlags::NO_MAGICLINKS
                | ResolveFlags::BENEATH
                | ResolveFlags::NO_XDEV,
        )
        .ok()?;
        let now = FileStat::from(&rustix::fs::fstat(&path).ok()?);
        // The same mode as the scan's regular file: a regular file too.
        if !st.backed_by(&now) {
            return None;
        }
        let fd = rustix::fs::open(
            xattrs::path_of(path.as_fd()),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let again = FileStat::from(&rustix::fs::fstat(&fd).ok()?);
        (again.ino == now.ino && again.dev == now.dev).then_some(fd)
    }

    /// `ROOT/rel` for messages.
    pub fn display(&self, rel: &[u8]) -> Vec<u8> {
        let mut out = self.path.as_os_str().as_bytes().to_vec();
        if !rel.is_empty() {
            if !out.ends_with(b"/") {
                out.push(b'/');
            }
            out.extend_from_slice(rel);
        }
        out
    }

    /// Opens `rel` below the root with `flags`, resolving no symlink at
    /// any level, never leaving the root or its filesystem.
    pub fn open_at(&self, rel: &OsStr, flags: OFlags) -> Result<OwnedFd, Errno> {
        rustix::fs::openat2(
            self.fd.as_fd(),
            rel,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_XDEV,
        )
    }
}

/// Where messages go: errors and warnings on stderr as `hashify: ...`,
/// without garbling the progress line.
#[derive(Debug, Default)]
pub struct Reporter {
    /// The progress bar on the terminal, while a phase runs (messages are
    /// printed above it).
    bar: Mutex<Option<indicatif::ProgressBar>>,
    /// Tests silence it.
    quiet: bool,
    /// `--progress` with stderr not a terminal: a plain line per second
    /// instead of a bar (a log file gets them one under the other).
    plain: std::sync::atomic::AtomicBool,
    /// When the last plain line was printed.
    last_plain: Mutex<Option<Instant>>,
}

/// Where a phase is, for its progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The phase and its count in words (`hashing: 12/300 files`).
    pub text: String,
    /// How far (entries, groups, or bytes).
    pub pos: u64,
    /// Out of how many, when known (a spinner when not).
    pub len: Option<u64>,
    /// `pos` and `len` are bytes (shown with a rate).
    pub bytes: bool,
}

impl Reporter {
    /// A reporter printing to stderr.
    pub fn new() -> Reporter {
        Reporter::default()
    }

    /// A reporter printing nothing (unit tests).
    pub fn quiet() -> Reporter {
        Reporter {
            quiet: true,
            ..Reporter::default()
        }
    }

    /// Prints `hashify: TEXT` (above the progress bar, if one is drawn).
    pub fn message(&self, text: &str) {
        if self.quiet {
            return;
        }
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match bar.as_ref() {
            Some(b) => b.suspend(|| eprintln!("hashify: {text}")),
            None => eprintln!("hashify: {text}"),
        }
    }

    /// Reports a failure on `path`.
    pub fn error(&self, path: &[u8], err: impl std::fmt::Display) {
        self.message(&format!("{}: {err}", String::from_utf8_lossy(path)));
    }

    /// Shows `now` on the progress bar (made at its first call), or with
    /// `None` clears it.
    pub fn progress(&self, now: Option<&Progress>) {
        if self.quiet {
            return;
        }
        if self.plain.load(std::sync::atomic::Ordering::Relaxed) {
            let mut last = self.last_plain.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
            match now {
                Some(p) if due => {
                    eprintln!("hashify: {}", p.text);
                    *last = Some(Instant::now());
                }
                // A phase's end: the next one's first line comes at once.
                None => *last = None,
                Some(_) => {}
            }
            return;
        }
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = now else {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            return;
        };
        let b = bar.get_or_insert_with(|| {
            // Hidden when stderr is not a terminal.
            let b = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            let template = match (p.len, p.bytes) {
                (Some(_), true) => {
                    "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}"
                }
                (Some(_), false) => "{msg} [{bar:30}] {percent}% eta {eta}",
                (None, _) => "{spinner} {msg} {elapsed}",
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        b.set_message(p.text.clone());
        if let Some(len) = p.len {
            b.set_length(len);
        }
        b.set_position(p.pos);
        if p.len.is_none() {
            b.tick();
        }
    }
}

impl Reporter {
    /// Runs `work` while, when `shown`, the progress line `line` is
    /// redrawn every tick; clears it after.
    pub fn ticking<T: Send>(
        &self,
        shown: bool,
        line: impl Fn() -> Progress + Sync,
        work: impl FnOnce() -> T + Send,
    ) -> T {
        let finished = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let ticker = shown.then(|| {
                scope.spawn(|| {
                    // Drawn at least once, even for a phase over before
                    // this thread first ran, and once more at its end.
                    loop {
                        self.progress(Some(&line()));
                        if finished.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        std::thread::park_timeout(hash::TICK);
                    }
                    self.progress(None);
                })
            });
            let out = work();
            finished.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = ticker {
                t.thread().unpark();
            }
            out
        })
    }
}

/// An inode found by the scan, with every name it has below the roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Its state when examined (first name).
    pub st: FileStat,
    /// Its names, as indices into [`Prepared::candidates`].
    pub names: Vec<usize>,
}

/// Inodes with equal content and metadata: one shared copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The shared metadata.
    pub meta: MetaKey,
    /// The content hash.
    pub content: Digest,
    /// Indices into [`Prepared::inodes`], in scan order.
    pub inodes: Vec<usize>,
}

/// The result of phases 1-3: what to link.
#[derive(Debug)]
pub struct Prepared {
    /// Every candidate name found.
    pub candidates: Vec<scan::Candidate>,
    /// The candidates' inodes.
    pub inodes: Vec<Inode>,
    /// The groups worth linking.
    pub groups: Vec<Group>,
}

/// One run: the roots, the store, the hash index and the counters.
#[derive(Debug)]
pub struct Session {
    opts: Options,
    roots: Vec<Root>,
    store: store::Store,
    db: db::HashDb,
    report: Reporter,
    summary: Summary,
    started: Instant,
    store_index: store::StoreIndex,
    keying: Keying,
    /// The mount's device.
    dev: u64,
    /// What `du` said of the roots and the store before the run (not in a
    /// dry run).
    du_before: Option<u64>,
    /// The mount's SOURCE, where reachable.
    backing: Option<Backing>,
    /// The daemon's description of the mount.
    view: Option<vxfs::vroot_server::ViewInfo>,
    /// Whether progress lines are shown.
    progress: bool,
}

impl Session {
    /// Checks the operands (directories on one vxfs mount, not nested),
    /// opens or creates the store and opens the hash index.
    pub fn open(opts: Options) -> Result<Session, CliError> {
        let started = Instant::now();
        let report = Reporter::new();
        let (mut roots, dev) = open_roots(&opts.roots)?;
        let table = MountTable::read().map_err(|e| anyhow::anyhow!("reading mountinfo: {e}"))?;
        let mount = table
            .vxfs_mount_of(&roots[0].path, dev)
            .map_err(|not| UsageError::new(format!("{}: {not}", roots[0].path.display())))?
            .clone();
        // The daemon's description of the mount, read once.
        let view = vxfs::vroot_server::ViewInfo::of_dev(dev);
        let backing = view
            .as_ref()
            .and_then(|v| Backing::of(v, &mount.mount_point, dev));
        if let Some(b) = &backing {
            for root in &mut roots {
                root.backing = b.dir(&root.path, root.fd.as_fd());
            }
        }
        let store_path = match &opts.store {
            Some(p) => absolute(p)?,
            None => default_store(&roots, dev)?,
        };
        check_store_place(&store_path, dev)?;
        let progress = opts.progress.unwrap_or_else(stderr_is_tty);
        report.plain.store(
            progress && !stderr_is_tty(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let du_before = if opts.dry_run {
            None
        } else {
            let store_dir = Root::open(&store_path).ok();
            let mut tops: Vec<_> = roots.iter().map(|r| r.fd.as_fd()).collect();
            tops.extend(store_dir.as_ref().map(|s| s.fd.as_fd()));
            let paths: Vec<&Path> = roots.iter().map(|r| r.path.as_path()).collect();
            let store = store_dir
                .as_ref()
                .map(|s| (store_path.as_path(), s.fd.as_fd()));
            Some(measure(
                &report,
                progress,
                &tops,
                dev,
                backing.as_ref().map(|b| (b, paths, store)),
            )?)
        };
        let db_path = match &opts.db {
            Some(p) => p.clone(),
            None => default_db(&mount.source)?,
        };
        let store = store::Store::open(&store_path, dev, opts.dry_run)?;
        let keying = Keying {
            ignore_mtime: opts.ignore_mtime,
            ranges: view.as_ref().and_then(ranges_of),
        };
        let store_index = store.index(&keying, &report);
        let db = db::HashDb::open(&db_path, !opts.dry_run, &report);
        Ok(Session {
            opts,
            roots,
            store,
            db,
            report,
            summary: Summary::default(),
            started,
            store_index,
            keying,
            dev,
            du_before,
            backing,
            view,
            progress,
        })
    }

    /// Phases 1-3: scan, narrow down, hash (saving new hashes in the index
    /// unless dry run) and group.
    pub fn prepare(&mut self) -> Prepared {
        let skip = scan::Skip {
            store_dir: self.store.dir_id(),
            store_inodes: self.store_index.inodes.clone(),
            remove_leftovers: !self.opts.dry_run,
        };
        let seen = std::sync::atomic::AtomicU64::new(0);
        let line = || {
            let n = seen.load(std::sync::atomic::Ordering::Relaxed);
            Progress {
                text: format!("scanning: {n} entries"),
                pos: n,
                len: None,
                bytes: false,
            }
        };
        let (candidates, counts) = self.report.ticking(self.progress, line, || {
            scan::scan(&self.roots, &self.opts.excludes, &skip, &self.report, &seen)
        });
        self.summary.scan = counts;
        let inodes = inodes_of(&candidates);
        let worth = worth_hashing(&inodes, &self.store_index.metas, &self.keying);
        self.summary.candidates = worth.iter().map(|&i| inodes[i].names.len() as u64).sum();

        // Reuse what the index knows; hash the rest.
        let mut digests: Vec<Option<Digest>> = vec![None; inodes.len()];
        let mut jobs = Vec::new();
        let mut reused = Vec::new();
        for &i in &worth {
            match self.db.lookup(&inodes[i].st) {
                Some(d) => {
                    digests[i] = Some(d);
                    reused.push(inodes[i].st);
                }
                None => {
                    let first = &candidates[inodes[i].names[0]];
                    jobs.push(hash::Job {
                        inode: i,
                        root: first.root,
                        rel: &first.rel,
                        st: inodes[i].st,
                    });
                }
            }
        }
        self.summary.reused = reused.len() as u64;
        let results = hash::hash_all(
            &jobs,
            &self.roots,
            self.opts.jobs,
            self.progress,
            &self.report,
        );
        let mut fresh = Vec::new();
        for (job, result) in jobs.iter().zip(results) {
            match result {
                hash::Hashed::Done(d) => {
                    digests[job.inode] = Some(d);
                    fresh.push((job.st, d));
                    self.summary.hashed += 1;
                    self.summary.hashed_bytes += job.st.size;
                }
                hash::Hashed::Changed => {
                    self.summary.changed += inodes[job.inode].names.len() as u64;
                }
                hash::Hashed::Failed => {
                    self.summary.failed += inodes[job.inode].names.len() as u64;
                }
            }
        }
        if !self.opts.dry_run {
            self.db.save(&fresh, &reused, &self.report);
        }
        let groups = group(&inodes, &digests, &self.store_index.metas, &self.keying);
        Prepared {
            candidates,
            inodes,
            groups,
        }
    }

    /// Phase 4: links each group's names to its shared copy (or, dry run,
    /// counts what would be linked); `-v` lines go to `out`. Then removes
    /// store entries no guest links to any more, and returns the summary.
    pub fn apply(mut self, prepared: Prepared, out: &mut dyn Write) -> anyhow::Result<Summary> {
        // Groups are independent (other inodes, other store entries), so
        // they run on the pool too: the fsync of each new entry and the
        // round trips through the mount overlap. Each keeps its counters
        // and `-v` lines, merged in group order; the first error stops
        // the others from starting new groups.
        let abort = std::sync::atomic::AtomicBool::new(false);
        let (groups_done, names_linked) = (
            std::sync::atomic::AtomicU64::new(0),
            std::sync::atomic::AtomicU64::new(0),
        );
        let line = || {
            let ordering = std::sync::atomic::Ordering::Relaxed;
            let done = groups_done.load(ordering);
            Progress {
                text: format!(
                    "linking: {done}/{} groups, {} files linked",
                    prepared.groups.len(),
                    names_linked.load(ordering)
                ),
                pos: done,
                len: Some(prepared.groups.len() as u64),
                bytes: false,
            }
        };
        let daemon = if self.opts.dry_run {
            None
        } else {
            self.view.as_ref().and_then(daemon::Daemon::of_view)
        };
        let parts = LinkParts {
            roots: &self.roots,
            store: &self.store,
            daemon: daemon.as_ref(),
            keying: &self.keying,
            dry_run: self.opts.dry_run,
            verbose: self.opts.verbose,
            report: &self.report,
        };
        // Linking waits on round trips through the mount, not on a CPU:
        // twice the hashing threads keep the daemon's threads busy (on
        // copies of real trees, 10.4 s to 9.1 s for a run).
        let threads = self.opts.jobs.saturating_mul(LINKERS_PER_JOB);
        let done = self.report.ticking(self.progress, line, || {
            hash::pool_map(prepared.groups.len(), threads, |i| {
                let done = parts.group(&prepared, i, &abort);
                groups_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some((summary, _, _)) = &done {
                    names_linked.fetch_add(summary.linked, std::sync::atomic::Ordering::Relaxed);
                }
                done
            })
        });
        let mut first_error = None;
        for (summary, lines, result) in done.into_iter().flatten() {
            out.write_all(&lines)?;
            self.summary.add_links(&summary);
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if !self.opts.dry_run {
            let (removed, freed) = self.store.remove_unused(&self.store_index, &self.report);
            self.summary.unused_removed = removed;
            self.summary.bytes_saved += i64::try_from(freed).unwrap_or(i64::MAX);
        }
        if let (Some(before), Some(store)) = (self.du_before, self.store.dir_fd()) {
            // What du shows, store directories included, not the estimate.
            let mut tops: Vec<_> = self.roots.iter().map(|r| r.fd.as_fd()).collect();
            tops.push(store);
            let paths: Vec<&Path> = self.roots.iter().map(|r| r.path.as_path()).collect();
            let on_backing = self
                .backing
                .as_ref()
                .map(|b| (b, paths, Some((self.store.path(), store))));
            let after = measure(&self.report, self.progress, &tops, self.dev, on_backing)?;
            self.summary.bytes_saved = i64::try_from(before).unwrap_or(i64::MAX)
                - i64::try_from(after).unwrap_or(i64::MAX);
        }
        self.summary.dry_run = self.opts.dry_run;
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        Ok(self.summary)
    }
}

/// What the link phase's threads share of a [`Session`].
struct LinkParts<'a> {
    roots: &'a [Root],
    store: &'a store::Store,
    daemon: Option<&'a daemon::Daemon>,
    keying: &'a Keying,
    dry_run: bool,
    verbose: u8,
    report: &'a Reporter,
}

impl LinkParts<'_> {
    /// Links group `i` unless an earlier group failed (`abort`): its
    /// counters, `-v` lines and result.
    fn group(
        &self,
        prepared: &Prepared,
        i: usize,
        abort: &std::sync::atomic::AtomicBool,
    ) -> Option<(Summary, Vec<u8>, anyhow::Result<()>)> {
        if abort.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mut summary = Summary::default();
        let mut lines = Vec::new();
        let result = link::Linker {
            roots: self.roots,
            store: self.store,
            daemon: self.daemon,
            keying: self.keying,
            prepared,
            dry_run: self.dry_run,
            verbose: self.verbose,
            report: self.report,
            summary: &mut summary,
            out: &mut lines,
        }
        .group(&prepared.groups[i]);
        if result.is_err() {
            abort.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Some((summary, lines, result))
    }
}

/// Opens the operands: existing directories, all on one filesystem, none
/// inside another. Returns them and their device.
fn open_roots(paths: &[PathBuf]) -> Result<(Vec<Root>, u64), CliError> {
    let mut roots: Vec<Root> = Vec::new();
    let mut dev = None;
    for p in paths {
        let canonical = std::fs::canonicalize(p)
            .map_err(|e| UsageError::new(format!("{}: {e}", p.display())))?;
        let root = Root::open(&canonical).map_err(|e| {
            UsageError::new(format!("{}: {}", p.display(), std::io::Error::from(e)))
        })?;
        let st = rustix::fs::fstat(&root.fd).map_err(std::io::Error::from)?;
        match dev {
            None => dev = Some(st.st_dev),
            Some(d) if d != st.st_dev => {
                return Err(UsageError::new(format!(
                    "{} is on another filesystem than {}: hard links cannot cross filesystems, \
                     run hashify once per mount",
                    canonical.display(),
                    roots[0].path.display()
                ))
                .into());
            }
            Some(_) => {}
        }
        if let Some(other) = roots
            .iter()
            .find(|r| r.path.starts_with(&canonical) || canonical.starts_with(&r.path))
        {
            return Err(UsageError::new(format!(
                "{} and {} overlap: give each guest root once",
                other.path.display(),
                canonical.display()
            ))
            .into());
        }
        roots.push(root);
    }
    let dev = dev.ok_or_else(|| UsageError::new("no directory given"))?;
    Ok((roots, dev))
}

/// The mount's SOURCE, where this host reaches it (from the daemon's
/// `view.json`): not when it is hidden (mounted over, as
/// `vxfs /vservers /vservers`, or in another mount namespace).
#[derive(Debug)]
struct Backing {
    source: OwnedFd,
    mount_point: PathBuf,
    /// The backing filesystem's device.
    dev: u64,
}

impl Backing {
    fn of(info: &vxfs::vroot_server::ViewInfo, mount_point: &Path, dev: u64) -> Option<Backing> {
        let source = rustix::fs::open(
            &info.source,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let st = rustix::fs::fstat(&source).ok()?;
        (st.st_dev != dev).then(|| Backing {
            source,
            mount_point: mount_point.to_path_buf(),
            dev: st.st_dev,
        })
    }

    /// The backing directory of `path` (on the mount, open as `on_mount`),
    /// if it is that one: below the mount point the mount shows backing
    /// inode numbers.
    fn dir(&self, path: &Path, on_mount: BorrowedFd<'_>) -> Option<OwnedFd> {
        let rel = path.strip_prefix(&self.mount_point).ok()?;
        let top = rel.as_os_str().is_empty();
        let rel = if top { Path::new(".") } else { rel };
        let dir = rustix::fs::openat2(
            &self.source,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_XDEV,
        )
        .ok()?;
        let same = top
            || matches!(
                (rustix::fs::fstat(&dir), rustix::fs::fstat(on_mount)),
                (Ok(b), Ok(m)) if b.st_ino == m.st_ino
            );
        same.then_some(dir)
    }
}

/// What [`measure`] needs to walk the same directories on SOURCE: the
/// roots' paths, and the store's path with the store open.
type OnBacking<'a> = (
    &'a Backing,
    Vec<&'a Path>,
    Option<(&'a Path, BorrowedFd<'a>)>,
);

/// `du` of `tops`, with a progress line.
///
/// With `on_backing` (the roots' and the store's paths, and the store
/// open), the same directories are walked on SOURCE instead, at the
/// backing filesystem's speed, when every one of them is reached there
/// (before and after a run the same way: a root's or the store's backing
/// directory is found the same both times).
fn measure(
    report: &Reporter,
    progress: bool,
    tops: &[std::os::fd::BorrowedFd<'_>],
    dev: u64,
    on_backing: Option<OnBacking<'_>>,
) -> anyhow::Result<u64> {
    let backing_dev = on_backing.as_ref().map(|(b, ..)| b.dev);
    let backed: Option<Vec<OwnedFd>> = on_backing.and_then(|(b, paths, store)| {
        let mut dirs = Vec::new();
        for (path, fd) in paths.iter().zip(tops).map(|(p, fd)| (*p, *fd)).chain(store) {
            dirs.push(b.dir(path, fd)?);
        }
        Some(dirs)
    });
    let (tops, dev): (Vec<BorrowedFd<'_>>, u64) = match &backed {
        Some(dirs) => (
            dirs.iter().map(|d| d.as_fd()).collect(),
            backing_dev.unwrap_or(dev),
        ),
        None => (tops.to_vec(), dev),
    };
    let seen = std::sync::atomic::AtomicU64::new(0);
    let line = || {
        let n = seen.load(std::sync::atomic::Ordering::Relaxed);
        Progress {
            text: format!("measuring usage: {n} inodes"),
            pos: n,
            len: None,
            bytes: false,
        }
    };
    report
        .ticking(progress, line, || du::allocated(&tops, dev, &seen))
        .map_err(|e| anyhow::anyhow!("measuring the roots' usage: {}", std::io::Error::from(e)))
}

/// The id ranges of the vxfs mount its daemon describes as `info`.
fn ranges_of(info: &vxfs::vroot_server::ViewInfo) -> Option<vxfs::tagging::IdRanges> {
    match vxfs::tagging::ContextMode::parse(&info.xid).ok()? {
        vxfs::tagging::ContextMode::Ids(r) => Some(r),
        _ => None,
    }
}

/// `p` made absolute against the current directory.
fn absolute(p: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(p).map_err(|e| UsageError::new(format!("{}: {e}", p.display())).into())
}

/// The longest common ancestor directory of the roots.
fn common_ancestor(roots: &[Root]) -> PathBuf {
    let mut common = roots[0].path.clone();
    for r in &roots[1..] {
        while !r.path.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    common
}

/// The default store: `.hashify` in the roots' common ancestor, or in the
/// parent of a single root, which must be on the roots' filesystem.
fn default_store(roots: &[Root], dev: u64) -> Result<PathBuf, CliError> {
    let mut base = common_ancestor(roots);
    if roots.iter().any(|r| r.path == base) {
        base.pop();
    }
    match rustix::fs::stat(&base) {
        Ok(st) if st.st_dev == dev => Ok(base.join(".hashify")),
        _ => Err(UsageError::new(format!(
            "the default store {}/.hashify would not be on the guests' filesystem; give \
             --store DIR on that filesystem",
            base.display()
        ))
        .into()),
    }
}

/// Refuses a store that is not (or would not be created) on the guests'
/// filesystem `dev`: hard links cannot reach it.
fn check_store_place(store: &Path, dev: u64) -> Result<(), CliError> {
    let existing = match rustix::fs::lstat(store) {
        Ok(st) => Some(st),
        Err(_) => store.parent().and_then(|p| rustix::fs::stat(p).ok()),
    };
    match existing {
        Some(st) if st.st_dev == dev => Ok(()),
        _ => Err(UsageError::new(format!(
            "store {} is not on the guests' filesystem: hard links cannot reach it",
            store.display()
        ))
        .into()),
    }
}

/// The default hash index: `<vxfs index>.hashify` beside the mount's
/// default vxfs index, `SOURCE.vxfs.db`.
fn default_db(source: &str) -> Result<PathBuf, CliError> {
    let source = Path::new(source);
    if source.is_absolute() && source.is_dir() {
        let mut p = vxfs::index::default_path(source).into_os_string();
        p.push(".hashify");
        Ok(PathBuf::from(p))
    } else {
        Err(UsageError::new(format!(
            "cannot place the hash index beside the mount's index: its source '{}' is not a \
             directory (fsname=?); give --db PATH",
            source.display()
        ))
        .into())
    }
}

/// The scan's names grouped by inode, in scan order.
fn inodes_of(candidates: &[scan::Candidate]) -> Vec<Inode> {
    let mut by_id: HashMap<(u64, u64), usize> = HashMap::new();
    let mut inodes: Vec<Inode> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let slot = *by_id.entry((c.st.dev, c.st.ino)).or_insert_with(|| {
            inodes.push(Inode {
                st: c.st,
                names: Vec::new(),
            });
            inodes.len() - 1
        });
        inodes[slot].names.push(i);
    }
    inodes
}

/// The inodes that could be unified with something: their metadata is
/// shared with another inode or with a store entry. Only these are hashed.
fn worth_hashing(inodes: &[Inode], store_metas: &HashSet<MetaKey>, k: &Keying) -> Vec<usize> {
    let mut count: HashMap<MetaKey, usize> = HashMap::new();
    for inode in inodes {
        *count.entry(inode.st.meta(k)).or_default() += 1;
    }
    (0..inodes.len())
        .filter(|&i| {
            let meta = inodes[i].st.meta(k);
            count[&meta] > 1 || store_metas.contains(&meta)
        })
        .collect()
}

/// Groups the hashed inodes by (metadata, content); keeps groups of two or
/// more inodes and those a store entry may already serve.
fn group(
    inodes: &[Inode],
    digests: &[Option<Digest>],
    store_metas: &HashSet<MetaKey>,
    k: &Keying,
) -> Vec<Group> {
    let mut index: HashMap<(MetaKey, Digest), usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, inode) in inodes.iter().enumerate() {
        let Some(content) = digests[i] else { continue };
        let meta = inode.st.meta(k);
        let slot = *index.entry((meta, content)).or_insert_with(|| {
            groups.push(Group {
                meta,
                content,
                inodes: Vec::new(),
            });
            groups.len() - 1
        });
        groups[slot].inodes.push(i);
    }
    groups.retain(|g| g.inodes.len() > 1 || store_metas.contains(&g.meta));
    groups
}

/// Whether stderr is a terminal (the default for the progress line).
fn stderr_is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Runs hashify.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let opts = options::parse(argv)?;
    if !crate::cli::has_cap_sys_admin() {
        return Err(anyhow::anyhow!(
            "hashify needs CAP_SYS_ADMIN (run it as root on the host): the immutable flags and \
             the store's barrier are trusted.* xattrs"
        )
        .into());
    }
    let json = opts.json;
    let mut session = Session::open(opts)?;
    let prepared = session.prepare();
    let summary = session.apply(prepared, out)?;
    if json {
        writeln!(out, "{}", summary.to_json())?;
    } else {
        out.write_all(summary.to_text().as_bytes())?;
    }
    Ok(if summary.failed == 0 {
        Outcome::Success
    } else {
        Outcome::SomeFailed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ino: u64, size: u64, uid: u32, mtime: i64) -> FileStat {
        FileStat {
            dev: 1,
            ino,
            mode: 0o100644,
            uid,
            size,
            mtime: (mtime, 0),
            ..FileStat::default()
        }
    }

    fn cand(root: usize, rel: &str, st: FileStat) -> scan::Candidate {
        scan::Candidate {
            root,
            rel: rel.as_bytes().to_vec(),
            st,
        }
    }

    #[test]
    fn narrowing_and_grouping() {
        let cands = vec![
            cand(0, "a", st(1, 100, 0, 5)),
            cand(1, "a", st(2, 100, 0, 5)),
            cand(1, "a-link", st(2, 100, 0, 5)),
            cand(2, "a", st(3, 100, 0, 5)),
            // Same size, other owner: never unified with the above.
            cand(2, "b", st(4, 100, 7, 5)),
            // Other mtime: only with --ignore-mtime.
            cand(2, "c", st(5, 100, 0, 6)),
            // Unique size, but a store entry has its metadata.
            cand(0, "d", st(6, 300, 0, 5)),
            // Unique and no store entry.
            cand(0, "e", st(7, 400, 0, 5)),
        ];
        let inodes = inodes_of(&cands);
        assert_eq!(inodes.len(), 7);
        assert_eq!(inodes[1].names, vec![1, 2], "two names, one inode");
        // The store's metadata is taken the way the run compares.
        let k = |ignore_mtime: bool| Keying {
            ignore_mtime,
            ranges: None,
        };
        let store =
            |ignore: bool| -> HashSet<MetaKey> { [st(99, 300, 0, 5).meta(&k(ignore))].into() };
        assert_eq!(
            worth_hashing(&inodes, &store(false), &k(false)),
            vec![0, 1, 2, 5]
        );
        assert_eq!(
            worth_hashing(&inodes, &store(true), &k(true)),
            vec![0, 1, 2, 4, 5],
            "with --ignore-mtime the mtime differs no more"
        );

        let d = |b: u8| Some(Digest([b; 32]));
        // Inode 2 (third root's a) has other content.
        let digests = vec![d(1), d(1), d(2), None, d(1), d(3), None];
        let groups = group(&inodes, &digests, &store(true), &k(true));
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].inodes, vec![0, 1, 4], "first seen first");
        assert_eq!(groups[1].inodes, vec![5], "a store entry may serve it");
        assert_eq!(groups[1].meta.mtime, None);
        let strict = group(&inodes, &digests, &store(false), &k(false));
        let members: Vec<&[usize]> = strict.iter().map(|g| g.inodes.as_slice()).collect();
        assert_eq!(members, [&[0, 1][..], &[5]], "inode 4's mtime differs");
    }

    #[test]
    fn owners_shifted_by_whole_ranges_key_alike() {
        let k = Keying {
            ignore_mtime: false,
            ranges: Some(vxfs::tagging::IdRanges {
                kind: vxfs::tagging::IdKind::Uid,
                size: 65536,
                first: 100,
                last: 102,
            }),
        };
        let base = |x: u32| x * 65536;
        assert_eq!(k.owner(base(100) + 7, base(100) + 8), (7, 8));
        assert_eq!(k.owner(base(102), base(102) + 42), (0, 42));
        // Mixed ranges, the host's, and contexts outside the mapping stay.
        assert_eq!(k.owner(base(100), base(101)), (base(100), base(101)));
        assert_eq!(k.owner(0, 0), (0, 0));
        assert_eq!(k.owner(base(103), base(103)), (base(103), base(103)));
        let a = FileStat {
            uid: base(100) + 1,
            gid: base(100),
            ..st(1, 100, 0, 5)
        };
        let b = FileStat {
            uid: base(101) + 1,
            gid: base(101),
            ..st(2, 100, 0, 5)
        };
        assert_eq!(a.meta(&k), b.meta(&k));
        assert_ne!(a.meta(&Keying::default()), b.meta(&Keying::default()));
    }

    #[test]
    fn unchanged_compares_identity_content_and_metadata() {
        let a = st(1, 100, 0, 5);
        assert!(a.unchanged(&a));
        let later = FileStat { ctime: (9, 0), ..a };
        assert!(!a.unchanged(&later));
        let other_ino = FileStat { ino: 2, ..a };
        assert!(!a.unchanged(&other_ino));
        let relinked = FileStat {
            nlink: 3,
            atime: (7, 7),
            ..a
        };
        assert!(a.unchanged(&relinked), "link count and atime do not matter");
    }

    #[test]
    fn common_ancestors() {
        let t = tempfile::tempdir().unwrap();
        for d in ["v/a", "v/b", "v/c/d"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let open = |d: &str| Root::open(&t.path().join(d)).unwrap();
        let v = t.path().join("v");
        assert_eq!(common_ancestor(&[open("v/a"), open("v/b")]), v);
        assert_eq!(common_ancestor(&[open("v/a"), open("v/c/d")]), v);
        let dev = std::fs::metadata(&v)
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .unwrap();
        assert_eq!(
            default_store(&[open("v/a"), open("v/b")], dev).unwrap(),
            v.join(".hashify")
        );
        assert_eq!(
            default_store(&[open("v/a")], dev).unwrap(),
            v.join(".hashify"),
            "a single root: beside it"
        );
        assert!(default_store(&[open("v/a")], dev + 1).is_err());
    }

    #[test]
    fn operands_must_not_overlap() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        let err = open_roots(&[t.path().join("a"), t.path().join("a/b")]).unwrap_err();
        assert!(
            matches!(err, CliError::Usage(ref e) if e.to_string().contains("overlap")),
            "{err:?}"
        );
        let err = open_roots(&[t.path().join("nope")]).unwrap_err();
        assert!(matches!(err, CliError::Usage(_)), "{err:?}");
        let twice = open_roots(&[t.path().join("a"), t.path().join("a/b/..")]).unwrap_err();
        assert!(matches!(twice, CliError::Usage(ref e) if e.to_string().contains("overlap")));
        let (roots, _) = open_roots(&[t.path().join("a/b")]).unwrap();
        assert_eq!(roots[0].path, t.path().join("a/b").canonicalize().unwrap());
    }

    #[test]
    fn default_db_sits_beside_the_index() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let got = default_db(src.to_str().unwrap()).unwrap();
        assert_eq!(got, t.path().join("src.vxfs.db.hashify"));
        assert!(default_db("fsname-not-a-path").is_err());
    }
}

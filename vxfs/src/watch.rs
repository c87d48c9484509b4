//! Coherence of the kernels' caches: every connection's kernel is told
//! when something it caches changed behind its back, so that attributes,
//! names and negative entries may be cached for long.
//!
//! # Who changes what
//!
//! A change made through a connection is known to that connection's
//! kernel: it caches what the reply said. Every other change reaches it
//! only by notification (`FUSE_NOTIFY_INVAL_ENTRY`, `FUSE_NOTIFY_INVAL_INODE`):
//!
//! * a change through another connection of the daemon (the host's mount
//!   and a guest's see the same inodes);
//! * a change made directly in SOURCE by the host: a file created beside
//!   the mount, `chxid --backing`, `setattr --backing`, an editor, rsync;
//! * a write through passthrough, which the kernel does without the
//!   daemon.
//!
//! All of them are seen in one place: a fanotify group marking SOURCE's
//! whole filesystem (`FAN_MARK_FILESYSTEM`), reporting the changed inode,
//! its directory and its name as file handles (`FAN_REPORT_DFID_NAME |
//! FAN_REPORT_FID`) and the thread that made the change (`FAN_REPORT_TID`).
//! A change made by a thread serving connection C is not told to C. The
//! others are told for what they hold (the connection's ledger): an inode
//! no kernel holds is dropped after one table lookup.
//!
//! # The race with replies
//!
//! A lookup that read the backing tree just before a host change may reply
//! after the notification went out, and its old answer would then be
//! cached for the whole timeout. Every foreign change bumps an epoch
//! before its notifications are queued; a reply that may be cached reads
//! the epoch before its operation and again after the reply is written,
//! and if it moved, the reply's own entries are dropped again (queued
//! behind the reply, so the drop always reaches the kernel after it).
//!
//! # Threads
//!
//! One thread reads the events, another sends the notifications: an
//! `INVAL_ENTRY` takes the directory's lock in the kernel, which a request
//! in flight may hold; a request thread must never wait for it, and the
//! reader keeps draining while the sender waits.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use rustix::fs::OFlags;

use crate::fs::Vxfs;
use crate::inode::BackingKey;
use crate::sys::{self, FileHandle};
use crate::view::{Kernel, Stale};

/// The events watched: every change of an inode's attributes (mode,
/// owner, times, xattrs, link count), the close of a file written to, and
/// every change of a directory's names, on directories too.
///
/// Not `FAN_MODIFY`: it is generated at every `write(2)` on the whole
/// filesystem (host processes' too), and costs about a microsecond each
/// (its event is built before it can be merged): 4 KiB writes ran 35%
/// slower with it. A file open for writing through a mount is cached only
/// briefly instead ([`crate::fs::Attr::writing`]); one written by the host
/// directly shows its new size at the writer's close.
const MASK: u64 = libc::FAN_ATTRIB
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ONDIR;

/// Events that change a directory's names.
const DIRENT: u64 = libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO;

/// How long the reader lets events gather after a batch.
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// How many resolved handles are remembered.
const HANDLE_CACHE: usize = 1 << 16;

/// `watch=`: whether the daemon watches SOURCE for changes made behind its
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchMode {
    /// Watch when the filesystem allows it, else keep short timeouts (one
    /// log line says so).
    #[default]
    Auto,
    /// Watch, or refuse to mount.
    On,
    /// Do not watch: changes behind the daemon's back show when the
    /// kernel's caches expire.
    Off,
}

impl WatchMode {
    /// Parses `auto`, `on` or `off`.
    pub fn parse(value: &str) -> Option<WatchMode> {
        match value {
            "auto" => Some(WatchMode::Auto),
            "on" | "yes" | "true" | "1" => Some(WatchMode::On),
            "off" | "no" | "false" | "0" => Some(WatchMode::Off),
            _ => None,
        }
    }
}

/// Every connection's kernel, the threads serving each, and the queue of
/// notifications.
#[derive(Debug, Default)]
pub struct Kernels {
    all: RwLock<Vec<Arc<Kernel>>>,
    /// Request threads (by tid) and the connection each serves.
    serving: RwLock<HashMap<i32, u64>>,
    /// Bumped by every change made behind the kernels' back.
    epoch: AtomicU64,
    /// To the sender thread, once the watch runs.
    queue: OnceLock<Sender<(Arc<Kernel>, Stale)>>,
    /// `st_dev` of each watched filesystem, SOURCE's first (0: none).
    watched_devs: [AtomicU64; MAX_WATCHED],
}

/// The most filesystems one watch marks: SOURCE's and those mounted below
/// it when the daemon started.
const MAX_WATCHED: usize = 16;

thread_local! {
    /// The connection this thread serves requests of (0: none yet).
    static SERVES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Kernels {
    /// Connection `kernel` is up.
    pub fn connected(&self, kernel: Arc<Kernel>) {
        let mut all = self.all.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|k| k.conn != kernel.conn);
        all.push(kernel);
    }

    /// Connection `conn` ended.
    pub fn ended(&self, conn: u64) {
        self.all
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| k.conn != conn);
        self.serving
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| *c != conn);
    }

    /// How many connections there are.
    fn count(&self) -> usize {
        self.all.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Every connection's kernel.
    pub fn all(&self) -> Vec<Arc<Kernel>> {
        self.all.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The calling thread serves connection `conn`'s requests (a relaxed
    /// thread-local read after the first request).
    pub fn serving(&self, conn: u64) {
        if SERVES.with(|c| c.replace(conn)) != conn {
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            self.serving
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tid, conn);
        }
    }

    /// The connection thread `tid` serves, if it is a request thread.
    fn origin(&self, tid: i32) -> Option<u64> {
        self.serving
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tid)
            .copied()
    }

    /// The epoch, read before an operation whose reply may be cached.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// After the reply to an operation that began at `seen`: if something
    /// changed behind the kernels' back meanwhile, `kernel` drops what the
    /// reply let it cache (`stale`) again.
    pub fn recheck(&self, seen: u64, kernel: &Arc<Kernel>, stale: impl FnOnce() -> Vec<Stale>) {
        if self.epoch.load(Ordering::SeqCst) == seen {
            return;
        }
        for s in stale() {
            self.send(kernel, s);
        }
    }

    /// Every connection but `conn` drops `stale` (attributes or data of a
    /// core inode), if it holds the inode: the change is the daemon's own
    /// and no event will tell them in time (a writable open, whose writes
    /// the watch sees only at the close).
    pub fn tell_others(&self, conn: u64, stale: Stale) {
        let (Stale::Attrs(id) | Stale::Data(id)) = stale else {
            return;
        };
        if self.queue.get().is_none() || self.count() <= 1 {
            return;
        }
        for kernel in self.all() {
            if kernel.conn != conn && kernel.knows(id) {
                self.send(&kernel, stale.clone());
            }
        }
    }

    /// Whether inodes on device `dev` are watched: the kernel may cache
    /// them for long.
    pub fn watches(&self, dev: u64) -> bool {
        dev != 0
            && self
                .watched_devs
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .take_while(|d| *d != 0)
                .any(|d| d == dev)
    }

    /// Whether the watch runs.
    pub fn watching(&self) -> bool {
        self.watched_devs[0].load(Ordering::Relaxed) != 0
    }

    fn send(&self, kernel: &Arc<Kernel>, stale: Stale) {
        if let Some(queue) = self.queue.get() {
            let _ = queue.send((Arc::clone(kernel), stale));
        }
    }
}

/// Starts watching the filesystem of SOURCE (the core's root) as `mode`
/// says; [`Kernels::watching`] tells whether it does (not with
/// `watch=off`, nor with `auto` on a filesystem fanotify cannot watch by
/// handle, which is logged).
pub fn start(core: &Arc<Vxfs>, mode: WatchMode, tree: &Path) -> anyhow::Result<()> {
    if mode == WatchMode::Off {
        return Ok(());
    }
    let watched = (|| {
        let root = core.inodes().get(crate::inode::ROOT_ID)?;
        let fd = root.fd()?;
        let group = sys::fanotify_init(
            libc::FAN_REPORT_DFID_NAME
                | libc::FAN_REPORT_FID
                | libc::FAN_REPORT_TID
                | libc::FAN_UNLIMITED_QUEUE,
        )?;
        let source = Filesystem::mark(group.as_fd(), fd.as_fd(), None)?;
        Ok::<_, crate::error::Error>((group, source))
    })();
    let (group, source) = match (watched, mode) {
        (Ok(w), _) => w,
        (Err(e), WatchMode::On) => {
            return Err(anyhow::anyhow!(
                "-o watch=on: cannot watch SOURCE's filesystem with fanotify: {e}"
            ));
        }
        (Err(e), _) => {
            log::warn!(
                "not watching SOURCE's filesystem ({e}): changes made there outside the mount \
                 show once the kernel's caches expire (attr_timeout, entry_timeout: 1 s)"
            );
            return Ok(());
        }
    };
    let mut filesystems = vec![source];
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    add_submounts(group.as_fd(), tree, &info, &mut filesystems);
    let kernels = core.kernels();
    publish(kernels, &filesystems);
    let (queue, sent) = std::sync::mpsc::channel();
    let _ = kernels.queue.set(queue);
    std::thread::Builder::new()
        .name("vxfs-inval".into())
        .spawn(move || send_all(sent))?;
    let count = filesystems.len();
    let mut reader = Reader {
        core: Arc::downgrade(core),
        group,
        filesystems,
        keys: HashMap::new(),
        tree: tree.to_path_buf(),
        mountinfo: std::fs::File::open("/proc/self/mountinfo").ok(),
    };
    std::thread::Builder::new()
        .name("vxfs-watch".into())
        .spawn(move || reader.run())?;
    log::info!(
        "watching SOURCE's filesystem{} for changes made outside the mount",
        if count > 1 {
            format!(" and {} mounted below it", count - 1)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// A watched filesystem.
#[derive(Debug)]
struct Filesystem {
    fsid: [i32; 2],
    /// Where to open its inodes' handles against.
    at: At,
    dev: u64,
}

/// A descriptor on a watched filesystem, to open handles against.
#[derive(Debug)]
enum At {
    /// SOURCE's filesystem: the tree's root, kept.
    Kept(OwnedFd),
    /// One mounted below it: its root, opened when needed, so that the
    /// watch never keeps it from being unmounted (a descriptor would make
    /// `umount` fail with EBUSY).
    Below {
        /// Its mount point, relative to the tree's root.
        rel: PathBuf,
        /// Its mount id, which the mount point must still have.
        mnt_id: u64,
    },
}

impl Filesystem {
    /// Marks the filesystem of the directory `dir` in `group`; `below`:
    /// mounted below the tree at that path with that mount id.
    fn mark(
        group: BorrowedFd<'_>,
        dir: BorrowedFd<'_>,
        below: Option<(PathBuf, u64)>,
    ) -> crate::error::Result<Filesystem> {
        let mount = crate::inode::mount_fd(dir)?;
        sys::fanotify_mark_filesystem(group, MASK, mount.as_fd())?;
        let fsid = sys::fsid(mount.as_fd())?;
        let dev = rustix::fs::fstat(&mount)?.st_dev;
        let at = match below {
            None => At::Kept(mount),
            Some((rel, mnt_id)) => At::Below { rel, mnt_id },
        };
        Ok(Filesystem { fsid, at, dev })
    }
}

/// Marks the filesystems mounted below `tree` (whose root is
/// `filesystems[0]`'s) by the mount table `info` that `filesystems` does
/// not have yet, up to [`MAX_WATCHED`] in all.
fn add_submounts(
    group: BorrowedFd<'_>,
    tree: &Path,
    info: &str,
    filesystems: &mut Vec<Filesystem>,
) {
    let At::Kept(root) = &filesystems[0].at else {
        return;
    };
    let Ok(root) = root.try_clone() else {
        return;
    };
    for (point, mnt_id, dir) in submounts(tree, root.as_fd(), info) {
        let known = |f: &Filesystem| matches!(&f.at, At::Below { mnt_id: m, .. } if *m == mnt_id);
        if filesystems.iter().any(known) {
            continue;
        }
        let fsid = sys::fsid(dir.as_fd());
        if fsid.is_ok_and(|f| filesystems.iter().any(|w| w.fsid == f)) {
            // A bind mount of a watched filesystem.
            continue;
        }
        if filesystems.len() == MAX_WATCHED {
            log::warn!(
                "more than {MAX_WATCHED} filesystems below SOURCE: {} and the rest are not \
                 watched (changes there outside the mount show within 1 s)",
                point.display()
            );
            break;
        }
        let rel = point.strip_prefix(tree).unwrap_or(&point).to_path_buf();
        match Filesystem::mark(group, dir.as_fd(), Some((rel, mnt_id))) {
            Ok(fs) => filesystems.push(fs),
            Err(e) => log::info!(
                "not watching {} ({e}): changes there outside the mount show within 1 s",
                point.display()
            ),
        }
    }
}

/// Tells [`Kernels::watches`] which devices are watched now.
fn publish(kernels: &Kernels, filesystems: &[Filesystem]) {
    for (i, slot) in kernels.watched_devs.iter().enumerate() {
        slot.store(filesystems.get(i).map_or(0, |f| f.dev), Ordering::Relaxed);
    }
}

/// The roots of the filesystems mounted below `tree` by the mount table
/// `info` (the daemon's `/proc/self/mountinfo`), with their mount ids:
/// opened beneath the tree's root `root` without following a symlink, each
/// checked to be that very mount, so a guest's symlink or directory
/// swapped in on the way can lead nowhere else.
fn submounts(tree: &Path, root: BorrowedFd<'_>, info: &str) -> Vec<(PathBuf, u64, OwnedFd)> {
    info.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id: u64 = fields.next()?.parse().ok()?;
            let point = PathBuf::from(crate::server::unescape(fields.nth(3)?));
            let rel = point.strip_prefix(tree).ok()?;
            if rel.as_os_str().is_empty() {
                return None;
            }
            let fd = open_below(root, rel, id)?;
            Some((point, id, fd))
        })
        .collect()
}

/// The root of the mount with id `mnt_id` at `rel` beneath the tree's
/// root `root`, if it is still there.
fn open_below(root: BorrowedFd<'_>, rel: &Path, mnt_id: u64) -> Option<OwnedFd> {
    let fd = rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
    )
    .ok()?;
    let x = rustix::fs::statx(
        &fd,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::MNT_ID,
    )
    .ok()?;
    (x.stx_mnt_id == mnt_id).then_some(fd)
}

/// The sender thread: writes each notification in the order queued.
fn send_all(queue: Receiver<(Arc<Kernel>, Stale)>) {
    for (kernel, stale) in queue {
        kernel.drop_stale(&stale);
    }
}

/// The reader thread's state.
struct Reader {
    core: Weak<Vxfs>,
    group: OwnedFd,
    /// The filesystems marked, SOURCE's first.
    filesystems: Vec<Filesystem>,
    /// Handles resolved before (a handle names one inode for good: its
    /// generation is in it).
    keys: HashMap<FileHandle, BackingKey>,
    /// The tree SOURCE is in, whose submounts are watched.
    tree: PathBuf,
    /// `/proc/self/mountinfo`, polled for mounts and unmounts below the
    /// tree.
    mountinfo: Option<std::fs::File>,
}

impl Reader {
    fn run(&mut self) {
        // Room for many events per read (the kernel needs no alignment).
        let mut bytes = vec![0u8; 64 << 10];
        loop {
            let (events, mounts) = match self.wait() {
                Ok(ready) => ready,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::error!("waiting for the watch's events: {e}; no longer watching");
                    return;
                }
            };
            if mounts {
                self.remount();
            }
            if !events {
                continue;
            }
            let n = match rustix::io::read(&self.group, &mut *bytes) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                Err(e) => {
                    log::error!("reading the watch's events: {e}; no longer watching");
                    return;
                }
            };
            let Some(core) = self.core.upgrade() else {
                return;
            };
            for event in Events::new(&bytes[..n]) {
                self.event(&core, &event);
            }
            drop(core);
            // Let events gather: one wake-up per batch instead of one per
            // event keeps a busy mount's cost down (on few cores the reader
            // would compete with the request threads), for at most this much
            // more delay.
            std::thread::sleep(BATCH_DELAY);
        }
    }

    /// Waits for events, or for the mount table to change: (events, mounts).
    fn wait(&self) -> rustix::io::Result<(bool, bool)> {
        use rustix::event::{PollFd, PollFlags, poll};
        let mut fds = vec![PollFd::new(&self.group, PollFlags::IN)];
        if let Some(info) = &self.mountinfo {
            fds.push(PollFd::new(info, PollFlags::PRI));
        }
        poll(&mut fds, None)?;
        let events = !fds[0].revents().is_empty();
        let mounts = fds
            .get(1)
            .is_some_and(|f| f.revents().intersects(PollFlags::PRI | PollFlags::ERR));
        Ok((events, mounts))
    }

    /// The mount table changed: stops watching filesystems below the tree
    /// that were unmounted and starts on those mounted since.
    fn remount(&mut self) {
        use std::io::{Read, Seek};
        // Reading the polled file to its end is what re-arms its poll.
        let mut info = String::new();
        if let Some(file) = &mut self.mountinfo {
            if let Err(e) = file.rewind().and_then(|_| file.read_to_string(&mut info)) {
                log::warn!("reading /proc/self/mountinfo: {e}");
                return;
            }
        }
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let before = self.filesystems.len();
        let At::Kept(root) = &self.filesystems[0].at else {
            return;
        };
        let Ok(root) = root.try_clone() else {
            return;
        };
        let root = root.as_fd();
        let mut gone = Vec::new();
        self.filesystems.retain(|f| match &f.at {
            At::Kept(_) => true,
            At::Below { rel, mnt_id } => {
                let there = open_below(root, rel, *mnt_id).is_some();
                if !there {
                    gone.push(rel.clone());
                }
                there
            }
        });
        for rel in &gone {
            log::info!(
                "{} below SOURCE was unmounted: no longer watched",
                rel.display()
            );
        }
        if !gone.is_empty() {
            // A later filesystem may reuse a device number and handles.
            self.keys.clear();
        }
        let kept = self.filesystems.len();
        add_submounts(self.group.as_fd(), &self.tree, &info, &mut self.filesystems);
        for f in &self.filesystems[kept..] {
            if let At::Below { rel, .. } = &f.at {
                log::info!("{} was mounted below SOURCE: watched", rel.display());
            }
        }
        if self.filesystems.len() != before || !gone.is_empty() {
            publish(core.kernels(), &self.filesystems);
        }
    }

    /// Tells every kernel but the changer's what `event` made stale.
    fn event(&mut self, core: &Vxfs, event: &Event<'_>) {
        if event.mask & libc::FAN_Q_OVERFLOW != 0 {
            log::warn!("the watch's queue overflowed: changes outside the mount may be missed");
            return;
        }
        let kernels = core.kernels();
        let origin = kernels.origin(event.tid);
        if origin.is_some() && kernels.count() <= 1 {
            // The only kernel made the change itself.
            return;
        }
        let all = kernels.all();
        let dir = event.dir.as_ref().and_then(|h| self.known(core, h));
        let name = event.name.filter(|n| *n != b".");
        // A directory's own event names it as its own directory with ".".
        let object = match (&event.object, event.name) {
            (Some(h), _) => self.known(core, h),
            (None, Some(b".")) => dir,
            (None, _) => None,
        };
        if dir.is_none() && object.is_none() {
            return;
        }
        if origin.is_none() {
            kernels.epoch.fetch_add(1, Ordering::SeqCst);
            if event.mask & libc::FAN_ATTRIB != 0 {
                if let Some(id) = object {
                    // Its tag or flags may have changed.
                    core.backing_attrs_changed(id);
                }
            }
        }
        let dirent = event.mask & DIRENT != 0;
        for kernel in all.iter().filter(|k| Some(k.conn) != origin) {
            if let Some(d) = dir.filter(|d| kernel.knows(*d)) {
                if let Some(name) = name.filter(|_| dirent || event.mask & libc::FAN_ATTRIB != 0) {
                    // An attribute change may change who sees the name
                    // (a retag).
                    let name = OsStr::from_bytes(name).to_os_string();
                    kernels.send(kernel, Stale::Entry(d, name));
                }
                if dirent {
                    kernels.send(kernel, Stale::Data(d));
                }
            }
            if let Some(o) = object.filter(|o| kernel.knows(*o)) {
                let stale = if event.mask & libc::FAN_CLOSE_WRITE != 0 {
                    Stale::Data(o)
                } else {
                    Stale::Attrs(o)
                };
                kernels.send(kernel, stale);
            }
        }
    }

    /// The core's node id of the inode `handle` names, if the core knows it.
    fn known(&mut self, core: &Vxfs, handle: &Fid<'_>) -> Option<u64> {
        let fs = self.filesystems.iter().find(|f| f.fsid == handle.fsid)?;
        let h = FileHandle::from_raw(handle.handle_type, handle.bytes)?;
        let key = match self.keys.get(&h) {
            Some(key) => *key,
            None => {
                let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = match (&fs.at, &self.filesystems[0].at) {
                    (At::Kept(at), _) => sys::open_by_handle(at.as_fd(), &h, flags),
                    (At::Below { rel, mnt_id }, At::Kept(root)) => {
                        let dir = open_below(root.as_fd(), rel, *mnt_id)?;
                        let at = crate::inode::mount_fd(dir.as_fd()).ok()?;
                        sys::open_by_handle(at.as_fd(), &h, flags)
                    }
                    (At::Below { .. }, At::Below { .. }) => return None,
                }
                .ok()?;
                let st = rustix::fs::fstat(&fd).ok()?;
                if st.st_dev != fs.dev {
                    return None;
                }
                let key = BackingKey::of(&st);
                if self.keys.len() >= HANDLE_CACHE {
                    self.keys.clear();
                }
                self.keys.insert(h, key);
                key
            }
        };
        core.inodes().id_of(key)
    }
}

/// A file handle in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fid<'a> {
    fsid: [i32; 2],
    handle_type: i32,
    bytes: &'a [u8],
}

/// One fanotify event with file handles.
#[derive(Debug, Default, PartialEq, Eq)]
struct Event<'a> {
    mask: u64,
    /// The thread that made the change.
    tid: i32,
    /// The inode that changed, when reported.
    object: Option<Fid<'a>>,
    /// Its directory, when reported.
    dir: Option<Fid<'a>>,
    /// Its name in `dir` (`.` for a directory's own event).
    name: Option<&'a [u8]>,
}

/// The events in a buffer read from a fanotify group.
struct Events<'a> {
    rest: &'a [u8],
}

impl<'a> Events<'a> {
    fn new(buf: &'a [u8]) -> Events<'a> {
        Events { rest: buf }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        // struct fanotify_event_metadata: event_len u32, vers u8,
        // reserved u8, metadata_len u16, mask u64, fd i32, pid i32.
        let buf = self.rest;
        let len = u32_at(buf, 0)? as usize;
        if len < 24 || len > buf.len() || buf[4] != libc::FANOTIFY_METADATA_VERSION {
            self.rest = &[];
            return None;
        }
        self.rest = &buf[len..];
        let event = &buf[..len];
        let meta = (u16_at(event, 6)? as usize).max(24);
        let mut out = Event {
            mask: u64_at(event, 8)?,
            tid: i32_at(event, 20)?,
            ..Event::default()
        };
        let mut at = meta;
        // Info records: info_type u8, pad u8, len u16, then for the file
        // handle types fsid (2 x i32) and struct file_handle
        // (handle_bytes u32, handle_type i32, f_handle), and for the named
        // ones the name, NUL-terminated.
        while at + 4 <= len {
            let kind = event[at];
            let rec_len = u16_at(event, at + 2)? as usize;
            if rec_len < 4 || at + rec_len > len {
                break;
            }
            let rec = &event[at..at + rec_len];
            at += rec_len;
            let named = matches!(kind, libc::FAN_EVENT_INFO_TYPE_DFID_NAME);
            if !matches!(
                kind,
                libc::FAN_EVENT_INFO_TYPE_FID
                    | libc::FAN_EVENT_INFO_TYPE_DFID
                    | libc::FAN_EVENT_INFO_TYPE_DFID_NAME
            ) {
                continue;
            }
            let (Some(f0), Some(f1), Some(bytes), Some(handle_type)) = (
                i32_at(rec, 4),
                i32_at(rec, 8),
                u32_at(rec, 12),
                i32_at(rec, 16),
            ) else {
                continue;
            };
            let Some(handle) = rec.get(20..20 + bytes as usize) else {
                continue;
            };
            let fid = Fid {
                fsid: [f0, f1],
                handle_type,
                bytes: handle,
            };
            if kind == libc::FAN_EVENT_INFO_TYPE_FID {
                out.object = Some(fid);
            } else {
                out.dir = Some(fid);
                if named {
                    let tail = &rec[20 + bytes as usize..];
                    let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
                    out.name = Some(&tail[..end]);
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `kind` with a handle and, for the named kinds, a name.
    fn record(kind: u8, fsid: [i32; 2], handle: &[u8], name: Option<&str>) -> Vec<u8> {
        let mut r = vec![kind, 0, 0, 0];
        r.extend_from_slice(&fsid[0].to_ne_bytes());
        r.extend_from_slice(&fsid[1].to_ne_bytes());
        r.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        r.extend_from_slice(&1i32.to_ne_bytes());
        r.extend_from_slice(handle);
        if let Some(name) = name {
            r.extend_from_slice(name.as_bytes());
            r.push(0);
        }
        while r.len() % 4 != 0 {
            r.push(0);
        }
        let len = r.len() as u16;
        r[2..4].copy_from_slice(&len.to_ne_bytes());
        r
    }

    fn event(mask: u64, tid: i32, records: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = records.concat();
        let mut e = Vec::new();
        e.extend_from_slice(&((24 + body.len()) as u32).to_ne_bytes());
        e.push(libc::FANOTIFY_METADATA_VERSION);
        e.push(0);
        e.extend_from_slice(&24u16.to_ne_bytes());
        e.extend_from_slice(&mask.to_ne_bytes());
        e.extend_from_slice(&(-1i32).to_ne_bytes());
        e.extend_from_slice(&tid.to_ne_bytes());
        e.extend(body);
        e
    }

    #[test]
    fn events_parse_with_their_handles_names_and_threads() {
        let fsid = [7, 9];
        let mut buf = event(
            libc::FAN_CREATE,
            41,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                fsid,
                b"dirhandle",
                Some("new file"),
            )],
        );
        buf.extend(event(
            libc::FAN_ATTRIB,
            42,
            &[
                record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, fsid, b"dh", Some("f")),
                record(libc::FAN_EVENT_INFO_TYPE_FID, fsid, b"objhandle!", None),
            ],
        ));
        let events: Vec<Event<'_>> = Events::new(&buf).collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].mask, libc::FAN_CREATE);
        assert_eq!(events[0].tid, 41);
        assert_eq!(events[0].name, Some(&b"new file"[..]));
        assert_eq!(events[0].dir.unwrap().bytes, b"dirhandle");
        assert_eq!(events[0].dir.unwrap().fsid, fsid);
        assert!(events[0].object.is_none());
        assert_eq!(events[1].tid, 42);
        assert_eq!(events[1].name, Some(&b"f"[..]));
        assert_eq!(events[1].object.unwrap().bytes, b"objhandle!");
        assert_eq!(events[1].object.unwrap().handle_type, 1);
    }

    #[test]
    fn a_truncated_or_foreign_buffer_ends_the_events() {
        let fsid = [1, 2];
        let whole = event(
            libc::FAN_DELETE,
            5,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                fsid,
                b"h",
                Some("x"),
            )],
        );
        // Cut inside the event: nothing.
        assert_eq!(Events::new(&whole[..whole.len() - 3]).count(), 0);
        // Another metadata version: nothing.
        let mut other = whole.clone();
        other[4] = 99;
        assert_eq!(Events::new(&other).count(), 0);
        // A record whose handle runs past its end is skipped, not read.
        let mut bad = whole.clone();
        bad[24 + 12..24 + 16].copy_from_slice(&1000u32.to_ne_bytes());
        let events: Vec<Event<'_>> = Events::new(&bad).collect();
        assert_eq!(events.len(), 1);
        assert!(events[0].dir.is_none());
        // A zero-length event would loop forever: it ends the buffer.
        assert_eq!(Events::new(&[0u8; 32]).count(), 0);
    }

    #[test]
    fn watch_modes_parse() {
        assert_eq!(WatchMode::parse("auto"), Some(WatchMode::Auto));
        assert_eq!(WatchMode::parse("on"), Some(WatchMode::On));
        assert_eq!(WatchMode::parse("off"), Some(WatchMode::Off));
        assert_eq!(WatchMode::parse("maybe"), None);
    }
}

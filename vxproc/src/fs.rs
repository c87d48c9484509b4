//! The FUSE tree: `version`, and a directory per running context holding
//! its files ([`vxfs_kernel::procview::FILES`]).
//!
//! A file's content is made when it is opened, from that moment's
//! figures, and kept with the open handle, so a reader sees one snapshot
//! however it splits its reads (direct I/O). Its size is the length of
//! the last content an open made (attributes are never cached; a lookup
//! or `stat` makes no content): `read(2)` does not need it, but
//! `sendfile(2)` and `splice(2)` (busybox `cat`) read through the page
//! cache up to the kernel's idea of the size, and a guest's file is a
//! bind mount whose open looks nothing up. So each open also stores the
//! new content in the kernel's cache (`FUSE_NOTIFY_STORE`), which raises
//! the kernel's size to at least its length; the page cache itself is
//! dropped at open, and the reads that refill it end short at the
//! content's end, which lowers the size to it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, Request,
};
use vxfs_kernel::Xid;
use vxfs_kernel::procview::FILES;
use vxfs_kernel::registry::{Registry, State};

use crate::sampler::Loads;

/// How long the kernel may keep names and attributes: directories a
/// second, files not at all (their size changes with every content).
const DIR_TTL: Duration = Duration::from_secs(1);
/// How long a context's registry record is reused: a guest that stopped
/// may show its files that long, a restarted one its old init's uptime.
pub const STATE_AGE: Duration = Duration::from_secs(1);
/// How long a file's content is reused for the next open or stat.
pub const REUSE: Duration = Duration::from_millis(20);
const ROOT: u64 = 1;
const VERSION: u64 = 2;

/// What a node id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    Version,
    Context(Xid),
    File(Xid, usize),
}

impl Node {
    fn id(self) -> u64 {
        match self {
            Node::Root => ROOT,
            Node::Version => VERSION,
            Node::Context(x) => (u64::from(x.0) + 1) << 4,
            Node::File(x, i) => ((u64::from(x.0) + 1) << 4) | (i as u64 + 1),
        }
    }

    fn of(id: u64) -> Option<Node> {
        match id {
            ROOT => Some(Node::Root),
            VERSION => Some(Node::Version),
            _ if id < 16 => None,
            _ => {
                let xid = Xid(u32::try_from((id >> 4) - 1).ok()?);
                match (id & 15) as usize {
                    0 => Some(Node::Context(xid)),
                    i if i <= FILES.len() => Some(Node::File(xid, i - 1)),
                    _ => None,
                }
            }
        }
    }
}

/// The version file's text.
pub fn version_text() -> String {
    format!("vxproc {}\n", env!("CARGO_PKG_VERSION"))
}

/// The tree over the registry of running contexts.
#[derive(Debug)]
pub struct ProcFs {
    registry: Registry,
    loads: Loads,
    started: SystemTime,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<[u8]>>>,
    notifier: Arc<OnceLock<fuser::Notifier>>,
    recent: Recent<u64, Arc<[u8]>>,
    states: Recent<Xid, Option<Arc<State>>>,
    /// Each file's last content length, for its attributes (dropped when
    /// a stat finds its context gone; at most one per context and file).
    lengths: Mutex<HashMap<u64, u64>>,
}

impl ProcFs {
    /// The tree of `registry`'s contexts, with the sampler's `loads`.
    pub fn new(registry: Registry, loads: Loads) -> ProcFs {
        ProcFs {
            registry,
            loads,
            started: SystemTime::now(),
            next: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
            notifier: Arc::new(OnceLock::new()),
            recent: Recent::new(REUSE),
            states: Recent::new(STATE_AGE),
            lengths: Mutex::new(HashMap::new()),
        }
    }

    /// Where the session's notifier goes once the session exists.
    pub fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        Arc::clone(&self.notifier)
    }

    /// The node's attributes and how long they may be cached.
    fn attr_now(&self, node: Node) -> Result<(Duration, FileAttr), Errno> {
        match node {
            Node::Root | Node::Context(_) => Ok((DIR_TTL, self.attr(node, 0))),
            _ => {
                // The last content's length: a lookup or stat makes none
                // (the bind at a guest's start must not stand in for its
                // first read, and a path's lookup would double an open's
                // work); each open's store corrects the kernel's size.
                if !self.exists(node) {
                    // Its context ended: its length goes with it.
                    self.lengths
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&node.id());
                    return Err(Errno::ENOENT);
                }
                let size = self
                    .lengths
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&node.id())
                    .copied()
                    .unwrap_or(0);
                Ok((Duration::ZERO, self.attr(node, size)))
            }
        }
    }

    /// Context `xid`'s registry record, read at most once per
    /// [`STATE_AGE`] (the registry's lock and JSON are the costliest part
    /// of a lookup otherwise).
    fn state(&self, xid: Xid) -> Option<Arc<State>> {
        self.states
            .get_or(xid, || {
                Ok::<_, ()>(self.registry.state_of(xid).map(Arc::new))
            })
            .ok()
            .flatten()
    }

    fn attr(&self, node: Node, size: u64) -> FileAttr {
        let dir = matches!(node, Node::Root | Node::Context(_));
        FileAttr {
            ino: INodeNo(node.id()),
            size,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o555 } else { 0o444 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Whether `node` exists now.
    fn exists(&self, node: Node) -> bool {
        match node {
            Node::Root | Node::Version => true,
            Node::Context(x) | Node::File(x, _) => self.state(x).is_some(),
        }
    }

    /// `node`'s content: made afresh, or the one made less than
    /// [`REUSE`] ago (what bounds the work a guest that opens its files
    /// in a loop can make the host do for it).
    fn content(&self, node: Node) -> Result<Arc<[u8]>, Errno> {
        let data = self.recent.get_or(node.id(), || self.make(node))?;
        self.lengths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.id(), data.len() as u64);
        Ok(data)
    }

    /// `node`'s content made now.
    fn make(&self, node: Node) -> Result<Arc<[u8]>, Errno> {
        match node {
            Node::Version => Ok(version_text().into_bytes().into()),
            Node::File(xid, i) => {
                let state = self.state(xid).ok_or(Errno::ENOENT)?;
                let load = self.loads.of(xid);
                crate::source::render(FILES[i].name, &state, &load)
                    .map(|t| t.into_bytes().into())
                    .map_err(|e| Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)))
            }
            _ => Err(Errno::EISDIR),
        }
    }
}

/// Values kept for a short while, by key.
#[derive(Debug)]
struct Recent<K, V> {
    age: Duration,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Recent<K, V> {
    fn new(age: Duration) -> Self {
        Recent {
            age,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value made for `key` less than the age ago, or a new one from
    /// `make` (kept if it succeeded).
    fn get_or<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        let now = Instant::now();
        {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, (at, _)| now.duration_since(*at) < self.age);
            if let Some((_, v)) = map.get(&key) {
                return Ok(v.clone());
            }
        }
        let v = make()?;
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (now, v.clone()));
        Ok(v)
    }
}

impl Filesystem for ProcFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_str().unwrap_or("");
        let node = match Node::of(parent.0) {
            Some(Node::Root) if name == "version" => Some(Node::Version),
            Some(Node::Root) => name
                .parse::<u32>()
                .ok()
                .filter(|n| n.to_string() == name)
                .map(|n| Node::Context(Xid(n))),
            Some(Node::Context(x)) => FILES
                .iter()
                .position(|f| f.name == name)
                .map(|i| Node::File(x, i)),
            _ => None,
        };
        match node.filter(|n| self.exists(*n)).map(|n| self.attr_now(n)) {
            Some(Ok((ttl, attr))) => reply.entry(&ttl, &attr, Generation(0)),
            Some(Err(e)) => reply.error(e),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match Node::of(ino.0)
            .filter(|n| self.exists(*n))
            .map(|n| self.attr_now(n))
        {
            Some(Ok((ttl, attr))) => reply.attr(&ttl, &attr),
            Some(Err(e)) => reply.error(e),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EACCES);
        }
        let Some(node) = Node::of(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self.content(node) {
            Ok(data) => {
                if let Some(n) = self.notifier.get() {
                    if let Err(e) = n.store(ino, 0, &data) {
                        log::warn!("storing inode {}: {e}", ino.0);
                    }
                }
                let fh = self.next.fetch_add(1, Ordering::Relaxed);
                self.open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(fh, data);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let data = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned();
        match data {
            Some(d) => {
                let start = (offset as usize).min(d.len());
                let end = start.saturating_add(size as usize).min(d.len());
                reply.data(&d[start..end]);
            }
            None => reply.error(Errno::EBADF),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut entries: Vec<(Node, String)> = Vec::new();
        match Node::of(ino.0) {
            Some(Node::Root) => {
                entries.push((Node::Version, "version".into()));
                let mut xids: Vec<Xid> = self.registry.list().iter().map(|s| s.xid).collect();
                xids.sort();
                xids.dedup();
                entries.extend(
                    xids.into_iter()
                        .map(|x| (Node::Context(x), x.0.to_string())),
                );
            }
            Some(Node::Context(x)) if self.exists(Node::Context(x)) => {
                entries.extend(
                    FILES
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (Node::File(x, i), f.name.to_string())),
                );
            }
            _ => return reply.error(Errno::ENOENT),
        }
        for (i, (node, name)) in entries.iter().enumerate().skip(offset as usize) {
            let kind = if matches!(node, Node::Context(_)) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(node.id()), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_values_are_reused_for_their_age_only() {
        let r: Recent<u32, u32> = Recent::new(Duration::from_millis(50));
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Ok::<_, ()>(made.get())
        };
        assert_eq!(r.get_or(1, make), Ok(1));
        assert_eq!(r.get_or(1, make), Ok(1), "reused");
        assert_eq!(r.get_or(2, make), Ok(2), "another key");
        assert_eq!(r.get_or(3, || Err(())), Err(()));
        assert_eq!(r.get_or(3, make), Ok(3), "a failure is not kept");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.get_or(1, make), Ok(4), "made again");
    }

    #[test]
    fn node_ids_round_trip() {
        let nodes = [
            Node::Root,
            Node::Version,
            Node::Context(Xid(0)),
            Node::Context(Xid(u32::MAX)),
            Node::File(Xid(42), 0),
            Node::File(Xid(u32::MAX), FILES.len() - 1),
        ];
        for n in nodes {
            assert_eq!(Node::of(n.id()), Some(n), "{n:?}");
        }
        assert_eq!(Node::of(0), None);
        assert_eq!(Node::of(3), None);
        assert_eq!(Node::of((43 << 4) | 15), None);
    }
}

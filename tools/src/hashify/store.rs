//! The hash store: one shared copy per (content, metadata), owned by the
//! host, immutable + iunlink, that the guests' names are linked to.
//!
//! # Layout (docs/VSERVER.md §5.4)
//!
//! `STORE/xx/yy/rest-NNNNNNNN`: the hex of a BLAKE3 digest over the
//! metadata that must match ([`MetaKey`]) and the content's digest, split
//! after the first and second byte, plus an 8-digit hex collision counter.
//! An entry at a name is *usable* when it is a regular file flagged
//! immutable and iunlink with the metadata of the name; otherwise the next
//! counter is tried. Content is not trusted from the name: every file is byte-compared
//! with the entry before it is linked.
//!
//! # Creation
//!
//! A new entry is, where it can be, the guest file itself
//! ([`Store::adopt`]): linked to `xx/yy/.tmp-PID-N`, retagged to the host,
//! flagged immutable + iunlink, then re-read frozen and checked against
//! its digest. Otherwise it is copied from a guest file into
//! `xx/yy/.tmp-PID-N` (sparse-preserving), given the guest file's owner,
//! mode, xattrs (but vxfs's own), atime and mtime, fsynced, compared with
//! its source and flagged. Only then is it renamed to its final name
//! (`RENAME_NOREPLACE`), so a published entry is always complete. A crash
//! in between leaves the temporary name, which the next run removes; an
//! adopted file then stays what a unified file with only its guest names
//! is (host-owned, immutable + iunlink), and that run links it again.
//!
//! # Locking
//!
//! A run holds an exclusive `flock` on the store directory: two runs on
//! one store would race on entries and on each other's temporary files,
//! which a run removes when it starts.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, Timestamps};
use rustix::io::Errno;
use vxfs::iattr::IAttr;

use super::{Digest, FileStat, MetaKey, Reporter};
use crate::flags;
use crate::tag::At;

/// Prefix of the temporary files of a creation in progress.
const TMP_PREFIX: &str = ".tmp-";

/// A fresh temporary name in a leaf.
fn tmp_name() -> OsString {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    OsString::from(format!(
        "{TMP_PREFIX}{}-{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The digest hashify groups the file open as `fd` by.
fn digest_of(fd: BorrowedFd<'_>) -> Result<super::Digest, Errno> {
    let mut buf = vec![0u8; super::hash::BLOCK];
    super::hash::keyed_digest(fd, &mut buf, &AtomicU64::new(0))
}

/// How many collision counters are tried before giving up on a name.
const MAX_COLLISIONS: u32 = 1000;

/// The name of a group's entry, before the collision counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName {
    /// `xx/yy`.
    pub leaf: [String; 2],
    /// The rest of the hex digest.
    pub stem: String,
}

impl EntryName {
    /// The name for content `content` with metadata `meta`.
    pub fn new(meta: &MetaKey, content: &Digest) -> EntryName {
        let mut h = blake3::Hasher::new();
        h.update(b"vxfs-hashify 1\0");
        h.update(&meta.size.to_le_bytes());
        h.update(&meta.mode.to_le_bytes());
        h.update(&meta.uid.to_le_bytes());
        h.update(&meta.gid.to_le_bytes());
        let (s, ns) = meta.mtime.unwrap_or((0, 0));
        h.update(&s.to_le_bytes());
        h.update(&ns.to_le_bytes());
        h.update(&content.0);
        let hex = Digest(*h.finalize().as_bytes()).hex();
        EntryName {
            leaf: [hex[0..2].to_string(), hex[2..4].to_string()],
            stem: hex[4..].to_string(),
        }
    }

    /// The file name with collision counter `n`.
    fn file(&self, n: u32) -> String {
        format!("{}-{n:08x}", self.stem)
    }
}

/// Whether `name` is an entry's file name: 60 hex digits, `-`, 8 hex.
fn is_entry_name(name: &[u8]) -> bool {
    let hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    name.len() == 69 && name[60] == b'-' && hex(&name[..60]) && hex(&name[61..])
}

/// Whether `name` is a leaf directory level: 2 hex digits.
fn is_level_name(name: &[u8]) -> bool {
    name.len() == 2 && name.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the store held when the run started.
#[derive(Debug, Clone, Default)]
pub struct StoreIndex {
    /// The usable entries' inodes.
    pub inodes: HashSet<(u64, u64)>,
    /// Their metadata: a file with other metadata has no entry to join.
    pub metas: HashSet<MetaKey>,
    /// Every usable entry: `xx/yy/name` and `(dev, ino)`.
    pub entries: Vec<(PathBuf, (u64, u64))>,
}

/// A usable entry, open for comparing and linking.
#[derive(Debug)]
pub struct Entry {
    /// Its directory.
    pub leaf: OwnedFd,
    /// Its name there.
    pub name: OsString,
    /// The file, open for reading.
    pub fd: OwnedFd,
    /// Its state.
    pub st: FileStat,
    /// Its kept xattrs, read once: every file linked to it must carry the
    /// same.
    pub xattrs: super::xattrs::Xattrs,
    /// `STORE/xx/yy/name`, for messages.
    pub display: PathBuf,
}

/// A new entry, copied but not yet published.
#[derive(Debug)]
pub struct Pending {
    leaf: OwnedFd,
    tmp: OsString,
    /// The copy, open read-write (an adopted file: read-only).
    pub fd: OwnedFd,
    leaf_path: PathBuf,
    name: EntryName,
    first_free: u32,
    /// A guest file made the entry ([`Store::adopt`]), already frozen,
    /// with the tag it had.
    adopted: Option<vxfs::tagging::Xid>,
}

/// The store directory of a run.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    /// `None`: a dry run and no store yet.
    dir: Option<OwnedFd>,
    /// Whether this run holds the lock (not a dry run).
    locked: bool,
}

impl Store {
    /// Opens the store at `path` on device `dev`. Unless `dry_run`, creates
    /// it (mode 0700, barrier flag), and takes the run's lock. A dry run
    /// changes nothing and needs no store.
    pub fn open(path: &Path, dev: u64, dry_run: bool) -> anyhow::Result<Store> {
        let shown = path.display();
        if !dry_run {
            match rustix::fs::mkdir(path, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(std::io::Error::from(e)).context(format!("creating store {shown}"));
                }
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if dry_run => {
                return Ok(Store {
                    path: path.to_path_buf(),
                    dir: None,
                    locked: false,
                });
            }
            Err(e) => {
                return Err(std::io::Error::from(e)).context(format!("opening store {shown}"));
            }
        };
        let st = rustix::fs::fstat(&dir)?;
        if st.st_dev != dev {
            bail!("store {shown} is not on the guests' filesystem: hard links cannot reach it");
        }
        if st.st_uid != 0 {
            bail!("store {shown} is not owned by root: refusing to trust its contents");
        }
        if !dry_run {
            match rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => bail!("store {shown} is in use by another hashify run"),
                Err(e) => {
                    return Err(std::io::Error::from(e)).context(format!("locking store {shown}"));
                }
            }
            if st.st_mode & 0o7777 != 0o700 {
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))
                    .map_err(std::io::Error::from)
                    .context(format!("chmod 0700 {shown}"))?;
            }
            let current = flags::get(At::Dir(dir.as_fd()))
                .map_err(|e| anyhow::anyhow!("reading the flags of store {shown}: {e}"))?;
            if !current.barrier() {
                flags::set(At::Dir(dir.as_fd()), IAttr(current.0 | IAttr::BARRIER))
                    .map_err(std::io::Error::from)
                    .with_context(|| {
                        format!(
                            "setting the barrier flag on store {shown} (the daemon must let the \
                             host administrator set {})",
                            vxfs::iattr::IATTR_XATTR
                        )
                    })?;
            }
        }
        Ok(Store {
            path: path.to_path_buf(),
            dir: Some(dir),
            locked: !dry_run,
        })
    }

    /// The store directory, if it exists.
    pub fn dir_fd(&self) -> Option<BorrowedFd<'_>> {
        self.dir.as_ref().map(|d| d.as_fd())
    }

    /// The store directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store directory's `(dev, ino)`, if it exists.
    pub fn dir_id(&self) -> Option<(u64, u64)> {
        let st = rustix::fs::fstat(self.dir.as_ref()?).ok()?;
        Some((st.st_dev, st.st_ino))
    }

    /// Lists the usable entries (and, unless this is a dry run, removes
    /// temporary files an interrupted run left; the lock says none is in
    /// progress).
    pub fn index(&self, keying: &super::Keying, report: &Reporter) -> StoreIndex {
        let mut index = StoreIndex::default();
        let Some(dir) = &self.dir else {
            return index;
        };
        for (a, a_fd) in self.levels(dir.as_fd(), report) {
            for (b, b_fd) in self.levels(a_fd.as_fd(), report) {
                let names = match super::scan::sorted_names(b_fd.as_fd()) {
                    Ok(n) => n,
                    Err(e) => {
                        report.error(self.path.join(&a).join(&b).as_os_str().as_bytes(), e);
                        continue;
                    }
                };
                for (name, _) in names {
                    let name = OsStr::from_bytes(&name);
                    if name.as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                        if self.locked {
                            let _ = rustix::fs::unlinkat(&b_fd, name, AtFlags::empty());
                        }
                        continue;
                    }
                    if !is_entry_name(name.as_bytes()) {
                        continue;
                    }
                    if let Some(st) = usable(b_fd.as_fd(), name) {
                        index.inodes.insert((st.dev, st.ino));
                        index.metas.insert(st.meta(keying));
                        index
                            .entries
                            .push((Path::new(&a).join(&b).join(name), (st.dev, st.ino)));
                    }
                }
            }
        }
        index
    }

    /// The two-hex-digit subdirectories of `dir`.
    fn levels(&self, dir: BorrowedFd<'_>, report: &Reporter) -> Vec<(OsString, OwnedFd)> {
        let names = match super::scan::sorted_names(dir) {
            Ok(n) => n,
            Err(e) => {
                report.error(self.path.as_os_str().as_bytes(), e);
                return Vec::new();
            }
        };
        names
            .into_iter()
            .filter(|(n, _)| is_level_name(n))
            .filter_map(|(n, _)| {
                let name = OsString::from(OsStr::from_bytes(&n));
                let fd = rustix::fs::openat(
                    dir,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()?;
                Some((name, fd))
            })
            .collect()
    }

    /// Finds the usable entry for `name` whose metadata is `meta`: `Ok(Ok(entry))`,
    /// or `Ok(Err(n))` with the first free collision counter.
    pub fn find(
        &self,
        name: &EntryName,
        meta: &MetaKey,
        keying: &super::Keying,
    ) -> anyhow::Result<Result<Entry, u32>> {
        let Some(dir) = &self.dir else {
            return Ok(Err(0));
        };
        let leaf_rel = Path::new(&name.leaf[0]).join(&name.leaf[1]);
        let leaf = match rustix::fs::openat(
            dir,
            &leaf_rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Err(0)),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .context(format!("opening {}", self.path.join(&leaf_rel).display()));
            }
        };
        for n in 0..MAX_COLLISIONS {
            let file = OsString::from(name.file(n));
            match rustix::fs::statat(&leaf, &file, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => return Ok(Err(n)),
                Err(e) => return Err(std::io::Error::from(e).into()),
                Ok(_) => {}
            }
            let Some(st) = usable(leaf.as_fd(), &file) else {
                continue;
            };
            if st.meta(keying) != *meta {
                continue;
            }
            let fd = match rustix::fs::openat(
                &leaf,
                &file,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(Err(n)),
                Err(e) => return Err(std::io::Error::from(e).into()),
            };
            let display = self.path.join(&leaf_rel).join(&file);
            let xattrs = super::xattrs::read(fd.as_fd())
                .map_err(std::io::Error::from)
                .with_context(|| format!("reading the xattrs of {}", display.display()))?;
            return Ok(Ok(Entry {
                leaf,
                name: file,
                fd,
                st,
                xattrs,
                display,
            }));
        }
        bail!(
            "{}: {MAX_COLLISIONS} entries share this name and none is usable",
            self.path.join(&leaf_rel).join(name.file(0)).display()
        )
    }

    /// Copies `src` (whose state is `st`) into a new temporary entry for
    /// `name`, to be checked and then [`Pending::publish`]ed.
    pub fn create(
        &self,
        name: &EntryName,
        first_free: u32,
        src: BorrowedFd<'_>,
        st: &FileStat,
    ) -> anyhow::Result<Pending> {
        let (leaf, leaf_path) = self.leaf(name)?;
        let (tmp, fd) = loop {
            let tmp = tmp_name();
            match rustix::fs::openat(
                &leaf,
                &tmp,
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => break (tmp, fd),
                Err(Errno::EXIST) => continue,
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .context(format!("creating a file in {}", leaf_path.display()));
                }
            }
        };
        let pending = Pending {
            leaf,
            tmp,
            fd,
            leaf_path,
            name: name.clone(),
            first_free,
            adopted: None,
        };
        if let Err(e) = pending.fill(src, st) {
            pending.discard();
            return Err(e);
        }
        Ok(pending)
    }

    /// The leaf directory `STORE/xx/yy` of `name`, made if missing, open,
    /// with its path.
    fn leaf(&self, name: &EntryName) -> anyhow::Result<(OwnedFd, PathBuf)> {
        let dir = self.dir.as_ref().expect("a run that links has a store");
        let mut leaf = dir.try_clone()?;
        let mut leaf_path = self.path.clone();
        for level in &name.leaf {
            leaf_path.push(level);
            match rustix::fs::mkdirat(&leaf, level.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .context(format!("creating {}", leaf_path.display()));
                }
            }
            // O_PATH: a directory to name things in, never listed (a real
            // open would cost the mount an OPENDIR and a RELEASEDIR).
            leaf = rustix::fs::openat(
                &leaf,
                level.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)
            .with_context(|| format!("opening {}", leaf_path.display()))?;
        }
        Ok((leaf, leaf_path))
    }

    /// Makes the guest file open as `file` (verified unchanged by the
    /// caller, as `st`) the new entry for `name` itself, without a copy:
    /// links that very inode into the store, retags it to the host and
    /// freezes it (immutable + iunlink), then checks, frozen, that its
    /// content and xattrs still have the digest `key`. `Ok(None)` when it
    /// cannot be (a writer holds it open: `ETXTBSY`; it changed before it
    /// froze): everything is then undone.
    pub fn adopt(
        &self,
        name: &EntryName,
        first_free: u32,
        file: BorrowedFd<'_>,
        st: &FileStat,
        key: super::Digest,
    ) -> anyhow::Result<Option<Pending>> {
        let (leaf, leaf_path) = self.leaf(name)?;
        let tmp = loop {
            let tmp = tmp_name();
            match rustix::fs::linkat(file, "", &leaf, &tmp, AtFlags::EMPTY_PATH) {
                Ok(()) => break tmp,
                Err(Errno::EXIST) => continue,
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .context(format!("linking a file into {}", leaf_path.display()));
                }
            }
        };
        let mut pending = Pending {
            leaf,
            tmp,
            fd: file.try_clone_to_owned()?,
            leaf_path,
            name: name.clone(),
            first_free,
            adopted: None,
        };
        let at = At::Entry(pending.leaf.as_fd(), &pending.tmp);
        let Ok(was) = crate::tag::get(at) else {
            pending.discard();
            return Ok(None);
        };
        let host = vxfs::tagging::Xid::HOST;
        if was != host && crate::tag::set(at, host).is_err() {
            pending.discard();
            return Ok(None);
        }
        pending.adopted = Some(was);
        let unified = IAttr(IAttr::IMMUTABLE | IAttr::IUNLINK);
        if flags::set(At::Entry(pending.leaf.as_fd(), &pending.tmp), unified).is_err() {
            pending.discard();
            return Ok(None);
        }
        // Frozen: no writer can change it any more. Read back through a
        // new descriptor (an immutable file's reads go to the kernel).
        let reader = rustix::fs::openat(
            &pending.leaf,
            &pending.tmp,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let unchanged = reader.ok().filter(|fd| {
            let same_file = rustix::fs::fstat(fd).is_ok_and(|now| {
                let now = FileStat::from(&now);
                (now.dev, now.ino, now.size, now.mtime) == (st.dev, st.ino, st.size, st.mtime)
            });
            same_file && digest_of(fd.as_fd()).is_ok_and(|d| d == key)
        });
        match unchanged {
            Some(fd) => {
                pending.fd = fd;
                Ok(Some(pending))
            }
            None => {
                pending.discard();
                Ok(None)
            }
        }
    }

    /// Removes the entries of `index` (those the run started with) that no
    /// guest links to any more; returns how many and the bytes freed.
    pub fn remove_unused(&self, index: &StoreIndex, report: &Reporter) -> (u64, u64) {
        let Some(dir) = &self.dir else {
            return (0, 0);
        };
        let (mut removed, mut freed) = (0, 0);
        for (rel, id) in &index.entries {
            let Ok(st) = rustix::fs::statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if (st.st_dev, st.st_ino) != *id || st.st_nlink != 1 {
                continue;
            }
            match rustix::fs::unlinkat(dir, rel, AtFlags::empty()) {
                Ok(()) => {
                    removed += 1;
                    freed += FileStat::from(&st).allocated();
                }
                Err(e) => report.error(self.path.join(rel).as_os_str().as_bytes(), e),
            }
        }
        (removed, freed)
    }
}

/// The state of the store file `name` in `leaf` if it is usable: a regular
/// file with immutable + iunlink.
fn usable(leaf: BorrowedFd<'_>, name: &OsStr) -> Option<FileStat> {
    let st = rustix::fs::statat(leaf, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let flags = flags::get(At::Entry(leaf, name)).ok()?;
    flags.unified().then(|| FileStat::from(&st))
}

impl Pending {
    /// Copies the data and the guest file's owner, mode and times, then
    /// fsyncs.
    fn fill(&self, src: BorrowedFd<'_>, st: &FileStat) -> anyhow::Result<()> {
        let shown = self.leaf_path.join(&self.tmp);
        let ctx = |what: &str| format!("{what} {}", shown.display());
        super::link::copy_sparse(src, self.fd.as_fd(), st.size)
            .map_err(std::io::Error::from)
            .with_context(|| ctx("copying into"))?;
        rustix::fs::fchown(
            &self.fd,
            Some(rustix::process::Uid::from_raw(st.uid)),
            Some(rustix::process::Gid::from_raw(st.gid)),
        )
        .map_err(std::io::Error::from)
        .with_context(|| ctx("chown"))?;
        // After the chown, which clears set-user-ID and set-group-ID.
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(st.mode & 0o7777))
            .map_err(std::io::Error::from)
            .with_context(|| ctx("chmod"))?;
        // And after it too, which removes security.capability.
        super::xattrs::read(src)
            .and_then(|kept| super::xattrs::write(self.fd.as_fd(), &kept))
            .map_err(std::io::Error::from)
            .with_context(|| ctx("copying the xattrs into"))?;
        let ts = |(s, ns): (i64, u32)| rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: ns.into(),
        };
        rustix::fs::futimens(
            &self.fd,
            &Timestamps {
                last_access: ts(st.atime),
                last_modification: ts(st.mtime),
            },
        )
        .map_err(std::io::Error::from)
        .with_context(|| ctx("setting the times of"))?;
        rustix::fs::fsync(&self.fd)
            .map_err(std::io::Error::from)
            .with_context(|| ctx("fsync"))?;
        Ok(())
    }

    /// Flags the copy immutable + iunlink and gives it its final name.
    pub fn publish(mut self) -> anyhow::Result<Entry> {
        if self.adopted.is_none() {
            self.freeze()?;
        }
        for n in self.first_free..MAX_COLLISIONS {
            let file = OsString::from(self.name.file(n));
            match rustix::fs::renameat_with(
                &self.leaf,
                &self.tmp,
                &self.leaf,
                &file,
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {
                    let st = FileStat::from(&rustix::fs::fstat(&self.fd)?);
                    let xattrs = super::xattrs::read(self.fd.as_fd())?;
                    let display = self.leaf_path.join(&file);
                    return Ok(Entry {
                        leaf: self.leaf,
                        name: file,
                        fd: self.fd,
                        st,
                        xattrs,
                        display,
                    });
                }
                Err(Errno::EXIST) => continue,
                Err(e) => {
                    let shown = self.leaf_path.join(&file);
                    self.discard();
                    return Err(std::io::Error::from(e))
                        .context(format!("renaming a new entry to {}", shown.display()));
                }
            }
        }
        self.discard();
        bail!("no free collision counter for a new store entry")
    }

    /// Holds the copy read-only (no writer may be open when a file freezes:
    /// the daemon refuses with ETXTBSY) and flags it immutable + iunlink;
    /// on failure the copy is removed.
    fn freeze(&mut self) -> anyhow::Result<()> {
        let reader = rustix::fs::openat(
            &self.leaf,
            &self.tmp,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let same = |fd: &OwnedFd| {
            let (a, b) = (rustix::fs::fstat(fd), rustix::fs::fstat(&self.fd));
            matches!((a, b), (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino))
        };
        match reader {
            Ok(fd) if same(&fd) => self.fd = fd,
            other => {
                let shown = self.leaf_path.join(&self.tmp);
                self.remove_tmp();
                let e = other.err().unwrap_or(Errno::STALE);
                return Err(std::io::Error::from(e))
                    .context(format!("reopening {} read-only", shown.display()));
            }
        }
        let unified = IAttr(IAttr::IMMUTABLE | IAttr::IUNLINK);
        if let Err(e) = flags::set(At::Entry(self.leaf.as_fd(), &self.tmp), unified) {
            let shown = self.leaf_path.join(&self.tmp);
            self.remove_tmp();
            return Err(std::io::Error::from(e)).context(format!(
                "flagging {} immutable + iunlink (the daemon must let the host administrator \
                 set {})",
                shown.display(),
                vxfs::iattr::IATTR_XATTR
            ));
        }
        Ok(())
    }

    /// Removes the temporary copy; an adopted file gets back its flags
    /// and tag.
    pub fn discard(self) {
        self.remove_tmp();
    }

    fn remove_tmp(&self) {
        if let Some(xid) = self.adopted {
            let at = At::Entry(self.leaf.as_fd(), &self.tmp);
            let _ = flags::set(at, IAttr::NONE);
            let _ = crate::tag::set(at, xid);
        }
        let _ = rustix::fs::unlinkat(&self.leaf, &self.tmp, AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mtime: Option<(i64, u32)>) -> MetaKey {
        MetaKey {
            size: 100,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtime,
        }
    }

    #[test]
    fn names() {
        let content = Digest([0xab; 32]);
        let a = EntryName::new(&meta(Some((5, 0))), &content);
        assert_eq!(a.leaf[0].len(), 2);
        assert_eq!(a.leaf[1].len(), 2);
        assert_eq!(a.stem.len(), 60);
        let file = a.file(0);
        assert!(is_entry_name(file.as_bytes()), "{file}");
        assert!(file.ends_with("-00000000"));
        assert!(a.file(0x1f).ends_with("-0000001f"));
        assert_eq!(a, EntryName::new(&meta(Some((5, 0))), &content), "stable");
        assert_ne!(
            a,
            EntryName::new(&meta(Some((5, 1))), &content),
            "mtime counts"
        );
        assert_ne!(
            a,
            EntryName::new(&meta(None), &content),
            "--ignore-mtime differs"
        );
        assert_ne!(a, EntryName::new(&meta(Some((5, 0))), &Digest([0xac; 32])));
        for bad in [&b"short"[..], &file.as_bytes()[1..], b".tmp-1-2"] {
            assert!(!is_entry_name(bad), "{bad:?}");
        }
        let upper = file.to_uppercase();
        assert!(!is_entry_name(upper.as_bytes()));
        assert!(is_level_name(b"0f") && !is_level_name(b"0F") && !is_level_name(b"abc"));
    }
}

//! The daemon runs as root over trees that guests control. These tests plant
//! symlinks (and swap directories for symlinks behind the kernel's back) in
//! the backing tree and check that no operation through the mount reads,
//! writes, chowns, chmods, truncates, sets xattrs on or creates anything
//! outside SOURCE, and that the daemon never lends root's access to an
//! unprivileged caller.
//!
//! Layout: the scratch dir holds `src/` (SOURCE), `outside/` next to it
//! with `outside/secret` (0600, known content) and `outside/dir/`. Every
//! test snapshots `outside/` (names, types, modes, owners, link counts,
//! sizes, mtimes, ctimes, contents, link targets, xattrs) before and after.
//!
//! Following a symlink *on the client side* is ordinary symlink semantics
//! (the caller's kernel resolves it in the caller's namespace), so tests that
//! plant relative links mount at a deeper path than SOURCE: a relative
//! target that reaches `outside/` from the backing tree then resolves to a
//! path that does not exist from the mount point, and anything that still
//! reaches `outside/` must have been resolved by the daemon on the host.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mount, Scratch, SplitMix64, seed};
use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

const SECRET: &[u8] = b"TOP SECRET: the host's data\n";
/// Every file under `outside/` contains this marker; a read through the
/// mount that returns it has leaked host data.
const OUTSIDE_MARK: &[u8] = b"OUTSIDE";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Everything observable about one entry below a snapshot root, except the
/// access time (reading is not a change).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: u64,
    ino: u64,
    rdev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn xattrs_of(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => 0,
        Err(e) => panic!("llistxattr {}: {e}", path.display()),
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..])
            .unwrap_or_else(|e| panic!("lgetxattr {} {name}: {e}", path.display()));
        value.truncate(len);
        out.insert(name, value);
    }
    out
}

/// Recursively records `root` and everything below it, without following
/// symlinks.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let md =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let content = if md.file_type().is_file() {
            fs::read(&path).unwrap()
        } else if md.file_type().is_symlink() {
            fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        if md.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(rel.join(entry.unwrap().file_name()));
            }
        }
        out.insert(
            rel,
            Node {
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                nlink: md.nlink(),
                size: md.len(),
                ino: md.ino(),
                rdev: md.rdev(),
                mtime: (md.mtime(), md.mtime_nsec()),
                ctime: (md.ctime(), md.ctime_nsec()),
                content,
                xattrs: xattrs_of(&path),
            },
        );
    }
    out
}

/// Panics with a readable diff if the two snapshots differ.
fn assert_same(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>, what: &str) {
    let mut diffs = Vec::new();
    for (path, old) in before {
        match after.get(path) {
            None => diffs.push(format!("  removed: {}", path.display())),
            Some(new) if new != old => diffs.push(format!(
                "  changed: {}\n    before: {old:?}\n    after:  {new:?}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for (path, new) in after {
        if !before.contains_key(path) {
            diffs.push(format!("  created: {} {new:?}", path.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: the tree outside SOURCE changed:\n{}",
        diffs.join("\n")
    );
}

/// Creates `outside/` next to `src/` with `secret` (0600) and `dir/`.
fn make_outside(s: &Scratch) -> PathBuf {
    let outside = s.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    let secret = outside.join("secret");
    fs::write(&secret, SECRET).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    rustix::fs::setxattr(&secret, "user.mark", b"outside", XattrFlags::empty()).unwrap();
    let dir = outside.join("dir");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    outside
}

/// Fills `outside/dir/` with the same names as a backing directory (x, y,
/// z, sub/) plus `outside_only`, all marked as outside data.
fn mirror_names_outside(outside: &Path) {
    let dir = outside.join("dir");
    for name in ["x", "y", "z", "outside_only"] {
        let p = dir.join(name);
        fs::write(&p, [OUTSIDE_MARK, b" ", name.as_bytes()].concat()).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        rustix::fs::setxattr(&p, "user.mark", b"outside", XattrFlags::empty()).unwrap();
    }
    fs::create_dir(dir.join("sub")).unwrap();
}

/// Fills a backing directory with x, y, z (inside data) and sub/.
fn fill_inside(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for name in ["x", "y", "z"] {
        fs::write(dir.join(name), format!("inside {name}")).unwrap();
    }
    fs::create_dir(dir.join("sub")).unwrap();
}

/// A mount point two levels deeper than SOURCE (see the module docs).
fn deep_mnt(s: &Scratch) -> PathBuf {
    let mnt = s.path().join("deep/er/mnt");
    fs::create_dir_all(&mnt).unwrap();
    mnt
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_io_error(&e).unwrap_or(Errno::IO)
}

fn times(atime: i64, mtime: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    }
}

fn open_at(dir: impl AsFd, name: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        flags | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
}

fn write_fd(fd: OwnedFd, data: &[u8]) -> Result<(), Errno> {
    fs::File::from(fd).write_all(data).map_err(io_errno)
}

fn read_fd(fd: OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut v = Vec::new();
    fs::File::from(fd).read_to_end(&mut v).map_err(io_errno)?;
    Ok(v)
}

/// Runs `f` on a thread whose credentials are uid/gid 1000 with no
/// supplementary groups.
fn as_user_1000<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                rustix::thread::set_thread_groups(&[]).expect("setgroups");
                let gid = Gid::from_raw(1000);
                rustix::thread::set_thread_res_gid(gid, gid, gid).expect("setresgid");
                let uid = Uid::from_raw(1000);
                rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid");
                assert_eq!(rustix::process::geteuid().as_raw(), 1000);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

// ---------------------------------------------------------------------------
// Operations on a planted symlink act on the link itself
// ---------------------------------------------------------------------------

#[test]
fn ops_on_planted_symlinks_act_on_the_link_not_the_target() {
    let s = Scratch::new();
    let outside = make_outside(&s);
    let secret = outside.join("secret");
    let src = s.src();
    std::os::unix::fs::symlink("../outside/secret", src.join("esc")).unwrap();
    std::os::unix::fs::symlink(&secret, src.join("escabs")).unwrap();
    std::os::unix::fs::symlink(outside.join("dir"), src.join("escdir")).unwrap();
    let before = snapshot(&outside);

    let m = Mount::scratch(&s, "");
    let mnt = m.path().to_path_buf();

    for (name, target) in [
        ("esc", PathBuf::from("../outside/secret")),
        ("escabs", secret.clone()),
        ("escdir", outside.join("dir")),
    ] {
        let link = mnt.join(name);
        let back = src.join(name);
        let md = fs::symlink_metadata(&link).unwrap();
        assert!(
            md.file_type().is_symlink(),
            "{name}: lstat through the mount"
        );
        assert_eq!(
            md.ino(),
            fs::symlink_metadata(&back).unwrap().ino(),
            "{name}: ino"
        );
        assert_eq!(fs::read_link(&link).unwrap(), target, "{name}: readlink");

        // lchown
        rustix::fs::chownat(
            CWD,
            &link,
            Some(Uid::from_raw(4242)),
            Some(Gid::from_raw(4343)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap_or_else(|e| panic!("{name}: lchown through the mount: {e}"));
        let b = fs::symlink_metadata(&back).unwrap();
        assert_eq!(
            (b.uid(), b.gid()),
            (4242, 4343),
            "{name}: lchown landed on the link"
        );

        // lsetxattr trusted.* (allowed on symlinks for root)
        rustix::fs::lsetxattr(&link, "trusted.vxfs", b"on-the-link", XattrFlags::empty())
            .unwrap_or_else(|e| panic!("{name}: lsetxattr trusted.vxfs: {e}"));
        let mut buf = [0u8; 64];
        let n = rustix::fs::lgetxattr(&back, "trusted.vxfs", &mut buf[..])
            .unwrap_or_else(|e| panic!("{name}: xattr not on the backing link: {e}"));
        assert_eq!(&buf[..n], b"on-the-link");
        let n = rustix::fs::lgetxattr(&link, "trusted.vxfs", &mut buf[..])
            .unwrap_or_else(|e| panic!("{name}: lgetxattr through the mount: {e}"));
        assert_eq!(&buf[..n], b"on-the-link");
        rustix::fs::lremovexattr(&link, "trusted.vxfs")
            .unwrap_or_else(|e| panic!("{name}: lremovexattr through the mount: {e}"));
        assert_eq!(
            rustix::fs::lgetxattr(&back, "trusted.vxfs", &mut buf[..]),
            Err(Errno::NODATA),
            "{name}: lremovexattr landed on the link"
        );

        // utimensat(AT_SYMLINK_NOFOLLOW)
        rustix::fs::utimensat(
            CWD,
            &link,
            &times(1_000_000, 2_000_000),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap_or_else(|e| panic!("{name}: utimensat NOFOLLOW: {e}"));
        assert_eq!(
            fs::symlink_metadata(&back).unwrap().mtime(),
            2_000_000,
            "{name}: utimensat landed on the link"
        );

        // O_NOFOLLOW refuses; O_CREAT|O_EXCL does not follow either.
        assert_eq!(
            rustix::fs::open(&link, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).err(),
            Some(Errno::LOOP),
            "{name}: O_NOFOLLOW open"
        );
        assert_eq!(
            rustix::fs::open(
                &link,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                Mode::from_raw_mode(0o666)
            )
            .err(),
            Some(Errno::EXIST),
            "{name}: O_CREAT|O_EXCL on a symlink"
        );

        // Hard link of the symlink (linkat without AT_SYMLINK_FOLLOW).
        let hard = mnt.join(format!("{name}.hard"));
        rustix::fs::linkat(CWD, &link, CWD, &hard, AtFlags::empty())
            .unwrap_or_else(|e| panic!("{name}: linkat of the symlink: {e}"));
        let h = fs::symlink_metadata(src.join(format!("{name}.hard"))).unwrap();
        assert!(
            h.file_type().is_symlink(),
            "{name}: the hard link is a symlink"
        );
        assert_eq!(h.ino(), fs::symlink_metadata(&back).unwrap().ino());
        assert_eq!(h.nlink(), 2);

        // rename and unlink of the link.
        let moved = mnt.join(format!("{name}.moved"));
        fs::rename(&hard, &moved).unwrap();
        let mv = fs::symlink_metadata(src.join(format!("{name}.moved"))).unwrap();
        assert!(mv.file_type().is_symlink());
        assert!(!src.join(format!("{name}.hard")).exists());
        fs::remove_file(&moved).unwrap();
        assert!(fs::symlink_metadata(src.join(format!("{name}.moved"))).is_err());
        fs::rename(&link, mnt.join(format!("{name}.r"))).unwrap();
        assert!(
            fs::symlink_metadata(src.join(format!("{name}.r")))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        fs::remove_file(mnt.join(format!("{name}.r"))).unwrap();
        assert!(fs::symlink_metadata(src.join(format!("{name}.r"))).is_err());
    }

    assert_eq!(fs::read(&secret).unwrap(), SECRET, "secret still there");
    assert_same(&before, &snapshot(&outside), "ops on planted symlinks");
}

#[test]
fn open_nofollow_of_a_symlink_is_eloop() {
    let s = Scratch::new();
    let outside = make_outside(&s);
    std::os::unix::fs::symlink(outside.join("secret"), s.src().join("escabs")).unwrap();
    fs::write(s.src().join("plain"), b"inside").unwrap();
    std::os::unix::fs::symlink("plain", s.src().join("inner")).unwrap();
    let m = Mount::scratch(&s, "");
    for name in ["escabs", "inner"] {
        for flags in [
            OFlags::RDONLY | OFlags::NOFOLLOW,
            OFlags::WRONLY | OFlags::NOFOLLOW,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::TRUNC,
        ] {
            assert_eq!(
                rustix::fs::open(m.path().join(name), flags, Mode::empty()).err(),
                Some(Errno::LOOP),
                "open({name}, {flags:?})"
            );
        }
    }
    // O_PATH|O_NOFOLLOW opens the link itself.
    let fd = rustix::fs::open(
        m.path().join("escabs"),
        OFlags::PATH | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .unwrap();
    let st = rustix::fs::fstat(&fd).unwrap();
    assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Symlink);
    assert_eq!(fs::read(s.path().join("outside/secret")).unwrap(), SECRET);
}

// ---------------------------------------------------------------------------
// Directories and files swapped for symlinks behind the kernel's back
// ---------------------------------------------------------------------------

/// Records the outcome of an operation whose success is not required.
fn note<T>(log: &mut Vec<String>, what: &str, r: Result<T, Errno>) -> Option<T> {
    match r {
        Ok(v) => {
            log.push(format!("{what}: ok"));
            Some(v)
        }
        Err(e) => {
            log.push(format!("{what}: {e:?}"));
            None
        }
    }
}

#[test]
fn looked_up_dir_swapped_for_symlink_cannot_reach_outside() {
    let s = Scratch::new();
    let outside = make_outside(&s);
    mirror_names_outside(&outside);
    let src = s.src();
    fill_inside(&src.join("d"));
    fs::write(src.join("f"), b"inside f").unwrap();
    let mnt = deep_mnt(&s);
    let m = Mount::new(&src, &mnt, "");

    // Let the kernel look up d, d/x and f, and hold on to them.
    let dirfd = rustix::fs::open(
        mnt.join("d"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    fs::metadata(mnt.join("d/x")).unwrap();
    let ffd =
        rustix::fs::open(mnt.join("f"), OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
    fs::metadata(mnt.join("f")).unwrap();
    let real_d_ino = fs::metadata(src.join("d")).unwrap().ino();

    // Behind the kernel's back: d and f become symlinks to outside/.
    fs::rename(src.join("d"), src.join("d.old")).unwrap();
    std::os::unix::fs::symlink("../outside/dir", src.join("d")).unwrap();
    fs::rename(src.join("f"), src.join("f.old")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", src.join("f")).unwrap();
    let before = snapshot(&outside);

    let mut log = Vec::new();
    let d = dirfd.as_fd();
    let via = |name: &str| format!("/proc/self/fd/{}/{name}", dirfd.as_raw_fd());

    // Through the held directory inode.
    if let Some(fd) = note(
        &mut log,
        "dirfd create new",
        open_at(d, "new", OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL),
    ) {
        note(&mut log, "dirfd write new", write_fd(fd, b"new via dirfd"));
    }
    if let Some(fd) = note(
        &mut log,
        "dirfd open x O_TRUNC",
        open_at(d, "x", OFlags::WRONLY | OFlags::TRUNC),
    ) {
        note(
            &mut log,
            "dirfd write x",
            write_fd(fd, b"written via dirfd"),
        );
    }
    if let Some(fd) = note(
        &mut log,
        "dirfd open y O_APPEND",
        open_at(d, "y", OFlags::WRONLY | OFlags::APPEND),
    ) {
        note(&mut log, "dirfd append y", write_fd(fd, b" appended"));
    }
    if let Some(fd) = note(&mut log, "dirfd open z", open_at(d, "z", OFlags::RDWR)) {
        note(&mut log, "dirfd ftruncate z", rustix::fs::ftruncate(&fd, 1));
        note(
            &mut log,
            "dirfd fsetxattr z",
            rustix::fs::fsetxattr(&fd, "user.evil", b"1", XattrFlags::empty()),
        );
    }
    note(
        &mut log,
        "dirfd chmod z",
        rustix::fs::chmodat(d, "z", Mode::from_raw_mode(0o777), AtFlags::empty()),
    );
    note(
        &mut log,
        "dirfd chown y",
        rustix::fs::chownat(
            d,
            "y",
            Some(Uid::from_raw(4242)),
            Some(Gid::from_raw(4242)),
            AtFlags::empty(),
        ),
    );
    note(
        &mut log,
        "dirfd utimensat x",
        rustix::fs::utimensat(d, "x", &times(5, 5), AtFlags::empty()),
    );
    note(
        &mut log,
        "setxattr via /proc/self/fd/N/x",
        rustix::fs::setxattr(via("x"), "user.evil", b"1", XattrFlags::empty()),
    );
    note(
        &mut log,
        "removexattr via /proc/self/fd/N/x",
        rustix::fs::removexattr(via("x"), "user.mark"),
    );
    note(
        &mut log,
        "dirfd mkdir",
        rustix::fs::mkdirat(d, "newdir", Mode::from_raw_mode(0o755)),
    );
    note(
        &mut log,
        "dirfd mknod fifo",
        rustix::fs::mknodat(d, "fifo", FileType::Fifo, Mode::from_raw_mode(0o644), 0),
    );
    note(
        &mut log,
        "dirfd mknod chr 1:3",
        rustix::fs::mknodat(
            d,
            "null",
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        ),
    );
    note(
        &mut log,
        "dirfd symlink",
        rustix::fs::symlinkat("x", d, "newlink"),
    );
    note(
        &mut log,
        "dirfd link x",
        rustix::fs::linkat(d, "x", d, "x.link", AtFlags::empty()),
    );
    note(
        &mut log,
        "dirfd rename y",
        rustix::fs::renameat(d, "y", d, "y.renamed"),
    );
    note(
        &mut log,
        "dirfd rmdir sub",
        rustix::fs::unlinkat(d, "sub", AtFlags::REMOVEDIR),
    );
    note(
        &mut log,
        "dirfd unlink z",
        rustix::fs::unlinkat(d, "z", AtFlags::empty()),
    );

    // The operations through the held inode reached the real (renamed)
    // directory: the daemon tracks inodes, not names.
    let old = src.join("d.old");
    assert_eq!(
        fs::read(old.join("new")).ok().as_deref(),
        Some(&b"new via dirfd"[..]),
        "create through the held dir did not land in the real dir; ops: {log:#?}"
    );
    assert_eq!(
        fs::read(old.join("x")).ok().as_deref(),
        Some(&b"written via dirfd"[..]),
        "write through the held dir did not land in the real dir; ops: {log:#?}"
    );
    assert!(old.join("newdir").is_dir(), "mkdir through the held dir");
    assert!(old.join("fifo").exists(), "mknod through the held dir");
    assert!(
        old.join("y.renamed").exists() && !old.join("sub").exists(),
        "rename/rmdir through the held dir"
    );

    // Reads through the held inode must never return outside data.
    assert_eq!(
        open_at(d, "outside_only", OFlags::RDONLY).err(),
        Some(Errno::NOENT),
        "a name that exists only in outside/dir is visible through the held dir"
    );
    let listing: Vec<OsString> = fs::read_dir(format!("/proc/self/fd/{}", dirfd.as_raw_fd()))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !listing.iter().any(|n| n == "outside_only"),
        "readdir of the held dir lists outside/dir: {listing:?}"
    );
    if let Ok(fd) = open_at(d, "x", OFlags::RDONLY) {
        let data = read_fd(fd).unwrap();
        assert!(
            !data.starts_with(OUTSIDE_MARK),
            "read outside data: {data:?}"
        );
    }

    // Path-based through mnt/d while the kernel may still have d cached
    // (else d is now a symlink the caller resolves to a missing path).
    let pd = mnt.join("d");
    if let Some(f) = note(
        &mut log,
        "path create d/p_new",
        fs::File::create(pd.join("p_new")).map_err(io_errno),
    ) {
        note(
            &mut log,
            "path write d/p_new",
            write_fd(f.into(), b"new via path"),
        );
    }
    note(
        &mut log,
        "path write d/x",
        fs::write(pd.join("x"), b"written via path").map_err(io_errno),
    );
    note(
        &mut log,
        "path chmod d/x",
        fs::set_permissions(pd.join("x"), fs::Permissions::from_mode(0o777)).map_err(io_errno),
    );
    note(
        &mut log,
        "path mkdir d/p_dir",
        fs::create_dir(pd.join("p_dir")).map_err(io_errno),
    );
    note(
        &mut log,
        "path setxattr d/x",
        rustix::fs::setxattr(pd.join("x"), "user.evil2", b"1", XattrFlags::empty()),
    );
    if let Ok(data) = fs::read(pd.join("x")) {
        assert!(
            !data.starts_with(OUTSIDE_MARK),
            "read outside data via mnt/d/x"
        );
    }
    if let Ok(rd) = fs::read_dir(&pd) {
        let names: Vec<_> = rd.map(|e| e.unwrap().file_name()).collect();
        assert!(
            !names.iter().any(|n| n == "outside_only"),
            "mnt/d lists outside/dir: {names:?}"
        );
    }
    if let Ok(md) = fs::metadata(&pd) {
        assert_eq!(md.ino(), real_d_ino, "mnt/d is not the backing d");
    }

    // The file f: through its held inode and through the (cached) path.
    let fvia = format!("/proc/self/fd/{}", ffd.as_raw_fd());
    note(
        &mut log,
        "held f chmod",
        fs::set_permissions(&fvia, fs::Permissions::from_mode(0o777)).map_err(io_errno),
    );
    note(
        &mut log,
        "held f chown",
        rustix::fs::chownat(
            CWD,
            &fvia,
            Some(Uid::from_raw(4242)),
            None,
            AtFlags::empty(),
        ),
    );
    note(
        &mut log,
        "held f setxattr",
        rustix::fs::setxattr(&fvia, "user.evil", b"1", XattrFlags::empty()),
    );
    if let Some(fd) = note(
        &mut log,
        "held f open O_TRUNC",
        rustix::fs::open(&fvia, OFlags::WRONLY | OFlags::TRUNC, Mode::empty()),
    ) {
        note(&mut log, "held f write", write_fd(fd, b"f written"));
    }
    if let Ok(data) = fs::read(&fvia) {
        assert!(
            !data.starts_with(b"TOP SECRET"),
            "read the secret via held f"
        );
    }
    let pf = mnt.join("f");
    note(
        &mut log,
        "path chmod f",
        fs::set_permissions(&pf, fs::Permissions::from_mode(0o606)).map_err(io_errno),
    );
    note(
        &mut log,
        "path setxattr f",
        rustix::fs::setxattr(&pf, "user.evil2", b"1", XattrFlags::empty()),
    );
    note(
        &mut log,
        "path truncate f",
        fs::OpenOptions::new()
            .write(true)
            .open(&pf)
            .and_then(|f| f.set_len(0))
            .map_err(io_errno),
    );
    if let Ok(data) = fs::read(&pf) {
        assert!(
            !data.starts_with(b"TOP SECRET"),
            "read the secret via mnt/f"
        );
    }

    let after = snapshot(&outside);
    eprintln!("operations:\n  {}", log.join("\n  "));
    assert_same(&before, &after, "after swapping d and f for symlinks");

    let fmd = fs::metadata(src.join("f.old")).unwrap();
    assert_eq!(fmd.uid(), 4242, "chown through the held file");
    // Close everything on the mount so that it unmounts cleanly.
    drop(dirfd);
    drop(ffd);
    drop(m);
}

#[test]
fn racing_dir_symlink_swaps_cannot_reach_outside() {
    let seed = seed();
    let s = Scratch::new();
    let outside = make_outside(&s);
    mirror_names_outside(&outside);
    let src = s.src();
    fill_inside(&src.join("d"));
    std::os::unix::fs::symlink("../outside/dir", src.join("dswap")).unwrap();
    let real_d_ino = fs::metadata(src.join("d")).unwrap().ino();
    let outside_dir_ino = fs::metadata(outside.join("dir")).unwrap().ino();
    let before = snapshot(&outside);
    let mnt = deep_mnt(&s);
    let m = Mount::new(&src, &mnt, "attr_timeout=0,entry_timeout=0");

    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let ok_ops = AtomicU64::new(0);
    let failed_ops = AtomicU64::new(0);
    let dirfd = rustix::fs::open(
        mnt.join("d"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let held_dir = format!("/proc/self/fd/{}", dirfd.as_raw_fd());
    let path_dir = mnt.join("d").to_string_lossy().into_owned();

    let leaks: Vec<String> = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    CWD,
                    src.join("d"),
                    CWD,
                    src.join("dswap"),
                    RenameFlags::EXCHANGE,
                )
                .expect("RENAME_EXCHANGE in SOURCE");
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        });
        let workers: Vec<_> = [(path_dir.as_str(), 1u64), (held_dir.as_str(), 2u64)]
            .into_iter()
            .map(|(base, salt)| {
                let (stop, ok_ops, failed_ops) = (&stop, &ok_ops, &failed_ops);
                scope.spawn(move || {
                    let mut rng = SplitMix64::new(seed ^ salt);
                    let mut leaks = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < deadline {
                        match race_op(&mut rng, Path::new(base), real_d_ino, outside_dir_ino) {
                            Ok(None) => ok_ops.fetch_add(1, Ordering::Relaxed),
                            Ok(Some(leak)) => {
                                leaks.push(leak);
                                0
                            }
                            Err(_) => failed_ops.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    stop.store(true, Ordering::Relaxed);
                    leaks
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    drop(dirfd);
    let (swaps, ok, failed) = (
        swaps.into_inner(),
        ok_ops.into_inner(),
        failed_ops.into_inner(),
    );
    eprintln!("race: {swaps} swaps, {ok} successful and {failed} failed operations");
    assert_same(&before, &snapshot(&outside), "racing dir/symlink swaps");
    assert!(
        leaks.is_empty(),
        "outside data leaked through the mount: {leaks:#?}"
    );
    assert!(swaps > 100, "the swapper barely ran ({swaps} swaps)");
    assert!(ok > 100, "almost no operation reached the daemon ({ok} ok)");
    drop(m);
}

/// One random operation below `base` (mnt/d or the held dir). Opens are
/// non-blocking: another operation may have made the name a FIFO. `Ok(None)`:
/// it succeeded; `Ok(Some(..))`: it returned outside data; `Err`: it failed
/// (tolerated: the name may currently be a symlink the caller cannot
/// resolve).
fn race_op(
    rng: &mut SplitMix64,
    base: &Path,
    real_d_ino: u64,
    outside_dir_ino: u64,
) -> Result<Option<String>, Errno> {
    const NAMES: [&str; 6] = ["x", "y", "z", "sub", "n1", "n2"];
    let name = NAMES[rng.below(NAMES.len() as u64) as usize];
    let p = base.join(name);
    match rng.below(15) {
        0 => {
            let fd = rustix::fs::open(
                &p,
                OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::from_raw_mode(0o644),
            )?;
            write_fd(fd, b"inside race")?;
        }
        1 => {
            let fd = rustix::fs::open(
                &p,
                OFlags::WRONLY | OFlags::TRUNC | OFlags::NONBLOCK,
                Mode::empty(),
            )?;
            write_fd(fd, b"truncated")?;
        }
        2 => rustix::fs::chmod(&p, Mode::from_raw_mode(0o777))?,
        3 => rustix::fs::chown(&p, Some(Uid::from_raw(4242)), Some(Gid::from_raw(4242)))?,
        4 => {
            let fd = rustix::fs::open(
                &p,
                OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )?;
            rustix::fs::ftruncate(&fd, 2)?;
        }
        5 => rustix::fs::setxattr(&p, "user.evil", b"1", XattrFlags::empty())?,
        6 => rustix::fs::mkdir(&p, Mode::from_raw_mode(0o755))?,
        7 => rustix::fs::mknodat(CWD, &p, FileType::Fifo, Mode::from_raw_mode(0o644), 0)?,
        // The target is a sibling name: the workers run as root and follow
        // these links themselves (client side), so a link must never lead
        // out of the mount.
        8 => rustix::fs::symlink(NAMES[rng.below(NAMES.len() as u64) as usize], &p)?,
        9 => rustix::fs::unlink(&p).or_else(|_| rustix::fs::rmdir(&p))?,
        10 => {
            let other = base.join(NAMES[rng.below(NAMES.len() as u64) as usize]);
            rustix::fs::rename(&p, &other)?
        }
        11 => {
            let other = base.join(NAMES[rng.below(NAMES.len() as u64) as usize]);
            rustix::fs::link(&p, &other)?
        }
        12 => rustix::fs::utimensat(CWD, &p, &times(7, 7), AtFlags::empty())?,
        13 => {
            let fd = rustix::fs::open(
                &p,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )?;
            let data = read_fd(fd)?;
            if data.starts_with(OUTSIDE_MARK) {
                return Ok(Some(format!("read {}: {data:?}", p.display())));
            }
        }
        _ => {
            let names: Vec<OsString> = fs::read_dir(base)
                .map_err(io_errno)?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            if names.iter().any(|n| n == "outside_only") {
                return Ok(Some(format!(
                    "readdir {} lists outside/dir",
                    base.display()
                )));
            }
            let md = fs::metadata(base).map_err(io_errno)?;
            if md.ino() == outside_dir_ino || md.ino() != real_d_ino {
                return Ok(Some(format!(
                    "stat {} gives ino {}",
                    base.display(),
                    md.ino()
                )));
            }
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// Names, devices, identities
// ---------------------------------------------------------------------------

#[test]
fn dot_and_dotdot_resolve_within_the_mount() {
    let s = Scratch::new();
    fs::create_dir_all(s.src().join("dir/sub")).unwrap();
    let mnt = deep_mnt(&s);
    let _m = Mount::new(&s.src(), &mnt, "");
    let id = |p: &Path| {
        let md = fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        (md.dev(), md.ino())
    };
    let root = id(&mnt);
    assert_eq!(id(&mnt.join("dir/..")), root, "mnt/dir/..");
    assert_eq!(id(&mnt.join("dir/sub/../..")), root, "mnt/dir/sub/../..");
    assert_eq!(id(&mnt.join(".")), root, "mnt/.");
    assert_eq!(id(&mnt.join("dir/./sub/..")), id(&mnt.join("dir")));
    // Above the root: the mount point's parent on the host, not SOURCE's.
    let above = id(&mnt.join(".."));
    assert_eq!(above, id(&s.path().join("deep/er")), "mnt/..");
    assert_ne!(above, id(s.path()), "mnt/.. is SOURCE's parent");
    assert_ne!(above.0, root.0, "mnt/.. served by the daemon");
    // The same through *at calls on a directory fd inside the mount.
    let dfd = rustix::fs::open(
        mnt.join("dir"),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    let st = rustix::fs::statat(&dfd, "..", AtFlags::empty()).unwrap();
    assert_eq!((st.st_dev, st.st_ino), root, "statat(dir, \"..\")");
    let st = rustix::fs::statat(&dfd, "../..", AtFlags::empty()).unwrap();
    assert_eq!((st.st_dev, st.st_ino), above, "statat(dir, \"../..\")");
}

#[test]
fn device_node_created_through_the_mount_lives_only_in_source() {
    let s = Scratch::new();
    let outside = make_outside(&s);
    let before = snapshot(&outside);
    let top_before: Vec<_> = fs::read_dir(s.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let m = Mount::scratch(&s, "");
    rustix::fs::mknodat(
        CWD,
        m.path().join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod c 1 3 through the mount");
    rustix::fs::mknodat(
        CWD,
        m.path().join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo through the mount");

    let back = fs::symlink_metadata(s.src().join("null")).unwrap();
    assert!(back.file_type().is_char_device(), "backing node type");
    assert_eq!(back.rdev(), rustix::fs::makedev(1, 3), "backing rdev");
    let dev_null = fs::metadata("/dev/null").unwrap();
    assert_ne!(
        (back.dev(), back.ino()),
        (dev_null.dev(), dev_null.ino()),
        "the node is /dev/null itself"
    );
    let via = fs::symlink_metadata(m.path().join("null")).unwrap();
    assert!(via.file_type().is_char_device());
    assert_eq!(via.rdev(), back.rdev());
    assert_eq!(via.ino(), back.ino());
    assert!(
        fs::symlink_metadata(s.src().join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    let mut top_after: Vec<_> = fs::read_dir(s.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut top_before = top_before;
    top_before.sort();
    top_after.sort();
    // The harness's daemon log may appear; nothing else may.
    top_after.retain(|n| !n.to_string_lossy().ends_with(".log"));
    top_before.retain(|n| !n.to_string_lossy().ends_with(".log"));
    assert_eq!(top_before, top_after, "entries appeared next to SOURCE");
    let mut names: Vec<_> = fs::read_dir(s.src())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["fifo", "null"]);
    assert_same(&before, &snapshot(&outside), "mknod through the mount");
}

/// An operation run on a tree root; returns its errno (`None`: success).
type Op = dyn Fn(&Path) -> Option<Errno> + Send + Sync;

/// The error of an operation, as an errno (or `None` on success).
fn outcome<T>(r: Result<T, Errno>) -> Option<Errno> {
    r.err()
}

#[test]
fn unprivileged_caller_gets_no_root_access() {
    let s = Scratch::new();
    // The same layout in SOURCE (served by the daemon) and in native/.
    for base in [s.src(), s.native()] {
        std::os::unix::fs::symlink("/etc/shadow", base.join("link")).unwrap();
        fs::write(base.join("rootonly"), b"root only").unwrap();
        fs::set_permissions(base.join("rootonly"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(base.join("rootfile"), b"root file").unwrap();
        fs::set_permissions(base.join("rootfile"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir(base.join("rootdir")).unwrap();
        fs::set_permissions(base.join("rootdir"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(base.join("rootdir/victim"), b"victim").unwrap();
    }
    let before = snapshot(&s.src());
    let m = Mount::scratch(&s, "");
    let mnt = m.path().to_path_buf();
    let native = s.native();

    let results = as_user_1000(|| {
        let read = |p: &Path| fs::read(p).map_err(io_errno);
        let ops: Vec<(&str, Box<Op>)> = vec![
            (
                "read link -> /etc/shadow",
                Box::new(move |b| outcome(read(&b.join("link")))),
            ),
            (
                "read rootonly (0600)",
                Box::new(move |b| outcome(read(&b.join("rootonly")))),
            ),
            (
                "open rootfile for writing",
                Box::new(|b| {
                    outcome(rustix::fs::open(
                        b.join("rootfile"),
                        OFlags::WRONLY,
                        Mode::empty(),
                    ))
                }),
            ),
            (
                "truncate rootfile",
                Box::new(|b| {
                    outcome(rustix::fs::open(
                        b.join("rootfile"),
                        OFlags::WRONLY | OFlags::TRUNC,
                        Mode::empty(),
                    ))
                }),
            ),
            (
                "create in rootdir",
                Box::new(|b| {
                    outcome(rustix::fs::open(
                        b.join("rootdir/new"),
                        OFlags::WRONLY | OFlags::CREATE,
                        Mode::from_raw_mode(0o644),
                    ))
                }),
            ),
            (
                "mkdir in rootdir",
                Box::new(|b| {
                    outcome(rustix::fs::mkdir(
                        b.join("rootdir/nd"),
                        Mode::from_raw_mode(0o755),
                    ))
                }),
            ),
            (
                "unlink in rootdir",
                Box::new(|b| outcome(rustix::fs::unlink(b.join("rootdir/victim")))),
            ),
            (
                "rename out of rootdir",
                Box::new(|b| {
                    outcome(rustix::fs::rename(
                        b.join("rootdir/victim"),
                        b.join("rootdir/v2"),
                    ))
                }),
            ),
            (
                "chmod rootfile",
                Box::new(|b| {
                    outcome(rustix::fs::chmod(
                        b.join("rootfile"),
                        Mode::from_raw_mode(0o666),
                    ))
                }),
            ),
            (
                "chown rootfile",
                Box::new(|b| {
                    outcome(rustix::fs::chown(
                        b.join("rootfile"),
                        Some(Uid::from_raw(1000)),
                        None,
                    ))
                }),
            ),
            (
                "utimensat rootfile",
                Box::new(|b| {
                    outcome(rustix::fs::utimensat(
                        CWD,
                        b.join("rootfile"),
                        &times(1, 1),
                        AtFlags::empty(),
                    ))
                }),
            ),
            (
                "setxattr user.x on rootfile",
                Box::new(|b| {
                    outcome(rustix::fs::setxattr(
                        b.join("rootfile"),
                        "user.x",
                        b"1",
                        XattrFlags::empty(),
                    ))
                }),
            ),
            (
                "lchown link",
                Box::new(|b| {
                    outcome(rustix::fs::chownat(
                        CWD,
                        b.join("link"),
                        Some(Uid::from_raw(1000)),
                        None,
                        AtFlags::SYMLINK_NOFOLLOW,
                    ))
                }),
            ),
        ];
        let shadow = outcome(read(Path::new("/etc/shadow")));
        let rows: Vec<_> = ops
            .iter()
            .map(|(what, op)| (*what, op(&native), op(&mnt)))
            .collect();
        (shadow, rows)
    });
    let (shadow, rows) = results;
    assert_eq!(
        shadow,
        Some(Errno::ACCESS),
        "uid 1000 must not read /etc/shadow natively"
    );
    let mut bad = Vec::new();
    for (what, native, mounted) in &rows {
        if native.is_none() {
            bad.push(format!(
                "{what}: succeeds natively, the test setup is wrong"
            ));
        } else if native != mounted {
            bad.push(format!(
                "{what}: native {native:?}, through vxfs {mounted:?}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "uid 1000 through the mount:\n{}",
        bad.join("\n")
    );
    assert_same(&before, &snapshot(&s.src()), "unprivileged operations");
}

#[test]
fn unprivileged_creations_are_owned_by_the_caller() {
    let s = Scratch::new();
    for base in [s.src(), s.native()] {
        let public = base.join("public");
        fs::create_dir(&public).unwrap();
        fs::set_permissions(&public, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(base.join("rootonly"), b"root only").unwrap();
        fs::set_permissions(base.join("rootonly"), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let m = Mount::scratch(&s, "");
    let mnt = m.path().to_path_buf();
    let native = s.native();

    // Everything uid 1000 creates must belong to uid 1000 in SOURCE, exactly
    // as natively: a root-owned file the caller can then chmod would be a
    // set-uid-root hole.
    let rows = as_user_1000(|| {
        let ops: Vec<(&str, Box<Op>)> = vec![
            (
                "create file",
                Box::new(|b| outcome(fs::write(b.join("public/file"), b"mine").map_err(io_errno))),
            ),
            (
                "mkdir",
                Box::new(|b| {
                    outcome(rustix::fs::mkdir(
                        b.join("public/dir"),
                        Mode::from_raw_mode(0o755),
                    ))
                }),
            ),
            (
                "mkfifo",
                Box::new(|b| {
                    outcome(rustix::fs::mknodat(
                        CWD,
                        b.join("public/fifo"),
                        FileType::Fifo,
                        Mode::from_raw_mode(0o644),
                        0,
                    ))
                }),
            ),
            (
                "symlink",
                Box::new(|b| outcome(rustix::fs::symlink("file", b.join("public/link")))),
            ),
            (
                "chmod u+s own file",
                Box::new(|b| {
                    outcome(rustix::fs::chmod(
                        b.join("public/file"),
                        Mode::from_raw_mode(0o4755),
                    ))
                }),
            ),
            (
                "chown own file to root",
                Box::new(|b| {
                    outcome(rustix::fs::chown(
                        b.join("public/file"),
                        Some(Uid::from_raw(0)),
                        None,
                    ))
                }),
            ),
            (
                "hard link a root-only file (protected_hardlinks)",
                Box::new(|b| outcome(rustix::fs::link(b.join("rootonly"), b.join("public/hl")))),
            ),
        ];
        ops.iter()
            .map(|(what, op)| (*what, op(&native), op(&mnt)))
            .collect::<Vec<_>>()
    });
    let mut bad = Vec::new();
    for (what, native, mounted) in &rows {
        if native != mounted {
            bad.push(format!(
                "{what}: native {native:?}, through vxfs {mounted:?}"
            ));
        }
    }
    for name in ["file", "dir", "fifo", "link"] {
        let n = fs::symlink_metadata(native.join("public").join(name)).unwrap();
        match fs::symlink_metadata(s.src().join("public").join(name)) {
            Ok(v) => {
                if (v.uid(), v.gid(), v.mode()) != (n.uid(), n.gid(), n.mode()) {
                    bad.push(format!(
                        "public/{name}: uid/gid/mode {}/{}/{:o} in SOURCE, {}/{}/{:o} natively",
                        v.uid(),
                        v.gid(),
                        v.mode(),
                        n.uid(),
                        n.gid(),
                        n.mode()
                    ));
                }
            }
            Err(e) => bad.push(format!("public/{name} missing in SOURCE: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "uid 1000 through the mount:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------
// A write by another user drops set-user-ID and set-group-ID
// ---------------------------------------------------------------------------

/// Writes `data` to `path` (mode 06777, root's) as uid 1000 with `flags`,
/// while a root reader holds the file open when `reader_first`; returns the
/// mode afterwards.
fn mode_after_foreign_write(path: &Path, flags: OFlags, reader_first: bool) -> u32 {
    fs::write(path, vec![0u8; 8192]).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o6777)).unwrap();
    let reader = reader_first.then(|| fs::File::open(path).unwrap());
    as_user_1000(|| {
        let fd = rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).unwrap();
        let buf = AlignedPage([7u8; 4096]);
        assert_eq!(rustix::io::pwrite(&fd, &buf.0, 0).unwrap(), 4096);
    });
    drop(reader);
    fs::metadata(path).unwrap().mode() & 0o7777
}

#[repr(align(4096))]
struct AlignedPage([u8; 4096]);

#[test]
fn a_write_by_another_user_drops_set_id_bits_on_every_data_path() {
    let scratch = Scratch::new();
    let native = mode_after_foreign_write(&scratch.native().join("f"), OFlags::RDWR, false);
    assert_eq!(native, 0o777, "the kernel's own rule");
    for (opts, flags, reader_first) in [
        // Served by the daemon beside a reader's passthrough file.
        ("", OFlags::RDWR, true),
        // O_DIRECT, served by the daemon.
        ("passthrough=off", OFlags::WRONLY | OFlags::DIRECT, false),
        ("passthrough=off", OFlags::RDWR, false),
        ("", OFlags::RDWR, false),
    ] {
        let mount = Mount::scratch(&scratch, opts);
        let mode = mode_after_foreign_write(&mount.path().join("f"), flags, reader_first);
        assert_eq!(
            mode, native,
            "{opts:?} {flags:?} reader first: {reader_first}"
        );
        drop(mount);
    }
}

//! Inode flags and copy-on-write through a real mount (vserver-semantics
//! §3, §4): the refusal table per flag, the barrier, who may set flags, and
//! every write path breaking a unified file's link while the other guests'
//! links stay byte-identical.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Mount, Scratch, as_user, with_shared_map};
use rustix::fs::{AtFlags, Mode, OFlags, XattrFlags};
use rustix::io::Errno;
use vxfs::dlimit::Limit;
use vxfs::iattr::{IATTR_XATTR, IAttr};
use vxfs::index::Index;
use vxfs::tagging::{XID_XATTR, Xid};

/// Guest users: uid N*1000 is context N.
const G1: u32 = 5000;
const G2: u32 = 6000;
const UNIFIED: u32 = IAttr::IMMUTABLE | IAttr::IUNLINK;
const CONTENT: &[u8] = b"shared content, long enough to be worth sharing\n";

fn index_path(scratch: &Scratch) -> PathBuf {
    scratch.path().join("index.db")
}

/// A mount where uid N*1000.. is context N, with guest dirs g1 (G1's) and
/// g2 (G2's) and a host-only store dir.
fn setup(scratch: &Scratch) -> Mount {
    fs::set_permissions(scratch.src(), fs::Permissions::from_mode(0o755)).unwrap();
    let opts = format!("xid=uid/1000,index={}", index_path(scratch).display());
    let mount = Mount::scratch(scratch, &opts);
    let m = mount.path();
    for (dir, uid) in [("g1", G1), ("g2", G2)] {
        fs::create_dir(m.join(dir)).unwrap();
        rustix::fs::chown(
            m.join(dir),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(uid)),
        )
        .unwrap();
    }
    fs::create_dir(m.join("store")).unwrap();
    mount
}

/// Sets flags through the mount (as the host: root in context 0).
fn set_flags(path: &Path, bits: u32) -> Result<(), Errno> {
    let value = bits.to_string();
    rustix::fs::lsetxattr(path, IATTR_XATTR, value.as_bytes(), XattrFlags::empty())
}

/// A backing inode's flags (0: none).
fn flags_of(backing: &Path) -> u32 {
    common::backing_xattr(backing, IATTR_XATTR).map_or(0, |v| v.parse().unwrap())
}

/// A backing inode's tag (0: none, the host's).
fn tag_of(backing: &Path) -> u32 {
    common::backing_xattr(backing, XID_XATTR).map_or(0, |v| v.parse().unwrap())
}

fn chown(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .unwrap();
}

/// A unified file `store/NAME` (owner `uid`, mode `mode`, a user xattr,
/// old times) hard-linked as g1/NAME and g2/NAME, the way hashify makes
/// them: flagged first, then linked.
fn unified(m: &Path, name: &str, uid: u32, mode: u32) {
    let store = m.join("store").join(name);
    fs::write(&store, CONTENT).unwrap();
    chown(&store, uid, uid);
    fs::set_permissions(&store, fs::Permissions::from_mode(mode)).unwrap();
    rustix::fs::lsetxattr(&store, "user.origin", b"store", XattrFlags::empty()).unwrap();
    let old = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 500,
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, &store, &old, AtFlags::empty()).unwrap();
    set_flags(&store, UNIFIED).unwrap();
    fs::hard_link(&store, m.join("g1").join(name)).unwrap();
    fs::hard_link(&store, m.join("g2").join(name)).unwrap();
}

/// What a guest may do to its link of a unified file, and what the
/// private copy then holds.
struct WritePath {
    name: &'static str,
    op: fn(&Path),
    expect: &'static [u8],
}

fn open_write(path: &Path, flags: OFlags, data: &[u8]) {
    let fd = rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    if !data.is_empty() {
        rustix::io::write(&fd, data).unwrap();
    }
}

const WRITE_PATHS: &[WritePath] = &[
    WritePath {
        name: "o_wronly",
        op: |p| open_write(p, OFlags::WRONLY, b"OVER"),
        expect: b"OVERed content, long enough to be worth sharing\n",
    },
    WritePath {
        name: "o_rdwr_append",
        op: |p| open_write(p, OFlags::RDWR | OFlags::APPEND, b"more\n"),
        expect: b"shared content, long enough to be worth sharing\nmore\n",
    },
    WritePath {
        name: "o_trunc",
        op: |p| open_write(p, OFlags::WRONLY | OFlags::TRUNC, b"new\n"),
        expect: b"new\n",
    },
    WritePath {
        name: "o_rdonly_trunc",
        op: |p| open_write(p, OFlags::RDONLY | OFlags::TRUNC, b""),
        expect: b"",
    },
    WritePath {
        name: "truncate2",
        op: |p| {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(truncate_path(&c, 6), 0, "truncate {}", p.display());
        },
        expect: b"shared",
    },
    WritePath {
        name: "fallocate",
        op: |p| {
            let fd = rustix::fs::open(p, OFlags::RDWR, Mode::empty()).unwrap();
            rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 1 << 20).unwrap();
        },
        expect: CONTENT,
    },
    WritePath {
        name: "mmap",
        op: |p| {
            let fd = rustix::fs::open(p, OFlags::RDWR, Mode::empty()).unwrap();
            with_shared_map(fd.as_fd(), |map| map[..6].copy_from_slice(b"MAPPED")).unwrap();
        },
        expect: b"MAPPED content, long enough to be worth sharing\n",
    },
    WritePath {
        name: "chmod",
        op: |p| fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap(),
        expect: CONTENT,
    },
    WritePath {
        name: "chown",
        op: |p| {
            rustix::fs::chown(p, None, Some(rustix::fs::Gid::from_raw(G1))).unwrap();
        },
        expect: CONTENT,
    },
    WritePath {
        name: "utimes",
        op: |p| {
            let now = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                },
            };
            rustix::fs::utimensat(rustix::fs::CWD, p, &now, AtFlags::empty()).unwrap();
        },
        expect: CONTENT,
    },
    WritePath {
        name: "setxattr",
        op: |p| rustix::fs::lsetxattr(p, "user.mine", b"1", XattrFlags::empty()).unwrap(),
        expect: CONTENT,
    },
];

/// truncate(2) by path (rustix has only ftruncate).
#[allow(unsafe_code)]
fn truncate_path(path: &std::ffi::CStr, len: i64) -> i32 {
    // SAFETY: `path` is a valid NUL-terminated string for the call.
    unsafe { libc::truncate(path.as_ptr(), len) }
}

#[test]
fn every_write_path_breaks_only_the_writers_link() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let (m, src) = (mount.path(), scratch.src());
    for wp in WRITE_PATHS {
        // Owned by the writer, so that chmod/chown are the owner's.
        unified(m, wp.name, G1, 0o644);
    }
    let shared_ino = |name: &str| fs::metadata(m.join("store").join(name)).unwrap().ino();
    for wp in WRITE_PATHS {
        let ino = shared_ino(wp.name);
        let mine = m.join("g1").join(wp.name);
        as_user(G1, G1, || (wp.op)(&mine));
        let ctx = wp.name;
        // The writer's name: a private, unflagged copy tagged and owned
        // like the original.
        let st = fs::symlink_metadata(&mine).unwrap();
        assert_ne!(st.ino(), ino, "{ctx}: link not broken");
        assert_eq!(st.nlink(), 1, "{ctx}");
        assert_eq!(fs::read(&mine).unwrap(), wp.expect, "{ctx}");
        let backing = src.join("g1").join(wp.name);
        assert_eq!(flags_of(&backing), 0, "{ctx}: the copy carries no flags");
        assert_eq!(tag_of(&backing), 5, "{ctx}: the copy is the writer's");
        assert_eq!(st.uid(), G1, "{ctx}");
        let mode = if wp.name == "chmod" { 0o600 } else { 0o644 };
        assert_eq!(st.mode() & 0o7777, mode, "{ctx}");
        if !matches!(
            wp.name,
            "o_wronly"
                | "o_rdwr_append"
                | "o_trunc"
                | "o_rdonly_trunc"
                | "truncate2"
                | "fallocate"
                | "mmap"
                | "utimes"
        ) {
            assert_eq!(
                (st.mtime(), st.mtime_nsec()),
                (1_000_000_000, 500),
                "{ctx}: times kept"
            );
        }
        let mut buf = [0u8; 16];
        let n = rustix::fs::lgetxattr(&mine, "user.origin", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"store", "{ctx}: xattrs kept");
        // Everyone else still shares the untouched original.
        // The kernel was told the shared inode lost a link.
        for other in ["store", "g2"] {
            let other = m.join(other).join(wp.name);
            let st = fs::symlink_metadata(&other).unwrap();
            assert_eq!(st.ino(), ino, "{ctx}: {}", other.display());
            assert_eq!(st.nlink(), 2, "{ctx}");
            assert_eq!(fs::read(&other).unwrap(), CONTENT, "{ctx}");
            assert_eq!(st.mode() & 0o7777, 0o644, "{ctx}");
        }
        assert_eq!(flags_of(&src.join("g2").join(wp.name)), UNIFIED, "{ctx}");
    }
    let leftovers: Vec<_> = fs::read_dir(src.join("g1"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".vxfs-cow"))
        .collect();
    assert!(leftovers.is_empty(), "temporary copies left: {leftovers:?}");
}

#[test]
fn the_host_breaks_links_too_and_its_copy_is_untagged() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let m = mount.path();
    unified(m, "f", 0, 0o644);
    let ino = fs::metadata(m.join("g2/f")).unwrap().ino();
    fs::write(m.join("g1/f"), b"host\n").unwrap();
    assert_ne!(fs::metadata(m.join("g1/f")).unwrap().ino(), ino);
    assert_eq!(tag_of(&scratch.src().join("g1/f")), 0);
    assert_eq!(fs::read(m.join("g2/f")).unwrap(), CONTENT);
}

#[test]
fn the_last_link_is_made_private_in_place() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let (m, src) = (mount.path(), scratch.src());
    let f = m.join("g1/only");
    fs::write(&f, CONTENT).unwrap();
    chown(&f, G1, G1);
    set_flags(&f, UNIFIED).unwrap();
    let ino = fs::metadata(&f).unwrap().ino();
    as_user(G1, G1, || {
        open_write(&f, OFlags::WRONLY | OFlags::APPEND, b"+")
    });
    assert_eq!(fs::metadata(&f).unwrap().ino(), ino, "no copy for one link");
    assert_eq!(flags_of(&src.join("g1/only")), 0);
    assert_eq!(tag_of(&src.join("g1/only")), 5, "handed to the writer");
    assert_eq!(fs::read(&f).unwrap().len(), CONTENT.len() + 1);
}

#[test]
fn concurrent_writers_each_get_one_private_copy() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let m = mount.path();
    unified(m, "f", 0, 0o666);
    let ino = fs::metadata(m.join("store/f")).unwrap().ino();
    std::thread::scope(|scope| {
        for i in 0..12u32 {
            let (uid, dir) = if i % 2 == 0 { (G1, "g1") } else { (G2, "g2") };
            let path = m.join(dir).join("f");
            scope.spawn(move || {
                as_user(uid, uid, || {
                    open_write(
                        &path,
                        OFlags::WRONLY | OFlags::APPEND,
                        format!("{i}\n").as_bytes(),
                    )
                })
            });
        }
    });
    eprintln!(
        "store: {:?}",
        String::from_utf8_lossy(&fs::read(m.join("store/f")).unwrap())
    );
    for (dir, parity) in [("g1", 0), ("g2", 1)] {
        let data = fs::read(m.join(dir).join("f")).unwrap();
        assert!(data.starts_with(CONTENT), "{dir}");
        let mut lines: Vec<u32> = String::from_utf8(data[CONTENT.len()..].to_vec())
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        lines.sort();
        let want: Vec<u32> = (0..12).filter(|i| i % 2 == parity).collect();
        assert_eq!(lines, want, "{dir}: every append in one private copy");
        let st = fs::metadata(m.join(dir).join("f")).unwrap();
        assert_ne!(st.ino(), ino);
        assert_eq!(st.nlink(), 1);
    }
    let store = fs::metadata(scratch.src().join("store/f")).unwrap();
    assert_eq!((store.ino(), store.nlink()), (ino, 1));
    assert_eq!(fs::read(m.join("store/f")).unwrap(), CONTENT);
}

#[test]
fn a_copy_the_writers_limit_cannot_hold_is_enospc() {
    let scratch = Scratch::new();
    {
        let (index, _) = Index::open(&index_path(&scratch)).unwrap();
        let limit = Limit {
            space: Some(256 * 1024),
            inodes: None,
            reserved: 0,
        };
        index.set_limit(Xid(5), Some(limit)).unwrap();
    }
    let mount = setup(&scratch);
    let m = mount.path();
    let big = vec![7u8; 1 << 20];
    let store = m.join("store/big");
    fs::write(&store, &big).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o666)).unwrap();
    set_flags(&store, UNIFIED).unwrap();
    fs::hard_link(&store, m.join("g1/big")).unwrap();
    fs::hard_link(&store, m.join("g2/big")).unwrap();
    let ino = fs::metadata(&store).unwrap().ino();
    let g1 = m.join("g1/big");
    let refused = as_user(G1, G1, || {
        rustix::fs::open(&g1, OFlags::WRONLY, Mode::empty()).map(drop)
    });
    assert_eq!(refused, Err(Errno::NOSPC));
    assert_eq!(fs::metadata(&g1).unwrap().ino(), ino, "still shared");
    // Context 6 has no limit: its copy is its own and charged to it.
    let g2 = m.join("g2/big");
    as_user(G2, G2, || open_write(&g2, OFlags::WRONLY, b"x"));
    assert_ne!(fs::metadata(&g2).unwrap().ino(), ino);
    drop(mount);
    let (index, _) = Index::open(&index_path(&scratch)).unwrap();
    let usage = index.clean_usage().unwrap().expect("clean counters");
    let of = |x: u32| usage.iter().find(|(id, _)| *id == Xid(x)).map(|(_, u)| *u);
    let six = of(6).expect("context 6 charged");
    assert!(six.space >= 1 << 20, "copy charged to the writer: {six:?}");
    assert!(
        of(5).is_none_or(|u| u.space < 64 * 1024),
        "nothing charged to 5"
    );
}

/// Expected errno of an operation on a flagged file, run as its owner G1.
fn errno_of(r: Result<(), Errno>) -> Option<Errno> {
    r.err()
}

#[test]
fn flags_refuse_with_the_specs_errnos() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let m = mount.path();
    let (a, p) = (Errno::ACCESS, Errno::PERM);
    // flags, then (write-open, truncate, chmod, utimes, setxattr, unlink,
    // rename away, rename over, link) errnos; None = allowed.
    let immutable = IAttr::IMMUTABLE;
    let iunlink = IAttr::IUNLINK;
    let table: [(u32, [Option<Errno>; 9]); 3] = [
        (
            immutable,
            [
                Some(a),
                Some(a),
                Some(p),
                Some(p),
                Some(p),
                Some(p),
                Some(p),
                Some(p),
                Some(p),
            ],
        ),
        (
            iunlink,
            [
                None,
                None,
                None,
                None,
                None,
                Some(p),
                Some(p),
                Some(p),
                Some(p),
            ],
        ),
        (0, [None; 9]),
    ];
    for (bits, want) in table {
        for (i, want) in want.into_iter().enumerate() {
            let dir = m.join("g1");
            let f = dir.join(format!("f{bits}-{i}"));
            fs::write(&f, CONTENT).unwrap();
            chown(&f, G1, G1);
            fs::write(dir.join("other"), b"o").unwrap();
            chown(&dir.join("other"), G1, G1);
            set_flags(&f, bits).unwrap();
            let got = as_user(G1, G1, || {
                errno_of(match i {
                    0 => rustix::fs::open(&f, OFlags::WRONLY, Mode::empty()).map(drop),
                    1 => {
                        let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
                        if truncate_path(&c, 1) == 0 {
                            Ok(())
                        } else {
                            Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap())
                        }
                    }
                    2 => rustix::fs::chmod(&f, Mode::from_raw_mode(0o600)),
                    3 => rustix::fs::utimensat(
                        rustix::fs::CWD,
                        &f,
                        &rustix::fs::Timestamps {
                            last_access: rustix::fs::Timespec {
                                tv_sec: 5,
                                tv_nsec: 0,
                            },
                            last_modification: rustix::fs::Timespec {
                                tv_sec: 5,
                                tv_nsec: 0,
                            },
                        },
                        AtFlags::empty(),
                    ),
                    4 => rustix::fs::lsetxattr(&f, "user.x", b"1", XattrFlags::empty()),
                    5 => rustix::fs::unlink(&f),
                    6 => rustix::fs::rename(&f, dir.join("moved")),
                    7 => rustix::fs::rename(dir.join("other"), &f),
                    _ => rustix::fs::link(&f, dir.join("linked")),
                })
            });
            assert_eq!(got, want, "flags {bits:#x}, operation {i}");
            // Clean up for the next round, as the host.
            for leftover in [
                f.clone(),
                dir.join("moved"),
                dir.join("linked"),
                dir.join("other"),
            ] {
                if leftover.exists() {
                    set_flags(&leftover, 0).unwrap();
                    fs::remove_file(&leftover).unwrap();
                }
            }
        }
    }
    // The refusals hold for the host too.
    let f = m.join("store/frozen");
    fs::write(&f, CONTENT).unwrap();
    set_flags(&f, immutable).unwrap();
    assert_eq!(rustix::fs::unlink(&f), Err(p));
    assert_eq!(
        rustix::fs::open(&f, OFlags::WRONLY, Mode::empty()).map(drop),
        Err(a)
    );
    // No new names in an immutable directory.
    let d = m.join("store/frozen-dir");
    fs::create_dir(&d).unwrap();
    set_flags(&d, immutable).unwrap();
    assert_eq!(
        fs::write(d.join("x"), b"").map_err(|e| e.raw_os_error()),
        Err(Some(libc::EACCES))
    );
    set_flags(&d, 0).unwrap();
    fs::write(d.join("x"), b"").unwrap();
    // A unified file's names come and go freely.
    unified(m, "u", G1, 0o644);
    as_user(G1, G1, || {
        rustix::fs::link(m.join("g1/u"), m.join("g1/u2")).unwrap();
        rustix::fs::rename(m.join("g1/u2"), m.join("g1/u3")).unwrap();
        rustix::fs::unlink(m.join("g1/u3")).unwrap();
        rustix::fs::unlink(m.join("g1/u")).unwrap();
    });
    assert_eq!(fs::read(m.join("g2/u")).unwrap(), CONTENT);
}

#[test]
fn only_the_host_sets_flags_and_only_where_they_apply() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let (m, src) = (mount.path(), scratch.src());
    let f = m.join("g1/f");
    fs::write(&f, CONTENT).unwrap();
    // Barrier sticks to directories, cow to files; procfs bits are EINVAL.
    set_flags(&f, IAttr::BARRIER | IAttr::COW).unwrap();
    assert_eq!(flags_of(&src.join("g1/f")), IAttr::COW);
    set_flags(m.join("g1").as_path(), IAttr::BARRIER | IAttr::COW).unwrap();
    assert_eq!(flags_of(&src.join("g1")), IAttr::BARRIER);
    set_flags(m.join("g1").as_path(), 0).unwrap();
    assert_eq!(set_flags(&f, IAttr::ADMIN), Err(Errno::INVAL));
    assert_eq!(
        rustix::fs::lsetxattr(&f, IATTR_XATTR, b"x", XattrFlags::empty()),
        Err(Errno::INVAL)
    );
    rustix::fs::lremovexattr(&f, IATTR_XATTR).unwrap();
    assert_eq!(flags_of(&src.join("g1/f")), 0);
    // A guest cannot (and a guest's root, in its own pid namespace of a
    // fixed-context mount, is refused by vxfs itself).
    as_user(G1, G1, || {
        assert_eq!(set_flags(&f, 0), Err(Errno::PERM));
    });
    drop(mount);
    // On a mount with a fixed context every caller is the guest: a guest's
    // root in its own pid namespace, one in a plain chroot in the host's
    // pid namespace, and root on the host alike.
    let scratch2 = Scratch::new();
    let opts = format!("xid=5,index={}", index_path(&scratch2).display());
    let fixed = Mount::scratch(&scratch2, &opts);
    let g = fixed.path().join("g");
    fs::write(&g, CONTENT).unwrap();
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--", "setfattr", "-n", IATTR_XATTR, "-v"])
        .arg(IAttr::IMMUTABLE.to_string())
        .arg(&g)
        .output()
        .expect("run unshare");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    let in_chroot = common::in_chroot(fixed.path(), || {
        (
            set_flags(Path::new("/g"), IAttr::IMMUTABLE),
            rustix::fs::lsetxattr("/g", XID_XATTR, b"0", XattrFlags::empty()),
        )
    });
    assert_eq!(in_chroot, (Err(Errno::PERM), Err(Errno::PERM)));
    assert_eq!(set_flags(&g, IAttr::IMMUTABLE), Err(Errno::PERM));
    assert_eq!(
        rustix::fs::lremovexattr(&g, XID_XATTR),
        Err(Errno::PERM),
        "not even removing the tag"
    );
    assert_eq!(flags_of(&scratch2.src().join("g")), 0);
    assert_eq!(tag_of(&scratch2.src().join("g")), 5);
}

#[test]
fn a_barrier_refuses_guests_but_not_the_host() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let m = mount.path();
    let b = m.join("vservers");
    fs::create_dir_all(b.join("guest/etc")).unwrap();
    fs::write(b.join("guest/etc/passwd"), b"root").unwrap();
    fs::set_permissions(&b, fs::Permissions::from_mode(0o755)).unwrap();
    set_flags(&b, IAttr::BARRIER).unwrap();
    // The host walks through, caching the names ...
    assert_eq!(fs::read(b.join("guest/etc/passwd")).unwrap(), b"root");
    assert_eq!(fs::read_dir(&b).unwrap().count(), 1);
    // ... which guests still cannot use.
    as_user(G1, G1, || {
        for attempt in 0..2 {
            let read = fs::read(b.join("guest/etc/passwd")).map_err(|e| e.raw_os_error());
            assert_eq!(read, Err(Some(libc::EACCES)), "attempt {attempt}");
            let list = fs::read_dir(&b).map(drop).map_err(|e| e.raw_os_error());
            assert_eq!(list, Err(Some(libc::EACCES)));
        }
        // Not even its attributes.
        let stat = fs::metadata(&b).map(drop).map_err(|e| e.raw_os_error());
        assert_eq!(stat, Err(Some(libc::EACCES)));
    });
    set_flags(&b, 0).unwrap();
    as_user(G1, G1, || {
        assert_eq!(fs::read(b.join("guest/etc/passwd")).unwrap(), b"root");
    });
}

/// A guest given its root below a barrier (a descriptor of it, as a
/// chroot or a cwd would be) walking up with `..` must stop at the
/// barrier, whatever the barrier's mode and whoever just listed it.
#[test]
fn a_barrier_holds_against_dotdot() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let m = mount.path();
    let b = m.join("vservers");
    fs::create_dir_all(b.join("guest/etc")).unwrap();
    fs::create_dir_all(b.join("other")).unwrap();
    fs::write(b.join("other/secret"), b"other guest").unwrap();
    chown(&b.join("guest"), G1, G1);
    fs::write(m.join("host-secret"), b"host").unwrap();
    set_flags(&b, IAttr::BARRIER).unwrap();
    let guest = rustix::fs::open(
        b.join("guest"),
        OFlags::PATH | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    for mode in [0o701, 0o755, 0o711] {
        fs::set_permissions(&b, fs::Permissions::from_mode(mode)).unwrap();
        // The host, a host user and the guest itself have just been there.
        assert_eq!(fs::read_dir(&b).unwrap().count(), 2);
        assert_eq!(fs::read(m.join("host-secret")).unwrap(), b"host");
        as_user(500, 500, || {
            let _ = fs::read_dir(&b).map(|d| d.count());
            let _ = fs::metadata(b.join("other/secret"));
        });
        let attempts = as_user(G1, G1, || {
            let at = |path: &str, flags: OFlags| {
                rustix::fs::openat(&guest, path, flags | OFlags::CLOEXEC, Mode::empty()).map(drop)
            };
            [
                at("../../host-secret", OFlags::RDONLY),
                at("../other/secret", OFlags::RDONLY),
                at("../..", OFlags::RDONLY | OFlags::DIRECTORY),
                at("..", OFlags::RDONLY | OFlags::DIRECTORY),
                rustix::fs::statat(&guest, "..", AtFlags::SYMLINK_NOFOLLOW).map(drop),
                rustix::fs::openat(&guest, "..", OFlags::PATH, Mode::empty())
                    .and_then(|up| rustix::fs::openat(&up, "other", OFlags::PATH, Mode::empty()))
                    .map(drop),
            ]
        });
        assert_eq!(attempts, [Err(Errno::ACCESS); 6], "barrier mode {mode:o}");
        // Its own tree below stays usable.
        as_user(G1, G1, || {
            rustix::fs::openat(
                &guest,
                "etc",
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap()
        });
    }
}

#[test]
fn a_change_through_a_descriptor_leaves_the_link_shared() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let m = mount.path();
    unified(m, "f", G1, 0o644);
    let ino = fs::metadata(m.join("store/f")).unwrap().ino();
    let mine = m.join("g1/f");
    // fchmod, fchown, futimens, fsetxattr and fremovexattr on a read-only
    // descriptor name no path to break: the kernel would not retry them,
    // so they are refused like the original's (EPERM) and leave no mark.
    let got = as_user(G1, G1, || {
        let fd = rustix::fs::open(&mine, OFlags::RDONLY, Mode::empty()).unwrap();
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 5,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 5,
                tv_nsec: 0,
            },
        };
        let got = [
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)),
            rustix::fs::fchown(&fd, Some(rustix::fs::Uid::from_raw(G1)), None),
            rustix::fs::futimens(&fd, &times),
            rustix::fs::fsetxattr(&fd, "user.x", b"1", XattrFlags::empty()),
            rustix::fs::fremovexattr(&fd, "user.origin"),
        ];
        // The attack that used to work: right after a refused descriptor
        // change, a plain lookup of another name of the same inode (the
        // store's, in a directory the guest cannot write) must not replace
        // that name with the guest's copy.
        let st = rustix::fs::stat(m.join("store/f")).unwrap();
        (got, st.st_ino)
    });
    assert_eq!(got.0, [Err(Errno::PERM); 5]);
    assert_eq!(got.1, ino, "the store's name was not broken");
    assert_eq!(fs::metadata(m.join("store/f")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(&mine).unwrap().ino(), ino);
    assert_eq!(fs::metadata(&mine).unwrap().mode() & 0o777, 0o644);
    assert_eq!(tag_of(&scratch.src().join("store/f")), 0);
    // Its path-based twin breaks the link as usual.
    as_user(G1, G1, || {
        fs::set_permissions(&mine, fs::Permissions::from_mode(0o600)).unwrap()
    });
    assert_ne!(fs::metadata(&mine).unwrap().ino(), ino);
    assert_eq!(fs::metadata(m.join("store/f")).unwrap().ino(), ino);
}

#[test]
fn a_guest_breaks_only_links_it_may_replace() {
    let scratch = Scratch::new();
    let mount = setup(&scratch);
    let m = mount.path();
    // A shared directory of the host's that guests may not write, holding a
    // unified file whose mode lets others write it (0606).
    fs::create_dir(m.join("shared")).unwrap();
    unified(m, "f", G2, 0o606);
    fs::hard_link(m.join("store/f"), m.join("shared/f")).unwrap();
    let ino = fs::metadata(m.join("store/f")).unwrap().ino();
    // Even of an absent attribute: guest 1 may not take the name over.
    as_user(G1, G1, || {
        let p = m.join("shared/f");
        assert_eq!(
            rustix::fs::lsetxattr(&p, "user.x", b"1", XattrFlags::empty()),
            Err(Errno::ACCESS)
        );
        assert_eq!(
            rustix::fs::lremovexattr(&p, "user.absent"),
            Err(Errno::ACCESS)
        );
        assert_eq!(
            rustix::fs::open(&p, OFlags::WRONLY, Mode::empty()).map(drop),
            Err(Errno::ACCESS)
        );
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(truncate_path(&c, 0), -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EACCES)
        );
    });
    assert_eq!(fs::metadata(m.join("shared/f")).unwrap().ino(), ino);
    assert_eq!(flags_of(&scratch.src().join("shared/f")), UNIFIED);
    assert_eq!(tag_of(&scratch.src().join("shared/f")), 0);
    as_user(G2, G2, || {
        assert_eq!(fs::read(m.join("g2/f")).unwrap(), CONTENT);
        assert_eq!(fs::read(m.join("shared/f")).unwrap(), CONTENT);
    });
    // The last link of a unified file is not handed to a guest that may
    // not replace its name either.
    fs::remove_file(m.join("store/f")).unwrap();
    fs::remove_file(m.join("g1/f")).unwrap();
    fs::remove_file(m.join("g2/f")).unwrap();
    as_user(G1, G1, || {
        let p = m.join("shared/f");
        assert_eq!(
            rustix::fs::lsetxattr(&p, "user.x", b"1", XattrFlags::empty()),
            Err(Errno::ACCESS)
        );
    });
    assert_eq!(tag_of(&scratch.src().join("shared/f")), 0);
    assert_eq!(flags_of(&scratch.src().join("shared/f")), UNIFIED);
    // Where the guest may replace the name anyway (its own directory), it
    // gets its private copy, as before.
    unified(m, "h", G2, 0o606);
    as_user(G1, G1, || {
        rustix::fs::lsetxattr(m.join("g1/h"), "user.x", b"1", XattrFlags::empty()).unwrap()
    });
    assert_eq!(tag_of(&scratch.src().join("g1/h")), 5);
    assert_eq!(flags_of(&scratch.src().join("g2/h")), UNIFIED);
}

#[test]
fn a_file_open_for_writing_does_not_freeze() {
    // Its writer (passthrough, or a shared mapping) would go on writing
    // past the flag: ext4 fails such writes, vxfs cannot reach them, so
    // the flag is refused while a writer is open, on every mount of the
    // tree and without accounting too.
    for opts in ["", "xid=uid/1000,dlimits=off"] {
        let scratch = Scratch::new();
        let mount = Mount::scratch(&scratch, opts);
        let f = mount.path().join("f");
        fs::write(&f, CONTENT).unwrap();
        let mut writer = fs::OpenOptions::new().append(true).open(&f).unwrap();
        for bits in [IAttr::IMMUTABLE, UNIFIED] {
            assert_eq!(
                set_flags(&f, bits),
                Err(Errno::TXTBSY),
                "-o {opts}: {bits:#x}"
            );
        }
        // Flags that do not stop writes are fine meanwhile.
        set_flags(&f, IAttr::IUNLINK).unwrap();
        std::io::Write::write_all(&mut writer, b"more").unwrap();
        drop(writer);
        // Closed (its release may still be on the way): now it freezes,
        // and no writer opens any more.
        set_flags(&f, IAttr::IMMUTABLE).unwrap();
        let reopened = fs::OpenOptions::new().append(true).open(&f);
        assert_eq!(
            reopened.err().and_then(|e| e.raw_os_error()),
            Some(libc::EACCES),
            "-o {opts}"
        );
        assert_eq!(fs::read(&f).unwrap().len(), CONTENT.len() + 4);
        set_flags(&f, 0).unwrap();
        mount.unmount();
    }
}

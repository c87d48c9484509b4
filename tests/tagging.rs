//! xid tagging through a real mount (vserver-semantics §1): new inodes carry
//! their creator's context in `trusted.vxfs.xid` on the backing inode,
//! guests reach only their own and host inodes, and nobody changes a tag
//! through the mount.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Mount, Scratch, as_user};

const XATTR: &str = "trusted.vxfs.xid";
/// With `-o xid=uid/1000`, uid 2000 is context 2 and uid 3000 context 3.
const RANGE_OPTS: &str = "xid=uid/1000,attr_timeout=0,entry_timeout=0";
const GUEST2: u32 = 2000;
const GUEST3: u32 = 3000;

/// The tag stored on a backing inode (None when untagged).
fn backing_tag(path: &Path) -> Option<String> {
    common::backing_xattr(path, XATTR)
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// A scratch tree with a world-writable sticky `pub/` dir, mounted with
/// `opts`.
fn setup(opts: &str) -> (Scratch, Mount) {
    let scratch = Scratch::new();
    let public = scratch.src().join("pub");
    fs::create_dir(&public).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o1777)).unwrap();
    let mount = Mount::scratch(&scratch, opts);
    (scratch, mount)
}

#[test]
fn new_inodes_carry_the_creators_context() {
    let (scratch, mount) = setup(RANGE_OPTS);
    let m = mount.path().join("pub");
    as_user(GUEST2, GUEST2, || {
        fs::write(m.join("file"), b"g2").unwrap();
        fs::create_dir(m.join("dir")).unwrap();
        std::os::unix::fs::symlink("file", m.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            m.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    });
    fs::write(m.join("by-host"), b"h").unwrap();
    let src = scratch.src().join("pub");
    for name in ["file", "dir", "link", "fifo"] {
        assert_eq!(backing_tag(&src.join(name)).as_deref(), Some("2"), "{name}");
    }
    assert_eq!(
        backing_tag(&src.join("by-host")),
        None,
        "host inodes stay untagged"
    );
    // A fixed context tags everything the mount's callers create, root
    // included, and the tag is the creator's, not the parent directory's.
    drop(mount);
    let mount = Mount::scratch(&scratch, "xid=7");
    fs::write(mount.path().join("pub/by-root-in-guest"), b"7").unwrap();
    as_user(GUEST2, GUEST2, || {
        fs::write(mount.path().join("pub/dir-of-2-child"), b"7").unwrap()
    });
    assert_eq!(
        backing_tag(&src.join("by-root-in-guest")).as_deref(),
        Some("7")
    );
    assert_eq!(
        backing_tag(&src.join("dir-of-2-child")).as_deref(),
        Some("7")
    );
}

#[test]
fn guests_reach_only_their_own_and_host_inodes() {
    // Without caching, and with the kernel's caches on (what one guest
    // looked up must not serve another from the cache).
    for opts in [RANGE_OPTS, "xid=uid/1000"] {
        fence(opts);
    }
}

fn fence(opts: &str) {
    let (_scratch, mount) = setup(opts);
    let m = mount.path().join("pub");
    fs::write(m.join("host-file"), b"host").unwrap();
    fs::create_dir(m.join("shared")).unwrap();
    fs::set_permissions(m.join("shared"), fs::Permissions::from_mode(0o777)).unwrap();
    as_user(GUEST2, GUEST2, || {
        for dir in [m.to_path_buf(), m.join("shared")] {
            fs::write(dir.join("g2"), b"mine").unwrap();
            fs::set_permissions(dir.join("g2"), fs::Permissions::from_mode(0o666)).unwrap();
            std::os::unix::fs::symlink("g2", dir.join("g2link")).unwrap();
            fs::create_dir(dir.join("g2empty")).unwrap();
            fs::set_permissions(dir.join("g2empty"), fs::Permissions::from_mode(0o777)).unwrap();
        }
        fs::create_dir(m.join("g2dir")).unwrap();
        fs::set_permissions(m.join("g2dir"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(m.join("g2dir/inner"), b"inner").unwrap();
    });
    as_user(GUEST3, GUEST3, || {
        // Modes would allow all of this; the tag does not.
        assert_eq!(errno_of(fs::read(m.join("g2"))), Some(libc::EACCES));
        assert_eq!(errno_of(fs::write(m.join("g2"), b"x")), Some(libc::EACCES));
        assert_eq!(errno_of(fs::read_dir(m.join("g2dir"))), Some(libc::EACCES));
        assert_eq!(
            errno_of(fs::read(m.join("g2dir/inner"))),
            Some(libc::EACCES)
        );
        assert_eq!(
            errno_of(fs::write(m.join("g2dir/new"), b"x")),
            Some(libc::EACCES)
        );
        let chmod = fs::set_permissions(m.join("g2"), fs::Permissions::from_mode(0o600));
        assert_eq!(errno_of(chmod), Some(libc::EACCES));
        let link = fs::hard_link(m.join("g2"), m.join("stolen"));
        assert_eq!(errno_of(link), Some(libc::EACCES));
        // In a directory both may use (here the host's sticky /pub, and a
        // plain 0777 one), another guest's entries can be listed by name
        // but not stat'ed, read, removed, renamed or replaced.
        for dir in [m.to_path_buf(), m.join("shared")] {
            let names: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(names.iter().any(|n| n == "g2"), "{names:?}");
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                if entry.file_name().to_string_lossy().starts_with("g2") {
                    assert_eq!(errno_of(entry.metadata()), Some(libc::EACCES));
                }
            }
            assert_eq!(
                errno_of(fs::symlink_metadata(dir.join("g2"))),
                Some(libc::EACCES)
            );
            assert_eq!(
                errno_of(fs::read_link(dir.join("g2link"))),
                Some(libc::EACCES)
            );
            assert_eq!(
                errno_of(fs::remove_file(dir.join("g2"))),
                Some(libc::EACCES)
            );
            assert_eq!(
                errno_of(fs::remove_dir(dir.join("g2empty"))),
                Some(libc::EACCES)
            );
            assert_eq!(
                errno_of(fs::rename(dir.join("g2"), dir.join("mine-now"))),
                Some(libc::EACCES)
            );
            fs::write(dir.join("g3"), b"g3").unwrap();
            assert_eq!(
                errno_of(fs::rename(dir.join("g3"), dir.join("g2"))),
                Some(libc::EACCES)
            );
            fs::remove_file(dir.join("g3")).unwrap();
        }
        // Host files are shared.
        assert_eq!(fs::read(m.join("host-file")).unwrap(), b"host");
    });
    for dir in [m.to_path_buf(), m.join("shared")] {
        assert_eq!(
            fs::read(dir.join("g2")).unwrap(),
            b"mine",
            "{}",
            dir.display()
        );
        assert_eq!(fs::read_link(dir.join("g2link")).unwrap(), Path::new("g2"));
        assert!(dir.join("g2empty").is_dir());
    }
    as_user(GUEST2, GUEST2, || {
        assert_eq!(fs::read(m.join("g2dir/inner")).unwrap(), b"inner");
    });
    // The host (context 0) reaches everything.
    assert_eq!(fs::read(m.join("g2dir/inner")).unwrap(), b"inner");
}

#[test]
fn notagcheck_keeps_tags_but_not_the_fence() {
    let (scratch, mount) = setup(&format!("{RANGE_OPTS},notagcheck"));
    let m = mount.path().join("pub");
    as_user(GUEST2, GUEST2, || {
        fs::write(m.join("g2"), b"mine").unwrap();
        fs::set_permissions(m.join("g2"), fs::Permissions::from_mode(0o644)).unwrap();
    });
    assert_eq!(
        backing_tag(&scratch.src().join("pub/g2")).as_deref(),
        Some("2")
    );
    as_user(GUEST3, GUEST3, || {
        assert_eq!(fs::read(m.join("g2")).unwrap(), b"mine");
    });
}

/// Runs `setfattr`/`getfattr`-style commands as root in a new pid
/// namespace: what a guest's root looks like to a fixed-context mount.
fn in_guest_pid_ns(args: &[&str]) -> std::process::Output {
    std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--"])
        .args(args)
        .output()
        .expect("run unshare (util-linux)")
}

#[test]
fn guests_cannot_change_or_list_a_tag_through_the_mount() {
    let (scratch, mount) = setup("xid=5");
    let f = mount.path().join("pub/f");
    fs::write(&f, b"5").unwrap();
    let f_arg = f.to_str().unwrap();
    // Root inside the guest: the kernel lets trusted.* through to vxfs,
    // which refuses.
    for cmd in [
        &["setfattr", "-n", XATTR, "-v", "0", f_arg][..],
        &["setfattr", "-n", XATTR, "-v", "6", f_arg],
        &["setfattr", "-x", XATTR, f_arg],
        &["setfattr", "-n", "trusted.vxfs.other", "-v", "1", f_arg],
    ] {
        let out = in_guest_pid_ns(cmd);
        assert!(!out.status.success(), "{cmd:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Operation not permitted"), "{cmd:?}: {err}");
    }
    assert_eq!(
        backing_tag(&scratch.src().join("pub/f")).as_deref(),
        Some("5")
    );
    let mut list = vec![0u8; 1024];
    let n = rustix::fs::listxattr(&f, &mut list[..]).unwrap();
    assert!(
        !list[..n]
            .windows(XATTR.len())
            .any(|w| w == XATTR.as_bytes()),
        "the tag is not listed"
    );
    // Unprivileged guests cannot even ask (the kernel wants CAP_SYS_ADMIN).
    let (_s2, m2) = setup(RANGE_OPTS);
    let g = m2.path().join("pub/g");
    as_user(GUEST2, GUEST2, || {
        fs::write(&g, b"2").unwrap();
        let set = rustix::fs::setxattr(&g, XATTR, b"3", rustix::fs::XattrFlags::empty());
        assert_eq!(set, Err(rustix::io::Errno::PERM));
    });
}

#[test]
fn the_host_retags_through_the_mount_and_usage_follows() {
    let (scratch, mount) = setup(RANGE_OPTS);
    let m = mount.path().join("pub");
    as_user(GUEST2, GUEST2, || {
        fs::write(m.join("f"), vec![1u8; 100_000]).unwrap()
    });
    let f = m.join("f");
    let invalid = rustix::fs::setxattr(&f, XATTR, b"three", rustix::fs::XattrFlags::empty());
    assert_eq!(invalid, Err(rustix::io::Errno::INVAL));
    rustix::fs::setxattr(&f, XATTR, b"3", rustix::fs::XattrFlags::empty()).unwrap();
    assert_eq!(
        backing_tag(&scratch.src().join("pub/f")).as_deref(),
        Some("3")
    );
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(&f, XATTR, &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"3");
    as_user(GUEST3, GUEST3, || {
        assert_eq!(fs::read(&f).unwrap().len(), 100_000)
    });
    as_user(GUEST2, GUEST2, || {
        assert_eq!(errno_of(fs::read(&f)), Some(libc::EACCES));
    });
    // Back to the host: the xattr goes away.
    rustix::fs::removexattr(&f, XATTR).unwrap();
    assert_eq!(backing_tag(&scratch.src().join("pub/f")), None);
    drop(mount);
    // The counters moved with the tag: what was saved equals a recount.
    let index = vxfs::index::default_path(&scratch.src());
    let (index, _) = vxfs::index::Index::open(&index).unwrap();
    let saved = index.clean_usage().unwrap().expect("clean unmount");
    let of = |xid: u32| {
        saved
            .iter()
            .find(|(x, _)| x.0 == xid)
            .map(|(_, u)| *u)
            .unwrap_or_default()
    };
    assert_eq!(of(2).inodes, 0, "context 2 gave the inode away");
    assert_eq!(of(3).inodes, 0, "and context 3 gave it back to the host");
    assert!(of(0).space >= 100_000, "the host holds the space now");
}

#[test]
fn tags_persist_and_host_retags_are_seen() {
    let (scratch, mount) = setup(RANGE_OPTS);
    let m = mount.path().join("pub");
    as_user(GUEST2, GUEST2, || {
        fs::write(m.join("f"), b"x").unwrap();
        fs::set_permissions(m.join("f"), fs::Permissions::from_mode(0o666)).unwrap();
    });
    drop(mount);
    let mount = Mount::scratch(&scratch, RANGE_OPTS);
    let m = mount.path().join("pub");
    as_user(GUEST3, GUEST3, || {
        assert_eq!(errno_of(fs::read(m.join("f"))), Some(libc::EACCES));
    });
    // The host retags the backing inode (what chxid does).
    let backing = scratch.src().join("pub/f");
    rustix::fs::lsetxattr(&backing, XATTR, b"3", rustix::fs::XattrFlags::empty()).unwrap();
    as_user(GUEST3, GUEST3, || {
        // attr_timeout=0: the next stat re-reads the tag.
        assert_eq!(fs::metadata(m.join("f")).unwrap().uid(), GUEST2);
        assert_eq!(fs::read(m.join("f")).unwrap(), b"x");
    });
}

#[test]
fn a_corrupt_tag_shuts_guests_out() {
    let (scratch, mount) = setup(RANGE_OPTS);
    let backing = scratch.src().join("pub/f");
    fs::write(&backing, b"x").unwrap();
    fs::set_permissions(&backing, fs::Permissions::from_mode(0o666)).unwrap();
    rustix::fs::lsetxattr(&backing, XATTR, b"two", rustix::fs::XattrFlags::empty()).unwrap();
    let m = mount.path().join("pub");
    for uid in [GUEST2, GUEST3] {
        as_user(uid, uid, || {
            let err = fs::read(m.join("f")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        });
    }
    assert_eq!(
        fs::read(m.join("f")).unwrap(),
        b"x",
        "the host still reads it"
    );
}

#[test]
fn no_id_range_is_the_spectator_and_unmapped_callers_are_nobody() {
    let (_scratch, mount) = setup(RANGE_OPTS);
    let m = mount.path().join("pub");
    fs::write(m.join("host-file"), b"host").unwrap();
    as_user(GUEST2, GUEST2, || {
        fs::write(m.join("g2"), b"mine").unwrap();
        fs::set_permissions(m.join("g2"), fs::Permissions::from_mode(0o644)).unwrap();
    });
    // uids 1000-1999 would be context 1, the spectator, which sees every
    // guest (a rootless container on subuid base 100000 of a uid/65536
    // mount): they are unmapped instead, and may use host files only.
    as_user(1500, 1500, || {
        assert_eq!(errno_of(fs::read(m.join("g2"))), Some(libc::EACCES));
        assert_eq!(fs::read(m.join("host-file")).unwrap(), b"host");
        assert_eq!(errno_of(fs::write(m.join("new"), b"x")), Some(libc::EACCES));
        assert_eq!(errno_of(fs::create_dir(m.join("dir"))), Some(libc::EACCES));
    });
    drop(mount);
    // Contexts can be limited to an explicit range: uid 3000 is then nobody.
    let (_scratch, mount) = setup("xid=uid/1000:2-2");
    let m = mount.path().join("pub");
    as_user(GUEST2, GUEST2, || fs::write(m.join("g2"), b"mine").unwrap());
    as_user(GUEST3, GUEST3, || {
        assert_eq!(errno_of(fs::write(m.join("g3"), b"x")), Some(libc::EACCES));
    });
}

/// `xid=gid/SIZE`: the caller's group decides, not its user.
#[test]
fn gid_ranges_tag_by_the_callers_group() {
    let (scratch, mount) = setup("xid=gid/1000,attr_timeout=0,entry_timeout=0");
    let m = mount.path().join("pub");
    // uid 500 is a host user, gid 2000 context 2: the file is context 2's.
    as_user(500, 2000, || {
        fs::write(m.join("by-group-2"), b"g2").unwrap()
    });
    // uid 3000 would be context 3 by user; gid 500 makes it the host.
    as_user(3000, 500, || {
        fs::write(m.join("by-host-group"), b"h").unwrap()
    });
    let src = scratch.src().join("pub");
    assert_eq!(backing_tag(&src.join("by-group-2")).as_deref(), Some("2"));
    assert_eq!(backing_tag(&src.join("by-host-group")), None);
    // Another group's context cannot reach it; its own can.
    as_user(500, 3000, || {
        assert!(
            fs::read(m.join("by-group-2")).is_err(),
            "context 3 reached 2's file"
        );
    });
    as_user(700, 2000, || {
        assert_eq!(fs::read(m.join("by-group-2")).unwrap(), b"g2")
    });
}

/// The spectator context 1 (only `xid=1` makes one) reaches every guest's
/// inodes, like the host; a guest reaches none of another's.
#[test]
fn the_spectator_sees_every_guest() {
    let (scratch, mount) = setup(RANGE_OPTS);
    let m = mount.path().join("pub");
    as_user(GUEST2, GUEST2, || fs::write(m.join("g2"), b"two").unwrap());
    as_user(GUEST3, GUEST3, || {
        fs::write(m.join("g3"), b"three").unwrap()
    });
    as_user(GUEST3, GUEST3, || {
        assert!(
            fs::read(m.join("g2")).is_err(),
            "a guest sees another's file"
        );
    });
    drop(mount);
    let spectator = Mount::scratch(&scratch, "xid=1");
    let s = spectator.path().join("pub");
    assert_eq!(fs::read(s.join("g2")).unwrap(), b"two");
    assert_eq!(fs::read(s.join("g3")).unwrap(), b"three");
    let mut names: Vec<String> = fs::read_dir(&s)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["g2", "g3"]);
    drop(spectator);
    // The same files from a guest's fixed view: only its own.
    let guest = Mount::scratch(&scratch, "xid=2");
    let g = guest.path().join("pub");
    assert_eq!(fs::read(g.join("g2")).unwrap(), b"two");
    assert!(fs::read(g.join("g3")).is_err());
}

#[test]
fn a_mapping_that_straddles_subordinate_ids_is_refused() {
    // Debian gives the first user subuids 100000-165535; with uid/65536 the
    // part from 131072 on would be context 2. The daemon reads /etc/subuid,
    // which a private mount namespace replaces for this test.
    let scratch = Scratch::new();
    let subuid = scratch.path().join("subuid");
    fs::write(&subuid, "alice:100000:65536\n").unwrap();
    let script = format!(
        "mount --bind {} /etc/subuid && exec {} {} {} -f -o xid=uid/65536",
        subuid.display(),
        common::vxfs_bin().display(),
        scratch.src().display(),
        scratch.mnt().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("alice's subordinate ids 100000-165535 cover only part of context 2"),
        "{err}"
    );
    assert!(!common::is_vxfs_mounted(&scratch.mnt()));
}

#[test]
fn a_guest_cannot_take_every_descriptor_of_the_daemon() {
    // 20000 descriptors at most here; with 19000 for inodes, 744 are left
    // for open files, 651 of them for guests.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap();
    let inode_fds = limit - 1000;
    let (_scratch, mount) = setup(&format!("{RANGE_OPTS},inode_fds={inode_fds}"));
    let m = mount.path().join("pub");
    as_user(GUEST2, GUEST2, || fs::write(m.join("g2"), b"x").unwrap());
    as_user(GUEST3, GUEST3, || fs::write(m.join("g3"), b"x").unwrap());
    let greedy = as_user(GUEST2, GUEST2, || {
        let mut open = Vec::new();
        loop {
            match fs::File::open(m.join("g2")) {
                Ok(f) => open.push(f),
                Err(e) => break (open, e.raw_os_error()),
            }
            assert!(open.len() < 5000, "never refused");
        }
    });
    let (held, err) = greedy;
    assert_eq!(err, Some(libc::ENFILE));
    assert!(held.len() < 700, "one guest held {}", held.len());
    // The others, and the host, still open files.
    let others = as_user(GUEST3, GUEST3, || {
        (0..100)
            .map(|_| fs::File::open(m.join("g3")))
            .collect::<Result<Vec<_>, _>>()
    });
    assert_eq!(others.unwrap().len(), 100);
    let host: Vec<_> = (0..50)
        .map(|_| fs::File::open(m.join("g2")).unwrap())
        .collect();
    drop((held, host));
}

//! One daemon per tree: a tree mounted once, its directories mounted again
//! as guests' roots (views with their own context mode) served by the same
//! daemon, with one inode table, one index and one set of counters; and a
//! second daemon over an overlapping tree refused.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{Mount, Scratch};
use vxfs::dlimit::Limit;
use vxfs::index::Index;
use vxfs::tagging::Xid;

/// The daemon's description of the mount at `m`.
fn view_info(m: &Path) -> serde_json::Value {
    let dir = vroot::socket_dir(m).unwrap();
    serde_json::from_slice(&fs::read(dir.join("view.json")).unwrap()).unwrap()
}

/// A tree with guest directories g1..g3 and a directory for each view's
/// mount point, mounted at `mnt/` with `opts`.
fn tree(scratch: &Scratch, opts: &str) -> (Mount, Vec<PathBuf>) {
    for g in ["g1", "g2", "g3"] {
        fs::create_dir(scratch.src().join(g)).unwrap();
        fs::create_dir(scratch.path().join(format!("v{g}"))).unwrap();
    }
    let index = scratch.path().join("index.db");
    let mount = Mount::scratch(scratch, &format!("{opts},index={}", index.display()));
    let views = ["g1", "g2", "g3"]
        .iter()
        .map(|g| scratch.path().join(format!("v{g}")))
        .collect();
    (mount, views)
}

#[test]
fn one_daemon_serves_the_tree_and_every_guest_view() {
    let scratch = Scratch::new();
    let (main, v) = tree(&scratch, "xid=cgroup");
    let g1 = Mount::new(&scratch.src().join("g1"), &v[0], "xid=101");
    let g2 = Mount::new(&scratch.src().join("g2"), &v[1], "xid=102,nodev");
    let g3 = Mount::new(&scratch.src().join("g3"), &v[2], "xid=103");
    // One daemon, one index.
    let pid = view_info(main.path())["pid"].clone();
    for view in [&g1, &g2, &g3] {
        let info = view_info(view.path());
        assert_eq!(info["pid"], pid);
        assert_eq!(info["index"], view_info(main.path())["index"]);
    }
    assert_eq!(view_info(g1.path())["xid"], "101");
    // Each guest's files carry its context and show in the tree's mount.
    for (i, view) in [&g1, &g2, &g3].iter().enumerate() {
        fs::write(view.path().join("mine"), vec![1u8; 10_000]).unwrap();
        let tag = common::backing_xattr(
            &scratch.src().join(format!("g{}/mine", i + 1)),
            "trusted.vxfs.xid",
        );
        assert_eq!(tag, Some(format!("10{}", i + 1)));
        assert_eq!(
            fs::read(main.path().join(format!("g{}/mine", i + 1)))
                .unwrap()
                .len(),
            10_000
        );
    }
    // A limit set on the tree's admin socket holds in the guest's view at
    // once: one set of counters.
    let dir = vroot::socket_dir(main.path()).unwrap();
    let mut admin = vroot::Client::connect(&dir.join("admin.sock")).unwrap();
    let set = vroot::Request::Set {
        xid: 101,
        space_total: vroot::Field::Value(1024),
        inodes_total: vroot::Field::Unlimited,
        reserved: None,
    };
    let entry = admin.call(&set).unwrap()[0];
    assert_eq!(entry.inodes_used, 1, "its file (g1 itself is the host's)");
    let mut f = fs::File::create(g1.path().join("big")).unwrap();
    let mut written = 0;
    while f.write(&[0u8; 65536]).is_ok() {
        written += 65536;
        assert!(written < 4 << 20, "the limit does not hold in the view");
    }
    drop(f);
    // The guest's own vroot socket answers for its context.
    let guest = vroot::socket_dir(g1.path()).unwrap().join("guest.sock");
    let own = vroot::Client::connect(&guest)
        .unwrap()
        .call(&vroot::Request::Get(None))
        .unwrap();
    assert_eq!(
        (own[0].xid, own[0].space_used),
        (101, entry_now(&mut admin, 101))
    );
    // Nobody on a fixed-context view administers; the host on the tree's
    // mount does.
    let f = g1.path().join("mine");
    let set_tag = |p: &Path| {
        rustix::fs::lsetxattr(p, "trusted.vxfs.xid", b"7", rustix::fs::XattrFlags::empty())
    };
    assert_eq!(set_tag(&f), Err(rustix::io::Errno::PERM));
    set_tag(&main.path().join("g1/mine")).unwrap();
    // Guests' views end one by one; the tree's mount goes on.
    drop(g3);
    assert!(main.path().join("g3/mine").exists());
    drop((g1, g2));
    drop(main);
    // The last mount saved clean counters.
    let (index, _) = Index::open(&scratch.path().join("index.db")).unwrap();
    assert!(index.clean_usage().unwrap().is_some());
    assert!(
        index
            .limits()
            .unwrap()
            .iter()
            .any(|(x, l)| *x == Xid(101) && l.space == Some(1 << 20))
    );
}

fn entry_now(admin: &mut vroot::Client, xid: u32) -> u64 {
    admin.call(&vroot::Request::Get(Some(xid))).unwrap()[0].space_used
}

#[test]
fn the_daemon_lives_until_its_last_mount_ends() {
    let scratch = Scratch::new();
    let (main, v) = tree(&scratch, "xid=uid/1000");
    let g1 = Mount::new(&scratch.src().join("g1"), &v[0], "xid=101");
    // The tree's own mount ends first: the guest's view goes on, and the
    // daemon (the first command) with it.
    main.umount_only();
    assert!(!common::is_vxfs_mounted(&scratch.mnt()));
    fs::write(g1.path().join("after"), b"still served").unwrap();
    assert_eq!(
        fs::read(scratch.src().join("g1/after")).unwrap(),
        b"still served"
    );
    // A mount of the tree joins the running daemon again.
    let again = Mount::new(&scratch.src(), &scratch.mnt(), "xid=uid/1000");
    assert_eq!(view_info(again.path())["pid"], view_info(g1.path())["pid"]);
    assert_eq!(
        fs::read(again.path().join("g1/after")).unwrap(),
        b"still served"
    );
    drop(again);
    assert!(g1.unmount().success());
    assert!(
        main.unmount().success(),
        "the daemon exits with its last mount"
    );
    let (index, _) = Index::open(&scratch.path().join("index.db")).unwrap();
    assert!(index.clean_usage().unwrap().is_some(), "saved at the end");
}

#[test]
fn joining_with_other_daemon_options_or_contexts_is_refused() {
    let scratch = Scratch::new();
    let (main, v) = tree(&scratch, "xid=uid/1000");
    let refused =
        |opts: &str| Mount::try_new(&scratch.src().join("g1"), &v[0], opts).expect_err("joined");
    let err = refused("xid=101,dlimits=off");
    assert!(err.contains("-o dlimits is the daemon's"), "{err}");
    let err = refused("xid=101,index=/tmp/other.db");
    assert!(err.contains("-o index is the daemon's"), "{err}");
    let err = refused(&format!("xid=101,tree={}", scratch.native().display()));
    assert!(err.contains("not inside tree="), "{err}");
    assert!(!common::is_vxfs_mounted(&v[0]));
    drop(main);
    // An untagged daemon takes no mount with contexts.
    let scratch = Scratch::new();
    fs::create_dir(scratch.src().join("g1")).unwrap();
    let plain = Mount::scratch(&scratch, "");
    let err = Mount::try_new(&scratch.src().join("g1"), &scratch.native(), "xid=101").unwrap_err();
    assert!(err.contains("does not tag"), "{err}");
    assert!(!common::is_vxfs_mounted(&scratch.native()));
    drop(plain);
}

#[test]
fn a_daemon_over_a_tree_containing_a_served_one_is_refused() {
    let scratch = Scratch::new();
    fs::create_dir(scratch.src().join("g1")).unwrap();
    // g1 is served as a tree of its own ...
    let inner = Mount::new(&scratch.src().join("g1"), &scratch.native(), "xid=uid/1000");
    // ... so the tree containing it cannot get a daemon: both would count g1.
    let err = Mount::try_new(&scratch.src(), &scratch.mnt(), "xid=uid/1000").unwrap_err();
    assert!(
        err.contains("is already served by the vxfs daemon"),
        "{err}"
    );
    assert!(
        err.contains(&scratch.src().join("g1").display().to_string()),
        "{err}"
    );
    assert!(!common::is_vxfs_mounted(&scratch.mnt()));
    drop(inner);
    // Once it is gone, the tree mounts.
    let outer = Mount::new(&scratch.src(), &scratch.mnt(), "xid=uid/1000");
    drop(outer);
}

#[test]
fn a_mount_point_already_mounted_is_refused() {
    let scratch = Scratch::new();
    let mount = Mount::scratch(&scratch, "");
    let out = std::process::Command::new(common::vxfs_bin())
        .arg(scratch.src())
        .arg(scratch.mnt())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is already mounted"), "{err}");
    let lines = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = scratch.mnt().display().to_string();
    assert_eq!(
        lines.lines().filter(|l| l.contains(&mnt)).count(),
        1,
        "not stacked"
    );
    drop(mount);
}

#[test]
fn a_bind_mount_of_a_guest_directory_serves_as_its_root() {
    let scratch = Scratch::new();
    let (main, v) = tree(&scratch, "xid=uid/1000");
    let ok = std::process::Command::new("mount")
        .arg("--bind")
        .arg(main.path().join("g2"))
        .arg(&v[1])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    struct Unbind(PathBuf);
    impl Drop for Unbind {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unbind = Unbind(v[1].clone());
    common::as_user(2000, 2000, || {
        fs::write(v[1].join("mine"), b"2").unwrap_err()
    });
    fs::set_permissions(
        main.path().join("g2"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    common::as_user(2000, 2000, || fs::write(v[1].join("mine"), b"2").unwrap());
    assert_eq!(
        common::backing_xattr(&scratch.src().join("g2/mine"), "trusted.vxfs.xid").as_deref(),
        Some("2")
    );
    let _ = Limit::default();
}

#[test]
fn a_single_guest_view_shows_shared_files_in_the_guests_id_range() {
    // User-namespace guests 5 and 6 (uids 5000.. and 6000.. with
    // uid/1000), a host-owned setuid file shared by both (what hashify
    // makes), each guest's root its own view.
    let scratch = Scratch::new();
    let (main, v) = tree(&scratch, "xid=uid/1000:5-6");
    let m = main.path();
    for (g, uid) in [("g1", 5000u32), ("g2", 6000)] {
        rustix::fs::chown(
            m.join(g),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(uid)),
        )
        .unwrap();
    }
    fs::write(m.join("shared"), b"a setuid binary, shared").unwrap();
    rustix::fs::chown(
        m.join("shared"),
        Some(rustix::fs::Uid::from_raw(0)),
        Some(rustix::fs::Gid::from_raw(2)),
    )
    .unwrap();
    fs::set_permissions(
        m.join("shared"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        m.join("shared"),
        "trusted.vxfs.iattr",
        b"393216",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fs::hard_link(m.join("shared"), m.join("g1/bin")).unwrap();
    fs::hard_link(m.join("shared"), m.join("g2/bin")).unwrap();
    let g1 = Mount::new(&scratch.src().join("g1"), &v[0], "xid=uid/1000:5-5");
    let g2 = Mount::new(&scratch.src().join("g2"), &v[1], "xid=uid/1000:6-6");
    use std::os::unix::fs::MetadataExt;
    let owner = |p: &Path| {
        let st = fs::metadata(p).unwrap();
        (st.uid(), st.gid(), st.mode() & 0o7777, st.ino())
    };
    let ino = owner(&m.join("shared")).3;
    assert_eq!(owner(&g1.path().join("bin")), (5000, 5002, 0o4755, ino));
    assert_eq!(owner(&g2.path().join("bin")), (6000, 6002, 0o4755, ino));
    assert_eq!(
        owner(&m.join("g1/bin")),
        (0, 2, 0o4755, ino),
        "the tree shows it as stored"
    );
    // The guests' own files are shown as stored.
    common::as_user(5003, 5003, || {
        fs::write(g1.path().join("own"), b"x").unwrap_err()
    });
    common::as_user(5000, 5000, || {
        fs::write(g1.path().join("own"), b"x").unwrap()
    });
    assert_eq!(owner(&g1.path().join("own")).0, 5000);
    // Guest 5's root may chmod its link (it owns it, as shown): the private
    // copy keeps the owner it saw, and guest 6's link is untouched.
    common::as_user(5000, 5000, || {
        fs::set_permissions(
            g1.path().join("bin"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4750),
        )
        .unwrap()
    });
    let copy = owner(&scratch.src().join("g1/bin"));
    assert_ne!(copy.3, ino);
    assert_eq!((copy.0, copy.1, copy.2), (5000, 5002, 0o4750));
    assert_eq!(owner(&g2.path().join("bin")), (6000, 6002, 0o4755, ino));
    drop((g1, g2));
}

#[test]
fn limits_for_contexts_no_mount_can_have_are_refused() {
    let scratch = Scratch::new();
    let (main, v) = tree(&scratch, "xid=uid/1000:5-6");
    let set = |m: &Path, xid: u32| {
        let dir = vroot::socket_dir(m).unwrap();
        vroot::Client::connect(&dir.join("admin.sock"))
            .unwrap()
            .call(&vroot::Request::Set {
                xid,
                space_total: vroot::Field::Value(1024),
                inodes_total: vroot::Field::Keep,
                reserved: None,
            })
    };
    set(main.path(), 5).unwrap();
    match set(main.path(), 102) {
        Err(vroot::Error::Refused { errno, message }) => {
            assert_eq!(errno, libc::EINVAL);
            assert!(message.contains("can ever be context 102"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Once a mount can have it, it can be limited (through any mount).
    let g1 = Mount::new(&scratch.src().join("g1"), &v[0], "xid=102");
    set(main.path(), 102).unwrap();
    set(g1.path(), 5).unwrap();
    drop(g1);
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn each_mount_of_a_daemon_costs_little_resident_memory() {
    // Every mount has its request threads, each with fuser's 16 MiB
    // request buffer: resident only where the kernel wrote requests into it
    // (glibc once zeroed it page by page: 12 MiB per mount).
    let scratch = Scratch::new();
    let guests: Vec<String> = (0..10).map(|g| format!("g{g}")).collect();
    let mut points = Vec::new();
    for g in &guests {
        fs::create_dir(scratch.src().join(g)).unwrap();
        let at = scratch.path().join(format!("v{g}"));
        fs::create_dir(&at).unwrap();
        points.push(at);
    }
    let index = scratch.path().join("index.db");
    let main = Mount::scratch(&scratch, &format!("xid=cgroup,index={}", index.display()));
    let pid = view_info(main.path())["pid"].as_u64().unwrap() as u32;
    let before = rss(pid);
    let mut views = Vec::new();
    for (i, (g, at)) in guests.iter().zip(&points).enumerate() {
        let view = Mount::new(&scratch.src().join(g), at, &format!("xid={}", 200 + i));
        let mut f = fs::File::create(at.join("data")).unwrap();
        for _ in 0..4 {
            f.write_all(&vec![1u8; 1 << 20]).unwrap();
        }
        views.push(view);
    }
    let per_mount = rss(pid).saturating_sub(before) / guests.len() as u64;
    assert!(
        per_mount < 4 << 20,
        "each mount added {} KiB of resident memory",
        per_mount >> 10
    );
    drop(views);
    main.unmount();
}

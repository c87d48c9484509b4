//! Long kernel caches that stay exact: with SOURCE's filesystem watched,
//! the kernel may cache attributes, names and absent names for an hour,
//! and every change made behind its back (in SOURCE directly, or through
//! another mount of the daemon) reaches it within 50 ms.
//!
//! Each scenario caches the old state through the mount first (a `stat`,
//! a failed lookup), changes SOURCE, and measures how long the mount takes
//! to show the change.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Mount, Scratch};
use rustix::fs::XattrFlags;

/// The bound the issue sets: a host change shows through the mount within
/// this.
const VISIBLE_WITHIN: Duration = Duration::from_millis(50);

/// Polls `check` until it holds, returning how long that took; fails after
/// five seconds (so a miss is told apart from a slow machine).
fn until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: still not seen through the mount after 5 s"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Asserts every measured latency is within the bound, naming each.
fn assert_all_within(latencies: &[(&str, Duration)]) {
    for (what, took) in latencies {
        eprintln!("{what}: seen after {took:?}");
    }
    let late: Vec<String> = latencies
        .iter()
        .filter(|(_, took)| *took > VISIBLE_WITHIN)
        .map(|(what, took)| format!("{what} ({took:?})"))
        .collect();
    assert!(
        late.is_empty(),
        "seen later than {VISIBLE_WITHIN:?}: {}",
        late.join(", ")
    );
}

fn exists(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("{}: {e}", p.display()),
    }
}

/// Whether the daemon of `mount` says (in its `view.json`) it watches.
fn watched(mount: &Mount) -> bool {
    let dir = vroot::socket_dir(mount.path()).unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("view.json")).unwrap()).unwrap();
    info["watched"].as_bool().unwrap()
}

fn mount_watched(scratch: &Scratch, opts: &str) -> Mount {
    let mount = Mount::scratch(scratch, &format!("watch=on,{opts}"));
    assert!(watched(&mount), "the daemon should say it watches");
    mount
}

#[test]
fn host_changes_in_source_show_through_the_mount_within_50ms() {
    let scratch = Scratch::new();
    let src = scratch.src();
    fs::create_dir(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"abc").unwrap();
    fs::write(src.join("d/gone"), b"x").unwrap();
    fs::write(src.join("d/old"), b"x").unwrap();
    let mount = mount_watched(&scratch, "");
    let m = mount.path().join("d");
    let mut seen = Vec::new();

    // Cache everything first: names, absent names, attributes.
    for name in ["f", "gone", "old"] {
        fs::symlink_metadata(m.join(name)).unwrap();
    }
    for name in ["new", "newdir", "renamed"] {
        assert!(!exists(&m.join(name)));
    }

    fs::write(src.join("d/new"), b"made beside the mount").unwrap();
    seen.push((
        "a file created in SOURCE",
        until("create", || exists(&m.join("new"))),
    ));

    fs::create_dir(src.join("d/newdir")).unwrap();
    fs::write(src.join("d/newdir/inner"), b"1").unwrap();
    seen.push((
        "a directory and a file in it",
        until("mkdir", || exists(&m.join("newdir/inner"))),
    ));

    fs::OpenOptions::new()
        .append(true)
        .open(src.join("d/f"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"defg"))
        .unwrap();
    seen.push((
        "a write's new size",
        until("size", || fs::metadata(m.join("f")).unwrap().len() == 7),
    ));
    assert_eq!(fs::read(m.join("f")).unwrap(), b"abcdefg");

    fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
    seen.push((
        "a chmod",
        until("chmod", || {
            fs::metadata(m.join("f")).unwrap().permissions().mode() & 0o777 == 0o600
        }),
    ));

    std::os::unix::fs::chown(src.join("d/f"), Some(1234), Some(1234)).unwrap();
    seen.push((
        "a chown",
        until("chown", || fs::metadata(m.join("f")).unwrap().uid() == 1234),
    ));

    fs::remove_file(src.join("d/gone")).unwrap();
    seen.push(("an unlink", until("unlink", || !exists(&m.join("gone")))));

    fs::rename(src.join("d/old"), src.join("d/renamed")).unwrap();
    seen.push((
        "a rename",
        until("rename", || {
            !exists(&m.join("old")) && exists(&m.join("renamed"))
        }),
    ));

    // A listing cached by the kernel shows the new names too.
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&m), names(&src.join("d")));
    assert_all_within(&seen);
    mount.unmount();
}

#[test]
fn the_kernel_keeps_what_it_cached_while_nothing_changes() {
    // The point of the watch: caches far longer than the old 1 s default,
    // so a warm walk asks the daemon nothing but its directories' opens.
    // Also on a guest's mount (one context), for the guest's own files in
    // a directory of the host's: only a mount whose callers may be of
    // different contexts must ask again for those.
    for opts in ["", "xid=5"] {
        let scratch = Scratch::new();
        let index = scratch.path().join("index.db");
        let mount = mount_watched(&scratch, &format!("index={},{opts}", index.display()));
        let d = mount.path().join("d");
        fs::create_dir(&d).unwrap();
        for i in 0..50 {
            fs::write(d.join(format!("f{i}")), b"x").unwrap();
        }
        // The writers' closes are seen by the watch (it cannot tell which
        // mount wrote through passthrough) and make each file's attributes
        // be asked once more: let that settle first.
        std::thread::sleep(Duration::from_millis(100));
        let walk = || {
            let listed = fs::read_dir(&d).unwrap().count();
            assert_eq!(listed, 50);
            for i in 0..50 {
                fs::symlink_metadata(d.join(format!("f{i}"))).unwrap();
                assert!(!exists(&d.join(format!("absent{i}"))));
            }
        };
        walk();
        walk();
        std::thread::sleep(Duration::from_millis(1500));
        let before = mount.request_counts();
        walk();
        let after = mount.request_counts();
        let asked = |op: &str| after.get(op).unwrap_or(&0) - before.get(op).unwrap_or(&0);
        assert_eq!(
            (
                asked("lookup"),
                asked("getattr"),
                asked("readdirplus") + asked("readdir")
            ),
            (0, 0, 0),
            "-o {opts}: a warm walk 1.5 s later should be served from the kernel's caches"
        );
        mount.unmount();
    }
}

#[test]
fn a_retag_or_flags_set_in_source_hold_through_the_mount_within_50ms() {
    // `chxid --backing` and `setattr --backing` write the xattrs on the
    // backing inode; the daemon's own cache of them must follow.
    let scratch = Scratch::new();
    let src = scratch.src();
    fs::write(src.join("f"), b"data").unwrap();
    let mount = mount_watched(&scratch, "xid=0");
    let f = mount.path().join("f");
    let tag = |p: &Path| -> Option<String> {
        let mut buf = [0u8; 32];
        match rustix::fs::lgetxattr(p, "trusted.vxfs.xid", &mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    };
    // Cached: its attributes, and the daemon's tag and flags.
    fs::metadata(&f).unwrap();
    let _ = tag(&f);
    fs::OpenOptions::new().append(true).open(&f).unwrap();
    let mut seen = Vec::new();

    rustix::fs::lsetxattr(
        src.join("f"),
        "trusted.vxfs.xid",
        b"77",
        XattrFlags::empty(),
    )
    .unwrap();
    seen.push((
        "a tag set on the backing inode",
        until("retag", || tag(&f).as_deref() == Some("77")),
    ));

    rustix::fs::lsetxattr(
        src.join("f"),
        vxfs::iattr::IATTR_XATTR,
        vxfs::iattr::IAttr::IMMUTABLE.to_string().as_bytes(),
        XattrFlags::empty(),
    )
    .unwrap();
    seen.push((
        "the immutable flag set on the backing inode",
        until("immutable", || {
            fs::OpenOptions::new()
                .append(true)
                .open(&f)
                // VServer's errno for a write open of an immutable file.
                .is_err_and(|e| e.raw_os_error() == Some(libc::EACCES))
        }),
    ));
    assert_all_within(&seen);
    mount.unmount();
}

#[test]
fn a_change_through_one_mount_shows_in_the_daemons_other_mounts_within_50ms() {
    // The tree's mount and a guest's mount of one of its directories are
    // two kernels with their own caches, served by one daemon.
    let scratch = Scratch::new();
    fs::create_dir(scratch.src().join("g1")).unwrap();
    fs::write(scratch.src().join("g1/shared"), b"v1").unwrap();
    let index = scratch.path().join("index.db");
    let tree = mount_watched(&scratch, &format!("xid=cgroup,index={}", index.display()));
    let guest_mnt = scratch.path().join("vg1");
    fs::create_dir(&guest_mnt).unwrap();
    let guest = Mount::new(&scratch.src().join("g1"), &guest_mnt, "xid=101");
    let in_tree = tree.path().join("g1");
    let mut seen = Vec::new();

    // Both cache the names and the attributes.
    for m in [&in_tree, &guest_mnt] {
        fs::metadata(m.join("shared")).unwrap();
        assert!(!exists(&m.join("new")));
    }
    fs::write(guest_mnt.join("new"), b"from the guest").unwrap();
    seen.push((
        "a file the guest made, in the tree's mount",
        until("guest create", || exists(&in_tree.join("new"))),
    ));
    fs::write(in_tree.join("shared"), b"version two").unwrap();
    seen.push((
        "a write through the tree's mount, in the guest's",
        until("host write", || {
            fs::metadata(guest_mnt.join("shared")).unwrap().len() == 11
        }),
    ));
    fs::remove_file(guest_mnt.join("new")).unwrap();
    seen.push((
        "the guest's unlink, in the tree's mount",
        until("guest unlink", || !exists(&in_tree.join("new"))),
    ));
    fs::rename(in_tree.join("shared"), in_tree.join("moved")).unwrap();
    seen.push((
        "a rename through the tree's mount, in the guest's",
        until("host rename", || {
            !exists(&guest_mnt.join("shared")) && exists(&guest_mnt.join("moved"))
        }),
    ));
    assert_all_within(&seen);

    // A file kept open for writing in the guest: the tree's mount caches
    // its attributes briefly meanwhile (the watch sees writes at the
    // close), and exactly once it is closed.
    fs::metadata(in_tree.join("moved")).unwrap();
    let mut writer = fs::OpenOptions::new()
        .append(true)
        .open(guest_mnt.join("moved"))
        .unwrap();
    std::io::Write::write_all(&mut writer, b"+more").unwrap();
    let during = until("a size while the writer writes", || {
        fs::metadata(in_tree.join("moved")).unwrap().len() == 16
    });
    assert!(during < Duration::from_millis(1500), "{during:?}");
    std::io::Write::write_all(&mut writer, b"+last").unwrap();
    drop(writer);
    let closed = until("the size after the writer's close", || {
        fs::metadata(in_tree.join("moved")).unwrap().len() == 21
    });
    assert_all_within(&[("the size after the guest's writer closed", closed)]);
    drop(guest);
    tree.unmount();
}

#[test]
fn after_a_storm_of_host_changes_the_mount_agrees_with_source() {
    // Lookups racing host creates and removals: whatever order the replies
    // and notifications meet in, once the host stops the mount shows
    // exactly what SOURCE holds (a reply read before a change must not
    // stay cached for the hour).
    let scratch = Scratch::new();
    let src = scratch.src();
    fs::create_dir(src.join("d")).unwrap();
    let mount = mount_watched(&scratch, "");
    let m = mount.path().join("d");
    let stop = std::sync::atomic::AtomicBool::new(false);
    const NAMES: usize = 32;
    std::thread::scope(|s| {
        for t in 0..2 {
            let (m, stop) = (&m, &stop);
            s.spawn(move || {
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = fs::symlink_metadata(m.join(format!("n{}", i % NAMES)));
                    i += 7;
                }
            });
        }
        let mut rng = common::SplitMix64::new(common::seed());
        for _ in 0..3000 {
            let p = src.join(format!("d/n{}", rng.below(NAMES as u64)));
            if rng.below(2) == 0 {
                let _ = fs::write(&p, b"x");
            } else {
                let _ = fs::remove_file(&p);
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let truth: Vec<bool> = (0..NAMES)
        .map(|i| src.join(format!("d/n{i}")).exists())
        .collect();
    let took = until("the final state", || {
        (0..NAMES).all(|i| exists(&m.join(format!("n{i}"))) == truth[i])
    });
    assert_all_within(&[("the state after 3000 racing host changes", took)]);
    mount.unmount();
}

#[test]
fn watch_off_keeps_the_short_default_and_the_option_is_checked() {
    let scratch = Scratch::new();
    fs::write(scratch.src().join("f"), b"1").unwrap();
    let mount = Mount::scratch(&scratch, "watch=off");
    assert!(!watched(&mount));
    fs::metadata(mount.path().join("f")).unwrap();
    assert!(!exists(&mount.path().join("new")));
    fs::write(scratch.src().join("new"), b"1").unwrap();
    // Seen once the 1 s entry timeout expires, not before a notification.
    let took = until("create without watch", || exists(&mount.path().join("new")));
    assert!(took > Duration::from_millis(100), "{took:?}");
    mount.unmount();
    let bad = Mount::try_new(&scratch.src(), &scratch.mnt(), "watch=sometimes");
    assert!(bad.is_err_and(|e| e.contains("watch")));
}

/// A tmpfs mounted on a directory, unmounted (lazily) on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn at(dir: &Path) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .expect("mount a tmpfs (needs root)");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// On `dir` (on a filesystem below SOURCE, holding a file `f` with
/// `abc`): creates a file and chmods `f` there directly, and how long each
/// took to show through `through`, the same directory through the mount.
fn create_and_chmod_beside(dir: &Path, through: &Path) -> Vec<(&'static str, Duration)> {
    assert_eq!(fs::read(through.join("f")).unwrap(), b"abc");
    assert!(!exists(&through.join("new")));
    let mut seen = Vec::new();
    fs::write(dir.join("new"), b"made beside the mount").unwrap();
    seen.push((
        "a file created on the tmpfs",
        until("create", || exists(&through.join("new"))),
    ));
    fs::set_permissions(dir.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    seen.push((
        "a chmod on the tmpfs",
        until("chmod", || {
            fs::metadata(through.join("f"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
                == 0o600
        }),
    ));
    seen
}

/// A filesystem mounted below SOURCE after the daemon started is watched
/// from then on; and a watched one can still be unmounted while the
/// daemon runs (the watch keeps no descriptor on it: one made `umount`
/// fail with EBUSY).
#[test]
fn a_filesystem_mounted_below_source_later_is_watched_and_can_be_unmounted() {
    let scratch = Scratch::new();
    let src = scratch.src();
    fs::create_dir_all(src.join("g/tmp")).unwrap();
    fs::create_dir_all(src.join("h/tmp")).unwrap();
    // Watched from the start, never looked at through the mount.
    let early = Tmpfs::at(&src.join("h/tmp"));
    let mount = mount_watched(&scratch, "");
    let later = Tmpfs::at(&src.join("g/tmp"));
    fs::write(src.join("g/tmp/f"), b"abc").unwrap();
    // The daemon sees the mount table change at once; give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    let seen = create_and_chmod_beside(&src.join("g/tmp"), &mount.path().join("g/tmp"));
    assert_all_within(&seen);
    rustix::mount::unmount(&early.0, rustix::mount::UnmountFlags::empty())
        .expect("a watched filesystem below SOURCE unmounts while the daemon runs");
    drop(mount);
    drop(later);
}

#[test]
fn a_filesystem_mounted_below_source_is_watched_too() {
    // A guest's /tmp or a bind mount below SOURCE, there when the daemon
    // starts: its changes made outside the mount show within 50 ms, and
    // the kernel caches it as long as SOURCE's own.
    let scratch = Scratch::new();
    let src = scratch.src();
    let below = Tmpfs::at(&src.join("g/tmp"));
    fs::write(src.join("g/tmp/f"), b"abc").unwrap();
    let mount = mount_watched(&scratch, "");
    let m = mount.path().join("g/tmp");
    let mut seen = create_and_chmod_beside(&src.join("g/tmp"), &m);
    fs::remove_file(src.join("g/tmp/new")).unwrap();
    seen.push((
        "an unlink on the tmpfs",
        until("unlink", || !exists(&m.join("new"))),
    ));
    assert_all_within(&seen);
    // Cached for long: a second look a moment later asks nothing. (The
    // first look waits for the watch's last notifications, which may drop
    // a reply that raced them: an extra request, never a stale answer.)
    std::thread::sleep(Duration::from_millis(200));
    fs::metadata(m.join("f")).unwrap();
    assert!(!exists(&m.join("absent")));
    std::thread::sleep(Duration::from_millis(1500));
    let before = mount.request_counts();
    fs::metadata(m.join("f")).unwrap();
    assert!(!exists(&m.join("absent")));
    let after = mount.request_counts();
    for op in ["getattr", "lookup"] {
        assert_eq!(
            after.get(op),
            before.get(op),
            "{op} after 1.5 s on the watched tmpfs: {after:?}"
        );
    }
    drop(mount);
    drop(below);
}

//! Per-context disk limits through a real mount (vserver-semantics §2):
//! space and inode limits give ENOSPC (short writes near the limit), `df`
//! in a limited context shows its limit, counters equal a recount of the
//! tree after a workload, and after `kill -9` the next mount recounts.

mod common;

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Mount, Scratch, SplitMix64, as_user};
use vxfs::dlimit::{Limit, Usage};
use vxfs::index::Index;
use vxfs::tagging::Xid;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Overshoot allowed per allocating request (one block, see fs.rs `BLOCK`).
const SLACK: u64 = 4096;

fn index_path(scratch: &Scratch) -> PathBuf {
    scratch.path().join("index.db")
}

fn set_limit(scratch: &Scratch, xid: u32, space: Option<u64>, inodes: Option<u64>) {
    let (index, _) = Index::open(&index_path(scratch)).unwrap();
    let limit = Limit {
        space,
        inodes,
        reserved: 0,
    };
    index.set_limit(Xid(xid), Some(limit)).unwrap();
}

fn opts(scratch: &Scratch, mode: &str) -> String {
    format!("xid={mode},index={}", index_path(scratch).display())
}

/// A mount where uid N*1000.. is context N, over a world-writable (sticky)
/// SOURCE so that every guest can create files at the top.
fn guests_mount(scratch: &Scratch) -> Mount {
    fs::set_permissions(scratch.src(), fs::Permissions::from_mode(0o1777)).unwrap();
    Mount::scratch(scratch, &opts(scratch, "uid/1000"))
}

/// Usage saved by the last clean unmount.
fn saved_usage(scratch: &Scratch) -> Vec<(Xid, Usage)> {
    let (index, _) = Index::open(&index_path(scratch)).unwrap();
    let mut usage = index
        .clean_usage()
        .unwrap()
        .expect("unmount saved clean counters");
    usage.retain(|(_, u)| *u != Usage::default());
    usage.sort_by_key(|(x, _)| *x);
    usage
}

/// What a fresh walk of SOURCE finds.
/// The answer key: the tree walked with plain `lstat` and `lgetxattr`
/// ([`common::du_by_tag`]), never the product's own recount.
fn recounted(src: &Path) -> Vec<(Xid, Usage)> {
    common::du_by_tag(src)
        .into_iter()
        .map(|(xid, (space, inodes))| (Xid(xid), Usage { space, inodes }))
        .filter(|(_, u)| *u != Usage::default())
        .collect()
}

fn allocated(path: &Path) -> u64 {
    rustix::fs::lstat(path).unwrap().st_blocks as u64 * 512
}

#[test]
fn space_limit_gives_short_writes_then_enospc() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(MIB), None);
    let mount = Mount::scratch(&scratch, &opts(&scratch, "5"));
    let path = mount.path().join("big");
    let mut f = fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 100 * KIB as usize];
    let mut written = 0u64;
    let err = loop {
        match f.write(&chunk) {
            Ok(0) => panic!("write returned 0"),
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        assert!(written <= 2 * MIB, "the limit never stopped the writer");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    drop(f);
    let used = allocated(&scratch.src().join("big"));
    assert!(used <= MIB + SLACK, "allocated {used} past a 1 MiB limit");
    assert!(written >= MIB - 2 * SLACK, "stopped early at {written}");
    assert_eq!(
        fs::read(&path).unwrap().len() as u64,
        written,
        "short writes kept"
    );
    // Deleting gives the space back.
    fs::remove_file(&path).unwrap();
    fs::write(mount.path().join("again"), vec![1u8; 512 * KIB as usize]).unwrap();
}

#[test]
fn inode_limit_counts_every_kind_of_inode() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, None, Some(4));
    let mount = Mount::scratch(&scratch, &opts(&scratch, "5"));
    let m = mount.path();
    fs::write(m.join("f"), b"1").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    std::os::unix::fs::symlink("f", m.join("l")).unwrap();
    fs::hard_link(m.join("f"), m.join("f2")).unwrap(); // links are free
    fs::write(m.join("d/g"), b"4").unwrap();
    let enospc =
        |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    enospc(fs::write(m.join("x"), b"5"));
    enospc(fs::create_dir(m.join("y")));
    enospc(std::os::unix::fs::symlink("f", m.join("z")));
    // Removing the last link frees the inode; removing one of two does not.
    fs::remove_file(m.join("f2")).unwrap();
    enospc(fs::write(m.join("x"), b"5"));
    fs::remove_file(m.join("f")).unwrap();
    fs::write(m.join("x"), b"5").unwrap();
}

#[test]
fn df_in_a_limited_context_shows_its_limit() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(10 * MIB), Some(1000));
    // uid 5000..5999 is context 5; the host (root) sees the real figures.
    let mount = guests_mount(&scratch);
    let m = mount.path().to_path_buf();
    as_user(5000, 5000, || {
        fs::write(m.join("f"), vec![1u8; MIB as usize]).unwrap()
    });
    let guest = as_user(5000, 5000, || rustix::fs::statvfs(&m).unwrap());
    assert_eq!(guest.f_blocks * guest.f_frsize, 10 * MIB);
    let used = (guest.f_blocks - guest.f_bfree) * guest.f_frsize;
    assert!((MIB..=MIB + SLACK).contains(&used), "df shows {used} used");
    assert_eq!(guest.f_files, 1000);
    assert_eq!(guest.f_ffree, 999);
    let host = rustix::fs::statvfs(&m).unwrap();
    assert!(
        host.f_blocks * host.f_frsize > 10 * MIB,
        "the host sees the real disk"
    );
    // A context without a limit sees the real disk too.
    let other = as_user(6000, 6000, || rustix::fs::statvfs(&m).unwrap());
    assert_eq!(other.f_blocks, host.f_blocks);
}

/// What each kind of operation of [`workload`] did: (succeeded, failed).
type Tally = std::collections::BTreeMap<&'static str, (usize, usize)>;

/// A seeded random workload by two contexts (one limited, so its writes go
/// through the daemon; one not, so they go through kernel passthrough).
/// Every failure must be one the operation can meet on its own (a name
/// that is missing or taken, a directory not empty): anything else fails
/// the test. Returns what each kind did, over both contexts.
fn workload(m: &Path, seed: u64, ops: usize) -> Tally {
    use libc::{EEXIST, ENOENT, ENOTEMPTY};
    let tallies = std::thread::scope(|s| {
        let workers: Vec<_> = [(0u64, 5000u32), (1, 6000)]
            .into_iter()
            .map(|(t, uid)| {
                s.spawn(move || {
                    as_user(uid, uid, || {
                        let mut rng = SplitMix64::new(seed ^ t);
                        let dir = m.join(format!("w{uid}"));
                        fs::create_dir_all(&dir).unwrap();
                        let mut tally = Tally::new();
                        for i in 0..ops {
                            let name = dir.join(format!("f{}", rng.below(20)));
                            let (kind, result, allowed): (_, std::io::Result<()>, &[i32]) =
                                match rng.below(7) {
                                    0 | 1 => (
                                        "write",
                                        fs::write(&name, vec![3u8; rng.below(200_000) as usize]),
                                        &[],
                                    ),
                                    // Links too, so that a link name can be
                                    // taken again (five per context).
                                    2 => {
                                        let victim = match rng.below(3) {
                                            0 => dir.join(format!("h{}", rng.below(5))),
                                            _ => name.clone(),
                                        };
                                        ("unlink", fs::remove_file(&victim), &[ENOENT])
                                    }
                                    3 => (
                                        "truncate",
                                        fs::OpenOptions::new()
                                            .write(true)
                                            .open(&name)
                                            .and_then(|f| f.set_len(rng.below(300_000))),
                                        &[ENOENT],
                                    ),
                                    4 => (
                                        "mkdir",
                                        fs::create_dir(dir.join(format!("d{}", rng.below(5)))),
                                        &[EEXIST],
                                    ),
                                    5 => (
                                        "link",
                                        fs::hard_link(
                                            &name,
                                            dir.join(format!("h{}", rng.below(5))),
                                        ),
                                        &[ENOENT, EEXIST],
                                    ),
                                    _ => (
                                        "rmdir",
                                        fs::remove_dir(dir.join(format!("d{}", rng.below(5)))),
                                        &[ENOENT, ENOTEMPTY],
                                    ),
                                };
                            let counts = tally.entry(kind).or_default();
                            match result {
                                Ok(()) => counts.0 += 1,
                                Err(e)
                                    if e.raw_os_error().is_some_and(|n| allowed.contains(&n)) =>
                                {
                                    counts.1 += 1
                                }
                                Err(e) => {
                                    panic!("uid {uid} op {i}: {kind} {}: {e}", name.display())
                                }
                            }
                        }
                        tally
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect::<Vec<_>>()
    });
    let mut total = Tally::new();
    for tally in tallies {
        for (kind, (ok, failed)) in tally {
            let t = total.entry(kind).or_default();
            t.0 += ok;
            t.1 += failed;
        }
    }
    total
}

/// Asserts that every kind of operation of `tally` succeeded `at_least`
/// times.
fn assert_did_work(tally: &Tally, at_least: usize) {
    for kind in ["write", "unlink", "truncate", "mkdir", "link", "rmdir"] {
        let (ok, _) = tally.get(kind).copied().unwrap_or_default();
        assert!(ok >= at_least, "only {ok} successful {kind}s: {tally:?}");
    }
}

#[test]
fn counters_equal_a_recount_after_a_random_workload() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(64 * MIB), Some(10_000));
    let mount = guests_mount(&scratch);
    let tally = workload(mount.path(), common::seed(), 300);
    assert_did_work(&tally, 10);
    assert!(mount.unmount().success());
    assert_eq!(saved_usage(&scratch), recounted(&scratch.src()));
}

#[test]
fn directory_growth_and_xattr_blocks_are_charged_to_the_tag() {
    let scratch = Scratch::new();
    let mount = guests_mount(&scratch);
    let m = mount.path().to_path_buf();
    as_user(5000, 5000, || {
        fs::create_dir(m.join("big")).unwrap();
        // Long names make the directory grow past its first block.
        for i in 0..400 {
            let name = format!("{i:04}-{}", "x".repeat(100));
            fs::write(m.join("big").join(&name), b"").unwrap();
            if i % 3 == 0 {
                fs::hard_link(
                    m.join("big").join(&name),
                    m.join("big").join(format!("l{name}")),
                )
                .unwrap();
            }
        }
        fs::rename(
            m.join("big/0000-".to_string() + &"x".repeat(100)),
            m.join("moved"),
        )
        .unwrap();
    });
    assert!(
        allocated(&scratch.src().join("big")) > 4096,
        "the directory grew"
    );
    // Xattrs too big for the inode take a block of their own, and give it
    // back when removed.
    as_user(5000, 5000, || {
        for name in ["x1", "x2"] {
            let f = m.join(name);
            fs::write(&f, b"").unwrap();
            let big = vec![b'v'; 3000];
            rustix::fs::setxattr(&f, "user.big", &big, rustix::fs::XattrFlags::empty()).unwrap();
        }
        rustix::fs::removexattr(m.join("x2"), "user.big").unwrap();
    });
    assert!(
        allocated(&scratch.src().join("x1")) > 0,
        "the xattr took a block"
    );
    assert!(mount.unmount().success());
    assert_eq!(saved_usage(&scratch), recounted(&scratch.src()));
}

#[test]
fn after_kill_9_the_next_mount_recounts() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(64 * MIB), None);
    let mount = guests_mount(&scratch);
    let mnt = mount.path().to_path_buf();
    let tally = workload(&mnt, common::seed(), 150);
    assert_did_work(&tally, 5);
    as_user(5000, 5000, || {
        let mut f = fs::File::create(mnt.join("durable")).unwrap();
        f.write_all(b"fsynced before the crash").unwrap();
        f.sync_all().unwrap();
    });
    mount.crash();
    // The index is not clean: the next mount must recount, exactly.
    let mount = Mount::scratch(&scratch, &opts(&scratch, "uid/1000"));
    assert_eq!(
        fs::read(mount.path().join("durable")).unwrap(),
        b"fsynced before the crash"
    );
    assert!(mount.unmount().success());
    assert_eq!(saved_usage(&scratch), recounted(&scratch.src()));
}

#[test]
fn concurrent_writers_of_two_contexts_hold_their_limits() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(2 * MIB), None);
    set_limit(&scratch, 6, Some(3 * MIB), None);
    let mount = guests_mount(&scratch);
    let m = mount.path();
    let writers = 3;
    std::thread::scope(|s| {
        for uid in [5000u32, 6000] {
            for w in 0..writers {
                s.spawn(move || {
                    as_user(uid, uid, || {
                        let mut f = fs::File::create(m.join(format!("{uid}-{w}"))).unwrap();
                        let chunk = vec![9u8; 64 * KIB as usize];
                        while f.write(&chunk).is_ok() {}
                    })
                });
            }
        }
    });
    for (uid, limit) in [(5000u32, 2 * MIB), (6000, 3 * MIB)] {
        let used: u64 = (0..writers)
            .map(|w| allocated(&scratch.src().join(format!("{uid}-{w}"))))
            .sum();
        let bound = limit + writers as u64 * SLACK;
        assert!(used <= bound, "context of uid {uid}: {used} > {bound}");
        assert!(
            used >= limit - writers as u64 * 64 * KIB,
            "context of uid {uid} stopped at {used}"
        );
    }
}

#[test]
fn vroot_sets_limits_online_and_guests_only_read_their_own() {
    let scratch = Scratch::new();
    let mount = guests_mount(&scratch);
    let m = mount.path().to_path_buf();
    let dir = vroot::socket_dir(&m).unwrap();
    let mut admin = vroot::Client::connect(&dir.join("admin.sock")).unwrap();
    let refused = |r: Result<Vec<vroot::Entry>, vroot::Error>| match r {
        Err(vroot::Error::Refused { errno, .. }) => errno,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(admin.call(&vroot::Request::Get(Some(5)))),
        libc::ESRCH
    );
    as_user(5000, 5000, || {
        fs::write(m.join("before"), vec![1u8; 8192]).unwrap()
    });
    let set = vroot::Request::Set {
        xid: 5,
        space_total: vroot::Field::Value(64),
        inodes_total: vroot::Field::Value(3),
        reserved: None,
    };
    let entry = admin.call(&set).unwrap()[0];
    assert_eq!(
        (entry.xid, entry.space_total, entry.inodes_total),
        (5, Some(64), Some(3))
    );
    assert_eq!(
        (entry.space_used, entry.inodes_used),
        (8, 1),
        "usage counted before the limit"
    );
    // The limit holds at once, for files opened after it was set.
    as_user(5000, 5000, || {
        let err = fs::write(m.join("big"), vec![1u8; 128 * 1024]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    });
    // A guest reads its own context through the guest socket, nothing else.
    as_user(5000, 5000, || {
        let mut guest = vroot::Client::connect(&dir.join("guest.sock")).unwrap();
        let own = guest.call(&vroot::Request::Get(None)).unwrap();
        assert_eq!(own[0].xid, 5);
        assert_eq!(
            refused(guest.call(&vroot::Request::Get(Some(6)))),
            libc::EPERM
        );
        assert_eq!(refused(guest.call(&set)), libc::EPERM);
        assert_eq!(refused(guest.call(&vroot::Request::Remove(5))), libc::EPERM);
        assert!(
            vroot::Client::connect(&dir.join("admin.sock")).is_err(),
            "admin socket is 0600"
        );
    });
    admin.call(&vroot::Request::Remove(5)).unwrap();
    assert_eq!(refused(admin.call(&vroot::Request::Remove(5))), libc::ESRCH);
    drop(mount);
    // The change was persisted.
    let (index, _) = Index::open(&index_path(&scratch)).unwrap();
    assert!(index.limits().unwrap().is_empty());
}

/// The live usage of context `xid` (KiB, inodes) from the daemon's admin
/// socket (the context must have a limit).
fn live(m: &Path, xid: u32) -> (u64, u64) {
    let dir = vroot::socket_dir(m).unwrap();
    let mut admin = vroot::Client::connect(&dir.join("admin.sock")).unwrap();
    let e = admin.call(&vroot::Request::Get(Some(xid))).unwrap()[0];
    (e.space_used, e.inodes_used)
}

/// What the independent walk says context `xid` holds (bytes, inodes).
fn held(src: &Path, xid: u32) -> (u64, u64) {
    common::du_by_tag(src)
        .get(&xid)
        .copied()
        .unwrap_or_default()
}

#[test]
fn files_open_after_unlink_are_charged_until_their_last_close() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(MIB), Some(100));
    let mount = Mount::scratch(&scratch, &opts(&scratch, "5"));
    let m = mount.path();
    let base = live(m, 5);
    // An orphan keeps its blocks: 512 KiB of the 1 MiB.
    let mut orphan = fs::File::create(m.join("orphan")).unwrap();
    orphan.write_all(&vec![1u8; 512 * KIB as usize]).unwrap();
    fs::remove_file(m.join("orphan")).unwrap();
    assert!(live(m, 5).0 >= base.0 + 512, "{:?}", live(m, 5));
    let err = fs::write(m.join("more"), vec![2u8; 700 * KIB as usize]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    fs::remove_file(m.join("more")).unwrap();
    // Writing to the orphan is held to the limit too.
    let chunk = vec![3u8; 64 * KIB as usize];
    let mut written = 0;
    while orphan.write(&chunk).is_ok() {
        written += chunk.len() as u64;
        assert!(written <= 2 * MIB, "the orphan escaped the limit");
    }
    // And orphans keep their inodes: with 99 more open, unlinked files the
    // limit of 100 leaves room for no new one.
    let mut held_open = Vec::new();
    for i in 0..99 {
        let p = m.join(format!("o{i}"));
        held_open.push(fs::File::create(&p).unwrap());
        fs::remove_file(&p).unwrap();
    }
    let err = fs::File::create(m.join("one-too-many")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    drop(held_open);
    drop(orphan);
    // The last closes (asynchronous RELEASEs) give everything back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while live(m, 5) != base && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(live(m, 5), base);
    assert!(mount.unmount().success());
    let (space, inodes) = held(&scratch.src(), 5);
    let saved = saved_usage(&scratch);
    let five = saved
        .iter()
        .find(|(x, _)| *x == Xid(5))
        .map(|(_, u)| *u)
        .unwrap_or_default();
    assert_eq!((five.space, five.inodes), (space, inodes));
}

#[test]
fn names_xattrs_and_symlink_targets_are_admitted_before_they_grow() {
    let scratch = Scratch::new();
    let limit = 256 * KIB;
    set_limit(&scratch, 5, Some(limit), None);
    let mount = Mount::scratch(&scratch, &opts(&scratch, "5"));
    let m = mount.path();
    fs::create_dir(m.join("d")).unwrap();
    for i in 0..40 {
        fs::write(m.join(format!("d/x{i}")), b"").unwrap();
    }
    // Fill the limit.
    let mut f = fs::File::create(m.join("fill")).unwrap();
    while f.write(&[7u8; 4096]).is_ok() {}
    drop(f);
    let long = |i: usize| format!("{i:05}{}", "l".repeat(250));
    let mut links = 0;
    for i in 0..4000 {
        match fs::hard_link(m.join("fill"), m.join("d").join(long(i))) {
            Ok(()) => links += 1,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
                break;
            }
        }
    }
    let big = vec![b'v'; 3000];
    for i in 0..40 {
        let set = rustix::fs::setxattr(
            m.join(format!("d/x{i}")),
            "user.big",
            &big,
            rustix::fs::XattrFlags::empty(),
        );
        assert_eq!(set, Err(rustix::io::Errno::NOSPC), "xattr {i}");
    }
    let target = "t".repeat(1000);
    for i in 0..40 {
        let made = std::os::unix::fs::symlink(&target, m.join(format!("s{i}")));
        assert_eq!(made.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    }
    let (space, _) = held(&scratch.src(), 5);
    assert!(
        space <= limit + SLACK,
        "{space} bytes held against a {limit}-byte limit ({links} links)"
    );
}

#[test]
fn whiteouts_belong_to_the_context_that_made_them() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, None, Some(1000));
    let mount = Mount::scratch(&scratch, &opts(&scratch, "5"));
    let m = mount.path();
    let base = live(m, 5);
    let dir = rustix::fs::open(m, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty()).unwrap();
    for i in 0..50 {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        fs::write(m.join(&a), b"x").unwrap();
        rustix::fs::renameat_with(&dir, &a, &dir, &b, rustix::fs::RenameFlags::WHITEOUT).unwrap();
        // The whiteout left at the old name is the caller's.
        assert_eq!(
            common::backing_xattr(&scratch.src().join(&a), "trusted.vxfs.xid").as_deref(),
            Some("5")
        );
        fs::remove_file(m.join(&a)).unwrap();
        fs::remove_file(m.join(&b)).unwrap();
    }
    assert_eq!(live(m, 5), base, "no inode leaked");
    drop(dir);
    assert!(mount.unmount().success());
    assert_eq!(held(&scratch.src(), 0).1, 1, "only the root is the host's");
}

#[test]
fn counters_stay_exact_under_concurrent_writes_closes_and_unlinks() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(4 * MIB), None);
    set_limit(&scratch, 6, None, Some(100_000));
    let opts = format!("{},threads=16", opts(&scratch, "uid/1000"));
    fs::set_permissions(scratch.src(), fs::Permissions::from_mode(0o1777)).unwrap();
    let mount = Mount::scratch(&scratch, &opts);
    let m = mount.path();
    // Sixteen writers against one 4 MiB limit overshoot by at most a block
    // each.
    std::thread::scope(|s| {
        for w in 0..16 {
            s.spawn(move || {
                as_user(5000, 5000, || {
                    let mut f = fs::File::create(m.join(format!("w{w}"))).unwrap();
                    while f.write(&[9u8; 1024 * 1024]).is_ok() {}
                })
            });
        }
    });
    let used: u64 = (0..16)
        .map(|w| allocated(&scratch.src().join(format!("w{w}"))))
        .sum();
    assert!(used <= 4 * MIB + 16 * SLACK, "{used} bytes against 4 MiB");
    // Write, close and unlink cycles (closes are asynchronous RELEASEs)
    // leave nothing charged once the files are gone.
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                as_user(6000, 6000, || {
                    for i in 0..300 {
                        let p = m.join(format!("c{t}-{i}"));
                        fs::write(&p, vec![1u8; 4096 * (1 + i % 7)]).unwrap();
                        fs::remove_file(&p).unwrap();
                    }
                })
            });
        }
    });
    for w in 0..16 {
        fs::remove_file(m.join(format!("w{w}"))).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let expect = |xid| {
        let (space, inodes) = held(&scratch.src(), xid);
        (space / 1024, inodes)
    };
    while (live(m, 5), live(m, 6)) != (expect(5), expect(6)) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(live(m, 5), expect(5));
    assert_eq!(live(m, 6), expect(6));
    assert!(mount.unmount().success());
    assert_eq!(saved_usage(&scratch), recounted(&scratch.src()));
}

#[test]
fn shared_mappings_and_early_descriptors_are_held_to_the_limit() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(MIB), None);
    let mount = Mount::scratch(&scratch, &opts(&scratch, "5"));
    let m = mount.path();
    // A reader first (it used to get the kernel passthrough file), then a
    // writer mapping 16 MiB shared.
    let path = m.join("mapped");
    fs::File::create(&path).unwrap().set_len(16 * MIB).unwrap();
    let reader = fs::File::open(&path).unwrap();
    let writer = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let _ = common::with_shared_map(writer.as_fd(), |map| {
        for page in map.chunks_mut(4096) {
            page[0] = 1;
        }
    });
    drop((reader, writer));
    let used = allocated(&scratch.src().join("mapped"));
    assert!(
        used <= MIB + SLACK,
        "a shared mapping wrote {used} bytes against 1 MiB"
    );
    fs::remove_file(&path).unwrap();
    // A descriptor opened before the limit is held to it once it is set.
    let dir = vroot::socket_dir(m).unwrap();
    let mut admin = vroot::Client::connect(&dir.join("admin.sock")).unwrap();
    admin.call(&vroot::Request::Remove(5)).unwrap();
    let mut early = fs::File::create(m.join("early")).unwrap();
    early.write_all(b"opened without a limit").unwrap();
    let set = vroot::Request::Set {
        xid: 5,
        space_total: vroot::Field::Value(1024),
        inodes_total: vroot::Field::Unlimited,
        reserved: None,
    };
    admin.call(&set).unwrap();
    let chunk = vec![5u8; 256 * KIB as usize];
    let mut written = 0u64;
    let err = loop {
        match early.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        assert!(
            written <= 24 * MIB,
            "the early descriptor escaped the limit"
        );
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    drop(early);
    let used = allocated(&scratch.src().join("early"));
    assert!(used <= MIB + SLACK, "{used} bytes against 1 MiB");
}

#[test]
fn an_idle_connection_stalls_no_other_guests_queries() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(MIB), None);
    set_limit(&scratch, 6, Some(MIB), None);
    let mount = guests_mount(&scratch);
    let dir = vroot::socket_dir(mount.path()).unwrap();
    let guest = dir.join("guest.sock");
    // Guest 5 connects and says nothing, several times over.
    let idle: Vec<_> = as_user(5000, 5000, || {
        (0..8)
            .map(|_| std::os::unix::net::UnixStream::connect(&guest).unwrap())
            .collect()
    });
    // Guest 6 is answered at once.
    let started = std::time::Instant::now();
    let own = as_user(6000, 6000, || {
        vroot::Client::connect(&guest)
            .unwrap()
            .call(&vroot::Request::Get(None))
            .unwrap()
    });
    assert_eq!(own[0].xid, 6);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // A ninth connection of guest 5 is refused.
    let ninth = as_user(5000, 5000, || {
        vroot::Client::connect(&guest)
            .unwrap()
            .call(&vroot::Request::Get(None))
    });
    match ninth {
        Err(vroot::Error::Refused { errno, .. }) => assert_eq!(errno, libc::EAGAIN),
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(idle);
}

#[test]
fn a_recount_needs_no_descriptor_per_directory() {
    // A first mount recounts. 1500 subdirectories of one directory, with
    // the daemon limited to 256 descriptors (it cannot raise them), used
    // to need one descriptor each while queued.
    let scratch = Scratch::new();
    let wide = scratch.src().join("wide");
    fs::create_dir(&wide).unwrap();
    for i in 0..1500 {
        let sub = wide.join(i.to_string());
        fs::create_dir(&sub).unwrap();
        // Something to read in each, so that the queue fills up.
        fs::write(sub.join("f"), b"").unwrap();
    }
    let mount = Mount::try_wrapped(
        &["prlimit", "--nofile=256:256"],
        &scratch.src(),
        &scratch.mnt(),
        &opts(&scratch, "uid/1000"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(mount.unmount().success());
    assert_eq!(saved_usage(&scratch), recounted(&scratch.src()));
    assert_eq!(held(&scratch.src(), 0).1, 2 + 2 * 1500);
}

/// `dlimits=off`: files are tagged, but nothing is counted or limited: a
/// limit in the index is not applied, df shows the real disk, no index is
/// made or claimed, and the limit tools find no daemon to talk to.
#[test]
fn dlimits_off_tags_without_accounting() {
    let scratch = Scratch::new();
    set_limit(&scratch, 5, Some(64 * KIB), Some(2));
    fs::set_permissions(scratch.src(), fs::Permissions::from_mode(0o1777)).unwrap();
    let mount = Mount::scratch(
        &scratch,
        &format!("{},dlimits=off", opts(&scratch, "uid/1000")),
    );
    let m = mount.path().to_path_buf();
    as_user(5000, 5000, || {
        for i in 0..5 {
            fs::write(m.join(format!("f{i}")), vec![1u8; MIB as usize]).unwrap();
        }
    });
    assert_eq!(
        common::backing_xattr(&scratch.src().join("f0"), "trusted.vxfs.xid").as_deref(),
        Some("5"),
        "still tagged"
    );
    let guest = as_user(5000, 5000, || rustix::fs::statvfs(&m).unwrap());
    let host = rustix::fs::statvfs(scratch.src()).unwrap();
    assert_eq!(guest.f_blocks, host.f_blocks, "df shows the real disk");
    assert!(
        !vxfs::index::in_use(&index_path(&scratch)),
        "dlimits=off claims no index"
    );
    drop(mount);
    // Nothing was saved either: the index holds the limit and no usage.
    let (index, _) = Index::open(&index_path(&scratch)).unwrap();
    let usage = index.clean_usage().unwrap().unwrap_or_default();
    assert!(
        usage.iter().all(|(_, u)| *u == Usage::default()),
        "{usage:?}"
    );
}

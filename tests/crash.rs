//! Crash recovery (issue 10): the crash campaign, and the pieces it relies
//! on checked one by one (the temporary names recovery removes, which
//! guests therefore cannot make).
//!
//! The campaign runs rounds of a mixed workload by three guests with
//! limits on one tree (creates, writes, truncates, renames, links,
//! unlinks, directories, long symlinks, xattrs, copy-on-write breaks of
//! unified files, fsynced files). Most rounds end with `kill -9` of the
//! daemon at a random moment, the others with a quiet, clean unmount. Each
//! mount that follows must find: its mount point recovered without help
//! (one mount, no stacked dead one), usage equal to an independent walk of
//! the backing tree, every file fsynced before the kill intact, no
//! temporary name left, and no runtime directory of a dead daemon. The
//! default is a few rounds (CI time); `VXFS_CRASH_ROUNDS=N` runs more, and
//! `VXFS_SEED` replays one.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Mount, Scratch, SplitMix64, as_user};
use rustix::fs::XattrFlags;
use rustix::io::Errno;
use vxfs::iattr::{IATTR_XATTR, IAttr};
use vxfs::index::Index;

/// Every test here kills daemons, and any daemon that starts sweeps what
/// dead ones left: one test at a time, so that each sees its own leftovers.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Guests: (context, uid); uid N*1000 is context N.
const GUESTS: [(u32, u32); 3] = [(2, 2000), (3, 3000), (4, 4000)];
/// Unified files shared by every guest.
const UNIFIED: usize = 4;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn opts(scratch: &Scratch) -> String {
    format!(
        "xid=uid/1000,index={}",
        scratch.path().join("index.db").display()
    )
}

fn chown(path: &Path, uid: u32) {
    let id = Some(uid);
    std::os::unix::fs::lchown(path, id, id).unwrap();
}

/// Sets a context's limits on the mount's admin socket.
fn set_limit(m: &Path, xid: u32, space: u64, inodes: u64) {
    let dir = vroot::socket_dir(m).unwrap();
    let mut admin = vroot::Client::connect(&dir.join("admin.sock")).unwrap();
    admin
        .call(&vroot::Request::Set {
            xid,
            space_total: vroot::Field::Value(space / KIB),
            inodes_total: vroot::Field::Value(inodes),
            reserved: None,
        })
        .unwrap();
}

/// Usage per context the daemon reports (KiB, inodes), without zeros.
fn live_usage(m: &Path) -> BTreeMap<u32, (u64, u64)> {
    let dir = vroot::socket_dir(m).unwrap();
    let mut admin = vroot::Client::connect(&dir.join("admin.sock")).unwrap();
    admin
        .call(&vroot::Request::List)
        .unwrap()
        .into_iter()
        .filter(|e| (e.space_used, e.inodes_used) != (0, 0))
        .map(|e| (e.xid, (e.space_used, e.inodes_used)))
        .collect()
}

/// The answer key in the same units: an independent walk of SOURCE.
fn walked_usage(src: &Path) -> BTreeMap<u32, (u64, u64)> {
    common::du_by_tag(src)
        .into_iter()
        .map(|(xid, (bytes, inodes))| (xid, (bytes / KIB, inodes)))
        .collect()
}

/// The usage the last clean unmount saved, in the same units.
fn saved_usage(scratch: &Scratch) -> BTreeMap<u32, (u64, u64)> {
    let (index, _) = Index::open(&scratch.path().join("index.db")).unwrap();
    index
        .clean_usage()
        .unwrap()
        .expect("a clean unmount saves clean counters")
        .into_iter()
        .filter(|(_, u)| (u.space, u.inodes) != (0, 0))
        .map(|(x, u)| (x.0, (u.space / KIB, u.inodes)))
        .collect()
}

/// Every name under `dir` with a temporary prefix.
fn temporary_names(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if vxfs::leftovers::is_reserved(entry.file_name().as_encoded_bytes()) {
                found.push(path.clone());
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

/// How many mounts are stacked at `mnt` (per mountinfo).
fn mounts_at(mnt: &Path) -> usize {
    let wanted = fs::canonicalize(mnt.parent().unwrap())
        .unwrap()
        .join(mnt.file_name().unwrap());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == wanted.to_str())
        .count()
}

/// Whether the runtime directory `dir` still describes the daemon `pid`
/// (a directory of the same device number may be another mount's now:
/// the suites run in parallel).
fn left_by(dir: &Path, pid: u32) -> bool {
    fs::read(dir.join("view.json"))
        .ok()
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .is_some_and(|view| view["pid"] == pid)
}

/// A pid that no process has (one that just exited).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// What a guest's workload left that must survive a crash: files it
/// fsynced (path on the mount, content).
type Durable = Vec<(PathBuf, Vec<u8>)>;

/// One guest's workload: random operations in its own directory `home`
/// until `stop` or until the mount dies (ENOTCONN). Errors a correct
/// filesystem may give for these operations are expected; any other is
/// recorded in `unexpected`.
struct Worker {
    home: PathBuf,
    rng: SplitMix64,
    round: usize,
    durable: Durable,
    unexpected: Arc<Mutex<Vec<String>>>,
    made: usize,
    /// Operations done, and refused by the context's limit.
    ops: u64,
    over_limit: u64,
}

/// The mount is gone: the worker stops.
struct Dead;

impl Worker {
    fn path(&mut self) -> PathBuf {
        let n = self.rng.below(12);
        if self.rng.below(2) == 0 {
            self.home.join(format!("f{n}"))
        } else {
            let d = self.rng.below(3);
            self.home.join(format!("d{d}/f{}", n % 6))
        }
    }

    /// Classifies an outcome: `Err(Dead)` once the mount is gone.
    fn check<T>(&mut self, what: &str, r: std::io::Result<T>) -> Result<Option<T>, Dead> {
        self.ops += 1;
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                match errno {
                    // Over FUSE-over-io_uring, a request the killed
                    // daemon's ring held ends with ECANCELED (Linux 6.18).
                    libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED => Err(Dead),
                    libc::ENOSPC | libc::EDQUOT => {
                        self.over_limit += 1;
                        Ok(None)
                    }
                    libc::ENOENT
                    | libc::EEXIST
                    | libc::ENOTEMPTY
                    | libc::EISDIR
                    | libc::ENOTDIR
                    | libc::ENODATA
                    | libc::E2BIG
                    | libc::EINVAL => Ok(None),
                    _ => {
                        self.unexpected
                            .lock()
                            .unwrap()
                            .push(format!("{what} in {}: {e}", self.home.display()));
                        Ok(None)
                    }
                }
            }
        }
    }

    fn data(&mut self, max: u64) -> Vec<u8> {
        let len = self.rng.below(max) as usize;
        let byte = self.rng.below(255) as u8 + 1;
        vec![byte; len]
    }

    fn step(&mut self) -> Result<(), Dead> {
        let op = self.rng.below(100);
        match op {
            0..25 => {
                let p = self.path();
                let mut o = fs::OpenOptions::new();
                o.write(true).create(true);
                if self.rng.below(2) == 0 {
                    o.append(true);
                } else {
                    o.truncate(true);
                }
                let data = self.data(48 * KIB);
                if let Some(mut f) = self.check("open for writing", o.open(&p))? {
                    self.check("write", f.write_all(&data))?;
                }
            }
            25..33 => {
                let p = self.path();
                let len = self.rng.below(128 * KIB);
                let r = fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.set_len(len));
                self.check("truncate", r)?;
            }
            33..45 => {
                let (a, b) = (self.path(), self.path());
                self.check("rename", fs::rename(a, b))?;
            }
            45..53 => {
                let (a, b) = (self.path(), self.path());
                if fs::symlink_metadata(&a).is_ok_and(|m| m.is_file()) {
                    self.check("link", fs::hard_link(a, b))?;
                }
            }
            53..65 => {
                let p = self.path();
                self.check("unlink", fs::remove_file(p))?;
            }
            65..70 => {
                let d = self.home.join(format!("d{}", self.rng.below(3)));
                self.check("mkdir", fs::create_dir(d))?;
            }
            70..74 => {
                let d = self.home.join(format!("d{}", self.rng.below(3)));
                self.check("rmdir", fs::remove_dir(d))?;
            }
            74..79 => {
                let p = self.path();
                let target = "t".repeat(1 + self.rng.below(200) as usize);
                self.check("symlink", std::os::unix::fs::symlink(target, p))?;
            }
            79..87 => {
                let p = self.path();
                let name = format!("user.k{}", self.rng.below(4));
                let value = self.data(3000);
                let r = rustix::fs::setxattr(&p, &name, &value, XattrFlags::empty());
                self.check("setxattr", r.map_err(std::io::Error::from))?;
            }
            87..91 => {
                let p = self.path();
                let name = format!("user.k{}", self.rng.below(4));
                let r = rustix::fs::removexattr(&p, &name);
                self.check("removexattr", r.map_err(std::io::Error::from))?;
            }
            91..95 => {
                // Writing a unified file breaks its link (copy-on-write).
                let p = self
                    .home
                    .join(format!("u{}", self.rng.below(UNIFIED as u64)));
                let o = fs::OpenOptions::new().append(true).open(&p);
                if let Some(mut f) = self.check("open a unified file", o)? {
                    self.check("write a unified file", f.write_all(b"mine now\n"))?;
                }
            }
            _ => {
                if self.made < 3 {
                    self.made += 1;
                    self.durable_file()?;
                }
            }
        }
        Ok(())
    }

    /// A new file, written and fsynced: it must survive anything later.
    fn durable_file(&mut self) -> Result<(), Dead> {
        let path = self
            .home
            .join(format!("durable/r{}-{}", self.round, self.made));
        let mut data = self.data(8 * KIB);
        data.extend_from_slice(path.as_os_str().as_encoded_bytes());
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        let Some(mut f) = self.check("create a durable file", f)? else {
            return Ok(());
        };
        let written = self
            .check("write a durable file", f.write_all(&data))?
            .is_some();
        if written && self.check("fsync", f.sync_all())?.is_some() {
            self.durable.push((path, data));
        } else {
            drop(f);
            self.check("remove a durable file", fs::remove_file(&path))?;
        }
        Ok(())
    }

    fn run(mut self, stop: &AtomicBool) -> (Durable, u64, u64) {
        while !stop.load(Ordering::Relaxed) {
            if self.step().is_err() {
                break;
            }
        }
        (self.durable, self.ops, self.over_limit)
    }
}

/// Runs one guest's workload on a thread acting as its uid.
fn spawn_worker(
    uid: u32,
    worker: Worker,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Durable, u64, u64)> {
    std::thread::spawn(move || {
        use rustix::process::{Gid, Uid};
        rustix::thread::set_thread_groups(&[]).expect("setgroups");
        let (g, u) = (Gid::from_raw(uid), Uid::from_raw(uid));
        rustix::thread::set_thread_res_gid(g, g, g).expect("setresgid");
        rustix::thread::set_thread_res_uid(u, u, u).expect("setresuid");
        worker.run(&stop)
    })
}

/// The tree: a host store of unified files (mode 0666, so any guest may
/// write its link), each guest's directory with a `durable/` directory.
fn populate(m: &Path) {
    fs::create_dir(m.join("store")).unwrap();
    for k in 0..UNIFIED {
        let p = m.join(format!("store/u{k}"));
        fs::write(&p, vec![b'a' + k as u8; 20 * KIB as usize]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        let bits = (IAttr::IMMUTABLE | IAttr::IUNLINK).to_string();
        rustix::fs::lsetxattr(&p, IATTR_XATTR, bits.as_bytes(), XattrFlags::empty()).unwrap();
    }
    for (xid, uid) in GUESTS {
        let home = m.join(format!("g{xid}"));
        fs::create_dir(&home).unwrap();
        fs::create_dir(home.join("durable")).unwrap();
        chown(&home, uid);
        chown(&home.join("durable"), uid);
    }
}

/// Links every guest's `uK` to the store again (as hashify would after
/// the guests broke them).
fn relink(m: &Path) {
    for (xid, _) in GUESTS {
        for k in 0..UNIFIED {
            let store = m.join(format!("store/u{k}"));
            let name = m.join(format!("g{xid}/u{k}"));
            let shared = fs::symlink_metadata(&name)
                .is_ok_and(|st| st.ino() == fs::metadata(&store).unwrap().ino());
            if !shared {
                match fs::remove_file(&name) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("removing {}: {e}", name.display()),
                }
                fs::hard_link(&store, &name).unwrap();
            }
        }
    }
}

/// Checks what every mount must find, whatever happened before it.
fn check_mount(scratch: &Scratch, m: &Path, durable: &Durable, what: &str) {
    assert_eq!(mounts_at(m), 1, "{what}: one mount at {}", m.display());
    assert_eq!(
        live_usage(m),
        walked_usage(&scratch.src()),
        "{what}: usage as the daemon counts it vs a walk of SOURCE"
    );
    for (path, data) in durable {
        let got = fs::read(path).unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
        assert!(got == *data, "{what}: {} changed", path.display());
    }
}

#[test]
fn crash_campaign() {
    let _serial = one_at_a_time();
    let seed = common::seed();
    let rounds: usize = std::env::var("VXFS_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    let mut rng = SplitMix64::new(seed);
    let scratch = Scratch::new();
    fs::set_permissions(scratch.src(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut mount = Some(Mount::scratch(&scratch, &opts(&scratch)));
    let m = scratch.mnt();
    populate(&m);
    set_limit(&m, 2, 64 * MIB, 4000);
    set_limit(&m, 3, 64 * MIB, 4000);
    // Tight: its writes meet the limit.
    set_limit(&m, 4, 2 * MIB, 300);
    let mut durable: Durable = Vec::new();
    let mut dead_runtime_dirs: Vec<(PathBuf, u32)> = Vec::new();
    let (mut kills, mut ops, mut over_limit) = (0, 0, 0);
    for round in 0..rounds {
        let what = format!("round {round} (VXFS_SEED={seed})");
        let mut current = Some(mount.take().unwrap_or_else(|| {
            // After a clean unmount.
            Mount::scratch(&scratch, &opts(&scratch))
        }));
        let runtime = vroot::socket_dir(&m).unwrap();
        check_mount(&scratch, &m, &durable, &what);
        for (dir, pid) in &dead_runtime_dirs {
            assert!(
                !left_by(dir, *pid),
                "{what}: {} of the dead daemon {pid} is left",
                dir.display()
            );
        }
        relink(&m);
        let crash = rng.below(4) != 0;
        if crash {
            // An interrupted hashify run's swap name, for the recovery.
            let name = format!("g2/.vxfs-hashify.{}.{round}", dead_pid());
            fs::hard_link(m.join("store/u0"), m.join(name)).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let unexpected = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = GUESTS
            .iter()
            .map(|&(xid, uid)| {
                let worker = Worker {
                    home: m.join(format!("g{xid}")),
                    rng: SplitMix64::new(rng.next_u64()),
                    round,
                    durable: Vec::new(),
                    unexpected: Arc::clone(&unexpected),
                    made: 0,
                    ops: 0,
                    over_limit: 0,
                };
                spawn_worker(uid, worker, Arc::clone(&stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        let mut dead = None;
        if crash {
            kills += 1;
            let pid = current.as_ref().expect("mounted").pid();
            dead_runtime_dirs.push((runtime, pid));
            dead = current.take().map(Mount::kill);
        } else {
            stop.store(true, Ordering::Relaxed);
        }
        for w in workers {
            let (files, n, refused) = w.join().expect("worker panicked");
            durable.extend(files);
            ops += n;
            over_limit += refused;
        }
        let unexpected = unexpected.lock().unwrap();
        assert!(unexpected.is_empty(), "{what}: {unexpected:#?}");
        if crash {
            // The next mount recovers the dead mount point, recounts and
            // removes the temporary names.
            let next = Mount::scratch(&scratch, &opts(&scratch));
            drop(dead);
            assert_eq!(
                temporary_names(&scratch.src()),
                Vec::<PathBuf>::new(),
                "{what}: left after the crash"
            );
            mount = Some(next);
        } else {
            // Quiet: the live counters are exact, and so is what the clean
            // unmount saves for the next mount.
            assert_eq!(
                live_usage(&m),
                walked_usage(&scratch.src()),
                "{what}: live usage after the workload"
            );
            let status = current.take().expect("mounted").unmount();
            assert!(status.success(), "{what}: clean unmount: {status}");
            assert_eq!(
                saved_usage(&scratch),
                walked_usage(&scratch.src()),
                "{what}: saved usage"
            );
        }
    }
    let last = mount.unwrap_or_else(|| Mount::scratch(&scratch, &opts(&scratch)));
    check_mount(&scratch, &m, &durable, "after the last round");
    let runtime = vroot::socket_dir(&m).unwrap();
    let root = fs::metadata(scratch.src()).unwrap();
    let socket = vxfs::control::socket_path(root.dev(), root.ino());
    let last_pid = last.pid();
    assert!(last.unmount().success());
    assert_eq!(mounts_at(&m), 0, "a mount is left at {}", m.display());
    assert!(!socket.exists(), "{} is left", socket.display());
    dead_runtime_dirs.push((runtime, last_pid));
    for (dir, pid) in &dead_runtime_dirs {
        assert!(!left_by(dir, *pid), "{} of {pid} is left", dir.display());
    }
    eprintln!(
        "{rounds} rounds, {kills} killed, {ops} operations ({over_limit} refused by a limit), \
         {} fsynced files intact",
        durable.len()
    );
    assert!(over_limit > 0, "the workload never met a limit");
}

#[test]
fn guests_cannot_make_the_temporary_names_recovery_removes() {
    let _serial = one_at_a_time();
    let scratch = Scratch::new();
    fs::set_permissions(scratch.src(), fs::Permissions::from_mode(0o777)).unwrap();
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    let m = mount.path();
    fs::write(m.join("mine"), b"x").unwrap();
    chown(&m.join("mine"), 2000);
    let names = [".vxfs-cow.1.0", ".vxfs-hashify.1.0"];
    as_user(2000, 2000, || {
        for name in names {
            let p = m.join(name);
            let errno = |r: std::io::Result<()>| r.map_err(|e| e.raw_os_error());
            let eperm = Err(Some(libc::EPERM));
            assert_eq!(errno(fs::write(&p, b"x")), eperm, "create {name}");
            assert_eq!(errno(fs::create_dir(&p)), eperm, "mkdir {name}");
            assert_eq!(
                errno(std::os::unix::fs::symlink("t", &p)),
                eperm,
                "symlink {name}"
            );
            assert_eq!(errno(fs::hard_link(m.join("mine"), &p)), eperm, "link");
            assert_eq!(errno(fs::rename(m.join("mine"), &p)), eperm, "rename");
            let fifo = rustix::fs::mknodat(
                rustix::fs::CWD,
                &p,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            );
            assert_eq!(fifo, Err(Errno::PERM), "mknod {name}");
        }
        // Names that merely look alike are anybody's.
        fs::write(m.join(".vxfs-cow"), b"x").unwrap();
        fs::write(m.join("x.vxfs-cow.1"), b"x").unwrap();
    });
    // The host administrator (hashify) may.
    fs::hard_link(m.join("mine"), m.join(names[1])).unwrap();
    assert!(m.join("mine").exists());
}

#[test]
fn a_mount_after_a_crash_removes_temporary_names_and_keeps_the_files() {
    let _serial = one_at_a_time();
    let scratch = Scratch::new();
    let src = scratch.src();
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    fs::create_dir(mount.path().join("g")).unwrap();
    fs::write(mount.path().join("g/f"), vec![1u8; 10_000]).unwrap();
    mount.crash();
    // What a crash between naming and swapping leaves: a copy-on-write
    // copy, a hashify swap name of a process gone, and one of a process
    // still running (this one), which stays.
    fs::write(src.join("g/.vxfs-cow.1f.0"), vec![2u8; 10_000]).unwrap();
    let gone = format!(".vxfs-hashify.{}.0", dead_pid());
    fs::hard_link(src.join("g/f"), src.join("g").join(&gone)).unwrap();
    let running = format!(".vxfs-hashify.{}.0", std::process::id());
    fs::hard_link(src.join("g/f"), src.join("g").join(&running)).unwrap();
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    assert!(!src.join("g/.vxfs-cow.1f.0").exists());
    assert!(!src.join("g").join(&gone).exists());
    assert!(src.join("g").join(&running).exists());
    assert_eq!(
        fs::read(mount.path().join("g/f")).unwrap(),
        vec![1u8; 10_000]
    );
    assert_eq!(live_usage(mount.path()), walked_usage(&src));
    // A clean mount (counters saved) does not walk the tree.
    drop(mount);
    fs::write(src.join("g/.vxfs-cow.2.0"), b"left alone").unwrap();
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    assert!(src.join("g/.vxfs-cow.2.0").exists());
    drop(mount);
}

#[test]
fn a_killed_daemons_runtime_directory_goes_with_the_next_mount() {
    let _serial = one_at_a_time();
    let scratch = Scratch::new();
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    let dir = vroot::socket_dir(mount.path()).unwrap();
    let pid = mount.pid();
    let root = fs::metadata(scratch.src()).unwrap();
    let socket = vxfs::control::socket_path(root.dev(), root.ino());
    assert!(left_by(&dir, pid));
    let _dead = mount.kill();
    assert!(dir.join("admin.sock").exists(), "a kill leaves it behind");
    assert!(socket.exists(), "and the control socket");
    // Any daemon that starts sweeps them (here one of another tree).
    let other = Scratch::new();
    let next = Mount::scratch(&other, "");
    assert!(
        !left_by(&dir, pid),
        "{} of the dead daemon is left",
        dir.display()
    );
    assert!(!socket.exists(), "{} is left", socket.display());
    drop(next);
    // The dead mount itself is recovered by mounting there again.
    let again = Mount::scratch(&scratch, &opts(&scratch));
    assert_eq!(mounts_at(again.path()), 1);
    drop(again);
    assert!(!left_by(&dir, pid));
    assert!(!socket.exists());
}

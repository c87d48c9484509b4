//! Several threads hammering one vxfs mount at once. Each test is seeded
//! (the seed is printed; `VXFS_SEED=...` replays it) and ends by comparing
//! the mount with SOURCE: names, types, modes, link counts, sizes, inode
//! numbers and contents must all agree.
//!
//! Threads only tolerate the errors that the races they provoke can
//! legitimately produce (a name vanished or appeared meanwhile); anything
//! else fails the test. A watchdog kills the daemon if the workload hangs,
//! so that a deadlock fails the test instead of blocking the run forever.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Mount, Scratch, SplitMix64, seed, vxfs_bin};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

const THREADS: u64 = 4;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Kills the daemon serving `mnt` if the test has not finished within the
/// limit: blocked calls on the mount then fail with ENOTCONN and the test
/// fails with a clear message instead of hanging.
#[derive(Debug)]
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<bool>>,
}

impl Watchdog {
    fn start(mnt: &Path, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let mnt = mnt.to_path_buf();
        let thread = std::thread::spawn(move || match rx.recv_timeout(limit) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "watchdog: workload on {} still running after {limit:?}; killing the daemon",
                    mnt.display()
                );
                for pid in daemon_pids(&mnt) {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                true
            }
            _ => false,
        });
        Watchdog {
            done: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stops the watchdog; panics if it fired.
    fn finish(mut self) {
        assert!(
            !self.stop(),
            "the workload hung: the watchdog killed the daemon"
        );
    }

    fn stop(&mut self) -> bool {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(false))
            .unwrap_or(false)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The vxfs processes with `mnt` among their arguments.
fn daemon_pids(mnt: &Path) -> Vec<i32> {
    let Ok(bin) = fs::canonicalize(vxfs_bin()) else {
        return Vec::new();
    };
    let mnt = mnt.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if fs::read_link(entry.path().join("exe")).ok().as_ref() != Some(&bin) {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|a| a == mnt) {
            pids.push(pid);
        }
    }
    pids
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_io_error(&e).unwrap_or(Errno::IO)
}

/// Collects unexpected errors from worker threads.
#[derive(Debug, Default)]
struct Failures(Vec<String>);

impl Failures {
    /// Records `r` unless it succeeded or failed with one of `allowed`.
    fn check<T>(&mut self, what: impl FnOnce() -> String, r: Result<T, Errno>, allowed: &[Errno]) {
        if let Err(e) = r {
            if !allowed.contains(&e) && self.0.len() < 50 {
                self.0.push(format!("{}: {e:?}", what()));
            }
        }
    }
}

fn content(rng: &mut SplitMix64, tag: &str) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1 => 64 * 1024 + rng.below(64 * 1024) as usize,
        _ => rng.below(4096) as usize,
    };
    let mut v: Vec<u8> = tag.bytes().cycle().take(len).collect();
    if let Some(last) = v.last_mut() {
        *last = b'\n';
    }
    v
}

fn create_excl(path: &Path, data: &[u8]) -> Result<(), Errno> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    fs::File::from(fd).write_all_at(data, 0).map_err(io_errno)
}

fn overwrite(path: &Path, data: &[u8]) -> Result<(), Errno> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    fs::File::from(fd).write_all_at(data, 0).map_err(io_errno)
}

fn append(path: &Path, data: &[u8]) -> Result<(), Errno> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut f = fs::File::from(fd);
    std::io::Write::write_all(&mut f, data).map_err(io_errno)
}

fn read_all(path: &Path) -> Result<Vec<u8>, Errno> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut v = Vec::new();
    fs::File::from(fd).read_to_end(&mut v).map_err(io_errno)?;
    Ok(v)
}

/// What is compared between the mount and SOURCE for one entry.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    mode: u32,
    nlink: u64,
    size: u64,
    ino: u64,
    uid: u32,
    gid: u32,
    content: Option<Vec<u8>>,
}

/// Recursively records `root` (names relative to it).
fn tree(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        {
            let entry = entry.unwrap();
            let r = rel.join(entry.file_name());
            let p = root.join(&r);
            let md =
                fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
            let content = if md.is_file() {
                Some(fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
            } else {
                None
            };
            if md.is_dir() {
                stack.push(r.clone());
            }
            out.insert(
                r,
                Seen {
                    mode: md.mode(),
                    nlink: md.nlink(),
                    size: md.len(),
                    ino: md.ino(),
                    uid: md.uid(),
                    gid: md.gid(),
                    content,
                },
            );
        }
    }
    out
}

/// Asserts that the mount and SOURCE agree below `rel`.
fn assert_mount_matches_source(mnt: &Path, src: &Path, rel: &str) {
    let via_mount = tree(&mnt.join(rel));
    let in_source = tree(&src.join(rel));
    let mut diffs = Vec::new();
    for (name, m) in &via_mount {
        match in_source.get(name) {
            None => diffs.push(format!("  only through the mount: {}", name.display())),
            Some(s) if s != m => diffs.push(format!(
                "  {}:\n    mount:  {}\n    source: {}",
                name.display(),
                brief(m),
                brief(s)
            )),
            Some(_) => {}
        }
    }
    for name in in_source.keys() {
        if !via_mount.contains_key(name) {
            diffs.push(format!("  only in SOURCE: {}", name.display()));
        }
    }
    eprintln!(
        "compared {} entries below {rel:?} ({} files, {} bytes)",
        via_mount.len(),
        via_mount.values().filter(|s| s.content.is_some()).count(),
        via_mount
            .values()
            .filter_map(|s| s.content.as_ref())
            .map(Vec::len)
            .sum::<usize>()
    );
    assert!(
        diffs.is_empty(),
        "the mount and SOURCE disagree below {rel:?} ({} entries through the mount, {} in \
         SOURCE):\n{}",
        via_mount.len(),
        in_source.len(),
        diffs.join("\n")
    );
}

fn brief(s: &Seen) -> String {
    format!(
        "mode {:o} nlink {} size {} ino {} uid {} gid {} content {}",
        s.mode,
        s.nlink,
        s.size,
        s.ino,
        s.uid,
        s.gid,
        match &s.content {
            None => "-".to_string(),
            Some(c) => format!("{} bytes, hash {:016x}", c.len(), fnv(c)),
        }
    )
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `THREADS` workers `f(thread index, rng, failures)` and returns all
/// their failures.
fn run_workers(seed: u64, f: impl Fn(u64, &mut SplitMix64, &mut Failures) + Sync) -> Vec<String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let f = &f;
                scope.spawn(move || {
                    let mut rng =
                        SplitMix64::new(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let mut failures = Failures::default();
                    f(t, &mut rng, &mut failures);
                    failures.0
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Creates, writes, renames (also over each other's names), links and
/// unlinks files in one directory from several threads.
#[test]
fn churn_in_one_directory_keeps_mount_and_source_identical() {
    churn_in_one_directory("threads=4");
}

/// With long kernel caches every attribute the mount shows afterwards comes
/// from the daemon's replies to the operations themselves: a stale reply
/// (say, a link count from before a link) stays visible.
#[test]
fn churn_in_one_directory_with_long_kernel_caches() {
    churn_in_one_directory("threads=4,attr_timeout=600,entry_timeout=600");
}

#[test]
fn churn_in_one_directory_single_threaded_daemon_without_passthrough() {
    churn_in_one_directory("threads=1,passthrough=off");
}

fn churn_in_one_directory(options: &str) {
    const OPS: u64 = 6000;
    const NAMES: u64 = 12;
    let seed = seed();
    let s = Scratch::new();
    let m = Mount::scratch(&s, options);
    let dir = m.path().join("work");
    fs::create_dir(&dir).unwrap();
    let watchdog = Watchdog::start(m.path(), Duration::from_secs(180));

    let failures = run_workers(seed, |t, rng, failures| {
        use Errno as E;
        let name = |rng: &mut SplitMix64| dir.join(format!("f{:02}", rng.below(NAMES)));
        for i in 0..OPS {
            let a = name(rng);
            let tag = format!("t{t} op{i} ");
            macro_rules! what {
                ($op:expr, $p:expr) => {
                    || format!("thread {t} op {i}: {} {}", $op, $p.display())
                };
            }
            match rng.below(10) {
                0 | 1 => {
                    let data = content(rng, &tag);
                    failures.check(what!("create", &a), create_excl(&a, &data), &[E::EXIST]);
                }
                2 => {
                    let data = content(rng, &tag);
                    failures.check(what!("overwrite", &a), overwrite(&a, &data), &[E::NOENT]);
                }
                3 => {
                    let data = content(rng, &tag);
                    failures.check(what!("append", &a), append(&a, &data), &[E::NOENT]);
                }
                4 | 5 => {
                    let b = name(rng);
                    failures.check(what!("rename", &a), rustix::fs::rename(&a, &b), &[E::NOENT]);
                }
                6 => {
                    let b = name(rng);
                    failures.check(
                        what!("link", &a),
                        rustix::fs::link(&a, &b),
                        &[E::NOENT, E::EXIST],
                    );
                }
                7 => failures.check(what!("unlink", &a), rustix::fs::unlink(&a), &[E::NOENT]),
                8 => failures.check(what!("read", &a), read_all(&a).map(drop), &[E::NOENT]),
                _ => failures.check(
                    what!("stat", &a),
                    rustix::fs::stat(&a).map(drop),
                    &[E::NOENT],
                ),
            }
        }
    });
    watchdog.finish();
    assert!(
        failures.is_empty(),
        "unexpected errors:\n{}",
        failures.join("\n")
    );
    assert_mount_matches_source(m.path(), &s.src(), "work");
}

/// Threads creating and removing nested directories (and files in them)
/// and moving directory subtrees around, all in one tree.
#[test]
fn concurrent_mkdir_rmdir_trees_keep_mount_and_source_identical() {
    const OPS: u64 = 6000;
    let seed = seed();
    let s = Scratch::new();
    let m = Mount::scratch(&s, "threads=4");
    let root = m.path().join("tree");
    fs::create_dir(&root).unwrap();
    let watchdog = Watchdog::start(m.path(), Duration::from_secs(180));

    let failures = run_workers(seed, |t, rng, failures| {
        use Errno as E;
        // A directory path of depth 1..=3 from names d0..d2.
        let dir_path = |rng: &mut SplitMix64| {
            let depth = 1 + rng.below(3);
            let mut p = root.clone();
            for _ in 0..depth {
                p.push(format!("d{}", rng.below(3)));
            }
            p
        };
        for i in 0..OPS {
            let d = dir_path(rng);
            macro_rules! what {
                ($op:expr, $p:expr) => {
                    || format!("thread {t} op {i}: {} {}", $op, $p.display())
                };
            }
            match rng.below(8) {
                0..=2 => failures.check(
                    what!("mkdir", &d),
                    rustix::fs::mkdir(&d, Mode::from_raw_mode(0o755)),
                    &[E::EXIST, E::NOENT],
                ),
                3 | 4 => failures.check(
                    what!("rmdir", &d),
                    rustix::fs::rmdir(&d),
                    &[E::NOENT, E::NOTEMPTY, E::EXIST],
                ),
                5 => {
                    let f = d.join("f");
                    let data = format!("t{t} op{i}\n");
                    failures.check(
                        what!("write file in", &d),
                        fs::write(&f, data).map_err(io_errno),
                        &[E::NOENT],
                    );
                }
                6 => {
                    let f = d.join("f");
                    failures.check(
                        what!("unlink file in", &d),
                        rustix::fs::unlink(&f),
                        &[E::NOENT],
                    );
                }
                _ => {
                    if rng.below(2) == 0 {
                        let to = dir_path(rng);
                        failures.check(
                            what!("rename dir", &d),
                            rustix::fs::rename(&d, &to),
                            // Gone, target not empty, or into its own subtree.
                            &[E::NOENT, E::NOTEMPTY, E::EXIST, E::INVAL],
                        );
                    } else {
                        let listed = fs::read_dir(&d)
                            .map_err(io_errno)
                            .and_then(|mut rd| rd.try_for_each(|e| e.map_err(io_errno).map(drop)));
                        failures.check(what!("readdir", &d), listed, &[E::NOENT]);
                    }
                }
            }
        }
    });
    watchdog.finish();
    assert!(
        failures.is_empty(),
        "unexpected errors:\n{}",
        failures.join("\n")
    );
    assert_mount_matches_source(m.path(), &s.src(), "tree");
}

/// Writers (each on its own file) and readers (of fixed files) in
/// parallel; every read must return exactly what was written.
#[test]
fn parallel_readers_and_writers_of_distinct_files_see_their_data() {
    readers_and_writers("threads=4,passthrough=on");
}

#[test]
fn parallel_readers_and_writers_without_passthrough_see_their_data() {
    readers_and_writers("threads=4,passthrough=off");
}

fn readers_and_writers(options: &str) {
    const WRITES: u64 = 300;
    const READS: u64 = 300;
    const STATIC_LEN: usize = 1 << 20;
    let seed = seed();
    let s = Scratch::new();
    // Fixed files the readers check, created before mounting.
    let mut bytes = SplitMix64::new(seed);
    let statics: Vec<Vec<u8>> = (0..2)
        .map(|_| (0..STATIC_LEN).map(|_| bytes.next_u64() as u8).collect())
        .collect();
    for (i, data) in statics.iter().enumerate() {
        fs::write(s.src().join(format!("static{i}")), data).unwrap();
    }
    let m = Mount::scratch(&s, options);
    let mnt = m.path().to_path_buf();
    let watchdog = Watchdog::start(&mnt, Duration::from_secs(180));
    // File data the readers and writers move through the mount.
    let moved = std::sync::atomic::AtomicU64::new(0);
    let count = |n: usize| moved.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    let io_before = m.daemon_io();

    let models = std::sync::Mutex::new(BTreeMap::new());
    let failures = run_workers(seed, |t, rng, failures| {
        if t % 2 == 1 {
            // Reader.
            for i in 0..READS {
                let which = rng.below(statics.len() as u64) as usize;
                let path = mnt.join(format!("static{which}"));
                let expected = &statics[which];
                let r = (|| {
                    let f = fs::File::open(&path).map_err(|e| e.to_string())?;
                    let off = rng.below(STATIC_LEN as u64) as usize;
                    let len = (1 + rng.below(256 * 1024) as usize).min(STATIC_LEN - off);
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, off as u64)
                        .map_err(|e| e.to_string())?;
                    count(len);
                    if buf != expected[off..off + len] {
                        return Err(format!("static{which}[{off}..+{len}] differs"));
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    failures.0.push(format!("reader {t} read {i}: {e:?}"));
                }
            }
            return;
        }
        // Writer: random pwrites, truncates and reopen, checked against a
        // model after every step.
        let path = mnt.join(format!("w{t}"));
        let mut model: Vec<u8> = Vec::new();
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        for i in 0..WRITES {
            match rng.below(10) {
                0 => {
                    let len = rng.below(300 * 1024);
                    file.set_len(len).unwrap();
                    model.resize(len as usize, 0);
                }
                1 => {
                    drop(file);
                    file = fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .unwrap();
                }
                _ => {
                    let off = rng.below(256 * 1024) as usize;
                    let len = 1 + rng.below(32 * 1024) as usize;
                    let byte = rng.next_u64();
                    let data: Vec<u8> = (0..len).map(|k| (byte as usize + k * 7) as u8).collect();
                    file.write_all_at(&data, off as u64).unwrap();
                    count(len);
                    if model.len() < off + len {
                        model.resize(off + len, 0);
                    }
                    model[off..off + len].copy_from_slice(&data);
                }
            }
            let mut back = vec![0u8; model.len()];
            file.read_exact_at(&mut back, 0).unwrap();
            count(back.len());
            let size = file.metadata().unwrap().len();
            if back != model || size != model.len() as u64 {
                failures.0.push(format!(
                    "writer {t} step {i}: read back {} bytes (size {size}) differing from the \
                     {} written",
                    back.len(),
                    model.len()
                ));
                break;
            }
        }
        drop(file);
        models.lock().unwrap().insert(format!("w{t}"), model);
    });
    watchdog.finish();
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    m.assert_data_path(
        io_before,
        moved.into_inner(),
        !options.contains("passthrough=off"),
    );
    for (name, model) in models.into_inner().unwrap() {
        assert!(
            fs::read(mnt.join(&name)).unwrap() == model,
            "{name} through the mount differs from what was written"
        );
        assert!(
            fs::read(s.src().join(&name)).unwrap() == model,
            "{name} in SOURCE differs from what was written"
        );
    }
    assert_mount_matches_source(&mnt, &s.src(), "");
}

/// Threads creating, renaming and unlinking their own names in one shared
/// directory: the final state is exactly predictable.
#[test]
fn parallel_distinct_names_in_one_directory_end_exactly_as_expected() {
    const FILES: u64 = 150;
    let seed = seed();
    let s = Scratch::new();
    let m = Mount::scratch(&s, "threads=4");
    let dir = m.path().join("shared");
    fs::create_dir(&dir).unwrap();
    let watchdog = Watchdog::start(m.path(), Duration::from_secs(180));

    let expected = std::sync::Mutex::new(BTreeMap::new());
    let failures = run_workers(seed, |t, rng, failures| {
        let mut mine = BTreeMap::new();
        for i in 0..FILES {
            let name = format!("t{t}-{i:03}");
            let data = content(rng, &format!("{name} "));
            failures.check(
                || format!("create {name}"),
                create_excl(&dir.join(&name), &data),
                &[],
            );
            mine.insert(name, data);
        }
        for i in 0..FILES {
            let name = format!("t{t}-{i:03}");
            match rng.below(4) {
                0 => {
                    failures.check(
                        || format!("unlink {name}"),
                        rustix::fs::unlink(dir.join(&name)),
                        &[],
                    );
                    mine.remove(&name);
                }
                1 => {
                    let to = format!("{name}.renamed");
                    failures.check(
                        || format!("rename {name}"),
                        rustix::fs::rename(dir.join(&name), dir.join(&to)),
                        &[],
                    );
                    let data = mine.remove(&name).unwrap();
                    mine.insert(to, data);
                }
                2 => {
                    let to = format!("{name}.link");
                    failures.check(
                        || format!("link {name}"),
                        rustix::fs::link(dir.join(&name), dir.join(&to)),
                        &[],
                    );
                    let data = mine[&name].clone();
                    mine.insert(to, data);
                }
                _ => {
                    let data = content(rng, &format!("{name} again "));
                    failures.check(
                        || format!("overwrite {name}"),
                        overwrite(&dir.join(&name), &data),
                        &[],
                    );
                    let linked = format!("{name}.link");
                    if mine.contains_key(&linked) {
                        mine.insert(linked, data.clone());
                    }
                    mine.insert(name, data);
                }
            }
        }
        expected.lock().unwrap().extend(mine);
    });
    watchdog.finish();
    assert!(
        failures.is_empty(),
        "unexpected errors:\n{}",
        failures.join("\n")
    );
    let expected = expected.into_inner().unwrap();
    let mut listed: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let want: Vec<&String> = expected.keys().collect();
    assert_eq!(
        listed.iter().collect::<Vec<_>>(),
        want,
        "listing through the mount"
    );
    for (name, data) in &expected {
        let got = fs::read(dir.join(name)).unwrap();
        assert!(
            &got == data,
            "{name}: {} bytes through the mount, {} expected",
            got.len(),
            data.len()
        );
    }
    assert_mount_matches_source(m.path(), &s.src(), "shared");
}

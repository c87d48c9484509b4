//! Shared harness for the suites that mount a real vxfs.
//!
//! Every test gets its own temporary directory holding `src/` (the backing
//! tree), `mnt/` (the vxfs mount point) and `native/` (a plain directory on
//! the same filesystem as `src/`, the oracle for differential tests).
//! [`Mount`] unmounts in `Drop`, so a failing assertion still leaves no mount
//! behind. A machine without a usable `/dev/fuse` fails the test loudly: it is
//! never skipped.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon binary under test: the one cargo built for this test target,
/// or, for the suites of other packages that include this harness (the
/// tools), `vxfs` built once per test process into the same target
/// directory and profile as the running test.
pub fn vxfs_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match option_env!("CARGO_BIN_EXE_vxfs") {
        Some(bin) => PathBuf::from(bin),
        None => build_bin("vxfs", "vxfs"),
    })
}

/// The vxproc daemon, built once per test process like [`vxfs_bin`].
pub fn vxproc_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| build_bin("vxproc", "vxproc"))
}

/// netprobe (`tools/examples/netprobe.rs`: one socket call, its outcome
/// printed), built once per test process like [`vxfs_bin`].
pub fn netprobe_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        build(
            &["-p", "vxfs-tools", "--example", "netprobe"],
            "examples/netprobe",
        )
    })
}

/// callprobe (`tools/examples/callprobe.rs`: times uname or sysinfo
/// calls), built once per process like [`vxfs_bin`].
pub fn callprobe_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        build(
            &["-p", "vxfs-tools", "--example", "callprobe"],
            "examples/callprobe",
        )
    })
}

/// Copies the host program `bin` into a guest's `root` as `/bin/NAME`,
/// with the shared libraries `ldd` lists at their own paths.
pub fn install_host_program(root: &Path, bin: &Path, name: &str) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(bin, root.join("bin").join(name)).unwrap();
    let ldd = Command::new("ldd").arg(bin).output().expect("run ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let to = root.join(lib.strip_prefix("/").unwrap());
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(&lib, &to).unwrap();
        }
    }
}

/// `cargo build -p PACKAGE --bin BIN` into the running test's target
/// directory and profile.
fn build_bin(package: &str, bin: &str) -> PathBuf {
    build(&["-p", package, "--bin", bin], bin)
}

/// `cargo build ARGS` into the running test's target directory and
/// profile; the path of `output` below it.
fn build(args: &[&str], output: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet"])
        .args(args)
        .arg("--manifest-path")
        .arg(&manifest);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => panic!("unexpected target directory {}", dir.display()),
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run cargo build {args:?}: {e}"));
    assert!(
        out.status.success(),
        "cargo build {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(output);
    assert!(
        path.exists(),
        "cargo build {args:?} did not produce {}",
        path.display()
    );
    path
}

/// How long a mount may take to appear before the test fails.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// A scratch area with a backing tree, a mount point and a native twin.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates `src/`, `mnt/` and `native/` under a new temporary directory.
    ///
    /// The temporary directory lives under `/var/tmp` (a disk filesystem with
    /// xattr and ACL support) unless `VXFS_TEST_DIR` says otherwise.
    pub fn new() -> Scratch {
        let base = std::env::var_os("VXFS_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let dir = tempfile::Builder::new()
            .prefix("vxfs-test-")
            .tempdir_in(base)
            .expect("create scratch dir");
        for sub in ["src", "mnt", "native"] {
            fs::create_dir(dir.path().join(sub)).expect("create scratch subdir");
        }
        // Tests that switch to unprivileged uids need to reach the trees.
        set_mode(dir.path(), 0o755);
        Scratch { dir }
    }

    /// The root of the scratch area.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The backing tree (SOURCE).
    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    /// The mount point.
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// The native oracle directory.
    pub fn native(&self) -> PathBuf {
        self.dir.path().join("native")
    }
}

impl Drop for Scratch {
    /// A test that drops its scratch area before its mounts (a struct
    /// holding both, fields drop in order) would leave the area behind:
    /// mounts still inside are detached first (their daemons exit once
    /// unused), so the directory goes.
    fn drop(&mut self) {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let base = self.dir.path().to_string_lossy().into_owned();
        let mut inside: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
            .filter(|m| m.starts_with(&format!("{base}/")))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        // A test run leaves nothing behind: the area goes now, or the
        // test fails saying why (a passing test only; a failing one has
        // said enough).
        let removed = fs::remove_dir_all(self.dir.path());
        if let Err(e) = removed {
            if !std::thread::panicking() && self.dir.path().exists() {
                panic!(
                    "the scratch area {} cannot be removed: {e}",
                    self.dir.path().display()
                );
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Fails the test loudly when FUSE cannot work on this machine.
pub fn require_fuse() {
    let dev = Path::new("/dev/fuse");
    assert!(
        dev.exists(),
        "/dev/fuse is missing: FUSE is unavailable, so the mount tests cannot run \
         (load the fuse module or run on a machine with FUSE)"
    );
    assert!(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .is_ok(),
        "/dev/fuse cannot be opened: FUSE is unavailable for this user"
    );
}

/// Whether `path` is currently a mount point of type `fuse.vxfs`.
pub fn is_vxfs_mounted(path: &Path) -> bool {
    mount_type(path).as_deref() == Some("fuse.vxfs")
}

/// The filesystem type mounted at `path`, per /proc/self/mountinfo.
pub fn mount_type(path: &Path) -> Option<String> {
    // Canonicalize the parent only: a dead FUSE mount point itself answers
    // ENOTCONN, and it must still be found (and unmounted).
    let path = fs::canonicalize(path.parent()?)
        .ok()?
        .join(path.file_name()?);
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.to_str()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (unescape_mountinfo(fields[4]) == wanted).then(|| fields[sep + 1].to_string())
    })
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The fuse module's switch for FUSE-over-io_uring.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether the kernel offers FUSE-over-io_uring now.
pub fn uring_enabled() -> bool {
    fs::read_to_string(ENABLE_URING).is_ok_and(|v| v.trim() == "Y")
}

/// A mount serves through io_uring exactly when the kernel offers it and
/// its options leave io_uring on (the default): a suite run with
/// `enable_uring` set tests that transport, never /dev/fuse by accident.
pub fn check_transport(dev: u64, options: &str) -> bool {
    let file = vroot::dir_for_dev(dev).join("transport");
    let transport =
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let off = options.split(',').any(|o| o == "io_uring=off");
    let expected = if uring_enabled() && !off {
        "io_uring"
    } else {
        "dev_fuse"
    };
    assert_eq!(transport.trim(), expected, "the mount's transport");
    expected == "io_uring"
}

/// A running `vxfs -f` daemon; unmounted and reaped on drop.
#[derive(Debug)]
pub struct Mount {
    mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// Requests travel through FUSE-over-io_uring.
    uring: bool,
}

impl Mount {
    /// Mounts `src` at `mnt` with the given `-o` options (may be empty).
    pub fn new(src: &Path, mnt: &Path, options: &str) -> Mount {
        Self::try_new(src, mnt, options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts the scratch area's `src/` at its `mnt/`.
    pub fn scratch(scratch: &Scratch, options: &str) -> Mount {
        Self::new(&scratch.src(), &scratch.mnt(), options)
    }

    /// Like [`Mount::new`] but returns the daemon's complaint instead of
    /// panicking when it does not come up.
    pub fn try_new(src: &Path, mnt: &Path, options: &str) -> Result<Mount, String> {
        Self::try_wrapped(&[], src, mnt, options)
    }

    /// Like [`Mount::try_new`], with the daemon started by `wrapper` (a
    /// command and its arguments, such as `prlimit --nofile=1024`).
    pub fn try_wrapped(
        wrapper: &[&str],
        src: &Path,
        mnt: &Path,
        options: &str,
    ) -> Result<Mount, String> {
        require_fuse();
        let log = mnt.with_extension("vxfs.log");
        let log_file = fs::File::create(&log).expect("create daemon log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(vxfs_bin());
                cmd
            }
            None => Command::new(vxfs_bin()),
        };
        cmd.arg(src).arg(mnt).arg("-f");
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .expect("spawn vxfs");
        let mut mount = Mount {
            mnt: mnt.to_path_buf(),
            child: Some(child),
            log,
            uring: false,
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            // A dead mount there (a killed daemon's) is not the new one:
            // statfs always asks the daemon.
            let dead = rustix::fs::statfs(mnt).err() == Some(rustix::io::Errno::NOTCONN);
            if is_vxfs_mounted(mnt) && !dead {
                // Blocks until the daemon serves (its handshake, and the
                // vroot sockets made before it, are done).
                let meta = fs::metadata(mnt).map_err(|e| format!("stat {}: {e}", mnt.display()))?;
                mount.uring = check_transport(meta.dev(), options);
                return Ok(mount);
            }
            if let Some(status) = mount
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                mount.child = None;
                return Err(format!(
                    "vxfs exited with {status} before mounting {}:\n{}",
                    mnt.display(),
                    mount.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "vxfs did not mount {} within {MOUNT_TIMEOUT:?}:\n{}",
                    mnt.display(),
                    mount.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The bytes the daemon's own syscalls have read and written so far
    /// (`rchar + wchar` of `/proc/PID/io`): what it serves itself, its
    /// FUSE requests and replies included. Data that passthrough serves
    /// never shows here.
    pub fn daemon_io(&self) -> u64 {
        let pid = self.child.as_ref().expect("the daemon runs").id();
        let text = fs::read_to_string(format!("/proc/{pid}/io")).expect("read the daemon's io");
        text.lines()
            .filter(|l| l.starts_with("rchar:") || l.starts_with("wchar:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    }

    /// Checks which path `moved` bytes of file data took since the daemon's
    /// I/O stood at `before` ([`Mount::daemon_io`]): with `passthrough`,
    /// the kernel served them (the daemon moved less than 2% of it and never
    /// logged a fall-back), else the daemon did (more than a fifth: the
    /// page cache answers some reads again).
    pub fn assert_data_path(&self, before: u64, moved: u64, passthrough: bool) {
        let served = self.daemon_io() - before;
        eprintln!(
            "data path: the daemon moved {served} bytes of {moved} (passthrough {passthrough})"
        );
        if passthrough {
            self.assert_no_passthrough_fallback();
            assert!(
                served < moved / 50,
                "passthrough: the daemon itself moved {served} bytes of {moved}"
            );
        } else {
            // Through /dev/fuse the daemon's reads and writes count the
            // data twice (backing file, /dev/fuse); through io_uring the
            // ring's copies are not reads or writes.
            let share = if self.uring { 10 } else { 5 };
            assert!(
                served > moved / share,
                "without passthrough the daemon moved only {served} bytes of {moved}: the meter is wrong"
            );
        }
    }

    /// Panics if the daemon logged that it serves file data itself because
    /// the kernel refused passthrough.
    pub fn assert_no_passthrough_fallback(&self) {
        let log = self.log_text();
        assert!(
            !log.contains("passthrough unavailable") && !log.contains("no FUSE passthrough"),
            "the daemon fell back to serving data:\n{log}"
        );
    }

    /// What the daemon printed so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Simulates a crash: SIGKILLs the daemon (no clean shutdown of any
    /// kind), then detaches the dead mount.
    pub fn crash(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 the daemon");
            child.wait().expect("reap the daemon");
        }
        let ok = Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "detaching the dead mount {}", self.mnt.display());
    }

    /// SIGKILLs the daemon and reaps it, leaving its dead mount behind (as
    /// an OOM kill does) for the next mount to recover. The guard detaches
    /// the dead mount when dropped if nothing recovered it (a test that
    /// failed before it mounted again).
    pub fn kill(mut self) -> DeadMount {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 the daemon");
            child.wait().expect("reap the daemon");
        }
        DeadMount(self.mnt.clone())
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running daemon").id()
    }

    /// The mount's request counts per operation (and `total`), written by
    /// the daemon on SIGUSR1 to `/run/vxfs/MAJ:MIN/requests`.
    pub fn request_counts(&self) -> std::collections::HashMap<String, u64> {
        use std::os::unix::fs::MetadataExt;
        let st = fs::metadata(self.path()).unwrap();
        let file = vroot::dir_for_dev(st.dev()).join("requests");
        let _ = fs::remove_file(&file);
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::USR1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = fs::read_to_string(&file) {
                return text
                    .lines()
                    .filter_map(|l| {
                        let (op, n) = l.split_once(' ')?;
                        Some((op.to_string(), n.parse().ok()?))
                    })
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "no {} after SIGUSR1",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmounts without waiting for the command: a daemon serving other
    /// mounts of its tree goes on.
    pub fn umount_only(&self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "umount {}", self.mnt.display());
    }

    /// Unmounts and waits for the daemon; returns its exit status.
    pub fn unmount(mut self) -> std::process::ExitStatus {
        self.teardown().expect("daemon exit status")
    }

    fn teardown(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if is_vxfs_mounted(&self.mnt) {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                // Busy (a test left a file open): detach, the daemon exits
                // once the last user goes away.
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    // A killed daemon leaves a dead mount: never leave one.
                    if is_vxfs_mounted(&self.mnt) {
                        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
                    }
                    return status;
                }
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(status) = self.teardown() {
            if !status.success() && !std::thread::panicking() {
                panic!("vxfs exited with {status}:\n{}", self.log_text());
            }
        }
    }
}

/// A mount point whose daemon was killed; see [`Mount::kill`].
#[derive(Debug)]
pub struct DeadMount(PathBuf);

impl Drop for DeadMount {
    fn drop(&mut self) {
        let dead =
            fs::symlink_metadata(&self.0).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
        if dead {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A small deterministic PRNG (SplitMix64) for seeded randomized tests.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The seed for randomized tests: `VXFS_SEED` if set, else the clock, and
/// always printed so that a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("VXFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("seed: VXFS_SEED={seed}");
    seed
}

/// Runs `f` on a thread acting as `uid`/`gid` with no supplementary groups
/// (per-thread credentials: the rest of the test process stays root), and
/// returns its result.
pub fn as_user<T: Send>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                use rustix::process::{Gid, Uid};
                rustix::thread::set_thread_groups(&[]).expect("setgroups");
                let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
                rustix::thread::set_thread_res_gid(g, g, g).expect("setresgid");
                rustix::thread::set_thread_res_uid(u, u, u).expect("setresuid");
                f()
            })
            .join()
            .expect("thread acting as another user panicked")
    })
}

/// Runs `f` on a thread chrooted into `root` (and with `/` as its working
/// directory); the rest of the test process keeps its root. The thread
/// stays in the host's pid and user namespaces, as root: a guest in a plain
/// chroot.
#[allow(unsafe_code)]
pub fn in_chroot<T: Send>(root: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: only the filesystem context (root, cwd, umask) is
                // unshared; the descriptor table stays shared and valid.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                    .expect("unshare(CLONE_FS)");
                rustix::process::chroot(root).expect("chroot");
                rustix::process::chdir("/").expect("chdir /");
                f()
            })
            .join()
            .expect("chrooted thread panicked")
    })
}

/// Maps the whole of `fd` shared and read-write, runs `f` on the mapping,
/// msyncs and unmaps.
#[allow(unsafe_code)]
pub fn with_shared_map<T>(
    fd: std::os::fd::BorrowedFd<'_>,
    f: impl FnOnce(&mut [u8]) -> T,
) -> Result<T, rustix::io::Errno> {
    use rustix::mm::{MapFlags, MsyncFlags, ProtFlags};
    let len =
        usize::try_from(rustix::fs::fstat(fd)?.st_size).map_err(|_| rustix::io::Errno::INVAL)?;
    // SAFETY: a fresh mapping chosen by the kernel (null hint), so it aliases
    // no Rust object; `fd` is open for the duration of the call.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )?
    };
    // SAFETY: `ptr` points to `len` mapped bytes that nothing else references
    // until the munmap below; the file is not truncated meanwhile.
    let map = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
    let out = f(map);
    // SAFETY: `ptr`/`len` is exactly the mapping created above.
    let synced = unsafe { rustix::mm::msync(ptr, len, MsyncFlags::SYNC) };
    // SAFETY: as above; `map` is not used after this point.
    unsafe { rustix::mm::munmap(ptr, len)? };
    synced?;
    Ok(out)
}

/// The raw value of a backing inode's xattr `name` (`None`: absent).
pub fn backing_xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = [0u8; 32];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {} {name}: {e}", path.display()),
    }
}

/// An answer key independent of vxfs: what each tag holds under `root`,
/// walked with plain `lstat` and `lgetxattr` (allocated bytes and inodes;
/// hard-linked inodes once; the root itself included; other filesystems
/// below `root` skipped).
pub fn du_by_tag(root: &Path) -> std::collections::BTreeMap<u32, (u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut by_tag = std::collections::BTreeMap::<u32, (u64, u64)>::new();
    let mut seen = std::collections::HashSet::new();
    let dev = fs::symlink_metadata(root).expect("lstat root").dev();
    let mut stack = vec![root.to_path_buf()];
    let mut first = true;
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("lstat");
        if meta.dev() != dev || (meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino())) {
            continue;
        }
        let tag = backing_xattr(&path, "trusted.vxfs.xid").map_or(0, |t| t.parse().expect("tag"));
        let entry = by_tag.entry(tag).or_default();
        entry.0 += meta.blocks() * 512;
        entry.1 += 1;
        if meta.is_dir() && (first || meta.dev() == dev) {
            for child in fs::read_dir(&path).expect("read_dir") {
                stack.push(child.expect("dirent").path());
            }
        }
        first = false;
    }
    by_tag
}

/// A cgroup2 directory for a test, `<cgroup2 root>/vxfs-test-<pid>-<n>`,
/// with sub-cgroups made on demand; every process left in them is moved
/// to the root cgroup and the directories are removed on drop.
#[derive(Debug)]
pub struct TestCgroup {
    root: PathBuf,
    dir: PathBuf,
    made: Vec<PathBuf>,
}

impl TestCgroup {
    /// Makes the test's own cgroup directory.
    pub fn new() -> TestCgroup {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = info
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let sep = fields.iter().position(|f| *f == "-")?;
                (fields.get(sep + 1) == Some(&"cgroup2")).then(|| PathBuf::from(fields[4]))
            })
            .expect("a cgroup2 mount (this machine has /sys/fs/cgroup/unified)");
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("vxfs-test-{}-{n}", std::process::id()));
        fs::create_dir(&dir).expect("create test cgroup");
        TestCgroup {
            root,
            dir,
            made: Vec::new(),
        }
    }

    /// The sub-cgroup `name` (created once).
    pub fn sub(&mut self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        if !path.exists() {
            fs::create_dir(&path).expect("create sub-cgroup");
            self.made.push(path.clone());
        }
        path
    }

    /// Moves process `pid` into cgroup `dir` (or the root with `None`).
    pub fn enter(&self, dir: Option<&Path>, pid: u32) {
        let dir = dir.unwrap_or(&self.root);
        fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().rev().chain(std::iter::once(&self.dir)) {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = fs::write(self.root.join("cgroup.procs"), pid);
                }
            }
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A shell that runs one command line at a time, sent on its stdin, and
/// reports each one's exit status: a long-lived process tests can move
/// between cgroups and namespaces while it works.
#[derive(Debug)]
pub struct Shell {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Shell {
    /// Starts `sh`.
    pub fn new() -> Shell {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("while read -r line; do eval \"$line\" >/dev/null 2>&1; echo \"status $?\"; done")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Shell { child, out }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs one command line; its exit status.
    pub fn run(&mut self, line: &str) -> i32 {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("send a command");
        stdin.flush().expect("flush");
        let mut reply = String::new();
        self.out.read_line(&mut reply).expect("read status");
        reply
            .trim()
            .strip_prefix("status ")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected reply {reply:?} to {line:?}"))
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

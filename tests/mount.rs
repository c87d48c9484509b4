//! Command line and life cycle of the vxfs daemon: how it mounts (foreground,
//! daemon mode, `mount -t fuse.vxfs`, fstab), how it ends (`umount`,
//! `fusermount3 -u`, SIGTERM), which options it accepts or refuses, and that
//! the mount is a faithful view of SOURCE in both directions.
//!
//! Every mount a test makes is undone in `Drop` ([`Mount`], [`Foreground`]
//! or [`MountpointGuard`]), also when an assertion fails.

// One `unsafe` block: `unshare_unsafe` in `with_vxfs_on_default_path`.
#![allow(unsafe_code)]

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, Scratch, require_fuse, vxfs_bin};
use rustix::io::Errno;
use rustix::process::{Pid, Signal};

/// How long any single command (the daemon's parent, mount, umount) may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to go away after its mount ended.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One line of /proc/thread-self/mountinfo.
#[derive(Debug, Clone)]
struct MountEntry {
    fstype: String,
    source: String,
    mount_options: String,
    /// The superblock's options (`sync`, `dirsync`, `lazytime` show here).
    super_options: String,
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The absolute form of `path` without touching `path` itself (stat of a
/// dead FUSE mount point fails with ENOTCONN, so canonicalize the parent).
fn abs_path(path: &Path) -> PathBuf {
    let parent = path.parent().expect("path has a parent");
    let name = path.file_name().expect("path has a name");
    fs::canonicalize(parent)
        .expect("canonicalize parent")
        .join(name)
}

/// All mountinfo lines as (mount point, entry).
fn mount_table() -> Vec<(String, MountEntry)> {
    // thread-self: the helper tests run in a thread with its own mount
    // namespace.
    let info = fs::read_to_string("/proc/thread-self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some((
                unescape(fields[4]),
                MountEntry {
                    fstype: fields.get(sep + 1)?.to_string(),
                    source: unescape(fields.get(sep + 2)?),
                    mount_options: fields[5].to_string(),
                    super_options: fields.get(sep + 3)?.to_string(),
                },
            ))
        })
        .collect()
}

/// The topmost mount at `path`, if any (of any type).
fn mount_at(path: &Path) -> Option<MountEntry> {
    let wanted = abs_path(path);
    let wanted = wanted.to_str()?;
    mount_table()
        .into_iter()
        .rev()
        .find(|(mp, _)| mp == wanted)
        .map(|(_, e)| e)
}

/// Mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).expect("canonicalize");
    let dir = dir.to_str().expect("utf-8 path").to_string();
    mount_table()
        .into_iter()
        .map(|(mp, _)| mp)
        .filter(|mp| mp == &dir || mp.starts_with(&format!("{dir}/")))
        .collect()
}

/// Processes running the vxfs binary with `mnt` among their arguments.
fn daemon_pids(mnt: &Path) -> Vec<i32> {
    let mnt = abs_path(mnt);
    let bin = fs::canonicalize(vxfs_bin()).expect("canonicalize vxfs binary");
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(exe) = fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        if exe != bin {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let serves_mnt = cmdline
            .split(|b| *b == 0)
            .any(|arg| !arg.is_empty() && abs_or_same(arg) == mnt);
        if serves_mnt && process_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn abs_or_same(arg: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let p = Path::new(OsStr::from_bytes(arg));
    if p.is_absolute() && p.parent().is_some() && p.file_name().is_some() {
        fs::canonicalize(p.parent().unwrap())
            .map(|d| d.join(p.file_name().unwrap()))
            .unwrap_or_else(|_| p.to_path_buf())
    } else {
        p.to_path_buf()
    }
}

/// Whether `pid` exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // "pid (comm) S ..." where comm may hold spaces or parentheses.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// Waits until none of `pids` is alive; false on timeout.
fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|&p| process_alive(p)) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Waits until nothing is mounted at `mnt`; false on timeout.
fn wait_unmounted(mnt: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while mount_at(mnt).is_some() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Unmounts whatever is mounted at `mnt` (repeatedly, lazily as a last
/// resort) and makes sure the vxfs daemons serving it go away.
fn force_cleanup(mnt: &Path) {
    let pids = daemon_pids(mnt);
    for _ in 0..5 {
        if mount_at(mnt).is_none() {
            break;
        }
        let ok = Command::new("umount")
            .arg(mnt)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(mnt)
                .stderr(Stdio::null())
                .status();
        }
    }
    if !wait_gone(&pids, EXIT_TIMEOUT) {
        for pid in pids {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
    }
}

/// Unmounts `mnt` on drop if anything is mounted there, for mounts made by
/// daemon-mode vxfs, `mount -t` or `mount -T`.
#[derive(Debug)]
struct MountpointGuard {
    mnt: PathBuf,
}

impl MountpointGuard {
    fn new(mnt: &Path) -> Self {
        MountpointGuard {
            mnt: mnt.to_path_buf(),
        }
    }
}

impl Drop for MountpointGuard {
    fn drop(&mut self) {
        force_cleanup(&self.mnt);
    }
}

/// The result of running a command to completion.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with its output in files (a daemon child may keep pipes open
/// forever), waiting at most [`CMD_TIMEOUT`].
fn run(mut cmd: Command, scratch: &Scratch) -> Run {
    let out_path = scratch.path().join("cmd.stdout");
    let err_path = scratch.path().join("cmd.stderr");
    let out = fs::File::create(&out_path).expect("create stdout file");
    let err = fs::File::create(&err_path).expect("create stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {CMD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// `umount MNT`. A mount is busy for a moment after its last file was
/// closed when another test thread forked meanwhile: the child holds a copy
/// of every descriptor until it execs. So "busy" is asked again for up to
/// two seconds (a mount really kept busy stays so, and fails).
fn umount(mnt: &Path) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let out = Command::new("umount").arg(mnt).output().unwrap();
        let busy = String::from_utf8_lossy(&out.stderr).contains("busy");
        if out.status.success() || !busy || Instant::now() >= deadline {
            return out.status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vxfs_cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(vxfs_bin());
    cmd.args(args);
    cmd
}

/// A `vxfs SRC MNT -f ...` child spawned by the test itself, so that its
/// pid is known; unmounted and reaped on drop.
#[derive(Debug)]
struct Foreground {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Foreground {
    /// Starts the daemon and waits until `mnt` is a mount of type `fstype`.
    fn start(src: &Path, mnt: &Path, extra: &[&str], fstype: &str) -> Foreground {
        require_fuse();
        let log = mnt.with_extension("fg.log");
        let log_file = fs::File::create(&log).expect("create log");
        let child = Command::new(vxfs_bin())
            .arg(src)
            .arg(mnt)
            .arg("-f")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file)
            .spawn()
            .expect("spawn vxfs");
        let mut fg = Foreground {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + CMD_TIMEOUT;
        loop {
            if let Some(e) = mount_at(mnt) {
                assert_eq!(
                    e.fstype,
                    fstype,
                    "unexpected mount type at {}",
                    mnt.display()
                );
                return fg;
            }
            if let Some(status) = fg.child_mut().try_wait().expect("wait") {
                fg.child = None;
                panic!("vxfs exited with {status} before mounting:\n{}", fg.log());
            }
            assert!(
                Instant::now() < deadline,
                "vxfs did not mount within {CMD_TIMEOUT:?}:\n{}",
                fg.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("daemon still owned")
    }

    fn pid(&self) -> Pid {
        Pid::from_child(self.child.as_ref().expect("daemon still owned"))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `umount MNT`, which must succeed, then the daemon's exit, which must
    /// be 0 ([`EXIT_TIMEOUT`] at most); returns its log. `what` names the
    /// case in a failure.
    fn umount_and_exit_cleanly(&mut self, what: &str) -> String {
        let st = umount(&self.mnt);
        assert!(st.success(), "{what}: umount: {st}");
        let status = self.wait_exit(EXIT_TIMEOUT);
        let log = self.log();
        assert_eq!(
            status.code(),
            Some(0),
            "{what}: exit after umount: {status}\n{log}"
        );
        log
    }

    /// Waits for the daemon to exit on its own; panics after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vxfs did not exit within {timeout:?}; mount: {:?}\n{}",
                mount_at(&self.mnt),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if mount_at(&self.mnt).is_some() {
            force_cleanup(&self.mnt);
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + EXIT_TIMEOUT;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `body` on a thread with a private mount namespace in which the
/// binary under test is `vxfs` on the *default* PATH.
///
/// mount(8) scrubs PATH from the environment of its helpers, so
/// `/sbin/mount.fuse3` (which runs `sh -c 'vxfs SOURCE MNT -o ...'`) only
/// ever finds `vxfs` in the shell's default PATH. To make it run the binary
/// under test rather than whatever is installed, this thread unshares its
/// mount namespace, makes it private (nothing propagates to the host) and
/// bind-mounts a directory holding a `vxfs` symlink over `/usr/local/sbin`,
/// the first entry of the default PATH. Everything the body mounts lives
/// only in that namespace, and the body's guards unmount it from there.
fn with_vxfs_on_default_path(scratch: &Scratch, body: impl FnOnce() + Send) {
    use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
    use rustix::thread::UnshareFlags;
    let bin = scratch.path().join("bin");
    fs::create_dir(&bin).expect("create bin dir");
    std::os::unix::fs::symlink(vxfs_bin(), bin.join("vxfs")).expect("symlink vxfs");
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            // SAFETY: only FS (cwd/umask/root) and NEWNS (mount namespace)
            // are unshared; the file descriptor table stays shared, which is
            // the only hazard `unshare_unsafe` warns about.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) }
                .expect("unshare the mount namespace");
            mount_change(
                "/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )
            .expect("make the private namespace's mounts private");
            mount_bind(&bin, "/usr/local/sbin").expect("bind the vxfs shim dir");
            let shadowed = fs::canonicalize("/usr/local/sbin/vxfs").expect("shim resolves");
            assert_eq!(shadowed, fs::canonicalize(vxfs_bin()).unwrap());
            body();
        });
        if let Err(panic) = worker.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

fn errno_of(e: &std::io::Error) -> Option<Errno> {
    Errno::from_io_error(e)
}

/// Writes a file, reads it back through the other side: a cheap check that
/// a mount serves `src`.
fn assert_serves(src: &Path, mnt: &Path) {
    let probe = format!("probe-{}", std::process::id());
    fs::write(mnt.join(&probe), b"through the mount").expect("write through the mount");
    assert_eq!(
        fs::read(src.join(&probe)).expect("read in SOURCE"),
        b"through the mount"
    );
    fs::write(src.join("host-probe"), b"from the host").expect("write in SOURCE");
    assert_eq!(
        fs::read(mnt.join("host-probe")).expect("read through the mount"),
        b"from the host"
    );
    fs::remove_file(mnt.join(&probe)).expect("unlink through the mount");
    assert!(!src.join(&probe).exists());
}

// ---------------------------------------------------------------------------
// Mounting and unmounting
// ---------------------------------------------------------------------------

#[test]
fn foreground_mount_shows_type_and_source() {
    let s = Scratch::new();
    fs::write(s.src().join("hello"), b"hi").unwrap();
    let m = Mount::scratch(&s, "");
    let entry = mount_at(&s.mnt()).expect("mounted");
    assert_eq!(entry.fstype, "fuse.vxfs");
    let src = fs::canonicalize(s.src()).unwrap();
    assert_eq!(Path::new(&entry.source), src, "mountinfo source field");

    // /proc/mounts (the mtab view) agrees.
    let mnt = abs_path(&s.mnt());
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && Path::new(&unescape(f[1])) == mnt)
        .expect("mount point listed in /proc/mounts");
    assert_eq!(Path::new(&unescape(line[0])), src, "/proc/mounts device");
    assert_eq!(line[2], "fuse.vxfs", "/proc/mounts type");

    assert_eq!(fs::read(s.mnt().join("hello")).unwrap(), b"hi");
    assert_serves(&s.src(), &s.mnt());
    let status = m.unmount();
    assert!(
        status.success(),
        "daemon exit status after umount: {status}"
    );
    assert!(mount_at(&s.mnt()).is_none(), "still mounted after umount");
}

/// A mount right after an unmount meets the old daemon on its way out
/// (saving its counters, giving up its lock): it once failed with "the
/// daemon closed the connection" or "another vxfs daemon serves this tree"
/// about 1 run in 40. It waits for the old daemon's end instead.
#[test]
fn mounting_right_after_an_unmount_always_works() {
    require_fuse();
    let s = Scratch::new();
    let _guard = MountpointGuard::new(&s.mnt());
    let options = ["xid=5,dlimits=off", "xid=5", "xid=5", ""];
    for round in 0..40 {
        let opts = options[round % options.len()];
        let mut args: Vec<OsString> = vec![s.src().into(), s.mnt().into()];
        if !opts.is_empty() {
            args.extend(["-o".into(), opts.into()]);
        }
        let r = run(vxfs_cmd(args), &s);
        assert!(
            r.status.success(),
            "round {round}, -o {opts}: {}",
            r.describe()
        );
        fs::write(s.mnt().join("f"), round.to_string()).unwrap();
        let st = umount(&s.mnt());
        assert!(st.success(), "round {round}: umount: {st}");
    }
    let pids = daemon_pids(&s.mnt());
    assert!(wait_gone(&pids, EXIT_TIMEOUT), "daemons left: {pids:?}");
}

#[test]
fn daemon_mode_returns_once_mount_is_ready() {
    require_fuse();
    let s = Scratch::new();
    fs::write(s.src().join("hello"), b"hi").unwrap();
    let _guard = MountpointGuard::new(&s.mnt());
    let r = run(vxfs_cmd([s.src(), s.mnt()]), &s);
    assert!(r.status.success(), "vxfs in daemon mode: {}", r.describe());
    // No waiting: the parent only exits once the mount is usable.
    let entry = mount_at(&s.mnt()).expect("mount visible as soon as the parent exited");
    assert_eq!(entry.fstype, "fuse.vxfs");
    assert_eq!(Path::new(&entry.source), fs::canonicalize(s.src()).unwrap());
    assert_eq!(fs::read(s.mnt().join("hello")).unwrap(), b"hi");
    assert_serves(&s.src(), &s.mnt());

    let pids = daemon_pids(&s.mnt());
    assert_eq!(
        pids.len(),
        1,
        "exactly one daemon serves the mount: {pids:?}"
    );
    let st = umount(&s.mnt());
    assert!(st.success(), "umount failed: {st}");
    assert!(
        wait_gone(&pids, EXIT_TIMEOUT),
        "daemon {pids:?} still running after umount"
    );
    assert!(mount_at(&s.mnt()).is_none());
}

#[test]
fn sigterm_to_foreground_daemon_unmounts_and_exits_zero() {
    // Every mount mode: the tagging ones used to die of the signal (the
    // counters' saver thread took it), leaving a dead mount, unsaved
    // counters and the runtime directory.
    for mode in [
        "",
        "xid=5",
        "xid=uid/1000",
        "xid=cgroup",
        "xid=5,dlimits=off",
    ] {
        let s = Scratch::new();
        let index = s.path().join("index.db");
        let opts = if mode.is_empty() {
            String::new()
        } else {
            format!("{mode},index={}", index.display())
        };
        let extra: Vec<&str> = if opts.is_empty() {
            vec![]
        } else {
            vec!["-o", &opts]
        };
        let mut fg = Foreground::start(&s.src(), &s.mnt(), &extra, "fuse.vxfs");
        assert_serves(&s.src(), &s.mnt());
        fs::write(s.mnt().join("written"), vec![1u8; 8192]).unwrap();
        let dev = fs::metadata(s.mnt()).unwrap().dev();
        let runtime = vroot::dir_for_dev(dev);
        assert!(runtime.join("view.json").exists());
        let pid = fg.pid();
        rustix::process::kill_process(pid, Signal::TERM).expect("send SIGTERM");
        let status = fg.wait_exit(EXIT_TIMEOUT);
        assert_eq!(
            status.code(),
            Some(0),
            "{mode:?}: exit after SIGTERM: {status}\n{}",
            fg.log()
        );
        assert!(
            wait_unmounted(&s.mnt(), Duration::from_secs(5)),
            "{mode:?}: still mounted after SIGTERM: {:?}",
            mount_at(&s.mnt())
        );
        // Another test's mount may have the device number by now: only
        // this daemon's description must be gone.
        let left = fs::read_to_string(runtime.join("view.json")).unwrap_or_default();
        assert!(
            !left.contains(&format!("\"pid\": {}\n", pid.as_raw_nonzero())),
            "{mode:?}: runtime files left in {}",
            runtime.display()
        );
        if mode.starts_with("xid") && !mode.contains("dlimits=off") {
            let (index, _) = vxfs::index::Index::open(&index).unwrap();
            let saved = index.clean_usage().unwrap();
            assert!(saved.is_some(), "{mode:?}: counters saved clean");
        }
    }
}

/// Mounts with `cmd` in daemon mode, then sends the one daemon SIGTERM and
/// waits for it to exit; its pid.
fn mount_then_sigterm(s: &Scratch, cmd: Command) -> i32 {
    let r = run(cmd, s);
    assert!(r.status.success(), "{}", r.describe());
    let pids = daemon_pids(&s.mnt());
    assert_eq!(pids.len(), 1, "one daemon process: {pids:?}");
    let pid = Pid::from_raw(pids[0]).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).expect("send SIGTERM");
    assert!(wait_gone(&pids, EXIT_TIMEOUT), "daemon survived SIGTERM");
    pids[0]
}

#[test]
fn sigterm_to_background_daemon_unmounts() {
    require_fuse();
    let s = Scratch::new();
    let _guard = MountpointGuard::new(&s.mnt());
    mount_then_sigterm(&s, vxfs_cmd([s.src(), s.mnt()]));
    assert!(
        wait_unmounted(&s.mnt(), Duration::from_secs(5)),
        "still mounted after SIGTERM: {:?}",
        mount_at(&s.mnt())
    );
}

#[test]
fn a_detached_daemon_logs_to_syslog() {
    // Its stderr is /dev/null once the mount command has returned: the
    // log goes to syslog (here a socket of the test's, $VXFS_SYSLOG),
    // facility daemon, tagged vxfs[PID].
    require_fuse();
    let s = Scratch::new();
    let _guard = MountpointGuard::new(&s.mnt());
    let socket = s.path().join("log");
    let syslog = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    syslog.set_read_timeout(Some(EXIT_TIMEOUT)).unwrap();
    let mut cmd = vxfs_cmd([s.src(), s.mnt()]);
    cmd.env("VXFS_SYSLOG", &socket).env("RUST_LOG", "vxfs=info");
    let pid = mount_then_sigterm(&s, cmd);
    let mut lines = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = syslog.recv(&mut buf) {
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = line.contains("signal 15: unmounting");
        lines.push(line);
        if done {
            break;
        }
    }
    let want = format!("<30>vxfs[{pid}]: INFO: signal 15: unmounting");
    assert!(
        lines.iter().any(|l| l.starts_with(&want)),
        "{want:?} not among {lines:?}"
    );
}

#[test]
fn umount_ends_daemon_with_exit_zero() {
    let s = Scratch::new();
    let mut fg = Foreground::start(&s.src(), &s.mnt(), &[], "fuse.vxfs");
    assert_serves(&s.src(), &s.mnt());
    fg.umount_and_exit_cleanly("umount");
    assert!(mount_at(&s.mnt()).is_none());
}

#[test]
fn fusermount3_unmount_ends_daemon_with_exit_zero() {
    let s = Scratch::new();
    let mut fg = Foreground::start(&s.src(), &s.mnt(), &[], "fuse.vxfs");
    assert_serves(&s.src(), &s.mnt());
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u").arg(s.mnt());
    let r = run(cmd, &s);
    assert!(r.status.success(), "fusermount3 -u: {}", r.describe());
    let status = fg.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(0),
        "exit after fusermount3 -u: {status}\n{}",
        fg.log()
    );
    assert!(mount_at(&s.mnt()).is_none());
}

#[test]
fn umount_of_a_busy_mount_fails_and_the_daemon_keeps_serving() {
    let s = Scratch::new();
    fs::write(s.src().join("f"), b"data").unwrap();
    let mut fg = Foreground::start(&s.src(), &s.mnt(), &[], "fuse.vxfs");
    let mut open = fs::File::open(s.mnt().join("f")).unwrap();
    let st = Command::new("umount")
        .arg(s.mnt())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !st.success(),
        "umount of a mount with an open file succeeded"
    );
    assert!(mount_at(&s.mnt()).is_some(), "the busy mount went away");
    assert_serves(&s.src(), &s.mnt());
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut open, &mut text).unwrap();
    assert_eq!(text, b"data");
    drop(open);
    fg.umount_and_exit_cleanly("umount after closing");
}

#[test]
fn sigterm_with_open_files_detaches_and_exits_after_the_last_close() {
    // The end of a detached connection once raced the session threads
    // (exit 1, "Software caused connection abort", about 1 run in 30).
    let rounds: usize = std::env::var("VXFS_SIGTERM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for round in 0..rounds {
        let s = Scratch::new();
        fs::write(s.src().join("f"), b"data").unwrap();
        let mut fg = Foreground::start(&s.src(), &s.mnt(), &["-o", "threads=4"], "fuse.vxfs");
        let mut open = fs::File::open(s.mnt().join("f")).unwrap();
        rustix::process::kill_process(fg.pid(), Signal::TERM).expect("send SIGTERM");
        assert!(
            wait_unmounted(&s.mnt(), Duration::from_secs(5)),
            "round {round}: SIGTERM did not detach the busy mount: {:?}",
            mount_at(&s.mnt())
        );
        // The detached connection still serves what is open.
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut open, &mut text).unwrap();
        assert_eq!(
            text, b"data",
            "round {round}: reading an open file after SIGTERM"
        );
        drop(open);
        let status = fg.wait_exit(EXIT_TIMEOUT);
        let log = fg.log();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: exit after the last close: {log}"
        );
        assert!(
            !log.contains("ERROR") && !log.contains("WARN"),
            "round {round}: a clean end logs no error: {log}"
        );
    }
}

#[test]
fn debug_flag_mounts_in_foreground_and_logs_every_request() {
    let s = Scratch::new();
    let mut fg = Foreground::start(&s.src(), &s.mnt(), &["-d"], "fuse.vxfs");
    assert_serves(&s.src(), &s.mnt());
    let log = fg.umount_and_exit_cleanly("-d");
    // assert_serves created, wrote and unlinked a probe file.
    for request in ["LOOKUP", "CREATE", "UNLINK", "GETATTR"] {
        assert!(
            log.contains(&format!(" {request} ")),
            "{request} not logged by -d:\n{log}"
        );
    }
    // Without -d, none is.
    let s = Scratch::new();
    let mut fg = Foreground::start(&s.src(), &s.mnt(), &[], "fuse.vxfs");
    assert_serves(&s.src(), &s.mnt());
    let log = fg.umount_and_exit_cleanly("without -d");
    assert!(!log.contains(" LOOKUP "), "{log}");
}

#[test]
fn mount_t_fuse_vxfs_through_the_helper() {
    require_fuse();
    let s = Scratch::new();
    fs::write(s.src().join("hello"), b"hi").unwrap();
    let mut cmd = Command::new("mount");
    cmd.arg("-t")
        .arg("fuse.vxfs")
        .arg(s.src())
        .arg(s.mnt())
        .arg("-o")
        .arg("allow_other,attr_timeout=0.5,threads=2");
    with_vxfs_on_default_path(&s, || helper_mount_works(cmd, &s));
}

/// Runs a mount(8) command that should mount `s.src()` at `s.mnt()` through
/// the fuse helper, checks the mount and unmounts it with umount.
fn helper_mount_works(cmd: Command, s: &Scratch) {
    let _guard = MountpointGuard::new(&s.mnt());
    let what = format!("{cmd:?}");
    let r = run(cmd, s);
    assert!(r.status.success(), "{what}: {}", r.describe());
    let entry = mount_at(&s.mnt()).expect("mounted by mount(8)");
    assert_eq!(entry.fstype, "fuse.vxfs");
    assert_eq!(Path::new(&entry.source), fs::canonicalize(s.src()).unwrap());
    assert_eq!(fs::read(s.mnt().join("hello")).unwrap(), b"hi");
    assert_serves(&s.src(), &s.mnt());

    let pids = daemon_pids(&s.mnt());
    assert_eq!(pids.len(), 1, "one daemon process: {pids:?}");
    let st = umount(&s.mnt());
    assert!(st.success(), "umount: {st}");
    assert!(wait_gone(&pids, EXIT_TIMEOUT), "daemon survived umount");
    assert!(mount_at(&s.mnt()).is_none());
}

#[test]
fn fstab_line_mounts_with_mount_capital_t() {
    require_fuse();
    let s = Scratch::new();
    fs::write(s.src().join("hello"), b"hi").unwrap();
    let fstab = s.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test fstab\n{} {} fuse.vxfs defaults,allow_other 0 0\n",
            s.src().display(),
            s.mnt().display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("mount");
    cmd.arg("-T").arg(&fstab).arg(s.mnt());
    with_vxfs_on_default_path(&s, || helper_mount_works(cmd, &s));
}

// ---------------------------------------------------------------------------
// Options that must be accepted
// ---------------------------------------------------------------------------

/// Mounts with `opts` in the foreground, checks the mount serves SOURCE and
/// that umount ends the daemon with exit 0; returns the mount entry.
fn mount_with(opts: &str) -> MountEntry {
    let s = Scratch::new();
    let mut fg = Foreground::start(&s.src(), &s.mnt(), &["-o", opts], "fuse.vxfs");
    let entry = mount_at(&s.mnt()).unwrap();
    assert_serves(&s.src(), &s.mnt());
    fg.umount_and_exit_cleanly(&format!("-o {opts}"));
    entry
}

#[test]
fn accepts_standard_options() {
    mount_with("rw,allow_other,default_permissions,dev,suid,exec,atime,relatime,async");
    mount_with("nodev,nosuid,noexec,noatime,sync,dirsync");
    mount_with("allow_root");
}

#[test]
fn standard_flags_reach_the_kernel_mount() {
    let has = |field: &str, want: &str| field.split(',').any(|o| o == want);
    let entry = mount_with("nodev,nosuid,noexec,noatime");
    for want in ["nodev", "nosuid", "noexec", "noatime"] {
        assert!(
            has(&entry.mount_options, want),
            "{want} missing from {entry:?}"
        );
    }
    let entry = mount_with("sync,dirsync,lazytime,nodiratime");
    for want in ["sync", "dirsync", "lazytime"] {
        assert!(
            has(&entry.super_options, want),
            "{want} missing from {entry:?}"
        );
    }
    assert!(has(&entry.mount_options, "nodiratime"), "{entry:?}");
    assert!(
        has(&entry.mount_options, "relatime"),
        "the default: {entry:?}"
    );
    // The later word wins, as in mount(8).
    let entry = mount_with("sync,async,lazytime,nolazytime,noatime,atime");
    for gone in ["sync", "lazytime"] {
        assert!(!has(&entry.super_options, gone), "{gone} in {entry:?}");
    }
    assert!(!has(&entry.mount_options, "noatime"), "{entry:?}");
    let entry = mount_with("strictatime");
    for gone in ["relatime", "noatime"] {
        assert!(!has(&entry.mount_options, gone), "{gone} in {entry:?}");
    }
    // (norelatime alone leaves the kernel's default, relatime, as mount(8).)
    let entry = mount_with("nodev,dev,nosuid,suid,noexec,exec,nodiratime,diratime");
    for gone in ["nodev", "nosuid", "noexec", "nodiratime"] {
        assert!(!has(&entry.mount_options, gone), "{gone} in {entry:?}");
    }
}

/// The daemon's threads whose name starts with `prefix` followed by a
/// digit (fuser names its /dev/fuse threads `fuser-N`, its io_uring ones
/// `fuser-uring-Q-N`).
fn threads_named(pid: Pid, prefix: &str) -> usize {
    fs::read_dir(format!("/proc/{}/task", pid.as_raw_nonzero()))
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            fs::read_to_string(comm).is_ok_and(|c| {
                c.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
        .count()
}

/// How many io_uring queues the kernel makes: one per possible CPU.
fn possible_cpus() -> usize {
    let text = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    text.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// `-o io_uring=on` serves through FUSE-over-io_uring when the kernel
/// offers it, else through /dev/fuse with one warning that says why;
/// without the option the same, the line at info; `io_uring=off` always
/// /dev/fuse. (Each mount's transport is checked against the kernel's
/// switch by the mount helper; scripts/test.sh runs this suite with the
/// switch off and on.)
#[test]
fn io_uring_is_used_when_the_kernel_offers_it_and_one_line_says_when_not() {
    let offered = common::uring_enabled();
    let lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("FUSE-over-io_uring"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for (options, warned) in [
        ("io_uring=on", !offered),
        ("", false),
        ("io_uring=off", false),
    ] {
        let s = Scratch::new();
        let m = Mount::scratch(&s, options);
        fs::write(m.path().join("f"), "data").unwrap();
        assert_eq!(fs::read(s.src().join("f")).unwrap(), b"data");
        let said = lines(&m.log_text());
        if warned {
            assert_eq!(said.len(), 1, "-o {options}: {said:?}");
            assert!(
                said[0].contains("WARN")
                    && said[0].contains("enable_uring is N")
                    && said[0].contains("serving through /dev/fuse"),
                "-o {options}: {said:?}"
            );
        } else {
            assert_eq!(said, Vec::<String>::new(), "-o {options}");
        }
    }
}

#[test]
fn threads_sets_the_number_of_request_threads() {
    for (args, want) in [
        (&["-o", "threads=1"][..], 1),
        (&["-o", "threads=3"], 3),
        (&["-o", "threads=7"], 7),
        (&["-s", "-o", "threads=5"], 1),
    ] {
        let s = Scratch::new();
        let mut fg = Foreground::start(&s.src(), &s.mnt(), args, "fuse.vxfs");
        assert_serves(&s.src(), &s.mnt());
        assert_eq!(threads_named(fg.pid(), "fuser-"), want, "{args:?}");
        // Over io_uring as many serve the rings, at least one per queue.
        let queues = possible_cpus();
        let rings = if common::uring_enabled() {
            queues * want.div_ceil(queues)
        } else {
            0
        };
        assert_eq!(threads_named(fg.pid(), "fuser-uring-"), rings, "{args:?}");
        fg.umount_and_exit_cleanly(&format!("{args:?}"));
    }
}

#[test]
fn attr_timeout_and_entry_timeout_bound_what_the_kernel_caches() {
    let s = Scratch::new();
    fs::write(s.src().join("f"), b"x").unwrap();
    fs::write(s.src().join("g"), b"first").unwrap();
    // Unwatched: with the watch, the host's change would show at once.
    let m = Mount::scratch(&s, "watch=off,attr_timeout=2,entry_timeout=2");
    let mnt = m.path();
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    let (old_mode, old_ino) = (mode(&mnt.join("f")), ino(&mnt.join("g")));
    // The host changes a mode and replaces a name behind the kernel's back.
    fs::set_permissions(s.src().join("f"), fs::Permissions::from_mode(0o604)).unwrap();
    fs::rename(s.src().join("g"), s.src().join("g.old")).unwrap();
    fs::write(s.src().join("g"), b"second").unwrap();
    let changed = Instant::now();
    assert_eq!(mode(&mnt.join("f")), old_mode, "attributes cached for 2 s");
    assert_eq!(ino(&mnt.join("g")), old_ino, "names cached for 2 s");
    assert!(
        changed.elapsed() < Duration::from_millis(1500),
        "too slow to tell"
    );
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(changed.elapsed()));
    assert_eq!(mode(&mnt.join("f")), 0o604, "attributes expire after 2 s");
    assert_eq!(
        ino(&mnt.join("g")),
        fs::metadata(s.src().join("g")).unwrap().ino(),
        "names expire after 2 s"
    );
    drop(m);
    // With 0, the kernel asks every time.
    let s = Scratch::new();
    fs::write(s.src().join("f"), b"x").unwrap();
    let m = Mount::scratch(&s, "attr_timeout=0,entry_timeout=0");
    let _ = mode(&m.path().join("f"));
    fs::set_permissions(s.src().join("f"), fs::Permissions::from_mode(0o604)).unwrap();
    assert_eq!(mode(&m.path().join("f")), 0o604);
}

#[test]
fn host_changes_show_within_a_second_with_the_default_timeouts() {
    let s = Scratch::new();
    fs::write(s.src().join("f"), b"x").unwrap();
    let m = Mount::scratch(&s, "");
    let f = m.path().join("f");
    let _ = fs::metadata(&f).unwrap();
    fs::set_permissions(s.src().join("f"), fs::Permissions::from_mode(0o604)).unwrap();
    fs::write(s.src().join("new"), b"y").unwrap();
    let changed = Instant::now();
    while fs::metadata(&f).unwrap().mode() & 0o777 != 0o604 || !m.path().join("new").exists() {
        assert!(
            changed.elapsed() < Duration::from_millis(1200),
            "host changes not visible within the 1 s default"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn accepts_fstab_only_words() {
    mount_with("defaults,auto,noauto,user,nouser,nofail,_netdev,x-systemd.automount,x-foo=bar");
}

#[test]
fn accepts_vxfs_options() {
    mount_with("threads=1,passthrough=off,attr_timeout=0,entry_timeout=0");
    mount_with("threads=256,passthrough=on,attr_timeout=1.5,entry_timeout=2.25");
}

#[test]
fn fsname_sets_the_device_field() {
    let entry = mount_with("fsname=guest42");
    assert_eq!(entry.source, "guest42");
}

#[test]
fn subtype_sets_the_type() {
    let s = Scratch::new();
    let mut fg = Foreground::start(
        &s.src(),
        &s.mnt(),
        &["-o", "subtype=guestfs"],
        "fuse.guestfs",
    );
    assert_serves(&s.src(), &s.mnt());
    fg.umount_and_exit_cleanly("subtype");
}

// ---------------------------------------------------------------------------
// Refused command lines
// ---------------------------------------------------------------------------

/// Where an argument list refers to the scratch area.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Src,
    Mnt,
    /// A path below the scratch dir that does not exist.
    Missing,
    /// A regular file below the scratch dir.
    File,
    Lit(&'static str),
}

fn build_args(s: &Scratch, args: &[Arg]) -> Vec<OsString> {
    let file = s.path().join("plain-file");
    if !file.exists() {
        fs::write(&file, b"not a directory").unwrap();
    }
    args.iter()
        .map(|a| match a {
            Arg::Src => s.src().into_os_string(),
            Arg::Mnt => s.mnt().into_os_string(),
            Arg::Missing => s.path().join("does-not-exist").into_os_string(),
            Arg::File => file.clone().into_os_string(),
            Arg::Lit(l) => OsString::from(l),
        })
        .collect()
}

/// Runs `vxfs ARGS` both in the foreground (`-f` appended) and in daemon
/// mode and asserts each refuses: non-zero exit (not a panic or signal), a
/// message on stderr that names `mention` (if given), nothing mounted.
fn expect_rejected(args: &[Arg], mention: Option<&str>) {
    require_fuse();
    let s = Scratch::new();
    let _guard = MountpointGuard::new(&s.mnt());
    let argv = build_args(&s, args);
    for foreground in [true, false] {
        let mut argv = argv.clone();
        if foreground {
            argv.push("-f".into());
        }
        let mode = if foreground {
            "foreground"
        } else {
            "daemon mode"
        };
        // A wrongly accepted foreground mount never exits: poll for the
        // mount instead of waiting for the exit.
        let out_path = s.path().join("rej.stdout");
        let err_path = s.path().join("rej.stderr");
        let mut child = Command::new(vxfs_bin())
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn vxfs");
        let deadline = Instant::now() + CMD_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if !mounts_under(s.path()).is_empty() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        let what = format!("vxfs {argv:?} ({mode})\nstdout: {stdout}\nstderr: {stderr}");
        let mounted = mounts_under(s.path());
        assert!(
            mounted.is_empty(),
            "{what}\nwas mounted anyway: {mounted:?}"
        );
        let status = status.unwrap_or_else(|| panic!("{what}\nneither exited nor mounted"));
        assert!(
            status.code().is_some_and(|c| c != 0),
            "{what}\nexpected a non-zero exit code, got {status}"
        );
        assert!(!stderr.trim().is_empty(), "{what}\nno error message");
        assert!(
            !stderr.contains("panicked"),
            "{what}\na panic is not an error message"
        );
        if let Some(word) = mention {
            assert!(
                stderr.contains(word),
                "{what}\nthe message does not name {word:?}"
            );
        }
        // The daemon-mode run of a wrongly accepted mount would have left a
        // daemon behind; the guard cleans it, but nothing must remain now.
        force_cleanup(&s.mnt());
    }
}

macro_rules! rejected {
    ($name:ident, [$($arg:expr),* $(,)?], $mention:expr) => {
        #[test]
        fn $name() {
            #[allow(unused_imports)]
            use Arg::*;
            expect_rejected(&[$($arg),*], $mention);
        }
    };
}

rejected!(
    rejects_unknown_option,
    [Src, Mnt, Lit("-o"), Lit("bogus")],
    Some("bogus")
);
rejected!(
    rejects_unknown_option_among_valid_ones,
    [Src, Mnt, Lit("-o"), Lit("ro,bogus,allow_other")],
    Some("bogus")
);
rejected!(
    rejects_unknown_key_value_option,
    [Src, Mnt, Lit("-o"), Lit("bogus=1")],
    Some("bogus")
);
rejected!(
    rejects_threads_abc,
    [Src, Mnt, Lit("-o"), Lit("threads=abc")],
    Some("threads")
);
rejected!(
    rejects_threads_zero,
    [Src, Mnt, Lit("-o"), Lit("threads=0")],
    Some("threads")
);
rejected!(
    rejects_threads_257,
    [Src, Mnt, Lit("-o"), Lit("threads=257")],
    Some("threads")
);
rejected!(
    rejects_threads_negative,
    [Src, Mnt, Lit("-o"), Lit("threads=-1")],
    Some("threads")
);
rejected!(
    rejects_threads_empty,
    [Src, Mnt, Lit("-o"), Lit("threads=")],
    Some("threads")
);
rejected!(
    rejects_passthrough_maybe,
    [Src, Mnt, Lit("-o"), Lit("passthrough=maybe")],
    Some("passthrough")
);
rejected!(
    rejects_negative_attr_timeout,
    [Src, Mnt, Lit("-o"), Lit("attr_timeout=-1")],
    Some("attr_timeout")
);
rejected!(
    rejects_negative_entry_timeout,
    [Src, Mnt, Lit("-o"), Lit("entry_timeout=-0.5")],
    Some("entry_timeout")
);
rejected!(
    rejects_non_numeric_attr_timeout,
    [Src, Mnt, Lit("-o"), Lit("attr_timeout=soon")],
    Some("attr_timeout")
);
rejected!(
    rejects_nan_entry_timeout,
    [Src, Mnt, Lit("-o"), Lit("entry_timeout=nan")],
    Some("entry_timeout")
);
rejected!(rejects_missing_source, [Missing, Mnt], None);
rejected!(rejects_source_that_is_a_file, [File, Mnt], None);
rejected!(rejects_missing_mountpoint, [Src, Missing], None);
rejected!(rejects_mountpoint_that_is_a_file, [Src, File], None);
rejected!(rejects_no_arguments, [], None);
rejected!(rejects_only_a_source, [Src], None);
rejected!(rejects_dash_o_without_value, [Src, Mnt, Lit("-o")], None);
rejected!(
    rejects_unknown_flag,
    [Src, Mnt, Lit("--no-such-flag")],
    None
);

#[test]
fn help_prints_usage_and_exits_zero() {
    let s = Scratch::new();
    for flag in ["-h", "--help"] {
        let r = run(vxfs_cmd([flag]), &s);
        assert_eq!(r.status.code(), Some(0), "vxfs {flag}: {}", r.describe());
        assert!(
            r.stdout.to_lowercase().contains("usage"),
            "vxfs {flag} printed no usage: {}",
            r.describe()
        );
        assert!(r.stdout.contains("SOURCE") && r.stdout.contains("MOUNTPOINT"));
    }
}

#[test]
fn version_prints_the_version() {
    let s = Scratch::new();
    for flag in ["-V", "--version"] {
        let r = run(vxfs_cmd([flag]), &s);
        assert_eq!(r.status.code(), Some(0), "vxfs {flag}: {}", r.describe());
        assert!(
            r.stdout.contains(env!("CARGO_PKG_VERSION")),
            "vxfs {flag} does not print {}: {}",
            env!("CARGO_PKG_VERSION"),
            r.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// Read-only mounts
// ---------------------------------------------------------------------------

#[test]
fn read_only_mount_refuses_writes_with_erofs() {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags, Timespec, Timestamps, XattrFlags};
    let s = Scratch::new();
    fs::write(s.src().join("f"), b"content").unwrap();
    fs::create_dir(s.src().join("d")).unwrap();
    fs::write(s.src().join("d/inner"), b"inner").unwrap();
    let before = snapshot_tree(&s.src());
    let _m = Mount::scratch(&s, "ro");
    let mnt = s.mnt();

    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"content", "reads work");
    assert_eq!(fs::read(mnt.join("d/inner")).unwrap(), b"inner");

    let mut failures = Vec::new();
    let mut expect_erofs = |what: &str, r: Result<(), Errno>| match r {
        Err(Errno::ROFS) => {}
        other => failures.push(format!("{what}: expected EROFS, got {other:?}")),
    };
    let io = |r: std::io::Result<()>| r.map_err(|e| errno_of(&e).unwrap_or(Errno::IO));

    expect_erofs(
        "create",
        rustix::fs::open(
            mnt.join("new"),
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    );
    expect_erofs(
        "open existing for writing",
        rustix::fs::open(mnt.join("f"), OFlags::WRONLY, Mode::empty()).map(drop),
    );
    expect_erofs(
        "open with O_TRUNC",
        rustix::fs::open(mnt.join("f"), OFlags::RDWR | OFlags::TRUNC, Mode::empty()).map(drop),
    );
    expect_erofs("mkdir", io(fs::create_dir(mnt.join("newdir"))));
    expect_erofs("unlink", io(fs::remove_file(mnt.join("f"))));
    expect_erofs("rmdir of non-empty dir", io(fs::remove_dir(mnt.join("d"))));
    expect_erofs("rename", io(fs::rename(mnt.join("f"), mnt.join("g"))));
    expect_erofs("link", io(fs::hard_link(mnt.join("f"), mnt.join("g"))));
    expect_erofs(
        "symlink",
        io(std::os::unix::fs::symlink("f", mnt.join("sl"))),
    );
    expect_erofs(
        "mknod fifo",
        rustix::fs::mknodat(
            CWD,
            mnt.join("fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        ),
    );
    expect_erofs(
        "chmod",
        io(fs::set_permissions(
            mnt.join("f"),
            fs::Permissions::from_mode(0o600),
        )),
    );
    expect_erofs(
        "chown",
        rustix::fs::chownat(
            CWD,
            mnt.join("f"),
            Some(rustix::fs::Uid::from_raw(1000)),
            None,
            AtFlags::empty(),
        ),
    );
    expect_erofs(
        "utimensat",
        rustix::fs::utimensat(
            CWD,
            mnt.join("f"),
            &Timestamps {
                last_access: Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                },
                last_modification: Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                },
            },
            AtFlags::empty(),
        ),
    );
    expect_erofs(
        "setxattr",
        rustix::fs::setxattr(mnt.join("f"), "user.x", b"1", XattrFlags::empty()),
    );
    assert!(
        failures.is_empty(),
        "read-only mount:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        snapshot_tree(&s.src()),
        before,
        "SOURCE changed under a ro mount"
    );
}

// ---------------------------------------------------------------------------
// Both directions of the view
// ---------------------------------------------------------------------------

/// Name, type, mode, size, content (or link target) of every entry below
/// `root`, sorted.
fn snapshot_tree(root: &Path) -> Vec<(PathBuf, u32, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(root.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let r = rel.join(&name);
            let p = root.join(&r);
            let md = fs::symlink_metadata(&p).unwrap();
            let data = if md.file_type().is_file() {
                fs::read(&p).unwrap()
            } else if md.file_type().is_symlink() {
                use std::os::unix::ffi::OsStrExt;
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
            } else {
                Vec::new()
            };
            if md.is_dir() {
                stack.push(r.clone());
            }
            out.push((r, md.mode(), md.len(), data));
        }
    }
    out.sort();
    out
}

#[test]
fn files_created_through_the_mount_appear_in_source() {
    let s = Scratch::new();
    let m = Mount::scratch(&s, "");
    let mnt = m.path().to_path_buf();
    let src = s.src();

    let mut f = fs::File::create(mnt.join("a.txt")).unwrap();
    f.write_all(b"alpha\n").unwrap();
    f.write_all(&vec![b'x'; 100_000]).unwrap();
    drop(f);
    fs::create_dir(mnt.join("dir")).unwrap();
    fs::write(mnt.join("dir/b.bin"), [0u8, 1, 2, 255]).unwrap();
    fs::set_permissions(mnt.join("dir/b.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("../a.txt", mnt.join("dir/link")).unwrap();
    fs::hard_link(mnt.join("a.txt"), mnt.join("dir/hard")).unwrap();
    fs::create_dir_all(mnt.join("x/y/z")).unwrap();
    fs::write(mnt.join("x/y/z/deep"), b"deep").unwrap();
    fs::rename(mnt.join("x/y/z/deep"), mnt.join("x/moved")).unwrap();

    assert_eq!(
        snapshot_tree(&src),
        snapshot_tree(&mnt),
        "SOURCE and the mount differ"
    );
    let a = fs::symlink_metadata(src.join("a.txt")).unwrap();
    let hard = fs::symlink_metadata(src.join("dir/hard")).unwrap();
    assert_eq!(a.ino(), hard.ino(), "hard link made through the mount");
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        fs::symlink_metadata(src.join("dir/b.bin")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        fs::read_link(src.join("dir/link")).unwrap(),
        Path::new("../a.txt")
    );
    assert!(!src.join("x/y/z/deep").exists());
    assert_eq!(fs::read(src.join("x/moved")).unwrap(), b"deep");

    // Removal through the mount removes in SOURCE.
    fs::remove_dir_all(mnt.join("x")).unwrap();
    assert!(!src.join("x").exists());
}

#[test]
fn host_changes_in_source_are_visible_through_the_mount() {
    let s = Scratch::new();
    let src = s.src();
    fs::write(src.join("f"), b"one").unwrap();
    fs::create_dir(src.join("d")).unwrap();
    let m = Mount::scratch(&s, "attr_timeout=0,entry_timeout=0");
    let mnt = m.path().to_path_buf();

    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"one");
    let listed = |p: &Path| {
        let mut v: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listed(&mnt), ["d", "f"]);

    // Content and size changed on the host.
    fs::write(src.join("f"), b"two two two").unwrap();
    assert_eq!(fs::metadata(mnt.join("f")).unwrap().len(), 11);
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"two two two");

    // New files and directories on the host.
    fs::write(src.join("new"), b"fresh").unwrap();
    fs::write(src.join("d/inner"), b"inner").unwrap();
    assert_eq!(listed(&mnt), ["d", "f", "new"]);
    assert_eq!(fs::read(mnt.join("new")).unwrap(), b"fresh");
    assert_eq!(fs::read(mnt.join("d/inner")).unwrap(), b"inner");

    // Mode changes.
    fs::set_permissions(src.join("new"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(mnt.join("new")).unwrap().mode() & 0o7777,
        0o600
    );

    // Renames and removals.
    fs::rename(src.join("new"), src.join("renamed")).unwrap();
    let e = fs::metadata(mnt.join("new")).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "renamed-away name still visible"
    );
    assert_eq!(fs::read(mnt.join("renamed")).unwrap(), b"fresh");
    fs::remove_file(src.join("f")).unwrap();
    let e = fs::metadata(mnt.join("f")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "removed file still visible");
    fs::remove_file(src.join("d/inner")).unwrap();
    fs::remove_dir(src.join("d")).unwrap();
    assert_eq!(listed(&mnt), ["renamed"]);

    // A name replaced by a different file on the host.
    fs::write(src.join("swap.tmp"), b"replacement").unwrap();
    fs::rename(src.join("swap.tmp"), src.join("renamed")).unwrap();
    assert_eq!(fs::read(mnt.join("renamed")).unwrap(), b"replacement");
    assert_eq!(
        fs::metadata(mnt.join("renamed")).unwrap().ino(),
        fs::metadata(src.join("renamed")).unwrap().ino()
    );
}

#[test]
fn mounting_again_over_a_dead_mount_recovers_it() {
    let s = Scratch::new();
    let index = s.path().join("index.db");
    let opts = format!("xid=uid/1000,index={}", index.display());
    let mut fg = Foreground::start(&s.src(), &s.mnt(), &["-o", &opts], "fuse.vxfs");
    fs::write(s.mnt().join("kept"), b"before the crash").unwrap();
    // Something keeps the mount busy (a guest's /proc, a shell's cwd).
    let mut busy = Command::new("sleep")
        .arg("60")
        .current_dir(s.mnt())
        .spawn()
        .unwrap();
    rustix::process::kill_process(fg.pid(), Signal::KILL).unwrap();
    let _ = fg.wait_exit(EXIT_TIMEOUT);
    let dead = fs::metadata(s.mnt())
        .map(drop)
        .map_err(|e| e.raw_os_error());
    assert_eq!(dead, Err(Some(libc::ENOTCONN)));
    let _guard = MountpointGuard::new(&s.mnt());
    let r = run(vxfs_cmd([s.src(), s.mnt(), "-o".into(), opts.into()]), &s);
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(r.status.success(), "{}", r.describe());
    assert!(
        r.stderr.contains("was a dead FUSE mount"),
        "{}",
        r.describe()
    );
    assert_eq!(fs::read(s.mnt().join("kept")).unwrap(), b"before the crash");
    assert_serves(&s.src(), &s.mnt());
}

#[test]
fn an_empty_chown_moves_ctime_as_natively() {
    // chown(f, -1, -1) arrives as a SETATTR with nothing to set; ext4 still
    // changes ctime (pjdfstest chown/00.t).
    let s = Scratch::new();
    let m = Foreground::start(&s.src(), &s.mnt(), &[], "fuse.vxfs");
    let moved = |path: &Path| {
        fs::write(path, b"x").unwrap();
        let before = fs::metadata(path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        rustix::fs::chown(path, None, None).unwrap();
        let after = fs::metadata(path).unwrap();
        (after.ctime(), after.ctime_nsec()) != (before.ctime(), before.ctime_nsec())
    };
    let native = moved(&s.native().join("f"));
    assert!(native, "ext4 moves ctime");
    assert_eq!(moved(&s.mnt().join("f")), native);
    drop(m);
}

rejected!(
    rejects_dlimits_without_contexts,
    [Src, Mnt, Lit("-o"), Lit("dlimits=on")],
    Some("dlimits=on needs contexts")
);
rejected!(
    rejects_a_spectator_uid_range,
    [Src, Mnt, Lit("-o"), Lit("xid=uid/1000:1-5")],
    Some("spectator")
);

#[test]
fn a_tar_extraction_costs_nine_requests_per_file() {
    // GNU tar as root: per file LOOKUP, CREATE, the kernel's GETXATTR
    // security.capability at its first write and at the chown, SETATTR
    // for the owner, the mode and the times, a GETATTR, RELEASE. With
    // FUSE_HANDLE_KILLPRIV_V2 the kernel asks security.capability once per
    // write no more (10.3 per file before).
    const N: u64 = 200;
    let scratch = Scratch::new();
    let tree = scratch.path().join("tree");
    fs::create_dir(&tree).unwrap();
    for i in 0..N {
        fs::write(tree.join(format!("f{i}")), vec![b'x'; 3000]).unwrap();
    }
    let tar = scratch.path().join("t.tar");
    let made = Command::new("tar")
        .arg("-C")
        .arg(scratch.path())
        .arg("-cf")
        .arg(&tar)
        .arg("tree")
        .status()
        .unwrap();
    assert!(made.success());
    let mount = Mount::scratch(&scratch, "noatime");
    let before = mount.request_counts();
    let out = Command::new("tar")
        .arg("-C")
        .arg(mount.path())
        .arg("-xf")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = mount.request_counts();
    let n = |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    let table = format!("{after:?}");
    assert_eq!(n("create"), N, "{table}");
    assert_eq!(n("release"), N, "{table}");
    assert!(n("lookup") <= N + 2, "{table}");
    assert!(n("getxattr") <= 2 * N, "{table}");
    // (and the directory's three)
    assert!(n("setattr") <= 3 * N + 3, "{table}");
    // FORGETs aside: one-way, batched, and sent when the kernel reclaims
    // inodes, which depends on the machine's memory pressure.
    assert!(
        n("total") - n("forget") <= 9 * N + 10,
        "{} requests for {N} files: {table}",
        n("total")
    );
    // The counts go with the mount.
    let file = vroot::dir_for_dev(fs::metadata(mount.path()).unwrap().dev()).join("requests");
    assert!(file.exists());
    mount.unmount();
    assert!(!file.exists());
}

/// How many descriptors the daemon of `mount` holds (one `O_PATH` per
/// inode the kernel knows, within the descriptor budget).
fn daemon_fds(mount: &Mount) -> usize {
    fs::read_dir(format!("/proc/{}/fd", mount.pid()))
        .unwrap()
        .count()
}

#[test]
fn inodes_the_kernel_forgets_are_dropped_however_they_were_made() {
    // The kernel's reference from a CREATE reply was once not counted, so
    // its FORGET dropped nothing: every file ever created through the
    // mount kept its descriptor and table entry for the daemon's life.
    const N: usize = 300;
    let scratch = Scratch::new();
    let mount = Mount::scratch(&scratch, "");
    let baseline = daemon_fds(&mount);
    let d = mount.path().join("d");
    fs::create_dir(&d).unwrap();
    // The most held at once (the kernel may reclaim some meanwhile).
    let mut most = 0;
    for i in 0..N {
        fs::File::create(d.join(format!("c{i}"))).unwrap();
        fs::create_dir(d.join(format!("m{i}"))).unwrap();
        std::os::unix::fs::symlink("t", d.join(format!("s{i}"))).unwrap();
        if i % 50 == 49 {
            most = most.max(daemon_fds(&mount));
        }
    }
    assert!(most >= baseline + N, "{most} descriptors at most");
    // Evicting the kernel's inodes sends their FORGETs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        let held = daemon_fds(&mount);
        if held <= baseline + 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon still holds {held} descriptors ({baseline} before {} inodes were made \
             and forgotten)",
            3 * N
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    mount.unmount();
}

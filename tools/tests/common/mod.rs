//! Harness for the tools' integration tests: the real binaries against real
//! vxfs mounts.
//!
//! The daemon binary is not a target of this crate, so it is built once
//! per test process with `cargo build -p vxfs` into the same target
//! directory and profile as the tools (beside `CARGO_BIN_EXE_vdlimit`); a
//! build failure fails the test loudly. Every [`Mount`] unmounts in `Drop`.
//! A machine without `/dev/fuse` fails the mount tests: they never skip.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The tools under test.
pub const VDLIMIT: &str = env!("CARGO_BIN_EXE_vdlimit");
/// `chxid`.
pub const CHXID: &str = env!("CARGO_BIN_EXE_chxid");
/// `lsxid`.
pub const LSXID: &str = env!("CARGO_BIN_EXE_lsxid");

/// The uid (and gid) of the guest in `xid=uid/1000` mounts: context 5.
pub const GUEST_UID: u32 = 5000;

const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// The vxfs daemon binary, built (once per test process) if needed.
pub fn vxfs_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(VDLIMIT).parent().expect("binary dir");
        let bin = dir.join("vxfs");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "vxfs",
            "--bin",
            "vxfs",
            "--manifest-path",
        ])
        .arg(&manifest);
        // Same profile as the tools: target/<profile>/.
        match dir.file_name().and_then(OsStr::to_str) {
            Some("debug") => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
            None => panic!("unexpected binary dir {}", dir.display()),
        }
        let out = cmd.output().expect("run cargo build -p vxfs");
        assert!(
            out.status.success(),
            "cargo build -p vxfs failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            bin.exists(),
            "cargo build -p vxfs did not produce {} (a --target build?)",
            bin.display()
        );
        bin
    })
}

/// A scratch area: `src/` (SOURCE), `mnt/` and `plain/` (a non-vxfs dir),
/// under `/var/tmp` (xattr support) unless `VXFS_TEST_DIR` says otherwise.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new scratch area, readable by the guest uid.
    pub fn new() -> Scratch {
        let base = std::env::var_os("VXFS_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let dir = tempfile::Builder::new()
            .prefix("vxfs-tools-test-")
            .tempdir_in(base)
            .expect("create scratch dir");
        for sub in ["src", "mnt", "plain"] {
            fs::create_dir(dir.path().join(sub)).expect("create scratch subdir");
        }
        set_mode(dir.path(), 0o755);
        // Every guest may create files at the top of the tree.
        set_mode(&dir.path().join("src"), 0o1777);
        Scratch { dir }
    }

    /// The scratch root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// SOURCE.
    pub fn src(&self) -> PathBuf {
        self.path().join("src")
    }

    /// The mount point.
    pub fn mnt(&self) -> PathBuf {
        self.path().join("mnt")
    }

    /// A plain directory on the scratch filesystem.
    pub fn plain(&self) -> PathBuf {
        self.path().join("plain")
    }

    /// An index path in the scratch area.
    pub fn index(&self) -> PathBuf {
        self.path().join("index.db")
    }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The filesystem type mounted exactly at `path`, per mountinfo.
fn mount_type(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.to_str()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (fields.get(4)? == &wanted).then(|| fields[sep + 1].to_string())
    })
}

/// A running `vxfs -f`; unmounted and reaped on drop.
#[derive(Debug)]
pub struct Mount {
    mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Mount {
    /// Mounts the scratch SOURCE on its mount point with `-o options`
    /// (may be empty). With an `xid=` option, also waits for the vroot
    /// sockets.
    pub fn new(scratch: &Scratch, options: &str) -> Mount {
        let dev = Path::new("/dev/fuse");
        assert!(
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dev)
                .is_ok(),
            "/dev/fuse is unavailable: the mount tests cannot run"
        );
        let (src, mnt) = (scratch.src(), scratch.mnt());
        let log = scratch.path().join("vxfs.log");
        let log_file = fs::File::create(&log).expect("create daemon log");
        let mut cmd = Command::new(vxfs_bin());
        cmd.arg(&src).arg(&mnt).arg("-f");
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn vxfs");
        let mut mount = Mount {
            mnt: mnt.clone(),
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        let wants_sockets = options.split(',').any(|o| o.starts_with("xid="));
        loop {
            if mount_type(&mnt).as_deref() == Some("fuse.vxfs") {
                let dev = rustix::fs::stat(&mnt).expect("stat mount").st_dev;
                if !wants_sockets || vroot::dir_for_dev(dev).join("admin.sock").exists() {
                    return mount;
                }
            }
            if let Some(status) = mount
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                mount.child = None;
                panic!(
                    "vxfs exited with {status} before mounting:\n{}",
                    mount.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "vxfs did not mount within {MOUNT_TIMEOUT:?}:\n{}",
                mount.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// What the daemon logged.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts and waits for the daemon (so that the index is saved).
    pub fn unmount(mut self) {
        let status = self.teardown().expect("daemon status");
        assert!(
            status.success(),
            "vxfs exited with {status}:\n{}",
            self.log_text()
        );
    }

    fn teardown(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if mount_type(&self.mnt).as_deref() == Some("fuse.vxfs") {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
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
                    return child.wait().ok();
                }
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// What a tool run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts exit `code` with `needle` in stderr.
    pub fn fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "expected exit {code}: {self:#?}");
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in stderr: {self:#?}"
        );
    }
}

fn finish(cmd: &mut Command) -> Run {
    let out = cmd.stdin(Stdio::null()).output().expect("run tool");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `bin` with `args` as root.
pub fn run<S: AsRef<OsStr>>(bin: &str, args: &[S]) -> Run {
    finish(Command::new(bin).args(args))
}

/// Runs `bin` with `args` as `uid` (gid = uid, no supplementary groups).
pub fn run_as<S: AsRef<OsStr>>(uid: u32, bin: &str, args: &[S]) -> Run {
    finish(
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(bin)
            .args(args),
    )
}

/// Runs a shell command as `uid`; returns whether it succeeded.
pub fn sh_as(uid: u32, script: &str) -> bool {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .args(["--", "sh", "-c", script])
        .stderr(Stdio::null())
        .status()
        .expect("run setpriv")
        .success()
}

/// A path as a `&str` (test paths are ASCII).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("ASCII test path")
}

//! Harness for the tools' integration tests: the real binaries against real
//! vxfs mounts, through the workspace's shared mount harness
//! (`tests/common`: [`Scratch`], [`Mount`], which unmounts in `Drop` and
//! fails loudly without `/dev/fuse`). The daemon is not a target of this
//! crate; the harness builds it once per test process into the same target
//! directory and profile.

#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod harness;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Acting as a guest user on one thread (the hashify suite).
#[allow(unused_imports)]
pub use harness::as_user;
/// A backing inode's raw xattr (the attrs, tags and hashify suites).
#[allow(unused_imports)]
pub use harness::backing_xattr;
/// Fails loudly without a usable /dev/fuse (the package suite).
#[allow(unused_imports)]
pub use harness::require_fuse;
/// The vxproc daemon (the guests suite).
#[allow(unused_imports)]
pub use harness::vxproc_bin;
#[allow(unused_imports)]
pub use harness::{Mount, Scratch};
/// The independent usage walk, test cgroups and a long-lived shell (the
/// hashify suite).
#[allow(unused_imports)]
pub use harness::{Shell, TestCgroup, du_by_tag};

/// The tools under test.
pub const VDLIMIT: &str = env!("CARGO_BIN_EXE_vdlimit");
/// `chxid`.
pub const CHXID: &str = env!("CARGO_BIN_EXE_chxid");
/// `lsxid`.
pub const LSXID: &str = env!("CARGO_BIN_EXE_lsxid");
/// `setattr`.
pub const SETATTR: &str = env!("CARGO_BIN_EXE_setattr");
/// `showattr`.
pub const SHOWATTR: &str = env!("CARGO_BIN_EXE_showattr");
/// `hashify`.
pub const HASHIFY: &str = env!("CARGO_BIN_EXE_hashify");

/// The uid (and gid) of the guest in `xid=uid/1000` mounts: context 5.
pub const GUEST_UID: u32 = 5000;

/// A scratch area whose SOURCE every guest may create files at the top of
/// (mode 1777).
pub fn scratch() -> Scratch {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    std::fs::set_permissions(scratch.src(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod SOURCE");
    scratch
}

/// An index path in the scratch area (outside SOURCE).
pub fn index(scratch: &Scratch) -> PathBuf {
    scratch.path().join("index.db")
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

/// Runs the fstool-style tool `bin` with `args` and then `files`, all off
/// vxfs: asserts exit 1 and exactly one `TOOL: FILE: not on a vxfs mount`
/// per operand (a directory is refused once, not per entry), with the
/// `--backing` hint.
pub fn refused_off_vxfs(bin: &str, args: &[&str], files: &[&str]) -> Run {
    let tool = Path::new(bin).file_name().and_then(OsStr::to_str).unwrap();
    let r = run(bin, &[args, files].concat());
    assert_eq!(r.code, 1, "{r:?}");
    for f in files {
        let refusal = format!("{tool}: {f}: not on a vxfs mount");
        assert!(r.stderr.contains(&refusal), "{refusal:?}: {r:?}");
    }
    assert_eq!(
        r.stderr.matches("not on a vxfs mount").count(),
        files.len(),
        "{r:?}"
    );
    assert!(r.stderr.contains("--backing"), "{r:?}");
    r
}

/// netprobe, one socket call per run (the chbind suites); host programs
/// copied into guest roots.
#[allow(unused_imports)]
pub use harness::{install_host_program, netprobe_bin};

/// A network namespace the test made (`ip netns add`), with `lo` up:
/// the "host's stack" of a chbind test, so that the machine's own is never
/// touched. Deleted in `Drop`.
#[derive(Debug)]
pub struct NetNs {
    /// Its name under /run/netns.
    pub name: String,
}

impl NetNs {
    /// `vxfs-TAG-PID`, with the addresses `cidrs` on `lo`.
    pub fn new(tag: &str, cidrs: &[&str]) -> NetNs {
        let name = format!("vxfs-{tag}-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip (install iproute2)");
        assert!(st.success(), "ip netns add {name}");
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        for cidr in cidrs {
            ns.ip(&["addr", "add", cidr, "dev", "lo"]);
        }
        ns
    }

    /// `ip -n NAME ARGS` must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {out:?}",
            self.name
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `PROGRAM` run in the namespace (by nsenter, which unlike `ip netns
    /// exec` keeps the host's /sys and so its cgroup mounts).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }

    /// Whether `lo` has the IPv4 address `addr`.
    pub fn has_address(&self, addr: &str) -> bool {
        self.ip(&["-o", "-4", "addr", "show", "dev", "lo"])
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

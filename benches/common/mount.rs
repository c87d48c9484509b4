//! What the benches that mount share: a FUSE daemon and its mount, which
//! a drop (an error, a panic) always takes down, and the mount table.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rustix::mount::UnmountFlags;

/// How long a daemon may take to mount, and to exit after its unmount.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(15);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(10);

/// A foreground FUSE daemon and the mount it serves. Dropping it without
/// [`Mount::unmount`] (an error, a panic) still unmounts, and kills the daemon
/// if that fails, so no run leaves a mount behind.
#[derive(Debug)]
pub struct Mount {
    mountpoint: PathBuf,
    /// `None`: a mount that joined a daemon another [`Mount`] runs.
    daemon: Option<Child>,
    log: PathBuf,
    /// The daemon has exited and been waited for: nothing is left to clean up.
    reaped: bool,
}

impl Mount {
    /// Spawns the daemon (output to `log`) and waits until its mount shows up.
    pub fn start(mut command: Command, mountpoint: &Path, log: &Path) -> Result<Self> {
        let output = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let daemon = command
            .spawn()
            .with_context(|| format!("spawning {command:?}"))?;
        let mut mount = Mount {
            mountpoint: mountpoint.to_owned(),
            daemon: Some(daemon),
            log: log.to_owned(),
            reaped: false,
        };
        mount
            .wait_until_mounted()
            .with_context(|| format!("mounting with {command:?}"))?;
        Ok(mount)
    }

    /// Runs `command`, a mount that joins a running daemon (a vxfs view)
    /// and exits (output to `log`), and waits until its mount shows up.
    pub fn join(mut command: Command, mountpoint: &Path, log: &Path) -> Result<Self> {
        let output = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let status = command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .status()
            .with_context(|| format!("running {command:?}"))?;
        let mut mount = Mount {
            mountpoint: mountpoint.to_owned(),
            daemon: None,
            log: log.to_owned(),
            reaped: false,
        };
        ensure!(
            status.success(),
            "{command:?} exited with {status}{}",
            mount.log_excerpt()
        );
        mount.wait_until_mounted()?;
        Ok(mount)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn wait_until_mounted(&mut self) -> Result<()> {
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_mount_point(&self.mountpoint)? {
            if let Some(status) = self
                .daemon
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                self.reaped = true;
                bail!(
                    "the daemon exited ({status}) without mounting{}",
                    self.log_excerpt()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "no mount after {MOUNT_TIMEOUT:?}{}",
                self.log_excerpt()
            );
            thread::sleep(POLL);
        }
        Ok(())
    }

    pub fn unmount(mut self) -> Result<()> {
        self.try_unmount()
    }

    /// `umount MOUNTPOINT`, then the daemon (if this mount runs it) must
    /// exit with status 0.
    fn try_unmount(&mut self) -> Result<()> {
        rustix::mount::unmount(&self.mountpoint, UnmountFlags::empty())
            .with_context(|| format!("unmounting {}", self.mountpoint.display()))?;
        let Some(daemon) = self.daemon.as_mut() else {
            self.reaped = true;
            return Ok(());
        };
        let status = wait_with_timeout(daemon, EXIT_TIMEOUT)?;
        let status = status
            .with_context(|| format!("the daemon still runs {EXIT_TIMEOUT:?} after unmount"))?;
        self.reaped = true;
        ensure!(
            status.success(),
            "the daemon exited with {status} after unmount{}",
            self.log_excerpt()
        );
        Ok(())
    }

    /// Last resort: kill the daemon, then detach what is left of the mount.
    fn kill(&mut self) {
        if let Some(daemon) = self.daemon.as_mut() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        let _ = rustix::mount::unmount(&self.mountpoint, UnmountFlags::DETACH);
        self.reaped = true;
    }

    fn log_excerpt(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        excerpt("daemon output", &log)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if let Err(error) = self.try_unmount() {
            eprintln!("bench: {error:#}; killing the daemon");
            self.kill();
        }
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// /proc/self/mountinfo

#[derive(Debug)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

pub fn mount_table() -> Result<Vec<MountInfo>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER_OPTIONS`
fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let (mount, superblock) = line.split_once(" - ")?;
    let mut superblock = superblock.split(' ');
    Some(MountInfo {
        mount_point: unescape_mountinfo(mount.split(' ').nth(4)?),
        fs_type: superblock.next()?.to_owned(),
        source: unescape_mountinfo(superblock.next()?)
            .to_string_lossy()
            .into_owned(),
    })
}

/// Undoes the `\NNN` octal escapes (space, tab, newline, backslash) of mountinfo.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let mut parts = field.split('\\');
    let mut bytes = parts.next().unwrap_or_default().as_bytes().to_vec();
    for part in parts {
        match part
            .get(..3)
            .and_then(|code| u8::from_str_radix(code, 8).ok())
        {
            Some(byte) => bytes.extend(std::iter::once(byte).chain(part.bytes().skip(3))),
            None => bytes.extend(std::iter::once(b'\\').chain(part.bytes())),
        }
    }
    PathBuf::from(OsString::from_vec(bytes))
}

pub fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(mount_table()?.iter().any(|entry| entry.mount_point == path))
}

/// The mount holding `path`: the one with the longest mount point above it.
pub fn mount_of(path: &Path) -> Result<MountInfo> {
    let table = mount_table()?
        .into_iter()
        .filter(|entry| path.starts_with(&entry.mount_point));
    let mount = table.max_by_key(|entry| entry.mount_point.components().count());
    mount.with_context(|| format!("no mount holds {}", path.display()))
}

/// `text` for an error message: its first lines (usage errors, the first failure)
/// and its last ones (how it ended), or nothing when empty.
pub fn excerpt(label: &str, text: &str) -> String {
    const HEAD: usize = 8;
    const TAIL: usize = 12;
    let lines: Vec<&str> = text.lines().collect();
    let shown = if lines.len() <= HEAD + TAIL {
        lines.join("\n  ")
    } else {
        let (head, tail) = (&lines[..HEAD], &lines[lines.len() - TAIL..]);
        let skipped = lines.len() - HEAD - TAIL;
        format!(
            "{}\n  [{skipped} more lines]\n  {}",
            head.join("\n  "),
            tail.join("\n  ")
        )
    };
    if shown.trim().is_empty() {
        String::new()
    } else {
        format!("; {label}:\n  {shown}")
    }
}

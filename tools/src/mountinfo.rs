//! Which mount a path is on, from `/proc/self/mountinfo`, and whether that
//! mount is a vxfs one.
//!
//! A path's mount is found by device number: the `MAJOR:MINOR` field of a
//! mountinfo line equals `st_dev` of every path on that mount (bind mounts
//! of the same filesystem share it). A mount is vxfs when its type is
//! `fuse.vxfs`, or, for a daemon started with another `-o subtype=`, any
//! `fuse.*`/`fuse` type whose runtime directory `/run/vxfs/MAJOR:MINOR`
//! exists (only vxfs daemons create those).

use std::fmt;
use std::path::{Path, PathBuf};

/// Type of a vxfs mount with the default subtype.
pub const VXFS_FSTYPE: &str = "fuse.vxfs";

/// One line of mountinfo, the fields the tools use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type (`fuse.vxfs`, `ext4`, ...).
    pub fstype: String,
    /// Mount source (vxfs: SOURCE, or its `fsname=`).
    pub source: String,
}

impl MountEntry {
    /// Whether the mount is served by vxfs; `has_socket_dir` says whether
    /// its runtime directory exists.
    pub fn is_vxfs(&self, has_socket_dir: impl FnOnce() -> bool) -> bool {
        self.fstype == VXFS_FSTYPE
            || ((self.fstype == "fuse" || self.fstype.starts_with("fuse.")) && has_socket_dir())
    }

    /// The mount's device number.
    pub fn dev(&self) -> u64 {
        rustix::fs::makedev(self.major, self.minor)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let digit = |k: usize| u32::from(b[i + k] - b'0');
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Parses one mountinfo line (`None` if malformed).
pub fn parse_line(line: &str) -> Option<MountEntry> {
    use std::os::unix::ffi::OsStringExt;
    let fields: Vec<&str> = line.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point: PathBuf::from(std::ffi::OsString::from_vec(unescape(fields.get(4)?))),
        fstype: String::from_utf8_lossy(&unescape(fields.get(sep + 1)?)).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields.get(sep + 2)?)).into_owned(),
    })
}

/// The mount table of this process.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    entries: Vec<MountEntry>,
}

/// A path that is not on a vxfs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotVxfs {
    /// The mount it is on, if known.
    pub mount: Option<MountEntry>,
}

impl fmt::Display for NotVxfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mount {
            Some(m) => write!(
                f,
                "not on a vxfs mount (it is on {} mounted at {})",
                m.fstype,
                m.mount_point.display()
            ),
            None => write!(f, "not on a vxfs mount (no mount found for its device)"),
        }
    }
}

impl std::error::Error for NotVxfs {}

impl MountTable {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> std::io::Result<MountTable> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(MountTable::parse(&text))
    }

    /// Parses a mountinfo text, skipping malformed lines.
    pub fn parse(text: &str) -> MountTable {
        MountTable {
            entries: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The mount with device number `dev` (the topmost, if several).
    pub fn by_dev(&self, dev: u64) -> Option<&MountEntry> {
        self.with_dev(dev).last()
    }

    fn with_dev(&self, dev: u64) -> impl Iterator<Item = &MountEntry> {
        let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
        self.entries
            .iter()
            .filter(move |e| e.major == major && e.minor == minor)
    }

    /// The mount of `path` (whose device number is `dev`): of the mounts
    /// with that device, the one whose mount point is the longest prefix of
    /// the canonical `path` (a bind mount shares the device), else the
    /// topmost.
    pub fn mount_of(&self, path: &Path, dev: u64) -> Option<&MountEntry> {
        let canonical = std::fs::canonicalize(path).ok();
        let best = canonical.as_ref().and_then(|c| {
            self.with_dev(dev)
                .filter(|e| c.starts_with(&e.mount_point))
                .max_by_key(|e| e.mount_point.as_os_str().len())
        });
        best.or_else(|| self.by_dev(dev))
    }

    /// The vxfs mount with device number `dev`, or why not.
    pub fn vxfs_by_dev(&self, dev: u64) -> Result<&MountEntry, NotVxfs> {
        Self::vxfs_check(self.by_dev(dev), dev)
    }

    /// The vxfs mount holding `path` (device `dev`), or why not.
    pub fn vxfs_mount_of(&self, path: &Path, dev: u64) -> Result<&MountEntry, NotVxfs> {
        Self::vxfs_check(self.mount_of(path, dev), dev)
    }

    fn vxfs_check(entry: Option<&MountEntry>, dev: u64) -> Result<&MountEntry, NotVxfs> {
        match entry {
            Some(m) if m.is_vxfs(|| vroot::dir_for_dev(dev).is_dir()) => Ok(m),
            other => Err(NotVxfs {
                mount: other.cloned(),
            }),
        }
    }

    /// The vxfs mounts whose source is `source` (SOURCE, unless the daemon
    /// was given another `fsname=`).
    pub fn vxfs_mounts_of(&self, source: &Path) -> Vec<&MountEntry> {
        self.entries
            .iter()
            .filter(|e| Path::new(&e.source) == source)
            .filter(|e| e.is_vxfs(|| vroot::dir_for_dev(e.dev()).is_dir()))
            .collect()
    }
}

/// Whether the vxfs mount with device number `dev` tags inodes
/// (`-o xid=...`), as its daemon describes it in
/// `/run/vxfs/MAJOR:MINOR/view.json`.
pub fn vxfs_tags(dev: u64) -> bool {
    vxfs::vroot_server::ViewInfo::of_dev(dev).is_some_and(|v| v.tagged)
}

/// Per-file check that files are on vxfs mounts (chxid, lsxid), reading
/// the mount table once and remembering each device's verdict.
#[derive(Debug)]
pub struct DevCheck {
    /// `--backing`: every device passes.
    backing: bool,
    /// Appended to the refusal, e.g. how to work on a SOURCE tree.
    hint: &'static str,
    table: Option<MountTable>,
    /// Per device: `None` if vxfs, else why not (the first refusal's text).
    verdicts: std::collections::HashMap<u64, Option<String>>,
}

impl DevCheck {
    /// A checker; with `backing` everything passes.
    pub fn new(backing: bool, hint: &'static str) -> DevCheck {
        DevCheck {
            backing,
            hint,
            table: None,
            verdicts: std::collections::HashMap::new(),
        }
    }

    /// Checks a command-line argument before it is walked, so that a
    /// directory off vxfs gives one error instead of one per entry. A path
    /// that cannot be stat'ed passes: the walk reports that itself.
    pub fn check_arg(&mut self, path: &std::path::Path) -> Result<(), String> {
        match rustix::fs::lstat(path) {
            Ok(st) => self.check_at(Some(path), st.st_dev),
            Err(_) => Ok(()),
        }
    }

    /// `Ok` if device `dev` is a vxfs mount (or `--backing`), else why not.
    pub fn check(&mut self, dev: u64) -> Result<(), String> {
        self.check_at(None, dev)
    }

    /// [`DevCheck::check`], naming in a refusal the mount that holds
    /// `path` (a filesystem bind-mounted in several places has one device
    /// number for all of them).
    fn check_at(&mut self, path: Option<&std::path::Path>, dev: u64) -> Result<(), String> {
        if self.backing {
            return Ok(());
        }
        let table = match &mut self.table {
            Some(t) => t,
            None => match MountTable::read() {
                Ok(t) => self.table.insert(t),
                Err(e) => return Err(format!("reading /proc/self/mountinfo: {e}")),
            },
        };
        let hint = self.hint;
        let found = match path {
            Some(p) => table.vxfs_mount_of(p, dev),
            None => table.vxfs_by_dev(dev),
        };
        let verdict = self
            .verdicts
            .entry(dev)
            .or_insert_with(|| found.as_ref().err().map(|not| format!("{not}{hint}")));
        match (&found, verdict) {
            (_, None) => Ok(()),
            // The mount that holds this path, not the first of its device.
            (Err(not), Some(_)) => Err(format!("{not}{hint}")),
            (Ok(_), Some(why)) => Err(why.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:45 / /var/tmp/t/mnt rw,relatime shared:7 - fuse.vxfs /var/tmp/t/src rw,user_id=0
37 22 0:46 / /srv/with\\040space rw - fuse.guestfs /srv/a\\134b rw
38 22 0:47 / /srv/plain rw - fuse /dev/fuse rw
39 22 0:48 / /x rw master:1 shared:2 - tmpfs tmpfs rw
40 22 0:45 /sub /bind rw - fuse.vxfs /var/tmp/t/src rw
garbage line
";

    #[test]
    fn parses_lines() {
        let t = MountTable::parse(SAMPLE);
        assert_eq!(t.entries.len(), 6, "the malformed line is skipped");
        assert_eq!(
            t.entries[1],
            MountEntry {
                major: 0,
                minor: 45,
                mount_point: "/var/tmp/t/mnt".into(),
                fstype: "fuse.vxfs".into(),
                source: "/var/tmp/t/src".into(),
            }
        );
        assert_eq!(t.entries[2].mount_point, Path::new("/srv/with space"));
        assert_eq!(t.entries[2].source, "/srv/a\\b");
        assert_eq!(t.entries[4].fstype, "tmpfs", "optional fields skipped");
        assert_eq!(unescape("a\\04"), b"a\\04", "truncated escape kept");
    }

    #[test]
    fn which_mounts_are_vxfs() {
        let t = MountTable::parse(SAMPLE);
        // (index, socket dir exists, is vxfs)
        let table = [
            (0, true, false),
            (1, false, true),
            (2, false, false),
            (2, true, true),
            (3, true, true),
            (4, true, false),
        ];
        for (i, socket, want) in table {
            assert_eq!(
                t.entries[i].is_vxfs(|| socket),
                want,
                "line {i} socket {socket}"
            );
        }
    }

    #[test]
    fn finds_by_device() {
        let t = MountTable::parse(SAMPLE);
        let dev = rustix::fs::makedev(0, 45);
        assert_eq!(
            t.by_dev(dev).unwrap().mount_point,
            Path::new("/bind"),
            "topmost"
        );
        assert!(t.vxfs_by_dev(dev).is_ok());
        let ext4 = t.vxfs_by_dev(rustix::fs::makedev(8, 1)).unwrap_err();
        assert_eq!(
            ext4.to_string(),
            "not on a vxfs mount (it is on ext4 mounted at /)"
        );
        assert!(t.by_dev(rustix::fs::makedev(9, 9)).is_none());
        assert_eq!(
            t.vxfs_mounts_of(Path::new("/var/tmp/t/src")).len(),
            2,
            "mount and bind mount"
        );
    }
}

//! Which cgroup hierarchies a host has, with which controllers, and where
//! the calling process sits in each.

use std::path::{Path, PathBuf};

/// cgroup v1 or v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// A v1 hierarchy (one or more controllers, or a named one).
    V1,
    /// The unified hierarchy.
    V2,
}

/// How a host's hierarchies are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// cgroup2 only.
    Unified,
    /// cgroup2 for tracking and v1 hierarchies for (some) controllers.
    Hybrid,
    /// v1 only.
    Legacy,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: Version,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// Its controllers (v1: from the mount options, `name=X` included; v2:
    /// `cgroup.controllers` of our cgroup).
    pub controllers: Vec<String>,
    /// The calling process's cgroup in it, relative to the mount.
    pub own: PathBuf,
}

impl Hierarchy {
    /// Whether it has `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The calling process's cgroup directory.
    pub fn own_dir(&self) -> PathBuf {
        self.mount.join(&self.own)
    }
}

/// The host's hierarchies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    /// Every mounted hierarchy, once.
    pub hierarchies: Vec<Hierarchy>,
}

/// v1 controllers a mount option may name.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "freezer",
    "blkio",
    "devices",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
];

impl Layout {
    /// This process's layout, from `/proc/self/mountinfo` and
    /// `/proc/self/cgroup`.
    pub fn detect() -> std::io::Result<Layout> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        Ok(Self::parse(&mountinfo, &own, Path::new("/")))
    }

    /// The layout described by a mountinfo text and a `/proc/PID/cgroup`
    /// text, with mount points taken below `root` (`/` on a real host, a
    /// fake tree's directory in tests). v2's controllers are read from the
    /// tree.
    pub fn parse(mountinfo: &str, own: &str, root: &Path) -> Layout {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(mount_root), Some(point), Some(fstype), Some(options)) = (
                fields.get(3),
                fields.get(4),
                fields.get(sep + 1),
                fields.get(sep + 3),
            ) else {
                continue;
            };
            let point = unescape(point);
            let mount = root.join(point.trim_start_matches('/'));
            let (version, controllers) = match *fstype {
                "cgroup2" => (Version::V2, None),
                "cgroup" => {
                    let c: Vec<String> = options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    (Version::V1, Some(c))
                }
                _ => continue,
            };
            // The same hierarchy mounted twice (bind mounts): once.
            let same = hierarchies.iter().any(|h| {
                h.version == version
                    && match &controllers {
                        Some(c) => &h.controllers == c,
                        None => true,
                    }
            });
            if same {
                continue;
            }
            let own_path = own_cgroup(own, version, controllers.as_deref());
            let Some(own_path) = own_path else {
                continue;
            };
            // A mount of a subtree shows paths below its root only.
            let rel = Path::new(&own_path)
                .strip_prefix(unescape(mount_root))
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| PathBuf::from(own_path.trim_start_matches('/')));
            let rel = rel.strip_prefix("/").map(Path::to_path_buf).unwrap_or(rel);
            let controllers = match controllers {
                Some(c) => c,
                None => std::fs::read_to_string(mount.join(&rel).join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            };
            hierarchies.push(Hierarchy {
                version,
                mount,
                controllers,
                own: rel,
            });
        }
        Layout { hierarchies }
    }

    /// How the hierarchies are arranged.
    pub fn mode(&self) -> Mode {
        let v2 = self.hierarchies.iter().any(|h| h.version == Version::V2);
        let v1 = self.hierarchies.iter().any(|h| h.version == Version::V1);
        match (v2, v1) {
            (true, false) => Mode::Unified,
            (true, true) => Mode::Hybrid,
            _ => Mode::Legacy,
        }
    }

    /// The hierarchy that has `controller`, v2 preferred.
    pub fn owner(&self, controller: &str) -> Option<&Hierarchy> {
        let mut with: Vec<&Hierarchy> = self
            .hierarchies
            .iter()
            .filter(|h| h.has(controller))
            .collect();
        with.sort_by_key(|h| h.version != Version::V2);
        with.first().copied()
    }
}

/// The path of `/proc/PID/cgroup`'s line for a hierarchy.
fn own_cgroup(text: &str, version: Version, controllers: Option<&[String]>) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match (version, controllers) {
            (Version::V2, _) => list.is_empty(),
            (Version::V1, Some(c)) => {
                let mut mine: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
                let mut theirs: Vec<&str> = c.iter().map(String::as_str).collect();
                mine.sort_unstable();
                theirs.sort_unstable();
                !list.is_empty() && mine == theirs
            }
            (Version::V1, None) => false,
        };
        matches.then(|| path.to_string())
    })
}

/// Undoes mountinfo's octal escapes.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! A guest's configuration in util-vserver's layout, `/etc/vservers/NAME/`
//! (docs/VSERVER.md §10.6), for the parts the context core acts on:
//! `context`, `vdir`, `uts/`, `flags`, `bcapabilities`, `ccapabilities`,
//! `rlimits/`, `sched/` (and the old `schedule`), `cgroup/`, `cpuset/`,
//! `spaces/`, `interfaces/`, `fstab`, `apps/init/` and `scripts/`.
//!
//! Every file is read once at load; a malformed one is an error naming the
//! file (and line), and nothing has been set up yet. Files of util-vserver
//! that the context core does not act on are left alone, not refused, so a
//! configuration written for util-vserver loads; the knobs that mainline
//! cannot express are reported as warnings by the code that would apply
//! them ([`crate::limits`], [`crate::sched`]).

pub mod interfaces;
mod process;
mod rlimits;
mod sched;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use interfaces::Interface;
pub use process::personality;
pub use rlimits::{RESOURCES, Rlimit, RlimitValue, Rlimits, resource_name};
pub use sched::SchedConfig;

use crate::names::{self, CCAPS, CFLAGS};
use crate::xid::Xid;

/// Where guests are configured unless `VXFS_CONFDIR` says otherwise.
pub const DEFAULT_CONFDIR: &str = "/etc/vservers";
/// Where guests' roots are unless `vdir` says otherwise.
pub const DEFAULT_VSERVERS: &str = "/vservers";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No such guest.
    #[error("unknown vserver '{name}' (no directory {dir})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// Where its configuration would be.
        dir: PathBuf,
    },
    /// A name that cannot be a guest's.
    #[error("'{0}' is not a vserver name (letters, digits, '.', '_', '-'; not starting with '.')")]
    BadName(String),
    /// A file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file's content is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// How the guest's init is run (`apps/init/style`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InitStyle {
    /// The guest's own init is pid 1 (`plain`; also util-vserver's `minit`,
    /// `openrc`, `arch` and `gentoo`, which only differ in their commands).
    Plain,
    /// A minimal init of vxfs is pid 1 and runs the guest's rc scripts at a
    /// runlevel (`sysv`).
    Sysv,
}

/// `apps/init/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InitConfig {
    /// The style.
    pub style: InitStyle,
    /// The command that starts the guest (`cmd.start`), as words.
    pub start: Vec<String>,
    /// The command run inside the guest to stop it (`cmd.stop`), if any.
    pub stop: Option<Vec<String>>,
    /// Signals and waits after the stop command (`killseq`, default
    /// `15 5 9`: SIGTERM, wait 5 s, SIGKILL).
    pub killseq: Vec<KillStep>,
    /// The guest's environment (`environment`, `NAME=VALUE` lines); by
    /// default `PATH` and `TERM`.
    pub environment: Vec<(String, String)>,
    /// The user id init runs as (`vcontext --create --uid`; its group id
    /// too, without supplementary groups); `None`: root.
    #[serde(default)]
    pub uid: Option<u32>,
}

/// One step of a kill sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KillStep {
    /// Send this signal to every task.
    Signal(i32),
    /// Wait this many seconds for the tasks to end.
    Wait(u32),
}

/// Namespaces beyond the ones every guest gets (`spaces/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spaces {
    /// A network namespace of its own (`spaces/net`, or `netns/`, or any
    /// `interfaces/*/` entry that is not disabled; never with `nonetns`).
    pub net: bool,
    /// A user namespace mapping guest ids 0..65536 to host ids from this
    /// base (`spaces/user`, its content or xid·65536).
    pub user_base: Option<u32>,
}

/// A guest's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestConfig {
    /// Its name (the configuration directory's).
    pub name: String,
    /// The configuration directory.
    pub dir: PathBuf,
    /// Its static context, if configured (`context`).
    pub xid: Option<Xid>,
    /// Its root directory (`vdir`, default `/vservers/NAME`).
    pub root: PathBuf,
    /// `uts/nodename` (default: the name).
    pub nodename: String,
    /// `uts/domainname`.
    pub domainname: Option<String>,
    /// `uts/{sysname,release,version,machine}`: what the guest's
    /// `uname(2)` answers for them (by seccomp user notification; mainline
    /// keeps them global).
    pub uts_fields: Vec<(String, String)>,
    /// Context flags (util-vserver's defaults with `flags` applied).
    pub cflags: u64,
    /// The bounding set.
    pub bcaps: u64,
    /// Context capabilities.
    pub ccaps: u64,
    /// `rlimits/`.
    pub rlimits: Rlimits,
    /// `sched/` or `schedule`.
    pub sched: SchedConfig,
    /// `cgroup/`: files written verbatim into the guest's cgroup, by name.
    pub cgroup_files: BTreeMap<String, String>,
    /// `cpuset/cpus`.
    pub cpuset_cpus: Option<String>,
    /// `cpuset/mems`.
    pub cpuset_mems: Option<String>,
    /// `spaces/`.
    pub spaces: Spaces,
    /// `interfaces/` (and `netns/interfaces/`).
    pub interfaces: Vec<Interface>,
    /// `nonetns` with addresses: the host's network stack, restricted to
    /// them (chbind).
    pub shared_net: Option<interfaces::SharedNet>,
    /// `fstab` lines (device, mount point inside the guest, type, options).
    pub fstab: Vec<FstabEntry>,
    /// `apps/init/`.
    pub init: InitConfig,
    /// `nice`: the nice value the guest starts at.
    pub nice: Option<i32>,
    /// `badness`: its init's `oom_score_adj`.
    pub badness: Option<i32>,
    /// `sysctl/`: `/proc/sys` paths and values, its own namespaces' only.
    pub sysctls: Vec<(String, String)>,
    /// `ionice/`: init's I/O priority as `ioprio_set` takes it.
    pub ionice: Option<u32>,
    /// `personality`: init's execution domain and flags.
    pub personality: Option<u64>,
    /// util-vserver files present that vxfs does not apply, a warning each.
    pub not_applied: Vec<String>,
}

/// One line of a guest's `fstab`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FstabEntry {
    /// The device or source.
    pub source: String,
    /// Where, inside the guest.
    pub target: String,
    /// The filesystem type (`bind` for a bind mount).
    pub fstype: String,
    /// The options.
    pub options: String,
}

/// Whether `name` may name a guest: a path component, no dot first.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The configuration root: `VXFS_CONFDIR` or `/etc/vservers`.
pub fn confdir() -> PathBuf {
    std::env::var_os("VXFS_CONFDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFDIR))
}

/// The names of every configured guest, sorted.
pub fn guests(confdir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(confdir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_name(n))
        .collect();
    names.sort();
    names
}

/// Reads files of one configuration directory (none: every file absent,
/// the defaults).
struct Reader<'a> {
    dir: Option<&'a Path>,
}

impl Reader<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.map_or_else(|| PathBuf::from(rel), |d| d.join(rel))
    }

    /// The file's text, `None` if it does not exist.
    fn text(&self, rel: &str) -> Result<Option<String>, ConfigError> {
        if self.dir.is_none() {
            return Ok(None);
        }
        let path = self.path(rel);
        match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| ConfigError::Invalid {
                    path,
                    message: "not UTF-8 text".into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(ConfigError::Read { path, error }),
        }
    }

    /// The first line of a one-value file, trimmed; `None` if absent or
    /// empty.
    fn value(&self, rel: &str) -> Result<Option<String>, ConfigError> {
        Ok(self
            .text(rel)?
            .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
            .filter(|v| !v.is_empty()))
    }

    fn exists(&self, rel: &str) -> bool {
        self.dir.is_some() && self.path(rel).symlink_metadata().is_ok()
    }

    fn invalid(&self, rel: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path(rel),
            message: message.into(),
        }
    }

    /// A number file.
    fn number<T: std::str::FromStr>(&self, rel: &str) -> Result<Option<T>, ConfigError> {
        match self.value(rel)? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(rel, format!("'{v}' is not a number"))),
        }
    }

    /// The names of the entries of a subdirectory, sorted.
    fn entries(&self, rel: &str) -> Result<Vec<String>, ConfigError> {
        if self.dir.is_none() {
            return Ok(Vec::new());
        }
        let path = self.path(rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(ConfigError::Read { path, error }),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Applies a list file (`flags`, `bcapabilities`, ...) to `bits`.
    fn list(&self, rel: &str, table: &names::Table, bits: &mut u64) -> Result<(), ConfigError> {
        if let Some(text) = self.text(rel)? {
            table
                .apply_text(bits, &text, rel)
                .map_err(|e| self.invalid(rel, e.to_string()))?;
        }
        Ok(())
    }
}

impl GuestConfig {
    /// Loads guest `name` from `confdir`.
    pub fn load(confdir: &Path, name: &str) -> Result<GuestConfig, ConfigError> {
        if !valid_name(name) {
            return Err(ConfigError::BadName(name.to_string()));
        }
        let dir = confdir.join(name);
        if !dir.is_dir() {
            return Err(ConfigError::Unknown {
                name: name.to_string(),
                dir,
            });
        }
        Self::load_dir(Some(&dir), name)
    }

    /// A context without a configuration directory (`vcontext --create`):
    /// util-vserver's defaults, root directory `root`, running `command`
    /// with environment `environment` as its init.
    pub fn unconfigured(
        name: &str,
        xid: Option<Xid>,
        root: PathBuf,
        command: Vec<String>,
        environment: Vec<(String, String)>,
    ) -> GuestConfig {
        let mut cfg = Self::load_dir(None, name).expect("the defaults load");
        cfg.xid = xid;
        cfg.root = root;
        cfg.init.start = command;
        cfg.init.environment = environment;
        // No uts/ files: the host's names, as VServer's new contexts had.
        let uts = rustix::system::uname();
        cfg.nodename = uts.nodename().to_string_lossy().into_owned();
        cfg.domainname = Some(uts.domainname().to_string_lossy().into_owned())
            .filter(|d| !d.is_empty() && d != "(none)");
        cfg
    }

    /// Whether its root is the host's `/` (`vcontext --create` without
    /// `--chroot`): it keeps the host's tree instead of pivoting.
    pub fn shares_host_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Whether it comes from a configuration directory (not
    /// [`GuestConfig::unconfigured`]).
    pub fn configured(&self) -> bool {
        !self.dir.as_os_str().is_empty()
    }

    fn load_dir(dir: Option<&Path>, name: &str) -> Result<GuestConfig, ConfigError> {
        let r = Reader { dir };
        let xid = match r.value("context")? {
            Some(v) => Some(Xid::parse_static(&v).map_err(|m| r.invalid("context", m))?),
            None => None,
        };
        let vdir = match dir {
            Some(_) => std::fs::read_link(r.path("vdir")),
            None => Err(std::io::ErrorKind::NotFound.into()),
        };
        let root = match vdir {
            Ok(target) => target,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Path::new(DEFAULT_VSERVERS).join(name)
            }
            Err(_) => match r.value("vdir")? {
                // A plain file naming the directory is accepted too.
                Some(v) => PathBuf::from(v),
                None => return Err(r.invalid("vdir", "neither a symlink nor a path")),
            },
        };
        if !root.is_absolute() {
            return Err(r.invalid(
                "vdir",
                format!("{} is not an absolute path", root.display()),
            ));
        }
        let nodename = r
            .value("uts/nodename")?
            .or(r.value("uts/hostname")?)
            .unwrap_or_else(|| name.to_string());
        let domainname = r.value("uts/domainname")?;
        let mut uts_fields = Vec::new();
        for field in ["sysname", "release", "version", "machine"] {
            let rel = format!("uts/{field}");
            if let Some(v) = r.value(&rel)? {
                // struct utsname's fields are 65 bytes with the NUL.
                if v.len() > 64 {
                    return Err(r.invalid(&rel, "longer than 64 bytes"));
                }
                uts_fields.push((field.to_string(), v));
            }
        }
        let mut cflags = names::CFLAGS_DEFAULT;
        r.list("flags", &CFLAGS, &mut cflags)?;
        r.list("cflags", &CFLAGS, &mut cflags)?;
        let mut bcaps = names::BCAPS_SECURE;
        r.list("bcapabilities", &names::BCAPS, &mut bcaps)?;
        let mut ccaps = names::CCAPS_DEFAULT;
        r.list("ccapabilities", &CCAPS, &mut ccaps)?;
        let rlimits = rlimits::load(&r, "rlimits")?;
        let sched = sched::load(&r, "sched")?;
        let mut cgroup_files = BTreeMap::new();
        for file in r.entries("cgroup")? {
            // util-vserver's own settings, not cgroup files.
            if [
                "name", "base", "mnt", "subsys", "inherit", "per-ss", "nocgroup",
            ]
            .contains(&file.as_str())
            {
                continue;
            }
            let rel = format!("cgroup/{file}");
            if !file.contains('.') {
                return Err(r.invalid(&rel, "not a cgroup file name (CONTROLLER.KNOB)"));
            }
            let value = r.text(&rel)?.unwrap_or_default().trim().to_string();
            cgroup_files.insert(file, value);
        }
        let interfaces = interfaces::load(&r)?;
        let nonetns = r.exists("nonetns");
        if nonetns && (r.exists("spaces/net") || r.exists("netns")) {
            return Err(r.invalid(
                "nonetns",
                "nonetns and a network namespace (spaces/net, netns/) both given",
            ));
        }
        let shared_net = if nonetns {
            interfaces::shared(&r, &interfaces)?
        } else {
            None
        };
        if shared_net.is_some() {
            // Raw packets and the host's interfaces and routes: ways out of
            // its addresses.
            let net_raw_admin = (1 << 12) | (1 << 13);
            if bcaps & net_raw_admin != 0 {
                return Err(r.invalid(
                    "bcapabilities",
                    "NET_ADMIN and NET_RAW would let a guest that shares the host's network \
                     stack (nonetns) leave its addresses",
                ));
            }
        }
        let spaces = Spaces {
            net: !nonetns
                && (r.exists("spaces/net")
                    || r.exists("netns")
                    // veth and macvlan entries alike live in one.
                    || interfaces.iter().any(|i| !i.disabled)),
            user_base: if r.exists("spaces/user") {
                Some(match r.number::<u32>("spaces/user")? {
                    Some(base) => base,
                    None => xid.map(|x| x.0.saturating_mul(65536)).ok_or_else(|| {
                        r.invalid(
                            "spaces/user",
                            "a user namespace needs a static context or a base id",
                        )
                    })?,
                })
            } else {
                None
            },
        };
        if let Some(base) = spaces.user_base {
            if base == 0 || base.checked_add(65535).is_none() {
                return Err(r.invalid(
                    "spaces/user",
                    format!("{base}: the range of 65536 ids must lie above 0 and within 32 bits"),
                ));
            }
        }
        let fstab = match r.text("fstab")? {
            None => Vec::new(),
            Some(text) => parse_fstab(&text).map_err(|m| r.invalid("fstab", m))?,
        };
        let init = load_init(&r)?;
        let sysctls = process::sysctls(&r, spaces.net)?;
        Ok(GuestConfig {
            name: name.to_string(),
            dir: dir.map(Path::to_path_buf).unwrap_or_default(),
            xid,
            root,
            nodename,
            domainname,
            uts_fields,
            cflags,
            bcaps,
            ccaps,
            rlimits,
            sched,
            cgroup_files,
            cpuset_cpus: r.value("cpuset/cpus")?,
            cpuset_mems: r.value("cpuset/mems")?,
            spaces,
            interfaces,
            shared_net,
            fstab,
            init,
            nice: r.number("nice")?,
            badness: r.number("badness")?,
            sysctls,
            ionice: process::ionice(&r)?,
            personality: process::personality_file(&r)?,
            not_applied: process::not_applied(&r),
        })
    }
}

/// The limit files of directory `dir` (`vlimit --dir`), in the layout of
/// `rlimits/`.
pub fn rlimits_in(dir: &Path) -> Result<Rlimits, ConfigError> {
    rlimits::load(&Reader { dir: Some(dir) }, ".")
}

/// The scheduler files of directory `dir` (`vsched --dir`), in the layout
/// of `sched/`.
pub fn sched_in(dir: &Path) -> Result<SchedConfig, ConfigError> {
    sched::load(&Reader { dir: Some(dir) }, ".")
}

fn parse_fstab(text: &str) -> Result<Vec<FstabEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            return Err(format!(
                "line {}: expected DEVICE MOUNTPOINT TYPE [OPTIONS]",
                n + 1
            ));
        }
        if !f[1].starts_with('/') {
            return Err(format!(
                "line {}: mount point {} is not absolute",
                n + 1,
                f[1]
            ));
        }
        out.push(FstabEntry {
            source: f[0].to_string(),
            target: f[1].to_string(),
            fstype: f[2].to_string(),
            options: f.get(3).unwrap_or(&"defaults").to_string(),
        });
    }
    Ok(out)
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn load_init(r: &Reader<'_>) -> Result<InitConfig, ConfigError> {
    let style = match r.value("apps/init/style")?.as_deref() {
        None | Some("plain" | "minit" | "openrc" | "arch" | "gentoo") => InitStyle::Plain,
        Some("sysv") => InitStyle::Sysv,
        Some(other) => {
            return Err(r.invalid(
                "apps/init/style",
                format!("unknown init style '{other}' (plain, sysv, minit, openrc, arch, gentoo)"),
            ));
        }
    };
    let runlevel = r.value("apps/init/runlevel")?;
    let start = match r.text("apps/init/cmd.start")? {
        Some(t) if !t.trim().is_empty() => words(&t),
        _ => match style {
            InitStyle::Plain => vec!["/sbin/init".to_string()],
            InitStyle::Sysv => vec![
                "/etc/init.d/rc".to_string(),
                r.value("apps/init/runlevel.start")?
                    .or(runlevel.clone())
                    .unwrap_or_else(|| "3".into()),
            ],
        },
    };
    let stop = match r.text("apps/init/cmd.stop")? {
        Some(t) if !t.trim().is_empty() => Some(words(&t)),
        _ => match style {
            InitStyle::Plain => None,
            InitStyle::Sysv => Some(vec![
                "/etc/init.d/rc".to_string(),
                r.value("apps/init/runlevel.stop")?
                    .unwrap_or_else(|| "6".into()),
            ]),
        },
    };
    let killseq = match r.value("apps/init/killseq")? {
        None => vec![KillStep::Signal(15), KillStep::Wait(5), KillStep::Signal(9)],
        Some(text) => parse_killseq(&text).map_err(|m| r.invalid("apps/init/killseq", m))?,
    };
    let mut environment = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("TERM".to_string(), "linux".to_string()),
    ];
    if let Some(text) = r.text("apps/init/environment")? {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(r.invalid(
                    "apps/init/environment",
                    format!("line {}: expected NAME=VALUE", n + 1),
                ));
            };
            environment.retain(|(name, _)| name != k);
            environment.push((k.to_string(), v.to_string()));
        }
    }
    Ok(InitConfig {
        style,
        start,
        stop,
        killseq,
        environment,
        uid: None,
    })
}

/// `killseq`: signals and waits alternating, starting with a signal.
fn parse_killseq(text: &str) -> Result<Vec<KillStep>, String> {
    let mut out = Vec::new();
    for (i, w) in text.split_whitespace().enumerate() {
        let n: u32 = w.parse().map_err(|_| format!("'{w}' is not a number"))?;
        out.push(if i % 2 == 0 {
            if !(1..=64).contains(&n) {
                return Err(format!("{n} is not a signal"));
            }
            KillStep::Signal(n as i32)
        } else {
            KillStep::Wait(n)
        });
    }
    if out.is_empty() {
        return Err("empty kill sequence".into());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes `files` (path, content) under a new configuration directory
    /// `NAME` in a temporary confdir.
    pub fn guest(name: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (rel, text) in files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let confdir = t.path().to_path_buf();
        (t, confdir)
    }

    #[test]
    fn defaults_of_an_empty_configuration() {
        let (_t, confdir) = guest("web", &[]);
        let c = GuestConfig::load(&confdir, "web").unwrap();
        assert_eq!(c.xid, None);
        assert_eq!(c.root, Path::new("/vservers/web"));
        assert_eq!(c.nodename, "web");
        assert_eq!(c.cflags, names::CFLAGS_DEFAULT);
        assert_eq!(c.bcaps, names::BCAPS_SECURE);
        assert_eq!(c.ccaps, names::CCAPS_DEFAULT);
        assert_eq!(c.init.style, InitStyle::Plain);
        assert_eq!(c.init.start, ["/sbin/init"]);
        assert_eq!(
            c.init.killseq,
            [KillStep::Signal(15), KillStep::Wait(5), KillStep::Signal(9)]
        );
        assert!(!c.spaces.net);
    }

    #[test]
    fn a_util_vserver_configuration_loads() {
        let (t, confdir) = guest(
            "db",
            &[
                ("context", "1042\n"),
                ("uts/nodename", "db.example.org\n"),
                ("uts/domainname", "example.org\n"),
                ("uts/release", "2.6.32\n"),
                ("flags", "sched_hard\n~virt_uptime\n"),
                ("bcapabilities", "NET_RAW\n"),
                ("ccapabilities", "~raw_icmp\n"),
                ("cgroup/memory.limit_in_bytes", "268435456\n"),
                ("cgroup/name", "ignored\n"),
                ("cpuset/cpus", "0\n"),
                ("spaces/net", ""),
                ("fstab", "none /tmp tmpfs size=16m,mode=1777 0 0\n# c\n"),
                ("apps/init/style", "sysv\n"),
                ("apps/init/runlevel", "2\n"),
                ("apps/init/killseq", "15 2 9\n"),
                ("apps/init/environment", "LANG=C\nPATH=/bin\n"),
            ],
        );
        std::os::unix::fs::symlink("/srv/guests/db", t.path().join("db/vdir")).unwrap();
        let c = GuestConfig::load(&confdir, "db").unwrap();
        assert_eq!(c.xid, Some(Xid(1042)));
        assert_eq!(c.root, Path::new("/srv/guests/db"));
        assert_eq!(c.nodename, "db.example.org");
        assert_eq!(c.domainname.as_deref(), Some("example.org"));
        assert_eq!(
            c.uts_fields,
            [("release".to_string(), "2.6.32".to_string())]
        );
        assert!(c.cflags & names::cflag::SCHED_HARD != 0);
        assert!(c.cflags & names::cflag::VIRT_UPTIME == 0);
        assert!(c.bcaps & (1 << 13) != 0);
        assert_eq!(c.ccaps, names::CCAPS_DEFAULT & !0x100);
        assert_eq!(
            c.cgroup_files.iter().collect::<Vec<_>>(),
            [(
                &"memory.limit_in_bytes".to_string(),
                &"268435456".to_string()
            )]
        );
        assert_eq!(c.cpuset_cpus.as_deref(), Some("0"));
        assert!(c.spaces.net);
        assert_eq!(c.fstab.len(), 1);
        assert_eq!(c.fstab[0].target, "/tmp");
        assert_eq!(c.init.style, InitStyle::Sysv);
        assert_eq!(c.init.start, ["/etc/init.d/rc", "2"]);
        assert_eq!(
            c.init.stop.as_deref(),
            Some(&["/etc/init.d/rc".into(), "6".into()][..])
        );
        assert_eq!(c.init.killseq[1], KillStep::Wait(2));
        assert!(c.init.environment.contains(&("PATH".into(), "/bin".into())));
        assert!(c.init.environment.contains(&("LANG".into(), "C".into())));
    }

    #[test]
    fn bad_files_name_themselves() {
        for (files, needle) in [
            (
                &[("context", "49152")][..],
                "context: context 49152 is in the dynamic range",
            ),
            (
                &[("context", "abc")][..],
                "context: 'abc' is not a context number",
            ),
            (
                &[("flags", "nosuchflag")][..],
                "flags: flags:1: unknown context flag 'nosuchflag'",
            ),
            (
                &[("bcapabilities", "CAP_FLY")][..],
                "unknown capability 'CAP_FLY'",
            ),
            (
                &[("apps/init/style", "upstart")][..],
                "unknown init style 'upstart'",
            ),
            (&[("apps/init/killseq", "15 x")][..], "'x' is not a number"),
            (
                &[("fstab", "only-two fields")][..],
                "fstab: line 1: expected",
            ),
            (&[("cgroup/limit", "1")][..], "not a cgroup file name"),
            (&[("nice", "high")][..], "nice: 'high' is not a number"),
            (&[("spaces/user", "")][..], "needs a static context"),
            (
                &[
                    ("sysctl/0/setting", "vm.swappiness"),
                    ("sysctl/0/value", "1"),
                ][..],
                "sysctl/0/setting: vm.swappiness: not a sysctl of the guest's own namespaces",
            ),
            (
                &[
                    ("sysctl/0/setting", "net.ipv4.ip_forward"),
                    ("sysctl/0/value", "1"),
                ][..],
                "it would change the host's kernel",
            ),
            (
                &[
                    ("sysctl/0/setting", "kernel.shm..x"),
                    ("sysctl/0/value", "1"),
                ][..],
                "not a sysctl name",
            ),
            (
                &[("sysctl/0/setting", "kernel.shmmax")][..],
                "sysctl/0/value: missing",
            ),
            (&[("ionice/class", "fast")][..], "ionice/class: 'fast'"),
            (
                &[("ionice/class", "2"), ("ionice/priority", "9")][..],
                "ionice/priority: 9: 0..7",
            ),
            (&[("personality", "bsd\n")][..], "unknown personality 'bsd'"),
        ] {
            let (_t, confdir) = guest("g", files);
            let e = GuestConfig::load(&confdir, "g").unwrap_err().to_string();
            assert!(e.contains(needle), "{files:?}: {e}");
        }
        let (_t, confdir) = guest("g", &[]);
        let e = GuestConfig::load(&confdir, "nope").unwrap_err().to_string();
        assert!(e.starts_with("unknown vserver 'nope'"), "{e}");
        let e = GuestConfig::load(&confdir, "../etc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a vserver name"), "{e}");
    }

    #[test]
    fn process_settings_load() {
        let (_t, confdir) = guest(
            "g",
            &[
                ("sysctl/a/setting", "kernel.shmmax\n"),
                ("sysctl/a/value", "4096\n"),
                ("sysctl/b/setting", "net.ipv4.ip_forward"),
                ("sysctl/b/value", "1"),
                ("spaces/net", ""),
                ("ionice/class", "best-effort"),
                ("ionice/priority", "6"),
                ("personality", "linux32\naddr_no_randomize\n"),
                ("ulimits/nofile", "100"),
            ],
        );
        let c = GuestConfig::load(&confdir, "g").unwrap();
        assert_eq!(
            c.sysctls,
            [
                ("kernel/shmmax".to_string(), "4096".to_string()),
                ("net/ipv4/ip_forward".to_string(), "1".to_string())
            ]
        );
        assert_eq!(c.ionice, Some((2 << 13) | 6));
        assert_eq!(c.personality, Some(0x0008 | 0x0040000));
        assert_eq!(c.not_applied.len(), 1);
        assert!(
            c.not_applied[0].starts_with("ulimits: not applied"),
            "{:?}",
            c.not_applied
        );
    }

    #[test]
    fn guests_are_listed_by_name() {
        let (t, confdir) = guest("b", &[]);
        std::fs::create_dir(t.path().join("a")).unwrap();
        std::fs::create_dir(t.path().join(".defaults")).unwrap();
        std::fs::write(t.path().join("file"), "").unwrap();
        assert_eq!(guests(&confdir), ["a", "b"]);
    }
}

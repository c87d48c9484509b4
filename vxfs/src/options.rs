//! Command line and `-o` mount option parsing.
//!
//! The command line follows the mount.fuse convention so that
//! `mount -t fuse.vxfs SOURCE MNT -o OPTS` and fstab lines work through
//! fuse3's helper, which runs `vxfs SOURCE MNT -o OPTS`. Parsing is pure (no
//! I/O) and every malformed or unknown option is an error, never ignored.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use rustix::mount::MountFlags;

use crate::tagging::{ContextMode, Tagging};

/// Upper bound for `threads=`.
pub const MAX_THREADS: usize = 256;
/// Upper bound for the cache timeouts, in seconds.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// Default attribute and entry cache timeout when SOURCE's filesystem is
/// not watched (see [`crate::watch`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default attribute and entry cache timeout for inodes of a watched
/// filesystem: every change reaches the kernel as a notification.
pub const WATCHED_TIMEOUT: Duration = Duration::from_secs(3600);

/// A command line or mount option the daemon refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    /// An `-o` word vxfs does not know.
    #[error("unknown mount option '{0}'")]
    Unknown(String),
    /// A known option with a value that does not parse or is out of range.
    #[error("invalid value for mount option '{name}': '{value}' ({why})")]
    BadValue {
        /// The option name.
        name: String,
        /// The value given.
        value: String,
        /// What is expected instead.
        why: String,
    },
    /// A command line flag vxfs does not know.
    #[error("unknown command line flag '{0}'")]
    UnknownFlag(String),
    /// `-o` without a value.
    #[error("option -o needs a value")]
    MissingOptionValue,
    /// Missing or extra positional arguments.
    #[error("expected SOURCE and MOUNTPOINT arguments{0}")]
    Positional(&'static str),
}

/// Filesystem behaviour chosen with `-o`.
#[derive(Debug, Clone, PartialEq)]
pub struct FsOptions {
    /// Hand file data to the kernel with FUSE passthrough when possible.
    pub passthrough: bool,
    /// Number of request dispatch threads.
    pub threads: usize,
    /// Serve requests through FUSE-over-io_uring when the kernel offers it
    /// (`None`: not given, on).
    pub io_uring: Option<bool>,
    /// How long the kernel may cache attributes (default: by whether
    /// SOURCE is watched).
    pub attr_timeout: Option<Duration>,
    /// How long the kernel may cache name lookups (the same default).
    pub entry_timeout: Option<Duration>,
    /// Whether the daemon watches SOURCE for changes made outside it.
    pub watch: crate::watch::WatchMode,
    /// Mounted read-only.
    pub read_only: bool,
    /// xid tagging policy (`xid=`, `notagcheck`).
    pub tagging: Tagging,
    /// Per-context disk accounting and limits (with tagging; `dlimits=`).
    pub dlimits: bool,
    /// Where the index lives (default `<SOURCE>.vxfs.db`).
    pub index: Option<PathBuf>,
    /// How many inodes may keep an open descriptor (default: 3/4 of the
    /// process's descriptor limit); the rest are kept as file handles.
    pub inode_fds: Option<usize>,
    /// `tree=`: the tree the daemon serves when SOURCE is a directory in
    /// it (default: the tree of the daemon already serving an ancestor of
    /// SOURCE, else SOURCE itself).
    pub tree: Option<PathBuf>,
    /// The daemon-wide options given on the command line (a view joining a
    /// running daemon may only repeat the values it runs with).
    pub explicit: Vec<&'static str>,
}

/// Options that belong to the daemon, not to one of its mounts.
pub const DAEMON_OPTIONS: &[&str] = &[
    "passthrough",
    "dlimits",
    "index",
    "inode_fds",
    "notagcheck",
    "tree",
    "watch",
];

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            passthrough: true,
            threads: std::thread::available_parallelism()
                .map(|n| n.get().clamp(2, 16))
                .unwrap_or(4),
            io_uring: None,
            attr_timeout: None,
            entry_timeout: None,
            watch: crate::watch::WatchMode::Auto,
            read_only: false,
            inode_fds: None,
            tagging: Tagging::default(),
            dlimits: true,
            index: None,
            tree: None,
            explicit: Vec::new(),
        }
    }
}

/// How the kernel mount is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// `mount(2)` flags (ro, nosuid, nodev, noexec, noatime, ...).
    pub flags: MountFlags,
    /// What /proc/mounts shows as the device (default: SOURCE).
    pub fsname: Option<String>,
    /// The part after `fuse.` in the filesystem type.
    pub subtype: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MountFlags::empty(),
            fsname: None,
            subtype: "vxfs".to_string(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print usage.
    Help,
    /// Print the version.
    Version,
    /// Mount and serve.
    Mount(Box<Args>),
}

/// A parsed `vxfs SOURCE MOUNTPOINT [-o ...] [-f] [-d]` invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The backing directory.
    pub source: PathBuf,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Stay in the foreground instead of daemonizing.
    pub foreground: bool,
    /// Log every request (implies foreground).
    pub debug: bool,
    /// Kernel mount settings.
    pub mount: MountOptions,
    /// Filesystem behaviour.
    pub fs: FsOptions,
    /// The `-o` words as given (handed to a daemon this mount joins).
    pub option_words: Vec<String>,
}

/// Usage text for `--help` and errors.
pub const USAGE: &str = "\
usage: vxfs SOURCE MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d] [-s]

Mounts a vxfs view of the directory SOURCE at MOUNTPOINT (type fuse.vxfs).
Also usable as `mount -t fuse.vxfs SOURCE MOUNTPOINT -o ...` and in fstab.

flags:
  -o OPTS        comma-separated mount options (may be repeated)
  -f             stay in the foreground
  -d             debug logging (implies -f)
  -s             single-threaded dispatch (same as -o threads=1)
  -h, --help     this text
  -V, --version  print the version

mount options:
  ro, rw, nosuid, suid, nodev, dev, noexec, exec, noatime, atime,
  nodiratime, diratime, relatime, norelatime, strictatime, lazytime,
  nolazytime, sync, async, dirsync     as for any filesystem
  allow_other, allow_root, default_permissions
                 accepted; vxfs always serves every user and lets the
                 kernel check permissions
  fsname=NAME    device name shown in /proc/mounts (default: SOURCE)
  subtype=NAME   filesystem type shown as fuse.NAME (default: vxfs)
  passthrough=on|off
                 kernel FUSE passthrough for file data (default: on)
  threads=N      request dispatch threads, 1..=256
  io_uring=on|off
                 serve requests through FUSE-over-io_uring when the kernel
                 offers it (fuse's enable_uring parameter), else through
                 /dev/fuse (default: on)
  attr_timeout=SECS, entry_timeout=SECS
                 kernel attribute / name cache lifetime (default: 3600
                 when SOURCE is watched, else 1)
  watch=auto|on|off
                 watch SOURCE's filesystem (fanotify) and tell the kernel
                 of every change made outside the mount (default: auto,
                 which falls back to short timeouts where it cannot)
  xid=N          every request is context N, root or not (a guest's view)
  xid=uid/SIZE[:FIRST-LAST], xid=gid/SIZE[:FIRST-LAST]
                 ids 0..SIZE-1 are the host; ids X*SIZE..(X+1)*SIZE-1 are
                 context X for X in FIRST-LAST (default 2-max); other ids
                 are unmapped (host files only, no new files)
  xid=cgroup     a process in a cgroup vx-XID is context XID, others the
                 host
  notagcheck     keep tags but let every context access every inode
  dlimits=on|off per-context disk accounting and limits when tagging
                 (default: on)
  index=PATH     the SQLite index of limits and counters (default:
                 SOURCE.vxfs.db beside SOURCE)
  inode_fds=N    inodes that keep an open descriptor (default: 3/4 of the
                 descriptor limit); others are re-opened by file handle
  tree=PATH      the tree one daemon serves, of which SOURCE is a directory
                 (default: the tree of the daemon serving an ancestor of
                 SOURCE, else SOURCE); a daemon already serving the tree is
                 joined: one inode table, one index, one set of counters
  defaults, auto, noauto, user, nouser, users, owner, nofail, _netdev,
  x-*, comment=*  fstab words, accepted and ignored
";

/// The command line's flags, parsed by clap; the `-o` words are ours.
fn command_line() -> clap::Command {
    use clap::{Arg, ArgAction, value_parser};
    let flag = |id: &'static str, short: char| Arg::new(id).short(short).action(ArgAction::SetTrue);
    clap::Command::new("vxfs")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(flag("help", 'h').long("help"))
        .arg(flag("version", 'V').long("version"))
        .arg(flag("foreground", 'f'))
        .arg(flag("debug", 'd').long("debug"))
        .arg(flag("single", 's'))
        .arg(
            Arg::new("options")
                .short('o')
                .action(ArgAction::Append)
                .num_args(1)
                .allow_hyphen_values(true)
                .value_parser(value_parser!(OsString)),
        )
        .arg(
            Arg::new("positional")
                .action(ArgAction::Append)
                .num_args(0..)
                .value_parser(value_parser!(PathBuf)),
        )
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, OptionError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let matches = command_line().try_get_matches_from(args).map_err(|e| {
        let invalid = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        match e.kind() {
            ErrorKind::InvalidValue | ErrorKind::WrongNumberOfValues
                if invalid.starts_with("-o") =>
            {
                OptionError::MissingOptionValue
            }
            _ => OptionError::UnknownFlag(
                invalid
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
        }
    })?;
    if matches.get_flag("help") {
        return Ok(Command::Help);
    }
    if matches.get_flag("version") {
        return Ok(Command::Version);
    }
    let (foreground, debug) = (matches.get_flag("foreground"), matches.get_flag("debug"));
    let single_thread = matches.get_flag("single");
    let option_words: Vec<String> = matches
        .get_many::<OsString>("options")
        .into_iter()
        .flatten()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let positional: Vec<PathBuf> = matches
        .get_many::<PathBuf>("positional")
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let (source, mountpoint) = match <[PathBuf; 2]>::try_from(positional) {
        Ok([s, m]) => (s, m),
        Err(v) if v.len() < 2 => return Err(OptionError::Positional("")),
        Err(_) => return Err(OptionError::Positional(", got more than two")),
    };
    let mut args = Args {
        source,
        mountpoint,
        foreground: foreground || debug,
        debug,
        mount: MountOptions::default(),
        fs: FsOptions::default(),
        option_words: Vec::new(),
    };
    for words in &option_words {
        for word in words.split(',').filter(|w| !w.is_empty()) {
            apply_option(&mut args, word)?;
            args.option_words.push(word.to_string());
        }
    }
    if single_thread {
        args.fs.threads = 1;
    }
    Ok(Command::Mount(Box::new(args)))
}

/// A `mount(2)` flag word and the flags it sets and clears.
const FLAG_WORDS: &[(&str, MountFlags, MountFlags)] = &[
    ("ro", MountFlags::RDONLY, MountFlags::empty()),
    ("rw", MountFlags::empty(), MountFlags::RDONLY),
    ("nosuid", MountFlags::NOSUID, MountFlags::empty()),
    ("suid", MountFlags::empty(), MountFlags::NOSUID),
    ("nodev", MountFlags::NODEV, MountFlags::empty()),
    ("dev", MountFlags::empty(), MountFlags::NODEV),
    ("noexec", MountFlags::NOEXEC, MountFlags::empty()),
    ("exec", MountFlags::empty(), MountFlags::NOEXEC),
    ("noatime", MountFlags::NOATIME, MountFlags::empty()),
    ("atime", MountFlags::empty(), MountFlags::NOATIME),
    ("nodiratime", MountFlags::NODIRATIME, MountFlags::empty()),
    ("diratime", MountFlags::empty(), MountFlags::NODIRATIME),
    ("relatime", MountFlags::RELATIME, MountFlags::empty()),
    ("norelatime", MountFlags::empty(), MountFlags::RELATIME),
    ("strictatime", MountFlags::STRICTATIME, MountFlags::empty()),
    ("lazytime", MountFlags::LAZYTIME, MountFlags::empty()),
    ("nolazytime", MountFlags::empty(), MountFlags::LAZYTIME),
    ("sync", MountFlags::SYNCHRONOUS, MountFlags::empty()),
    ("async", MountFlags::empty(), MountFlags::SYNCHRONOUS),
    ("dirsync", MountFlags::DIRSYNC, MountFlags::empty()),
];

/// Words accepted for compatibility and otherwise ignored: vxfs always mounts
/// with `allow_other,default_permissions`, and the rest are fstab/mount(8)
/// words that mount helpers may pass through.
const IGNORED_WORDS: &[&str] = &[
    "allow_other",
    "allow_root",
    "default_permissions",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "loud",
    "silent",
];

fn apply_option(args: &mut Args, word: &str) -> Result<(), OptionError> {
    if let Some((_, set, clear)) = FLAG_WORDS.iter().find(|(name, _, _)| *name == word) {
        args.mount.flags = (args.mount.flags - *clear) | *set;
        args.fs.read_only = args.mount.flags.contains(MountFlags::RDONLY);
        return Ok(());
    }
    if word == "notagcheck" {
        args.fs.tagging.no_check = true;
        note(args, "notagcheck");
        return Ok(());
    }
    if IGNORED_WORDS.contains(&word) || word.starts_with("x-") || word.starts_with("comment=") {
        return Ok(());
    }
    let Some((name, value)) = word.split_once('=') else {
        return Err(OptionError::Unknown(word.to_string()));
    };
    let bad = |why: &str| OptionError::BadValue {
        name: name.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    };
    if let Some(known) = DAEMON_OPTIONS.iter().find(|n| **n == name) {
        note(args, known);
    }
    match name {
        "fsname" if !value.is_empty() => args.mount.fsname = Some(value.to_string()),
        "fsname" => return Err(bad("a non-empty name")),
        "subtype" if is_simple_name(value) => args.mount.subtype = value.to_string(),
        "subtype" => return Err(bad("a name of letters, digits, '-' and '_'")),
        "passthrough" => {
            args.fs.passthrough = parse_switch(value).ok_or_else(|| bad("on or off"))?
        }
        "io_uring" => args.fs.io_uring = Some(parse_switch(value).ok_or_else(|| bad("on or off"))?),
        "threads" => {
            args.fs.threads = value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_THREADS).contains(n))
                .ok_or_else(|| bad("an integer from 1 to 256"))?;
        }
        "xid" => {
            args.fs.tagging.mode = ContextMode::parse(value).map_err(|why| bad(&why))?;
        }
        "dlimits" => args.fs.dlimits = parse_switch(value).ok_or_else(|| bad("on or off"))?,
        "index" if value.starts_with('/') => args.fs.index = Some(PathBuf::from(value)),
        "index" => return Err(bad("an absolute path")),
        "tree" if value.starts_with('/') => args.fs.tree = Some(PathBuf::from(value)),
        "tree" => return Err(bad("an absolute path")),
        "inode_fds" => {
            let n = value
                .parse::<usize>()
                .map_err(|_| bad("a non-negative integer"))?;
            args.fs.inode_fds = Some(n);
        }
        "attr_timeout" => {
            args.fs.attr_timeout = Some(parse_timeout(value).ok_or_else(|| bad(TIMEOUT_WHY))?)
        }
        "entry_timeout" => {
            args.fs.entry_timeout = Some(parse_timeout(value).ok_or_else(|| bad(TIMEOUT_WHY))?)
        }
        "watch" => {
            args.fs.watch =
                crate::watch::WatchMode::parse(value).ok_or_else(|| bad("auto, on or off"))?
        }
        _ => return Err(OptionError::Unknown(word.to_string())),
    }
    Ok(())
}

/// Records that daemon option `name` was given.
fn note(args: &mut Args, name: &'static str) {
    if !args.fs.explicit.contains(&name) {
        args.fs.explicit.push(name);
    }
}

fn parse_switch(value: &str) -> Option<bool> {
    match value {
        "on" | "yes" | "true" | "1" => Some(true),
        "off" | "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

const TIMEOUT_WHY: &str = "seconds, from 0 to 86400";

fn parse_timeout(value: &str) -> Option<Duration> {
    let secs: f64 = value.parse().ok()?;
    (secs.is_finite() && (0.0..=MAX_TIMEOUT_SECS).contains(&secs))
        .then(|| Duration::from_secs_f64(secs))
}

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    /// Every word `-o` accepts is in the README's option table, and every
    /// `NAME=` option the table lists is accepted.
    #[test]
    fn every_accepted_option_is_documented() {
        let readme = include_str!("../../README.md");
        let table: String = readme
            .lines()
            .skip_while(|l| !l.starts_with("| option | meaning |"))
            .take_while(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!table.is_empty(), "the README's option table");
        let words = FLAG_WORDS
            .iter()
            .map(|(w, _, _)| *w)
            .chain(IGNORED_WORDS.iter().copied())
            .chain(["notagcheck"]);
        for word in words {
            assert!(
                table.contains(&format!("`{word}`")),
                "-o {word} is not documented"
            );
        }
        let valued = [
            "fsname",
            "subtype",
            "passthrough",
            "threads",
            "io_uring",
            "xid",
            "dlimits",
            "index",
            "tree",
            "inode_fds",
            "attr_timeout",
            "entry_timeout",
            "watch",
        ];
        for name in valued {
            assert!(
                table.contains(&format!("`{name}=")),
                "-o {name}= is not documented"
            );
        }
        // And the table names nothing more: each `NAME=` there is accepted.
        for cell in table.split('`').skip(1).step_by(2) {
            if let Some((name, _)) = cell.split_once('=') {
                if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') && name != "comment" {
                    assert!(
                        valued.contains(&name),
                        "the README documents unknown -o {name}="
                    );
                }
            }
        }
    }

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, OptionError> {
        parse_args(args.iter().map(OsString::from))
    }

    fn mount(args: &[&str]) -> Args {
        match parse(args) {
            Ok(Command::Mount(a)) => *a,
            other => panic!("expected a mount, got {other:?}"),
        }
    }

    #[test]
    fn positional_and_flags() {
        let a = mount(&[
            "/s",
            "/m",
            "-f",
            "-o",
            "ro,nosuid,io_uring=on",
            "-othreads=3",
        ]);
        assert_eq!(a.source, PathBuf::from("/s"));
        assert_eq!(a.mountpoint, PathBuf::from("/m"));
        assert!(a.foreground);
        assert!(a.fs.read_only);
        assert!(
            a.mount
                .flags
                .contains(MountFlags::RDONLY | MountFlags::NOSUID)
        );
        assert_eq!(a.fs.threads, 3);
        assert_eq!(a.fs.io_uring, Some(true));
    }

    #[test]
    fn later_words_override_earlier_ones() {
        let a = mount(&["/s", "/m", "-o", "ro,rw,nodev,dev"]);
        assert!(!a.fs.read_only);
        assert_eq!(a.mount.flags, MountFlags::empty());
    }

    #[test]
    fn fstab_words_are_accepted() {
        let a = mount(&[
            "/s",
            "/m",
            "-o",
            "defaults,noauto,_netdev,x-systemd.requires=a,allow_other",
        ]);
        assert_eq!(a.mount, MountOptions::default());
    }

    #[test]
    fn vxfs_options() {
        let a = mount(&[
            "/s",
            "/m",
            "-o",
            "passthrough=off,attr_timeout=0.5,entry_timeout=0,fsname=guest1,subtype=vx,inode_fds=7",
        ]);
        assert!(!a.fs.passthrough);
        assert_eq!(a.fs.attr_timeout, Some(Duration::from_millis(500)));
        assert_eq!(a.fs.entry_timeout, Some(Duration::ZERO));
        assert_eq!(a.mount.fsname.as_deref(), Some("guest1"));
        assert_eq!(a.mount.subtype, "vx");
        assert_eq!(a.fs.inode_fds, Some(7));
        assert_eq!(a.fs.explicit, vec!["passthrough", "inode_fds"]);
        let a = mount(&["/s", "/m", "-o", "xid=uid/65536,notagcheck"]);
        assert_eq!(a.fs.tagging.mode, ContextMode::parse("uid/65536").unwrap());
        assert!(a.fs.tagging.no_check);
    }

    #[test]
    fn rejects_bad_input() {
        let table: &[&[&str]] = &[
            &["/s", "/m", "-o", "bogus"],
            &["/s", "/m", "-o", "bogus=1"],
            &["/s", "/m", "-o", "threads=abc"],
            &["/s", "/m", "-o", "threads=0"],
            &["/s", "/m", "-o", "threads=257"],
            &["/s", "/m", "-o", "passthrough=maybe"],
            &["/s", "/m", "-o", "io_uring=auto"],
            &["/s", "/m", "-o", "attr_timeout=-1"],
            &["/s", "/m", "-o", "entry_timeout=nan"],
            &["/s", "/m", "-o", "subtype=a/b"],
            &["/s", "/m", "-o", "fsname="],
            &["/s", "/m", "-o", "inode_fds=-1"],
            &["/s", "/m", "-o", "xid=uid/0"],
            &["/s", "/m", "-o", "xid=guest"],
            &["/s", "/m", "-o", "dlimits=maybe"],
            &["/s", "/m", "-o", "index=relative.db"],
            &["/s", "/m", "-o", "tree=relative"],
            &["/s", "/m", "-o", "watch=sometimes"],
            &["/s", "/m", "-o"],
            &["/s", "/m", "-x"],
            &["/s"],
            &["/s", "/m", "/extra"],
        ];
        for args in table {
            assert!(parse(args).is_err(), "{args:?} should be rejected");
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["/s", "-V"]), Ok(Command::Version));
    }
}

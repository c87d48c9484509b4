//! `vdlimit`: shows and sets per-context disk limits (docs/VSERVER.md §6).
//!
//! # Where limits are
//!
//! * Online, through a mount point: the mount's daemon answers on its vroot
//!   sockets (`/run/vxfs/MAJOR:MINOR/`); root uses `admin.sock` (any
//!   context, read and write), everyone else `guest.sock` (their own
//!   context, read only). Changes take effect at once and the daemon
//!   persists them.
//! * Offline (`--index PATH`, or `--source SOURCE` for the default
//!   `SOURCE.vxfs.db`): the SQLite index is edited directly. The daemon
//!   reads limits only when mounting, so offline changes to an index a
//!   running daemon holds open are refused. Usage is known offline only if
//!   the last mount ended cleanly, or with `--recount` (walks SOURCE).
//!
//! # Output
//!
//! Without `--set`/`--remove`, one block per path exactly as util-vserver
//! (space in KiB, `-1` = unlimited; usage that is not known offline shows
//! as `unknown`). `--list` prints xfs_quota's `report -p -b -i` layout
//! (soft = hard = the limit, `unlimited` for none where xfs_quota prints
//! 0, because 0 is a limit here; grace `[--none--]`
//! when over the limit). `--json` prints the same as one JSON array, with
//! `null` for unlimited totals and for unknown usage.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use vroot::{Client, Entry, Field, Request};
use vxfs::dlimit::{Limit, Usage};
use vxfs::index::Index;
use vxfs::tagging::Xid;

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};
use crate::mountinfo::{MountEntry, MountTable};
use crate::num::{parse_xid, strtol0};

/// The usage text.
pub const USAGE: &str = "\
Usage: vdlimit --xid XID [--set NAME=VALUE ...|--remove] MOUNTPOINT...
       vdlimit --xid XID [--set NAME=VALUE ...|--remove] (--index PATH|--source SOURCE)
       vdlimit --list [--json|--format prometheus] (MOUNTPOINT...|--index PATH|--source SOURCE)

Shows or changes the disk limits of a context on vxfs mounts.

  -x, --xid XID         the context (a number, or 'self': the caller's own)
  -s, --set NAME=VALUE  set a limit; NAME is space_total (KiB), inodes_total
                        or reserved (percent); space_used and inodes_used are
                        accepted and ignored (vxfs counts usage itself).
                        VALUE: decimal, 0x hex or 0 octal; -1 = unlimited
  -d, --remove          remove the context's limits (usage is still counted)
  -l, --list            every context with limits, as xfs_quota report -p -b -i
      --json            machine-readable output (showing and --list)
      --format FORMAT   --list's format: text (default), json (= --json), or
                        prometheus (the text exposition format, for
                        node_exporter's textfile collector: used and limit
                        bytes and inodes per context, reserved as a ratio)
  -f, --flags FLAGS     accepted for util-vserver compatibility; only 0 (KiB)
      --index PATH      work offline on this index (no daemon running)
      --source SOURCE   work offline on SOURCE's default index SOURCE.vxfs.db
      --recount         offline: count usage by walking SOURCE (needs --source)
                        and store it as the index's counters (unless mounted)
  -h, --help            this text

Without --set, --remove or --list, prints per path:
  XID PATH, space_used=, space_total=, inodes_used=, inodes_total=, reserved=
(space in KiB, -1 = unlimited, 'unknown' = usage not known offline).
Exit status: 0 success, 1 failure, 2 bad usage.
";

pub const SPECS: &[OptSpec] = &[
    OptSpec::valued("xid", Some('x'), Some("xid")),
    OptSpec::valued("set", Some('s'), Some("set")),
    OptSpec::flag("remove", Some('d'), Some("remove")),
    OptSpec::flag("list", Some('l'), Some("list")),
    OptSpec::flag("json", None, Some("json")),
    OptSpec::valued("format", None, Some("format")),
    OptSpec::valued("flags", Some('f'), Some("flags")),
    OptSpec::valued("index", None, Some("index")),
    OptSpec::valued("source", None, Some("source")),
    OptSpec::flag("recount", None, Some("recount")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

use vxfs::dlimit::{MAX_INODES, MAX_SPACE_KIB};
/// util-vserver's `CDLIM_INFINITY`, read as unlimited too.
const CDLIM_INFINITY: i128 = 0xFFFF_FFFF;

/// Which context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidArg {
    /// This one.
    Num(u32),
    /// `self`: the caller's own, as the mount decides it.
    Own,
}

/// A value given with `--set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// `-1`.
    Unlimited,
    /// A number.
    Of(u64),
}

impl Value {
    fn field(v: Option<Value>) -> Field {
        match v {
            None => Field::Keep,
            Some(Value::Unlimited) => Field::Unlimited,
            Some(Value::Of(n)) => Field::Value(n),
        }
    }
}

/// The `--set` values; each field at most once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Ignored: vxfs counts usage itself.
    pub space_used: Option<Value>,
    /// KiB.
    pub space_total: Option<Value>,
    /// Ignored: vxfs counts usage itself.
    pub inodes_used: Option<Value>,
    /// Inodes.
    pub inodes_total: Option<Value>,
    /// Percent.
    pub reserved: Option<u8>,
}

/// The names `--set` knows.
const LIMIT_NAMES: &str = "space_used, space_total, inodes_used, inodes_total, reserved";

impl Settings {
    /// Adds one `NAME=VALUE`.
    pub fn add(&mut self, arg: &str) -> Result<(), UsageError> {
        let (name, text) = arg
            .split_once('=')
            .ok_or_else(|| UsageError::new(format!("--set '{arg}': expected NAME=VALUE")))?;
        let dup = || UsageError::new(format!("value already set: {name}"));
        let bad = |why: &str| UsageError::new(format!("--set {name}: bad value '{text}': {why}"));
        let number = strtol0(text);
        let value = |max: u64| -> Result<Value, UsageError> {
            match number {
                None => Err(bad("not a number (decimal, 0x hex, 0 octal, or -1)")),
                Some(-1 | CDLIM_INFINITY) => Ok(Value::Unlimited),
                Some(n) if n < 0 => Err(bad("negative (-1 alone means unlimited)")),
                Some(n) => u64::try_from(n)
                    .ok()
                    .filter(|&n| n <= max)
                    .map(Value::Of)
                    .ok_or_else(|| bad(&format!("too large (at most {max})"))),
            }
        };
        let slot = match name {
            "space_used" => &mut self.space_used,
            "space_total" => &mut self.space_total,
            "inodes_used" => &mut self.inodes_used,
            "inodes_total" => &mut self.inodes_total,
            "reserved" => {
                if self.reserved.is_some() {
                    return Err(dup());
                }
                let pct = number
                    .and_then(|n| u8::try_from(n).ok())
                    .filter(|&n| n <= 100)
                    .ok_or_else(|| bad("expected a percentage 0..100"))?;
                self.reserved = Some(pct);
                return Ok(());
            }
            _ => {
                return Err(UsageError::new(format!(
                    "unknown limit '{name}' (known: {LIMIT_NAMES})"
                )));
            }
        };
        if slot.is_some() {
            return Err(dup());
        }
        let max = if name.starts_with("space") {
            MAX_SPACE_KIB
        } else {
            MAX_INODES
        };
        *slot = Some(value(max)?);
        Ok(())
    }

    /// util-vserver's consistency check: usage given above its limit.
    fn check(&self) -> Result<(), UsageError> {
        for (used, total, what) in [
            (self.space_used, self.space_total, "space"),
            (self.inodes_used, self.inodes_total, "inodes"),
        ] {
            if let (Some(Value::Of(u)), Some(Value::Of(t))) = (used, total) {
                if u > t {
                    return Err(UsageError::new(format!(
                        "{what}_used ({u}) is above {what}_total ({t})"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The fields that are accepted but ignored.
    fn ignored(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.space_used.is_some() {
            v.push("space_used");
        }
        if self.inodes_used.is_some() {
            v.push("inodes_used");
        }
        v
    }

    /// Applies the settings to a current limit (offline).
    fn apply(&self, current: Limit) -> Limit {
        Limit {
            space: Value::field(self.space_total)
                .apply(current.space.map(|b| b / 1024))
                .map(|kib| kib.saturating_mul(1024)),
            inodes: Value::field(self.inodes_total).apply(current.inodes),
            reserved: self.reserved.unwrap_or(current.reserved),
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Print a context's limits.
    Show(XidArg),
    /// Set a context's limits.
    Set(u32, Settings),
    /// Remove a context's limits.
    Remove(u32),
    /// Print every context's limits.
    List,
}

/// Where the limits are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Through the daemons of these mounts.
    Mounts(Vec<PathBuf>),
    /// Directly in an index.
    Offline {
        /// The index file.
        index: PathBuf,
        /// The tree, when known (`--source`).
        source: Option<PathBuf>,
    },
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// What to do.
    pub action: Action,
    /// Where.
    pub target: Target,
    /// `--json`.
    pub json: bool,
    /// `--format prometheus` (with `--list`).
    pub prometheus: bool,
    /// `--recount`.
    pub recount: bool,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(UsageError::new(message))
}

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<Options, CliError> {
    let mut xid = None;
    let mut settings = Settings::default();
    let (mut set, mut remove, mut list, mut json, mut recount) =
        (false, false, false, false, false);
    let mut prometheus = false;
    let (mut index, mut source) = (None, None);
    let mut paths = Vec::new();
    for arg in args::parse(SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("xid", Some(v)) => {
                if xid.is_some() {
                    return Err(usage("--xid given twice"));
                }
                let text = args::text("--xid", &v)?;
                xid = Some(if text == "self" {
                    XidArg::Own
                } else {
                    XidArg::Num(parse_xid("--xid", text)?)
                });
            }
            Arg::Opt("set", Some(v)) => {
                set = true;
                settings.add(args::text("--set", &v)?)?;
            }
            Arg::Opt("remove", _) => remove = true,
            Arg::Opt("list", _) => list = true,
            Arg::Opt("json", _) => json = true,
            Arg::Opt("format", Some(v)) => match args::text("--format", &v)? {
                "text" => {}
                "json" => json = true,
                "prometheus" => prometheus = true,
                other => {
                    return Err(usage(format!(
                        "--format {other}: one of text, json, prometheus"
                    )));
                }
            },
            Arg::Opt("recount", _) => recount = true,
            Arg::Opt("flags", Some(v)) => {
                if strtol0(args::text("--flags", &v)?) != Some(0) {
                    return Err(usage(
                        "--flags: only 0 is supported (space in KiB; vxfs keeps 64-bit values)",
                    ));
                }
            }
            Arg::Opt("index", Some(v)) => {
                if index.replace(PathBuf::from(v)).is_some() {
                    return Err(usage("--index given twice"));
                }
            }
            Arg::Opt("source", Some(v)) => {
                if source.replace(PathBuf::from(v)).is_some() {
                    return Err(usage("--source given twice"));
                }
            }
            Arg::Opt(..) => unreachable!("every option is matched"),
            Arg::Operand(p) => paths.push(PathBuf::from(p)),
        }
    }
    settings.check()?;
    let action = match (list, xid, set, remove) {
        (true, None, false, false) => Action::List,
        (true, ..) => {
            return Err(usage(
                "--list shows every context: it takes no --xid, --set or --remove",
            ));
        }
        (false, None, ..) => return Err(usage("no context given (--xid XID)")),
        (false, Some(_), true, true) => {
            return Err(usage("--set and --remove exclude each other"));
        }
        (false, Some(x), false, false) => Action::Show(x),
        (false, Some(XidArg::Own), ..) => {
            return Err(usage("--xid self only works for showing limits"));
        }
        (false, Some(XidArg::Num(x)), true, false) => Action::Set(x, settings),
        (false, Some(XidArg::Num(x)), false, true) => Action::Remove(x),
    };
    let showing = matches!(action, Action::Show(_) | Action::List);
    if json && !showing {
        return Err(usage("--json only applies when showing limits"));
    }
    if prometheus && (json || action != Action::List) {
        return Err(usage(
            "--format prometheus is --list's (every context), without --json",
        ));
    }
    if recount && !showing {
        return Err(usage("--recount only applies when showing limits"));
    }
    if recount && source.is_none() {
        return Err(usage("--recount needs --source SOURCE (the tree to count)"));
    }
    let target = match (index, source) {
        (None, None) => {
            if paths.is_empty() {
                return Err(usage(
                    "no mount point given (or --index PATH / --source SOURCE to work offline)",
                ));
            }
            Target::Mounts(paths)
        }
        (index, source) => {
            if !paths.is_empty() {
                return Err(usage(
                    "give either mount points or --index/--source, not both",
                ));
            }
            if action == Action::Show(XidArg::Own) {
                return Err(usage(
                    "--xid self needs a mount point (the mount decides the caller's context)",
                ));
            }
            let index = index.unwrap_or_else(|| {
                vxfs::index::default_path(source.as_deref().expect("one of the two"))
            });
            Target::Offline { index, source }
        }
    };
    Ok(Options {
        action,
        target,
        json,
        prometheus,
        recount,
    })
}

/// One context's figures as shown: space in KiB; `None` totals are
/// unlimited, `None` usage is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The context.
    pub xid: u32,
    /// KiB allocated.
    pub space_used: Option<u64>,
    /// KiB limit.
    pub space_total: Option<u64>,
    /// Inodes used.
    pub inodes_used: Option<u64>,
    /// Inode limit.
    pub inodes_total: Option<u64>,
    /// Percent reserved.
    pub reserved: u8,
}

impl From<Entry> for Report {
    fn from(e: Entry) -> Report {
        Report {
            xid: e.xid,
            space_used: Some(e.space_used),
            space_total: e.space_total,
            inodes_used: Some(e.inodes_used),
            inodes_total: e.inodes_total,
            reserved: e.reserved,
        }
    }
}

impl Report {
    fn offline(xid: Xid, limit: Limit, usage: Option<Usage>) -> Report {
        Report {
            xid: xid.0,
            space_used: usage.map(|u| u.space / 1024),
            space_total: limit.space.map(|b| b / 1024),
            inodes_used: usage.map(|u| u.inodes),
            inodes_total: limit.inodes,
            reserved: limit.reserved,
        }
    }
}

fn total_text(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |n| n.to_string())
}

fn used_text(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_string(), |n| n.to_string())
}

/// util-vserver's block for one path.
pub fn format_block(name: &OsStr, r: &Report) -> Vec<u8> {
    let mut out = format!("{} ", r.xid).into_bytes();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(
        format!(
            "\nspace_used={}\nspace_total={}\ninodes_used={}\ninodes_total={}\nreserved={}\n",
            used_text(r.space_used),
            total_text(r.space_total),
            used_text(r.inodes_used),
            total_text(r.inodes_total),
            r.reserved
        )
        .as_bytes(),
    );
    out
}

/// One xfs_quota column group: used, soft, hard, warnings, grace.
fn quota_columns(used: Option<u64>, total: Option<u64>) -> String {
    let over = total.is_some_and(|hard| used.is_some_and(|u| u > hard));
    let grace = if over { "[--none--]" } else { "[--------]" };
    // xfs_quota prints 0 for no limit; here 0 is a limit (nothing may be
    // used), so no limit reads as such.
    let hard = total.map_or_else(|| "unlimited".to_string(), |h| h.to_string());
    format!(
        " {:>10} {:>10} {:>10}     {:02} {:>9}",
        used_text(used),
        hard,
        hard,
        0,
        grace
    )
}

/// xfs_quota's `report -p -b -i` for one filesystem: nothing when there
/// are no rows, else the header, one row per context and a blank line.
pub fn format_report(dir: &str, device: &str, rows: &[Report]) -> String {
    format_report_with(dir, device, rows, false)
}

/// A context's space use against its limit as a bar (`[####......]  40%`,
/// `!` past the limit's end); none without a limit or a known usage.
fn usage_bar(r: &Report) -> Option<String> {
    let (used, total) = (r.space_used?, r.space_total?);
    if total == 0 {
        return None;
    }
    const WIDTH: u64 = 20;
    let pct = used.saturating_mul(100) / total;
    let filled = (used.saturating_mul(WIDTH) / total).min(WIDTH) as usize;
    let fill = if used > total { "!" } else { "#" };
    Some(format!(
        "  [{}{}] {pct:>3}%",
        fill.repeat(filled),
        ".".repeat(WIDTH as usize - filled)
    ))
}

/// [`format_report`], with each row's [`usage_bar`] after it when `bars`
/// (on a terminal; the table stays xfs_quota's for scripts).
pub fn format_report_with(dir: &str, device: &str, rows: &[Report], bars: bool) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let blank = " ".repeat(20);
    let mut s = format!("Project quota on {dir} ({device})\n");
    s += &format!("{:10}{blank} Blocks {blank}{blank} Inodes {blank}\n", "");
    s += "Project ID       Used       Soft       Hard    Warn/Grace     ";
    // xfsprogs really prints "Warn/ Grace" for inodes.
    s += "      Used       Soft       Hard    Warn/ Grace     \n";
    s += &format!(
        "{} {} {} \n",
        "-".repeat(10),
        "-".repeat(50),
        "-".repeat(50)
    );
    for r in rows {
        s += &format!("#{:<9}", r.xid);
        s += &quota_columns(r.space_used, r.space_total);
        s += &quota_columns(r.inodes_used, r.inodes_total);
        if let Some(bar) = usage_bar(r).filter(|_| bars) {
            s += &bar;
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------- online

/// Which vroot socket a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Guest,
}

/// A connection to one mount's daemon.
#[derive(Debug)]
struct Online {
    client: Client,
    role: Role,
    mount: MountEntry,
}

/// The hint for reaching the limits without a daemon.
const OFFLINE_HINT: &str = "to work on the index offline, use --index PATH or --source SOURCE";

impl Online {
    fn connect(path: &Path, table: &MountTable) -> anyhow::Result<Online> {
        let st = rustix::fs::stat(path)
            .map_err(std::io::Error::from)
            .context("cannot examine it")?;
        let mount = table.vxfs_mount_of(path, st.st_dev)?.clone();
        let dir = vroot::dir_for_dev(st.st_dev);
        let (admin, guest) = (dir.join("admin.sock"), dir.join("guest.sock"));
        // Root administers through admin.sock; anyone else, or root in a
        // guest that only sees guest.sock, reads through guest.sock.
        let (socket, role) = if rustix::process::geteuid().is_root() && admin.exists() {
            (admin, Role::Admin)
        } else if guest.exists() {
            (guest, Role::Guest)
        } else {
            bail!(
                "no vxfs daemon serves disk limits for this mount ({} has no sockets): the \
                 mount has no tagging or dlimits (-o xid=..., dlimits=on), or its daemon is not \
                 running; {OFFLINE_HINT}",
                dir.display()
            );
        };
        let client = Client::connect(&socket).map_err(|e| match e {
            vroot::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => anyhow!(
                "the vxfs daemon is not running (nobody listens on {}); {OFFLINE_HINT}",
                socket.display()
            ),
            e => anyhow::Error::new(e).context(format!("connecting to {}", socket.display())),
        })?;
        Ok(Online {
            client,
            role,
            mount,
        })
    }

    /// Explains a refusal or failure of a request about `xid`.
    fn explain(&self, e: vroot::Error, xid: XidArg) -> anyhow::Error {
        match e {
            vroot::Error::Refused { errno, message } if errno == libc::ESRCH => match xid {
                // "no disk limit (and no usage) for context X", as the
                // daemon says.
                XidArg::Num(_) => anyhow!("{message}"),
                XidArg::Own => anyhow!("no limit and no usage for your context"),
            },
            vroot::Error::Refused { errno, message } if errno == libc::EPERM => {
                if self.role == Role::Guest {
                    anyhow!(
                        "not permitted: {message} (setting or removing limits, and reading \
                         other contexts', needs root on the host)"
                    )
                } else {
                    anyhow!("not permitted: {message}")
                }
            }
            e @ vroot::Error::Refused { .. } => anyhow::Error::new(e).context("the daemon refused"),
            e => anyhow::Error::new(e).context("talking to the vxfs daemon"),
        }
    }

    fn call(&mut self, request: &Request, xid: XidArg) -> anyhow::Result<Vec<Entry>> {
        self.client.call(request).map_err(|e| self.explain(e, xid))
    }

    fn get(&mut self, xid: XidArg) -> anyhow::Result<Report> {
        let request = match xid {
            XidArg::Num(x) => Request::Get(Some(x)),
            XidArg::Own => Request::Get(None),
        };
        let entries = self.call(&request, xid)?;
        let entry = entries
            .first()
            .ok_or_else(|| anyhow!("the daemon answered with no entry"))?;
        Ok(Report::from(*entry))
    }

    fn list(&mut self) -> anyhow::Result<Vec<Report>> {
        match self.client.call(&Request::List) {
            Ok(entries) => Ok(entries.into_iter().map(Report::from).collect()),
            // A guest's list is its own context, which has no limit.
            Err(vroot::Error::Refused { errno, .. }) if errno == libc::ESRCH => Ok(Vec::new()),
            Err(e) => Err(self.explain(e, XidArg::Own)),
        }
    }

    fn set(&mut self, xid: u32, s: &Settings) -> anyhow::Result<()> {
        let request = Request::Set {
            xid,
            space_total: Value::field(s.space_total),
            inodes_total: Value::field(s.inodes_total),
            reserved: s.reserved,
        };
        self.call(&request, XidArg::Num(xid)).map(drop)
    }

    fn remove(&mut self, xid: u32) -> anyhow::Result<()> {
        self.call(&Request::Remove(xid), XidArg::Num(xid)).map(drop)
    }
}

// --------------------------------------------------------------- offline

/// An index opened directly.
#[derive(Debug)]
struct Offline {
    index: Index,
    path: PathBuf,
    source: Option<PathBuf>,
}

impl Offline {
    fn open(index: &Path, source: Option<&Path>, action: &Action) -> anyhow::Result<Offline> {
        if let Some(src) = source {
            let meta =
                std::fs::metadata(src).with_context(|| format!("source {}", src.display()))?;
            if !meta.is_dir() {
                bail!("source {} is not a directory", src.display());
            }
        }
        let writing = matches!(action, Action::Set(..) | Action::Remove(_));
        if !index.exists() && !writing {
            bail!(
                "index {} does not exist: no limits were set offline and no mount created it \
                 yet (vxfs creates it at the first mount)",
                index.display()
            );
        }
        if vxfs::index::in_use(index) {
            if writing {
                bail!(
                    "index {} is in use by a mounted vxfs, which reads limits only when \
                     mounting; change them online with `vdlimit --xid XID --set ... MOUNTPOINT`",
                    index.display()
                );
            }
            eprintln!(
                "vdlimit: note: index {} is in use by a mounted vxfs: ask its mount point for \
                 live figures",
                index.display()
            );
        }
        let (opened, rebuilt) = Index::open(index)?;
        if rebuilt {
            eprintln!(
                "vdlimit: warning: index {} was corrupt: it was moved aside (*.corrupt-*) and a \
                 new one created; its limits must be set again",
                index.display()
            );
        }
        Ok(Offline {
            index: opened,
            path: index.to_path_buf(),
            source: source.map(Path::to_path_buf),
        })
    }

    /// The name shown for this target.
    fn name(&self) -> &Path {
        self.source.as_deref().unwrap_or(&self.path)
    }

    /// Usage per context: recounted, saved clean, or unknown (`None`).
    fn usage(&self, recount: bool) -> anyhow::Result<Option<HashMap<Xid, Usage>>> {
        if recount {
            let source = self.source.as_deref().expect("parse requires --source");
            let root = rustix::fs::open(
                source,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .map_err(std::io::Error::from)
            .with_context(|| format!("opening {}", source.display()))?;
            // Claimed meanwhile, so that no mount starts from the old
            // counters while these are counted and stored.
            let claim = (!vxfs::index::in_use(&self.path))
                .then(|| vxfs::index::claim(&self.path).ok())
                .flatten();
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            // Holding the claim and with no daemon serving the tree (not
            // even one without accounting), what a crash left is removed,
            // as the next mount would.
            let unserved = claim.is_some() && vxfs::control::find(source)?.is_none();
            let seen = std::sync::atomic::AtomicU64::new(0);
            let counts = crate::progress::counting("recounting usage", "inodes", &seen, || {
                if unserved {
                    vxfs::recount::recount_sweeping_seen(root.as_fd(), true, threads, &seen).map(
                        |(counts, swept)| {
                            if swept > 0 {
                                eprintln!(
                                    "vdlimit: removed {swept} temporary names left by a crash"
                                );
                            }
                            counts
                        },
                    )
                } else {
                    vxfs::recount::recount_seen(root.as_fd(), true, threads, &seen)
                }
            })
            .map_err(std::io::Error::from)
            .with_context(|| format!("recounting usage under {}", source.display()))?;
            match claim {
                Some(_claim) => {
                    let (mut index, _) = Index::open(&self.path)?;
                    let usage: Vec<_> = counts.iter().map(|(x, u)| (*x, *u)).collect();
                    index.save_usage(&usage, true)?;
                    eprintln!(
                        "vdlimit: stored the recounted usage in {}: the next mount starts from it",
                        self.path.display()
                    );
                }
                None => eprintln!(
                    "vdlimit: note: not stored: {} is in use by a mounted vxfs, whose live \
                     counters win",
                    self.path.display()
                ),
            }
            return Ok(Some(counts));
        }
        match self.index.clean_usage()? {
            Some(saved) => Ok(Some(saved.into_iter().collect())),
            None => {
                eprintln!(
                    "vdlimit: note: usage unknown: index {} holds no clean counters (its tree is \
                     mounted, the last mount did not end cleanly, or it was never mounted); \
                     --recount --source SOURCE counts the tree",
                    self.path.display()
                );
                Ok(None)
            }
        }
    }

    fn limit(&self, xid: u32) -> anyhow::Result<Option<Limit>> {
        Ok(self
            .index
            .limits()?
            .into_iter()
            .find(|(x, _)| x.0 == xid)
            .map(|(_, l)| l))
    }

    fn get(&self, xid: u32, recount: bool) -> anyhow::Result<Report> {
        let limit = self.limit(xid)?.ok_or_else(|| {
            anyhow!(
                "no limit for context {xid} in index {}",
                self.path.display()
            )
        })?;
        let usage = self.usage(recount)?;
        Ok(Report::offline(
            Xid(xid),
            limit,
            usage.map(|u| u.get(&Xid(xid)).copied().unwrap_or_default()),
        ))
    }

    fn list(&self, recount: bool) -> anyhow::Result<Vec<Report>> {
        let limits = self.index.limits()?;
        if limits.is_empty() {
            return Ok(Vec::new());
        }
        let usage = self.usage(recount)?;
        Ok(limits
            .into_iter()
            .map(|(xid, limit)| {
                let used = usage
                    .as_ref()
                    .map(|u| u.get(&xid).copied().unwrap_or_default());
                Report::offline(xid, limit, used)
            })
            .collect())
    }

    fn set(&self, xid: u32, s: &Settings) -> anyhow::Result<()> {
        let current = self.limit(xid)?.unwrap_or_default();
        self.index.set_limit(Xid(xid), Some(s.apply(current)))?;
        Ok(())
    }

    fn remove(&self, xid: u32) -> anyhow::Result<()> {
        if self.limit(xid)?.is_none() {
            bail!(
                "no limit for context {xid} in index {}",
                self.path.display()
            );
        }
        self.index.set_limit(Xid(xid), None)?;
        Ok(())
    }
}

// ------------------------------------------------------------------- run

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `--list --format prometheus`: per tree (mount point or index, and its
/// source) and context, the used and limit bytes and inodes and the
/// reserved ratio, each family once with its HELP and TYPE. A limit or a
/// usage that is not known is left out (no sample, not a fake 0).
pub fn format_prometheus(trees: &[(String, String, Vec<Report>)]) -> String {
    type Value = fn(&Report) -> Option<f64>;
    let families: [(&str, &str, Value); 5] = [
        (
            "vxfs_context_space_used_bytes",
            "Bytes a context's files use on a vxfs tree.",
            |r| r.space_used.map(|k| (k * 1024) as f64),
        ),
        (
            "vxfs_context_space_limit_bytes",
            "A context's space limit on a vxfs tree (absent: unlimited).",
            |r| r.space_total.map(|k| (k * 1024) as f64),
        ),
        (
            "vxfs_context_inodes_used",
            "Inodes a context's files use on a vxfs tree.",
            |r| r.inodes_used.map(|n| n as f64),
        ),
        (
            "vxfs_context_inodes_limit",
            "A context's inode limit on a vxfs tree (absent: unlimited).",
            |r| r.inodes_total.map(|n| n as f64),
        ),
        (
            "vxfs_context_reserved_ratio",
            "The share of a context's space limit kept for root in it.",
            |r| Some(f64::from(r.reserved) / 100.0),
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (tree, source, rows) in trees {
            for r in rows {
                if let Some(v) = value(r) {
                    out.push_str(&format!(
                        "{name}{{tree=\"{}\",source=\"{}\",xid=\"{}\"}} {v}\n",
                        label(tree),
                        label(source),
                        r.xid
                    ));
                }
            }
        }
    }
    out
}

/// Where a `--list --json` object's contexts are: a mount (its point and
/// device), or an index offline (and its SOURCE, if given).
#[derive(serde::Serialize)]
struct Where {
    mount: Option<String>,
    source: Option<String>,
    index: Option<String>,
}

/// `--json`'s output: per target, one context's block or a list.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum JsonOut {
    /// One context, its path first.
    Block {
        path: String,
        #[serde(flatten)]
        report: Report,
    },
    /// `--list`: where, then every context.
    List {
        #[serde(flatten)]
        at: Where,
        contexts: Vec<Report>,
    },
}

/// What one target produced.
enum Shown {
    Nothing,
    Block(Report),
    List {
        header_dir: String,
        header_dev: String,
        json_where: Where,
        rows: Vec<Report>,
    },
}

fn run_online(
    opts: &Options,
    path: &Path,
    table: &std::io::Result<MountTable>,
) -> anyhow::Result<Shown> {
    let table = table
        .as_ref()
        .map_err(|e| anyhow!("reading /proc/self/mountinfo: {e}"))?;
    let mut online = Online::connect(path, table)?;
    Ok(match &opts.action {
        Action::Show(xid) => Shown::Block(online.get(*xid)?),
        Action::Set(xid, s) => {
            online.set(*xid, s)?;
            Shown::Nothing
        }
        Action::Remove(xid) => {
            online.remove(*xid)?;
            Shown::Nothing
        }
        Action::List => {
            let rows = online.list()?;
            let m = &online.mount;
            Shown::List {
                header_dir: lossy(&m.mount_point),
                header_dev: m.source.clone(),
                json_where: Where {
                    mount: Some(lossy(&m.mount_point)),
                    source: Some(m.source.clone()),
                    index: None,
                },
                rows,
            }
        }
    })
}

fn run_offline(opts: &Options, index: &Path, source: Option<&Path>) -> anyhow::Result<Shown> {
    let offline = Offline::open(index, source, &opts.action)?;
    Ok(match &opts.action {
        Action::Show(XidArg::Num(xid)) => Shown::Block(offline.get(*xid, opts.recount)?),
        Action::Show(XidArg::Own) => unreachable!("parse refuses self offline"),
        Action::Set(xid, s) => {
            offline.set(*xid, s)?;
            Shown::Nothing
        }
        Action::Remove(xid) => {
            offline.remove(*xid)?;
            Shown::Nothing
        }
        Action::List => Shown::List {
            header_dir: lossy(offline.name()),
            header_dev: lossy(&offline.path),
            json_where: Where {
                mount: None,
                source: source.map(lossy),
                index: Some(lossy(index)),
            },
            rows: offline.list(opts.recount)?,
        },
    })
}

/// Runs vdlimit.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let opts = parse(argv)?;
    if let Action::Set(_, s) = &opts.action {
        for name in s.ignored() {
            eprintln!("vdlimit: note: {name} is ignored: vxfs counts usage itself");
        }
    }
    let (names, table) = match &opts.target {
        Target::Mounts(paths) => (paths.clone(), Some(MountTable::read())),
        Target::Offline { index, source } => {
            (vec![source.clone().unwrap_or_else(|| index.clone())], None)
        }
    };
    let mut failed = false;
    let mut json = Vec::new();
    let mut metrics = Vec::new();
    for name in names {
        let result = match &opts.target {
            Target::Offline { index, source } => run_offline(&opts, index, source.as_deref()),
            Target::Mounts(_) => run_online(&opts, &name, table.as_ref().expect("read above")),
        };
        let shown = match result {
            Ok(shown) => shown,
            Err(e) => {
                // Offline errors name the index or SOURCE themselves.
                let e = match opts.target {
                    Target::Offline { .. } => e,
                    Target::Mounts(_) => e.context(lossy(&name)),
                };
                out.flush()?;
                eprintln!("vdlimit: {e:#}");
                failed = true;
                continue;
            }
        };
        match shown {
            Shown::Nothing => {}
            Shown::Block(report) if opts.json => json.push(JsonOut::Block {
                path: lossy(&name),
                report,
            }),
            Shown::Block(r) => out.write_all(&format_block(name.as_os_str(), &r))?,
            Shown::List {
                header_dir,
                header_dev,
                rows,
                ..
            } if opts.prometheus => metrics.push((header_dir, header_dev, rows)),
            Shown::List {
                json_where, rows, ..
            } if opts.json => json.push(JsonOut::List {
                at: json_where,
                contexts: rows,
            }),
            Shown::List {
                header_dir,
                header_dev,
                rows,
                ..
            } => {
                if rows.is_empty() {
                    eprintln!("vdlimit: {}: no context has limits", lossy(&name));
                }
                use std::io::IsTerminal;
                let bars = std::io::stdout().is_terminal();
                out.write_all(
                    format_report_with(&header_dir, &header_dev, &rows, bars).as_bytes(),
                )?;
            }
        }
    }
    if opts.json {
        let text = serde_json::to_string(&json).map_err(anyhow::Error::from)?;
        writeln!(out, "{text}")?;
    }
    if opts.prometheus {
        out.write_all(format_prometheus(&metrics).as_bytes())?;
    }
    Ok(if failed {
        Outcome::SomeFailed
    } else {
        Outcome::Success
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn usage_bars() {
        let r = |used, total| Report {
            xid: 5,
            space_used: used,
            space_total: total,
            inodes_used: Some(1),
            inodes_total: None,
            reserved: 0,
        };
        assert_eq!(
            usage_bar(&r(Some(40), Some(100))).unwrap(),
            "  [########............]  40%"
        );
        assert_eq!(
            usage_bar(&r(Some(150), Some(100))).unwrap(),
            "  [!!!!!!!!!!!!!!!!!!!!] 150%"
        );
        assert_eq!(usage_bar(&r(Some(40), None)), None);
        assert_eq!(usage_bar(&r(None, Some(100))), None);
        let plain = format_report("/m", "/s", &[r(Some(40), Some(100))]);
        let barred = format_report_with("/m", "/s", &[r(Some(40), Some(100))], true);
        assert!(!plain.contains("%"), "{plain}");
        assert!(
            barred.contains("  [########............]  40%\n"),
            "{barred}"
        );
    }

    #[test]
    fn prometheus_labels_are_escaped() {
        assert_eq!(label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let r = Report {
            xid: 7,
            space_used: None,
            space_total: Some(1),
            inodes_used: Some(2),
            inodes_total: None,
            reserved: 5,
        };
        let text = format_prometheus(&[("/t \"x\"".into(), "/s".into(), vec![r])]);
        assert!(text.contains("vxfs_context_space_limit_bytes{tree=\"/t \\\"x\\\"\",source=\"/s\",xid=\"7\"} 1024\n"), "{text}");
        assert!(
            !text.contains("vxfs_context_space_used_bytes{"),
            "unknown usage: no sample"
        );
        assert!(text.contains(
            "vxfs_context_reserved_ratio{tree=\"/t \\\"x\\\"\",source=\"/s\",xid=\"7\"} 0.05\n"
        ));
    }

    #[test]
    fn parses_actions_and_targets() {
        let o = parse(words("--xid 5 /mnt")).unwrap();
        assert_eq!(o.action, Action::Show(XidArg::Num(5)));
        assert_eq!(o.target, Target::Mounts(vec!["/mnt".into()]));
        let o = parse(words(
            "-x 0x10 -s space_total=100 -s inodes_total=-1 -s reserved=5 /a /b",
        ))
        .unwrap();
        assert_eq!(
            o.action,
            Action::Set(
                16,
                Settings {
                    space_total: Some(Value::Of(100)),
                    inodes_total: Some(Value::Unlimited),
                    reserved: Some(5),
                    ..Settings::default()
                }
            )
        );
        assert_eq!(o.target, Target::Mounts(vec!["/a".into(), "/b".into()]));
        let o = parse(words("-x 5 -d --source /srv/s")).unwrap();
        assert_eq!(o.action, Action::Remove(5));
        assert_eq!(
            o.target,
            Target::Offline {
                index: "/srv/s.vxfs.db".into(),
                source: Some("/srv/s".into())
            }
        );
        let o = parse(words("--list --json --index /i.db")).unwrap();
        assert_eq!((o.action, o.json), (Action::List, true));
        assert_eq!(
            o.target,
            Target::Offline {
                index: "/i.db".into(),
                source: None
            }
        );
        let o = parse(words("-l --recount --source /s --index /i.db")).unwrap();
        assert!(o.recount);
        assert_eq!(
            parse(words("--xid self /m")).unwrap().action,
            Action::Show(XidArg::Own)
        );
        assert!(parse(words("-x 1 -f 0 /m")).is_ok());
        assert!(matches!(parse(words("--help")), Err(CliError::Help)));
    }

    #[test]
    fn rejects_bad_command_lines() {
        let table = [
            ("/mnt", "no context given (--xid XID)"),
            ("-x 5", "no mount point given"),
            (
                "-x 5 -s space_total=1 -d /m",
                "--set and --remove exclude each other",
            ),
            (
                "-x 5 -s space_total=abc /m",
                "--set space_total: bad value 'abc': not a number",
            ),
            (
                "-x 5 -s space_total=-2 /m",
                "--set space_total: bad value '-2': negative",
            ),
            (
                "-x 5 -s space_total=1.5 /m",
                "--set space_total: bad value '1.5'",
            ),
            (
                "-x 5 -s space_total=18014398509481984 /m",
                "--set space_total: bad value '18014398509481984': too large",
            ),
            (
                "-x 5 -s inodes_total=9223372036854775808 /m",
                "--set inodes_total: bad value",
            ),
            (
                "-x 5 -s reserved=101 /m",
                "--set reserved: bad value '101': expected a percentage",
            ),
            ("-x 5 -s reserved=-1 /m", "--set reserved: bad value '-1'"),
            (
                "-x 5 -s foo=1 /m",
                "unknown limit 'foo' (known: space_used,",
            ),
            (
                "-x 5 -s space_total /m",
                "--set 'space_total': expected NAME=VALUE",
            ),
            (
                "-x 5 -s space_total=1 -s space_total=2 /m",
                "value already set: space_total",
            ),
            (
                "-x 5 -s reserved=1 -s reserved=2 /m",
                "value already set: reserved",
            ),
            (
                "-x 5 -s space_used=10 -s space_total=5 /m",
                "space_used (10) is above space_total (5)",
            ),
            (
                "-x 5 -s inodes_used=3 -s inodes_total=2 /m",
                "inodes_used (3) is above inodes_total (2)",
            ),
            ("-x abc /m", "--xid: 'abc' is not a context number"),
            ("-x 4294967296 /m", "--xid: bad context number"),
            ("-x 1 -x 2 /m", "--xid given twice"),
            ("-x self -d /m", "--xid self only works for showing limits"),
            ("-x self --index /i", "--xid self needs a mount point"),
            ("-l -x 5 /m", "--list shows every context"),
            (
                "-x 5 -d --json /m",
                "--json only applies when showing limits",
            ),
            (
                "-x 5 --recount --index /i",
                "--recount needs --source SOURCE",
            ),
            (
                "-x 5 -s reserved=1 --recount --source /s",
                "--recount only applies when showing",
            ),
            (
                "-x 5 --index /i /m",
                "give either mount points or --index/--source, not both",
            ),
            ("-x 5 -f 1 /m", "--flags: only 0 is supported"),
            ("-x 5 --bogus /m", "unknown option '--bogus'"),
        ];
        for (line, want) in table {
            match parse(words(line)) {
                Err(CliError::Usage(e)) => {
                    assert!(e.to_string().starts_with(want), "{line:?}: got {e}")
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn used_values_are_accepted_and_ignored() {
        let mut s = Settings::default();
        s.add("space_used=10").unwrap();
        s.add("space_total=0x20").unwrap();
        s.add("inodes_total=4294967295").unwrap();
        assert_eq!(s.ignored(), vec!["space_used"]);
        assert_eq!(s.inodes_total, Some(Value::Unlimited), "CDLIM_INFINITY");
        let current = Limit {
            space: Some(1024 * 1024),
            inodes: Some(7),
            reserved: 3,
        };
        assert_eq!(
            s.apply(current),
            Limit {
                space: Some(32 * 1024),
                inodes: None,
                reserved: 3
            }
        );
        assert_eq!(
            Settings::default().apply(current),
            current,
            "keeps what is not set"
        );
    }

    fn report(
        xid: u32,
        used: Option<(u64, u64)>,
        space: Option<u64>,
        inodes: Option<u64>,
    ) -> Report {
        Report {
            xid,
            space_used: used.map(|u| u.0),
            space_total: space,
            inodes_used: used.map(|u| u.1),
            inodes_total: inodes,
            reserved: 0,
        }
    }

    #[test]
    fn block_format() {
        let r = Report {
            reserved: 5,
            ..report(42, Some((8, 1)), Some(64), None)
        };
        assert_eq!(
            String::from_utf8(format_block(OsStr::new("/mnt"), &r)).unwrap(),
            "42 /mnt\nspace_used=8\nspace_total=64\ninodes_used=1\ninodes_total=-1\nreserved=5\n"
        );
        let unknown = report(1, None, None, Some(3));
        assert_eq!(
            String::from_utf8(format_block(OsStr::new("s"), &unknown)).unwrap(),
            "1 s\nspace_used=unknown\nspace_total=-1\ninodes_used=unknown\ninodes_total=3\n\
             reserved=0\n"
        );
    }

    #[test]
    fn report_format_matches_xfs_quota() {
        assert_eq!(format_report("/m", "/s", &[]), "");
        let rows = [
            report(5, Some((8, 1)), Some(64), Some(3)),
            report(1234567890, Some((100, 4)), Some(64), None),
            report(7, None, None, None),
        ];
        let want = "\
Project quota on /mnt (/src)
                               Blocks                                          Inodes                     
Project ID       Used       Soft       Hard    Warn/Grace           Used       Soft       Hard    Warn/ Grace     
---------- -------------------------------------------------- -------------------------------------------------- 
#5                  8         64         64     00 [--------]          1          3          3     00 [--------]
#1234567890        100         64         64     00 [--none--]          4  unlimited  unlimited     00 [--------]
#7            unknown  unlimited  unlimited     00 [--------]    unknown  unlimited  unlimited     00 [--------]

";
        assert_eq!(format_report("/mnt", "/src", &rows), want);
    }

    #[test]
    fn json_fields() {
        let r = report(5, None, Some(64), None);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"xid":5,"space_used":null,"space_total":64,"inodes_used":null,"inodes_total":null,"reserved":0}"#
        );
    }
}

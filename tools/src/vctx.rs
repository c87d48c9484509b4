//! The tools that read and change a running context, with util-vserver's
//! names, options and formats (docs/VSERVER.md §10.5, §10.9): `vlimit`,
//! `vsched`, `vuname`, `vattribute`. Each takes `--xid` (`-c` for vlimit):
//! a context number or a guest's name. Settings mainline cannot express
//! print a warning each.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;

use anyhow::Context;
use vxfs_kernel::cgroup::RealFs;
use vxfs_kernel::config::{self, Rlimit, RlimitValue, Rlimits, SchedConfig};
use vxfs_kernel::names::{self, cflag};
use vxfs_kernel::registry::{Registry, State};

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(UsageError::new(m))
}

fn state_of(xid: Option<String>) -> anyhow::Result<State> {
    let xid = xid.context("--xid XID is needed (a context number or a guest's name)")?;
    crate::ctx::running(&Registry::open(), &xid)
}

fn warn(tool: &str, warnings: &[String]) {
    for w in warnings {
        eprintln!("{tool}: warning: {w}");
    }
}

/// Runs `PROGRAM ARGS` (util-vserver's tools chain into a program).
fn chain(tool: &str, program: &[OsString]) -> Result<Outcome, CliError> {
    let Some((cmd, rest)) = program.split_first() else {
        return Ok(Outcome::Success);
    };
    let e = std::process::Command::new(cmd).args(rest).exec();
    Err(anyhow::anyhow!("{tool}: exec {}: {e}", cmd.to_string_lossy()).into())
}

/// vlimit's usage.
pub const VLIMIT_USAGE: &str = "\
Usage: vlimit [--xid|-c XID] [-nd] [-a|--all] [[-MSH] --RESOURCE VALUE]*
              [--dir PATH [--missingok]] [--] [PROGRAM ARGS...]

Shows (-a) and sets the limits of running context XID, then runs PROGRAM.
-M, -S, -H set the minimum, soft or hard limit of the next --RESOURCE
(hard when none is given). RESOURCE is cpu, fsize, data, stack, core, rss,
nproc, nofile, memlock, as, locks, msgqueue, nsock, openfd, anon, shmem,
semary, nsems or dentry; VALUE a number (pages for memory) or inf. --dir
reads RESOURCE[.min|.soft|.hard] files (the command line wins). -n shows
resource numbers, -d decimal values.

nproc is the context's pids.max, rss its memory limit, the per-process
limits are set on each of its processes; see docs/SEMANTICS.md.

Options:
  -c, --xid XID      the context: a number or a guest's name
  -a, --all          show every limit
  -n                 show resource numbers instead of names
  -d                 show values in decimal
  -M, -S, -H         the next --RESOURCE sets the minimum, soft or hard
                     limit
  --RESOURCE VALUE   set a limit of RESOURCE (one of the above)
  --dir PATH         read RESOURCE[.min|.soft|.hard] files from PATH
  --missingok        a missing --dir is no error
  -h, --help         this text
";

/// One -a line: util-vserver's layout (name at 0, values at 10, 30, 50).
pub fn limit_line(name: &str, values: Values, decimal: bool) -> String {
    let mut line = format!("{name:<10}");
    for (i, v) in values.iter().enumerate() {
        while line.len() < 10 + 20 * i {
            line.push(' ');
        }
        line.push_str("  ");
        line.push_str(&match v {
            None => "N/A".to_string(),
            Some(None) => "inf".to_string(),
            Some(Some(n)) if decimal => n.to_string(),
            Some(Some(n)) => format!("0x{n:x}"),
        });
    }
    line
}

/// A limit's minimum, soft and hard value: `None` not available,
/// `Some(None)` unlimited.
type Values = [Option<Option<u64>>; 3];

/// The values vlimit -a shows for running context `state`: (name, id,
/// values).
fn live_limits(state: &State) -> anyhow::Result<Vec<(&'static str, u32, Values)>> {
    let fs = RealFs;
    let mut rows = Vec::new();
    let pids = state.cgroups.read_raw(&fs, "pids.max");
    if let Some(p) = pids {
        let v = p.parse::<u64>().ok();
        rows.push(("NPROC", 6, [None, Some(v), Some(v)]));
    }
    let (hard, soft) = state.cgroups.memory_limits(&fs);
    let pages = |b: Option<u64>| b.map(|b| b / vxfs_kernel::limits::PAGE);
    rows.push((
        "RSS",
        5,
        [None, Some(pages(soft.or(hard))), Some(pages(hard))],
    ));
    let proc_names = [
        ("CPU", 0, "Max cpu time", 1),
        ("FSIZE", 1, "Max file size", 1),
        ("DATA", 2, "Max data size", 1),
        ("STACK", 3, "Max stack size", 1),
        ("CORE", 4, "Max core file size", 1),
        ("NOFILE", 7, "Max open files", 1),
        ("MEMLOCK", 8, "Max locked memory", vxfs_kernel::limits::PAGE),
        ("LOCKS", 10, "Max file locks", 1),
        ("MSGQUEUE", 12, "Max msgqueue size", 1),
    ];
    let init = vxfs_kernel::live::init_limits(state)?;
    for (name, id, proc_name, unit) in proc_names {
        if let Some((_, soft, hard)) = init.iter().find(|(n, ..)| n == proc_name) {
            rows.push((
                name,
                id,
                [
                    None,
                    Some(soft.map(|v| v / unit)),
                    Some(hard.map(|v| v / unit)),
                ],
            ));
        }
    }
    rows.sort_by_key(|r| r.1);
    Ok(rows)
}

/// The options of `vlimit` (one per resource besides its own).
pub fn vlimit_specs() -> Vec<OptSpec> {
    let mut specs = vec![
        OptSpec::valued("xid", Some('c'), Some("xid")),
        OptSpec::flag("all", Some('a'), Some("all")),
        OptSpec::flag("numeric", Some('n'), None),
        OptSpec::flag("decimal", Some('d'), None),
        OptSpec::flag("min", Some('M'), None),
        OptSpec::flag("soft", Some('S'), None),
        OptSpec::flag("hard", Some('H'), None),
        OptSpec::valued("dir", None, Some("dir")),
        OptSpec::flag("missingok", None, Some("missingok")),
        OptSpec::flag("help", Some('h'), Some("help")),
    ];
    for (name, _) in config::RESOURCES {
        specs.push(OptSpec::valued(name, None, Some(name)));
    }
    specs
}

/// Runs `vlimit`.
pub fn vlimit(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let specs = vlimit_specs();
    let (mut xid, mut all, mut numeric, mut decimal) = (None, false, false, false);
    let (mut dir, mut missing_ok) = (None, false);
    let mut which = (false, false, false);
    let mut cli = Rlimits::new();
    let mut program = Vec::new();
    for arg in args::parse_before_program(&specs, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("xid", Some(v)) => xid = Some(args::text("--xid", &v)?.to_string()),
            Arg::Opt("all", _) => all = true,
            Arg::Opt("numeric", _) => numeric = true,
            Arg::Opt("decimal", _) => decimal = true,
            Arg::Opt("min", _) => which.0 = true,
            Arg::Opt("soft", _) => which.1 = true,
            Arg::Opt("hard", _) => which.2 = true,
            Arg::Opt("dir", Some(v)) => dir = Some(std::path::PathBuf::from(v)),
            Arg::Opt("missingok", _) => missing_ok = true,
            Arg::Opt(name, Some(v)) => {
                let t = args::text(name, &v)?;
                let value = RlimitValue::parse(t)
                    .ok_or_else(|| usage(format!("Can not parse limit '{t}'")))?;
                if which == (false, false, false) {
                    which.2 = true;
                }
                let e: &mut Rlimit = cli.entry(name.to_string()).or_default();
                if which.0 {
                    e.min = Some(value);
                }
                if which.1 {
                    e.soft = Some(value);
                }
                if which.2 {
                    e.hard = Some(value);
                }
                which = (false, false, false);
            }
            Arg::Operand(p) => program.push(p),
            _ => return Err(usage("bad arguments")),
        }
    }
    let state = state_of(xid)?;
    let mut limits = cli.clone();
    if let Some(d) = &dir {
        match config::rlimits_in(d) {
            Ok(from_dir) => {
                for (res, l) in from_dir {
                    limits.entry(res).or_insert(l);
                }
            }
            Err(config::ConfigError::Read { error, .. })
                if missing_ok && error.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::from(e).into()),
        }
    }
    if !limits.is_empty() {
        let warnings =
            vxfs_kernel::live::apply_limits(&state, &limits).map_err(anyhow::Error::from)?;
        crate::ctx::record(&state, "limit");
        warn("vlimit", &warnings);
    }
    if all {
        for (name, id, values) in live_limits(&state)? {
            let label = if numeric {
                id.to_string()
            } else {
                name.to_string()
            };
            writeln!(out, "{}", limit_line(&label, values, decimal))?;
        }
    }
    out.flush()?;
    chain("vlimit", &program)
}

/// vsched's usage.
pub const VSCHED_USAGE: &str = "\
Usage: vsched [--xid XID] [--fill-rate N] [--interval N] [--tokens N]
              [--tokens-min N] [--tokens-max N] [--prio-bias N]
              [--fill-rate2 N] [--interval2 N] [--idle-time] [--force]
              [--dir DIR [--missingok]] [--] [PROGRAM ARGS...]

Sets the token bucket of running context XID (its CFS bandwidth: with the
sched_hard flag, fill-rate/interval of a CPU), then runs PROGRAM. --dir
reads sched/-style files. Settings mainline cannot express print a
warning each. Changes apply at once (--force is accepted for util-vserver
compatibility).

Options:
  --xid XID          the context: a number or a guest's name
  --fill-rate N      tokens added per --interval
  --interval N       jiffies between fills
  --tokens N         tokens in the bucket now
  --tokens-min N     tokens a held context needs to run again
  --tokens-max N     the bucket's size
  --prio-bias N      priority bias (sched_prio)
  --fill-rate2 N, --interval2 N
                     the fill while the host is idle (--idle-time)
  --idle-time        use the idle-time fill too
  --cpu-id N, --bucket-id N
                     the per-CPU bucket to set
  --force            accepted (changes always apply at once)
  --dir DIR          read sched/-style files from DIR
  --missingok        a missing --dir is no error
  -h, --help         this text
";

/// The options of `vsched`.
pub fn vsched_specs() -> Vec<OptSpec> {
    let numbers = [
        "fill-rate",
        "interval",
        "tokens",
        "tokens-min",
        "tokens-max",
        "prio-bias",
        "fill-rate2",
        "interval2",
        "cpu-id",
        "bucket-id",
    ];
    let mut specs: Vec<OptSpec> = numbers
        .iter()
        .map(|n| OptSpec::valued(n, None, Some(n)))
        .collect();
    specs.extend([
        OptSpec::valued("xid", Some('c'), Some("xid")),
        OptSpec::flag("idle-time", None, Some("idle-time")),
        OptSpec::flag("force", None, Some("force")),
        OptSpec::valued("dir", None, Some("dir")),
        OptSpec::flag("missingok", None, Some("missingok")),
        OptSpec::flag("help", Some('h'), Some("help")),
    ]);
    specs
}

/// Runs `vsched`.
pub fn vsched(argv: Vec<OsString>, _out: &mut dyn Write) -> Result<Outcome, CliError> {
    let specs = vsched_specs();
    let (mut xid, mut dir, mut missing_ok) = (None, None, false);
    let mut s = SchedConfig::default();
    let mut program = Vec::new();
    let mut cpu_id = false;
    for arg in args::parse_before_program(&specs, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("xid", Some(v)) => xid = Some(args::text("--xid", &v)?.to_string()),
            Arg::Opt("idle-time", _) => s.idle_time = true,
            Arg::Opt("force", _) => {}
            Arg::Opt("dir", Some(v)) => dir = Some(std::path::PathBuf::from(v)),
            Arg::Opt("missingok", _) => missing_ok = true,
            Arg::Opt(name, Some(v)) => {
                let t = args::text(name, &v)?;
                let n: i64 = t
                    .parse()
                    .map_err(|_| usage(format!("--{name}: '{t}' is not a number")))?;
                let u = || {
                    u32::try_from(n).map_err(|_| usage(format!("--{name}: {n} is out of range")))
                };
                match name {
                    "fill-rate" => s.fill_rate = Some(u()?),
                    "interval" => s.interval = Some(u()?),
                    "tokens" => s.tokens = Some(u()?),
                    "tokens-min" => s.tokens_min = Some(u()?),
                    "tokens-max" => s.tokens_max = Some(u()?),
                    "prio-bias" => s.prio_bias = Some(n.clamp(-20, 19) as i32),
                    "fill-rate2" => s.fill_rate2 = Some(u()?),
                    "interval2" => s.interval2 = Some(u()?),
                    _ => cpu_id = true,
                }
            }
            Arg::Operand(p) => program.push(p),
            _ => return Err(usage("bad arguments")),
        }
    }
    if s.interval == Some(0) {
        return Err(usage("--interval 0"));
    }
    let state = state_of(xid)?;
    if let Some(d) = &dir {
        match config::sched_in(d) {
            Ok(f) => s = s.or(&f),
            Err(config::ConfigError::Read { error, .. })
                if missing_ok && error.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::from(e).into()),
        }
    }
    let mut warnings = vxfs_kernel::live::apply_sched(&Registry::open(), &state, &s)
        .map_err(anyhow::Error::from)?;
    crate::ctx::record(&state, "sched");
    if cpu_id {
        warnings
            .push("--cpu-id, --bucket-id: one bandwidth per context on mainline (ignored)".into());
    }
    warn("vsched", &warnings);
    chain("vsched", &program)
}

/// vuname's usage.
pub const VUNAME_USAGE: &str = "\
Usage: vuname [-g] --xid XID [TAG...]
       vuname -s --xid XID -t TAG=VALUE [-t TAG=VALUE...] [--] [PROGRAM ARGS...]
       vuname --dir DIR --xid XID [--missingok] [--] [PROGRAM ARGS...]

-g (the default) prints the TAGs of running context XID on one line, all
seven in this order when none is named: context sysname nodename release
version machine domainname ('context' is its configuration directory).
-s sets them: nodename and domainname (sysname, release, version, machine
cannot be set on mainline: a warning each). --dir reads them from files
named after the tags.

Options:
  --xid XID          the context: a number or a guest's name
  -g, --get          print TAGs (the default)
  -s, --set          set the -t TAGs
  -t, --tag TAG=VALUE
                     a tag to set
  --dir DIR          read the tags from files in DIR
  --missingok        a missing --dir is no error
  -h, --help         this text
";

const TAGS: [&str; 7] = [
    "context",
    "sysname",
    "nodename",
    "release",
    "version",
    "machine",
    "domainname",
];

/// The options of `vuname`.
pub const VUNAME_SPECS: &[OptSpec] = &[
    OptSpec::valued("xid", None, Some("xid")),
    OptSpec::flag("get", Some('g'), Some("get")),
    OptSpec::flag("set", Some('s'), Some("set")),
    OptSpec::valued("tag", Some('t'), Some("tag")),
    OptSpec::valued("dir", None, Some("dir")),
    OptSpec::flag("missingok", None, Some("missingok")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// Runs `vuname`.
pub fn vuname(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let (mut xid, mut set, mut dir, mut missing_ok) = (None, false, None, false);
    let (mut assignments, mut rest) = (Vec::new(), Vec::new());
    for arg in args::parse(VUNAME_SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("xid", Some(v)) => xid = Some(args::text("--xid", &v)?.to_string()),
            Arg::Opt("get", _) => {}
            Arg::Opt("set", _) => set = true,
            Arg::Opt("tag", Some(v)) => {
                let t = args::text("-t", &v)?;
                let (k, val) = t
                    .split_once('=')
                    .ok_or_else(|| usage(format!("-t {t}: expected TAG=VALUE")))?;
                assignments.push((k.to_string(), val.to_string()));
            }
            Arg::Opt("dir", Some(v)) => dir = Some(std::path::PathBuf::from(v)),
            Arg::Opt("missingok", _) => missing_ok = true,
            Arg::Operand(p) => rest.push(p),
            _ => return Err(usage("bad arguments")),
        }
    }
    let state = state_of(xid)?;
    if let Some(d) = &dir {
        for tag in TAGS {
            match std::fs::read_to_string(d.join(tag)) {
                Ok(v) => assignments.push((tag.to_string(), v.trim().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow::anyhow!("{}: {e}", d.join(tag).display()).into()),
            }
        }
        if !d.exists() && !missing_ok {
            return Err(anyhow::anyhow!("{}: No such file or directory", d.display()).into());
        }
        set = true;
    }
    if set {
        let (mut node, mut domain) = (None, None);
        for (k, v) in &assignments {
            match k.as_str() {
                "nodename" => node = Some(v.as_str()),
                "domainname" => domain = Some(v.as_str()),
                "context" => {}
                t if TAGS.contains(&t) => eprintln!(
                    "vuname: warning: {t}: not representable on mainline (only nodename and domainname are per guest)"
                ),
                t => return Err(usage(format!("unknown tag '{t}'"))),
            }
        }
        vxfs_kernel::live::set_uts(&state, node, domain).map_err(anyhow::Error::from)?;
        crate::ctx::record(&state, "uts");
        return chain("vuname", &rest);
    }
    for t in &rest {
        if !TAGS.contains(&t.to_string_lossy().as_ref()) {
            return Err(usage(format!("unknown tag '{}'", t.to_string_lossy())));
        }
    }
    let wanted: Vec<String> = if rest.is_empty() {
        TAGS.iter().map(|t| t.to_string()).collect()
    } else {
        rest.iter()
            .map(|t| t.to_string_lossy().into_owned())
            .collect()
    };
    let uts = vxfs_kernel::live::uts(&state).map_err(anyhow::Error::from)?;
    let value = |t: &str| match t {
        "context" => state.config.display().to_string(),
        "nodename" => uts[0].clone(),
        "domainname" => uts[1].clone(),
        "sysname" => uts[2].clone(),
        "release" => uts[3].clone(),
        "version" => uts[4].clone(),
        "machine" => uts[5].clone(),
        _ => "???".into(),
    };
    let line: Vec<String> = wanted.iter().map(|t| value(t)).collect();
    writeln!(out, "{}", line.join(" "))?;
    Ok(Outcome::Success)
}

/// vattribute's usage.
pub const VATTRIBUTE_USAGE: &str = "\
Usage: vattribute [--xid XID] --get
       vattribute [--xid XID] --set [--flag [~!]FLAG]... [--] [PROGRAM ARGS...]

--get prints the bounding set, context capabilities and flags of running
context XID, as util-vserver does (known names comma-joined, unknown bits
as ^N). --set changes what a running context can change on mainline: the
sched_pause flag (freezes or thaws it); capabilities and other flags are
fixed when its processes start (its configuration's bcapabilities,
ccapabilities and flags).

Options:
  --xid XID          the context: a number or a guest's name
  --get              print its capabilities and flags
  --set              change what --flag names
  --flag [~!]FLAG    set (or with ~ or !, clear) FLAG: sched_pause only
  --bcap, --ccap, --secure
                     refused: capabilities are fixed when its processes
                     start
  -h, --help         this text
";

/// The options of `vattribute`.
pub const VATTRIBUTE_SPECS: &[OptSpec] = &[
    OptSpec::valued("xid", None, Some("xid")),
    OptSpec::flag("get", None, Some("get")),
    OptSpec::flag("set", None, Some("set")),
    OptSpec::valued("flag", None, Some("flag")),
    OptSpec::valued("bcap", None, Some("bcap")),
    OptSpec::valued("ccap", None, Some("ccap")),
    OptSpec::flag("secure", None, Some("secure")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// Runs `vattribute`.
pub fn vattribute(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let (mut xid, mut get, mut set, mut flags, mut program) =
        (None, false, false, Vec::new(), Vec::new());
    for arg in args::parse_before_program(VATTRIBUTE_SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("xid", Some(v)) => xid = Some(args::text("--xid", &v)?.to_string()),
            Arg::Opt("get", _) => get = true,
            Arg::Opt("set", _) => set = true,
            Arg::Opt("flag", Some(v)) => flags.push(args::text("--flag", &v)?.to_string()),
            Arg::Opt(o @ ("bcap" | "ccap" | "secure"), _) => {
                return Err(anyhow::anyhow!(
                    "--{o}: a running context's capabilities are fixed when its processes start; set {} in its configuration",
                    if o == "ccap" { "ccapabilities" } else { "bcapabilities" }
                )
                .into());
            }
            Arg::Operand(p) => program.push(p),
            _ => return Err(usage("bad arguments")),
        }
    }
    if get == set {
        return Err(usage("give --get or --set"));
    }
    let state = state_of(xid)?;
    if get {
        writeln!(out, "bcapabilities:\n{}", names::BCAPS.format(state.bcaps))?;
        writeln!(out, "ccapabilities:\n{}", names::CCAPS.format(state.ccaps))?;
        writeln!(out, "flags:\n{}", names::CFLAGS.format(state.cflags))?;
        return Ok(Outcome::Success);
    }
    for f in &flags {
        let (clear, name) = match f.strip_prefix(['~', '!']) {
            Some(n) => (true, n),
            None => (false, f.as_str()),
        };
        let bits = names::CFLAGS
            .lookup(name)
            .ok_or_else(|| usage(format!("unknown context flag '{name}'")))?;
        if bits != cflag::SCHED_PAUSE {
            return Err(anyhow::anyhow!(
                "--flag {f}: only sched_pause can change while the context runs"
            )
            .into());
        }
        state
            .cgroups
            .freeze(&RealFs, !clear)
            .map_err(anyhow::Error::from)?;
        crate::ctx::record(&state, "attribute");
    }
    chain("vattribute", &program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlimit_lines_in_util_vservers_columns() {
        assert_eq!(
            limit_line("NPROC", [None, Some(Some(20)), Some(Some(20))], false),
            "NPROC       N/A                 0x14                0x14"
        );
        assert_eq!(
            limit_line("RSS", [None, Some(None), Some(Some(4096))], true),
            "RSS         N/A                 inf                 4096"
        );
        let line = limit_line("6", [None, None, Some(None)], false);
        assert_eq!(line.find("N/A"), Some(12));
        assert_eq!(line.rfind("inf"), Some(52));
    }
}

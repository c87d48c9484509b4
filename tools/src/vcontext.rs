//! `vcontext`: creating a context around a program, or running a program
//! in a running context (util-vserver's, docs/VSERVER.md §10.9).
//!
//! `--create` starts PROGRAM as the init of a new context: new pid, mount,
//! uts, ipc, cgroup (and with the virt_uptime flag time) namespaces, the
//! cgroup `vx-XID` in every hierarchy, util-vserver's secure bounding set
//! and the default seccomp policy, exactly as `vserver NAME start` does
//! for a guest without configuration files. Its root is the current
//! directory with `--chroot` or `--pivot-root` (both pivot, never
//! chroot), else the host's tree with a fresh /proc and a small /dev.
//! vcontext waits for it and exits with its status, unless `--disconnect`
//! leaves it running on its own.
//!
//! `--migrate --xid XID` runs PROGRAM in running context XID, as
//! `vserver NAME exec` does.
//!
//! Exit status: PROGRAM's; 254 when the context to create exists already;
//! 255 when vcontext itself fails (util-vserver's wrapper exit code).

use std::ffi::OsString;
use std::io::Write;

use vxfs_kernel::config::GuestConfig;
use vxfs_kernel::enter::{self, Exit};
use vxfs_kernel::registry::Registry;
use vxfs_kernel::start::{self, Attach, StartOutcome};
use vxfs_kernel::sys::SignalFd;

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};

/// vcontext's usage text.
pub const VCONTEXT_USAGE: &str = "\
Usage: vcontext --create [--xid XID] [OPTIONS] [--] PROGRAM [ARGS...]
       vcontext --migrate --xid XID [OPTIONS] [--] PROGRAM [ARGS...]

--create starts PROGRAM as pid 1 of a new context XID (a static id; a free
dynamic one without --xid), in new namespaces and the cgroup vx-XID, with
util-vserver's secure capabilities, and waits for it. --migrate runs
PROGRAM in running context XID (a number or a guest's name).

Options:
  --create                start PROGRAM as the init of a new context
  --migrate               run PROGRAM in running context --xid
  --xid XID               the context: a number (--create: a static id) or
                          a guest's name
  --chroot, --pivot-root  the current directory becomes the context's root
                          (--create; pivot_root either way); without, the
                          context keeps the host's tree, with its own /proc
                          and a small /dev
  --uid UID               run PROGRAM as UID (and group UID)
  --personality-type TYPE, --personality-flags FLAG[,FLAG...]
                          --create: PROGRAM's execution domain (linux,
                          linux32, ...; addr_no_randomize, uname26, ...)
  --disconnect            --create: leave the context running, print its id
  --silent                no messages but errors
  --silentexist           no message when the context exists already
  --namespace, --initpid, --fakeinit, --endsetup, --closefd
                          accepted for util-vserver's scripts: a created
                          context always has its own namespaces, PROGRAM is
                          its pid 1, setup ends before PROGRAM runs, and
                          other file descriptors are closed
  --migrate-self, --syncsock, --syncmsg, --vlogin
                          refused with the reason: mainline cannot do them
                          this way
  -h, --help              this text

Exit status: PROGRAM's; 254 the context exists already; 255 failure.
";

/// "exits with code 254 iff the context exists already".
const EXISTS: u8 = 254;

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(UsageError::new(m))
}

#[derive(Debug, Default)]
struct Options {
    create: bool,
    migrate: bool,
    xid: Option<String>,
    new_root: bool,
    uid: Option<u32>,
    personality_type: Option<String>,
    personality_flags: Vec<String>,
    personality: Option<u64>,
    disconnect: bool,
    silent: bool,
    silent_exist: bool,
    program: Vec<String>,
}

/// Options of util-vserver's vcontext that vxfs refuses, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "migrate-self",
        "the calling process cannot change its pid namespace on mainline; use --migrate --xid XID -- PROGRAM",
    ),
    (
        "syncsock",
        "not supported: vcontext --create returns once PROGRAM runs",
    ),
    (
        "syncmsg",
        "not supported: vcontext --create returns once PROGRAM runs",
    ),
    ("vlogin", "not supported: PROGRAM keeps vcontext's terminal"),
];

/// The options of `vcontext`.
pub const SPECS: &[OptSpec] = &[
    OptSpec::flag("create", None, Some("create")),
    OptSpec::flag("migrate", None, Some("migrate")),
    OptSpec::flag("migrate-self", None, Some("migrate-self")),
    OptSpec::valued("xid", None, Some("xid")),
    OptSpec::flag("chroot", None, Some("chroot")),
    OptSpec::flag("pivot-root", None, Some("pivot-root")),
    OptSpec::valued("uid", None, Some("uid")),
    OptSpec::flag("disconnect", None, Some("disconnect")),
    OptSpec::flag("silent", None, Some("silent")),
    OptSpec::flag("silentexist", None, Some("silentexist")),
    OptSpec::flag("namespace", None, Some("namespace")),
    OptSpec::flag("initpid", None, Some("initpid")),
    OptSpec::flag("fakeinit", None, Some("fakeinit")),
    OptSpec::flag("endsetup", None, Some("endsetup")),
    OptSpec::flag("closefd", None, Some("closefd")),
    OptSpec::valued("personality-type", None, Some("personality-type")),
    OptSpec::valued("personality-flags", None, Some("personality-flags")),
    OptSpec::valued("syncsock", None, Some("syncsock")),
    OptSpec::valued("syncmsg", None, Some("syncmsg")),
    OptSpec::flag("vlogin", None, Some("vlogin")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

fn parse(argv: Vec<OsString>) -> Result<Options, CliError> {
    let mut o = Options::default();
    let mut operands = Vec::new();
    for arg in args::parse_before_program(SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("create", _) => o.create = true,
            Arg::Opt("migrate", _) => o.migrate = true,
            Arg::Opt("xid", Some(v)) => o.xid = Some(args::text("--xid", &v)?.to_string()),
            Arg::Opt("chroot" | "pivot-root", _) => o.new_root = true,
            Arg::Opt("uid", Some(v)) => {
                let t = args::text("--uid", &v)?;
                o.uid = Some(
                    t.parse()
                        .map_err(|_| usage(format!("--uid {t}: not a user id")))?,
                );
            }
            Arg::Opt("personality-type", Some(v)) => {
                o.personality_type = Some(args::text("--personality-type", &v)?.to_string());
            }
            Arg::Opt("personality-flags", Some(v)) => o.personality_flags.extend(
                args::text("--personality-flags", &v)?
                    .split(',')
                    .map(str::to_string),
            ),
            Arg::Opt("disconnect", _) => o.disconnect = true,
            Arg::Opt("silent", _) => o.silent = true,
            Arg::Opt("silentexist", _) => o.silent_exist = true,
            Arg::Opt("namespace" | "initpid" | "fakeinit" | "endsetup" | "closefd", _) => {}
            Arg::Opt(name, _) => match REFUSED.iter().find(|(n, _)| *n == name) {
                Some((n, why)) => return Err(usage(format!("--{n}: {why}"))),
                None => return Err(usage("bad arguments")),
            },
            Arg::Operand(p) => operands.push(p),
        }
    }
    for p in operands {
        o.program.push(args::operand_text(p)?);
    }
    match (o.create, o.migrate) {
        (true, true) => return Err(usage("--create and --migrate exclude each other")),
        (false, false) => return Err(usage("--create or --migrate --xid XID is needed")),
        (false, true) if o.xid.is_none() => return Err(usage("--migrate needs --xid XID")),
        (false, true) if o.disconnect => return Err(usage("--disconnect needs --create")),
        _ => {}
    }
    if o.program.is_empty() {
        return Err(usage("no PROGRAM given"));
    }
    if o.personality_type.is_some() || !o.personality_flags.is_empty() {
        if !o.create {
            return Err(usage("a personality is set with --create"));
        }
        o.personality = Some(
            vxfs_kernel::config::personality(
                o.personality_type.as_deref().unwrap_or("linux"),
                o.personality_flags.iter().map(String::as_str),
            )
            .map_err(usage)?,
        );
    }
    Ok(o)
}

/// The caller's environment, for PROGRAM (util-vserver's vcontext keeps
/// it); variables that are not UTF-8 are left out, with a warning.
fn environment(silent: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in std::env::vars_os() {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => out.push((k, v)),
            (k, _) if !silent => eprintln!(
                "vcontext: warning: {}: not UTF-8, left out of PROGRAM's environment",
                k.unwrap_or_else(|k| k.to_string_lossy().into_owned())
            ),
            _ => {}
        }
    }
    out
}

/// The exit status of a command that ended as `exit` did.
fn passed_on(exit: Exit) -> Result<Outcome, CliError> {
    match exit {
        Exit::Code(c) => Ok(Outcome::Exit(c.clamp(0, 255) as u8)),
        Exit::Signal(_) => enter::exit_like(exit),
    }
}

fn create(o: &Options, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let xid = o
        .xid
        .as_deref()
        .map(vxfs_kernel::Xid::parse_static)
        .transpose()
        .map_err(|m| usage(format!("--xid: {m}")))?;
    let root = if o.new_root {
        std::env::current_dir()
            .map_err(|e| anyhow::anyhow!("the current directory: {e}"))?
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("the current directory: {e}"))?
    } else {
        "/".into()
    };
    let mut cfg =
        GuestConfig::unconfigured("", xid, root, o.program.clone(), environment(o.silent));
    cfg.init.uid = o.uid;
    cfg.personality = o.personality;
    let registry = Registry::open();
    let attach = if o.disconnect {
        Attach::Detached
    } else {
        Attach::Foreground
    };
    out.flush()?;
    // Taken before the supervisor exists, so that none is missed.
    let signals = SignalFd::new(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGHUP]);
    let started = start::start_unconfigured(&cfg, &registry, attach).map_err(anyhow::Error::from);
    let (xid, supervisor, warnings) = match started? {
        StartOutcome::AlreadyRunning => {
            if !o.silent_exist {
                eprintln!(
                    "vcontext: context {} exists already",
                    o.xid.as_deref().unwrap_or("?")
                );
            }
            return Ok(Outcome::Exit(EXISTS));
        }
        StartOutcome::Started {
            xid,
            supervisor,
            warnings,
            ..
        } => (xid, supervisor, warnings),
    };
    if !o.silent {
        for w in &warnings {
            eprintln!("vcontext: warning: {w}");
        }
    }
    if o.disconnect {
        if !o.silent {
            eprintln!("New security context is {xid}");
        }
        return Ok(Outcome::Success);
    }
    // Until it ends, the terminal's interrupts are PROGRAM's (as system(3)).
    let _ignored = crate::sys::IgnoreInterrupts::new();
    let pid = rustix::process::Pid::from_raw(supervisor as i32)
        .ok_or_else(|| anyhow::anyhow!("no supervisor"))?;
    let signals = signals.map_err(|e| anyhow::anyhow!("signalfd: {e}"))?;
    loop {
        use rustix::process::{Signal, WaitOptions, kill_process, waitpid};
        match waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(Some(_)) => break,
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(anyhow::anyhow!("waiting for the context's supervisor: {e}").into());
            }
        }
        // vcontext told to end (kill, timeout(1), a hangup): the context
        // is stopped as `vserver NAME stop` would, and vcontext exits with
        // its init's status.
        if let Ok(libc::SIGTERM | libc::SIGHUP) = signals.read() {
            let _ = kill_process(pid, Signal::TERM);
        }
    }
    match registry.exit_of(xid, supervisor) {
        Some(Some(code)) if code > 128 => passed_on(Exit::Signal(code - 128)),
        Some(Some(code)) => passed_on(Exit::Code(code)),
        _ => Err(anyhow::anyhow!("context {xid} ended without its init's status").into()),
    }
}

fn migrate(o: &Options, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let registry = Registry::open();
    let state = crate::ctx::running(&registry, o.xid.as_deref().unwrap_or_default())?;
    out.flush()?;
    let user = o.uid.map(|u| u.to_string());
    crate::ctx::record(&state, "enter");
    let exit = enter::run(
        &state,
        &environment(o.silent),
        &o.program,
        user.as_deref(),
        None,
    )
    .map_err(anyhow::Error::from)?;
    passed_on(exit)
}

/// Runs `vcontext`.
pub fn vcontext(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let result = parse(argv).and_then(|o| {
        if o.create {
            create(&o, out)
        } else {
            migrate(&o, out)
        }
    });
    crate::cli::as_wrapper("vcontext", result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn program_options_are_the_programs() {
        let o = parse(words(&["--create", "--xid", "42", "ls", "-l", "--xid"])).unwrap();
        assert_eq!(o.xid.as_deref(), Some("42"));
        assert_eq!(o.program, ["ls", "-l", "--xid"]);
        let o = parse(words(&["--migrate", "--xid", "web", "--", "-weird"])).unwrap();
        assert_eq!(o.program, ["-weird"]);
    }

    #[test]
    fn bad_combinations_are_refused() {
        for bad in [
            &["--create", "--migrate", "--xid", "4", "true"][..],
            &["--xid", "4", "true"],
            &["--migrate", "true"],
            &["--create"],
            &["--migrate", "--xid", "4", "--disconnect", "true"],
            &["--create", "--uid", "nobody", "true"],
            &["--migrate-self", "true"],
            &["--create", "--personality-type", "bsd", "true"],
            &[
                "--migrate",
                "--xid",
                "4",
                "--personality-type",
                "linux32",
                "true",
            ],
            &["--create", "--syncsock", "/tmp/s", "true"],
        ] {
            assert!(
                matches!(parse(words(bad)), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn failures_exit_255_never_a_programs_code() {
        let mut out = Vec::new();
        let r = vcontext(words(&["--bogus"]), &mut out).unwrap();
        assert_eq!(r, Outcome::Exit(crate::cli::WRAPPER_FAILED));
    }
}

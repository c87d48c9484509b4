//! `vserver [OPTIONS] NAME COMMAND [ARGS]`: util-vserver's guest command
//! (docs/VSERVER.md §10.9) over the context core (`vxfs-kernel`).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use vxfs_kernel::config::{self, GuestConfig};
use vxfs_kernel::enter::{self, Exit};
use vxfs_kernel::registry::Registry;
use vxfs_kernel::start::{self, StartOutcome};

use crate::args::{Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};

/// The usage text.
pub const USAGE: &str = "\
Usage: vserver [--silent] [--debug] [--] NAME COMMAND [ARGS...]

Runs and manages the guest NAME, configured in /etc/vservers/NAME
(VXFS_CONFDIR), its root in /vservers/NAME or where NAME/vdir points.

Commands:
  start                 start the guest (in its own pid, mount, uts, ipc,
                        cgroup and time namespaces, cgroup vx-XID)
  stop                  run its stop command, its kill sequence, clean up
  restart               stop, then start
  condrestart           restart if it runs
  status [--json]       'Vserver NAME is running at context XID' (exit 0)
                        or 'Vserver NAME is stopped' (exit 3)
  running               exit 0 if it runs, 1 if not (no output)
  exec CMD [ARGS...]    run CMD in it as root; exit as CMD did
  suexec USER CMD [ARGS...]
                        run CMD in it as USER (its name or uid)
  enter                 a login shell in it (NAME/shell, else bash, sh)
  build -m METHOD [--context XID] [--hostname NAME] [--rootdir DIR]
        -- METHOD-ARGS  make its configuration and root:
                        -m template -- -t DIR|TARBALL  (copy a tree)
                        -m debootstrap -- -d SUITE [-m MIRROR]

  --silent              no warnings
  --debug               log each step
  -v, --verbose, -s, --sync
                        accepted for util-vserver's scripts; change nothing
  -h, --help            this text

Exit status: 0 success, 1 failure, 2 bad usage, 3 (status) stopped; exec,
suexec and enter exit as their command did.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--silent`.
    pub silent: bool,
    /// The guest.
    pub name: String,
    /// The command and its arguments.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(UsageError::new(message))
}

/// vserver's options, before the guest's name (util-vserver's; `--debug`,
/// `-v`, `-s` are accepted and change nothing here).
pub const SPECS: &[OptSpec] = &[
    OptSpec::flag("help", Some('h'), Some("help")),
    OptSpec::flag("silent", None, Some("silent")),
    OptSpec::flag("debug", None, Some("debug")),
    OptSpec::flag("verbose", Some('v'), Some("verbose")),
    OptSpec::flag("sync", Some('s'), Some("sync")),
];

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<Options, CliError> {
    let mut silent = false;
    let mut words = Vec::new();
    for arg in crate::args::parse_before_program(SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("silent", _) => silent = true,
            Arg::Opt(_, _) => {}
            Arg::Operand(word) => words.push(crate::args::operand_text(word)?),
        }
    }
    let mut words = words.into_iter();
    let name = words.next().ok_or_else(|| usage("no vserver named"))?;
    let command = words
        .next()
        .ok_or_else(|| usage(format!("no command for vserver '{name}'")))?;
    Ok(Options {
        silent,
        name,
        command,
        args: words.collect(),
    })
}

/// Runs `vserver`.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let o = parse(argv)?;
    let confdir = config::confdir();
    let registry = Registry::open();
    if o.command == "build" {
        build(&confdir, &o)?;
        return Ok(Outcome::Success);
    }
    let known = [
        "start",
        "stop",
        "restart",
        "condrestart",
        "status",
        "running",
        "exec",
        "suexec",
        "enter",
    ];
    if !known.contains(&o.command.as_str()) {
        return Err(usage(format!("unknown command '{}'", o.command)));
    }
    let cfg = GuestConfig::load(&confdir, &o.name).map_err(anyhow::Error::from)?;
    let warn = |w: &str| {
        if !o.silent {
            eprintln!("vserver {}: warning: {w}", o.name);
        }
    };
    let stop_timeout = stop_timeout(&cfg);
    match o.command.as_str() {
        "start" => do_start(&cfg, &registry, &warn),
        "stop" => {
            if !start::stop(&registry, &o.name, stop_timeout).map_err(anyhow::Error::from)? {
                eprintln!("vserver '{}' is not running", o.name);
            }
            Ok(Outcome::Success)
        }
        "restart" | "condrestart" => {
            let stopped =
                start::stop(&registry, &o.name, stop_timeout).map_err(anyhow::Error::from)?;
            if o.command == "condrestart" && !stopped {
                return Ok(Outcome::Success);
            }
            do_start(&cfg, &registry, &warn)
        }
        "running" => Ok(Outcome::Exit(if registry.find(&o.name).is_some() {
            0
        } else {
            1
        })),
        "status" => status(&registry, &o, out),
        "exec" | "suexec" | "enter" => {
            let state = registry
                .find(&o.name)
                .with_context(|| format!("vserver '{}' is not running", o.name))?;
            let (user, cmd) = match o.command.as_str() {
                "exec" => (None, o.args.clone()),
                "suexec" => {
                    let (u, rest) = o
                        .args
                        .split_first()
                        .ok_or_else(|| usage("suexec needs a USER and a command"))?;
                    (Some(u.clone()), rest.to_vec())
                }
                _ => (None, enter::enter_shell(&cfg)),
            };
            if cmd.is_empty() {
                return Err(usage(format!("{} needs a command", o.command)));
            }
            out.flush()?;
            crate::ctx::record(&state, "enter");
            let exit = enter::run(&state, &cfg.init.environment, &cmd, user.as_deref(), None)
                .map_err(anyhow::Error::from)?;
            match exit {
                Exit::Code(c) => Ok(Outcome::Exit(c.clamp(0, 255) as u8)),
                Exit::Signal(_) => enter::exit_like(exit),
            }
        }
        _ => unreachable!("checked above"),
    }
}

/// How long a stop may take: the kill sequence's waits and a margin for
/// the stop command.
fn stop_timeout(cfg: &GuestConfig) -> Duration {
    let waits: u64 = cfg
        .init
        .killseq
        .iter()
        .map(|s| match s {
            config::KillStep::Wait(n) => u64::from(*n),
            config::KillStep::Signal(_) => 0,
        })
        .sum();
    Duration::from_secs(waits + 90)
}

fn do_start(
    cfg: &GuestConfig,
    registry: &Registry,
    warn: &dyn Fn(&str),
) -> Result<Outcome, CliError> {
    if cfg.xid.is_none() {
        warn(
            "no static context (NAME/context): it gets a dynamic one, and its files are tagged with it",
        );
    }
    match start::start(cfg, registry).map_err(anyhow::Error::from)? {
        StartOutcome::AlreadyRunning => {
            eprintln!("vserver '{}' already running", cfg.name);
        }
        StartOutcome::Started { warnings, .. } => {
            for w in &warnings {
                warn(w);
            }
        }
    }
    Ok(Outcome::Success)
}

fn status(registry: &Registry, o: &Options, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let json = o.args.iter().any(|a| a == "--json");
    let Some(state) = registry.find(&o.name) else {
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"name": o.name, "running": false})
            )?;
        } else {
            writeln!(out, "Vserver '{}' is stopped", o.name)?;
        }
        return Ok(Outcome::Exit(3));
    };
    let procs = state
        .cgroups
        .procs(&vxfs_kernel::cgroup::RealFs)
        .map_or(0, |p| p.len());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let uptime = now.saturating_sub(state.started);
    if json {
        let v = serde_json::json!({
            "name": state.name,
            "running": true,
            "xid": state.xid.0,
            "processes": procs,
            "uptime_seconds": uptime,
            "init_pid": state.init,
            "root": state.root,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "Vserver '{}' is running at context '{}'",
            state.name, state.xid
        )?;
        writeln!(out, "Number of processes: {procs}")?;
        writeln!(out, "Uptime: {}", crate::vstat::short_time(uptime * 1000))?;
    }
    Ok(Outcome::Success)
}

/// `vserver NAME build`.
fn build(confdir: &Path, o: &Options) -> Result<(), CliError> {
    let (mut method, mut xid, mut hostname, mut rootdir) = (None, None, None, None);
    let mut rest: &[String] = &[];
    let mut i = 0;
    while i < o.args.len() {
        let a = &o.args[i];
        let value = || {
            o.args
                .get(i + 1)
                .cloned()
                .ok_or_else(|| usage(format!("{a} needs a value")))
        };
        match a.as_str() {
            "-m" => method = Some(value()?),
            "--context" => {
                let v = value()?;
                xid = Some(vxfs_kernel::Xid::parse_static(&v).map_err(usage)?);
            }
            "--hostname" => hostname = Some(value()?),
            "--rootdir" => rootdir = Some(PathBuf::from(value()?)),
            "--" => {
                rest = &o.args[i + 1..];
                break;
            }
            other => return Err(usage(format!("build: unknown option '{other}'"))),
        }
        i += 2;
    }
    let method = method.ok_or_else(|| usage("build needs -m METHOD (template, debootstrap)"))?;
    if !config::valid_name(&o.name) {
        return Err(usage(format!("'{}' is not a vserver name", o.name)));
    }
    let dir = confdir.join(&o.name);
    if dir.exists() {
        return Err(CliError::Failed(anyhow::anyhow!(
            "vserver '{}' exists already ({}); remove it first",
            o.name,
            dir.display()
        )));
    }
    let root = rootdir
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_VSERVERS))
        .join(&o.name);
    if root.exists() && std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some()) {
        return Err(CliError::Failed(anyhow::anyhow!(
            "{} exists and is not empty",
            root.display()
        )));
    }
    let made_root = !root.exists();
    let result = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        fill_root(&method, rest, &root)?;
        write_config(&dir, &o.name, xid, hostname.as_deref(), &root)?;
        if let Some(x) = xid {
            tag_tree(&root, x)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&dir);
        if made_root {
            let _ = std::fs::remove_dir_all(&root);
        }
        return Err(CliError::Failed(e));
    }
    Ok(())
}

/// Puts a guest tree into `root` with build method `method`.
fn fill_root(method: &str, args: &[String], root: &Path) -> anyhow::Result<()> {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let run = |cmd: &mut std::process::Command| -> anyhow::Result<()> {
        let status = cmd
            .status()
            .with_context(|| format!("running {:?}", cmd.get_program()))?;
        if !status.success() {
            bail!("{:?} failed ({status})", cmd.get_program());
        }
        Ok(())
    };
    // What the build wrote so far, from the filesystem's free space
    // (cp and tar say nothing while they copy; debootstrap does).
    let used = || {
        rustix::fs::statvfs(root)
            .map(|v| (v.f_blocks - v.f_bfree) * v.f_frsize)
            .unwrap_or(0)
    };
    let before = used();
    let written = || {
        format!(
            "building the guest's tree: {} MiB written",
            used().saturating_sub(before) >> 20
        )
    };
    match method {
        "template" => crate::progress::spinner(written, || {
            let src = flag("-t").context("-m template needs -- -t DIR|TARBALL")?;
            let src = Path::new(&src);
            if src.is_dir() {
                let mut from = src.as_os_str().to_owned();
                from.push("/.");
                run(std::process::Command::new("cp")
                    .arg("-a")
                    .arg(from)
                    .arg(root))
            } else if src.is_file() {
                run(std::process::Command::new("tar")
                    .args(["--numeric-owner", "-xpf"])
                    .arg(src)
                    .arg("-C")
                    .arg(root))
            } else {
                bail!(
                    "template {} is neither a directory nor a file",
                    src.display()
                )
            }
        }),
        "debootstrap" => {
            let suite = flag("-d").context("-m debootstrap needs -- -d SUITE")?;
            let mut cmd = std::process::Command::new("debootstrap");
            // minbase has no init; sysv-rc gives the rc scripts that vxfs's
            // own init runs (style sysv, written with the configuration).
            cmd.args(["--variant=minbase", "--include=sysv-rc", &suite])
                .arg(root);
            if let Some(m) = flag("-m") {
                cmd.arg(m);
            }
            run(&mut cmd).context("debootstrap (apt-get install debootstrap)")
        }
        other => bail!("unknown build method '{other}' (template, debootstrap)"),
    }
}

fn write_config(
    dir: &Path,
    name: &str,
    xid: Option<vxfs_kernel::Xid>,
    hostname: Option<&str>,
    root: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("uts"))
        .with_context(|| format!("creating {}", dir.display()))?;
    if let Some(x) = xid {
        std::fs::write(dir.join("context"), format!("{x}\n"))?;
    }
    std::fs::write(
        dir.join("uts/nodename"),
        format!("{}\n", hostname.unwrap_or(name)),
    )?;
    std::os::unix::fs::symlink(root, dir.join("vdir"))?;
    std::fs::create_dir_all(dir.join("apps/init"))?;
    // A tree with rc scripts but no init of its own (debootstrap's minbase)
    // starts in style sysv: vxfs's init runs /etc/init.d/rc at runlevel 2.
    let has = |p: &str| vxfs_kernel::rootfs::exists_in_guest(root, p);
    if !has("/sbin/init") && has("/etc/init.d/rc") {
        std::fs::write(dir.join("apps/init/style"), "sysv\n")?;
        std::fs::write(dir.join("apps/init/runlevel"), "2\n")?;
    }
    Ok(())
}

/// Tags the new tree with its context when it is on a tagging vxfs mount
/// (as `chxid -R -c XID ROOT`), so that it counts for the guest.
fn tag_tree(root: &Path, xid: vxfs_kernel::Xid) -> anyhow::Result<()> {
    let st = std::fs::metadata(root)?;
    use std::os::unix::fs::MetadataExt;
    if !crate::mountinfo::vxfs_tags(st.dev()) {
        return Ok(());
    }
    let argv: Vec<OsString> = ["-R", "-c", &xid.to_string(), "--"]
        .iter()
        .map(OsString::from)
        .chain([root.as_os_str().to_owned()])
        .collect();
    let mut sink = Vec::new();
    match crate::chxid::run(argv, &mut sink) {
        Ok(Outcome::Success) => Ok(()),
        Ok(_) => bail!(
            "tagging {} with context {xid}: some files failed",
            root.display()
        ),
        Err(CliError::Failed(e)) => {
            Err(e.context(format!("tagging {} with context {xid}", root.display())))
        }
        Err(_) => bail!("tagging {}", root.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn command_lines() {
        let o = parse(args(&["--silent", "web", "exec", "ls", "-l"])).unwrap();
        assert_eq!(
            (o.silent, o.name.as_str(), o.command.as_str()),
            (true, "web", "exec")
        );
        assert_eq!(o.args, ["ls", "-l"]);
        let o = parse(args(&["--", "-odd", "status"])).unwrap();
        assert_eq!(o.name, "-odd");
        for bad in [&[][..], &["web"][..], &["--bogus", "web", "start"][..]] {
            assert!(
                matches!(parse(args(bad)), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(parse(args(&["-h"])), Err(CliError::Help)));
    }

    #[test]
    fn words_after_the_name_are_kept_verbatim() {
        let words = [
            "web", "build", "-m", "template", "--", "-t", "/x", "--silent",
        ];
        let o = parse(words.iter().map(OsString::from).collect()).unwrap();
        assert_eq!((o.name.as_str(), o.command.as_str()), ("web", "build"));
        assert_eq!(o.args, ["-m", "template", "--", "-t", "/x", "--silent"]);
        assert!(!o.silent);
    }
}

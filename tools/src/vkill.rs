//! `vkill` and `vwait`: signalling a context's processes and waiting for a
//! context to end (util-vserver's, docs/VSERVER.md §10.9).

use std::ffi::OsString;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use vxfs_kernel::cgroup::RealFs;
use vxfs_kernel::registry::Registry;

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};

/// vkill's usage text.
pub const VKILL_USAGE: &str = "\
Usage: vkill [--xid|-c XID] [-s SIGNAL] [--] [PID...]

Sends SIGNAL (default TERM; a number or a name) to the processes PID of
context XID (a number or a guest's name), or to all of its processes when
no PID is given; PID 1 is the guest's init. A PID that is not in the
context is refused.

Options:
  -c, --xid XID      the context: a number or a guest's name
  -s SIGNAL          the signal, a number or a name (default TERM)
  -h, --help         this text

Exit status: 0 all signalled, 1 failure, 2 bad usage.
";

/// vwait's usage text.
pub const VWAIT_USAGE: &str = "\
Usage: vwait [--timeout SECONDS] [--terminate] [--status-fd FD] [--] XID

Waits until context XID (a number or a guest's name) has ended. With
--status-fd, writes 'FINISHED RC' (RC: how its init ended), 'KILLED'
(--terminate killed it at the timeout), 'TIMEOUT' or 'ERROR RC' to FD.

Options:
  --timeout SECONDS  give up (or --terminate) after SECONDS
  --terminate        at the timeout, kill the context
  --status-fd FD     write the outcome line to descriptor FD
  -h, --help         this text

Exit status: 0 finished, 1 killed, 2 timeout, 127 error.
";

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(UsageError::new(m))
}

/// A signal given by number or name (`TERM`, `SIGTERM`, `9`).
pub fn parse_signal(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = text.trim_start_matches("SIG").to_ascii_uppercase();
    let table = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("PWR", 30),
    ];
    table.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

pub const VKILL_SPECS: &[OptSpec] = &[
    OptSpec::valued("xid", Some('c'), Some("xid")),
    OptSpec::valued("signal", Some('s'), None),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// Runs `vkill`.
pub fn vkill(argv: Vec<OsString>, _out: &mut dyn Write) -> Result<Outcome, CliError> {
    let (mut xid, mut signal, mut pids) = (None, libc::SIGTERM, Vec::new());
    for arg in args::parse(VKILL_SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("xid", Some(v)) => xid = Some(args::text("--xid", &v)?.to_string()),
            Arg::Opt("signal", Some(v)) => {
                let t = args::text("-s", &v)?;
                signal =
                    parse_signal(t).ok_or_else(|| usage(format!("-s: unknown signal '{t}'")))?;
            }
            Arg::Operand(p) => {
                let t = args::text("PID", &p)?;
                pids.push(
                    t.parse::<u32>()
                        .map_err(|_| usage(format!("'{t}' is not a pid")))?,
                );
            }
            _ => return Err(usage("bad arguments")),
        }
    }
    let xid = xid.ok_or_else(|| usage("--xid XID is needed"))?;
    let state = crate::ctx::running(&Registry::open(), &xid)?;
    let sig = vxfs_kernel::cgroup::signal_of(signal).context("no such signal")?;
    if pids.is_empty() {
        state
            .cgroups
            .signal_all(&RealFs, signal)
            .map_err(anyhow::Error::from)?;
        return Ok(Outcome::Success);
    }
    let members = state.cgroups.procs(&RealFs).map_err(anyhow::Error::from)?;
    let mut failed = false;
    for pid in pids {
        let target = if pid == 1 { state.init } else { pid };
        if !members.contains(&target) {
            eprintln!("vkill: {pid}: not a process of context {}", state.xid);
            failed = true;
            continue;
        }
        let p = rustix::process::Pid::from_raw(target as i32).expect("a pid");
        if let Err(e) = rustix::process::kill_process(p, sig) {
            eprintln!("vkill: {pid}: {e}");
            failed = true;
        }
    }
    Ok(if failed {
        Outcome::SomeFailed
    } else {
        Outcome::Success
    })
}

pub const VWAIT_SPECS: &[OptSpec] = &[
    OptSpec::valued("timeout", None, Some("timeout")),
    OptSpec::flag("terminate", None, Some("terminate")),
    OptSpec::valued("status-fd", None, Some("status-fd")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// Runs `vwait`.
pub fn vwait(argv: Vec<OsString>, _out: &mut dyn Write) -> Result<Outcome, CliError> {
    let (mut timeout, mut terminate, mut status_fd, mut target) = (None, false, None, None);
    for arg in args::parse(VWAIT_SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("timeout", Some(v)) => {
                let t = args::text("--timeout", &v)?;
                timeout = Some(
                    t.parse::<u64>()
                        .map_err(|_| usage(format!("--timeout: '{t}'")))?,
                );
            }
            Arg::Opt("terminate", _) => terminate = true,
            Arg::Opt("status-fd", Some(v)) => {
                let t = args::text("--status-fd", &v)?;
                status_fd = Some(
                    t.parse::<u32>()
                        .map_err(|_| usage(format!("--status-fd: '{t}'")))?,
                );
            }
            Arg::Operand(x) if target.is_none() => {
                target = Some(args::text("XID", &x)?.to_string())
            }
            Arg::Operand(_) => return Err(usage("can not wait for more than one context")),
            _ => return Err(usage("bad arguments")),
        }
    }
    let target = target.ok_or_else(|| usage("no context specified"))?;
    let registry = Registry::open();
    let report = |line: &str, code: u8| -> Result<Outcome, CliError> {
        if let Some(fd) = status_fd {
            crate::sys::write_inherited_fd(fd as i32, format!("{line}\n").as_bytes())
                .with_context(|| format!("--status-fd {fd}"))?;
        }
        Ok(Outcome::Exit(code))
    };
    let state = match crate::ctx::running(&registry, &target) {
        Ok(s) => s,
        Err(e) => return report(&format!("ERROR {}", libc::ESRCH), 127).and(Err(e.into())),
    };
    let pid = rustix::process::Pid::from_raw(state.supervisor as i32).context("no supervisor")?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(std::io::Error::from)?;
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs(t));
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            if !terminate {
                return report("TIMEOUT", 2);
            }
            let _ = state.cgroups.kill_all(&RealFs, Duration::from_secs(10));
            let _ = wait_readable(&pidfd, Some(Duration::from_secs(30)));
            return report("KILLED", 1);
        }
        if wait_readable(&pidfd, left.or(Some(Duration::from_secs(3600)))) {
            let code = registry.exit_of(state.xid, state.supervisor).flatten();
            return report(&format!("FINISHED {}", code.unwrap_or(0)), 0);
        }
    }
}

/// Waits until `fd` is readable (a pidfd: its process ended), at most
/// `timeout`.
fn wait_readable(fd: &std::os::fd::OwnedFd, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    rustix::event::poll(&mut fds, ts.as_ref()).unwrap_or(0) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("SIGHUP"), Some(1));
        assert_eq!(parse_signal("kill"), Some(9));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("BOGUS"), None);
    }
}

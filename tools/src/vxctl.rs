//! `vxctl`: what has no util-vserver name.
//!
//! * `vxctl doctor [--json]`: which of the kernel features the context core
//!   and the filesystem use this host has, probed for real (namespaces,
//!   the cgroup layout and which hierarchy has which controller, FUSE,
//!   seccomp actions, pidfd, interface types, the capability to raise
//!   hard rlimits), each with what it means when missing;
//! * `vxctl lookup PID [--json]`: a process's context and how it was found;
//! * `vxctl history [--xid XID] [--json]`: the context event journal
//!   ([`vxfs_kernel::history`]), oldest first;
//! * `vxctl virtual [XID] [FILE]`: VServer's `/proc/virtual` files
//!   ([`crate::virt`]).

use std::ffi::OsString;
use std::io::Write;

use vxfs_kernel::cgroup::{Layout, Version};
use vxfs_kernel::registry::Registry;

use crate::args::{Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};

/// The usage text.
pub const USAGE: &str = "\
Usage: vxctl doctor [--json]
       vxctl lookup PID [--json]
       vxctl history [--xid XID] [--json]
       vxctl virtual [info|status]
       vxctl virtual XID [info|status|limit|sched|cvirt|nsproxy|io]

doctor  probes the kernel features vxfs uses on this host and says what a
        missing one means (exit 1 when something vital is missing)
lookup  prints process PID's context (its cgroup vx-XID, 0 = the host), the
        guest's name and the /proc/PID/cgroup line that decided it
history the context events (start, reboot, stop, enter, limit, sched, uts,
        attribute changes) since boot, oldest first, with who recorded them;
        --xid XID (a number or a guest's name) shows one context's
virtual VServer's /proc/virtual files in their formats: the global info and
        status, or a context's (default: status); io is the context's block
        I/O and what its counters cover (not a VServer file)

Options:
  --json        machine output (doctor, lookup, history): one JSON object
                per line
  --xid XID     history: one context's events
  -h, --help    this text
";

/// UTC `YYYY-MM-DD HH:MM:SS.mmm` of `ms` since the epoch.
fn utc(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{milli:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn history(xid: Option<&str>, json: bool, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let (events, bad) = Registry::open().history();
    if bad > 0 {
        eprintln!("vxctl: {bad} unreadable lines in the event journal left out");
    }
    let wanted = |e: &vxfs_kernel::history::Event| match xid {
        None => true,
        Some(x) => x.parse::<u32>().map_or_else(
            |_| e.name == x.strip_prefix(':').unwrap_or(x),
            |n| e.xid.0 == n,
        ),
    };
    for e in events.iter().filter(|e| wanted(e)) {
        if json {
            writeln!(
                out,
                "{}",
                serde_json::to_string(e).map_err(anyhow::Error::from)?
            )?;
        } else {
            let name = if vxfs_kernel::registry::is_anonymous(&e.name) {
                "-"
            } else {
                &e.name
            };
            writeln!(
                out,
                "{}  {:>5}  {:<16} {:<10} {}  [pid {} uid {}]",
                utc(e.time_ms),
                e.xid,
                name,
                e.event,
                e.detail,
                e.pid,
                e.uid
            )?;
        }
    }
    Ok(Outcome::Success)
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was probed.
    pub what: String,
    /// Whether it is there.
    pub ok: bool,
    /// What it is, or what its absence means.
    pub detail: String,
    /// Whether vxfs cannot work without it.
    pub vital: bool,
}

fn check(what: &str, ok: bool, detail: impl Into<String>, vital: bool) -> Check {
    Check {
        what: what.to_string(),
        ok,
        detail: detail.into(),
        vital,
    }
}

/// Whether `ip link add ... type KIND` works, tried in a throwaway network
/// namespace.
fn link_type_works(kind: &str) -> bool {
    let mut args = vec!["-n", "ip", "link", "add", "vxprobe0"];
    if kind == "veth" {
        args.extend(["type", "veth", "peer", "name", "vxprobe1"]);
    } else if kind == "macvlan" || kind == "ipvlan" {
        // Needs a lower device: loopback cannot be one, so test the type.
        args.extend(["link", "lo", "type", kind]);
    } else {
        args.extend(["type", kind]);
    }
    let out = std::process::Command::new("unshare").args(&args).output();
    match out {
        Ok(o) if o.status.success() => true,
        // A known type refuses loopback as its lower device with EINVAL,
        // an unknown one says so.
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            (kind == "macvlan" || kind == "ipvlan") && !err.contains("Unknown device type")
        }
        Err(_) => false,
    }
}

/// Every probe.
pub fn doctor() -> Vec<Check> {
    let mut out = Vec::new();
    let uname = rustix::system::uname();
    out.push(check(
        "kernel",
        true,
        format!(
            "{} {}",
            uname.sysname().to_string_lossy(),
            uname.release().to_string_lossy()
        ),
        false,
    ));
    for (ns, vital) in [
        ("pid", true),
        ("mnt", true),
        ("uts", true),
        ("ipc", true),
        ("cgroup", true),
        ("time", false),
        ("net", false),
        ("user", false),
    ] {
        let ok = std::path::Path::new(&format!("/proc/self/ns/{ns}")).exists();
        out.push(check(
            &format!("{ns} namespace"),
            ok,
            if ok {
                "available".to_string()
            } else if ns == "time" {
                "missing: guests' uptime is the host's".to_string()
            } else {
                format!("missing: guests cannot have their own {ns} namespace")
            },
            vital,
        ));
    }
    match Layout::detect() {
        Ok(layout) => {
            out.push(check(
                "cgroup layout",
                !layout.hierarchies.is_empty(),
                format!("{:?}", layout.mode()),
                true,
            ));
            for h in &layout.hierarchies {
                let v = if h.version == Version::V2 {
                    "cgroup2"
                } else {
                    "cgroup"
                };
                out.push(check(
                    &format!("{v} {}", h.mount.display()),
                    true,
                    if h.controllers.is_empty() {
                        "no controllers (tracking: membership, freeze, kill)".to_string()
                    } else {
                        h.controllers.join(" ")
                    },
                    false,
                ));
            }
            for c in ["cpu", "cpuacct", "memory", "pids", "cpuset", "freezer"] {
                let owner = layout.owner(c);
                out.push(check(
                    &format!("controller {c}"),
                    owner.is_some(),
                    match owner {
                        Some(h) => format!("on {}", h.mount.display()),
                        None => match c {
                            "cpu" => "missing: sched/ cannot limit CPU".into(),
                            "memory" => "missing: rlimits/rss cannot limit memory".into(),
                            "pids" => "missing: rlimits/nproc cannot limit processes".into(),
                            _ => "missing".into(),
                        },
                    },
                    false,
                ));
            }
        }
        Err(e) => out.push(check("cgroup layout", false, e.to_string(), true)),
    }
    let fuse = std::path::Path::new("/dev/fuse").exists();
    out.push(check(
        "FUSE",
        fuse,
        if fuse {
            "/dev/fuse"
        } else {
            "missing: no vxfs mount is possible"
        },
        true,
    ));
    let actions =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    out.push(check(
        "seccomp",
        actions.contains("errno"),
        if actions.is_empty() {
            "missing: guests run without a syscall filter".to_string()
        } else {
            actions.trim().to_string()
        },
        false,
    ));
    let pidfd = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .is_ok();
    out.push(check(
        "pidfd",
        pidfd,
        if pidfd {
            "available"
        } else {
            "missing: vserver exec cannot enter guests"
        },
        true,
    ));
    for kind in ["veth", "macvlan", "ipvlan", "dummy"] {
        let ok = link_type_works(kind);
        out.push(check(
            &format!("interface type {kind}"),
            ok,
            if ok {
                "available".to_string()
            } else {
                format!("missing: interfaces/ of type {kind} cannot be made")
            },
            false,
        ));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let resource = bnd & (1 << 24) != 0;
    out.push(check(
        "CAP_SYS_RESOURCE",
        resource,
        if resource {
            "held: rlimits/ may raise hard limits"
        } else {
            "missing: hard rlimits above the host's stay at the host's"
        },
        false,
    ));
    out
}

/// vxctl's options, anywhere among its words.
pub const SPECS: &[OptSpec] = &[
    OptSpec::flag("json", None, Some("json")),
    OptSpec::valued("xid", None, Some("xid")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// Runs `vxctl`.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let mut json = false;
    let mut words: Vec<String> = Vec::new();
    for arg in crate::args::parse(SPECS, argv)? {
        match arg {
            Arg::Opt("json", _) => json = true,
            // history's: kept in its place among the words it reads.
            Arg::Opt("xid", Some(v)) => {
                words.push("--xid".to_string());
                words.push(v.to_string_lossy().into_owned());
            }
            Arg::Opt(_, _) => return Err(CliError::Help),
            Arg::Operand(w) => words.push(w.to_string_lossy().into_owned()),
        }
    }
    let rest: Vec<&String> = words.iter().collect();
    match rest.first().map(|s| s.as_str()) {
        Some("doctor") if rest.len() == 1 => {
            let checks = doctor();
            for c in &checks {
                if json {
                    let v = serde_json::json!({"check": c.what, "ok": c.ok, "detail": c.detail, "vital": c.vital});
                    writeln!(out, "{v}")?;
                } else {
                    let mark = if c.ok {
                        "ok  "
                    } else if c.vital {
                        "FAIL"
                    } else {
                        "--  "
                    };
                    writeln!(out, "{mark} {:<28} {}", c.what, c.detail)?;
                }
            }
            Ok(if checks.iter().any(|c| c.vital && !c.ok) {
                Outcome::SomeFailed
            } else {
                Outcome::Success
            })
        }
        Some("lookup") if rest.len() == 2 => {
            let pid: u32 = rest[1].parse().map_err(|_| {
                CliError::Usage(UsageError::new(format!("'{}' is not a pid", rest[1])))
            })?;
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(anyhow::anyhow!("no process {pid}").into());
            }
            let found = crate::ctx::of_pid(pid);
            let name = found
                .xid
                .and_then(|x| crate::ctx::name_of(&Registry::open(), x));
            if json {
                let v = serde_json::json!({"pid": pid, "xid": found.xid, "name": name, "via": found.via});
                writeln!(out, "{v}")?;
            } else {
                match found.xid {
                    Some(x) => writeln!(
                        out,
                        "{pid}: context {x} ({}), from {}",
                        name.as_deref().unwrap_or("no running guest"),
                        if found.via.is_empty() {
                            "no vx-XID cgroup (the host)".to_string()
                        } else {
                            format!("/proc/{pid}/cgroup: {}", found.via)
                        }
                    )?,
                    None => writeln!(
                        out,
                        "{pid}: no single context (its cgroups name different ones)"
                    )?,
                }
            }
            Ok(Outcome::Success)
        }
        Some("history") => match rest.get(1..).unwrap_or_default() {
            [] => history(None, json, out),
            [flag, x] if *flag == "--xid" || *flag == "-c" => history(Some(x.as_str()), json, out),
            _ => Err(CliError::Usage(UsageError::new("history [--xid XID]"))),
        },
        Some("virtual") if !json => {
            write!(out, "{}", crate::virt::show(&rest[1..])?)?;
            Ok(Outcome::Success)
        }
        _ => Err(CliError::Usage(UsageError::new(
            "expected 'doctor', 'lookup PID', 'history' or 'virtual'",
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_times() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(super::utc(1_796_128_465_838), "2026-12-01 12:34:25.838");
    }
}

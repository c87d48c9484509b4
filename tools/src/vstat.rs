//! `vserver-stat`: one line per running guest (docs/VSERVER.md §10.9), in
//! util-vserver's exact layout:
//!
//! ```text
//! CTX   PROC    VSZ    RSS  userTIME   sysTIME    UPTIME NAME
//! ```
//!
//! PROC is the guest's process count, VSZ the sum of its processes'
//! virtual sizes, RSS its memory cgroup's anonymous plus mapped-file
//! memory, userTIME and sysTIME its CPU cgroup's counters, UPTIME the time
//! since it started, as util-vserver's cgroup-based vserver-stat computed
//! them. `--json` gives the same figures as numbers.

use std::ffi::OsString;
use std::io::Write;

use vxfs_kernel::cgroup::RealFs;
use vxfs_kernel::registry::{Registry, State};

use crate::args::{Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};

/// The usage text.
pub const USAGE: &str = "\
Usage: vserver-stat [--json]

Shows every running guest: CTX (its context), PROC (processes), VSZ
(virtual memory), RSS (resident memory), userTIME, sysTIME (CPU time),
UPTIME and NAME.

  --json      the same as JSON objects, one per line, in bytes and ms,
              with the block I/O its cgroup was charged for (io_read_bytes,
              io_write_bytes; io_counts_writeback false: direct and
              synchronous I/O only, as on cgroup v1)
  -h, --help  this text
";

/// util-vserver's `fillUintZero`: `val` zero-padded to `cnt` digits, or
/// its first `cnt` digits when it is longer.
fn fill_zero(val: u64, cnt: usize) -> String {
    let s = val.to_string();
    if s.len() < cnt {
        format!("{}{s}", "0".repeat(cnt - s.len()))
    } else {
        s[..cnt].to_string()
    }
}

/// util-vserver's `shortenMem`: bytes in 7 columns, right-aligned, with a
/// one-decimal binary suffix.
pub fn short_mem(bytes: u64) -> String {
    const SUFFIXES: [&str; 6] = [" ", "K", "M", "G", "T", "+"];
    let (mut val, mut modulo) = (bytes, 0);
    let mut suffix = "+";
    for s in SUFFIXES {
        if val < 1000 {
            suffix = s;
            break;
        }
        modulo = 10 * (val & 1023) / 1024;
        val >>= 10;
    }
    let val = val.min(9999);
    if val >= 1000 {
        modulo = 0;
    }
    let mut text = val.to_string();
    if modulo != 0 {
        text.push('.');
        text.push_str(&modulo.to_string());
    }
    text.push_str(suffix);
    format!("{text:>7}")
}

/// util-vserver's `shortenTime`: milliseconds in 10 columns,
/// right-aligned: `MmSSsCC` under an hour, `HhMMmSS` under a day,
/// `DdHHhMM`, `YyDDdHH` past 999 days.
pub fn short_time(ms: u64) -> String {
    let milli = ms % 1000;
    let mut t = ms / 1000;
    let ss = t % 60;
    t /= 60;
    let mm = t % 60;
    t /= 60;
    let hh = t % 24;
    t /= 24;
    let text = if t > 999 * 999 {
        "INVALID".to_string()
    } else if t > 999 {
        format!("{}y{}d{}", t / 365, fill_zero(t % 365, 2), fill_zero(hh, 2))
    } else if t > 0 {
        format!("{t}d{}h{}", fill_zero(hh, 2), fill_zero(mm, 2))
    } else if hh > 0 {
        format!("{hh}h{}m{}", fill_zero(mm, 2), fill_zero(ss, 2))
    } else {
        format!("{mm}m{}s{}", fill_zero(ss, 2), fill_zero(milli, 2))
    };
    format!("{text:>10}")
}

/// One guest's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its context.
    pub xid: u32,
    /// Processes.
    pub procs: u64,
    /// Virtual memory, bytes.
    pub vsz: u64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// User CPU time, ms.
    pub user_ms: u64,
    /// System CPU time, ms.
    pub sys_ms: u64,
    /// Time since it started, ms.
    pub uptime_ms: u64,
    /// Block I/O its cgroup was charged for, bytes read and written
    /// (`--json` only: util-vserver's table has no column for it).
    pub io: (u64, u64),
    /// Whether `io` includes buffered writeback (cgroup v2 io and memory).
    pub io_writeback: bool,
    /// Its name.
    pub name: String,
}

/// The header line.
pub const HEADER: &str = "CTX   PROC    VSZ    RSS  userTIME   sysTIME    UPTIME NAME";

/// A row as util-vserver prints it.
pub fn format_row(r: &Row) -> String {
    let name: String = r.name.chars().take(20).collect();
    format!(
        "{:<5}{:>5}{}{}{}{}{} {name}",
        r.xid,
        r.procs,
        short_mem(r.vsz),
        short_mem(r.rss),
        short_time(r.user_ms),
        short_time(r.sys_ms),
        short_time(r.uptime_ms)
    )
    .trim_end()
    .to_string()
}

/// The virtual size of process `pid` (`/proc/PID/stat` field 23), bytes.
fn vsize(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(20)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The figures of a running guest.
pub fn row_of(state: &State) -> Row {
    let fs = RealFs;
    let usage = state.cgroups.usage(&fs);
    let procs = state.cgroups.procs(&fs).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Row {
        xid: state.xid.0,
        procs: procs.len() as u64,
        vsz: procs.iter().map(|&p| vsize(p)).sum(),
        rss: usage.rss,
        user_ms: usage.user_usec / 1000,
        sys_ms: usage.system_usec / 1000,
        uptime_ms: now.saturating_sub(state.started * 1000),
        io: vxproc::source::io(&state.cgroups, &fs)
            .values()
            .fold((0, 0), |(r, w), d| (r + d.read_bytes, w + d.write_bytes)),
        io_writeback: state.cgroups.counts_writeback(),
        // A context without a guest (vcontext --create) has no name.
        name: if vxfs_kernel::registry::is_anonymous(&state.name) {
            String::new()
        } else {
            state.name.clone()
        },
    }
}

/// vserver-stat's options.
pub const SPECS: &[OptSpec] = &[
    OptSpec::flag("json", None, Some("json")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// Runs `vserver-stat`.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let mut json = false;
    for arg in crate::args::parse(SPECS, argv)? {
        match arg {
            Arg::Opt("json", _) => json = true,
            Arg::Opt(_, _) => return Err(CliError::Help),
            Arg::Operand(a) => {
                return Err(CliError::Usage(UsageError::new(format!(
                    "unknown argument '{}'",
                    a.to_string_lossy()
                ))));
            }
        }
    }
    let rows: Vec<Row> = Registry::open().list().iter().map(row_of).collect();
    if json {
        for r in &rows {
            let v = serde_json::json!({
                "xid": r.xid, "processes": r.procs, "vsz": r.vsz, "rss": r.rss,
                "user_ms": r.user_ms, "sys_ms": r.sys_ms, "uptime_ms": r.uptime_ms,
                "io_read_bytes": r.io.0, "io_write_bytes": r.io.1,
                "io_counts_writeback": r.io_writeback, "name": r.name,
            });
            writeln!(out, "{v}")?;
        }
    } else {
        writeln!(out, "{HEADER}")?;
        for r in &rows {
            writeln!(out, "{}", format_row(r))?;
        }
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_as_shorten_mem() {
        for (bytes, want) in [
            (0, "     0 "),
            (999, "   999 "),
            (1000, "   0.9K"),
            (1024, "     1K"),
            (1536, "   1.5K"),
            (52_428_800, "    50M"),
            (1_073_741_824, "     1G"),
            (u64::MAX, "  15.9+"),
        ] {
            assert_eq!(short_mem(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn times_as_shorten_time() {
        for (ms, want) in [
            (0, "0m00s00"),
            (5, "0m00s05"),
            (1_234, "0m01s23"),
            (61_000, "1m01s00"),
            (3_600_000, "1h00m00"),
            (3_723_000, "1h02m03"),
            (86_400_000 + 3_660_000, "1d01h01"),
            (1000 * 86_400_000, "2y27d00"),
        ] {
            assert_eq!(short_time(ms), format!("{want:>10}"), "{ms}");
        }
    }

    #[test]
    fn a_row_in_the_columns_of_the_header() {
        let r = Row {
            xid: 42,
            procs: 3,
            vsz: 52_428_800,
            rss: 4_194_304,
            user_ms: 1_234,
            sys_ms: 61_000,
            uptime_ms: 3_723_000,
            io: (0, 0),
            io_writeback: false,
            name: "web".into(),
        };
        let line = format_row(&r);
        assert_eq!(
            line,
            "42       3    50M     4M   0m01s23   1m01s00   1h02m03 web"
        );
        // Each figure ends where its header word ends.
        for word in ["PROC", "VSZ", "RSS", "userTIME", "sysTIME", "UPTIME"] {
            let end = HEADER.find(word).unwrap() + word.len();
            assert_ne!(line.as_bytes()[end - 1], b' ', "{word}");
            assert_eq!(line.as_bytes()[end], b' ', "{word}");
        }
        assert_eq!(line.find("web"), HEADER.find("NAME"));
    }
}

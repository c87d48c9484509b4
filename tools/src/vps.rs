//! `vps [PS-OPTIONS]`: `ps` with util-vserver's CONTEXT column right after
//! PID: the context right-aligned in 5 columns, a space, its name (`MAIN`
//! for the host, `ALL_PROC` for the spectator, the guest's name), padded to
//! 20 columns; `ERR` when a process's context cannot be told.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;

use vxfs_kernel::registry::Registry;

use crate::cli::{CliError, Outcome};

/// The usage text.
pub const USAGE: &str = "\
Usage: vps [PS-OPTIONS...]

Runs ps(1) with PS-OPTIONS and inserts a CONTEXT column after PID: each
process's context (its cgroup vx-XID; 0 is the host) and guest name.
";

const WIDTH: usize = 20;

/// The CONTEXT cell of a process in context `xid` (`None`: unknown).
pub fn cell(xid: Option<u32>, name: Option<&str>) -> String {
    let mut s = match xid {
        None => "  ERR ".to_string(),
        Some(x) => format!("{x:>5} "),
    };
    s.push_str(name.unwrap_or(""));
    if s.len() < WIDTH {
        format!("{s:<WIDTH$}")
    } else {
        s + " "
    }
}

/// Inserts the CONTEXT column into `ps` output; `context` gives a pid's
/// cell. `None` when the header has no PID column.
pub fn insert_column(output: &str, context: &mut dyn FnMut(u32) -> String) -> Option<String> {
    let mut lines = output.split_inclusive('\n');
    let header = lines.next()?;
    let pid_end = (header.find("PID")? + 4).min(header.len());
    let mut out = String::new();
    out.push_str(&header[..pid_end]);
    out.push_str(&format!("{:<WIDTH$}", "CONTEXT"));
    out.push_str(&header[pid_end..]);
    for line in lines {
        let end = pid_end.min(line.len());
        let start = end.saturating_sub(6);
        let pid = line
            .get(start..end)
            .and_then(|f| f.trim().parse::<u32>().ok());
        out.push_str(&line[..end]);
        out.push_str(&pid.map_or_else(|| cell(None, None), &mut *context));
        out.push_str(&line[end..]);
    }
    Some(out)
}

/// Runs `vps`.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    if argv.first().is_some_and(|a| a == "--help") {
        return Err(CliError::Help);
    }
    let ps = std::process::Command::new("ps")
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running ps: {e}"))?;
    let text = String::from_utf8_lossy(&ps.stdout);
    let registry = Registry::open();
    let mut names: HashMap<u32, Option<String>> = HashMap::new();
    let mut context = |pid: u32| {
        let found = crate::ctx::of_pid(pid);
        let name = found.xid.and_then(|x| {
            names
                .entry(x)
                .or_insert_with(|| crate::ctx::name_of(&registry, x))
                .clone()
        });
        cell(found.xid, name.as_deref())
    };
    match insert_column(&text, &mut context) {
        Some(table) => out.write_all(table.as_bytes())?,
        None if text.is_empty() => {}
        None => return Err(anyhow::anyhow!("failed to parse ps output (no PID column)").into()),
    }
    std::io::stderr().write_all(&ps.stderr)?;
    Ok(match ps.status.code() {
        Some(0) => Outcome::Success,
        Some(c) => Outcome::Exit(c.clamp(0, 255) as u8),
        None => Outcome::Exit(254),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_after_pid() {
        let ps = "  PID TTY          TIME CMD\n    1 ?        00:00:01 init\n 4242 pts/0    00:00:00 sh\n";
        let mut ctx = |pid: u32| match pid {
            1 => cell(Some(0), Some("MAIN")),
            _ => cell(Some(42), Some("web")),
        };
        let out = insert_column(ps, &mut ctx).unwrap();
        assert_eq!(
            out,
            concat!(
                "  PID CONTEXT             TTY          TIME CMD\n",
                "    1     0 MAIN          ?        00:00:01 init\n",
                " 4242    42 web           pts/0    00:00:00 sh\n"
            )
        );
        assert_eq!(cell(None, None), "  ERR               ");
        assert_eq!(
            cell(Some(7), Some("a-very-long-guest-name")),
            "    7 a-very-long-guest-name "
        );
        assert_eq!(insert_column("no header\n", &mut ctx), None);
    }
}

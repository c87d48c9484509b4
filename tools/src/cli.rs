//! What every tool's `main` shares: exit codes, error printing, broken pipes.
//!
//! # Exit codes
//!
//! * 0: success (also when stdout is closed early: a broken pipe is not an
//!   error, `vdlimit --list /mnt | head -1` must not complain);
//! * 1: failure; for the per-file tools, at least one file failed (the
//!   others were still processed, each failure reported as `tool: PATH: why`);
//! * 2: bad usage; the message and the usage text go to stderr.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::process::ExitCode;

/// Exit code of a failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of bad usage.
pub const EXIT_USAGE: u8 = 2;

/// A command line that does not make sense; exits 2 with the usage text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(String);

impl UsageError {
    /// A usage error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        UsageError(message.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// How a tool's run ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked.
    Success,
    /// Some items failed; each was already reported on stderr.
    SomeFailed,
    /// The tool's own exit code (`vserver NAME status` of a stopped guest
    /// is 3, `exec` passes on its command's).
    Exit(u8),
}

/// Why a tool's run stopped.
#[derive(Debug)]
pub enum CliError {
    /// `-h`/`--help`: print the usage text on stdout, exit 0.
    Help,
    /// Bad usage (exit 2).
    Usage(UsageError),
    /// A failure (exit 1, or 0 for a broken pipe).
    Failed(anyhow::Error),
}

impl From<UsageError> for CliError {
    fn from(e: UsageError) -> Self {
        CliError::Usage(e)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Failed(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Failed(e.into())
    }
}

/// util-vserver's exit code for a failure of a tool that runs a program
/// (`vcontext`, `vnamespace`): never a code the program could return.
pub const WRAPPER_FAILED: u8 = 255;

/// `result` of such a tool with its failures, usage ones too, reported
/// and turned into [`WRAPPER_FAILED`].
pub fn as_wrapper(tool: &str, result: Result<Outcome, CliError>) -> Result<Outcome, CliError> {
    match result {
        Err(CliError::Usage(e)) => {
            eprintln!("{tool}: {e}\nTry '{tool} --help' for more information.");
            Ok(Outcome::Exit(WRAPPER_FAILED))
        }
        Err(CliError::Failed(e)) if !is_broken_pipe(&e) => {
            eprintln!("{tool}: {e:#}");
            Ok(Outcome::Exit(WRAPPER_FAILED))
        }
        other => other,
    }
}

/// Whether `err` is, anywhere in its chain, a write to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The signature of a tool body: the arguments after the program name, and
/// where to write its normal output.
pub type Body = fn(Vec<OsString>, &mut dyn Write) -> Result<Outcome, CliError>;

/// Runs a tool body with the process's arguments and turns its result into
/// the exit code (see the module doc).
pub fn main(tool: &str, usage: &str, body: Body) -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.first().is_some_and(|a| a == "--version") {
        let _ = writeln!(out, "{tool} (vxfs) {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    // What the libraries log (the guest supervisor's life, a journal that
    // cannot be written) is tagged with the tool's name.
    vxfs_log::init(tool, vxfs_log::LevelFilter::Info, false);
    let result = body(args, &mut out).and_then(|outcome| {
        out.flush()?;
        Ok(outcome)
    });
    ExitCode::from(exit_code(tool, usage, result, &mut out))
}

/// Reports `result` (stderr, or stdout for `--help`) and returns the code.
fn exit_code(
    tool: &str,
    usage: &str,
    result: Result<Outcome, CliError>,
    out: &mut dyn Write,
) -> u8 {
    match result {
        Ok(Outcome::Success) => 0,
        Ok(Outcome::SomeFailed) => EXIT_FAILURE,
        Ok(Outcome::Exit(code)) => code,
        Err(CliError::Help) => {
            // A closed stdout while printing help is not worth a complaint.
            let _ = out.write_all(usage.as_bytes()).and_then(|()| out.flush());
            0
        }
        Err(CliError::Usage(e)) => {
            eprint!("{tool}: {e}\n{}", synopsis(usage));
            eprintln!("Try '{tool} --help' for more information.");
            EXIT_USAGE
        }
        Err(CliError::Failed(e)) if is_broken_pipe(&e) => 0,
        Err(CliError::Failed(e)) => {
            eprintln!("{tool}: {e:#}");
            EXIT_FAILURE
        }
    }
}

/// The synopsis of a usage text: up to its first blank line.
fn synopsis(usage: &str) -> &str {
    usage.find("\n\n").map_or(usage, |end| &usage[..end + 1])
}

/// Capability number of `CAP_SYS_ADMIN` (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process has `CAP_SYS_ADMIN` in its effective set, which the
/// kernel requires to read or write `trusted.*` extended attributes (without
/// it reads answer "no such attribute", so every file would look untagged).
pub fn has_cap_sys_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| cap_eff(&status))
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let mut sink = Vec::new();
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let table: Vec<(Result<Outcome, CliError>, u8)> = vec![
            (Ok(Outcome::Success), 0),
            (Ok(Outcome::SomeFailed), 1),
            (Err(CliError::Help), 0),
            (Err(UsageError::new("bad").into()), 2),
            (Err(anyhow::anyhow!("boom").into()), 1),
            (
                Err(CliError::Failed(
                    anyhow::Error::new(pipe).context("writing"),
                )),
                0,
            ),
        ];
        for (result, code) in table {
            let shown = format!("{result:?}");
            assert_eq!(
                exit_code("t", "usage\n", result, &mut sink),
                code,
                "{shown}"
            );
        }
        assert_eq!(sink, b"usage\n", "help goes to stdout");
    }

    #[test]
    fn synopsis_is_the_first_paragraph() {
        assert_eq!(
            synopsis("Usage: t A\n       t B\n\nMore.\n"),
            "Usage: t A\n       t B\n"
        );
        assert_eq!(synopsis("Usage: t\n"), "Usage: t\n");
    }

    #[test]
    fn reads_the_effective_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(cap_eff(""), None);
    }
}

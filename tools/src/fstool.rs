//! The frame util-vserver's fstool gives chxid, lsxid, setattr and
//! showattr around the [`walk`] (docs/VSERVER.md §7): the command-line
//! options they share, `CAP_SYS_ADMIN` up front, refusing files that are
//! not on a vxfs mount (unless `--backing`), every failure reported as
//! `TOOL: PATH: why` while the other files go on, the listing tools' one
//! stdout line per file (an error line for a file that failed), and the
//! exit outcome.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::PathBuf;

use rustix::fs::Stat;
use rustix::io::Errno;

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};
use crate::mountinfo::DevCheck;
use crate::tag::At;
use crate::walk::{self, Visitor, WalkOptions};

/// The options every fstool tool has.
const COMMON_SPECS: &[OptSpec] = &[
    OptSpec::flag("recurse", Some('R'), None),
    OptSpec::flag("one-fs", Some('x'), None),
    OptSpec::flag("backing", None, Some("backing")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// The options the listing tools add.
const LISTING_SPECS: &[OptSpec] = &[
    OptSpec::flag("all", Some('a'), None),
    OptSpec::flag("dirs", Some('d'), None),
];

/// The two kinds of fstool tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// lsxid, showattr: `-a` and `-d`; a directory operand is listed; no
    /// operand means `.`.
    Listing,
    /// chxid, setattr: a directory operand is changed itself unless `-R`;
    /// dot files are never skipped; at least one operand.
    Setting,
}

/// The part of a command line every fstool tool shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOptions {
    /// The traversal (`-R`, `-x`, `-a`, `-d`).
    pub walk: WalkOptions,
    /// `--backing`.
    pub backing: bool,
    /// The operands.
    pub files: Vec<PathBuf>,
}

/// Every option of a tool of `kind` with options `extra_specs` of its own.
pub fn specs(kind: Kind, extra_specs: &[OptSpec]) -> Vec<OptSpec> {
    let own = match kind {
        Kind::Listing => LISTING_SPECS,
        Kind::Setting => &[],
    };
    [COMMON_SPECS, own, extra_specs].concat()
}

/// Parses a tool's arguments: the options of its [`Kind`] plus its own
/// `extra_specs`, which `extra` handles (with their values) in order.
pub fn parse(
    kind: Kind,
    extra_specs: &[OptSpec],
    argv: Vec<OsString>,
    mut extra: impl FnMut(&'static str, Option<OsString>) -> Result<(), CliError>,
) -> Result<FsOptions, CliError> {
    let specs = specs(kind, extra_specs);
    let mut walk = WalkOptions::default();
    let mut backing = false;
    let mut files = Vec::new();
    for arg in args::parse(&specs, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("recurse", _) => walk.recurse = true,
            Arg::Opt("one-fs", _) => walk.one_fs = true,
            Arg::Opt("backing", _) => backing = true,
            Arg::Opt("all", _) => walk.dot_files = true,
            Arg::Opt("dirs", _) => walk.dirs_as_files = true,
            Arg::Opt(name, value) => extra(name, value)?,
            Arg::Operand(f) => files.push(PathBuf::from(f)),
        }
    }
    match kind {
        Kind::Listing if files.is_empty() => files.push(PathBuf::from(".")),
        Kind::Listing => {}
        Kind::Setting => {
            if files.is_empty() {
                return Err(UsageError::new("no file given").into());
            }
            walk.dot_files = true;
            walk.dirs_as_files = !walk.recurse;
        }
    }
    Ok(FsOptions {
        walk,
        backing,
        files,
    })
}

/// A tool's work on each file.
pub trait Action {
    /// Works on one file (on a vxfs mount, or anywhere with `--backing`);
    /// `Err` says why it failed, [`run`] reports it.
    fn act(
        &mut self,
        at: At<'_>,
        st: &Stat,
        display: &OsStr,
        out: &mut Output<'_>,
    ) -> Result<(), String>;

    /// The stdout line (without newline) for a file that could not be
    /// worked on, for the listing tools.
    fn error_line(&self, _display: &OsStr) -> Option<Vec<u8>> {
        None
    }
}

/// A listing tool (lsxid, showattr): what it reads of each file, and the
/// line that shows it; every such tool is an [`Action`].
pub trait Listing {
    /// What is read of a file.
    type Value;

    /// Reads it; `Err` says why it could not be.
    fn read(&mut self, at: At<'_>, st: &Stat) -> Result<Self::Value, String>;

    /// The line (without newline) for `name`; `None`: it could not be read.
    fn line(value: Option<Self::Value>, name: &OsStr) -> Vec<u8>;
}

impl<L: Listing> Action for L {
    fn act(
        &mut self,
        at: At<'_>,
        st: &Stat,
        display: &OsStr,
        out: &mut Output<'_>,
    ) -> Result<(), String> {
        let value = self.read(at, st)?;
        out.line(L::line(Some(value), display));
        Ok(())
    }

    fn error_line(&self, display: &OsStr) -> Option<Vec<u8>> {
        Some(L::line(None, display))
    }
}

/// Standard output for the listing tools: lines until the first write
/// error, after which the run stops.
pub struct Output<'a> {
    out: &'a mut dyn Write,
    error: Option<std::io::Error>,
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Output<'_> {
    /// Writes `line` and a newline.
    pub fn line(&mut self, mut line: Vec<u8>) {
        if self.error.is_some() {
            return;
        }
        line.push(b'\n');
        if let Err(e) = self.out.write_all(&line) {
            self.error = Some(e);
        }
    }

    /// Flushes before something goes to stderr, to keep the two in order
    /// on a terminal (an error shows on the next write).
    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// The [`Visitor`] running an [`Action`] on the files of vxfs mounts.
struct Runner<'a> {
    tool: &'static str,
    on_vxfs: DevCheck,
    action: &'a mut dyn Action,
    out: Output<'a>,
}

impl Runner<'_> {
    fn failed(&mut self, display: &OsStr, why: &str) {
        self.out.flush();
        eprintln!("{}: {}: {why}", self.tool, display.to_string_lossy());
        if let Some(line) = self.action.error_line(display) {
            self.out.line(line);
        }
    }
}

impl Visitor for Runner<'_> {
    fn visit(&mut self, at: At<'_>, st: &Stat, display: &OsStr) -> bool {
        let result = self
            .on_vxfs
            .check(st.st_dev)
            .and_then(|()| self.action.act(at, st, display, &mut self.out));
        match result {
            Ok(()) => true,
            Err(why) => {
                self.failed(display, &why);
                false
            }
        }
    }

    fn walk_error(&mut self, display: &OsStr, err: Errno) {
        self.out.flush();
        eprintln!(
            "{}: {}: {}",
            self.tool,
            display.to_string_lossy(),
            std::io::Error::from(err)
        );
    }
}

/// What [`run`] works on.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The tool's name, for messages.
    pub tool: &'static str,
    /// The operands, how to walk them, and whether they may be anywhere
    /// (`--backing`) instead of on vxfs mounts only.
    pub opts: &'a FsOptions,
    /// Why the tool needs `CAP_SYS_ADMIN` (which the kernel wants for any
    /// `trusted.*` xattr): the error without it.
    pub needs_cap: &'static str,
    /// Appended to the refusal of a file not on vxfs (how to use
    /// `--backing` for this tool).
    pub backing_hint: &'static str,
    /// A warning printed before working with `--backing`.
    pub backing_warning: Option<&'static str>,
}

/// Walks every operand of `job` with `action`, after checking for
/// `CAP_SYS_ADMIN`. A file off vxfs (without `--backing`) is refused; an
/// operand off vxfs is refused once, not once per entry.
pub fn run(
    job: Job<'_>,
    action: &mut dyn Action,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    if !crate::cli::has_cap_sys_admin() {
        return Err(anyhow::anyhow!("{}", job.needs_cap).into());
    }
    if let (true, Some(warning)) = (job.opts.backing, job.backing_warning) {
        eprintln!("{}: warning: {warning}", job.tool);
    }
    let mut runner = Runner {
        tool: job.tool,
        on_vxfs: DevCheck::new(job.opts.backing, job.backing_hint),
        action,
        out: Output { out, error: None },
    };
    let mut failures = 0;
    for f in &job.opts.files {
        if let Err(why) = runner.on_vxfs.check_arg(f) {
            runner.failed(f.as_os_str(), &why);
            failures += 1;
        } else {
            failures += walk::walk(f, job.opts.walk, &mut runner);
        }
        if runner.out.error.is_some() {
            break;
        }
    }
    if let Some(e) = runner.out.error {
        return Err(anyhow::Error::new(e).context("writing to stdout").into());
    }
    Ok(if failures == 0 {
        Outcome::Success
    } else {
        Outcome::SomeFailed
    })
}

/// How a failed change of tags or flags is reported: the errno's text,
/// with a hint for the common ones; `what` is what only the host
/// administrator may do.
pub fn change_error(err: Errno, what: &str) -> String {
    let hint = match err {
        Errno::PERM => {
            format!(" (only the host administrator, root in the host context, may {what})")
        }
        Errno::OPNOTSUPP => " (the filesystem does not support trusted.* xattrs)".to_string(),
        _ => String::new(),
    };
    format!("{}{hint}", std::io::Error::from(err))
}

/// Helpers for the tools' command-line tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::ffi::OsString;

    use super::{FsOptions, Kind};
    use crate::cli::CliError;

    /// What [`super::parse`] makes of `line` for a tool of `kind` without
    /// options of its own.
    pub(crate) fn fs_options(kind: Kind, line: &str) -> FsOptions {
        super::parse(kind, &[], words(line), |_, _| unreachable!()).unwrap()
    }

    /// A command line split on white space.
    pub(crate) fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    /// Asserts that each line of `table` is a usage error whose message
    /// starts with the text beside it.
    pub(crate) fn assert_usage_errors<T: std::fmt::Debug>(
        parse: fn(Vec<OsString>) -> Result<T, CliError>,
        table: &[(&str, &str)],
    ) {
        for &(line, want) in table {
            match parse(words(line)) {
                Err(CliError::Usage(e)) => {
                    assert!(e.to_string().starts_with(want), "{line:?}: {e}")
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_usage_errors, words};
    use super::*;

    fn listing(argv: Vec<OsString>) -> Result<FsOptions, CliError> {
        parse(Kind::Listing, &[], argv, |_, _| unreachable!())
    }

    fn setting(argv: Vec<OsString>) -> Result<FsOptions, CliError> {
        parse(Kind::Setting, &[], argv, |_, _| unreachable!())
    }

    #[test]
    fn parses_both_kinds() {
        let all = WalkOptions {
            recurse: true,
            one_fs: true,
            dot_files: true,
            dirs_as_files: true,
        };
        // (kind, line, walk, backing, files)
        let table: &[(Kind, &str, WalkOptions, bool, &[&str])] = &[
            (Kind::Listing, "-Radx --backing f", all, true, &["f"]),
            (Kind::Listing, "", WalkOptions::default(), false, &["."]),
            (
                Kind::Setting,
                "-Rx a b",
                WalkOptions {
                    dirs_as_files: false,
                    ..all
                },
                false,
                &["a", "b"],
            ),
            (
                Kind::Setting,
                "--backing f",
                WalkOptions {
                    recurse: false,
                    one_fs: false,
                    ..all
                },
                true,
                &["f"],
            ),
        ];
        for &(kind, line, walk, backing, files) in table {
            let parse = match kind {
                Kind::Listing => listing,
                Kind::Setting => setting,
            };
            let files = files.iter().map(PathBuf::from).collect();
            let want = FsOptions {
                walk,
                backing,
                files,
            };
            assert_eq!(parse(words(line)).unwrap(), want, "{line:?}");
        }
        assert!(matches!(listing(words("-h")), Err(CliError::Help)));
        assert!(matches!(setting(words("--help f")), Err(CliError::Help)));
    }

    #[test]
    fn rejects() {
        assert_usage_errors(listing, &[("-q", "unknown option '-q'")]);
        assert_usage_errors(
            setting,
            &[
                ("", "no file given"),
                ("-a f", "unknown option '-a'"),
                ("-d f", "unknown option '-d'"),
            ],
        );
    }
}

//! `lsxid [-R] [-a] [-d] [-n] [-x] [--backing] [FILE...]`: shows files'
//! context tags (vserver-semantics §7).
//!
//! One line per file: the xid right-aligned in 20 columns, two spaces, the
//! name; a file whose tag cannot be read shows `!!ERR!!` (left-aligned in
//! the 20 columns, as util-vserver) and the reason goes to stderr.
//! Directories are listed (themselves first, then their entries) unless
//! `-d`. Without FILE, `.` is listed. `-n` (numeric) is accepted: vxfs
//! has no context names, so numbers are all it shows.
//!
//! Tags are read with `lgetxattr(trusted.vxfs.xid)` through a vxfs mount
//! (checked per file), or with `--backing` directly from a SOURCE tree.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::Stat;
use rustix::io::Errno;
use vxfs::tagging::Xid;

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome};
use crate::mountinfo::DevCheck;
use crate::tag::{self, At};
use crate::walk::{self, Visitor, WalkOptions};

/// The usage text.
pub const USAGE: &str = "\
Usage: lsxid [-R] [-a] [-d] [-n] [-x] [--backing] [--] [FILE...]

Shows the context tag (xid) of each FILE on a vxfs mount (default: .).
Needs CAP_SYS_ADMIN (root): the kernel hides trusted.* xattrs from others.

  -R              recurse into directories
  -a              show names starting with '.' too
  -d              show directories themselves instead of their entries
  -n              numeric xids (the default: vxfs has no context names)
  -x              do not cross filesystems when recursing
      --backing   FILEs are in a SOURCE tree, not on a mount: read the
                  backing inodes directly
  -h, --help      this text

Output: the xid right-aligned in 20 columns, two spaces, the name;
!!ERR!! in place of the xid when the tag cannot be read.
Exit status: 0 all tags read, 1 some failed, 2 bad usage.
";

const SPECS: &[OptSpec] = &[
    OptSpec::flag("recurse", Some('R'), None),
    OptSpec::flag("all", Some('a'), None),
    OptSpec::flag("dirs", Some('d'), None),
    OptSpec::flag("numeric", Some('n'), None),
    OptSpec::flag("one-fs", Some('x'), None),
    OptSpec::flag("backing", None, Some("backing")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// Width of the xid column.
const XID_WIDTH: usize = 20;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The traversal.
    pub walk: WalkOptions,
    /// `--backing`.
    pub backing: bool,
    /// The operands (`.` when none were given).
    pub files: Vec<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<Options, CliError> {
    let mut walk = WalkOptions::default();
    let mut backing = false;
    let mut files = Vec::new();
    for arg in args::parse(SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("recurse", _) => walk.recurse = true,
            Arg::Opt("all", _) => walk.dot_files = true,
            Arg::Opt("dirs", _) => walk.dirs_as_files = true,
            Arg::Opt("numeric", _) => {}
            Arg::Opt("one-fs", _) => walk.one_fs = true,
            Arg::Opt("backing", _) => backing = true,
            Arg::Opt(..) => unreachable!("every option is matched"),
            Arg::Operand(f) => files.push(PathBuf::from(f)),
        }
    }
    if files.is_empty() {
        files.push(PathBuf::from("."));
    }
    Ok(Options {
        walk,
        backing,
        files,
    })
}

/// One output line (without the newline).
pub fn line(xid: Option<Xid>, name: &OsStr) -> Vec<u8> {
    let mut out = match xid {
        Some(x) => format!("{:>XID_WIDTH$}  ", x.0),
        None => format!("{:<XID_WIDTH$}  ", "!!ERR!!"),
    }
    .into_bytes();
    out.extend_from_slice(name.as_bytes());
    out
}

struct Show<'a> {
    out: &'a mut dyn Write,
    on_vxfs: DevCheck,
    /// The first stdout failure; the walk stops printing after it.
    write_error: Option<std::io::Error>,
}

impl Show<'_> {
    fn emit(&mut self, xid: Option<Xid>, name: &OsStr) {
        if self.write_error.is_some() {
            return;
        }
        let mut l = line(xid, name);
        l.push(b'\n');
        if let Err(e) = self.out.write_all(&l) {
            self.write_error = Some(e);
        }
    }
}

impl Visitor for Show<'_> {
    fn visit(&mut self, at: At<'_>, st: &Stat, display: &OsStr) -> bool {
        let result = self
            .on_vxfs
            .check(st.st_dev)
            .and_then(|()| tag::get(at).map_err(|e| e.to_string()));
        match result {
            Ok(xid) => {
                self.emit(Some(xid), display);
                true
            }
            Err(why) => {
                // Keep stdout and stderr in order on a terminal.
                let _ = self.out.flush();
                eprintln!("lsxid: {}: {why}", display.to_string_lossy());
                self.emit(None, display);
                false
            }
        }
    }

    fn walk_error(&mut self, display: &OsStr, err: Errno) {
        let _ = self.out.flush();
        eprintln!(
            "lsxid: {}: {}",
            display.to_string_lossy(),
            std::io::Error::from(err)
        );
    }
}

/// Runs lsxid.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let opts = parse(argv)?;
    if !crate::cli::has_cap_sys_admin() {
        return Err(anyhow::anyhow!(
            "reading tags needs CAP_SYS_ADMIN (run as root): the kernel hides trusted.* \
             xattrs from other users, so every file would read as 0"
        )
        .into());
    }
    let mut show = Show {
        out,
        on_vxfs: DevCheck::new(
            opts.backing,
            "; use --backing to read files of a SOURCE tree directly",
        ),
        write_error: None,
    };
    let mut failures = 0;
    for f in &opts.files {
        if let Err(why) = show.on_vxfs.check_arg(f) {
            eprintln!("lsxid: {}: {why}", f.display());
            show.emit(None, f.as_os_str());
            failures += 1;
            continue;
        }
        failures += walk::walk(f, opts.walk, &mut show);
        if show.write_error.is_some() {
            break;
        }
    }
    if let Some(e) = show.write_error {
        return Err(anyhow::Error::new(e).context("writing to stdout").into());
    }
    Ok(if failures == 0 {
        Outcome::Success
    } else {
        Outcome::SomeFailed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let table: &[(Option<u32>, &str, &str)] = &[
            (Some(0), "a", "                   0  a"),
            (Some(42), "dir/f x", "                  42  dir/f x"),
            (Some(u32::MAX), "f", "          4294967295  f"),
            (None, "bad", "!!ERR!!               bad"),
        ];
        for &(xid, name, want) in table {
            let got = line(xid.map(Xid), OsStr::new(name));
            assert_eq!(String::from_utf8(got).unwrap(), want);
        }
    }

    #[test]
    fn parses() {
        let words = |s: &str| s.split_whitespace().map(OsString::from).collect::<Vec<_>>();
        let o = parse(words("-Radnx --backing f")).unwrap();
        assert_eq!(
            o.walk,
            WalkOptions {
                recurse: true,
                one_fs: true,
                dot_files: true,
                dirs_as_files: true,
            }
        );
        assert!(o.backing);
        assert_eq!(parse(words("")).unwrap().files, vec![PathBuf::from(".")]);
        assert!(matches!(parse(words("-c 5")), Err(CliError::Usage(_))));
    }
}

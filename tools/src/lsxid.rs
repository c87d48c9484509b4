//! `lsxid [-R] [-a] [-d] [-n] [-x] [--backing] [FILE...]`: shows files'
//! context tags (docs/VSERVER.md §7).
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

use rustix::fs::Stat;
use vxfs::tagging::Xid;

use crate::args::OptSpec;
use crate::cli::{CliError, Outcome};
use crate::fstool::{self, FsOptions, Job, Kind, Listing};
use crate::tag::{self, At};

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

/// lsxid's own options, beside [`fstool::Kind::Listing`]'s.
pub const SPECS: &[OptSpec] = &[OptSpec::flag("numeric", Some('n'), None)];

/// Width of the xid column.
const XID_WIDTH: usize = 20;

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<FsOptions, CliError> {
    // -n: numbers are all vxfs has.
    fstool::parse(Kind::Listing, SPECS, argv, |_numeric, _| Ok(()))
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

/// What lsxid does with each file.
struct Show;

impl Listing for Show {
    type Value = Xid;

    fn read(&mut self, at: At<'_>, _: &Stat) -> Result<Xid, String> {
        tag::get(at).map_err(|e| e.to_string())
    }

    fn line(xid: Option<Xid>, name: &OsStr) -> Vec<u8> {
        line(xid, name)
    }
}

/// Runs lsxid.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let opts = parse(argv)?;
    let job = Job {
        tool: "lsxid",
        opts: &opts,
        needs_cap: "reading tags needs CAP_SYS_ADMIN (run as root): the kernel hides trusted.* \
                    xattrs from other users, so every file would read as 0",
        backing_hint: "; use --backing to read files of a SOURCE tree directly",
        backing_warning: None,
    };
    fstool::run(job, &mut Show, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fstool::testing::{assert_usage_errors, fs_options, words};

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
        let o = parse(words("-Radnx --backing f")).unwrap();
        assert_eq!(o, fs_options(Kind::Listing, "-Radx --backing f"));
        assert_usage_errors(parse, &[("-c 5", "unknown option '-c'")]);
    }
}

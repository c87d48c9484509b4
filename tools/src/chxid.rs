//! `chxid -c XID [-R] [-x] [--backing] FILE...`: sets files' context tag
//! (vserver-semantics §7).
//!
//! Through a vxfs mount (the default, checked per file) the tag is set with
//! `lsetxattr(trusted.vxfs.xid)`, which the daemon allows the host
//! administrator only; it moves the inode's usage to the new context. With
//! `--backing` the files are in a SOURCE tree and are retagged directly:
//! usage counters are not moved, so a warning says how they drift.
//!
//! `-U` (skip unified files) is refused for now: vxfs has no unified
//! (IMMUTABLE+IUNLINK) files until vhashify exists, and a chxid that
//! silently accepted `-U` would retag shared inodes once they do.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::PathBuf;

use rustix::fs::Stat;
use rustix::io::Errno;
use vxfs::tagging::Xid;

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};
use crate::mountinfo::DevCheck;
use crate::num::parse_xid;
use crate::tag::{self, At};
use crate::walk::{self, Visitor, WalkOptions};

/// The usage text.
pub const USAGE: &str = "\
Usage: chxid -c XID [-R] [-x] [--backing] [--] FILE...

Sets the context tag (xid) of each FILE on a vxfs mount. Needs the host
administrator (root in the host context); the files' disk usage moves to
the new context.

  -c, --ctx XID   the new context (a number: decimal, 0x hex or 0 octal;
                  0 = the host)
  -R              recurse into directories (the directory itself first)
  -x              do not cross filesystems when recursing
  -U              skip unified files: not supported yet (vxfs has no
                  unified files until vhashify exists)
      --backing   FILEs are in a SOURCE tree, not on a mount: retag the
                  backing inodes directly (usage counters are NOT moved)
  -h, --help      this text

Exit status: 0 all files retagged, 1 some failed, 2 bad usage.
";

const SPECS: &[OptSpec] = &[
    OptSpec::valued("ctx", Some('c'), Some("ctx")),
    OptSpec::flag("recurse", Some('R'), None),
    OptSpec::flag("one-fs", Some('x'), None),
    OptSpec::flag("unified", Some('U'), None),
    OptSpec::flag("backing", None, Some("backing")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The new tag.
    pub xid: Xid,
    /// `-R`.
    pub recurse: bool,
    /// `-x`.
    pub one_fs: bool,
    /// `--backing`.
    pub backing: bool,
    /// The operands.
    pub files: Vec<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<Options, CliError> {
    let mut xid = None;
    let (mut recurse, mut one_fs, mut backing) = (false, false, false);
    let mut files = Vec::new();
    for arg in args::parse(SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("ctx", Some(v)) => {
                if xid.is_some() {
                    return Err(UsageError::new("-c given twice").into());
                }
                let text = args::text("-c", &v)?;
                xid = Some(Xid(parse_xid("-c", text)?));
            }
            Arg::Opt("recurse", _) => recurse = true,
            Arg::Opt("one-fs", _) => one_fs = true,
            Arg::Opt("unified", _) => {
                return Err(UsageError::new(
                    "-U is not supported yet: vxfs has no unified (IMMUTABLE+IUNLINK) files \
                     until vhashify exists",
                )
                .into());
            }
            Arg::Opt("backing", _) => backing = true,
            Arg::Opt(..) => unreachable!("every option is matched"),
            Arg::Operand(f) => files.push(PathBuf::from(f)),
        }
    }
    let xid = xid.ok_or_else(|| UsageError::new("no context given (-c XID)"))?;
    if files.is_empty() {
        return Err(UsageError::new("no file given").into());
    }
    Ok(Options {
        xid,
        recurse,
        one_fs,
        backing,
        files,
    })
}

/// A hint for the errors a retag commonly meets.
fn hint(err: Errno) -> &'static str {
    match err {
        Errno::PERM => " (only the host administrator, root in the host context, may retag)",
        Errno::OPNOTSUPP => " (the filesystem does not support trusted.* xattrs)",
        _ => "",
    }
}

/// The per-file action.
struct Retag {
    xid: Xid,
    on_vxfs: DevCheck,
}

impl Visitor for Retag {
    fn visit(&mut self, at: At<'_>, st: &Stat, display: &OsStr) -> bool {
        if let Err(why) = self.on_vxfs.check(st.st_dev) {
            eprintln!("chxid: {}: {why}", display.to_string_lossy());
            return false;
        }
        match tag::set(at, self.xid) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "chxid: {}: {}{}",
                    display.to_string_lossy(),
                    std::io::Error::from(e),
                    hint(e)
                );
                false
            }
        }
    }

    fn walk_error(&mut self, display: &OsStr, err: Errno) {
        eprintln!(
            "chxid: {}: {}",
            display.to_string_lossy(),
            std::io::Error::from(err)
        );
    }
}

/// Runs chxid.
pub fn run(argv: Vec<OsString>, _out: &mut dyn Write) -> Result<Outcome, CliError> {
    let opts = parse(argv)?;
    if !crate::cli::has_cap_sys_admin() {
        return Err(anyhow::anyhow!(
            "setting tags needs CAP_SYS_ADMIN (run as root on the host): the kernel \
             refuses trusted.* xattrs to other users"
        )
        .into());
    }
    if opts.backing {
        eprintln!(
            "chxid: warning: --backing retags SOURCE files behind vxfs's back: usage counters \
             are not moved. While SOURCE is mounted its daemon keeps charging the old context; \
             unmounted, the next mount trusts its saved counters. Retag through the mount to \
             keep usage exact."
        );
    }
    let walk_opts = WalkOptions {
        recurse: opts.recurse,
        one_fs: opts.one_fs,
        // A tool that sets attributes covers dot files too (fstool).
        dot_files: true,
        dirs_as_files: !opts.recurse,
    };
    let mut retag = Retag {
        xid: opts.xid,
        on_vxfs: DevCheck::new(
            opts.backing,
            "; use --backing to retag files of a SOURCE tree directly",
        ),
    };
    let mut failures = 0;
    for f in &opts.files {
        if let Err(why) = retag.on_vxfs.check_arg(f) {
            eprintln!("chxid: {}: {why}", f.display());
            failures += 1;
            continue;
        }
        failures += walk::walk(f, walk_opts, &mut retag);
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

    fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn parses() {
        let o = parse(words("-c 5 -Rx a b")).unwrap();
        assert_eq!(
            o,
            Options {
                xid: Xid(5),
                recurse: true,
                one_fs: true,
                backing: false,
                files: vec!["a".into(), "b".into()],
            }
        );
        assert_eq!(parse(words("--ctx=0x10 --backing f")).unwrap().xid, Xid(16));
        assert!(parse(words("--backing -c0 f")).unwrap().backing);
        assert!(matches!(parse(words("-h")), Err(CliError::Help)));
    }

    #[test]
    fn rejects() {
        let table = [
            ("a", "no context given (-c XID)"),
            ("-c 5", "no file given"),
            ("-c 5 -c 6 f", "-c given twice"),
            ("-c x f", "-c: 'x' is not a context number"),
            ("-c -1 f", "-c: bad context number '-1'"),
            ("-c 5 -U f", "-U is not supported yet"),
            ("-c 5 -q f", "unknown option '-q'"),
        ];
        for (line, want) in table {
            match parse(words(line)) {
                Err(CliError::Usage(e)) => {
                    assert!(e.to_string().starts_with(want), "{line:?}: {e}")
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }
}

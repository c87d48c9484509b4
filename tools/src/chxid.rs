//! `chxid -c XID [-R] [-x] [-U] [--backing] FILE...`: sets files' context
//! tag (docs/VSERVER.md §7).
//!
//! Through a vxfs mount (the default, checked per file) the tag is set with
//! `lsetxattr(trusted.vxfs.xid)`, which the daemon allows the host
//! administrator only; it moves the inode's usage to the new context. A
//! unified file (shared by hashify) is never retagged itself: the daemon
//! gives the name a private copy first, tagged as asked, and the other
//! guests' links keep the shared inode; `-U` skips unified files instead,
//! as util-vserver's did. With `--backing` the files are in a SOURCE tree
//! and are retagged directly: usage counters are not moved, so a warning
//! says how they drift.

use std::ffi::{OsStr, OsString};
use std::io::Write;

use rustix::fs::Stat;
use vxfs::tagging::Xid;

use crate::args::{self, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};
use crate::fstool::{self, Action, FsOptions, Job, Kind, Output};
use crate::num::parse_xid;
use crate::tag::{self, At};

/// The usage text.
pub const USAGE: &str = "\
Usage: chxid -c XID [-R] [-x] [-U] [--backing] [--] FILE...

Sets the context tag (xid) of each FILE on a vxfs mount. Needs the host
administrator (root in the host context); the files' disk usage moves to
the new context.

  -c, --ctx XID   the new context (a number: decimal, 0x hex or 0 octal;
                  0 = the host)
  -R              recurse into directories (the directory itself first)
  -x              do not cross filesystems when recursing
  -U              skip unified files (shared by hashify); without it, a
                  unified FILE gets a private copy, tagged XID, and the
                  other links stay shared
      --backing   FILEs are in a SOURCE tree, not on a mount: retag the
                  backing inodes directly (usage counters are NOT moved)
      --index PATH  with --backing: the tree's index; its counters are
                  marked unclean, so the next mount recounts
  -h, --help      this text

Exit status: 0 all files retagged, 1 some failed, 2 bad usage.
";

/// chxid's own options, beside [`fstool::Kind::Setting`]'s.
pub const SPECS: &[OptSpec] = &[
    OptSpec::valued("ctx", Some('c'), Some("ctx")),
    OptSpec::flag("unified", Some('U'), None),
    OptSpec::valued("index", None, Some("index")),
];

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The new tag.
    pub xid: Xid,
    /// `-U`: leave unified files alone.
    pub skip_unified: bool,
    /// `--index PATH` (with `--backing`): the tree's index, whose counters
    /// are marked unclean so that the next mount recounts.
    pub index: Option<std::path::PathBuf>,
    /// The files and how to walk them.
    pub fs: FsOptions,
}

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<Options, CliError> {
    let mut xid = None;
    let mut skip_unified = false;
    let mut index = None;
    let fs = fstool::parse(Kind::Setting, SPECS, argv, |name, value| {
        match (name, value) {
            ("ctx", Some(v)) => {
                if xid.is_some() {
                    return Err(UsageError::new("-c given twice").into());
                }
                let text = args::text("-c", &v)?;
                xid = Some(Xid(parse_xid("-c", text)?));
                Ok(())
            }
            ("unified", _) => {
                skip_unified = true;
                Ok(())
            }
            ("index", Some(v)) => {
                index = Some(std::path::PathBuf::from(v));
                Ok(())
            }
            _ => unreachable!("every option is matched"),
        }
    })?;
    let xid = xid.ok_or_else(|| UsageError::new("no context given (-c XID)"))?;
    if index.is_some() && !fs.backing {
        return Err(UsageError::new(
            "--index goes with --backing (through a mount the daemon moves the usage)",
        )
        .into());
    }
    Ok(Options {
        xid,
        skip_unified,
        index,
        fs,
    })
}

/// The per-file action.
struct Retag {
    xid: Xid,
    skip_unified: bool,
}

impl Action for Retag {
    fn act(&mut self, at: At<'_>, _: &Stat, _: &OsStr, _: &mut Output<'_>) -> Result<(), String> {
        if self.skip_unified {
            let flags = crate::flags::get(at).map_err(|e| format!("reading its flags: {e}"))?;
            if flags.unified() {
                return Ok(());
            }
        }
        tag::set(at, self.xid).map_err(|e| fstool::change_error(e, "retag"))
    }
}

/// Runs chxid.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let opts = parse(argv)?;
    // Marked before retagging: a mount starting meanwhile must recount.
    if let Some(index) = &opts.index {
        mark_unclean(index)?;
    }
    let job = Job {
        tool: "chxid",
        opts: &opts.fs,
        needs_cap: "setting tags needs CAP_SYS_ADMIN (run as root on the host): the kernel \
                    refuses trusted.* xattrs to other users",
        backing_hint: "; use --backing to retag files of a SOURCE tree directly",
        backing_warning: opts.index.is_none().then_some(
            "--backing retags SOURCE files behind vxfs's back: usage counters are not moved. \
             While SOURCE is mounted its daemon keeps charging the old context; unmounted, the \
             next mount trusts its saved counters unless you give --index TREE.vxfs.db (then \
             it recounts). Retag through the mount to keep usage exact.",
        ),
    };
    let mut retag = Retag {
        xid: opts.xid,
        skip_unified: opts.skip_unified,
    };
    fstool::run(job, &mut retag, out)
}

/// Marks the tree's index unclean, refusing while a mounted daemon holds
/// it (its counters would be saved over the mark).
fn mark_unclean(index: &std::path::Path) -> Result<(), CliError> {
    if vxfs::index::in_use(index) {
        return Err(anyhow::anyhow!(
            "index {} is in use by a mounted vxfs: retag through the mount instead, which moves \
             the usage",
            index.display()
        )
        .into());
    }
    let (opened, _) = vxfs::index::Index::open(index).map_err(|e| anyhow::anyhow!("{e}"))?;
    opened.mark_unclean().map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "chxid: marked the counters in {} unclean: the next mount recounts the tree",
        index.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fstool::testing::{assert_usage_errors, fs_options, words};

    #[test]
    fn parses() {
        let o = parse(words("-c 5 -R a b")).unwrap();
        assert_eq!(o.xid, Xid(5));
        assert_eq!(o.fs, fs_options(Kind::Setting, "-R a b"));
        assert_eq!(parse(words("--ctx=0x10 --backing f")).unwrap().xid, Xid(16));
        assert!(parse(words("--backing -c0 f")).unwrap().fs.backing);
        assert!(parse(words("-c 5 -U f")).unwrap().skip_unified);
        let o = parse(words("-c 5 --backing --index /i.db f")).unwrap();
        assert_eq!(o.index.as_deref(), Some(std::path::Path::new("/i.db")));
        assert!(!o.skip_unified);
        assert!(matches!(parse(words("-h")), Err(CliError::Help)));
    }

    #[test]
    fn rejects() {
        assert_usage_errors(
            parse,
            &[
                ("a", "no context given (-c XID)"),
                ("-c 5", "no file given"),
                ("-c 5 -c 6 f", "-c given twice"),
                ("-c x f", "-c: 'x' is not a context number"),
                ("-c -1 f", "-c: bad context number '-1'"),
                ("-c 5 -q f", "unknown option '-q'"),
                ("-c 5 --index /i f", "--index goes with --backing"),
            ],
        );
    }
}

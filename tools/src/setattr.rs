//! `setattr [-R] [-x] [--backing] [--FLAG|--~FLAG|--!FLAG]... FILE...`:
//! sets or clears files' attribute flags (docs/VSERVER.md §3.1, §7).
//!
//! The flags accumulate into a set and a clear mask, whatever their order,
//! and every file gets the original's masked set
//! `vc_set_iattr(f, 0, set & ~del, set | del)`: the bits of `set | del`
//! become those of `set & ~del`, the others stay. vxfs keeps the flags in
//! one xattr, so that is a read, the change, and one write of the whole
//! value ([`crate::flags`]); two setattr runs on one file at the same
//! moment may lose one's change. A stored value that does not parse (the
//! daemon treats the file as immutable) is only replaced by a change that
//! decides every flag, such as `--~flags 0xf0000`.
//!
//! As in the kernel, barrier sticks to directories and cow to regular
//! files only (dropped silently elsewhere), and admin, watch, hide (procfs
//! only) and write (userland only) are `EINVAL` on every file, to set or
//! to clear. Through a vxfs mount only the host administrator may change
//! flags; the daemon answers `EPERM` to everyone else.

use std::ffi::{OsStr, OsString};
use std::io::Write;

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;
use vxfs::iattr::IAttr;

use crate::args::{self, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};
use crate::flags;
use crate::fstool::{self, Action, FsOptions, Job, Kind, Output};
use crate::num::strtol0;
use crate::tag::{At, ReadError};

/// The usage text.
pub const USAGE: &str = "\
Usage: setattr [-R] [-x] [--backing] [--FLAG|--~FLAG|--!FLAG]... [--] FILE...

Sets (--FLAG) or clears (--~FLAG, --!FLAG) attribute flags of each FILE on
a vxfs mount. Needs the host administrator (root in the host context).

Flags:
  --iunlink, --immu    immutable + iunlink: a unified file, shared by hard
                       links; its names may go, a change breaks the link
                       (--~iunlink clears both)
  --immutable          no change, no removal, no rename, no link
  --iunlink-but-not-immutable, --ixunlink
                       iunlink alone: writable, but the names stay
  --barrier            (directories) no guest may use it
  --cow                (regular files) stored and shown only
  --admin, --watch, --hide, --write
                       procfs and userland flags: refused on files (EINVAL)
  --flags N            the raw IATTR_* bits N (decimal, 0x hex, 0 octal)

Options:
  -R              recurse into directories (the directory itself first)
  -x              do not cross filesystems when recursing
      --backing   FILEs are in a SOURCE tree, not on a mount: set the flags
                  of the backing inodes directly. A running daemon caches
                  each inode's flags and re-reads them once the inode's
                  ctime changes (setting them changes it), after its
                  attr_timeout.
  -h, --help      this text

Exit status: 0 all files changed, 1 some failed, 2 bad usage.
";

/// The flag options and the `IATTR_*` bits each stands for.
const FLAGS: &[(&str, u32)] = &[
    ("iunlink", IAttr::IMMUTABLE | IAttr::IUNLINK),
    ("immu", IAttr::IMMUTABLE | IAttr::IUNLINK),
    ("immutable", IAttr::IMMUTABLE),
    ("iunlink-but-not-immutable", IAttr::IUNLINK),
    ("ixunlink", IAttr::IUNLINK),
    ("barrier", IAttr::BARRIER),
    ("cow", IAttr::COW),
    ("admin", IAttr::ADMIN),
    ("watch", IAttr::WATCH),
    ("hide", IAttr::HIDE),
    ("write", IAttr::WRITE),
];

/// `--NAME`, `--~NAME` and `--!NAME` (both negations named `~NAME`) for
/// each flag option, and `--flags N` likewise.
macro_rules! flag_specs {
    ($($name:literal),* $(,)?) => {
        &[
            $(
                OptSpec::flag($name, None, Some($name)),
                OptSpec::flag(concat!("~", $name), None, Some(concat!("~", $name))),
                OptSpec::flag(concat!("~", $name), None, Some(concat!("!", $name))),
            )*
            OptSpec::valued("flags", None, Some("flags")),
            OptSpec::valued("~flags", None, Some("~flags")),
            OptSpec::valued("~flags", None, Some("!flags")),
        ]
    };
}

/// setattr's own options, beside [`fstool::Kind::Setting`]'s.
pub const SPECS: &[OptSpec] = flag_specs!(
    "iunlink",
    "immu",
    "immutable",
    "iunlink-but-not-immutable",
    "ixunlink",
    "barrier",
    "cow",
    "admin",
    "watch",
    "hide",
    "write",
);

/// The change to make: the original's set and clear masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// Bits to set.
    pub set: u32,
    /// Bits to clear (wins over `set`).
    pub del: u32,
}

impl Change {
    /// The flags after the change: the bits of `set | del` become those of
    /// `set & !del`.
    pub fn apply(self, old: u32) -> u32 {
        let mask = self.set | self.del;
        (old & !mask) | (self.set & !self.del)
    }

    /// Whether the change decides every flag a file can carry, so that
    /// the old value does not matter (and may even be corrupt).
    pub fn covers_all(self) -> bool {
        (self.set | self.del) & IAttr::STORABLE == IAttr::STORABLE
    }

    /// The flags a file of `kind` holding `old` gets: `EINVAL` if the change
    /// touches a bit no file can carry, else [`Change::apply`] with
    /// barrier kept to directories and cow to regular files
    /// ([`IAttr::for_kind`], the daemon's own rule).
    pub fn for_file(self, old: IAttr, kind: FileType) -> Result<IAttr, Errno> {
        IAttr::for_kind(self.set | self.del, kind)?;
        IAttr::for_kind(self.apply(old.0), kind)
    }
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The flags to set and clear.
    pub change: Change,
    /// The files and how to walk them.
    pub fs: FsOptions,
}

/// Parses a `--flags` value: a 32-bit mask as `strtol(s, &end, 0)` reads
/// it.
fn raw_flags(option: &str, value: &OsStr) -> Result<u32, UsageError> {
    let text = args::text(option, value)?;
    strtol0(text)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| UsageError::new(format!("{option}: bad flag mask '{text}'")))
}

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<Options, CliError> {
    let mut change = Change::default();
    let mut any = false;
    let fs = fstool::parse(Kind::Setting, SPECS, argv, |name, value| {
        let (negated, base) = match name.strip_prefix('~') {
            Some(base) => (true, base),
            None => (false, name),
        };
        let bits = match (base, value) {
            ("flags", Some(v)) => raw_flags(if negated { "--~flags" } else { "--flags" }, &v)?,
            _ => FLAGS
                .iter()
                .find(|(n, _)| *n == base)
                .map(|&(_, bits)| bits)
                .expect("every option is in FLAGS"),
        };
        if negated {
            change.del |= bits;
        } else {
            change.set |= bits;
        }
        any = true;
        Ok(())
    })?;
    if !any {
        return Err(UsageError::new("no flag given (--FLAG, --~FLAG or --flags N)").into());
    }
    Ok(Options { change, fs })
}

/// How a failed change is reported.
fn change_error(err: Errno) -> String {
    match err {
        Errno::INVAL => format!(
            "{} (admin, watch, hide and write are not file flags)",
            std::io::Error::from(err)
        ),
        e => fstool::change_error(e, "change flags"),
    }
}

/// The per-file action.
struct SetFlags {
    change: Change,
}

impl Action for SetFlags {
    fn act(&mut self, at: At<'_>, st: &Stat, _: &OsStr, _: &mut Output<'_>) -> Result<(), String> {
        let kind = FileType::from_raw_mode(st.st_mode);
        // Refuse an impossible change before reading anything.
        self.change
            .for_file(IAttr::NONE, kind)
            .map_err(change_error)?;
        let old = if self.change.covers_all() {
            IAttr::NONE
        } else {
            flags::get(at).map_err(|e| match e {
                ReadError::Corrupt(..) => format!(
                    "{e} (the daemon treats the file as immutable; set every flag at once to \
                     replace it, e.g. --~flags 0xf0000 to clear them all)"
                ),
                ReadError::Os(_) => e.to_string(),
            })?
        };
        self.change
            .for_file(old, kind)
            .and_then(|new| flags::set(at, new))
            .map_err(change_error)
    }
}

/// Runs setattr.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let opts = parse(argv)?;
    let job = Job {
        tool: "setattr",
        opts: &opts.fs,
        needs_cap: "setting flags needs CAP_SYS_ADMIN (run as root on the host): the kernel \
                    refuses trusted.* xattrs to other users",
        backing_hint: "; use --backing to set flags of files of a SOURCE tree directly",
        backing_warning: None,
    };
    let mut set = SetFlags {
        change: opts.change,
    };
    fstool::run(job, &mut set, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fstool::testing::{assert_usage_errors, fs_options, words};

    const I: u32 = IAttr::IMMUTABLE;
    const U: u32 = IAttr::IUNLINK;
    const B: u32 = IAttr::BARRIER;
    const C: u32 = IAttr::COW;

    fn change(line: &str) -> Change {
        parse(words(line)).unwrap().change
    }

    #[test]
    fn flag_options() {
        let table: &[(&str, u32, u32)] = &[
            ("--iunlink f", I | U, 0),
            ("--immu f", I | U, 0),
            ("--immutable f", I, 0),
            ("--iunlink-but-not-immutable f", U, 0),
            ("--ixunlink f", U, 0),
            ("--barrier --cow f", B | C, 0),
            ("--admin --watch --hide --write f", 0xf, 0),
            ("--~iunlink f", 0, I | U),
            ("--!iunlink f", 0, I | U),
            ("--!barrier --~immutable f", 0, B | I),
            ("--flags 0x40000 f", I, 0),
            ("--flags=0 f", 0, 0),
            ("--~flags 0x30000 f", 0, U | B),
            ("--!flags=01000000 f", 0, I),
            ("f --barrier --~cow", B, C),
        ];
        for &(line, set, del) in table {
            assert_eq!(change(line), Change { set, del }, "{line:?}");
        }
        let o = parse(words("-Rx --backing --cow a b")).unwrap();
        assert_eq!(o.fs, fs_options(Kind::Setting, "-Rx --backing a b"));
        assert!(matches!(parse(words("--help")), Err(CliError::Help)));
    }

    #[test]
    fn rejects() {
        assert_usage_errors(
            parse,
            &[
                ("f", "no flag given"),
                ("--iunlink", "no file given"),
                ("--frozen f", "unknown option '--frozen'"),
                ("--~ f", "unknown option '--~'"),
                ("--flags x f", "--flags: bad flag mask 'x'"),
                ("--flags -1 f", "--flags: bad flag mask '-1'"),
                ("--~flags 0x100000000 f", "--~flags: bad flag mask"),
                ("--flags", "option '--flags' needs a value"),
                ("--cow=1 f", "option '--cow' takes no value"),
                ("-c 5 f", "unknown option '-c'"),
            ],
        );
    }

    #[test]
    fn masked_set_like_vc_set_iattr() {
        let (reg, dir, link) = (
            FileType::RegularFile,
            FileType::Directory,
            FileType::Symlink,
        );
        /// (set, del, old, kind, new)
        type Row = (u32, u32, u32, FileType, Result<u32, Errno>);
        let table: &[Row] = &[
            (I | U, 0, 0, reg, Ok(I | U)),
            (0, I | U, I | U | C, reg, Ok(C)),
            (I, 0, U, reg, Ok(I | U)),
            (0, I, I | U, reg, Ok(U)),
            // Clearing wins over setting, as set & ~del, set | del does.
            (I | U, I, 0, reg, Ok(U)),
            // Barrier only on directories, cow only on regular files.
            (B, 0, 0, reg, Ok(0)),
            (B | C, 0, 0, dir, Ok(B)),
            (C | I, 0, 0, link, Ok(I)),
            (0, B, B | I, dir, Ok(I)),
            // Procfs and userland flags: refused to set and to clear.
            (IAttr::ADMIN, 0, 0, reg, Err(Errno::INVAL)),
            (0, IAttr::HIDE, 0, dir, Err(Errno::INVAL)),
            (IAttr::WRITE | I, 0, 0, reg, Err(Errno::INVAL)),
            (IAttr::TAG, 0, 0, reg, Err(Errno::INVAL)),
            (0, 0, I, reg, Ok(I)),
        ];
        for &(set, del, old, kind, want) in table {
            let got = Change { set, del }.for_file(IAttr(old), kind);
            assert_eq!(
                got,
                want.map(IAttr),
                "set {set:#x} del {del:#x} old {old:#x}"
            );
        }
        assert!(change("--~flags 0xf0000 f").covers_all());
        assert!(change("--iunlink --barrier --~cow f").covers_all());
        assert!(!change("--iunlink --barrier f").covers_all());
    }
}

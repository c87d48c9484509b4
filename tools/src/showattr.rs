//! `showattr [-R] [-a] [-d] [-x] [--backing] [FILE...]`: shows files'
//! attribute flags (docs/VSERVER.md §3.1, §7).
//!
//! One line per file: nine letters, a space, the name. The letters stand
//! for the `IATTR_*` bits from bit 0 up: `a` admin, `w` watch, `h` hide,
//! `m` write, `b` barrier, `u` iunlink, `i` immutable, `c` cow, `x` tag;
//! uppercase when set, lowercase when the file could carry the flag but
//! does not, `-` when it cannot (the kernel's mask: iunlink, immutable and
//! cow; barrier for directories; the tag on a tagged filesystem, where
//! every inode has one). A unified file on a tagged mount shows
//! `-----UIcX`. A file whose flags cannot be read shows `ERR` instead and
//! the reason goes to stderr. Directories are listed (themselves first,
//! then their entries) unless `-d`. Without FILE, `.` is listed.
//!
//! Flags are read with `lgetxattr(trusted.vxfs.iattr)` through a vxfs
//! mount (checked per file), or with `--backing` directly from a SOURCE
//! tree, which no mount tags: `x` is then `-`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, Stat};
use vxfs::iattr::IAttr;

use crate::cli::{CliError, Outcome};
use crate::flags;
use crate::fstool::{self, FsOptions, Job, Kind, Listing};
use crate::mountinfo::vxfs_tags;
use crate::tag::At;

/// The usage text.
pub const USAGE: &str = "\
Usage: showattr [-R] [-a] [-d] [-x] [--backing] [--] [FILE...]

Shows the attribute flags of each FILE on a vxfs mount (default: .).
Needs CAP_SYS_ADMIN (root): the kernel hides trusted.* xattrs from others.

  -R              recurse into directories
  -a              show names starting with '.' too
  -d              show directories themselves instead of their entries
  -x              do not cross filesystems when recursing
      --backing   FILEs are in a SOURCE tree, not on a mount: read the
                  backing inodes directly
  -h, --help      this text

Output: nine letters, a space, the name. Letters: a admin, w watch, h hide,
m write, b barrier, u iunlink, i immutable, c cow, x tag; uppercase = set,
lowercase = not set, - = not possible for this file (x: the mount does
not tag). ERR in place of the letters when the flags cannot be read.
Example: -----UIcX for a unified file on a tagged mount.
Exit status: 0 all flags read, 1 some failed, 2 bad usage.
";

/// The letters in output order, with their bits.
const LETTERS: [(u32, u8); 9] = [
    (IAttr::ADMIN, b'a'),
    (IAttr::WATCH, b'w'),
    (IAttr::HIDE, b'h'),
    (IAttr::WRITE, b'm'),
    (IAttr::BARRIER, b'b'),
    (IAttr::IUNLINK, b'u'),
    (IAttr::IMMUTABLE, b'i'),
    (IAttr::COW, b'c'),
    (IAttr::TAG, b'x'),
];

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<FsOptions, CliError> {
    fstool::parse(Kind::Listing, &[], argv, |_, _| {
        unreachable!("showattr has no options of its own")
    })
}

/// One output line (without the newline): the letters of `flags` within
/// `mask` (`None`: `ERR`), a space, the name.
pub fn line(attrs: Option<(u32, u32)>, name: &OsStr) -> Vec<u8> {
    let mut out = match attrs {
        Some((flags, mask)) => LETTERS
            .iter()
            .map(|&(bit, letter)| match (mask & bit != 0, flags & bit != 0) {
                (false, _) => b'-',
                (true, true) => letter.to_ascii_uppercase(),
                (true, false) => letter,
            })
            .collect(),
        None => format!("{:<width$}", "ERR", width = LETTERS.len()).into_bytes(),
    };
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out
}

/// What showattr does with each file.
struct Show {
    /// `--backing`: no mount, so no tagging.
    backing: bool,
    /// Per device: whether its mount tags.
    tagged: HashMap<u64, bool>,
}

impl Show {
    fn tagged(&mut self, dev: u64) -> bool {
        !self.backing && *self.tagged.entry(dev).or_insert_with(|| vxfs_tags(dev))
    }
}

impl Listing for Show {
    /// The flags to show and the mask they are shown in.
    type Value = (u32, u32);

    fn read(&mut self, at: At<'_>, st: &Stat) -> Result<(u32, u32), String> {
        let stored = flags::get(at).map_err(|e| e.to_string())?;
        let tagged = self.tagged(st.st_dev);
        let mask = IAttr::mask_for(FileType::from_raw_mode(st.st_mode), tagged);
        // On a tagged filesystem every inode has a tag (§3.1).
        let tag = if tagged { IAttr::TAG } else { 0 };
        Ok((stored.0 | tag, mask))
    }

    fn line(attrs: Option<(u32, u32)>, name: &OsStr) -> Vec<u8> {
        line(attrs, name)
    }
}

/// Runs showattr.
pub fn run(argv: Vec<OsString>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let opts = parse(argv)?;
    let job = Job {
        tool: "showattr",
        opts: &opts,
        needs_cap: "reading flags needs CAP_SYS_ADMIN (run as root): the kernel hides \
                    trusted.* xattrs from other users, so every file would show no flags",
        backing_hint: "; use --backing to read files of a SOURCE tree directly",
        backing_warning: None,
    };
    let mut show = Show {
        backing: opts.backing,
        tagged: HashMap::new(),
    };
    fstool::run(job, &mut show, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fstool::testing::{assert_usage_errors, fs_options, words};

    #[test]
    fn line_format() {
        let (reg, dir) = (FileType::RegularFile, FileType::Directory);
        let (i, u, b, c, t) = (
            IAttr::IMMUTABLE,
            IAttr::IUNLINK,
            IAttr::BARRIER,
            IAttr::COW,
            IAttr::TAG,
        );
        // (flags, kind, tagged, line)
        let table: &[(u32, FileType, bool, &str)] = &[
            (i | u | t, reg, true, "-----UIcX f"),
            (i | u, reg, false, "-----UIc- f"),
            (t, reg, true, "-----uicX f"),
            (t, dir, true, "----buicX f"),
            (b | t, dir, true, "----BuicX f"),
            (c | t, reg, true, "-----uiCX f"),
            (u, FileType::Symlink, false, "-----Uic- f"),
            // Bits outside the mask are not shown.
            (b, reg, false, "-----uic- f"),
        ];
        for &(flags, kind, tagged, want) in table {
            let got = line(
                Some((flags, IAttr::mask_for(kind, tagged))),
                OsStr::new("f"),
            );
            assert_eq!(String::from_utf8(got).unwrap(), want, "{flags:#x} {kind:?}");
        }
        let all = line(Some((0x010f_000f, 0x010f_000f)), OsStr::new("d/x y"));
        assert_eq!(String::from_utf8(all).unwrap(), "AWHMBUICX d/x y");
        let err = line(None, OsStr::new("bad"));
        assert_eq!(String::from_utf8(err).unwrap(), "ERR       bad");
    }

    #[test]
    fn parses() {
        let o = parse(words("-Radx --backing f")).unwrap();
        assert_eq!(o, fs_options(Kind::Listing, "-Radx --backing f"));
        assert_usage_errors(
            parse,
            &[
                ("-n", "unknown option '-n'"),
                ("--cow f", "unknown option '--cow'"),
            ],
        );
    }
}

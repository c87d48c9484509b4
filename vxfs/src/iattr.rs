//! Inode attribute flags: immutable, iunlink, barrier and cow
//! (docs/VSERVER.md §3), and the refusal table they impose.
//!
//! # Where the flags live
//!
//! In the backing inode's `trusted.vxfs.iattr` xattr, as the decimal text
//! of the util-vserver `IATTR_*` bit mask (`IATTR_IMMUTABLE` = 0x40000,
//! ...), so that `setattr --flags N` and the stored value speak the same
//! numbers. An inode without the xattr has no flags. Only the host
//! administrator may set or remove it through the mount (`EPERM` for
//! everyone else), exactly like the tag; guests may read it (`showattr`).
//!
//! # What the flags mean (§3.2, §3.3)
//!
//! * **immutable** alone: the file can be neither written (`EACCES`) nor
//!   removed, renamed, linked or have its attributes changed (`EPERM`).
//! * **immutable + iunlink** ("unified", made by `hashify`): a file
//!   shared by hard link between guests. Its names may be removed, renamed
//!   over and linked; any change to its content or attributes first breaks
//!   the link (copy-on-write, see [`crate::cow`]).
//! * **iunlink** alone: link-protected (no unlink, rename or link) but
//!   writable.
//! * **barrier** (directories): no guest may use the directory (`EACCES`);
//!   the host and the spectator are unaffected.
//! * **cow**: stored and shown, but, as in the original, the copy-on-write
//!   logic keys on immutable + iunlink (§9.3).

use std::fmt;

use rustix::fs::FileType;
use rustix::io::Errno;

/// Name of the xattr holding an inode's flags.
pub const IATTR_XATTR: &str = "trusted.vxfs.iattr";

/// The inode attribute flags, as util-vserver's `IATTR_*` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IAttr(pub u32);

impl IAttr {
    /// `IATTR_ADMIN`: procfs only.
    pub const ADMIN: u32 = 0x1;
    /// `IATTR_WATCH`: procfs only.
    pub const WATCH: u32 = 0x2;
    /// `IATTR_HIDE`: procfs only.
    pub const HIDE: u32 = 0x4;
    /// `IATTR_WRITE`: userland only.
    pub const WRITE: u32 = 0x8;
    /// `IATTR_BARRIER`: a directory guests may not use.
    pub const BARRIER: u32 = 0x10000;
    /// `IATTR_IXUNLINK` ("iunlink"): immutable-invert-on-unlink.
    pub const IUNLINK: u32 = 0x20000;
    /// `IATTR_IMMUTABLE`.
    pub const IMMUTABLE: u32 = 0x40000;
    /// `IATTR_COW`.
    pub const COW: u32 = 0x80000;
    /// `IATTR_TAG` (`IATTR_XID`): the inode carries a tag.
    pub const TAG: u32 = 0x0100_0000;

    /// The flags a filesystem inode can carry.
    pub const STORABLE: u32 = Self::BARRIER | Self::IUNLINK | Self::IMMUTABLE | Self::COW;
    /// The procfs-only flags, refused on a filesystem with `EINVAL`.
    pub const PROC_ONLY: u32 = Self::ADMIN | Self::WATCH | Self::HIDE;

    /// No flags.
    pub const NONE: IAttr = IAttr(0);

    /// Whether every bit of `bits` is set.
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// Immutable only, or iunlink only: the names may not be removed,
    /// renamed or linked (`IS_IXORUNLINK`).
    pub fn link_protected(self) -> bool {
        self.has(Self::IMMUTABLE) != self.has(Self::IUNLINK)
    }

    /// Immutable + iunlink: unified, changed only by breaking the link
    /// (`IS_COW`).
    pub fn unified(self) -> bool {
        self.has(Self::IMMUTABLE | Self::IUNLINK)
    }

    /// Immutable without iunlink: no change at all.
    pub fn frozen(self) -> bool {
        self.has(Self::IMMUTABLE) && !self.has(Self::IUNLINK)
    }

    /// Whether a directory bars guests.
    pub fn barrier(self) -> bool {
        self.has(Self::BARRIER)
    }

    /// The flags the xattr stores.
    pub fn to_xattr(self) -> Vec<u8> {
        self.0.to_string().into_bytes()
    }

    /// Parses a stored value; anything but a decimal number of storable
    /// bits is corrupt.
    pub fn from_xattr(value: &[u8]) -> Option<IAttr> {
        let text = std::str::from_utf8(value).ok()?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let bits: u32 = text.parse().ok()?;
        (bits & !Self::STORABLE == 0).then_some(IAttr(bits))
    }

    /// The flags to store when `requested` is set on an inode of `kind`
    /// (§3.1): procfs-only and unknown bits are `EINVAL`; barrier sticks to
    /// directories and cow to regular files only, the rest is dropped
    /// silently, as the original did.
    pub fn for_kind(requested: u32, kind: FileType) -> Result<IAttr, Errno> {
        if requested & !Self::STORABLE != 0 {
            return Err(Errno::INVAL);
        }
        let mut bits = requested;
        if kind != FileType::Directory {
            bits &= !Self::BARRIER;
        }
        if kind != FileType::RegularFile {
            bits &= !Self::COW;
        }
        Ok(IAttr(bits))
    }

    /// The bits `showattr` reports as supported (its mask, §3.1): iunlink,
    /// immutable and cow, barrier for directories, the tag bit on a tagged
    /// filesystem.
    pub fn mask_for(kind: FileType, tagged: bool) -> u32 {
        let mut mask = Self::IUNLINK | Self::IMMUTABLE | Self::COW;
        if kind == FileType::Directory {
            mask |= Self::BARRIER;
        }
        if tagged {
            mask |= Self::TAG;
        }
        mask
    }
}

impl fmt::Display for IAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::BARRIER, "barrier"),
            (Self::IUNLINK, "iunlink"),
            (Self::IMMUTABLE, "immutable"),
            (Self::COW, "cow"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, name)| *name)
            .collect();
        if set.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&set.join(","))
        }
    }
}

/// What an operation that would change a file's content or attributes
/// must do first (§3.3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Go ahead.
    Allowed,
    /// A unified file: break the link (or clear the flags when it has only
    /// one) before going ahead.
    BreakLink,
    /// Refused with this errno.
    Refused(Errno),
}

/// Opening for write or truncating (§3.3 first row): `EACCES` for an
/// immutable file.
pub fn write_open(flags: IAttr) -> Change {
    if flags.unified() {
        Change::BreakLink
    } else if flags.frozen() {
        Change::Refused(Errno::ACCESS)
    } else {
        Change::Allowed
    }
}

/// chmod, chown, utimes and xattr changes (§3.3 fourth row): `EPERM` for
/// an immutable file. On a unified file vxfs breaks the link first for all
/// of them, not only chmod and chown (docs/SEMANTICS.md).
pub fn attr_change(flags: IAttr) -> Change {
    if flags.unified() {
        Change::BreakLink
    } else if flags.frozen() {
        Change::Refused(Errno::PERM)
    } else {
        Change::Allowed
    }
}

/// unlink, rmdir, rename away or over, and link to (§3.3 second and third
/// rows): `EPERM` unless the names are free to go.
pub fn name_change(flags: IAttr) -> Result<(), Errno> {
    if flags.link_protected() {
        Err(Errno::PERM)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: u32 = IAttr::IMMUTABLE;
    const U: u32 = IAttr::IUNLINK;

    #[test]
    fn refusal_table() {
        // (flags, write-open, attr change, unlink/rename/link)
        let table = [
            (0, Change::Allowed, Change::Allowed, Ok(())),
            (
                I,
                Change::Refused(Errno::ACCESS),
                Change::Refused(Errno::PERM),
                Err(Errno::PERM),
            ),
            (I | U, Change::BreakLink, Change::BreakLink, Ok(())),
            (U, Change::Allowed, Change::Allowed, Err(Errno::PERM)),
            (IAttr::COW, Change::Allowed, Change::Allowed, Ok(())),
        ];
        for (bits, open, attr, name) in table {
            let f = IAttr(bits);
            assert_eq!(write_open(f), open, "{f}");
            assert_eq!(attr_change(f), attr, "{f}");
            assert_eq!(name_change(f), name, "{f}");
        }
    }

    #[test]
    fn xattr_round_trip_and_corruption() {
        let f = IAttr(I | U);
        assert_eq!(IAttr::from_xattr(&f.to_xattr()), Some(f));
        assert_eq!(IAttr::from_xattr(b"0"), Some(IAttr::NONE));
        for bad in [&b""[..], b"x", b"-1", b"1", b"16777216", b"99999999999"] {
            assert_eq!(IAttr::from_xattr(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn kind_filters_like_the_original() {
        let dir = FileType::Directory;
        let reg = FileType::RegularFile;
        let all = IAttr::STORABLE;
        assert_eq!(IAttr::for_kind(all, dir), Ok(IAttr(all & !IAttr::COW)));
        assert_eq!(IAttr::for_kind(all, reg), Ok(IAttr(all & !IAttr::BARRIER)));
        assert_eq!(
            IAttr::for_kind(all, FileType::Symlink),
            Ok(IAttr(IAttr::IUNLINK | IAttr::IMMUTABLE))
        );
        assert_eq!(IAttr::for_kind(IAttr::ADMIN, reg), Err(Errno::INVAL));
        assert_eq!(IAttr::for_kind(1 << 30, reg), Err(Errno::INVAL));
    }

    #[test]
    fn names() {
        assert_eq!(IAttr(I | U).to_string(), "iunlink,immutable");
        assert_eq!(IAttr::NONE.to_string(), "-");
    }
}

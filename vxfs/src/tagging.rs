//! xid tagging: which context owns an inode, which context a request comes
//! from, and who may touch what (vserver-semantics §1).
//!
//! # Where the tag lives
//!
//! In the backing inode's `trusted.vxfs.xid` xattr, as decimal text, so it
//! survives restarts and is carried by `cp -a`, `rsync -X` and
//! `tar --xattrs`. An inode without the xattr is tagged 0 (the host). The
//! `trusted.` namespace keeps it out of reach of unprivileged users on the
//! host; through the mount, no caller may set or remove it (`EPERM`) and
//! listings hide it.
//!
//! # Which context a request comes from
//!
//! A mount-wide [`ContextMode`]: none (tagging off), a fixed xid for every
//! request (one mount per guest), or the caller's uid or gid divided by a
//! range size (guests running in user namespaces with disjoint id ranges).
//!
//! # Access (§1.4)
//!
//! A caller may use an inode when tag checks are off (`notagcheck`), the
//! inode is tagged 0, the caller is the host (0) or the spectator (1), or
//! both tags match. Otherwise the kernel's answer was `EACCES` for access
//! and `EPERM` for attribute changes.

use std::fmt;
use std::str::FromStr;

use rustix::io::Errno;

use crate::creds::Caller;

/// Name of the xattr holding an inode's tag.
pub const XID_XATTR: &str = "trusted.vxfs.xid";

/// Prefix of every xattr vxfs reserves for itself.
pub const RESERVED_XATTR_PREFIX: &[u8] = b"trusted.vxfs.";

/// A context id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Xid(pub u32);

impl Xid {
    /// The host context.
    pub const HOST: Xid = Xid(0);
    /// The spectator context, which may watch every other.
    pub const WATCH: Xid = Xid(1);

    /// Whether this context sees past tags (host or spectator).
    pub fn is_privileged(self) -> bool {
        self == Xid::HOST || self == Xid::WATCH
    }

    /// The xattr value storing this tag.
    pub fn to_xattr(self) -> Vec<u8> {
        self.0.to_string().into_bytes()
    }

    /// Parses a stored tag; anything but a plain decimal number is corrupt.
    pub fn from_xattr(value: &[u8]) -> Option<Xid> {
        let text = std::str::from_utf8(value).ok()?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().map(Xid)
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Xid {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Xid)
    }
}

/// Where a request's context comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextMode {
    /// Tagging off: every request and every inode is the host's.
    #[default]
    Off,
    /// Every request on the mount comes from this context.
    Fixed(Xid),
    /// xid = uid / size (so uids below `size` are the host's).
    UidRange(u32),
    /// xid = gid / size.
    GidRange(u32),
}

impl ContextMode {
    /// Parses the value of `-o xid=`: `N`, `uid/SIZE` or `gid/SIZE`.
    pub fn parse(value: &str) -> Option<ContextMode> {
        let range = |size: &str| size.parse::<u32>().ok().filter(|&n| n > 0);
        if let Some(size) = value.strip_prefix("uid/") {
            return range(size).map(ContextMode::UidRange);
        }
        if let Some(size) = value.strip_prefix("gid/") {
            return range(size).map(ContextMode::GidRange);
        }
        value.parse().ok().map(ContextMode::Fixed)
    }

    /// Whether inodes are tagged at all.
    pub fn is_on(self) -> bool {
        self != ContextMode::Off
    }

    /// The context a request comes from.
    pub fn xid_of(self, caller: &Caller) -> Xid {
        match self {
            ContextMode::Off => Xid::HOST,
            ContextMode::Fixed(xid) => xid,
            ContextMode::UidRange(size) => Xid(caller.uid / size),
            ContextMode::GidRange(size) => Xid(caller.gid / size),
        }
    }
}

/// The tag policy of one mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tagging {
    /// Where contexts come from.
    pub mode: ContextMode,
    /// `notagcheck`: tags are kept but do not restrict access.
    pub no_check: bool,
}

impl Tagging {
    /// The context of a request.
    pub fn context(&self, caller: &Caller) -> Xid {
        self.mode.xid_of(caller)
    }

    /// Whether context `who` may use an inode tagged `tag` (§1.4).
    pub fn may_use(&self, who: Xid, tag: Xid) -> bool {
        self.no_check || tag == Xid::HOST || who.is_privileged() || who == tag
    }

    /// `EACCES` unless `who` may access an inode tagged `tag`.
    pub fn check_access(&self, who: Xid, tag: Xid) -> Result<(), Errno> {
        if self.may_use(who, tag) {
            Ok(())
        } else {
            Err(Errno::ACCESS)
        }
    }

    /// `EPERM` unless `who` may change the attributes of an inode tagged
    /// `tag` (`inode_change_ok` answers `EPERM`, not `EACCES`).
    pub fn check_change(&self, who: Xid, tag: Xid) -> Result<(), Errno> {
        if self.may_use(who, tag) {
            Ok(())
        } else {
            Err(Errno::PERM)
        }
    }
}

/// Whether an xattr name is reserved for vxfs (never set, removed or listed
/// through the mount).
pub fn is_reserved_xattr(name: &[u8]) -> bool {
    name.starts_with(RESERVED_XATTR_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid: 0,
            umask: 0,
        }
    }

    #[test]
    fn context_modes() {
        let c = caller(65536 * 3 + 5, 70000);
        assert_eq!(ContextMode::Off.xid_of(&c), Xid::HOST);
        assert_eq!(ContextMode::Fixed(Xid(42)).xid_of(&c), Xid(42));
        assert_eq!(ContextMode::UidRange(65536).xid_of(&c), Xid(3));
        assert_eq!(ContextMode::GidRange(65536).xid_of(&c), Xid(1));
        assert_eq!(
            ContextMode::UidRange(65536).xid_of(&caller(0, 0)),
            Xid::HOST
        );
    }

    #[test]
    fn parses_modes() {
        assert_eq!(ContextMode::parse("7"), Some(ContextMode::Fixed(Xid(7))));
        assert_eq!(
            ContextMode::parse("uid/65536"),
            Some(ContextMode::UidRange(65536))
        );
        assert_eq!(
            ContextMode::parse("gid/10"),
            Some(ContextMode::GidRange(10))
        );
        for bad in ["", "-1", "uid/0", "uid/", "gid/x", "x", "4294967296"] {
            assert_eq!(ContextMode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn access_table() {
        let t = Tagging {
            mode: ContextMode::Fixed(Xid(5)),
            no_check: false,
        };
        // (caller, tag, allowed)
        let table = [
            (Xid(5), Xid(5), true),
            (Xid(5), Xid::HOST, true),
            (Xid(5), Xid(6), false),
            (Xid::HOST, Xid(6), true),
            (Xid::WATCH, Xid(6), true),
            (Xid(6), Xid(5), false),
        ];
        for (who, tag, allowed) in table {
            assert_eq!(t.may_use(who, tag), allowed, "{who} on {tag}");
            assert_eq!(t.check_access(who, tag).is_ok(), allowed);
            assert_eq!(
                t.check_change(who, tag).err(),
                (!allowed).then_some(Errno::PERM)
            );
        }
        let unchecked = Tagging {
            no_check: true,
            ..t
        };
        assert!(unchecked.may_use(Xid(5), Xid(6)));
    }

    #[test]
    fn xattr_round_trip_and_corruption() {
        assert_eq!(Xid::from_xattr(&Xid(1234).to_xattr()), Some(Xid(1234)));
        for bad in [&b""[..], b"12a", b"-1", b" 1", b"99999999999"] {
            assert_eq!(Xid::from_xattr(bad), None, "{bad:?}");
        }
        assert!(is_reserved_xattr(XID_XATTR.as_bytes()));
        assert!(!is_reserved_xattr(b"trusted.other"));
    }
}

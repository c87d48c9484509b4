//! Reading and writing an inode's context tag, the `trusted.vxfs.xid`
//! xattr (decimal text; absent = 0, the host), never following a final
//! symlink; and the xattr access on an [`At`] that the flags
//! ([`crate::flags`]) share.
//!
//! Through a vxfs mount the daemon serves these calls: only the host
//! administrator may set the tag, and the inode's usage moves to the new
//! context with it. On a SOURCE tree (`--backing`) they hit the backing
//! inode directly and nothing is moved.
//!
//! # Walking safely
//!
//! Files are named relative to an open directory ([`At::Entry`]), through
//! `/proc/self/fd/DIR/NAME`: only NAME is resolved, without following it,
//! so a directory swapped for a symlink during a walk cannot redirect the
//! change outside the tree.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::XattrFlags;
use rustix::io::Errno;
use vxfs::tagging::{XID_XATTR, Xid};

/// Where the inode to work on is.
#[derive(Debug, Clone, Copy)]
pub enum At<'a> {
    /// A path given by the user (the final component is not followed).
    Path(&'a Path),
    /// An open directory: the inode itself.
    Dir(BorrowedFd<'a>),
    /// The entry NAME of an open directory (not followed).
    Entry(BorrowedFd<'a>, &'a OsStr),
}

impl At<'_> {
    /// The path the `l*xattr` calls use for `Path` and `Entry`.
    fn path(&self) -> Option<OsString> {
        match self {
            At::Path(p) => Some(p.as_os_str().to_os_string()),
            At::Dir(_) => None,
            At::Entry(dir, name) => {
                let mut p = OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
                p.push(name);
                Some(p)
            }
        }
    }

    /// `getxattr(name)` into `buf`, without following a final symlink.
    pub fn get_xattr(&self, name: &str, buf: &mut [u8]) -> Result<usize, Errno> {
        match (self, self.path()) {
            (At::Dir(fd), _) => rustix::fs::fgetxattr(fd, name, buf),
            (_, Some(path)) => rustix::fs::lgetxattr(path.as_os_str(), name, buf),
            (_, None) => unreachable!("only At::Dir has no path"),
        }
    }

    /// `setxattr(name, value)`, or with `None` `removexattr(name)` (an
    /// absent xattr is already removed), without following a final symlink.
    pub fn set_xattr(&self, name: &str, value: Option<&[u8]>) -> Result<(), Errno> {
        let path = self.path();
        let result = match (value, self, path.as_deref()) {
            (None, At::Dir(fd), _) => rustix::fs::fremovexattr(fd, name),
            (None, _, Some(p)) => rustix::fs::lremovexattr(p, name),
            (Some(v), At::Dir(fd), _) => rustix::fs::fsetxattr(fd, name, v, XattrFlags::empty()),
            (Some(v), _, Some(p)) => rustix::fs::lsetxattr(p, name, v, XattrFlags::empty()),
            (_, _, None) => unreachable!("only At::Dir has no path"),
        };
        match result {
            Err(Errno::NODATA) if value.is_none() => Ok(()),
            other => other,
        }
    }

    /// Reads the small decimal xattr `name` with `parse`; `absent` when the
    /// inode has none (or its filesystem has no xattrs).
    pub fn read_value<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&[u8]) -> Option<T>,
        absent: T,
    ) -> Result<T, ReadError> {
        let mut buf = [0u8; 16];
        decode(self.get_xattr(name, &mut buf), &buf, name, parse, absent)
    }
}

/// Why a tag (or flags) could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The syscall failed.
    Os(Errno),
    /// The stored value of this xattr does not parse.
    Corrupt(&'static str, Vec<u8>),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Os(e) => write!(f, "{}", std::io::Error::from(*e)),
            ReadError::Corrupt(name, v) => {
                write!(f, "corrupt {name} value {:?}", String::from_utf8_lossy(v))
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// Interprets a `getxattr` result (`ENODATA`: `absent`).
fn decode<T>(
    result: Result<usize, Errno>,
    buf: &[u8],
    name: &'static str,
    parse: impl FnOnce(&[u8]) -> Option<T>,
    absent: T,
) -> Result<T, ReadError> {
    match result {
        Ok(n) => parse(&buf[..n]).ok_or_else(|| ReadError::Corrupt(name, buf[..n].to_vec())),
        // Filesystems without xattrs hold no tags or flags either.
        Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(absent),
        Err(Errno::RANGE) => Err(ReadError::Corrupt(name, b"(overlong)".to_vec())),
        Err(e) => Err(ReadError::Os(e)),
    }
}

/// Reads the tag of `at`.
pub fn get(at: At<'_>) -> Result<Xid, ReadError> {
    at.read_value(XID_XATTR, Xid::from_xattr, Xid::HOST)
}

/// Sets the tag of `at`; 0 removes the xattr (absent = the host's).
pub fn set(at: At<'_>, xid: Xid) -> Result<(), Errno> {
    let value = (xid != Xid::HOST).then(|| xid.to_xattr());
    at.set_xattr(XID_XATTR, value.as_deref())
}

/// `name` with its trailing slashes removed (but `/` stays `/`), for
/// building display names the way util-vserver's fstool does.
pub fn trim_slashes(name: &OsStr) -> &OsStr {
    let b = name.as_bytes();
    let end = b
        .iter()
        .rposition(|&c| c != b'/')
        .map_or(b.len().min(1), |i| i + 1);
    OsStr::from_bytes(&b[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        let buf = *b"42\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let dec = |r| decode(r, &buf, XID_XATTR, Xid::from_xattr, Xid::HOST);
        assert_eq!(dec(Ok(2)), Ok(Xid(42)));
        assert_eq!(dec(Err(Errno::NODATA)), Ok(Xid::HOST));
        assert_eq!(dec(Err(Errno::OPNOTSUPP)), Ok(Xid::HOST));
        assert_eq!(dec(Err(Errno::PERM)), Err(ReadError::Os(Errno::PERM)));
        assert_eq!(
            dec(Ok(3)),
            Err(ReadError::Corrupt(XID_XATTR, b"42\0".to_vec()))
        );
        assert_eq!(
            dec(Ok(3)).unwrap_err().to_string(),
            "corrupt trusted.vxfs.xid value \"42\\0\""
        );
        assert!(matches!(
            dec(Err(Errno::RANGE)),
            Err(ReadError::Corrupt(..))
        ));
    }

    #[test]
    fn trims_slashes() {
        for (name, want) in [
            ("a", "a"),
            ("a/", "a"),
            ("a//", "a"),
            ("/", "/"),
            ("//", "/"),
            ("", ""),
            ("/a/b/", "/a/b"),
        ] {
            assert_eq!(trim_slashes(OsStr::new(name)), OsStr::new(want), "{name:?}");
        }
    }
}

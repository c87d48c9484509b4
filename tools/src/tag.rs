//! Reading and writing an inode's context tag, the `trusted.vxfs.xid`
//! xattr (decimal text; absent = 0, the host), never following a final
//! symlink.
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
}

/// Why a tag could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The syscall failed.
    Os(Errno),
    /// The stored value is not a decimal context number.
    Corrupt(Vec<u8>),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Os(e) => write!(f, "{}", std::io::Error::from(*e)),
            ReadError::Corrupt(v) => write!(
                f,
                "corrupt {XID_XATTR} value {:?}",
                String::from_utf8_lossy(v)
            ),
        }
    }
}

impl std::error::Error for ReadError {}

/// Interprets a `getxattr` result (`ENODATA`: untagged, so the host's).
fn decode(result: Result<usize, Errno>, buf: &[u8]) -> Result<Xid, ReadError> {
    match result {
        Ok(n) => Xid::from_xattr(&buf[..n]).ok_or_else(|| ReadError::Corrupt(buf[..n].to_vec())),
        // Filesystems without xattrs hold no tags either.
        Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(Xid::HOST),
        Err(Errno::RANGE) => Err(ReadError::Corrupt(b"(overlong)".to_vec())),
        Err(e) => Err(ReadError::Os(e)),
    }
}

/// Reads the tag of `at`.
pub fn get(at: At<'_>) -> Result<Xid, ReadError> {
    let mut buf = [0u8; 16];
    let result = match (at, at.path()) {
        (At::Dir(fd), _) => rustix::fs::fgetxattr(fd, XID_XATTR, &mut buf[..]),
        (_, Some(path)) => rustix::fs::lgetxattr(path.as_os_str(), XID_XATTR, &mut buf[..]),
        (_, None) => unreachable!("only At::Dir has no path"),
    };
    decode(result, &buf)
}

/// Sets the tag of `at`; 0 removes the xattr (absent = the host's).
pub fn set(at: At<'_>, xid: Xid) -> Result<(), Errno> {
    let value = xid.to_xattr();
    let path = at.path();
    let result = match (xid, at, path.as_deref()) {
        (Xid::HOST, At::Dir(fd), _) => rustix::fs::fremovexattr(fd, XID_XATTR),
        (Xid::HOST, _, Some(p)) => rustix::fs::lremovexattr(p, XID_XATTR),
        (_, At::Dir(fd), _) => rustix::fs::fsetxattr(fd, XID_XATTR, &value, XattrFlags::empty()),
        (_, _, Some(p)) => rustix::fs::lsetxattr(p, XID_XATTR, &value, XattrFlags::empty()),
        (_, _, None) => unreachable!("only At::Dir has no path"),
    };
    match result {
        // Already untagged.
        Err(Errno::NODATA) if xid == Xid::HOST => Ok(()),
        other => other,
    }
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
        assert_eq!(decode(Ok(2), &buf), Ok(Xid(42)));
        assert_eq!(decode(Err(Errno::NODATA), &buf), Ok(Xid::HOST));
        assert_eq!(decode(Err(Errno::OPNOTSUPP), &buf), Ok(Xid::HOST));
        assert_eq!(
            decode(Err(Errno::PERM), &buf),
            Err(ReadError::Os(Errno::PERM))
        );
        assert_eq!(
            decode(Ok(3), &buf),
            Err(ReadError::Corrupt(b"42\0".to_vec()))
        );
        assert!(matches!(
            decode(Err(Errno::RANGE), &buf),
            Err(ReadError::Corrupt(_))
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

//! Reading and writing an inode's attribute flags (immutable, iunlink,
//! barrier, cow), the `trusted.vxfs.iattr` xattr: the decimal text of the
//! util-vserver `IATTR_*` bits ([`IAttr`]); absent = no flags. Never
//! follows a final symlink.
//!
//! Through a vxfs mount the daemon serves these calls: only the host
//! administrator may change the flags (`EPERM` for everyone else), and it
//! refuses bits no file can carry (`EINVAL`). With `--backing` they hit the
//! backing inode directly; a running daemon, which caches an inode's flags,
//! re-reads them once the inode's ctime has changed (setting an xattr
//! changes it).

use rustix::io::Errno;
use vxfs::iattr::{IATTR_XATTR, IAttr};

use crate::tag::{At, ReadError};

/// Reads the flags of `at`.
pub fn get(at: At<'_>) -> Result<IAttr, ReadError> {
    at.read_value(IATTR_XATTR, IAttr::from_xattr, IAttr::NONE)
}

/// Stores the flags of `at`; no flags removes the xattr.
pub fn set(at: At<'_>, flags: IAttr) -> Result<(), Errno> {
    let value = (flags != IAttr::NONE).then(|| flags.to_xattr());
    at.set_xattr(IATTR_XATTR, value.as_deref())
}

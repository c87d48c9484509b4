//! The one error type of the daemon and its single mapping to an errno.
//!
//! Every FUSE operation returns [`Result`]; the adapter in `fuse.rs` turns an
//! [`Error`] into the errno the caller sees in exactly one place,
//! [`Error::errno`]. Syscall failures keep their raw errno intact: context is
//! logged, never wrapped around the error, so that nothing decays into `EIO`.

use std::fmt;

/// A failed filesystem operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A backing-filesystem syscall failed with this errno.
    Os(rustix::io::Errno),
    /// The kernel named an inode the daemon does not know (a protocol error,
    /// or a request racing a `forget`).
    UnknownInode(u64),
    /// The kernel named a file handle the daemon does not know.
    UnknownHandle(u64),
    /// A name the daemon refuses to resolve (`.`, `..`, or one holding `/`).
    BadName,
}

/// The result of a filesystem operation.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno reported to the FUSE caller.
    pub fn errno(self) -> i32 {
        match self {
            Error::Os(e) => e.raw_os_error(),
            Error::UnknownInode(_) | Error::UnknownHandle(_) => libc::EBADF,
            Error::BadName => libc::EINVAL,
        }
    }

    /// Whether this is the given errno.
    pub fn is(self, errno: rustix::io::Errno) -> bool {
        self == Error::Os(errno)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Os(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Os(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os(e) => write!(f, "{e}"),
            Error::UnknownInode(ino) => write!(f, "unknown inode {ino}"),
            Error::UnknownHandle(fh) => write!(f, "unknown file handle {fh}"),
            Error::BadName => f.write_str("invalid file name"),
        }
    }
}

impl std::error::Error for Error {}

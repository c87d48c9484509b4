//! The context core's error type: every failure names what was being done.

use rustix::io::Errno;

use crate::cgroup::CgroupError;
use crate::config::ConfigError;
use crate::registry::RegistryError;
use crate::rootfs::RootfsError;
use crate::security::SecurityError;

/// A failed context operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The cgroups.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The guest's mounts.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Capabilities or seccomp.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// A system call.
    #[error("{what}: {error}")]
    Os {
        /// What was being done.
        what: String,
        /// The errno.
        error: Errno,
    },
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

/// The context core's result.
pub type Result<T> = std::result::Result<T, Error>;

/// Maps an errno to an [`Error::Os`] saying `what` failed.
pub fn os(what: impl Into<String>) -> impl FnOnce(Errno) -> Error {
    let what = what.into();
    move |error| Error::Os { what, error }
}

/// Maps an I/O error to an [`Error::Os`] saying `what` failed.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::Os {
        what,
        error: Errno::from_io_error(&e).unwrap_or(Errno::IO),
    }
}

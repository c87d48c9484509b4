//! vxfs: Linux-VServer style per-context filesystem semantics as a FUSE
//! passthrough filesystem.
//!
//! Layers, bottom up:
//! * [`sys`]: the only `unsafe` code, thin syscall wrappers;
//! * [`inode`], [`handle`], [`creds`]: the passthrough's state (inodes by
//!   `O_PATH` descriptor, open handles, acting as the caller);
//! * [`tagging`]: per-context policy (xid tags, access by tag);
//! * [`fs`]: every FUSE operation as an `op_*` method returning [`Result`];
//! * [`fuse`]: the thin fuser adapter, the one place errors become errnos;
//! * [`daemon`] and [`options`]: mounting, daemonizing, the command line.

pub mod accounting;
pub mod cgroup;
pub mod context;
pub mod control;
pub mod cow;
pub mod creds;
pub mod daemon;
pub mod dlimit;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod handle;
pub mod iattr;
pub mod index;
pub mod inode;
pub mod leftovers;
pub mod options;
pub mod recount;
pub mod server;
pub mod stats;
pub mod sys;
pub mod tagging;
pub mod unify;
pub mod view;
pub mod vroot_server;
pub mod watch;

pub use error::{Error, Result};

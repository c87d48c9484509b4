//! Requests counted per operation, for each mount (a view's connection):
//! what a workload costs in round trips (`kill -USR1` the daemon: each
//! mount's counts go to `/run/vxfs/MAJ:MIN/requests` and the log). Relaxed
//! atomic additions, one per request.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! ops {
    ($($op:ident => $name:literal),* $(,)?) => {
        /// A FUSE operation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Op { $($op),* }

        /// Every operation's name, in [`Op`]'s order (the kernel's names,
        /// lower case).
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

ops! {
    Lookup => "lookup",
    Forget => "forget",
    Getattr => "getattr",
    Setattr => "setattr",
    Readlink => "readlink",
    Mknod => "mknod",
    Mkdir => "mkdir",
    Unlink => "unlink",
    Rmdir => "rmdir",
    Symlink => "symlink",
    Rename => "rename",
    Link => "link",
    Open => "open",
    Read => "read",
    Write => "write",
    Flush => "flush",
    Release => "release",
    Fsync => "fsync",
    Opendir => "opendir",
    Readdir => "readdir",
    Readdirplus => "readdirplus",
    Releasedir => "releasedir",
    Fsyncdir => "fsyncdir",
    Statfs => "statfs",
    Setxattr => "setxattr",
    Getxattr => "getxattr",
    Listxattr => "listxattr",
    Removexattr => "removexattr",
    Access => "access",
    Create => "create",
    Fallocate => "fallocate",
    Lseek => "lseek",
    CopyFileRange => "copy_file_range",
}

/// One connection's counts.
#[derive(Debug)]
pub struct Requests {
    counts: Vec<AtomicU64>,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            counts: NAMES.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Requests {
    /// Counts one request of `op`.
    pub fn count(&self, op: Op) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of `op` so far.
    pub fn get(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::Relaxed)
    }

    /// `NAME COUNT` lines for the operations that were asked for, then
    /// `total COUNT`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut total = 0;
        for (name, c) in NAMES.iter().zip(&self.counts) {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                out.push_str(&format!("{name} {n}\n"));
                total += n;
            }
        }
        out.push_str(&format!("total {total}\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_name() {
        let r = Requests::default();
        assert_eq!(NAMES.len(), Op::CopyFileRange as usize + 1);
        r.count(Op::Lookup);
        r.count(Op::Lookup);
        r.count(Op::CopyFileRange);
        assert_eq!(r.get(Op::Lookup), 2);
        assert_eq!(r.table(), "lookup 2\ncopy_file_range 1\ntotal 3\n");
    }
}

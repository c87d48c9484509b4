//! Who a request comes from: the caller's ids, thread and context, as the
//! mount (view) it came through decides ([`ContextMode`]).

use crate::cgroup::CgroupContexts;
use crate::creds::Caller;
use crate::tagging::{ContextMode, Xid};

/// Decides requests' contexts for one view.
#[derive(Debug)]
pub struct Resolver {
    mode: ContextMode,
    /// For [`ContextMode::Cgroup`].
    cgroups: Option<CgroupContexts>,
}

impl Resolver {
    /// A resolver for `mode` (cgroup mode starts following the kernel's
    /// cgroup moves and thread exits).
    pub fn new(mode: ContextMode) -> Resolver {
        Resolver {
            mode,
            cgroups: (mode == ContextMode::Cgroup).then(CgroupContexts::new),
        }
    }

    /// The mode.
    pub fn mode(&self) -> ContextMode {
        self.mode
    }

    /// The context of a request from `uid`/`gid` on thread `pid`.
    pub fn xid(&self, uid: u32, gid: u32, pid: u32) -> Xid {
        match &self.cgroups {
            Some(cgroups) => cgroups.xid_of(pid),
            None => self.mode.xid_of_ids(uid, gid).unwrap_or(Xid::UNMAPPED),
        }
    }

    /// The caller of a request.
    pub fn caller(&self, uid: u32, gid: u32, pid: u32, umask: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid,
            umask,
            xid: self.xid(uid, gid, pid),
            may_administer: !matches!(self.mode, ContextMode::Fixed(_)),
            shift: self.mode.id_shift(),
            one_context: matches!(self.mode, ContextMode::Fixed(_) | ContextMode::Off),
        }
    }
}

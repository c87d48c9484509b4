//! What the context tools share: naming a context on the command line
//! (util-vserver's `--xid`: a number or a guest's name), and the context
//! of a process (its cgroup `vx-XID`, as the filesystem reads it).

use anyhow::{Context, bail};
use vxfs_kernel::registry::{Registry, State, is_anonymous};

/// The running context `arg` names: a context number or a guest's name.
pub fn running(registry: &Registry, arg: &str) -> anyhow::Result<State> {
    if let Ok(n) = arg.parse::<u32>() {
        return registry
            .state_of(vxfs_kernel::Xid(n))
            .with_context(|| format!("no running context {n}"));
    }
    let name = arg.strip_prefix(':').unwrap_or(arg);
    match registry.find(name) {
        Some(s) => Ok(s),
        None => bail!("vserver '{name}' is not running"),
    }
}

/// Records in the context event journal that this tool did `event` to
/// running context `state`, with its command line as the detail.
pub fn record(state: &State, event: &str) {
    let args: Vec<String> = std::env::args().collect();
    Registry::open().record(state.xid, &state.name, event, &args.join(" "));
}

/// How a process's context was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The context (`None`: the process's cgroups disagree, or it is gone).
    pub xid: Option<u32>,
    /// The `/proc/PID/cgroup` line that named it (empty for the host).
    pub via: String,
}

/// The context of process `pid`: the outermost `vx-XID` of its cgroups
/// (the host's 0 without one), exactly as `-o xid=cgroup` decides.
pub fn of_pid(pid: u32) -> Lookup {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Lookup {
            xid: None,
            via: String::new(),
        };
    };
    let xid = vxfs::cgroup::parse_xid(&text);
    let via = text
        .lines()
        .find(|l| l.contains("/vx-"))
        .unwrap_or("")
        .to_string();
    let xid = (xid != vxfs::tagging::Xid::UNMAPPED).then_some(xid.0);
    Lookup { xid, via }
}

/// util-vserver's name of a context: `MAIN`, `ALL_PROC`, or the guest's.
pub fn name_of(registry: &Registry, xid: u32) -> Option<String> {
    match xid {
        0 => Some("MAIN".into()),
        1 => Some("ALL_PROC".into()),
        // A context without a guest (vcontext --create) has no name.
        x => registry.state_of(vxfs_kernel::Xid(x)).map(|s| {
            if is_anonymous(&s.name) {
                String::new()
            } else {
                s.name
            }
        }),
    }
}

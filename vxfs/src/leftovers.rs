//! Temporary names that vxfs and `hashify` create in guest directories, and
//! what is left of them after a crash.
//!
//! * `.vxfs-cow.INO.N`: a copy-on-write copy being swapped in (only named
//!   where the backing filesystem has no `O_TMPFILE`, or for the instant
//!   between naming the copy and the swap). Only the tree's daemon makes
//!   them, so when no daemon serves the tree every one is left over: the
//!   complete copy not yet swapped in, or the shared link already swapped
//!   out. Either way the file's real name holds a complete file.
//! * `.vxfs-hashify.PID.N`: `hashify`'s swap name (`tools/src/hashify/link.rs`),
//!   a second link to either the shared copy or the guest's old file; the
//!   real name is never missing. Left over once process PID is gone.
//!
//! Guests cannot make names with these prefixes (`EPERM`, see
//! [`is_reserved`]), so removing a leftover never removes a guest's file.
//! Leftovers are removed by the recount of a mount that finds its counters
//! unclean (after a crash, the only time they can exist for the daemon) and
//! by `hashify` runs (its own, in the directories it walks).

use std::os::unix::ffi::OsStrExt;

/// Prefix of the daemon's copy-on-write names.
pub const COW_PREFIX: &str = ".vxfs-cow.";

/// Prefix of `hashify`'s swap names.
pub const HASHIFY_PREFIX: &str = ".vxfs-hashify.";

/// Whether only the host administrator may create the name `name`: it has
/// the form of a temporary name that recovery removes.
pub fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(COW_PREFIX.as_bytes()) || name.starts_with(HASHIFY_PREFIX.as_bytes())
}

/// Whether `name` is a `hashify` swap name of a process that no longer
/// exists.
pub fn is_stale_hashify(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(HASHIFY_PREFIX.as_bytes()) else {
        return false;
    };
    let Some(pid) = rest
        .split(|&b| b == b'.')
        .next()
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        // Not of the form hashify makes: nobody is using it.
        return true;
    };
    // ESRCH: gone. Anything else (found, or EPERM) means it exists.
    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
}

/// Whether `name` is left over when no daemon serves its tree (at mount):
/// every copy-on-write name, and `hashify` names of finished processes.
pub fn is_left_over_at_mount(name: &std::ffi::OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(COW_PREFIX.as_bytes()) || is_stale_hashify(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn reserved_names_are_the_two_prefixes() {
        for name in [".vxfs-cow.1a.0", ".vxfs-cow.", ".vxfs-hashify.12.3"] {
            assert!(is_reserved(name.as_bytes()), "{name}");
        }
        for name in [
            ".vxfs-cow",
            ".vxfs-db",
            "vxfs-cow.1",
            ".vxfs.db",
            "a.vxfs-cow.1",
            "",
        ] {
            assert!(!is_reserved(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_hashify_name_is_stale_once_its_process_is_gone() {
        let me = format!(".vxfs-hashify.{}.0", std::process::id());
        assert!(!is_stale_hashify(me.as_bytes()));
        assert!(!is_left_over_at_mount(OsStr::new(&me)));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = format!(".vxfs-hashify.{pid}.7");
        assert!(is_stale_hashify(gone.as_bytes()));
        assert!(is_stale_hashify(b".vxfs-hashify.x.1"));
        assert!(is_stale_hashify(b".vxfs-hashify.0.1"));
        assert!(!is_stale_hashify(b"file"));
        assert!(is_left_over_at_mount(OsStr::new(".vxfs-cow.5.2")));
        assert!(!is_left_over_at_mount(OsStr::new("file")));
    }
}

//! Context ids (docs/VSERVER.md §10): 0 is the host ("MAIN"), 1 the
//! spectator ("ALL_PROC"), 2..=49151 static ids that a guest's `context`
//! file names, 49152..=65535 dynamic ids handed out at start.

use std::fmt;

/// A context id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Xid(pub u32);

/// What kind of context an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidKind {
    /// 0: the host.
    Host,
    /// 1: the spectator, which sees every context.
    Watch,
    /// 2..=49151: a guest's configured id.
    Static,
    /// 49152..=65535: an id given at start.
    Dynamic,
    /// Above 65535: no VServer context had one.
    OutOfRange,
}

impl Xid {
    /// The host.
    pub const HOST: Xid = Xid(0);
    /// The spectator.
    pub const WATCH: Xid = Xid(1);
    /// The first static id.
    pub const MIN_STATIC: u32 = 2;
    /// The first dynamic id (util-vserver's `MIN_D_CONTEXT`).
    pub const MIN_DYNAMIC: u32 = 49152;
    /// The last id (`MAX_S_CONTEXT`).
    pub const MAX: u32 = 65535;

    /// Its kind.
    pub fn kind(self) -> XidKind {
        match self.0 {
            0 => XidKind::Host,
            1 => XidKind::Watch,
            2..Self::MIN_DYNAMIC => XidKind::Static,
            Self::MIN_DYNAMIC..=Self::MAX => XidKind::Dynamic,
            _ => XidKind::OutOfRange,
        }
    }

    /// Parses a static id as a guest's `context` file holds it: a decimal
    /// number in 2..=49151 (util-vserver refuses dynamic ids there).
    pub fn parse_static(text: &str) -> Result<Xid, String> {
        let text = text.trim();
        let n: u32 = text
            .parse()
            .map_err(|_| format!("'{text}' is not a context number"))?;
        match Xid(n).kind() {
            XidKind::Static => Ok(Xid(n)),
            XidKind::Host | XidKind::Watch => Err(format!(
                "context {n} is reserved (0 is the host, 1 the spectator); use 2..{}",
                Self::MIN_DYNAMIC - 1
            )),
            XidKind::Dynamic => Err(format!(
                "context {n} is in the dynamic range ({}..={}), which start hands out; use 2..{}",
                Self::MIN_DYNAMIC,
                Self::MAX,
                Self::MIN_DYNAMIC - 1
            )),
            XidKind::OutOfRange => Err(format!(
                "context {n} is out of range; use 2..{}",
                Self::MIN_DYNAMIC - 1
            )),
        }
    }

    /// The name of its cgroup in every hierarchy, which the filesystem's
    /// `-o xid=cgroup` mode reads back.
    pub fn cgroup_name(self) -> String {
        format!("vx-{}", self.0)
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_static_ids() {
        assert_eq!(Xid(0).kind(), XidKind::Host);
        assert_eq!(Xid(1).kind(), XidKind::Watch);
        assert_eq!(Xid(2).kind(), XidKind::Static);
        assert_eq!(Xid(49151).kind(), XidKind::Static);
        assert_eq!(Xid(49152).kind(), XidKind::Dynamic);
        assert_eq!(Xid(65535).kind(), XidKind::Dynamic);
        assert_eq!(Xid(65536).kind(), XidKind::OutOfRange);
        assert_eq!(Xid::parse_static(" 42\n"), Ok(Xid(42)));
        for bad in ["0", "1", "49152", "70000", "x", "-3", ""] {
            assert!(Xid::parse_static(bad).is_err(), "{bad}");
        }
        assert_eq!(Xid(42).cgroup_name(), "vx-42");
    }
}

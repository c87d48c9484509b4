//! xid tagging: which context owns an inode, which context a request comes
//! from, and who may touch what (docs/VSERVER.md §1).
//!
//! # Where the tag lives
//!
//! In the backing inode's `trusted.vxfs.xid` xattr, as decimal text, so it
//! survives restarts and is carried by `cp -a`, `rsync -X` and
//! `tar --xattrs`. An inode without the xattr is tagged 0 (the host). The
//! `trusted.` namespace keeps it out of reach of unprivileged users on the
//! host; through the mount, no caller but the host administrator may set
//! or remove it (`EPERM`) and listings hide it.
//!
//! # Which context a request comes from
//!
//! A per-mount [`ContextMode`]: none (tagging off), a fixed xid for every
//! request (a guest's own view), explicit id ranges (guests in user
//! namespaces with disjoint uid or gid ranges), or the caller's cgroup
//! (`vx-<XID>`, see [`crate::cgroup`]). A caller no rule maps is
//! [`Xid::UNMAPPED`]: it may use host inodes as unix permissions allow,
//! nothing tagged, and may create nothing. No id range ever maps to the
//! spectator context.
//!
//! # Access (§1.4)
//!
//! A caller may use an inode when tag checks are off (`notagcheck`), the
//! inode is tagged 0, the caller is the host (0) or the spectator (1), or
//! both tags match. Otherwise the kernel's answer was `EACCES` for access
//! and `EPERM` for attribute changes.

use std::fmt;
use std::str::FromStr;

use rustix::io::Errno;

/// Name of the xattr holding an inode's tag.
pub const XID_XATTR: &str = "trusted.vxfs.xid";

/// Prefix of every xattr vxfs reserves for itself.
pub const RESERVED_XATTR_PREFIX: &[u8] = b"trusted.vxfs.";

/// A context id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Xid(pub u32);

impl Xid {
    /// The host context.
    pub const HOST: Xid = Xid(0);
    /// The spectator context, which may watch every other.
    pub const WATCH: Xid = Xid(1);
    /// A caller no rule of the mount maps to a context: it may use host
    /// inodes only and create nothing. Never stored as a tag.
    pub const UNMAPPED: Xid = Xid(u32::MAX - 2);
    /// The tag of an inode whose stored tag does not parse: it belongs to
    /// nobody, so only the host and the spectator may use it.
    pub const CORRUPT: Xid = Xid(u32::MAX - 1);
    /// The largest xid a tag, a mount option or a cgroup name may give.
    pub const MAX: Xid = Xid(u32::MAX - 3);

    /// Whether this context sees past tags (host or spectator).
    pub fn is_privileged(self) -> bool {
        self == Xid::HOST || self == Xid::WATCH
    }

    /// Whether this is an xid a context may really have (not one of the
    /// reserved markers).
    pub fn is_valid(self) -> bool {
        self <= Xid::MAX
    }

    /// The xattr value storing this tag.
    pub fn to_xattr(self) -> Vec<u8> {
        self.0.to_string().into_bytes()
    }

    /// Parses a stored tag; anything but a plain decimal number of a valid
    /// xid is corrupt.
    pub fn from_xattr(value: &[u8]) -> Option<Xid> {
        let text = std::str::from_utf8(value).ok()?;
        parse_decimal(text).map(Xid).filter(|x| x.is_valid())
    }
}

/// A plain decimal `u32` (no sign, no spaces, not empty).
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Xid {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_decimal(s)
            .map(Xid)
            .filter(|x| x.is_valid())
            .ok_or("a context id from 0 to 4294967292")
    }
}

/// Which id of the caller an [`IdRanges`] mode reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// The caller's fsuid.
    Uid,
    /// The caller's fsgid.
    Gid,
}

/// `xid=uid/SIZE[:FIRST-LAST]`: ids `[0, SIZE)` are the host's, ids
/// `[x·SIZE, (x+1)·SIZE)` are context `x` for `FIRST ≤ x ≤ LAST`, every
/// other id is unmapped. `FIRST` is at least 2: no range is the spectator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRanges {
    /// Which id.
    pub kind: IdKind,
    /// Ids per context.
    pub size: u32,
    /// The first context with a range.
    pub first: u32,
    /// The last context with a range.
    pub last: u32,
}

impl IdRanges {
    /// The context of id `id`.
    pub fn xid_of(&self, id: u32) -> Xid {
        let x = id / self.size;
        if x == 0 {
            Xid::HOST
        } else if (self.first..=self.last).contains(&x) {
            Xid(x)
        } else {
            Xid::UNMAPPED
        }
    }

    /// The ids of context `xid` (`None` for contexts without a range).
    pub fn range_of(&self, xid: Xid) -> Option<std::ops::Range<u64>> {
        let x = xid.0;
        (x == 0 || (self.first..=self.last).contains(&x)).then(|| {
            let start = u64::from(x) * u64::from(self.size);
            start..start + u64::from(self.size)
        })
    }

    /// What the mapping is, for logs and errors.
    pub fn describe(&self) -> String {
        let id = match self.kind {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        };
        let s = u64::from(self.size);
        format!(
            "{id}s 0-{} are the host; {id}s {}-{} are contexts {}-{} ({} each); other {id}s are unmapped",
            s - 1,
            u64::from(self.first) * s,
            (u64::from(self.last) + 1) * s - 1,
            self.first,
            self.last,
            self.size,
        )
    }
}

/// A view for one user-namespace guest (an id mapping with exactly one
/// guest context) shows host-owned files, whose ids are below the range
/// size, inside that guest's range: a setuid-root binary shared by
/// hashify is the guest's root's there, as `ls -l`, `dpkg --verify` and
/// the kernel's setuid rules inside the guest expect. The backing inode
/// keeps its one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdShift {
    /// Ids per context.
    pub size: u32,
    /// The guest's first id.
    pub base: u32,
}

impl IdShift {
    /// How a host id is shown to the guest.
    pub fn show(self, id: u32) -> u32 {
        if id < self.size { id + self.base } else { id }
    }
}

impl IdRanges {
    /// The shift of a mapping with a single guest context.
    pub fn shift(&self) -> Option<IdShift> {
        (self.first == self.last).then(|| IdShift {
            size: self.size,
            base: self.first.saturating_mul(self.size),
        })
    }
}

/// Where a request's context comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextMode {
    /// Tagging off: every request and every inode is the host's.
    #[default]
    Off,
    /// Every request on the mount comes from this context.
    Fixed(Xid),
    /// From the caller's uid or gid ([`IdRanges`]).
    Ids(IdRanges),
    /// From the caller's cgroup: `vx-<XID>` is context XID, anything else
    /// the host.
    Cgroup,
}

/// The `-o xid=` value of a mode (`off` for none).
impl fmt::Display for ContextMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextMode::Off => f.write_str("off"),
            ContextMode::Fixed(xid) => write!(f, "{xid}"),
            ContextMode::Ids(r) => {
                let id = match r.kind {
                    IdKind::Uid => "uid",
                    IdKind::Gid => "gid",
                };
                write!(f, "{id}/{}:{}-{}", r.size, r.first, r.last)
            }
            ContextMode::Cgroup => f.write_str("cgroup"),
        }
    }
}

impl ContextMode {
    /// Parses the value of `-o xid=`: `N`, `uid/SIZE[:FIRST-LAST]`,
    /// `gid/SIZE[:FIRST-LAST]` or `cgroup`; the error says what is wrong.
    pub fn parse(value: &str) -> Result<ContextMode, String> {
        if value == "cgroup" {
            return Ok(ContextMode::Cgroup);
        }
        let ids = |kind: IdKind, spec: &str| -> Result<ContextMode, String> {
            let (size, range) = match spec.split_once(':') {
                Some((size, range)) => (size, Some(range)),
                None => (spec, None),
            };
            let size = parse_decimal(size)
                .filter(|&n| n > 0)
                .ok_or("SIZE must be a positive number of ids")?;
            let most = u32::MAX / size;
            let (first, last) = match range {
                None => (2, most),
                Some(range) => {
                    let (a, b) = range
                        .split_once('-')
                        .ok_or("the contexts must be given as FIRST-LAST")?;
                    let a = parse_decimal(a).ok_or("FIRST must be a number")?;
                    let b = parse_decimal(b).ok_or("LAST must be a number")?;
                    (a, b)
                }
            };
            if first < 2 {
                return Err("FIRST must be at least 2: ids of context 0 are the host's and no id range may be the spectator (context 1)".into());
            }
            if first > last || last > most || last > Xid::MAX.0 {
                return Err(format!(
                    "FIRST-LAST must be a range within 2-{most} (ids end at 4294967295)"
                ));
            }
            Ok(ContextMode::Ids(IdRanges {
                kind,
                size,
                first,
                last,
            }))
        };
        if let Some(spec) = value.strip_prefix("uid/") {
            return ids(IdKind::Uid, spec);
        }
        if let Some(spec) = value.strip_prefix("gid/") {
            return ids(IdKind::Gid, spec);
        }
        value.parse::<Xid>().map(ContextMode::Fixed).map_err(|_| {
            "N (a context id), uid/SIZE[:FIRST-LAST], gid/SIZE[:FIRST-LAST] or cgroup".into()
        })
    }

    /// The id shift of host-owned files in this mode ([`IdShift`]).
    pub fn id_shift(self) -> Option<IdShift> {
        match self {
            ContextMode::Ids(r) => r.shift(),
            _ => None,
        }
    }

    /// Whether inodes are tagged at all.
    pub fn is_on(self) -> bool {
        self != ContextMode::Off
    }

    /// The context of a caller with these ids, for every mode but
    /// [`ContextMode::Cgroup`] (which needs the caller's process).
    pub fn xid_of_ids(self, uid: u32, gid: u32) -> Option<Xid> {
        match self {
            ContextMode::Off => Some(Xid::HOST),
            ContextMode::Fixed(xid) => Some(xid),
            ContextMode::Ids(r) => Some(r.xid_of(match r.kind {
                IdKind::Uid => uid,
                IdKind::Gid => gid,
            })),
            ContextMode::Cgroup => None,
        }
    }
}

/// Checks `/etc/subuid`-style text (`owner:start:count` lines) against an
/// id-range mapping: a subordinate range (a rootless container's ids) must
/// not reach into the host's ids or cover only part of a guest context's,
/// or its processes would silently act as the host or as that guest. A
/// range made of whole context ranges (how a guest's ids are usually
/// delegated) is fine, as is one that only covers unmapped ids.
pub fn check_subordinate_ranges(r: &IdRanges, text: &str) -> Result<(), String> {
    let size = u64::from(r.size);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(owner), Some(start), Some(count)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.parse::<u64>()) else {
            continue;
        };
        if count == 0 {
            continue;
        }
        let end = start + count; // exclusive
        let refuse = |why: String| {
            Err(format!(
                "{owner}'s subordinate ids {start}-{} {why}; with {} choose contexts FIRST-LAST \
                 that leave them out (xid=...:FIRST-LAST) or align the range to whole contexts",
                end - 1,
                r.describe()
            ))
        };
        if start < size {
            return refuse("include host ids".into());
        }
        let (lo, hi) = (start / size, (end - 1) / size);
        for x in lo..=hi {
            let Ok(x32) = u32::try_from(x) else { break };
            if !(r.first..=r.last).contains(&x32) {
                continue;
            }
            let (cs, ce) = (x * size, (x + 1) * size);
            if start > cs || end < ce {
                return refuse(format!("cover only part of context {x}'s ids"));
            }
        }
    }
    Ok(())
}

/// The tag policy of one mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tagging {
    /// Where contexts come from.
    pub mode: ContextMode,
    /// `notagcheck`: tags are kept but do not restrict access.
    pub no_check: bool,
}

impl Tagging {
    /// Whether context `who` may use an inode tagged `tag` (§1.4).
    pub fn may_use(&self, who: Xid, tag: Xid) -> bool {
        self.no_check || tag == Xid::HOST || who.is_privileged() || who == tag
    }

    /// `EACCES` unless `who` may access an inode tagged `tag`.
    pub fn check_access(&self, who: Xid, tag: Xid) -> Result<(), Errno> {
        if self.may_use(who, tag) {
            Ok(())
        } else {
            Err(Errno::ACCESS)
        }
    }

    /// `EPERM` unless `who` may change the attributes of an inode tagged
    /// `tag` (`inode_change_ok` answers `EPERM`, not `EACCES`).
    pub fn check_change(&self, who: Xid, tag: Xid) -> Result<(), Errno> {
        if self.may_use(who, tag) {
            Ok(())
        } else {
            Err(Errno::PERM)
        }
    }
}

/// Whether an xattr name is reserved for vxfs (never set, removed or listed
/// through the mount).
pub fn is_reserved_xattr(name: &[u8]) -> bool {
    name.starts_with(RESERVED_XATTR_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(size: u32, first: u32, last: u32) -> IdRanges {
        IdRanges {
            kind: IdKind::Uid,
            size,
            first,
            last,
        }
    }

    #[test]
    fn context_modes() {
        let uid = 65536 * 3 + 5;
        assert_eq!(ContextMode::Off.xid_of_ids(uid, 7), Some(Xid::HOST));
        assert_eq!(
            ContextMode::Fixed(Xid(42)).xid_of_ids(uid, 7),
            Some(Xid(42))
        );
        let by_uid = ContextMode::parse("uid/65536").unwrap();
        assert_eq!(by_uid.xid_of_ids(uid, 7), Some(Xid(3)));
        assert_eq!(by_uid.xid_of_ids(0, 0), Some(Xid::HOST));
        assert_eq!(by_uid.xid_of_ids(65535, 0), Some(Xid::HOST));
        // No id range is the spectator: a rootless container at the usual
        // subuid base 100000 is nobody.
        assert_eq!(by_uid.xid_of_ids(100_000, 0), Some(Xid::UNMAPPED));
        assert_eq!(by_uid.xid_of_ids(u32::MAX, 0), Some(Xid(65535)));
        let by_gid = ContextMode::parse("gid/1000:5-6").unwrap();
        assert_eq!(by_gid.xid_of_ids(0, 5001), Some(Xid(5)));
        assert_eq!(by_gid.xid_of_ids(0, 6999), Some(Xid(6)));
        assert_eq!(by_gid.xid_of_ids(0, 7000), Some(Xid::UNMAPPED));
        assert_eq!(by_gid.xid_of_ids(0, 4999), Some(Xid::UNMAPPED));
        assert_eq!(by_gid.xid_of_ids(0, 999), Some(Xid::HOST));
        assert_eq!(ContextMode::Cgroup.xid_of_ids(0, 0), None);
    }

    #[test]
    fn parses_modes() {
        assert_eq!(ContextMode::parse("7"), Ok(ContextMode::Fixed(Xid(7))));
        assert_eq!(ContextMode::parse("cgroup"), Ok(ContextMode::Cgroup));
        assert_eq!(
            ContextMode::parse("uid/65536"),
            Ok(ContextMode::Ids(ranges(65536, 2, 65535)))
        );
        assert_eq!(
            ContextMode::parse("uid/65536:100-200"),
            Ok(ContextMode::Ids(ranges(65536, 100, 200)))
        );
        for bad in [
            "",
            "-1",
            "uid/0",
            "uid/",
            "gid/x",
            "x",
            "4294967296",
            "4294967293",
            "uid/10:1-5",
            "uid/10:0-5",
            "uid/10:5-4",
            "uid/10:5",
            "uid/65536:2-65536",
            "uid/10:a-b",
            "cgroup:x",
        ] {
            assert!(ContextMode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_print_as_their_option() {
        for text in ["off", "7", "uid/65536:2-65535", "gid/1000:5-6", "cgroup"] {
            let mode = if text == "off" {
                ContextMode::Off
            } else {
                ContextMode::parse(text).unwrap()
            };
            assert_eq!(mode.to_string(), text);
        }
    }

    #[test]
    fn a_single_guest_mapping_shifts_host_ids_only() {
        let one = ContextMode::parse("uid/65536:101-101").unwrap();
        let s = one.id_shift().unwrap();
        assert_eq!((s.show(0), s.show(33)), (6_619_136, 6_619_169));
        assert_eq!(s.show(6_619_200), 6_619_200);
        assert_eq!(
            ContextMode::parse("uid/65536:101-102").unwrap().id_shift(),
            None
        );
        assert_eq!(ContextMode::Fixed(Xid(5)).id_shift(), None);
    }

    #[test]
    fn mapping_is_described_and_ranges_are_exact() {
        let r = ranges(65536, 100, 101);
        assert_eq!(r.range_of(Xid(100)), Some(6_553_600..6_619_136));
        assert_eq!(r.range_of(Xid(0)), Some(0..65536));
        assert_eq!(r.range_of(Xid(1)), None);
        assert_eq!(r.range_of(Xid(102)), None);
        assert!(
            r.describe()
                .contains("uids 6553600-6684671 are contexts 100-101")
        );
    }

    #[test]
    fn subordinate_ranges_must_not_straddle_contexts() {
        let r = ranges(65536, 2, 65535);
        // Debian's default for the first user straddles contexts 1 and 2.
        let err = check_subordinate_ranges(&r, "alice:100000:65536\n").unwrap_err();
        assert!(err.contains("part of context 2"), "{err}");
        // Whole contexts, comments and unmapped ids are fine.
        let fine = "# comment\nroot:6619136:65536\nbob:131072:131072\nc:65536:65536\nbad line\n";
        check_subordinate_ranges(&r, fine).unwrap();
        // Leaving the straddled contexts out makes the default one fine.
        check_subordinate_ranges(&ranges(65536, 100, 200), "alice:100000:65536").unwrap();
        // Host ids are never subordinate.
        let err = check_subordinate_ranges(&r, "eve:1000:10").unwrap_err();
        assert!(err.contains("host ids"), "{err}");
    }

    #[test]
    fn access_table() {
        let t = Tagging {
            mode: ContextMode::Fixed(Xid(5)),
            no_check: false,
        };
        // (caller, tag, allowed)
        let table = [
            (Xid(5), Xid(5), true),
            (Xid(5), Xid::HOST, true),
            (Xid(5), Xid(6), false),
            (Xid::HOST, Xid(6), true),
            (Xid::WATCH, Xid(6), true),
            (Xid(6), Xid(5), false),
            (Xid::UNMAPPED, Xid::HOST, true),
            (Xid::UNMAPPED, Xid(5), false),
            (Xid(5), Xid::CORRUPT, false),
            (Xid::HOST, Xid::CORRUPT, true),
        ];
        for (who, tag, allowed) in table {
            assert_eq!(t.may_use(who, tag), allowed, "{who} on {tag}");
            assert_eq!(t.check_access(who, tag).is_ok(), allowed);
            assert_eq!(
                t.check_change(who, tag).err(),
                (!allowed).then_some(Errno::PERM)
            );
        }
        let unchecked = Tagging {
            no_check: true,
            ..t
        };
        assert!(unchecked.may_use(Xid(5), Xid(6)));
    }

    #[test]
    fn xattr_round_trip_and_corruption() {
        assert_eq!(Xid::from_xattr(&Xid(1234).to_xattr()), Some(Xid(1234)));
        for bad in [
            &b""[..],
            b"12a",
            b"-1",
            b" 1",
            b"99999999999",
            b"4294967293",
        ] {
            assert_eq!(Xid::from_xattr(bad), None, "{bad:?}");
        }
        assert!(is_reserved_xattr(XID_XATTR.as_bytes()));
        assert!(!is_reserved_xattr(b"trusted.other"));
    }
}

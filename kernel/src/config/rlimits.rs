//! `rlimits/`: util-vserver's context limits (docs/VSERVER.md §10.5). A
//! file named after the resource sets its minimum, soft and hard limit at
//! once; `RES.min`, `RES.soft` and `RES.hard` set one each (and win). A
//! value is a number (decimal, `0x` hex) or `inf`. Memory resources are
//! counted in pages, as VServer counted them.

use std::collections::BTreeMap;

use super::{ConfigError, Reader};

/// A limit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RlimitValue {
    /// No limit.
    Infinite,
    /// This many units (pages for memory resources).
    Of(u64),
}

impl RlimitValue {
    /// Parses `inf`, a decimal or a `0x` number.
    pub fn parse(text: &str) -> Option<RlimitValue> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("infinity") || t == "-1" {
            return Some(RlimitValue::Infinite);
        }
        let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => t.parse().ok()?,
        };
        Some(RlimitValue::Of(n))
    }

    /// The value as a number (`u64::MAX` for none).
    pub fn get(self) -> u64 {
        match self {
            RlimitValue::Infinite => u64::MAX,
            RlimitValue::Of(n) => n,
        }
    }
}

/// One resource's limits (each `None` when not configured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimit {
    /// Guaranteed minimum (VServer accounting only).
    pub min: Option<RlimitValue>,
    /// Soft limit.
    pub soft: Option<RlimitValue>,
    /// Hard limit.
    pub hard: Option<RlimitValue>,
}

/// Limits by resource name (lower case, util-vserver's spelling).
pub type Rlimits = BTreeMap<String, Rlimit>;

/// The resources util-vserver knows, with VServer's ids (`vlimit --N`).
pub const RESOURCES: &[(&str, u32)] = &[
    ("cpu", 0),
    ("fsize", 1),
    ("data", 2),
    ("stack", 3),
    ("core", 4),
    ("rss", 5),
    ("nproc", 6),
    ("nofile", 7),
    ("memlock", 8),
    ("as", 9),
    ("locks", 10),
    ("msgqueue", 12),
    ("nsock", 16),
    ("openfd", 17),
    ("anon", 18),
    ("shmem", 19),
    ("semary", 20),
    ("nsems", 21),
    ("dentry", 22),
];

/// The name of resource id `id`.
pub fn resource_name(id: u32) -> Option<&'static str> {
    RESOURCES.iter().find(|(_, i)| *i == id).map(|(n, _)| *n)
}

pub(super) fn load(r: &Reader<'_>, sub: &str) -> Result<Rlimits, ConfigError> {
    let mut out = Rlimits::new();
    let files = r.entries(sub)?;
    for file in &files {
        let (res, which) = match file.rsplit_once('.') {
            Some((res, w @ ("min" | "soft" | "hard"))) => (res, Some(w)),
            _ => (file.as_str(), None),
        };
        let rel = format!("{sub}/{file}");
        if !RESOURCES.iter().any(|(n, _)| *n == res) {
            let known: Vec<&str> = RESOURCES.iter().map(|(n, _)| *n).collect();
            return Err(r.invalid(
                &rel,
                format!("unknown resource '{res}' (known: {})", known.join(" ")),
            ));
        }
        let text = r.value(&rel)?.unwrap_or_default();
        let value = RlimitValue::parse(&text)
            .ok_or_else(|| r.invalid(&rel, format!("invalid limit '{text}' (a number or inf)")))?;
        let entry = out.entry(res.to_string()).or_default();
        match which {
            // The plain file sets all three unless a specific file does.
            None => {
                entry.min = entry.min.or(Some(value));
                entry.soft = entry.soft.or(Some(value));
                entry.hard = entry.hard.or(Some(value));
            }
            Some("min") => entry.min = Some(value),
            Some("soft") => entry.soft = Some(value),
            _ => entry.hard = Some(value),
        }
    }
    // Specific files win over the plain one whatever the listing order.
    for file in &files {
        if let Some((res, w @ ("min" | "soft" | "hard"))) = file.rsplit_once('.') {
            let text = r.value(&format!("{sub}/{file}"))?.unwrap_or_default();
            let value = RlimitValue::parse(&text).expect("checked above");
            let entry = out.get_mut(res).expect("inserted above");
            match w {
                "min" => entry.min = Some(value),
                "soft" => entry.soft = Some(value),
                _ => entry.hard = Some(value),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::GuestConfig;
    use super::super::tests::guest;
    use super::*;

    #[test]
    fn files_as_vlimit_dir_reads_them() {
        let (_t, confdir) = guest(
            "g",
            &[
                ("rlimits/nproc", "100\n"),
                ("rlimits/nproc.soft", "50\n"),
                ("rlimits/rss.hard", "0x1000\n"),
                ("rlimits/nofile", "inf\n"),
            ],
        );
        let c = GuestConfig::load(&confdir, "g").unwrap();
        let nproc = c.rlimits["nproc"];
        assert_eq!(nproc.min, Some(RlimitValue::Of(100)));
        assert_eq!(nproc.soft, Some(RlimitValue::Of(50)));
        assert_eq!(nproc.hard, Some(RlimitValue::Of(100)));
        assert_eq!(c.rlimits["rss"].hard, Some(RlimitValue::Of(4096)));
        assert_eq!(c.rlimits["rss"].soft, None);
        assert_eq!(c.rlimits["nofile"].hard, Some(RlimitValue::Infinite));
        for (files, needle) in [
            (&[("rlimits/bogus", "1")][..], "unknown resource 'bogus'"),
            (&[("rlimits/nproc", "many")][..], "invalid limit 'many'"),
        ] {
            let (_t, confdir) = guest("g", files);
            let e = GuestConfig::load(&confdir, "g").unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!(resource_name(6), Some("nproc"));
    }
}

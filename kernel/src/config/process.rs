//! The parts of a guest's configuration that set up its init process:
//! `sysctl/`, `ionice/`, `personality`; and the util-vserver files vxfs
//! knows but does not apply (each a warning at start).

use super::{ConfigError, Reader};

/// `sysctl/<x>/{setting,value}`, as `/proc/sys` paths and values. Only
/// the guest's own namespaces' sysctls are accepted: the IPC ones
/// (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`) and, with a
/// network namespace of its own, `net.*`; any other would change the
/// host's kernel.
pub(super) fn sysctls(r: &Reader<'_>, own_net: bool) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for entry in r.entries("sysctl")? {
        let rel = |f: &str| format!("sysctl/{entry}/{f}");
        let setting = r
            .value(&rel("setting"))?
            .ok_or_else(|| r.invalid(&rel("setting"), "missing"))?;
        let value = r
            .value(&rel("value"))?
            .ok_or_else(|| r.invalid(&rel("value"), "missing"))?;
        let key = setting.replace('.', "/");
        if key.split('/').any(|c| c.is_empty() || c == "..") || key.contains('\0') {
            return Err(r.invalid(&rel("setting"), format!("'{setting}' is not a sysctl name")));
        }
        let namespaced = ["kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue."]
            .iter()
            .any(|p| setting.starts_with(p))
            || (own_net && setting.starts_with("net."));
        if !namespaced {
            return Err(r.invalid(
                &rel("setting"),
                format!(
                    "{setting}: not a sysctl of the guest's own namespaces (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.* with a network namespace); it would change the host's kernel"
                ),
            ));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// `ionice/{class,priority}`: the I/O class (1 realtime, 2 best-effort,
/// 3 idle, or those names) and priority (0..7) of init, as `ioprio_set`
/// wants them.
pub(super) fn ionice(r: &Reader<'_>) -> Result<Option<u32>, ConfigError> {
    let class = match r.value("ionice/class")? {
        None => return Ok(None),
        Some(c) => match c.to_ascii_lowercase().as_str() {
            "1" | "realtime" | "rt" => 1,
            "2" | "best-effort" | "be" => 2,
            "3" | "idle" => 3,
            _ => {
                return Err(r.invalid(
                    "ionice/class",
                    format!("'{c}': 1 (realtime), 2 (best-effort) or 3 (idle)"),
                ));
            }
        },
    };
    let prio: u32 = r.number("ionice/priority")?.unwrap_or(4);
    if prio > 7 {
        return Err(r.invalid("ionice/priority", format!("{prio}: 0..7")));
    }
    Ok(Some((class << 13) | if class == 3 { 0 } else { prio }))
}

/// Personality types and flags (`<sys/personality.h>`).
const PERSONALITIES: &[(&str, u64)] = &[
    ("linux", 0x0000),
    ("linux_32bit", 0x0800000),
    ("linux32", 0x0008),
    ("linux32_3gb", 0x0008 | 0x8000000),
];
const PERSONALITY_FLAGS: &[(&str, u64)] = &[
    ("uname26", 0x0020000),
    ("addr_no_randomize", 0x0040000),
    ("fdpic_funcptrs", 0x0080000),
    ("mmap_page_zero", 0x0100000),
    ("addr_compat_layout", 0x0200000),
    ("read_implies_exec", 0x0400000),
    ("addr_limit_32bit", 0x0800000),
    ("short_inode", 0x1000000),
    ("whole_seconds", 0x2000000),
    ("sticky_timeouts", 0x4000000),
    ("addr_limit_3gb", 0x8000000),
];

/// A personality from a type name and flag names (util-vserver's
/// `personality` file: the type on the first line, flags after, names with
/// or without `PER_`).
pub fn personality<'a>(
    kind: &str,
    flags: impl IntoIterator<Item = &'a str>,
) -> Result<u64, String> {
    let name = |s: &str| {
        s.trim()
            .to_ascii_lowercase()
            .trim_start_matches("per_")
            .to_string()
    };
    let kind = name(kind);
    let mut value = PERSONALITIES
        .iter()
        .find(|(n, _)| *n == kind)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            format!(
                "unknown personality '{kind}' (one of {})",
                PERSONALITIES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    for flag in flags {
        let flag = name(flag);
        if flag.is_empty() {
            continue;
        }
        value |= PERSONALITY_FLAGS
            .iter()
            .find(|(n, _)| *n == flag)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("unknown personality flag '{flag}'"))?;
    }
    Ok(value)
}

/// The `personality` file.
pub(super) fn personality_file(r: &Reader<'_>) -> Result<Option<u64>, ConfigError> {
    let Some(text) = r.text("personality")? else {
        return Ok(None);
    };
    let mut words = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .flat_map(|l| l.split([',', ' ', '\t']).filter(|w| !w.is_empty()));
    let Some(kind) = words.next() else {
        return Ok(None);
    };
    personality(kind, words)
        .map(Some)
        .map_err(|m| r.invalid("personality", m))
}

/// util-vserver files vxfs does not apply, with what to do instead.
const NOT_APPLIED: &[(&str, &str)] = &[
    ("ulimits", "not applied: set the same limits in rlimits/"),
    (
        "ncontext",
        "not applied: network contexts are network namespaces (interfaces/)",
    ),
    (
        "nflags",
        "not applied: network contexts are network namespaces (interfaces/)",
    ),
    (
        "ncapabilities",
        "not applied: network contexts are network namespaces (interfaces/)",
    ),
    (
        "apps/vdevmap",
        "not applied: a guest's /dev is the small fixed set",
    ),
    (
        "spaces/pid",
        "not applied: every guest has a pid namespace of its own",
    ),
    (
        "apps/init/sync",
        "not applied: vserver NAME start returns once init runs",
    ),
    (
        "apps/init/depends",
        "not applied: start the guests it names first",
    ),
];

/// One warning per file of [`NOT_APPLIED`] that exists.
pub(super) fn not_applied(r: &Reader<'_>) -> Vec<String> {
    NOT_APPLIED
        .iter()
        .filter(|(f, _)| r.exists(f))
        .map(|(f, why)| format!("{f}: {why}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personalities_by_name() {
        assert_eq!(personality("linux32", []), Ok(0x0008));
        assert_eq!(
            personality("PER_LINUX", ["ADDR_NO_RANDOMIZE"]),
            Ok(0x0040000)
        );
        assert!(personality("bsd", []).is_err());
        assert!(personality("linux", ["bogus"]).is_err());
    }
}

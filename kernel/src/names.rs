//! The names util-vserver gives context flags, bounding capabilities and
//! context capabilities, with its aliases, and the sets it starts a guest
//! with (docs/VSERVER.md §10.3, §10.4).
//!
//! A list file (`flags`, `bcapabilities`, `ccapabilities`) has one name per
//! line; `#` starts a comment, `~` or `!` before a name clears it, names
//! are case-insensitive and may carry their prefix (`VXF_`, `CAP_`,
//! `VXC_`). An unknown name is an error that names the file and line.

use std::fmt;

/// A set of bits with util-vserver names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Bits(pub u64);

impl Bits {
    /// Whether every bit of `other` is set.
    pub fn contains(self, other: u64) -> bool {
        self.0 & other == other
    }
}

/// One table of names.
#[derive(Debug)]
pub struct Table {
    /// What the names are (for messages).
    pub what: &'static str,
    /// The prefix a name may carry.
    prefix: &'static str,
    /// (name, bits); aliases repeat bits; the first name of a bit is the
    /// one printed.
    names: &'static [(&'static str, u64)],
}

/// Context flags (`VXF_*`).
pub static CFLAGS: Table = Table {
    what: "context flag",
    prefix: "vxf_",
    names: &[
        ("info_lock", 0x1),
        ("lock", 0x1),
        ("info_sched", 0x2),
        ("sched", 0x2),
        ("info_nproc", 0x4),
        ("nproc", 0x4),
        ("info_private", 0x8),
        ("private", 0x8),
        ("info_init", 0x10),
        ("fakeinit", 0x10),
        ("info_hide", 0x20),
        ("hideinfo", 0x20),
        ("info_ulimit", 0x40),
        ("ulimit", 0x40),
        ("info_nspace", 0x80),
        ("namespace", 0x80),
        ("sched_hard", 0x100),
        ("sched_prio", 0x200),
        ("sched_pause", 0x400),
        ("virt_mem", 0x10000),
        ("virt_uptime", 0x20000),
        ("virt_cpu", 0x40000),
        ("virt_load", 0x80000),
        ("virt_time", 0x100000),
        ("hide_mount", 0x1000000),
        ("hide_netif", 0x2000000),
        ("hide_vinfo", 0x4000000),
        ("state_setup", 1 << 32),
        ("state_init", 1 << 33),
        ("state_admin", 1 << 34),
        ("sc_helper", 1 << 36),
        ("reboot_kill", 1 << 37),
        ("persistent", 1 << 38),
        ("fork_rss", 1 << 48),
        ("prolific", 1 << 49),
        ("igneg_nice", 1 << 52),
        ("igneg_ionice", 1 << 53),
        // Pseudo flags util-vserver expands.
        ("default", 0x20000 | (1 << 36)),
        ("secure", 0x2000000),
    ],
};

/// The flags util-vserver gives every guest (`--secure --flag default`).
pub const CFLAGS_DEFAULT: u64 = 0x20000 | (1 << 36) | 0x2000000;

/// Flag bits, for the code that acts on them.
pub mod cflag {
    /// Nobody may join after setup.
    pub const PRIVATE: u64 = 0x8;
    /// Hard CPU limit from the token bucket.
    pub const SCHED_HARD: u64 = 0x100;
    /// Priority from the bucket (no mainline equivalent).
    pub const SCHED_PRIO: u64 = 0x200;
    /// Hold every task.
    pub const SCHED_PAUSE: u64 = 0x400;
    /// The guest's own memory figures (vxproc: meminfo, swaps).
    pub const VIRT_MEM: u64 = 0x10000;
    /// Uptime since the context started.
    pub const VIRT_UPTIME: u64 = 0x20000;
    /// The guest's own CPU figures (vxproc: stat, cpuinfo, online CPUs).
    pub const VIRT_CPU: u64 = 0x40000;
    /// The guest's own load average (vxproc: loadavg).
    pub const VIRT_LOAD: u64 = 0x80000;
    /// The guest's own wall clock (no mainline equivalent).
    pub const VIRT_TIME: u64 = 0x100000;
    /// Kill every task when the guest reboots or halts.
    pub const REBOOT_KILL: u64 = 1 << 37;
    /// Keep the context without tasks.
    pub const PERSISTENT: u64 = 1 << 38;
    /// No NPROC limit.
    pub const PROLIFIC: u64 = 1 << 49;
}

/// Linux capabilities (bounding set, `bcapabilities`), numbered as the
/// kernel numbers them.
pub static BCAPS: Table = Table {
    what: "capability",
    prefix: "cap_",
    names: &[
        ("CHOWN", 1 << 0),
        ("DAC_OVERRIDE", 1 << 1),
        ("DAC_READ_SEARCH", 1 << 2),
        ("FOWNER", 1 << 3),
        ("FSETID", 1 << 4),
        ("KILL", 1 << 5),
        ("SETGID", 1 << 6),
        ("SETUID", 1 << 7),
        ("SETPCAP", 1 << 8),
        ("LINUX_IMMUTABLE", 1 << 9),
        ("NET_BIND_SERVICE", 1 << 10),
        ("NET_BROADCAST", 1 << 11),
        ("NET_ADMIN", 1 << 12),
        ("NET_RAW", 1 << 13),
        ("IPC_LOCK", 1 << 14),
        ("IPC_OWNER", 1 << 15),
        ("SYS_MODULE", 1 << 16),
        ("SYS_RAWIO", 1 << 17),
        ("SYS_CHROOT", 1 << 18),
        ("SYS_PTRACE", 1 << 19),
        ("SYS_PACCT", 1 << 20),
        ("SYS_ADMIN", 1 << 21),
        ("SYS_BOOT", 1 << 22),
        ("SYS_NICE", 1 << 23),
        ("SYS_RESOURCE", 1 << 24),
        ("SYS_TIME", 1 << 25),
        ("SYS_TTY_CONFIG", 1 << 26),
        ("MKNOD", 1 << 27),
        ("LEASE", 1 << 28),
        ("AUDIT_WRITE", 1 << 29),
        ("AUDIT_CONTROL", 1 << 30),
        ("SETFCAP", 1 << 31),
        ("MAC_OVERRIDE", 1 << 32),
        ("MAC_ADMIN", 1 << 33),
        ("SYSLOG", 1 << 34),
        ("WAKE_ALARM", 1 << 35),
        ("BLOCK_SUSPEND", 1 << 36),
        ("AUDIT_READ", 1 << 37),
        ("PERFMON", 1 << 38),
        ("BPF", 1 << 39),
        ("CHECKPOINT_RESTORE", 1 << 40),
    ],
};

/// The highest capability this table knows.
pub const LAST_CAP: u32 = 40;

/// util-vserver's `--secure` bounding set (getinsecurebcaps.c inverted),
/// with SYS_BOOT (reboot and halt are handled, as vshelper did) and
/// AUDIT_WRITE.
pub const BCAPS_SECURE: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 10)
    | (1 << 18)
    | (1 << 19)
    | (1 << 22)
    | (1 << 26)
    | (1 << 28)
    | (1 << 29)
    | (1 << 31);

/// Context capabilities (`VXC_*`, `ccapabilities`).
pub static CCAPS: Table = Table {
    what: "context capability",
    prefix: "vxc_",
    names: &[
        ("set_utsname", 0x1),
        ("set_rlimit", 0x2),
        ("fs_security", 0x4),
        ("fs_trusted", 0x8),
        ("tiocsti", 0x10),
        ("raw_icmp", 0x100),
        ("ping", 0x100),
        ("icmp", 0x100),
        ("syslog", 0x1000),
        ("oom_adjust", 0x2000),
        ("audit_control", 0x4000),
        ("secure_mount", 0x10000),
        ("secure_remount", 0x20000),
        ("binary_mount", 0x40000),
        ("dev_mount", 0x80000),
        ("quota_ctl", 0x100000),
        ("admin_mapper", 0x200000),
        ("admin_cloop", 0x400000),
        ("kthread", 0x1000000),
        ("namespace", 0x2000000),
    ],
};

/// util-vserver's default context capabilities.
pub const CCAPS_DEFAULT: u64 = 0x1 | 0x100 | 0x4000;

/// Context capability bits, for the code that acts on them.
pub mod ccap {
    /// sethostname/setdomainname.
    pub const SET_UTSNAME: u64 = 0x1;
    /// Raise rlimits.
    pub const SET_RLIMIT: u64 = 0x2;
    /// Raw ICMP (ping).
    pub const RAW_ICMP: u64 = 0x100;
    /// syslog(2).
    pub const SYSLOG: u64 = 0x1000;
    /// Mounting (with nodev, nosuid).
    pub const SECURE_MOUNT: u64 = 0x10000;
    /// unshare/setns of its own namespaces.
    pub const NAMESPACE: u64 = 0x2000000;
}

/// A name no table knows, or a malformed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NameError {}

impl Table {
    /// The bits of one name (without `~`), if known.
    pub fn lookup(&self, name: &str) -> Option<u64> {
        let lower = name.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix(self.prefix).unwrap_or(&lower);
        self.names
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(bare))
            .map(|&(_, bits)| bits)
    }

    /// Applies one item (`NAME`, `~NAME`, `!NAME`) to `bits`.
    pub fn apply(&self, bits: &mut u64, item: &str) -> Result<(), NameError> {
        let item = item.trim();
        let (clear, name) = match item.strip_prefix(['~', '!']) {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let Some(b) = self.lookup(name) else {
            return Err(NameError {
                message: format!("unknown {} '{name}'", self.what),
            });
        };
        if clear {
            *bits &= !b;
        } else {
            *bits |= b;
        }
        Ok(())
    }

    /// Applies every line of a list file's `text` to `bits`; `source`
    /// names the file in errors.
    pub fn apply_text(&self, bits: &mut u64, text: &str, source: &str) -> Result<(), NameError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            // util-vserver also accepts comma-separated items.
            for item in line.split(',').filter(|i| !i.trim().is_empty()) {
                self.apply(bits, item).map_err(|e| NameError {
                    message: format!("{source}:{}: {e}", n + 1),
                })?;
            }
        }
        Ok(())
    }

    /// util-vserver's `print_bitfield`: the known names of `bits`
    /// comma-joined (one name per bit, pseudo names not used), unknown bits
    /// as `^N`.
    pub fn format(&self, bits: u64) -> String {
        let mut out = Vec::new();
        let mut left = bits;
        for bit in 0..64 {
            let b = 1u64 << bit;
            if bits & b == 0 {
                continue;
            }
            if let Some((name, _)) = self.names.iter().find(|(_, v)| *v == b) {
                out.push(name.to_string());
                left &= !b;
            }
        }
        for bit in 0..64 {
            if left & (1 << bit) != 0 {
                out.push(format!("^{bit}"));
            }
        }
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_prefixes_and_negation() {
        let mut f = CFLAGS_DEFAULT;
        CFLAGS
            .apply_text(
                &mut f,
                "# comment\nVXF_SCHED_HARD\n~virt_uptime\n!sc_helper\nfakeinit, lock\n",
                "flags",
            )
            .unwrap();
        assert_eq!(f, 0x2000000 | 0x100 | 0x10 | 0x1);
        assert_eq!(CFLAGS.lookup("info_init"), CFLAGS.lookup("FAKEINIT"));
        let e = CFLAGS.apply_text(&mut f, "bogus\n", "flags").unwrap_err();
        assert_eq!(e.to_string(), "flags:1: unknown context flag 'bogus'");
        let mut caps = BCAPS_SECURE;
        BCAPS
            .apply_text(&mut caps, "CAP_NET_RAW\n~KILL\nsys_nice", "bcapabilities")
            .unwrap();
        assert!(caps & (1 << 13) != 0 && caps & (1 << 5) == 0 && caps & (1 << 23) != 0);
        assert_eq!(CCAPS.lookup("ping"), Some(0x100));
    }

    #[test]
    fn formats_as_print_bitfield() {
        assert_eq!(CFLAGS.format(0x1 | 0x20000), "info_lock,virt_uptime");
        assert_eq!(
            BCAPS.format((1 << 0) | (1 << 21) | (1 << 60)),
            "CHOWN,SYS_ADMIN,^60"
        );
        assert_eq!(
            CCAPS.format(CCAPS_DEFAULT),
            "set_utsname,raw_icmp,audit_control"
        );
        assert_eq!(CCAPS.format(0), "");
    }

    #[test]
    fn the_secure_set_has_no_dangerous_capability() {
        for cap in [
            "SYS_ADMIN",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_TIME",
            "MKNOD",
            "NET_ADMIN",
            "SYS_RESOURCE",
            "SYSLOG",
            "MAC_ADMIN",
            "BPF",
        ] {
            assert_eq!(BCAPS_SECURE & BCAPS.lookup(cap).unwrap(), 0, "{cap}");
        }
    }
}

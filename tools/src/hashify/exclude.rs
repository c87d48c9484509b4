//! The exclude list (docs/VSERVER.md §5.3): which paths of a guest tree
//! are never unified.
//!
//! # Syntax
//!
//! One rule per line; `#` starts a comment line, trailing spaces are
//! trimmed, blank lines are ignored. A rule is a pattern with an optional
//! prefix: `+` includes, `~` and `-` exclude (util-vserver's "skip" and
//! "exclude" both mean "not unified" here), no prefix excludes.
//!
//! # Matching
//!
//! Paths are matched relative to their guest root as `/rel/path` with
//! `fnmatch(pattern, path, 0)`: no `FNM_PATHNAME` (`*` and `?` cross `/`),
//! no `FNM_PERIOD`, backslash escapes. The first matching rule wins; a path
//! no rule matches is included. An excluded directory is not descended.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The list used unless `--no-default-excludes`: what differs per guest or
/// must stay private (configuration, state, secrets, kernel filesystems),
/// after util-vserver's `vunify-exclude`.
pub const DEFAULT_EXCLUDES: &str = "\
# Kernel and device filesystems, mount points.
/dev
/proc
/sys
/selinux
/run
/mnt
/media
/lost+found
# Per-guest configuration and state; secrets stay private.
/etc/*
/var
/tmp
/home
/root
/boot
# TeX file databases are rebuilt per guest.
/*/ls-R
";

/// What a rule does to the paths it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `+`: unify (and descend).
    Include,
    /// `-`, `~` or no prefix: leave alone (and do not descend).
    Exclude,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What a match means.
    pub action: Action,
    /// The fnmatch pattern.
    pub pattern: Vec<u8>,
}

/// An ordered list of rules; the first match wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExcludeList {
    rules: Vec<Rule>,
}

impl ExcludeList {
    /// The empty list (everything included).
    pub fn new() -> ExcludeList {
        ExcludeList::default()
    }

    /// Appends the rules of an exclude-list text.
    pub fn add_text(&mut self, text: &[u8]) {
        for line in text.split(|&b| b == b'\n') {
            self.add_rule(line);
        }
    }

    /// Appends one rule line (`--exclude`); comments and blank lines add
    /// nothing.
    pub fn add_rule(&mut self, line: &[u8]) {
        let end = line
            .iter()
            .rposition(|&b| b != b' ' && b != b'\r')
            .map_or(0, |i| i + 1);
        let line = &line[..end];
        if line.is_empty() || line[0] == b'#' {
            return;
        }
        let (action, pattern) = match line[0] {
            b'+' => (Action::Include, &line[1..]),
            b'~' | b'-' => (Action::Exclude, &line[1..]),
            _ => (Action::Exclude, line),
        };
        if pattern.is_empty() {
            return;
        }
        self.rules.push(Rule {
            action,
            pattern: pattern.to_vec(),
        });
    }

    /// Appends the rules of the file `path` (`--exclude-from`).
    pub fn add_file(&mut self, path: &Path) -> std::io::Result<()> {
        self.add_text(&std::fs::read(path)?);
        Ok(())
    }

    /// Whether `path` (`/rel/path` below a guest root) is excluded.
    pub fn excludes(&self, path: &[u8]) -> bool {
        self.rules
            .iter()
            .find(|r| fnmatch(&r.pattern, path))
            .is_some_and(|r| r.action == Action::Exclude)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// [`ExcludeList::excludes`] for an `OsStr`.
pub fn excludes(list: &ExcludeList, path: &OsStr) -> bool {
    list.excludes(path.as_bytes())
}

/// `fnmatch(pattern, text, 0)` of the C library, as util-vserver's
/// vhashify calls it: `*` any run of bytes (also `/` and a leading `.`),
/// `?` any one byte, bracket expressions with every POSIX form (ranges,
/// `!`/`^`, `[:class:]`, `[.c.]`, `[=c=]`), backslash escapes, and the C
/// library's answer for every malformed pattern. The tools never set a
/// locale, so bytes compare as bytes. A NUL byte (no path has one) matches
/// nothing.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    crate::sys::fnmatch(pattern, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_without_pathname() {
        // (pattern, text, matches) as glibc's fnmatch(p, t, 0) answers.
        let table: &[(&str, &str, bool)] = &[
            ("/etc/*", "/etc/passwd", true),
            ("/etc/*", "/etc/ssh/sshd_config", true),
            ("/etc/*", "/etc", false),
            ("/etc/*", "/etc/", true),
            ("/dev", "/dev", true),
            ("/dev", "/dev/null", false),
            ("/*/ls-R", "/usr/share/texmf/ls-R", true),
            ("/*/ls-R", "/ls-R", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*b", "abab", true),
            ("*.so", "/lib/.hidden.so", true),
            ("?", "/", true),
            ("/usr/?in", "/usr/bin", true),
            ("/usr/?in", "/usr/in", false),
            ("[abc]x", "bx", true),
            ("[abc]x", "dx", false),
            ("[!abc]x", "dx", true),
            ("[^abc]x", "ax", false),
            ("[a-c]", "b", true),
            ("[a-c]", "d", false),
            ("[]]", "]", true),
            ("[!]]", "]", false),
            ("[a-]", "-", true),
            ("[[:digit:]]*", "7up", true),
            ("[[:digit:]]*", "up", false),
            ("[[:upper:][:digit:]]", "Q", true),
            ("[[:bogus:]]", "a", false),
            ("[ab", "[ab", true),
            ("[ab", "a", false),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("[\\]]", "]", true),
            ("/var/lib/*/cache*", "/var/lib/apt/cache/x", true),
        ];
        for &(p, t, want) in table {
            assert_eq!(fnmatch(p.as_bytes(), t.as_bytes()), want, "{p:?} {t:?}");
        }
    }

    #[test]
    fn first_match_wins_and_prefixes() {
        let mut list = ExcludeList::new();
        list.add_text(
            b"# comment\n\n+/etc/motd   \n~/etc/shadow\n-/etc/secret*\n/etc/*\n+/etc/late\n",
        );
        assert_eq!(list.rules().len(), 5, "{:?}", list.rules());
        let table = [
            ("/etc/motd", false),
            ("/etc/shadow", true),
            ("/etc/secret.key", true),
            ("/etc/hosts", true),
            ("/etc/late", true),
            ("/usr/bin/ls", false),
            ("/etc", false),
        ];
        for (path, excluded) in table {
            assert_eq!(list.excludes(path.as_bytes()), excluded, "{path}");
        }
        // Prefix-only and comment rules add nothing.
        let mut empty = ExcludeList::new();
        for line in ["+", "-", "~   ", "#/x", "   "] {
            empty.add_rule(line.as_bytes());
        }
        assert!(empty.rules().is_empty(), "{:?}", empty.rules());
    }

    #[test]
    fn default_list() {
        let mut list = ExcludeList::new();
        list.add_text(DEFAULT_EXCLUDES.as_bytes());
        for path in [
            "/etc/passwd",
            "/var",
            "/tmp",
            "/proc",
            "/dev",
            "/root",
            "/home",
        ] {
            assert!(list.excludes(path.as_bytes()), "{path}");
        }
        for path in ["/usr/bin/ls", "/lib/libc.so.6", "/etc", "/varnish", "/bin"] {
            assert!(!list.excludes(path.as_bytes()), "{path}");
        }
    }
}

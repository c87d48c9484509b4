//! hashify's command line.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::exclude::{DEFAULT_EXCLUDES, ExcludeList};
use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, UsageError};

/// The usage text.
pub const USAGE: &str = "\
Usage: hashify [-n] [-v] [options] [--] DIR...

Unifies identical files across guest trees on one vxfs mount: each set of
regular files with equal content, size, mode, owner, group and mtime is
replaced by hard links to one shared copy owned by the host and marked
immutable + iunlink, so a guest writing its copy gets a private one
(copy-on-write). DIRs are the guest roots (e.g. /vservers/*). Run as root
on the host, through the mount; the guests' disk usage drops accordingly.

  -n, --dry-run          change nothing: no store, no links, no flags, no
                         hash index writes; report what would be linked
  -v, --verbose          print \"unifying '<path>'\" for every file linked
                         and a line for every file that changed meanwhile
      --progress         show progress on stderr: a bar per phase on a
                         terminal, else a line per second (default: when
      --no-progress      stderr is a terminal)
      --ignore-mtime     unify files whose mtimes differ (the shared copy
                         keeps the first one's)
      --exclude RULE     an exclude-list rule (see below); repeatable, in
                         order, before the default list
      --exclude-from FILE  the rules in FILE, likewise
      --no-default-excludes  do not append the default list
      --store DIR        the hash store (default: .hashify in the guest
                         roots' common parent; created mode 0700 with the
                         barrier flag; must be on the same mount)
      --db PATH          the hash index of earlier runs (default:
                         SOURCE.vxfs.db.hashify, beside the mount's index)
  -j, --jobs N           hashing threads (default: the number of CPUs);
                         linking runs on twice as many
      --json             print the summary as one JSON object
  -h, --help             this text

Exclude rules (docs/VSERVER.md 5.3): one per line, '#' comments; '+PAT'
includes, '-PAT', '~PAT' or 'PAT' excludes; PAT is an fnmatch pattern
without FNM_PATHNAME ('*' crosses '/') matched against each path relative
to its guest root as '/rel/path'; the first matching rule wins; excluded
directories are not entered. The default list: /dev /proc /sys /selinux
/run /mnt /media /lost+found /etc/* /var /tmp /home /root /boot /*/ls-R.

Files under 16 bytes, symlinks and special files are skipped, symlinks are
never followed and the walk stays on the roots' filesystem. Files already
linked to the store are skipped without being read.

Exit status: 0 success, 1 some files failed (each reported), 2 bad usage
(including DIRs that are not on one vxfs mount).
";

pub const SPECS: &[OptSpec] = &[
    OptSpec::flag("dry-run", Some('n'), Some("dry-run")),
    OptSpec::flag("verbose", Some('v'), Some("verbose")),
    OptSpec::flag("progress", None, Some("progress")),
    OptSpec::flag("no-progress", None, Some("no-progress")),
    OptSpec::flag("ignore-mtime", None, Some("ignore-mtime")),
    OptSpec::valued("exclude", None, Some("exclude")),
    OptSpec::valued("exclude-from", None, Some("exclude-from")),
    OptSpec::flag("no-default-excludes", None, Some("no-default-excludes")),
    OptSpec::valued("store", None, Some("store")),
    OptSpec::valued("db", None, Some("db")),
    OptSpec::valued("jobs", Some('j'), Some("jobs")),
    OptSpec::flag("json", None, Some("json")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The guest roots.
    pub roots: Vec<PathBuf>,
    /// `-n`.
    pub dry_run: bool,
    /// `-v` count.
    pub verbose: u8,
    /// `--progress` / `--no-progress`; `None` = when stderr is a terminal.
    pub progress: Option<bool>,
    /// `--ignore-mtime`.
    pub ignore_mtime: bool,
    /// The rules, the user's first, then the default list.
    pub excludes: ExcludeList,
    /// `--store`.
    pub store: Option<PathBuf>,
    /// `--db`.
    pub db: Option<PathBuf>,
    /// Hashing threads.
    pub jobs: usize,
    /// `--json`.
    pub json: bool,
}

impl Options {
    /// Options for `roots` with every default (the default exclude list,
    /// one thread per CPU).
    pub fn new(roots: Vec<PathBuf>) -> Options {
        let mut excludes = ExcludeList::new();
        excludes.add_text(DEFAULT_EXCLUDES.as_bytes());
        Options {
            roots,
            dry_run: false,
            verbose: 0,
            progress: None,
            ignore_mtime: false,
            excludes,
            store: None,
            db: None,
            jobs: default_jobs(),
            json: false,
        }
    }
}

/// One hashing thread per CPU.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Largest `--jobs`.
const MAX_JOBS: usize = 256;

/// Parses the arguments after the program name.
pub fn parse(argv: Vec<OsString>) -> Result<Options, CliError> {
    let mut opts = Options::new(Vec::new());
    let mut rules = ExcludeList::new();
    let mut defaults = true;
    for arg in args::parse(SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("dry-run", _) => opts.dry_run = true,
            Arg::Opt("verbose", _) => opts.verbose = opts.verbose.saturating_add(1),
            Arg::Opt("progress", _) => opts.progress = Some(true),
            Arg::Opt("no-progress", _) => opts.progress = Some(false),
            Arg::Opt("ignore-mtime", _) => opts.ignore_mtime = true,
            Arg::Opt("exclude", Some(v)) => rules.add_rule(v.as_bytes()),
            Arg::Opt("exclude-from", Some(v)) => rules.add_file(v.as_ref()).map_err(|e| {
                UsageError::new(format!(
                    "--exclude-from {}: {e}",
                    std::path::Path::new(&v).display()
                ))
            })?,
            Arg::Opt("no-default-excludes", _) => defaults = false,
            Arg::Opt("store", Some(v)) => opts.store = Some(PathBuf::from(v)),
            Arg::Opt("db", Some(v)) => opts.db = Some(PathBuf::from(v)),
            Arg::Opt("jobs", Some(v)) => {
                let text = args::text("--jobs", &v)?;
                opts.jobs = match text.parse::<usize>() {
                    Ok(n) if (1..=MAX_JOBS).contains(&n) => n,
                    _ => {
                        return Err(UsageError::new(format!(
                            "--jobs: '{text}' is not a number from 1 to {MAX_JOBS}"
                        ))
                        .into());
                    }
                };
            }
            Arg::Opt("json", _) => opts.json = true,
            Arg::Opt(..) => unreachable!("every option is matched"),
            Arg::Operand(d) => opts.roots.push(PathBuf::from(d)),
        }
    }
    if opts.roots.is_empty() {
        return Err(UsageError::new("no directory given").into());
    }
    if defaults {
        rules.add_text(DEFAULT_EXCLUDES.as_bytes());
    }
    opts.excludes = rules;
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn parses() {
        let o = parse(words(
            "-nvv --ignore-mtime --store /s --db /d -j 3 --json a b",
        ))
        .unwrap();
        assert_eq!(o.roots, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert!(o.dry_run && o.ignore_mtime && o.json);
        assert_eq!(o.verbose, 2);
        assert_eq!(o.store.as_deref(), Some(std::path::Path::new("/s")));
        assert_eq!(o.db.as_deref(), Some(std::path::Path::new("/d")));
        assert_eq!(o.jobs, 3);
        assert_eq!(o.progress, None);
        assert_eq!(
            parse(words("--no-progress a")).unwrap().progress,
            Some(false)
        );
        assert_eq!(parse(words("--progress a")).unwrap().progress, Some(true));
        assert!(matches!(parse(words("-h")), Err(CliError::Help)));
    }

    #[test]
    fn user_rules_come_before_the_defaults() {
        let o = parse(words("--exclude +/etc/motd --exclude /usr/share/doc/* a")).unwrap();
        assert!(!o.excludes.excludes(b"/etc/motd"), "included before /etc/*");
        assert!(o.excludes.excludes(b"/etc/hosts"));
        assert!(o.excludes.excludes(b"/usr/share/doc/x"));
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), "# mine\n/opt/*\n").unwrap();
        let line = format!(
            "--exclude-from {} --no-default-excludes a",
            t.path().display()
        );
        let o = parse(words(&line)).unwrap();
        assert_eq!(o.excludes.rules().len(), 1);
        assert!(o.excludes.excludes(b"/opt/x"));
        assert!(!o.excludes.excludes(b"/etc/hosts"), "no defaults");
    }

    #[test]
    fn rejects() {
        let table = [
            ("", "no directory given"),
            ("-j 0 a", "--jobs: '0' is not a number from 1 to 256"),
            ("-j x a", "--jobs: 'x' is not a number"),
            (
                "--exclude-from /nonexistent a",
                "--exclude-from /nonexistent: No such file",
            ),
            ("-q a", "unknown option '-q'"),
        ];
        for (line, want) in table {
            match parse(words(line)) {
                Err(CliError::Usage(e)) => {
                    assert!(e.to_string().starts_with(want), "{line:?}: {e}")
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }
}

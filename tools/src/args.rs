//! The tools' argument parsing: each tool declares its options as a table
//! of [`OptSpec`]s, from which [`command`] builds a clap command; clap
//! parses, and [`parse`] hands the tool its options and operands in
//! command-line order, as the tools' loops expect. The same commands give
//! the man pages and the shell completions (`vxfs-tools-doc`).
//!
//! Accepted forms, as GNU getopt_long with argument permutation:
//! `-a -b` and bundles `-ab`; a short option's value attached (`-c5`) or as
//! the next word (`-c 5`), also at the end of a bundle (`-Rc 5`); long
//! options `--name value` and `--name=value`; `--` ends the options; a lone
//! `-` is an operand. Options may follow operands. A value may begin with
//! `-` (`-x -d` gives `-x` the value `-d`), as getopt's does.
//!
//! Option names are ASCII; values and operands are kept as raw `OsString`s
//! so that any file name works.

use std::ffi::{OsStr, OsString};

use crate::cli::UsageError;

/// One option a tool accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptSpec {
    /// The name the tool matches on (reported in [`Arg::Opt`]).
    pub name: &'static str,
    /// Its short letter, if any.
    pub short: Option<char>,
    /// Its long name, if any.
    pub long: Option<&'static str>,
    /// Whether it takes a value.
    pub value: bool,
}

impl OptSpec {
    /// A flag without a value.
    pub const fn flag(name: &'static str, short: Option<char>, long: Option<&'static str>) -> Self {
        OptSpec {
            name,
            short,
            long,
            value: false,
        }
    }

    /// An option taking a value.
    pub const fn valued(
        name: &'static str,
        short: Option<char>,
        long: Option<&'static str>,
    ) -> Self {
        OptSpec {
            name,
            short,
            long,
            value: true,
        }
    }

    fn display(&self) -> String {
        match (self.long, self.short) {
            (Some(l), _) => format!("--{l}"),
            (None, Some(s)) => format!("-{s}"),
            (None, None) => self.name.to_string(),
        }
    }
}

/// One parsed argument, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An option, by its [`OptSpec::name`], with its value if it takes one.
    Opt(&'static str, Option<OsString>),
    /// An operand (file, mount point, ...).
    Operand(OsString),
}

/// Splits `args` (without the program name) per `specs`.
pub fn parse<I>(specs: &[OptSpec], args: I) -> Result<Vec<Arg>, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    split(specs, args, false)
}

/// [`parse`] for tools that run a program after their options (getopt's
/// `+`): the first operand ends the options, so the program's own options
/// stay its.
pub fn parse_before_program<I>(specs: &[OptSpec], args: I) -> Result<Vec<Arg>, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    split(specs, args, true)
}

/// The id clap knows the operands by (no option's name has a space).
const OPERANDS: &str = "operands ";

/// The clap command of a tool named `name` that takes `specs`; with
/// `stop_at_operand`, the first operand and all after it are operands.
/// Help and version are the tools' own options (in their tables).
pub fn command(name: &'static str, specs: &[OptSpec], stop_at_operand: bool) -> clap::Command {
    use clap::{ArgAction, value_parser};
    let mut cmd = clap::Command::new(name)
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .dont_delimit_trailing_values(true);
    let mut seen: Vec<&str> = Vec::new();
    for spec in specs {
        // Another spelling of an option already made (setattr's `--!x`
        // for `--~x`): an alias of it.
        if seen.contains(&spec.name) {
            cmd = cmd.mut_arg(spec.name, |mut a| {
                if let Some(l) = spec.long {
                    a = a.alias(l);
                }
                if let Some(c) = spec.short {
                    a = a.short_alias(c);
                }
                a
            });
            continue;
        }
        seen.push(spec.name);
        // Append, so that every occurrence keeps its place: a flag's is
        // an empty value.
        let mut arg = clap::Arg::new(spec.name)
            .action(ArgAction::Append)
            .value_parser(value_parser!(OsString));
        if let Some(c) = spec.short {
            arg = arg.short(c);
        }
        if let Some(l) = spec.long {
            arg = arg.long(l);
        }
        arg = if spec.value {
            arg.num_args(1)
                .allow_hyphen_values(true)
                .value_name("VALUE")
        } else {
            arg.num_args(0).default_missing_value("")
        };
        cmd = cmd.arg(arg);
    }
    let mut operands = clap::Arg::new(OPERANDS)
        .action(ArgAction::Append)
        .value_parser(value_parser!(OsString))
        .num_args(0..)
        .value_name("OPERAND");
    if stop_at_operand {
        // After the first operand everything is one (a `-x` before it is
        // still an option, or an unknown one).
        operands = operands.trailing_var_arg(true);
    }
    cmd.arg(operands)
}

fn split<I>(specs: &[OptSpec], args: I, stop_at_operand: bool) -> Result<Vec<Arg>, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let matches = command("tool", specs, stop_at_operand)
        .try_get_matches_from(args)
        .map_err(|e| usage_error(specs, &e))?;
    let mut placed: Vec<(usize, Arg)> = Vec::new();
    let mut take = |id: &str, make: &dyn Fn(OsString) -> Arg| {
        if let (Some(at), Some(values)) = (matches.indices_of(id), matches.get_many::<OsString>(id))
        {
            placed.extend(at.zip(values.cloned().map(make)));
        }
    };
    for spec in specs {
        let value = spec.value;
        take(spec.name, &|v| Arg::Opt(spec.name, value.then_some(v)));
    }
    take(OPERANDS, &Arg::Operand);
    placed.sort_by_key(|(at, _)| *at);
    Ok(placed.into_iter().map(|(_, arg)| arg).collect())
}

/// The usage error of clap's `error`, worded as the tools always did.
fn usage_error(specs: &[OptSpec], error: &clap::Error) -> UsageError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    // "--xid <VALUE>", "-x <VALUE>", "--json": the option as typed.
    let invalid = context(ContextKind::InvalidArg).unwrap_or_default();
    let word = invalid
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let spec = specs.iter().find(|s| {
        s.long.is_some_and(|l| word == format!("--{l}"))
            || s.short.is_some_and(|c| word == format!("-{c}"))
    });
    match (error.kind(), spec) {
        (ErrorKind::InvalidValue | ErrorKind::WrongNumberOfValues, Some(s)) if s.value => {
            needs_value(s)
        }
        (ErrorKind::UnknownArgument | ErrorKind::TooManyValues, Some(s)) if !s.value => {
            UsageError::new(format!("option '{}' takes no value", s.display()))
        }
        (ErrorKind::UnknownArgument, _) => {
            // A long option's name without its `=value`.
            let word = match word.strip_prefix("--") {
                Some(long) => format!("--{}", long.split('=').next().unwrap_or_default()),
                None => word,
            };
            UsageError::new(format!("unknown option '{word}'"))
        }
        _ => {
            let text = error.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            UsageError::new(first.trim_start_matches("error: ").to_string())
        }
    }
}

fn needs_value(spec: &OptSpec) -> UsageError {
    UsageError::new(format!("option '{}' needs a value", spec.display()))
}

/// An operand (a guest's name, a program and its arguments) as UTF-8 text.
pub fn operand_text(operand: OsString) -> Result<String, UsageError> {
    operand
        .into_string()
        .map_err(|o| UsageError::new(format!("{}: not UTF-8", o.to_string_lossy())))
}

/// A value as UTF-8 text, for options whose values are numbers or names.
pub fn text<'a>(option: &str, value: &'a OsStr) -> Result<&'a str, UsageError> {
    value
        .to_str()
        .ok_or_else(|| UsageError::new(format!("{option}: value is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    const SPECS: &[OptSpec] = &[
        OptSpec::valued("xid", Some('x'), Some("xid")),
        OptSpec::valued("set", Some('s'), Some("set")),
        OptSpec::flag("remove", Some('d'), Some("remove")),
        OptSpec::flag("recurse", Some('R'), None),
        OptSpec::flag("json", None, Some("json")),
    ];

    fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn opt(name: &'static str, value: Option<&str>) -> Arg {
        Arg::Opt(name, value.map(OsString::from))
    }

    fn operand(s: &str) -> Arg {
        Arg::Operand(OsString::from(s))
    }

    #[test]
    fn accepted_forms() {
        let table: &[(&str, Vec<Arg>)] = &[
            ("", vec![]),
            ("/mnt", vec![operand("/mnt")]),
            ("-x 5 /mnt", vec![opt("xid", Some("5")), operand("/mnt")]),
            ("-x5", vec![opt("xid", Some("5"))]),
            ("--xid 5", vec![opt("xid", Some("5"))]),
            ("--xid=5", vec![opt("xid", Some("5"))]),
            ("--xid=", vec![opt("xid", Some(""))]),
            ("-Rd", vec![opt("recurse", None), opt("remove", None)]),
            (
                "-Rx 7 a",
                vec![opt("recurse", None), opt("xid", Some("7")), operand("a")],
            ),
            ("-Rx7", vec![opt("recurse", None), opt("xid", Some("7"))]),
            (
                "a --json b",
                vec![operand("a"), opt("json", None), operand("b")],
            ),
            ("-- -x --json", vec![operand("-x"), operand("--json")]),
            ("-", vec![operand("-")]),
            (
                "-s a=1 -s b=2",
                vec![opt("set", Some("a=1")), opt("set", Some("b=2"))],
            ),
            ("-x -d", vec![opt("xid", Some("-d"))]),
            ("-RR", vec![opt("recurse", None), opt("recurse", None)]),
            (
                "a -x 1 b -x 2 --json",
                vec![
                    operand("a"),
                    opt("xid", Some("1")),
                    operand("b"),
                    opt("xid", Some("2")),
                    opt("json", None),
                ],
            ),
            ("a -- -R", vec![operand("a"), operand("-R")]),
        ];
        for (line, want) in table {
            assert_eq!(&parse(SPECS, words(line)).unwrap(), want, "{line:?}");
        }
    }

    #[test]
    fn rejected_forms() {
        let table = [
            ("-q", "unknown option '-q'"),
            ("-Rq", "unknown option '-q'"),
            ("--quiet", "unknown option '--quiet'"),
            ("--xi 5", "unknown option '--xi'"),
            ("-x", "option '--xid' needs a value"),
            ("--xid", "option '--xid' needs a value"),
            ("--json=1", "option '--json' takes no value"),
            ("-R=1", "unknown option '-='"),
            ("--quiet=1", "unknown option '--quiet'"),
        ];
        for (line, message) in table {
            let err = parse(SPECS, words(line)).unwrap_err();
            assert_eq!(err.to_string(), message, "{line:?}");
        }
    }

    #[test]
    fn a_program_after_the_options_keeps_its_own() {
        let got = parse_before_program(SPECS, words("-x 5 prog -R --json -x 1 a")).unwrap();
        let mut want = vec![opt("xid", Some("5"))];
        want.extend(["prog", "-R", "--json", "-x", "1", "a"].map(operand));
        assert_eq!(got, want);
        let got = parse_before_program(SPECS, words("-R -- -x")).unwrap();
        assert_eq!(got, vec![opt("recurse", None), operand("-x")]);
        let err = parse_before_program(SPECS, words("--bogus prog")).unwrap_err();
        assert_eq!(err.to_string(), "unknown option '--bogus'");
    }

    #[test]
    fn non_utf8_operands_survive() {
        let raw = OsString::from_vec(b"caf\xe9".to_vec());
        let got = parse(SPECS, vec![raw.clone()]).unwrap();
        assert_eq!(got, vec![Arg::Operand(raw.clone())]);
        assert!(text("--xid", &raw).is_err());
    }
}

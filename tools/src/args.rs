//! A small getopt_long-style argument splitter shared by the tools (no clap).
//!
//! Accepted forms, as GNU getopt_long with argument permutation:
//! `-a -b` and bundles `-ab`; a short option's value attached (`-c5`) or as
//! the next word (`-c 5`), also at the end of a bundle (`-Rc 5`); long
//! options `--name value` and `--name=value`; `--` ends the options; a lone
//! `-` is an operand. Options may follow operands.
//!
//! Option names are ASCII; values and operands are kept as raw `OsString`s
//! so that any file name works.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

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

fn split<I>(specs: &[OptSpec], args: I, stop_at_operand: bool) -> Result<Vec<Arg>, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut out = Vec::new();
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            out.extend(iter.by_ref().map(Arg::Operand));
            break;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|&b| b == b'=') {
                Some(eq) => (&long[..eq], Some(OsStr::from_bytes(&long[eq + 1..]))),
                None => (long, None),
            };
            let spec = specs
                .iter()
                .find(|s| s.long.is_some_and(|l| l.as_bytes() == name))
                .ok_or_else(|| {
                    UsageError::new(format!(
                        "unknown option '--{}'",
                        String::from_utf8_lossy(name)
                    ))
                })?;
            let value = match (spec.value, inline) {
                (true, Some(v)) => Some(v.to_os_string()),
                (true, None) => Some(iter.next().ok_or_else(|| needs_value(spec))?),
                (false, Some(_)) => {
                    return Err(UsageError::new(format!(
                        "option '{}' takes no value",
                        spec.display()
                    )));
                }
                (false, None) => None,
            };
            out.push(Arg::Opt(spec.name, value));
            continue;
        }
        if bytes.len() > 1 && bytes[0] == b'-' {
            let mut rest = &bytes[1..];
            while let Some((&letter, tail)) = rest.split_first() {
                let spec = specs
                    .iter()
                    .find(|s| s.short.is_some_and(|c| c as u32 == u32::from(letter)))
                    .ok_or_else(|| {
                        UsageError::new(format!(
                            "unknown option '-{}'",
                            String::from_utf8_lossy(&[letter])
                        ))
                    })?;
                if spec.value {
                    let value = if tail.is_empty() {
                        iter.next().ok_or_else(|| needs_value(spec))?
                    } else {
                        OsString::from_vec(tail.to_vec())
                    };
                    out.push(Arg::Opt(spec.name, Some(value)));
                    break;
                }
                out.push(Arg::Opt(spec.name, None));
                rest = tail;
            }
            continue;
        }
        out.push(Arg::Operand(arg));
        if stop_at_operand {
            out.extend(iter.by_ref().map(Arg::Operand));
            break;
        }
    }
    Ok(out)
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
        ];
        for (line, message) in table {
            let err = parse(SPECS, words(line)).unwrap_err();
            assert_eq!(err.to_string(), message, "{line:?}");
        }
    }

    #[test]
    fn non_utf8_operands_survive() {
        let raw = OsString::from_vec(b"caf\xe9".to_vec());
        let got = parse(SPECS, vec![raw.clone()]).unwrap();
        assert_eq!(got, vec![Arg::Operand(raw.clone())]);
        assert!(text("--xid", &raw).is_err());
    }
}

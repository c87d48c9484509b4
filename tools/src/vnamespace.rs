//! `vnamespace`: util-vserver's `vspace --mount --fs`, a program in a new
//! mount namespace (`--new`) or in a running context's (`--enter XID`);
//! see [`vxfs_kernel::space`].

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;

use vxfs_kernel::registry::Registry;
use vxfs_kernel::space;

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};

/// vnamespace's usage text.
pub const VNAMESPACE_USAGE: &str = "\
Usage: vnamespace --new [--] PROGRAM [ARGS...]
       vnamespace --enter XID [--] PROGRAM [ARGS...]

--new (-n) runs PROGRAM in a new mount namespace whose mounts are slaves of
the host's. --enter (-e) runs it in the mount namespace of running context
XID (a number or a guest's name), under the guest's tree but with the
host's powers; PROGRAM is opened on the host before, and must be statically
linked (a dynamically linked one would load the guest's libraries).
To run a command as the guest, use `vserver NAME exec` or `vcontext
--migrate`.

Options:
  -n, --new          run PROGRAM in a new mount namespace
  -e, --enter XID    run PROGRAM in context XID's mount namespace
  -s, --set, -i, --index
                     refused: a context's namespaces are its init's, there
                     is nothing to record
  -h, --help         this text

Exit status: PROGRAM's; 255 when vnamespace itself fails.
";

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(UsageError::new(m))
}

enum Op {
    New,
    Enter(String),
}

/// The options of `vnamespace`.
pub const SPECS: &[OptSpec] = &[
    OptSpec::flag("new", Some('n'), Some("new")),
    OptSpec::valued("enter", Some('e'), Some("enter")),
    OptSpec::flag("set", Some('s'), Some("set")),
    OptSpec::valued("index", Some('i'), Some("index")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

fn body(argv: Vec<OsString>) -> Result<std::convert::Infallible, CliError> {
    let (mut op, mut program) = (None, Vec::new());
    for arg in args::parse_before_program(SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("new", _) if op.is_none() => op = Some(Op::New),
            Arg::Opt("enter", Some(v)) if op.is_none() => {
                op = Some(Op::Enter(args::text("--enter", &v)?.to_string()));
            }
            Arg::Opt("new" | "enter", _) => return Err(usage("one of --new and --enter")),
            Arg::Opt("set" | "index", _) => {
                return Err(usage(
                    "--set/--index: a context's namespaces are its init's, there is nothing to record",
                ));
            }
            Arg::Operand(p) => program.push(args::operand_text(p)?),
            _ => return Err(usage("bad arguments")),
        }
    }
    let op = op.ok_or_else(|| usage("--new or --enter XID is needed"))?;
    if program.is_empty() {
        return Err(usage("no PROGRAM given"));
    }
    match op {
        Op::New => {
            space::new_mount_namespace().map_err(anyhow::Error::from)?;
            let e = std::process::Command::new(&program[0])
                .args(&program[1..])
                .exec();
            Err(anyhow::anyhow!("exec {}: {e}", program[0]).into())
        }
        Op::Enter(xid) => {
            let state = crate::ctx::running(&Registry::open(), &xid)?;
            let (_, fd) = space::open_host_program(&program[0]).map_err(anyhow::Error::from)?;
            crate::ctx::record(&state, "enter-mounts");
            space::enter_mount_namespace(&state).map_err(anyhow::Error::from)?;
            Err(anyhow::Error::from(space::exec_host_program(fd, &program)).into())
        }
    }
}

/// Runs `vnamespace`.
pub fn vnamespace(argv: Vec<OsString>, _out: &mut dyn Write) -> Result<Outcome, CliError> {
    crate::cli::as_wrapper("vnamespace", body(argv).map(|never| match never {}))
}

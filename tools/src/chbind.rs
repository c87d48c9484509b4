//! `chbind`: a program restricted to some IPv4 addresses of the host's
//! network stack (util-vserver's network context), by the cgroup-BPF
//! programs of [`vxfs_kernel::chbind`]; `vserver NAME start` does the
//! same for a guest with `nonetns`.

use std::ffi::OsString;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;

use vxfs_kernel::Xid;
use vxfs_kernel::chbind::{self, Policy};

use crate::args::{self, Arg, OptSpec};
use crate::cli::{CliError, Outcome, UsageError};

/// chbind's usage text.
pub const CHBIND_USAGE: &str = "\
Usage: chbind [--silent] [--secure] [--nid N | --lback ADDR] [--bcast ADDR]
              --ip ADDR[/PREFIX]... [--] PROGRAM [ARGS...]

Runs PROGRAM with its sockets (and those of everything it starts)
restricted to the addresses --ip (one or more; PREFIX default 32) of the
host's network stack: a bind to 0.0.0.0 takes the first address, a bind
to another address is refused (EPERM), connections and datagrams leave
from its address on the destination's subnet (else the first), and
127.0.0.0/8 is the loopback address: --lback ADDR (in 127.0.0.0/8), or
with --nid N context N's own (127.N/256.N%256.1, the loopback of a guest
with nonetns and context N); without either, 127.0.0.0/8 stays the host's
loopback, shared and untouched. IPv6 binds and connections are refused
(v4-mapped ones follow the IPv4 rules). --bcast ADDR may be bound too.

--secure also keeps PROGRAM from undoing it: a mount namespace in which
the cgroup mounts are read-only, a cgroup namespace, and no
CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN or CAP_BPF. Without it a root
PROGRAM could move itself out of its cgroup. Sockets PROGRAM inherits were
made outside and are not restricted.

Options:
  --ip ADDR[/PREFIX]   an address PROGRAM may use (repeatable; the first is
                       the default source)
  --bcast ADDR         a broadcast address PROGRAM may bind too
  --lback ADDR         PROGRAM's loopback address, in 127.0.0.0/8
  --nid N              context N's loopback (127.N/256.N%256.1)
  --secure             keep PROGRAM from undoing the restriction (above)
  --silent             no messages but errors
  -h, --help           this text

Exit status: PROGRAM's; 255 when chbind itself fails.
";

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(UsageError::new(m))
}

/// `ADDR[/PREFIX]`; without a prefix, the address alone (/32).
fn parse_ip(text: &str) -> Result<(Ipv4Addr, u8), CliError> {
    vxfs_kernel::net::parse_address(text, 32).map_err(|e| match e {
        vxfs_kernel::net::BadAddress::Prefix => usage(format!("--ip {text}: bad prefix")),
        vxfs_kernel::net::BadAddress::Address(_) => {
            usage(format!("--ip {text}: not an IPv4 address"))
        }
    })
}

fn ipv4(option: &str, text: &str) -> Result<Ipv4Addr, CliError> {
    text.parse()
        .map_err(|_| usage(format!("{option} {text}: not an IPv4 address")))
}

/// CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_BPF.
const SECURE_DROP: u64 = (1 << 12) | (1 << 13) | (1 << 21) | (1 << 39);

/// The options of `chbind`.
pub const SPECS: &[OptSpec] = &[
    OptSpec::valued("ip", None, Some("ip")),
    OptSpec::valued("bcast", None, Some("bcast")),
    OptSpec::valued("lback", None, Some("lback")),
    OptSpec::valued("nid", None, Some("nid")),
    OptSpec::flag("secure", None, Some("secure")),
    OptSpec::flag("silent", None, Some("silent")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

fn body(argv: Vec<OsString>) -> Result<std::convert::Infallible, CliError> {
    let (mut addrs, mut bcast, mut lback, mut nid) = (Vec::new(), None, None, None);
    let (mut secure, mut silent, mut program) = (false, false, Vec::new());
    for arg in args::parse_before_program(SPECS, argv)? {
        match arg {
            Arg::Opt("help", _) => return Err(CliError::Help),
            Arg::Opt("ip", Some(v)) => addrs.push(parse_ip(args::text("--ip", &v)?)?),
            Arg::Opt("bcast", Some(v)) => {
                bcast = Some(ipv4("--bcast", args::text("--bcast", &v)?)?)
            }
            Arg::Opt("lback", Some(v)) => {
                lback = Some(ipv4("--lback", args::text("--lback", &v)?)?)
            }
            Arg::Opt("nid", Some(v)) => {
                let t = args::text("--nid", &v)?;
                let n: u32 = t
                    .parse()
                    .ok()
                    .filter(|n| (1..65535).contains(n))
                    .ok_or_else(|| usage(format!("--nid {t}: a context id 1..65534")))?;
                nid = Some(Xid(n));
            }
            Arg::Opt("secure", _) => secure = true,
            Arg::Opt("silent", _) => silent = true,
            Arg::Operand(p) => program.push(args::operand_text(p)?),
            _ => return Err(usage("bad arguments")),
        }
    }
    if program.is_empty() {
        return Err(usage("no PROGRAM given"));
    }
    if addrs.is_empty() {
        return Err(usage("no --ip given"));
    }
    let lback = match (lback, nid) {
        (Some(_), Some(_)) => return Err(usage("--lback and --nid both give the loopback")),
        (Some(l), None) => l,
        (None, Some(n)) => chbind::auto_lback(n),
        (None, None) => Ipv4Addr::LOCALHOST,
    };
    let policy = Policy::new(addrs, bcast, lback).map_err(usage)?;
    let cgroup = chbind::confine_self(&policy).map_err(anyhow::Error::from)?;
    if secure {
        chbind::seal().map_err(anyhow::Error::from)?;
        vxfs_kernel::security::restrict_capabilities(!SECURE_DROP).map_err(anyhow::Error::from)?;
    }
    if !silent {
        let list: Vec<String> = policy
            .addrs
            .iter()
            .map(|(a, p)| format!("{a}/{p}"))
            .collect();
        let lback = if policy.lback == Ipv4Addr::LOCALHOST {
            "the host's".to_string()
        } else {
            policy.lback.to_string()
        };
        eprintln!(
            "chbind: {} (loopback {lback}) in {}",
            list.join(" "),
            cgroup.display()
        );
    }
    let e = std::process::Command::new(&program[0])
        .args(&program[1..])
        .exec();
    Err(anyhow::anyhow!("exec {}: {e}", program[0]).into())
}

/// Runs `chbind`.
pub fn chbind(argv: Vec<OsString>, _out: &mut dyn Write) -> Result<Outcome, CliError> {
    crate::cli::as_wrapper("chbind", body(argv).map(|never| match never {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_ip("10.0.0.5/24").unwrap(),
            ("10.0.0.5".parse().unwrap(), 24)
        );
        assert_eq!(parse_ip("10.0.0.5").unwrap().1, 32);
        for bad in ["10.0.0.5/33", "10.0.0/8", "::1", "10.0.0.5/x"] {
            assert!(parse_ip(bad).is_err(), "{bad}");
        }
    }
}

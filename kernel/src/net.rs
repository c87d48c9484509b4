//! A guest's network namespace and interfaces, made with iproute2's `ip`
//! (and util-linux's `nsenter` for the guest's side) from the host: a
//! veth pair (host end in the host's namespace) or a macvlan on a host
//! device, addresses, loopback up, a default route through a veth's peer;
//! for a guest sharing the host's stack, its addresses on host devices.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::config::{Interface, interfaces::HostAddress, interfaces::Kind};
use crate::error::{Error, Result};
use crate::xid::Xid;

/// Why an `ADDR[/PREFIX]` does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadAddress {
    /// The prefix is not a number from 0 to 32.
    Prefix,
    /// The address (given) is not an IPv4 address.
    Address(String),
}

/// `ADDR[/PREFIX]`, the prefix `default` when there is none: the one
/// syntax of `chbind --ip` and of a guest's `interfaces/*/ip`.
pub fn parse_address(text: &str, default: u8) -> std::result::Result<(Ipv4Addr, u8), BadAddress> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (
            a,
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= 32)
                .ok_or(BadAddress::Prefix)?,
        ),
        None => (text, default),
    };
    let addr = addr
        .parse()
        .map_err(|_| BadAddress::Address(addr.to_string()))?;
    Ok((addr, prefix))
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| Error::Other(format!("running {}: {e}", args[0])))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The host end's name of interface `n` of context `xid`.
pub fn host_name(iface: &Interface, xid: Xid, n: usize) -> String {
    iface
        .host
        .clone()
        .unwrap_or_else(|| format!("vx{}h{n}", xid.0))
}

/// Sets up `interfaces` for the process `pid` (in its own network
/// namespace); returns the host ends made, to remove at stop.
pub fn setup(pid: u32, xid: Xid, interfaces: &[Interface]) -> Result<Vec<String>> {
    let pid_s = pid.to_string();
    let inside = |args: &[&str]| {
        let mut all = vec!["nsenter", "-t", &pid_s, "-n", "--"];
        all.extend_from_slice(args);
        run(&all)
    };
    inside(&["ip", "link", "set", "lo", "up"])?;
    let mut made = Vec::new();
    for (n, iface) in interfaces.iter().enumerate().filter(|(_, i)| !i.disabled) {
        let host = host_name(iface, xid, n);
        match iface.kind {
            Kind::Veth => {
                run(&[
                    "ip",
                    "link",
                    "add",
                    &host,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &iface.guest,
                    "netns",
                    &pid_s,
                ])?;
                made.push(host.clone());
                if let (Some(peer), Some((_, prefix))) = (iface.peer, iface.ip) {
                    run(&[
                        "ip",
                        "addr",
                        "add",
                        &format!("{peer}/{prefix}"),
                        "dev",
                        &host,
                    ])?;
                }
                run(&["ip", "link", "set", &host, "up"])?;
            }
            Kind::Macvlan => {
                let dev = iface.dev.as_deref().expect("checked at load");
                run(&[
                    "ip", "link", "add", &host, "link", dev, "type", "macvlan", "mode", "bridge",
                ])?;
                let moved = run(&["ip", "link", "set", &host, "netns", &pid_s]);
                if moved.is_err() {
                    let _ = run(&["ip", "link", "del", &host]);
                    moved?;
                }
                inside(&["ip", "link", "set", &host, "name", &iface.guest])?;
            }
        }
        if let Some((addr, prefix)) = iface.ip {
            inside(&[
                "ip",
                "addr",
                "add",
                &format!("{addr}/{prefix}"),
                "dev",
                &iface.guest,
            ])?;
        }
        inside(&["ip", "link", "set", &iface.guest, "up"])?;
        if let Some(peer) = iface.peer {
            inside(&["ip", "route", "add", "default", "via", &peer.to_string()])?;
        }
    }
    Ok(made)
}

/// Removes host ends that outlived the guest's namespace (a veth pair
/// goes with its namespace; this is for what a failed start left).
pub fn remove(host_interfaces: &[String]) {
    for name in host_interfaces {
        let exists = std::path::Path::new("/sys/class/net").join(name).exists();
        if exists {
            let _ = run(&["ip", "link", "del", name]);
        }
    }
}

/// Whether `dev` has `addr` (any prefix), by `ip -o -4 addr show dev DEV`.
fn has_address(dev: &str, addr: std::net::Ipv4Addr) -> Result<bool> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", dev])
        .output()
        .map_err(|e| Error::Other(format!("running ip: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "host device {dev}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .any(|w| w.split('/').next().is_some_and(|a| a.parse() == Ok(addr))))
}

/// Adds the addresses a guest sharing the host's stack has on host
/// devices; returns the ones it added (an address already there is the
/// host's, left alone at stop). On a failure, removes what it added.
pub fn add_addresses(wanted: &[HostAddress]) -> Result<Vec<HostAddress>> {
    let mut added = Vec::new();
    for a in wanted {
        let result = has_address(&a.dev, a.addr).and_then(|there| {
            if there {
                return Ok(false);
            }
            address(a, "add").map(|()| true)
        });
        match result {
            Ok(true) => added.push(a.clone()),
            Ok(false) => {}
            Err(e) => {
                remove_addresses(&added);
                return Err(e);
            }
        }
    }
    Ok(added)
}

/// Removes addresses [`add_addresses`] added.
pub fn remove_addresses(added: &[HostAddress]) {
    for a in added {
        let _ = address(a, "del");
    }
}

/// `ip addr add|del A/P dev D [label L]`.
fn address(a: &HostAddress, op: &str) -> Result<()> {
    let cidr = format!("{}/{}", a.addr, a.prefix);
    let mut args = vec!["ip", "addr", op, &cidr, "dev", &a.dev];
    if let Some(label) = &a.label {
        args.extend(["label", label]);
    }
    run(&args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_and_without_a_prefix() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(parse_address("10.0.0.5/24", 32), Ok((a("10.0.0.5"), 24)));
        assert_eq!(parse_address("10.0.0.5", 32), Ok((a("10.0.0.5"), 32)));
        assert_eq!(parse_address("10.0.0.5", 24), Ok((a("10.0.0.5"), 24)));
        assert_eq!(parse_address("10.0.0.5/0", 24), Ok((a("10.0.0.5"), 0)));
        assert_eq!(parse_address("10.0.0.5/33", 24), Err(BadAddress::Prefix));
        assert_eq!(parse_address("10.0.0.5/x", 24), Err(BadAddress::Prefix));
        assert_eq!(
            parse_address("10.0.0/24", 24),
            Err(BadAddress::Address("10.0.0".into()))
        );
        assert_eq!(
            parse_address("::1", 24),
            Err(BadAddress::Address("::1".into()))
        );
    }
}

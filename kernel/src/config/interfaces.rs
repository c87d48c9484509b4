//! `interfaces/` and `netns/interfaces/`: the guest's network
//! (docs/VSERVER.md §10.8). A guest with a network namespace gets, per
//! entry, a veth pair (host end in the host's namespace, guest end inside)
//! or a macvlan on a host device, with the entry's addresses. A guest
//! with `nonetns` shares the host's stack instead: its entries' addresses
//! are the only ones it may use there ([`SharedNet`], enforced by
//! [`crate::chbind`]), added to a host device at start when the entry
//! (or `interfaces/dev`) names one.

use super::{ConfigError, Reader};

/// How an interface reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// A veth pair.
    Veth,
    /// A macvlan on the host device `dev`.
    Macvlan,
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interface {
    /// The entry's directory name.
    pub entry: String,
    /// How it is made.
    pub kind: Kind,
    /// Its name inside the guest (`guest`, `name`; default `eth<N>`).
    pub guest: String,
    /// The host end's name (veth; `host`, default `vx<XID>-<N>` at start).
    pub host: Option<String>,
    /// The host device (macvlan: required; `dev`).
    pub dev: Option<String>,
    /// IPv4 address inside the guest (`ip`) and prefix (`prefix`).
    pub ip: Option<(std::net::Ipv4Addr, u8)>,
    /// IPv4 address of the host end (`peer`), for a point-to-point veth.
    pub peer: Option<std::net::Ipv4Addr>,
    /// `disabled` given.
    pub disabled: bool,
}

pub(super) fn load(r: &Reader<'_>) -> Result<Vec<Interface>, ConfigError> {
    let mut out = Vec::new();
    for base in ["interfaces", "netns/interfaces"] {
        for (n, entry) in r.entries(base)?.into_iter().enumerate() {
            let dir = format!("{base}/{entry}");
            if !r.path(&dir).is_dir() {
                // interfaces/{bcast,lback,dev,prefix,...}: defaults of the
                // old nx interfaces, which a namespace does not use.
                continue;
            }
            let v = |f: &str| r.value(&format!("{dir}/{f}"));
            let kind = match v("type")?.as_deref() {
                None | Some("veth") => Kind::Veth,
                Some("macvlan") => Kind::Macvlan,
                Some(other) => {
                    return Err(r.invalid(
                        &format!("{dir}/type"),
                        format!(
                            "interface type '{other}' (veth or macvlan; ipvlan and dummy are not \
                             in every kernel)"
                        ),
                    ));
                }
            };
            let prefix = match r.number::<u8>(&format!("{dir}/prefix"))? {
                Some(p) if p <= 32 => p,
                Some(p) => {
                    return Err(r.invalid(&format!("{dir}/prefix"), format!("prefix {p} > 32")));
                }
                None => 24,
            };
            let ip = match v("ip")? {
                None => None,
                Some(text) => Some(crate::net::parse_address(&text, prefix).map_err(|e| {
                    let why = match e {
                        crate::net::BadAddress::Prefix => format!("bad prefix in '{text}'"),
                        crate::net::BadAddress::Address(a) => {
                            format!("'{a}' is not an IPv4 address")
                        }
                    };
                    r.invalid(&format!("{dir}/ip"), why)
                })?),
            };
            let peer = match v("peer")? {
                None => None,
                Some(p) => Some(p.parse().map_err(|_| {
                    r.invalid(
                        &format!("{dir}/peer"),
                        format!("'{p}' is not an IPv4 address"),
                    )
                })?),
            };
            let dev = v("dev")?;
            if kind == Kind::Macvlan && dev.is_none() {
                return Err(r.invalid(&dir, "a macvlan needs dev (the host device)"));
            }
            let guest = v("guest")?
                .or(v("name")?)
                .unwrap_or_else(|| format!("eth{n}"));
            for name in [Some(&guest), v("host")?.as_ref()].into_iter().flatten() {
                if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
                    return Err(r.invalid(&dir, format!("'{name}' is not an interface name")));
                }
            }
            out.push(Interface {
                entry: dir.clone(),
                kind,
                guest,
                host: v("host")?,
                dev,
                ip,
                peer,
                disabled: r.exists(&format!("{dir}/disabled")),
            });
        }
    }
    Ok(out)
}

/// An address a guest sharing the host's stack has on a host device,
/// added at start (unless there already) and removed at stop.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostAddress {
    /// The address.
    pub addr: std::net::Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The host device.
    pub dev: String,
    /// Its label (`DEV:NAME` from the entry's `name`), as `ip addr`
    /// shows it.
    #[serde(default)]
    pub label: Option<String>,
}

/// The network of a guest with `nonetns`: the host's stack, restricted to
/// its entries' addresses (util-vserver's network context).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedNet {
    /// Its addresses with their prefix lengths, in entry order.
    pub addrs: Vec<(std::net::Ipv4Addr, u8)>,
    /// `interfaces/bcast`.
    pub bcast: Option<std::net::Ipv4Addr>,
    /// `interfaces/lback` (default: its own, [`crate::chbind::auto_lback`]).
    pub lback: Option<std::net::Ipv4Addr>,
    /// The addresses to put on host devices.
    pub host: Vec<HostAddress>,
}

impl SharedNet {
    /// The chbind policy of context `xid`.
    pub fn policy(&self, xid: crate::Xid) -> crate::chbind::Policy {
        crate::chbind::Policy::new(
            self.addrs.clone(),
            self.bcast,
            self.lback.unwrap_or_else(|| crate::chbind::auto_lback(xid)),
        )
        .expect("checked at load")
    }
}

/// The files an entry of a guest sharing the host's stack may have.
const SHARED_FILES: &[&str] = &["ip", "prefix", "dev", "nodev", "disabled", "name"];

/// `interfaces/` of a guest with `nonetns`; `None` without an address
/// (the host's stack, unrestricted).
pub(super) fn shared(
    r: &Reader<'_>,
    interfaces: &[Interface],
) -> Result<Option<SharedNet>, ConfigError> {
    let ipv4 = |rel: &str| -> Result<Option<std::net::Ipv4Addr>, ConfigError> {
        r.value(rel)?
            .map(|v| {
                v.parse()
                    .map_err(|_| r.invalid(rel, format!("'{v}' is not an IPv4 address")))
            })
            .transpose()
    };
    let default_dev = r.value("interfaces/dev")?;
    let mut net = SharedNet {
        addrs: Vec::new(),
        bcast: ipv4("interfaces/bcast")?,
        lback: ipv4("interfaces/lback")?,
        host: Vec::new(),
    };
    for iface in interfaces.iter().filter(|i| !i.disabled) {
        let dir = &iface.entry;
        for file in r.entries(dir)? {
            if !SHARED_FILES.contains(&file.as_str()) {
                return Err(r.invalid(
                    &format!("{dir}/{file}"),
                    "nonetns: the guest shares the host's network stack, this entry only gives \
                     it addresses (ip, prefix, dev, nodev)",
                ));
            }
        }
        let (addr, prefix) = iface
            .ip
            .ok_or_else(|| r.invalid(dir, "nonetns: an entry needs its ip"))?;
        net.addrs.push((addr, prefix));
        let dev = r
            .value(&format!("{dir}/dev"))?
            .or_else(|| default_dev.clone());
        if let Some(dev) = dev.filter(|_| !r.exists(&format!("{dir}/nodev"))) {
            if dev.is_empty() || dev.len() > 15 || dev.contains(['/', ' ', ':']) {
                return Err(r.invalid(
                    &format!("{dir}/dev"),
                    format!("'{dev}' is not an interface name"),
                ));
            }
            let label = match r.value(&format!("{dir}/name"))? {
                None => None,
                Some(name) => {
                    let label = format!("{dev}:{name}");
                    if label.len() > 15 || name.contains(['/', ' ']) {
                        return Err(r.invalid(
                            &format!("{dir}/name"),
                            format!("label '{label}': at most 15 bytes, no '/' or space"),
                        ));
                    }
                    Some(label)
                }
            };
            net.host.push(HostAddress {
                addr,
                prefix,
                dev,
                label,
            });
        }
    }
    if net.addrs.is_empty() {
        return Ok(None);
    }
    // Checked now with a stand-in loopback; the real one may need the
    // context id, known at start.
    crate::chbind::Policy::new(
        net.addrs.clone(),
        net.bcast,
        net.lback.unwrap_or(std::net::Ipv4Addr::LOCALHOST),
    )
    .map_err(|m| r.invalid("interfaces", format!("nonetns: {m}")))?;
    Ok(Some(net))
}

#[cfg(test)]
mod tests {
    use super::super::GuestConfig;
    use super::super::tests::guest;
    use super::*;

    #[test]
    fn veth_and_macvlan_entries() {
        let (_t, confdir) = guest(
            "g",
            &[
                ("interfaces/0/ip", "169.254.10.2\n"),
                ("interfaces/0/prefix", "30\n"),
                ("interfaces/0/peer", "169.254.10.1\n"),
                ("interfaces/0/host", "vxh0\n"),
                ("interfaces/bcast", "10.0.0.255\n"),
                ("netns/interfaces/m/type", "macvlan\n"),
                ("netns/interfaces/m/dev", "eth0\n"),
                ("netns/interfaces/m/ip", "10.1.2.3/16\n"),
            ],
        );
        let c = GuestConfig::load(&confdir, "g").unwrap();
        assert!(c.spaces.net);
        assert_eq!(c.interfaces.len(), 2);
        let v = &c.interfaces[0];
        assert_eq!(
            (v.kind, v.guest.as_str(), v.host.as_deref()),
            (Kind::Veth, "eth0", Some("vxh0"))
        );
        assert_eq!(v.ip, Some(("169.254.10.2".parse().unwrap(), 30)));
        assert_eq!(v.peer, Some("169.254.10.1".parse().unwrap()));
        let m = &c.interfaces[1];
        assert_eq!((m.kind, m.dev.as_deref()), (Kind::Macvlan, Some("eth0")));
        assert_eq!(m.ip, Some(("10.1.2.3".parse().unwrap(), 16)));
        for (files, needle) in [
            (
                &[("interfaces/0/type", "ipvlan")][..],
                "interface type 'ipvlan'",
            ),
            (
                &[("interfaces/0/ip", "300.1.1.1")][..],
                "is not an IPv4 address",
            ),
            (&[("interfaces/0/type", "macvlan")][..], "needs dev"),
            (
                &[("interfaces/0/guest", "a-name-much-too-long")][..],
                "is not an interface name",
            ),
        ] {
            let (_t, confdir) = guest("g", files);
            let e = GuestConfig::load(&confdir, "g").unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn nonetns_entries_are_addresses_in_the_hosts_stack() {
        let (_t, confdir) = guest(
            "g",
            &[
                ("nonetns", ""),
                ("interfaces/dev", "eth0\n"),
                ("interfaces/lback", "127.0.9.1\n"),
                ("interfaces/bcast", "10.0.0.255\n"),
                ("interfaces/a/ip", "10.0.0.5\n"),
                ("interfaces/b/ip", "192.168.1.7/16\n"),
                ("interfaces/b/dev", "br0\n"),
                ("interfaces/b/name", "web\n"),
                ("interfaces/c/ip", "172.16.0.2\n"),
                ("interfaces/c/nodev", ""),
                ("interfaces/d/ip", "172.16.0.3\n"),
                ("interfaces/d/disabled", ""),
            ],
        );
        let c = GuestConfig::load(&confdir, "g").unwrap();
        assert!(!c.spaces.net);
        let net = c.shared_net.unwrap();
        assert_eq!(
            net.addrs,
            vec![
                ("10.0.0.5".parse().unwrap(), 24),
                ("192.168.1.7".parse().unwrap(), 16),
                ("172.16.0.2".parse().unwrap(), 24),
            ]
        );
        let host: Vec<(String, String)> = net
            .host
            .iter()
            .map(|h| (h.addr.to_string(), h.dev.clone()))
            .collect();
        assert_eq!(
            host,
            [
                ("10.0.0.5".into(), "eth0".into()),
                ("192.168.1.7".into(), "br0".into())
            ]
        );
        let p = net.policy(crate::Xid(42));
        assert_eq!(p.lback, "127.0.9.1".parse::<std::net::Ipv4Addr>().unwrap());
        assert_eq!(p.bcast, Some("10.0.0.255".parse().unwrap()));
        // Without lback: the context's own.
        let (_t, confdir) = guest("g", &[("nonetns", ""), ("interfaces/0/ip", "10.0.0.5\n")]);
        let c = GuestConfig::load(&confdir, "g").unwrap();
        assert_eq!(
            c.shared_net.unwrap().policy(crate::Xid(258)).lback,
            std::net::Ipv4Addr::new(127, 1, 2, 1)
        );
        // nonetns without an address: the host's stack as it is.
        let (_t, confdir) = guest("g", &[("nonetns", "")]);
        let c = GuestConfig::load(&confdir, "g").unwrap();
        assert!(c.shared_net.is_none() && !c.spaces.net);
        for (files, needle) in [
            (
                &[("nonetns", ""), ("interfaces/0/prefix", "24\n")][..],
                "needs its ip",
            ),
            (
                &[
                    ("nonetns", ""),
                    ("interfaces/0/ip", "10.0.0.5\n"),
                    ("interfaces/lback", "10.0.0.1\n"),
                ][..],
                "127.0.0.0/8",
            ),
            (
                &[("nonetns", ""), ("netns/interfaces/0/ip", "10.0.0.5\n")][..],
                "both given",
            ),
        ] {
            let (_t, confdir) = guest("g", files);
            let e = GuestConfig::load(&confdir, "g").unwrap_err().to_string();
            assert!(e.contains(needle), "{files:?}: {e}");
        }
    }
}

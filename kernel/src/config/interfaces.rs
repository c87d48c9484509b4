//! `interfaces/` and `netns/interfaces/`: the guest's network
//! (docs/VSERVER.md §10.8). A guest with a network namespace gets, per
//! entry, a veth pair (host end in the host's namespace, guest end inside)
//! or a macvlan on a host device, with the entry's addresses.

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
                Some(text) => {
                    let (addr, pfx) = match text.split_once('/') {
                        Some((a, p)) => (
                            a.to_string(),
                            p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(|| {
                                r.invalid(&format!("{dir}/ip"), format!("bad prefix in '{text}'"))
                            })?,
                        ),
                        None => (text.clone(), prefix),
                    };
                    let addr = addr.parse().map_err(|_| {
                        r.invalid(
                            &format!("{dir}/ip"),
                            format!("'{addr}' is not an IPv4 address"),
                        )
                    })?;
                    Some((addr, pfx))
                }
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
}

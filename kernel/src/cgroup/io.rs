//! Block I/O settings between cgroup v1 (`blkio.*`) and v2 (`io.*`)
//! names, so that a guest's `cgroup/` files say the same on a hybrid host
//! (blkio on v1, like this project's test machine) and a pure v2 one: a
//! file whose controller no hierarchy has is written as its equivalent
//! in the other (docs/SEMANTICS.md, "Block I/O").
//!
//! | v2 | v1 |
//! |---|---|
//! | `io.max`: `MAJ:MIN rbps=N wbps=N riops=N wiops=N` (`max`: none) | `blkio.throttle.{read,write}_{bps,iops}_device`: `MAJ:MIN N` (0: none) |
//! | `io.bfq.weight`, `io.weight`: `N`, `default N`, `MAJ:MIN N` | `blkio.bfq.weight` (`N`), `blkio.bfq.weight_device` (`MAJ:MIN N`); BFQ's range 1..1000 |
//!
//! `io.latency`, `io.cost.*`, `io.prio.class` and v1's other files have no
//! equivalent and are refused by name.

/// The files `name` with `value` becomes under the other version's names
/// (`to_v2`: v1 names to v2), one rule per write; `Err` says why there is
/// none.
pub fn translate(name: &str, value: &str, to_v2: bool) -> Result<Vec<(String, String)>, String> {
    let lines = value.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut out = Vec::new();
    if to_v2 {
        let key = match name {
            "blkio.throttle.read_bps_device" => Some("rbps"),
            "blkio.throttle.write_bps_device" => Some("wbps"),
            "blkio.throttle.read_iops_device" => Some("riops"),
            "blkio.throttle.write_iops_device" => Some("wiops"),
            _ => None,
        };
        if let Some(key) = key {
            for l in lines {
                let (dev, n) = device_value(name, l)?;
                let n = if n == "0" { "max" } else { n };
                out.push(("io.max".to_string(), format!("{dev} {key}={n}")));
            }
            return Ok(out);
        }
        return match name {
            "blkio.weight" | "blkio.bfq.weight" | "blkio.bfq.weight_device" => {
                for l in lines {
                    weight(name, l)?;
                    out.push(("io.bfq.weight".to_string(), l.to_string()));
                }
                Ok(out)
            }
            _ => Err(format!(
                "cgroup/{name}: no cgroup v2 equivalent (io.max, io.bfq.weight)"
            )),
        };
    }
    match name {
        "io.max" => {
            for l in lines {
                let mut w = l.split_whitespace();
                let dev = w.next().unwrap_or("");
                device(name, dev)?;
                for kv in w {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| format!("cgroup/{name}: '{kv}' is not KEY=VALUE"))?;
                    let file = match k {
                        "rbps" => "blkio.throttle.read_bps_device",
                        "wbps" => "blkio.throttle.write_bps_device",
                        "riops" => "blkio.throttle.read_iops_device",
                        "wiops" => "blkio.throttle.write_iops_device",
                        _ => return Err(format!("cgroup/{name}: unknown key '{k}'")),
                    };
                    let n = match v {
                        "max" => "0".to_string(),
                        n => n
                            .parse::<u64>()
                            .map_err(|_| format!("cgroup/{name}: '{v}' is not a number"))?
                            .to_string(),
                    };
                    out.push((file.to_string(), format!("{dev} {n}")));
                }
            }
            Ok(out)
        }
        "io.weight" | "io.bfq.weight" => {
            for l in lines {
                let (dev, n) = weight(name, l)?;
                match dev {
                    Some(d) => {
                        out.push(("blkio.bfq.weight_device".to_string(), format!("{d} {n}")))
                    }
                    None => out.push(("blkio.bfq.weight".to_string(), n.to_string())),
                }
            }
            Ok(out)
        }
        _ => Err(format!(
            "cgroup/{name}: no cgroup v1 equivalent (blkio has throttles and BFQ weights only)"
        )),
    }
}

/// A guest's warning when its `cgroup/` files set a block I/O weight
/// (`names`) that cannot work on the disk holding `root`: weights are
/// BFQ's, and the disk's scheduler is another (read from sysfs).
pub fn weight_warning<'a>(
    root: &std::path::Path,
    mut names: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let weight = names.find(|n| n.contains("weight"))?;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(root).ok()?.dev();
    let mut sys = std::path::PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    ));
    if sys.join("partition").exists() {
        sys = sys.join("..");
    }
    let scheduler = std::fs::read_to_string(sys.join("queue/scheduler")).ok()?;
    let active = scheduler
        .split_whitespace()
        .find(|s| s.starts_with('['))?
        .trim_matches(['[', ']']);
    let disk = std::fs::canonicalize(&sys)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| sys.display().to_string());
    (active != "bfq").then(|| {
        format!(
            "cgroup/{weight}: a block I/O weight needs the BFQ scheduler, and {disk} (its root's \
             disk) uses {active}: no effect there (echo bfq > /sys/block/{disk}/queue/scheduler)"
        )
    })
}

/// `MAJ:MIN`.
fn device<'a>(name: &str, dev: &'a str) -> Result<&'a str, String> {
    let ok = dev
        .split_once(':')
        .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
    if ok {
        Ok(dev)
    } else {
        Err(format!("cgroup/{name}: '{dev}' is not MAJOR:MINOR"))
    }
}

/// `MAJ:MIN N`.
fn device_value<'a>(name: &str, line: &'a str) -> Result<(&'a str, &'a str), String> {
    let mut w = line.split_whitespace();
    let (dev, n) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
    device(name, dev)?;
    n.parse::<u64>()
        .map_err(|_| format!("cgroup/{name}: '{line}' is not MAJOR:MINOR VALUE"))?;
    Ok((dev, n))
}

/// `N`, `default N` or `MAJ:MIN N`, N in BFQ's 1..1000.
fn weight<'a>(name: &str, line: &'a str) -> Result<(Option<&'a str>, u32), String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let (dev, n) = match w[..] {
        [n] => (None, n),
        ["default", n] => (None, n),
        [d, n] => (Some(device(name, d)?), n),
        _ => return Err(format!("cgroup/{name}: '{line}' is not a weight")),
    };
    let n: u32 = n
        .parse()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| format!("cgroup/{name}: weight '{n}' is outside BFQ's 1..1000"))?;
    Ok((dev, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn v2_names_on_v1() {
        assert_eq!(
            translate(
                "io.max",
                "254:0 rbps=1048576 wiops=max\n8:0 wbps=2097152\n",
                false
            )
            .unwrap(),
            pairs(&[
                ("blkio.throttle.read_bps_device", "254:0 1048576"),
                ("blkio.throttle.write_iops_device", "254:0 0"),
                ("blkio.throttle.write_bps_device", "8:0 2097152"),
            ])
        );
        assert_eq!(
            translate("io.weight", "default 300\n254:0 50\n", false).unwrap(),
            pairs(&[
                ("blkio.bfq.weight", "300"),
                ("blkio.bfq.weight_device", "254:0 50"),
            ])
        );
        for (name, value, needle) in [
            ("io.max", "sda wbps=1", "MAJOR:MINOR"),
            ("io.max", "8:0 wbps=fast", "not a number"),
            ("io.max", "8:0 speed=1", "unknown key"),
            ("io.weight", "5000", "1..1000"),
            ("io.latency", "8:0 target=10", "no cgroup v1 equivalent"),
        ] {
            let e = translate(name, value, false).unwrap_err();
            assert!(e.contains(needle), "{name} {value}: {e}");
        }
    }

    #[test]
    fn v1_names_on_v2() {
        assert_eq!(
            translate(
                "blkio.throttle.write_bps_device",
                "254:0 2097152\n8:0 0",
                true
            )
            .unwrap(),
            pairs(&[("io.max", "254:0 wbps=2097152"), ("io.max", "8:0 wbps=max")])
        );
        assert_eq!(
            translate("blkio.bfq.weight", "200", true).unwrap(),
            pairs(&[("io.bfq.weight", "200")])
        );
        assert!(translate("blkio.throttle.io_serviced", "", true).is_err());
        assert!(translate("blkio.bfq.weight", "0", true).is_err());
    }
}

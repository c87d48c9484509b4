//! chbind (issue 12): a program restricted to its addresses in the host's
//! network stack by cgroup-BPF programs, checked with netprobe (one
//! socket call per run, its outcome printed) in a network namespace the
//! test makes, which stands in for the host's stack. Needs root,
//! iproute2, util-linux's nsenter and a cgroup2 mount: a machine without
//! them fails loudly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::NetNs;

const CHBIND: &str = env!("CARGO_BIN_EXE_chbind");

/// `netprobe ARGS` under `chbind CHBIND_ARGS` (or not, `chbind` empty) in
/// `ns`; its output.
fn probe(ns: &NetNs, chbind: &[&str], args: &[&str]) -> String {
    let out = spawn(ns, chbind, args).wait_with_output().unwrap();
    assert!(out.status.success(), "netprobe {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn spawn(ns: &NetNs, chbind: &[&str], args: &[&str]) -> Child {
    let mut c = if chbind.is_empty() {
        ns.cmd(common::netprobe_bin())
    } else {
        let mut c = ns.cmd(CHBIND);
        c.args(chbind).arg("--").arg(common::netprobe_bin());
        c
    };
    c.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A server's first line (`ok LOCAL`), then the child to wait for.
fn server(ns: &NetNs, chbind: &[&str], args: &[&str]) -> (String, Child) {
    let mut child = spawn(ns, chbind, args);
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (line.trim().to_string(), child)
}

fn rest(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sweep() {
    // The chbind-PID cgroups of ended runs (chbind sweeps them itself at
    // its next run; the test does not wait for one).
    let out = Command::new("sh")
        .arg("-c")
        .arg("rmdir /sys/fs/cgroup/unified/vxfs/chbind-* /sys/fs/cgroup/vxfs/chbind-* 2>/dev/null; true")
        .status();
    let _ = out;
}

#[test]
fn binds_connects_and_datagrams_stay_on_the_given_addresses() {
    assert!(rustix::process::geteuid().is_root(), "needs root");
    let ns = NetNs::new("chbind", &["10.77.0.1/24", "10.77.0.5/24", "10.78.0.5/24"]);
    let c: &[&str] = &[
        "--silent",
        "--ip",
        "10.77.0.5/24",
        "--ip",
        "10.78.0.5/24",
        "--nid",
        "4242",
    ];
    // Binds: 0.0.0.0 takes the first address, a foreign one is refused,
    // its own is kept, IPv6 ones are refused unless v4-mapped.
    assert!(probe(&ns, c, &["bind", "tcp", "0.0.0.0:0"]).starts_with("ok 10.77.0.5:"));
    assert!(probe(&ns, c, &["bind", "udp", "0.0.0.0:0"]).starts_with("ok 10.77.0.5:"));
    assert!(probe(&ns, c, &["bind", "tcp", "10.78.0.5:0"]).starts_with("ok 10.78.0.5:"));
    assert_eq!(probe(&ns, c, &["bind", "tcp", "10.77.0.1:0"]), "err 1");
    assert_eq!(probe(&ns, c, &["bind", "udp", "10.77.0.1:0"]), "err 1");
    assert_eq!(probe(&ns, c, &["bind", "tcp", "[fe80::1]:0"]), "err 1");
    assert!(probe(&ns, c, &["bind", "tcp", "[::]:0"]).starts_with("ok [::ffff:10.77.0.5]:"));
    // Outside chbind nothing changes.
    assert!(probe(&ns, &[], &["bind", "tcp", "0.0.0.0:0"]).starts_with("ok 0.0.0.0:"));
    assert!(probe(&ns, &[], &["bind", "tcp", "10.77.0.1:0"]).starts_with("ok 10.77.0.1:"));

    // A connection leaves from its address on the destination's subnet.
    let (l, srv) = server(&ns, &[], &["listen", "10.77.0.1:7000"]);
    assert_eq!(l, "ok 10.77.0.1:7000");
    assert!(probe(&ns, c, &["connect", "10.77.0.1:7000"]).starts_with("ok 10.77.0.5:"));
    assert!(rest(srv).starts_with("peer 10.77.0.5:"));
    // ... and from a dual-stack socket too.
    let (_, srv) = server(&ns, &[], &["listen", "10.77.0.1:7001"]);
    let out = probe(&ns, c, &["connect", "[::ffff:10.77.0.1]:7001"]);
    assert!(out.starts_with("ok [::ffff:10.77.0.5]:"), "{out}");
    assert!(rest(srv).starts_with("peer 10.77.0.5:"));

    // Its loopback is its own: what it binds to 127.0.0.1 is on
    // 127.16.146.1 (context 4242's), which the host's 127.0.0.1 does not
    // reach, and it reads back as 127.0.0.1.
    let (l, srv) = server(&ns, c, &["listen", "127.0.0.1:7002"]);
    assert_eq!(l, "ok 127.0.0.1:7002");
    assert_eq!(probe(&ns, &[], &["connect", "127.0.0.1:7002"]), "err 111");
    let out = probe(&ns, c, &["connect", "127.0.0.1:7002"]);
    assert!(
        out.starts_with("ok 127.0.0.1:") && out.ends_with(" 127.0.0.1:7002"),
        "{out}"
    );
    assert!(rest(srv).starts_with("peer 127.0.0.1:"));
    assert_eq!(
        probe(&ns, &[], &["bind", "tcp", "127.16.146.1:7002"]),
        "ok 127.16.146.1:7002",
        "the listener is gone with its process"
    );

    // Datagrams from a socket never bound leave from its address; a reply
    // over its loopback comes from 127.0.0.1.
    let (_, srv) = server(&ns, &[], &["udp-echo", "10.77.0.1:7003"]);
    assert_eq!(
        probe(&ns, c, &["udp-send", "10.77.0.1:7003"]),
        "ok\nreply 10.77.0.1:7003"
    );
    assert!(rest(srv).starts_with("from 10.77.0.5:"));
    let (_, srv) = server(&ns, c, &["udp-echo", "127.0.0.1:7004"]);
    assert_eq!(
        probe(&ns, c, &["udp-send", "127.0.0.1:7004"]),
        "ok\nreply 127.0.0.1:7004"
    );
    assert!(rest(srv).starts_with("from 127.0.0.1:"));
    assert!(probe(&ns, c, &["udp-send", "[fe80::1]:7005"]).ends_with("err 1"));

    // Without --nid or --lback, 127.0.0.0/8 is the host's: binds and
    // connections there stay as they are (a resolver on 127.0.0.53 is
    // reached, from a 127/8 source).
    let shared: &[&str] = &["--silent", "--ip", "10.77.0.5"];
    let (l, srv) = server(&ns, shared, &["listen", "127.0.0.1:7006"]);
    assert_eq!(l, "ok 127.0.0.1:7006");
    assert!(probe(&ns, &[], &["connect", "127.0.0.1:7006"]).starts_with("ok 127.0.0.1:"));
    rest(srv);
    let (_, srv) = server(&ns, &[], &["listen", "127.0.0.53:7007"]);
    let out = probe(&ns, shared, &["connect", "127.0.0.53:7007"]);
    assert!(
        out.starts_with("ok 127.0.0.1:") && out.ends_with(" 127.0.0.53:7007"),
        "{out}"
    );
    assert!(rest(srv).starts_with("peer 127.0.0.1:"));
    assert!(probe(&ns, shared, &["bind", "tcp", "127.0.0.9:0"]).starts_with("ok 127.0.0.9:"));
    // Elsewhere still its address.
    assert!(probe(&ns, shared, &["bind", "tcp", "0.0.0.0:0"]).starts_with("ok 10.77.0.5:"));
    sweep();
}

#[test]
fn secure_keeps_the_program_in_and_bad_usage_is_refused() {
    assert!(rustix::process::geteuid().is_root(), "needs root");
    let ns = NetNs::new("chbind-secure", &["10.79.0.5/24"]);
    // --secure: no way out of its cgroup (its own cgroup namespace), no
    // CAP_NET_RAW or CAP_NET_ADMIN.
    let out = ns
        .cmd(CHBIND)
        .args([
            "--silent",
            "--secure",
            "--ip",
            "10.79.0.5",
            "--",
            "sh",
            "-c",
        ])
        .arg(
            "cat /proc/self/cgroup | grep '^0::'; \
             grep CapBnd /proc/self/status; \
             echo $$ > /sys/fs/cgroup/unified/cgroup.procs && echo escaped",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0::/\n"), "own cgroup namespace: {text}");
    assert!(!text.contains("escaped"), "{text}");
    let bnd = text
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        bnd & ((1 << 12) | (1 << 13) | (1 << 21) | (1 << 39)),
        0,
        "{bnd:x}"
    );
    // Bad usage: exit 255 with a message, nothing run.
    for (args, needle) in [
        (&["--", "true"][..], "no --ip"),
        (&["--ip", "10.0.0.1/40", "--", "true"][..], "bad prefix"),
        (
            &["--ip", "127.0.0.1", "--", "true"][..],
            "cannot be a context's address",
        ),
        (
            &["--ip", "10.0.0.1", "--lback", "10.0.0.2", "--", "true"][..],
            "127.0.0.0/8",
        ),
        (
            &["--ip", "10.0.0.1", "--nid", "0", "--", "true"][..],
            "--nid 0",
        ),
        (&["--ip", "10.0.0.1"][..], "no PROGRAM"),
    ] {
        let out = Command::new(CHBIND).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    sweep();
}

//! Guest start-up and entry latency (`cargo bench -p vxfs-tools --bench
//! guests`): `vserver NAME exec /bin/true` on a running guest and `vserver
//! NAME start` (to the guest's init running), side by side with
//! `unshare` and bubblewrap doing the same namespace work on the same root
//! in the same run. Then the cost of an intercepted call: `uname(2)` and
//! `sysinfo(2)` per call on the host, in a guest that answers them from
//! the kernel, and in one whose supervisor answers them (`uts/release`,
//! `virt_mem`: seccomp user notification). A busybox guest root in
//! /var/tmp; needs root, busybox-static; bwrap is measured when
//! installed.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/guest_root.rs"]
mod guest_root;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VSERVER: &str = env!("CARGO_BIN_EXE_vserver");

fn run(cmd: &mut Command) {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Times `n` runs of `f`; (mean, median).
fn time(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / n as u32;
    (mean, samples[n / 2])
}

fn main() {
    let n = guest_root::arg("runs", 50);
    let (base, root) = guest_root::busybox_root("vxfs-bench-guest-", &["sh", "true", "sleep"]);
    let conf = base.path().join("etc/bench");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("context"), "40900\n").unwrap();
    std::os::unix::fs::symlink(&root, conf.join("vdir")).unwrap();
    let vserver = |args: &[&str]| {
        let mut c = Command::new(VSERVER);
        c.env("VXFS_CONFDIR", base.path().join("etc"))
            .env("VXFS_RUNDIR", base.path().join("run"))
            .arg("bench")
            .args(args);
        c
    };
    let rows: Vec<(&str, (Duration, Duration))> = {
        let mut rows = Vec::new();
        rows.push((
            "vserver start (to init)",
            time(n.min(20), || {
                run(&mut vserver(&["start"]));
                run(&mut vserver(&["stop"]));
            }),
        ));
        // The stop is in the figure above; measure it alone to subtract.
        let mut stops = Vec::new();
        for _ in 0..n.min(20) {
            run(&mut vserver(&["start"]));
            let t = Instant::now();
            run(&mut vserver(&["stop"]));
            stops.push(t.elapsed());
        }
        stops.sort();
        let stop_median = stops[stops.len() / 2];
        let (mean, median) = rows[0].1;
        rows[0].1 = (
            mean.saturating_sub(stop_median),
            median.saturating_sub(stop_median),
        );
        run(&mut vserver(&["start"]));
        rows.push((
            "vserver exec /bin/true",
            time(n, || run(&mut vserver(&["exec", "/bin/true"]))),
        ));
        run(&mut vserver(&["stop"]));
        rows.push((
            "fork+exec /bin/true",
            time(n, || run(&mut Command::new("/bin/true"))),
        ));
        rows.push((
            "unshare -fpmiu --root /bin/true",
            time(n, || {
                run(Command::new("unshare")
                    .args(["--fork", "--pid", "--mount", "--uts", "--ipc", "--root"])
                    .arg(&root)
                    .arg("/bin/true"));
            }),
        ));
        if Path::new("/usr/bin/bwrap").exists() {
            rows.push((
                "bwrap --unshare-all /bin/true",
                time(n, || {
                    run(Command::new("bwrap")
                        .args(["--unshare-all", "--bind"])
                        .arg(&root)
                        .args(["/", "--proc", "/proc", "--dev", "/dev", "/bin/true"]));
                }),
            ));
        }
        rows
    };
    println!("{:<36} {:>10} {:>10}", "", "mean ms", "median ms");
    for (what, (mean, median)) in rows {
        println!(
            "{what:<36} {:>10.2} {:>10.2}",
            mean.as_secs_f64() * 1000.0,
            median.as_secs_f64() * 1000.0
        );
    }
    intercepted_calls(&base, &root);
}

/// uname(2) and sysinfo(2) per call: host, plain guest, intercepting
/// guest (the probe times its own loop; the exec is not in the figure).
fn intercepted_calls(base: &tempfile::TempDir, root: &Path) {
    common::install_host_program(root, common::callprobe_bin(), "callprobe");
    let virt = base.path().join("etc/virt");
    std::fs::create_dir_all(virt.join("uts")).unwrap();
    std::fs::write(virt.join("context"), "40901\n").unwrap();
    std::fs::write(virt.join("uts/release"), "2.6.32-vs\n").unwrap();
    std::fs::write(virt.join("flags"), "virt_mem\n").unwrap();
    std::fs::create_dir_all(virt.join("rlimits")).unwrap();
    std::fs::write(virt.join("rlimits/rss.hard"), "16384\n").unwrap();
    std::os::unix::fs::symlink(root, virt.join("vdir")).unwrap();
    let vserver = |name: &str, args: &[&str]| {
        let mut c = Command::new(VSERVER);
        c.env("VXFS_CONFDIR", base.path().join("etc"))
            .env("VXFS_RUNDIR", base.path().join("run"))
            .env("VXFS_VXPROC", "/nonexistent")
            .arg(name)
            .args(args);
        c
    };
    let probe = |cmd: &mut Command| -> (f64, String) {
        let out = cmd.output().expect("callprobe");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (ns, answer) = text.trim().split_once(' ').unwrap();
        (ns.parse().unwrap(), answer.to_string())
    };
    let calls = "20000";
    for name in ["bench", "virt"] {
        run(&mut vserver(name, &["start"]));
    }
    println!();
    println!(
        "{:<36} {:>10} {:>10} {:>12}",
        "ns per call", "host", "guest", "intercepted"
    );
    for call in ["uname", "sysinfo"] {
        let (host, _) = probe(Command::new(root.join("bin/callprobe")).args([call, calls]));
        let (plain, _) = probe(&mut vserver(
            "bench",
            &["exec", "/bin/callprobe", call, calls],
        ));
        let (virt, answer) = probe(&mut vserver(
            "virt",
            &["exec", "/bin/callprobe", call, calls],
        ));
        println!("{call:<36} {host:>10.0} {plain:>10.0} {virt:>12.0}   (answer: {answer})");
    }
    for name in ["bench", "virt"] {
        run(&mut vserver(name, &["stop"]));
    }
}

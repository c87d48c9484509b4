//! The scheduler governor against the spec's token bucket (`cargo bench
//! -p vxfs-tools --bench governor`): two busy guests on CPU 0, A with
//! 1/4 of a CPU (`sched_hard`, fill-rate 1, interval 4, a bucket of 250
//! ticks = 1 s held until 125 ticks), B unlimited. Per second, the CPU
//! share each had (from its cgroup's `cpuacct.usage`) beside what the
//! TBF definition gives for the same workload (a tick-exact simulation:
//! while A is not on hold the two share the CPU equally, on hold B has
//! it all), with the governor and with the static mapping
//! (`sched/nogovernor`: CFS quota and burst, no hold). Needs root and
//! busybox-static. `--seconds N` (default 16); `--svg PATH` also draws
//! A's shares (docs/charts/governor.svg).

#[path = "common/chart.rs"]
mod chart;
#[path = "common/guest_root.rs"]
mod guest_root;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VSERVER: &str = env!("CARGO_BIN_EXE_vserver");

struct Pair {
    base: tempfile::TempDir,
    busy: Vec<Child>,
}

impl Pair {
    fn cmd(&self) -> Command {
        let mut c = Command::new(VSERVER);
        c.env("VXFS_CONFDIR", self.base.path().join("etc"))
            .env("VXFS_RUNDIR", self.base.path().join("run"))
            .env("VXFS_VXPROC", "/nonexistent");
        c
    }

    fn start(governed: bool) -> Pair {
        let (base, root) = guest_root::busybox_root("vxfs-bench-gov-", &["sh", "sleep"]);
        let pair = Pair {
            base,
            busy: Vec::new(),
        };
        for (name, xid, tbf) in [("a", 41100, true), ("b", 41101, false)] {
            let conf = pair.base.path().join("etc").join(name);
            std::fs::create_dir_all(conf.join("sched")).unwrap();
            std::fs::create_dir_all(conf.join("cpuset")).unwrap();
            std::os::unix::fs::symlink(&root, conf.join("vdir")).unwrap();
            std::fs::write(conf.join("context"), format!("{xid}\n")).unwrap();
            std::fs::write(conf.join("cpuset/cpus"), "0\n").unwrap();
            std::fs::write(conf.join("cpuset/mems"), "0\n").unwrap();
            if tbf {
                std::fs::write(conf.join("flags"), "sched_hard\n").unwrap();
                for (f, v) in [
                    ("fill-rate", "1"),
                    ("interval", "4"),
                    ("tokens-max", "250"),
                    ("tokens-min", "125"),
                ] {
                    std::fs::write(conf.join("sched").join(f), format!("{v}\n")).unwrap();
                }
                if !governed {
                    std::fs::write(conf.join("sched/nogovernor"), "").unwrap();
                }
            }
            let out = pair.cmd().args([name, "start"]).output().unwrap();
            assert!(out.status.success(), "start {name}: {out:?}");
        }
        pair
    }

    fn usage_file(xid: u32) -> PathBuf {
        let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
        let name = format!("vx-{xid}");
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    if e.file_name().to_str() == Some(&name) && p.join("cpuacct.usage").exists() {
                        return p.join("cpuacct.usage");
                    }
                    if d.components().count() < 9 {
                        stack.push(p);
                    }
                }
            }
        }
        panic!("no cpuacct cgroup for {xid}");
    }

    fn run_busy(&mut self) {
        for name in ["a", "b"] {
            let child = self
                .cmd()
                .args([name, "exec", "/bin/sh", "-c", "while :; do :; done"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            self.busy.push(child);
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in &mut self.busy {
            let _ = c.kill();
            let _ = c.wait();
        }
        for name in ["a", "b"] {
            let _ = self.cmd().args([name, "stop"]).output();
        }
    }
}

fn read_usage(path: &Path) -> f64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse::<f64>()
        .unwrap()
        / 1e9
}

/// A's share per second under the spec's TBF (4 ms ticks): r/t tokens
/// per tick, one per tick A runs, hold at 0 until `min`; while it runs,
/// A and B alternate ticks (equal weights).
fn tbf_shares(seconds: usize) -> Vec<f64> {
    let (r, t, max, min) = (1.0, 4.0, 250.0, 125.0);
    let (mut tokens, mut hold, mut turn) = (max, false, false);
    let mut out = Vec::new();
    for _ in 0..seconds {
        let mut ran = 0.0;
        for _ in 0..250 {
            tokens = f64::min(tokens + r / t, max);
            turn = !turn;
            if !hold && turn {
                tokens -= 1.0;
                ran += 1.0;
            }
            if !hold && tokens <= 0.0 {
                hold = true;
            } else if hold && tokens >= min {
                hold = false;
            }
        }
        out.push(ran / 250.0);
    }
    out
}

fn measure(governed: bool, seconds: usize) -> Vec<(f64, f64)> {
    let mut pair = Pair::start(governed);
    let (fa, fb) = (Pair::usage_file(41100), Pair::usage_file(41101));
    pair.run_busy();
    let mut last = (read_usage(&fa), read_usage(&fb), Instant::now());
    let mut shares = Vec::new();
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        let now = (read_usage(&fa), read_usage(&fb), Instant::now());
        let wall = now.2.duration_since(last.2).as_secs_f64();
        shares.push(((now.0 - last.0) / wall, (now.1 - last.1) / wall));
        last = now;
    }
    shares
}

fn main() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the governor bench starts guests: run it as root"
    );
    let seconds = guest_root::arg("seconds", 16);
    let expected = tbf_shares(seconds);
    let governed = measure(true, seconds);
    let fixed = measure(false, seconds);
    println!("# two busy guests on CPU 0: A = 1/4 CPU, bucket 1 s, hold until 0.5 s; B unlimited");
    println!(
        "{:>4}  {:>9} {:>9}  {:>9} {:>9}  {:>9} {:>9}",
        "s", "TBF A", "TBF B", "gov A", "gov B", "static A", "static B"
    );
    let (mut sum_e, mut sum_g, mut sum_s) = (0.0, 0.0, 0.0);
    for (i, e) in expected.iter().enumerate() {
        let (ga, gb) = governed[i];
        let (sa, sb) = fixed[i];
        sum_e += e;
        sum_g += ga;
        sum_s += sa;
        println!(
            "{:>4}  {:>8.0}% {:>8.0}%  {:>8.0}% {:>8.0}%  {:>8.0}% {:>8.0}%",
            i + 1,
            e * 100.0,
            (1.0 - e) * 100.0,
            ga * 100.0,
            gb * 100.0,
            sa * 100.0,
            sb * 100.0
        );
    }
    let n = seconds as f64;
    println!(
        "mean  {:>8.1}%            {:>8.1}%            {:>8.1}%",
        sum_e / n * 100.0,
        sum_g / n * 100.0,
        sum_s / n * 100.0
    );
    let err: f64 = expected
        .iter()
        .zip(&governed)
        .map(|(e, (g, _))| (e - g).abs())
        .sum::<f64>()
        / n;
    let err_static: f64 = expected
        .iter()
        .zip(&fixed)
        .map(|(e, (s, _))| (e - s).abs())
        .sum::<f64>()
        / n;
    println!(
        "mean |A - TBF A| per second: governor {:.1} points, static mapping {:.1} points",
        err * 100.0,
        err_static * 100.0
    );
    if let Some(path) = svg_path() {
        let at = |v: &[f64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, s)| ((i + 1) as f64, s * 100.0))
                .collect()
        };
        let svg = chart::lines(
            "Guest A's CPU share: 1/4 CPU, bucket 1 s, hold until 0.5 s, against an unlimited B",
            "seconds",
            "% of CPU 0",
            &[
                ("TBF (definition)", at(&expected)),
                (
                    "governor",
                    at(&governed.iter().map(|g| g.0).collect::<Vec<_>>()),
                ),
                (
                    "static mapping",
                    at(&fixed.iter().map(|f| f.0).collect::<Vec<_>>()),
                ),
            ],
        );
        std::fs::write(&path, svg).unwrap();
        println!("wrote {path}");
    }
}

/// `--svg PATH`.
fn svg_path() -> Option<String> {
    std::env::args().skip_while(|a| a != "--svg").nth(1)
}

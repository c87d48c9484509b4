//! A guest's own /proc files through vxproc (`cargo bench -p vxfs-tools
//! --bench vxproc`): reading `/proc/meminfo`, `/proc/loadavg` and
//! `/proc/stat` through vxproc against the kernel's own files, with 1 and
//! with 100 running guests (real `vserver NAME start`s of one busybox
//! root with virt_mem, virt_cpu and virt_load), vxproc's load sampler's
//! pass over every guest, and the daemon's memory. Reads are open, read
//! to the end, close, on the host side of the daemon's mount (the same
//! requests a guest's reads make; the guest's bind mount adds no work).
//! The peer is lxcfs (`lxcfs -f -l`, started on a directory of its own
//! for the run and stopped after), reading the same files for the bench's
//! own cgroup. Needs root, busybox-static and lxcfs (scripts/setup.sh
//! installs both).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/guest_root.rs"]
mod guest_root;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vxfs_kernel::registry::Registry;

const VSERVER: &str = env!("CARGO_BIN_EXE_vserver");

struct Guests {
    base: tempfile::TempDir,
    names: Vec<String>,
}

impl Guests {
    fn env(&self, c: &mut Command) {
        c.env("VXFS_CONFDIR", self.base.path().join("etc"))
            .env("VXFS_RUNDIR", self.base.path().join("run"))
            .env("VXFS_VXPROC", common::vxproc_bin());
    }

    fn proc_dir(&self) -> PathBuf {
        self.base.path().join("proc")
    }

    fn start(&mut self, xid: u32) {
        let name = format!("p{xid}");
        let conf = self.base.path().join("etc").join(&name);
        std::fs::create_dir_all(conf.join("rlimits")).unwrap();
        std::os::unix::fs::symlink(self.base.path().join("root"), conf.join("vdir")).unwrap();
        std::fs::write(conf.join("context"), format!("{xid}\n")).unwrap();
        std::fs::write(conf.join("flags"), "virt_mem\nvirt_cpu\nvirt_load\n").unwrap();
        std::fs::write(conf.join("rlimits/rss.hard"), "16384\n").unwrap();
        let mut c = Command::new(VSERVER);
        self.env(&mut c);
        let out = c
            .args([&name, "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "start {name}: {out:?}");
        self.names.push(name);
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        // All at once: each stop waits for its guest's init to go.
        let stops: Vec<_> = self
            .names
            .iter()
            .filter_map(|name| {
                let mut c = Command::new(VSERVER);
                self.env(&mut c);
                c.args([name, "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .collect();
        for mut s in stops {
            let _ = s.wait();
        }
        let mut c = Command::new(common::vxproc_bin());
        self.env(&mut c);
        let _ = c
            .arg("--stop")
            .arg("--mountpoint")
            .arg(self.proc_dir())
            .output();
    }
}

/// Median time of `n` whole-file reads of `path`, `gap` apart.
fn read_cost(path: &Path, n: usize, gap: Duration) -> Duration {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            std::thread::sleep(gap);
            let s = Instant::now();
            let text = std::fs::read(path).unwrap();
            assert!(!text.is_empty(), "{}", path.display());
            s.elapsed()
        })
        .collect();
    t.sort();
    t[n / 2]
}

fn rss_kb(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// lxcfs serving at a directory of the run, stopped on drop.
struct Lxcfs {
    child: std::process::Child,
    dir: PathBuf,
}

impl Lxcfs {
    fn start(base: &Path) -> Lxcfs {
        let dir = base.join("lxcfs");
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("lxcfs")
            .args(["-f", "-l", "-p"])
            .arg(base.join("lxcfs.pid"))
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lxcfs (the peer) is needed: scripts/setup.sh installs it");
        let l = Lxcfs { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !l.dir.join("proc/meminfo").exists() {
            assert!(Instant::now() < deadline, "lxcfs did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        l
    }
}

impl Drop for Lxcfs {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn table(g: &Guests, count: usize, n: usize, lxcfs: &Path) {
    let xid = 41000;
    // Back to back, most reads reuse a content made < 20 ms before (what a
    // guest reading in a loop gets); 25 ms apart, each one is made afresh.
    let fresh = (n / 20).max(10);
    println!("\n{count} running guest(s), medians of {n} back-to-back and {fresh} spaced reads:");
    println!(
        "| file | kernel | vxproc, back to back | ratio | lxcfs, back to back | ratio | kernel, spaced | vxproc, spaced (each made afresh) | ratio | lxcfs, spaced | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for file in ["meminfo", "loadavg", "stat"] {
        let kernel = read_cost(&Path::new("/proc").join(file), n, Duration::ZERO);
        let path = g.proc_dir().join(xid.to_string()).join(file);
        let hot = read_cost(&path, n, Duration::ZERO);
        let peer = lxcfs.join("proc").join(file);
        let peer_hot = read_cost(&peer, n, Duration::ZERO);
        let gap = Duration::from_millis(25);
        let kernel_cold = read_cost(&Path::new("/proc").join(file), fresh, gap);
        let cold = read_cost(&path, fresh, gap);
        let peer_cold = read_cost(&peer, fresh, gap);
        println!(
            "| /proc/{file} | {:.1} µs | {:.1} µs | {:.1}x | {:.1} µs | {:.1}x | {:.1} µs | {:.1} µs | {:.1}x | {:.1} µs | {:.1}x |",
            us(kernel),
            us(hot),
            us(hot) / us(kernel),
            us(peer_hot),
            us(peer_hot) / us(kernel),
            us(kernel_cold),
            us(cold),
            us(cold) / us(kernel_cold),
            us(peer_cold),
            us(peer_cold) / us(kernel_cold)
        );
    }
    let registry = Registry::at(&g.base.path().join("run"));
    let loads = vxproc::sampler::Loads::default();
    let passes = 20;
    let s = Instant::now();
    for _ in 0..passes {
        loads.sample(&registry);
    }
    let pass = s.elapsed() / passes;
    let pid = std::fs::read_to_string(g.proc_dir().with_extension("lock")).unwrap();
    println!(
        "load sampler: {:.2} ms per pass over {count} guest(s) (every 5 s: {:.3}% of a CPU); vxproc RSS {} kB",
        pass.as_secs_f64() * 1e3,
        pass.as_secs_f64() / 5.0 * 100.0,
        rss_kb(pid.trim())
    );
}

fn main() {
    let n = guest_root::arg("runs", 2000);
    let guests = guest_root::arg("guests", 100);
    let (base, _root) = guest_root::busybox_root("vxfs-bench-vxproc-", &["sh", "sleep"]);
    let lxcfs = Lxcfs::start(base.path());
    let mut g = Guests {
        base,
        names: Vec::new(),
    };
    g.start(41000);
    table(&g, 1, n, &lxcfs.dir);
    let s = Instant::now();
    for i in 1..guests as u32 {
        g.start(41000 + i);
    }
    println!(
        "\nstarted {} more guests in {:.1} s",
        guests - 1,
        s.elapsed().as_secs_f64()
    );
    table(&g, guests, n, &lxcfs.dir);
    // lxcfs's mount is inside the guests' directory: it goes first.
    drop(lxcfs);
    drop(g);
}

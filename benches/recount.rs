//! The mount-time recount (`cargo bench --bench recount`): what a mount
//! after a crash spends walking SOURCE, against `du -s` of the same tree.
//!
//! Builds a tree the size of the workloads harness's (20,000 files of
//! 0-8 KiB, 64 per directory, 16 subdirectories per directory: 312
//! directories), every file tagged with one of 4 contexts, in a fresh directory under
//! `$VXFS_BENCH_DIR` (default /var/tmp); then, each time with dropped
//! caches, times `du -s` and `vxfs::recount::recount` on one and on two
//! threads. Prints the median of `--runs N` (default 3) and checks that
//! the recount found every inode. Needs root (drop_caches, trusted xattrs).

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FILES: usize = 20_000;
const FILES_PER_DIR: usize = 64;
const SUBDIRS_PER_DIR: usize = 16;

/// Makes the tree under `root`; returns how many inodes it holds below
/// `root` (files and directories).
fn build(root: &Path) -> u64 {
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut next_dir = 0;
    let mut inodes = 0u64;
    let mut state = 0x7263_6f75_6e74u64;
    for i in 0..FILES {
        if i > 0 && i % FILES_PER_DIR == 0 {
            next_dir += 1;
        }
        while dirs.len() <= next_dir {
            let parent = dirs[(dirs.len() - 1) / SUBDIRS_PER_DIR].clone();
            let dir = parent.join(format!("d{}", dirs.len()));
            fs::create_dir(&dir).expect("mkdir");
            inodes += 1;
            dirs.push(dir);
        }
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let size = (state >> 33) as usize % (8 << 10);
        let path = dirs[next_dir].join(format!("f{i}"));
        fs::File::create(&path)
            .and_then(|mut f| f.write_all(&vec![b'x'; size]))
            .expect("write");
        let xid = format!("{}", 2 + (state >> 60) % 4);
        rustix::fs::setxattr(
            &path,
            "trusted.vxfs.xid",
            xid.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .expect("tag (needs root)");
        inodes += 1;
    }
    inodes
}

fn drop_caches() {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches (needs root)");
}

fn timed(mut f: impl FnMut()) -> Duration {
    drop_caches();
    let start = Instant::now();
    f();
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .expect("--runs N")
            }
            "--bench" => {}
            other => panic!("unknown argument {other} (usage: --runs N)"),
        }
    }
    let base = std::env::var_os("VXFS_BENCH_DIR").map_or_else(|| "/var/tmp".into(), PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("vxfs-bench-recount-")
        .tempdir_in(&base)
        .expect("bench dir");
    let root = dir.path().join("tree");
    fs::create_dir(&root).unwrap();
    let inodes = build(&root);
    let fd = rustix::fs::open(
        &root,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let mut du = Vec::new();
    let mut one = Vec::new();
    let mut two = Vec::new();
    for _ in 0..runs {
        du.push(timed(|| {
            let out = Command::new("du")
                .arg("-s")
                .arg(&root)
                .output()
                .expect("du");
            assert!(out.status.success(), "du: {out:?}");
        }));
        for (threads, times) in [(1, &mut one), (2, &mut two)] {
            times.push(timed(|| {
                let counts = vxfs::recount::recount(fd.as_fd(), true, threads).expect("recount");
                let found: u64 = counts.values().map(|u| u.inodes).sum();
                assert!(found >= inodes, "recount found {found} of {inodes} inodes");
            }));
        }
    }
    println!(
        "recount of {inodes} inodes ({FILES} files in {} directories, tagged), cold caches, median of {runs}:",
        inodes - FILES as u64
    );
    println!(
        "  du -s                     {:>7.3} s",
        median(du).as_secs_f64()
    );
    println!(
        "  vxfs recount, 1 thread    {:>7.3} s",
        median(one).as_secs_f64()
    );
    println!(
        "  vxfs recount, 2 threads   {:>7.3} s",
        median(two).as_secs_f64()
    );
}

//! Deduplication benchmark: `hashify` through a vxfs mount against
//! util-linux `hardlink` on a native copy of the same tree.
//!
//! Run with `cargo bench -p vxfs-tools --bench hashify [-- FLAGS]` (`-- --help`
//! lists the flags). Needs root (it mounts vxfs and writes
//! `/proc/sys/vm/drop_caches`), `/dev/fuse` and `hardlink` (util-linux).
//!
//! It builds N guest trees of F files each, sizes log-uniform between 1 KiB
//! and 1 MiB, of which a share is identical across guests (same content,
//! mode, owner and mtime) and the rest unique, twice: once in a plain
//! directory and once in a vxfs SOURCE. Then, each after
//! `sync; echo 3 > /proc/sys/vm/drop_caches`, it times `hardlink -n` and
//! `hardlink` on the plain copy, and `hashify -n`, `hashify` and a second
//! `hashify` (incremental: everything already unified) through the mount.
//! MB/s is the tree's size over the time. Under `cargo test --all-targets`
//! (no `--bench` argument) it only prints a notice.

#[path = "../tests/common/mod.rs"]
mod harness;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::{Mount, Scratch, SplitMix64};

const USAGE: &str = "\
usage: cargo bench -p vxfs-tools --bench hashify -- [FLAGS]

  --guests N        guest trees (default 3)
  --files N         files per guest (default 3000)
  --shared PCT      percentage of files identical across guests (default 80)
  --quick           smoke-sized: 3 guests x 300 files
  -h, --help        print this help

The data lives in a fresh temporary directory under $VXFS_TEST_DIR (default
/var/tmp), removed at the end. Needs root, /dev/fuse and hardlink(1).";

const HASHIFY: &str = env!("CARGO_BIN_EXE_hashify");
const SEED: u64 = 0x6861_7368_6966_7921;
const MIN_SIZE: f64 = 1024.0;
const MAX_SIZE: f64 = 1024.0 * 1024.0;
const FILES_PER_DIR: usize = 100;
/// mtime of every file, so that shared files match in metadata.
const MTIME: i64 = 1_700_000_000;

struct Config {
    guests: usize,
    files: usize,
    shared_pct: u64,
}

fn parse(args: &[String]) -> Result<Option<Config>> {
    let mut c = Config {
        guests: 3,
        files: 3000,
        shared_pct: 80,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name}: not a number"))
        };
        match a.as_str() {
            "--bench" => {}
            "--guests" => c.guests = value("--guests")? as usize,
            "--files" => c.files = value("--files")? as usize,
            "--shared" => c.shared_pct = value("--shared")?.min(100),
            "--quick" => c.files = 300,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    ensure!(c.guests >= 2 && c.files >= 1, "need 2+ guests and 1+ files");
    Ok(Some(c))
}

/// One file of the tree: where, how big, and which content.
struct FileSpec {
    rel: String,
    size: usize,
    /// Content seed: the same for a shared file in every guest.
    seed: u64,
}

/// The files of guest `g`.
fn files(c: &Config, g: usize) -> Vec<FileSpec> {
    // Sizes and sharing come from one stream, so every guest has the same
    // layout; unique files get a per-guest content seed.
    let mut rng = SplitMix64::new(SEED);
    (0..c.files)
        .map(|i| {
            let u = rng.next_u64() as f64 / u64::MAX as f64;
            let size = (MIN_SIZE * (MAX_SIZE / MIN_SIZE).powf(u)) as usize;
            let shared = rng.below(100) < c.shared_pct;
            FileSpec {
                rel: format!("usr/lib/d{:03}/f{i:05}.so", i / FILES_PER_DIR),
                size,
                seed: if shared {
                    i as u64
                } else {
                    (g as u64 + 1) << 32 | i as u64
                },
            }
        })
        .collect()
}

/// Writes guest `g`'s tree below `dir`.
fn build(c: &Config, g: usize, dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut buf = Vec::new();
    for f in files(c, g) {
        let path = dir.join(&f.rel);
        fs::create_dir_all(path.parent().unwrap())?;
        let mut rng = SplitMix64::new(f.seed ^ SEED);
        buf.clear();
        while buf.len() < f.size {
            buf.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        buf.truncate(f.size);
        let file = fs::File::create(&path)?;
        file.write_all_at(&buf, 0)?;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        let t = rustix::fs::Timespec {
            tv_sec: MTIME,
            tv_nsec: 0,
        };
        rustix::fs::futimens(
            &file,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
        )?;
        total += f.size as u64;
    }
    Ok(total)
}

fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches (needs root)")
}

/// Runs `cmd` after dropping caches; returns seconds and stdout.
fn timed(cmd: &mut Command) -> Result<(f64, String)> {
    drop_caches()?;
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().context("running")?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// A value from hardlink's summary (`Linked: 7 files`) or hashify's JSON.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| {
            text.split(',')
                .find_map(|kv| {
                    kv.trim_start_matches('{')
                        .strip_prefix(&format!("\"{key}\":"))
                })
                .unwrap_or("?")
                .to_string()
        })
}

fn run(c: &Config) -> Result<()> {
    let scratch = Scratch::new();
    let guests: Vec<String> = (0..c.guests).map(|g| format!("g{g}")).collect();
    let started = Instant::now();
    let mut bytes = 0;
    for (g, name) in guests.iter().enumerate() {
        bytes = build(c, g, &scratch.native().join(name))?;
        build(c, g, &scratch.src().join(name))?;
    }
    let total = bytes * c.guests as u64;
    println!(
        "tree: {} guests x {} files, {:.0} MB per guest, {}% shared (built in {:.1} s)",
        c.guests,
        c.files,
        bytes as f64 / 1e6,
        c.shared_pct,
        started.elapsed().as_secs_f64()
    );
    let native: Vec<_> = guests.iter().map(|g| scratch.native().join(g)).collect();
    let mount = Mount::new(&scratch.src(), &scratch.mnt(), "xid=uid/1000");
    let mounted: Vec<_> = guests.iter().map(|g| mount.path().join(g)).collect();

    let mut rows: Vec<(&str, f64, String)> = Vec::new();
    let (s, out) = timed(Command::new("hardlink").arg("-n").args(&native))?;
    rows.push(("hardlink -n (native)", s, field(&out, "Linked:")));
    let (s, out) = timed(Command::new("hardlink").args(&native))?;
    rows.push(("hardlink (native)", s, field(&out, "Linked:")));
    let hashify = |extra: &[&str]| {
        let mut cmd = Command::new(HASHIFY);
        cmd.args(["--json", "--no-progress"])
            .args(extra)
            .args(&mounted);
        timed(&mut cmd)
    };
    let (s, out) = hashify(&["-n"])?;
    rows.push(("hashify -n (vxfs)", s, field(&out, "linked") + " files"));
    let (s, out) = hashify(&[])?;
    rows.push(("hashify (vxfs)", s, field(&out, "linked") + " files"));
    let (s, out) = hashify(&[])?;
    rows.push((
        "hashify re-run (vxfs)",
        s,
        format!(
            "{} files, {} hashed",
            field(&out, "linked"),
            field(&out, "hashed")
        ),
    ));
    drop(mount);

    let mut table = String::new();
    table.push_str("| run | seconds | MB/s | linked |\n|---|---|---|---|\n");
    for (name, secs, linked) in &rows {
        table.push_str(&format!(
            "| {name} | {secs:.2} | {:.0} | {linked} |\n",
            total as f64 / 1e6 / secs.max(Duration::from_millis(1).as_secs_f64())
        ));
    }
    print!("{table}");
    std::io::stdout().flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("hashify bench: run with `cargo bench -p vxfs-tools --bench hashify`");
        return ExitCode::SUCCESS;
    }
    match parse(&args).and_then(|c| c.map_or(Ok(()), |c| run(&c))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hashify bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

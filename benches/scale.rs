//! Scale: does a vxfs operation cost the same whatever the tree's size and
//! however many mounts one daemon serves, and how much daemon memory does
//! each inode the kernels know take?
//!
//! `cargo bench --bench scale -- [--files N,N...] [--views N,N...] [--quick]`
//!
//! For each tree size: a tree of that many empty files (1000 per
//! directory) is made natively in SOURCE, mounted, and walked through the
//! mount cold (caches dropped) and warm (2 s later); then 4000 files are
//! created and removed in a new directory while the whole tree is known.
//! The daemon's table size and resident memory (its SIGUSR1 report) give
//! the bytes per known inode.
//!
//! For each number of mounts: the tree of the smallest size, mounted with
//! `xid=cgroup`, and that many guest directories mounted as views of the
//! same daemon (`xid=100+i`); the same create/remove and walk run in one
//! guest's view, where every change is checked against every other
//! mount's kernel by the watch.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

// Each bench uses its part of the shared module.
#[allow(dead_code)]
#[path = "common/mount.rs"]
mod mount;

use mount::Mount;

const USAGE: &str = "\
usage: cargo bench --bench scale -- [FLAGS]

  --files N[,N...]   tree sizes (default 16000,1000000)
  --views N[,N...]   mounts of one daemon (default 1,100)
  --vxfs-opts LIST   also mount each tree with `-o LIST`
  --quick            4000,64000 files and 1,20 mounts
  -h, --help         this text

Data lives in a temporary directory under $VXFS_BENCH_DIR (default
/var/tmp), removed at the end. Needs root and /dev/fuse.";

const FILES_PER_DIR: usize = 1000;
/// Files created and removed to time per-operation costs.
const CHURN: usize = 4000;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Config {
    files: Vec<usize>,
    views: Vec<usize>,
    /// Extra `-o` options of each tree's first mount.
    opts: String,
}

fn list(value: &str) -> Result<Vec<usize>> {
    value
        .split(',')
        .map(|v| {
            let n: usize = v
                .trim()
                .parse()
                .with_context(|| format!("not a count: {v}"))?;
            ensure!(n > 0, "counts must be positive: {v}");
            Ok(n)
        })
        .collect()
}

fn parse() -> Result<Option<Config>> {
    let mut config = Config {
        files: vec![16_000, 1_000_000],
        views: vec![1, 100],
        opts: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes --bench.
            "--bench" => {}
            "--quick" => {
                config.files = vec![4000, 64_000];
                config.views = vec![1, 20];
            }
            "--files" => config.files = list(&args.next().context("--files needs a value")?)?,
            "--views" => config.views = list(&args.next().context("--views needs a value")?)?,
            "--vxfs-opts" => config.opts = args.next().context("--vxfs-opts needs a value")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(Some(config))
}

fn run() -> Result<()> {
    let Some(config) = parse()? else {
        return Ok(());
    };
    ensure!(
        rustix::process::geteuid().is_root(),
        "the scale benchmark must run as root (it mounts and drops caches)"
    );
    let base = std::env::var_os("VXFS_BENCH_DIR").map_or_else(|| "/var/tmp".into(), PathBuf::from);
    let base = fs::canonicalize(&base)?;
    let dir = tempfile::Builder::new()
        .prefix("vxfs-scale.")
        .tempdir_in(&base)?;
    println!(
        "{:>9} {:>12} {:>12} {:>14} {:>9} {:>10} {:>11}",
        "files", "cold µs/ent", "warm µs/ent", "create+rm µs", "known", "rss MiB", "bytes/inode"
    );
    for &files in &config.files {
        let row = by_size(dir.path(), files, &config.opts)?;
        println!(
            "{files:>9} {:>12.1} {:>12.2} {:>14.1} {:>9} {:>10.1} {:>11.0}",
            row.cold_us, row.warm_us, row.churn_us, row.known, row.rss_mib, row.bytes_per_inode
        );
    }
    println!();
    println!(
        "{:>7} {:>16} {:>16} {:>14}",
        "mounts", "create+rm µs", "warm µs/entry", "rss MiB"
    );
    let files = *config.files.iter().min().unwrap_or(&16_000);
    for &views in &config.views {
        let row = by_views(dir.path(), files, views, &config.opts)?;
        println!(
            "{views:>7} {:>16.1} {:>16.2} {:>14.1}",
            row.churn_us, row.warm_us, row.rss_mib
        );
    }
    Ok(())
}

struct SizeRow {
    cold_us: f64,
    warm_us: f64,
    churn_us: f64,
    known: u64,
    rss_mib: f64,
    bytes_per_inode: f64,
}

/// One tree size.
fn by_size(base: &Path, files: usize, opts: &str) -> Result<SizeRow> {
    let work = base.join(format!("size-{files}"));
    let (src, mnt) = (work.join("src"), work.join("mnt"));
    fs::create_dir_all(&src)?;
    fs::create_dir_all(&mnt)?;
    make_tree(&src.join("t"), files)?;
    let mount = serve(&src, &mnt, opts)?;
    let before = figures(mount.path())?;
    drop_caches()?;
    let (cold, entries) = timed_walk(&mnt.join("t"))?;
    ensure!(entries >= files, "walked {entries} of {files}");
    let after = figures(mount.path())?;
    std::thread::sleep(Duration::from_secs(2));
    let (warm, _) = timed_walk(&mnt.join("t"))?;
    let churn = churn(&mnt.join("churn"))?;
    mount.unmount()?;
    fs::remove_dir_all(&work)?;
    let known = after.inodes.saturating_sub(before.inodes);
    Ok(SizeRow {
        cold_us: cold.as_secs_f64() * 1e6 / entries as f64,
        warm_us: warm.as_secs_f64() * 1e6 / entries as f64,
        churn_us: churn.as_secs_f64() * 1e6 / CHURN as f64,
        known: after.inodes,
        rss_mib: after.rss as f64 / (1 << 20) as f64,
        bytes_per_inode: after.rss.saturating_sub(before.rss) as f64 / known.max(1) as f64,
    })
}

struct ViewsRow {
    churn_us: f64,
    warm_us: f64,
    rss_mib: f64,
}

/// One daemon serving the tree and `views - 1` guests' views of it.
fn by_views(base: &Path, files: usize, views: usize, opts: &str) -> Result<ViewsRow> {
    let work = base.join(format!("views-{views}"));
    let (src, mnt) = (work.join("src"), work.join("mnt"));
    fs::create_dir_all(&mnt)?;
    let guests = views.max(1);
    for g in 0..guests {
        fs::create_dir_all(src.join(format!("g{g}")))?;
        fs::create_dir_all(work.join(format!("v{g}")))?;
    }
    make_tree(&src.join("g0/t"), files)?;
    let index = work.join("index.db");
    let mut main_opts = format!("xid=cgroup,index={}", index.display());
    if !opts.is_empty() {
        main_opts = format!("{main_opts},{opts}");
    }
    let main = serve(&src, &mnt, &main_opts)?;
    let mut joined = Vec::new();
    for g in 0..guests.saturating_sub(1) {
        let at = work.join(format!("v{}", g + 1));
        joined.push(view(
            &src.join(format!("g{}", g + 1)),
            &at,
            &format!("xid={}", 101 + g),
        )?);
    }
    // The measured guest: the last mount made, g0's view.
    let measured = view(&src.join("g0"), &work.join("v0"), "xid=100")?;
    // Every mount's kernel knows its root and the tree's mount knows g0.
    timed_walk(&mnt.join("g0/t"))?;
    timed_walk(&measured.path().join("t"))?;
    std::thread::sleep(Duration::from_secs(2));
    let (warm, entries) = timed_walk(&measured.path().join("t"))?;
    let churn = churn(&measured.path().join("churn"))?;
    let figures = figures(main.path())?;
    ensure!(
        figures.connections as usize == guests + 1,
        "{} connections, {} expected",
        figures.connections,
        guests + 1
    );
    measured.unmount()?;
    for m in joined {
        m.unmount()?;
    }
    main.unmount()?;
    fs::remove_dir_all(&work)?;
    Ok(ViewsRow {
        churn_us: churn.as_secs_f64() * 1e6 / CHURN as f64,
        warm_us: warm.as_secs_f64() * 1e6 / entries as f64,
        rss_mib: figures.rss as f64 / (1 << 20) as f64,
    })
}

/// `files` empty files, FILES_PER_DIR per directory, made natively.
fn make_tree(root: &Path, files: usize) -> Result<()> {
    for d in 0..files.div_ceil(FILES_PER_DIR) {
        let dir = root.join(format!("d{d}"));
        fs::create_dir_all(&dir)?;
        for f in 0..FILES_PER_DIR.min(files - d * FILES_PER_DIR) {
            fs::File::create(dir.join(format!("f{f}")))?;
        }
    }
    Ok(())
}

/// `lstat` of every entry under `root` (readdir per directory): the time
/// taken and the entries seen.
fn timed_walk(root: &Path) -> Result<(Duration, usize)> {
    let start = Instant::now();
    let mut entries = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            let meta = fs::symlink_metadata(&path)?;
            entries += 1;
            if meta.is_dir() {
                dirs.push(path);
            }
        }
    }
    Ok((start.elapsed(), entries))
}

/// Creates CHURN files in a new directory `dir` and removes them all.
fn churn(dir: &Path) -> Result<Duration> {
    fs::create_dir(dir)?;
    let start = Instant::now();
    for i in 0..CHURN {
        fs::File::create(dir.join(format!("c{i}")))?;
    }
    for i in 0..CHURN {
        fs::remove_file(dir.join(format!("c{i}")))?;
    }
    let took = start.elapsed();
    fs::remove_dir(dir)?;
    Ok(took)
}

fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("dropping caches")
}

/// The daemon's figures from its SIGUSR1 report.
struct Figures {
    inodes: u64,
    rss: u64,
    connections: u64,
}

/// A vxfs daemon in the foreground serving `src` at `mnt` (`-o opts`),
/// its output in `mnt.log`.
fn serve(src: &Path, mnt: &Path, opts: &str) -> Result<Mount> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vxfs"));
    command.arg(src).arg(mnt).arg("-f");
    if !opts.is_empty() {
        command.arg("-o").arg(opts);
    }
    Mount::start(command, mnt, &mnt.with_extension("log"))
}

/// A mount of `src` (`-o opts`) at `mnt` that joins the daemon already
/// serving its tree.
fn view(src: &Path, mnt: &Path, opts: &str) -> Result<Mount> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vxfs"));
    command.arg(src).arg(mnt).arg("-o").arg(opts);
    Mount::join(command, mnt, &mnt.with_extension("log"))
}

/// SIGUSR1 to the daemon serving `mnt`, then its `daemon` report.
fn figures(mnt: &Path) -> Result<Figures> {
    let dev = fs::metadata(mnt)?.dev();
    let dir = vroot::dir_for_dev(dev);
    let view: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("view.json"))?)?;
    let pid = view["pid"].as_i64().context("the daemon's pid")? as i32;
    let file = dir.join("daemon");
    let _ = fs::remove_file(&file);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).context("a pid")?,
        rustix::process::Signal::USR1,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        if let Ok(text) = fs::read_to_string(&file) {
            break text;
        }
        ensure!(Instant::now() < deadline, "no {}", file.display());
        std::thread::sleep(Duration::from_millis(20));
    };
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .with_context(|| format!("no {name} in {text:?}"))
    };
    Ok(Figures {
        inodes: field("inodes ")?,
        rss: field("rss_bytes ")?,
        connections: field("connections ")?,
    })
}

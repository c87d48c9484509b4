//! Filesystem workload benchmark: vxfs against a native directory, fuse-overlayfs,
//! mergerfs and libfuse's passthrough_hp.
//!
//! Run with `cargo bench --bench workloads [-- FLAGS]` (`-- --help` lists the flags).
//! It needs root (it mounts filesystems and writes `/proc/sys/vm/drop_caches`),
//! `/dev/fuse`, `tar`, `fuse-overlayfs` and `mergerfs` (`scripts/setup.sh` installs them)
//! and libfuse's `passthrough_hp` (`scripts/build-peers.sh` builds it).
//!
//! Every target runs the same workloads in the same order, on a fresh mount, each
//! timed right after `sync; echo 3 > /proc/sys/vm/drop_caches` (with `--runs N`,
//! N rounds over the targets and the medians are shown). All targets keep their data on
//! the same backing filesystem: a fresh temporary directory under `$VXFS_BENCH_DIR`
//! (default `/var/tmp`). The table shows seconds per workload and the throughput
//! relative to native, `native_seconds / target_seconds`, so `>1.00x` is faster.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it only prints a notice.

use std::env;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

#[path = "common/chart.rs"]
mod chart;
// Each bench uses its part of the shared module.
#[allow(dead_code)]
#[path = "common/mount.rs"]
mod mount;

use mount::{Mount, MountInfo, excerpt, mount_of};

const USAGE: &str = "\
usage: cargo bench --bench workloads -- [FLAGS]

  --quick            smoke-sized run: 2000 files, 128 MiB, 2000 random reads
  --only T[,T...]    targets to run, of: native, vxfs, vxfs-uring, vxfs-xid5,
                     vxfs-limit, fuse-overlayfs, mergerfs, passthrough_hp
                     (default: all)
  --files N          files in the untar tree (default 20000)
  --size-mib N       size of the sequential file in MiB (default 1024)
  --reads N          number of random 4 KiB reads (default 20000)
  --runs N           run everything N times, round robin, report medians (default 1)
  --vxfs-opts LIST   mount every vxfs target with `-o LIST` too
  --halt-poll NS     set the KVM guest idle driver's halt polling
                     (/sys/module/haltpoll/parameters/guest_halt_poll_ns) to NS
                     for the run, restored after (default: leave it as it is)
  --json PATH        also write the results as JSON to PATH
  --svg PATH         also draw each target's throughput relative to native (SVG)
  --replot JSON      only draw the --svg chart of an earlier run's --json file
  -h, --help         print this help

The data lives in a fresh temporary directory under $VXFS_BENCH_DIR (default
/var/tmp), removed at the end. vxfs-uring is vxfs -o io_uring=on: the run sets
/sys/module/fuse/parameters/enable_uring to Y for it and restores it after.
Needs root, /dev/fuse, tar, fuse-overlayfs and mergerfs (scripts/setup.sh), and
libfuse's passthrough_hp (scripts/build-peers.sh builds it into
target/peers/; $VXFS_PASSTHROUGH_HP names another).";

/// Seed of every pseudo-random choice, so all targets see identical data and offsets.
const SEED: u64 = 0x7678_6673_6265_6e63;
const MIB: u64 = 1 << 20;
/// Write/read unit of the sequential workloads; its first 8 bytes hold the block index.
const BLOCK: usize = 1 << 20;
const PAGE: usize = 4096;
const MAX_FILE_SIZE: usize = 8 << 10;
const FILES_PER_DIR: usize = 64;
const SUBDIRS_PER_DIR: usize = 16;
/// Top-level directory of the archive, created inside each target's root.
const TREE: &str = "tree";
const BIG_FILE: &str = "big.bin";

fn main() -> ExitCode {
    match parse_args(env::args().skip(1)).and_then(execute) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("workloads: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(invocation: Invocation) -> Result<()> {
    match invocation {
        Invocation::Help => println!("{USAGE}"),
        Invocation::NotBench => eprintln!(
            "workloads: no --bench argument, not benchmarking \
             (run `cargo bench --bench workloads`, or pass --bench)"
        ),
        Invocation::Run(config) => run(&config)?,
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Command line

#[derive(Debug)]
enum Invocation {
    Help,
    NotBench,
    Run(Config),
}

#[derive(Debug)]
struct Config {
    targets: Vec<TargetKind>,
    params: Params,
    /// Times every target runs the whole workload set; the median is reported.
    runs: usize,
    vxfs_opts: Option<String>,
    /// `--halt-poll NS`.
    halt_poll: Option<u64>,
    json: Option<PathBuf>,
    /// `--svg PATH`.
    svg: Option<PathBuf>,
    /// Draw the chart of an earlier run's JSON instead of running.
    replot: Option<PathBuf>,
}

/// Workload sizes.
#[derive(Clone, Copy, Debug)]
struct Params {
    files: usize,
    size_mib: u64,
    reads: u64,
}

impl Params {
    const FULL: Params = Params {
        files: 20_000,
        size_mib: 1024,
        reads: 20_000,
    };
    const QUICK: Params = Params {
        files: 2_000,
        size_mib: 128,
        reads: 2_000,
    };
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Invocation> {
    let mut args = args.into_iter();
    let (mut bench, mut quick) = (false, false);
    let (mut files, mut size_mib, mut reads) = (None, None, None);
    let mut targets = TargetKind::ALL.to_vec();
    let (mut runs, mut vxfs_opts, mut json, mut svg) = (1, None, None, None);
    let (mut replot, mut halt_poll) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => bench = true,
            "--quick" => quick = true,
            "--only" => targets = parse_targets(&flag_value(&mut args, &arg)?)?,
            "--files" => files = Some(positive(&flag_value(&mut args, &arg)?, &arg)?),
            "--size-mib" => size_mib = Some(positive(&flag_value(&mut args, &arg)?, &arg)?),
            "--reads" => reads = Some(positive(&flag_value(&mut args, &arg)?, &arg)?),
            "--runs" => runs = positive(&flag_value(&mut args, &arg)?, &arg)?,
            "--vxfs-opts" => vxfs_opts = Some(flag_value(&mut args, &arg)?),
            "--halt-poll" => halt_poll = Some(number(&flag_value(&mut args, &arg)?, &arg)?),
            "--json" => json = Some(PathBuf::from(flag_value(&mut args, &arg)?)),
            "--svg" => svg = Some(PathBuf::from(flag_value(&mut args, &arg)?)),
            "--replot" => replot = Some(PathBuf::from(flag_value(&mut args, &arg)?)),
            "-h" | "--help" => return Ok(Invocation::Help),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    if !bench {
        return Ok(Invocation::NotBench);
    }
    let preset = if quick { Params::QUICK } else { Params::FULL };
    let params = Params {
        files: files.unwrap_or(preset.files),
        size_mib: size_mib.unwrap_or(preset.size_mib),
        reads: reads.unwrap_or(preset.reads),
    };
    Ok(Invocation::Run(Config {
        targets,
        params,
        runs,
        vxfs_opts,
        halt_poll,
        json,
        svg,
        replot,
    }))
}

fn flag_value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String> {
    args.next()
        .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
}

fn positive<T: std::str::FromStr + Default + PartialEq>(value: &str, flag: &str) -> Result<T> {
    let number = value.parse::<T>().ok().filter(|n| *n != T::default());
    number.with_context(|| format!("{flag} needs a positive integer, got `{value}`"))
}

/// A non-negative integer flag value.
fn number(value: &str, flag: &str) -> Result<u64> {
    let number = value.parse::<u64>().ok();
    number.with_context(|| format!("{flag} needs a non-negative integer, got `{value}`"))
}

/// Parses `--only`; the targets always run in the canonical order, native first.
fn parse_targets(list: &str) -> Result<Vec<TargetKind>> {
    let wanted = list
        .split(',')
        .map(TargetKind::parse)
        .collect::<Result<Vec<_>>>()?;
    Ok(TargetKind::ALL
        .into_iter()
        .filter(|kind| wanted.contains(kind))
        .collect())
}

// ---------------------------------------------------------------------------
// The run

/// Draws each target's throughput relative to native as an SVG at `path`.
fn write_chart(results: &[TargetResult], runs: usize, path: &Path) -> Result<()> {
    let targets: Vec<&TargetResult> = results
        .iter()
        .filter(|r| r.kind != TargetKind::Native)
        .collect();
    let names: Vec<&str> = targets.iter().map(|r| r.kind.name()).collect();
    let groups: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
    let values: Vec<Vec<Option<f64>>> = (0..WORKLOADS.len())
        .map(|i| {
            targets
                .iter()
                .map(|r| relative(results, i, r.times[i].as_secs_f64()))
                .collect()
        })
        .collect();
    let svg = chart::bars(
        &format!("Throughput relative to native, higher is faster ({runs} runs, medians)"),
        "native s / target s",
        &groups,
        &names,
        &values,
        Some(1.0),
    );
    fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `--replot JSON`: the chart of an earlier run's `--json` results.
fn replot(json: &Path, svg: &Path) -> Result<()> {
    let text = fs::read(json).with_context(|| format!("reading {}", json.display()))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", json.display()))?;
    let runs = doc["runs"].as_u64().context("no `runs` in the results")? as usize;
    let rows = doc["results"].as_array().context("no `results` array")?;
    let mut results: Vec<TargetResult> = Vec::new();
    for row in rows {
        let kind = TargetKind::parse(row["target"].as_str().context("a result without target")?)?;
        let workload = row["workload"]
            .as_str()
            .context("a result without workload")?;
        let index = WORKLOADS
            .iter()
            .position(|w| w.name == workload)
            .with_context(|| format!("unknown workload {workload}"))?;
        let seconds = row["seconds"]
            .as_f64()
            .context("a result without seconds")?;
        if !results.iter().any(|r| r.kind == kind) {
            results.push(TargetResult {
                kind,
                times: vec![Duration::ZERO; WORKLOADS.len()],
            });
        }
        let result = results
            .iter_mut()
            .find(|r| r.kind == kind)
            .context("just added")?;
        result.times[index] = Duration::from_secs_f64(seconds);
    }
    write_chart(&results, runs, svg)
}

fn run(config: &Config) -> Result<()> {
    if let Some(json) = &config.replot {
        let svg = config.svg.as_deref().context("--replot needs --svg PATH")?;
        return replot(json, svg);
    }
    preflight(config)?;
    let bench_dir = create_bench_dir()?;
    let environment = Environment::probe(bench_dir.path())?;
    check_free_space(bench_dir.path(), &config.params)?;
    let plan = Plan::build(bench_dir.path(), config.params)?;
    let _uring = config
        .targets
        .contains(&TargetKind::VxfsUring)
        .then(|| {
            let hint = "this kernel has no FUSE-over-io_uring (leave out vxfs-uring)";
            ParamSwitch::set(ENABLE_URING, "Y", hint)
        })
        .transpose()?;
    let _halt_poll = config
        .halt_poll
        .map(|ns| {
            let hint =
                "this machine's idle driver is not haltpoll (a KVM guest's; leave out --halt-poll)";
            ParamSwitch::set(HALT_POLL_NS, &ns.to_string(), hint)
        })
        .transpose()?;
    print_header(&environment, &plan, config);
    let results = run_targets(&plan, bench_dir.path(), config)?;
    print_table(&results);
    if let Some(path) = &config.json {
        let json = results_json(&environment, &plan, config, &results);
        fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    if let Some(path) = &config.svg {
        write_chart(&results, config.runs, path)?;
    }
    Ok(())
}

/// A module parameter set for the run and put back as it was on drop: the
/// fuse module's `enable_uring` (for vxfs-uring), haltpoll's
/// `guest_halt_poll_ns` (`--halt-poll`).
struct ParamSwitch {
    path: &'static str,
    was: String,
}

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";
const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

impl ParamSwitch {
    /// Sets `path` to `value`; `hint` says what a missing file means.
    fn set(path: &'static str, value: &str, hint: &str) -> Result<Self> {
        let was = fs::read_to_string(path).with_context(|| format!("{path}: {hint}"))?;
        fs::write(path, value).with_context(|| format!("setting {path} to {value}"))?;
        Ok(ParamSwitch {
            path,
            was: was.trim().to_owned(),
        })
    }
}

impl Drop for ParamSwitch {
    fn drop(&mut self) {
        if let Err(e) = fs::write(self.path, &self.was) {
            eprintln!("workloads: restoring {} to {}: {e}", self.path, self.was);
        }
    }
}

/// Fails early, with a hint, when something the selected targets need is missing.
fn preflight(config: &Config) -> Result<()> {
    // Checked now, not after the run: cargo runs benches in the package's
    // directory, so a relative path is easily meant for another.
    for out in [&config.json, &config.svg].into_iter().flatten() {
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
        ensure!(
            parent.is_none_or(Path::is_dir),
            "{}: no such directory (the bench runs in {}; give an absolute path)",
            out.display(),
            env::current_dir().map_or_else(|_| "?".into(), |d| d.display().to_string())
        );
    }
    ensure!(
        rustix::process::geteuid().is_root(),
        "the workloads benchmark must run as root: it mounts filesystems and writes \
         /proc/sys/vm/drop_caches"
    );
    ensure!(
        find_program("tar").is_some(),
        "`tar` not found in PATH (apt-get install tar)"
    );
    let wants = |kind| config.targets.contains(&kind);
    if config.targets.iter().any(|k| *k != TargetKind::Native) {
        ensure!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: load the module with `modprobe fuse` (in a container, \
             pass the device in, e.g. `--device /dev/fuse`), or run only `--only native`"
        );
    }
    for (kind, program) in [
        (TargetKind::FuseOverlayfs, "fuse-overlayfs"),
        (TargetKind::Mergerfs, "mergerfs"),
    ] {
        ensure!(
            !wants(kind) || find_program(program).is_some(),
            "{program} is not installed (not in PATH): install it with \
             `apt-get install {program}`, or leave it out with `--only native,vxfs`"
        );
    }
    if wants(TargetKind::PassthroughHp) {
        passthrough_hp()?;
    }
    Ok(())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

fn create_bench_dir() -> Result<tempfile::TempDir> {
    let base =
        env::var_os("VXFS_BENCH_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    // Canonical, so that the mount points match /proc/self/mountinfo.
    let base = fs::canonicalize(&base).with_context(|| format!("bench dir {}", base.display()))?;
    tempfile::Builder::new()
        .prefix("vxfs-bench.")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))
}

/// Each target is removed before the next starts, so one target's worth (plus the
/// archive) must fit; small files take whole blocks, hence the generous estimate.
fn check_free_space(dir: &Path, params: &Params) -> Result<()> {
    let stat = rustix::fs::statvfs(dir).context("statvfs of the bench dir")?;
    let available = stat.f_bavail * stat.f_frsize;
    let needed = params.size_mib * MIB + params.files as u64 * 3 * MAX_FILE_SIZE as u64;
    ensure!(
        available >= needed,
        "{} has {} MiB free, the benchmark needs about {} MiB: set VXFS_BENCH_DIR \
         elsewhere, or lower --size-mib / --files",
        dir.display(),
        available / MIB,
        needed / MIB
    );
    Ok(())
}

/// Runs every target `config.runs` times, round robin so that drift over time
/// (other load, the host's caches) hits all targets alike, and keeps the medians.
fn run_targets(plan: &Plan, bench_dir: &Path, config: &Config) -> Result<Vec<TargetResult>> {
    let mut samples = vec![Vec::new(); config.targets.len()];
    for run in 1..=config.runs {
        if config.runs > 1 {
            eprintln!("run {run} of {}", config.runs);
        }
        for (&kind, samples) in config.targets.iter().zip(&mut samples) {
            samples.push(run_target(kind, plan, bench_dir, config)?);
        }
    }
    let results = config.targets.iter().zip(samples);
    Ok(results
        .map(|(&kind, samples)| TargetResult {
            kind,
            times: medians(&samples),
        })
        .collect())
}

/// Per workload, the median over `samples` (one `Vec` of workload times per run).
fn medians(samples: &[Vec<Duration>]) -> Vec<Duration> {
    let median = |workload: usize| {
        let mut times: Vec<Duration> = samples.iter().map(|times| times[workload]).collect();
        times.sort_unstable();
        times[times.len() / 2]
    };
    (0..WORKLOADS.len()).map(median).collect()
}

fn run_target(
    kind: TargetKind,
    plan: &Plan,
    bench_dir: &Path,
    config: &Config,
) -> Result<Vec<Duration>> {
    let target = Target::setup(kind, bench_dir, config.vxfs_opts.as_deref())
        .with_context(|| format!("setting up target {}", kind.name()))?;
    let times = WORKLOADS
        .iter()
        .map(|workload| workload.measure(plan, &target))
        .collect::<Result<Vec<_>>>();
    // Tear down even when a workload failed; report the workload's error first.
    let teardown = target
        .teardown()
        .with_context(|| format!("tearing down target {}", kind.name()));
    if let (Err(_), Err(error)) = (&times, &teardown) {
        eprintln!("workloads: {error:#}");
    }
    let times = times?;
    teardown?;
    Ok(times)
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries and inodes.
fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("writing /proc/sys/vm/drop_caches")
}

/// Runs `command` to completion; on failure the error quotes its stderr.
fn run_command(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "{command:?} failed ({}){}",
        output.status,
        excerpt("stderr", &stderr)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Targets

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TargetKind {
    Native,
    Vxfs,
    /// Requests through FUSE-over-io_uring.
    VxfsUring,
    /// Tagging on: every request is context 5.
    VxfsXid5,
    /// Context 5 with a space and inode limit set (never reached): every
    /// write and every new inode is checked against it.
    VxfsLimit,
    FuseOverlayfs,
    Mergerfs,
    PassthroughHp,
}

impl TargetKind {
    const ALL: [TargetKind; 8] = [
        TargetKind::Native,
        TargetKind::Vxfs,
        TargetKind::VxfsUring,
        TargetKind::VxfsXid5,
        TargetKind::VxfsLimit,
        TargetKind::FuseOverlayfs,
        TargetKind::Mergerfs,
        TargetKind::PassthroughHp,
    ];

    fn name(self) -> &'static str {
        match self {
            TargetKind::Native => "native",
            TargetKind::Vxfs => "vxfs",
            TargetKind::VxfsUring => "vxfs-uring",
            TargetKind::VxfsXid5 => "vxfs-xid5",
            TargetKind::VxfsLimit => "vxfs-limit",
            TargetKind::FuseOverlayfs => "fuse-overlayfs",
            TargetKind::Mergerfs => "mergerfs",
            TargetKind::PassthroughHp => "passthrough_hp",
        }
    }

    /// The `-o` options of a vxfs target (before `--vxfs-opts`).
    fn vxfs_options(self) -> Option<&'static str> {
        match self {
            TargetKind::Vxfs => Some("io_uring=off"),
            TargetKind::VxfsUring => Some("io_uring=on"),
            TargetKind::VxfsXid5 | TargetKind::VxfsLimit => Some("xid=5"),
            _ => None,
        }
    }

    /// One line for the header: what exactly this target runs.
    fn describe(self, config: &Config) -> String {
        match self {
            TargetKind::Native => "plain directory on the backing fs".to_owned(),
            TargetKind::Vxfs
            | TargetKind::VxfsUring
            | TargetKind::VxfsXid5
            | TargetKind::VxfsLimit => {
                let opts = vxfs_options_of(self, config.vxfs_opts.as_deref());
                let opts = opts.map(|opts| format!(" -o {opts}"));
                let limit = if self == TargetKind::VxfsLimit {
                    format!("; context 5 limited to {LIMIT_GIB} GiB and {LIMIT_INODES} inodes")
                } else {
                    String::new()
                };
                format!(
                    "{} SOURCE MNT -f{}{limit}",
                    env!("CARGO_BIN_EXE_vxfs"),
                    opts.unwrap_or_default()
                )
            }
            TargetKind::FuseOverlayfs => {
                let version = fuse_overlayfs_version();
                format!("{version}; -f, empty lowerdir, writes go to upperdir")
            }
            TargetKind::Mergerfs => format!("{}; -f, one branch, its defaults", mergerfs_version()),
            TargetKind::PassthroughHp => match passthrough_hp() {
                Ok(program) => format!("{}; --foreground, its defaults", program.display()),
                Err(e) => format!("{e:#}"),
            },
        }
    }

    fn parse(name: &str) -> Result<Self> {
        let kind = TargetKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name.trim());
        kind.with_context(|| {
            let known: Vec<&str> = TargetKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown target `{name}` (known: {})", known.join(", "))
        })
    }
}

/// A directory the workloads run in, and the FUSE mount that serves it, if any.
#[derive(Debug)]
struct Target {
    kind: TargetKind,
    /// Everything the target owns on the backing filesystem.
    dir: PathBuf,
    root: PathBuf,
    mount: Option<Mount>,
}

impl Target {
    fn setup(kind: TargetKind, bench_dir: &Path, vxfs_opts: Option<&str>) -> Result<Self> {
        let dir = bench_dir.join(kind.name());
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if kind == TargetKind::Native {
            let root = make_dir(&dir, "root")?;
            return Ok(Target {
                kind,
                dir,
                root,
                mount: None,
            });
        }
        let root = make_dir(&dir, "mnt")?;
        let daemon = match kind {
            TargetKind::FuseOverlayfs => fuse_overlayfs_command(&dir, &root)?,
            TargetKind::Mergerfs => mergerfs_command(&dir, &root)?,
            TargetKind::PassthroughHp => passthrough_hp_command(&dir, &root)?,
            _ => vxfs_command(&dir, &root, vxfs_options_of(kind, vxfs_opts).as_deref())?,
        };
        let mount = Mount::start(daemon, &root, &dir.join("daemon.log"))?;
        if kind.vxfs_options().is_some() {
            let dev = fs::metadata(&root)?.dev();
            let file = vroot::dir_for_dev(dev).join("transport");
            let transport =
                fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let transport = transport.trim();
            ensure!(
                kind != TargetKind::VxfsUring || transport == "io_uring",
                "vxfs-uring serves through {transport} (see {})",
                dir.join("daemon.log").display()
            );
            // Once per target (every run sets them up again).
            let mut shown = TRANSPORT_SHOWN.lock().unwrap_or_else(|e| e.into_inner());
            if !shown.contains(&kind.name()) {
                shown.push(kind.name());
                println!("  {}: requests through {transport}", kind.name());
            }
        }
        if kind == TargetKind::VxfsLimit {
            set_limit(&root).context("setting context 5's limits")?;
        }
        Ok(Target {
            kind,
            dir,
            root,
            mount: Some(mount),
        })
    }

    fn root(&self) -> &Path {
        &self.root
    }

    /// Unmounts (waiting for the daemon to exit cleanly) and removes the target's data.
    fn teardown(mut self) -> Result<()> {
        if let Some(mount) = self.mount.take() {
            mount.unmount()?;
        }
        fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }
}

fn make_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    let dir = parent.join(name);
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `vxfs SOURCE MOUNTPOINT -f [-o OPTS]`.
fn vxfs_command(dir: &Path, mountpoint: &Path, opts: Option<&str>) -> Result<Command> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vxfs"));
    command
        .arg(make_dir(dir, "source")?)
        .arg(mountpoint)
        .arg("-f");
    if let Some(opts) = opts {
        command.arg("-o").arg(opts);
    }
    Ok(command)
}

/// The vxfs targets whose transport was printed.
static TRANSPORT_SHOWN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

/// The limits of the `vxfs-limit` target: far above what a run writes.
const LIMIT_GIB: u64 = 64;
const LIMIT_INODES: u64 = 10_000_000;

/// A vxfs target's options: its own, then `--vxfs-opts`.
fn vxfs_options_of(kind: TargetKind, extra: Option<&str>) -> Option<String> {
    let own = kind.vxfs_options().unwrap_or_default();
    let all: Vec<&str> = [own, extra.unwrap_or_default()]
        .into_iter()
        .filter(|o| !o.is_empty())
        .collect();
    (!all.is_empty()).then(|| all.join(","))
}

/// Sets context 5's limits through the admin socket of the mount at `mnt`.
fn set_limit(mnt: &Path) -> Result<()> {
    let dir = vroot::socket_dir(mnt)?;
    let mut admin = vroot::Client::connect(&dir.join("admin.sock"))?;
    let set = vroot::Request::Set {
        xid: 5,
        space_total: vroot::Field::Value(LIMIT_GIB << 20),
        inodes_total: vroot::Field::Value(LIMIT_INODES),
        reserved: None,
    };
    admin.call(&set)?;
    Ok(())
}

/// Its version line, e.g. `mergerfs version: 2.33.5`.
fn mergerfs_version() -> String {
    let output = Command::new("mergerfs").arg("--version").output();
    let stdout = output.map_or_else(|_| Vec::new(), |output| output.stdout);
    let stdout = String::from_utf8_lossy(&stdout);
    let version = stdout.lines().find(|line| line.starts_with("mergerfs"));
    version.unwrap_or("mergerfs version unknown").to_owned()
}

/// mergerfs over one branch, with its defaults; `-f` keeps it our child.
fn mergerfs_command(dir: &Path, mountpoint: &Path) -> Result<Command> {
    let branch = make_dir(dir, "branch")?;
    let mut command = Command::new("mergerfs");
    command.arg("-f").arg(branch).arg(mountpoint);
    Ok(command)
}

/// libfuse's `example/passthrough_hp`: `$VXFS_PASSTHROUGH_HP`, else what
/// `scripts/build-peers.sh` built, else one in PATH.
fn passthrough_hp() -> Result<PathBuf> {
    if let Some(program) = env::var_os("VXFS_PASSTHROUGH_HP") {
        let program = PathBuf::from(program);
        ensure!(
            program.is_file(),
            "VXFS_PASSTHROUGH_HP={}: no such file",
            program.display()
        );
        return Ok(program);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/passthrough_hp");
    if built.is_file() {
        return Ok(fs::canonicalize(&built).unwrap_or(built));
    }
    find_program("passthrough_hp").context(
        "libfuse's passthrough_hp is not built: run `scripts/build-peers.sh` (as root), \
         or leave it out with `--only native,vxfs`",
    )
}

/// passthrough_hp over a plain directory, with its defaults (attribute and
/// entry timeouts of a day, splice, libfuse's multi-threaded loop);
/// `--foreground` keeps it our child. Paths absolute: it changes directory.
fn passthrough_hp_command(dir: &Path, mountpoint: &Path) -> Result<Command> {
    let source = make_dir(dir, "source")?;
    let mut command = Command::new(passthrough_hp()?);
    command.arg("--foreground").arg(source).arg(mountpoint);
    Ok(command)
}

/// Its `--version` line, e.g. `fuse-overlayfs: version 1.10`.
fn fuse_overlayfs_version() -> String {
    let output = Command::new("fuse-overlayfs").arg("--version").output();
    let stdout = output.map_or_else(|_| Vec::new(), |output| output.stdout);
    let stdout = String::from_utf8_lossy(&stdout);
    let version = stdout
        .lines()
        .find(|line| line.starts_with("fuse-overlayfs"));
    version
        .unwrap_or("fuse-overlayfs: version unknown")
        .to_owned()
}

/// fuse-overlayfs over an empty lowerdir, so every write lands in upperdir. `-f`
/// keeps it in the foreground: it stays our child and can be killed if need be.
fn fuse_overlayfs_command(dir: &Path, mountpoint: &Path) -> Result<Command> {
    let [lower, upper, work] = ["lower", "upper", "work"].map(|name| make_dir(dir, name));
    let (lower, upper, work) = (lower?, upper?, work?);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    ensure!(
        !dir.to_string_lossy().contains([',', ':']),
        "fuse-overlayfs cannot take paths with ',' or ':': {}",
        dir.display()
    );
    let mut command = Command::new("fuse-overlayfs");
    command.arg("-f").arg("-o").arg(opts).arg(mountpoint);
    Ok(command)
}

// ---------------------------------------------------------------------------
// Environment and data

#[derive(Debug)]
struct Environment {
    kernel: String,
    backing: MountInfo,
    bench_dir: PathBuf,
}

impl Environment {
    fn probe(bench_dir: &Path) -> Result<Self> {
        let kernel = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        Ok(Environment {
            kernel,
            backing: mount_of(bench_dir)?,
            bench_dir: bench_dir.to_owned(),
        })
    }
}

/// What every target is given, built once per run.
#[derive(Debug)]
struct Plan {
    params: Params,
    tree: Tree,
    /// Contents of every sequential block, but for the block index in its first 8 bytes.
    block: Vec<u8>,
}

impl Plan {
    fn build(bench_dir: &Path, params: Params) -> Result<Self> {
        let tree = Tree::write_archive(&bench_dir.join("tree.tar"), params.files)?;
        let mut block = vec![0; BLOCK];
        SplitMix64(SEED).fill(&mut block);
        Ok(Plan {
            params,
            tree,
            block,
        })
    }

    /// Pages (4 KiB) in the sequential file.
    fn pages(&self) -> u64 {
        self.params.size_mib * (BLOCK / PAGE) as u64
    }
}

/// The small-file tree, as a tar archive of `tree/tNNN/sNN/fNNNNN.dat` files of
/// 0 to 8 KiB, 64 to a directory, 16 directories to a top-level directory.
#[derive(Debug)]
struct Tree {
    archive: PathBuf,
    archive_bytes: u64,
    files: usize,
    dirs: usize,
    file_bytes: u64,
}

impl Tree {
    fn write_archive(path: &Path, files: usize) -> Result<Self> {
        let mut rng = SplitMix64(SEED);
        let mut pool = vec![0; 2 * MAX_FILE_SIZE];
        rng.fill(&mut pool);
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut tar = TarWriter::new(BufWriter::new(file));
        tar.directory(TREE)?;
        let (mut dirs, mut file_bytes) = (0, 0);
        for (index, dir) in (0..files.div_ceil(FILES_PER_DIR)).map(|index| (index, leaf_dir(index)))
        {
            if index % SUBDIRS_PER_DIR == 0 {
                tar.directory(dir.rsplit_once('/').map_or(TREE, |(top, _)| top))?;
                dirs += 1;
            }
            tar.directory(&dir)?;
            dirs += 1;
            for number in index * FILES_PER_DIR..files.min((index + 1) * FILES_PER_DIR) {
                let start = rng.below(MAX_FILE_SIZE as u64 + 1) as usize;
                let size = rng.below(MAX_FILE_SIZE as u64 + 1) as usize;
                tar.file(
                    &format!("{dir}/f{number:05}.dat"),
                    &pool[start..start + size],
                )?;
                file_bytes += size as u64;
            }
        }
        tar.finish()?;
        let archive_bytes = fs::metadata(path)?.len();
        Ok(Tree {
            archive: path.to_owned(),
            archive_bytes,
            files,
            dirs,
            file_bytes,
        })
    }

    /// Entries below `tree/`: what a full walk must find.
    fn entries(&self) -> usize {
        self.files + self.dirs
    }
}

fn leaf_dir(index: usize) -> String {
    format!(
        "{TREE}/t{:03}/s{:02}",
        index / SUBDIRS_PER_DIR,
        index % SUBDIRS_PER_DIR
    )
}

/// Just enough of the ustar format for directories and regular files.
#[derive(Debug)]
struct TarWriter<W: Write> {
    out: W,
    owner: (u32, u32),
}

impl<W: Write> TarWriter<W> {
    fn new(out: W) -> Self {
        let owner = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        TarWriter { out, owner }
    }

    fn directory(&mut self, name: &str) -> Result<()> {
        let header = self.header(&format!("{name}/"), 0o755, 0, b'5')?;
        Ok(self.out.write_all(&header)?)
    }

    fn file(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let header = self.header(name, 0o644, data.len() as u64, b'0')?;
        self.out.write_all(&header)?;
        self.out.write_all(data)?;
        let padding = data.len().next_multiple_of(512) - data.len();
        Ok(self.out.write_all(&[0; 512][..padding])?)
    }

    /// Two zero blocks end the archive.
    fn finish(mut self) -> Result<()> {
        self.out.write_all(&[0; 1024])?;
        Ok(self.out.flush()?)
    }

    fn header(&self, name: &str, mode: u32, size: u64, kind: u8) -> Result<[u8; 512]> {
        ensure!(name.len() < 100, "tar name too long: {name}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        put_octal(&mut header[100..108], mode.into());
        put_octal(&mut header[108..116], self.owner.0.into());
        put_octal(&mut header[116..124], self.owner.1.into());
        put_octal(&mut header[124..136], size);
        put_octal(&mut header[136..148], 1_700_000_000);
        header[156] = kind;
        header[257..265].copy_from_slice(b"ustar\x0000");
        // The checksum is computed with its own field as spaces.
        header[148..156].fill(b' ');
        let checksum = header.iter().map(|&byte| u64::from(byte)).sum();
        put_octal(&mut header[148..155], checksum);
        Ok(header)
    }
}

/// Zero-padded octal digits and a NUL terminator, filling `field`.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:0width$o}", width = field.len() - 1);
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    field[digits.len()] = 0;
}

/// splitmix64 (Steele, Lea, Flood): tiny, seedable, good enough for test data.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound` (the modulo bias is negligible here).
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------
// Workloads

/// One timed step. Workloads run in table order on each target, and each checks
/// what it saw, so a wrong filesystem fails instead of looking fast.
#[derive(Debug)]
struct Workload {
    name: &'static str,
    run: fn(&Plan, &Path) -> Result<()>,
    /// Run once untimed first, then [`WARM_PAUSE`] later timed, caches
    /// kept: what a second `find` or `du` of the same tree costs.
    warm: bool,
}

/// How long a warm workload waits after its untimed run: longer than a
/// FUSE daemon's usual 1 s cache timeouts.
const WARM_PAUSE: Duration = Duration::from_secs(2);

const WORKLOADS: [Workload; 8] = [
    Workload {
        name: "untar",
        run: untar,
        warm: false,
    },
    Workload {
        name: "stat-walk",
        run: stat_walk,
        warm: false,
    },
    Workload {
        name: "stat-warm",
        run: stat_walk,
        warm: true,
    },
    Workload {
        name: "read-back",
        run: read_back,
        warm: false,
    },
    Workload {
        name: "seq-write",
        run: seq_write,
        warm: false,
    },
    Workload {
        name: "seq-read",
        run: seq_read,
        warm: false,
    },
    Workload {
        name: "rand-read",
        run: rand_read,
        warm: false,
    },
    Workload {
        name: "rm-rf",
        run: remove_tree,
        warm: false,
    },
];

impl Workload {
    /// Drops the caches, then times the workload on the target's root.
    fn measure(&self, plan: &Plan, target: &Target) -> Result<Duration> {
        if self.warm {
            (self.run)(plan, target.root()).with_context(|| format!("workload {}", self.name))?;
            thread::sleep(WARM_PAUSE);
        } else {
            drop_caches()?;
        }
        let start = Instant::now();
        (self.run)(plan, target.root()).with_context(|| format!("workload {}", self.name))?;
        let elapsed = start.elapsed();
        eprintln!(
            "  {:<16} {:<10} {:>9.3} s",
            target.kind.name(),
            self.name,
            elapsed.as_secs_f64()
        );
        Ok(elapsed)
    }
}

/// `tar -xf tree.tar -C ROOT`: creates, writes, chowns, chmods and utimes every entry.
fn untar(plan: &Plan, root: &Path) -> Result<()> {
    run_command(
        Command::new("tar")
            .arg("-xf")
            .arg(&plan.tree.archive)
            .arg("-C")
            .arg(root),
    )
}

/// `lstat` of every entry of the tree.
fn stat_walk(plan: &Plan, root: &Path) -> Result<()> {
    let mut entries = 0;
    walk(&root.join(TREE), &mut |path, _| {
        fs::symlink_metadata(path).with_context(|| format!("lstat {}", path.display()))?;
        entries += 1;
        Ok(())
    })?;
    ensure!(
        entries == plan.tree.entries(),
        "found {entries} entries, expected {}",
        plan.tree.entries()
    );
    Ok(())
}

/// Reads every file of the tree to the end.
fn read_back(plan: &Plan, root: &Path) -> Result<()> {
    let mut buf = vec![0; 64 << 10];
    let (mut files, mut bytes) = (0, 0);
    walk(&root.join(TREE), &mut |path, file_type| {
        if file_type.is_file() {
            bytes += read_to_end(path, &mut buf)?;
            files += 1;
        }
        Ok(())
    })?;
    let tree = &plan.tree;
    ensure!(
        (files, bytes) == (tree.files, tree.file_bytes),
        "read {files} files of {bytes} bytes, expected {} files of {} bytes",
        tree.files,
        tree.file_bytes
    );
    Ok(())
}

/// `rm -rf tree`, in process.
fn remove_tree(_: &Plan, root: &Path) -> Result<()> {
    let tree = root.join(TREE);
    fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    ensure!(
        !tree.exists(),
        "{} still exists after removal",
        tree.display()
    );
    Ok(())
}

/// Writes the sequential file in 1 MiB blocks, then `fsync`s it.
fn seq_write(plan: &Plan, root: &Path) -> Result<()> {
    let mut file = File::create(root.join(BIG_FILE))?;
    let mut block = plan.block.clone();
    for index in 0..plan.params.size_mib {
        block[..8].copy_from_slice(&index.to_le_bytes());
        file.write_all(&block)?;
    }
    Ok(file.sync_all()?)
}

/// Reads the sequential file back in 1 MiB blocks, checking each block's index.
fn seq_read(plan: &Plan, root: &Path) -> Result<()> {
    let mut file = File::open(root.join(BIG_FILE))?;
    let mut block = vec![0; BLOCK];
    for index in 0..plan.params.size_mib {
        file.read_exact(&mut block)
            .with_context(|| format!("reading block {index}"))?;
        ensure!(
            block[..8] == index.to_le_bytes(),
            "block {index} holds the wrong data"
        );
    }
    ensure!(
        file.read(&mut block)? == 0,
        "{BIG_FILE} is longer than written"
    );
    Ok(())
}

/// `pread`s of 4 KiB at random page-aligned offsets, checking the data.
fn rand_read(plan: &Plan, root: &Path) -> Result<()> {
    let file = File::open(root.join(BIG_FILE))?;
    let mut rng = SplitMix64(SEED.rotate_left(32));
    let mut page = [0; PAGE];
    for _ in 0..plan.params.reads {
        let offset = rng.below(plan.pages()) * PAGE as u64;
        file.read_exact_at(&mut page, offset)
            .with_context(|| format!("pread at {offset}"))?;
        ensure!(
            page_is_intact(plan, offset, &page),
            "wrong data at offset {offset}"
        );
    }
    Ok(())
}

/// Whether `page`, read at `offset` of the sequential file, holds what `seq_write` wrote.
fn page_is_intact(plan: &Plan, offset: u64, page: &[u8]) -> bool {
    let within = (offset % BLOCK as u64) as usize;
    let expected = &plan.block[within..within + PAGE];
    if within == 0 {
        page[..8] == (offset / BLOCK as u64).to_le_bytes() && page[8..] == expected[8..]
    } else {
        page == expected
    }
}

/// Visits every entry below `dir`, depth first, without following symlinks. The
/// file type comes from the directory entry, so the walk itself does no `stat`.
fn walk(dir: &Path, visit: &mut impl FnMut(&Path, fs::FileType) -> Result<()>) -> Result<()> {
    for entry in
        fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?
    {
        let entry = entry?;
        let (path, file_type) = (entry.path(), entry.file_type()?);
        visit(&path, file_type)?;
        if file_type.is_dir() {
            walk(&path, visit)?;
        }
    }
    Ok(())
}

fn read_to_end(path: &Path, buf: &mut [u8]) -> Result<u64> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut total = 0;
    loop {
        match file
            .read(buf)
            .with_context(|| format!("reading {}", path.display()))?
        {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

// ---------------------------------------------------------------------------
// Report

#[derive(Debug)]
struct TargetResult {
    kind: TargetKind,
    /// One per entry of [`WORKLOADS`]: the median over the runs.
    times: Vec<Duration>,
}

/// Throughput relative to native: `native_seconds / target_seconds`.
fn relative(results: &[TargetResult], workload: usize, seconds: f64) -> Option<f64> {
    let native = results
        .iter()
        .find(|result| result.kind == TargetKind::Native)?;
    (seconds > 0.0).then(|| native.times[workload].as_secs_f64() / seconds)
}

fn print_header(environment: &Environment, plan: &Plan, config: &Config) {
    let (tree, params, backing) = (&plan.tree, &plan.params, &environment.backing);
    println!("vxfs workload benchmark");
    println!("  kernel          {}", environment.kernel);
    println!(
        "  backing fs      {} on {} ({})",
        backing.fs_type,
        backing.source,
        environment.bench_dir.display()
    );
    println!(
        "  tree            {} files of 0-8 KiB in {} dirs, {:.1} MiB ({:.1} MiB tar)",
        tree.files,
        tree.dirs,
        tree.file_bytes as f64 / MIB as f64,
        tree.archive_bytes as f64 / MIB as f64
    );
    println!(
        "  seq file        {} MiB in 1 MiB blocks, fsync at the end; {} random 4 KiB preads",
        params.size_mib, params.reads
    );
    for &kind in &config.targets {
        println!("  {:<16}{}", kind.name(), kind.describe(config));
    }
    if let Some(ns) = config.halt_poll {
        println!("  halt polling    {HALT_POLL_NS} = {ns} for the run");
    }
    println!(
        "  runs            {} per target, round robin; medians shown",
        config.runs
    );
    println!("  caches          `sync; echo 3 > /proc/sys/vm/drop_caches` before every workload");
    println!(
        "  ratio           native_seconds / target_seconds: throughput relative to native, >1.00x is faster"
    );
}

fn print_table(results: &[TargetResult]) {
    let mut heading = format!("{:<10}", "workload");
    for result in results {
        let _ = write!(
            heading,
            "  {:>width$}",
            format!("{} s", result.kind.name()),
            width = column_width(result.kind)
        );
        if result.kind != TargetKind::Native {
            let _ = write!(heading, "  {:>9}", "vs native");
        }
    }
    println!("\n{heading}");
    for (index, workload) in WORKLOADS.iter().enumerate() {
        let mut row = format!("{:<10}", workload.name);
        for result in results {
            let seconds = result.times[index].as_secs_f64();
            let _ = write!(
                row,
                "  {seconds:>width$.3}",
                width = column_width(result.kind)
            );
            if result.kind != TargetKind::Native {
                let ratio = relative(results, index, seconds)
                    .map_or("-".to_owned(), |r| format!("{r:.2}x"));
                let _ = write!(row, "  {ratio:>9}");
            }
        }
        println!("{row}");
    }
}

fn column_width(kind: TargetKind) -> usize {
    (kind.name().len() + 2).max(9)
}

fn results_json(
    environment: &Environment,
    plan: &Plan,
    config: &Config,
    results: &[TargetResult],
) -> String {
    let (tree, params) = (&plan.tree, &plan.params);
    let mut records = Vec::new();
    for result in results {
        for (index, workload) in WORKLOADS.iter().enumerate() {
            let seconds = result.times[index].as_secs_f64();
            let ratio =
                relative(results, index, seconds).map_or("null".to_owned(), |r| format!("{r:.4}"));
            records.push(format!(
                "    {{\"target\": {}, \"workload\": {}, \"seconds\": {seconds:.6}, \"vs_native\": {ratio}}}",
                json_string(result.kind.name()),
                json_string(workload.name)
            ));
        }
    }
    let fields = [
        ("kernel", json_string(&environment.kernel)),
        ("backing_fs", json_string(&environment.backing.fs_type)),
        ("backing_source", json_string(&environment.backing.source)),
        (
            "bench_dir",
            json_string(&environment.bench_dir.to_string_lossy()),
        ),
        ("files", tree.files.to_string()),
        ("dirs", tree.dirs.to_string()),
        ("file_bytes", tree.file_bytes.to_string()),
        ("size_mib", params.size_mib.to_string()),
        ("random_reads", params.reads.to_string()),
        ("runs", config.runs.to_string()),
        (
            "halt_poll_ns",
            config
                .halt_poll
                .map_or("null".to_owned(), |ns| ns.to_string()),
        ),
        ("vs_native", json_string("native_seconds / target_seconds")),
    ];
    let mut json = String::from("{\n");
    for (key, value) in fields {
        let _ = writeln!(json, "  {}: {value},", json_string(key));
    }
    let _ = write!(json, "  \"results\": [\n{}\n  ]\n}}\n", records.join(",\n"));
    json
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            ch if u32::from(ch) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(ch));
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

//! Randomized model test of file data on a vxfs mount.
//!
//! A seeded sequence of pwrite / append / pread / ftruncate (grow and
//! shrink) / fallocate / shared-mmap writes / reads through a second
//! descriptor / close+reopen runs on a few files on the mount. After every
//! step the size and the whole content of the touched file are checked
//! against an in-memory `Vec<u8>` model; at the end the backing files are
//! checked too, after unmounting.
//!
//! The run is time-bounded (`VXFS_MODEL_SECS`, default 10 seconds per data
//! path) and replayable: the seed is printed and `VXFS_SEED` sets it.

mod common;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Mount, Scratch, SplitMix64};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{FallocateFlags, Mode, OFlags};
use rustix::io::Errno;

/// Number of files exercised at once.
const FILES: usize = 3;
/// Offsets and sizes stay below this, so that a full check per step is cheap.
const SPAN: u64 = 320 * 1024;
const PAGE: u64 = 4096;

#[derive(Debug, Clone)]
enum Step {
    Pwrite {
        file: usize,
        off: u64,
        len: usize,
        fill: u64,
    },
    Append {
        file: usize,
        len: usize,
        fill: u64,
    },
    Pread {
        file: usize,
        off: u64,
        len: usize,
    },
    ReadSecond {
        file: usize,
        off: u64,
        len: usize,
    },
    Ftruncate {
        file: usize,
        len: u64,
    },
    Fallocate {
        file: usize,
        mode: FallocateFlags,
        off: u64,
        len: u64,
    },
    MmapWrite {
        file: usize,
        off: u64,
        len: usize,
        fill: u64,
    },
    Fsync {
        file: usize,
    },
    Reopen {
        file: usize,
    },
}

impl Step {
    fn file(&self) -> usize {
        match *self {
            Step::Pwrite { file, .. }
            | Step::Append { file, .. }
            | Step::Pread { file, .. }
            | Step::ReadSecond { file, .. }
            | Step::Ftruncate { file, .. }
            | Step::Fallocate { file, .. }
            | Step::MmapWrite { file, .. }
            | Step::Fsync { file }
            | Step::Reopen { file } => file,
        }
    }
}

/// Deterministic data for a write: depends on `fill` and the position.
fn data(fill: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(fill);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An offset biased towards interesting places: 0, page boundaries, the
/// current end of file, or anywhere.
fn offset(rng: &mut SplitMix64, size: u64) -> u64 {
    let off = match rng.below(6) {
        0 => 0,
        1 => rng.below(SPAN / PAGE) * PAGE,
        2 => size.saturating_sub(rng.below(64)),
        3 => (size + rng.below(2 * PAGE)).min(SPAN),
        4 => (rng.below(SPAN / PAGE) * PAGE + PAGE - 1 - rng.below(8)).min(SPAN),
        _ => rng.below(SPAN),
    };
    off.min(SPAN - 1)
}

fn length(rng: &mut SplitMix64) -> usize {
    match rng.below(5) {
        0 => 1 + rng.below(16) as usize,
        1 => PAGE as usize,
        2 => 1 + rng.below(64 * 1024) as usize,
        _ => 1 + rng.below(8192) as usize,
    }
}

fn gen_step(rng: &mut SplitMix64, sizes: &[u64; FILES]) -> Step {
    let file = rng.below(FILES as u64) as usize;
    let size = sizes[file];
    match rng.below(100) {
        0..=24 => {
            let off = offset(rng, size);
            let len = length(rng).min((SPAN - off) as usize).max(1);
            Step::Pwrite {
                file,
                off,
                len,
                fill: rng.next_u64(),
            }
        }
        25..=29 => Step::Append {
            file,
            len: length(rng).min(SPAN.saturating_sub(size) as usize).max(1),
            fill: rng.next_u64(),
        },
        30..=41 => Step::Pread {
            file,
            off: offset(rng, size),
            len: length(rng),
        },
        42..=51 => Step::ReadSecond {
            file,
            off: offset(rng, size),
            len: length(rng),
        },
        52..=61 => {
            let len = match rng.below(4) {
                0 => 0,
                1 => size / 2,
                2 => (size + rng.below(3 * PAGE)).min(SPAN),
                _ => rng.below(SPAN),
            };
            Step::Ftruncate { file, len }
        }
        62..=73 => {
            let mode = match rng.below(6) {
                0 => FallocateFlags::empty(),
                1 => FallocateFlags::KEEP_SIZE,
                2 | 3 => FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                4 => FallocateFlags::ZERO_RANGE,
                _ => FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
            };
            let off = offset(rng, size);
            let len = (length(rng) as u64).min(SPAN - off).max(1);
            Step::Fallocate {
                file,
                mode,
                off,
                len,
            }
        }
        74..=87 => {
            if size == 0 {
                return Step::Fsync { file };
            }
            let off = rng.below(size);
            let len = (length(rng) as u64).min(size - off).max(1) as usize;
            Step::MmapWrite {
                file,
                off,
                len,
                fill: rng.next_u64(),
            }
        }
        88..=91 => Step::Fsync { file },
        _ => Step::Reopen { file },
    }
}

/// One file under test: its descriptors and the model of its content.
struct Subject {
    path: PathBuf,
    /// Read-write descriptor used for most steps.
    main: OwnedFd,
    /// A second, read-only descriptor (a separate open).
    second: OwnedFd,
    /// An `O_APPEND` descriptor.
    append: OwnedFd,
    model: Vec<u8>,
}

fn open(path: &PathBuf, flags: OFlags) -> OwnedFd {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::from_raw_mode(0o644))
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

impl Subject {
    fn new(path: PathBuf) -> Subject {
        let main = open(&path, OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC);
        let second = open(&path, OFlags::RDONLY);
        let append = open(&path, OFlags::WRONLY | OFlags::APPEND);
        Subject {
            path,
            main,
            second,
            append,
            model: Vec::new(),
        }
    }
}

fn pread_full(fd: BorrowedFd<'_>, len: usize, off: u64) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = rustix::io::pread(fd, &mut buf[got..], off + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

fn pwrite_full(fd: BorrowedFd<'_>, data: &[u8], off: u64) -> Result<(), Errno> {
    let mut done = 0;
    while done < data.len() {
        let n = rustix::io::pwrite(fd, &data[done..], off + done as u64)?;
        if n == 0 {
            return Err(Errno::IO);
        }
        done += n;
    }
    Ok(())
}

/// What the model says a read of `len` bytes at `off` returns.
fn expected_read(model: &[u8], off: u64, len: usize) -> &[u8] {
    let start = (off as usize).min(model.len());
    let end = (start + len).min(model.len());
    &model[start..end]
}

fn write_model(model: &mut Vec<u8>, off: u64, bytes: &[u8]) {
    let off = off as usize;
    if model.len() < off + bytes.len() {
        model.resize(off + bytes.len(), 0);
    }
    model[off..off + bytes.len()].copy_from_slice(bytes);
}

/// Applies `step` to the mount and to the model. An error here means the
/// daemon failed an operation that succeeds on ext4.
fn apply(s: &mut Subject, step: &Step) -> Result<(), String> {
    let e = |what: &str, err: Errno| format!("{what} failed: {err}");
    match *step {
        Step::Pwrite { off, len, fill, .. } => {
            let bytes = data(fill, len);
            pwrite_full(s.main.as_fd(), &bytes, off).map_err(|x| e("pwrite", x))?;
            write_model(&mut s.model, off, &bytes);
        }
        Step::Append { len, fill, .. } => {
            let bytes = data(fill, len);
            let mut done = 0;
            while done < len {
                let n = rustix::io::write(&s.append, &bytes[done..]).map_err(|x| e("append", x))?;
                if n == 0 {
                    return Err("append wrote 0 bytes".into());
                }
                done += n;
            }
            let end = s.model.len() as u64;
            write_model(&mut s.model, end, &bytes);
        }
        Step::Pread { off, len, .. } | Step::ReadSecond { off, len, .. } => {
            let fd = match step {
                Step::Pread { .. } => s.main.as_fd(),
                _ => s.second.as_fd(),
            };
            let got = pread_full(fd, len, off).map_err(|x| e("pread", x))?;
            let want = expected_read(&s.model, off, len);
            if got != want {
                let at = first_difference(&got, want);
                return Err(format!(
                    "read of {len} bytes at {off} returned {} bytes, model has {}; first \
                     difference at file offset {}",
                    got.len(),
                    want.len(),
                    off + at as u64
                ));
            }
        }
        Step::Ftruncate { len, .. } => {
            rustix::fs::ftruncate(&s.main, len).map_err(|x| e("ftruncate", x))?;
            s.model.resize(len as usize, 0);
        }
        Step::Fallocate { mode, off, len, .. } => {
            rustix::fs::fallocate(&s.main, mode, off, len).map_err(|x| e("fallocate", x))?;
            let keep = mode.contains(FallocateFlags::KEEP_SIZE);
            let end = (off + len) as usize;
            if !keep && s.model.len() < end {
                s.model.resize(end, 0);
            }
            if mode.intersects(FallocateFlags::PUNCH_HOLE | FallocateFlags::ZERO_RANGE) {
                let stop = end.min(s.model.len());
                let start = (off as usize).min(stop);
                s.model[start..stop].fill(0);
            }
        }
        Step::MmapWrite { off, len, fill, .. } => {
            let bytes = data(fill, len);
            mmap_write(s.main.as_fd(), off as usize, &bytes).map_err(|x| e("mmap write", x))?;
            write_model(&mut s.model, off, &bytes);
        }
        Step::Fsync { .. } => {
            rustix::fs::fsync(&s.main).map_err(|x| e("fsync", x))?;
        }
        Step::Reopen { .. } => {
            s.main = rustix::fs::open(&s.path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                .map_err(|x| e("reopen", x))?;
            s.second = rustix::fs::open(&s.path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|x| e("reopen second", x))?;
        }
    }
    Ok(())
}

/// Maps the whole file shared, writes `bytes` at `off`, msyncs and unmaps.
fn mmap_write(fd: BorrowedFd<'_>, off: usize, bytes: &[u8]) -> Result<(), Errno> {
    common::with_shared_map(fd, |map| {
        assert!(
            off + bytes.len() <= map.len(),
            "model bug: mmap write past EOF"
        );
        map[off..off + bytes.len()].copy_from_slice(bytes);
    })
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.len().min(b.len()))
}

/// Checks size (fstat on both descriptors and stat by path) and full content.
fn check(s: &Subject) -> Result<(), String> {
    let want = s.model.len() as i64;
    for (name, fd) in [("main fd", s.main.as_fd()), ("second fd", s.second.as_fd())] {
        let size = rustix::fs::fstat(fd)
            .map_err(|e| format!("fstat: {e}"))?
            .st_size;
        if size != want {
            return Err(format!("{name}: st_size {size}, model size {want}"));
        }
    }
    let size = rustix::fs::stat(&s.path)
        .map_err(|e| format!("stat: {e}"))?
        .st_size;
    if size != want {
        return Err(format!("stat(path): st_size {size}, model size {want}"));
    }
    let got = pread_full(s.main.as_fd(), s.model.len() + 1024, 0)
        .map_err(|e| format!("full read: {e}"))?;
    if got != s.model {
        return Err(format!(
            "content differs: file has {} bytes, model {}; first differing offset {}",
            got.len(),
            s.model.len(),
            first_difference(&got, &s.model)
        ));
    }
    Ok(())
}

fn budget() -> Duration {
    let secs = std::env::var("VXFS_MODEL_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

fn run_model(opts: &str) {
    let seed = common::seed();
    let mut rng = SplitMix64::new(seed);
    let scratch = Scratch::new();
    let mount = Mount::scratch(&scratch, opts);
    let label = if opts.is_empty() {
        "default options".to_string()
    } else {
        format!("-o {opts}")
    };
    let mut files: Vec<Subject> = (0..FILES)
        .map(|i| Subject::new(scratch.mnt().join(format!("file{i}"))))
        .collect();
    let mut history: VecDeque<(u64, Step)> = VecDeque::new();
    let deadline = Instant::now() + budget();
    let mut steps = 0u64;
    // File data moved through the mount: every check reads each file whole.
    let mut moved = 0u64;
    let io_before = mount.daemon_io();

    let fail = |step_no: u64, step: &Step, why: String, history: &VecDeque<(u64, Step)>| -> ! {
        let mut recent = String::new();
        for (n, s) in history {
            writeln!(recent, "    #{n}: {s:?}").unwrap();
        }
        panic!(
            "model mismatch on vxfs ({label})\n  seed: VXFS_SEED={seed}\n  step #{step_no}: \
             {step:?}\n  {why}\n  recent steps:\n{recent}--- daemon log ---\n{}",
            mount.log_text()
        );
    };

    while Instant::now() < deadline {
        let sizes: [u64; FILES] = std::array::from_fn(|i| files[i].model.len() as u64);
        let step = gen_step(&mut rng, &sizes);
        let subject = &mut files[step.file()];
        if let Err(why) = apply(subject, &step) {
            fail(steps, &step, why, &history);
        }
        if let Err(why) = check(subject) {
            fail(steps, &step, format!("after the step: {why}"), &history);
        }
        moved += subject.model.len() as u64;
        history.push_back((steps, step));
        if history.len() > 12 {
            history.pop_front();
        }
        steps += 1;
    }
    eprintln!("model ({label}): {steps} steps, {moved} bytes read back, seed {seed}");
    assert!(steps > 0, "no step ran within the time budget");
    mount.assert_data_path(io_before, moved, !opts.contains("passthrough=off"));

    // The backing files must hold the same bytes once the daemon is gone.
    let models: Vec<Vec<u8>> = files.iter().map(|f| f.model.clone()).collect();
    drop(files);
    let log = mount.log_text();
    let status = mount.unmount();
    assert!(status.success(), "vxfs exited with {status}:\n{log}");
    for (i, model) in models.iter().enumerate() {
        let path = scratch.src().join(format!("file{i}"));
        let got = std::fs::read(&path).expect("read backing file");
        assert!(
            got == *model,
            "backing file{i} after unmount differs from the model (seed VXFS_SEED={seed}): {} \
             bytes vs {}, first differing offset {}",
            got.len(),
            model.len(),
            first_difference(&got, model)
        );
    }
}

#[test]
fn model_passthrough_on() {
    run_model("");
}

#[test]
fn model_passthrough_off() {
    run_model("passthrough=off");
}

//! Hashing file contents with BLAKE3 on a pool of threads, with a progress
//! line.
//!
//! Each worker takes the next job from a shared counter, opens the file
//! below its root without following symlinks, reads it in 1 MiB blocks and
//! checks afterwards that it is the inode examined by the scan, unchanged
//! (size, mtime, ctime, owner and mode): a file changed meanwhile gets no
//! hash and is left alone.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rustix::fs::{Advice, OFlags};
use rustix::io::Errno;

use super::{Digest, FileStat, Reporter, Root};

/// Read size: large enough for the disk and for BLAKE3's SIMD.
pub const BLOCK: usize = 1 << 20;

/// How often the progress line is redrawn.
pub(super) const TICK: Duration = Duration::from_millis(250);

/// One file to hash.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// Index of its inode (the caller's).
    pub inode: usize,
    /// Its root.
    pub root: usize,
    /// Its path below the root.
    pub rel: &'a [u8],
    /// Its state when examined.
    pub st: FileStat,
}

/// A job's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashed {
    /// The content's digest.
    Done(Digest),
    /// The file changed (or went away) since the scan.
    Changed,
    /// Reading it failed (reported).
    Failed,
}

/// Runs `f(0..len)` on `threads` threads, each taking the next index
/// from a shared counter; the results are in index order. A panic in `f`
/// is re-raised.
pub fn pool_map<T: Send>(len: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<T>>> = (0..len).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, len.max(1)))
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= len {
                            break;
                        }
                        let value = f(i);
                        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                    }
                })
            })
            .collect();
        for w in workers {
            if let Err(p) = w.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every index ran")
        })
        .collect()
}

/// Hashes every job on `threads` threads; results are in job order.
pub fn hash_all(
    jobs: &[Job<'_>],
    roots: &[Root],
    threads: usize,
    progress: bool,
    report: &Reporter,
) -> Vec<Hashed> {
    let done_files = AtomicU64::new(0);
    let done_bytes = AtomicU64::new(0);
    let total_bytes: u64 = jobs.iter().map(|j| j.st.size).sum();
    let line = || super::Progress {
        text: format!(
            "hashing: {}/{} files",
            done_files.load(Ordering::Relaxed),
            jobs.len()
        ),
        pos: done_bytes.load(Ordering::Relaxed),
        len: Some(total_bytes),
        bytes: true,
    };
    report.ticking(progress, line, || {
        pool_map(jobs.len(), threads, |i| {
            let mut buf = BUF.with(|b| b.take());
            buf.resize(BLOCK, 0);
            let job = &jobs[i];
            let root = &roots[job.root];
            let result = match hash_file(root, job, &mut buf, &done_bytes) {
                Ok(Some(d)) => Hashed::Done(d),
                // Gone, or replaced by a symlink or a file in place of a
                // directory on the way.
                Ok(None) | Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => Hashed::Changed,
                Err(e) => {
                    report.error(&root.display(job.rel), std::io::Error::from(e));
                    Hashed::Failed
                }
            };
            BUF.with(|b| b.replace(buf));
            done_files.fetch_add(1, Ordering::Relaxed);
            result
        })
    })
}

thread_local! {
    /// Each pool thread's read buffer, kept across jobs.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hashes one file; `Ok(None)` if it is not the file examined any more.
fn hash_file(
    root: &Root,
    job: &Job<'_>,
    buf: &mut [u8],
    done_bytes: &AtomicU64,
) -> Result<Option<Digest>, Errno> {
    use std::os::unix::ffi::OsStrExt;
    let rel = std::ffi::OsStr::from_bytes(job.rel);
    // The backing file where it can be reached (the mount's own reads
    // cost a round trip per block); what is linked later is compared
    // through the mount again, so a stale read only skips a file.
    let (fd, same): (OwnedFd, fn(&FileStat, &FileStat) -> bool) =
        match root.open_backing(rel, &job.st) {
            Some(fd) => (fd, FileStat::backed_by),
            // O_NONBLOCK: a fifo swapped in must not hang the open.
            None => (
                root.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK)?,
                FileStat::unchanged,
            ),
        };
    let before = FileStat::from(&rustix::fs::fstat(&fd)?);
    if !same(&job.st, &before) {
        return Ok(None);
    }
    let _ = rustix::fs::fadvise(&fd, 0, None, Advice::Sequential);
    let digest = keyed_digest(fd.as_fd(), buf, done_bytes)?;
    let after = FileStat::of(&fd)?;
    Ok(same(&job.st, &after).then_some(digest))
}

/// The digest a file is grouped by: of its content and its kept xattrs
/// ([`super::xattrs::keyed`]; an xattr change moves the ctime, which the
/// callers check after reading).
pub fn keyed_digest(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    done_bytes: &AtomicU64,
) -> Result<Digest, Errno> {
    let content = hash_fd(fd, buf, done_bytes)?;
    Ok(super::xattrs::keyed(content, &super::xattrs::read(fd)?))
}

/// BLAKE3 of everything `fd` reads from its start, counting the bytes.
pub fn hash_fd(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    done_bytes: &AtomicU64,
) -> Result<Digest, Errno> {
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0u64;
    loop {
        let n = match rustix::io::pread(fd, &mut *buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
        done_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(Digest(*hasher.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn hashes_in_parallel_and_notices_changes() {
        let t = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..20u8 {
            let data = vec![i; 1000 + usize::from(i) * 70_000];
            std::fs::write(t.path().join(format!("f{i}")), &data).unwrap();
            files.push((format!("f{i}"), data));
        }
        let root = Root::open(t.path()).unwrap();
        let stat = |name: &str| FileStat::from(&rustix::fs::stat(t.path().join(name)).unwrap());
        let mut jobs: Vec<Job<'_>> = files
            .iter()
            .enumerate()
            .map(|(i, (name, _))| Job {
                inode: i,
                root: 0,
                rel: name.as_bytes(),
                st: stat(name),
            })
            .collect();
        // f3 changes after its examination, f4 goes away, f5 becomes a
        // symlink (never followed).
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(t.path().join("f3"), b"changed content here").unwrap();
        std::fs::remove_file(t.path().join("f4")).unwrap();
        std::fs::remove_file(t.path().join("f5")).unwrap();
        std::os::unix::fs::symlink("f6", t.path().join("f5")).unwrap();
        jobs[5].st.ino = std::fs::symlink_metadata(t.path().join("f5"))
            .unwrap()
            .ino();

        let roots = [root];
        let results = hash_all(&jobs, &roots, 3, false, &Reporter::quiet());
        for (i, (_, data)) in files.iter().enumerate() {
            let want = match i {
                3..=5 => Hashed::Changed,
                _ => Hashed::Done(Digest(*blake3::hash(data).as_bytes())),
            };
            assert_eq!(results[i], want, "f{i}");
        }
        assert!(hash_all(&[], &roots, 4, false, &Reporter::quiet()).is_empty());
    }
}

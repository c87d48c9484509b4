//! FUSE-over-io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`, the fuse
//! module's `enable_uring` parameter).
//!
//! Requests arrive in buffers the server registers with the kernel through
//! `IORING_OP_URING_CMD` commands on the `/dev/fuse` descriptor: one queue
//! per possible CPU, a request going to the queue of the CPU its caller
//! runs on. A reply goes back with the command that also fetches the next
//! request of its entry (`COMMIT_AND_FETCH`): one system call per request
//! where `/dev/fuse` needs a `read` and a `write`, and no wake-up of a
//! thread on another CPU.
//!
//! The layout is the kernel's (`include/uapi/linux/fuse.h`,
//! `fs/fuse/dev_uring.c`): each entry has a header buffer
//! (`struct fuse_uring_req_header`: 128 bytes for the in or out header, 128
//! for the operation's own header, then `struct fuse_uring_ent_in_out`)
//! and a payload buffer as large as the connection's largest request. A
//! request's `fuse_in_header` is in `in_out`, its first argument in `op_in`
//! and the rest in the payload; a reply's `fuse_out_header` goes to
//! `in_out` and its whole body to the payload.
//!
//! fuser parses a request as `/dev/fuse` delivers it, one contiguous
//! message. So each entry's buffer has room just before its payload, into
//! which the in-header and the first argument are copied; the payload
//! itself is not copied. The first argument's size is what the in-header's
//! `len` leaves after the header and the payload.
//!
//! Forgets, interrupts and notifications stay on `/dev/fuse`, where the
//! kernel keeps sending them, so the session's `/dev/fuse` threads run as
//! before. Until every queue has a registered entry the kernel holds new
//! requests; if registering fails, it sends them there for good.
//!
//! A reply may be sent from any thread, and while the request is still
//! being dispatched. Committing it at once would let the kernel copy the
//! next request into the buffer the request still borrows, so a reply made
//! during its dispatch is committed when the dispatch returns. A reply to a
//! request with a payload is kept aside until then (the reply goes to the
//! payload buffer, where the request's arguments are); one without is
//! written in place. `ReplyData::data_with` lets a read's data be written
//! straight into the payload buffer.

use std::io;
use std::io::IoSlice;
use std::mem::size_of;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use io_uring::IoUring;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::error;
use log::warn;
use parking_lot::Mutex;

use crate::Errno;
use crate::Filesystem;
use crate::ReplyEmpty;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll::Operation;
use crate::ll::fuse_abi::fuse_in_header;
use crate::ll::fuse_abi::fuse_out_header;
use crate::reply::ReplySender;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// `FUSE_IO_URING_CMD_REGISTER`: hand the kernel an entry's buffers.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: reply, and wait for the next request.
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `FUSE_URING_IN_OUT_HEADER_SZ`
const IN_OUT_SIZE: usize = 128;
/// `FUSE_URING_OP_IN_OUT_SZ`
const OP_IN_SIZE: usize = 128;
/// Where `struct fuse_uring_ent_in_out` starts in the header buffer.
const ENT_IN_OUT: usize = IN_OUT_SIZE + OP_IN_SIZE;
/// `sizeof(struct fuse_uring_req_header)`.
const HEADER_SIZE: usize = ENT_IN_OUT + size_of::<EntInOut>();
/// Where an entry's payload buffer starts in its memory: after the header
/// buffer and the room for a request's in-header and first argument,
/// page-aligned.
const PAYLOAD: usize = 4096;
const _: () = assert!(HEADER_SIZE + size_of::<fuse_in_header>() + OP_IN_SIZE <= PAYLOAD);

const IN_HEADER: usize = size_of::<fuse_in_header>();
const OUT_HEADER: usize = size_of::<fuse_out_header>();

/// Entries per ring: one being served and one the kernel can fill
/// meanwhile (a reply sent from another thread leaves the serving thread
/// free for the other).
const DEPTH: usize = 2;

/// `struct fuse_uring_ent_in_out`
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct EntInOut {
    flags: u64,
    /// The request's `unique`, to commit the reply with.
    commit_id: u64,
    /// Bytes of the payload buffer in use (the kernel's on a request, ours
    /// on a reply).
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}

/// `struct fuse_uring_cmd_req`, the 80-byte command area's start.
fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    // flags (u64) stays zero.
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// An `IORING_OP_URING_CMD` entry for the `/dev/fuse` descriptor `fd`.
fn uring_cmd(fd: RawFd, op: u32, commit_id: u64, qid: u16, iovecs: Option<u64>) -> squeue::Entry128 {
    let mut cmd = opcode::UringCmd80::new(types::Fd(fd), op).cmd(cmd_req(commit_id, qid));
    if let Some(addr) = iovecs {
        cmd = cmd.addr(Some(addr));
    }
    let sqe = cmd.build();
    match iovecs {
        // REGISTER reads `sqe->len` iovecs at `sqe->addr`: the header and
        // payload buffers. io-uring's UringCmd80 has no setter for `len`.
        Some(_) => with_len(sqe, 2),
        None => sqe,
    }
}

/// `sqe` with its `len` field (bytes 24..28 of `struct io_uring_sqe`) set.
#[allow(unsafe_code)]
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const LEN: usize = 24;
    const _: () = assert!(size_of::<squeue::Entry128>() == 128);
    // SAFETY: Entry128 is `#[repr(C)]` over `struct io_uring_sqe` (64
    // bytes, no padding) and 64 bytes of command data: 128 plain bytes,
    // any of which may be any value.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[LEN..LEN + 4].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// How many queues the kernel makes: one per possible CPU
/// (`num_possible_cpus()`), from `/sys/devices/system/cpu/possible`
/// (`0-3`, `0,2-5`, ...).
fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim())
        .ok_or_else(|| io::Error::other(format!("unreadable CPU list {:?}", text.trim())))
}

fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut n = 0;
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let a = part.parse::<usize>().ok()?;
                (a, a)
            }
        };
        n += last.checked_sub(first)? + 1;
    }
    (n > 0).then_some(n)
}

/// An entry's memory: the header buffer, the room for a request's
/// in-header and first argument, and the payload buffer; shared with the
/// kernel, which writes it while it holds the entry. An anonymous mapping:
/// page-aligned, and resident only where requests were written.
#[derive(Debug)]
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory; who may touch which part when is
// the entry's protocol (see the module's documentation).
#[allow(unsafe_code)]
unsafe impl Send for Region {}
#[allow(unsafe_code)]
unsafe impl Sync for Region {}

#[allow(unsafe_code)]
impl Region {
    fn new(payload: usize) -> io::Result<Self> {
        let len = PAYLOAD + payload;
        // SAFETY: a new private anonymous mapping, aliasing nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self { ptr, len })
    }

    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Copies `len` bytes at `from` to `to`, offsets in the region.
    fn copy_within(&self, from: usize, to: usize, len: usize) {
        assert!(from + len <= self.len && to + len <= self.len);
        // SAFETY: both ranges are in the region (checked) and the caller
        // holds the entry; `copy` allows overlap.
        unsafe { std::ptr::copy(self.base().add(from), self.base().add(to), len) }
    }

    /// Writes `bytes` at offset `at`.
    fn write(&self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= self.len);
        // SAFETY: the range is in the region (checked), `bytes` is not in
        // it (it is the caller's), and the caller holds the entry.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base().add(at), bytes.len());
        }
    }

    /// Reads a `T` at offset `at`.
    fn read<T: Copy>(&self, at: usize) -> T {
        assert!(at + size_of::<T>() <= self.len);
        // SAFETY: in the region (checked); every T read here is plain
        // integers, valid for any bytes.
        unsafe { std::ptr::read_unaligned(self.base().add(at).cast::<T>()) }
    }

    /// The bytes at `at..at + len`, to write.
    ///
    /// # Safety
    /// While the slice lives, nothing else may read or write those bytes.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, at: usize, len: usize) -> &mut [u8] {
        assert!(at + len <= self.len);
        // SAFETY: in the region (checked); the caller keeps it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.base().add(at), len) }
    }

    /// The bytes at `at..at + len`.
    ///
    /// # Safety
    /// While the slice lives, nothing may write those bytes: the caller
    /// holds the entry and writes no part of it the slice covers.
    unsafe fn slice(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= self.len);
        // SAFETY: in the region (checked); the caller keeps it unwritten.
        unsafe { std::slice::from_raw_parts(self.base().add(at), len) }
    }
}

#[allow(unsafe_code)]
impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length, and unused from now.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One ring entry: its memory and the state of its request.
#[derive(Debug)]
struct Entry {
    region: Region,
    /// `[header buffer, payload buffer]`, read by the kernel on REGISTER.
    iovecs: Box<[libc::iovec; 2]>,
    state: Mutex<EntryState>,
}

// SAFETY: the iovecs point into the entry's own region.
#[allow(unsafe_code)]
unsafe impl Send for Entry {}
#[allow(unsafe_code)]
unsafe impl Sync for Entry {}

#[derive(Debug, Default)]
struct EntryState {
    /// The request's `unique`: what its reply commits.
    commit_id: u64,
    /// The serving thread is dispatching the request: a reply now is
    /// committed when the dispatch returns.
    dispatching: bool,
    /// The request reaches into the payload buffer, so a reply during its
    /// dispatch is kept in `stash`.
    has_payload: bool,
    /// A reply made during the dispatch waits: written in place, or in
    /// `stash`.
    pending: Option<Pending>,
    stash: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Written,
    Stashed,
}

/// One io_uring with its entries, served by one thread, for queue `qid`.
pub(crate) struct Ring {
    ring: IoUring<squeue::Entry128>,
    /// Held to push to the submission queue (replies come from any thread).
    sq: Mutex<()>,
    channel: ChannelSender,
    fd: RawFd,
    qid: u16,
    payload: usize,
    entries: Box<[Entry]>,
    /// Whether a ring of the session has warned that the kernel refused it.
    warned: Arc<AtomicBool>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("qid", &self.qid)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl Ring {
    fn new(
        channel: &Channel,
        qid: u16,
        payload: usize,
        warned: &Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let ring = IoUring::<squeue::Entry128>::builder()
            // Completions (new requests) are delivered when the serving
            // thread enters the kernel, without interrupting it.
            .setup_coop_taskrun()
            .build(2 * DEPTH as u32)?;
        let mut entries = Vec::with_capacity(DEPTH);
        for _ in 0..DEPTH {
            let region = Region::new(payload)?;
            let iovecs = Box::new([
                libc::iovec {
                    iov_base: region.base().cast(),
                    iov_len: HEADER_SIZE,
                },
                libc::iovec {
                    iov_base: region.base().wrapping_add(PAYLOAD).cast(),
                    iov_len: payload,
                },
            ]);
            entries.push(Entry {
                region,
                iovecs,
                state: Mutex::new(EntryState::default()),
            });
        }
        Ok(Self {
            ring,
            sq: Mutex::new(()),
            fd: channel.as_fd().as_raw_fd(),
            channel: channel.sender(),
            qid,
            payload,
            entries: entries.into_boxed_slice(),
            warned: Arc::clone(warned),
        })
    }

    /// Pushes `sqe` and submits it.
    fn submit(&self, sqe: &squeue::Entry128) -> io::Result<()> {
        self.push(sqe, true)
    }

    /// Pushes `sqe`, and with `submit` submits it.
    #[allow(unsafe_code)]
    fn push(&self, sqe: &squeue::Entry128, submit: bool) -> io::Result<()> {
        {
            let _sq = self.sq.lock();
            // SAFETY: every push to the queue holds `self.sq`.
            let mut sq = unsafe { self.ring.submission_shared() };
            // SAFETY: the entry's buffers (and the iovecs of a REGISTER)
            // live as long as the ring; they are freed only after the
            // kernel has ended every entry (see `serve`).
            unsafe { sq.push(sqe) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
            sq.sync();
        }
        if !submit {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn register(&self, index: usize) -> io::Result<()> {
        let iovecs = self.entries[index].iovecs.as_ptr() as u64;
        let sqe = uring_cmd(self.fd, CMD_REGISTER, 0, self.qid, Some(iovecs)).user_data(index as u64);
        self.submit(&sqe)
    }

    /// Commits entry `index`'s reply. The serving thread leaves it to its
    /// next wait to submit (one system call per request); another thread
    /// submits it at once.
    fn commit(&self, index: usize, commit_id: u64, submit: bool) {
        let sqe = uring_cmd(self.fd, CMD_COMMIT_AND_FETCH, commit_id, self.qid, None)
            .user_data(index as u64);
        if let Err(e) = self.push(&sqe, submit) {
            error!("io_uring queue {}: committing a reply: {e}", self.qid);
        }
    }

    /// Writes a reply (`fuse_out_header` and body) into entry `index`.
    fn write_reply(&self, index: usize, commit_id: u64, data: &[IoSlice<'_>]) {
        let region = &self.entries[index].region;
        let total: usize = data.iter().map(|d| d.len()).sum();
        if total < OUT_HEADER || total - OUT_HEADER > self.payload {
            error!("io_uring queue {}: a reply of {total} bytes does not fit", self.qid);
            region.write(0, zerocopy::IntoBytes::as_bytes(&eio(commit_id)));
            region.write(ENT_IN_OUT + 16, &0u32.to_ne_bytes());
            return;
        }
        let mut at = 0;
        for slice in data {
            let mut bytes: &[u8] = slice;
            if at < OUT_HEADER {
                let n = bytes.len().min(OUT_HEADER - at);
                region.write(at, &bytes[..n]);
                at += n;
                bytes = &bytes[n..];
            }
            region.write(PAYLOAD + at - OUT_HEADER, bytes);
            at += bytes.len();
        }
        // fuse_uring_ent_in_out.payload_sz
        region.write(ENT_IN_OUT + 16, &((total - OUT_HEADER) as u32).to_ne_bytes());
    }

    /// Serves the request the kernel put in entry `index`.
    fn serve_entry<FS: Filesystem>(self: &Arc<Self>, index: usize, se: &SessionEventLoop<FS>) {
        let entry = &self.entries[index];
        let region = &entry.region;
        let header: fuse_in_header = {
            let raw: [u8; IN_HEADER] = region.read(0);
            zerocopy::FromBytes::read_from_bytes(&raw[..]).expect("size of fuse_in_header")
        };
        let ent: EntInOut = region.read(ENT_IN_OUT);
        let payload = ent.payload_sz as usize;
        let total = header.len as usize;
        let arg0 = total.checked_sub(IN_HEADER + payload);
        let Some(arg0) = arg0.filter(|&n| n <= OP_IN_SIZE && n % 8 == 0 && payload <= self.payload)
        else {
            error!(
                "io_uring queue {}: request {} of {total} bytes with a payload of {payload}: malformed",
                self.qid, header.unique
            );
            let reply = eio(header.unique);
            self.write_reply(index, ent.commit_id, &[IoSlice::new(zerocopy::IntoBytes::as_bytes(&reply))]);
            self.commit(index, ent.commit_id, false);
            return;
        };
        // The message as /dev/fuse has it: in-header, first argument,
        // payload, the first two copied to just before the payload.
        let start = PAYLOAD - arg0 - IN_HEADER;
        region.copy_within(0, start, IN_HEADER);
        region.copy_within(IN_OUT_SIZE, start + IN_HEADER, arg0);
        {
            let mut state = entry.state.lock();
            state.commit_id = ent.commit_id;
            state.dispatching = true;
            state.has_payload = payload > 0;
            state.pending = None;
        }
        {
            // SAFETY: the kernel writes the entry only after it is
            // committed, which waits for this dispatch to return; a reply
            // during the dispatch writes the header buffer and, only for a
            // request without payload (so outside this slice), the payload.
            #[allow(unsafe_code)]
            let message = unsafe { region.slice(start, total) };
            let sender = ReplySender::Uring(EntrySender {
                ring: Arc::clone(self),
                index,
            });
            match RequestWithSender::with_reply_to(sender, message) {
                Some(request) => match request.request.operation() {
                    Ok(Operation::Destroy(_)) => request.reply::<ReplyEmpty>().ok(),
                    _ => request.dispatch(se),
                },
                None => {
                    // Unparsable (logged): the header buffer is outside the
                    // message, so the error is written in place.
                    let reply = eio(header.unique);
                    self.write_reply(index, ent.commit_id, &[IoSlice::new(zerocopy::IntoBytes::as_bytes(&reply))]);
                    entry.state.lock().pending = Some(Pending::Written);
                }
            }
        }
        let mut state = entry.state.lock();
        state.dispatching = false;
        match state.pending.take() {
            None => {} // replied later, from another thread
            Some(pending) => {
                if pending == Pending::Stashed {
                    let stash = std::mem::take(&mut state.stash);
                    self.write_reply(index, state.commit_id, &[IoSlice::new(&stash)]);
                    state.stash = stash;
                }
                let commit_id = state.commit_id;
                drop(state);
                self.commit(index, commit_id, false);
            }
        }
    }

    /// The serving thread: registers the entries, then serves what
    /// arrives in them until the kernel ends every one (the connection
    /// ended, or registering failed).
    #[allow(unsafe_code)]
    fn serve<FS: Filesystem>(self: Arc<Self>, se: SessionEventLoop<FS>) -> io::Result<()> {
        pin_to_cpu(usize::from(self.qid));
        let mut live = 0;
        for index in 0..self.entries.len() {
            match self.register(index) {
                Ok(()) => live += 1,
                Err(e) => error!("io_uring queue {}: registering: {e}", self.qid),
            }
        }
        let mut done = Vec::with_capacity(DEPTH);
        let mut first_error = None;
        while live > 0 {
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    // The kernel may still hold entries: their memory must
                    // stay, so the ring is leaked.
                    error!("io_uring queue {}: waiting: {e}", self.qid);
                    std::mem::forget(Arc::clone(&self));
                    return Err(e);
                }
            }
            done.clear();
            // SAFETY: only this thread reads the completion queue.
            done.extend(unsafe { self.ring.completion_shared() }.map(|c| (c.user_data(), c.result())));
            for &(index, result) in &done {
                let index = index as usize;
                if index >= self.entries.len() {
                    // The REGISTER of `Rings::refuse`.
                    continue;
                }
                if result < 0 {
                    // The entry is the kernel's no more.
                    live -= 1;
                    let errno = -result;
                    if errno != libc::ENOTCONN && errno != libc::ECANCELED {
                        first_error.get_or_insert(errno);
                    }
                    continue;
                }
                self.serve_entry(index, &se);
            }
        }
        let first_error = first_error.filter(|_| !self.warned.swap(true, Ordering::Relaxed));
        if let Some(errno) = first_error {
            warn!(
                "FUSE-over-io_uring queue {}: {}; the kernel sends its requests through /dev/fuse",
                self.qid,
                io::Error::from_raw_os_error(errno)
            );
        }
        debug!("io_uring queue {}: ended", self.qid);
        Ok(())
    }
}

/// A reply of `EIO` to request `unique`.
fn eio(unique: u64) -> fuse_out_header {
    fuse_out_header {
        len: OUT_HEADER as u32,
        error: -libc::EIO,
        unique,
    }
}

/// Runs the calling thread on CPU `cpu` when it may (the queue's requests
/// come from callers on that CPU); stays where it is otherwise.
#[allow(unsafe_code)]
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it
    // (cpu is below the possible CPUs, fewer than CPU_SETSIZE here or the
    // call fails harmlessly).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return;
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            debug!("io_uring queue {cpu}: not pinned: {}", io::Error::last_os_error());
        }
    }
}

/// Sends a reply through the entry its request came in.
#[derive(Debug, Clone)]
pub(crate) struct EntrySender {
    ring: Arc<Ring>,
    index: usize,
}

impl EntrySender {
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let entry = &self.ring.entries[self.index];
        let mut state = entry.state.lock();
        if state.dispatching {
            if state.has_payload {
                state.stash.clear();
                for slice in data {
                    state.stash.extend_from_slice(slice);
                }
                state.pending = Some(Pending::Stashed);
            } else {
                self.ring.write_reply(self.index, state.commit_id, data);
                state.pending = Some(Pending::Written);
            }
            return Ok(());
        }
        self.ring.write_reply(self.index, state.commit_id, data);
        let commit_id = state.commit_id;
        drop(state);
        self.ring.commit(self.index, commit_id, true);
        Ok(())
    }

    /// Replies with at most `size` bytes that `fill` writes straight into
    /// the entry's payload buffer (see `ReplyData::data_with`). Gives `fill`
    /// back when that cannot be: the request's own payload is still in use,
    /// or `size` does not fit.
    pub(crate) fn send_with<F>(&self, size: usize, fill: F) -> Option<F>
    where
        F: FnOnce(&mut [u8]) -> Result<usize, Errno>,
    {
        let entry = &self.ring.entries[self.index];
        let mut state = entry.state.lock();
        if (state.dispatching && state.has_payload) || size > self.ring.payload {
            return Some(fill);
        }
        // SAFETY: the entry is ours until it is committed, and nothing else
        // refers to its payload buffer: its request has none, or is not
        // being dispatched any more.
        #[allow(unsafe_code)]
        let buf = unsafe { entry.region.slice_mut(PAYLOAD, size) };
        let (error, n) = match fill(buf) {
            Ok(n) => (0, n.min(size)),
            Err(e) => (-e.code(), 0),
        };
        let header = fuse_out_header {
            len: (OUT_HEADER + n) as u32,
            error,
            unique: state.commit_id,
        };
        entry.region.write(0, zerocopy::IntoBytes::as_bytes(&header));
        entry.region.write(ENT_IN_OUT + 16, &(n as u32).to_ne_bytes());
        if state.dispatching {
            state.pending = Some(Pending::Written);
            return None;
        }
        let commit_id = state.commit_id;
        drop(state);
        self.ring.commit(self.index, commit_id, true);
        None
    }

    /// The `/dev/fuse` channel, for what does not go through the ring
    /// (passthrough's backing ids).
    pub(crate) fn channel(&self) -> &ChannelSender {
        &self.ring.channel
    }
}

/// The rings of a session, set up before the INIT reply asks the kernel
/// for io_uring: once it has, every request waits for the rings, so
/// anything that can fail is done first.
#[derive(Debug)]
pub(crate) struct Rings {
    rings: Vec<Arc<Ring>>,
}

impl Rings {
    /// `threads` serving threads in all (at least one per queue), each
    /// with its own ring, for requests of up to `payload` bytes.
    pub(crate) fn new(channel: &Channel, threads: usize, payload: usize) -> io::Result<Self> {
        let queues = possible_cpus()?;
        let per_queue = threads.div_ceil(queues).max(1);
        let mut rings = Vec::with_capacity(queues * per_queue);
        let warned = Arc::new(AtomicBool::new(false));
        for qid in 0..queues {
            let qid = u16::try_from(qid).map_err(|_| io::Error::other("too many CPUs"))?;
            for _ in 0..per_queue {
                rings.push(Arc::new(Ring::new(channel, qid, payload, &warned)?));
            }
        }
        Ok(Self { rings })
    }

    /// Starts the serving threads. If one cannot start, the kernel is made
    /// to give up io_uring for the connection (a REGISTER it refuses), so
    /// that requests go through `/dev/fuse` instead of waiting for a queue
    /// nobody serves.
    pub(crate) fn spawn<FS: Filesystem>(
        self,
        event_loop: impl Fn(String) -> SessionEventLoop<FS>,
    ) -> Vec<JoinHandle<io::Result<()>>> {
        let mut threads = Vec::with_capacity(self.rings.len());
        for (i, ring) in self.rings.iter().enumerate() {
            let name = format!("fuser-uring-{}-{i}", ring.qid);
            let se = event_loop(name.clone());
            let ring = Arc::clone(ring);
            match std::thread::Builder::new().name(name).spawn(move || ring.serve(se)) {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    error!("FUSE-over-io_uring: starting a queue's thread: {e}");
                    self.refuse();
                    break;
                }
            }
        }
        threads
    }

    /// Submits a REGISTER the kernel refuses (no iovecs), which turns
    /// io_uring off for the connection; waits for its completion.
    fn refuse(&self) {
        let Some(ring) = self.rings.first() else {
            return;
        };
        let sqe = uring_cmd(ring.fd, CMD_REGISTER, 0, ring.qid, None).user_data(u64::MAX);
        if let Err(e) = ring.submit(&sqe) {
            error!("FUSE-over-io_uring: cannot turn it off: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0,2-5"), Some(5));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn sqe_len_is_set() {
        let sqe = uring_cmd(3, CMD_REGISTER, 7, 1, Some(0x1000));
        #[allow(unsafe_code)]
        let raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        assert_eq!(u32::from_ne_bytes(raw[24..28].try_into().unwrap()), 2);
        assert_eq!(u64::from_ne_bytes(raw[16..24].try_into().unwrap()), 0x1000);
        // The command area (offset 48): flags, commit id, queue.
        assert_eq!(u64::from_ne_bytes(raw[56..64].try_into().unwrap()), 7);
        assert_eq!(u16::from_ne_bytes(raw[64..66].try_into().unwrap()), 1);
    }

    #[test]
    fn header_layout() {
        assert_eq!(HEADER_SIZE, 288);
        assert_eq!(size_of::<EntInOut>(), 32);
        assert_eq!(IN_HEADER, 40);
        assert_eq!(OUT_HEADER, 16);
    }
}

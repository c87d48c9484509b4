//! The tools' only `unsafe` code: C library calls that no crate wraps.

#![allow(unsafe_code)]

use std::ffi::CString;

/// `fnmatch(pattern, text, 0) == 0`; `false` when either holds a NUL byte.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (Ok(pattern), Ok(text)) = (CString::new(pattern), CString::new(text)) else {
        return false;
    };
    // SAFETY: two valid NUL-terminated strings that outlive the call;
    // fnmatch only reads them.
    unsafe { libc::fnmatch(pattern.as_ptr(), text.as_ptr(), 0) == 0 }
}

/// Writes `data` to the inherited descriptor `fd` (a tool's `--status-fd`),
/// at its own offset (opening `/proc/self/fd/N` would start a new one).
pub fn write_inherited_fd(fd: i32, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::BorrowedFd;
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is only borrowed for these calls; fcntl(F_GETFD) checks
    // that it is open before anything is written to it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(fd)?;
    let mut rest = data;
    while !rest.is_empty() {
        let n = rustix::io::write(fd, rest)?;
        rest = &rest[n..];
    }
    Ok(())
}

/// SIGINT and SIGQUIT ignored while it lives, as `system(3)` does while
/// its command runs: the terminal's interrupts are the command's.
#[derive(Debug)]
pub struct IgnoreInterrupts {
    saved: [(libc::c_int, libc::sighandler_t); 2],
}

impl IgnoreInterrupts {
    /// Ignores them until dropped.
    pub fn new() -> IgnoreInterrupts {
        let ignore = |sig| {
            // SAFETY: SIG_IGN is a valid disposition; the old one is kept
            // to be put back.
            (sig, unsafe { libc::signal(sig, libc::SIG_IGN) })
        };
        IgnoreInterrupts {
            saved: [ignore(libc::SIGINT), ignore(libc::SIGQUIT)],
        }
    }
}

impl Default for IgnoreInterrupts {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        for (sig, old) in self.saved {
            if old != libc::SIG_ERR {
                // SAFETY: puts back the disposition signal(2) returned.
                unsafe { libc::signal(sig, old) };
            }
        }
    }
}

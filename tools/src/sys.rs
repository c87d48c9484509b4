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

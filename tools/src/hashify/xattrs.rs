//! The extended attributes a unified file keeps (docs/SEMANTICS.md
//! "hashify"): every xattr but vxfs's own tag and flags, so ACLs, file
//! capabilities (`security.capability`), security labels and `user.*`
//! attributes. Files are unified only when they carry the same ones (as
//! `hardlink --respect-xattrs`), and a new store entry gets them.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::io::Errno;

use super::Digest;

/// A file's kept xattrs, sorted by name.
pub type Xattrs = Vec<(OsString, Vec<u8>)>;

/// `/proc/self/fd/N`: the inode `fd` is open on (for the xattr calls, and
/// to reopen an `O_PATH` descriptor).
pub fn path_of(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

/// The kept xattrs of the file open as `fd`.
pub fn read(fd: BorrowedFd<'_>) -> Result<Xattrs, Errno> {
    vxfs::cow::kept_xattrs(&path_of(fd))
}

/// Sets `xattrs` on the file open as `fd` (after any chown of it).
pub fn write(fd: BorrowedFd<'_>, xattrs: &Xattrs) -> Result<(), Errno> {
    vxfs::cow::set_xattrs(&path_of(fd), xattrs)
}

/// What groups a file: its content's digest alone when it has no kept
/// xattrs (so entries made before xattrs counted keep their names), else
/// a digest of the content's digest and every name and value.
pub fn keyed(content: Digest, xattrs: &Xattrs) -> Digest {
    if xattrs.is_empty() {
        return content;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"vxfs-hashify xattrs 1\0");
    h.update(&content.0);
    for (name, value) in xattrs {
        use std::os::unix::ffi::OsStrExt;
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
    }
    Digest(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_change_the_key_and_none_keeps_the_content_digest() {
        let content = Digest(*blake3::hash(b"data").as_bytes());
        assert_eq!(keyed(content, &Vec::new()), content);
        let a = vec![(OsString::from("user.a"), b"1".to_vec())];
        let b = vec![(OsString::from("user.a"), b"2".to_vec())];
        // Name and value boundaries count.
        let c = vec![(OsString::from("user.a1"), Vec::new())];
        let keys = [keyed(content, &a), keyed(content, &b), keyed(content, &c)];
        assert!(keys.iter().all(|k| *k != content));
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_eq!(keyed(content, &a), keys[0]);
    }

    #[test]
    fn reads_and_writes_a_files_xattrs_but_not_vxfs_own() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let fa = std::fs::File::open(&a).unwrap();
        let fb = std::fs::File::open(&b).unwrap();
        let set = |name: &str, value: &[u8]| {
            rustix::fs::setxattr(&a, name, value, rustix::fs::XattrFlags::empty())
        };
        // tmpfs or ext4: user xattrs on regular files work on both.
        set("user.z", b"last").unwrap();
        set("user.a", b"first").unwrap();
        let _ = set(vxfs::tagging::XID_XATTR, b"5");
        let got = read(std::os::fd::AsFd::as_fd(&fa)).unwrap();
        assert_eq!(
            got,
            vec![
                (OsString::from("user.a"), b"first".to_vec()),
                (OsString::from("user.z"), b"last".to_vec()),
            ]
        );
        write(std::os::fd::AsFd::as_fd(&fb), &got).unwrap();
        assert_eq!(read(std::os::fd::AsFd::as_fd(&fb)).unwrap(), got);
    }
}

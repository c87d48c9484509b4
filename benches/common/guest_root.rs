//! What the guest benchmarks share: their command-line numbers and a
//! busybox guest root in a temporary directory under /var/tmp.

use std::path::PathBuf;

/// The number after `--NAME` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let flag = format!("--{name}");
    std::env::args()
        .skip_while(|a| *a != flag)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A temporary directory (`prefix`) holding `root/`: busybox with
/// `applets`, and an init that sleeps until SIGTERM.
pub fn busybox_root(prefix: &str, applets: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = base.path().join("root");
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is needed");
    for a in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("sbin/init"),
        "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 1; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("sbin/init"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    (base, root)
}

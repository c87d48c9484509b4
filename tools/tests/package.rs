//! The Debian package (`scripts/package.sh`): built from this tree,
//! installed with dpkg into a root of its own, it holds every command, man
//! page, completion and the unit where Debian puts them, and with its
//! binaries on PATH `mount -t fuse.vxfs` mounts and serves.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::Scratch;

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unmounts at the end, also when an assertion fails.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn the_package_installs_every_command_with_its_pages_and_mounts() {
    let scratch = Scratch::new();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = scratch.path().join("debs");
    let printed = run(Command::new("bash")
        .arg(workspace.join("scripts/package.sh"))
        .arg(&out)
        .current_dir(workspace));
    let deb = printed.lines().last().unwrap().trim().to_string();
    assert!(deb.ends_with(".deb"), "{printed}");
    let info = run(Command::new("dpkg-deb")
        .arg("--field")
        .arg(&deb)
        .arg("Package")
        .arg("Depends"));
    assert!(
        info.contains("Package: vxfs") && info.contains("fuse3"),
        "{info}"
    );
    // Debian's checks: no error, no warning, no pedantic or informational
    // tag either.
    let lint = Command::new("lintian")
        .args(["-I", "--pedantic", "--tag-display-limit", "0"])
        .args(["--fail-on", "error,warning,info,pedantic"])
        .arg(&deb)
        .output()
        .expect("lintian is installed (scripts/setup.sh)");
    let said = String::from_utf8_lossy(&lint.stdout);
    assert!(
        lint.status.success() && said.trim().is_empty(),
        "lintian: {lint:?}"
    );

    // dpkg -i into a root of its own.
    let root = scratch.path().join("root");
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "--force-script-chrootless", "-i"])
        .arg(&deb));
    let listed = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-L", "vxfs"]));
    for tool in vxfs_tools::doc::tools() {
        let name = tool.name;
        for path in [
            format!("/usr/sbin/{name}"),
            format!("/usr/share/man/man8/{name}.8.gz"),
            format!("/usr/share/bash-completion/completions/{name}"),
        ] {
            assert!(
                listed.lines().any(|l| l == path),
                "{path} is not in the package"
            );
            assert!(root.join(&path[1..]).exists(), "{path} is not installed");
        }
    }
    assert!(
        listed.lines().any(|l| l == "/usr/share/man/man5/vxfs.5.gz"),
        "vxfs(5)"
    );
    let unit = fs::read_to_string(root.join("usr/lib/systemd/system/vserver@.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/sbin/vserver %i start"),
        "{unit}"
    );
    // man finds the installed pages.
    let page = run(Command::new("man")
        .arg("-w")
        .arg("vdlimit")
        .env("MANPATH", root.join("usr/share/man")));
    assert!(page.trim().ends_with("man8/vdlimit.8.gz"), "{page}");

    // mount -t fuse.vxfs with the packaged binaries on PATH.
    common::require_fuse();
    let (src, mnt) = (scratch.src(), scratch.mnt());
    fs::write(src.join("hello"), b"packaged\n").unwrap();
    let path = format!(
        "{}:{}",
        root.join("usr/sbin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("mount")
        .args(["-t", "fuse.vxfs"])
        .arg(&src)
        .arg(&mnt)
        .args(["-o", "xid=0"])
        .env("PATH", &path));
    let _mounted = Mounted(&mnt);
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"packaged\n");
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(&*mnt.to_string_lossy()) && l.contains("fuse.vxfs")),
        "{mounts}"
    );
    fs::write(mnt.join("through"), b"the mount").unwrap();
    assert_eq!(fs::read(src.join("through")).unwrap(), b"the mount");
}

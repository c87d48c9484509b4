//! `chxid` and `lsxid` end to end: retagging through a mount (the daemon
//! moves the usage), listing, `--backing` on a SOURCE tree, and refusals.

mod common;

use std::fs;
use std::path::Path;

use common::{CHXID, GUEST_UID, LSXID, Mount, VDLIMIT, index, refused_off_vxfs, run, run_as, s};
use vxfs::tagging::XID_XATTR;

/// The backing inode's raw tag (`None`: no xattr, the host's).
fn backing_tag(path: &Path) -> Option<String> {
    common::backing_xattr(path, XID_XATTR)
}

/// lsxid's expected lines.
fn lines(rows: &[(u32, &str)]) -> String {
    rows.iter()
        .map(|(x, p)| format!("{x:>20}  {p}\n"))
        .collect()
}

/// d/{f, .h, link -> f, sub/g}, created through the mount by root (so
/// tagged 0, the host).
fn make_tree(m: &Path) {
    fs::create_dir_all(m.join("d/sub")).unwrap();
    fs::write(m.join("d/f"), b"data").unwrap();
    fs::write(m.join("d/.h"), b"hidden").unwrap();
    fs::write(m.join("d/sub/g"), b"g").unwrap();
    std::os::unix::fs::symlink("f", m.join("d/link")).unwrap();
}

#[test]
fn chxid_retags_through_the_mount_and_lsxid_shows_it() {
    let scratch = common::scratch();
    let mount = Mount::scratch(
        &scratch,
        &format!("xid=uid/1000,index={}", index(&scratch).display()),
    );
    let m = mount.path();
    make_tree(m);
    let d = format!("{}/d", s(m));
    let src_d = scratch.src().join("d");

    assert_eq!(
        run(LSXID, &[&d]).ok(),
        lines(&[
            (0, &d),
            (0, &format!("{d}/f")),
            (0, &format!("{d}/link")),
            (0, &format!("{d}/sub")),
        ]),
        "a directory is listed, itself first, without dot files"
    );

    // One file. If this gives EPERM, the daemon does not support retagging
    // through the mount (trusted.vxfs.xid setxattr by the host admin).
    run(CHXID, &["-c", "5", &format!("{d}/f")]).ok();
    assert_eq!(
        run(LSXID, &["-d", &format!("{d}/f")]).ok(),
        lines(&[(5, &format!("{d}/f"))])
    );
    assert_eq!(backing_tag(&src_d.join("f")).as_deref(), Some("5"));
    // The symlink itself is retagged, not its target.
    run(CHXID, &["-c", "9", &format!("{d}/link")]).ok();
    assert_eq!(backing_tag(&src_d.join("link")).as_deref(), Some("9"));
    assert_eq!(backing_tag(&src_d.join("f")).as_deref(), Some("5"));
    // Without -R a directory operand is retagged itself only.
    run(CHXID, &["-c", "6", &d]).ok();
    assert_eq!(backing_tag(&src_d).as_deref(), Some("6"));
    assert_eq!(backing_tag(&src_d.join("sub")), None);

    // Recursive, dot files included; the usage moves with the tags.
    run(VDLIMIT, &["-x", "7", "-s", "inodes_total=100", s(m)]).ok();
    run(CHXID, &["-R", "-c", "7", &d]).ok();
    let all: Vec<(u32, String)> = ["", "/.h", "/f", "/link", "/sub", "/sub/g"]
        .iter()
        .map(|p| (7, format!("{d}{p}")))
        .collect();
    let all: Vec<(u32, &str)> = all.iter().map(|(x, p)| (*x, p.as_str())).collect();
    assert_eq!(run(LSXID, &["-R", "-a", &d]).ok(), lines(&all));
    assert_eq!(
        run(LSXID, &["-R", &d]).ok(),
        lines(&[all[0], all[2], all[3], all[4], all[5]]),
        "dot files only with -a"
    );
    let shown = run(VDLIMIT, &["-x", "7", s(m)]);
    assert!(shown.ok().contains("\ninodes_used=6\n"), "{shown:?}");

    // Back to the host: the xattr goes away.
    run(CHXID, &["-c", "0", &format!("{d}/f")]).ok();
    assert_eq!(backing_tag(&src_d.join("f")), None);
    assert!(
        run(VDLIMIT, &["-x", "7", s(m)])
            .ok()
            .contains("\ninodes_used=5\n")
    );

    // A guest may not retag or read tags.
    let f = format!("{d}/f");
    run_as(GUEST_UID, CHXID, &["-c", "5", &f]).fails(1, "needs CAP_SYS_ADMIN");
    run_as(GUEST_UID, LSXID, &[&f]).fails(1, "needs CAP_SYS_ADMIN");
    assert_eq!(backing_tag(&src_d.join("f")), None);
    drop(mount);
}

#[test]
fn plain_paths_are_refused_unless_backing() {
    let scratch = common::scratch();
    let plain = scratch.native();
    fs::write(plain.join("f"), b"x").unwrap();
    fs::write(plain.join("g"), b"y").unwrap();
    let (f, g) = (format!("{}/f", s(&plain)), format!("{}/g", s(&plain)));

    refused_off_vxfs(CHXID, &["-c", "5"], &[&f, &g]);
    assert_eq!(backing_tag(&plain.join("f")), None);
    let r = refused_off_vxfs(LSXID, &[], &[&f]);
    assert_eq!(r.stdout, format!("{:<20}  {f}\n", "!!ERR!!"));
    // A directory off vxfs is one error, not one per entry.
    refused_off_vxfs(LSXID, &[], &[s(&plain)]);
    refused_off_vxfs(CHXID, &["-c", "5"], &[s(&plain)]);

    // --backing works on the tree directly, with a warning about usage.
    let r = run(CHXID, &["--backing", "-c", "5", &f]);
    r.ok();
    assert!(r.stderr.contains("usage counters are not moved"), "{r:?}");
    assert_eq!(backing_tag(&plain.join("f")).as_deref(), Some("5"));
    assert_eq!(
        run(LSXID, &["--backing", s(&plain)]).ok(),
        lines(&[(0, s(&plain)), (5, &f), (0, &g)])
    );

    // A missing file fails alone; the others are still done.
    let r = run(CHXID, &["--backing", "-c", "3", "/nonexistent", &g]);
    r.fails(1, "chxid: /nonexistent: No such file or directory");
    assert_eq!(backing_tag(&plain.join("g")).as_deref(), Some("3"));
}

#[test]
fn one_filesystem_stops_at_mount_points() {
    let scratch = common::scratch();
    let mount = Mount::scratch(&scratch, "xid=uid/1000");
    fs::write(mount.path().join("inside"), b"i").unwrap();
    let root = s(scratch.path()).to_string();
    let inside = format!("{root}/mnt/inside");
    let crossing = run(LSXID, &["-R", "--backing", &root]);
    assert!(
        crossing.ok().contains(&format!("  {inside}\n")),
        "{crossing:?}"
    );
    let staying = run(LSXID, &["-R", "-x", "--backing", &root]);
    // Neither the mount point nor anything below it (the daemon's log file
    // beside it, mnt.vxfs.log, is not below it).
    let out = staying.ok();
    assert!(!out.contains(&format!("  {root}/mnt\n")), "{staying:?}");
    assert!(!out.contains(&format!("  {root}/mnt/")), "{staying:?}");
    assert!(
        staying.stdout.contains(&format!("  {root}/native\n")),
        "{staying:?}"
    );
    drop(mount);
}

#[test]
fn bad_command_lines_exit_2() {
    let table: &[(&str, &[&str], &str)] = &[
        (CHXID, &["f"], "chxid: no context given (-c XID)"),
        (CHXID, &["-c", "5"], "chxid: no file given"),
        (
            CHXID,
            &["-c", "x1", "f"],
            "chxid: -c: 'x1' is not a context number",
        ),
        (LSXID, &["-q"], "lsxid: unknown option '-q'"),
    ];
    for (bin, args, message) in table {
        let r = run(bin, args);
        r.fails(2, message);
        assert!(r.stderr.contains("Usage: "), "{r:?}");
    }
}

#[test]
fn chxid_never_retags_a_shared_inode() {
    use std::os::unix::fs::MetadataExt;
    let scratch = common::scratch();
    let mount = Mount::scratch(
        &scratch,
        &format!("xid=uid/1000,index={}", index(&scratch).display()),
    );
    let m = mount.path();
    // A unified file shared by guests 2 and 3, the way hashify makes them.
    for g in ["g2", "g3", "store"] {
        fs::create_dir(m.join(g)).unwrap();
    }
    fs::write(m.join("store/bin"), b"a shared binary").unwrap();
    rustix::fs::lsetxattr(
        m.join("store/bin"),
        "trusted.vxfs.iattr",
        b"393216",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fs::hard_link(m.join("store/bin"), m.join("g2/bin")).unwrap();
    fs::hard_link(m.join("store/bin"), m.join("g3/bin")).unwrap();
    let shared = fs::metadata(m.join("store/bin")).unwrap().ino();
    // -U skips it.
    run(CHXID, &["-U", "-c", "2", s(&m.join("g2/bin"))]).ok();
    assert_eq!(fs::metadata(m.join("g2/bin")).unwrap().ino(), shared);
    assert_eq!(backing_tag(&scratch.src().join("store/bin")), None);
    // Without it, g2's name gets a private copy tagged 2; g3 and the store
    // keep the shared inode, untagged, and guest 3 still reads it.
    run(CHXID, &["-c", "2", s(&m.join("g2/bin"))]).ok();
    assert_ne!(fs::metadata(m.join("g2/bin")).unwrap().ino(), shared);
    assert_eq!(
        backing_tag(&scratch.src().join("g2/bin")).as_deref(),
        Some("2")
    );
    assert_eq!(fs::metadata(m.join("g3/bin")).unwrap().ino(), shared);
    assert_eq!(backing_tag(&scratch.src().join("store/bin")), None);
    assert_eq!(fs::read(m.join("g2/bin")).unwrap(), b"a shared binary");
    common::as_user(3000, 3000, || {
        assert_eq!(fs::read(m.join("g3/bin")).unwrap(), b"a shared binary")
    });
    drop(mount);
}

#[test]
fn a_backing_retag_with_the_index_makes_the_next_mount_recount() {
    let scratch = common::scratch();
    let index = index(&scratch);
    let mount = Mount::scratch(&scratch, &format!("xid=uid/1000,index={}", index.display()));
    fs::write(mount.path().join("f"), vec![1u8; 16384]).unwrap();
    // While mounted the index cannot be marked: retag through the mount.
    let f = scratch.src().join("f");
    run(
        CHXID,
        &["--backing", "--index", s(&index), "-c", "5", s(&f)],
    )
    .fails(1, "in use by a mounted vxfs");
    assert!(mount.unmount().success());
    run(
        VDLIMIT,
        &["-x", "5", "-s", "space_total=1000", "--index", s(&index)],
    )
    .ok();
    let r = run(
        CHXID,
        &["--backing", "--index", s(&index), "-c", "5", s(&f)],
    );
    r.ok();
    assert!(r.stderr.contains("the next mount recounts"), "{r:?}");
    // The next mount counts the retagged file for context 5.
    let mount = Mount::scratch(&scratch, &format!("xid=uid/1000,index={}", index.display()));
    let out = run(VDLIMIT, &["-x", "5", s(mount.path())]).ok().to_string();
    assert!(out.contains("space_used=16\n"), "{out}");
    assert!(out.contains("inodes_used=1\n"), "{out}");
    drop(mount);
}

#[test]
fn a_refusal_names_the_mount_that_holds_the_file() {
    // The scratch area's filesystem, bind-mounted somewhere else too: a
    // file off vxfs is named with the mount it is under, not the other.
    let scratch = common::scratch();
    let (from, to) = (
        scratch.path().join("bind-from"),
        scratch.path().join("bind-to"),
    );
    fs::create_dir(&from).unwrap();
    fs::create_dir(&to).unwrap();
    let ok = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&from)
        .arg(&to)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    struct Unbind(std::path::PathBuf);
    impl Drop for Unbind {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unbind = Unbind(to.clone());
    let f = scratch.native().join("f");
    fs::write(&f, b"x").unwrap();
    let r = run(LSXID, &[s(&f)]);
    assert_eq!(r.code, 1, "{r:?}");
    let named = r
        .stderr
        .split("mounted at ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no mount named: {r:?}"));
    assert!(
        f.starts_with(named),
        "named {named}, which does not hold the file: {r:?}"
    );
}

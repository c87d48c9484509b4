//! `setattr` and `showattr` end to end: flags set through a mount (the
//! host administrator only) and shown, negation, raw masks, recursion,
//! `--backing` on a SOURCE tree, and refusals.

mod common;

use std::fs;
use std::path::Path;

use common::{GUEST_UID, Mount, SETATTR, SHOWATTR, index, refused_off_vxfs, run, run_as, s};
use vxfs::iattr::IATTR_XATTR;

/// The backing inode's raw flags (`None`: no xattr, no flags).
fn backing_flags(path: &Path) -> Option<String> {
    common::backing_xattr(path, IATTR_XATTR)
}

/// showattr's expected lines.
fn lines(rows: &[(&str, &str)]) -> String {
    rows.iter()
        .map(|(letters, p)| format!("{letters} {p}\n"))
        .collect()
}

/// `showattr -d PATH`'s letters.
fn letters(path: &str) -> String {
    let out = run(SHOWATTR, &["-d", path]);
    let line = out.ok().strip_suffix('\n').expect("one line").to_string();
    let (letters, name) = line.split_once(' ').expect("letters, a space, the name");
    assert_eq!(name, path);
    letters.to_string()
}

/// d/{f, .h, link -> f, sub/g}, created through the mount by root.
fn make_tree(m: &Path) {
    fs::create_dir_all(m.join("d/sub")).unwrap();
    fs::write(m.join("d/f"), b"data").unwrap();
    fs::write(m.join("d/.h"), b"hidden").unwrap();
    fs::write(m.join("d/sub/g"), b"g").unwrap();
    std::os::unix::fs::symlink("f", m.join("d/link")).unwrap();
}

/// A tagging mount (`xid=uid/1000`) with the scratch area's index.
fn tagged_mount(scratch: &common::Scratch) -> Mount {
    Mount::scratch(
        scratch,
        &format!("xid=uid/1000,index={}", index(scratch).display()),
    )
}

/// A tagging mount holding [`make_tree`]; the tree's path through it.
fn tree_mount() -> (common::Scratch, Mount, String) {
    let scratch = common::scratch();
    let mount = tagged_mount(&scratch);
    make_tree(mount.path());
    let d = format!("{}/d", s(mount.path()));
    (scratch, mount, d)
}

#[test]
fn setattr_then_showattr_through_the_mount() {
    let (scratch, mount, d) = tree_mount();
    let (f, sub, link) = (format!("{d}/f"), format!("{d}/sub"), format!("{d}/link"));
    let src_d = scratch.src().join("d");

    assert_eq!(
        run(SHOWATTR, &[&d]).ok(),
        lines(&[
            ("----buicX", &d),
            ("-----uicX", &f),
            ("-----uicX", &link),
            ("----buicX", &sub),
        ]),
        "a directory is listed, itself first, without dot files"
    );

    // A unified file. If this gives EPERM, the daemon does not let the
    // host set trusted.vxfs.iattr through the mount.
    run(SETATTR, &["--iunlink", &f]).ok();
    assert_eq!(letters(&f), "-----UIcX");
    assert_eq!(backing_flags(&src_d.join("f")).as_deref(), Some("393216"));
    // Barrier sticks to directories only: silently dropped on a file.
    run(SETATTR, &["--barrier", &f]).ok();
    assert_eq!(letters(&f), "-----UIcX");
    run(SETATTR, &["--cow", &f]).ok();
    assert_eq!(letters(&f), "-----UICX");
    // Negation: --~iunlink clears both, --!cow the cow flag; no flags
    // left removes the xattr.
    run(SETATTR, &["--~iunlink", &f]).ok();
    assert_eq!(letters(&f), "-----uiCX");
    run(SETATTR, &["--!cow", &f]).ok();
    assert_eq!(letters(&f), "-----uicX");
    assert_eq!(backing_flags(&src_d.join("f")), None);
    // iunlink alone, immutable alone, and their negations.
    run(SETATTR, &["--ixunlink", &f]).ok();
    assert_eq!(letters(&f), "-----UicX");
    run(
        SETATTR,
        &["--immutable", "--~iunlink-but-not-immutable", &f],
    )
    .ok();
    assert_eq!(letters(&f), "-----uIcX");
    run(SETATTR, &["--!immutable", &f]).ok();
    assert_eq!(letters(&f), "-----uicX");

    // Without -R a directory operand is changed itself; cow sticks to
    // regular files only.
    run(SETATTR, &["--barrier", "--cow", &sub]).ok();
    assert_eq!(letters(&sub), "----BuicX");
    assert_eq!(backing_flags(&src_d.join("sub/g")), None);
    assert_eq!(backing_flags(&src_d.join("sub")).as_deref(), Some("65536"));
    // The symlink itself, not its target.
    run(SETATTR, &["--iunlink", &link]).ok();
    assert_eq!(letters(&link), "-----UIcX");
    assert_eq!(letters(&f), "-----uicX");

    // Raw masks, strtol base 0.
    run(SETATTR, &["--flags", "0x80000", "--flags=01000000", &f]).ok();
    assert_eq!(letters(&f), "-----uICX");
    assert_eq!(backing_flags(&src_d.join("f")).as_deref(), Some("786432"));
    run(SETATTR, &["--~flags", "0xc0000", &f]).ok();
    assert_eq!(letters(&f), "-----uicX");
    // Clearing wins over setting, as vc_set_iattr(set & ~del, set | del).
    run(SETATTR, &["--iunlink", "--~immutable", &f]).ok();
    assert_eq!(letters(&f), "-----UicX");
    run(SETATTR, &["--~ixunlink", &f]).ok();
    drop(mount);
}

#[test]
fn recursion_covers_dot_files_and_listing_skips_them() {
    let (scratch, mount, d) = tree_mount();
    let names = ["", "/.h", "/f", "/link", "/sub", "/sub/g"];

    run(SETATTR, &["-R", "--ixunlink", &d]).ok();
    for p in names {
        assert_eq!(
            backing_flags(&scratch.src().join(format!("d{p}"))).as_deref(),
            Some("131072"),
            "d{p}"
        );
    }
    let paths: Vec<String> = names.iter().map(|p| format!("{d}{p}")).collect();
    let want = |with_dots: bool| {
        let rows: Vec<(&str, &str)> = paths
            .iter()
            .filter(|p| with_dots || !p.ends_with("/.h"))
            .map(|p| {
                let dir = p == &d || p.ends_with("/sub");
                (if dir { "----bUicX" } else { "-----UicX" }, p.as_str())
            })
            .collect();
        lines(&rows)
    };
    assert_eq!(run(SHOWATTR, &["-R", "-a", &d]).ok(), want(true));
    assert_eq!(run(SHOWATTR, &["-R", &d]).ok(), want(false));

    run(SETATTR, &["-R", "--~ixunlink", &d]).ok();
    for p in names {
        assert_eq!(backing_flags(&scratch.src().join(format!("d{p}"))), None);
    }
    drop(mount);
}

#[test]
fn procfs_and_userland_flags_are_refused_per_file() {
    let scratch = common::scratch();
    let mount = tagged_mount(&scratch);
    let m = mount.path();
    fs::write(m.join("f"), b"f").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    let (f, d) = (format!("{}/f", s(m)), format!("{}/d", s(m)));
    for flag in ["--admin", "--watch", "--hide", "--write", "--~hide"] {
        let r = run(SETATTR, &[flag, "--immutable", &f, &d]);
        r.fails(1, &format!("setattr: {f}: Invalid argument"));
        assert!(
            r.stderr
                .contains(&format!("setattr: {d}: Invalid argument")),
            "each file: {r:?}"
        );
    }
    assert_eq!(backing_flags(&scratch.src().join("f")), None);
    assert_eq!(backing_flags(&scratch.src().join("d")), None);
    drop(mount);
}

/// Runs a tool as root in a new pid namespace: what a guest's root looks
/// like to a fixed-context mount.
fn in_guest_pid_ns(bin: &str, args: &[&str]) -> common::Run {
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--", bin])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run unshare (util-linux)");
    common::Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn guests_may_not_change_flags() {
    // An unprivileged guest: the kernel keeps trusted.* from it.
    let scratch = common::scratch();
    let mount = tagged_mount(&scratch);
    let f = mount.path().join("f");
    fs::write(&f, b"f").unwrap();
    let f = s(&f).to_string();
    run_as(GUEST_UID, SETATTR, &["--immutable", &f]).fails(1, "needs CAP_SYS_ADMIN");
    run_as(GUEST_UID, SHOWATTR, &[&f]).fails(1, "needs CAP_SYS_ADMIN");
    assert_eq!(backing_flags(&scratch.src().join("f")), None);
    drop(mount);

    // A guest's root, with CAP_SYS_ADMIN: the daemon answers EPERM, and
    // may read the flags.
    // (On a fixed-context mount nobody is the host administrator, so g is
    // flagged in SOURCE before mounting.)
    let scratch = common::scratch();
    fs::write(scratch.src().join("f"), b"f").unwrap();
    fs::write(scratch.src().join("g"), b"g").unwrap();
    rustix::fs::lsetxattr(
        scratch.src().join("g"),
        "trusted.vxfs.iattr",
        b"393216",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let mount = Mount::scratch(&scratch, "xid=5");
    let (f, g) = (mount.path().join("f"), mount.path().join("g"));
    let (f, g) = (s(&f).to_string(), s(&g).to_string());
    run(SETATTR, &["--immutable", &f]).fails(1, "Operation not permitted");
    let r = in_guest_pid_ns(SETATTR, &["--immutable", &f, &g]);
    r.fails(1, &format!("setattr: {f}: Operation not permitted"));
    assert!(r.stderr.contains("only the host administrator"), "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("setattr: {g}: Operation not permitted")),
        "{r:?}"
    );
    let r = in_guest_pid_ns(SETATTR, &["--~iunlink", &g]);
    r.fails(1, "Operation not permitted");
    assert_eq!(backing_flags(&scratch.src().join("f")), None);
    assert_eq!(
        backing_flags(&scratch.src().join("g")).as_deref(),
        Some("393216")
    );
    let r = in_guest_pid_ns(SHOWATTR, &[&f, &g]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, lines(&[("-----uicX", &f), ("-----UIcX", &g)]));
    drop(mount);
}

#[test]
fn backing_mode_and_plain_paths() {
    let scratch = common::scratch();
    let plain = scratch.native();
    fs::write(plain.join("f"), b"x").unwrap();
    fs::create_dir(plain.join("d")).unwrap();
    let (f, d) = (format!("{}/f", s(&plain)), format!("{}/d", s(&plain)));

    // Off vxfs: refused per operand, with the way out; a directory once,
    // not per entry.
    refused_off_vxfs(SETATTR, &["--iunlink"], &[&f, &d]);
    assert_eq!(backing_flags(&plain.join("f")), None);
    let r = refused_off_vxfs(SHOWATTR, &[], &[&f]);
    assert_eq!(r.stdout, format!("ERR       {f}\n"));
    refused_off_vxfs(SHOWATTR, &[], &[s(&plain)]);

    // --backing: the backing inodes directly; no mount tags them.
    run(SETATTR, &["--backing", "--iunlink", &f]).ok();
    run(SETATTR, &["--backing", "--barrier", "--cow", &d]).ok();
    assert_eq!(backing_flags(&plain.join("f")).as_deref(), Some("393216"));
    assert_eq!(backing_flags(&plain.join("d")).as_deref(), Some("65536"));
    assert_eq!(
        run(SHOWATTR, &["--backing", s(&plain)]).ok(),
        lines(&[
            ("----buic-", s(&plain)),
            ("----Buic-", &d),
            ("-----UIc-", &f)
        ])
    );
    // A missing file fails alone; the others are still done.
    let r = run(SETATTR, &["--backing", "--~iunlink", "/nonexistent", &f]);
    r.fails(1, "setattr: /nonexistent: No such file or directory");
    assert_eq!(backing_flags(&plain.join("f")), None);

    // A corrupt value: ERR, and only a change deciding every flag
    // replaces it.
    rustix::fs::lsetxattr(
        plain.join("f"),
        IATTR_XATTR,
        b"junk",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let r = run(SHOWATTR, &["--backing", &f]);
    r.fails(1, "corrupt trusted.vxfs.iattr value \"junk\"");
    assert_eq!(r.stdout, format!("ERR       {f}\n"));
    run(SETATTR, &["--backing", "--cow", &f]).fails(1, "--~flags 0xf0000");
    run(SETATTR, &["--backing", "--~flags", "0xf0000", &f]).ok();
    assert_eq!(backing_flags(&plain.join("f")), None);
}

#[test]
fn backing_changes_reach_a_running_daemon() {
    let scratch = common::scratch();
    let mount = Mount::scratch(
        &scratch,
        &format!(
            "xid=uid/1000,attr_timeout=0,entry_timeout=0,index={}",
            index(&scratch).display()
        ),
    );
    let f = mount.path().join("f");
    fs::write(&f, b"before").unwrap();
    let src_f = scratch.src().join("f");
    run(SETATTR, &["--backing", "--immutable", s(&src_f)]).ok();
    assert_eq!(letters(s(&f)), "-----uIcX");
    // The daemon re-reads the flags once the inode's ctime moved.
    let _ = fs::metadata(&f).unwrap();
    let write = fs::write(&f, b"after");
    assert_eq!(
        write.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EACCES)),
        "an immutable file is not writable"
    );
    run(SETATTR, &["--backing", "--~immutable", s(&src_f)]).ok();
    let _ = fs::metadata(&f).unwrap();
    fs::write(&f, b"after").unwrap();
    drop(mount);
}

#[test]
fn an_untagged_mount_shows_no_tag() {
    let scratch = common::scratch();
    let mount = Mount::scratch(&scratch, "");
    let f = mount.path().join("f");
    fs::write(&f, b"f").unwrap();
    run(SETATTR, &["--iunlink", s(&f)]).ok();
    assert_eq!(letters(s(&f)), "-----UIc-");
    drop(mount);
}

#[test]
fn bad_command_lines_exit_2() {
    let table: &[(&str, &[&str], &str)] = &[
        (SETATTR, &["f"], "setattr: no flag given"),
        (SETATTR, &["--iunlink"], "setattr: no file given"),
        (
            SETATTR,
            &["--frozen", "f"],
            "setattr: unknown option '--frozen'",
        ),
        (
            SETATTR,
            &["--flags", "0x1g", "f"],
            "setattr: --flags: bad flag mask '0x1g'",
        ),
        (
            SETATTR,
            &["--flags"],
            "setattr: option '--flags' needs a value",
        ),
        (SETATTR, &["-c", "5", "f"], "setattr: unknown option '-c'"),
        (SHOWATTR, &["-n"], "showattr: unknown option '-n'"),
        (
            SHOWATTR,
            &["--cow", "f"],
            "showattr: unknown option '--cow'",
        ),
    ];
    for (bin, args, message) in table {
        let r = run(bin, args);
        r.fails(2, message);
        assert!(r.stderr.contains("Usage: "), "{r:?}");
    }
    for bin in [SETATTR, SHOWATTR] {
        assert!(run(bin, &["--help"]).ok().contains("--backing"));
    }
}

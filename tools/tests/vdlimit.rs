//! `vdlimit` end to end: offline on an index, online through a mount's
//! admin and guest sockets, and the refusals.

mod common;

use common::{GUEST_UID, Mount, Scratch, VDLIMIT, index, run, run_as, s, sh_as};
use vxfs::dlimit::Limit;
use vxfs::index::Index;
use vxfs::tagging::Xid;

fn block(xid: u32, path: &str, fields: [&str; 5]) -> String {
    format!(
        "{xid} {path}\nspace_used={}\nspace_total={}\ninodes_used={}\ninodes_total={}\nreserved={}\n",
        fields[0], fields[1], fields[2], fields[3], fields[4]
    )
}

fn opts(scratch: &Scratch) -> String {
    format!("xid=uid/1000,index={}", index(scratch).display())
}

#[test]
fn offline_set_show_remove_via_index() {
    let scratch = common::scratch();
    let index = index(&scratch);
    let i = s(&index);
    run(VDLIMIT, &["-x", "5", "--index", i]).fails(1, "does not exist");
    assert!(!index.exists(), "showing must not create an index");

    run(
        VDLIMIT,
        &[
            "-x",
            "5",
            "-s",
            "space_total=0x400",
            "-s",
            "inodes_total=100",
            "-s",
            "reserved=5",
            "--index",
            i,
        ],
    )
    .ok();
    let (db, _) = Index::open(&index).unwrap();
    assert_eq!(
        db.limits().unwrap(),
        vec![(
            Xid(5),
            Limit {
                space: Some(1024 * 1024),
                inodes: Some(100),
                reserved: 5
            }
        )]
    );
    drop(db);

    let shown = run(VDLIMIT, &["--xid", "5", "--index", i]);
    assert_eq!(
        shown.ok(),
        block(5, i, ["unknown", "1024", "unknown", "100", "5"])
    );
    assert!(shown.stderr.contains("usage unknown"), "{shown:?}");

    // Fields not given keep their value; -1 is unlimited; used is ignored.
    let set = run(
        VDLIMIT,
        &[
            "-x",
            "5",
            "--set=inodes_total=-1",
            "--set",
            "space_used=7",
            "--index",
            i,
        ],
    );
    set.ok();
    assert!(set.stderr.contains("space_used is ignored"), "{set:?}");
    assert_eq!(
        run(VDLIMIT, &["-x", "5", "--index", i]).ok(),
        block(5, i, ["unknown", "1024", "unknown", "-1", "5"])
    );

    run(
        VDLIMIT,
        &["-x", "7", "-s", "space_total=2048", "--index", i],
    )
    .ok();
    assert_eq!(
        run(VDLIMIT, &["--list", "--json", "--index", i]).ok(),
        format!(
            "[{{\"mount\":null,\"source\":null,\"index\":\"{i}\",\"contexts\":[\
             {{\"xid\":5,\"space_used\":null,\"space_total\":1024,\"inodes_used\":null,\
             \"inodes_total\":null,\"reserved\":5}},\
             {{\"xid\":7,\"space_used\":null,\"space_total\":2048,\"inodes_used\":null,\
             \"inodes_total\":null,\"reserved\":0}}]}}]\n"
        )
    );

    run(VDLIMIT, &["-x", "5", "--remove", "--index", i]).ok();
    run(VDLIMIT, &["-x", "5", "--index", i]).fails(1, "no limit for context 5");
    run(VDLIMIT, &["-x", "5", "-d", "--index", i]).fails(1, "no limit for context 5");
    let listed = run(VDLIMIT, &["-l", "--index", i]);
    assert!(
        listed
            .ok()
            .starts_with(&format!("Project quota on {i} ({i})\n"))
    );
    assert!(listed.stdout.contains("\n#7  "), "{listed:?}");
    assert!(!listed.stdout.contains("\n#5  "), "{listed:?}");
}

#[test]
fn offline_source_knows_usage_after_a_clean_unmount_and_can_recount() {
    let scratch = common::scratch();
    let src = scratch.src();
    let source = s(&src);
    // --source: the default index SOURCE.vxfs.db, which the mount also uses.
    run(
        VDLIMIT,
        &["-x", "5", "-s", "space_total=10000", "--source", source],
    )
    .ok();
    assert!(scratch.path().join("src.vxfs.db").exists());
    let mount = Mount::scratch(&scratch, "xid=uid/1000");
    let m = s(mount.path()).to_string();
    assert!(sh_as(
        GUEST_UID,
        &format!("head -c 8192 /dev/zero > {m}/f && mkdir {m}/d")
    ));
    let online = run(VDLIMIT, &["-x", "5", &m]);
    let live = online.ok().replacen(&m, source, 1);

    // While the daemon holds the index, offline changes are refused.
    run(
        VDLIMIT,
        &["-x", "5", "-s", "space_total=1", "--source", source],
    )
    .fails(1, "is in use by a mounted vxfs");
    let during = run(VDLIMIT, &["-x", "5", "--source", source]);
    assert!(during.stderr.contains("in use by"), "{during:?}");
    assert!(during.stdout.contains("space_used=unknown"), "{during:?}");
    // ... but a recount is exact even then.
    assert_eq!(
        run(VDLIMIT, &["-x", "5", "--source", source, "--recount"]).ok(),
        live
    );

    mount.unmount();
    let after = run(VDLIMIT, &["-x", "5", "--source", source]);
    assert_eq!(after.ok(), live, "the clean unmount saved the counters");
    assert_eq!(after.stderr, "");
    assert_eq!(
        run(VDLIMIT, &["-x", "5", "--source", source, "--recount"]).ok(),
        live
    );
    assert!(live.contains("inodes_used=2\n"), "{live}");
}

#[test]
fn online_set_show_list_and_json() {
    let scratch = common::scratch();
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    let m = s(mount.path()).to_string();
    let src = s(&scratch.src()).to_string();

    run(VDLIMIT, &["-x", "5", &m]).fails(
        1,
        &format!("vdlimit: {m}: no disk limit and no usage for context 5"),
    );
    assert!(sh_as(
        GUEST_UID,
        &format!("head -c 8192 /dev/zero > {m}/before")
    ));
    run(
        VDLIMIT,
        &[
            "-x",
            "5",
            "-s",
            "space_total=64",
            "-s",
            "inodes_total=3",
            &m,
        ],
    )
    .ok();
    assert_eq!(
        run(VDLIMIT, &["-x", "5", &m]).ok(),
        block(5, &m, ["8", "64", "1", "3", "0"]),
        "usage counted before the limit was set"
    );
    // The limit holds at once.
    assert!(!sh_as(
        GUEST_UID,
        &format!("head -c 131072 /dev/zero > {m}/big")
    ));
    std::fs::remove_file(mount.path().join("big")).unwrap();

    run(
        VDLIMIT,
        &[
            "-x",
            "6",
            "-s",
            "space_total=-1",
            "-s",
            "inodes_total=10",
            "-s",
            "reserved=2",
            &m,
        ],
    )
    .ok();
    let list = run(VDLIMIT, &["--list", &m]);
    let want = format!(
        "Project quota on {m} ({src})\n\
         {blank:31}Blocks{blank:42}Inodes{blank:21}\n\
         Project ID       Used       Soft       Hard    Warn/Grace           Used       Soft       Hard    Warn/ Grace     \n\
         ---------- -------------------------------------------------- -------------------------------------------------- \n\
         #0                  4  unlimited  unlimited     00 [--------]          1  unlimited  unlimited     00 [--------]\n\
         #5                  8         64         64     00 [--------]          1          3          3     00 [--------]\n\
         #6                  0  unlimited  unlimited     00 [--------]          0         10         10     00 [--------]\n\
         \n",
        blank = ""
    );
    assert_eq!(list.ok(), want);
    // On a terminal (script(1) gives it one) a usage bar follows each
    // limited context's row; the table stays as it is.
    let tty = std::process::Command::new("script")
        .args(["-qec", &format!("{VDLIMIT} --list {m}"), "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    let shown = String::from_utf8_lossy(&tty.stdout).replace("\r\n", "\n");
    assert!(
        shown.contains("00 [--------]  [##..................]  12%\n"),
        "{shown}"
    );
    assert!(shown.contains("#6 "), "{shown}");

    assert_eq!(
        run(VDLIMIT, &["-l", "--json", &m]).ok(),
        format!(
            "[{{\"mount\":\"{m}\",\"source\":\"{src}\",\"index\":null,\"contexts\":[\
             {{\"xid\":0,\"space_used\":4,\"space_total\":null,\"inodes_used\":1,\
             \"inodes_total\":null,\"reserved\":0}},\
             {{\"xid\":5,\"space_used\":8,\"space_total\":64,\"inodes_used\":1,\
             \"inodes_total\":3,\"reserved\":0}},\
             {{\"xid\":6,\"space_used\":0,\"space_total\":null,\"inodes_used\":0,\
             \"inodes_total\":10,\"reserved\":2}}]}}]\n"
        )
    );
    assert_eq!(
        run(VDLIMIT, &["-x", "6", "--json", &m, &m]).ok(),
        format!(
            "[{{\"path\":\"{m}\",\"xid\":6,\"space_used\":0,\"space_total\":null,\
             \"inodes_used\":0,\"inodes_total\":10,\"reserved\":2}},\
             {{\"path\":\"{m}\",\"xid\":6,\"space_used\":0,\"space_total\":null,\
             \"inodes_used\":0,\"inodes_total\":10,\"reserved\":2}}]\n"
        )
    );

    // For node_exporter's textfile collector: every family once, its
    // HELP and TYPE first, no sample for an unlimited limit.
    let labels = |xid: u32| format!("{{tree=\"{m}\",source=\"{src}\",xid=\"{xid}\"}}");
    let want = format!(
        "# HELP vxfs_context_space_used_bytes Bytes a context's files use on a vxfs tree.\n\
         # TYPE vxfs_context_space_used_bytes gauge\n\
         vxfs_context_space_used_bytes{l0} 4096\n\
         vxfs_context_space_used_bytes{l5} 8192\n\
         vxfs_context_space_used_bytes{l6} 0\n\
         # HELP vxfs_context_space_limit_bytes A context's space limit on a vxfs tree (absent: unlimited).\n\
         # TYPE vxfs_context_space_limit_bytes gauge\n\
         vxfs_context_space_limit_bytes{l5} 65536\n\
         # HELP vxfs_context_inodes_used Inodes a context's files use on a vxfs tree.\n\
         # TYPE vxfs_context_inodes_used gauge\n\
         vxfs_context_inodes_used{l0} 1\n\
         vxfs_context_inodes_used{l5} 1\n\
         vxfs_context_inodes_used{l6} 0\n\
         # HELP vxfs_context_inodes_limit A context's inode limit on a vxfs tree (absent: unlimited).\n\
         # TYPE vxfs_context_inodes_limit gauge\n\
         vxfs_context_inodes_limit{l5} 3\n\
         vxfs_context_inodes_limit{l6} 10\n\
         # HELP vxfs_context_reserved_ratio The share of a context's space limit kept for root in it.\n\
         # TYPE vxfs_context_reserved_ratio gauge\n\
         vxfs_context_reserved_ratio{l0} 0\n\
         vxfs_context_reserved_ratio{l5} 0\n\
         vxfs_context_reserved_ratio{l6} 0.02\n",
        l0 = labels(0),
        l5 = labels(5),
        l6 = labels(6),
    );
    assert_eq!(
        run(VDLIMIT, &["-l", "--format", "prometheus", &m]).ok(),
        want
    );
    // Two trees: each family still once.
    let twice = run(VDLIMIT, &["-l", "--format=prometheus", &m, &m])
        .ok()
        .to_string();
    assert_eq!(
        twice
            .matches("# TYPE vxfs_context_space_used_bytes")
            .count(),
        1
    );
    assert_eq!(twice.matches("vxfs_context_space_used_bytes{").count(), 6);
    run(VDLIMIT, &["-x", "5", "--format", "prometheus", &m])
        .fails(2, "--format prometheus is --list's");
    run(VDLIMIT, &["-l", "--format", "xml", &m]).fails(2, "one of text, json, prometheus");

    run(VDLIMIT, &["-x", "6", "-d", &m]).ok();
    run(VDLIMIT, &["-x", "6", "-d", &m]).fails(1, "no disk limit for context 6");
    // A broken pipe is not an error.
    let mut child = std::process::Command::new(VDLIMIT)
        .args(["-l", &m])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    mount.unmount();
    // The daemon persisted the online changes.
    let i = s(&index(&scratch)).to_string();
    assert_eq!(
        run(VDLIMIT, &["-x", "5", "--index", &i]).ok(),
        block(5, &i, ["8", "64", "1", "3", "0"])
    );
    run(VDLIMIT, &["-x", "6", "--index", &i]).fails(1, "no limit for context 6");
}

#[test]
fn a_guest_reads_its_own_limits_but_cannot_change_them() {
    let scratch = common::scratch();
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    let m = s(mount.path()).to_string();
    run(
        VDLIMIT,
        &[
            "-x",
            "5",
            "-s",
            "space_total=1000",
            "-s",
            "inodes_total=50",
            &m,
        ],
    )
    .ok();
    assert!(sh_as(GUEST_UID, &format!("echo hi > {m}/mine")));
    let own = block(5, &m, ["4", "1000", "1", "50", "0"]);

    assert_eq!(run_as(GUEST_UID, VDLIMIT, &["-x", "5", &m]).ok(), own);
    assert_eq!(run_as(GUEST_UID, VDLIMIT, &["--xid", "self", &m]).ok(), own);
    let listed = run_as(GUEST_UID, VDLIMIT, &["--list", &m]);
    assert!(
        listed.ok().contains("\n#5                  4       1000"),
        "{listed:?}"
    );

    let refusal = "not permitted: a guest may only read its own context's limits";
    run_as(GUEST_UID, VDLIMIT, &["-x", "6", &m]).fails(1, refusal);
    let set = run_as(
        GUEST_UID,
        VDLIMIT,
        &["-x", "5", "-s", "space_total=99999", &m],
    );
    set.fails(1, refusal);
    assert!(set.stderr.contains("needs root on the host"), "{set:?}");
    run_as(GUEST_UID, VDLIMIT, &["-x", "5", "-d", &m]).fails(1, refusal);
    // Another guest, without a limit.
    run_as(6000, VDLIMIT, &["-x", "self", &m]).fails(1, "no limit and no usage for your context");
    assert_eq!(run(VDLIMIT, &["-x", "5", &m]).ok(), own, "nothing changed");
}

#[test]
fn bad_command_lines_exit_2_with_a_message() {
    let table: &[(&[&str], &str)] = &[
        (&["/mnt"], "no context given (--xid XID)"),
        (&["-x", "5"], "no mount point given"),
        (
            &["-x", "5", "-s", "space_total=abc", "/mnt"],
            "--set space_total: bad value 'abc'",
        ),
        (
            &["-x", "5", "-s", "bogus=1", "/mnt"],
            "unknown limit 'bogus'",
        ),
        (
            &[
                "-x",
                "5",
                "-s",
                "space_total=1",
                "-s",
                "space_total=2",
                "/mnt",
            ],
            "value already set: space_total",
        ),
        (
            &["-x", "5", "-s", "space_total=1", "-d", "/mnt"],
            "--set and --remove exclude each other",
        ),
        (
            &[
                "-x",
                "5",
                "-s",
                "space_used=9",
                "-s",
                "space_total=8",
                "/mnt",
            ],
            "space_used (9) is above",
        ),
        (
            &["-x", "web", "/mnt"],
            "--xid: 'web' is not a context number",
        ),
        (
            &["-x", "5", "--frobnicate", "/mnt"],
            "unknown option '--frobnicate'",
        ),
    ];
    for (args, message) in table {
        let r = run(VDLIMIT, args);
        r.fails(2, &format!("vdlimit: {message}"));
        assert!(r.stderr.contains("Usage: vdlimit"), "{r:?}");
        assert_eq!(r.stdout, "", "{args:?}");
    }
    let help = run(VDLIMIT, &["--help"]);
    assert!(help.ok().starts_with("Usage: vdlimit"));
}

#[test]
fn paths_without_a_daemon_are_explained() {
    let scratch = common::scratch();
    let plain = s(&scratch.native()).to_string();
    run(VDLIMIT, &["-x", "5", &plain]).fails(1, &format!("vdlimit: {plain}: not on a vxfs mount"));
    run(VDLIMIT, &["-x", "5", "/nonexistent/x"]).fails(1, "No such file or directory");
    // Tagging off: the mount serves no limits.
    let mount = Mount::scratch(&scratch, "");
    let m = s(mount.path()).to_string();
    let r = run(VDLIMIT, &["-x", "5", &m]);
    r.fails(1, "no vxfs daemon serves disk limits for this mount");
    assert!(
        r.stderr.contains("--index PATH or --source SOURCE"),
        "{r:?}"
    );
    // Several paths: each is reported, the good ones still shown.
    drop(mount);
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    run(VDLIMIT, &["-x", "5", "-s", "inodes_total=9", &m]).ok();
    let r = run(VDLIMIT, &["-x", "5", &plain, &m]);
    r.fails(1, &format!("vdlimit: {plain}: not on a vxfs mount"));
    assert_eq!(r.stdout, block(5, &m, ["0", "-1", "0", "9", "0"]));
    drop(mount);
}

#[test]
fn an_offline_recount_after_a_crash_is_stored_for_the_next_mount() {
    let scratch = common::scratch();
    let src = scratch.src();
    let source = s(&src).to_string();
    run(
        VDLIMIT,
        &["-x", "5", "-s", "space_total=10000", "--source", &source],
    )
    .ok();
    let mount = Mount::scratch(&scratch, "xid=uid/1000");
    let m = s(mount.path()).to_string();
    assert!(sh_as(GUEST_UID, &format!("head -c 8192 /dev/zero > {m}/f")));
    let live = run(VDLIMIT, &["-x", "5", &m]).ok().replacen(&m, &source, 1);
    mount.crash();
    // Unclean: usage unknown offline until a recount, which is stored.
    let unknown = run(VDLIMIT, &["-x", "5", "--source", &source]);
    assert!(unknown.stdout.contains("space_used=unknown"), "{unknown:?}");
    let recount = run(VDLIMIT, &["-x", "5", "--source", &source, "--recount"]);
    assert_eq!(recount.ok(), live);
    assert!(
        recount.stderr.contains("stored the recounted usage"),
        "{recount:?}"
    );
    let after = run(VDLIMIT, &["-x", "5", "--source", &source]);
    assert_eq!(after.ok(), live, "the stored recount is clean");
}

#[test]
fn usage_shows_before_any_limit_is_set() {
    let scratch = common::scratch();
    let mount = Mount::scratch(&scratch, &opts(&scratch));
    let m = s(mount.path()).to_string();
    assert!(sh_as(7000, &format!("head -c 8192 /dev/zero > {m}/f7")));
    assert_eq!(
        run(VDLIMIT, &["-x", "7", &m]).ok(),
        block(7, &m, ["8", "-1", "1", "-1", "0"])
    );
    let list = run(VDLIMIT, &["--list", &m]).ok().to_string();
    assert!(
        list.contains("#7                  8  unlimited  unlimited     00 [--------]          1  unlimited  unlimited"),
        "{list}"
    );
    // A context with neither usage nor a limit is still unknown.
    run(VDLIMIT, &["-x", "8", &m]).fails(1, "no disk limit and no usage for context 8");
}

//! `hashify` end to end, through real vxfs mounts: two guests (contexts 5
//! and 6 in an `xid=uid/1000` mount) with mostly identical trees.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{HASHIFY, Mount, Scratch, VDLIMIT, as_user, backing_xattr, run, run_as, s};
use vxfs::iattr::{IATTR_XATTR, IAttr};
use vxfs::tagging::XID_XATTR;
use vxfs_tools::hashify::{Options, Session};

/// The two guests: (context, uid, directory name).
const GUESTS: [(u32, u32, &str); 2] = [(5, 5000, "g5"), (6, 6000, "g6")];

/// The mtime every guest file gets (unless a file says otherwise).
const MTIME: i64 = 1_600_000_000;

/// Deterministic content: `len` bytes from `seed`.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// One file of a guest tree.
struct Spec {
    rel: &'static str,
    data: Vec<u8>,
    mode: u32,
    uid: u32,
    mtime: i64,
}

/// The files of guest `g` (0 or 1). Which of them are linked by default is
/// in [`LINKED`].
fn specs(g: usize) -> Vec<Spec> {
    let f = |rel, data, mode| Spec {
        rel,
        data,
        mode,
        uid: 0,
        mtime: MTIME,
    };
    vec![
        f("usr/bin/tool", pattern(1, 100_000), 0o755),
        f("usr/share/a.txt", pattern(2, 5000), 0o644),
        f("usr/share/sixteen", b"0123456789abcdef".to_vec(), 0o644),
        f("usr/share/tiny", b"0123456789abcde".to_vec(), 0o644),
        f("usr/share/cow", pattern(3, 20_000), 0o666),
        // Same size and metadata, other content: hashed, never linked.
        f("usr/share/unique", pattern(10 + g as u8, 5000), 0o644),
        // Same content, one piece of metadata differs.
        // (Sizes differ so that these are compared with nothing else.)
        f("usr/share/mode", pattern(4, 3000), [0o644, 0o600][g]),
        Spec {
            uid: [0, 1][g],
            ..f("usr/share/owner", pattern(5, 3001), 0o644)
        },
        Spec {
            mtime: MTIME + g as i64,
            ..f("usr/share/mtime", pattern(6, 3002), 0o644)
        },
        // Excluded by the default list.
        f("etc/motd", pattern(7, 4000), 0o644),
        f("etc/issue", pattern(8, 4001), 0o644),
        f("var/lib/state", pattern(9, 4002), 0o644),
    ]
}

/// The names linked by a default run, per guest (g5 also has
/// `usr/bin/tool2`, a hard link of `usr/bin/tool`, and both have the
/// sparse `usr/lib/libbig.so`).
const LINKED: [&str; 5] = [
    "usr/bin/tool",
    "usr/lib/libbig.so",
    "usr/share/a.txt",
    "usr/share/sixteen",
    "usr/share/cow",
];

/// A mount with two guests whose trees the guests wrote themselves (so
/// their usage is charged to them), then root gave every file its owner,
/// mode and mtime.
struct Guests {
    // The mount first: fields drop in order, and the scratch area cannot go
    // while it is mounted.
    mount: Mount,
    scratch: Scratch,
}

impl Guests {
    fn new() -> Guests {
        let scratch = common::scratch();
        let mount = Mount::scratch(
            &scratch,
            &format!("xid=uid/1000,index={}", common::index(&scratch).display()),
        );
        let g = Guests { mount, scratch };
        fs::create_dir(g.vservers()).unwrap();
        for (xid, uid, name) in GUESTS {
            run(
                VDLIMIT,
                &[
                    "-x",
                    &xid.to_string(),
                    "--set",
                    "space_total=1000000",
                    "--set",
                    "inodes_total=10000",
                    s(g.mount.path()),
                ],
            )
            .ok();
            let dir = g.guest(name);
            fs::create_dir(&dir).unwrap();
            rustix::fs::chown(
                &dir,
                Some(rustix::process::Uid::from_raw(uid)),
                Some(rustix::process::Gid::from_raw(uid)),
            )
            .unwrap();
            let index = GUESTS.iter().position(|x| x.2 == name).unwrap();
            let files = specs(index);
            as_user(uid, uid, || {
                for f in &files {
                    let path = dir.join(f.rel);
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(&path, &f.data).unwrap();
                }
                // A sparse file: 64 KiB of data at 0 and at 3 MiB of 4 MiB.
                fs::create_dir_all(dir.join("usr/lib")).unwrap();
                let big = fs::File::create(dir.join("usr/lib/libbig.so")).unwrap();
                big.set_len(4 << 20).unwrap();
                big.write_all_at(&pattern(20, 64 << 10), 0).unwrap();
                big.write_all_at(&pattern(21, 64 << 10), 3 << 20).unwrap();
                std::os::unix::fs::symlink("tool", dir.join("usr/bin/link")).unwrap();
                if name == "g5" {
                    fs::hard_link(dir.join("usr/bin/tool"), dir.join("usr/bin/tool2")).unwrap();
                }
            });
            for f in &files {
                set_meta(&dir.join(f.rel), f.mode, f.uid, f.mtime);
            }
            set_meta(&dir.join("usr/lib/libbig.so"), 0o644, 0, MTIME);
        }
        g
    }

    fn vservers(&self) -> PathBuf {
        self.mount.path().join("vservers")
    }

    fn guest(&self, name: &str) -> PathBuf {
        self.vservers().join(name)
    }

    fn roots(&self) -> Vec<String> {
        GUESTS
            .iter()
            .map(|g| s(&self.guest(g.2)).to_string())
            .collect()
    }

    /// The backing path of a mount path.
    fn backing(&self, p: &Path) -> PathBuf {
        self.scratch
            .src()
            .join(p.strip_prefix(self.mount.path()).unwrap())
    }

    /// hashify with `args` and the guest roots; its JSON summary's fields.
    fn hashify(&self, args: &[&str]) -> (common::Run, BTreeMap<String, String>) {
        let mut all: Vec<String> = vec!["--json".into(), "--no-progress".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(self.roots());
        let r = run(HASHIFY, &all);
        let json = r.stdout.lines().last().unwrap_or("").to_string();
        (r, fields(&json))
    }

    /// `(space_used KiB, inodes_used)` of context `xid`.
    fn usage(&self, xid: u32) -> (u64, u64) {
        let out = run(VDLIMIT, &["-x", &xid.to_string(), s(self.mount.path())]);
        let get = |key: &str| -> u64 {
            out.ok()
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{key} in {out:?}"))
        };
        (get("space_used="), get("inodes_used="))
    }
}

/// Root sets a file's mode, owner (and group) and mtime through the mount.
fn set_meta(path: &Path, mode: u32, uid: u32, mtime: i64) {
    rustix::fs::chown(
        path,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(uid)),
    )
    .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    let t = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// The flat fields of a one-line JSON object (numbers and strings).
fn fields(json: &str) -> BTreeMap<String, String> {
    let body = json.trim().trim_start_matches('{').trim_end_matches('}');
    body.split(',')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim_matches('"').to_string(),
                v.trim_matches('"').to_string(),
            )
        })
        .collect()
}

/// A file's content or a symlink's target (nothing for the rest).
fn data(path: &Path, md: &fs::Metadata) -> Vec<u8> {
    if md.file_type().is_file() {
        fs::read(path).unwrap()
    } else if md.file_type().is_symlink() {
        fs::read_link(path)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else {
        Vec::new()
    }
}

/// What a file looks like to a reader: kind, mode, owner, size, mtime and
/// content (or link target); keyed by path below `root`.
fn contents(root: &Path) -> BTreeMap<PathBuf, (u32, u32, u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    walk(
        root,
        root,
        &mut |path, md| {
            // A directory's mtime moves with hashify's temporary names.
            let mtime = if md.is_dir() { 0 } else { md.mtime() };
            (md.mode(), md.uid(), md.gid(), mtime, data(path, md))
        },
        &mut out,
    );
    out
}

/// Everything about a backing tree, for "changed nothing": identity, link
/// count, ctime, mtime, content and the vxfs xattrs (atime is left out:
/// reading a file moves it).
type Full = (
    u64,
    u64,
    u32,
    u32,
    i64,
    i64,
    i64,
    Vec<u8>,
    Option<String>,
    Option<String>,
);

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Full> {
    let mut out = BTreeMap::new();
    walk(
        root,
        root,
        &mut |path, md| {
            (
                md.ino(),
                md.nlink(),
                md.mode(),
                md.uid(),
                md.ctime() * 1_000_000_000 + md.ctime_nsec(),
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                md.size() as i64,
                data(path, md),
                backing_xattr(path, XID_XATTR),
                backing_xattr(path, IATTR_XATTR),
            )
        },
        &mut out,
    );
    out
}

fn walk<T>(
    root: &Path,
    dir: &Path,
    f: &mut dyn FnMut(&Path, &fs::Metadata) -> T,
    out: &mut BTreeMap<PathBuf, T>,
) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let md = fs::symlink_metadata(&path).unwrap();
        out.insert(
            path.strip_prefix(root).unwrap().to_path_buf(),
            f(&path, &md),
        );
        if md.is_dir() {
            walk(root, &path, f, out);
        }
    }
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn duplicates_become_one_host_owned_immutable_inode() {
    let g = Guests::new();
    let (g5, g6) = (g.guest("g5"), g.guest("g6"));
    // A native copy of the trees, the oracle for reading back.
    let native = g.scratch.native().join("vservers");
    assert!(
        std::process::Command::new("cp")
            .args(["-a", s(&g.vservers()), s(&native)])
            .status()
            .unwrap()
            .success()
    );
    let before = [g.usage(5), g.usage(6)];
    // What each guest should get back: the blocks of its unified inodes
    // (g5's tool and tool2 are one inode).
    let freed = |dir: &Path| -> (u64, u64) {
        LINKED.iter().fold((0, 0), |(kib, n), rel| {
            let md = fs::metadata(dir.join(rel)).unwrap();
            (kib + md.blocks() / 2, n + 1)
        })
    };
    let expected = [freed(&g5), freed(&g6)];

    let (r, sum) = g.hashify(&["-v"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(sum["mode"], "unify", "{sum:?}");
    assert_eq!(sum["linked"], "11", "{sum:?}");
    assert_eq!(sum["entries_new"], "5", "{sum:?}");
    assert_eq!(sum["failed"], "0", "{sum:?}");
    assert_eq!(sum["changed"], "0", "{sum:?}");
    // Only sizes and metadata that other inodes share are read: the five
    // linked pairs and the two 'unique' files of a.txt's size and metadata.
    assert_eq!(sum["hashed"], "12", "{sum:?}");
    for rel in LINKED {
        assert!(
            r.stdout
                .contains(&format!("unifying '{}'\n", s(&g5.join(rel)))),
            "{rel}: {r:#?}"
        );
    }
    assert!(
        r.stdout
            .contains(&format!("unifying '{}'\n", s(&g5.join("usr/bin/tool2"))))
    );

    // Each duplicate set is one inode: flagged, host-tagged, in the store.
    let store = g.vservers().join(".hashify");
    let unified = IAttr(IAttr::IMMUTABLE | IAttr::IUNLINK).0.to_string();
    for rel in LINKED {
        let (a, b) = (g5.join(rel), g6.join(rel));
        assert_eq!(ino(&a), ino(&b), "{rel}");
        let back = g.backing(&a);
        assert_eq!(
            backing_xattr(&back, IATTR_XATTR),
            Some(unified.clone()),
            "{rel}"
        );
        assert_eq!(
            backing_xattr(&back, XID_XATTR),
            None,
            "{rel}: tag 0, the host"
        );
        let want_links = if rel == "usr/bin/tool" { 4 } else { 3 };
        assert_eq!(
            fs::metadata(&a).unwrap().nlink(),
            want_links,
            "{rel}: store + guests"
        );
    }
    assert_eq!(
        ino(&g5.join("usr/bin/tool2")),
        ino(&g5.join("usr/bin/tool"))
    );
    // The sparse file stays sparse in the store.
    assert!(fs::metadata(g5.join("usr/lib/libbig.so")).unwrap().blocks() * 512 < 1 << 20);
    // Everything else is left alone.
    for rel in [
        "usr/share/tiny",
        "usr/share/unique",
        "usr/share/mode",
        "usr/share/owner",
        "usr/share/mtime",
        "etc/motd",
        "var/lib/state",
    ] {
        assert_ne!(ino(&g5.join(rel)), ino(&g6.join(rel)), "{rel}");
        assert_eq!(
            backing_xattr(&g.backing(&g5.join(rel)), IATTR_XATTR),
            None,
            "{rel}"
        );
    }

    // The store: mode 0700, barrier, guests kept out.
    let md = fs::metadata(&store).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o700);
    assert_eq!(
        backing_xattr(&g.backing(&store), IATTR_XATTR),
        Some(IAttr::BARRIER.to_string())
    );
    let listing = as_user(5000, 5000, || fs::read_dir(&store).map(|_| ()));
    assert_eq!(
        listing.unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );

    // Reads back exactly as before.
    assert_eq!(
        contents(&g.vservers())
            .into_iter()
            .filter(|(p, _)| !p.starts_with(".hashify"))
            .collect::<BTreeMap<_, _>>(),
        contents(&native)
    );

    // The guests' usage dropped by what their copies held.
    for (i, (xid, _, _)) in GUESTS.iter().enumerate() {
        let after = g.usage(*xid);
        assert_eq!(
            (before[i].0 - after.0, before[i].1 - after.1),
            expected[i],
            "context {xid}: before {:?}, after {after:?}",
            before[i]
        );
    }

    // A re-run changes nothing and reads nothing: unified files are
    // skipped, the rest reuse the hash index.
    let snap = snapshot(&g.scratch.src());
    let (r, sum) = g.hashify(&[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(
        (sum["hashed"].as_str(), sum["linked"].as_str()),
        ("0", "0"),
        "{sum:?}"
    );
    assert_eq!(sum["already_unified"], "11", "{sum:?}");
    assert_eq!(sum["reused"], "2", "the two 'unique' files: {sum:?}");
    assert_eq!(snapshot(&g.scratch.src()), snap);

    // A damaged hash index is moved aside and rebuilt, not fatal.
    let db = PathBuf::from(format!("{}.vxfs.db.hashify", s(&g.scratch.src())));
    fs::write(&db, vec![0x42; 4096]).unwrap();
    let (r, sum) = g.hashify(&[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("was damaged"), "{r:#?}");
    assert_eq!(sum["hashed"], "2", "{sum:?}");
    assert_eq!(snapshot(&g.scratch.src()), snap);

    // Once no guest links to an entry any more, a run removes it.
    fs::remove_file(g5.join("usr/share/a.txt")).unwrap();
    fs::remove_file(g6.join("usr/share/a.txt")).unwrap();
    let (r, sum) = g.hashify(&[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(sum["unused_removed"], "1", "{sum:?}");
    drop(g);
}

#[test]
fn dry_run_changes_nothing() {
    let g = Guests::new();
    let snap = snapshot(&g.scratch.src());
    let db = PathBuf::from(format!("{}.vxfs.db.hashify", s(&g.scratch.src())));
    let reads = || g.mount.request_counts().get("read").copied().unwrap_or(0);
    let before = reads();
    let (r, sum) = g.hashify(&["-n", "-v"]);
    assert_eq!(r.code, 0, "{r:#?}");
    // The hashing read SOURCE's files themselves, not through the mount.
    assert_eq!(reads(), before, "no READ went through the mount");
    assert_eq!(sum["mode"], "dry-run");
    assert_eq!(sum["linked"], "11", "what would be linked: {sum:?}");
    assert!(r.stdout.contains("unifying '"), "{r:#?}");
    assert_eq!(snapshot(&g.scratch.src()), snap);
    assert!(!g.vservers().join(".hashify").exists(), "no store");
    assert!(!db.exists(), "no hash index");

    // And after a real run, a dry run still changes nothing.
    g.hashify(&[]).0.ok();
    let snap = snapshot(&g.scratch.src());
    let db_bytes = fs::read(&db).unwrap();
    let (r, sum) = g.hashify(&["--dry-run"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(sum["linked"], "0", "{sum:?}");
    assert_eq!(snapshot(&g.scratch.src()), snap);
    assert_eq!(fs::read(&db).unwrap(), db_bytes);
}

#[test]
fn exclude_rules_and_ignore_mtime() {
    let g = Guests::new();
    let (g5, g6) = (g.guest("g5"), g.guest("g6"));
    let rules = g.scratch.path().join("rules");
    fs::write(&rules, "# keep the tools apart\n/usr/bin/*\n").unwrap();
    let (r, sum) = g.hashify(&[
        "--exclude",
        "+/etc/motd",
        "--exclude-from",
        s(&rules),
        "--ignore-mtime",
    ]);
    assert_eq!(r.code, 0, "{r:#?}");
    // +/etc/motd wins over the default /etc/*; /usr/bin/* is excluded;
    // the mtimes no longer need to match.
    for (rel, linked) in [
        ("etc/motd", true),
        ("etc/issue", false),
        ("usr/bin/tool", false),
        ("usr/share/mtime", true),
        ("usr/share/a.txt", true),
        ("usr/share/mode", false),
        ("usr/share/owner", false),
    ] {
        assert_eq!(ino(&g5.join(rel)) == ino(&g6.join(rel)), linked, "{rel}");
    }
    // a.txt, sixteen, cow, libbig, motd, mtime; tool (x2 in g5) excluded.
    assert_eq!(sum["linked"], "12", "{sum:?}");
    // The shared copy keeps the first guest's mtime.
    assert_eq!(
        fs::metadata(g6.join("usr/share/mtime")).unwrap().mtime(),
        MTIME
    );
}

#[test]
fn a_file_changed_during_the_run_is_left_alone() {
    let g = Guests::new();
    let (g5, g6) = (g.guest("g5"), g.guest("g6"));
    let mut opts = Options::new(vec![g5.clone(), g6.clone()]);
    opts.progress = Some(false);
    let mut session = Session::open(opts).unwrap();
    let prepared = session.prepare();
    // Between hashing and linking, a.txt of g6 is rewritten with other bytes of
    // the same size and puts its mtime back: only the ctime tells.
    let changed = g6.join("usr/share/a.txt");
    let other = pattern(99, 5000);
    fs::OpenOptions::new()
        .write(true)
        .open(&changed)
        .unwrap()
        .write_all_at(&other, 0)
        .unwrap();
    set_meta(&changed, 0o644, 0, MTIME);
    // And g6's tool goes away and comes back as another file with the
    // same content and metadata (likely under the same inode number, so
    // only the ctime tells).
    fs::remove_file(g6.join("usr/bin/tool")).unwrap();
    fs::write(g6.join("usr/bin/tool"), pattern(1, 100_000)).unwrap();
    set_meta(&g6.join("usr/bin/tool"), 0o755, 0, MTIME);

    let mut out = Vec::new();
    let summary = session.apply(prepared, &mut out).unwrap();
    assert_eq!(summary.changed, 2, "{summary:?}");
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert_ne!(ino(&g5.join("usr/share/a.txt")), ino(&changed));
    assert_eq!(
        fs::read(&changed).unwrap(),
        other,
        "the new content is kept"
    );
    assert_ne!(ino(&g5.join("usr/bin/tool")), ino(&g6.join("usr/bin/tool")));
    assert_eq!(
        ino(&g5.join("usr/share/cow")),
        ino(&g6.join("usr/share/cow"))
    );
    // The next run links the new tool (same content as the store entry).
    let (r, sum) = g.hashify(&[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(ino(&g5.join("usr/bin/tool")), ino(&g6.join("usr/bin/tool")));
    assert_eq!(sum["linked"], "1", "{sum:?}");
}

#[test]
fn a_guest_writing_its_copy_leaves_the_others_intact() {
    let g = Guests::new();
    let (g5, g6) = (g.guest("g5"), g.guest("g6"));
    g.hashify(&[]).0.ok();
    let (a, b) = (g5.join("usr/share/cow"), g6.join("usr/share/cow"));
    let shared = ino(&a);
    assert_eq!(ino(&b), shared);
    let before = g.usage(5);
    let written = as_user(5000, 5000, || {
        fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .and_then(|f| f.write_all_at(b"guest five was here", 0))
    });
    written.expect("the guest writes its (0666) copy");
    let mut want = pattern(3, 20_000);
    want[..19].copy_from_slice(b"guest five was here");
    assert_eq!(fs::read(&a).unwrap(), want);
    assert_ne!(ino(&a), shared, "a private copy");
    assert_eq!(
        backing_xattr(&g.backing(&a), XID_XATTR).as_deref(),
        Some("5")
    );
    assert_eq!(backing_xattr(&g.backing(&a), IATTR_XATTR), None);
    assert_eq!(
        fs::read(&b).unwrap(),
        pattern(3, 20_000),
        "g6's copy intact"
    );
    assert_eq!(ino(&b), shared);
    assert_eq!(
        g.usage(5).1,
        before.1 + 1,
        "the copy is charged to the writer"
    );
}

/// `getcap PATH`'s capabilities ("" without).
fn getcap(path: &Path) -> String {
    let out = std::process::Command::new("getcap")
        .arg(path)
        .output()
        .expect("getcap (libcap2-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).unwrap_or("").to_string()
}

fn setcap(caps: &str, path: &Path) {
    let st = std::process::Command::new("setcap")
        .arg(caps)
        .arg(path)
        .status()
        .expect("setcap (libcap2-bin)");
    assert!(st.success(), "setcap {caps} {}", path.display());
}

fn user_note(path: &Path) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    rustix::fs::lgetxattr(path, "user.note", &mut buf)
        .ok()
        .map(|n| buf[..n].to_vec())
}

fn set_user_note(path: &Path, value: &[u8]) {
    rustix::fs::lsetxattr(path, "user.note", value, rustix::fs::XattrFlags::empty()).unwrap();
}

#[test]
fn xattrs_are_kept_and_files_that_differ_in_them_stay_apart() {
    // A guest's ping keeps its file capability, ACLs and user xattrs stay,
    // and files that differ only in an xattr are not unified (as
    // `hardlink --respect-xattrs`).
    let g = Guests::new();
    let (g5, g6) = (g.guest("g5"), g.guest("g6"));
    for (dir, note) in [(&g5, b"same"), (&g6, b"same")] {
        let ping = dir.join("usr/bin/ping");
        fs::write(&ping, pattern(40, 30_000)).unwrap();
        set_meta(&ping, 0o777, 0, MTIME);
        setcap("cap_net_raw+ep", &ping);
        set_user_note(&ping, note);
    }
    for (dir, note) in [(&g5, b"five"), (&g6, b"six!")] {
        let other = dir.join("usr/bin/other");
        fs::write(&other, pattern(41, 30_000)).unwrap();
        set_meta(&other, 0o755, 0, MTIME);
        set_user_note(&other, note);
    }
    let (r, sum) = g.hashify(&[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(sum["failed"], "0", "{sum:?}");
    let (a, b) = (g5.join("usr/bin/ping"), g6.join("usr/bin/ping"));
    assert_eq!(ino(&a), ino(&b), "the two pings are one inode");
    for p in [&a, &b] {
        assert_eq!(getcap(p), "cap_net_raw=ep", "{}", p.display());
        assert_eq!(getcap(&g.backing(p)), "cap_net_raw=ep", "{}", p.display());
        assert_eq!(user_note(p).as_deref(), Some(&b"same"[..]));
    }
    let (x, y) = (g5.join("usr/bin/other"), g6.join("usr/bin/other"));
    assert_ne!(ino(&x), ino(&y), "different user.note: not unified");
    assert_eq!(user_note(&x).as_deref(), Some(&b"five"[..]));
    assert_eq!(user_note(&y).as_deref(), Some(&b"six!"[..]));
    // A guest's change breaks its link into a private copy that keeps the
    // capability and the note (a write would drop the capability, natively
    // too; another xattr does not).
    let shared = ino(&a);
    as_user(5000, 5000, || {
        rustix::fs::lsetxattr(&a, "user.extra", b"1", rustix::fs::XattrFlags::empty())
    })
    .expect("the guest may set a user xattr of its (0777) file");
    assert_ne!(ino(&a), shared, "a private copy");
    assert_eq!(
        getcap(&a),
        "cap_net_raw=ep",
        "the copy keeps its capability"
    );
    assert_eq!(user_note(&a).as_deref(), Some(&b"same"[..]));
    assert_eq!(ino(&b), shared);
    assert_eq!(getcap(&b), "cap_net_raw=ep");
}

#[test]
fn refusals() {
    let g = Guests::new();
    let native = g.scratch.native();
    fs::create_dir(native.join("x")).unwrap();
    let x = s(&native.join("x")).to_string();
    let g5 = s(&g.guest("g5")).to_string();
    let usr = s(&g.guest("g5").join("usr")).to_string();
    let table: &[(&[&str], &str)] = &[
        (&[&x], "not on a vxfs mount"),
        (&[&g5, &x], "on another filesystem"),
        (&[&g5, &usr], "overlap"),
        (&[], "no directory given"),
        (&["-j", "0", "x"], "--jobs"),
    ];
    for (args, needle) in table {
        let r = run(HASHIFY, args);
        r.fails(2, needle);
    }
    // A store off the guests' filesystem cannot hold their links.
    let r = run(
        HASHIFY,
        &["--store", s(&native.join("store")), s(&g.guest("g5"))],
    );
    r.fails(2, "not on the guests' filesystem");
    assert!(!native.join("store").exists());
    // Only the host administrator.
    run_as(5000, HASHIFY, &[s(&g.guest("g5"))]).fails(1, "needs CAP_SYS_ADMIN");
    assert!(!g.vservers().join(".hashify").exists());
}

/// Total allocation under `root` by an independent walk (every inode once).
fn du(root: &Path) -> u64 {
    common::du_by_tag(root)
        .values()
        .map(|(space, _)| space)
        .sum()
}

#[test]
fn user_namespace_guests_share_files_and_the_saved_figure_is_what_du_shows() {
    // One tree of id-range guests: g5's files owned by uids 5000.., g6's by
    // 6000.. (what a user namespace of each writes), same contents.
    let scratch = common::scratch();
    let mount = Mount::scratch(
        &scratch,
        &format!(
            "xid=uid/1000:5-6,index={}",
            common::index(&scratch).display()
        ),
    );
    let m = mount.path().to_path_buf();
    fs::create_dir(m.join("vservers")).unwrap();
    for (xid, uid, name) in GUESTS {
        let dir = m.join("vservers").join(name);
        fs::create_dir(&dir).unwrap();
        rustix::fs::chown(
            &dir,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(uid)),
        )
        .unwrap();
        let _ = xid;
        as_user(uid, uid, || {
            fs::create_dir_all(dir.join("usr/bin")).unwrap();
            for i in 0..40 {
                let f = dir.join(format!("usr/bin/tool{i}"));
                fs::write(&f, pattern(i as u8, 60_000 + 100 * i)).unwrap();
                fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
                let t = rustix::fs::Timespec {
                    tv_sec: MTIME,
                    tv_nsec: 0,
                };
                let times = rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                };
                rustix::fs::utimensat(rustix::fs::CWD, &f, &times, rustix::fs::AtFlags::empty())
                    .unwrap();
            }
        });
    }
    let vservers = scratch.src().join("vservers");
    let before = du(&vservers);
    let roots: Vec<String> = GUESTS
        .iter()
        .map(|(_, _, n)| s(&m.join("vservers").join(n)).to_string())
        .collect();
    let mut args = vec!["--json".to_string(), "--no-progress".to_string()];
    args.extend(roots.iter().cloned());
    let r = run(HASHIFY, &args);
    let summary = fields(r.ok().lines().last().unwrap());
    assert_eq!(summary["linked"], "80", "{summary:?}");
    // Unified across the two ranges, owned by the shared ids.
    for i in 0..40 {
        let a = fs::metadata(m.join(format!("vservers/g5/usr/bin/tool{i}"))).unwrap();
        let b = fs::metadata(m.join(format!("vservers/g6/usr/bin/tool{i}"))).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!((a.uid(), a.gid()), (0, 0), "stored in the host's range");
    }
    // Saved is exactly what du shows gone (store directories included).
    let after = du(&vservers);
    let saved: i64 = summary["bytes_saved"].parse().unwrap();
    assert_eq!(saved, before as i64 - after as i64, "{summary:?}");
    assert!(saved > 0);
    // Each guest's single-guest view shows its files in its own range.
    fs::create_dir(scratch.path().join("v5")).unwrap();
    let v5 = Mount::new(
        &scratch.src().join("vservers/g5"),
        &scratch.path().join("v5"),
        "xid=uid/1000:5-5",
    );
    let shown = fs::metadata(v5.path().join("usr/bin/tool3")).unwrap();
    assert_eq!((shown.uid(), shown.gid()), (5000, 5000));
    drop(v5);
    // The daemon's counters equal an independent walk.
    assert!(mount.unmount().success());
    let (index, _) = vxfs::index::Index::open(&common::index(&scratch)).unwrap();
    let saved_usage = index.clean_usage().unwrap().unwrap();
    let walk = common::du_by_tag(&scratch.src());
    for (xid, usage) in saved_usage {
        let (space, inodes) = walk.get(&xid.0).copied().unwrap_or_default();
        assert_eq!(
            (usage.space, usage.inodes),
            (space, inodes),
            "context {xid}"
        );
    }
}

#[test]
fn hashify_across_three_cgroup_guests_keeps_every_counter_exact() {
    // The hosting layout: one tree mounted once with xid=cgroup, three
    // guests as directories, each written by processes in its vx-XID
    // cgroup.
    let scratch = common::scratch();
    let mount = Mount::scratch(
        &scratch,
        &format!("xid=cgroup,index={}", common::index(&scratch).display()),
    );
    let m = mount.path().to_path_buf();
    fs::create_dir(m.join("vservers")).unwrap();
    let mut cg = common::TestCgroup::new();
    for xid in [101, 102, 103] {
        let dir = m.join(format!("vservers/g{xid}"));
        fs::create_dir(&dir).unwrap();
        let group = cg.sub(&format!("vx-{xid}"));
        let mut sh = common::Shell::new();
        cg.enter(Some(&group), sh.pid());
        let script = format!(
            "mkdir -p {d}/usr/lib && for i in $(seq 1 20); do \
               head -c $((40000 + i * 1000)) /dev/zero | tr '\\0' 'v' > {d}/usr/lib/lib$i.so && \
               touch -d @1600000000 {d}/usr/lib/lib$i.so; done",
            d = dir.display()
        );
        assert_eq!(sh.run(&script), 0);
        drop(sh);
        assert_eq!(
            backing_xattr(
                &scratch
                    .src()
                    .join(format!("vservers/g{xid}/usr/lib/lib1.so")),
                XID_XATTR
            )
            .as_deref(),
            Some(xid.to_string().as_str())
        );
    }
    let roots: Vec<String> = [101, 102, 103]
        .iter()
        .map(|x| s(&m.join(format!("vservers/g{x}"))).to_string())
        .collect();
    let mut args = vec!["--json".to_string(), "--no-progress".to_string()];
    args.extend(roots);
    let before = du(&scratch.src().join("vservers"));
    let summary = fields(run(HASHIFY, &args).ok().lines().last().unwrap());
    assert_eq!(summary["linked"], "60", "{summary:?}");
    let after = du(&scratch.src().join("vservers"));
    assert_eq!(
        summary["bytes_saved"].parse::<i64>().unwrap(),
        before as i64 - after as i64
    );
    // Live counters (vdlimit) and saved ones equal an independent walk.
    let walk = common::du_by_tag(&scratch.src());
    for xid in [101u32, 102, 103] {
        run(
            VDLIMIT,
            &[
                "-x",
                &xid.to_string(),
                "--set",
                "space_total=1000000",
                s(&m),
            ],
        )
        .ok();
        let out = run(VDLIMIT, &["-x", &xid.to_string(), s(&m)])
            .ok()
            .to_string();
        let (space, inodes) = walk.get(&xid).copied().unwrap_or_default();
        assert!(
            out.contains(&format!("space_used={}\n", space / 1024)),
            "{xid}: {out}"
        );
        assert!(
            out.contains(&format!("inodes_used={inodes}\n")),
            "{xid}: {out}"
        );
    }
    assert!(mount.unmount().success());
    let (index, _) = vxfs::index::Index::open(&common::index(&scratch)).unwrap();
    for (xid, usage) in index.clean_usage().unwrap().unwrap() {
        let (space, inodes) = walk.get(&xid.0).copied().unwrap_or_default();
        assert_eq!(
            (usage.space, usage.inodes),
            (space, inodes),
            "context {xid}"
        );
    }
}

#[test]
fn a_run_removes_the_swap_names_of_an_interrupted_one() {
    let g = Guests::new();
    let g5 = g.guest("g5");
    g.hashify(&[]).0.ok();
    // A run killed between its link and its unlink leaves a second name
    // for a file (here a guest's, as the swap leaves it); a running one's
    // names are not touched.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let stale = g5.join(format!("usr/share/.vxfs-hashify.{gone}.0"));
    let live = g5.join(format!("usr/share/.vxfs-hashify.{}.0", std::process::id()));
    fs::hard_link(g5.join("usr/share/a.txt"), &stale).unwrap();
    fs::hard_link(g5.join("usr/share/a.txt"), &live).unwrap();
    let (r, sum) = g.hashify(&["-n"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(sum["leftovers"], "1", "{sum:?}");
    assert!(stale.exists(), "a dry run changes nothing");
    let (r, sum) = g.hashify(&[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(
        (sum["leftovers"].as_str(), sum["linked"].as_str()),
        ("1", "0"),
        "{sum:?}"
    );
    assert!(!stale.exists());
    assert!(live.exists());
    assert!(g5.join("usr/share/a.txt").exists());
}

#[test]
fn progress_is_a_bar_on_a_terminal_and_lines_in_a_log() {
    let g = Guests::new();
    let with = |extra: &[&str]| {
        let mut all: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        all.extend(g.roots());
        run(HASHIFY, &all)
    };
    // stderr is a pipe here: nothing by default, plain lines with
    // --progress (each phase's first at once, no bar).
    let r = with(&["-n"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(!r.stderr.contains("scanning"), "{}", r.stderr);
    let r = with(&["-n", "--progress"]);
    assert_eq!(r.code, 0, "{r:#?}");
    for phase in [
        "hashify: scanning: ",
        "hashify: hashing: ",
        "hashify: linking: ",
    ] {
        assert!(r.stderr.contains(phase), "{phase}: {}", r.stderr);
    }
    assert!(
        !r.stderr.contains('\r'),
        "no bar drawn into a pipe: {:?}",
        r.stderr
    );
    // On a terminal (script(1) gives it one): bars, by default.
    let cmd = std::iter::once(HASHIFY.to_string())
        .chain(["-n".to_string()])
        .chain(g.roots())
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("linking: ") && text.contains(" groups, ") && text.contains("\r\u{1b}[2K"),
        "{text:?}"
    );
}

/// `hashify --json --store STORE ROOT`, which must succeed: its summary.
fn hashify_json(store: &Path, root: &Path) -> BTreeMap<String, String> {
    let r = run(
        HASHIFY,
        &["--json", "--no-progress", "--store", s(store), s(root)],
    );
    assert_eq!(r.code, 0, "{r:#?}");
    fields(r.stdout.lines().last().unwrap_or(""))
}

#[test]
fn the_daemon_swaps_names_and_without_it_they_go_through_the_mount() {
    // Each further name of a group is swapped by the daemon (one control
    // request per inode, none of the mount's link, exchange and unlink);
    // where the daemon cannot be reached (an older one, its socket gone),
    // through the mount.
    let scratch = Scratch::new();
    let mount = Mount::scratch(&scratch, "xid=uid/1000");
    let m = mount.path().to_path_buf();
    fs::create_dir(m.join("sub")).unwrap();
    let files = [("f1", 50), ("f2", 50), ("sub/a", 51), ("sub/b", 51)];
    for (path, seed) in files {
        fs::write(m.join(path), pattern(seed, 40_000)).unwrap();
        set_meta(&m.join(path), 0o644, 0, MTIME);
    }
    let store = m.join(".store");
    let hashify = || hashify_json(&store, &m);
    let unlinks = || mount.request_counts().get("unlink").copied().unwrap_or(0);
    let before = unlinks();
    let sum = hashify();
    assert_eq!(sum["linked"], "4", "{sum:?}");
    assert_eq!(ino(&m.join("f1")), ino(&m.join("f2")));
    assert_eq!(ino(&m.join("sub/a")), ino(&m.join("sub/b")));
    assert_eq!(fs::read(m.join("sub/b")).unwrap(), pattern(51, 40_000));
    assert_eq!(unlinks(), before, "the daemon swapped every name");
    // An inode with more names than one request carries.
    fs::create_dir(m.join("many")).unwrap();
    fs::write(m.join("many/a"), pattern(53, 40_000)).unwrap();
    set_meta(&m.join("many/a"), 0o644, 0, MTIME);
    fs::write(m.join("many/l000"), pattern(53, 40_000)).unwrap();
    set_meta(&m.join("many/l000"), 0o644, 0, MTIME);
    for i in 1..300 {
        fs::hard_link(m.join("many/l000"), m.join(format!("many/l{i:03}"))).unwrap();
    }
    let before = unlinks();
    let sum = hashify();
    assert_eq!(sum["linked"], "301", "{sum:?}");
    let shared = ino(&m.join("many/a"));
    for i in 0..300 {
        assert_eq!(ino(&m.join(format!("many/l{i:03}"))), shared, "l{i:03}");
    }
    assert_eq!(unlinks(), before, "the daemon swapped all 300 names");
    // Without the daemon's socket: through the mount.
    for (path, seed) in [("sub/c", 52), ("sub/d", 52)] {
        fs::write(m.join(path), pattern(seed, 40_000)).unwrap();
        set_meta(&m.join(path), 0o644, 0, MTIME);
    }
    let tree = fs::metadata(scratch.src()).unwrap();
    let socket = vxfs::control::socket_path(tree.dev(), tree.ino());
    let hidden = socket.with_extension("hidden");
    fs::rename(&socket, &hidden).unwrap();
    let before = unlinks();
    let r = run(
        HASHIFY,
        &["--json", "--no-progress", "--store", s(&store), s(&m)],
    );
    fs::rename(&hidden, &socket).unwrap();
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(ino(&m.join("sub/c")), ino(&m.join("sub/d")));
    assert_eq!(unlinks(), before + 1, "one swap through the mount");
    let left = |d: &Path| {
        fs::read_dir(d).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".vxfs-hashify.")
        })
    };
    assert!(!left(&m) && !left(&m.join("sub")), "no swap name is left");
}

#[test]
fn the_daemon_compares_a_twin_before_it_swaps_and_never_while_it_is_written() {
    use vxfs::control::{Client, Reply, Request};
    use vxfs::unify::{Swap, Swapped, Twin};
    let scratch = Scratch::new();
    let mount = Mount::scratch(&scratch, "xid=uid/1000");
    let m = mount.path().to_path_buf();
    // Real runs: copies of a file the store has are compared by the
    // daemon, so no byte of them is read through the mount (the first
    // run's new entry is re-read there once, frozen).
    fs::create_dir(m.join("d")).unwrap();
    let store = m.join(".store");
    let reads = || mount.request_counts().get("read").copied().unwrap_or(0);
    let hashify = |names: &[&str]| {
        for name in names {
            fs::write(m.join("d").join(name), pattern(60, 300_000)).unwrap();
            set_meta(&m.join("d").join(name), 0o644, 0, MTIME);
        }
        let before = reads();
        let sum = hashify_json(&store, &m);
        (sum["linked"].clone(), reads() - before)
    };
    assert_eq!(hashify(&["a", "b"]).0, "2");
    assert_eq!(
        hashify(&["c", "d", "e"]),
        ("3".to_owned(), 0),
        "the daemon compared the copies"
    );
    assert_eq!(ino(&m.join("d/a")), ino(&m.join("d/e")));

    // The request itself: a twin of the same size and times whose bytes
    // differ in the last one, one being written, one that is a twin, and
    // one the daemon does not know.
    let entry = fs::metadata(m.join("d/a")).unwrap();
    let mut odd = pattern(60, 300_000);
    *odd.last_mut().unwrap() ^= 1;
    for (name, data) in [("same", pattern(60, 300_000)), ("odd", odd)] {
        fs::write(m.join("d").join(name), data).unwrap();
        set_meta(&m.join("d").join(name), 0o644, 0, MTIME);
    }
    let tree = fs::metadata(scratch.src()).unwrap();
    let mut daemon = Client::connect(&vxfs::control::socket_path(tree.dev(), tree.ino()))
        .unwrap()
        .expect("the daemon listens");
    let parent = ino(&m.join("d"));
    let mut ask = |name: &str, twin_of: Option<u64>| {
        let md = fs::metadata(m.join("d").join(name)).unwrap();
        let twin = Twin {
            ino: twin_of.unwrap_or(md.ino()),
            entry: entry.ino(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec() as u32),
            ctime: (md.ctime(), md.ctime_nsec() as u32),
        };
        let swap = Swap {
            parent,
            name: name.as_bytes().to_vec(),
            entry: entry.ino(),
            ino: twin.ino,
            size: twin.size,
            mtime: twin.mtime,
        };
        let request = Request::UnifyVerified {
            twin,
            swaps: vec![swap],
        };
        match daemon.call(&request, &[]).unwrap() {
            Reply::Unified(done) => done,
            other => panic!("{other:?}"),
        }
    };
    let odd_ino = ino(&m.join("d/odd"));
    assert_eq!(
        ask("odd", None),
        [Swapped::Changed],
        "the last byte differs"
    );
    assert_eq!(ino(&m.join("d/odd")), odd_ino, "left as it was");
    let writer = fs::OpenOptions::new()
        .write(true)
        .open(m.join("d/same"))
        .unwrap();
    assert_eq!(ask("same", None), [Swapped::Changed], "open for writing");
    drop(writer);
    // Its RELEASE may be in flight: the daemon waits for it.
    assert_eq!(ask("same", None), [Swapped::Linked]);
    assert_eq!(ino(&m.join("d/same")), entry.ino());
    assert_eq!(
        fs::read(m.join("d/same")).unwrap(),
        pattern(60, 300_000),
        "the twin's bytes"
    );
    assert_eq!(
        ask("odd", Some(u64::MAX - 7)),
        [],
        "an inode it does not know"
    );
    assert_eq!(ino(&m.join("d/odd")), odd_ino);
}

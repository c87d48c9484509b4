//! Fuzzing of every parser that takes input from outside (issue 10): mount
//! options, the tools' arguments and numbers, the vroot protocol (the
//! codec, the client, and a live daemon's socket), exclude rules, the
//! SQLite indexes, mountinfo and cgroup texts, and file names through a
//! real mount.
//!
//! Each target first runs every entry of its corpus (`fuzz/corpus/*.txt`,
//! kept in the repository; a failure found is added there), then
//! `PROPTEST_CASES` (default: a CI-sized number per target) generated
//! inputs: corpus entries mutated (bytes flipped, inserted, deleted,
//! spliced), inputs built from the target's vocabulary, and random bytes.
//! Where an independent answer key exists it is used: glibc's `fnmatch`
//! and `strtol` for the exclude rules and numbers, the native filesystem
//! for names, the encoder for the decoders. Elsewhere the properties are
//! that nothing panics, errors say something, what is accepted parses the
//! same again, and what a daemon answers is what it did.
//!
//! `PROPTEST_CASES=100000 cargo test --release -p vxfs-tools --test fuzz`
//! runs a long campaign.

#![allow(unsafe_code)] // only in `oracle`: glibc as the answer key

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

use common::{Mount, Scratch};
use vxfs_tools::hashify::exclude::ExcludeList;

/// Generated cases per target: `PROPTEST_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Decodes a corpus line: `\\`, `\n`, `\t`, `\xNN`.
fn unescape(line: &str) -> Vec<u8> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(b'n')) => {
                out.push(b'\n');
                i += 2;
            }
            (b'\\', Some(b't')) => {
                out.push(b'\t');
                i += 2;
            }
            (b'\\', Some(b'x')) if line.get(i + 2..i + 4).is_some() => {
                match u8::from_str_radix(&line[i + 2..i + 4], 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 4;
                    }
                    Err(_) => {
                        out.push(b'\\');
                        i += 1;
                    }
                }
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The entries of `fuzz/corpus/NAME.txt`: each line but comments, its
/// fields split at (literal) tabs and unescaped.
fn corpus(name: &str) -> Vec<Vec<Vec<u8>>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(unescape).collect())
        .collect()
}

/// The single-field entries of a corpus.
fn corpus_lines(name: &str) -> Vec<Vec<u8>> {
    corpus(name).into_iter().map(|mut f| f.remove(0)).collect()
}

/// One change to an input.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutate(mut input: Vec<u8>, changes: &[Mutation]) -> Vec<u8> {
    for change in changes {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match change {
            Mutation::Flip(i, b) if !input.is_empty() => {
                let n = input.len();
                input[i % n] = *b;
            }
            Mutation::Flip(..) => input.push(0),
            Mutation::Insert(i, bytes) => {
                let i = at(*i, input.len());
                input.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i, input.len());
                let end = (i + n).min(input.len());
                input.drain(i..end);
            }
            Mutation::Duplicate(i, n) => {
                let i = at(*i, input.len());
                let end = (i + n).min(input.len());
                let copy = input[i..end].to_vec();
                input.splice(i..i, copy);
            }
        }
    }
    input
}

/// Inputs for a target: its corpus entries, mutated ones, inputs joined
/// from its `words`, and random bytes from `alphabet` (or any byte).
fn inputs(
    corpus: Vec<Vec<u8>>,
    words: &'static [&'static str],
    alphabet: &'static [u8],
    max: usize,
) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus.clone();
    let byte = prop_oneof![select(alphabet), any::<u8>()];
    prop_oneof![
        2 => (select(seeds), prop::collection::vec(mutation(), 0..4))
            .prop_map(|(seed, changes)| mutate(seed, &changes)),
        2 => prop::collection::vec(select(words), 0..10).prop_map(|w| w.concat().into_bytes()),
        1 => prop::collection::vec(byte, 0..max),
    ]
}

/// Runs `check` on every corpus entry, then on generated inputs; failures
/// found are saved to `fuzz/regressions/NAME.txt`.
fn fuzz<S: Strategy>(
    name: &str,
    default_cases: u32,
    seeds: impl IntoIterator<Item = S::Value>,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug + Clone,
{
    for seed in seeds {
        if let Err(e) = check(seed.clone()) {
            panic!("{name}: corpus entry {seed:?}: {e}");
        }
    }
    let saved: &'static str = Box::leak(
        format!(
            "{}/../fuzz/regressions/{name}.txt",
            env!("CARGO_MANIFEST_DIR")
        )
        .into_boxed_str(),
    );
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(saved))),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, check) {
        panic!("{name}: {e}");
    }
}

/// glibc, as the answer key.
mod oracle {
    use std::ffi::CString;

    /// `fnmatch(pattern, text, 0) == 0`; `None` for inputs with NUL bytes.
    pub fn fnmatch(pattern: &[u8], text: &[u8]) -> Option<bool> {
        let (p, t) = (CString::new(pattern).ok()?, CString::new(text).ok()?);
        // SAFETY: two valid NUL-terminated strings that outlive the call.
        Some(unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), 0) } == 0)
    }

    /// `strtol(s, &end, 0)`: the value, whether all of `s` was read, and
    /// whether it overflowed; `None` for inputs with NUL bytes.
    pub fn strtol(s: &str) -> Option<(i64, bool, bool)> {
        let c = CString::new(s).ok()?;
        let mut end: *mut libc::c_char = std::ptr::null_mut();
        // SAFETY: `c` is NUL-terminated and outlives the call; `end` is a
        // valid out-pointer; errno is this thread's.
        unsafe {
            *libc::__errno_location() = 0;
            let v = libc::strtol(c.as_ptr(), &mut end, 0);
            let overflow = *libc::__errno_location() == libc::ERANGE;
            let consumed = end.offset_from(c.as_ptr()) as usize;
            Some((v, !s.is_empty() && consumed == s.len(), overflow))
        }
    }
}

const OPTION_WORDS: &[&str] = &[
    "xid=",
    "uid/",
    "gid/",
    "cgroup",
    ":",
    "-",
    ",",
    "=",
    "dlimits=",
    "on",
    "off",
    "auto",
    "attr_timeout=",
    "entry_timeout=",
    "threads=",
    "passthrough=",
    "inode_fds=",
    "index=",
    "tree=",
    "/x",
    "notagcheck",
    "ro",
    "rw",
    "x-",
    "comment=",
    "0",
    "1",
    "2",
    "1000",
    "65536",
    "4294967295",
    "4294967296",
    "99999999999999999999",
    "0.5",
    "1e9",
];

#[test]
fn mount_options() {
    use vxfs::options::{Command, parse_args};
    use vxfs::tagging::ContextMode;
    let argv = |value: OsString| {
        vec![
            OsString::from("/src"),
            OsString::from("/mnt"),
            OsString::from("-o"),
            value,
        ]
    };
    let seeds = corpus_lines("mount_options");
    fuzz(
        "mount_options",
        3000,
        seeds.clone(),
        inputs(seeds, OPTION_WORDS, b"xid=uogcrp/:-,0123456789.", 80),
        |value| {
            match parse_args(argv(OsString::from_vec(value))) {
                Ok(Command::Mount(args)) => {
                    // What is accepted parses to the same again.
                    let words = OsString::from(args.option_words.join(","));
                    let again = parse_args(argv(words));
                    prop_assert_eq!(again.as_ref().ok(), Some(&Command::Mount(args.clone())));
                    // The mode as shown (view.json, messages) reads back.
                    let mode = args.fs.tagging.mode;
                    if mode != ContextMode::Off {
                        prop_assert_eq!(ContextMode::parse(&mode.to_string()), Ok(mode));
                    }
                }
                Ok(other) => prop_assert!(false, "{other:?} from -o"),
                Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
            }
            Ok(())
        },
    );
}

const VROOT_WORDS: &[&str] = &[
    "get",
    "list",
    "set",
    "remove",
    " ",
    "space_total=",
    "inodes_total=",
    "reserved=",
    "space_used=",
    "xid=",
    "inodes_used=",
    "-1",
    "0",
    "7",
    "100",
    "101",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "=",
    "\t",
];

/// Any request, for the encoder.
fn request() -> impl Strategy<Value = vroot::Request> {
    use vroot::{Field, Request};
    let field = prop_oneof![
        Just(Field::Keep),
        Just(Field::Unlimited),
        any::<u64>().prop_map(Field::Value)
    ];
    prop_oneof![
        Just(Request::Get(None)),
        any::<u32>().prop_map(|x| Request::Get(Some(x))),
        Just(Request::List),
        any::<u32>().prop_map(Request::Remove),
        (
            any::<u32>(),
            field.clone(),
            field,
            prop::option::of(0u8..=100)
        )
            .prop_map(|(xid, space_total, inodes_total, reserved)| Request::Set {
                xid,
                space_total,
                inodes_total,
                reserved,
            }),
    ]
}

#[test]
fn vroot_codec() {
    let seeds = corpus_lines("vroot_lines");
    fuzz(
        "vroot_lines",
        5000,
        seeds.clone(),
        inputs(seeds, VROOT_WORDS, b"getlisrmov =_-0123456789", 120),
        |line| {
            let text = String::from_utf8_lossy(&line);
            if let Ok(r) = vroot::Request::decode(&text) {
                prop_assert_eq!(vroot::Request::decode(&r.encode()).ok(), Some(r));
            }
            if let Ok(e) = vroot::Entry::decode(&text) {
                prop_assert_eq!(vroot::Entry::decode(&e.encode()).ok(), Some(e));
            }
            Ok(())
        },
    );
    fuzz("vroot_requests", 3000, [], request(), |r| {
        prop_assert_eq!(vroot::Request::decode(&r.encode()).ok(), Some(r));
        Ok(())
    });
}

#[test]
fn vroot_client_reads_any_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let seeds: Vec<Vec<u8>> = [
        "ok 0\n",
        "ok 1\nxid=1 space_used=0 space_total=-1 inodes_used=0 inodes_total=-1 reserved=0\n",
        "ok 3\n",
        "err 22 no\n",
        "err x\n",
        "err\n",
        "ok 18446744073709551615\n",
        "ok -1\n",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let listener = std::sync::Mutex::new(listener);
    fuzz(
        "vroot_answers",
        500,
        seeds.clone(),
        inputs(seeds, VROOT_WORDS, b"okerr \n0123456789", 200),
        |answer| {
            let mut client = vroot::Client::connect(&path).unwrap();
            let (mut server, _) = listener.lock().unwrap().accept().unwrap();
            let _ = server.write_all(&answer);
            drop(server);
            // Any answer is a result, never a panic or a hang.
            let _ = client.call(&vroot::Request::List);
            Ok(())
        },
    );
}

/// What a context's limits are, as the model of the live daemon keeps them.
type Limits = std::collections::BTreeMap<u32, (Option<u64>, Option<u64>, u8)>;

#[test]
fn a_live_vroot_socket_answers_every_line_and_does_what_it_says() {
    let scratch = Scratch::new();
    let index = scratch.path().join("index.db");
    let mount = Mount::scratch(&scratch, &format!("xid=uid/1000,index={}", index.display()));
    let dir = vroot::socket_dir(mount.path()).unwrap();
    let socket = dir.join("admin.sock");
    let connect = || {
        let s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        BufReader::new(s)
    };
    let conn = std::cell::RefCell::new(connect());
    let model = std::cell::RefCell::new(Limits::new());
    let limits_now = || -> Limits {
        let mut c = vroot::Client::connect(&socket).unwrap();
        c.call(&vroot::Request::List)
            .unwrap()
            .into_iter()
            .filter(|e| e.space_total.is_some() || e.inodes_total.is_some() || e.reserved != 0)
            .map(|e| (e.xid, (e.space_total, e.inodes_total, e.reserved)))
            .collect()
    };
    let seeds = corpus_lines("vroot_lines");
    fuzz(
        "vroot_daemon",
        300,
        seeds.clone(),
        inputs(seeds, VROOT_WORDS, b"getlisrmov =_-0123456789", 120),
        |input| {
            for line in input.split(|&b| b == b'\n') {
                let mut conn = conn.borrow_mut();
                let mut sent = line.to_vec();
                sent.push(b'\n');
                let mut answer = Vec::new();
                let got = conn
                    .get_mut()
                    .write_all(&sent)
                    .and_then(|()| conn.read_until(b'\n', &mut answer));
                if got.is_err() || answer.is_empty() {
                    // It closed this connection (a line it cannot read):
                    // it must still serve the next one.
                    *conn = connect();
                    continue;
                }
                let head = String::from_utf8_lossy(&answer).into_owned();
                let ok = if let Some(n) = head.strip_prefix("ok ") {
                    let n: usize = n
                        .trim_end()
                        .parse()
                        .map_err(|_| TestCaseError::fail(format!("answer {head:?} to {line:?}")))?;
                    for _ in 0..n {
                        let mut entry = String::new();
                        conn.read_line(&mut entry).unwrap();
                        prop_assert!(vroot::Entry::decode(entry.trim_end()).is_ok(), "{entry:?}");
                    }
                    true
                } else {
                    prop_assert!(head.starts_with("err "), "answer {head:?} to {line:?}");
                    false
                };
                // An answer "ok" to a change means it was made; "err" that
                // nothing was.
                let request = vroot::Request::decode(&String::from_utf8_lossy(line));
                let mut model = model.borrow_mut();
                match (ok, request) {
                    (
                        true,
                        Ok(vroot::Request::Set {
                            xid,
                            space_total,
                            inodes_total,
                            reserved,
                        }),
                    ) => {
                        let old = model.get(&xid).copied().unwrap_or((None, None, 0));
                        let new = (
                            space_total.apply(old.0),
                            inodes_total.apply(old.1),
                            reserved.unwrap_or(old.2),
                        );
                        model.insert(xid, new);
                        if new == (None, None, 0) {
                            model.remove(&xid);
                        }
                    }
                    (true, Ok(vroot::Request::Remove(xid))) => {
                        model.remove(&xid);
                    }
                    _ => {}
                }
                let now = limits_now();
                prop_assert_eq!(&now, &*model, "after {:?} answered {:?}", line, head);
            }
            Ok(())
        },
    );
    drop(mount);
}

const ARG_WORDS: &[&str] = &[
    "-x",
    "--xid",
    "self",
    "5",
    "0x10",
    "-1",
    "4294967296",
    ":a",
    "-s",
    "--set",
    "space_total=",
    "inodes_total=",
    "reserved=",
    "-1",
    "--remove",
    "--list",
    "--json",
    "--source",
    "--index",
    "--recount",
    "-c",
    "-R",
    "-d",
    "-a",
    "-n",
    "-U",
    "--backing",
    "--iunlink",
    "--~iunlink",
    "--immutable",
    "--barrier",
    "--flags",
    "0x30",
    "-v",
    "--exclude",
    "--exclude-from",
    "--store",
    "--db",
    "--ignore-mtime",
    "--progress",
    "--no-progress",
    "--dry-run",
    "--",
    "-",
    "/mnt",
    "=",
    "-h",
    "--help",
    "--bogus",
];

#[test]
fn tool_arguments() {
    use vxfs_tools::cli::CliError;
    type Parse = fn(Vec<OsString>) -> Result<(), CliError>;
    let tools: [(&str, Parse); 6] = [
        ("vdlimit", |a| vxfs_tools::vdlimit::parse(a).map(drop)),
        ("chxid", |a| vxfs_tools::chxid::parse(a).map(drop)),
        ("lsxid", |a| vxfs_tools::lsxid::parse(a).map(drop)),
        ("setattr", |a| vxfs_tools::setattr::parse(a).map(drop)),
        ("showattr", |a| vxfs_tools::showattr::parse(a).map(drop)),
        ("hashify", |a| {
            vxfs_tools::hashify::options::parse(a).map(drop)
        }),
    ];
    let parse = |argv: &[Vec<u8>]| -> Result<(), TestCaseError> {
        let Some((tool, args)) = argv.split_first() else {
            return Ok(());
        };
        let args: Vec<OsString> = args.iter().map(|a| OsString::from_vec(a.clone())).collect();
        for (name, parse) in tools {
            if tool.as_slice() == name.as_bytes() || !tools.iter().any(|t| t.0.as_bytes() == tool) {
                match parse(args.clone()) {
                    Err(CliError::Usage(e)) => {
                        prop_assert!(!e.to_string().trim().is_empty(), "{name}: empty message")
                    }
                    Err(CliError::Failed(e)) => {
                        prop_assert!(!e.to_string().trim().is_empty(), "{name}: empty message")
                    }
                    Ok(()) | Err(CliError::Help) => {}
                }
            }
        }
        Ok(())
    };
    let seeds = corpus("tool_args");
    let arg = prop_oneof![
        4 => select(ARG_WORDS).prop_map(|w| w.as_bytes().to_vec()),
        1 => (select(ARG_WORDS), select(ARG_WORDS)).prop_map(|(a, b)| format!("{a}{b}").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    let tool = select(
        &[
            "vdlimit", "chxid", "lsxid", "setattr", "showattr", "hashify",
        ][..],
    )
    .prop_map(|t| t.as_bytes().to_vec());
    let argv = prop_oneof![
        (tool, prop::collection::vec(arg, 0..8)).prop_map(|(t, mut rest)| {
            rest.insert(0, t);
            rest
        }),
        (
            select(seeds.clone()),
            any::<usize>(),
            prop::collection::vec(mutation(), 1..3)
        )
            .prop_map(|(mut argv, i, changes)| {
                if argv.len() > 1 {
                    let i = 1 + i % (argv.len() - 1);
                    argv[i] = mutate(argv[i].clone(), &changes);
                }
                argv
            }),
    ];
    fuzz("tool_args", 3000, seeds, argv, |argv| parse(&argv));
}

#[test]
fn numbers_read_as_strtol_does() {
    use vxfs_tools::num::{parse_xid, strtol0};
    let seeds: Vec<String> = corpus_lines("numbers")
        .into_iter()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    let strategy = prop_oneof![
        select(seeds.clone()),
        "[+-]?(0[xX])?[0-9a-fA-F]{0,22}",
        "[ +\\-0-9xX]{0,6}",
    ];
    fuzz("numbers", 5000, seeds, strategy, |s| {
        let Some((value, whole, overflow)) = oracle::strtol(&s) else {
            return Ok(());
        };
        let ours = strtol0(&s);
        let leading_space = s.starts_with(|c: char| c.is_ascii_whitespace());
        if leading_space || !whole {
            // Leading white space is refused on purpose (see num.rs).
            prop_assert_eq!(ours, None, "{:?}", s);
        } else if overflow {
            prop_assert!(
                ours.is_none_or(|v| i64::try_from(v).is_err()),
                "{:?} overflows strtol, ours {:?}",
                s,
                ours
            );
        } else {
            prop_assert_eq!(ours, Some(i128::from(value)), "{:?}", s);
        }
        let xid = parse_xid("-x", &s);
        let in_range = ours.is_some_and(|v| (0..=i128::from(u32::MAX)).contains(&v));
        prop_assert_eq!(xid.is_ok(), in_range, "{:?}", s);
        if let Ok(x) = xid {
            prop_assert_eq!(Some(i128::from(x)), ours);
        }
        Ok(())
    });
}

/// Pieces of fnmatch patterns.
const PATTERN_PIECES: &[&str] = &[
    "*",
    "?",
    "[",
    "\\",
    "[!",
    "[^",
    "[]",
    "[:alpha:]",
    "[:digit:]",
    "[[:space:]]",
    "a-z",
    "]",
];

/// What an exclude list says of `path`, read from its documented syntax
/// (hashify/exclude.rs): lines, trailing spaces and CRs trimmed, `#`
/// comments, `+` includes, `-`/`~`/no prefix excludes, first match wins.
fn excluded_by_the_book(text: &[u8], path: &[u8]) -> bool {
    for line in text.split(|&b| b == b'\n') {
        let mut line = line;
        while let [rest @ .., b' ' | b'\r'] = line {
            line = rest;
        }
        let (exclude, pattern) = match line {
            [] | [b'#', ..] => continue,
            [b'+', p @ ..] => (false, p),
            [b'-' | b'~', p @ ..] => (true, p),
            p => (true, p),
        };
        if !pattern.is_empty() && oracle::fnmatch(pattern, path) == Some(true) {
            return exclude;
        }
    }
    false
}

#[test]
fn exclude_lists_read_as_util_vserver_writes_them() {
    let seeds: Vec<(Vec<u8>, Vec<u8>)> = corpus("exclude_patterns")
        .into_iter()
        .map(|f| (f[0].clone(), f.get(1).cloned().unwrap_or_default()))
        .collect();
    let piece = prop_oneof![
        4 => select(&b"ab/.-]^!+~# \r\n"[..]).prop_map(|b| vec![b]),
        2 => select(PATTERN_PIECES).prop_map(|p| p.as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    let text_byte = prop_oneof![select(&b"ab/.-]^![*?\\ 0Z"[..]), any::<u8>()];
    let strategy = prop_oneof![
        select(seeds.clone()),
        (
            prop::collection::vec(piece, 0..16).prop_map(|p| p.concat()),
            prop::collection::vec(text_byte, 0..12)
        ),
    ];
    fuzz("exclude_patterns", 5000, seeds, strategy, |(text, path)| {
        let mut list = ExcludeList::new();
        list.add_text(&text);
        prop_assert_eq!(
            list.excludes(&path),
            excluded_by_the_book(&text, &path),
            "{:?} for {:?}",
            String::from_utf8_lossy(&text),
            String::from_utf8_lossy(&path)
        );
        Ok(())
    });
}

/// A valid vxfs index with limits and clean usage, as bytes.
fn index_bytes(dir: &Path) -> Vec<u8> {
    use vxfs::dlimit::{Limit, Usage};
    use vxfs::tagging::Xid;
    let path = dir.join("valid.db");
    let (mut index, _) = vxfs::index::Index::open(&path).unwrap();
    for x in 1..40 {
        let limit = Limit {
            space: Some(x << 20),
            inodes: (x % 3 != 0).then_some(x * 10),
            reserved: (x % 7) as u8,
        };
        index.set_limit(Xid(x as u32), Some(limit)).unwrap();
    }
    let usage: Vec<_> = (0..40)
        .map(|x| {
            let u = Usage {
                space: x * 4096,
                inodes: x,
            };
            (Xid(x as u32), u)
        })
        .collect();
    index.save_usage(&usage, true).unwrap();
    drop(index);
    // Everything in the main file (no -wal beside it).
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "delete").unwrap();
    drop(conn);
    std::fs::read(&path).unwrap()
}

#[test]
fn a_damaged_index_is_never_trusted_and_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let valid = index_bytes(dir.path());
    let len = valid.len();
    // Page-sized damage anywhere, byte flips, truncation, growth.
    let strategy = (
        prop::collection::vec((0..len, any::<u8>()), 1..24),
        prop::option::of(0..len),
        prop::option::of((0..len, 1usize..2048)),
    );
    let n = std::cell::Cell::new(0u64);
    fuzz("index_files", 600, [], strategy, |(flips, cut, smear)| {
        let mut bytes = valid.clone();
        for (i, b) in flips {
            bytes[i] = b;
        }
        if let Some((at, run)) = smear {
            let end = (at + run).min(bytes.len());
            bytes[at..end].fill(0xa5);
        }
        if let Some(cut) = cut {
            bytes.truncate(cut);
        }
        n.set(n.get() + 1);
        let case = dir.path().join(format!("case{}", n.get()));
        std::fs::create_dir(&case).unwrap();
        let path = case.join("i.db");
        std::fs::write(&path, &bytes).unwrap();
        match vxfs::index::Index::open(&path) {
            Ok((index, _)) => {
                // Whatever it kept, reading it cannot fail or give values
                // vxfs never writes.
                let limits = index.limits();
                prop_assert!(limits.is_ok(), "{:?}", limits.err());
                let usage = index.clean_usage();
                prop_assert!(usage.is_ok(), "{:?}", usage.err());
                for (_, l) in limits.unwrap() {
                    prop_assert!(l.reserved <= 100);
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // hashify's index is as robust.
        let report = vxfs_tools::hashify::Reporter::quiet();
        let hashes = case.join("h.db");
        std::fs::write(&hashes, &bytes).unwrap();
        drop(vxfs_tools::hashify::db::HashDb::open(
            &hashes, true, &report,
        ));
        std::fs::remove_dir_all(&case).unwrap();
        Ok(())
    });
}

#[test]
fn mountinfo_lines() {
    use vxfs_tools::mountinfo::parse_line;
    let seeds = corpus_lines("mountinfo");
    fuzz(
        "mountinfo",
        3000,
        seeds.clone(),
        inputs(
            seeds,
            &["36 ", "0:40 ", "/ ", "- ", "fuse.vxfs ", "\\040", "\\", " "],
            b"0123456789:/ -\\",
            120,
        ),
        |line| {
            let _ = parse_line(&String::from_utf8_lossy(&line));
            Ok(())
        },
    );
    // A mount point with any bytes, escaped as the kernel escapes it
    // (space, tab, newline, backslash as \ooo), reads back as itself.
    let path = prop::collection::vec(prop_oneof![select(&b" \t\n\\/a"[..]), 1u8..=255], 1..40);
    fuzz("mountinfo_paths", 2000, [], path, |path| {
        let mut escaped = String::new();
        for &b in &path {
            match b {
                b' ' | b'\t' | b'\n' | b'\\' => escaped.push_str(&format!("\\{b:03o}")),
                _ => escaped.push(char::from(b)),
            }
        }
        // Only ASCII reaches a &str losslessly; others are tested as bytes
        // through from_utf8 below.
        let Ok(text) = String::from_utf8(
            format!("45 27 0:40 / /{escaped} rw - fuse.vxfs /src rw").into_bytes(),
        ) else {
            return Ok(());
        };
        if !path.is_ascii() {
            return Ok(());
        }
        let entry = parse_line(&text).expect("a well-formed line");
        let mut want = b"/".to_vec();
        want.extend_from_slice(&path);
        prop_assert_eq!(entry.mount_point.as_os_str().as_bytes(), &want[..]);
        prop_assert_eq!(entry.fstype, "fuse.vxfs");
        Ok(())
    });
}

#[test]
fn cgroup_texts() {
    use vxfs::cgroup::parse_xid;
    use vxfs::tagging::Xid;
    let seeds = corpus_lines("cgroup");
    fuzz(
        "cgroup",
        5000,
        seeds.clone(),
        inputs(
            seeds,
            &[
                "0::/",
                "12:memory:/",
                "vx-",
                "/",
                "\n",
                "1",
                "01",
                "4294967295",
                "sub",
                ":",
            ],
            b"0123456789:/vx-\n",
            100,
        ),
        |text| {
            let text = String::from_utf8_lossy(&text).into_owned();
            let xid = parse_xid(&text);
            if xid != Xid::HOST && xid != Xid::UNMAPPED {
                prop_assert!(
                    text.contains(&format!("vx-{}", xid.0)),
                    "{:?} from {:?}",
                    xid,
                    text
                );
            }
            if !text.contains("vx-") {
                prop_assert_eq!(xid, Xid::HOST);
            }
            // A line naming no context changes nothing.
            prop_assert_eq!(parse_xid(&format!("9:pids:/other\n{text}")), xid);
            Ok(())
        },
    );
}

/// The outcome of an operation, for comparing vxfs with native.
fn outcome<T>(r: std::io::Result<T>) -> Result<(), i32> {
    r.map(drop).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[test]
fn names_behave_as_on_the_native_filesystem() {
    let scratch = Scratch::new();
    let mount = Mount::scratch(&scratch, "xid=uid/1000");
    let (m, native) = (mount.path().to_path_buf(), scratch.native());
    let seeds = corpus_lines("names");
    let name = prop_oneof![
        select(seeds.clone()),
        prop::collection::vec(prop_oneof![select(&b".-_ a\\*?\n\t"[..]), 1u8..=255], 1..8),
        prop::collection::vec(1u8..=255, 250..260),
    ];
    let pair = (name.clone(), name);
    let seeds: Vec<(Vec<u8>, Vec<u8>)> = seeds.iter().map(|n| (n.clone(), b"x".to_vec())).collect();
    fuzz("names", 400, seeds, pair, |(a, b)| {
        // '/' cannot be in a name; NUL cannot reach the kernel.
        let clean = |n: Vec<u8>| -> Vec<u8> {
            n.into_iter()
                .map(|c| if c == b'/' || c == 0 { b'_' } else { c })
                .collect()
        };
        let (a, b) = (clean(a), clean(b));
        let ops = |root: &Path| -> Vec<(String, Result<(), i32>)> {
            let (pa, pb): (PathBuf, PathBuf) = (
                root.join(std::ffi::OsStr::from_bytes(&a)),
                root.join(std::ffi::OsStr::from_bytes(&b)),
            );
            let mut log = vec![
                ("create".into(), outcome(std::fs::write(&pa, &a))),
                ("stat".into(), outcome(std::fs::symlink_metadata(&pa))),
            ];
            let listed = std::fs::read_dir(root)
                .unwrap()
                .any(|e| e.unwrap().file_name().as_bytes() == a.as_slice());
            log.push((format!("listed {listed}"), Ok(())));
            log.push(("mkdir b".into(), outcome(std::fs::create_dir(&pb))));
            log.push(("rename a b".into(), outcome(std::fs::rename(&pa, &pb))));
            log.push(("read b".into(), outcome(std::fs::read(&pb))));
            log.push(("unlink a".into(), outcome(std::fs::remove_file(&pa))));
            log.push(("unlink b".into(), outcome(std::fs::remove_file(&pb))));
            log.push(("rmdir b".into(), outcome(std::fs::remove_dir(&pb))));
            log.push(("rmdir a".into(), outcome(std::fs::remove_dir(&pa))));
            let empty = std::fs::read_dir(root).unwrap().next().is_none();
            log.push((format!("empty {empty}"), Ok(())));
            log
        };
        let (ours, theirs) = (ops(&m), ops(&native));
        prop_assert_eq!(
            ours,
            theirs,
            "names {:?} {:?}",
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b)
        );
        Ok(())
    });
    drop(mount);
}

//! Every command has a man page that man(1) renders, shell completions that
//! bash loads, and `--version`: generated from the commands' own option
//! tables and usage texts (`vxfs_tools::doc`), as `scripts/install-docs.sh`
//! installs them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap_complete::Shell;
use vxfs_tools::doc;

/// The tools' binaries, beside this test's lsxid.
fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_lsxid")).with_file_name(name)
}

#[test]
fn every_command_has_a_page_and_completions() {
    let documented: BTreeSet<&str> = doc::tools().iter().map(|t| t.name).collect();
    let mut commands: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
    commands.extend(["vxfs".to_string(), "vxproc".to_string()]);
    let documented: BTreeSet<String> = documented.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        documented, commands,
        "a command without a page, or a page without a command"
    );
}

/// `man -l PAGE`, rendered at 80 columns to stdout.
fn render(page: &Path) -> std::process::Output {
    Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("man(1) is installed (scripts/setup.sh)")
}

#[test]
fn man_renders_every_page() {
    let dir = tempfile::tempdir().unwrap();
    for tool in doc::tools() {
        let page = dir.path().join(format!("{}.8", tool.name));
        std::fs::write(&page, doc::man_page(&tool).unwrap()).unwrap();
        let out = render(&page);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {out:?}", tool.name);
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION"] {
            assert!(
                text.contains(section),
                "{}: no {section}:\n{text}",
                tool.name
            );
        }
        assert!(text.contains(tool.name), "{}:\n{text}", tool.name);
        if !tool.specs.is_empty() {
            assert!(
                text.contains("OPTIONS"),
                "{}: no OPTIONS:\n{text}",
                tool.name
            );
        }
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(!warnings.contains("warning"), "{}: {warnings}", tool.name);
        // The SYNOPSIS is the usage text's first form, with its values.
        let synopsis = text
            .split("SYNOPSIS")
            .nth(1)
            .and_then(|rest| rest.split("DESCRIPTION").next())
            .unwrap_or_default();
        let first: Vec<&str> = synopsis.split_whitespace().take(3).collect();
        let usage: Vec<&str> = tool
            .usage
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(3)
            .collect();
        assert_eq!(first, usage, "{}: {synopsis}", tool.name);
    }
}

#[test]
fn man_renders_the_mount_options_page() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("vxfs.5");
    std::fs::write(&page, doc::mount_options_page().unwrap()).unwrap();
    let out = render(&page);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Every valued option of the README's table is on the page.
    for name in [
        "xid=",
        "dlimits=",
        "attr_timeout=",
        "watch=",
        "index=",
        "tree=",
        "fuse.vxfs",
    ] {
        assert!(text.contains(name), "{name} is not on vxfs(5):\n{text}");
    }
    assert!(text.contains("vxfs(5)"), "{text}");
}

#[test]
fn bash_loads_every_completion_and_it_completes_options() {
    let dir = tempfile::tempdir().unwrap();
    for tool in doc::tools() {
        let script = dir.path().join(tool.name);
        std::fs::write(&script, doc::completion(&tool, Shell::Bash)).unwrap();
        let name = tool.name;
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p {name}", script.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(name));
        for shell in [Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(doc::completion(&tool, shell)).unwrap();
            // (fish's has a line per option: none for a tool without.)
            assert!(
                text.contains(name) || tool.specs.is_empty(),
                "{name} {shell:?}"
            );
        }
    }
    // Completing `vdlimit --` offers its long options.
    let vdlimit = doc::tools()
        .into_iter()
        .find(|t| t.name == "vdlimit")
        .unwrap();
    let script = dir.path().join("vdlimit");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && COMP_WORDS=(vdlimit --) COMP_CWORD=1 COMP_LINE='vdlimit --' \
             COMP_POINT=10 && _vdlimit vdlimit -- vdlimit && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    for spec in vdlimit.specs.iter().filter_map(|s| s.long) {
        assert!(
            offered.contains(&format!("--{spec}")),
            "--{spec} not offered: {offered}"
        );
    }
}

#[test]
fn every_tool_says_its_version() {
    for tool in doc::tools()
        .iter()
        .filter(|t| !["vxfs", "vxproc"].contains(&t.name))
    {
        let out = Command::new(bin(tool.name))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", tool.name);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{} (vxfs) {}\n", tool.name, env!("CARGO_PKG_VERSION"))
        );
    }
}

//! Man pages and shell completions of every command, generated from the
//! definitions the commands parse with: each tool's option table (its clap
//! command, [`crate::args::command`]) and its usage text (what `--help`
//! prints), which gives the page's synopsis, description and each
//! option's help. `cargo run -p vxfs-tools --example docs -- DIR` writes
//! them; `scripts/install-docs.sh` installs them.

use std::collections::HashMap;

use crate::args::{self, OptSpec};
use crate::fstool::{self, Kind};

/// One command of the workspace.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Its name, as installed.
    pub name: &'static str,
    /// Its usage text (`--help`).
    pub usage: &'static str,
    /// Its options.
    pub specs: Vec<OptSpec>,
    /// It runs a program after its options (`-- PROGRAM ARGS...`).
    pub runs_program: bool,
}

/// The daemon's command-line flags (its `-o` options are in its page).
const VXFS_SPECS: &[OptSpec] = &[
    OptSpec::valued("options", Some('o'), None),
    OptSpec::flag("foreground", Some('f'), None),
    OptSpec::flag("debug", Some('d'), Some("debug")),
    OptSpec::flag("single", Some('s'), None),
    OptSpec::flag("help", Some('h'), Some("help")),
    OptSpec::flag("version", Some('V'), Some("version")),
];

/// vxproc's flags.
const VXPROC_SPECS: &[OptSpec] = &[
    OptSpec::valued("mountpoint", None, Some("mountpoint")),
    OptSpec::flag("foreground", Some('f'), Some("foreground")),
    OptSpec::flag("stop", None, Some("stop")),
    OptSpec::flag("version", Some('V'), Some("version")),
    OptSpec::flag("help", Some('h'), Some("help")),
];

/// Every command: the daemons and the tools.
pub fn tools() -> Vec<Tool> {
    let tool = |name, usage, specs: &[OptSpec], runs_program| Tool {
        name,
        usage,
        specs: specs.to_vec(),
        runs_program,
    };
    use crate::{chbind, chxid, hashify, lsxid, setattr, showattr, vcontext, vctx, vdlimit};
    use crate::{vkill, vnamespace, vps, vserver, vstat, vxctl};
    vec![
        tool("vxfs", vxfs::options::USAGE, VXFS_SPECS, false),
        tool("vxproc", vxproc::USAGE, VXPROC_SPECS, false),
        tool(
            "chxid",
            chxid::USAGE,
            &fstool::specs(Kind::Setting, chxid::SPECS),
            false,
        ),
        tool(
            "lsxid",
            lsxid::USAGE,
            &fstool::specs(Kind::Listing, lsxid::SPECS),
            false,
        ),
        tool(
            "setattr",
            setattr::USAGE,
            &fstool::specs(Kind::Setting, setattr::SPECS),
            false,
        ),
        tool(
            "showattr",
            showattr::USAGE,
            &fstool::specs(Kind::Listing, &[]),
            false,
        ),
        tool("vdlimit", vdlimit::USAGE, vdlimit::SPECS, false),
        tool(
            "hashify",
            hashify::options::USAGE,
            hashify::options::SPECS,
            false,
        ),
        tool("chbind", chbind::CHBIND_USAGE, chbind::SPECS, true),
        tool("vcontext", vcontext::VCONTEXT_USAGE, vcontext::SPECS, true),
        tool(
            "vnamespace",
            vnamespace::VNAMESPACE_USAGE,
            vnamespace::SPECS,
            true,
        ),
        tool("vlimit", vctx::VLIMIT_USAGE, &vctx::vlimit_specs(), true),
        tool("vsched", vctx::VSCHED_USAGE, &vctx::vsched_specs(), true),
        tool("vuname", vctx::VUNAME_USAGE, vctx::VUNAME_SPECS, false),
        tool(
            "vattribute",
            vctx::VATTRIBUTE_USAGE,
            vctx::VATTRIBUTE_SPECS,
            true,
        ),
        tool("vkill", vkill::VKILL_USAGE, vkill::VKILL_SPECS, false),
        tool("vwait", vkill::VWAIT_USAGE, vkill::VWAIT_SPECS, false),
        // ps's own options, all of them handed to ps.
        tool("vps", vps::USAGE, &[], true),
        tool("vserver", vserver::USAGE, vserver::SPECS, true),
        tool("vserver-stat", vstat::USAGE, vstat::SPECS, false),
        tool("vxctl", vxctl::USAGE, vxctl::SPECS, false),
    ]
}

/// A usage text's parts: the synopsis (its `Usage:` lines), the one-line
/// summary (the first sentence after them) and the rest.
fn split_usage(usage: &str) -> (String, String, String) {
    let mut synopsis = Vec::new();
    let mut lines = usage.lines().peekable();
    while let Some(line) = lines.peek() {
        let l = line.trim_start();
        let l = l
            .strip_prefix("Usage:")
            .or_else(|| l.strip_prefix("usage:"));
        match l {
            Some(rest) => synopsis.push(rest.trim().to_string()),
            // Continuation lines of a multi-form usage.
            None if !synopsis.is_empty() && line.starts_with("  ") && !line.trim().is_empty() => {
                synopsis.push(line.trim().to_string())
            }
            None => break,
        }
        lines.next();
    }
    // The option list goes to the page's OPTIONS section, not here.
    let mut in_options = false;
    let rest: Vec<&str> = lines
        .filter(|line| {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if *line == "Options:" {
                in_options = true;
                return false;
            }
            if trimmed.starts_with('-') && (2..=6).contains(&indent) {
                in_options = true;
            } else if trimmed.is_empty() || indent < 2 {
                in_options = false;
            }
            !in_options
        })
        .collect();
    let body = rest.join("\n").trim().to_string();
    let first = body
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .replace('\n', " ");
    let summary = first
        .split_inclusive(". ")
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches('.')
        .to_string();
    (synopsis.join("\n"), summary, body)
}

/// Each option's help in a usage text's option list, by the spelling it is
/// listed with (`-R`, `--backing`): the text after the option column,
/// continuation lines joined.
fn option_help(usage: &str) -> HashMap<String, String> {
    let mut help: HashMap<String, String> = HashMap::new();
    let mut current: Vec<String> = Vec::new();
    for line in usage.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // Options are listed at an indent of 2 to 6; their help goes on
        // deeper (and may itself begin with an option's name).
        if trimmed.starts_with('-') && (2..=6).contains(&indent) {
            // "-R, --recurse VALUE    text": the column ends at two spaces.
            let (column, text) = match trimmed.find("  ") {
                Some(at) => (&trimmed[..at], trimmed[at..].trim()),
                None => (trimmed, ""),
            };
            current = column
                .split([',', ' ', '='])
                .filter(|w| w.starts_with('-'))
                .map(str::to_string)
                .collect();
            for spelling in &current {
                help.insert(spelling.clone(), text.to_string());
            }
        } else if indent >= 8 && !trimmed.is_empty() && !current.is_empty() {
            for spelling in &current {
                let entry = help.entry(spelling.clone()).or_default();
                if !entry.is_empty() {
                    entry.push(' ');
                }
                entry.push_str(trimmed);
            }
        } else {
            current.clear();
        }
    }
    help
}

/// The tool's clap command with its page's texts.
pub fn command(tool: &Tool) -> clap::Command {
    let (synopsis, summary, body) = split_usage(tool.usage);
    let help = option_help(tool.usage);
    let mut cmd = args::command(tool.name, &tool.specs, tool.runs_program)
        .about(summary)
        .long_about(body)
        .override_usage(synopsis)
        .version(env!("CARGO_PKG_VERSION"));
    for spec in &tool.specs {
        if !spec.value {
            // Shown as a plain flag (parsing keeps each occurrence's place
            // with a value; a page has no use for it).
            cmd = cmd.mut_arg(spec.name, |a| {
                a.action(clap::ArgAction::SetTrue)
                    .value_parser(clap::value_parser!(bool))
                    .default_missing_values(Vec::<&str>::new())
            });
        }
        let text = spec
            .long
            .and_then(|l| help.get(&format!("--{l}")))
            .or_else(|| spec.short.and_then(|c| help.get(&format!("-{c}"))));
        // setattr's `--~FLAG`: listed once, as a pattern.
        let negation = spec
            .long
            .and_then(|l| l.strip_prefix('~'))
            .map(|flag| format!("clear what --{flag} sets (also --!{flag})"));
        // vlimit's `--RESOURCE VALUE`, one option per resource.
        let resource = (tool.name == "vlimit")
            .then_some(spec.long)
            .flatten()
            .filter(|l| vxfs_kernel::config::RESOURCES.iter().any(|(r, _)| r == l))
            .map(|l| format!("set the {l} limit (-M, -S, -H before it say which)"));
        let text = text.filter(|t| !t.is_empty()).cloned();
        if let Some(text) = text.or(negation).or(resource) {
            cmd = cmd.mut_arg(spec.name, |a| a.help(text));
        }
    }
    cmd
}

/// The tool's man page (section 8: the daemon and admin tools). Its
/// SYNOPSIS is the usage text's (every form, with the values each option
/// takes); clap_mangen's would list bare option names.
pub fn man_page(tool: &Tool) -> std::io::Result<Vec<u8>> {
    let cmd = command(tool);
    let has_options = cmd.get_arguments().next().is_some();
    let man = clap_mangen::Man::new(cmd)
        .section("8")
        .manual("vxfs")
        .source(format!("vxfs {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    synopsis_section(tool.name, &split_usage(tool.usage).0).to_writer(&mut out)?;
    man.render_description_section(&mut out)?;
    if has_options {
        man.render_options_section(&mut out)?;
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// A SYNOPSIS section of `synopsis`'s forms, a line each, the program's
/// name in bold.
fn synopsis_section(name: &str, synopsis: &str) -> roff::Roff {
    let mut page = roff::Roff::new();
    page.control("SH", ["SYNOPSIS"]);
    // Left-adjusted, unhyphenated, each form's continuation indented.
    page.control("ad", ["l"]).control("nh", []);
    for (i, form) in synopsis.lines().enumerate() {
        if i > 0 {
            page.control("br", []);
        }
        match form.split_once(' ') {
            Some((first, rest)) if first == name => {
                page.text([roff::bold(first), roff::roman(format!(" {rest}"))])
            }
            _ if form == name => page.text([roff::bold(form)]),
            _ => page.text([roff::roman(form)]),
        };
    }
    page.control("ad", ["b"]).control("hy", []);
    page
}

/// vxfs(5): the mount options of `fuse.vxfs`, for `mount -o` and fstab,
/// from the daemon's usage text (what `vxfs --help` lists), with an fstab
/// example.
pub fn mount_options_page() -> std::io::Result<Vec<u8>> {
    let usage = vxfs::options::USAGE;
    let options = usage
        .find("mount options:")
        .map_or(usage, |at| &usage[at..])
        .trim_end();
    let text = format!(
        "{options}\n\nIn /etc/fstab, one line per mount; SOURCE is the backing \
         directory:\n\n    /srv/vservers  /vservers  fuse.vxfs  xid=cgroup,noatime  0 0\n    \
         /srv/vservers/web  /var/lib/web-root  fuse.vxfs  xid=1001,nodev  0 0\n\nA \
         mount of a directory of a served tree joins that tree's daemon; the \
         daemon-wide options (passthrough, dlimits, index, inode_fds, \
         notagcheck, tree, watch) may then only repeat its values. See vxfs(8)."
    );
    let cmd = clap::Command::new("vxfs")
        .about("mount options of fuse.vxfs filesystems (mount -o, fstab)")
        .long_about(text)
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_flag(true)
        .disable_version_flag(true);
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("5")
        .manual("vxfs")
        .source(format!("vxfs {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)?;
    Ok(out)
}

/// The tool's completion script for `shell`.
pub fn completion(tool: &Tool, shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(tool), tool.name, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_text_splits_into_synopsis_summary_and_options() {
        let usage = "\
Usage: lsxid [-R] [FILE...]
       lsxid --other

Shows the context tag of each FILE. More words
here.

  -R              recurse into directories
  -a, --all       show dot names
                  too
      --backing   FILEs are in a SOURCE tree
";
        let (synopsis, summary, body) = split_usage(usage);
        assert_eq!(synopsis, "lsxid [-R] [FILE...]\nlsxid --other");
        assert_eq!(summary, "Shows the context tag of each FILE");
        assert!(body.starts_with("Shows the context tag"));
        let help = option_help(usage);
        assert_eq!(help["-R"], "recurse into directories");
        assert_eq!(help["--all"], "show dot names too");
        assert_eq!(help["-a"], "show dot names too");
        assert_eq!(help["--backing"], "FILEs are in a SOURCE tree");
    }

    #[test]
    fn every_tool_has_a_page_a_summary_and_its_options_described() {
        for tool in tools() {
            let page = String::from_utf8(man_page(&tool).unwrap()).unwrap();
            assert!(page.contains(".TH"), "{}", tool.name);
            let (_, summary, _) = split_usage(tool.usage);
            assert!(!summary.is_empty(), "{}: no summary", tool.name);
            let cmd = command(&tool);
            let undescribed: Vec<&str> = cmd
                .get_arguments()
                .filter(|a| a.get_long().is_some() || a.get_short().is_some())
                .filter(|a| a.get_help().is_none())
                .map(|a| a.get_id().as_str())
                .collect();
            // Every option is described in the tool's usage text.
            assert!(
                undescribed.is_empty(),
                "{}: options without help: {undescribed:?}",
                tool.name
            );
        }
    }
}

//! Writes every command's man page and shell completions under DIR:
//! `DIR/man8/NAME.8`, `DIR/man5/vxfs.5` (the mount options), `DIR/bash/NAME`,
//! `DIR/zsh/_NAME`, `DIR/fish/NAME.fish`
//! (see `vxfs_tools::doc`; `scripts/install-docs.sh` installs them).

use std::path::PathBuf;
use std::process::ExitCode;

use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: docs DIR");
        return ExitCode::from(2);
    };
    match write(&dir) {
        Ok(n) => {
            println!(
                "wrote {n} man pages and their completions under {}",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: &std::path::Path) -> std::io::Result<usize> {
    let tools = vxfs_tools::doc::tools();
    for sub in ["man8", "man5", "bash", "zsh", "fish"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(
        dir.join("man5").join("vxfs.5"),
        vxfs_tools::doc::mount_options_page()?,
    )?;
    for tool in &tools {
        let name = tool.name;
        std::fs::write(
            dir.join("man8").join(format!("{name}.8")),
            vxfs_tools::doc::man_page(tool)?,
        )?;
        for (shell, file) in [
            (Shell::Bash, dir.join("bash").join(name)),
            (Shell::Zsh, dir.join("zsh").join(format!("_{name}"))),
            (Shell::Fish, dir.join("fish").join(format!("{name}.fish"))),
        ] {
            std::fs::write(file, vxfs_tools::doc::completion(tool, shell))?;
        }
    }
    Ok(tools.len())
}

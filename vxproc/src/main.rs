//! `vxproc [--mountpoint DIR] [--foreground]`, `vxproc --stop`: the
//! daemon serving each context's own /proc figures (see the library).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vxfs_kernel::procview;
use vxfs_kernel::registry::Registry;

use vxproc::USAGE;

fn main() -> ExitCode {
    vxfs_log::init("vxproc", vxfs_log::LevelFilter::Info, false);
    let registry = Registry::open();
    let mut mountpoint = procview::mount_dir(&registry);
    let matches = match command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            return usage(first.trim_start_matches("error: "));
        }
    };
    if matches.get_flag("help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if matches.get_flag("version") {
        print!("{}", vxproc::fs::version_text());
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = matches.get_one::<PathBuf>("mountpoint") {
        mountpoint = dir.clone();
    }
    let (foreground, stop) = (matches.get_flag("foreground"), matches.get_flag("stop"));
    let result = if stop {
        vxproc::daemon::stop(&mountpoint, Duration::from_secs(10)).map(|ran| {
            if !ran {
                eprintln!("vxproc: none serves {}", mountpoint.display());
            }
        })
    } else {
        vxproc::daemon::serve(registry, &mountpoint, foreground)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, parsed by clap.
fn command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let flag = |id: &'static str| Arg::new(id).long(id).action(ArgAction::SetTrue);
    clap::Command::new("vxproc")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("mountpoint")
                .long("mountpoint")
                .num_args(1)
                .value_parser(clap::value_parser!(PathBuf)),
        )
        .arg(flag("foreground").short('f'))
        .arg(flag("stop"))
        .arg(flag("version").short('V'))
        .arg(flag("help").short('h'))
}

fn usage(why: &str) -> ExitCode {
    eprint!("vxproc: {why}\n{USAGE}");
    ExitCode::from(2)
}

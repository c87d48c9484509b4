//! `vxproc [--mountpoint DIR] [--foreground]`, `vxproc --stop`: the
//! daemon serving each context's own /proc figures (see the library).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vxfs_kernel::procview;
use vxfs_kernel::registry::Registry;

use vxproc::USAGE;

fn main() -> ExitCode {
    let registry = Registry::open();
    let mut mountpoint = procview::mount_dir(&registry);
    let (mut foreground, mut stop) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mountpoint" => match args.next() {
                Some(d) => mountpoint = PathBuf::from(d),
                None => return usage("--mountpoint needs a directory"),
            },
            "--foreground" | "-f" => foreground = true,
            "--stop" => stop = true,
            "--version" | "-V" => {
                print!("{}", vxproc::fs::version_text());
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
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
            eprintln!("vxproc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprint!("vxproc: {why}\n{USAGE}");
    ExitCode::from(2)
}

//! `vxfs SOURCE MOUNTPOINT [-o OPTIONS] [-f] [-d]`: mount a vxfs view of
//! SOURCE. Exit codes: 0 success, 1 mount or runtime failure, 2 bad usage.

use std::process::ExitCode;

use vxfs::options::{Command, USAGE, parse_args};

fn main() -> ExitCode {
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vxfs: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let args = match command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("vxfs {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Mount(args) => args,
    };
    // Allocations up to this size are reused from the heaps; larger ones
    // (fuser's request buffers) are mappings resident only where touched.
    vxfs::sys::fix_mmap_threshold(4 << 20);
    vxfs_log::init("vxfs", vxfs_log::LevelFilter::Warn, args.debug);
    match vxfs::daemon::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vxfs: {e:#}");
            ExitCode::from(1)
        }
    }
}

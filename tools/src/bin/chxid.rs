//! `chxid`: see [`vxfs_tools::chxid`] and `chxid --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main("chxid", vxfs_tools::chxid::USAGE, vxfs_tools::chxid::run)
}

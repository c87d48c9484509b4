//! `lsxid`: see [`vxfs_tools::lsxid`] and `lsxid --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main("lsxid", vxfs_tools::lsxid::USAGE, vxfs_tools::lsxid::run)
}

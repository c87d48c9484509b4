//! `vps`: see [`vxfs_tools::vps`] and `vps --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main("vps", vxfs_tools::vps::USAGE, vxfs_tools::vps::run)
}

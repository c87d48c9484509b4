//! `vxctl`: see [`vxfs_tools::vxctl`] and `vxctl --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main("vxctl", vxfs_tools::vxctl::USAGE, vxfs_tools::vxctl::run)
}

//! `vdlimit`: see [`vxfs_tools::vdlimit`] and `vdlimit --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vdlimit",
        vxfs_tools::vdlimit::USAGE,
        vxfs_tools::vdlimit::run,
    )
}

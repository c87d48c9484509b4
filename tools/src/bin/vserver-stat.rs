//! `vserver-stat`: see [`vxfs_tools::vstat`] and `vserver-stat --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vserver-stat",
        vxfs_tools::vstat::USAGE,
        vxfs_tools::vstat::run,
    )
}

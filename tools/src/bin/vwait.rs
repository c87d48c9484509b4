//! `vwait`: see [`vxfs_tools::vkill`] and `vwait --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vwait",
        vxfs_tools::vkill::VWAIT_USAGE,
        vxfs_tools::vkill::vwait,
    )
}

//! `vkill`: see [`vxfs_tools::vkill`] and `vkill --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vkill",
        vxfs_tools::vkill::VKILL_USAGE,
        vxfs_tools::vkill::vkill,
    )
}

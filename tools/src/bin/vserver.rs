//! `vserver`: see [`vxfs_tools::vserver`] and `vserver --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vserver",
        vxfs_tools::vserver::USAGE,
        vxfs_tools::vserver::run,
    )
}

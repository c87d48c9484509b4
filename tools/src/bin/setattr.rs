//! `setattr`: see [`vxfs_tools::setattr`] and `setattr --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "setattr",
        vxfs_tools::setattr::USAGE,
        vxfs_tools::setattr::run,
    )
}

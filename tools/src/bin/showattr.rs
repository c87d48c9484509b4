//! `showattr`: see [`vxfs_tools::showattr`] and `showattr --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "showattr",
        vxfs_tools::showattr::USAGE,
        vxfs_tools::showattr::run,
    )
}

//! `hashify`: see [`vxfs_tools::hashify`] and `hashify --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "hashify",
        vxfs_tools::hashify::USAGE,
        vxfs_tools::hashify::run,
    )
}

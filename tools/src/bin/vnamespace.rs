//! `vnamespace`: see [`vxfs_tools::vnamespace`] and `vnamespace --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vnamespace",
        vxfs_tools::vnamespace::VNAMESPACE_USAGE,
        vxfs_tools::vnamespace::vnamespace,
    )
}

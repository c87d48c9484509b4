//! `vsched`: see [`vxfs_tools::vctx`] and `vsched --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vsched",
        vxfs_tools::vctx::VSCHED_USAGE,
        vxfs_tools::vctx::vsched,
    )
}

//! `vuname`: see [`vxfs_tools::vctx`] and `vuname --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vuname",
        vxfs_tools::vctx::VUNAME_USAGE,
        vxfs_tools::vctx::vuname,
    )
}

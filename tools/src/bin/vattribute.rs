//! `vattribute`: see [`vxfs_tools::vctx`] and `vattribute --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vattribute",
        vxfs_tools::vctx::VATTRIBUTE_USAGE,
        vxfs_tools::vctx::vattribute,
    )
}

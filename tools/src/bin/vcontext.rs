//! `vcontext`: see [`vxfs_tools::vcontext`] and `vcontext --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vcontext",
        vxfs_tools::vcontext::VCONTEXT_USAGE,
        vxfs_tools::vcontext::vcontext,
    )
}

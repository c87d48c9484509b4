//! `vlimit`: see [`vxfs_tools::vctx`] and `vlimit --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "vlimit",
        vxfs_tools::vctx::VLIMIT_USAGE,
        vxfs_tools::vctx::vlimit,
    )
}

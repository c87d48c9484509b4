//! `chbind`: see [`vxfs_tools::chbind`] and `chbind --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    vxfs_tools::cli::main(
        "chbind",
        vxfs_tools::chbind::CHBIND_USAGE,
        vxfs_tools::chbind::chbind,
    )
}

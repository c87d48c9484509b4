//! The vxfs admin tools, util-vserver style: `vdlimit` (disk limits),
//! `chxid` and `lsxid` (context tags). Each binary in `src/bin/` is a thin
//! `main` over one module here; the modules below them are shared.
//!
//! * [`args`]: the tools' argument parsing, clap commands built from each
//!   tool's option table;
//! * [`doc`]: every command's man page and shell completions;
//! * [`cli`]: exit codes, error printing, broken pipes;
//! * [`num`]: `strtol(s, &end, 0)` numbers and context ids;
//! * [`mountinfo`]: which mount a path is on, and whether it is vxfs;
//! * [`tag`] and [`walk`]: reading and setting tags, fstool's traversal;
//! * [`sys`]: the only `unsafe` code (C library calls).

pub mod args;
pub mod chbind;
pub mod chxid;
pub mod cli;
pub mod ctx;
pub mod doc;
pub mod flags;
pub mod fstool;
pub mod hashify;
pub mod lsxid;
pub mod mountinfo;
pub mod num;
pub mod progress;
pub mod setattr;
pub mod showattr;
pub mod sys;
pub mod tag;
pub mod vcontext;
pub mod vctx;
pub mod vdlimit;
pub mod virt;
pub mod vkill;
pub mod vnamespace;
pub mod vps;
pub mod vserver;
pub mod vstat;
pub mod vxctl;
pub mod walk;

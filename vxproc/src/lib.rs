//! vxproc: each context's own `/proc/meminfo`, `swaps`, `loadavg`,
//! `stat`, `cpuinfo`, `uptime`, `diskstats` and
//! `/sys/devices/system/cpu/online`, made from its cgroups and served by
//! one host daemon over FUSE at `/run/vxfs/proc/XID/` (docs/SEMANTICS.md,
//! "A guest's own /proc figures"). The guest side (which files, binding
//! them, restarting the daemon) is [`vxfs_kernel::procview`].
//!
//! * [`figures`]: the files' formats and formulas (pure);
//! * [`source`]: a context's figures from its cgroups;
//! * [`sampler`]: the load-average sampler;
//! * [`fs`]: the FUSE tree;
//! * [`daemon`]: the lock, the mount, serving, stopping.

pub mod daemon;
pub mod figures;
pub mod fs;
pub mod sampler;
pub mod source;

/// The command's usage text (`--help`, its man page).
pub const USAGE: &str = "usage: vxproc [--mountpoint DIR] [--foreground]
       vxproc --stop [--mountpoint DIR]

Serves each running context's own meminfo, swaps, loadavg, stat, cpuinfo,
uptime, diskstats and online CPUs at DIR/XID/ (default: proc beside the
context registry, /run/vxfs/proc). `vserver NAME start` starts it when a
guest's flags ask for virt_mem, virt_cpu or virt_load.

Options:
  --mountpoint DIR   where to serve (default /run/vxfs/proc)
  -f, --foreground   stay in the foreground
  --stop             stop the daemon serving DIR
  -V, --version      print the version
  -h, --help         this text
";

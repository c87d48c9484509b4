//! The per-request cost of deciding a request's context (`cargo bench
//! --bench context`): the `xid=cgroup` cache hit (the common case: a
//! thread seen before, nothing moved or exited meanwhile), a miss (reading
//! `/proc/TID/cgroup`), and an id-range mapping as the baseline.
//!
//! Prints nanoseconds per lookup, the median of 5 runs of 200,000 lookups
//! (20,000 for misses).

use std::hint::black_box;
use std::time::Instant;

use vxfs::cgroup::{CgroupContexts, read_xid};
use vxfs::tagging::ContextMode;

fn median_ns(runs: usize, per_run: u32, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_run {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(per_run)
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let contexts = CgroupContexts::new();
    assert!(
        contexts.caching(),
        "tracepoints are needed to cache (run as root on a kernel with tracefs)"
    );
    contexts.xid_of(me);
    let hit = median_ns(5, 200_000, || {
        black_box(contexts.xid_of(black_box(me)));
    });
    let miss = median_ns(5, 20_000, || {
        black_box(read_xid(black_box(me)));
    });
    let ids = ContextMode::parse("uid/65536:2-100").expect("mode");
    let range = median_ns(5, 200_000, || {
        black_box(ids.xid_of_ids(black_box(6_619_136), 0));
    });
    println!("context lookup        ns/request");
    println!("xid=cgroup, hit       {hit:>10.1}");
    println!("xid=cgroup, miss      {miss:>10.1}");
    println!("xid=uid/SIZE          {range:>10.1}");
}

//! A spinner with a running figure for the tools' long runs
//! (`vdlimit --recount`, `vserver NAME build`), drawn on stderr only when
//! it is a terminal (indicatif hides it otherwise).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Runs `work` while a spinner shows `now()` (e.g. "recounting usage:
/// 12345 inodes"), asked every 100 ms; cleared after.
pub fn spinner<T: Send>(now: impl Fn() -> String + Sync, work: impl FnOnce() -> T + Send) -> T {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let ticker = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_message(now());
                bar.tick();
                std::thread::park_timeout(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        ticker.thread().unpark();
        out
    })
}

/// [`spinner`] showing `what: N UNIT` from the count `seen`.
pub fn counting<T: Send>(
    what: &str,
    unit: &str,
    seen: &AtomicU64,
    work: impl FnOnce() -> T + Send,
) -> T {
    spinner(
        || format!("{what}: {} {unit}", seen.load(Ordering::Relaxed)),
        work,
    )
}

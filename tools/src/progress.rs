//! A spinner with a count for the tools' long walks (`vdlimit --recount`),
//! drawn on stderr only when it is a terminal (indicatif hides it
//! otherwise).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Runs `work` while a spinner shows `what` and the count in `seen`
/// ("recounting usage: 12345 inodes"); cleared after.
pub fn counting<T: Send>(
    what: &str,
    unit: &str,
    seen: &AtomicU64,
    work: impl FnOnce() -> T + Send,
) -> T {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let ticker = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_message(format!("{what}: {} {unit}", seen.load(Ordering::Relaxed)));
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

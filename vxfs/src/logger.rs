//! A minimal stderr logger: level from `-d` or `RUST_LOG`
//! (error, warn, info, debug, trace; default warn).

use log::{LevelFilter, Log, Metadata, Record};

#[derive(Debug)]
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut level = record.level();
        let text = record.args().to_string();
        if record.target().starts_with("fuser") && is_forgotten_request(&text) {
            // The kernel no longer waits for that request (interrupted, or
            // its connection ended after a detach): as libfuse, not an
            // error.
            level = log::Level::Debug;
            if level > log::max_level() {
                return;
            }
        }
        eprintln!("vxfs[{}]: {level}: {text}", std::process::id());
    }

    fn flush(&self) {}
}

/// fuser's complaint about a reply the kernel refused with ENOENT.
fn is_forgotten_request(text: &str) -> bool {
    text.starts_with("Failed to send FUSE reply") && text.ends_with("(os error 2)")
}

/// Installs the logger; `debug` forces the debug level.
pub fn init(debug: bool) {
    let level = if debug {
        LevelFilter::Debug
    } else {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(LevelFilter::Warn)
    };
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_enoent_replies_are_forgotten_requests() {
        assert!(super::is_forgotten_request(
            "Failed to send FUSE reply: No such file or directory (os error 2)"
        ));
        assert!(!super::is_forgotten_request(
            "Failed to send FUSE reply: Bad address (os error 14)"
        ));
    }
}

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
        if self.enabled(record.metadata()) {
            eprintln!(
                "vxfs[{}]: {}: {}",
                std::process::id(),
                record.level(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
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

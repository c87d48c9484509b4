//! The daemon's log: `env_logger` filters (`RUST_LOG`, e.g.
//! `vxfs=debug,fuser=warn`; default `warn`, `-d` debug), written where an
//! administrator finds them:
//!
//! * on a terminal: `vxfs[PID]: LEVEL: message`;
//! * on any other stderr (a systemd unit's journal stream, a pipe, a file):
//!   the same line behind its syslog priority, `<4>vxfs[PID]: WARN: ...`,
//!   which journald files at that priority;
//! * once the daemon has detached from the command that mounted it (its
//!   stderr is then /dev/null): to syslog (`/dev/log`, facility daemon,
//!   so `journalctl -t vxfs` or /var/log/syslog), or, on a host without
//!   one, appended to `/run/vxfs/vxfs.log`.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;

use log::{LevelFilter, Log, Metadata, Record};

/// Where the log goes now.
#[derive(Debug)]
enum Sink {
    /// stderr, a terminal.
    Terminal,
    /// stderr, anything else.
    Stream,
    /// A syslog socket, connected to the path.
    Syslog(UnixDatagram, std::path::PathBuf),
    /// A file of the daemon's own.
    File(std::fs::File),
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// The file a detached daemon logs to when the host has no syslog.
pub const FALLBACK_LOG: &str = "/run/vxfs/vxfs.log";

fn sink() -> std::sync::MutexGuard<'static, Option<Sink>> {
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The syslog severity of `level`.
fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One log line for `sink` (without the newline).
fn line(sink: &Sink, level: log::Level, text: &str) -> String {
    let pid = std::process::id();
    match sink {
        Sink::Terminal => format!("vxfs[{pid}]: {level}: {text}"),
        Sink::Stream | Sink::File(_) => {
            format!("<{}>vxfs[{pid}]: {level}: {text}", severity(level))
        }
        // Facility daemon (3).
        Sink::Syslog(..) => format!("<{}>vxfs[{pid}]: {level}: {text}", 24 + severity(level)),
    }
}

/// Writes one formatted record to the current sink.
fn emit(level: log::Level, text: &str) {
    let mut guard = sink();
    let sink = guard.get_or_insert_with(stderr_sink);
    let line = line(sink, level, text);
    match sink {
        Sink::Terminal | Sink::Stream => {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        Sink::Syslog(socket, path) => {
            if socket.send(line.as_bytes()).is_err() {
                // journald or syslogd restarted: the same path, a new socket.
                if let Ok(fresh) = connect(path) {
                    let _ = fresh.send(line.as_bytes());
                    *socket = fresh;
                }
            }
        }
        Sink::File(file) => {
            let _ = writeln!(file, "{line}");
        }
    }
}

fn stderr_sink() -> Sink {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Sink::Terminal
    } else {
        Sink::Stream
    }
}

/// A datagram socket connected to the syslog socket at `path`.
fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    Ok(socket)
}

/// The daemon is detaching (its stderr is about to become /dev/null):
/// from now on the log goes to syslog at `socket` (`/dev/log`), else
/// appended to `fallback`.
pub fn detached(socket: &Path, fallback: &Path) {
    let next = connect(socket)
        .map(|s| Sink::Syslog(s, socket.to_path_buf()))
        .or_else(|_| {
            if let Some(dir) = fallback.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(fallback)
                .map(Sink::File)
        });
    if let Ok(next) = next {
        *sink() = Some(next);
    }
}

/// env_logger's filters, with fuser's complaints about replies to requests
/// the kernel no longer waits for made debug.
#[derive(Debug)]
struct Filtered(env_logger::Logger);

impl Log for Filtered {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let text = record.args().to_string();
        let level = if record.target().starts_with("fuser") && is_forgotten_request(&text) {
            // The kernel no longer waits for that request (interrupted, or
            // its connection ended after a detach): as libfuse, not an
            // error.
            log::Level::Debug
        } else {
            record.level()
        };
        let enabled = Metadata::builder()
            .level(level)
            .target(record.target())
            .build();
        if self.0.enabled(&enabled) {
            emit(level, &text);
        }
    }

    fn flush(&self) {}
}

/// fuser's complaint about a reply the kernel refused with ENOENT.
fn is_forgotten_request(text: &str) -> bool {
    text.starts_with("Failed to send FUSE reply") && text.ends_with("(os error 2)")
}

/// The filters in force: `-d` (debug) over `RUST_LOG` over `warn`.
fn filters(debug: bool, rust_log: Option<&str>) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    match (debug, rust_log) {
        (true, _) => builder.filter_level(LevelFilter::Debug),
        (false, Some(spec)) => builder.parse_filters(spec),
        (false, None) => builder.filter_level(LevelFilter::Warn),
    };
    builder.build()
}

/// Installs the logger; `debug` forces the debug level.
pub fn init(debug: bool) {
    let logger = filters(debug, std::env::var("RUST_LOG").ok().as_deref());
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Filtered(logger))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enoent_replies_are_forgotten_requests() {
        assert!(is_forgotten_request(
            "Failed to send FUSE reply: No such file or directory (os error 2)"
        ));
        assert!(!is_forgotten_request(
            "Failed to send FUSE reply: Bad address (os error 14)"
        ));
    }

    #[test]
    fn lines_carry_their_priority_where_no_one_reads_a_terminal() {
        let pid = std::process::id();
        let warn = log::Level::Warn;
        assert_eq!(
            line(&Sink::Terminal, warn, "x"),
            format!("vxfs[{pid}]: WARN: x")
        );
        assert_eq!(
            line(&Sink::Stream, log::Level::Error, "x"),
            format!("<3>vxfs[{pid}]: ERROR: x")
        );
        let (a, _b) = UnixDatagram::pair().unwrap();
        assert_eq!(
            line(&Sink::Syslog(a, "/dev/log".into()), log::Level::Info, "x"),
            format!("<30>vxfs[{pid}]: INFO: x")
        );
    }

    #[test]
    fn rust_log_filters_by_module() {
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        let l = filters(false, Some("vxfs=debug,fuser=error"));
        assert!(l.enabled(&meta("vxfs::fs", log::Level::Debug)));
        assert!(!l.enabled(&meta("fuser::session", log::Level::Warn)));
        let l = filters(false, None);
        assert!(l.enabled(&meta("vxfs", log::Level::Warn)));
        assert!(!l.enabled(&meta("vxfs", log::Level::Info)));
        let l = filters(true, Some("error"));
        assert!(l.enabled(&meta("vxfs", log::Level::Debug)));
    }

    #[test]
    fn a_detached_daemon_logs_to_syslog_else_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log");
        let server = UnixDatagram::bind(&socket).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let fallback = dir.path().join("run/vxfs.log");
        detached(&socket, &fallback);
        emit(log::Level::Warn, "to syslog");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(
            got,
            format!("<28>vxfs[{}]: WARN: to syslog", std::process::id())
        );
        // The syslog daemon restarts: the next line reaches the new one.
        drop(server);
        std::fs::remove_file(&socket).unwrap();
        let server = UnixDatagram::bind(&socket).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        emit(log::Level::Warn, "after a restart");
        let n = server.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("WARN: after a restart"));
        // No syslog: the file.
        detached(&dir.path().join("absent"), &fallback);
        emit(log::Level::Error, "to the file");
        let text = std::fs::read_to_string(&fallback).unwrap();
        assert!(text.ends_with("ERROR: to the file\n"), "{text:?}");
        *sink() = None;
    }
}

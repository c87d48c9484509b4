//! The log of vxfs's daemons (`vxfs`, `vxproc`) and of the tools' long
//! runs (the guest supervisor of `vserver NAME start`): `env_logger`
//! filters (`RUST_LOG`, e.g. `vxfs=debug,fuser=warn`; each program has its
//! default level, and `-d` forces debug), each line tagged with the
//! program, written where an administrator finds it:
//!
//! * on a terminal: `PROGRAM[PID]: LEVEL: message`;
//! * on any other stderr (a systemd unit's journal stream, a pipe, a file):
//!   the same line behind its syslog priority, `<4>vxfs[PID]: WARN: ...`,
//!   which journald files at that priority;
//! * once the program has detached from the command that started it
//!   ([`detached`]): to syslog (`/dev/log` or `$VXFS_SYSLOG`, facility
//!   daemon, so
//!   `journalctl -t PROGRAM` or /var/log/syslog), and, as [`Keep`] says,
//!   still to its stderr (the guest's console, vxproc's log) or, on a host
//!   without syslog, to a file of its own.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use log::LevelFilter;
use log::{Log, Metadata, Record};

/// Where the log goes now: one or more of these.
#[derive(Debug, Default)]
struct Sink {
    /// stderr: `Some(true)` a terminal, `Some(false)` anything else.
    stderr: Option<bool>,
    /// A syslog socket, connected to the path.
    syslog: Option<(UnixDatagram, PathBuf)>,
    /// A file of the program's own.
    file: Option<std::fs::File>,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// The tag of every line (the program's name), set by [`init`].
static PROGRAM: OnceLock<String> = OnceLock::new();

/// The file a detached vxfs daemon logs to when the host has no syslog.
pub const FALLBACK_LOG: &str = "/run/vxfs/vxfs.log";

/// The host's syslog socket.
pub const SYSLOG: &str = "/dev/log";

/// The syslog socket to use: `$VXFS_SYSLOG` (a syslog listening elsewhere,
/// a test's), else [`SYSLOG`].
pub fn syslog_socket() -> PathBuf {
    std::env::var_os("VXFS_SYSLOG").map_or_else(|| PathBuf::from(SYSLOG), PathBuf::from)
}

fn sink() -> std::sync::MutexGuard<'static, Option<Sink>> {
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

fn program() -> &'static str {
    PROGRAM.get().map_or("vxfs", String::as_str)
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

/// Where a line goes, for its format.
#[derive(Debug, Clone, Copy)]
enum To {
    Terminal,
    /// A stream or file: the severity in front.
    Stream,
    /// Syslog: facility daemon (3) and the severity in front.
    Syslog,
}

/// One log line (without the newline).
fn line(to: To, level: log::Level, text: &str) -> String {
    let (pid, program) = (std::process::id(), program());
    match to {
        To::Terminal => format!("{program}[{pid}]: {level}: {text}"),
        To::Stream => format!("<{}>{program}[{pid}]: {level}: {text}", severity(level)),
        To::Syslog => format!(
            "<{}>{program}[{pid}]: {level}: {text}",
            24 + severity(level)
        ),
    }
}

/// Writes one formatted record to every current sink.
fn emit(level: log::Level, text: &str) {
    let mut guard = sink();
    let sink = guard.get_or_insert_with(stderr_sink);
    if let Some(terminal) = sink.stderr {
        let to = if terminal { To::Terminal } else { To::Stream };
        let _ = writeln!(std::io::stderr(), "{}", line(to, level, text));
    }
    if let Some((socket, path)) = &mut sink.syslog {
        let line = line(To::Syslog, level, text);
        if socket.send(line.as_bytes()).is_err() {
            // journald or syslogd restarted: the same path, a new socket.
            if let Ok(fresh) = connect(path) {
                let _ = fresh.send(line.as_bytes());
                *socket = fresh;
            }
        }
    }
    if let Some(file) = &mut sink.file {
        let _ = writeln!(file, "{}", line(To::Stream, level, text));
    }
}

fn stderr_sink() -> Sink {
    Sink {
        stderr: Some(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        ..Sink::default()
    }
}

/// A datagram socket connected to the syslog socket at `path`.
fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    Ok(socket)
}

/// What a detached program keeps beside syslog.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'a> {
    /// Nothing: its stderr is about to become /dev/null. Without a
    /// syslog, the log is appended to this file instead.
    FileWithoutSyslog(&'a Path),
    /// Its stderr, now redirected to a log of its own (the guest's
    /// console, vxproc's log file), whether or not syslog takes the lines
    /// too.
    Stderr,
}

/// The program is detaching from the command that started it: from now on
/// the log goes to syslog at `socket` ([`SYSLOG`]) when there is one, and
/// to what `keep` says. Call it after stderr has been redirected.
pub fn detached(socket: &Path, keep: Keep<'_>) {
    let syslog = connect(socket).ok().map(|s| (s, socket.to_path_buf()));
    let mut next = Sink::default();
    match keep {
        Keep::Stderr => next.stderr = stderr_sink().stderr,
        Keep::FileWithoutSyslog(fallback) if syslog.is_none() => {
            let file = fallback
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(fallback)
                });
            match file {
                Ok(f) => next.file = Some(f),
                // Nowhere to write: keep what there was.
                Err(_) => return,
            }
        }
        Keep::FileWithoutSyslog(_) => {}
    }
    next.syslog = syslog;
    *sink() = Some(next);
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

/// The filters in force: `-d` (debug) over `RUST_LOG` over `default`.
fn filters(debug: bool, rust_log: Option<&str>, default: LevelFilter) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    match (debug, rust_log) {
        (true, _) => builder.filter_level(LevelFilter::Debug),
        (false, Some(spec)) => builder.parse_filters(spec),
        (false, None) => builder.filter_level(default),
    };
    builder.build()
}

/// Installs the logger of `program` (the tag of its lines), at `default`
/// unless `RUST_LOG` says otherwise; `debug` forces the debug level. A
/// second call changes nothing.
pub fn init(program: &str, default: LevelFilter, debug: bool) {
    let logger = filters(debug, std::env::var("RUST_LOG").ok().as_deref(), default);
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Filtered(logger))).is_ok() {
        let _ = PROGRAM.set(program.to_string());
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
            line(To::Terminal, warn, "x"),
            format!("vxfs[{pid}]: WARN: x")
        );
        assert_eq!(
            line(To::Stream, log::Level::Error, "x"),
            format!("<3>vxfs[{pid}]: ERROR: x")
        );
        assert_eq!(
            line(To::Syslog, log::Level::Info, "x"),
            format!("<30>vxfs[{pid}]: INFO: x")
        );
    }

    #[test]
    fn rust_log_filters_by_module() {
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        let warn = LevelFilter::Warn;
        let l = filters(false, Some("vxfs=debug,fuser=error"), warn);
        assert!(l.enabled(&meta("vxfs::fs", log::Level::Debug)));
        assert!(!l.enabled(&meta("fuser::session", log::Level::Warn)));
        let l = filters(false, None, warn);
        assert!(l.enabled(&meta("vxfs", log::Level::Warn)));
        assert!(!l.enabled(&meta("vxfs", log::Level::Info)));
        let l = filters(false, None, LevelFilter::Info);
        assert!(l.enabled(&meta("vserver", log::Level::Info)));
        let l = filters(true, Some("error"), warn);
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
        detached(&socket, Keep::FileWithoutSyslog(&fallback));
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
        detached(
            &dir.path().join("absent"),
            Keep::FileWithoutSyslog(&fallback),
        );
        emit(log::Level::Error, "to the file");
        let text = std::fs::read_to_string(&fallback).unwrap();
        assert!(text.ends_with("ERROR: to the file\n"), "{text:?}");
        // A supervisor keeps its stderr (the guest's console) beside
        // syslog, and it without one.
        detached(&socket, Keep::Stderr);
        emit(log::Level::Info, "both");
        let n = server.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("INFO: both"));
        assert!(sink().as_ref().unwrap().stderr.is_some());
        detached(&dir.path().join("absent"), Keep::Stderr);
        let guard = sink();
        let now = guard.as_ref().unwrap();
        assert!(now.stderr.is_some() && now.syslog.is_none() && now.file.is_none());
        drop(guard);
        *sink() = None;
    }
}

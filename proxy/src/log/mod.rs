//! Process logging (stderr, plus the global `log` targets once [`start`] ran) and the
//! per-session access log line in HAProxy's `tcplog` format, sent to each proxy's targets
//! through [`AccessLog`] (syslog over UDP or `/dev/log`, stderr, stdout; see `sink.rs`).

mod sink;
mod stderr;
mod syslog;
mod targets;
mod tcplog;
mod term;

pub use sink::{dropped, Sink, TargetSpec};
pub use syslog::{Format, Sender};
pub use targets::{start, AccessLog, LineFormat};
pub use tcplog::{HaproxyDate, SessionRecord};
pub use term::{Cause, Phase, TermState};

use std::time::Duration;

/// Writes `[LEVEL] message` lines to stderr through the writer thread (`stderr.rs`), one
/// `write` per line so threads never interleave.
struct StderrLogger {
    max: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.max
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        stderr::write(format!(
            "[{}] {}\n",
            level_word(record.level()),
            record.args()
        ));
        targets::process_message(record.level(), record.args());
    }

    fn flush(&self) {}
}

/// Waits (up to `limit`) until queued log lines are out: stderr's, then the targets'.
pub fn flush(limit: Duration) {
    stderr::flush(limit);
    targets::flush(limit);
}

/// HAProxy's words for severities, so existing log filters keep matching.
fn level_word(l: log::Level) -> &'static str {
    match l {
        log::Level::Error => "ALERT",
        log::Level::Warn => "WARNING",
        log::Level::Info => "NOTICE",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

/// Whether the process runs with `-d` (set once by [`init`]).
static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn debug_mode() -> bool {
    DEBUG.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the stderr logger; `debug` is the CLI's `-d`.
pub fn init(debug: bool) {
    DEBUG.store(debug, std::sync::atomic::Ordering::Relaxed);
    let max = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    if log::set_boxed_logger(Box::new(StderrLogger { max })).is_ok() {
        log::set_max_level(max);
    }
}

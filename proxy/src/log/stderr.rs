//! The process's own messages to stderr, written by a thread of their own: a worker that logs
//! a failed handshake or a bad request hands the line over a bounded queue and goes on; it
//! never waits on a slow terminal or a full pipe. A full queue drops the line and counts it
//! (`dropped logs` on the stats page), as the syslog sink does.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::counters::{Process, PROCESS};

/// Lines waiting for the writer; a burst beyond this is dropped and counted.
const QUEUE: usize = 4096;

static WRITER: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
/// Lines queued and not yet written, for [`flush`].
static PENDING: AtomicUsize = AtomicUsize::new(0);

fn writer() -> Option<&'static SyncSender<String>> {
    WRITER
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<String>(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("log-stderr".into())
                .spawn(move || {
                    for line in rx {
                        let _ = std::io::stderr().lock().write_all(line.as_bytes());
                        PENDING.fetch_sub(1, Ordering::Release);
                    }
                });
            spawned.ok().map(|_| tx)
        })
        .as_ref()
}

/// Queues one whole line (with its newline); written directly where no thread could start.
pub fn write(line: String) {
    let Some(tx) = writer() else {
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        return;
    };
    PENDING.fetch_add(1, Ordering::AcqRel);
    match tx.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            PENDING.fetch_sub(1, Ordering::AcqRel);
            Process::add(&PROCESS.dropped_log_lines, 1);
        }
        Err(TrySendError::Disconnected(line)) => {
            PENDING.fetch_sub(1, Ordering::AcqRel);
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Waits (up to `limit`) until every queued line is written: before the process exits.
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    while PENDING.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

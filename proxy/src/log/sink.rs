//! Delivery of log lines to the configured targets (`log ADDR FACILITY [LEVEL [MINLEVEL]]`):
//! UDP syslog, a unix datagram socket (`/dev/log`), stderr or stdout.
//!
//! Callers never wait: a line goes into a bounded queue with `try_send` and a thread of its own
//! frames and sends it. A full queue, or a send the network refuses, drops the line and counts
//! it ([`dropped`], exported as `haproxy_process_dropped_logs_total`), as HAProxy does.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{LogDest, LogFormat, LogTarget};
use crate::counters::{Process, PROCESS};

use super::syslog::{self, Format, LocalTime, Sender};

/// Lines waiting for the logger thread; past this, new lines are dropped and counted.
pub const QUEUE_LEN: usize = 1024;

/// Lines dropped so far in this process (full queue or failed send).
pub fn dropped() -> u64 {
    Process::read(&PROCESS.dropped_log_lines)
}

fn drop_one() {
    Process::add(&PROCESS.dropped_log_lines, 1);
}

/// One target as the sender filters and the thread frames.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub dest: LogDest,
    pub facility: u8,
    /// Most verbose severity sent (7 = debug sends all).
    pub level: u8,
    /// More urgent severities are lowered to this one (HAProxy's `minlevel`).
    pub minlevel: u8,
    pub format: Format,
    /// Longest datagram, framing included (`len`).
    pub len: usize,
}

impl TargetSpec {
    /// From a parsed `log` line. The parser has already checked the names; unknown ones (not
    /// reachable from a parsed config) fall back to `local0`/`debug` rather than fail.
    pub fn from_config(t: &LogTarget) -> TargetSpec {
        let level = |name: &Option<String>, default| {
            name.as_deref()
                .and_then(syslog::severity)
                .unwrap_or(default)
        };
        TargetSpec {
            dest: t.dest.clone(),
            facility: syslog::facility(&t.facility).unwrap_or(16),
            level: level(&t.level, 7),
            minlevel: level(&t.minlevel, 0),
            format: match t.format {
                LogFormat::Rfc3164 => Format::Rfc3164,
                LogFormat::Rfc5424 => Format::Rfc5424,
                LogFormat::Raw => Format::Raw,
            },
            len: t.len,
        }
    }

    /// The severity this target sends a message of `severity` at, or `None` to skip it.
    pub fn accepts(&self, severity: u8) -> Option<u8> {
        (severity <= self.level).then(|| severity.max(self.minlevel))
    }
}

enum Message {
    Line {
        targets: Arc<[usize]>,
        severity: u8,
        time: SystemTime,
        text: String,
    },
    Flush(SyncSender<()>),
}

/// The sending side, shared by every handle; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Message>,
    specs: Arc<[TargetSpec]>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("specs", &self.specs).finish()
    }
}

impl Sink {
    /// Opens the targets and starts the logger thread.
    pub fn start(specs: Vec<TargetSpec>, from: Sender) -> io::Result<Sink> {
        let (tx, rx) = sync_channel(QUEUE_LEN);
        let specs: Arc<[TargetSpec]> = specs.into();
        let outputs: Vec<Output> = specs.iter().map(Output::open).collect();
        let thread_specs = specs.clone();
        std::thread::Builder::new()
            .name("log".into())
            .spawn(move || run(rx, &thread_specs, outputs, &from))?;
        Ok(Sink { tx, specs })
    }

    /// Queues `text` for the targets at these indexes that accept `severity`; never blocks.
    pub fn send(&self, targets: &Arc<[usize]>, severity: u8, text: &str) {
        let wanted = targets.iter().any(|&i| {
            self.specs
                .get(i)
                .is_some_and(|s| s.accepts(severity).is_some())
        });
        if !wanted {
            return;
        }
        // No target sends more than its `len`, so the queue never holds more than that.
        let longest = targets
            .iter()
            .filter_map(|&i| self.specs.get(i))
            .map(|s| s.len)
            .max()
            .unwrap_or(0);
        let text = truncate(text, longest).to_string();
        let msg = Message::Line {
            targets: targets.clone(),
            severity,
            time: SystemTime::now(),
            text,
        };
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => drop_one(),
        }
    }

    /// Waits (at most `limit`) until every line queued before this call has been handed to
    /// the system: used at shutdown so the last lines are not lost.
    pub fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (ack_tx, ack_rx) = sync_channel(1);
        let mut msg = Message::Flush(ack_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An open destination. Sockets are opened once; a unix socket that is not there yet (no
/// syslog daemon) is retried on each line.
enum Output {
    Udp {
        socket: Option<UdpSocket>,
        to: SocketAddr,
    },
    Unix {
        socket: Option<UnixDatagram>,
        path: PathBuf,
    },
    Stderr,
    Stdout,
}

impl Output {
    fn open(spec: &TargetSpec) -> Output {
        match &spec.dest {
            LogDest::Udp(to) => {
                let any: SocketAddr = if to.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(any)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|e| log::warn!("log target {to}: cannot open a UDP socket: {e}"))
                    .ok();
                Output::Udp { socket, to: *to }
            }
            LogDest::Unix(path) => Output::Unix {
                socket: None,
                path: path.clone(),
            },
            LogDest::Stderr => Output::Stderr,
            LogDest::Stdout => Output::Stdout,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Udp { socket, to } => match socket {
                Some(s) => s.send_to(bytes, *to).map(drop),
                None => Err(io::ErrorKind::NotConnected.into()),
            },
            Output::Unix { socket, path } => {
                if socket.is_none() {
                    let s = UnixDatagram::unbound()?;
                    s.set_nonblocking(true)?;
                    *socket = Some(s);
                }
                match socket {
                    Some(s) => s.send_to(bytes, &*path).map(drop),
                    None => Err(io::ErrorKind::NotConnected.into()),
                }
            }
            Output::Stderr => io::stderr().lock().write_all(bytes),
            Output::Stdout => io::stdout().lock().write_all(bytes),
        }
    }
}

/// The logger thread: frames each line per target and sends it, until every sender is gone.
fn run(rx: Receiver<Message>, specs: &[TargetSpec], mut outputs: Vec<Output>, from: &Sender) {
    let warned: Vec<AtomicBool> = specs.iter().map(|_| AtomicBool::new(false)).collect();
    while let Ok(msg) = rx.recv() {
        let (targets, severity, time, text) = match msg {
            Message::Flush(ack) => {
                let _ = ack.try_send(());
                continue;
            }
            Message::Line {
                targets,
                severity,
                time,
                text,
            } => (targets, severity, time, text),
        };
        let local = LocalTime::of(time);
        for &i in targets.iter() {
            let (Some(spec), Some(out)) = (specs.get(i), outputs.get_mut(i)) else {
                continue;
            };
            let Some(sev) = spec.accepts(severity) else {
                continue;
            };
            let bytes = syslog::frame(
                spec.format,
                spec.facility,
                sev,
                &local,
                from,
                &text,
                spec.len,
            );
            if let Err(e) = out.write(&bytes) {
                drop_one();
                warn_once(&warned[i], spec, &e);
            }
        }
    }
}

/// The first failure of a target is reported on stderr (not through the log system, which
/// could loop back here); later ones are only counted.
fn warn_once(flag: &AtomicBool, spec: &TargetSpec, e: &io::Error) {
    if !flag.swap(true, Ordering::Relaxed) {
        let _ = writeln!(
            io::stderr(),
            "[WARNING] log target {:?}: cannot send: {e} (further failures are only counted)",
            spec.dest
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loc;

    fn spec(dest: LogDest, level: Option<&str>, minlevel: Option<&str>) -> TargetSpec {
        TargetSpec::from_config(&LogTarget {
            dest,
            facility: "local0".into(),
            level: level.map(String::from),
            minlevel: minlevel.map(String::from),
            format: LogFormat::Rfc3164,
            len: 1024,
            loc: Loc::default(),
        })
    }

    fn sender() -> Sender {
        Sender {
            tag: "haproxy".into(),
            pid: 7,
            hostname: "-".into(),
        }
    }

    fn udp_listener() -> (UdpSocket, SocketAddr) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let addr = s.local_addr().expect("addr");
        (s, addr)
    }

    fn recv(s: &UdpSocket) -> String {
        let mut buf = [0u8; 2048];
        let n = s.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn levels_filter_and_minlevel_caps() {
        let s = spec(LogDest::Stderr, Some("notice"), Some("err"));
        assert_eq!(s.accepts(6), None, "info is more verbose than notice");
        assert_eq!(s.accepts(5), Some(5));
        assert_eq!(s.accepts(0), Some(3), "emerg is lowered to err");
        let all = spec(LogDest::Stderr, None, None);
        assert_eq!(all.accepts(7), Some(7));
        assert_eq!(all.facility, 16);
    }

    #[test]
    fn lines_reach_a_udp_target_framed() {
        let (listener, addr) = udp_listener();
        let sink = Sink::start(vec![spec(LogDest::Udp(addr), Some("info"), None)], sender())
            .expect("sink");
        let targets: Arc<[usize]> = vec![0].into();
        sink.send(&targets, 7, "debug is filtered out");
        sink.send(&targets, 6, "hello");
        let line = recv(&listener);
        assert!(line.starts_with("<134>"), "{line}");
        assert!(line.ends_with(" haproxy[7]: hello\n"), "{line}");
        assert!(sink.flush(Duration::from_secs(5)));
    }

    #[test]
    fn unix_datagram_target() {
        let dir = std::env::temp_dir().join(format!("proxy-log-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind unix socket");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let sink = Sink::start(
            vec![spec(LogDest::Unix(path.clone()), None, None)],
            sender(),
        )
        .expect("sink");
        sink.send(&vec![0].into(), 3, "to /dev/log");
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("a datagram");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("<131>"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_unix_socket_counts_drops_without_blocking() {
        let sink = Sink::start(
            vec![spec(
                LogDest::Unix("/nonexistent/log.sock".into()),
                None,
                None,
            )],
            sender(),
        )
        .expect("sink");
        let before = dropped();
        sink.send(&vec![0].into(), 6, "nobody listens");
        assert!(sink.flush(Duration::from_secs(5)));
        assert!(dropped() > before);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        // A sink whose thread never drains: the queue fills and the rest is counted.
        let (tx, _rx) = sync_channel(2);
        let sink = Sink {
            tx,
            specs: vec![spec(LogDest::Stderr, None, None)].into(),
        };
        let before = dropped();
        let targets: Arc<[usize]> = vec![0].into();
        for _ in 0..5 {
            sink.send(&targets, 6, "x");
        }
        assert!(dropped() >= before + 3);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}

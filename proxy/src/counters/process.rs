//! Process-wide figures: what no single frontend, backend or server row owns (spliced HTTP
//! bytes, TLS handshakes and kTLS sessions, dropped log lines, live sessions per mode), and the
//! facts the runtime sets once at start (threads, event driver, kernel features).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::clock::now_ms;

/// Counters of the whole process. One static instance, [`PROCESS`]: each field is bumped by
/// exactly one room (named on the field) and read by the renderers.
#[derive(Debug)]
pub struct Process {
    /// HTTP body bytes moved by splice(2) (http).
    pub http_spliced_bytes: AtomicU64,
    /// TLS handshakes that failed (tls).
    pub tls_handshake_failures: AtomicU64,
    /// TLS sessions the client ended with a bare FIN, without close_notify: what it sent may
    /// have been cut short by someone on the path (tls).
    pub tls_truncated: AtomicU64,
    /// TLS sessions whose records the kernel took over (tls).
    pub ktls_sessions: AtomicU64,
    /// TLS sessions kept in userspace rustls (tls).
    pub tls_user_sessions: AtomicU64,
    /// kTLS flows moved by splice(2) (tls).
    pub ktls_spliced_flows: AtomicU64,
    /// Log lines dropped: full queue or failed send (log).
    pub dropped_log_lines: AtomicU64,
    /// Live `mode tcp` sessions, TLS handshakes included (tcp).
    pub tcp_sessions: AtomicUsize,
    /// Live `mode http` client connections, TLS handshakes included (http).
    pub http_sessions: AtomicUsize,
    /// Accept loops running (runtime): a stopping process waits for them to end, so that a
    /// connection one of them takes as the stop comes is in `accepted` before it reads that.
    pub accept_loops: AtomicUsize,
    /// Connections taken by an accept loop and not yet ended, from the accept on (runtime):
    /// a session counts itself only once its task runs, which may be after the stop looked.
    pub accepted: AtomicUsize,
}

pub static PROCESS: Process = Process {
    http_spliced_bytes: AtomicU64::new(0),
    tls_handshake_failures: AtomicU64::new(0),
    tls_truncated: AtomicU64::new(0),
    ktls_sessions: AtomicU64::new(0),
    tls_user_sessions: AtomicU64::new(0),
    ktls_spliced_flows: AtomicU64::new(0),
    dropped_log_lines: AtomicU64::new(0),
    tcp_sessions: AtomicUsize::new(0),
    http_sessions: AtomicUsize::new(0),
    accept_loops: AtomicUsize::new(0),
    accepted: AtomicUsize::new(0),
};

impl Process {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Live sessions of both modes.
    pub fn sessions(&self) -> usize {
        self.tcp_sessions.load(Ordering::Relaxed) + self.http_sessions.load(Ordering::Relaxed)
    }
}

/// Holds one unit of a live count (sessions of a mode, of a frontend, of a backend) and gives
/// it back when dropped, however the holder ends.
pub struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    pub fn enter(count: &'a AtomicUsize) -> Live<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Live(count)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Process-wide facts the runtime sets once at start.
#[derive(Debug)]
pub struct ProcessInfo {
    pub start_ms: u64,
    threads: AtomicU32,
    maxconn: AtomicU32,
    driver: OnceLock<&'static str>,
    /// Kernel fast paths probed at start and whether each is in use.
    features: OnceLock<Vec<(&'static str, bool)>>,
    /// `node` and `description` of the `global` section.
    identity: OnceLock<(Option<String>, Option<String>)>,
}

impl Default for ProcessInfo {
    fn default() -> Self {
        ProcessInfo {
            start_ms: now_ms(),
            threads: AtomicU32::new(1),
            maxconn: AtomicU32::new(0),
            driver: OnceLock::new(),
            features: OnceLock::new(),
            identity: OnceLock::new(),
        }
    }
}

impl ProcessInfo {
    /// A reload's copy: the start time, threads and what the start probed stay; `node`,
    /// `description` and `maxconn` come from the new config.
    pub fn carried(&self) -> ProcessInfo {
        let info = ProcessInfo {
            start_ms: self.start_ms,
            threads: AtomicU32::new(self.threads()),
            ..ProcessInfo::default()
        };
        if let Some(d) = self.driver() {
            info.set_driver(d);
        }
        if let Some(f) = self.features.get() {
            info.set_features(f.clone());
        }
        info
    }

    pub fn set_threads(&self, n: usize) {
        self.threads
            .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    pub fn threads(&self) -> u32 {
        self.threads.load(Ordering::Relaxed)
    }

    pub fn set_maxconn(&self, n: u32) {
        self.maxconn.store(n, Ordering::Relaxed);
    }

    pub fn maxconn(&self) -> u32 {
        self.maxconn.load(Ordering::Relaxed)
    }

    /// The event driver the workers run on (`io_uring`, `epoll`); the first call wins.
    pub fn set_driver(&self, name: &'static str) {
        let _ = self.driver.set(name);
    }

    pub fn driver(&self) -> Option<&'static str> {
        self.driver.get().copied()
    }

    /// The probe results; the first call wins.
    pub fn set_features(&self, features: Vec<(&'static str, bool)>) {
        let _ = self.features.set(features);
    }

    pub fn features(&self) -> &[(&'static str, bool)] {
        self.features.get().map_or(&[], Vec::as_slice)
    }

    /// `node` and `description`; the first call wins.
    pub fn set_identity(&self, node: Option<String>, description: Option<String>) {
        let _ = self.identity.set((node, description));
    }

    pub fn node(&self) -> Option<&str> {
        self.identity.get().and_then(|(n, _)| n.as_deref())
    }

    pub fn description(&self) -> Option<&str> {
        self.identity.get().and_then(|(_, d)| d.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_gives_its_unit_back() {
        let n = AtomicUsize::new(0);
        {
            let _a = Live::enter(&n);
            let _b = Live::enter(&n);
            assert_eq!(n.load(Ordering::Relaxed), 2);
        }
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn process_facts_are_set_once() {
        let info = ProcessInfo::default();
        info.set_threads(2);
        assert_eq!(info.threads(), 2);
        info.set_driver("io_uring");
        info.set_driver("epoll");
        assert_eq!(info.driver(), Some("io_uring"));
        info.set_features(vec![("io_uring", true)]);
        assert_eq!(info.features(), [("io_uring", true)]);
    }
}

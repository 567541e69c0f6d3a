//! Traffic figures of one frontend, backend or server row.

use std::sync::atomic::{AtomicU64, Ordering};

use super::clock::now_ms;
use super::rate::{Rate, SlidingAvg};

/// HTTP response classes in HAProxy's order: 1xx, 2xx, 3xx, 4xx, 5xx, other.
pub const HTTP_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Index into [`HTTP_CLASSES`] for a status code; anything outside 100..=599 is "other".
pub fn http_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

/// Per-session times in milliseconds (HAProxy's `qtime`, `ctime`, `rtime`, `ttime`).
#[derive(Debug, Default)]
pub struct Timings {
    pub queue: SlidingAvg,
    pub connect: SlidingAvg,
    /// Time to the response head (HTTP only).
    pub response: SlidingAvg,
    pub total: SlidingAvg,
}

/// Traffic figures of one frontend, backend or server; fields a kind of row has no use for
/// stay zero (the renderers leave them out as HAProxy does).
#[derive(Debug, Default)]
pub struct Counters {
    pub current: AtomicU64,
    pub max: AtomicU64,
    pub total: AtomicU64,
    /// Client → server bytes (HAProxy's `bin` on every row kind).
    pub bytes_in: AtomicU64,
    /// Server → client bytes (`bout`).
    pub bytes_out: AtomicU64,
    pub denied_req: AtomicU64,
    pub denied_resp: AtomicU64,
    pub failed_req: AtomicU64,
    pub failed_conn: AtomicU64,
    pub failed_resp: AtomicU64,
    pub retries: AtomicU64,
    pub redispatches: AtomicU64,
    pub http_responses: [AtomicU64; 6],
    pub http_requests: AtomicU64,
    pub client_aborts: AtomicU64,
    pub server_aborts: AtomicU64,
    pub queue_current: AtomicU64,
    pub queue_max: AtomicU64,
    /// Accepted connections (frontends).
    pub connections: AtomicU64,
    /// Connection attempts to servers (backends, servers).
    pub connect_attempts: AtomicU64,
    /// Sessions whose bytes a forwarding engine moved.
    pub flows: AtomicU64,
    pub internal_errors: AtomicU64,
    /// Unix milliseconds of the last session; 0 = never.
    pub last_session_ms: AtomicU64,
    pub session_rate: Rate,
    pub connection_rate: Rate,
    pub request_rate: Rate,
    /// Backends and servers only.
    pub timings: Timings,
    /// `udp-lb` rows: datagrams client → server (`bytes_in` has their bytes).
    pub datagrams_in: AtomicU64,
    /// `udp-lb` rows: datagrams server → client (`bytes_out` has their bytes).
    pub datagrams_out: AtomicU64,
    /// `udp-lb` rows: datagrams dropped (a stranger on a flow's server socket, no server,
    /// the flow limit with nothing idle to reclaim, a send the kernel refused).
    pub datagrams_dropped: AtomicU64,
}

impl Counters {
    /// Counts a new session; the guard takes it out of `current` when dropped.
    pub fn open_session(&self) -> SessionGuard<'_> {
        let now = now_ms();
        let current = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(current, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.last_session_ms.store(now, Ordering::Relaxed);
        self.session_rate.hit(now);
        SessionGuard(self)
    }

    /// Counts a new session whose end is reported by [`Counters::close_session`]: for
    /// sessions kept in a table rather than on a stack (UDP flows), where a guard's borrow
    /// cannot live.
    pub fn open_detached(&self) {
        std::mem::forget(self.open_session());
    }

    /// Ends a session counted by [`Counters::open_detached`].
    pub fn close_detached(&self) {
        self.current.fetch_sub(1, Ordering::Relaxed);
    }

    /// A frontend accepted a connection (before any session logic).
    pub fn accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connection_rate.hit(now_ms());
    }

    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// An HTTP request was received (frontends) or sent (backends, servers).
    pub fn http_request(&self) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
        self.request_rate.hit(now_ms());
    }

    pub fn http_response(&self, status: u16) {
        self.http_responses[http_class(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a peak of `current` reached outside [`Counters::open_session`] (servers count
    /// their connections in `balance::Server`).
    pub fn note_current(&self, current: u64) {
        self.max.fetch_max(current, Ordering::Relaxed);
        let now = now_ms();
        self.last_session_ms.store(now, Ordering::Relaxed);
        self.session_rate.hit(now);
    }

    /// `n` datagrams of `bytes` in all, client → server.
    pub fn datagrams_to_server(&self, n: u64, bytes: u64) {
        self.datagrams_in.fetch_add(n, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `n` datagrams of `bytes` in all, server → client.
    pub fn datagrams_to_client(&self, n: u64, bytes: u64) {
        self.datagrams_out.fetch_add(n, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A session's hold on its row's `current` count.
#[derive(Debug)]
pub struct SessionGuard<'a>(&'a Counters);

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn sessions_count_current_max_and_total() {
        let c = Counters::default();
        {
            let _a = c.open_session();
            let _b = c.open_session();
            assert_eq!(c.current.load(Ordering::Relaxed), 2);
        }
        let _c = c.open_session();
        assert_eq!(c.current.load(Ordering::Relaxed), 1);
        assert_eq!(c.max.load(Ordering::Relaxed), 2);
        assert_eq!(c.total.load(Ordering::Relaxed), 3);
        assert!(c.last_session_ms.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn http_classes_cover_every_status() {
        assert_eq!(http_class(101), 0);
        assert_eq!(http_class(200), 1);
        assert_eq!(http_class(399), 2);
        assert_eq!(http_class(404), 3);
        assert_eq!(http_class(503), 4);
        assert_eq!(http_class(0), 5);
        assert_eq!(http_class(600), 5);
        assert_eq!(http_class(u16::MAX), 5);
    }
}

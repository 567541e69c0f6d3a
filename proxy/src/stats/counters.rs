//! Live figures the data path and the health checker write: plain atomics with `Relaxed`
//! ordering. Each figure is independent (a reader may see bytes of a session whose count it
//! does not see yet), which is what HAProxy's counters promise too, and it keeps every update
//! a single uncontended instruction on the data path.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds; 0 if the clock is before 1970 (never on a sane host).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// HTTP response classes in HAProxy's order: 1xx, 2xx, 3xx, 4xx, 5xx, other.
pub const HTTP_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Index into [`HTTP_CLASSES`] for a status code; anything outside 100..=599 is "other".
pub fn http_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

/// An events-per-second estimate without locks, as HAProxy's `freq_ctr`: the count of the
/// current second plus the previous second's count weighted by the part of it still inside
/// the sliding one-second window.
#[derive(Debug, Default)]
pub struct Rate {
    /// `second << 32 | count` of the current second, swapped in one step so two threads
    /// rotating the window cannot both reset it.
    window: AtomicU64,
    previous: AtomicU32,
    max: AtomicU64,
}

impl Rate {
    pub fn hit(&self, now_ms: u64) {
        let second = (now_ms / 1000) as u32;
        let mut seen = self.window.load(Ordering::Relaxed);
        loop {
            let (cur_second, count) = ((seen >> 32) as u32, seen as u32);
            let next = if cur_second == second {
                seen + 1
            } else {
                (u64::from(second) << 32) | 1
            };
            match self.window.compare_exchange_weak(
                seen,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if cur_second != second {
                        let carried = if cur_second.wrapping_add(1) == second {
                            count
                        } else {
                            0
                        };
                        self.previous.store(carried, Ordering::Relaxed);
                    }
                    break;
                }
                Err(actual) => seen = actual,
            }
        }
        self.max.fetch_max(self.read(now_ms), Ordering::Relaxed);
    }

    /// Events over the last second as of `now_ms`.
    pub fn read(&self, now_ms: u64) -> u64 {
        let seen = self.window.load(Ordering::Relaxed);
        let (cur_second, count) = ((seen >> 32) as u32, u64::from(seen as u32));
        let second = (now_ms / 1000) as u32;
        let left = 1000 - now_ms % 1000;
        if cur_second == second {
            count + u64::from(self.previous.load(Ordering::Relaxed)) * left / 1000
        } else if cur_second.wrapping_add(1) == second {
            count * left / 1000
        } else {
            0
        }
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// HAProxy's "average over the last 1024 samples" (`swrate`), with the peak seen: a
/// lock-free running sum where each new sample replaces one average sample.
#[derive(Debug, Default)]
pub struct SlidingAvg {
    sum: AtomicU64,
    samples: AtomicU64,
    max: AtomicU64,
}

/// How many samples the average spans, as HAProxy's `TIME_STATS_SAMPLES`.
const AVG_SAMPLES: u64 = 1024;

impl SlidingAvg {
    pub fn add(&self, value: u64) {
        let before = self.samples.fetch_add(1, Ordering::Relaxed);
        // Until the window is full the sum is exact (a true mean); after, each sample pushes
        // out one average sample. Concurrent adds retry on a stale sum; the closure never fails.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                let kept = if before < AVG_SAMPLES {
                    sum
                } else {
                    sum - sum / AVG_SAMPLES
                };
                Some(kept.saturating_add(value))
            });
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    pub fn average(&self) -> u64 {
        let n = self.samples.load(Ordering::Relaxed).min(AVG_SAMPLES);
        if n == 0 {
            return 0;
        }
        self.sum.load(Ordering::Relaxed).div_ceil(n)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
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

/// UP/DOWN history of a server or a whole backend: HAProxy's `chkdown`, `lastchg`, `downtime`.
#[derive(Debug)]
pub struct Transitions {
    up: AtomicU8,
    changed_ms: AtomicU64,
    downs: AtomicU64,
    /// When the current DOWN period began; 0 while up.
    down_since_ms: AtomicU64,
    /// Finished DOWN periods, added up.
    downtime_ms: AtomicU64,
}

impl Default for Transitions {
    fn default() -> Self {
        Transitions {
            up: AtomicU8::new(1),
            changed_ms: AtomicU64::new(now_ms()),
            downs: AtomicU64::new(0),
            down_since_ms: AtomicU64::new(0),
            downtime_ms: AtomicU64::new(0),
        }
    }
}

impl Transitions {
    /// Records the state now; returns whether it changed. Only the health checker writes,
    /// one thread per object, so the load-then-store pairs below do not race each other.
    pub fn record(&self, up: bool) -> bool {
        let was_up = self.up.swap(u8::from(up), Ordering::Relaxed) == 1;
        if was_up == up {
            return false;
        }
        let now = now_ms();
        self.changed_ms.store(now, Ordering::Relaxed);
        if up {
            let since = self.down_since_ms.swap(0, Ordering::Relaxed);
            if since > 0 {
                self.downtime_ms
                    .fetch_add(now.saturating_sub(since), Ordering::Relaxed);
            }
        } else {
            self.downs.fetch_add(1, Ordering::Relaxed);
            self.down_since_ms.store(now.max(1), Ordering::Relaxed);
        }
        true
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed) == 1
    }

    /// UP → DOWN transitions so far.
    pub fn downs(&self) -> u64 {
        self.downs.load(Ordering::Relaxed)
    }

    pub fn since_change_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.changed_ms.load(Ordering::Relaxed))
    }

    /// Total time spent DOWN, the current period included.
    pub fn downtime_ms(&self, now_ms: u64) -> u64 {
        let since = self.down_since_ms.load(Ordering::Relaxed);
        let current = if since > 0 {
            now_ms.saturating_sub(since)
        } else {
            0
        };
        self.downtime_ms.load(Ordering::Relaxed) + current
    }
}

/// HAProxy's check status codes that a layer-4 check can produce (`check_status` column,
/// `state` label of `haproxy_server_check_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CheckStatus {
    /// No check has finished yet.
    Init = 0,
    Ok = 1,
    Timeout = 2,
    ConnRefused = 3,
    SocketError = 4,
}

impl CheckStatus {
    fn from_u8(v: u8) -> CheckStatus {
        match v {
            1 => CheckStatus::Ok,
            2 => CheckStatus::Timeout,
            3 => CheckStatus::ConnRefused,
            4 => CheckStatus::SocketError,
            _ => CheckStatus::Init,
        }
    }

    /// The short code of `show stat` (`L4OK`, `L4CON`, …).
    pub fn code(self) -> &'static str {
        match self {
            CheckStatus::Init => "INI",
            CheckStatus::Ok => "L4OK",
            CheckStatus::Timeout => "L4TOUT",
            CheckStatus::ConnRefused => "L4CON",
            CheckStatus::SocketError => "SOCKERR",
        }
    }

    /// HAProxy's `check_desc` wording.
    pub fn description(self) -> &'static str {
        match self {
            CheckStatus::Init => "Initializing",
            CheckStatus::Ok => "Layer4 check passed",
            CheckStatus::Timeout => "Layer4 timeout",
            CheckStatus::ConnRefused => "Layer4 connection problem",
            CheckStatus::SocketError => "Socket error",
        }
    }

    pub fn passed(self) -> bool {
        self == CheckStatus::Ok
    }
}

/// The last health check of a server, written by the checker thread only.
#[derive(Debug, Default)]
pub struct CheckStats {
    status: AtomicU8,
    duration_ms: AtomicU64,
    /// Consecutive results against the current state (the rise/fall progress).
    streak: AtomicU32,
    /// Failed checks while the server was UP (HAProxy's `chkfail`).
    failures: AtomicU64,
    /// What the last check said beyond its status (HAProxy's `last_chk`: the system's error
    /// text, empty for a pass). A lock, not atomics: a string written once per check by the
    /// checker thread and read by the stats page, never on the data path.
    info: Mutex<String>,
}

impl CheckStats {
    /// Records one finished check. `was_up` is the state before this result was counted.
    pub fn record(&self, status: CheckStatus, duration_ms: u64, streak: u32, was_up: bool) {
        self.status.store(status as u8, Ordering::Relaxed);
        self.duration_ms.store(duration_ms, Ordering::Relaxed);
        self.streak.store(streak, Ordering::Relaxed);
        if !status.passed() && was_up {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn status(&self) -> CheckStatus {
        CheckStatus::from_u8(self.status.load(Ordering::Relaxed))
    }

    pub fn set_info(&self, text: &str) {
        if let Ok(mut info) = self.info.lock() {
            info.clear();
            info.push_str(text);
        }
    }

    pub fn info(&self) -> String {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    pub fn duration_ms(&self) -> u64 {
        self.duration_ms.load(Ordering::Relaxed)
    }

    pub fn streak(&self) -> u32 {
        self.streak.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Everything the stats room keeps about one server; lives inside `balance::Server`.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub traffic: Counters,
    pub transitions: Transitions,
    pub check: CheckStats,
}

/// Everything the stats room keeps about one backend; lives inside `balance::ServerSet`.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub traffic: Counters,
    /// Whether any server can take traffic, as the checker last saw it.
    pub transitions: Transitions,
    /// The forwarding engine the plan chose for this backend's flows.
    engine: OnceLock<&'static str>,
}

impl BackendStats {
    /// Set once when the plan picks the engine; later calls keep the first value.
    pub fn set_engine(&self, name: &'static str) {
        let _ = self.engine.set(name);
    }

    pub fn engine(&self) -> Option<&'static str> {
        self.engine.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rate_counts_the_current_second_and_decays() {
        let r = Rate::default();
        let base = 1_000_000_000;
        for _ in 0..10 {
            r.hit(base);
        }
        assert_eq!(r.read(base), 10);
        // Half way into the next second half of the previous one still counts.
        assert_eq!(r.read(base + 1500), 5);
        r.hit(base + 1500);
        assert_eq!(r.read(base + 1500), 6);
        assert_eq!(r.read(base + 5000), 0);
        assert_eq!(r.max(), 10);
    }

    #[test]
    fn sliding_average_follows_recent_samples() {
        let a = SlidingAvg::default();
        assert_eq!((a.average(), a.max()), (0, 0));
        a.add(10);
        assert_eq!(a.average(), 10);
        a.add(20);
        a.add(30);
        assert_eq!(a.average(), 20, "an exact mean while the window fills");
        for _ in 0..5000 {
            a.add(100);
        }
        assert_eq!(a.average(), 100, "old samples fade out");
        a.add(1000);
        assert_eq!(a.max(), 1000);
        assert!(a.average() > 100 && a.average() < 110);
    }

    #[test]
    fn transitions_add_up_downtime() {
        let t = Transitions::default();
        assert!(t.is_up());
        assert!(!t.record(true));
        assert!(t.record(false));
        assert_eq!(t.downs(), 1);
        let now = now_ms();
        assert!(t.downtime_ms(now + 5000) >= 5000);
        assert!(t.record(true));
        let after = t.downtime_ms(now_ms() + 60_000);
        assert!(after < 5000, "finished periods do not grow: {after}");
    }

    #[test]
    fn check_failures_count_only_while_up() {
        let c = CheckStats::default();
        assert_eq!(c.status(), CheckStatus::Init);
        c.record(CheckStatus::ConnRefused, 3, 1, true);
        c.record(CheckStatus::ConnRefused, 2, 0, false);
        c.record(CheckStatus::Ok, 1, 1, false);
        assert_eq!(c.failures(), 1);
        assert_eq!(c.status().code(), "L4OK");
        assert_eq!(c.info(), "");
        c.set_info("Connection refused");
        assert_eq!(c.info(), "Connection refused");
        assert_eq!(c.duration_ms(), 1);
        assert_eq!(c.streak(), 1);
    }

    #[test]
    fn engine_is_set_once() {
        let b = BackendStats::default();
        assert_eq!(b.engine(), None);
        b.set_engine("copy");
        b.set_engine("splice");
        assert_eq!(b.engine(), Some("copy"));
    }
}

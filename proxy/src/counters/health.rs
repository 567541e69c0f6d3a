//! UP/DOWN history and the last health check of a server or backend.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use super::clock::now_ms;

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

/// HAProxy's check status codes that a TCP or HTTP check can produce (`check_status` column,
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
    /// The HTTP response met every expectation.
    L7Ok = 5,
    /// Connected, but no complete answer within the check's time.
    L7Timeout = 6,
    /// No usable response: nothing, not HTTP, or a body expectation not met.
    L7Response = 7,
    /// A status expectation not met.
    L7Status = 8,
    /// `check-ssl` without an HTTP check: the TLS handshake completed.
    L6Ok = 9,
    /// Connected, but the TLS handshake did not finish within the check's time.
    L6Timeout = 10,
    /// The TLS handshake failed (not TLS, an alert, a close).
    L6Response = 11,
}

impl CheckStatus {
    fn from_u8(v: u8) -> CheckStatus {
        match v {
            1 => CheckStatus::Ok,
            2 => CheckStatus::Timeout,
            3 => CheckStatus::ConnRefused,
            4 => CheckStatus::SocketError,
            5 => CheckStatus::L7Ok,
            6 => CheckStatus::L7Timeout,
            7 => CheckStatus::L7Response,
            8 => CheckStatus::L7Status,
            9 => CheckStatus::L6Ok,
            10 => CheckStatus::L6Timeout,
            11 => CheckStatus::L6Response,
            _ => CheckStatus::Init,
        }
    }

    /// The short code of `show stat` (`L4OK`, `L4CON`, `L7STS`, …).
    pub fn code(self) -> &'static str {
        match self {
            CheckStatus::Init => "INI",
            CheckStatus::Ok => "L4OK",
            CheckStatus::Timeout => "L4TOUT",
            CheckStatus::ConnRefused => "L4CON",
            CheckStatus::SocketError => "SOCKERR",
            CheckStatus::L7Ok => "L7OK",
            CheckStatus::L7Timeout => "L7TOUT",
            CheckStatus::L7Response => "L7RSP",
            CheckStatus::L7Status => "L7STS",
            CheckStatus::L6Ok => "L6OK",
            CheckStatus::L6Timeout => "L6TOUT",
            CheckStatus::L6Response => "L6RSP",
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
            CheckStatus::L7Ok => "Layer7 check passed",
            CheckStatus::L7Timeout => "Layer7 timeout",
            CheckStatus::L7Response => "Layer7 invalid response",
            CheckStatus::L7Status => "Layer7 wrong status",
            CheckStatus::L6Ok => "Layer6 check passed",
            CheckStatus::L6Timeout => "Layer6 timeout",
            CheckStatus::L6Response => "Layer6 invalid response",
        }
    }

    pub fn passed(self) -> bool {
        matches!(
            self,
            CheckStatus::Ok | CheckStatus::L6Ok | CheckStatus::L7Ok
        )
    }

    /// Whether the status carries the response's status code. HAProxy orders its statuses
    /// and shows `check_code` only from `HCHK_STATUS_L57DATA` on: L7OK, L7OKC and L7STS, not
    /// L7TOUT or L7RSP (a body mismatch has a status, but no column for it).
    pub fn has_code(self) -> bool {
        matches!(self, CheckStatus::L7Ok | CheckStatus::L7Status)
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
    /// The HTTP status of the last response, 0 when there was none.
    http_code: AtomicU16,
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

    /// Set before [`CheckStats::record`], with the same check's result.
    pub fn set_http_code(&self, code: Option<u16>) {
        self.http_code.store(code.unwrap_or(0), Ordering::Relaxed);
    }

    /// HAProxy's `check_code`: the status of the last response, for the statuses that
    /// report one.
    pub fn http_code(&self) -> Option<u16> {
        let code = self.http_code.load(Ordering::Relaxed);
        (self.status().has_code() && code != 0).then_some(code)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn http_codes_show_for_the_statuses_haproxy_shows_them_for() {
        let c = CheckStats::default();
        c.set_http_code(Some(503));
        c.record(CheckStatus::L7Status, 1, 1, true);
        assert_eq!((c.status().code(), c.http_code()), ("L7STS", Some(503)));
        assert_eq!(c.failures(), 1);
        c.set_http_code(Some(200));
        c.record(CheckStatus::L7Response, 1, 2, true);
        assert_eq!((c.status().code(), c.http_code()), ("L7RSP", None));
        c.set_http_code(Some(200));
        c.record(CheckStatus::L7Ok, 1, 0, true);
        assert!(c.status().passed());
        assert_eq!(c.http_code(), Some(200));
        c.set_http_code(None);
        c.record(CheckStatus::ConnRefused, 1, 1, true);
        assert_eq!(c.http_code(), None);
        for s in [
            CheckStatus::L7Timeout,
            CheckStatus::L7Response,
            CheckStatus::L7Status,
        ] {
            assert!(!s.passed());
            assert_eq!(CheckStatus::from_u8(s as u8), s);
        }
        assert_eq!(CheckStatus::L7Timeout.description(), "Layer7 timeout");
        assert_eq!(
            CheckStatus::L7Response.description(),
            "Layer7 invalid response"
        );
        assert_eq!(CheckStatus::L7Status.description(), "Layer7 wrong status");
        assert_eq!(CheckStatus::L7Ok.description(), "Layer7 check passed");
    }

    #[test]
    fn tls_statuses_read_as_haproxy_names_them() {
        let all = [
            (CheckStatus::L6Ok, "L6OK", "Layer6 check passed", true),
            (CheckStatus::L6Timeout, "L6TOUT", "Layer6 timeout", false),
            (
                CheckStatus::L6Response,
                "L6RSP",
                "Layer6 invalid response",
                false,
            ),
        ];
        for (s, code, desc, passed) in all {
            assert_eq!(CheckStatus::from_u8(s as u8), s);
            assert_eq!(
                (s.code(), s.description(), s.passed()),
                (code, desc, passed)
            );
            assert!(!s.has_code(), "HAProxy shows no check_code below layer 7");
        }
    }
}

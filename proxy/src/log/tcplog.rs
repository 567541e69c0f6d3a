//! HAProxy's `option tcplog` line:
//! `%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq`

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::term::TermState;

/// Everything one session's log line reports.
#[derive(Debug, Clone)]
pub struct SessionRecord<'a> {
    pub client: SocketAddr,
    pub accepted: SystemTime,
    pub frontend: &'a str,
    pub backend: &'a str,
    /// `<NOSRV>` when no server was reached.
    pub server: &'a str,
    /// Time waiting in queues, connecting, and in total; `None` prints HAProxy's `-1`.
    pub queue_wait: Option<Duration>,
    pub connect: Option<Duration>,
    pub total: Duration,
    /// Bytes sent to the client.
    pub bytes_down: u64,
    pub term: TermState,
    pub active: usize,
    pub frontend_conns: usize,
    pub backend_conns: usize,
    pub server_conns: usize,
    pub retries: u32,
}

impl fmt::Display for SessionRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} [{}] {} {}/{} {}/{}/{} {} {} {}/{}/{}/{}/{} 0/0",
            self.client.ip(),
            self.client.port(),
            HaproxyDate(self.accepted),
            self.frontend,
            self.backend,
            self.server,
            ms_or_minus(self.queue_wait),
            ms_or_minus(self.connect),
            self.total.as_millis(),
            self.bytes_down,
            self.term,
            self.active,
            self.frontend_conns,
            self.backend_conns,
            self.server_conns,
            self.retries,
        )
    }
}

fn ms_or_minus(d: Option<Duration>) -> String {
    d.map_or_else(|| "-1".to_string(), |d| d.as_millis().to_string())
}

/// `21/Nov/2026:07:30:00.123`, in UTC (also used by the HTTP room's httplog line).
pub struct HaproxyDate(pub SystemTime);

impl fmt::Display for HaproxyDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let tod = secs % 86_400;
        let month = MONTHS.get(m as usize - 1).copied().unwrap_or("???");
        write!(
            f,
            "{d:02}/{month}/{y}:{:02}:{:02}:{:02}.{:03}",
            tod / 3600,
            tod % 3600 / 60,
            tod % 60,
            since.subsec_millis()
        )
    }
}

/// English month abbreviations, as both HAProxy's log date and RFC 3164 write them.
pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 → (year, month 1..=12, day), Howard Hinnant's algorithm.
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (era * 400 + yoe + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_haproxy_tcplog() {
        let r = SessionRecord {
            client: "127.0.0.1:52310".parse().unwrap(),
            accepted: UNIX_EPOCH + Duration::from_millis(1_795_246_200_123),
            frontend: "rtmp_lb",
            backend: "backend_rtmp",
            server: "ams1",
            queue_wait: Some(Duration::ZERO),
            connect: Some(Duration::from_millis(1)),
            total: Duration::from_millis(5023),
            bytes_down: 1234,
            term: TermState::NORMAL,
            active: 2,
            frontend_conns: 1,
            backend_conns: 1,
            server_conns: 1,
            retries: 0,
        };
        assert_eq!(
            r.to_string(),
            "127.0.0.1:52310 [21/Nov/2026:07:30:00.123] rtmp_lb backend_rtmp/ams1 0/1/5023 1234 -- 2/1/1/1/0 0/0"
        );
    }

    #[test]
    fn dates_cross_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}

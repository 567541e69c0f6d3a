//! Syslog message framing: RFC 3164 (HAProxy's default) and RFC 5424, byte for byte as HAProxy
//! sends them, so an rsyslog or syslog-ng set up for HAProxy files our lines the same way.

use std::fmt::Write;

use super::tcplog::{civil_from_days, MONTHS};

/// The framing a target wants (HAProxy's `format` argument of `log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `<PRI>Mmm dd hh:mm:ss tag[pid]: msg`; HAProxy sends no hostname by default.
    #[default]
    Rfc3164,
    /// `<PRI>1 YYYY-MM-DDThh:mm:ss.uuuuuu+hh:mm host tag pid - - msg`.
    Rfc5424,
    /// The message alone.
    Raw,
}

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Facility code (0..=23) of a name the config parser accepted.
pub fn facility(name: &str) -> Option<u8> {
    FACILITIES.iter().position(|f| *f == name).map(|i| i as u8)
}

/// Severity code (0 = emerg ..= 7 = debug) of a level name.
pub fn severity(name: &str) -> Option<u8> {
    LEVELS.iter().position(|l| *l == name).map(|i| i as u8)
}

/// A local civil time, broken down; `offset_secs` is the UTC offset (east positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    pub offset_secs: i32,
}

impl LocalTime {
    /// The host's local time for `t` (the TZ environment or /etc/localtime), as syslog
    /// daemons expect RFC 3164 stamps; UTC if the C library cannot tell.
    pub fn of(t: std::time::SystemTime) -> LocalTime {
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = libc::time_t::try_from(since.as_secs()).unwrap_or(0);
        // SAFETY: `tm` is a plain C struct for which all-zero bytes are a valid value, and
        // localtime_r only writes into the struct we pass; it is the thread-safe variant.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid for the duration of the call.
        let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
        if !ok {
            return LocalTime::utc(since.as_secs(), since.subsec_micros());
        }
        LocalTime {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec as u32,
            micros: since.subsec_micros(),
            offset_secs: i32::try_from(tm.tm_gmtoff).unwrap_or(0),
        }
    }

    /// UTC broken down from Unix seconds (no C library involved).
    pub fn utc(secs: u64, micros: u32) -> LocalTime {
        let days = (secs / 86_400) as i64;
        let (year, month, day) = civil_from_days(days);
        let tod = secs % 86_400;
        LocalTime {
            year: i32::try_from(year).unwrap_or(1970),
            month,
            day,
            hour: (tod / 3600) as u32,
            minute: (tod % 3600 / 60) as u32,
            second: (tod % 60) as u32,
            micros,
            offset_secs: 0,
        }
    }
}

/// Who sends: the header fields that do not change between messages.
#[derive(Debug, Clone)]
pub struct Sender {
    /// `log-tag`; HAProxy's default is its program name, `haproxy`.
    pub tag: String,
    pub pid: u32,
    /// Only RFC 5424 carries it; `-` when unknown.
    pub hostname: String,
}

/// One framed message, at most `max_len` bytes (HAProxy's `len`, 1024 by default) including
/// the trailing newline HAProxy sends; a longer message is cut on a character boundary.
pub fn frame(
    format: Format,
    facility: u8,
    severity: u8,
    time: &LocalTime,
    from: &Sender,
    msg: &str,
    max_len: usize,
) -> Vec<u8> {
    let pri = u32::from(facility) * 8 + u32::from(severity.min(7));
    let mut out = String::with_capacity(64 + msg.len());
    match format {
        Format::Rfc3164 => {
            let month = (time.month as usize)
                .checked_sub(1)
                .and_then(|i| MONTHS.get(i))
                .unwrap_or(&"Jan");
            let _ = write!(
                out,
                "<{pri}>{month} {:>2} {:02}:{:02}:{:02} {}[{}]: ",
                time.day, time.hour, time.minute, time.second, from.tag, from.pid
            );
        }
        Format::Rfc5424 => {
            let _ = write!(
                out,
                "<{pri}>1 {} {} {} {} - - ",
                rfc3339(time),
                nil_if_empty(&from.hostname),
                nil_if_empty(&from.tag),
                from.pid
            );
        }
        Format::Raw => {}
    }
    let room = max_len.saturating_sub(out.len() + 1);
    out.push_str(cut(msg.trim_end_matches('\n'), room));
    out.push('\n');
    out.into_bytes()
}

fn nil_if_empty(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// `2026-11-21T07:30:00.123456+01:00`.
fn rfc3339(t: &LocalTime) -> String {
    let sign = if t.offset_secs < 0 { '-' } else { '+' };
    let off = t.offset_secs.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{sign}{:02}:{:02}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.micros,
        off / 3600,
        off % 3600 / 60
    )
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time() -> LocalTime {
        LocalTime {
            year: 2026,
            month: 11,
            day: 1,
            hour: 7,
            minute: 30,
            second: 5,
            micros: 123_456,
            offset_secs: 3600 + 1800,
        }
    }

    fn sender() -> Sender {
        Sender {
            tag: "haproxy".into(),
            pid: 4242,
            hostname: "lb1".into(),
        }
    }

    fn framed(format: Format, msg: &str, max: usize) -> String {
        let local0 = facility("local0").expect("facility");
        let info = severity("info").expect("severity");
        String::from_utf8(frame(format, local0, info, &time(), &sender(), msg, max)).expect("utf-8")
    }

    #[test]
    fn rfc3164_is_haproxy_exact() {
        assert_eq!(
            framed(Format::Rfc3164, "hello", 1024),
            "<134>Nov  1 07:30:05 haproxy[4242]: hello\n"
        );
        let mut t = time();
        t.day = 21;
        let out = frame(Format::Rfc3164, 0, 0, &t, &sender(), "x", 1024);
        assert_eq!(out, b"<0>Nov 21 07:30:05 haproxy[4242]: x\n");
    }

    #[test]
    fn rfc5424_is_exact() {
        assert_eq!(
            framed(Format::Rfc5424, "hello\n", 1024),
            "<134>1 2026-11-01T07:30:05.123456+01:30 lb1 haproxy 4242 - - hello\n"
        );
        let mut t = time();
        t.offset_secs = -(5 * 3600);
        let anon = Sender {
            hostname: String::new(),
            ..sender()
        };
        let out = frame(Format::Rfc5424, 23, 7, &t, &anon, "m", 1024);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "<191>1 2026-11-01T07:30:05.123456-05:00 - haproxy 4242 - - m\n"
        );
    }

    #[test]
    fn raw_is_the_message() {
        assert_eq!(framed(Format::Raw, "plain", 1024), "plain\n");
    }

    #[test]
    fn long_messages_are_cut_to_the_limit_on_a_char_boundary() {
        let msg = "é".repeat(600);
        let out = framed(Format::Rfc3164, &msg, 1024);
        assert!(out.len() <= 1024, "{}", out.len());
        assert!(out.ends_with("é\n"));
        assert_eq!(framed(Format::Raw, "abcdef", 4), "abc\n");
        assert_eq!(framed(Format::Raw, "abcdef", 0), "\n");
    }

    #[test]
    fn names_map_to_codes() {
        assert_eq!(facility("kern"), Some(0));
        assert_eq!(facility("local7"), Some(23));
        assert_eq!(facility("nope"), None);
        assert_eq!(severity("emerg"), Some(0));
        assert_eq!(severity("notice"), Some(5));
        assert_eq!(severity("debug"), Some(7));
    }

    #[test]
    fn utc_breakdown() {
        let t = LocalTime::utc(1_795_246_200, 7);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2026, 11, 21, 7, 30, 0)
        );
        assert_eq!(t.micros, 7);
    }

    #[test]
    fn local_time_is_sane() {
        let t = LocalTime::of(std::time::SystemTime::now());
        assert!((1..=12).contains(&t.month) && (1..=31).contains(&t.day));
        assert!(t.hour < 24 && t.minute < 60 && t.second < 61);
    }
}

//! HAProxy's `option httplog` line, one per request:
//! `%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r`
//! (no captures, so `%CC %CS` are `-` and `%hr %hs` are left out).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::log::{HaproxyDate, SessionRecord, TermState};

#[derive(Debug, Clone)]
pub struct HttpRecord {
    pub client: SocketAddr,
    /// When the request's first byte was awaited (accept, or the end of the previous one).
    pub started: SystemTime,
    /// The names are shared with the frontend and backend (and the placeholders static):
    /// a record costs no allocation for them (issue #14).
    pub frontend: Arc<str>,
    pub backend: Arc<str>,
    /// `<NOSRV>` when no server was reached, `<STATS>` for the stats page.
    pub server: Cow<'static, str>,
    /// Time to receive the whole request head.
    pub head: Option<Duration>,
    /// Time waited in a queue for a server slot (`%Tw`).
    pub queue: Duration,
    pub connect: Option<Duration>,
    /// Time from the request sent to the response head received.
    pub response: Option<Duration>,
    pub total: Duration,
    /// `None` prints -1 (no response was sent).
    pub status: Option<u16>,
    /// Bytes sent to the client.
    pub bytes: u64,
    /// Termination state (2 letters) and persistence cookie flags (2 letters).
    pub term: TermState,
    pub cookie: [char; 2],
    pub active: usize,
    pub frontend_conns: usize,
    pub backend_conns: usize,
    pub server_conns: usize,
    pub retries: u32,
    /// The last retry went to another server: HAProxy writes `%rc` as `+N` then.
    pub redispatched: bool,
    /// The request line; `<BADREQ>` when none could be read.
    pub request: String,
}

impl HttpRecord {
    /// The request as a tcplog line (HAProxy's `option tcplog` on an HTTP proxy).
    pub fn as_tcplog(&self) -> SessionRecord<'_> {
        SessionRecord {
            client: self.client,
            accepted: self.started,
            frontend: &self.frontend,
            backend: &self.backend,
            server: &self.server,
            queue_wait: Some(self.queue),
            connect: self.connect,
            total: self.total,
            bytes_down: self.bytes,
            term: self.term,
            active: self.active,
            frontend_conns: self.frontend_conns,
            backend_conns: self.backend_conns,
            server_conns: self.server_conns,
            retries: self.retries,
        }
    }

    pub fn new(client: SocketAddr, frontend: &Arc<str>) -> HttpRecord {
        HttpRecord {
            client,
            started: SystemTime::now(),
            frontend: frontend.clone(),
            backend: frontend.clone(),
            server: Cow::Borrowed("<NOSRV>"),
            head: None,
            queue: Duration::ZERO,
            connect: None,
            response: None,
            total: Duration::ZERO,
            status: None,
            bytes: 0,
            term: TermState::NORMAL,
            cookie: ['-', '-'],
            active: 0,
            frontend_conns: 0,
            backend_conns: 0,
            server_conns: 0,
            retries: 0,
            redispatched: false,
            request: "<BADREQ>".into(),
        }
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-1".to_string(), |d| d.as_millis().to_string())
}

/// `%{+Q}r`: quoted, with `"`, `#` and non-printable bytes as `#XX`, as HAProxy escapes them.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'"' && b != b'#' || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("#{b:02X}"));
        }
    }
    out.push('"');
    out
}

impl fmt::Display for HttpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} [{}] {} {}/{} {}/{}/{}/{}/{} {} {} - - {}{}{} {}/{}/{}/{}/{}{} 0/0 {}",
            self.client.ip(),
            self.client.port(),
            HaproxyDate(self.started),
            self.frontend,
            self.backend,
            self.server,
            ms(self.head),
            self.queue.as_millis(),
            ms(self.connect),
            ms(self.response),
            self.total.as_millis(),
            self.status.map_or(-1, i32::from),
            self.bytes,
            self.term,
            self.cookie[0],
            self.cookie[1],
            self.active,
            self.frontend_conns,
            self.backend_conns,
            self.server_conns,
            if self.redispatched { "+" } else { "" },
            self.retries,
            quoted(&self.request),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn formats_like_haproxy_httplog() {
        let mut r = HttpRecord::new("10.0.0.9:40000".parse().unwrap(), &"http_lb".into());
        r.started = UNIX_EPOCH + Duration::from_millis(1_795_246_200_123);
        r.backend = "backend_http".into();
        r.server = "ams1".into();
        r.head = Some(Duration::from_millis(2));
        r.connect = Some(Duration::from_millis(1));
        r.response = Some(Duration::from_millis(5));
        r.total = Duration::from_millis(9);
        r.status = Some(200);
        r.bytes = 512;
        r.cookie = ['N', 'R'];
        r.active = 1;
        r.frontend_conns = 1;
        r.backend_conns = 1;
        r.server_conns = 1;
        r.request = "GET /a\"b HTTP/1.1".into();
        assert_eq!(
            r.to_string(),
            "10.0.0.9:40000 [21/Nov/2026:07:30:00.123] http_lb backend_http/ams1 2/0/1/5/9 200 512 - - --NR 1/1/1/1/0 0/0 \"GET /a#22b HTTP/1.1\""
        );
        r.retries = 1;
        r.redispatched = true;
        assert!(r.to_string().contains(" 1/1/1/1/+1 0/0 "), "{r}");
        r.queue = Duration::from_millis(1004);
        assert!(r.to_string().contains(" 2/1004/1/5/9 "), "%Tw in {r}");
    }
}

//! What one HTTP request adds to the figures of its frontend, backend and server, with the
//! meaning HAProxy gives each `show stat` column (management guide, 9.1):
//!
//! * frontend `stot`/`scur` are client connections (opened by the session, not here); backend
//!   `stot`/`scur` are requests assigned to the backend, server ones the server's claims;
//! * `req_tot`: on the frontend every request received, answered ones included (a bad request
//!   too); on a backend every request assigned to it that got an answer; on a server every
//!   response head it sent;
//! * `hrsp_*`: on the frontend every answer the client got, the proxy's own included (403,
//!   503, the stats page); on a backend the answers of the requests assigned to it; on a server
//!   only what the server itself answered;
//! * `bin`/`bout`: all bytes of a request (read from the client) and of its answer (sent to
//!   the client), on the frontend, the backend it was assigned to, and the server it reached;
//!   so a frontend whose every request reaches one backend shows the same bytes as it. Bytes
//!   of a request no backend took go to the section's own backend row, which only a `listen`
//!   has (HAProxy's stream starts with its frontend as backend): a `listen stats` shows its
//!   page's bytes on both rows, but no sessions or requests on the backend one;
//! * `dreq`: `http-request deny`, on the frontend always, on the backend when its own rules
//!   denied; `ereq` (frontend only): requests that could not be read whole (bad, timed out,
//!   cut); `econ`, `wretr`, `wredis`: the connect step (`tcp::connect`); `eresp`: no usable
//!   answer from the server, server aborts included; `cli_abrt`/`srv_abrt`: transfers cut;
//! * `ctime`/`rtime`/`ttime`: sampled when the server answered, from the start of the
//!   request's wait (accept, or the end of the previous request) as HAProxy's `t_close`.
//!
//! Everything but the error counters is settled once, when the request ends (a tunnel ends
//! with its flow), which is also when HAProxy counts answers. The exception is a tunnel's
//! bytes: a WebSocket may stay open for hours, so its heads are booked when the tunnel starts
//! and the forward engine adds its flow's bytes as they move ([`Tally::live`]); `settle` then
//! adds only what was not booked yet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::counters::{Counters, Flow, SessionGuard};
use crate::forward::Progress;
use crate::upstream::Server;

use super::httplog::HttpRecord;

pub struct Tally<'f> {
    fe: &'f Counters,
    /// The frontend section's own backend row (a `listen`'s), for bytes of unassigned requests.
    own: Option<&'f Counters>,
    be: Option<Assigned<'f>>,
    server: Option<Arc<Server>>,
    /// Client bytes read on the connection before this request; bytes are counted as read, so
    /// a pipelined request that came in one read with the previous one counts with it, and
    /// the connection's total stays exact.
    read_mark: u64,
    /// Bytes sent to the client (`HttpRecord::bytes`) already booked.
    sent_mark: u64,
    /// The server's response head arrived: HAProxy samples timings only then.
    responded: bool,
    /// Start of the request's wait: the accept, or the end of the previous request.
    opened: Instant,
    settled: bool,
    /// The client connection's line in the flow table (`show sess`): its server and bytes.
    flow: Option<&'f Flow>,
}

/// A backend the request was assigned to, and the request's place in its `scur`.
struct Assigned<'f> {
    counters: &'f Counters,
    _session: SessionGuard<'f>,
}

impl<'f> Tally<'f> {
    pub fn new(fe: &'f Counters, own: Option<&'f Counters>, read_mark: u64) -> Tally<'f> {
        Tally {
            fe,
            own,
            be: None,
            server: None,
            read_mark,
            sent_mark: 0,
            responded: false,
            opened: Instant::now(),
            settled: false,
            flow: None,
        }
    }

    /// The connection's flow-table line, told this request's server and bytes.
    pub fn set_flow(&mut self, flow: &'f Flow) {
        self.flow = Some(flow);
    }

    /// A request head was received (or answered as bad): the frontend's `req_tot`.
    pub fn request(&self) {
        self.fe.http_request();
    }

    /// The request goes to this backend (HAProxy's `SF_BE_ASSIGNED`); the first call wins.
    pub fn assign(&mut self, be: &'f Counters) {
        if self.be.is_none() {
            self.be = Some(Assigned {
                counters: be,
                _session: be.open_session(),
            });
        }
    }

    /// The server the request is sent to (a replayed request keeps the last one).
    pub fn server(&mut self, server: &Arc<Server>) {
        self.server = Some(server.clone());
        if let (Some(flow), Some(be)) = (self.flow, &self.be) {
            flow.set_server(be.counters, server.index, server.addr(), "http");
        }
    }

    /// A pooled connection was used: HAProxy samples a zero connect time for it.
    pub fn reused(&self) {
        for c in self.backend_side() {
            c.timings.connect.add(0);
        }
    }

    /// The server's response head (interim ones excluded): the server's `req_tot`, `hrsp_*`.
    pub fn response_head(&mut self, status: u16) {
        self.responded = true;
        if let Some(s) = &self.server {
            s.stats.traffic.http_request();
            s.stats.traffic.http_response(status);
        }
    }

    /// `http-request deny`: the frontend's `dreq`, and the backend's when one is assigned.
    pub fn denied(&self) {
        Counters::bump(&self.fe.denied_req);
        if let Some(b) = &self.be {
            Counters::bump(&b.counters.denied_req);
        }
    }

    /// `http-response deny`: `dresp` of the frontend, the backend and the server.
    pub fn denied_response(&self) {
        Counters::bump(&self.fe.denied_resp);
        for c in self.backend_side() {
            Counters::bump(&c.denied_resp);
        }
    }

    /// A request that could not be read whole: the frontend's `ereq`.
    pub fn bad_request(&self) {
        Counters::bump(&self.fe.failed_req);
    }

    /// The backend had no usable server: its `econ`, with no server to blame.
    pub fn no_server(&self) {
        if let Some(b) = &self.be {
            Counters::bump(&b.counters.failed_conn);
        }
    }

    /// An error of the server side (`eresp`, `cli_abrt`, `srv_abrt`): on the backend and the
    /// server, which are the rows that have these columns.
    pub fn error(&self, counter: fn(&Counters) -> &AtomicU64) {
        for c in self.backend_side() {
            Counters::bump(counter(c));
        }
    }

    /// The server stopped mid-transfer: HAProxy counts it in `srv_abrt` and in `eresp`.
    pub fn server_abort(&self) {
        self.error(|c| &c.server_aborts);
        self.error(|c| &c.failed_resp);
    }

    fn backend_side(&self) -> impl Iterator<Item = &Counters> {
        let be = self.be.as_ref().map(|b| b.counters);
        let server = self.server.as_ref().map(|s| &s.stats.traffic);
        be.into_iter().chain(server)
    }

    /// The rows a tunnel's bytes go to as the forward engine moves them: the frontend, the
    /// backend and the server. `None` before a backend and a server are assigned.
    pub fn live(&self) -> Option<Progress<'_>> {
        let be = self.be.as_ref()?.counters;
        let server = &self.server.as_ref()?.stats.traffic;
        let live = Progress::to(self.fe, be, server);
        Some(match self.flow {
            Some(flow) => live.with_flow(flow.bytes()),
            None => live,
        })
    }

    /// Books the bytes of the request so far now: every row gets what was read from the
    /// client up to `client_read` and sent to it up to `sent`, and `settle` adds only what
    /// comes after.
    pub fn book_bytes(&mut self, client_read: u64, sent: u64) {
        let bytes_in = client_read.saturating_sub(self.read_mark);
        let bytes_out = sent.saturating_sub(self.sent_mark);
        self.add_bytes(bytes_in, bytes_out);
        self.counted_up_to(client_read, sent);
    }

    /// The bytes up to these totals were added elsewhere (by the forward engine, through
    /// [`Tally::live`]): `settle` must not add them again.
    pub fn counted_up_to(&mut self, client_read: u64, sent: u64) {
        self.read_mark = self.read_mark.max(client_read);
        self.sent_mark = self.sent_mark.max(sent);
    }

    /// Bytes on the frontend, on the backend the request was assigned to (else the section's
    /// own backend row), and on the server it reached.
    fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.fe.add_bytes(bytes_in, bytes_out);
        if let Some(flow) = self.flow {
            let bytes = flow.bytes();
            bytes.up.fetch_add(bytes_in, Ordering::Relaxed);
            bytes.down.fetch_add(bytes_out, Ordering::Relaxed);
        }
        match (&self.be, self.own) {
            (Some(b), _) => b.counters.add_bytes(bytes_in, bytes_out),
            (None, Some(own)) => own.add_bytes(bytes_in, bytes_out),
            (None, None) => {}
        }
        if let Some(s) = &self.server {
            s.stats.traffic.add_bytes(bytes_in, bytes_out);
        }
    }

    /// Counts the finished request once: bytes not booked yet, answer, timings. `client_read`
    /// is every byte read from the client connection so far. The backend's `scur` place is
    /// given back.
    pub fn settle(&mut self, record: &HttpRecord, client_read: u64) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        self.book_bytes(client_read, record.bytes);
        if let Some(status) = record.status {
            self.fe.http_response(status);
        }
        let be = self.be.take();
        // HAProxy counts a backend's requests with their answers.
        if let (Some(b), Some(status)) = (&be, record.status) {
            b.counters.http_request();
            b.counters.http_response(status);
        }
        let server = self.server.as_ref().map(|s| &s.stats.traffic);
        if self.responded {
            let total = self.opened.elapsed();
            for c in be.as_ref().map(|b| b.counters).into_iter().chain(server) {
                c.timings.response.add(ms(record.response));
                c.timings.total.add(ms(Some(total)));
            }
        }
    }
}

fn ms(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ServerSet;
    use std::sync::atomic::Ordering;

    fn set() -> ServerSet {
        let cfg = crate::config::parse_str(
            "backend be\n    mode http\n    server s1 127.0.0.1:1\n",
            std::path::Path::new("t.cfg"),
        )
        .expect("valid config");
        ServerSet::from_config(cfg.proxy("be").expect("backend"))
    }

    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    fn record(status: Option<u16>, bytes: u64) -> HttpRecord {
        let mut r = HttpRecord::new("127.0.0.1:5000".parse().expect("addr"), &"fe".into());
        r.status = status;
        r.bytes = bytes;
        r.response = Some(Duration::from_millis(7));
        r
    }

    #[test]
    fn a_served_request_counts_on_every_row() {
        let fe = Counters::default();
        let set = set();
        let be = &set.stats.traffic;
        let server = set.servers()[0].clone();
        let mut t = Tally::new(&fe, None, 100);
        t.request();
        t.assign(be);
        assert_eq!(get(&be.current), 1, "the backend's scur while it runs");
        t.server(&server);
        t.response_head(200);
        t.settle(&record(Some(200), 500), 180);
        t.settle(&record(Some(200), 500), 180);
        assert_eq!(get(&be.current), 0);
        for c in [&fe, be, &server.stats.traffic] {
            assert_eq!((get(&c.bytes_in), get(&c.bytes_out)), (80, 500));
            assert_eq!(get(&c.http_requests), 1, "counted once");
            assert_eq!(get(&c.http_responses[1]), 1);
        }
        assert_eq!(get(&be.total), 1);
        assert_eq!(be.timings.response.average(), 7);
        assert_eq!(server.stats.traffic.timings.response.max(), 7);
    }

    #[test]
    fn a_frontend_deny_stays_on_the_frontend() {
        let fe = Counters::default();
        let set = set();
        let mut t = Tally::new(&fe, None, 0);
        t.request();
        t.denied();
        t.settle(&record(Some(403), 90), 40);
        assert_eq!(get(&fe.denied_req), 1);
        assert_eq!(get(&fe.http_responses[3]), 1);
        assert_eq!(get(&fe.bytes_in), 40);
        let be = &set.stats.traffic;
        assert_eq!(
            get(&be.denied_req) + get(&be.http_requests) + get(&be.bytes_in),
            0
        );
    }

    #[test]
    fn a_listen_keeps_the_bytes_of_what_it_answers_itself() {
        let fe = Counters::default();
        let own = Counters::default();
        let mut t = Tally::new(&fe, Some(&own), 0);
        t.request();
        t.settle(&record(Some(200), 900), 60);
        assert_eq!((get(&own.bytes_in), get(&own.bytes_out)), (60, 900));
        assert_eq!(get(&own.total) + get(&own.http_requests), 0, "not assigned");
        assert_eq!(own.http_responses.iter().map(get).sum::<u64>(), 0);
    }

    #[test]
    fn a_backend_deny_and_errors_reach_the_backend() {
        let fe = Counters::default();
        let set = set();
        let be = &set.stats.traffic;
        let mut t = Tally::new(&fe, None, 0);
        t.assign(be);
        t.denied();
        t.no_server();
        t.server_abort();
        t.settle(&record(Some(403), 90), 40);
        assert_eq!((get(&fe.denied_req), get(&be.denied_req)), (1, 1));
        assert_eq!(get(&be.failed_conn), 1);
        assert_eq!((get(&be.server_aborts), get(&be.failed_resp)), (1, 1));
        assert_eq!(get(&be.http_responses[3]), 1);
        assert_eq!(
            be.timings.total.max(),
            0,
            "no server answer, no timing sample"
        );
    }

    #[test]
    fn a_tunnel_counted_live_is_not_counted_again() {
        let fe = Counters::default();
        let set = set();
        let be = &set.stats.traffic;
        let server = set.servers()[0].clone();
        let mut t = Tally::new(&fe, None, 100);
        t.request();
        t.assign(be);
        t.server(&server);
        t.response_head(101);
        // The heads (40 bytes in, 130 out) when the tunnel starts.
        t.book_bytes(140, 130);
        let live = t.live().expect("backend and server assigned");
        live.up(1000);
        live.down(2000);
        t.counted_up_to(1140, 2130);
        t.settle(&record(Some(101), 2130), 1140);
        for c in [&fe, be, &server.stats.traffic] {
            assert_eq!((get(&c.bytes_in), get(&c.bytes_out)), (1040, 2130));
        }
        assert_eq!(get(&be.http_requests), 1);
    }

    #[test]
    fn a_request_without_answer_counts_bytes_only() {
        let fe = Counters::default();
        let mut t = Tally::new(&fe, None, 10);
        t.bad_request();
        t.settle(&record(None, 0), 25);
        assert_eq!(get(&fe.failed_req), 1);
        assert_eq!(get(&fe.bytes_in), 15);
        assert_eq!(fe.http_responses.iter().map(get).sum::<u64>(), 0);
    }
}

//! One request from its head to its log line, whatever the client speaks: the [`Exchange`]
//! that carries it through the rules (`route`), to a server (`exchange`) and back, the
//! proxy's own error pages, and the final accounting (counters, httplog line). An HTTP/1.1
//! connection (`session.rs`) runs one exchange after the other; an HTTP/2 connection
//! (`h2/`) runs one per stream, side by side.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::counters::{Flow, PROCESS};
use crate::log::{AccessLog, Cause, LineFormat, Phase, TermState};
use crate::upstream::Origin;

use super::acl::Ctx;
use super::client::Client;
use super::conn::ClientConn;
use super::error::HttpError;
use super::head::{head_end, Request};
use super::httplog::HttpRecord;
use super::pool;
use super::session::Next;
use super::side::Side;
use super::tally::Tally;
use super::{Backend, Frontend};

/// One request and its response. `C` is the client end: an HTTP/1.1 connection by default,
/// or an HTTP/2 stream.
pub(super) struct Exchange<'f, 'c, C: Client = Side<ClientConn>> {
    pub(super) fe: &'f Frontend,
    /// The client's addresses (its PROXY header's on an `accept-proxy` bind): `src` is what
    /// ACLs, `option forwardfor`, `balance source` and the log see.
    pub(super) origin: Origin,
    pub(super) client: &'c mut C,
    /// The client connection's private idle server connection (`http-reuse never`, and
    /// servers that get a PROXY header); `None` where the client keeps none (HTTP/2 streams).
    pub(super) private: Option<&'c mut Option<pool::Private>>,
    pub(super) first: bool,
    pub(super) accepted: Instant,
    pub(super) record: HttpRecord,
    pub(super) t0: Instant,
    pub(super) tally: Tally<'f>,
    /// The request is a `HEAD`: what the proxy answers by itself carries no body, or the
    /// next response on the connection would be misread as the rest of this one.
    pub(super) head_only: bool,
}

impl<'f, 'c, C: Client> Exchange<'f, 'c, C> {
    /// The next exchange with `client`; `first`: the first request on its connection. The
    /// request's share of the client's bytes starts at what was read so far.
    pub(super) fn new(
        fe: &'f Frontend,
        origin: Origin,
        client: &'c mut C,
        first: bool,
        accepted: Instant,
    ) -> Exchange<'f, 'c, C> {
        let read_mark = client.read_total();
        Exchange {
            fe,
            origin,
            client,
            private: None,
            first,
            accepted,
            record: HttpRecord::new(origin.src, &fe.name),
            t0: Instant::now(),
            head_only: false,
            tally: Tally::new(
                &fe.counters,
                fe.own_backend.as_ref().map(|b| &b.stats.traffic),
                read_mark,
            ),
        }
    }

    /// The client connection's line in the flow table, for `show sess`.
    pub(super) fn with_flow(mut self, flow: &'f Flow) -> Self {
        self.tally.set_flow(flow);
        self
    }

    /// Lends the exchange the client connection's private idle server connection slot.
    pub(super) fn with_private(mut self, slot: &'c mut Option<pool::Private>) -> Self {
        self.private = Some(slot);
        self
    }

    /// A request head was read: counted, noted for the log, then routed. Not an `async fn`:
    /// its future would be one more level that holds the rest of the exchange, moved into
    /// its caller's for every request (issue #14); this returns `route`'s own.
    pub(super) fn serve(mut self, req: Request) -> impl Future<Output = Next<'f>> + use<'f, 'c, C> {
        self.tally.request();
        self.head_only = req.method == "HEAD";
        self.record.head = Some(self.t0.elapsed());
        // Formatted only for a log line that will be written.
        if self.fe.access_log.logs(LineFormat::Http) {
            self.record.request = req.line();
        }
        self.route(req)
    }

    /// An answer of the proxy's own as it goes out: without its body for a `HEAD` (the head's
    /// `Content-Length` still says what a `GET` would get, as RFC 9110 §9.3.2 allows).
    pub(super) fn local_bytes(&self, mut answer: Vec<u8>) -> Vec<u8> {
        if self.head_only {
            if let Some(end) = head_end(&answer, 0) {
                answer.truncate(end);
            }
        }
        answer
    }

    pub(super) fn client_idle(&self) -> Option<Duration> {
        self.fe.client_timeout
    }

    /// Every case is a request error (`ereq`); those the proxy answers also count as a
    /// request, as HAProxy's H1 mux counts them.
    pub(super) async fn request_failed(&mut self, e: HttpError) -> Next<'f> {
        self.tally.bad_request();
        match e {
            HttpError::BadRequest { status, reason } => {
                log::info!(
                    "frontend {}: bad request from {}: {reason}",
                    self.fe.name,
                    self.origin.src
                );
                self.tally.request();
                self.fail(status, TermState::new(Cause::Proxy, Phase::Request), None)
                    .await
            }
            HttpError::ClientTimeout => {
                self.tally.request();
                self.fail(
                    408,
                    TermState::new(Cause::ClientTimeout, Phase::Request),
                    None,
                )
                .await
            }
            _ => {
                self.record.term = TermState::new(Cause::Client, Phase::Request);
                self.finish(None);
                Next::Close
            }
        }
    }

    /// Sends an error page (the backend's errorfile, else the frontend's, else built-in),
    /// logs, and closes.
    pub(super) async fn fail(
        &mut self,
        status: u16,
        term: TermState,
        be: Option<&Backend>,
    ) -> Next<'f> {
        let page = match be {
            Some(b) if b.errors.has(status) => b.errors.page(status),
            _ => self.fe.errors.page(status),
        };
        let page = self.local_bytes(page);
        self.record.status = Some(status);
        self.record.term = term;
        if let Ok(sent) = self.client.answer(page, self.client_idle()).await {
            self.record.bytes += sent;
        }
        self.finish(be);
        Next::Close
    }

    /// The request is over: its counts are settled and its httplog line sent (to the
    /// frontend's `log` targets, else stderr). Every way out of an exchange but a tunnel ends
    /// here; a tunnel settles when its flow ends.
    pub(super) fn finish(&mut self, be: Option<&Backend>) {
        let r = &mut self.record;
        r.total = self.t0.elapsed();
        r.active = PROCESS.http_sessions.load(Ordering::Relaxed);
        r.frontend_conns = self.fe.conns.load(Ordering::Relaxed);
        r.backend_conns = be.map_or(0, |b| b.upstream.conns.load(Ordering::Relaxed));
        self.tally.settle(r, self.client.read_total());
        log_request(&self.fe.access_log, r);
    }

    pub(super) fn ctx<'r>(&self, req: &'r Request) -> Ctx<'r> {
        Ctx {
            req,
            src: self.origin.src.ip(),
            ssl: self.client.is_tls(),
            res: None,
        }
    }
}

/// One request's line in the proxy's format: httplog, or tcplog (`option tcplog` on an HTTP
/// proxy); the default format logged the connection when it was accepted.
pub(super) fn log_request(log: &AccessLog, r: &HttpRecord) {
    log.send_as(LineFormat::Http, r);
    if log.logs(LineFormat::Tcp) {
        log.send_as(LineFormat::Tcp, r.as_tcplog());
    }
}

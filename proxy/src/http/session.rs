//! One client connection in `mode http`, from accept to close: read a request head, apply
//! the rules in HAProxy's order (frontend `http-request`/`reqadd`/`redirect`, `use_backend`,
//! backend rules, stats, `option forwardfor`, persistence cookie), exchange it with a server,
//! pass the response back, and loop while both ends keep the connection alive. A `101` turns
//! the pair into a tunnel that the `forward` room carries with `timeout tunnel`.
//!
//! Any request that cannot be read with certainty gets an error page and the connection is
//! closed: after a framing error nothing that follows on the stream can be trusted.
//!
//! One concern a file: this one is the client side (accept, read a request, error pages,
//! the access-log line); `route` applies frontend rules and answers locally; `exchange` is
//! the upstream exchange; `tunnel` hands an upgraded pair to the forward room.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use compio::net::TcpStream;

use crate::counters::{Live, PROCESS};
use crate::log::{AccessLog, Cause, LineFormat, Phase, TermState};
use crate::upstream::{Origin, ServerClaim};

use super::acl::Ctx;
use super::conn::{ClientConn, Conn};
use super::error::HttpError;
use super::head::{head_end, parse_request, Request};
use super::httplog::HttpRecord;
use super::pool;
use super::side::{deadline, shutdown, write_all, Side};
use super::tally::Tally;
use super::tunnel::tunnel;
use super::{Backend, Frontend};
/// After an answer that closes the connection, what the client still sends is read and
/// dropped for a moment, so that closing with unread data does not turn into a RST that
/// destroys the answer before the client read it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// What follows an exchange. `'f` is the frontend's lifetime: a tunnel carries the request's
/// counts (and its place in the backend's sessions) until its flow ends.
pub(super) enum Next<'f> {
    KeepAlive,
    Close,
    Tunnel(Box<Tunnel<'f>>),
}

/// A `101`/CONNECT pair on its way to the forward room.
pub(super) struct Tunnel<'f> {
    pub(super) server: Side,
    pub(super) be: Arc<Backend>,
    pub(super) record: HttpRecord,
    pub(super) _claim: ServerClaim,
    pub(super) tally: Tally<'f>,
}

/// `origin`: the client's addresses, the socket's or those of its PROXY header (`accept-proxy`).
pub async fn run_session(stream: TcpStream, origin: Origin, fe: Arc<Frontend>) {
    run(ClientConn::Plain(stream), origin, fe).await
}

/// `bind … ssl` in `mode http` (HTTPS, WSS): the TLS handshake (bounded by its timeout, kTLS
/// when the kernel takes the session), then the same session over the decrypted stream. A
/// failed handshake ends here, before any request exists, as in `mode tcp`.
pub async fn run_tls_session(
    stream: TcpStream,
    origin: Origin,
    fe: Arc<Frontend>,
    tls: Arc<crate::tls::Acceptor>,
) {
    if let Some(c) = tls
        .accept_logged(stream, origin.src, &fe.name, &PROCESS.http_sessions)
        .await
    {
        run(ClientConn::Tls(c), origin, fe).await
    }
}

async fn run(stream: ClientConn, origin: Origin, fe: Arc<Frontend>) {
    let _active = Live::enter(&PROCESS.http_sessions);
    let _fe = Live::enter(&fe.conns);
    fe.counters.accepted();
    // The frontend's sessions are client connections, however many requests each carries.
    let _fe_session = fe.counters.open_session();
    let _ = stream.tcp().set_nodelay(true);
    fe.access_log
        .connected(origin.src, origin.dst, &fe.name, true);
    let mut client = Side::new(stream, fe.bufsize);
    let accepted = Instant::now();
    let mut first = true;
    // `http-reuse never`: this client's own idle server connection, shared with no other.
    let mut private = None;
    loop {
        let read_mark = client.read_total;
        let next = Exchange {
            fe: &fe,
            origin,
            client: &mut client,
            private: &mut private,
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
        .run()
        .await;
        first = false;
        match next {
            Next::KeepAlive => continue,
            Next::Close => {
                linger_close(&mut client).await;
                return;
            }
            Next::Tunnel(t) => {
                tunnel(client, *t, &fe).await;
                return;
            }
        }
    }
}

async fn linger_close(client: &mut Side<ClientConn>) {
    shutdown(&client.stream).await;
    let until = Instant::now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        client.consume(client.data().len());
        match client.fill(Some(until)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// One request and its response.
pub(super) struct Exchange<'f, 'c> {
    pub(super) fe: &'f Frontend,
    /// The client's addresses (its PROXY header's on an `accept-proxy` bind): `src` is what
    /// ACLs, `option forwardfor`, `balance source` and the log see.
    pub(super) origin: Origin,
    pub(super) client: &'c mut Side<ClientConn>,
    /// The client's private idle server connection (`http-reuse never`).
    pub(super) private: &'c mut Option<pool::Private>,
    pub(super) first: bool,
    pub(super) accepted: Instant,
    pub(super) record: HttpRecord,
    pub(super) t0: Instant,
    pub(super) tally: Tally<'f>,
    /// The request is a `HEAD`: what the proxy answers by itself carries no body, or the
    /// next response on the connection would be misread as the rest of this one.
    pub(super) head_only: bool,
}

/// Why no request head could be read.
enum NoRequest {
    /// Nothing came (idle keep-alive end, or a client that left): close without an answer.
    Quiet {
        timed_out: bool,
    },
    Failed(HttpError),
}

impl<'f> Exchange<'f, '_> {
    pub(super) async fn run(mut self) -> Next<'f> {
        let req = match self.read_request().await {
            Ok(r) => r,
            Err(NoRequest::Quiet { timed_out }) => {
                // Not a request error: HAProxy's H1 mux makes no stream for a connection
                // that sent nothing, so only its stray bytes (blank lines) are counted.
                if self.first && !self.fe.dont_log_null {
                    self.record.term = if timed_out {
                        TermState::new(Cause::ClientTimeout, Phase::Request)
                    } else {
                        TermState::new(Cause::Client, Phase::Request)
                    };
                    self.finish(None);
                } else {
                    self.tally.settle(&self.record, self.client.read_total);
                }
                return Next::Close;
            }
            Err(NoRequest::Failed(e)) => return self.request_failed(e).await,
        };
        self.tally.request();
        self.head_only = req.method == "HEAD";
        self.record.head = Some(self.t0.elapsed());
        // Formatted only for a log line that will be written.
        if self.fe.access_log.logs(LineFormat::Http) {
            self.record.request = req.line();
        }
        self.route(req).await
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

    async fn read_request(&mut self) -> Result<Request, NoRequest> {
        let fe = self.fe;
        let whole_head = fe.http_request.or(fe.client_timeout);
        let idle = if self.first {
            whole_head
        } else {
            fe.keep_alive.or(whole_head)
        };
        let wait_until = if self.first {
            whole_head.map(|t| self.accepted + t)
        } else {
            deadline(idle)
        };
        self.wait_first_byte(wait_until).await?;
        self.t0 = Instant::now();
        self.record.started = SystemTime::now();
        // `timeout http-request` counts from the accept for the first request (so a slow
        // trickle is cut at the same moment however it is spread), from its first byte after.
        let head_deadline = if self.first {
            wait_until
        } else {
            deadline(whole_head)
        };
        let mut searched = 0;
        loop {
            if let Some(end) = head_end(self.client.data(), searched) {
                let parsed = parse_request(self.client.data().get(..end).unwrap_or_default());
                self.client.consume(end);
                return parsed.map_err(NoRequest::Failed);
            }
            searched = self.client.data().len();
            if self.client.is_full() {
                return Err(NoRequest::Failed(HttpError::bad_request(
                    431,
                    "request head larger than tune.bufsize",
                )));
            }
            match self.client.fill(head_deadline).await {
                Ok(0) => return Err(NoRequest::Failed(HttpError::client_eof())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(NoRequest::Failed(HttpError::ClientTimeout))
                }
                Err(e) => return Err(NoRequest::Failed(HttpError::ClientClosed(e))),
            }
        }
    }

    /// Waits for the first byte of a request, skipping the empty lines RFC 9112 §2.2 lets a
    /// client send between requests.
    async fn wait_first_byte(&mut self, until: Option<Instant>) -> Result<(), NoRequest> {
        loop {
            while self.client.data().starts_with(b"\r\n") {
                self.client.consume(2);
            }
            let data = self.client.data();
            if !data.is_empty() && data != b"\r" {
                return Ok(());
            }
            match self.client.fill(until).await {
                Ok(0) => return Err(NoRequest::Quiet { timed_out: false }),
                Ok(_) => {}
                Err(e) => {
                    let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
                    return Err(NoRequest::Quiet { timed_out });
                }
            }
        }
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
        let len = page.len() as u64;
        if write_all(&self.client.stream, page, deadline(self.client_idle()))
            .await
            .is_ok()
        {
            self.record.bytes += len;
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
        self.tally.settle(r, self.client.read_total);
        log_request(&self.fe.access_log, r);
    }

    pub(super) fn ctx<'r>(&self, req: &'r Request) -> Ctx<'r> {
        Ctx {
            req,
            src: self.origin.src.ip(),
            ssl: self.client.stream.is_tls(),
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

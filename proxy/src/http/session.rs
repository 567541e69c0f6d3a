//! One client connection in `mode http`, from accept to close: read a request head, apply
//! the rules in HAProxy's order (frontend `http-request`/`reqadd`/`redirect`, `use_backend`,
//! backend rules, stats, `option forwardfor`, persistence cookie), exchange it with a server,
//! pass the response back, and loop while both ends keep the connection alive. A `101` turns
//! the pair into a tunnel that the `forward` room carries with `timeout tunnel`.
//!
//! Any request that cannot be read with certainty gets an error page and the connection is
//! closed: after a framing error nothing that follows on the stream can be trusted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use compio::net::TcpStream;

use crate::balance::{PickContext, Server, ServerClaim};
use crate::config::Timeouts;
use crate::forward::{self, FlowEnd, FlowParams, IdleLimits, Progress};
use crate::tcp::connect::{connect_slot, reserve, Failed};
use crate::tcp::{tls_handshake, Count};

use super::acl::Ctx;
use super::answers::{self, CONTINUE};
use super::body::{Dir, Relay};
use super::conn::{ClientConn, Conn};
use super::cookie::Seen;
use super::error::HttpError;
use super::head::{head_end, parse_request, parse_response, Framing, Request, Response};
use super::httplog::HttpRecord;
use super::pool;
use super::rules::Verdict;
use super::side::{deadline, shutdown, write_all, Side};
use super::stats_hook::{self, StatsAnswer, StatsRequest};
use super::tally::Tally;
use super::{Backend, Frontend};

/// Live HTTP client connections of the whole process (for the drain at shutdown).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

pub fn session_count() -> usize {
    ACTIVE.load(Ordering::Relaxed)
}

/// After an answer that closes the connection, what the client still sends is read and
/// dropped for a moment, so that closing with unread data does not turn into a RST that
/// destroys the answer before the client read it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// What follows an exchange. `'f` is the frontend's lifetime: a tunnel carries the request's
/// counts (and its place in the backend's sessions) until its flow ends.
enum Next<'f> {
    KeepAlive,
    Close,
    Tunnel(Box<Tunnel<'f>>),
}

/// A `101`/CONNECT pair on its way to the forward room.
struct Tunnel<'f> {
    server: Side,
    be: Arc<Backend>,
    record: HttpRecord,
    _claim: ServerClaim,
    tally: Tally<'f>,
}

pub async fn run_session(stream: TcpStream, peer: SocketAddr, fe: Arc<Frontend>) {
    run(ClientConn::Plain(stream), peer, fe).await
}

/// `bind … ssl` in `mode http` (HTTPS, WSS): the TLS handshake (bounded by its timeout, kTLS
/// when the kernel takes the session), then the same session over the decrypted stream. A
/// failed handshake ends here, before any request exists, as in `mode tcp`.
pub async fn run_tls_session(
    stream: TcpStream,
    peer: SocketAddr,
    fe: Arc<Frontend>,
    tls: Arc<crate::tls::Acceptor>,
) {
    if let Some(c) = tls_handshake(stream, peer, &fe.name, &tls, &ACTIVE).await {
        run(ClientConn::Tls(c), peer, fe).await
    }
}

async fn run(stream: ClientConn, peer: SocketAddr, fe: Arc<Frontend>) {
    let _active = Count::new(&ACTIVE);
    let _fe = Count::new(&fe.conns);
    fe.counters.accepted();
    // The frontend's sessions are client connections, however many requests each carries.
    let _fe_session = fe.counters.open_session();
    let _ = stream.tcp().set_nodelay(true);
    let mut client = Side::new(stream, fe.bufsize);
    let accepted = Instant::now();
    let mut first = true;
    loop {
        let read_mark = client.read_total;
        let next = Exchange {
            fe: &fe,
            peer,
            client: &mut client,
            first,
            accepted,
            record: HttpRecord::new(peer, &fe.name),
            t0: Instant::now(),
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
struct Exchange<'f, 'c> {
    fe: &'f Frontend,
    peer: SocketAddr,
    client: &'c mut Side<ClientConn>,
    first: bool,
    accepted: Instant,
    record: HttpRecord,
    t0: Instant,
    tally: Tally<'f>,
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
    async fn run(mut self) -> Next<'f> {
        let req = match self.read_request().await {
            Ok(r) => r,
            Err(NoRequest::Quiet { timed_out }) => {
                // Not a request error: HAProxy's H1 mux makes no stream for a connection
                // that sent nothing, so only its stray bytes (blank lines) are counted.
                if self.first && !self.fe.dont_log_null {
                    self.record.term = if timed_out { *b"cR" } else { *b"CR" };
                    self.finish(None);
                } else {
                    self.tally.settle(&self.record, self.client.read_total);
                }
                return Next::Close;
            }
            Err(NoRequest::Failed(e)) => return self.request_failed(e).await,
        };
        self.tally.request();
        self.record.head = Some(self.t0.elapsed());
        // Formatted only for a log line that will be written.
        if self.fe.access_log.is_enabled() {
            self.record.request = req.line();
        }
        self.route(req).await
    }

    fn client_idle(&self) -> Option<Duration> {
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
    async fn request_failed(&mut self, e: HttpError) -> Next<'f> {
        self.tally.bad_request();
        match e {
            HttpError::BadRequest { status, reason } => {
                log::info!(
                    "frontend {}: bad request from {}: {reason}",
                    self.fe.name,
                    self.peer
                );
                self.tally.request();
                self.fail(status, *b"PR", None).await
            }
            HttpError::ClientTimeout => {
                self.tally.request();
                self.fail(408, *b"cR", None).await
            }
            _ => {
                self.record.term = *b"CR";
                self.finish(None);
                Next::Close
            }
        }
    }

    /// Sends an error page (the backend's errorfile, else the frontend's, else built-in),
    /// logs, and closes.
    async fn fail(&mut self, status: u16, term: [u8; 2], be: Option<&Backend>) -> Next<'f> {
        let page = match be {
            Some(b) if b.errors.has(status) => b.errors.page(status),
            _ => self.fe.errors.page(status),
        };
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
    fn finish(&mut self, be: Option<&Backend>) {
        let r = &mut self.record;
        r.total = self.t0.elapsed();
        r.active = ACTIVE.load(Ordering::Relaxed);
        r.frontend_conns = self.fe.conns.load(Ordering::Relaxed);
        r.backend_conns = be.map_or(0, |b| b.servers.conns.load(Ordering::Relaxed));
        self.tally.settle(r, self.client.read_total);
        self.fe.access_log.send(&*r);
    }

    fn ctx<'r>(&self, req: &'r Request) -> Ctx<'r> {
        Ctx {
            req,
            src: self.peer.ip(),
            ssl: self.client.stream.is_tls(),
        }
    }

    /// Frontend rules, then `use_backend`/`default_backend`.
    async fn route(mut self, mut req: Request) -> Next<'f> {
        let fe: &'f Frontend = self.fe;
        let ssl = self.client.stream.is_tls();
        let verdict = fe.rules.apply(&mut req, self.peer.ip(), ssl);
        if verdict != Verdict::Pass {
            return self.verdict(verdict, &req, None).await;
        }
        let has_route = fe.default.is_some() || !fe.routes.is_empty();
        if let Some(spec) = &fe.stats {
            if stats_hook::is_stats_request(spec, &req.target, has_route) {
                let answer = stats_hook::answer(spec, &self.stats_request(&req, &fe.name));
                return self.local_answer(&req, answer, None).await;
            }
        }
        let ctx = self.ctx(&req);
        let be = fe
            .routes
            .iter()
            .find(|(cond, _)| cond.matches(&ctx))
            .map(|(_, b)| b)
            .or(fe.default.as_ref());
        match be {
            Some(be) => {
                // From here on the request is the backend's (HAProxy's `SF_BE_ASSIGNED`):
                // its rules' denials, answers and bytes count there too.
                self.tally.assign(&be.servers.set.stats.traffic);
                self.forward_to(req, be.clone()).await
            }
            None => self.fail(503, *b"SC", None).await,
        }
    }

    fn stats_request<'r>(&self, req: &'r Request, proxy: &'r str) -> StatsRequest<'r> {
        StatsRequest {
            proxy,
            method: &req.method,
            target: &req.target,
            headers: &req.headers,
            src: self.peer.ip(),
        }
    }

    async fn verdict(&mut self, v: Verdict, req: &Request, be: Option<&Backend>) -> Next<'f> {
        match v {
            Verdict::Pass => Next::Close,
            Verdict::Deny(status) => {
                self.tally.denied();
                self.fail(status, *b"PR", be).await
            }
            Verdict::Redirect { code, location } => {
                let close = self.must_close_after_local_answer(req);
                let page = answers::redirect(code, &location, close);
                self.send_local(page, code, close, be).await
            }
            Verdict::Service(name) => {
                let answer = stats_hook::answer_service(&name, &self.stats_request(req, &name));
                self.local_answer(req, answer, be).await
            }
        }
    }

    /// A request whose body was not read leaves the stream mid-message: close after answering.
    fn must_close_after_local_answer(&self, req: &Request) -> bool {
        req.close
            || self.fe.httpclose
            || !matches!(req.framing, Framing::Empty | Framing::Length(0))
    }

    async fn local_answer(
        &mut self,
        req: &Request,
        a: StatsAnswer,
        be: Option<&Backend>,
    ) -> Next<'f> {
        let close = self.must_close_after_local_answer(req);
        let mut out =
            format!("HTTP/1.1 {} {}\r\n", a.status, answers::reason(a.status)).into_bytes();
        for (name, value) in &a.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", a.body.len()).as_bytes());
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&a.body);
        self.record.server = "<STATS>".into();
        self.send_local(out, a.status, close, be).await
    }

    async fn send_local(
        &mut self,
        bytes: Vec<u8>,
        status: u16,
        close: bool,
        be: Option<&Backend>,
    ) -> Next<'f> {
        self.record.status = Some(status);
        self.record.term = *b"LR";
        let len = bytes.len() as u64;
        let sent = write_all(&self.client.stream, bytes, deadline(self.client_idle())).await;
        if sent.is_ok() {
            self.record.bytes += len;
        } else {
            self.record.term = *b"CD";
        }
        self.finish(be);
        if close || sent.is_err() {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Backend rules, stats, forwardfor, persistence, then the server.
    async fn forward_to(mut self, mut req: Request, be: Arc<Backend>) -> Next<'f> {
        self.record.backend = be.name.clone();
        let src = self.peer.ip();
        if be.name != self.fe.name {
            let ssl = self.client.stream.is_tls();
            let verdict = be.rules.apply(&mut req, src, ssl);
            if verdict != Verdict::Pass {
                return self.verdict(verdict, &req, Some(&be)).await;
            }
        }
        if let Some(spec) = &be.stats {
            let has_servers = !be.servers.set.servers.is_empty();
            if stats_hook::is_stats_request(spec, &req.target, has_servers) {
                let answer = stats_hook::answer(spec, &self.stats_request(&req, &be.name));
                return self.local_answer(&req, answer, Some(&be)).await;
            }
        }
        if let Some(ff) = be.forwardfor.as_ref().or(self.fe.forwardfor.as_ref()) {
            ff.apply(&mut req, src);
        }
        let (sticky_server, seen) = match &be.sticky {
            Some(s) => {
                let routed = s.on_request(&mut req.headers, &be.servers.set);
                self.record.cookie[0] = routed.seen.flag();
                (routed.server, routed.seen)
            }
            None => (None, Seen::None),
        };
        let first = sticky_server.or_else(|| {
            be.servers.set.pick_server(PickContext {
                client_ip: src,
                avoid: &[],
            })
        });
        let Some(first) = first else {
            log::warn!("backend {} has no server available!", be.name);
            self.tally.no_server();
            return self.fail(503, *b"SC", Some(&be)).await;
        };
        let _count = Count::new(&be.servers.conns);
        self.with_server(req, &be, first, seen).await
    }

    /// The server side of one request: connection (pooled or fresh), request out, response
    /// head back; a pooled connection that turns out dead is replaced once by a fresh one.
    async fn with_server(
        mut self,
        req: Request,
        be: &Arc<Backend>,
        first: Arc<Server>,
        seen: Seen,
    ) -> Next<'f> {
        let fe = self.fe;
        let close_server =
            fe.server_close || be.server_close || fe.httpclose || be.httpclose || req.minor == 0;
        let connection = if req.upgrade.is_some() {
            Some("upgrade")
        } else if close_server {
            Some("close")
        } else {
            None
        };
        let head = req.serialize(connection);
        let buffered = buffered_body(&req, self.client);
        let mut may_reuse = buffered.is_some() && req.upgrade.is_none();
        loop {
            let (stream, server, claim, reused) = match self.open(be, &first, may_reuse).await {
                Ok(c) => c,
                Err(next) => return next,
            };
            self.record.server = server.name.clone();
            self.record.server_conns = server.current() as usize;
            let sent_at = Instant::now();
            let mut server_side = Side::new(stream, fe.bufsize);
            let outcome = match buffered {
                Some(n) => self.send_buffered(&server_side.stream, &head, n, be).await,
                None => {
                    self.send_streamed(&server_side.stream, &req, head.clone(), be)
                        .await
                }
            };
            if let Err(e) = outcome {
                if reused && matches!(e, HttpError::ServerClosed(_)) {
                    may_reuse = false;
                    continue;
                }
                return self.upload_failed(e, be).await;
            }
            match read_response(&mut server_side, &req, be.server_timeout).await {
                Ok(resp) => {
                    if let Some(n) = buffered {
                        self.client.consume(n);
                    }
                    self.record.response = Some(sent_at.elapsed());
                    self.tally.response_head(resp.status);
                    let done = Done {
                        server,
                        claim,
                        seen,
                        close_server,
                    };
                    return self.respond(req, resp, server_side, be, done).await;
                }
                Err(ResponseFail::Nothing) if reused => {
                    may_reuse = false;
                    continue;
                }
                Err(ResponseFail::Nothing) => {
                    self.tally.error(|c| &c.failed_resp);
                    return self.fail(502, *b"SH", Some(be)).await;
                }
                Err(ResponseFail::Error(e)) => return self.response_failed(e, be).await,
            }
        }
    }

    /// A server slot first (queueing while every usable server is at its `maxconn`), then a
    /// pooled connection to that server when allowed and available, else a fresh one. The
    /// slot comes first so that a reused connection counts against `maxconn` as a fresh one
    /// does; an idle pooled connection holds no slot.
    async fn open(
        &mut self,
        be: &Backend,
        first: &Arc<Server>,
        may_reuse: bool,
    ) -> Result<(TcpStream, Arc<Server>, ServerClaim, bool), Next<'f>> {
        // A server named by a valid persistence cookie ('V') is waited for when full.
        let pinned = self.record.cookie[0] == 'V';
        let ip = self.peer.ip();
        let slot = match reserve(&be.servers, first.clone(), ip, pinned).await {
            Ok(slot) => slot,
            Err(f) => return Err(self.connect_failed(f, be).await),
        };
        self.record.queue = slot.queue_wait;
        let server = slot.claim.server.clone();
        if may_reuse {
            if let Some(stream) = pool::take(&server, be.pool_idle) {
                self.record.connect = Some(Duration::ZERO);
                self.tally.server(&server);
                self.tally.reused();
                return Ok((stream, server, slot.claim, true));
            }
        }
        // Attempts, retries, redispatches and a final failure are counted by `connect_slot`.
        match connect_slot(&be.servers, slot, ip).await {
            Ok(c) => {
                self.record.connect = Some(c.connect_time);
                self.record.retries = c.retries;
                self.record.redispatched = c.redispatched;
                let server = c.claim.server.clone();
                self.tally.server(&server);
                Ok((c.stream, server, c.claim, false))
            }
            Err(f) => Err(self.connect_failed(f, be).await),
        }
    }

    /// No connection: 503. After a timeout in the backend's queue no server was assigned, so
    /// the log names none (`<NOSRV>`), as HAProxy's; otherwise it names the server waited for
    /// (a persistence cookie's) or the last one tried.
    async fn connect_failed(&mut self, f: Failed, be: &Backend) -> Next<'f> {
        self.record.queue = f.queue_wait;
        if !f.queue_timeout || f.queued_on_server {
            self.record.server = f.server.name.clone();
        }
        self.record.retries = f.retries;
        self.record.redispatched = f.redispatched;
        self.fail(503, f.term(), Some(be)).await
    }

    /// Head and a body that is wholly in the client buffer, in one write. The body stays in
    /// the buffer until the response comes, so the request can be replayed.
    async fn send_buffered(
        &mut self,
        to: &TcpStream,
        head: &[u8],
        n: usize,
        be: &Backend,
    ) -> Result<(), HttpError> {
        let mut out = Vec::with_capacity(head.len() + n);
        out.extend_from_slice(head);
        out.extend_from_slice(self.client.data().get(..n).unwrap_or_default());
        write_all(to, out, deadline(be.server_timeout))
            .await
            .map_err(server_write_error)
    }

    /// Head, then the body as it arrives. `Expect: 100-continue` is answered here, once the
    /// server connection stands: the server never sees the expectation (see `head.rs`).
    async fn send_streamed(
        &mut self,
        to: &TcpStream,
        req: &Request,
        head: Vec<u8>,
        be: &Backend,
    ) -> Result<(), HttpError> {
        write_all(to, head, deadline(be.server_timeout))
            .await
            .map_err(server_write_error)?;
        if req.expect_continue && self.client.data().is_empty() {
            write_all(
                &self.client.stream,
                CONTINUE.to_vec(),
                deadline(self.client_idle()),
            )
            .await
            .map_err(HttpError::ClientClosed)?;
        }
        let mut relay = Relay {
            from: &mut *self.client,
            to,
            dir: Dir::Up,
            read_idle: self.fe.client_timeout,
            write_idle: be.server_timeout,
        };
        relay.run(req.framing, true).await.map(|_| ())
    }

    async fn upload_failed(&mut self, e: HttpError, be: &Backend) -> Next<'f> {
        match e {
            HttpError::BadRequest { status, reason } => {
                log::info!(
                    "frontend {}: bad request body from {}: {reason}",
                    self.fe.name,
                    self.peer
                );
                self.tally.bad_request();
                self.fail(status, *b"PD", Some(be)).await
            }
            HttpError::ClientTimeout => {
                self.tally.error(|c| &c.client_aborts);
                self.fail(408, *b"cD", Some(be)).await
            }
            HttpError::ServerTimeout => {
                self.tally.server_abort();
                self.fail(504, *b"sD", Some(be)).await
            }
            HttpError::ServerClosed(_) | HttpError::BadResponse(_) => {
                self.tally.server_abort();
                self.fail(502, *b"SD", Some(be)).await
            }
            _ => {
                self.tally.error(|c| &c.client_aborts);
                self.record.term = *b"CD";
                self.finish(Some(be));
                Next::Close
            }
        }
    }

    /// No usable response head: the backend's and server's `eresp`, whatever the cause.
    async fn response_failed(&mut self, e: HttpError, be: &Backend) -> Next<'f> {
        self.tally.error(|c| &c.failed_resp);
        match e {
            HttpError::ServerTimeout => self.fail(504, *b"sH", Some(be)).await,
            HttpError::BadResponse(reason) => {
                log::warn!("backend {}/{}: {reason}", be.name, self.record.server);
                self.fail(502, *b"PH", Some(be)).await
            }
            _ => self.fail(502, *b"SH", Some(be)).await,
        }
    }

    /// Passes the response back and decides what happens to both connections.
    async fn respond(
        mut self,
        req: Request,
        mut resp: Response,
        mut server: Side,
        be: &Arc<Backend>,
        done: Done,
    ) -> Next<'f> {
        self.record.status = Some(resp.status);
        let tunnel = (resp.status == 101 && req.upgrade.is_some())
            || (req.method == "CONNECT" && (200..300).contains(&resp.status));
        if resp.status == 101 && !tunnel {
            self.tally.error(|c| &c.failed_resp);
            return self.fail(502, *b"PH", Some(be)).await;
        }
        if let Some(s) = &be.sticky {
            let id = done.server.params.cookie.as_deref();
            self.record.cookie[1] = s.on_response(&mut resp.headers, id, &done.seen);
        }
        if tunnel {
            return self.start_tunnel(resp, server, be, done).await;
        }
        let fe = self.fe;
        let chunked_out = req.minor == 1;
        let client_close = req.close
            || fe.httpclose
            || be.httpclose
            || resp.framing == Framing::UntilClose
            || (resp.framing == Framing::Chunked && !chunked_out);
        let connection = if client_close {
            Some("close")
        } else if req.minor == 0 {
            Some("keep-alive")
        } else {
            None
        };
        let head = resp.serialize(connection, chunked_out);
        let head_len = head.len() as u64;
        if let Err(e) = write_all(&self.client.stream, head, deadline(self.client_idle())).await {
            return self.aborted(HttpError::ClientClosed(e), be);
        }
        self.record.bytes += head_len;
        let mut relay = Relay {
            from: &mut server,
            to: &self.client.stream,
            dir: Dir::Down,
            read_idle: be.server_timeout,
            write_idle: fe.client_timeout,
        };
        match relay.run(resp.framing, chunked_out).await {
            Ok(n) => self.record.bytes += n,
            Err(e) => return self.aborted(e, be),
        }
        let reusable = !done.close_server && !resp.close && server.data().is_empty();
        if reusable {
            pool::put(&done.server, server.stream, be.pool_idle);
        }
        self.finish(Some(be));
        drop(done.claim);
        if client_close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// The response could not be passed on whole: the client gets a cut stream, as HAProxy's.
    fn aborted(&mut self, e: HttpError, be: &Backend) -> Next<'f> {
        self.record.term = match e {
            HttpError::ClientTimeout => *b"cD",
            HttpError::ServerTimeout => *b"sD",
            HttpError::ServerClosed(_) => *b"SD",
            HttpError::BadResponse(_) => *b"PD",
            _ => *b"CD",
        };
        match e {
            HttpError::ServerTimeout | HttpError::ServerClosed(_) => self.tally.server_abort(),
            HttpError::BadResponse(_) => self.tally.error(|c| &c.failed_resp),
            _ => self.tally.error(|c| &c.client_aborts),
        }
        let _ = self.client.stream.tcp().set_zero_linger();
        self.finish(Some(be));
        Next::Close
    }

    async fn start_tunnel(
        mut self,
        resp: Response,
        server: Side,
        be: &Arc<Backend>,
        done: Done,
    ) -> Next<'f> {
        let head = resp.serialize(Some("upgrade"), true);
        let len = head.len() as u64;
        if let Err(e) = write_all(&self.client.stream, head, deadline(self.client_idle())).await {
            return self.aborted(HttpError::ClientClosed(e), be);
        }
        self.record.bytes += len;
        Next::Tunnel(Box::new(Tunnel {
            server,
            be: be.clone(),
            record: self.record,
            _claim: done.claim,
            tally: self.tally,
        }))
    }
}

/// What `respond` needs of the server side.
struct Done {
    server: Arc<Server>,
    claim: ServerClaim,
    seen: Seen,
    close_server: bool,
}

fn server_write_error(e: std::io::Error) -> HttpError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        HttpError::ServerTimeout
    } else {
        HttpError::ServerClosed(e)
    }
}

/// The body length when the whole body already sits in the client buffer.
fn buffered_body(req: &Request, client: &Side<ClientConn>) -> Option<usize> {
    match req.framing {
        Framing::Empty => Some(0),
        Framing::Length(n) if (client.data().len() as u64) >= n => usize::try_from(n).ok(),
        _ => None,
    }
}

enum ResponseFail {
    /// The server closed before sending a single byte: a dead pooled connection.
    Nothing,
    Error(HttpError),
}

/// Reads the final response head (interim 1xx responses other than 101 are dropped: the
/// proxy answered `100-continue` itself, and the rest are optional hints).
async fn read_response(
    server: &mut Side,
    req: &Request,
    idle: Option<Duration>,
) -> Result<Response, ResponseFail> {
    let mut searched = 0;
    loop {
        if let Some(end) = head_end(server.data(), searched) {
            let head = server.data().get(..end).unwrap_or_default();
            let resp = parse_response(head, &req.method).map_err(ResponseFail::Error)?;
            server.consume(end);
            searched = 0;
            if resp.is_interim() && resp.status != 101 {
                continue;
            }
            return Ok(resp);
        }
        searched = server.data().len();
        if server.is_full() {
            return Err(ResponseFail::Error(HttpError::BadResponse(
                "response head larger than tune.bufsize",
            )));
        }
        let nothing_yet = server.read_total == 0;
        match server.fill(deadline(idle)).await {
            Ok(0) if nothing_yet => return Err(ResponseFail::Nothing),
            Ok(0) => return Err(ResponseFail::Error(HttpError::server_eof())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(ResponseFail::Error(HttpError::ServerTimeout))
            }
            Err(_) if nothing_yet => return Err(ResponseFail::Nothing),
            Err(e) => return Err(ResponseFail::Error(HttpError::ServerClosed(e))),
        }
    }
}

/// Hands an upgraded pair to the forward room: leftovers first (bytes that came with the
/// heads), then the engine with `timeout tunnel`.
async fn tunnel(mut client: Side<ClientConn>, t: Tunnel<'_>, fe: &Frontend) {
    let Tunnel {
        mut server,
        be,
        mut record,
        _claim,
        mut tally,
    } = t;
    let started = Instant::now();
    let to_server = client.data().len();
    if to_server > 0
        && client
            .pass_to(to_server, &server.stream, deadline(be.tunnel))
            .await
            .is_err()
    {
        record.term = *b"SD";
        tally.server_abort();
        return end_tunnel(fe, tally, record, client.read_total);
    }
    let to_client = server.data().len();
    if to_client > 0
        && server
            .pass_to(to_client, &client.stream, deadline(be.tunnel))
            .await
            .is_err()
    {
        record.term = *b"CD";
        tally.error(|c| &c.client_aborts);
        return end_tunnel(fe, tally, record, client.read_total);
    }
    record.bytes += to_client as u64;
    let limits = IdleLimits::from_timeouts(&Timeouts {
        client: fe.client_timeout,
        client_fin: fe.client_fin,
        server: be.server_timeout,
        server_fin: be.server_fin,
        tunnel: be.tunnel,
        ..Timeouts::default()
    });
    let flow = FlowParams {
        limits,
        bufsize: fe.bufsize,
    };
    let read_before = client.read_total;
    // The heads and leftovers are booked now, the flow's bytes as the engine moves them: a
    // long-lived WebSocket shows its bytes on the stats page while it is open.
    tally.book_bytes(read_before, record.bytes);
    let counted_live = tally.live().is_some();
    let progress = match tally.live() {
        Some(rows) => rows,
        None => Progress::none(),
    };
    // A TLS client goes to the TLS room's forwarding (kTLS + splice when the kernel holds the
    // session, else rustls in userspace), as RTMPS does; close_notify is sent there.
    let stats = match client.stream {
        ClientConn::Plain(s) => {
            forward::forward_counted(be.servers.engine, s, server.stream, flow, progress).await
        }
        ClientConn::Tls(t) => crate::tls::forward_counted(t, server.stream, flow, progress).await,
    };
    record.bytes += stats.bytes_down;
    let client_read = read_before + stats.bytes_up;
    if counted_live {
        tally.counted_up_to(client_read, record.bytes);
    }
    let flags = stats.end.haproxy_flags().as_bytes();
    record.term = [
        flags.first().copied().unwrap_or(b'-'),
        flags.get(1).copied().unwrap_or(b'-'),
    ];
    // Who cut the tunnel, as `mode tcp` counts its flows.
    match stats.end {
        FlowEnd::Closed => {}
        FlowEnd::ClientAbort | FlowEnd::ClientTimeout => tally.error(|c| &c.client_aborts),
        FlowEnd::ServerAbort | FlowEnd::ServerTimeout => tally.server_abort(),
    }
    record.total += started.elapsed();
    end_tunnel(fe, tally, record, client_read);
}

/// The tunnel's request is over: its answer counted (HAProxy counts an upgraded stream at
/// its end; its bytes are already in), then logged.
fn end_tunnel(fe: &Frontend, mut tally: Tally<'_>, mut record: HttpRecord, client_read: u64) {
    record.active = ACTIVE.load(Ordering::Relaxed);
    tally.settle(&record, client_read);
    fe.access_log.send(&record);
}

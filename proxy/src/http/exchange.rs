//! The upstream exchange of one request: backend rules, persistence, a server slot and a
//! connection (pooled or fresh, with retries), the request out, the response back.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpStream;
use futures_util::future::{select, Either};

use crate::counters::Live;
use crate::log::{Cause, Phase, TermState};
use crate::upstream::connect::{connect_slot, reserve};
use crate::upstream::{Failed, PickContext, Server, ServerClaim};

use super::client::Client;
use super::cookie::Seen;
use super::error::HttpError;
use super::h1_client::chunked_out;
use super::head::{head_end, parse_response, Framing, Request, Response};
use super::pool;
use super::reuse::{self, Take};
use super::rules::Verdict;
use super::serve::Exchange;
use super::session::Next;
use super::side::{deadline, write_all, write_timed, Side};
use super::stats_hook::{self};
use super::Backend;

impl<'f, 'c, C: Client> Exchange<'f, 'c, C> {
    /// Backend rules, stats, forwardfor, persistence, then the server.
    /// A plain function returning an `async move` block, as `Exchange::run` says why.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    pub(super) fn forward_to(
        mut self,
        mut req: Request,
        be: Arc<Backend>,
    ) -> impl Future<Output = Next<'f>> + use<'f, 'c, C> {
        async move {
            self.record.backend = be.name.clone();
            let src = self.origin.src.ip();
            if be.name != self.fe.name {
                let ssl = self.client.is_tls();
                let verdict = be.rules.apply(&mut req, src, ssl);
                if verdict != Verdict::Pass {
                    return self.verdict(verdict, &req, Some(&be)).await;
                }
            }
            if let Some(spec) = &be.stats {
                let has_servers = !be.upstream.set.servers().is_empty();
                if stats_hook::is_stats_request(spec, &req.target, has_servers) {
                    let answer = stats_hook::answer(
                        &*self.fe.pages,
                        spec,
                        &self.stats_request(&req, &be.name),
                    );
                    return self.local_answer(&req, answer, Some(&be)).await;
                }
            }
            if let Some(ff) = be.forwardfor.as_ref().or(self.fe.forwardfor.as_ref()) {
                ff.apply(&mut req, src);
            }
            let (sticky_server, seen) = match &be.sticky {
                Some(s) => {
                    let routed = s.on_request(&mut req.headers, &be.upstream.set);
                    self.record.cookie[0] = routed.seen.flag();
                    (routed.server, routed.seen)
                }
                None => (None, Seen::None),
            };
            let first = sticky_server.or_else(|| {
                be.upstream.set.pick_server(PickContext {
                    request: Some(&req),
                    ..PickContext::new(src, &[])
                })
            });
            let Some(first) = first else {
                log::warn!("backend {} has no server available!", be.name);
                self.tally.no_server();
                return self
                    .fail(
                        503,
                        TermState::new(Cause::Server, Phase::Connect),
                        Some(&be),
                    )
                    .await;
            };
            let _count = Live::enter(&be.upstream.conns);
            self.with_server(req, &be, first, seen).await
        }
    }

    /// The server side of one request: connection (pooled or fresh), request out, response
    /// head back; a pooled connection that turns out dead is replaced once by a fresh one.
    /// A plain function returning an `async move` block, as `Exchange::run` says why.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    pub(super) fn with_server<'b>(
        mut self,
        req: Request,
        be: &'b Arc<Backend>,
        first: Arc<Server>,
        seen: Seen,
    ) -> impl Future<Output = Next<'f>> + use<'f, 'c, 'b, C> {
        async move {
            let fe = self.fe;
            let close_server = fe.server_close
                || be.server_close
                || fe.httpclose
                || be.httpclose
                || req.minor == 0;
            let connection = if req.upgrade.is_some() {
                Some("upgrade")
            } else if close_server {
                Some("close")
            } else {
                None
            };
            let mut head = req.serialize(connection);
            let buffered = match self.client.buffer_body(&req, fe.client_timeout).await {
                Ok(b) => b,
                Err(e) => return self.upload_failed(e, be).await,
            };
            let idempotent = reuse::is_idempotent(&req.method);
            // A request is sent again on a fresh connection when a pooled one died under it,
            // which needs its whole body at hand, and is allowed for idempotent requests only.
            let mut may_reuse = if buffered.is_some() && req.upgrade.is_none() {
                reuse::take(be.reuse, self.first, idempotent)
            } else {
                Take::Fresh
            };
            loop {
                let (stream, server, claim, served) = match self.open(be, &first, may_reuse).await {
                    Ok(c) => c,
                    Err(next) => return next,
                };
                let reused = served > 0;
                let retry = reused && idempotent;
                self.record.server = server.name.clone().into();
                self.record.server_conns = server.current() as usize;
                let sent_at = Instant::now();
                let mut server_side = Side::new(stream, fe.bufsize);
                let outcome = match buffered {
                    Some(n) => {
                        self.send_buffered(&server_side.stream, &mut head, n, be)
                            .await
                    }
                    None => {
                        // A streamed body is never replayed (the connection is fresh), so the
                        // head is needed once.
                        let head = std::mem::take(&mut head);
                        self.send_streamed(&server_side.stream, &req, head, be)
                            .await
                    }
                };
                if let Err(e) = outcome {
                    if retry && matches!(e, HttpError::ServerClosed(_)) {
                        may_reuse = Take::Fresh;
                        continue;
                    }
                    return self.upload_failed(e, be).await;
                }
                let response = {
                    let read =
                        std::pin::pin!(read_response(&mut server_side, &req, be.server_timeout));
                    let gone = std::pin::pin!(self.client.gone());
                    match select(read, gone).await {
                        Either::Left((r, _)) => Some(r),
                        Either::Right(_) => None,
                    }
                };
                let Some(response) = response else {
                    return self.client_gone(be, Phase::Headers);
                };
                match response {
                    Ok(resp) => {
                        if let Some(n) = buffered {
                            Client::consume(&mut *self.client, n);
                        }
                        self.record.response = Some(sent_at.elapsed());
                        self.tally.response_head(resp.status);
                        let done = Done {
                            server,
                            claim,
                            seen,
                            close_server,
                            served: served + 1,
                        };
                        return self.respond(req, resp, server_side, be, done).await;
                    }
                    Err(ResponseFail::Nothing) if retry => {
                        may_reuse = Take::Fresh;
                        continue;
                    }
                    Err(ResponseFail::Nothing) => {
                        self.tally.error(|c| &c.failed_resp);
                        return self
                            .fail(502, TermState::new(Cause::Server, Phase::Headers), Some(be))
                            .await;
                    }
                    Err(ResponseFail::Error(e)) => return self.response_failed(e, be).await,
                }
            }
        }
    }

    /// A server slot first (queueing while every usable server is at its `maxconn`), then a
    /// pooled connection to that server when allowed and available, else a fresh one. The
    /// slot comes first so that a reused connection counts against `maxconn` as a fresh one
    /// does; an idle pooled connection holds no slot.
    pub(super) async fn open(
        &mut self,
        be: &Backend,
        first: &Arc<Server>,
        may_reuse: Take,
    ) -> Result<(TcpStream, Arc<Server>, ServerClaim, u32), Next<'f>> {
        // A server named by a valid persistence cookie ('V') is waited for when full.
        let pinned = self.record.cookie[0] == 'V';
        let ip = self.origin.src.ip();
        let slot = match reserve(&be.upstream, first.clone(), ip, pinned).await {
            Ok(slot) => slot,
            Err(f) => return Err(self.connect_failed(f, be).await),
        };
        self.record.queue = slot.queue_wait;
        let server = slot.claim.server.clone();
        let shared = reuse::shared(be.reuse, &server);
        let pooled = match may_reuse {
            Take::Fresh => None,
            _ if !shared => self
                .private
                .as_deref_mut()
                .and_then(|slot| pool::take_private(slot, &server)),
            take => pool::take(&server, take),
        };
        if let Some((stream, served)) = pooled {
            self.record.connect = Some(Duration::ZERO);
            self.tally.server(&server);
            self.tally.reused();
            return Ok((stream, server, slot.claim, served));
        }
        // Attempts, retries, redispatches and a final failure are counted by `connect_slot`.
        match connect_slot(&be.upstream, slot, &self.origin).await {
            Ok(c) => {
                self.record.connect = Some(c.connect_time);
                self.record.retries = c.retries;
                self.record.redispatched = c.redispatched;
                let server = c.claim.server.clone();
                self.tally.server(&server);
                Ok((c.stream, server, c.claim, 0))
            }
            Err(f) => Err(self.connect_failed(f, be).await),
        }
    }

    /// No connection: 503. After a timeout in the backend's queue no server was assigned, so
    /// the log names none (`<NOSRV>`), as HAProxy's; otherwise it names the server waited for
    /// (a persistence cookie's) or the last one tried.
    pub(super) async fn connect_failed(&mut self, f: Failed, be: &Backend) -> Next<'f> {
        self.record.queue = f.queue_wait;
        if !f.queue_timeout || f.queued_on_server {
            self.record.server = f.server.name.clone().into();
        }
        self.record.retries = f.retries;
        self.record.redispatched = f.redispatched;
        self.fail(503, f.term(), Some(be)).await
    }

    /// Head and a body that is wholly in the client buffer, in one write. The body stays in
    /// the buffer until the response comes, so the request can be replayed; `head` is lent
    /// to the write (the body appended, then cut off again) and comes back for a replay,
    /// so the request costs no copy of it.
    pub(super) async fn send_buffered(
        &mut self,
        to: &TcpStream,
        head: &mut Vec<u8>,
        n: usize,
        be: &Backend,
    ) -> Result<(), HttpError> {
        let head_len = head.len();
        let mut out = std::mem::take(head);
        out.extend_from_slice(self.client.buffered(n));
        let (res, back) = write_timed(to, out, deadline(be.server_timeout)).await;
        if let Some(mut back) = back {
            back.truncate(head_len);
            *head = back;
        }
        res.map_err(server_write_error)
    }

    /// Head, then the body as it arrives (`Expect: 100-continue` is answered by the client
    /// side once the server connection stands: the server never sees the expectation).
    pub(super) async fn send_streamed(
        &mut self,
        to: &TcpStream,
        req: &Request,
        head: Vec<u8>,
        be: &Backend,
    ) -> Result<(), HttpError> {
        write_all(to, head, deadline(be.server_timeout))
            .await
            .map_err(server_write_error)?;
        self.client
            .upload(req, to, self.fe.client_timeout, be.server_timeout)
            .await
    }

    pub(super) async fn upload_failed(&mut self, e: HttpError, be: &Backend) -> Next<'f> {
        match e {
            HttpError::BadRequest { status, reason } => {
                log::info!(
                    "frontend {}: bad request body from {}: {reason}",
                    self.fe.name,
                    self.origin.src
                );
                self.tally.bad_request();
                self.fail(status, TermState::new(Cause::Proxy, Phase::Data), Some(be))
                    .await
            }
            HttpError::ClientTimeout => {
                self.tally.error(|c| &c.client_aborts);
                self.fail(
                    408,
                    TermState::new(Cause::ClientTimeout, Phase::Data),
                    Some(be),
                )
                .await
            }
            HttpError::ServerTimeout => {
                self.tally.server_abort();
                self.fail(
                    504,
                    TermState::new(Cause::ServerTimeout, Phase::Data),
                    Some(be),
                )
                .await
            }
            HttpError::ServerClosed(_) | HttpError::BadResponse(_) => {
                self.tally.server_abort();
                self.fail(502, TermState::new(Cause::Server, Phase::Data), Some(be))
                    .await
            }
            _ => {
                self.tally.error(|c| &c.client_aborts);
                self.record.term = TermState::new(Cause::Client, Phase::Data);
                self.finish(Some(be));
                Next::Close
            }
        }
    }

    /// No usable response head: the backend's and server's `eresp`, whatever the cause.
    pub(super) async fn response_failed(&mut self, e: HttpError, be: &Backend) -> Next<'f> {
        self.tally.error(|c| &c.failed_resp);
        match e {
            HttpError::ServerTimeout => {
                self.fail(
                    504,
                    TermState::new(Cause::ServerTimeout, Phase::Headers),
                    Some(be),
                )
                .await
            }
            HttpError::BadResponse(reason) => {
                log::warn!("backend {}/{}: {reason}", be.name, self.record.server);
                self.fail(502, TermState::new(Cause::Proxy, Phase::Headers), Some(be))
                    .await
            }
            _ => {
                self.fail(502, TermState::new(Cause::Server, Phase::Headers), Some(be))
                    .await
            }
        }
    }

    /// Passes the response back and decides what happens to both connections.
    /// A plain function returning an `async move` block, as `Exchange::run` says why.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    pub(super) fn respond<'b>(
        mut self,
        req: Request,
        mut resp: Response,
        mut server: Side,
        be: &'b Arc<Backend>,
        done: Done,
    ) -> impl Future<Output = Next<'f>> + use<'f, 'c, 'b, C> {
        async move {
            self.record.status = Some(resp.status);
            let tunnel = self.client.may_tunnel()
                && ((resp.status == 101 && req.upgrade.is_some())
                    || (req.method == "CONNECT" && (200..300).contains(&resp.status)));
            if resp.status == 101 && !tunnel {
                self.tally.error(|c| &c.failed_resp);
                return self
                    .fail(502, TermState::new(Cause::Proxy, Phase::Headers), Some(be))
                    .await;
            }
            if let Err(status) = self.response_rules(&req, &mut resp, be) {
                self.tally.denied_response();
                return self
                    .fail(
                        status,
                        TermState::new(Cause::Proxy, Phase::Headers),
                        Some(be),
                    )
                    .await;
            }
            if let Some(s) = &be.sticky {
                let id = done.server.params.cookie.as_deref();
                self.record.cookie[1] = s.on_response(&mut resp.headers, id, &done.seen);
            }
            if tunnel {
                return self.start_tunnel(resp, server, be, done).await;
            }
            let fe = self.fe;
            let client_close = req.close
                || fe.httpclose
                || be.httpclose
                || resp.framing == Framing::UntilClose
                || (resp.framing == Framing::Chunked && !chunked_out(&req));
            let idle = self.client_idle();
            let whole = self
                .client
                .send_whole(&req, &resp, client_close, &mut server, idle)
                .await;
            match whole {
                Some(Ok(n)) => self.record.bytes += n,
                Some(Err(e)) => return self.aborted(e, be),
                None => {
                    if let Err(e) = self
                        .send_apart(&req, &resp, client_close, &mut server, be)
                        .await
                    {
                        return self.aborted(e, be);
                    }
                }
            }
            let reusable = !done.close_server && !resp.close && server.data().is_empty();
            let shared = reuse::shared(be.reuse, &done.server);
            if reusable && shared {
                pool::put(&done.server, server.stream, be.pool_idle, done.served);
            } else if let (true, Some(slot)) = (reusable, self.private.as_deref_mut()) {
                *slot = Some(pool::Private::new(
                    &done.server,
                    server.stream,
                    be.pool_idle,
                    done.served,
                ));
            }
            self.finish(Some(be));
            drop(done.claim);
            if client_close {
                Next::Close
            } else {
                Next::KeepAlive
            }
        }
    }

    /// The response head, then its body as it comes from the server.
    async fn send_apart(
        &mut self,
        req: &Request,
        resp: &Response,
        close: bool,
        server: &mut Side,
        be: &Backend,
    ) -> Result<(), HttpError> {
        let idle = self.client_idle();
        let sent = self.client.send_head(req, resp, close, idle).await;
        self.record.bytes += sent.map_err(HttpError::ClientClosed)?;
        let body = self
            .client
            .download(server, req, resp, be.server_timeout, self.fe.client_timeout)
            .await;
        self.record.bytes += body?;
        Ok(())
    }

    /// `http-response` rules: the backend's, then the frontend's (a `listen` is both, and its
    /// rules run once). `Err(status)`: a rule denied the response.
    fn response_rules(&self, req: &Request, resp: &mut Response, be: &Backend) -> Result<(), u16> {
        let ctx = self.ctx(req);
        be.response_rules.apply(resp, &ctx)?;
        if !be.own_section {
            self.fe.response_rules.apply(resp, &ctx)?;
        }
        Ok(())
    }

    /// The response could not be passed on whole: the client gets a cut stream, as HAProxy's.
    pub(super) fn aborted(&mut self, e: HttpError, be: &Backend) -> Next<'f> {
        self.record.term = match e {
            HttpError::ClientTimeout => TermState::new(Cause::ClientTimeout, Phase::Data),
            HttpError::ServerTimeout => TermState::new(Cause::ServerTimeout, Phase::Data),
            HttpError::ServerClosed(_) => TermState::new(Cause::Server, Phase::Data),
            HttpError::BadResponse(_) => TermState::new(Cause::Proxy, Phase::Data),
            _ => TermState::new(Cause::Client, Phase::Data),
        };
        match e {
            HttpError::ServerTimeout | HttpError::ServerClosed(_) => self.tally.server_abort(),
            HttpError::BadResponse(_) => self.tally.error(|c| &c.failed_resp),
            _ => self.tally.error(|c| &c.client_aborts),
        }
        self.client.abort();
        self.finish(Some(be));
        Next::Close
    }

    /// The client gave up on the request before the answer came (an HTTP/2 stream reset):
    /// the server side is dropped, not pooled (its answer may still be on the way), and the
    /// request logged as a client abort in `phase`.
    pub(super) fn client_gone(&mut self, be: &Backend, phase: Phase) -> Next<'f> {
        self.record.term = TermState::new(Cause::Client, phase);
        self.tally.error(|c| &c.client_aborts);
        self.finish(Some(be));
        Next::Close
    }
}

/// What `respond` needs of the server side.
pub(super) struct Done {
    server: Arc<Server>,
    pub(super) claim: ServerClaim,
    seen: Seen,
    close_server: bool,
    /// Requests the server connection has carried, this one included.
    served: u32,
}

pub(super) fn server_write_error(e: std::io::Error) -> HttpError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        HttpError::ServerTimeout
    } else {
        HttpError::ServerClosed(e)
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

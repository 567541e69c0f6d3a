//! One client connection in `mode http`, from accept to close: read a request head, apply
//! the rules in HAProxy's order (frontend `http-request`/`reqadd`/`redirect`, `use_backend`,
//! backend rules, stats, `option forwardfor`, persistence cookie), exchange it with a server,
//! pass the response back, and loop while both ends keep the connection alive. A `101` turns
//! the pair into a tunnel that the `forward` room carries with `timeout tunnel`.
//!
//! Any request that cannot be read with certainty gets an error page and the connection is
//! closed: after a framing error nothing that follows on the stream can be trusted.
//!
//! One concern a file: this one is the HTTP/1.1 client side (accept, read a request, the
//! keep-alive loop, the linger at close); `serve` carries one request to its log line,
//! `route` applies frontend rules and answers locally; `exchange` is the upstream exchange;
//! `tunnel` hands an upgraded pair to the forward room. A TLS client that chose `h2` by
//! ALPN goes to `h2/` instead, which serves each stream with the same exchange.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use compio::net::TcpStream;

use crate::counters::{Flow, Live, SessionGuard, FLOWS, PROCESS};
use crate::log::{Cause, Phase, TermState};
use crate::upstream::{Origin, ServerClaim};

use super::conn::{ClientConn, Conn};
use super::error::HttpError;
use super::head::{check_partial_head, head_end, parse_request, Request};
use super::httplog::HttpRecord;
use super::serve::Exchange;
use super::side::{deadline, shutdown, Side};
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
    let Some(c) = tls
        .accept_logged(stream, origin.src, &fe.name, &PROCESS.http_sessions)
        .await
    else {
        return;
    };
    if c.alpn() == Some(b"h2".as_slice()) {
        super::h2::serve(c, origin, fe).await
    } else {
        run(ClientConn::Tls(c), origin, fe).await
    }
}

/// What a client connection holds while it lasts, HTTP/1.1 or HTTP/2: its place in the live
/// counts and in the frontend's sessions (client connections, however many requests each
/// carries).
pub(super) struct Opened<'f> {
    _active: Live<'static>,
    _fe: Live<'f>,
    _session: SessionGuard<'f>,
    /// Its line in `show sess` (engine `http`): the server of its latest request, its bytes.
    pub(super) flow: Flow,
}

/// A client connection starts: counted, and logged in HAProxy's default format.
pub(super) fn open<'f>(fe: &'f Frontend, origin: Origin, tcp: &TcpStream) -> Opened<'f> {
    let opened = Opened {
        _active: Live::enter(&PROCESS.http_sessions),
        _fe: Live::enter(&fe.conns),
        _session: fe.counters.open_session(),
        flow: FLOWS.enter(origin.src, &fe.counters, "http"),
    };
    fe.counters.accepted();
    let _ = tcp.set_nodelay(true);
    fe.access_log
        .connected(origin.src, origin.dst, &fe.name, true);
    opened
}

async fn run(stream: ClientConn, origin: Origin, fe: Arc<Frontend>) {
    let opened = open(&fe, origin, stream.tcp());
    let mut client = Side::new(stream, fe.bufsize);
    let accepted = Instant::now();
    let mut first = true;
    // `http-reuse never`: this client's own idle server connection, shared with no other.
    let mut private = None;
    loop {
        let next = Exchange::new(&fe, origin, &mut client, first, accepted)
            .with_private(&mut private)
            .with_flow(&opened.flow)
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

/// Why no request head could be read.
enum NoRequest {
    /// Nothing came (idle keep-alive end, or a client that left): close without an answer.
    Quiet {
        timed_out: bool,
    },
    Failed(HttpError),
}

impl<'f, 'c> Exchange<'f, 'c> {
    /// Reads the next request head on the connection, then serves it. A plain function
    /// returning an `async move` block, as every step of an exchange: an `async fn` keeps
    /// room for its arguments twice (rust-lang/rust#62958), and each step's future is moved
    /// into its caller's for every request (issue #14).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    pub(super) fn run(mut self) -> impl Future<Output = Next<'f>> + use<'f, 'c> {
        async move {
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
            self.serve(req).await
        }
    }

    async fn read_request(&mut self) -> Result<Request, NoRequest> {
        let fe = self.fe;
        let whole_head = Some(fe.http_request);
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
            if let Err(reason) = check_partial_head(self.client.data()) {
                return Err(NoRequest::Failed(HttpError::bad_request(400, reason)));
            }
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
}

//! The client end of one exchange, as the shared request logic (route, rules, upstream
//! exchange) sees it. Two kinds implement it: an HTTP/1.1 connection (`h1_client.rs`, one
//! exchange after the other on the same socket) and one HTTP/2 stream (`h2/stream.rs`, many
//! exchanges side by side on one connection). Everything that decides *what* happens to a
//! request is written once against this trait; only how bytes reach the client differs.
//!
//! The proxy's own answers (error pages, `errorfile`s, redirects, the stats page) stay
//! HTTP/1.1 messages, as HAProxy's errorfiles are: the HTTP/2 side translates them.

use std::io;
use std::time::Duration;

use compio::net::TcpStream;

use super::error::HttpError;
use super::head::{Request, Response};
use super::side::Side;

/// What an exchange needs of the client it serves.
pub(super) trait Client {
    /// `ssl_fc`: the client came through a `bind … ssl`.
    fn is_tls(&self) -> bool;

    /// Bytes read from the client so far: the request's share of `bin` is the growth.
    fn read_total(&self) -> u64;

    /// A `101` or a 2xx to CONNECT may turn the exchange into a tunnel (HTTP/1.1 only; an
    /// HTTP/2 stream never upgrades, and extended CONNECT is not offered).
    fn may_tunnel(&self) -> bool;

    /// Readies the request body for one write that can be replayed on a fresh server
    /// connection: `Some(n)` when the whole body (`n` bytes) is held in [`Client::buffered`].
    /// `None`: the body is streamed by [`Client::upload`].
    async fn buffer_body(
        &mut self,
        req: &Request,
        idle: Option<Duration>,
    ) -> Result<Option<usize>, HttpError>;

    /// The first `n` bytes held by [`Client::buffer_body`].
    fn buffered(&self, n: usize) -> &[u8];

    /// The held body went to a server that answered: it is not needed again.
    fn consume(&mut self, n: usize);

    /// Streams the request body to the server as it arrives (answering
    /// `Expect: 100-continue` first); `read_idle` bounds each wait for the client,
    /// `write_idle` each wait for the server.
    async fn upload(
        &mut self,
        req: &Request,
        to: &TcpStream,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
    ) -> Result<(), HttpError>;

    /// Sends an answer of the proxy's own, a complete HTTP/1.1 response; returns the bytes
    /// it counts as sent.
    async fn answer(&mut self, bytes: Vec<u8>, idle: Option<Duration>) -> io::Result<u64>;

    /// Sends the server's response head; `close` says the client connection ends after this
    /// exchange (HTTP/1.1). Returns the bytes it counts as sent.
    async fn send_head(
        &mut self,
        req: &Request,
        resp: &Response,
        close: bool,
        idle: Option<Duration>,
    ) -> io::Result<u64>;

    /// Sends the response head and its whole body in one write when the body already sits in
    /// `server`'s buffer (a small object: one send instead of two, so one TCP segment and
    /// one wake-up of the client less per request); the body is consumed from `server`.
    /// `None`: the body is not wholly there, or this client frames bodies itself, and the
    /// caller sends head and body apart. Returns the bytes counted as sent (head + body).
    async fn send_whole(
        &mut self,
        _req: &Request,
        _resp: &Response,
        _close: bool,
        _server: &mut Side,
        _idle: Option<Duration>,
    ) -> Option<Result<u64, HttpError>> {
        None
    }

    /// Passes the response body from `server` on; returns the bytes sent.
    async fn download(
        &mut self,
        server: &mut Side,
        req: &Request,
        resp: &Response,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
    ) -> Result<u64, HttpError>;

    /// The answer was cut: make the client see a broken transfer, not a short one that
    /// looks complete (a reset on HTTP/1.1, RST_STREAM on HTTP/2).
    fn abort(&mut self);

    /// Resolves when the client has given up on the request (an HTTP/2 RST_STREAM); an
    /// HTTP/1.1 client never says so before the answer is written, so it never resolves.
    async fn gone(&mut self);
}

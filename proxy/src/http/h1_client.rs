//! An HTTP/1.1 client connection as an exchange's client end: bytes go to the socket as they
//! are, heads are re-serialised with the `Connection` value the exchange decided, bodies move
//! with [`Relay`] (chunked re-encoding, splice(2) for large ones).

use std::io;
use std::time::Duration;

use compio::net::TcpStream;

use super::answers::CONTINUE;
use super::body::{Dir, Relay};
use super::client::Client;
use super::conn::{ClientConn, Conn};
use super::error::HttpError;
use super::head::{Framing, Request, Response};
use super::side::{deadline, write_all, Side};

impl Client for Side<ClientConn> {
    fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    fn read_total(&self) -> u64 {
        self.read_total
    }

    fn may_tunnel(&self) -> bool {
        true
    }

    /// Only what already sits in the read buffer: waiting for a body here would hold the
    /// server slot's queue position hostage to a slow client.
    async fn buffer_body(
        &mut self,
        req: &Request,
        _idle: Option<Duration>,
    ) -> Result<Option<usize>, HttpError> {
        Ok(match req.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) if (self.data().len() as u64) >= n => usize::try_from(n).ok(),
            _ => None,
        })
    }

    fn buffered(&self, n: usize) -> &[u8] {
        self.data().get(..n).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        Side::consume(self, n);
    }

    /// `Expect: 100-continue` is answered here, once the server connection stands: the
    /// server never sees the expectation (see `head.rs`).
    async fn upload(
        &mut self,
        req: &Request,
        to: &TcpStream,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
    ) -> Result<(), HttpError> {
        if req.expect_continue && self.data().is_empty() {
            write_all(&self.stream, CONTINUE.to_vec(), deadline(read_idle))
                .await
                .map_err(HttpError::ClientClosed)?;
        }
        let mut relay = Relay {
            from: self,
            to,
            dir: Dir::Up,
            read_idle,
            write_idle,
        };
        relay.run(req.framing, true).await.map(|_| ())
    }

    async fn answer(&mut self, bytes: Vec<u8>, idle: Option<Duration>) -> io::Result<u64> {
        let len = bytes.len() as u64;
        write_all(&self.stream, bytes, deadline(idle)).await?;
        Ok(len)
    }

    async fn send_head(
        &mut self,
        req: &Request,
        resp: &Response,
        close: bool,
        idle: Option<Duration>,
    ) -> io::Result<u64> {
        self.answer(response_head(req, resp, close), idle).await
    }

    async fn send_whole(
        &mut self,
        req: &Request,
        resp: &Response,
        close: bool,
        server: &mut Side,
        idle: Option<Duration>,
    ) -> Option<Result<u64, HttpError>> {
        let Framing::Length(n) = resp.framing else {
            return None;
        };
        let n = usize::try_from(n).ok()?;
        let body = server.data().get(..n)?;
        let mut bytes = response_head(req, resp, close);
        bytes.extend_from_slice(body);
        server.consume(n);
        Some(self.answer(bytes, idle).await.map_err(|e| {
            // As the body relay reports a write that timed out: the client stopped reading.
            if e.kind() == io::ErrorKind::TimedOut {
                HttpError::ClientTimeout
            } else {
                HttpError::ClientClosed(e)
            }
        }))
    }

    async fn download(
        &mut self,
        server: &mut Side,
        req: &Request,
        resp: &Response,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
    ) -> Result<u64, HttpError> {
        let mut relay = Relay {
            from: server,
            to: &self.stream,
            dir: Dir::Down,
            read_idle,
            write_idle,
        };
        relay.run(resp.framing, chunked_out(req)).await
    }

    fn abort(&mut self) {
        let _ = self.stream.tcp().set_zero_linger();
    }

    async fn gone(&mut self) {
        std::future::pending::<()>().await
    }
}

/// The response head for this client: `Connection: close` when the connection ends after it,
/// `keep-alive` for an HTTP/1.0 client that keeps it.
fn response_head(req: &Request, resp: &Response, close: bool) -> Vec<u8> {
    let connection = if close {
        Some("close")
    } else if req.minor == 0 {
        Some("keep-alive")
    } else {
        None
    };
    resp.serialize(connection, chunked_out(req))
}

/// An HTTP/1.0 client cannot read chunked framing: its body leaves de-chunked, delimited by
/// the close.
pub(super) fn chunked_out(req: &Request) -> bool {
    req.minor == 1
}

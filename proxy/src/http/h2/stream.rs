//! One HTTP/2 stream as an exchange's client end: the request head translated
//! (`convert.rs`), its body read from DATA frames with flow control given back as the server
//! takes the bytes, the response head sent as HEADERS and its body as DATA frames within the
//! window the client grants. Everything between (rules, routing, persistence, the server
//! exchange, logging, counters) is the shared [`Exchange`].

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::buf::{BufResult, IoBuf};
use compio::net::TcpStream;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};

use crate::upstream::Origin;

use super::super::body::{Dir, Relay};
use super::super::client::Client;
use super::super::conn::Sink;
use super::super::error::HttpError;
use super::super::exchange::server_write_error;
use super::super::head::{head_end, parse_response, Framing, Request, Response};
use super::super::serve::Exchange;
use super::super::side::{deadline, write_all, Side};
use super::super::Frontend;
use super::convert;

/// How a stream ended, for the connection's reset accounting.
pub(super) struct StreamEnd {
    /// The client reset the stream before its answer was complete (RST_STREAM).
    pub(super) reset_by_client: bool,
}

/// Serves one stream from its request head to its log line.
pub(super) async fn serve(
    fe: &Frontend,
    origin: Origin,
    accepted: Instant,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
) -> StreamEnd {
    let (parts, body) = req.into_parts();
    let end_stream = body.is_end_stream();
    let mut client = StreamClient {
        read_total: 0,
        body,
        respond,
        out: None,
        held: Vec::new(),
        bufsize: fe.bufsize,
        reset: false,
    };
    let mut exchange = Exchange::new(fe, origin, &mut client, false, accepted);
    // The head arrived before the exchange began: its bytes are the request's first.
    exchange.client.read_total = request_head_size(&parts);
    // Each stream is one exchange: what would follow it on HTTP/1.1 (keep-alive, close)
    // is the connection's business here.
    match convert::request(&parts, end_stream) {
        Ok(request) => drop(exchange.serve(request).await),
        Err(e) => drop(exchange.request_failed(e).await),
    }
    StreamEnd {
        reset_by_client: client.reset_seen(),
    }
}

/// The request head's size as HTTP/1.1 would carry it (what `bin` counts for it).
fn request_head_size(parts: &http::request::Parts) -> u64 {
    let line = parts.method.as_str().len() + parts.uri.path().len() + 12;
    let fields: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    (line + fields + 2) as u64
}

pub(super) struct StreamClient {
    body: RecvStream,
    respond: SendResponse<Bytes>,
    /// The response body's way out, once its head is sent.
    out: Option<Outgoing>,
    /// A small body read whole before the server is contacted (see `buffer_body`).
    held: Vec<u8>,
    read_total: u64,
    bufsize: usize,
    /// The client reset the stream.
    reset: bool,
}

impl StreamClient {
    fn reset_seen(&self) -> bool {
        self.reset || self.out.as_ref().is_some_and(|o| o.reset.get())
    }

    /// The next DATA frame's bytes, `None` at the end of the body; `idle` bounds the wait.
    async fn next_data(&mut self, idle: Option<Duration>) -> Result<Option<Bytes>, HttpError> {
        let body = &mut self.body;
        let next = poll_fn(|cx| body.poll_data(cx));
        let got = match deadline(idle) {
            None => next.await,
            Some(at) => compio::time::timeout_at(at, next)
                .await
                .map_err(|_| HttpError::ClientTimeout)?,
        };
        match got {
            None => Ok(None),
            Some(Ok(data)) => {
                self.read_total += data.len() as u64;
                Ok(Some(data))
            }
            Some(Err(e)) => Err(self.client_error(e)),
        }
    }

    /// Gives the client back the window of `n` bytes the proxy is done with, so the body's
    /// pace is the server's: never more than a window is held per stream.
    fn release(&mut self, n: usize) {
        let _ = self.body.flow_control().release_capacity(n);
    }

    fn client_error(&mut self, e: h2::Error) -> HttpError {
        if e.is_reset() && e.is_remote() {
            self.reset = true;
            return HttpError::ClientClosed(io::Error::other(e));
        }
        match e.into_io() {
            Some(io) => HttpError::ClientClosed(io),
            None => HttpError::bad_request(400, "malformed HTTP/2 request body"),
        }
    }

    /// Sends the response head; `end`: there is no body.
    fn start(
        &mut self,
        head: http::Response<()>,
        length: Option<u64>,
        end: bool,
    ) -> io::Result<()> {
        let stream = self.respond.send_response(head, end).map_err(h2_io)?;
        self.out = Some(Outgoing {
            stream: RefCell::new(stream),
            left: Cell::new(length),
            ended: Cell::new(end),
            reset: Cell::new(false),
        });
        Ok(())
    }
}

impl Client for StreamClient {
    /// HTTP/2 is served on `bind … ssl` only (`h2` by ALPN; no cleartext h2c).
    fn is_tls(&self) -> bool {
        true
    }

    fn read_total(&self) -> u64 {
        self.read_total
    }

    fn may_tunnel(&self) -> bool {
        false
    }

    /// A body of known length up to `tune.bufsize` is read whole first (the client sends it
    /// right behind the head): it then leaves in one write with the head and can be replayed
    /// on a fresh connection when a pooled one turns out dead, as HTTP/1.1's buffered bodies.
    async fn buffer_body(
        &mut self,
        req: &Request,
        idle: Option<Duration>,
    ) -> Result<Option<usize>, HttpError> {
        let n = match req.framing {
            Framing::Empty => return Ok(Some(0)),
            Framing::Length(n) if n <= self.bufsize as u64 => n as usize,
            _ => return Ok(None),
        };
        while self.held.len() < n {
            let Some(data) = self.next_data(idle).await? else {
                return Err(HttpError::client_eof());
            };
            self.held.extend_from_slice(&data);
            self.release(data.len());
            if self.held.len() > n {
                return Err(HttpError::bad_request(
                    400,
                    "body longer than content-length",
                ));
            }
        }
        Ok(Some(n))
    }

    fn buffered(&self, n: usize) -> &[u8] {
        self.held.get(..n).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.held.drain(..n.min(self.held.len()));
    }

    /// DATA frames go to the server as they come: as they are for a known length, else as
    /// chunks. A frame's window is given back once the server took its bytes.
    async fn upload(
        &mut self,
        req: &Request,
        to: &TcpStream,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
    ) -> Result<(), HttpError> {
        if req.expect_continue {
            let go_on = http::Response::builder()
                .status(100)
                .body(())
                .map_err(|_| HttpError::bad_request(500, "100 Continue"))?;
            self.respond
                .send_informational(go_on)
                .map_err(|e| HttpError::ClientClosed(h2_io(e)))?;
        }
        let chunked = req.framing == Framing::Chunked;
        let mut sent = 0u64;
        while let Some(data) = self.next_data(read_idle).await? {
            let n = data.len();
            sent += n as u64;
            if matches!(req.framing, Framing::Length(len) if sent > len) {
                return Err(HttpError::bad_request(
                    400,
                    "body longer than content-length",
                ));
            }
            if n == 0 {
                continue;
            }
            let bytes = if chunked {
                chunk(&data)
            } else {
                Vec::from(data)
            };
            write_all(to, bytes, deadline(write_idle))
                .await
                .map_err(server_write_error)?;
            self.release(n);
        }
        match req.framing {
            Framing::Length(len) if sent < len => Err(HttpError::client_eof()),
            Framing::Chunked => write_all(to, b"0\r\n\r\n".to_vec(), deadline(write_idle))
                .await
                .map_err(server_write_error),
            _ => Ok(()),
        }
    }

    /// The proxy's answers are HTTP/1.1 messages (errorfiles are raw responses): their head
    /// is read back and sent as HEADERS (its `Connection` field dropped), their body as DATA.
    async fn answer(&mut self, bytes: Vec<u8>, idle: Option<Duration>) -> io::Result<u64> {
        let len = bytes.len() as u64;
        let end = head_end(&bytes, 0).ok_or_else(|| invalid("no head end"))?;
        let resp = parse_response(bytes.get(..end).unwrap_or_default(), "GET")
            .map_err(|e| invalid(&e.to_string()))?;
        let head = convert::response(&resp).map_err(|e| invalid(&e.to_string()))?;
        let body = bytes::Bytes::slice(&Bytes::from(bytes), end..);
        self.start(head, None, body.is_empty())?;
        if let Some(out) = &self.out {
            if !body.is_empty() {
                out.send_within(body, idle).await?;
                out.finish()?;
            }
        }
        Ok(len)
    }

    async fn send_head(
        &mut self,
        _req: &Request,
        resp: &Response,
        _close: bool,
        _idle: Option<Duration>,
    ) -> io::Result<u64> {
        let head = convert::response(resp).map_err(|e| invalid(&e.to_string()))?;
        let length = match resp.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        self.start(head, length, resp.framing == Framing::Empty)?;
        let status_line = 15 + resp.reason.len();
        Ok(convert::head_size(status_line, &resp.headers))
    }

    /// The body leaves de-chunked (HTTP/2 frames it): chunk framing is not counted.
    async fn download(
        &mut self,
        server: &mut Side,
        _req: &Request,
        resp: &Response,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
    ) -> Result<u64, HttpError> {
        let Some(out) = self.out.as_ref().filter(|o| !o.ended.get()) else {
            return Ok(0);
        };
        let mut relay = Relay {
            from: server,
            to: out,
            dir: Dir::Down,
            read_idle,
            write_idle,
        };
        let n = relay.run(resp.framing, false).await?;
        out.finish().map_err(HttpError::ClientClosed)?;
        Ok(n)
    }

    fn abort(&mut self) {
        match &self.out {
            Some(out) => out.stream.borrow_mut().send_reset(Reason::CANCEL),
            None => self.respond.send_reset(Reason::CANCEL),
        }
    }

    async fn gone(&mut self) {
        let respond = &mut self.respond;
        let _ = poll_fn(|cx| respond.poll_reset(cx)).await;
        self.reset = true;
    }
}

/// One chunk of a chunked request body (the client's framing was HTTP/2's).
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

fn h2_io(e: h2::Error) -> io::Error {
    e.into_io()
        .unwrap_or_else(|| io::Error::other("HTTP/2 stream error"))
}

/// A response body on its way out as DATA frames.
pub(super) struct Outgoing {
    /// A `RefCell`: a [`Sink`] writes through `&self`; no borrow is held across an await.
    stream: RefCell<SendStream<Bytes>>,
    /// Bytes of a known length still to send: the frame that sends the last carries
    /// END_STREAM, sparing an empty frame.
    left: Cell<Option<u64>>,
    ended: Cell<bool>,
    /// The client reset the stream while the body went out.
    reset: Cell<bool>,
}

impl Outgoing {
    /// Sends `data` as the client's window allows: the stream asks for room, waits until
    /// h2 grants some (the window, and h2's per-stream send buffer, bound what is queued),
    /// sends that much, and so on.
    async fn send(&self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            self.stream.borrow_mut().reserve_capacity(data.len());
            let granted = poll_fn(|cx| self.stream.borrow_mut().poll_capacity(cx)).await;
            let room = match granted {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(self.failed(e)),
                None => return Err(io::ErrorKind::BrokenPipe.into()),
            };
            let piece = data.split_to(room.min(data.len()));
            let left = self
                .left
                .get()
                .map(|l| l.saturating_sub(piece.len() as u64));
            self.left.set(left);
            let last = left == Some(0);
            self.stream
                .borrow_mut()
                .send_data(piece, last)
                .map_err(|e| self.failed(e))?;
            self.ended.set(last);
        }
        Ok(())
    }

    async fn send_within(&self, data: Bytes, idle: Option<Duration>) -> io::Result<()> {
        match deadline(idle) {
            None => self.send(data).await,
            Some(at) => compio::time::timeout_at(at, self.send(data))
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        }
    }

    /// END_STREAM, unless the last DATA frame carried it.
    fn finish(&self) -> io::Result<()> {
        if self.ended.replace(true) {
            return Ok(());
        }
        self.stream
            .borrow_mut()
            .send_data(Bytes::new(), true)
            .map_err(|e| self.failed(e))
    }

    fn failed(&self, e: h2::Error) -> io::Error {
        if e.is_reset() && e.is_remote() {
            self.reset.set(true);
        }
        h2_io(e)
    }
}

impl Sink for Outgoing {
    fn splice_sink(&self) -> Option<&TcpStream> {
        None
    }

    async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        let data = Bytes::copy_from_slice(buf.as_init());
        BufResult(self.send(data).await, buf)
    }
}

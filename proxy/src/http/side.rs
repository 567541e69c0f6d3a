//! One end of an HTTP exchange: a socket with a bounded read buffer. Bytes read but not used
//! yet (the next pipelined request, the start of a body) stay in the buffer for the next step.
//! compio owns buffers during an operation, so the buffer is lent to each read or write and
//! handed back with the result.

use std::io;
use std::time::Instant;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::net::TcpStream;

use super::conn::{Conn, Sink};

/// `S` is a server's plain `TcpStream` or the client's `ClientConn`.
pub struct Side<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
    /// Most bytes the buffer holds: `tune.bufsize`.
    limit: usize,
    /// Bytes read from this socket so far.
    pub read_total: u64,
}

impl<S: Conn> Side<S> {
    pub fn new(stream: S, limit: usize) -> Side<S> {
        Side {
            stream,
            buf: Vec::new(),
            pos: 0,
            limit: limit.max(1024),
            read_total: 0,
        }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// No room left for another read: the caller's message part is too big.
    pub fn is_full(&self) -> bool {
        self.pos == 0 && self.buf.len() >= self.limit
    }

    /// Reads more bytes after the unread ones; `Ok(0)` is EOF. Past `deadline` the read is
    /// cancelled and `TimedOut` returned. A full buffer reads nothing: callers check
    /// `is_full` first, as only they know which answer fits.
    pub async fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        if len >= self.limit {
            return Err(io::Error::other("buffer full"));
        }
        self.buf.reserve_exact(self.limit - len);
        let buf = std::mem::take(&mut self.buf).slice(len..self.limit);
        let stream = &self.stream;
        let (res, buf) = match deadline {
            None => {
                let BufResult(res, buf) = stream.read(buf).await;
                (res, buf)
            }
            Some(at) => match compio::time::timeout_at(at, stream.read(buf)).await {
                Ok(BufResult(res, buf)) => (res, buf),
                // The cancelled read took the buffer with it; what was unread is lost, but
                // a timed-out connection is closed anyway.
                Err(_) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
            },
        };
        self.buf = buf.into_inner();
        let n = res?;
        self.read_total += n as u64;
        Ok(n)
    }

    /// Sends the first `n` unread bytes to `to` and consumes them (a body passing through).
    pub async fn pass_to<T: Sink>(
        &mut self,
        n: usize,
        to: &T,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        let n = n.min(self.data().len());
        let window = std::mem::take(&mut self.buf).slice(self.pos..self.pos + n);
        let (res, window) = write_timed(to, window, deadline).await;
        match window {
            Some(w) => self.buf = w.into_inner(),
            None => {
                self.pos = 0;
                return res;
            }
        }
        res?;
        self.consume(n);
        Ok(())
    }
}

/// Writes all of `bytes`, bounded by `deadline`.
pub async fn write_all<T: Sink>(
    to: &T,
    bytes: Vec<u8>,
    deadline: Option<Instant>,
) -> io::Result<()> {
    write_timed(to, bytes, deadline).await.0
}

/// `write_all` that returns the buffer, unless the write timed out (then it is gone).
async fn write_timed<T: Sink, B: IoBuf>(
    to: &T,
    bytes: B,
    deadline: Option<Instant>,
) -> (io::Result<()>, Option<B>) {
    match deadline {
        None => {
            let BufResult(res, b) = to.write_all(bytes).await;
            (res, Some(b))
        }
        Some(at) => match compio::time::timeout_at(at, to.write_all(bytes)).await {
            Ok(BufResult(res, b)) => (res, Some(b)),
            Err(_) => (Err(io::Error::from(io::ErrorKind::TimedOut)), None),
        },
    }
}

/// `Some(now + t)`, or no deadline.
pub fn deadline(t: Option<std::time::Duration>) -> Option<Instant> {
    t.map(|t| Instant::now() + t)
}

/// Shuts the write side down so the peer sees EOF after everything queued (after a
/// close_notify on TLS).
pub async fn shutdown<S: Conn>(stream: &S) {
    let _ = stream.shutdown().await;
}

//! One end of an HTTP exchange: a socket with a bounded read buffer. Bytes read but not used
//! yet (the next pipelined request, the start of a body) stay in the buffer for the next step.
//! compio owns buffers during an operation, so the buffer is lent to each read or write and
//! handed back with the result.

use std::cell::RefCell;
use std::io;
use std::time::Instant;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::net::TcpStream;

use super::conn::{Conn, Sink};

/// `S` is a server's plain `TcpStream` or the client's `ClientConn`.
pub struct Side<S = TcpStream> {
    pub stream: S,
    buf: Buf,
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
            buf: Buf(Vec::new()),
            pos: 0,
            limit: limit.max(1024),
            read_total: 0,
        }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        self.buf.0.get(self.pos..).unwrap_or_default()
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.0.len());
        if self.pos == self.buf.0.len() {
            self.buf.0.clear();
            self.pos = 0;
        }
    }

    /// No room left for another read: the caller's message part is too big.
    pub fn is_full(&self) -> bool {
        self.pos == 0 && self.buf.0.len() >= self.limit
    }

    /// Reads more bytes after the unread ones; `Ok(0)` is EOF. Past `deadline` the read is
    /// cancelled and `TimedOut` returned. A full buffer reads nothing: callers check
    /// `is_full` first, as only they know which answer fits.
    pub async fn fill(&mut self, deadline: Option<Instant>) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.0.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.0.len();
        if len >= self.limit {
            return Err(io::Error::other("buffer full"));
        }
        if self.buf.0.capacity() == 0 {
            self.buf.0 = spare();
        }
        self.buf.0.reserve_exact(self.limit - len);
        let buf = std::mem::take(&mut self.buf.0).slice(len..self.limit);
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
        self.buf.0 = buf.into_inner();
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
        let window = std::mem::take(&mut self.buf.0).slice(self.pos..self.pos + n);
        let (res, window) = write_timed(to, window, deadline).await;
        match window {
            Some(w) => self.buf.0 = w.into_inner(),
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

/// A side's read buffer. When the side ends it goes back to its worker's spare list, and the
/// next side's first read takes it from there: a server side lives for one request (its
/// connection goes back to the pool without it), and a fresh `tune.bufsize` allocation per
/// request showed in profiles (issue #14). A plain field with its own `Drop`, so that a
/// side's stream can still be moved out of it (into the pool, into a tunnel).
#[derive(Default)]
struct Buf(Vec<u8>);

/// Spare buffers kept per worker thread: enough for the server sides of the requests that
/// one turn of the event loop finishes, few enough to cost little memory when idle.
const SPARES: usize = 16;
/// Larger buffers (a `tune.bufsize` far above the default) are not worth keeping around.
const SPARE_MAX_LEN: usize = 64 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Drop for Buf {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() == 0 || buf.capacity() > SPARE_MAX_LEN {
            return;
        }
        buf.clear();
        // `try_with`: a side dropped while its thread's locals are being destroyed just frees.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARES {
                spare.push(buf);
            }
        });
    }
}

/// A spare buffer, or an empty one that the caller's `reserve_exact` sizes.
fn spare() -> Vec<u8> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
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
pub async fn write_timed<T: Sink, B: IoBuf>(
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

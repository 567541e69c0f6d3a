//! The bridge from the worker's io_uring (or epoll) TLS stream to the IO traits the `h2`
//! crate is written against (tokio's `AsyncRead`/`AsyncWrite`), without a tokio runtime:
//!
//! `TlsClient` (compio's owned-buffer `AsyncRead`/`AsyncWrite`, through `&TlsClient`)
//!   → [`ReadHalf`]/[`WriteHalf`], owned handles on one shared client
//!   → compio's own `compat::AsyncStream` (futures-io's poll traits: it keeps one read and
//!     one write operation in flight in buffers of its own, woken by the compio driver)
//!   → tokio-util's `Compat` (futures-io to tokio's traits).
//!
//! h2 spawns nothing: its connection future is polled by the connection's own compio task,
//! and every wake-up comes from the compio driver that completed an operation.

use std::pin::Pin;
use std::rc::Rc;

use compio::buf::{BufResult, IoBuf, IoBufMut};
use compio::io::compat::AsyncStream;
use compio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::tls::TlsClient;

/// The read side: one read in flight at a time (compio's compat layer never starts two).
pub(super) struct ReadHalf(Rc<TlsClient>);

/// The write side; a TLS stream takes a write while a read is in flight.
pub(super) struct WriteHalf(Rc<TlsClient>);

impl AsyncRead for ReadHalf {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        let mut r = &*self.0;
        r.read(buf).await
    }
}

impl AsyncWrite for WriteHalf {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let mut w = &*self.0;
        w.write(buf).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let mut w = &*self.0;
        w.flush().await
    }

    /// close_notify, then FIN: h2 shuts the transport down once its GOAWAY is out.
    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.0.finish().await
    }
}

/// What the h2 connection reads and writes.
pub(super) type H2Io = Compat<Pin<Box<AsyncStream<(ReadHalf, WriteHalf)>>>>;

/// The compat layer buffers what h2 writes until its next flush; past `buffer` bytes it
/// flushes first, and it never holds more than four buffers' worth.
pub(super) fn bridge(client: Rc<TlsClient>, buffer: usize) -> H2Io {
    let halves = (ReadHalf(client.clone()), WriteHalf(client));
    Box::pin(AsyncStream::with_limits(buffer, buffer * 4, halves)).compat()
}

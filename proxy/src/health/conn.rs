//! The byte stream an HTTP check talks over: the TCP connection itself, or the TLS session of
//! `check-ssl` on top of it. The exchange is written once against this trait.

use std::io;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;

/// What the check's HTTP exchange needs of a connection.
pub(crate) trait CheckIo {
    /// Sends all of `bytes`.
    async fn send(&mut self, bytes: Vec<u8>) -> io::Result<()>;
    /// Appends at most `want` bytes to `buf`; `Ok(0)` at the end of the stream.
    async fn recv(&mut self, buf: Vec<u8>, want: usize) -> (io::Result<usize>, Vec<u8>);
}

impl CheckIo for TcpStream {
    async fn send(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        let mut w = &*self;
        w.write_all(bytes).await.0
    }

    async fn recv(&mut self, mut buf: Vec<u8>, want: usize) -> (io::Result<usize>, Vec<u8>) {
        let len = buf.len();
        buf.reserve_exact(want);
        let mut r = &*self;
        let BufResult(got, slice) = r.read(buf.slice(len..len + want)).await;
        (got, slice.into_inner())
    }
}

//! The two kinds of socket an HTTP exchange reads and writes: a plain TCP stream (every server
//! side, and `bind` without `ssl`) and a client behind TLS (`bind … ssl`: HTTPS, WSS). The
//! session code is generic over [`Conn`], so the plain path pays no dispatch and the TLS path
//! one `match` per operation; nothing is boxed or allocated per request.

use std::io;

use compio::buf::{BufResult, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;

use crate::tls::TlsClient;

/// Where a message body can be written: a socket, or an HTTP/2 stream (`h2/stream.rs`).
pub(crate) trait Sink {
    /// `Some` when plaintext may be spliced into this socket: plain TCP, or a kTLS socket
    /// (the kernel encrypts what enters it); never a userspace TLS session or an HTTP/2
    /// stream (its bytes are framed).
    fn splice_sink(&self) -> Option<&TcpStream>;
    async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B>;
}

/// What `Side`, `Relay` and the session need of a socket.
pub(crate) trait Conn: Sink {
    /// The socket underneath, for options (linger, nodelay) and raw-fd paths.
    fn tcp(&self) -> &TcpStream;
    /// `Some` when plaintext may be spliced out of this socket with splice(2): only a plain
    /// TCP stream (a TLS socket yields records, or control messages under kTLS).
    fn splice_source(&self) -> Option<&TcpStream>;
    async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B>;
    /// Ends the write side: FIN, preceded by close_notify on TLS.
    async fn shutdown(&self) -> io::Result<()>;
}

impl Sink for TcpStream {
    fn splice_sink(&self) -> Option<&TcpStream> {
        Some(self)
    }

    async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        let mut s = self;
        AsyncWriteExt::write_all(&mut s, buf).await
    }
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }

    fn splice_source(&self) -> Option<&TcpStream> {
        Some(self)
    }

    async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        let mut s = self;
        AsyncRead::read(&mut s, buf).await
    }

    async fn shutdown(&self) -> io::Result<()> {
        crate::forward::shut_write(self)
    }
}

/// The client side of an HTTP session.
pub enum ClientConn {
    Plain(TcpStream),
    Tls(TlsClient),
}

impl ClientConn {
    /// `ssl_fc`: the connection came through a `bind … ssl`.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientConn::Tls(_))
    }
}

impl Sink for ClientConn {
    fn splice_sink(&self) -> Option<&TcpStream> {
        match self {
            ClientConn::Plain(s) => Some(s),
            ClientConn::Tls(t) if t.is_kernel() => Some(t.tcp()),
            ClientConn::Tls(_) => None,
        }
    }

    async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        match self {
            ClientConn::Plain(s) => Sink::write_all(s, buf).await,
            ClientConn::Tls(t) => {
                let mut w = t;
                AsyncWriteExt::write_all(&mut w, buf).await
            }
        }
    }
}

impl Conn for ClientConn {
    fn tcp(&self) -> &TcpStream {
        match self {
            ClientConn::Plain(s) => s,
            ClientConn::Tls(t) => t.tcp(),
        }
    }

    fn splice_source(&self) -> Option<&TcpStream> {
        match self {
            ClientConn::Plain(s) => Some(s),
            ClientConn::Tls(_) => None,
        }
    }

    async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        match self {
            ClientConn::Plain(s) => Conn::read(s, buf).await,
            ClientConn::Tls(t) => {
                let mut r = t;
                AsyncRead::read(&mut r, buf).await
            }
        }
    }

    async fn shutdown(&self) -> io::Result<()> {
        match self {
            ClientConn::Plain(s) => Conn::shutdown(s).await,
            ClientConn::Tls(t) => t.finish().await,
        }
    }
}

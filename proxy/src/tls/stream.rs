//! TLS in userspace: a rustls session over a compio `TcpStream`, as a stream of plaintext.
//!
//! Both directions share one rustls session, so the stream is used through `&TlsStream`:
//! one task may read while another writes (a proxied pair does exactly that). Reads are
//! only ever done by one task at a time; writes go through an async lock so that records of
//! two writers (a response and an alert, say) never interleave on the socket. No `RefCell`
//! borrow is held across an await.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};

use compio::buf::{BufResult, IoBuf};
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::lock::Mutex;
use rustls::server::ServerConnection;

use super::handshake::{HEADER, MAX_RECORD_BODY};

/// Ciphertext read per socket read: one full record and its header.
const READ_CHUNK: usize = HEADER + MAX_RECORD_BODY;

pub struct TlsStream {
    tcp: TcpStream,
    conn: RefCell<ServerConnection>,
    /// Ciphertext read from the socket and not yet taken by rustls.
    pending: RefCell<Vec<u8>>,
    /// The socket said EOF (rustls has been told).
    eof: RefCell<bool>,
    /// The client's FIN came without close_notify.
    truncated: Cell<bool>,
    write_lock: Mutex<()>,
    alpn: Option<Vec<u8>>,
}

impl TlsStream {
    pub fn new(tcp: TcpStream, conn: ServerConnection) -> TlsStream {
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        TlsStream {
            alpn,
            tcp,
            conn: RefCell::new(conn),
            pending: RefCell::new(Vec::new()),
            eof: RefCell::new(false),
            truncated: Cell::new(false),
            write_lock: Mutex::new(()),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The negotiated ALPN protocol, if any (kept from the handshake: `conn` is borrowed
    /// by reads and writes, so no reference into it can be handed out).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The SNI name the client asked for.
    pub fn sni(&self) -> Option<String> {
        self.conn.borrow().server_name().map(str::to_string)
    }

    /// Whether the client ended its stream with a bare FIN, without close_notify.
    pub fn truncated(&self) -> bool {
        self.truncated.get()
    }

    /// Reads plaintext into `dst`. `Ok(0)`: the client finished, with close_notify or with a
    /// bare FIN; the stream carries on the same way after both, but the latter is remembered
    /// ([`TlsStream::truncated`]) so that the session is logged as cut short, not as clean.
    pub async fn read_plain(&self, dst: &mut [u8]) -> io::Result<usize> {
        if <[u8]>::is_empty(dst) {
            return Ok(0);
        }
        loop {
            match self.take_plain(dst) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // rustls' word for EOF before close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    super::note_truncated(&self.truncated);
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
            if !self.pending.borrow().is_empty() {
                self.feed()?;
                self.flush_if_wanted().await?;
                continue;
            }
            if *self.eof.borrow() {
                return Ok(0);
            }
            self.read_socket().await?;
        }
    }

    /// Plaintext rustls already has, or `WouldBlock`.
    fn take_plain(&self, dst: &mut [u8]) -> io::Result<usize> {
        self.conn.borrow_mut().reader().read(dst)
    }

    /// Hands pending ciphertext to rustls and decrypts what is complete.
    fn feed(&self) -> io::Result<()> {
        let mut pending = self.pending.borrow_mut();
        let mut conn = self.conn.borrow_mut();
        let mut rest = &pending[..];
        let used = conn.read_tls(&mut rest)?;
        pending.drain(..used);
        conn.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(())
    }

    async fn read_socket(&self) -> io::Result<()> {
        let buf = Vec::with_capacity(READ_CHUNK);
        let mut r = &self.tcp;
        let BufResult(res, buf) = r.read(buf).await;
        let n = res?;
        if n == 0 {
            *self.eof.borrow_mut() = true;
            // Tells rustls the transport ended: its reader then reports close_notify or EOF.
            let _ = self.conn.borrow_mut().read_tls(&mut &[][..]);
            return Ok(());
        }
        self.pending.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(())
    }

    /// Alerts or KeyUpdate replies rustls produced while reading.
    async fn flush_if_wanted(&self) -> io::Result<()> {
        if self.conn.borrow().wants_write() {
            let _guard = self.write_lock.lock().await;
            self.flush_locked().await?;
        }
        Ok(())
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_plain(&self, data: &[u8]) -> io::Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.conn.borrow_mut().writer().write(rest)?;
            rest = rest.get(n..).unwrap_or_default();
            self.flush_locked().await?;
        }
        Ok(())
    }

    async fn flush_locked(&self) -> io::Result<()> {
        loop {
            let out = {
                let mut conn = self.conn.borrow_mut();
                if !conn.wants_write() {
                    return Ok(());
                }
                let mut out = Vec::new();
                conn.write_tls(&mut out)?;
                out
            };
            let mut w = &self.tcp;
            let BufResult(res, _) = w.write_all(out).await;
            res?;
        }
    }

    /// close_notify, then FIN: the client learns the stream ended on purpose.
    pub async fn finish(&self) -> io::Result<()> {
        {
            let _guard = self.write_lock.lock().await;
            self.conn.borrow_mut().send_close_notify();
            self.flush_locked().await?;
        }
        crate::forward::shut_write(&self.tcp)
    }
}

impl AsyncWrite for &TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let res = self.write_plain(buf.as_init()).await;
        BufResult(res.map(|()| buf.buf_len()), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        let _guard = self.write_lock.lock().await;
        self.flush_locked().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.finish().await
    }
}

//! The server handshake over the thread's runtime, one TLS record at a time.
//!
//! Why record by record: a client may send its first application records right behind its
//! `Finished`. Handed a larger read, rustls would decrypt them into its own buffer, and
//! extracting the secrets for kTLS afterwards would lose them (docs/kernel-facts.md: 6 of 36 kTLS
//! tests failed that way). Reading the 5-byte header, then exactly the body, stops at the
//! last handshake record, so whatever follows stays in the socket for the kernel or for the
//! userspace stream.

use std::sync::Arc;
use std::time::Duration;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::server::{ServerConfig, ServerConnection};

use super::TlsError;

/// Largest record body on the wire: 2^14 plaintext + 2048 (RFC 8446 §5.2, RFC 5246 §6.2.3).
pub const MAX_RECORD_BODY: usize = 16384 + 2048;
pub const HEADER: usize = 5;

/// Runs the handshake to its end (or failure, or `limit`).
pub async fn handshake(
    tcp: &TcpStream,
    config: Arc<ServerConfig>,
    limit: Duration,
) -> Result<ServerConnection, TlsError> {
    let conn = ServerConnection::new(config)?;
    match compio::time::timeout(limit, drive(tcp, conn)).await {
        Ok(r) => r,
        Err(_) => Err(TlsError::HandshakeTimeout),
    }
}

async fn drive(tcp: &TcpStream, mut conn: ServerConnection) -> Result<ServerConnection, TlsError> {
    let mut record = Vec::with_capacity(HEADER + MAX_RECORD_BODY);
    loop {
        flush(tcp, &mut conn).await?;
        if !conn.is_handshaking() {
            return Ok(conn);
        }
        record = read_record(tcp, record).await?;
        let mut rest = &record[..];
        while !rest.is_empty() {
            conn.read_tls(&mut rest)?;
            if let Err(e) = conn.process_new_packets() {
                // rustls queued an alert that tells the client why; send it, best effort.
                let _ = flush(tcp, &mut conn).await;
                return Err(TlsError::Handshake(e));
            }
        }
    }
}

/// Reads exactly one record (header and body) into `buf`.
pub async fn read_record(tcp: &TcpStream, mut buf: Vec<u8>) -> Result<Vec<u8>, TlsError> {
    let mut r = tcp;
    buf.clear();
    buf.reserve(HEADER);
    let BufResult(res, b) = r.read_exact(buf.slice(0..HEADER)).await;
    buf = b.into_inner();
    eof_is_closed(res)?;
    let len = body_len(&buf)?;
    buf.reserve(len);
    let BufResult(res, b) = r.read_exact(buf.slice(HEADER..HEADER + len)).await;
    eof_is_closed(res)?;
    Ok(b.into_inner())
}

fn eof_is_closed(res: std::io::Result<()>) -> Result<(), TlsError> {
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TlsError::HandshakeEof),
        Err(e) => Err(TlsError::Io(e)),
    }
}

/// The body length a record header announces, after checking that it is a TLS header at all
/// (a plain-text client on a TLS port is told apart from a TLS one here).
pub fn body_len(header: &[u8]) -> Result<usize, TlsError> {
    let &[kind, major, _minor, hi, lo] = header else {
        return Err(TlsError::BadRecord("short header"));
    };
    if !(20..=24).contains(&kind) || major != 3 {
        return Err(TlsError::BadRecord(
            "not a TLS record (plain text on a TLS port?)",
        ));
    }
    let len = usize::from(hi) << 8 | usize::from(lo);
    if len > MAX_RECORD_BODY {
        return Err(TlsError::BadRecord("record longer than TLS allows"));
    }
    Ok(len)
}

/// Sends everything rustls has queued for the peer.
pub async fn flush(tcp: &TcpStream, conn: &mut ServerConnection) -> Result<(), TlsError> {
    let mut w = tcp;
    while conn.wants_write() {
        let mut out = Vec::new();
        conn.write_tls(&mut out)?;
        let BufResult(res, _) = w.write_all(out).await;
        res?;
    }
    Ok(())
}

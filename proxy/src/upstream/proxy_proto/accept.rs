//! Reading the PROXY header an `accept-proxy` bind expects, off the accepted socket.
//!
//! Exactly the header's bytes are taken off the socket, never one more: the bytes are first
//! peeked (MSG_PEEK), the header's end found in them, and only then that many read, as
//! HAProxy does. What follows stays in the kernel for whoever reads next — the TLS
//! handshake, the HTTP parser, or a forwarding engine (splice and sockmap take a flow's
//! bytes from the kernel, so nothing may be left behind in a userspace buffer).

use std::time::Duration;

use compio::buf::{BufResult, IoBuf};
use compio::io::AsyncReadExt;
use compio::net::TcpStream;

use super::parse::{parse, Header, Parsed, V1_MAX};
use super::{Origin, ProxyHeaderError as E};

/// How long a header may take when the frontend has no `timeout client` (HAProxy bounds it
/// by `timeout client`): the same bound as a TLS handshake's, so a silent client cannot
/// hold a connection slot for ever.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The connection's origin as its header says (`real` for `UNKNOWN`/`LOCAL`), read within
/// `limit`. An error leaves the connection for the caller to close.
pub async fn accept(stream: &TcpStream, real: Origin, limit: Duration) -> Result<Origin, E> {
    let header = compio::time::timeout(limit, read_header(stream))
        .await
        .map_err(|_| E::Timeout)??;
    Ok(header.addrs.map_or(real, |(src, dst)| Origin { src, dst }))
}

/// Peeks, parses what is there, and consumes: the whole header once it is complete, or
/// every peeked byte while it is not (all of them belong to the header then, so the next
/// peek waits for new bytes instead of returning the same ones again).
async fn read_header(stream: &TcpStream) -> Result<Header, E> {
    let mut taken: Vec<u8> = Vec::new();
    let mut want = V1_MAX;
    loop {
        let room = want.saturating_sub(taken.len()).max(1);
        let BufResult(peeked, buf) = stream.peek(Vec::with_capacity(room)).await;
        match peeked.map_err(E::Io)? {
            0 if taken.is_empty() => return Err(E::Closed),
            0 => return Err(E::Truncated),
            _ => {}
        }
        let mut seen = taken.clone();
        seen.extend_from_slice(&buf);
        match parse(&seen)? {
            Parsed::Done(header) => {
                consume(stream, header.len.saturating_sub(taken.len())).await?;
                return Ok(header);
            }
            Parsed::Incomplete { want: more } => {
                consume(stream, buf.len()).await?;
                taken = seen;
                want = more;
            }
        }
    }
}

/// Reads `n` bytes that a peek already showed, so they are there to be read.
async fn consume(stream: &TcpStream, n: usize) -> Result<(), E> {
    let mut reader = stream;
    let BufResult(res, _) = reader.read_exact(Vec::with_capacity(n).slice(..n)).await;
    res.map_err(E::Io)
}

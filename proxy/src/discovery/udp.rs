//! One exchange over UDP: the query from a fresh socket (so a fresh source port), then the
//! first packet that is the reply to it. A packet from another address, with another id or
//! question, or malformed is dropped (and told) and the wait goes on; the caller bounds the
//! wait (`timeout retry`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use compio::buf::BufResult;
use compio::net::UdpSocket;

use super::answer::{self, Answer};
use super::client::{Notice, Question, Told};
use super::error::DnsError;

/// `Err` when `ns` cannot be reached (then another may still answer); `Ok` with the outcome
/// of its reply, where `Err(DnsError::Truncated)` means the reply did not fit in `limit`
/// bytes (TC): the caller asks again over TCP.
pub async fn exchange(
    ns: SocketAddr,
    query: Vec<u8>,
    q: Question<'_>,
    limit: u16,
    told: Told<'_>,
) -> Result<Result<Answer, DnsError>, DnsError> {
    let io = |e: std::io::Error| DnsError::Io(format!("{ns}: {e}"));
    let local = match ns {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    // Connected: the kernel already drops datagrams from other addresses; the source is
    // still compared below.
    socket.connect(ns).await.map_err(io)?;
    let BufResult(sent, _) = socket.send(query).await;
    sent.map_err(io)?;
    let mut buf = Vec::with_capacity(usize::from(limit));
    loop {
        buf.clear();
        let BufResult(got, back) = socket.recv_from(buf).await;
        buf = back;
        let (n, from) = got.map_err(io)?;
        let bytes = buf.get(..n).unwrap_or_default();
        if from != ns {
            told(from, Notice::Dropped(&DnsError::Mismatch("another source")));
            continue;
        }
        if let Err(e) = answer::matches(bytes, q.id, q.name, q.kind) {
            told(ns, Notice::Dropped(&e));
            continue;
        }
        match answer::parse_answer(bytes) {
            Err(DnsError::Truncated) => return Ok(Err(DnsError::Truncated)),
            Err(e) if e.is_dropped_packet() => told(ns, Notice::Dropped(&e)),
            outcome => return Ok(outcome),
        }
    }
}

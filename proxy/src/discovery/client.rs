//! One resolution over UDP: the query goes to every nameserver of the section at once, the
//! first real answer wins. Bounded everywhere: `timeout retry` per round, `resolve_retries`
//! rounds, answers read into a buffer of `accepted_payload_size` bytes, a fresh socket (so
//! a fresh source port) and a random id per round. A packet from another address, with
//! another id or question, malformed or truncated is dropped (and reported to `dropped`)
//! and the wait goes on.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use compio::buf::BufResult;
use compio::net::UdpSocket;
use futures_util::future::{select_ok, FutureExt, LocalBoxFuture};
use hickory_proto::rr::{Name, RecordType};

use super::answer::{self, Answer};
use super::error::DnsError;
use super::query;
use crate::config::Resolvers;

pub struct Client {
    nameservers: Vec<SocketAddr>,
    retry: Duration,
    retries: u32,
    payload: u16,
}

/// Told about each packet thrown away: the nameserver and why.
pub type Dropped<'a> = &'a dyn Fn(SocketAddr, &DnsError);

impl Client {
    pub fn new(r: &Resolvers) -> Client {
        Client {
            nameservers: r.nameservers.iter().map(|n| n.addr).collect(),
            retry: r.retry,
            retries: r.retries.max(1),
            payload: r.payload_size,
        }
    }

    /// The answer to `name`/`kind`: its records, or NXDOMAIN, REFUSED, another error code,
    /// or [`DnsError::Timeout`] when no nameserver answered in any round.
    pub async fn ask(
        &self,
        name: &Name,
        kind: RecordType,
        dropped: Dropped<'_>,
    ) -> Result<Answer, DnsError> {
        for _ in 0..self.retries {
            let id: u16 = rand::random();
            let bytes = query::build(id, name, kind, self.payload)?;
            let asks: Vec<LocalBoxFuture<'_, Result<Result<Answer, DnsError>, DnsError>>> = self
                .nameservers
                .iter()
                .map(|&ns| {
                    let q = Question { id, name, kind };
                    exchange(ns, bytes.clone(), q, self.payload, dropped).boxed_local()
                })
                .collect();
            if let Ok(Ok((result, _))) = compio::time::timeout(self.retry, select_ok(asks)).await {
                return result;
            }
        }
        Err(DnsError::Timeout)
    }
}

#[derive(Clone, Copy)]
struct Question<'n> {
    id: u16,
    name: &'n Name,
    kind: RecordType,
}

/// One nameserver: `Err` when it cannot be reached (then another may still answer); `Ok`
/// with the outcome of the first packet that is the reply to `q`.
async fn exchange(
    ns: SocketAddr,
    query: Vec<u8>,
    q: Question<'_>,
    limit: u16,
    dropped: Dropped<'_>,
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
            dropped(from, &DnsError::Mismatch("another source"));
            continue;
        }
        if let Err(e) = answer::matches(bytes, q.id, q.name, q.kind) {
            dropped(ns, &e);
            continue;
        }
        match answer::parse_answer(bytes) {
            Err(e) if e.is_dropped_packet() => dropped(ns, &e),
            outcome => return Ok(outcome),
        }
    }
}

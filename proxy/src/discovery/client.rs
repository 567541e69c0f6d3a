//! One resolution: the query goes to every nameserver of the section at once, the first real
//! answer wins. Each nameserver is asked as its line says: over UDP (the default), where a
//! truncated answer (TC) is asked again over TCP at once, to the same nameserver with the
//! same query (RFC 7766 §5), or over TCP (`tcp@`). Bounded everywhere: `timeout retry` for
//! the UDP wait and again for the TCP exchange, `resolve_retries` rounds, a random id and
//! fresh sockets per round.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::{select_ok, FutureExt, LocalBoxFuture};
use hickory_proto::rr::{Name, RecordType};

use super::answer::Answer;
use super::error::DnsError;
use super::{query, tcp, udp};
use crate::config::{DnsTransport, Nameserver, Resolvers};

pub struct Client {
    nameservers: Vec<Nameserver>,
    retry: Duration,
    retries: u32,
    payload: u16,
}

/// What a resolution tells besides its outcome, with the nameserver concerned.
#[derive(Debug)]
pub enum Notice<'e> {
    /// A packet read and thrown away, and why: it changes nothing.
    Dropped(&'e DnsError),
    /// A truncated UDP answer, and asking again over TCP failed: it changes nothing.
    TcpFailed(&'e DnsError),
    /// A truncated UDP answer, replaced by the one read over TCP.
    OverTcp,
}

/// Told each [`Notice`]: the nameserver (or the packet's source) and what happened.
pub type Told<'a> = &'a dyn Fn(SocketAddr, Notice<'_>);

/// The question a reply must match.
#[derive(Clone, Copy)]
pub struct Question<'n> {
    pub id: u16,
    pub name: &'n Name,
    pub kind: RecordType,
}

/// One nameserver's exchange: `Err` when it gave nothing usable (another may still answer),
/// `Ok` with the outcome of its answer.
type Exchange = Result<Result<Answer, DnsError>, DnsError>;

impl Client {
    pub fn new(r: &Resolvers) -> Client {
        Client {
            nameservers: r.nameservers.clone(),
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
        told: Told<'_>,
    ) -> Result<Answer, DnsError> {
        for _ in 0..self.retries {
            let id: u16 = rand::random();
            let bytes = query::build(id, name, kind, self.payload)?;
            let q = Question { id, name, kind };
            let asks: Vec<LocalBoxFuture<'_, Exchange>> = self
                .nameservers
                .iter()
                .map(|ns| self.exchange(ns, &bytes, q, told).boxed_local())
                .collect();
            // Every exchange is bounded, so the round is.
            let first = select_ok(asks).await;
            if let Ok((result, _)) = first {
                return result;
            }
        }
        Err(DnsError::Timeout)
    }

    async fn exchange(
        &self,
        ns: &Nameserver,
        query: &[u8],
        q: Question<'_>,
        told: Told<'_>,
    ) -> Exchange {
        match ns.transport {
            DnsTransport::Tcp => {
                let got = tcp::exchange(ns.addr, query, q, self.retry).await;
                if let Err(e) = &got {
                    if e.is_dropped_packet() {
                        told(ns.addr, Notice::Dropped(e));
                    }
                }
                got
            }
            DnsTransport::Udp => {
                let udp = udp::exchange(ns.addr, query.to_vec(), q, self.payload, told);
                match compio::time::timeout(self.retry, udp).await {
                    Err(_) => Err(DnsError::Timeout),
                    Ok(Ok(Err(DnsError::Truncated))) => {
                        self.over_tcp(ns.addr, query, q, told).await
                    }
                    Ok(got) => got,
                }
            }
        }
    }

    /// The UDP answer was truncated: the same query over TCP, with a `timeout retry` of its
    /// own (it is a new connection, after the UDP wait). When that fails the truncated
    /// answer changes nothing, as a dropped packet.
    async fn over_tcp(
        &self,
        ns: SocketAddr,
        query: &[u8],
        q: Question<'_>,
        told: Told<'_>,
    ) -> Exchange {
        match tcp::exchange(ns, query, q, self.retry).await {
            Ok(outcome) => {
                told(ns, Notice::OverTcp);
                Ok(outcome)
            }
            Err(e) => {
                told(ns, Notice::TcpFailed(&e));
                Err(e)
            }
        }
    }
}

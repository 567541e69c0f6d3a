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
        // The config refuses a section without nameservers; `select_ok` would panic on none.
        if self.nameservers.is_empty() {
            return Err(DnsError::Io("no nameserver".into()));
        }
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

#[cfg(test)]
mod tests {
    use super::super::fake::{self, name};
    use super::*;
    use crate::config::Loc;
    use std::cell::RefCell;

    fn resolvers(ns: SocketAddr, transport: DnsTransport) -> Resolvers {
        let mut r = Resolvers::new("dns", Loc::default());
        r.nameservers.push(Nameserver {
            name: "a".into(),
            addr: ns,
            transport,
        });
        r.retry = Duration::from_millis(300);
        r.retries = 2;
        r
    }

    /// Asks `many.test` A and returns the outcome and what was told.
    fn ask(r: &Resolvers) -> (Result<Answer, DnsError>, Vec<String>) {
        let client = Client::new(r);
        let notices = RefCell::new(Vec::new());
        let told = |_: SocketAddr, n: Notice<'_>| notices.borrow_mut().push(format!("{n:?}"));
        let rt = compio::runtime::Runtime::new().expect("runtime");
        let got = rt.block_on(client.ask(&name(), RecordType::A, &told));
        (got, notices.into_inner())
    }

    #[test]
    fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        let (udp, tcp) = fake::both_on_one_port();
        let ns = udp.local_addr().expect("addr");
        fake::serve_udp(udp, |q| fake::truncated(q, 30));
        fake::serve_tcp(tcp, |q, s| fake::send_framed(s, &fake::reply(&q, 50)));
        let (got, told) = ask(&resolvers(ns, DnsTransport::Udp));
        assert_eq!(got.expect("the TCP answer").addrs.len(), 50);
        assert_eq!(told, ["OverTcp"]);
    }

    #[test]
    fn a_failed_tcp_retry_leaves_the_truncated_answer_unused() {
        let (udp, tcp) = fake::both_on_one_port();
        let ns = udp.local_addr().expect("addr");
        drop(tcp);
        fake::serve_udp(udp, |q| fake::truncated(q, 30));
        let (got, told) = ask(&resolvers(ns, DnsTransport::Udp));
        assert_eq!(got, Err(DnsError::Timeout));
        assert_eq!(told.len(), 2, "one per round: {told:?}");
        assert!(
            told.iter().all(|t| t.starts_with("TcpFailed(Io(")),
            "{told:?}"
        );
    }

    #[test]
    fn a_tcp_nameserver_is_asked_over_tcp_only() {
        let ns = fake::tcp_server(|q, s| fake::send_framed(s, &fake::reply(&q, 50)));
        let (got, told) = ask(&resolvers(ns, DnsTransport::Tcp));
        assert_eq!(got.expect("the TCP answer").addrs.len(), 50);
        assert!(told.is_empty(), "{told:?}");
    }
}

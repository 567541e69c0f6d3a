//! From a name to the records that fill its slots: A/AAAA in the preferred family first,
//! or SRV records with their targets' addresses (from the additional section, else asked).

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{Name, RecordType};

use super::answer::{self, Answer};
use super::client::{Client, Told};
use super::error::DnsError;
use super::slots::Found;
use crate::config::IpFamily;

/// The most SRV records followed in one answer (each may cost a query for its target).
const MAX_SRV: usize = 64;

/// What one resolution found, and the smallest TTL among it.
pub struct Resolved {
    pub found: Vec<Found>,
    pub ttl: Option<u32>,
}

/// A/AAAA: the preferred family's records, else the other's; each with `port`.
pub async fn addresses(
    client: &Client,
    name: &Name,
    port: u16,
    prefer: IpFamily,
    told: Told<'_>,
) -> Result<Resolved, DnsError> {
    for kind in kinds(prefer) {
        let answer = client.ask(name, kind, told).await?;
        let addrs = answer::addrs_of(&answer, kind);
        if !addrs.is_empty() {
            return Ok(Resolved {
                ttl: addrs.iter().map(|(_, t)| *t).min(),
                found: addrs
                    .into_iter()
                    .map(|(ip, _)| Found {
                        addr: SocketAddr::new(ip, port),
                        weight: None,
                    })
                    .collect(),
            });
        }
    }
    Ok(Resolved {
        found: Vec::new(),
        ttl: None,
    })
}

/// SRV: one record per target, its port and its weight (HAProxy's `weight / 256 + 1`, so
/// that weight 0 still takes traffic); the target's address from the additional section,
/// else from its own query. A target that does not resolve is left out of this round.
pub async fn services(
    client: &Client,
    name: &Name,
    prefer: IpFamily,
    told: Told<'_>,
) -> Result<Resolved, DnsError> {
    let answer = client.ask(name, RecordType::SRV, told).await?;
    let mut found = Vec::new();
    let mut ttl = answer.min_ttl();
    for srv in answer.srvs.iter().take(MAX_SRV) {
        let ip = match extra_addr(&answer, &srv.target, prefer) {
            Some(ip) => Some(ip),
            None => {
                let r = addresses(client, &srv.target, srv.port, prefer, told).await;
                match r {
                    Ok(r) => {
                        ttl = min_opt(ttl, r.ttl);
                        r.found.first().map(|f| f.addr.ip())
                    }
                    Err(e) => {
                        log::warn!("DNS: SRV target {} of {name}: {e}", srv.target);
                        None
                    }
                }
            }
        };
        if let Some(ip) = ip {
            found.push(Found {
                addr: SocketAddr::new(ip, srv.port),
                weight: Some(u32::from(srv.weight) / 256 + 1),
            });
        }
    }
    Ok(Resolved { found, ttl })
}

/// The target's address among the additional records, preferred family first.
fn extra_addr(answer: &Answer, target: &Name, prefer: IpFamily) -> Option<IpAddr> {
    let of = |v4: bool| {
        answer
            .extra
            .iter()
            .find(|(n, ip, _)| n.eq_ignore_root(target) && ip.is_ipv4() == v4)
            .map(|(_, ip, _)| *ip)
    };
    let v4_first = prefer == IpFamily::V4;
    of(v4_first).or_else(|| of(!v4_first))
}

fn kinds(prefer: IpFamily) -> [RecordType; 2] {
    match prefer {
        IpFamily::V4 => [RecordType::A, RecordType::AAAA],
        IpFamily::V6 => [RecordType::AAAA, RecordType::A],
    }
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

//! A backend's servers and the algorithm that picks among them. No I/O here: `health`
//! writes server state, workers read it, both through atomics, so picking a server never
//! takes a lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Queue, Server};
use crate::config::{self, Balance};

/// The servers of one backend and the algorithm that picks among them.
#[derive(Debug)]
pub struct ServerSet {
    pub backend: String,
    pub algorithm: Balance,
    pub servers: Vec<Arc<Server>>,
    /// Round-robin position; wraps freely, only its value modulo the eligible weight matters.
    cursor: AtomicUsize,
    /// Backend-wide figures for the stats page and the exporter.
    pub stats: crate::counters::BackendStats,
    /// Sessions waiting for a slot while every usable server is at its `maxconn`.
    pub queue: Arc<Queue>,
}

/// What the caller knows about the connection being placed.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    pub client_ip: IpAddr,
    /// Servers already tried for this connection (`option redispatch` moves away from them).
    pub avoid: &'a [usize],
}

impl ServerSet {
    pub fn from_config(proxy: &config::Proxy) -> ServerSet {
        // HAProxy waits `timeout connect` in the queue when `timeout queue` is not set.
        let t = &proxy.timeouts;
        let queue = Arc::new(Queue::new(t.queue.or(t.connect)));
        ServerSet {
            backend: proxy.name.clone(),
            algorithm: proxy.balance,
            servers: proxy
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| Arc::new(Server::in_backend(i, s, queue.clone())))
                .collect(),
            cursor: AtomicUsize::new(0),
            stats: crate::counters::BackendStats::default(),
            queue,
        }
    }

    /// Picks the server for a new connection, or `None` when no server is UP. When every UP
    /// server is at its `maxconn` the algorithm's pick among them is returned, full: the
    /// caller then waits in the queue ([`Server::is_full`]).
    pub fn pick_server(&self, ctx: PickContext<'_>) -> Option<Arc<Server>> {
        self.pick_free(ctx).or_else(|| self.pick(ctx, true))
    }

    /// Picks among the servers with a free slot only.
    pub fn pick_free(&self, ctx: PickContext<'_>) -> Option<Arc<Server>> {
        self.pick(ctx, false)
    }

    /// Active servers are used while any is usable; backups only when none is.
    fn pick(&self, ctx: PickContext<'_>, full_too: bool) -> Option<Arc<Server>> {
        let eligible = self.eligible(ctx.avoid, false, full_too);
        let eligible = if eligible.is_empty() {
            self.eligible(ctx.avoid, true, full_too)
        } else {
            eligible
        };
        let index = match self.algorithm {
            Balance::RoundRobin => self.pick_roundrobin(&eligible),
            Balance::LeastConn => self.pick_leastconn(&eligible),
            Balance::Source => pick_source(&eligible, ctx.client_ip),
            Balance::First => eligible.first().copied(),
        }?;
        Some(self.servers[index].clone())
    }

    /// Usable servers of one tier (active or backup), as indexes into `servers`; with
    /// `full_too`, also those whose every slot is taken.
    fn eligible(&self, avoid: &[usize], backup: bool, full_too: bool) -> Vec<usize> {
        self.servers
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                s.backup == backup
                    && s.is_up_and_weighted()
                    && (full_too || !s.is_full())
                    && !avoid.contains(i)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Weighted round robin: position `cursor mod total_weight` walks the cumulative weights.
    fn pick_roundrobin(&self, eligible: &[usize]) -> Option<usize> {
        let total: usize = eligible
            .iter()
            .map(|&i| self.servers[i].weight as usize)
            .sum();
        if total == 0 {
            return None;
        }
        let mut slot = self.cursor.fetch_add(1, Ordering::Relaxed) % total;
        for &i in eligible {
            let weight = self.servers[i].weight as usize;
            if slot < weight {
                return Some(i);
            }
            slot -= weight;
        }
        None
    }

    /// Fewest current connections per unit of weight; ties go round robin so equal
    /// servers share new connections instead of the first one taking them all.
    fn pick_leastconn(&self, eligible: &[usize]) -> Option<usize> {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let n = eligible.len();
        (0..n)
            .map(|k| eligible[start.wrapping_add(k) % n])
            .min_by_key(|&i| {
                let s = &self.servers[i];
                // Cross-multiplied comparison key: conns/weight scaled to avoid floats.
                (s.current() as u64 * 256) / s.weight.max(1) as u64
            })
    }
}

/// Map-based source hashing, as HAProxy's default `hash-type map-based`: the same client
/// address lands on the same server while the eligible set is unchanged.
fn pick_source(eligible: &[usize], ip: IpAddr) -> Option<usize> {
    if eligible.is_empty() {
        return None;
    }
    let hash = match ip {
        IpAddr::V4(v4) => fnv1a(&v4.octets()),
        IpAddr::V6(v6) => fnv1a(&v6.octets()),
    };
    Some(eligible[(hash % eligible.len() as u64) as usize])
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

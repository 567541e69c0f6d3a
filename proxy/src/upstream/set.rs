//! A backend's servers and the algorithm that picks among them. No I/O here: `health`
//! writes server state, workers read it, both through atomics, so picking a server never
//! takes a lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::hash::{self, Ring};
use super::{Queue, Server};
use crate::config::{self, Balance, BalanceArgs, HashType};

/// The servers of one backend and the algorithm that picks among them.
#[derive(Debug)]
pub struct ServerSet {
    pub backend: String,
    pub algorithm: Balance,
    /// What `uri`, `url_param` and `hdr(…)` hash, and how (`hash-type`).
    args: BalanceArgs,
    hash_type: HashType,
    /// `hash-type consistent`: one ring for the active servers, one for the backups.
    rings: Option<(Ring, Ring)>,
    pub servers: Vec<Arc<Server>>,
    /// Round-robin position; wraps freely, only its value modulo the eligible weight matters.
    cursor: AtomicUsize,
    /// Backend-wide figures for the stats page and the exporter.
    pub stats: crate::counters::BackendStats,
    /// Sessions waiting for a slot while every usable server is at its `maxconn`.
    pub queue: Arc<Queue>,
}

/// What the caller knows about the connection being placed.
#[derive(Clone, Copy)]
pub struct PickContext<'a> {
    pub client_ip: IpAddr,
    /// Servers already tried for this connection (`option redispatch` moves away from them).
    pub avoid: &'a [usize],
    /// The HTTP request, for `balance uri|url_param|hdr(…)`; `None` in mode tcp.
    pub request: Option<&'a dyn RequestKey>,
}

impl<'a> PickContext<'a> {
    pub fn new(client_ip: IpAddr, avoid: &'a [usize]) -> PickContext<'a> {
        PickContext {
            client_ip,
            avoid,
            request: None,
        }
    }
}

/// What the hashing algorithms read of an HTTP request (the HTTP room implements it).
pub trait RequestKey {
    /// The path and query as sent.
    fn target(&self) -> &str;
    /// The value of query parameter `name`, if present.
    fn query_param(&self, name: &str) -> Option<&[u8]>;
    /// The value of header `name`, if present.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl ServerSet {
    pub fn from_config(proxy: &config::Proxy) -> ServerSet {
        // HAProxy waits `timeout connect` in the queue when `timeout queue` is not set.
        let t = &proxy.timeouts;
        let queue = Arc::new(Queue::new(t.queue.or(t.connect)));
        let servers: Vec<Arc<Server>> = proxy
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Arc::new(Server::in_backend(i, s, queue.clone())))
            .collect();
        let hashing = matches!(proxy.balance, Balance::Source) || proxy.balance.reads_requests();
        let rings = (hashing && proxy.hash_type.consistent).then(|| {
            let tier = |backup: bool| {
                Ring::new(
                    servers
                        .iter()
                        .filter(move |s| s.backup == backup)
                        .map(|s| (s.index, s.name.as_str(), s.weight)),
                )
            };
            (tier(false), tier(true))
        });
        ServerSet {
            backend: proxy.name.clone(),
            algorithm: proxy.balance,
            args: proxy.balance_args.clone(),
            hash_type: proxy.hash_type,
            rings,
            servers,
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
            Balance::First => eligible.first().copied(),
            Balance::Random => self.pick_weighted(&eligible, rand::random::<u32>()),
            Balance::Source => {
                let ip = match ctx.client_ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                self.pick_hashed(&eligible, &ip)
            }
            // No key (a missing parameter or header, or no request): round robin, as HAProxy.
            _ => match ctx.request.and_then(|r| self.request_key(r)) {
                Some(key) => self.pick_hashed(&eligible, key),
                None => self.pick_roundrobin(&eligible),
            },
        }?;
        Some(self.servers[index].clone())
    }

    /// Usable servers of one tier (active or backup), as indexes into `servers`; with
    /// `full_too`, also those whose every slot is taken.
    /// Inline up to 16 servers: picking runs once per request, and a heap list per pick
    /// showed in the per-request allocations (issue #14).
    fn eligible(
        &self,
        avoid: &[usize],
        backup: bool,
        full_too: bool,
    ) -> smallvec::SmallVec<[usize; 16]> {
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

impl ServerSet {
    /// The bytes `uri`, `url_param` or `hdr(…)` hash for `req`; `None` when it has none.
    fn request_key<'r>(&self, req: &'r dyn RequestKey) -> Option<&'r [u8]> {
        let name = self.args.name.as_deref().unwrap_or("");
        match self.algorithm {
            Balance::Uri => Some(uri_key(req.target(), &self.args)),
            Balance::UrlParam => req.query_param(name),
            Balance::Hdr => req.header(name),
            _ => None,
        }
    }

    /// `key` hashed to a server: on the tier's ring (`consistent`), else the hash modulo
    /// the eligible servers' total weight (`map-based`). Either way the same key finds the
    /// same server while the eligible set is unchanged.
    fn pick_hashed(&self, eligible: &[usize], key: &[u8]) -> Option<usize> {
        let h = hash::hash(self.hash_type, key);
        match &self.rings {
            Some((active, backup)) => {
                let on_backups = eligible.first().is_some_and(|&i| self.servers[i].backup);
                let ring = if on_backups { backup } else { active };
                ring.pick(h, |i| eligible.contains(&i))
            }
            None => self.pick_weighted(eligible, h),
        }
    }

    /// The server at position `at` modulo the eligible servers' total weight.
    fn pick_weighted(&self, eligible: &[usize], at: u32) -> Option<usize> {
        let total: u64 = eligible
            .iter()
            .map(|&i| u64::from(self.servers[i].weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut slot = u64::from(at) % total;
        for &i in eligible {
            let weight = u64::from(self.servers[i].weight);
            if slot < weight {
                return Some(i);
            }
            slot -= weight;
        }
        None
    }
}

/// `balance uri [whole] [depth N] [len N]`: the path (with the query for `whole`), cut after
/// `depth` directories and at `len` bytes.
fn uri_key<'t>(target: &'t str, args: &BalanceArgs) -> &'t [u8] {
    let mut key = if args.whole {
        target
    } else {
        target.split_once('?').map_or(target, |(path, _)| path)
    }
    .as_bytes();
    if let Some(depth) = args.depth {
        let mut slashes = key.iter().enumerate().filter(|(_, b)| **b == b'/');
        if let Some((at, _)) = slashes.nth(depth as usize) {
            key = &key[..at];
        }
    }
    if let Some(len) = args.len {
        key = &key[..key.len().min(len as usize)];
    }
    key
}

//! A backend's servers and the algorithm that picks among them. No I/O here: `health`
//! writes server state, workers read it, both through atomics, so picking a server never
//! takes a lock.

use std::net::IpAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use super::hash::{self, Ring};
use super::{Queue, Server, ServerState};
use crate::config::{self, Balance, BalanceArgs, HashType};

/// The servers of one backend and the algorithm that picks among them.
#[derive(Debug)]
pub struct ServerSet {
    pub backend: String,
    pub algorithm: Balance,
    /// What `uri`, `url_param` and `hdr(…)` hash, and how (`hash-type`).
    args: BalanceArgs,
    hash_type: HashType,
    /// The servers and their rings, replaced as a whole when a server is added, removed
    /// or reweighted at run time, so a picker always sees one consistent list.
    members: ArcSwap<Members>,
    /// Serialises the control side's changes to `members` (runtime API, DNS); pickers never
    /// take it.
    changing: Mutex<()>,
    /// The id the next server added at run time gets.
    next_id: AtomicUsize,
    /// Round-robin position; wraps freely, only its value modulo the eligible weight matters.
    cursor: AtomicUsize,
    /// Backend-wide figures for the stats page and the exporter; carried over a reload.
    pub stats: Arc<crate::counters::BackendStats>,
    /// Sessions waiting for a slot while every usable server is at its `maxconn`.
    pub queue: Arc<Queue>,
}

/// One generation of a backend's servers.
#[derive(Debug)]
pub struct Members {
    pub servers: Vec<Arc<Server>>,
    /// `hash-type consistent`: one ring for the active servers, one for the backups.
    rings: Option<(Ring, Ring)>,
}

impl Deref for Members {
    type Target = [Arc<Server>];
    fn deref(&self) -> &[Arc<Server>] {
        &self.servers
    }
}

/// Why a change to a backend's servers was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("backend {backend} already has a server named {server}")]
    Exists { backend: String, server: String },
    #[error("no such server: {backend}/{server}")]
    NoSuchServer { backend: String, server: String },
    #[error("server {backend}/{server} still has {current} connection(s); put it in maintenance and wait for them to end")]
    Busy {
        backend: String,
        server: String,
        current: u32,
    },
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
        let next_id = servers.len();
        ServerSet::with_servers(proxy, servers, queue, next_id, Arc::default())
    }

    /// A reload's set: a server of `previous` with the same name, address (any, for one DNS
    /// follows) and settings is carried as the same `Arc` (its id, health state, counters,
    /// established flows, and a weight or state the runtime API set), and with it the
    /// backend's queue (its waiters were told by those servers) and figures. A server whose
    /// settings changed is new (with a fresh id, so that no session's list of servers tried
    /// names it by mistake) and keeps the previous health state. Servers added at run time
    /// and not in the config are dropped, as a restart would.
    pub fn from_config_keeping(proxy: &config::Proxy, previous: &ServerSet) -> ServerSet {
        let t = &proxy.timeouts;
        let timeout = t.queue.or(t.connect);
        let same_queue = previous.queue.timeout == timeout;
        let queue = if same_queue {
            previous.queue.clone()
        } else {
            Arc::new(Queue::new(timeout))
        };
        let before = previous.servers();
        let mut next_id = previous
            .next_id
            .load(Ordering::Relaxed)
            .max(proxy.servers.len());
        let servers: Vec<Arc<Server>> = proxy
            .servers
            .iter()
            .map(|s| {
                let old = before.iter().find(|p| p.name == s.name);
                match old {
                    // A server DNS follows keeps the address DNS gave it: the config's is
                    // only where it started.
                    Some(p)
                        if same_queue
                            && (p.addr() == s.addr || s.dns.is_some())
                            && p.params == s.params =>
                    {
                        p.clone()
                    }
                    _ => {
                        let fresh = Server::in_backend(next_id, s, queue.clone());
                        next_id += 1;
                        if let Some(p) = old.filter(|p| p.addr() == s.addr) {
                            if fresh.state() != ServerState::Maint && p.state() == ServerState::Down
                            {
                                fresh.set_state(ServerState::Down);
                            }
                        }
                        Arc::new(fresh)
                    }
                }
            })
            .collect();
        ServerSet::with_servers(proxy, servers, queue, next_id, previous.stats.clone())
    }

    fn with_servers(
        proxy: &config::Proxy,
        servers: Vec<Arc<Server>>,
        queue: Arc<Queue>,
        next_id: usize,
        stats: Arc<crate::counters::BackendStats>,
    ) -> ServerSet {
        let mut set = ServerSet {
            backend: proxy.name.clone(),
            algorithm: proxy.balance,
            args: proxy.balance_args.clone(),
            hash_type: proxy.hash_type,
            members: ArcSwap::from_pointee(Members {
                servers: Vec::new(),
                rings: None,
            }),
            changing: Mutex::new(()),
            next_id: AtomicUsize::new(next_id),
            cursor: AtomicUsize::new(0),
            stats,
            queue,
        };
        set.members = ArcSwap::from_pointee(set.members_of(servers));
        set
    }

    /// The servers now: a cheap snapshot (no lock) that stays valid while held.
    pub fn servers(&self) -> Guard<Arc<Members>> {
        self.members.load()
    }

    /// The server named `name`, if the backend has one now.
    pub fn server(&self, name: &str) -> Option<Arc<Server>> {
        self.servers().iter().find(|s| s.name == name).cloned()
    }

    /// `servers` with the rings the algorithm needs drawn for them.
    fn members_of(&self, servers: Vec<Arc<Server>>) -> Members {
        let hashing = matches!(self.algorithm, Balance::Source) || self.algorithm.reads_requests();
        let rings = (hashing && self.hash_type.consistent).then(|| {
            let tier = |backup: bool| {
                Ring::new(
                    servers
                        .iter()
                        .filter(move |s| s.backup == backup)
                        .map(|s| (s.index, s.name.as_str(), s.weight())),
                )
            };
            (tier(false), tier(true))
        });
        Members { servers, rings }
    }

    /// Replaces the members with `change(current servers)`, under the control-side lock.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Vec<Arc<Server>>) -> Result<T, MembershipError>,
    ) -> Result<T, MembershipError> {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut servers = self.servers().servers.clone();
        let out = change(&mut servers)?;
        self.members.store(Arc::new(self.members_of(servers)));
        Ok(out)
    }

    /// Adds a server built from `config` (its `default-server` settings already applied);
    /// it gets the next free id and takes traffic once UP: with `check`, it starts DOWN and
    /// comes UP after `rise` passed checks (HAProxy starts a dynamic server in maintenance).
    pub fn add(&self, config: &config::Server) -> Result<Arc<Server>, MembershipError> {
        self.change(|servers| {
            if servers.iter().any(|s| s.name == config.name) {
                return Err(MembershipError::Exists {
                    backend: self.backend.clone(),
                    server: config.name.clone(),
                });
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let server = Arc::new(Server::in_backend(id, config, self.queue.clone()));
            if config.params.check {
                server.set_state(super::ServerState::Down);
            }
            servers.push(server.clone());
            Ok(server)
        })
    }

    /// Removes a server that holds no connection (HAProxy's rule for `del server`: put it
    /// in maintenance and let its flows end first).
    pub fn remove(&self, name: &str) -> Result<Arc<Server>, MembershipError> {
        self.change(|servers| {
            let at = servers.iter().position(|s| s.name == name).ok_or_else(|| {
                MembershipError::NoSuchServer {
                    backend: self.backend.clone(),
                    server: name.to_string(),
                }
            })?;
            let current = servers[at].current();
            if current > 0 {
                return Err(MembershipError::Busy {
                    backend: self.backend.clone(),
                    server: name.to_string(),
                    current,
                });
            }
            let server = servers.remove(at);
            server.retire();
            Ok(server)
        })
    }

    /// `set server … weight N`: the weight, and the rings redrawn for it.
    pub fn set_weight(&self, server: &Server, weight: u32) {
        let _ = self.change(|_| {
            server.store_weight(weight);
            Ok(())
        });
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
        let m = self.servers();
        let eligible = eligible(&m, ctx.avoid, false, full_too);
        let eligible = if eligible.is_empty() {
            eligible_backups(&m, ctx.avoid, full_too)
        } else {
            eligible
        };
        let at = match self.algorithm {
            Balance::RoundRobin => self.pick_roundrobin(&m, &eligible),
            Balance::LeastConn => self.pick_leastconn(&m, &eligible),
            Balance::First => eligible.first().copied(),
            Balance::Random => pick_weighted(&m, &eligible, rand::random::<u32>()),
            Balance::Source => {
                let ip = match ctx.client_ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                self.pick_hashed(&m, &eligible, &ip)
            }
            // No key (a missing parameter or header, or no request): round robin, as HAProxy.
            _ => match ctx.request.and_then(|r| self.request_key(r)) {
                Some(key) => self.pick_hashed(&m, &eligible, key),
                None => self.pick_roundrobin(&m, &eligible),
            },
        }?;
        Some(m[at].clone())
    }

    /// Weighted round robin: position `cursor mod total_weight` walks the cumulative weights.
    fn pick_roundrobin(&self, m: &Members, eligible: &[usize]) -> Option<usize> {
        pick_weighted(
            m,
            eligible,
            self.cursor.fetch_add(1, Ordering::Relaxed) as u32,
        )
    }

    /// Fewest current connections per unit of weight; ties go round robin so equal
    /// servers share new connections instead of the first one taking them all.
    fn pick_leastconn(&self, m: &Members, eligible: &[usize]) -> Option<usize> {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let n = eligible.len();
        (0..n)
            .map(|k| eligible[start.wrapping_add(k) % n])
            .min_by_key(|&at| {
                let s = &m[at];
                // Cross-multiplied comparison key: conns/weight scaled to avoid floats.
                (s.current() as u64 * 256) / s.weight().max(1) as u64
            })
    }
}

impl ServerSet {
    /// The servers a new connection may go to now: the usable active ones (UP, weighted,
    /// below `maxconn`), else the usable backups. For an engine that places connections
    /// outside the proxy (the kernel's NAT) and needs the whole set at once.
    pub fn usable_now(&self) -> Vec<Arc<Server>> {
        let m = self.servers();
        let at = usable_positions(&m);
        at.iter().map(|&i| m[i].clone()).collect()
    }

    /// The server this backend's hashing (`hash-type`: its ring when consistent, else the
    /// hash modulo the total weight) gives each of `slots` slots among [`Self::usable_now`].
    /// Slot `i` stands for the clients the kernel hashed to it, so it is placed at
    /// `full_hash(i)` (evenly spread over the ring whatever the configured function, which
    /// the kernel's own hash of the client replaces). A slot table filled this way depends
    /// only on the configuration and the usable set, as the ring itself does.
    pub fn hashed_slots(&self, slots: u32) -> Vec<Option<Arc<Server>>> {
        let m = self.servers();
        let at = usable_positions(&m);
        (0..slots)
            .map(|i| {
                self.pick_at_hash(&m, &at, hash::full_hash(i))
                    .map(|p| m[p].clone())
            })
            .collect()
    }
}

fn usable_positions(m: &Members) -> Eligible {
    let active = eligible(m, &[], false, false);
    if active.is_empty() {
        eligible_backups(m, &[], false)
    } else {
        active
    }
}

/// Usable active servers, as positions in `m`; with `full_too`, also those whose every slot
/// is taken. `avoid` holds server ids ([`Server::index`]). Inline up to 16 servers: picking
/// runs once per request, and a heap list per pick showed in the per-request allocations
/// (issue #14).
fn eligible(m: &Members, avoid: &[usize], backup: bool, full_too: bool) -> Eligible {
    m.iter()
        .enumerate()
        .filter(|(_, s)| {
            s.backup == backup
                && s.is_up_and_weighted()
                && (full_too || !s.is_full())
                && !avoid.contains(&s.index)
        })
        .map(|(at, _)| at)
        .collect()
}

type Eligible = smallvec::SmallVec<[usize; 16]>;

fn eligible_backups(m: &Members, avoid: &[usize], full_too: bool) -> Eligible {
    eligible(m, avoid, true, full_too)
}

/// The eligible server at position `at` modulo their total weight.
fn pick_weighted(m: &Members, eligible: &[usize], at: u32) -> Option<usize> {
    let total: u64 = eligible.iter().map(|&i| u64::from(m[i].weight())).sum();
    if total == 0 {
        return None;
    }
    let mut slot = u64::from(at) % total;
    for &i in eligible {
        let weight = u64::from(m[i].weight());
        if slot < weight {
            return Some(i);
        }
        slot -= weight;
    }
    None
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
    fn pick_hashed(&self, m: &Members, eligible: &[usize], key: &[u8]) -> Option<usize> {
        self.pick_at_hash(m, eligible, hash::hash(self.hash_type, key))
    }

    /// The server for hash value `h`: the ring's, or `h` modulo the total weight.
    fn pick_at_hash(&self, m: &Members, eligible: &[usize], h: u32) -> Option<usize> {
        match &m.rings {
            Some((active, backup)) => {
                let on_backups = eligible.first().is_some_and(|&at| m[at].backup);
                let ring = if on_backups { backup } else { active };
                // The ring names server ids; the pick is a position in `m`.
                let position = |id: usize| eligible.iter().copied().find(|&at| m[at].index == id);
                ring.pick(h, |id| position(id).is_some()).and_then(position)
            }
            None => pick_weighted(m, eligible, h),
        }
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

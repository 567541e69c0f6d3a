//! The open listeners, keyed by (address, `v6only`), as the start and every reload leave them.
//! A reload keeps the socket of a key both plans have (never closed and reopened, so no
//! connection is refused during the swap) and stores the new plan's service, TLS and limits
//! into it; it binds the keys only the new plan has, and closes those only the old one had.
//! Binding comes first and alone ([`Listeners::prepare`]): one failure leaves everything as
//! it was.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::limit::ConnLimit;
use super::listen;
use super::worker::{Front, Inbox, Live, Shutdown, WorkerListener};
use super::RuntimeError;
use crate::plan::{Plan, PlannedBind};

/// A listener's identity across reloads: its address and its `v6only`/`v4v6` choice.
pub type Key = (SocketAddr, Option<bool>);

pub fn key(b: &PlannedBind) -> Key {
    (b.addr, b.v6only)
}

/// One open listener, as the control thread holds it. The workers hold one dup each; the
/// control thread's own dup is only for handing the socket to another process (`_getsocks`,
/// a binary upgrade) and is dropped at the stop ([`Listeners::release_sockets`]) and when a
/// reload closes the listener, so that the workers' accept loops ending closes the socket.
struct Open {
    /// The control thread's own dup, only for a binary upgrade to hand over (`upgrade/`);
    /// `None` where it could not be had (out of descriptors): that listener is then bound
    /// anew by the next process (SO_REUSEPORT) instead of passed.
    socket: Option<std::net::TcpListener>,
    live: Arc<ArcSwap<Live>>,
    closed: Arc<Shutdown>,
    bind_limit: Arc<ConnLimit>,
}

/// Which listeners a new plan keeps, adds and closes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub kept: Vec<Key>,
    pub added: Vec<Key>,
    pub removed: Vec<Key>,
}

/// The keys of `new` (in its order, each once) sorted into kept and added, and those of
/// `old` it lacks.
pub fn diff<'a>(old: impl IntoIterator<Item = &'a Key>, new: &[Key]) -> Diff {
    let old: Vec<Key> = old.into_iter().copied().collect();
    let mut d = Diff::default();
    for k in new {
        if d.kept.contains(k) || d.added.contains(k) {
            continue;
        }
        if old.contains(k) {
            d.kept.push(*k);
        } else {
            d.added.push(*k);
        }
    }
    d.removed = old.into_iter().filter(|k| !new.contains(k)).collect();
    d
}

/// Sockets a reload bound, not yet in use.
pub struct Prepared {
    diff: Diff,
    bound: HashMap<Key, std::net::TcpListener>,
}

#[derive(Default)]
pub struct Listeners {
    open: BTreeMap<Key, Open>,
    /// `maxconn` of each frontend, shared by its binds and carried over reloads by name, so
    /// the flows a frontend already holds count against its new limit.
    frontend_limits: HashMap<String, Arc<ConnLimit>>,
    /// Sockets the previous process handed over (`-x`), used instead of binding anew.
    inherited: HashMap<Key, std::net::TcpListener>,
}

impl Listeners {
    /// Listeners whose sockets came from the previous process (`-x`): the first plan uses
    /// them for its binds of the same key, so no connection is refused in between.
    pub fn inheriting(inherited: HashMap<Key, std::net::TcpListener>) -> Listeners {
        Listeners {
            inherited,
            ..Listeners::default()
        }
    }

    /// Dups of the open listeners' sockets, by key: what a binary upgrade hands over.
    pub fn sockets(&self) -> Vec<(Key, std::net::TcpListener)> {
        self.open
            .iter()
            .filter_map(|(k, o)| {
                let dup = o.socket.as_ref()?.try_clone();
                match dup {
                    Ok(s) => Some((*k, s)),
                    Err(e) => {
                        log::warn!("listener {}: cannot hand it over: {e}", k.0);
                        None
                    }
                }
            })
            .collect()
    }

    /// The stop: the control thread's dups close, so once the workers' accept loops have
    /// closed theirs the sockets are gone and new connections are refused (a new process that
    /// took them over (`-x`) holds its own copies and goes on accepting).
    pub fn release_sockets(&mut self) {
        for open in self.open.values_mut() {
            open.socket = None;
        }
    }

    /// The `mode tcp` frontend named `name` of the listeners now open, where an adopted flow
    /// resumes.
    pub fn tcp_frontend(&self, name: &str) -> Option<Arc<crate::tcp::Frontend>> {
        self.open
            .values()
            .find_map(|o| match &o.live.load().front.service {
                crate::plan::Service::Tcp(fe) if fe.name == name => Some(fe.clone()),
                _ => None,
            })
    }

    /// Binds every listener `plan` adds (or takes it from those inherited). Fails with the
    /// first bind that fails (its line), closing those bound before it.
    pub fn prepare(&mut self, plan: &Plan) -> Result<Prepared, RuntimeError> {
        let keys: Vec<Key> = plan.binds.iter().map(key).collect();
        let diff = diff(self.open.keys(), &keys);
        let mut bound = HashMap::new();
        for b in &plan.binds {
            if !diff.added.contains(&key(b)) || bound.contains_key(&key(b)) {
                continue;
            }
            if let Some(socket) = self.inherited.remove(&key(b)) {
                log::info!("listener {}: taken over from the previous process", b.addr);
                bound.insert(key(b), socket);
                continue;
            }
            let socket =
                listen::bind_reuseport(b.addr, b.v6only).map_err(|source| RuntimeError::Bind {
                    loc: b.loc.clone(),
                    addr: b.addr,
                    source,
                })?;
            bound.insert(key(b), socket);
        }
        Ok(Prepared { diff, bound })
    }

    /// Puts `plan` to work: kept listeners switch to its services and limits, added ones go
    /// to every worker's inbox, removed ones stop accepting and close. Flows already accepted
    /// keep what they started with.
    pub fn commit(&mut self, mut prepared: Prepared, plan: &Plan, inboxes: &[Arc<Inbox>]) -> Diff {
        self.frontend_limits
            .retain(|name, _| plan.binds.iter().any(|b| &b.frontend == name));
        let mut seen = std::collections::HashSet::new();
        for b in &plan.binds {
            let k = key(b);
            if !seen.insert(k) {
                continue;
            }
            let limit = self
                .frontend_limits
                .entry(b.frontend.clone())
                .or_insert_with(|| ConnLimit::new(b.maxconn))
                .clone();
            limit.set_max(b.maxconn);
            if let Some(open) = self.open.get(&k) {
                {
                    open.bind_limit.set_max(b.bind_maxconn);
                    let bound = open.live.load().front.bound;
                    open.live
                        .store(Arc::new(live(b, bound, limit, open.bind_limit.clone())));
                }
                continue;
            }
            let Some(socket) = prepared.bound.remove(&k) else {
                continue;
            };
            let bound = socket.local_addr().unwrap_or(b.addr);
            let bind_limit = ConnLimit::new(b.bind_maxconn);
            let open = Open {
                socket: socket.try_clone().ok(),
                live: Arc::new(ArcSwap::from_pointee(live(
                    b,
                    bound,
                    limit,
                    bind_limit.clone(),
                ))),
                closed: Arc::new(Shutdown::default()),
                bind_limit,
            };
            hand_out(socket, &open, inboxes);
            self.open.insert(k, open);
        }
        // Handed-over sockets the plan has no bind for are closed here (the previous process
        // closes its own copies as it stops).
        self.inherited.clear();
        for k in &prepared.diff.removed {
            if let Some(open) = self.open.remove(k) {
                // The workers' accept loops end and close their dups.
                open.closed.trigger();
            }
        }
        prepared.diff
    }

    /// The `maxconn` gate of frontend `name`.
    pub fn frontend_limit(&self, name: &str) -> Option<Arc<ConnLimit>> {
        self.frontend_limits.get(name).cloned()
    }
}

fn live(
    b: &PlannedBind,
    bound: SocketAddr,
    limit: Arc<ConnLimit>,
    bind_limit: Arc<ConnLimit>,
) -> Live {
    Live {
        front: Front {
            service: b.service.clone(),
            tls: b.tls.clone(),
            accept_proxy: b.accept_proxy,
            bound,
        },
        limit,
        bind_limit,
    }
}

/// Every worker gets a dup of the socket: with one shared accept queue a connection never
/// waits behind a worker at its `maxconn` (with one SO_REUSEPORT socket per worker the
/// kernel would hash it to a worker that cannot take it).
fn hand_out(socket: std::net::TcpListener, open: &Open, inboxes: &[Arc<Inbox>]) {
    let give = |inbox: &Inbox, socket| {
        inbox.send(WorkerListener {
            socket,
            live: open.live.clone(),
            closed: open.closed.clone(),
        })
    };
    let Some((last, others)) = inboxes.split_last() else {
        return;
    };
    for inbox in others {
        match socket.try_clone() {
            Ok(dup) => give(inbox, dup),
            Err(e) => log::error!(
                "listener {}: cannot hand it to a worker: {e}",
                open.live.load().front.bound
            ),
        }
    }
    give(last, socket);
}

/// Binds and starts the `udp-lb` sections (the `udp` room's own threads). They keep the
/// configuration they started with: a reload re-checks their servers (the carried servers
/// are the same objects) but does not rebind or retune them.
pub fn start_udp(plan: &Plan) -> Result<crate::udp::Engines, RuntimeError> {
    crate::udp::Engines::start(&plan.udp).map_err(|e| match e {
        crate::udp::UdpError::Bind { loc, addr, source } => {
            RuntimeError::Bind { loc, addr, source }
        }
        crate::udp::UdpError::Start { source, .. } => RuntimeError::Io(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str, v6only: Option<bool>) -> Key {
        (s.parse().expect("addr"), v6only)
    }

    #[test]
    fn kept_added_and_removed_by_address_and_v6only() {
        let old = [
            k("127.0.0.1:1935", None),
            k("127.0.0.1:80", None),
            k("[::]:443", Some(true)),
        ];
        let new = [
            k("127.0.0.1:80", None),
            k("127.0.0.1:8080", None),
            k("[::]:443", Some(false)),
            k("127.0.0.1:80", None),
        ];
        let d = diff(&old, &new);
        assert_eq!(d.kept, [k("127.0.0.1:80", None)]);
        assert_eq!(
            d.added,
            [k("127.0.0.1:8080", None), k("[::]:443", Some(false))],
            "a changed v6only is another socket"
        );
        assert_eq!(
            d.removed,
            [k("127.0.0.1:1935", None), k("[::]:443", Some(true))]
        );
    }

    #[test]
    fn the_same_plan_keeps_everything() {
        let keys = [k("127.0.0.1:1", None), k("127.0.0.1:2", None)];
        let d = diff(&keys, &keys);
        assert_eq!(d.kept, keys);
        assert!(d.added.is_empty() && d.removed.is_empty());
    }
}

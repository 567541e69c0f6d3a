//! One server's live state: written by the health checker and by sessions, read by pickers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use event_listener::{Event, EventListener};

use super::queue::Queue;
use crate::config;

/// What a picker sees: the health checks' verdict, unless an operator put the server in
/// maintenance ([`Admin::Maint`]), which hides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    Up = 0,
    Down = 1,
    /// `disabled` in the config, or `set server … state maint`: never picked.
    Maint = 2,
}

/// The operator's say over a server (HAProxy's administrative state), kept apart from the
/// health checks' verdict so that leaving maintenance finds the server as the checks, which
/// keep running, last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    Ready = 0,
    /// No new flow (persistence cookies still reach it, as in HAProxy); established ones
    /// continue.
    Drain = 1,
    Maint = 2,
}

impl Admin {
    fn from_u8(v: u8) -> Admin {
        match v {
            0 => Admin::Ready,
            1 => Admin::Drain,
            _ => Admin::Maint,
        }
    }
}

impl ServerState {
    fn from_u8(v: u8) -> ServerState {
        match v {
            0 => ServerState::Up,
            1 => ServerState::Down,
            _ => ServerState::Maint,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "UP",
            ServerState::Down => "DOWN",
            ServerState::Maint => "MAINT",
        }
    }
}

#[derive(Debug)]
pub struct Server {
    /// Its id in its backend: the position in the config, then the next free number for
    /// servers added at run time; never reused while the backend lives, so a session's list
    /// of servers tried stays right while servers come and go.
    pub index: usize,
    pub name: String,
    /// Where it is reached; `set server … addr` and DNS answers change it at run time, for
    /// connections made from then on.
    addr: ArcSwap<SocketAddr>,
    /// The weight in use: the config's, or `set server … weight`.
    weight: AtomicU32,
    pub backup: bool,
    pub maxconn: Option<u32>,
    pub params: config::ServerParams,
    /// The checks' verdict (`Up`/`Down`).
    health: AtomicU8,
    admin: AtomicU8,
    /// Removed from its backend (`del server`, a DNS record gone): its check loop ends.
    retired: AtomicBool,
    /// Unix milliseconds of the last state change, for logs and the stats page.
    changed_at_ms: AtomicU64,
    current: AtomicU32,
    total: AtomicU64,
    /// Traffic, check and UP/DOWN figures for the stats page and the exporter.
    pub stats: crate::counters::ServerStats,
    /// Its backend's queue, told when one of this server's `maxconn` slots frees and no
    /// session waits for this server in particular.
    queue: Arc<Queue>,
    /// Sessions pinned to this server (a persistence cookie) wait here, counted in its
    /// `qcur`; a freed slot goes to them first.
    freed: Event,
}

impl Server {
    /// A server alone, with a queue of its own (tests, tools).
    pub fn from_config(index: usize, s: &config::Server) -> Server {
        Server::in_backend(index, s, Arc::new(Queue::new(None)))
    }

    /// A server of a backend whose waiters sit in `queue`.
    pub fn in_backend(index: usize, s: &config::Server, queue: Arc<Queue>) -> Server {
        // No address yet (`init-addr none`, a template slot no record filled): in
        // maintenance until DNS gives it one.
        let admin = if s.params.disabled || s.addr.ip().is_unspecified() {
            Admin::Maint
        } else {
            Admin::Ready
        };
        Server {
            index,
            name: s.name.clone(),
            addr: ArcSwap::from_pointee(s.addr),
            weight: AtomicU32::new(s.params.weight),
            backup: s.params.backup,
            maxconn: s.params.maxconn,
            params: s.params.clone(),
            health: AtomicU8::new(ServerState::Up as u8),
            admin: AtomicU8::new(admin as u8),
            retired: AtomicBool::new(false),
            changed_at_ms: AtomicU64::new(now_ms()),
            current: AtomicU32::new(0),
            total: AtomicU64::new(0),
            stats: crate::counters::ServerStats::default(),
            queue,
            freed: Event::new(),
        }
    }

    /// What pickers and the stats page see: `Maint` while in maintenance, else the checks'
    /// verdict.
    pub fn state(&self) -> ServerState {
        if self.admin() == Admin::Maint {
            return ServerState::Maint;
        }
        ServerState::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Records the checks' verdict (`Up`/`Down`), or with `Maint` puts the server in
    /// maintenance; returns the previous state as [`Server::state`] saw it.
    pub fn set_state(&self, state: ServerState) -> ServerState {
        let previous = self.state();
        match state {
            ServerState::Maint => {
                self.admin.store(Admin::Maint as u8, Ordering::Release);
            }
            up_or_down => self.health.store(up_or_down as u8, Ordering::Release),
        }
        self.note_change(previous);
        previous
    }

    /// The checks' verdict alone (`Up`/`Down`), whatever the administrative state.
    pub fn health(&self) -> ServerState {
        ServerState::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Whether it has an address to reach (a template slot without a record has none).
    pub fn has_addr(&self) -> bool {
        !self.addr().ip().is_unspecified()
    }

    pub fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Ordering::Acquire))
    }

    /// `set server … state ready|drain|maint`, `enable|disable server`; returns the
    /// previous administrative state.
    pub fn set_admin(&self, admin: Admin) -> Admin {
        let before = self.state();
        let previous = Admin::from_u8(self.admin.swap(admin as u8, Ordering::AcqRel));
        self.note_change(before);
        previous
    }

    fn note_change(&self, previous: ServerState) {
        let now = self.state();
        if previous != now {
            self.changed_at_ms.store(now_ms(), Ordering::Relaxed);
            self.stats.transitions.record(now == ServerState::Up);
        }
    }

    pub fn addr(&self) -> SocketAddr {
        **self.addr.load()
    }

    /// Where its health checks connect: its address, or `addr`, with its port, or `port`.
    pub fn check_target(&self) -> SocketAddr {
        let mut addr = self.addr();
        if let Some(ip) = self.params.check_addr {
            addr.set_ip(ip);
        }
        if let Some(port) = self.params.check_port {
            addr.set_port(port);
        }
        addr
    }

    /// New connections (and checks) go to `addr` from now on; established ones stay.
    pub fn set_addr(&self, addr: SocketAddr) {
        self.addr.store(Arc::new(addr));
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Through [`super::ServerSet::set_weight`], which also redraws the hash rings.
    pub(super) fn store_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// How long the server has been in its current state.
    pub fn since_change(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.changed_at_ms.load(Ordering::Relaxed)))
    }

    /// UP, weighted, and below its `maxconn`.
    pub fn is_usable(&self) -> bool {
        self.is_up_and_weighted() && !self.is_full()
    }

    /// Could take traffic if it had a free slot.
    pub fn is_up_and_weighted(&self) -> bool {
        self.state() == ServerState::Up && self.admin() == Admin::Ready && self.weight() > 0
    }

    /// Takes the sessions a persistence cookie names: UP and not in maintenance (draining
    /// servers still take them, as in HAProxy).
    pub fn takes_persistent(&self) -> bool {
        self.state() == ServerState::Up && (self.weight() > 0 || self.admin() == Admin::Drain)
    }

    /// Register before the last look at `try_claim`, so a slot freed in between wakes us.
    pub fn listen(&self) -> EventListener {
        self.freed.listen()
    }

    /// Sessions waiting for this server in particular (its `qcur`).
    pub fn queued(&self) -> u64 {
        self.stats.traffic.queue_current.load(Ordering::SeqCst)
    }

    /// Its own queue holds `maxqueue` sessions already: the next one goes elsewhere.
    pub fn queue_is_full(&self) -> bool {
        self.params
            .maxqueue
            .is_some_and(|max| self.queued() >= u64::from(max))
    }

    /// Its connections start with a PROXY header naming one client: such a connection must
    /// never carry another client's requests (HAProxy makes it private to its session).
    pub fn sends_proxy_header(&self) -> bool {
        self.params.proxy_version().is_some()
    }

    /// Every `maxconn` slot is taken.
    pub fn is_full(&self) -> bool {
        self.maxconn.is_some_and(|max| self.current() >= max)
    }

    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts a connection against this server until the guard drops, whatever its
    /// `maxconn`. For tests and tools: sessions take their slot with [`Server::try_claim`]
    /// (through the queue), a reused pooled HTTP connection included.
    pub fn claim(self: &Arc<Self>) -> ServerClaim {
        let current = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        self.claimed(current)
    }

    /// Takes one of the server's `maxconn` slots, or `None` when all are taken. One atomic
    /// step: two workers cannot both take the last slot.
    pub fn try_claim(self: &Arc<Self>) -> Option<ServerClaim> {
        let max = self.maxconn.unwrap_or(u32::MAX);
        let before = self
            .current
            // SeqCst, with the release below and `Waiting`: a waiter that counted itself in
            // `qcur` either sees the freed slot here or is seen by the releaser.
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c < max).then_some(c + 1)
            })
            .ok()?;
        Some(self.claimed(before + 1))
    }

    fn claimed(self: &Arc<Self>, current: u32) -> ServerClaim {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.stats.traffic.note_current(u64::from(current));
        ServerClaim {
            server: self.clone(),
        }
    }
}

/// A connection's hold on a server's `current` count.
#[derive(Debug)]
pub struct ServerClaim {
    pub server: Arc<Server>,
}

impl Drop for ServerClaim {
    fn drop(&mut self) {
        let server = &self.server;
        server.current.fetch_sub(1, Ordering::SeqCst);
        // Only a server with a limit can make anyone wait; its own waiters come first.
        if server.maxconn.is_some() {
            if server.queued() > 0 {
                server.freed.notify(1);
            } else {
                server.queue.slot_freed();
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

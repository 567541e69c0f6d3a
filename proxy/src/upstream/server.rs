//! One server's live state: written by the health checker and by sessions, read by pickers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use event_listener::{Event, EventListener};

use super::queue::Queue;
use crate::config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    Up = 0,
    Down = 1,
    /// `disabled` in the config: never picked, never checked.
    Maint = 2,
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
    /// Position in its backend, stable for the life of the config.
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    pub maxconn: Option<u32>,
    pub params: config::ServerParams,
    state: AtomicU8,
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
        let state = if s.params.disabled {
            ServerState::Maint
        } else {
            ServerState::Up
        };
        Server {
            index,
            name: s.name.clone(),
            addr: s.addr,
            weight: s.params.weight,
            backup: s.params.backup,
            maxconn: s.params.maxconn,
            params: s.params.clone(),
            state: AtomicU8::new(state as u8),
            changed_at_ms: AtomicU64::new(now_ms()),
            current: AtomicU32::new(0),
            total: AtomicU64::new(0),
            stats: crate::counters::ServerStats::default(),
            queue,
            freed: Event::new(),
        }
    }

    pub fn state(&self) -> ServerState {
        ServerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Records a state change; returns the previous state.
    pub fn set_state(&self, state: ServerState) -> ServerState {
        let previous = ServerState::from_u8(self.state.swap(state as u8, Ordering::AcqRel));
        if previous != state {
            self.changed_at_ms.store(now_ms(), Ordering::Relaxed);
            self.stats.transitions.record(state == ServerState::Up);
        }
        previous
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
        self.state() == ServerState::Up && self.weight > 0
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

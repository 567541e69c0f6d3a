//! One flow: a client's address and port pinned to one server through one socket of its
//! own, whose local port stays the same for the flow's whole life (SRT recognises its peer
//! by address and port, so a retransmission must come from the port the handshake did).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::log::{SessionRecord, TermState};
use crate::upstream::ServerClaim;

/// A flow is active while its server has answered and a datagram passed within this long:
/// SRT sends a keep-alive every second even with no media, so an established session is
/// never this quiet, while a flood of spoofed ports never gets an answer at all.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(2);

/// Datagrams and bytes of one direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub datagrams: u64,
    pub bytes: u64,
}

impl Tally {
    pub fn add(&mut self, datagrams: u64, bytes: u64) {
        self.datagrams += datagrams;
        self.bytes += bytes;
    }
}

#[derive(Debug)]
pub struct Flow {
    /// Bound to an ephemeral port, not connected: a connected socket would have the kernel
    /// drop a stranger's datagrams unseen, and they must be counted.
    pub socket: Socket,
    pub server: ServerClaim,
    /// The server's address when the flow began (a later `set server addr` is for new flows).
    pub server_addr: SocketAddr,
    pub server_sa: SockAddr,
    pub client_sa: SockAddr,
    /// The `dgram-bind` socket the client wrote to: replies leave from it.
    pub bind: usize,
    pub started: SystemTime,
    pub started_at: Instant,
    pub last_seen: Instant,
    /// The server has answered at least once.
    pub answered: bool,
    pub to_server: Tally,
    pub to_client: Tally,
    /// Datagrams dropped on this flow: strangers on its socket, truncated ones, refused sends.
    pub dropped: u64,
}

impl Flow {
    /// A fresh socket toward `server`'s address family; the kernel picks its port now.
    pub fn open(
        client: SocketAddr,
        bind: usize,
        server: ServerClaim,
        now: Instant,
    ) -> io::Result<Flow> {
        let server_addr = server.server.addr();
        let socket = Socket::new(
            Domain::for_address(server_addr),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )?;
        let any: SocketAddr = match server_addr {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        socket.bind(&any.into())?;
        Ok(Flow {
            socket,
            server,
            server_addr,
            server_sa: server_addr.into(),
            client_sa: client.into(),
            bind,
            started: SystemTime::now(),
            started_at: now,
            last_seen: now,
            answered: false,
            to_server: Tally::default(),
            to_client: Tally::default(),
            dropped: 0,
        })
    }

    pub fn is_active(&self, now: Instant) -> bool {
        self.answered && now.saturating_duration_since(self.last_seen) < ACTIVE_WINDOW
    }

    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_seen)
    }
}

/// The line of an ended flow: HAProxy's tcplog fields (the flow as a session: client,
/// section, server, duration, bytes to the client, termination state, counts), then the
/// datagram figures a TCP line has no place for:
/// `udp in=DATAGRAMS/BYTES out=DATAGRAMS/BYTES drop=N`.
pub struct FlowLine<'a> {
    pub record: SessionRecord<'a>,
    pub flow: &'a Flow,
}

impl fmt::Display for FlowLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fl = self.flow;
        write!(
            f,
            "{} udp in={}/{} out={}/{} drop={}",
            self.record,
            fl.to_server.datagrams,
            fl.to_server.bytes,
            fl.to_client.datagrams,
            fl.to_client.bytes,
            fl.dropped
        )
    }
}

/// Builds the record of `flow` ended with `term`.
pub fn record<'a>(
    client: SocketAddr,
    flow: &'a Flow,
    section: &'a str,
    term: TermState,
    counts: (usize, usize),
) -> SessionRecord<'a> {
    SessionRecord {
        client,
        accepted: flow.started,
        frontend: section,
        backend: section,
        server: &flow.server.server.name,
        queue_wait: Some(Duration::ZERO),
        connect: Some(Duration::ZERO),
        total: flow.started_at.elapsed(),
        bytes_down: flow.to_client.bytes,
        term,
        active: counts.0,
        frontend_conns: counts.0,
        backend_conns: counts.0,
        server_conns: counts.1,
        retries: 0,
    }
}

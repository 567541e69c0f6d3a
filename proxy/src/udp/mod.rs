//! Mode udp: the `udp-lb` sections (SRT ingest for Ant Media Server, which takes SRT
//! publishes on UDP 4200). A flow is a client's address and port; it is pinned to one server
//! through one socket of its own (a stable source port both ways, which SRT needs for its
//! retransmissions), replies leave from the bind address the client wrote to, idle flows end
//! after `timeout client`, and `maxconn` bounds the table (the oldest idle flows reclaimed
//! first, never an active one). Servers, health and the picking algorithms are the upstream
//! room's, so the stats page, the exporter and the runtime API see them as any backend's.
//!
//! - `batch`: `recvmmsg`/`sendmmsg`;
//! - `table`: the flow table and its reclaim order;
//! - `flow`: one flow, and its log line;
//! - `pump`: the forwarding loop of one section, on its own thread.
//!
//! A flow's states and why they are so: `LIFECYCLE.md`.

mod batch;
mod flow;
mod pump;
mod table;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, Loc, Proxy};
use crate::counters::Counters;
use crate::log::AccessLog;
use crate::upstream::ServerSet;

/// Flow limit of a section with neither its own `maxconn` nor a global one.
pub const DEFAULT_MAX_FLOWS: usize = 10_000;
/// Idle timeout of a section without `timeout client` (HAProxy Enterprise's default
/// `timeout client` for udp-lb is unset; an unbounded table would never reclaim anything).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("{loc}: cannot bind {addr} (udp): {source}")]
    Bind {
        loc: Loc,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("udp-lb {name}: cannot start: {source}")]
    Start {
        name: String,
        source: std::io::Error,
    },
}

/// One `udp-lb` section as the plan compiled it.
pub struct UdpLb {
    pub name: String,
    pub binds: Vec<(SocketAddr, Loc)>,
    /// Shared with the registry (stats) and the health checker.
    pub set: Arc<ServerSet>,
    /// The section's frontend row.
    pub counters: Arc<Counters>,
    /// `timeout client`: a flow with no datagram either way for this long ends.
    pub idle: Duration,
    /// `maxconn` of the section, else the global one, else [`DEFAULT_MAX_FLOWS`].
    pub max_flows: usize,
    pub access_log: AccessLog,
}

impl UdpLb {
    pub fn new(cfg: &Config, p: &Proxy, set: Arc<ServerSet>, counters: Arc<Counters>) -> UdpLb {
        let max = p.maxconn.or(cfg.global.maxconn);
        UdpLb {
            name: p.name.clone(),
            binds: p
                .dgram_binds
                .iter()
                .map(|b| (b.addr, b.loc.clone()))
                .collect(),
            set,
            counters,
            idle: p.timeouts.client.unwrap_or(DEFAULT_IDLE),
            max_flows: max.map_or(DEFAULT_MAX_FLOWS, |n| n as usize),
            access_log: AccessLog::for_proxy(p),
        }
    }
}

/// The running `udp-lb` sections: one thread each.
#[derive(Default)]
pub struct Engines {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Engines {
    /// Binds every `dgram-bind` of every section first (a port taken stops the start with
    /// the line), then starts one forwarding thread per section.
    pub fn start(lbs: &[Arc<UdpLb>]) -> Result<Engines, UdpError> {
        let mut bound = Vec::new();
        for lb in lbs {
            let sockets = lb
                .binds
                .iter()
                .map(|(addr, loc)| {
                    bind(*addr).map_err(|source| UdpError::Bind {
                        loc: loc.clone(),
                        addr: *addr,
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            bound.push((lb.clone(), sockets));
        }
        let mut engines = Engines::default();
        for (lb, sockets) in bound {
            let start = |source| UdpError::Start {
                name: lb.name.clone(),
                source,
            };
            let pump = pump::Pump::new(lb.clone(), sockets, engines.stop.clone())
                .map_err(|e| start(e.into()))?;
            let thread = std::thread::Builder::new()
                .name(format!("udp-{}", lb.name))
                .spawn(move || pump.run())
                .map_err(start)?;
            engines.threads.push(thread);
        }
        Ok(engines)
    }

    /// Ends every flow (each logged) and waits for the threads (at most one sweep period).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A `dgram-bind` socket. SO_REUSEADDR only (not SO_REUSEPORT): one socket per address, so
/// one thread reads all of a client's datagrams.
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    s.set_reuse_address(true)?;
    // Room for a burst of media datagrams while the thread is busy with other flows.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

//! `forward-engine nat`: plain TCP frontends balanced by the kernel's L4 NAT. The proxy holds
//! no socket for them: an nftables table it owns matches new connections to a frontend's
//! binds, picks a server from a slot table (`slots.rs`) and rewrites the destination to it
//! and the source to the balancer's address, so return traffic comes back through the
//! balancer. The proxy keeps the slot tables in step with the servers' state (health checks,
//! runtime API, weights, `maxconn`) and follows the flows through conntrack events, for
//! counters, `show sess` and one log line per ended flow. LIFECYCLE.md says how the table
//! lives across start, reload, binary upgrade and stop.

mod conntrack;
mod engine;
pub mod event;
mod family;
mod flows;
mod local;
mod nft;
mod ruleset;
mod slots;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::counters::Counters;
use crate::log::AccessLog;
use crate::upstream::ServerSet;

pub use engine::NatEngine;
pub use ruleset::TABLE;

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("forward-engine nat cannot start: {0}")]
    Probe(String),
    #[error("nft: {0}")]
    Nft(String),
    #[error("forward-engine nat: conntrack events: {0}")]
    Events(String),
}

/// A `mode tcp` frontend whose flows the kernel's NAT carries, as the plan built it.
#[derive(Debug)]
pub struct NatFrontend {
    pub name: String,
    /// `0.0.0.0:PORT` (`[::]:PORT`) takes every local address of its family. All of one
    /// family, that of the backend's servers (the config refuses a mix; an IPv4-mapped IPv6
    /// address is IPv4).
    pub binds: Vec<SocketAddr>,
    /// Its backend's servers, shared with the health checker and the stats page.
    pub set: Arc<ServerSet>,
    /// The frontend's row.
    pub stats: Arc<Counters>,
    pub access_log: AccessLog,
    /// How long an established flow may stay idle before the kernel forgets it:
    /// `timeout tunnel`, else the shorter of `timeout client` and `timeout server`; `None`
    /// leaves the kernel's default.
    pub idle: Option<Duration>,
    /// How long a half-closed flow may stay: `timeout client-fin`/`server-fin`.
    pub fin: Option<Duration>,
    pub dont_log_null: bool,
}

impl NatFrontend {
    /// The family of its binds, and so of its table and its servers.
    fn family(&self) -> family::Family {
        self.binds
            .first()
            .map_or(family::Family::V4, family::Family::of)
    }

    /// For the start-up report.
    pub fn describe(&self) -> String {
        let binds: Vec<String> = self.binds.iter().map(|b| b.to_string()).collect();
        format!(
            "frontend {} on {} -> backend {} (forward engine nat: the kernel's NAT, \
             balance {:?}, idle timeout {})",
            self.name,
            binds.join(", "),
            self.set.backend,
            self.set.algorithm,
            self.idle
                .map_or("the kernel's default".to_string(), |d| format!("{d:?}"))
        )
    }
}

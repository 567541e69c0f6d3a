//! A backend as both modes' sessions see it: its server set and how to reach a server.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Proxy;

use super::ServerSet;

/// Immutable connection settings plus the shared server set (health state, counters).
#[derive(Debug)]
pub struct Backend {
    pub set: Arc<ServerSet>,
    pub connect_timeout: Option<Duration>,
    pub retries: u32,
    pub redispatch: bool,
    /// Live sessions of this backend (the `bconn` of a log line).
    pub conns: AtomicUsize,
}

impl Backend {
    /// `set` is the backend's server set as the plan's registry holds it, so the stats page
    /// sees the servers the data path and the health checker use.
    pub fn new(p: &Proxy, set: Arc<ServerSet>) -> Backend {
        Backend {
            set,
            connect_timeout: p.timeouts.connect,
            retries: p.retries,
            redispatch: p.options.redispatch,
            conns: AtomicUsize::new(0),
        }
    }
}

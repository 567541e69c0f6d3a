//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`, versions 1 and 2), both ways:
//! the header a `send-proxy`/`send-proxy-v2` server gets before any client byte (`encode`,
//! written by `connect` and by health checks), and the header an `accept-proxy` bind reads
//! before anything else (`parse`, pure; `accept`, the socket side). It lives in the upstream
//! room because both modes' sessions and the health checker may import this room.
//!
//! Modules, one concern each: `parse` (defensive decoder of untrusted bytes), `encode`
//! (byte-exact headers), `crc32c` (the v2 checksum TLV), `accept` (reading exactly the
//! header's bytes off an accepted socket, within a time limit).

mod accept;
mod crc32c;
mod encode;
mod parse;

pub use accept::{accept, DEFAULT_WAIT};
pub use encode::{for_check, for_server, v1, v2, V2Command};
pub use parse::{parse, Header, Parsed, V1_MAX, V2_MAX};

use std::net::SocketAddr;

/// The two ends of a client connection as the proxy acts on them: the socket's addresses,
/// or those an `accept-proxy` bind's PROXY header named. Logs, ACL `src`, `option
/// forwardfor`, `balance source` and the header sent on to servers all read this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Where the client connects from.
    pub src: SocketAddr,
    /// The address the client connected to (the proxy's side of its socket).
    pub dst: SocketAddr,
}

/// Why a connection's PROXY header was refused. The texts are HAProxy's (`conn_err_code_str`)
/// so that log alerts written for HAProxy keep matching; `Invalid` adds what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("Connection closed while waiting for PROXY protocol header")]
    Closed,
    #[error("Connection error while waiting for PROXY protocol header: {0}")]
    Io(#[source] std::io::Error),
    #[error("Timeout while waiting for PROXY protocol header")]
    Timeout,
    #[error("Truncated PROXY protocol header received")]
    Truncated,
    #[error("Received something which does not look like a PROXY protocol header")]
    NotHeader,
    #[error("Received an invalid PROXY protocol header ({0})")]
    Invalid(&'static str),
    #[error("Received an unhandled protocol in the PROXY protocol header")]
    BadProto,
}

#[cfg(test)]
mod tests;

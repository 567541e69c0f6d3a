//! What `forward-engine nat` cannot carry. With nat the kernel rewrites the addresses of a
//! new connection and hands it to a server: the proxy never holds a socket, so whatever acts
//! on a connection the proxy holds (TLS, a PROXY header, a retry on another server, HTTP) has
//! no moment to act in, and is refused with its line rather than silently ignored.
//!
//! The engine of a `mode tcp` frontend's flows is its backend's (as for the other engines), so
//! a frontend's lines are checked when its backend says `nat`, and a frontend that says `nat`
//! over a backend that does not is refused.

use std::net::SocketAddr;

use super::model::{Config, EngineChoice, Loc, Mode, Proxy};
use super::parse::Notes;

/// Every problem of `proxy` under nat, with the line to fix.
pub(crate) fn problems(config: &Config, proxy: &Proxy, notes: &Notes) -> Vec<(Loc, String)> {
    let mut out = Vec::new();
    let engine_loc = notes
        .engine
        .as_ref()
        .map_or(proxy.loc.clone(), |(_, loc)| loc.clone());
    if proxy.engine == EngineChoice::Nat && proxy.mode == Mode::Http {
        out.push((
            engine_loc.clone(),
            format!(
                "forward-engine nat needs mode tcp: {} is in mode http, and the kernel's NAT \
                 never sees an HTTP request",
                describe(proxy)
            ),
        ));
        return out;
    }
    if proxy.kind.has_frontend() && proxy.mode == Mode::Tcp {
        let backend = config.tcp_backend_of(proxy);
        let backend_nat = backend.is_some_and(|b| b.engine == EngineChoice::Nat);
        // A `listen` section is its own backend: `backend_nat` covers it.
        if proxy.engine == EngineChoice::Nat && !backend_nat {
            if let Some(b) = backend {
                out.push((
                    engine_loc.clone(),
                    format!(
                        "forward-engine nat: the engine of a frontend's flows is its backend's; \
                         write 'forward-engine nat' in backend '{}' too",
                        b.name
                    ),
                ));
            }
        }
        if backend_nat {
            frontend_problems(proxy, notes, &mut out);
        }
    }
    if proxy.kind.has_backend() && proxy.engine == EngineChoice::Nat {
        backend_problems(proxy, notes, &mut out);
    }
    out
}

fn frontend_problems(fe: &Proxy, notes: &Notes, out: &mut Vec<(Loc, String)>) {
    for b in &fe.binds {
        if b.ssl.is_some() {
            out.push((
                b.loc.clone(),
                "'ssl' on a forward-engine nat bind: the kernel's NAT passes TCP through \
                 untouched and cannot terminate TLS (use another engine for RTMPS)"
                    .to_string(),
            ));
        }
        if b.accept_proxy {
            out.push((
                b.loc.clone(),
                "'accept-proxy' on a forward-engine nat bind: no socket on the proxy's side \
                 reads the PROXY header"
                    .to_string(),
            ));
        }
        if b.addr.ip().is_loopback() {
            out.push((
                b.loc.clone(),
                format!(
                    "bind {}: forward-engine nat cannot balance a loopback address: the kernel \
                     does not route a connection from a loopback source to another host \
                     (route_localnet would, but opens 127/8 to the network); bind an address \
                     of the host or ':PORT'",
                    b.addr
                ),
            ));
        }
        if !is_v4(b.addr) {
            out.push((
                b.loc.clone(),
                format!(
                    "bind {}: forward-engine nat balances IPv4 only (its nftables table is \
                     'ip'); bind an IPv4 address or ':PORT'",
                    b.addr
                ),
            ));
        }
    }
    for (keyword, loc) in &notes.not_at_l4 {
        if keyword == "maxconn" {
            out.push((
                loc.clone(),
                "'maxconn' on a forward-engine nat frontend: the kernel accepts its connections, \
                 the proxy never counts them before they reach a server; limit servers with \
                 'server … maxconn N' instead"
                    .to_string(),
            ));
        }
    }
}

fn backend_problems(be: &Proxy, notes: &Notes, out: &mut Vec<(Loc, String)>) {
    for (keyword, loc) in &notes.not_at_l4 {
        if keyword == "timeout queue" {
            out.push((
                loc.clone(),
                "'timeout queue' with forward-engine nat: the kernel never queues a connection \
                 (a full server leaves the slot table instead)"
                    .to_string(),
            ));
        }
        if keyword == "retries" || keyword == "option redispatch" {
            out.push((
                loc.clone(),
                format!(
                    "'{keyword}' with forward-engine nat: the kernel hands each connection to \
                     its server and the proxy never sees it fail, so there is nothing to retry \
                     or redispatch"
                ),
            ));
        }
    }
    for s in &be.servers {
        if s.params.send_proxy || s.params.send_proxy_v2 {
            out.push((
                s.loc.clone(),
                format!(
                    "server {}: 'send-proxy' with forward-engine nat: the kernel forwards the \
                     client's own bytes and cannot put a PROXY header in front of them (the \
                     server sees the balancer's address)",
                    s.name
                ),
            ));
        }
        if s.params.maxqueue.is_some() {
            out.push((
                s.loc.clone(),
                format!(
                    "server {}: 'maxqueue' with forward-engine nat: nothing waits for a server \
                     (a full server leaves the slot table instead)",
                    s.name
                ),
            ));
        }
        if !s.addr.ip().is_unspecified() && !is_v4(s.addr) {
            out.push((
                s.loc.clone(),
                format!(
                    "server {}: forward-engine nat balances IPv4 only; {} is IPv6",
                    s.name, s.addr
                ),
            ));
        }
    }
}

fn is_v4(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    }
}

fn describe(proxy: &Proxy) -> String {
    format!("{} '{}'", proxy.kind.keyword(), proxy.name)
}

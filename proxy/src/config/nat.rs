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
        if let Some(b) = backend.filter(|_| backend_nat) {
            frontend_problems(proxy, b, notes, &mut out);
        }
    }
    if proxy.kind.has_backend() && proxy.engine == EngineChoice::Nat {
        backend_problems(proxy, notes, &mut out);
    }
    out
}

fn frontend_problems(fe: &Proxy, be: &Proxy, notes: &Notes, out: &mut Vec<(Loc, String)>) {
    family_problems(fe, be, out);
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
        if b.addr.ip().to_canonical().is_loopback() {
            out.push((
                b.loc.clone(),
                format!(
                    "bind {}: forward-engine nat cannot balance a loopback address: the kernel \
                     does not route a connection from a loopback source to another host \
                     (for IPv4 route_localnet would, but it opens 127/8 to the network); bind \
                     an address of the host or ':PORT'",
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
    }
    let mut first: Option<&super::model::Server> = None;
    for s in be.servers.iter().filter(|s| !s.addr.ip().is_unspecified()) {
        match first {
            None => first = Some(s),
            Some(f) if is_v4(f.addr) != is_v4(s.addr) => out.push((
                s.loc.clone(),
                format!(
                    "server {}: forward-engine nat does not translate between families: {} is \
                     {} and server {} is {}",
                    s.name,
                    s.addr,
                    family(s.addr),
                    f.name,
                    family(f.addr)
                ),
            )),
            Some(_) => {}
        }
    }
}

/// One family per frontend, that of its backend's servers: the kernel's NAT rewrites
/// addresses within a family (IPv4 in `ip amsproxy_nat`, IPv6 in `ip6 amsproxy_nat`).
fn family_problems(fe: &Proxy, be: &Proxy, out: &mut Vec<(Loc, String)>) {
    let server = be.servers.iter().find(|s| !s.addr.ip().is_unspecified());
    let first = fe.binds.first();
    for b in &fe.binds {
        let other_bind = first.filter(|f| is_v4(f.addr) != is_v4(b.addr));
        let other_server = server.filter(|s| is_v4(s.addr) != is_v4(b.addr));
        if let Some(f) = other_bind {
            out.push((
                b.loc.clone(),
                format!(
                    "bind {}: forward-engine nat balances one family per frontend: {} is {} \
                     and bind {} is {}",
                    b.addr,
                    b.addr,
                    family(b.addr),
                    f.addr,
                    family(f.addr)
                ),
            ));
        } else if let Some(s) = other_server {
            out.push((
                b.loc.clone(),
                format!(
                    "bind {}: forward-engine nat does not translate between families: the bind \
                     is {} and server {} of backend '{}' is {}",
                    b.addr,
                    family(b.addr),
                    s.name,
                    be.name,
                    family(s.addr)
                ),
            ));
        }
        let wildcard6 = !is_v4(b.addr) && b.addr.ip().is_unspecified();
        if wildcard6 && b.v6only != Some(true) {
            out.push((
                b.loc.clone(),
                format!(
                    "bind {}: an IPv6 wildcard takes IPv4 clients too, and forward-engine nat \
                     balances one family per frontend; add 'v6only' (IPv6 clients only) or \
                     bind ':{}' for IPv4",
                    b.addr,
                    b.addr.port()
                ),
            ));
        }
    }
}

fn family(addr: SocketAddr) -> &'static str {
    if is_v4(addr) {
        "IPv4"
    } else {
        "IPv6"
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

#[cfg(test)]
mod tests {
    /// IPv6 binds over IPv6 servers, and IPv4-mapped servers under an IPv4 bind, are one
    /// family each: accepted.
    #[test]
    fn one_family_per_frontend_is_accepted() {
        for cfg in [
            "listen rtmp\n bind [fd00:1::1]:1935\n bind :::1936 v6only\n forward-engine nat\n \
             server a [fd00:3::2]:1935\n server b [fd00:4::2]:1935\n",
            "listen rtmp\n bind :1935\n forward-engine nat\n server a [::ffff:10.0.0.1]:1935\n \
             server b 10.0.0.2:1935\n",
        ] {
            let parsed = crate::config::parse_str(cfg, std::path::Path::new("nat6.cfg"));
            assert!(parsed.is_ok(), "{cfg}: {:?}", parsed.err());
        }
    }
}

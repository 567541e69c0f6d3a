//! The `udp-lb` section (HAProxy Enterprise's UDP load balancer): its own directives, and
//! the checks that keep every line it accepts acting on datagrams. Server options that only
//! mean something to a TCP connection (`maxconn`, `send-proxy`, `cookie`…) are refused here
//! rather than parsed and ignored.

use std::net::SocketAddr;

use super::addr::parse_bind_addrs;
use super::args::Args;
use super::model::{Balance, DgramBind, Loc, Proxy, ProxyKind, ServerParams};
use super::parse::Ctx;

/// `balance` in a `udp-lb` section: HAProxy Enterprise's four. A datagram has no request to
/// hash, so `hash` is the client's address on a consistent ring: a caller that comes back
/// (a new SRT session, a new source port) finds its node again, and a node added or removed
/// moves only the callers it takes or held.
pub(crate) fn balance(proxy: &mut Proxy, args: &mut Args<'_>) -> Result<(), String> {
    proxy.balance = match args.need("an algorithm")? {
        "roundrobin" => Balance::RoundRobin,
        "leastconn" => Balance::LeastConn,
        "source" => Balance::Source,
        "hash" => {
            proxy.hash_type.consistent = true;
            Balance::Source
        }
        other => {
            return Err(format!(
                "unsupported balance algorithm '{other}' in a udp-lb section (supported: \
                 roundrobin, leastconn, source, hash)"
            ))
        }
    };
    Ok(())
}

/// `dgram-bind ADDR:PORT[,…]`: the UDP addresses a `udp-lb` section receives on. No
/// options: HAProxy Enterprise's `interface`/`namespace` are not built.
pub(crate) fn dgram_bind(
    proxy: &mut Proxy,
    args: &mut Args<'_>,
    ctx: &Ctx<'_>,
) -> Result<(), String> {
    let addrs = parse_bind_addrs(args.need("an address")?)?;
    proxy
        .dgram_binds
        .extend(addrs.into_iter().map(|addr| DgramBind {
            addr,
            loc: ctx.loc.clone(),
        }));
    Ok(())
}

/// What is wrong with a `udp-lb` section as a whole: each problem with the line to fix.
pub(crate) fn problems(proxy: &Proxy) -> Vec<(Loc, String)> {
    let mut out = Vec::new();
    if proxy.kind != ProxyKind::UdpLb {
        return out;
    }
    if proxy.dgram_binds.is_empty() {
        let why = format!(
            "udp-lb '{}' has no 'dgram-bind' line: it would receive nothing",
            proxy.name
        );
        out.push((proxy.loc.clone(), why));
    }
    if proxy.servers.is_empty() {
        let why = format!(
            "udp-lb '{}' has no 'server' line: it would have nowhere to send datagrams",
            proxy.name
        );
        out.push((proxy.loc.clone(), why));
    }
    for s in &proxy.servers {
        if let Some(option) = tcp_only_option(&s.params) {
            let why = format!(
                "server option '{option}' has no meaning in a udp-lb section (its flows are \
                 datagrams: use 'maxconn' of the section for the flow limit)"
            );
            out.push((s.loc.clone(), why));
        }
    }
    out
}

/// The first server option written that acts only on TCP connections.
fn tcp_only_option(p: &ServerParams) -> Option<&'static str> {
    [
        (p.maxconn.is_some(), "maxconn"),
        (p.maxqueue.is_some(), "maxqueue"),
        (p.cookie.is_some(), "cookie"),
        (p.send_proxy, "send-proxy"),
        (p.send_proxy_v2, "send-proxy-v2"),
        (p.proxy_v2_crc32c, "proxy-v2-options"),
    ]
    .into_iter()
    .find_map(|(set, name)| set.then_some(name))
}

/// Two `udp-lb` sections receiving on the same address and port: the kernel would split
/// datagrams between them (SO_REUSEPORT) or refuse the second; either hides a mistake.
pub(crate) fn bind_conflicts(proxies: &[Proxy]) -> Vec<(Loc, String)> {
    let binds: Vec<(&Proxy, &DgramBind)> = proxies
        .iter()
        .flat_map(|p| p.dgram_binds.iter().map(move |b| (p, b)))
        .collect();
    let mut out = Vec::new();
    for (index, (proxy, bind)) in binds.iter().enumerate() {
        let earlier = binds
            .iter()
            .take(index)
            .find(|(_, b)| overlaps(b.addr, bind.addr));
        if let Some((other, first)) = earlier {
            let why = format!(
                "dgram-bind {} of udp-lb '{}' conflicts with udp-lb '{}' at {}",
                bind.addr, proxy.name, other.name, first.loc
            );
            out.push((bind.loc.clone(), why));
        }
    }
    out
}

fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

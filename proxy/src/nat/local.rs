//! Connections made on the balancer itself (a health probe, a script, an ffmpeg on the host)
//! never pass prerouting: they leave through the `output` hook. The same balancing applies
//! to them from a nat chain there, with three things a forwarded connection cannot meet:
//!
//! - A loopback source (127.0.0.0/8, ::1): after the destination is rewritten to a server the
//!   kernel routes the packet again, and refuses a loopback source on any other interface
//!   (IPv4 unless `route_localnet` is set, which would also open 127/8 to packets from the
//!   network; IPv6 always). Such connections (to 127.0.0.1 under `bind :PORT`, or from a
//!   socket bound to a loopback address) are left alone: nothing listens, so they are
//!   refused, as loopback binds are refused by the config.
//! - The proxy's own health checks go to a server's address (or `addr`/`port`): when that
//!   address is one of this host's and its port a bind's (a server on the balancer host
//!   itself), balancing the check would test whichever server the table picked. A
//!   connection to one of the backend's servers goes to that server, untouched.
//! - A server's replies belong to the entry of the connection they answer: a nat chain only
//!   sees a connection's first packet, so they are never balanced.
//!
//! The masquerade in postrouting applies to these flows as to forwarded ones (same mark):
//! the server answers the address of the interface that reaches it.

use std::net::SocketAddr;

use super::family::{self, Family};
use crate::upstream::ServerSet;

/// Where the proxy itself connects for `set`: each server's address and its check target,
/// known, sorted, each once. The output chain leaves connections to them alone.
pub fn untouched(set: &ServerSet) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = set
        .servers()
        .iter()
        .flat_map(|s| [s.addr(), s.check_target()])
        .map(family::plain)
        .filter(|a| !a.ip().is_unspecified() && a.port() != 0)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The output chain's match for `bind` (as `ruleset::bind_match` for prerouting), leaving
/// out loopback sources and destinations and the connections to `untouched`.
pub fn output_match(family: Family, bind: &SocketAddr, untouched: &[SocketAddr]) -> String {
    let bind = family::plain(*bind);
    let (proto, loopback, port) = (family.proto(), family.loopback(), bind.port());
    let mut m = if bind.ip().is_unspecified() {
        format!(
            "fib daddr type local {proto} daddr != {loopback} {proto} saddr != {loopback} \
             tcp dport {port}"
        )
    } else {
        format!(
            "{proto} daddr {} {proto} saddr != {loopback} tcp dport {port}",
            bind.ip()
        )
    };
    let mine: Vec<String> = untouched
        .iter()
        .filter(|a| Family::of(a) == family && a.port() == port)
        .filter(|a| bind.ip().is_unspecified() || a.ip() == bind.ip())
        .map(family::element)
        .collect();
    if !mine.is_empty() {
        m.push_str(&format!(
            " {proto} daddr . tcp dport != {{ {} }}",
            mine.join(", ")
        ));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_local_address_but_loopback_and_the_servers_own() {
        let untouched = [
            a("10.0.0.5:1935"),
            a("10.3.0.2:9000"),
            a("10.0.0.5:5080"),
            a("[fd00::5]:1935"),
        ];
        assert_eq!(
            output_match(Family::V4, &a("0.0.0.0:1935"), &untouched),
            "fib daddr type local ip daddr != 127.0.0.0/8 ip saddr != 127.0.0.0/8 \
             tcp dport 1935 ip daddr . tcp dport != { 10.0.0.5 . 1935 }"
        );
        assert_eq!(
            output_match(Family::V4, &a("10.1.0.1:1935"), &untouched),
            "ip daddr 10.1.0.1 ip saddr != 127.0.0.0/8 tcp dport 1935",
            "a server elsewhere is never this bind's destination"
        );
        assert_eq!(
            output_match(Family::V6, &a("[::]:1935"), &untouched),
            "fib daddr type local ip6 daddr != ::1 ip6 saddr != ::1 tcp dport 1935 \
             ip6 daddr . tcp dport != { fd00::5 . 1935 }"
        );
    }

    #[test]
    fn servers_and_check_targets_are_left_alone() {
        let cfg = crate::config::parse_str(
            "backend be\n mode tcp\n server s1 10.0.0.1:1935 check port 5080\n \
             server s2 10.0.0.2:1935 check addr 10.0.0.9\n server s3 10.0.0.1:1935\n",
            std::path::Path::new("local.cfg"),
        )
        .expect("cfg");
        let set = ServerSet::from_config(cfg.proxy_backend("be").expect("backend"));
        assert_eq!(
            untouched(&set),
            vec![
                a("10.0.0.1:1935"),
                a("10.0.0.1:5080"),
                a("10.0.0.2:1935"),
                a("10.0.0.9:1935")
            ]
        );
    }
}

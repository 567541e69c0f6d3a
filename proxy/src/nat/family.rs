//! IPv4 and IPv6 frontends live in two tables of the same name, `ip amsproxy_nat` and
//! `ip6 amsproxy_nat`: the IPv4 one is what every earlier version wrote (a binary upgrade
//! from one takes it over as it is), and the IPv6 one exists only while an IPv6 frontend
//! does, so a host without IPv6 never needs its nat hooks. A frontend and its servers are
//! of one family (the config refuses a mix: the kernel's NAT does not translate between
//! families). This file holds the words that differ between the two.

use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is IPv4 on the wire.
    pub fn of(addr: &SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }

    /// The nftables table family.
    pub fn table(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The address expression (`ip daddr`, `ip6 saddr`…) is `{proto} daddr`.
    pub fn proto(self) -> &'static str {
        self.table()
    }

    /// `l3proto` of a `ct timeout` object.
    pub fn l3proto(self) -> &'static str {
        self.table()
    }

    /// The loopback network: connections from or to it are not balanced (`local.rs`).
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1",
        }
    }

    /// The sysctl that must be 1 for the kernel to forward translated connections.
    pub fn forwarding_sysctl(self) -> &'static str {
        match self {
            Family::V4 => "net.ipv4.ip_forward",
            Family::V6 => "net.ipv6.conf.all.forwarding",
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is on the wire.
pub fn plain(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// `ADDR . PORT` as nft writes a concatenation element (IPv6 unbracketed).
pub fn element(addr: &SocketAddr) -> String {
    format!("{} . {}", plain(*addr).ip(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:1935".parse().unwrap();
        assert_eq!(Family::of(&mapped), Family::V4);
        assert_eq!(element(&mapped), "10.0.0.1 . 1935");
        assert_eq!(plain(mapped), "10.0.0.1:1935".parse().unwrap());
        let v6: SocketAddr = "[fd00::2]:9000".parse().unwrap();
        assert_eq!(Family::of(&v6), Family::V6);
        assert_eq!(element(&v6), "fd00::2 . 9000");
    }
}

//! The header a server gets before any client byte, byte for byte what HAProxy sends (the
//! unit tests compare with headers HAProxy 2.6 wrote on the wire).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::crc32c::crc32c;
use super::parse::{TLV_CRC32C, V2_SIG};
use super::Origin;
use crate::config::{ProxyVersion, ServerParams};

/// What a v2 header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Command {
    /// The sender's own connection (a health check): no addresses.
    Local,
    /// A relayed connection: source, then destination.
    Proxy(SocketAddr, SocketAddr),
}

/// The header of a connection relayed for `origin`, if the server takes one.
pub fn for_server(params: &ServerParams, origin: &Origin) -> Option<Vec<u8>> {
    Some(match params.proxy_version()? {
        ProxyVersion::V1 => v1(origin.src, origin.dst),
        ProxyVersion::V2 => v2(
            V2Command::Proxy(origin.src, origin.dst),
            params.proxy_v2_crc32c,
        ),
    })
}

/// The header of a health check connection from `local` to `peer`, if checks send one: as
/// HAProxy, a v1 line naming the check's own two ends (the protocol's advice for checks,
/// which some servers need: they refuse `UNKNOWN`), a v2 `LOCAL` header.
pub fn for_check(params: &ServerParams, local: SocketAddr, peer: SocketAddr) -> Option<Vec<u8>> {
    Some(match params.check_proxy_version()? {
        ProxyVersion::V1 => v1(local, peer),
        ProxyVersion::V2 => v2(V2Command::Local, params.proxy_v2_crc32c),
    })
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`. A v1 line has one family for both addresses;
/// when they differ (an IPv4 client on a dual-stack bind seen as IPv6 on one side only), the
/// IPv4 one is written as IPv4-mapped IPv6.
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let line = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => format!("PROXY TCP4 {s} {d}"),
        (s, d) => format!("PROXY TCP6 {} {}", as_v6(s), as_v6(d)),
    };
    format!("{line} {} {}\r\n", src.port(), dst.port()).into_bytes()
}

/// The binary header: signature, version 2 and the command, family, length, addresses,
/// and with `crc` a CRC32C TLV over the whole header (its own value zeroed while summed).
pub fn v2(command: V2Command, crc: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36 + 7);
    out.extend_from_slice(&V2_SIG);
    match command {
        V2Command::Local => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
        V2Command::Proxy(src, dst) => {
            out.push(0x21);
            addresses(&mut out, src, dst);
        }
    }
    if crc {
        out.extend_from_slice(&[TLV_CRC32C, 0, 4, 0, 0, 0, 0]);
    }
    // The length field counts everything after the 16 fixed bytes; at most 36 + 7 here.
    let len = u16::try_from(out.len() - 16).unwrap_or(u16::MAX);
    out[14..16].copy_from_slice(&len.to_be_bytes());
    if crc {
        let sum = crc32c(&out);
        let at = out.len() - 4;
        out[at..].copy_from_slice(&sum.to_be_bytes());
    }
    out
}

/// Family byte, a length placeholder, then the address block: TCP over IPv4 when both ends
/// are IPv4, else TCP over IPv6 (IPv4 ends mapped).
fn addresses(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr) {
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.extend_from_slice(&[0x21, 0, 0]);
            out.extend_from_slice(&as_v6(s).octets());
            out.extend_from_slice(&as_v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

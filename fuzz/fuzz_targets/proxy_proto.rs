//! The PROXY protocol v1/v2 decoder an `accept-proxy` bind runs on a client's first bytes.
//! Properties: a complete header is no longer than the bytes it was given, and the addresses
//! it names, encoded again by the proxy's own encoders (what a `send-proxy` server gets),
//! decode to the same addresses (mixed families travel as IPv4-mapped IPv6).
#![no_main]

use std::net::{IpAddr, SocketAddr};

use proxy::upstream::proxy_proto::{self, Parsed, V2Command};

fn as_v6(a: SocketAddr) -> (std::net::Ipv6Addr, u16) {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    (ip, a.port())
}

fn decodes_to(bytes: &[u8], src: SocketAddr, dst: SocketAddr) {
    match proxy_proto::parse(bytes) {
        Ok(Parsed::Done(h)) => {
            assert_eq!(h.len, bytes.len(), "encoded header length");
            let (s, d) = h.addrs.expect("encoded addresses decode");
            assert_eq!((as_v6(s), as_v6(d)), (as_v6(src), as_v6(dst)));
        }
        other => panic!("the encoding of {src} {dst} does not decode: {other:?}"),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Done(header)) = proxy_proto::parse(data) else {
        return;
    };
    assert!(
        header.len <= data.len(),
        "header of {} bytes in {}",
        header.len,
        data.len()
    );
    if let Some((src, dst)) = header.addrs {
        decodes_to(&proxy_proto::v1(src, dst), src, dst);
        decodes_to(&proxy_proto::v2(V2Command::Proxy(src, dst), true), src, dst);
    }
});

//! ctnetlink event messages (conntrack NEW and DESTROY, as the kernel multicasts them to the
//! `NFNLGRP_CONNTRACK_*` groups) read into [`CtEvent`]. The input comes from the kernel, but
//! a parser on it is still a parser on bytes we did not write: every length is checked
//! against what is left, nothing indexes past a slice, and a message we cannot read is
//! skipped (`None`), never a panic. Attribute numbers are those of
//! `include/uapi/linux/netfilter/nfnetlink_conntrack.h`; no maintained crate covers them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW`: new entries, updates (state changes) and
/// dumped entries alike, all read as [`Kind::New`].
const MSG_CT_NEW: u16 = 1 << 8;
/// `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE`.
const MSG_CT_DELETE: u16 = (1 << 8) | 2;
/// `NLMSG_ERROR`, `NLMSG_DONE`, `NLMSG_OVERRUN` (the socket's receive buffer overflowed).
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// The type bits of an attribute, without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

// CTA_*
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_TIMESTAMP: u16 = 20;
// CTA_TUPLE_*
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// CTA_IP_*
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// CTA_PROTO_*
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
// CTA_COUNTERS_*
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
// CTA_TIMESTAMP_*
const CTA_TIMESTAMP_START: u16 = 1;
// CTA_PROTOINFO_TCP, then CTA_PROTOINFO_TCP_STATE
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

const IPPROTO_TCP: u8 = 6;

/// Conntrack's TCP state `TCP_CONNTRACK_TIME_WAIT`: both sides closed (then CLOSE, 8).
pub const TCP_STATE_TIME_WAIT: u8 = 7;

/// Conntrack's TCP state `TCP_CONNTRACK_CLOSE` (after TIME_WAIT, 7): where an RST leaves
/// an entry.
pub const TCP_STATE_CLOSE: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    New,
    Destroy,
}

/// Packets and bytes counted one way (IP packets, headers included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// One TCP conntrack event, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEvent {
    pub kind: Kind,
    /// The kernel's id of the entry (`CTA_ID`): NEW and DESTROY of one flow share it.
    pub id: u32,
    pub mark: u32,
    /// The original direction: client → the address it connected to.
    pub client: SocketAddr,
    pub dst: SocketAddr,
    /// The reply direction's source: the server the kernel's NAT chose.
    pub server: SocketAddr,
    /// Client → server (original direction), when accounting is on.
    pub up: Option<Count>,
    /// Server → client (reply direction).
    pub down: Option<Count>,
    /// When the entry was made (ns, CLOCK_REALTIME), with `nf_conntrack_timestamp=1`.
    pub started_ns: Option<u64>,
    /// The TCP state at the event (conntrack's numbering).
    pub tcp_state: Option<u8>,
}

/// What one netlink message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Event(CtEvent),
    /// The kernel dropped events (receive buffer full): flows may be missing.
    Overrun,
    /// Anything else: another protocol, a message we do not read, a malformed one.
    Other,
}

/// Splits a datagram into netlink messages and reads each.
pub fn parse_datagram(mut buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        out.push(parse_message(kind, &buf[NLMSG_HDRLEN..len]));
        buf = buf.get(align(len)..).unwrap_or_default();
    }
    out
}

fn parse_message(kind: u16, body: &[u8]) -> Message {
    let kind = match kind {
        MSG_CT_NEW => Kind::New,
        MSG_CT_DELETE => Kind::Destroy,
        NLMSG_OVERRUN => return Message::Overrun,
        NLMSG_ERROR => return Message::Other,
        _ => return Message::Other,
    };
    let Some(attrs) = body.get(NFGENMSG_LEN..) else {
        return Message::Other;
    };
    event(kind, attrs).map_or(Message::Other, Message::Event)
}

fn event(kind: Kind, attrs: &[u8]) -> Option<CtEvent> {
    let mut orig = None;
    let mut reply = None;
    let mut ev = CtEvent {
        kind,
        id: 0,
        mark: 0,
        client: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        dst: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        server: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        up: None,
        down: None,
        started_ns: None,
        tcp_state: None,
    };
    let mut has_id = false;
    for (t, v) in Attrs(attrs) {
        match t {
            CTA_TUPLE_ORIG => orig = tuple(v),
            CTA_TUPLE_REPLY => reply = tuple(v),
            CTA_MARK => ev.mark = be32(v)?,
            CTA_ID => {
                ev.id = be32(v)?;
                has_id = true;
            }
            CTA_COUNTERS_ORIG => ev.up = counters(v),
            CTA_COUNTERS_REPLY => ev.down = counters(v),
            CTA_TIMESTAMP => ev.started_ns = nested_u64(v, CTA_TIMESTAMP_START),
            CTA_PROTOINFO => ev.tcp_state = tcp_state(v),
            _ => {}
        }
    }
    let (client, dst) = orig?;
    let (server, _) = reply?;
    if !has_id {
        return None;
    }
    ev.client = client;
    ev.dst = dst;
    ev.server = server;
    Some(ev)
}

/// A TCP tuple: (source, destination), both IPv4 or both IPv6 (as the kernel sends them).
/// Other protocols, and a tuple whose two addresses differ in family, are `None`.
fn tuple(v: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let (mut src, mut dst, mut sport, mut dport, mut proto) = (None, None, None, None, None);
    for (t, inner) in Attrs(v) {
        match t {
            CTA_TUPLE_IP => {
                for (t, a) in Attrs(inner) {
                    match t {
                        CTA_IP_V4_SRC => src = ipv4(a),
                        CTA_IP_V4_DST => dst = ipv4(a),
                        CTA_IP_V6_SRC => src = ipv6(a),
                        CTA_IP_V6_DST => dst = ipv6(a),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (t, a) in Attrs(inner) {
                    match t {
                        CTA_PROTO_NUM => proto = a.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(a),
                        CTA_PROTO_DST_PORT => dport = be16(a),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (src, dst) = (src?, dst?);
    if proto? != IPPROTO_TCP || src.is_ipv4() != dst.is_ipv4() {
        return None;
    }
    Some((SocketAddr::new(src, sport?), SocketAddr::new(dst, dport?)))
}

fn counters(v: &[u8]) -> Option<Count> {
    Some(Count {
        packets: nested_u64(v, CTA_COUNTERS_PACKETS)?,
        bytes: nested_u64(v, CTA_COUNTERS_BYTES)?,
    })
}

fn tcp_state(v: &[u8]) -> Option<u8> {
    let (_, tcp) = Attrs(v).find(|(t, _)| *t == CTA_PROTOINFO_TCP)?;
    let (_, state) = Attrs(tcp).find(|(t, _)| *t == CTA_PROTOINFO_TCP_STATE)?;
    state.first().copied()
}

fn nested_u64(v: &[u8], want: u16) -> Option<u64> {
    let (_, a) = Attrs(v).find(|(t, _)| *t == want)?;
    Some(u64::from_be_bytes(a.get(..8)?.try_into().ok()?))
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

fn be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

fn ipv4(v: &[u8]) -> Option<IpAddr> {
    let o: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(o)))
}

fn ipv6(v: &[u8]) -> Option<IpAddr> {
    let o: [u8; 16] = v.get(..16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(o)))
}

fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// Netlink attributes of a buffer: (type, payload); stops at the first malformed one.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let t = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        let value = &b[4..len];
        self.0 = b.get(align(len)..).unwrap_or_default();
        Some((t, value))
    }
}

/// Test and fuzz helpers: builds the messages the kernel sends.
#[cfg(any(test, fuzzing))]
pub mod build {
    use super::*;

    pub fn attr(t: u16, nested: bool, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let t = if nested { t | 0x8000 } else { t };
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&t.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align(out.len()), 0);
        out
    }

    fn ip(v4: u16, v6: u16, addr: SocketAddr) -> Vec<u8> {
        match addr.ip() {
            IpAddr::V4(ip) => attr(v4, false, &ip.octets()),
            IpAddr::V6(ip) => attr(v6, false, &ip.octets()),
        }
    }

    fn tuple(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        let ip = [
            ip(CTA_IP_V4_SRC, CTA_IP_V6_SRC, src),
            ip(CTA_IP_V4_DST, CTA_IP_V6_DST, dst),
        ]
        .concat();
        let proto = [
            attr(CTA_PROTO_NUM, false, &[IPPROTO_TCP]),
            attr(CTA_PROTO_SRC_PORT, false, &src.port().to_be_bytes()),
            attr(CTA_PROTO_DST_PORT, false, &dst.port().to_be_bytes()),
        ]
        .concat();
        [
            attr(CTA_TUPLE_IP, true, &ip),
            attr(CTA_TUPLE_PROTO, true, &proto),
        ]
        .concat()
    }

    fn count(c: Count) -> Vec<u8> {
        [
            attr(CTA_COUNTERS_PACKETS, false, &c.packets.to_be_bytes()),
            attr(CTA_COUNTERS_BYTES, false, &c.bytes.to_be_bytes()),
        ]
        .concat()
    }

    /// The netlink message the kernel sends for `ev`.
    pub fn message(ev: &CtEvent) -> Vec<u8> {
        let mut attrs = [
            attr(CTA_TUPLE_ORIG, true, &tuple(ev.client, ev.dst)),
            attr(CTA_TUPLE_REPLY, true, &tuple(ev.server, ev.client)),
            attr(CTA_MARK, false, &ev.mark.to_be_bytes()),
            attr(CTA_ID, false, &ev.id.to_be_bytes()),
        ]
        .concat();
        if let Some(up) = ev.up {
            attrs.extend(attr(CTA_COUNTERS_ORIG, true, &count(up)));
        }
        if let Some(down) = ev.down {
            attrs.extend(attr(CTA_COUNTERS_REPLY, true, &count(down)));
        }
        if let Some(ns) = ev.started_ns {
            let ts = attr(CTA_TIMESTAMP_START, false, &ns.to_be_bytes());
            attrs.extend(attr(CTA_TIMESTAMP, true, &ts));
        }
        if let Some(state) = ev.tcp_state {
            let tcp = attr(CTA_PROTOINFO_TCP_STATE, false, &[state]);
            attrs.extend(attr(
                CTA_PROTOINFO,
                true,
                &attr(CTA_PROTOINFO_TCP, true, &tcp),
            ));
        }
        let kind = match ev.kind {
            Kind::New => MSG_CT_NEW,
            Kind::Destroy => MSG_CT_DELETE,
        };
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        // The family (AF_INET, AF_INET6), version 0, res_id 0.
        let family = if ev.client.is_ipv4() { 2 } else { 10 };
        out.extend_from_slice(&[family, 0, 0, 0]);
        out.extend(attrs);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::message;
    use super::*;

    fn sample(kind: Kind) -> CtEvent {
        CtEvent {
            kind,
            id: 77,
            mark: 0xa5a5_0001,
            client: "10.0.1.2:40000".parse().unwrap(),
            dst: "10.0.2.1:1935".parse().unwrap(),
            server: "10.0.3.2:1935".parse().unwrap(),
            up: Some(Count {
                packets: 10,
                bytes: 1_234,
            }),
            down: Some(Count {
                packets: 8,
                bytes: 99_999,
            }),
            started_ns: Some(1_700_000_000_000_000_000),
            tcp_state: Some(TCP_STATE_CLOSE),
        }
    }

    #[test]
    fn reads_what_the_kernel_sends() {
        for kind in [Kind::New, Kind::Destroy] {
            let ev = sample(kind);
            let mut two = message(&ev);
            two.extend(message(&ev));
            assert_eq!(parse_datagram(&two), vec![Message::Event(ev); 2]);
        }
    }

    #[test]
    fn reads_ipv6_flows() {
        let mut ev = sample(Kind::New);
        ev.client = "[fd00:1::2]:40000".parse().unwrap();
        ev.dst = "[fd00:1::1]:1935".parse().unwrap();
        ev.server = "[fd00:3::2]:9000".parse().unwrap();
        let msg = message(&ev);
        assert_eq!(msg[NLMSG_HDRLEN], 10, "AF_INET6 in the nfgenmsg");
        assert_eq!(parse_datagram(&msg), vec![Message::Event(ev)]);
        // A tuple of two families is nothing the kernel sends: skipped.
        ev.dst = "10.0.2.1:1935".parse().unwrap();
        assert_eq!(parse_datagram(&message(&ev)), vec![Message::Other]);
    }

    #[test]
    fn missing_parts_are_skipped_not_guessed() {
        let mut ev = sample(Kind::Destroy);
        ev.up = None;
        ev.down = None;
        ev.started_ns = None;
        ev.tcp_state = None;
        assert_eq!(parse_datagram(&message(&ev)), vec![Message::Event(ev)]);
    }

    /// The fuzz target's seeds (`fuzz/corpus/nat_event/`) are kernel messages we read.
    #[test]
    fn fuzz_seeds_are_events() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/nat_event");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("seed folder").flatten() {
            let data = std::fs::read(entry.path()).expect("seed");
            let got = parse_datagram(&data);
            assert!(!got.is_empty(), "{}", entry.path().display());
            for m in got {
                let Message::Event(ev) = m else {
                    panic!("{}: {m:?}", entry.path().display())
                };
                assert_eq!(parse_datagram(&message(&ev)), vec![Message::Event(ev)]);
                seen += 1;
            }
        }
        assert_eq!(seen, 5);
    }

    #[test]
    fn every_truncation_and_corruption_is_survived() {
        let mut v6 = sample(Kind::Destroy);
        v6.client = "[fd00:1::2]:40000".parse().unwrap();
        v6.dst = "[fd00:1::1]:1935".parse().unwrap();
        v6.server = "[fd00:3::2]:9000".parse().unwrap();
        for msg in [message(&sample(Kind::Destroy)), message(&v6)] {
            for cut in 0..msg.len() {
                let _ = parse_datagram(&msg[..cut]);
            }
            for at in 0..msg.len() {
                for byte in [0u8, 1, 3, 0x7f, 0xff] {
                    let mut bad = msg.clone();
                    bad[at] = byte;
                    let _ = parse_datagram(&bad);
                }
            }
        }
    }
}

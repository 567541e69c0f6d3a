//! Decoding a PROXY header from the first bytes of a connection. The bytes come from whoever
//! connected, so every length is checked before it is used, nothing is indexed unchecked,
//! and the header is bounded: a v1 line must end within 107 bytes (the protocol's own
//! limit), a v2 header within [`V2_MAX`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::crc32c::crc32c;
use super::ProxyHeaderError as E;

/// The longest v1 line, CRLF included (`PROXY UNKNOWN` with two full IPv6 addresses).
pub const V1_MAX: usize = 107;
/// The longest v2 header accepted. Senders put a few TLVs after the addresses (ALPN, SNI,
/// SSL facts, a unique id of ≤ 128 bytes, a cloud's endpoint id): HAProxy's own headers stay
/// well under 1 KiB. The field allows 64 KiB; a header that large is refused, not buffered.
pub const V2_MAX: usize = 2048;

/// The v2 signature: bytes no v1 line and no common protocol starts with.
pub(super) const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_SIG: &[u8] = b"PROXY ";
/// The fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// TLV type of the CRC32C checksum.
pub(super) const TLV_CRC32C: u8 = 0x03;

/// A complete header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Its length on the wire: the connection's own bytes start after it.
    pub len: usize,
    /// Source and destination; `None` for v1 `UNKNOWN`, v2 `LOCAL` and v2 families other
    /// than TCP over IPv4/IPv6: the connection's real addresses stand, as in HAProxy.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Every byte so far belongs to the header; it is at most `want` bytes long in all.
    Incomplete {
        want: usize,
    },
    Done(Header),
}

/// Decodes the header at the start of `buf` (v1 or v2, told apart by their signatures).
pub fn parse(buf: &[u8]) -> Result<Parsed, E> {
    let incomplete = Parsed::Incomplete { want: V1_MAX };
    if buf.is_empty() {
        return Ok(incomplete);
    }
    if starts_like(buf, &V2_SIG) {
        return if buf.len() < V2_FIXED {
            Ok(incomplete)
        } else {
            parse_v2(buf)
        };
    }
    if starts_like(buf, V1_SIG) {
        return if buf.len() < V1_SIG.len() {
            Ok(incomplete)
        } else {
            parse_v1(buf)
        };
    }
    Err(E::NotHeader)
}

/// `buf` starts with `sig`, or is a shorter start of it.
fn starts_like(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf.get(..n) == sig.get(..n)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, E> {
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or_default();
    match line_end(window)? {
        Some(end) => {
            let line = buf.get(V1_SIG.len()..end).unwrap_or_default();
            let addrs = v1_fields(line)?;
            Ok(Parsed::Done(Header {
                len: end + 2,
                addrs,
            }))
        }
        None if buf.len() >= V1_MAX => Err(E::Invalid("no CRLF within 107 bytes")),
        None => Ok(Parsed::Incomplete { want: V1_MAX }),
    }
}

/// Where the CRLF starts; `None` while the line may still end. A lone CR or LF is refused:
/// the protocol asks for the exact pair.
fn line_end(buf: &[u8]) -> Result<Option<usize>, E> {
    let Some(i) = buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Ok(None);
    };
    match (buf.get(i), buf.get(i + 1)) {
        (Some(b'\r'), Some(b'\n')) => Ok(Some(i)),
        (Some(b'\r'), None) => Ok(None),
        _ => Err(E::Invalid("a line ending other than CRLF")),
    }
}

/// The words after `PROXY `: `UNKNOWN [anything]`, or `TCP4|TCP6 SRC DST SPORT DPORT`
/// separated by exactly one space.
fn v1_fields(line: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, E> {
    let line = std::str::from_utf8(line).map_err(|_| E::Invalid("not ASCII"))?;
    let mut words = line.split(' ');
    let proto = words.next().unwrap_or_default();
    let v6 = match proto {
        // The rest of an UNKNOWN line is to be ignored.
        "UNKNOWN" => return Ok(None),
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(E::BadProto),
    };
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields.as_slice() else {
        return Err(E::Invalid(
            "a TCP line needs exactly four fields after the protocol",
        ));
    };
    let src = SocketAddr::new(v1_ip(src, v6)?, v1_port(sport)?);
    let dst = SocketAddr::new(v1_ip(dst, v6)?, v1_port(dport)?);
    Ok(Some((src, dst)))
}

/// An address of the line's family. The standard parsers refuse leading zeroes in IPv4
/// octets, which the protocol forbids as well.
fn v1_ip(word: &str, v6: bool) -> Result<IpAddr, E> {
    let ip = if v6 {
        word.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        word.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| E::Invalid("an address that is not of the line's family"))
}

/// A decimal port without leading zeroes, 0..=65535.
fn v1_port(word: &str) -> Result<u16, E> {
    let digits = !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = word.len() > 1 && word.starts_with('0');
    if !digits || leading_zero {
        return Err(E::Invalid("a malformed port"));
    }
    word.parse().map_err(|_| E::Invalid("a port above 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, E> {
    let byte = |i: usize| buf.get(i).copied().unwrap_or_default();
    let ver_cmd = byte(12);
    if ver_cmd >> 4 != 2 {
        return Err(E::Invalid("version other than 2"));
    }
    let total = V2_FIXED + usize::from(u16::from_be_bytes([byte(14), byte(15)]));
    if total > V2_MAX {
        return Err(E::Invalid("header larger than 2048 bytes"));
    }
    let Some(header) = buf.get(..total) else {
        return Ok(Parsed::Incomplete { want: total });
    };
    let family = byte(13);
    let body = header.get(V2_FIXED..).unwrap_or_default();
    let addrs = match ver_cmd & 0x0f {
        0x0 => {
            local_tlvs(header, body, family)?;
            None
        }
        0x1 => {
            let len = address_len(family)?;
            let (Some(block), Some(tlvs)) = (body.get(..len), body.get(len..)) else {
                return Err(E::Invalid("address block longer than the header"));
            };
            check_tlvs(header, tlvs)?;
            addresses(family, block)
        }
        _ => return Err(E::Invalid("command other than LOCAL or PROXY")),
    };
    Ok(Parsed::Done(Header { len: total, addrs }))
}

/// LOCAL (the sender's own connection, a health check): the protocol says to discard the
/// address block, family included, so only TLVs after a block that fits its family are
/// checked (HAProxy's LOCAL headers have family UNSPEC and TLVs right after the length).
fn local_tlvs(header: &[u8], body: &[u8], family: u8) -> Result<(), E> {
    match address_len(family).ok().and_then(|len| body.get(len..)) {
        Some(tlvs) => check_tlvs(header, tlvs),
        None => Ok(()),
    }
}

/// The address block's size for a family/transport byte. Families and transports beyond
/// the protocol's (UNSPEC, INET, INET6, UNIX × UNSPEC, STREAM, DGRAM) are refused.
fn address_len(family: u8) -> Result<usize, E> {
    if family & 0x0f > 2 {
        return Err(E::Invalid("unknown transport"));
    }
    match family >> 4 {
        0 => Ok(0),
        1 => Ok(12),
        2 => Ok(36),
        3 => Ok(216),
        _ => Err(E::Invalid("unknown address family")),
    }
}

/// TCP over IPv4 or IPv6; anything else (UDP, unix sockets, UNSPEC) keeps the connection's
/// real addresses, as HAProxy does.
fn addresses(family: u8, block: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let port = |at: usize| Some(u16::from_be_bytes(block.get(at..at + 2)?.try_into().ok()?));
    match family {
        0x11 => {
            let ip = |at: usize| -> Option<Ipv4Addr> {
                Some(<[u8; 4]>::try_from(block.get(at..at + 4)?).ok()?.into())
            };
            Some((
                SocketAddr::new(ip(0)?.into(), port(8)?),
                SocketAddr::new(ip(4)?.into(), port(10)?),
            ))
        }
        0x21 => {
            let ip = |at: usize| -> Option<Ipv6Addr> {
                Some(<[u8; 16]>::try_from(block.get(at..at + 16)?).ok()?.into())
            };
            Some((
                SocketAddr::new(ip(0)?.into(), port(32)?),
                SocketAddr::new(ip(16)?.into(), port(34)?),
            ))
        }
        _ => None,
    }
}

/// Every TLV must fit in the header; a CRC32C TLV must match the header's checksum (taken
/// with its own value zeroed), as HAProxy checks it.
fn check_tlvs(header: &[u8], tlvs: &[u8]) -> Result<(), E> {
    let start = header.len() - tlvs.len();
    let mut at = 0;
    while at < tlvs.len() {
        let Some(&[kind, hi, lo]) = tlvs.get(at..at + 3) else {
            return Err(E::Invalid("a TLV cut short"));
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let value_at = at + 3;
        let Some(value) = tlvs.get(value_at..value_at + len) else {
            return Err(E::Invalid("a TLV longer than the header"));
        };
        if kind == TLV_CRC32C {
            check_crc(header, start + value_at, value)?;
        }
        at = value_at + len;
    }
    Ok(())
}

fn check_crc(header: &[u8], value_at: usize, value: &[u8]) -> Result<(), E> {
    let Ok(sent) = <[u8; 4]>::try_from(value) else {
        return Err(E::Invalid("a CRC32C TLV that is not 4 bytes"));
    };
    let mut zeroed = header.to_vec();
    if let Some(v) = zeroed.get_mut(value_at..value_at + 4) {
        v.fill(0);
    }
    if crc32c(&zeroed) != u32::from_be_bytes(sent) {
        return Err(E::Invalid("CRC32C mismatch"));
    }
    Ok(())
}

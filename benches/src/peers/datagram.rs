//! The datagrams of the SRT-like load (`srt-ingest`): what each one carries so that the
//! backend can count loss and reordering per flow and measure one-way latency, and the
//! ACK-sized reply it sends back.
//!
//! Client and backend are threads of the bench process, so a send timestamp read from one
//! monotonic clock ([`now_ns`]) and compared at the backend is a true one-way latency.

use std::sync::OnceLock;
use std::time::Instant;

/// An SRT data packet carrying seven MPEG-TS packets (7 × 188), SRT's usual payload.
pub const DATAGRAM_LEN: usize = 1316;
/// An SRT ACK control packet (header and the ACK's fields).
pub const REPLY_LEN: usize = 44;
/// Bytes of the header at the start of each datagram and reply.
pub const HEADER_LEN: usize = 24;

/// Marks the bench's datagrams: anything else arriving is counted as an error.
const DATA_MAGIC: u32 = 0x5352_5444; // "SRTD"
const REPLY_MAGIC: u32 = 0x5352_5441; // "SRTA"

/// What a datagram (or a reply) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The flow's index in the load (0..flows).
    pub flow: u32,
    /// The datagram's sequence number in its flow; in a reply, the last one received.
    pub seq: u64,
    /// [`now_ns`] when the datagram was sent; in a reply, when the backend sent it.
    pub sent_ns: u64,
}

/// Nanoseconds since the first call in this process (monotonic).
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl Header {
    /// A data datagram: the header, then filler up to [`DATAGRAM_LEN`].
    pub fn data(&self) -> [u8; DATAGRAM_LEN] {
        let mut b = [0x47u8; DATAGRAM_LEN];
        self.write(DATA_MAGIC, &mut b);
        b
    }

    /// A reply: the header, then zeroes up to [`REPLY_LEN`].
    pub fn reply(&self) -> [u8; REPLY_LEN] {
        let mut b = [0u8; REPLY_LEN];
        self.write(REPLY_MAGIC, &mut b);
        b
    }

    /// The header of a data datagram; `None` for anything that is not one in full.
    pub fn parse_data(b: &[u8]) -> Option<Header> {
        if b.len() != DATAGRAM_LEN {
            return None;
        }
        Header::read(DATA_MAGIC, b)
    }

    /// The header of a reply; `None` for anything that is not one in full.
    pub fn parse_reply(b: &[u8]) -> Option<Header> {
        if b.len() != REPLY_LEN {
            return None;
        }
        Header::read(REPLY_MAGIC, b)
    }

    fn write(&self, magic: u32, b: &mut [u8]) {
        b[0..4].copy_from_slice(&magic.to_be_bytes());
        b[4..8].copy_from_slice(&self.flow.to_be_bytes());
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    fn read(magic: u32, b: &[u8]) -> Option<Header> {
        let word = |r: std::ops::Range<usize>| b.get(r);
        let m = u32::from_be_bytes(word(0..4)?.try_into().ok()?);
        if m != magic {
            return None;
        }
        Some(Header {
            flow: u32::from_be_bytes(word(4..8)?.try_into().ok()?),
            seq: u64::from_be_bytes(word(8..16)?.try_into().ok()?),
            sent_ns: u64::from_be_bytes(word(16..24)?.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Header = Header {
        flow: 7,
        seq: 0x0102_0304_0506,
        sent_ns: 123_456_789,
    };

    #[test]
    fn data_and_reply_round_trip() {
        let d = H.data();
        assert_eq!(d.len(), DATAGRAM_LEN);
        assert_eq!(Header::parse_data(&d), Some(H));
        let r = H.reply();
        assert_eq!(r.len(), REPLY_LEN);
        assert_eq!(Header::parse_reply(&r), Some(H));
    }

    #[test]
    fn wrong_kind_length_or_magic_is_refused() {
        let d = H.data();
        let r = H.reply();
        assert_eq!(Header::parse_reply(&d), None, "data is not a reply");
        assert_eq!(Header::parse_data(&r), None, "a reply is not data");
        assert_eq!(
            Header::parse_data(&d[..DATAGRAM_LEN - 1]),
            None,
            "truncated"
        );
        assert_eq!(Header::parse_data(&d[..HEADER_LEN]), None, "header only");
        let mut bad = d;
        bad[0] ^= 0xff;
        assert_eq!(Header::parse_data(&bad), None, "bad magic");
        assert_eq!(Header::parse_data(&[]), None);
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}

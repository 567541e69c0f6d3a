//! Answers read defensively: the bytes are network input. hickory-proto decodes the message;
//! this file only checks it is the reply to our question and picks the records out. Nothing
//! here panics or allocates beyond the message's own size.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::error::DnsError;

/// The most records taken from one answer: more would only be ignored by the slots anyway.
pub const MAX_RECORDS: usize = 256;

/// What an answer says about the name asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub id: u16,
    /// A and AAAA records (answer section), with their TTLs.
    pub addrs: Vec<(IpAddr, u32)>,
    /// SRV records of the answer section.
    pub srvs: Vec<Srv>,
    /// A and AAAA records of the additional section, by owner name (the SRV targets).
    pub extra: Vec<(Name, IpAddr, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub target: Name,
    pub port: u16,
    pub weight: u16,
    pub ttl: u32,
}

impl Answer {
    /// The smallest TTL among the records, if any.
    pub fn min_ttl(&self) -> Option<u32> {
        let a = self.addrs.iter().map(|(_, t)| *t);
        let s = self.srvs.iter().map(|s| s.ttl);
        a.chain(s).min()
    }
}

/// Bytes in, records out: decodes a DNS response and returns its records, or why it cannot
/// be used (malformed, truncated, not a response, NXDOMAIN, REFUSED, other error codes).
/// The question is not checked here (see [`matches`]); this is the part a fuzzer drives.
pub fn parse_answer(bytes: &[u8]) -> Result<Answer, DnsError> {
    let m = Message::from_vec(bytes).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if m.metadata.message_type != MessageType::Response {
        return Err(DnsError::Mismatch("not a response"));
    }
    if m.metadata.truncation {
        return Err(DnsError::Truncated);
    }
    match m.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Err(DnsError::NxDomain),
        ResponseCode::Refused => return Err(DnsError::Refused),
        other => return Err(DnsError::Other(other.to_string())),
    }
    let mut out = Answer {
        id: m.metadata.id,
        ..Answer::default()
    };
    for r in m.answers.iter().take(MAX_RECORDS) {
        match &r.data {
            RData::A(a) => out.addrs.push((IpAddr::V4(a.0), r.ttl)),
            RData::AAAA(a) => out.addrs.push((IpAddr::V6(a.0), r.ttl)),
            RData::SRV(s) => out.srvs.push(Srv {
                target: s.target.clone(),
                port: s.port,
                weight: s.weight,
                ttl: r.ttl,
            }),
            // CNAME chains and the like: the resolver has followed them; only the final
            // records matter.
            _ => {}
        }
    }
    for r in m.additionals.iter().take(MAX_RECORDS) {
        match &r.data {
            RData::A(a) => out.extra.push((r.name.clone(), IpAddr::V4(a.0), r.ttl)),
            RData::AAAA(a) => out.extra.push((r.name.clone(), IpAddr::V6(a.0), r.ttl)),
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `bytes` answer the question `name`/`kind` we asked with `id`: the id and the
/// question section must both match (a stray or forged packet is dropped).
pub fn matches(bytes: &[u8], id: u16, name: &Name, kind: RecordType) -> Result<(), DnsError> {
    let m = Message::from_vec(bytes).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if m.metadata.id != id {
        return Err(DnsError::Mismatch("another query id"));
    }
    match m.queries.as_slice() {
        [q] if q.query_type == kind && q.name.eq_ignore_root(name) => Ok(()),
        _ => Err(DnsError::Mismatch("another question")),
    }
}

/// The records of `kind` (`A` or `AAAA`) in `answer`, with their TTLs.
pub fn addrs_of(answer: &Answer, kind: RecordType) -> Vec<(IpAddr, u32)> {
    answer
        .addrs
        .iter()
        .filter(|(ip, _)| ip.is_ipv4() == (kind == RecordType::A))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::Record;
    use std::net::Ipv4Addr;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn reply(id: u16, q: &str, kind: RecordType, records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::response(id, OpCode::Query);
        m.add_query(Query::query(name(q), kind));
        m.add_answers(records);
        m.to_vec().expect("encode")
    }

    #[test]
    fn a_records_come_out_with_their_ttl() {
        let rec = Record::from_rdata(name("a.test."), 7, RData::A(A(Ipv4Addr::new(127, 0, 0, 9))));
        let bytes = reply(42, "a.test.", RecordType::A, vec![rec]);
        let got = parse_answer(&bytes).expect("valid");
        assert_eq!(got.addrs, [(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), 7)]);
        assert_eq!(got.min_ttl(), Some(7));
        assert!(matches(&bytes, 42, &name("A.TEST."), RecordType::A).is_ok());
        assert_eq!(
            matches(&bytes, 43, &name("a.test."), RecordType::A),
            Err(DnsError::Mismatch("another query id"))
        );
        assert!(matches(&bytes, 42, &name("b.test."), RecordType::A).is_err());
    }

    #[test]
    fn srv_records_keep_port_and_weight() {
        let srv = SRV::new(0, 512, 8081, name("n1.test."));
        let rec = Record::from_rdata(name("_h._tcp.test."), 5, RData::SRV(srv));
        let got =
            parse_answer(&reply(1, "_h._tcp.test.", RecordType::SRV, vec![rec])).expect("valid");
        assert_eq!(got.srvs.len(), 1);
        assert_eq!((got.srvs[0].port, got.srvs[0].weight), (8081, 512));
    }

    #[test]
    fn garbage_truncated_and_errors_are_refused() {
        assert!(matches!(parse_answer(b""), Err(DnsError::Malformed(_))));
        assert!(matches!(
            parse_answer(&[0xff; 40]),
            Err(DnsError::Malformed(_)) | Err(DnsError::Other(_))
        ));
        let rec = Record::from_rdata(name("a.test."), 7, RData::A(A(Ipv4Addr::LOCALHOST)));
        let whole = reply(9, "a.test.", RecordType::A, vec![rec]);
        // Every cut of a valid answer is refused or read without panicking.
        for cut in 0..whole.len() {
            let _ = parse_answer(&whole[..cut]);
        }
        let mut tc = whole.clone();
        tc[2] |= 0x02;
        assert_eq!(parse_answer(&tc), Err(DnsError::Truncated));
        let mut nx = whole.clone();
        nx[3] = (nx[3] & 0xf0) | 3;
        assert_eq!(parse_answer(&nx), Err(DnsError::NxDomain));
        let mut refused = whole;
        refused[3] = (refused[3] & 0xf0) | 5;
        assert_eq!(parse_answer(&refused), Err(DnsError::Refused));
    }
}

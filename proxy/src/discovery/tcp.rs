//! One exchange over TCP (RFC 7766): connect, send the query framed with its length, read
//! the framed answer, all within one limit (`timeout retry`). A fresh connection each time:
//! a resolution asks one question at a time, and nothing is left open between rounds.

use std::net::SocketAddr;
use std::time::Duration;

use compio::buf::BufResult;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;

use super::answer::{self, Answer};
use super::client::Question;
use super::error::DnsError;
use super::frame;

/// The answer of `ns` to `query` (already built for `q`): `Err` when none could be used (no
/// connection, no answer in `limit`, an answer cut short, malformed, truncated or not ours),
/// `Ok` with its outcome otherwise (records, NXDOMAIN, REFUSED, another code).
pub async fn exchange(
    ns: SocketAddr,
    query: &[u8],
    q: Question<'_>,
    limit: Duration,
) -> Result<Result<Answer, DnsError>, DnsError> {
    let wire = frame::framed(query)?;
    let bytes = compio::time::timeout(limit, ask(ns, wire))
        .await
        .map_err(|_| DnsError::Timeout)??;
    answer::matches(&bytes, q.id, q.name, q.kind)?;
    match answer::parse_answer(&bytes) {
        Err(e) if e.is_dropped_packet() => Err(e),
        outcome => Ok(outcome),
    }
}

async fn ask(ns: SocketAddr, wire: Vec<u8>) -> Result<Vec<u8>, DnsError> {
    let io = |e: std::io::Error| DnsError::Io(format!("{ns} over TCP: {e}"));
    let mut stream = TcpStream::connect(ns).await.map_err(io)?;
    let BufResult(sent, _) = stream.write_all(wire).await;
    sent.map_err(io)?;
    frame::read(&mut stream).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener};
    use std::thread;

    fn name() -> Name {
        Name::from_ascii("many.test.").expect("name")
    }

    /// A nameserver on loopback that reads one framed query and does `answer` with it.
    fn server(
        answer: impl FnOnce(Vec<u8>, &mut std::net::TcpStream) + Send + 'static,
    ) -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = l.local_addr().expect("addr");
        thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut query).is_ok() {
                answer(query, &mut s);
            }
        });
        addr
    }

    /// The reply to `query` with `n` A records (more than 512 bytes for n > 30).
    fn reply(query: &[u8], n: u8) -> Vec<u8> {
        let q = Message::from_vec(query).expect("our query");
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.add_query(Query::query(name(), RecordType::A));
        for i in 0..n {
            let a = RData::A(A(Ipv4Addr::new(127, 0, 9, i)));
            m.add_answer(Record::from_rdata(name(), 5, a));
        }
        m.to_vec().expect("encode")
    }

    fn ask_it(ns: SocketAddr, limit: Duration) -> Result<Result<Answer, DnsError>, DnsError> {
        let query = super::super::query::build(77, &name(), RecordType::A, 512).expect("query");
        let q = Question {
            id: 77,
            name: &name(),
            kind: RecordType::A,
        };
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(exchange(ns, &query, q, limit))
    }

    #[test]
    fn a_large_answer_is_read_in_pieces() {
        let ns = server(|query, s| {
            let wire = frame::framed(&reply(&query, 60)).expect("frame");
            // Written in small pieces: the reader joins short reads.
            for piece in wire.chunks(100) {
                let _ = s.write_all(piece);
                let _ = s.flush();
                thread::sleep(Duration::from_millis(2));
            }
        });
        let got = ask_it(ns, Duration::from_secs(5));
        let answer = got.expect("exchange").expect("records");
        assert_eq!(answer.addrs.len(), 60);
    }

    #[test]
    fn a_peer_that_never_answers_times_out() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let ns = server(move |_, _| {
            // Holds the connection open, silent, until the test is done.
            let _ = rx.recv_timeout(Duration::from_secs(10));
        });
        let started = std::time::Instant::now();
        let got = ask_it(ns, Duration::from_millis(200));
        assert_eq!(got, Err(DnsError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(2));
        let _ = tx.send(());
    }

    #[test]
    fn answers_cut_short_or_not_ours_are_refused() {
        // Announces 300 bytes, sends 10, closes.
        let ns = server(|_, s| {
            let _ = s.write_all(&[0x01, 0x2c]);
            let _ = s.write_all(&[0u8; 10]);
        });
        let got = ask_it(ns, Duration::from_secs(5));
        assert!(matches!(got, Err(DnsError::Malformed(_))), "{got:?}");

        // Another id.
        let ns = server(|query, s| {
            let mut r = reply(&query, 1);
            r[0] ^= 0xff;
            let _ = s.write_all(&frame::framed(&r).expect("frame"));
        });
        let got = ask_it(ns, Duration::from_secs(5));
        assert_eq!(got, Err(DnsError::Mismatch("another query id")));

        // Truncated even over TCP: nothing to use.
        let ns = server(|query, s| {
            let mut r = reply(&query, 1);
            r[2] |= 0x02;
            let _ = s.write_all(&frame::framed(&r).expect("frame"));
        });
        assert_eq!(ask_it(ns, Duration::from_secs(5)), Err(DnsError::Truncated));

        // Nobody listening.
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let ns = closed.local_addr().expect("addr");
        drop(closed);
        let got = ask_it(ns, Duration::from_secs(5));
        assert!(matches!(got, Err(DnsError::Io(_))), "{got:?}");
    }
}

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
    use super::super::fake::{self, name};
    use super::*;
    use hickory_proto::rr::RecordType;
    use std::io::Write;
    use std::net::{Ipv4Addr, TcpListener};
    use std::thread;

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
        let ns = fake::tcp_server(|query, s| {
            let wire = frame::framed(&fake::reply(&query, 60)).expect("frame");
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
        let ns = fake::tcp_server(move |_, _| {
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
        let ns = fake::tcp_server(|_, s| {
            let _ = s.write_all(&[0x01, 0x2c]);
            let _ = s.write_all(&[0u8; 10]);
        });
        let got = ask_it(ns, Duration::from_secs(5));
        assert!(matches!(got, Err(DnsError::Malformed(_))), "{got:?}");

        // Another id.
        let ns = fake::tcp_server(|query, s| {
            let mut r = fake::reply(&query, 1);
            r[0] ^= 0xff;
            fake::send_framed(s, &r);
        });
        let got = ask_it(ns, Duration::from_secs(5));
        assert_eq!(got, Err(DnsError::Mismatch("another query id")));

        // Truncated even over TCP: nothing to use.
        let ns = fake::tcp_server(|query, s| fake::send_framed(s, &fake::truncated(&query, 1)));
        assert_eq!(ask_it(ns, Duration::from_secs(5)), Err(DnsError::Truncated));

        // Nobody listening.
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let ns = closed.local_addr().expect("addr");
        drop(closed);
        let got = ask_it(ns, Duration::from_secs(5));
        assert!(matches!(got, Err(DnsError::Io(_))), "{got:?}");
    }
}

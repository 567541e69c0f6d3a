//! Tests only: a nameserver on loopback, UDP and TCP on one port, whose answers the test
//! writes, and the answers it writes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;

use hickory_proto::op::{Message, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub fn name() -> Name {
    Name::from_ascii("many.test.").expect("name")
}

/// The reply to `query` (`many.test` A) with `n` A records in 127.0.9.0/24.
pub fn reply(query: &[u8], n: u8) -> Vec<u8> {
    let q = Message::from_vec(query).expect("our query");
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.add_query(Query::query(name(), RecordType::A));
    for i in 0..n {
        let a = RData::A(A(Ipv4Addr::new(127, 0, 9, i)));
        m.add_answer(Record::from_rdata(name(), 5, a));
    }
    m.to_vec().expect("encode")
}

/// `reply` with the TC bit set.
pub fn truncated(query: &[u8], n: u8) -> Vec<u8> {
    let mut r = reply(query, n);
    r[2] |= 0x02;
    r
}

/// Takes one TCP connection on `l`, reads one framed query and lets `answer` write to it.
pub fn serve_tcp(l: TcpListener, answer: impl FnOnce(Vec<u8>, &mut TcpStream) + Send + 'static) {
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
}

/// A TCP listener on loopback answering one query with `answer`.
pub fn tcp_server(answer: impl FnOnce(Vec<u8>, &mut TcpStream) + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    serve_tcp(l, answer);
    addr
}

/// A UDP socket and a TCP listener on the same loopback port.
pub fn both_on_one_port() -> (UdpSocket, TcpListener) {
    loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
}

/// Answers every UDP query on `udp` with `answer` of it, until the socket errs.
pub fn serve_udp(udp: UdpSocket, answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static) {
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&answer(&buf[..n]), from);
        }
    });
}

/// Writes a framed message.
pub fn send_framed(s: &mut TcpStream, message: &[u8]) {
    let _ = s.write_all(&super::frame::framed(message).expect("frame"));
}

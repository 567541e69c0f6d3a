//! A backend that keeps every byte each connection brought, a PROXY header included, and
//! answers each request head with a small `200` on the same connection (keep-alive): what a
//! server behind the proxy saw, byte for byte. A PROXY header at a connection's start is
//! skipped before looking for request heads (a v2 signature itself holds `\r\n\r\n`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::wait_until;

const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n";

type Record = Arc<Mutex<Vec<u8>>>;

pub struct Recorder {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Record>>>,
}

impl Recorder {
    pub fn start(addr: SocketAddr) -> Recorder {
        let listener = TcpListener::bind(addr).expect("binding the recording backend");
        let conns: Arc<Mutex<Vec<Record>>> = Arc::default();
        let list = conns.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = Record::default();
                list.lock().expect("records").push(record.clone());
                std::thread::spawn(move || serve(stream, &record));
            }
        });
        Recorder { addr, conns }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What each connection sent so far, in accept order.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        self.conns
            .lock()
            .expect("records")
            .iter()
            .map(|r| r.lock().expect("record").clone())
            .collect()
    }

    /// Waits (bounded) until `n` connections each hold a request head, and returns them.
    pub fn wait_requests(&self, n: usize) -> Vec<Vec<u8>> {
        wait_until(
            &format!("{n} connection(s) with a request at the backend"),
            Duration::from_secs(15),
            || {
                let got = self.connections();
                let with_head = got
                    .iter()
                    .filter(|c| requests_from(c).is_some_and(|at| count_heads(&c[at..]) > 0))
                    .count();
                (got.len() >= n && with_head >= n).then_some(got)
            },
        )
    }
}

/// Records and answers until the peer closes.
fn serve(mut stream: TcpStream, record: &Record) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut answered = 0;
    let mut chunk = [0u8; 16384];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            return;
        }
        let data = {
            let mut r = record.lock().expect("record");
            r.extend_from_slice(&chunk[..n]);
            r.clone()
        };
        let heads = requests_from(&data).map_or(0, |at| count_heads(&data[at..]));
        for _ in answered..heads {
            if stream.write_all(REPLY).is_err() {
                return;
            }
        }
        answered = answered.max(heads);
    }
}

/// Where the requests start: after a complete PROXY header, if the connection began with
/// one; `None` while that header is incomplete.
pub fn requests_from(data: &[u8]) -> Option<usize> {
    if data.starts_with(V2_SIG) {
        let len = u16::from_be_bytes([*data.get(14)?, *data.get(15)?]);
        let end = 16 + usize::from(len);
        return (data.len() >= end).then_some(end);
    }
    if data.starts_with(b"PROXY ") {
        return data.windows(2).position(|w| w == b"\r\n").map(|i| i + 2);
    }
    Some(0)
}

fn count_heads(data: &[u8]) -> usize {
    data.windows(4).filter(|w| *w == b"\r\n\r\n").count()
}

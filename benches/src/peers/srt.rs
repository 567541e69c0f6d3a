//! The SRT-like ingest load (`srt-ingest`): N paced UDP flows, each its own socket (its own
//! source port, as each SRT caller is), sending a [`DATAGRAM_LEN`]-byte datagram every
//! `DATAGRAM_LEN * 8 / rate` seconds with its sequence number and send timestamp, and reading
//! the backend's ACK-sized replies back. One epoll thread drives every flow; start phases are
//! spread over one interval so the aggregate is smooth, as with independent publishers.
//!
//! Each socket is connected to the target: replies come from the address the flow writes to
//! in every variant (the backend itself, nginx's `listen` socket, the proxy's `dgram-bind`).

use super::datagram::{now_ns, Header, DATAGRAM_LEN, REPLY_LEN};
use super::udp_backend::set_rcvbuf;
use super::Threads;
use crate::error::{BenchError, Result};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub flows: usize,
    pub mbit_per_flow: f64,
}

impl Params {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(DATAGRAM_LEN as f64 * 8.0 / (self.mbit_per_flow * 1e6))
    }
}

/// Shared with the orchestrator.
#[derive(Debug, Default)]
pub struct Shared {
    /// Datagrams the kernel took (what the backend must receive).
    pub sent: AtomicU64,
    /// Sends refused with EAGAIN (the socket's send queue full): not sent, not counted above.
    pub send_blocked: AtomicU64,
    pub replies: AtomicU64,
    /// Failed sends, ICMP errors (port unreachable) and stray datagrams.
    pub errors: AtomicU64,
    /// Set: no more datagrams are sent, replies are still read.
    quiet: AtomicBool,
    stop: AtomicBool,
}

pub type Client = Threads<Shared>;

impl Client {
    /// Opens the flows' sockets on `bind_ip` (a bind or connect that fails fails the start)
    /// and starts sending.
    pub fn start(bind_ip: IpAddr, target: SocketAddr, p: Params) -> Result<Client> {
        let sockets = (0..p.flows)
            .map(|_| open(bind_ip, target))
            .collect::<Result<Vec<_>>>()?;
        let mut client = Threads::new(Shared::default(), |s| &s.stop);
        client.spawn("bench-srt", "srt load", move |s| match Poll::new() {
            Ok(poll) => Driver::new(poll, sockets, p.interval(), &s).run(),
            Err(_) => {
                s.errors.fetch_add(1, Relaxed);
            }
        })?;
        Ok(client)
    }

    /// Stops sending; replies in flight are still read until [`Client::finish`].
    pub fn quiet(&self) {
        self.shared.quiet.store(true, Relaxed);
    }

    pub fn finish(mut self) {
        self.stop();
    }
}

fn open(bind_ip: IpAddr, target: SocketAddr) -> Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))
        .map_err(|e| BenchError::io(format!("bind udp {bind_ip}:0"), e))?;
    s.connect(target)
        .map_err(|e| BenchError::io(format!("connect udp {target}"), e))?;
    s.set_nonblocking(true)
        .map_err(|e| BenchError::io("udp nonblocking", e))?;
    // Replies are small and sparse; the default buffer would do, but a descheduled load
    // thread must not be what loses them.
    set_rcvbuf(&s, 256 << 10);
    Ok(UdpSocket::from_std(s))
}

struct Driver<'a> {
    poll: Poll,
    sockets: Vec<UdpSocket>,
    /// The next sequence number of each flow.
    seq: Vec<u64>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    interval: Duration,
    shared: &'a Shared,
}

impl<'a> Driver<'a> {
    fn new(
        poll: Poll,
        sockets: Vec<UdpSocket>,
        interval: Duration,
        shared: &'a Shared,
    ) -> Driver<'a> {
        let now = Instant::now();
        let n = sockets.len().max(1);
        // Spread the flows' phases over one interval, deterministically.
        let timers = (0..sockets.len())
            .map(|i| Reverse((now + interval.mul_f64(i as f64 / n as f64), i)))
            .collect();
        Driver {
            poll,
            seq: vec![0; sockets.len()],
            sockets,
            timers,
            interval,
            shared,
        }
    }

    fn run(mut self) {
        for (i, s) in self.sockets.iter_mut().enumerate() {
            if self
                .poll
                .registry()
                .register(s, Token(i), Interest::READABLE)
                .is_err()
            {
                self.shared.errors.fetch_add(1, Relaxed);
            }
        }
        let mut events = Events::with_capacity(1024);
        while !self.shared.stop.load(Relaxed) {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    self.shared.errors.fetch_add(1, Relaxed);
                    return;
                }
            }
            for ev in events.iter() {
                self.read_replies(ev.token().0);
            }
            if !self.shared.quiet.load(Relaxed) {
                self.send_due();
            }
        }
    }

    fn next_timeout(&self) -> Duration {
        match self.timers.peek() {
            Some(Reverse((due, _))) if !self.shared.quiet.load(Relaxed) => due
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
            _ => Duration::from_millis(20),
        }
    }

    fn send_due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((due, i))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            self.send(i);
            // Keep the schedule (due + interval), so a late wake-up does not lower the rate.
            self.timers.push(Reverse((due + self.interval, i)));
        }
    }

    fn send(&mut self, i: usize) {
        let h = Header {
            flow: i as u32,
            seq: self.seq[i],
            sent_ns: now_ns(),
        };
        match self.sockets[i].send(&h.data()) {
            Ok(_) => {
                self.seq[i] += 1;
                self.shared.sent.fetch_add(1, Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.shared.send_blocked.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.shared.errors.fetch_add(1, Relaxed);
            }
        }
    }

    fn read_replies(&mut self, i: usize) {
        let mut buf = [0u8; REPLY_LEN + 1];
        loop {
            match self.sockets[i].recv(&mut buf) {
                Ok(n) if Header::parse_reply(&buf[..n]).is_some_and(|h| h.flow == i as u32) => {
                    self.shared.replies.fetch_add(1, Relaxed);
                }
                Ok(_) => {
                    self.shared.errors.fetch_add(1, Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // An ICMP port unreachable for an earlier send (nothing bound there yet) is
                // reported once, by whichever call comes next; the socket stays usable.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    self.shared.errors.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    self.shared.errors.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_mbit_is_one_datagram_per_2_6_ms() {
        let p = Params {
            flows: 100,
            mbit_per_flow: 4.0,
        };
        let us = p.interval().as_micros();
        assert_eq!(us, 2632, "1316 B * 8 / 4 Mbit/s");
    }

    /// Straight to the backend on loopback: every datagram sent is received, in order, every
    /// 4th is answered and every answer read, and the window's latencies are recorded.
    #[test]
    fn every_datagram_reaches_the_backend_and_every_reply_comes_back() {
        use super::super::udp_backend::{UdpBackend, REPLY_EVERY};
        let ip: IpAddr = "127.0.77.2".parse().unwrap();
        let backend = UdpBackend::start(ip).unwrap();
        let b = backend.shared();
        b.recording.store(true, Relaxed);
        // Slow enough that all of it fits the smallest default receive buffer (~90 datagrams)
        // should the backend's thread not run for the whole test.
        let p = Params {
            flows: 3,
            mbit_per_flow: 1.0,
        };
        let client = Client::start("127.0.77.3".parse().unwrap(), backend.addr, p).unwrap();
        let c = client.shared.clone();
        let settled = |limit: u64, f: &dyn Fn() -> bool| {
            for _ in 0..limit {
                if f() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        settled(500, &|| c.sent.load(Relaxed) >= 40);
        client.quiet();
        let sent = c.sent.load(Relaxed);
        settled(500, &|| b.received.load(Relaxed) >= sent);
        settled(500, &|| {
            c.replies.load(Relaxed) >= b.replies_sent.load(Relaxed)
        });
        client.finish();
        assert!(sent >= 40, "sent {sent}");
        assert_eq!(b.received.load(Relaxed), sent);
        assert_eq!(b.reordered.load(Relaxed), 0);
        assert_eq!(b.errors.load(Relaxed) + c.errors.load(Relaxed), 0);
        // Each flow's count rounds down to its last 4th datagram.
        let replies = b.replies_sent.load(Relaxed);
        assert!(replies <= sent / REPLY_EVERY, "{replies} of {sent}");
        assert!(
            replies + 3 * REPLY_EVERY > sent / REPLY_EVERY,
            "{replies} of {sent}"
        );
        assert_eq!(c.replies.load(Relaxed), replies);
        assert_eq!(b.latencies_us.lock().unwrap().len() as u64, sent);
    }
}

//! The UDP backend of `srt-ingest`, standing in for an Ant Media Server node's SRT port: one
//! socket, read by one thread, for every flow (as a node's port 4200 is). Per flow it counts
//! datagrams and reordering (a sequence number lower than one already seen), measures each
//! datagram's one-way latency from its send timestamp, and answers every [`REPLY_EVERY`]th
//! datagram with an ACK-sized reply to the address it came from (the client, or the hop's
//! socket for that flow).

use super::datagram::{now_ns, Header, DATAGRAM_LEN};
use super::Threads;
use crate::error::{BenchError, Result};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// An SRT receiver sends a full ACK every 10 ms: at 4 Mbit/s of 1316-byte datagrams (380/s)
/// that is about every 4th datagram.
pub const REPLY_EVERY: u64 = 4;
/// The socket buffer the hops are given too (the proxy's `dgram-bind` asks for 4 MiB; nginx
/// gets `rcvbuf=4m`): a burst while the thread is descheduled is queued, not dropped.
pub const RCVBUF: usize = 4 << 20;
/// Flow ids above this are not the load's (the table stays small and bounded).
const MAX_FLOWS: usize = 65_536;

/// What the backend saw; read by the orchestrator at window edges.
#[derive(Debug, Default)]
pub struct Shared {
    pub received: AtomicU64,
    /// Bytes of the datagrams received (what the window's Gbit counts).
    pub bytes: AtomicU64,
    /// Datagrams whose sequence number was below one already received in their flow.
    pub reordered: AtomicU64,
    pub replies_sent: AtomicU64,
    /// Datagrams that were not the load's, and failed sends.
    pub errors: AtomicU64,
    /// While set, one-way latencies are recorded (the measurement window).
    pub recording: AtomicBool,
    pub latencies_us: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

pub struct UdpBackend {
    pub addr: SocketAddr,
    threads: Threads<Shared>,
}

/// One flow as the backend sees it.
#[derive(Debug, Default, Clone, Copy)]
struct FlowRx {
    /// One above the highest sequence number received (0: nothing yet).
    next: u64,
    received: u64,
}

impl UdpBackend {
    pub fn start(ip: IpAddr) -> Result<UdpBackend> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))
            .map_err(|e| BenchError::io(format!("bind udp {ip}:0"), e))?;
        set_rcvbuf(&sock, RCVBUF);
        // The timeout lets the thread see the stop flag when no datagram comes.
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| BenchError::io("udp backend timeout", e))?;
        let addr = sock
            .local_addr()
            .map_err(|e| BenchError::io("udp backend address", e))?;
        let mut threads = Threads::new(Shared::default(), |s| &s.stop);
        threads.spawn("bench-udp-back", "udp backend", move |s| serve(&sock, &s))?;
        Ok(UdpBackend { addr, threads })
    }

    pub fn shared(&self) -> &Shared {
        &self.threads.shared
    }
}

fn serve(sock: &UdpSocket, s: &Shared) {
    let mut flows: Vec<FlowRx> = Vec::new();
    // One byte more than a datagram: a longer one shows as a wrong length, not as a match.
    let mut buf = [0u8; DATAGRAM_LEN + 1];
    while !s.stop.load(Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                s.errors.fetch_add(1, Relaxed);
                continue;
            }
        };
        let Some(h) = Header::parse_data(&buf[..n]).filter(|h| (h.flow as usize) < MAX_FLOWS)
        else {
            s.errors.fetch_add(1, Relaxed);
            continue;
        };
        let idx = h.flow as usize;
        if flows.len() <= idx {
            flows.resize(idx + 1, FlowRx::default());
        }
        if on_datagram(&mut flows[idx], &h, n, s) {
            let reply = Header {
                flow: h.flow,
                seq: h.seq,
                sent_ns: now_ns(),
            };
            match sock.send_to(&reply.reply(), from) {
                Ok(_) => s.replies_sent.fetch_add(1, Relaxed),
                Err(_) => s.errors.fetch_add(1, Relaxed),
            };
        }
    }
}

/// Counts one datagram of `f`; true when it is due a reply.
fn on_datagram(f: &mut FlowRx, h: &Header, len: usize, s: &Shared) -> bool {
    let now = now_ns();
    s.received.fetch_add(1, Relaxed);
    s.bytes.fetch_add(len as u64, Relaxed);
    if h.seq < f.next {
        s.reordered.fetch_add(1, Relaxed);
    } else {
        f.next = h.seq + 1;
    }
    f.received += 1;
    if s.recording.load(Relaxed) {
        let us = now.saturating_sub(h.sent_ns) / 1_000;
        if let Ok(mut v) = s.latencies_us.lock() {
            v.push(us);
        }
    }
    f.received.is_multiple_of(REPLY_EVERY)
}

/// SO_RCVBUF (the kernel caps it at `net.core.rmem_max`); best effort: a smaller buffer
/// shows as loss in every variant alike.
pub fn set_rcvbuf(sock: &UdpSocket, bytes: usize) {
    let v = bytes as libc::c_int;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reordering_and_replies_every_fourth() {
        let s = Shared::default();
        let mut f = FlowRx::default();
        let h = |seq| Header {
            flow: 0,
            seq,
            sent_ns: 0,
        };
        let due: Vec<bool> = [0, 1, 3, 2, 4, 5, 6, 7]
            .into_iter()
            .map(|q| on_datagram(&mut f, &h(q), DATAGRAM_LEN, &s))
            .collect();
        assert_eq!(due, [false, false, false, true, false, false, false, true]);
        assert_eq!(s.reordered.load(Relaxed), 1, "2 came after 3");
        assert_eq!(s.received.load(Relaxed), 8);
        assert_eq!(s.bytes.load(Relaxed), 8 * DATAGRAM_LEN as u64);
        assert!(s.latencies_us.lock().unwrap().is_empty(), "not recording");
    }
}

//! Injects hand-made segments into a live loopback TCP connection, for what a kernel socket
//! never does on demand: send a segment whose first bytes the peer already received, as a
//! retransmission cut at other boundaries than the original does (the case the sockmap verdict
//! must trim).
//!
//! A raw socket sees the connection's handshake (`Watch::open` before `connect`, then
//! `Watch::handshake`) and learns both initial sequence numbers; `Injector::send_at` then
//! sends bytes at any stream offset as if the client had. The client stays an ordinary kernel
//! socket: when it later sends bytes the peer already has from an injection, the peer drops
//! them as duplicates, so the connection ends normally. Needs root (CAP_NET_RAW).

use std::io::{self, Read, Write};
use std::mem::size_of;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// A raw socket reading every TCP packet the host receives, opened before the connection.
pub struct Watch {
    fd: OwnedFd,
}

/// Sends segments from `src` to `dst` in the connection `Watch::handshake` saw.
pub struct Injector {
    fd: OwnedFd,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    /// The client's initial sequence number: stream offset `o` is sent as `isn + 1 + o`.
    isn: u32,
    /// What every segment acknowledges (the server's initial sequence number + 1).
    ack: u32,
}

impl Watch {
    /// Opens the raw socket; call before connecting, so that the SYN is seen.
    pub fn open() -> io::Result<Watch> {
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
        if fd < 0 {
            return Err(io::Error::other(format!(
                "raw socket (needs root): {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: a pointer to a live timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        syn_only(&fd)?;
        drain(&fd);
        Ok(Watch { fd })
    }

    /// Waits (up to `limit`) for the SYN from `src` to `dst` and the SYN-ACK back, and returns
    /// an injector for that connection.
    pub fn handshake(
        self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        limit: Duration,
    ) -> io::Result<Injector> {
        let start = Instant::now();
        let (mut isn, mut ack) = (None, None);
        let mut buf = [0u8; 65536];
        while isn.is_none() || ack.is_none() {
            if start.elapsed() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no handshake {src} -> {dst} seen"),
                ));
            }
            // SAFETY: reads into a buffer of its stated size.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Some(h) = usize::try_from(n)
                .ok()
                .and_then(|n| Header::parse(&buf[..n]))
            else {
                continue;
            };
            if h.from == src && h.to == dst && h.flags & (SYN | ACK) == SYN {
                isn = Some(h.seq);
            } else if h.from == dst && h.to == src && h.flags & (SYN | ACK) == SYN | ACK {
                ack = Some(h.seq.wrapping_add(1));
            }
        }
        Ok(Injector {
            fd: self.fd,
            src,
            dst,
            isn: isn.unwrap_or_default(),
            ack: ack.unwrap_or_default(),
        })
    }
}

impl Injector {
    /// Sends `data` as one segment at stream offset `offset`, as the client.
    pub fn send_at(&self, offset: u32, data: &[u8]) -> io::Result<()> {
        let seq = self.isn.wrapping_add(1).wrapping_add(offset);
        let seg = segment(self.src, self.dst, seq, self.ack, ACK | PSH, data);
        // A raw socket's destination port must be 0: the port is in the TCP header.
        let to = sockaddr(SocketAddrV4::new(*self.dst.ip(), 0));
        // SAFETY: a valid buffer and a sockaddr_in of the size given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                seg.as_ptr().cast(),
                seg.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n != seg.len() as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Bytes of the stream `overlapping_retransmission` sends, and of its overlap.
#[derive(Clone, Copy, Debug)]
pub struct Overlap {
    pub stream: usize,
    pub overlap: usize,
}

/// A few bytes: one trim step of the verdict.
pub const SMALL: Overlap = Overlap {
    stream: 3000,
    overlap: 1500,
};

/// Nearly a whole loopback packet (60 000 of a 61 000-byte segment): fifteen trim steps.
pub const LARGE: Overlap = Overlap {
    stream: 64_000,
    overlap: 60_000,
};

impl Overlap {
    /// Whether the receiving socket may cut the overlap itself. Seen in the VM matrix on
    /// Debian's 6.12 (default `tcp_rmem`): 0 bytes trimmed, the stream whole. The likely
    /// reason, not verified: a packet this large takes the socket over its receive buffer,
    /// and the kernel collapses the queue from the read position on (`tcp_collapse`), which
    /// leaves no byte to trim.
    pub fn may_collapse(self) -> bool {
        self.overlap > 16_384
    }
}

/// What `overlapping_retransmission` sent and what the backend received.
pub struct Exchange {
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
}

/// The overlapping-retransmission case through a proxy at `front` whose backend listens on
/// `backend`, for `SMALL`: a kernel client sends bytes 0..2000; once the backend has them, one
/// injected segment carries bytes 500..3000 (1 500 of them already received); once the backend
/// has 3 000 bytes, the client sends its own 2000..3000 (a duplicate by then, which TCP drops)
/// and FIN. The backend reads to EOF. Panics (a test tool) when a step does not happen within
/// 10 s.
pub fn overlapping_retransmission(
    front: SocketAddr,
    backend: TcpListener,
    shape: Overlap,
) -> Exchange {
    let Overlap { stream, overlap } = shape;
    let sent: Vec<u8> = (0..stream).map(|i| (i % 251) as u8).collect();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = backend.accept().expect("backend accept");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).expect("backend read") {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
            counter.store(got.len(), Ordering::SeqCst);
        }
    });
    let at_backend = |n: usize| {
        let start = Instant::now();
        while received.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{n} bytes at the backend within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let watch = Watch::open().expect("raw socket");
    let mut client = TcpStream::connect(front).expect("connect");
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (client.local_addr().expect("addr"), front)
    else {
        panic!("IPv4 addresses expected")
    };
    let inject = watch
        .handshake(from, to, Duration::from_secs(5))
        .expect("the client's handshake");
    let first = stream - 1000;
    client.write_all(&sent[..first]).expect("write");
    at_backend(first);
    inject
        .send_at((first - overlap) as u32, &sent[first - overlap..])
        .expect("inject");
    at_backend(stream);
    client.write_all(&sent[first..]).expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let received = reader.join().expect("backend reader");
    Exchange { sent, received }
}

/// The fields of a received IPv4/TCP packet this needs.
struct Header {
    from: SocketAddrV4,
    to: SocketAddrV4,
    seq: u32,
    flags: u8,
}

impl Header {
    fn parse(pkt: &[u8]) -> Option<Header> {
        let ihl = usize::from(pkt.first()? & 0x0f) * 4;
        let ip = |at: usize| {
            Some(Ipv4Addr::new(
                *pkt.get(at)?,
                pkt[at + 1],
                pkt[at + 2],
                pkt[at + 3],
            ))
        };
        let tcp = pkt.get(ihl..ihl + 20)?;
        let port = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
        Some(Header {
            from: SocketAddrV4::new(ip(12)?, port(0)),
            to: SocketAddrV4::new(ip(16)?, port(2)),
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            flags: tcp[13],
        })
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A TCP header (no options, window 65535) and `data`, with the checksum over the IPv4
/// pseudo-header. The kernel adds the IP header.
fn segment(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + data.len());
    s.extend(src.port().to_be_bytes());
    s.extend(dst.port().to_be_bytes());
    s.extend(seq.to_be_bytes());
    s.extend(ack.to_be_bytes());
    s.extend([5 << 4, flags]);
    s.extend(65535u16.to_be_bytes());
    s.extend([0, 0, 0, 0]);
    s.extend(data);
    let mut pseudo = Vec::with_capacity(12 + s.len());
    pseudo.extend(src.ip().octets());
    pseudo.extend(dst.ip().octets());
    pseudo.extend([0, libc::IPPROTO_TCP as u8]);
    pseudo.extend((s.len() as u16).to_be_bytes());
    pseudo.extend(&s);
    let sum = checksum(&pseudo);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw TCP socket sees every TCP packet of the host: while other tests move gigabytes over
/// loopback its receive buffer overflows and a SYN can be lost before `handshake` reads it.
/// A classic BPF filter keeps only packets with SYN set (the kernel drops the rest before
/// queueing them): IP header length from byte 0, then the TCP flags byte at offset 13.
/// Empties the socket of what it queued before its filter was attached: beside a bulk test,
/// three 64 KiB packets fill its buffer in microseconds, and a full buffer drops the SYN and
/// SYN-ACK that `handshake` waits for.
fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: reads into a buffer of its stated size.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return;
        }
    }
}

fn syn_only(fd: &OwnedFd) -> io::Result<()> {
    const SYN_FLAG: u32 = 0x02;
    let code = [
        // x = 4 * (ip[0] & 0x0f): the IP header's length.
        libc::sock_filter {
            code: (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // a = tcp[13]: the flags.
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_B | libc::BPF_IND) as u16,
            jt: 0,
            jf: 0,
            k: 13,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: SYN_FLAG,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0xffff,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `code`, both alive for the call; the kernel copies them.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071, section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2; the checksum is its
        // complement.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn a_segment_checks_out_and_parses_back() {
        let (a, b) = (
            SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 4000),
            SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 5000),
        );
        let seg = segment(a, b, 7, 9, ACK | PSH, b"abc");
        // The checksum over the pseudo-header and the segment, checksum included, is 0.
        let mut all = Vec::new();
        all.extend(a.ip().octets());
        all.extend(b.ip().octets());
        all.extend([0, 6, 0, seg.len() as u8]);
        all.extend(&seg);
        assert_eq!(checksum(&all), 0);
        let mut pkt = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0];
        pkt.extend(a.ip().octets());
        pkt.extend(b.ip().octets());
        pkt.extend(&seg);
        let h = Header::parse(&pkt).expect("parses");
        assert_eq!((h.from, h.to, h.seq, h.flags), (a, b, 7, ACK | PSH));
    }
}

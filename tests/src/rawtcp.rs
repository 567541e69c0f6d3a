//! A TCP client driven by hand over a raw socket, for what a kernel socket never does on
//! demand: send a segment whose first bytes the peer already received, as a retransmission
//! cut at different boundaries does (the case the sockmap verdict must trim). It lives in a
//! network namespace of its own (`enter_private_netns`), where nftables drops the resets the
//! kernel would send for a port no socket of its own owns.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

/// Moves the calling thread (and every thread and process it starts from now on) into a new
/// network namespace with only `lo`, up: rules and sockets made there touch nothing else.
/// Needs root (CAP_SYS_ADMIN).
pub fn enter_private_netns() {
    // SAFETY: unshare only changes this thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        panic!(
            "unshare(CLONE_NEWNET) needs root: {}",
            io::Error::last_os_error()
        );
    }
    run("ip", &["link", "set", "lo", "up"]);
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (cargo xtask setup installs it)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One connection's client end: sequence numbers are chosen here, segments sent as asked.
pub struct RawClient {
    fd: OwnedFd,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    /// Our initial sequence number; stream offset `o` is sent as `isn + 1 + o`.
    isn: u32,
    /// The peer's next sequence number (what every segment acknowledges).
    ack: u32,
}

impl RawClient {
    /// Opens a connection from `src` (whose port no kernel socket may use) to `dst`: drops the
    /// kernel's resets from `src`'s port, then SYN, SYN-ACK, ACK. Call from inside
    /// `enter_private_netns`.
    pub fn connect(src: SocketAddrV4, dst: SocketAddrV4) -> RawClient {
        let rule = format!(
            "add table inet rawtcp; \
             add chain inet rawtcp out {{ type filter hook output priority 0; }}; \
             add rule inet rawtcp out ip saddr {} tcp sport {} tcp flags & rst == rst drop",
            src.ip(),
            src.port()
        );
        run("nft", &[&rule]);
        let fd = raw_socket(*src.ip()).expect("raw socket");
        let mut c = RawClient {
            fd,
            src,
            dst,
            isn: 0x1000_0000,
            ack: 0,
        };
        c.send(c.isn, SYN, &[]);
        let syn_ack = c
            .recv_until(Duration::from_secs(5), |flags| {
                flags & (SYN | ACK) == SYN | ACK
            })
            .expect("no SYN-ACK from the peer");
        c.ack = syn_ack.wrapping_add(1);
        c.send(c.isn.wrapping_add(1), ACK, &[]);
        c
    }

    /// Sends `data` as one segment at stream offset `offset`.
    pub fn send_at(&self, offset: u32, data: &[u8]) {
        self.send(self.isn.wrapping_add(1 + offset), ACK | PSH, data);
    }

    /// Ends the stream after `len` bytes.
    pub fn fin_at(&self, len: u32) {
        self.send(self.isn.wrapping_add(1 + len), ACK | FIN, &[]);
    }

    fn send(&self, seq: u32, flags: u8, data: &[u8]) {
        let seg = segment(self.src, self.dst, seq, self.ack, flags, data);
        // A raw socket's destination port must be 0 (the port is in the TCP header).
        let to = sockaddr(SocketAddrV4::new(*self.dst.ip(), 0));
        // SAFETY: a valid buffer and a sockaddr_in of the right size.
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
        assert_eq!(
            n,
            seg.len() as isize,
            "sendto (flags {flags:#x}): {}",
            io::Error::last_os_error()
        );
    }

    /// Reads packets until one from the peer to us has `want(flags)`; its sequence number.
    fn recv_until(&self, limit: Duration, want: impl Fn(u8) -> bool) -> Option<u32> {
        let start = Instant::now();
        let mut buf = [0u8; 65536];
        while start.elapsed() < limit {
            // SAFETY: reads into a buffer of its stated size.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let pkt = &buf[..n as usize];
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let Some(tcp) = pkt.get(ihl..ihl + 20) else {
                continue;
            };
            let port = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
            if port(0) == self.dst.port() && port(2) == self.src.port() && want(tcp[13]) {
                return Some(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]));
            }
        }
        None
    }
}

/// A raw TCP socket bound to `ip` (the source address of what it sends; the kernel builds the
/// IP header), reading every TCP packet this namespace receives, with a short read timeout.
fn raw_socket(ip: Ipv4Addr) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = sockaddr(SocketAddrV4::new(ip, 0));
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: pointers to live values of the sizes given.
    let ok = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) == 0
            && libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            ) == 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
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
/// pseudo-header.
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
    s.extend((if flags & ACK != 0 { ack } else { 0 }).to_be_bytes());
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

#[cfg(test)]
mod tests {
    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071, section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2; the checksum its
        // complement.
        assert_eq!(
            super::checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }
}

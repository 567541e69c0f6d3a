//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)`, so that a burst of datagrams costs
//! one system call each way instead of one per datagram. The kernel fills (or reads) arrays
//! of message headers pointing into buffers owned here; nothing of them outlives a call.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockAddr;

/// Datagrams taken per system call.
pub const BATCH: usize = 32;
/// The largest datagram forwarded whole; a longer one arrives truncated and is dropped
/// (SRT sends at most 1500-byte packets; this leaves room for jumbo-frame MTUs).
pub const DGRAM_MAX: usize = 9216;

/// Buffers and addresses for one `recvmmsg` call.
pub struct RecvBatch {
    bufs: Vec<[u8; DGRAM_MAX]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: [usize; BATCH],
    truncated: [bool; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        RecvBatch {
            bufs: vec![[0; DGRAM_MAX]; BATCH],
            // SAFETY: all zeros is a valid (empty) sockaddr_storage.
            addrs: vec![unsafe { mem::zeroed() }; BATCH],
            lens: [0; BATCH],
            truncated: [false; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Takes up to [`BATCH`] waiting datagrams without blocking; `Ok(0)` when none waits.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.count = 0;
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is valid; the pointers set below stay alive (owned by
        // `self` and `iovs`) for the call, which is the only time the kernel uses them.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; BATCH];
        for ((h, iov), addr) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(self.addrs.iter_mut())
        {
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` holds BATCH valid headers as described above.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = usize::try_from(n).unwrap_or(0).min(BATCH);
        for (i, h) in hdrs.iter().take(n).enumerate() {
            self.lens[i] = (h.msg_len as usize).min(DGRAM_MAX);
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        self.count = n;
        Ok(n)
    }

    /// Datagram `i` of the last call: its sender, its bytes, and whether it was cut short.
    pub fn get(&self, i: usize) -> Option<(Option<SocketAddr>, &[u8], bool)> {
        if i >= self.count {
            return None;
        }
        let from = socket_addr(self.addrs.get(i)?);
        let data = self.bufs.get(i)?.get(..*self.lens.get(i)?)?;
        Some((from, data, *self.truncated.get(i)?))
    }
}

/// The sender's address as the kernel wrote it; `None` for a family we do not forward.
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in here, as `ss_family` says; the storage is
            // larger and suitably aligned for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends `datagrams` to `to` in one `sendmmsg` call (several when the kernel takes part of
/// them); returns how many went out. A full socket buffer stops it early: UDP may drop, and
/// waiting here would stall every other flow of the thread.
pub fn send_batch(fd: BorrowedFd<'_>, datagrams: &[&[u8]], to: &SockAddr) -> io::Result<usize> {
    let mut sent = 0;
    while sent < datagrams.len() {
        let rest = datagrams.get(sent..).unwrap_or_default();
        let mut iovs: Vec<libc::iovec> = rest
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        // SAFETY: zeroed headers pointing at `iovs` and `to`, both alive for the call; the
        // kernel only reads through them (sendmmsg).
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = to.len();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let len = libc::c_uint::try_from(hdrs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: `hdrs` holds `len` valid headers.
        let n =
            unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), len, libc::MSG_DONTWAIT) };
        if n <= 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                _ if n == 0 => Ok(sent),
                io::ErrorKind::WouldBlock => Ok(sent),
                io::ErrorKind::Interrupted => continue,
                _ if sent > 0 => Ok(sent),
                _ => Err(e),
            };
        }
        sent += usize::try_from(n).unwrap_or(0);
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn a_burst_goes_out_and_comes_in_as_batches() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = SockAddr::from(rx.local_addr().expect("addr"));
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1316]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        assert_eq!(send_batch(tx.as_fd(), &refs, &to).expect("send"), 40);
        let mut batch = RecvBatch::default();
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let n = batch.recv(rx.as_fd()).expect("recv");
            for i in 0..n {
                let (from, data, cut) = batch.get(i).expect("datagram");
                assert_eq!(from, tx.local_addr().ok());
                assert!(!cut);
                seen.push(data.to_vec());
            }
        }
        assert_eq!(seen, payloads);
        assert_eq!(batch.recv(rx.as_fd()).expect("empty"), 0);
    }

    #[test]
    fn an_oversized_datagram_is_marked_truncated() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.send_to(&vec![7u8; DGRAM_MAX + 100], rx.local_addr().expect("addr"))
            .expect("send");
        let mut batch = RecvBatch::default();
        let mut n = 0;
        while n == 0 {
            n = batch.recv(rx.as_fd()).expect("recv");
        }
        let (_, data, cut) = batch.get(0).expect("datagram");
        assert!(cut);
        assert_eq!(data.len(), DGRAM_MAX);
    }
}

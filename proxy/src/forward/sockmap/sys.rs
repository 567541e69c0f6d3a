//! The few system calls the sockmap engine makes on the data path, as thin safe wrappers:
//! BPF map updates by descriptor (thread-safe in the kernel, so no lock in the proxy), and the
//! TCP socket state the close protocol and the budget need.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `union bpf_attr` as BPF_MAP_UPDATE_ELEM / BPF_MAP_DELETE_ELEM read it.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

fn bpf_map_call(cmd: libc::c_long, attr: &MapElemAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the size passed; the
    // kernel reads the key and value through the pointers, which outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const MapElemAttr,
            size_of::<MapElemAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `bpf(BPF_MAP_UPDATE_ELEM)` with BPF_ANY.
pub fn map_update<K, V>(map: RawFd, key: &K, value: &V) -> io::Result<()> {
    let attr = MapElemAttr {
        map_fd: map as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: value as *const V as u64,
        flags: 0,
    };
    bpf_map_call(BPF_MAP_UPDATE_ELEM, &attr)
}

/// `bpf(BPF_MAP_DELETE_ELEM)`; a missing key is not an error (the kernel drops a closed
/// socket from the socket hash by itself).
pub fn map_delete<K>(map: RawFd, key: &K) -> io::Result<()> {
    let attr = MapElemAttr {
        map_fd: map as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: 0,
        flags: 0,
    };
    match bpf_map_call(BPF_MAP_DELETE_ELEM, &attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
/// `BPF_TRACE_ITER` in `enum bpf_attach_type`.
const BPF_TRACE_ITER: u32 = 28;

/// `bpf(BPF_MAP_LOOKUP_ELEM)`: the value for `key`, `None` when there is none.
pub fn map_lookup<K, V: Copy + Default>(map: RawFd, key: &K) -> io::Result<Option<V>> {
    let mut value = V::default();
    let attr = MapElemAttr {
        map_fd: map as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: &mut value as *mut V as u64,
        flags: 0,
    };
    match bpf_map_call(BPF_MAP_LOOKUP_ELEM, &attr) {
        Ok(()) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A bpf(2) command whose result is a new descriptor.
fn bpf_fd_call<A>(cmd: libc::c_long, attr: &A) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const A, size_of::<A>()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `bpf(BPF_LINK_CREATE)` of an iterator program (no parameters): the link iterators are
/// created from.
pub fn iter_link(prog: RawFd) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct LinkCreateAttr {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        iter_info: u64,
        iter_info_len: u32,
        _pad: u32,
    }
    let attr = LinkCreateAttr {
        prog_fd: prog as u32,
        target_fd: 0,
        attach_type: BPF_TRACE_ITER,
        flags: 0,
        iter_info: 0,
        iter_info_len: 0,
        _pad: 0,
    };
    bpf_fd_call(BPF_LINK_CREATE, &attr)
}

/// One full run of the iterator behind `link`: `bpf(BPF_ITER_CREATE)`, then read to the end
/// (the program prints nothing; reading is what makes it visit every socket).
pub fn iter_run(link: RawFd) -> io::Result<()> {
    #[repr(C)]
    struct IterCreateAttr {
        link_fd: u32,
        flags: u32,
    }
    let fd = bpf_fd_call(
        BPF_ITER_CREATE,
        &IterCreateAttr {
            link_fd: link as u32,
            flags: 0,
        },
    )?;
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is writable for its length; `fd` is open.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return Ok(()),
            n if n > 0 => {}
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// The parts of `struct tcp_info` the engine uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpInfo {
    pub state: u8,
    /// Bytes the peer acknowledged (a FIN, once acknowledged, counts one).
    pub bytes_acked: u64,
    /// Bytes received in order (the peer's FIN counts one).
    pub bytes_received: u64,
}

/// TCP_ESTABLISHED in `tcpi_state`.
pub const TCP_ESTABLISHED: u8 = 1;

pub fn tcp_info(fd: RawFd) -> io::Result<TcpInfo> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes; the kernel writes at most `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised and (partly) filled by the kernel: every field is plain data.
    let info = unsafe { info.assume_init() };
    Ok(TcpInfo {
        state: info.tcpi_state,
        bytes_acked: info.tcpi_bytes_acked,
        bytes_received: info.tcpi_bytes_received,
    })
}

fn ioctl_int(fd: RawFd, req: libc::Ioctl) -> io::Result<u64> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCOUTQ/SIOCINQ write one int through the pointer.
    if unsafe { libc::ioctl(fd, req, &mut v) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(v).unwrap_or(0))
}

/// SIOCOUTQ: bytes in the send queue not yet acknowledged (sent or not).
pub fn outq(fd: RawFd) -> io::Result<u64> {
    ioctl_int(fd, libc::TIOCOUTQ)
}

/// SIOCINQ: bytes received and not yet read (for a socket outside the socket hash).
pub fn inq(fd: RawFd) -> io::Result<u64> {
    ioctl_int(fd, libc::FIONREAD)
}

/// Bytes ever written into the socket: acknowledged plus still queued. Read until no
/// acknowledgement landed between the two reads of `bytes_acked`, so the sum is consistent.
pub fn bytes_written(fd: RawFd) -> io::Result<u64> {
    loop {
        let a = tcp_info(fd)?.bytes_acked;
        let q = outq(fd)?;
        if tcp_info(fd)?.bytes_acked == a {
            return Ok(a + q);
        }
    }
}

/// Bytes the proxy itself read from the socket before handing it over: received minus still
/// queued, read until no byte arrived in between.
pub fn bytes_consumed(fd: RawFd) -> io::Result<u64> {
    loop {
        let r = tcp_info(fd)?.bytes_received;
        let q = inq(fd)?;
        if tcp_info(fd)?.bytes_received == r {
            return Ok(r.saturating_sub(q));
        }
    }
}

/// SO_RCVLOWAT: setting it makes TCP run its data-ready callback over bytes already queued,
/// which is how bytes that arrived before the socket joined the hash reach the verdict.
pub fn set_rcvlowat(fd: RawFd, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is one int, passed with its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Nonblocking recv; `Ok(0)` is the peer's FIN.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Nonblocking send that never raises SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for its length.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the clock of `bpf_ktime_get_coarse_ns()`.
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Puts the calling thread in the lowest real-time class (SCHED_FIFO 1), so that it runs as
/// soon as it wakes even while busy threads hold every CPU: the wake-up and park threads
/// sleep almost always and, once woken, bound how long a direction can run past its budget
/// (forward/sockmap/LIFECYCLE.md, "Bounded memory"). Without the privilege it stays as it
/// is; the bound then depends on the scheduler's latency.
pub fn prefer_realtime(name: &str) {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain system call on the calling thread (0) with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        log::warn!(
            "sockmap: thread {name} runs without real-time priority ({}); a direction may \
             then run further past its memory budget on a busy machine",
            io::Error::last_os_error()
        );
    }
}

/// `TCP_WINDOW_CLAMP`: the most the socket advertises as its receive window.
pub fn window_clamp(fd: RawFd) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option value is one int, with its size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_WINDOW_CLAMP,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

pub fn set_window_clamp(fd: RawFd, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is one int, passed with its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_WINDOW_CLAMP,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes the source's receive window for as long as a park walk runs (the walk takes
/// milliseconds, in which a loopback client sends megabytes): the clamp stops the window from
/// growing again as the verdict takes bytes, so what can still arrive is the window already
/// advertised (TCP never takes it back) and a trickle of the clamp's size per round trip.
/// Returns the clamp to put back once the source is out of the verdict's hash, where the
/// socket's own buffer bounds it; the copy then needs the full window.
pub fn squeeze_window(fd: RawFd) -> Option<libc::c_int> {
    // Not when the clamp is already tiny: another park of the same source (the task's and
    // the wake-up thread's may overlap) squeezed it, and puts back the real value; saving
    // the tiny one would leave it for good. Nor when it cannot be read.
    let old = window_clamp(fd).ok().filter(|&v| v > SQUEEZED_MAX)?;
    // The kernel raises it to its minimum (about 1 KiB).
    set_window_clamp(fd, 1).ok()?;
    Some(old)
}

/// Above any clamp `squeeze_window` leaves (the kernel's minimum is half of SOCK_MIN_RCVBUF,
/// about 1 KiB) and below any real one.
const SQUEEZED_MAX: libc::c_int = 8 * 1024;

/// Puts back the clamp `squeeze_window` replaced.
pub fn release_window(fd: RawFd, old: Option<libc::c_int>) {
    if let Some(old) = old.filter(|&v| v > 0) {
        let _ = set_window_clamp(fd, old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn counters_of_a_local_pair() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        c.write_all(&[7u8; 1000]).expect("write");
        c.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        assert_eq!(got.len(), 1000);
        // The FIN counts in bytes_received.
        assert_eq!(tcp_info(s.as_raw_fd()).expect("info").bytes_received, 1001);
        assert_eq!(bytes_consumed(s.as_raw_fd()).expect("consumed"), 1001);
        assert_eq!(
            tcp_info(s.as_raw_fd()).expect("info").state,
            8,
            "CLOSE_WAIT"
        );
        assert!(coarse_now_ns() > 0);
    }

    /// The window clamp of a park walk is put back exactly, and a squeeze that overlaps
    /// another (the task's and the wake-up thread's parks of one source) leaves the real value
    /// to the first: it never saves the tiny one.
    #[test]
    fn squeezed_window_is_put_back() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let fd = s.as_raw_fd();
        let real = window_clamp(fd).expect("clamp");
        assert!(real > SQUEEZED_MAX, "an established socket's clamp: {real}");
        let first = squeeze_window(fd);
        assert_eq!(first, Some(real));
        let squeezed = window_clamp(fd).expect("clamp");
        assert!(squeezed <= SQUEEZED_MAX, "squeezed to {squeezed}");
        let second = squeeze_window(fd);
        assert_eq!(second, None, "an overlapping squeeze saves nothing");
        release_window(fd, second);
        assert_eq!(window_clamp(fd).expect("clamp"), squeezed);
        release_window(fd, first);
        assert_eq!(window_clamp(fd).expect("clamp"), real);
    }
}

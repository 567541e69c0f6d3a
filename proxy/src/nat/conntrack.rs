//! The conntrack event socket: NETLINK_NETFILTER, joined to the groups that carry new and
//! destroyed entries. Accounting (`nf_conntrack_acct`) makes DESTROY carry the bytes each way,
//! and timestamps (`nf_conntrack_timestamp`) its start, so a flow made before this process
//! started (a binary upgrade) still gets its duration.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::event::{self, Message};
use super::NatError;

/// `NFNLGRP_CONNTRACK_NEW`, `_UPDATE` (state changes: a few per flow, never per packet,
/// which tell when a flow closes), `_DESTROY`.
const GROUP_NEW: u32 = 1;
const GROUP_UPDATE: u32 = 2;
const GROUP_DESTROY: u32 = 3;

/// Room for bursts of events while the thread is busy writing the ruleset: 8 MiB (forced
/// past `rmem_max`, as root).
const RECEIVE_BUFFER: i32 = 8 << 20;

pub struct Events {
    socket: Socket,
    buf: Vec<u8>,
}

impl Events {
    pub fn open() -> Result<Events, NatError> {
        let events = |e: std::io::Error| NatError::Events(e.to_string());
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(events)?;
        socket.bind(&SocketAddr::new(0, 0)).map_err(events)?;
        socket.add_membership(GROUP_NEW).map_err(events)?;
        socket.add_membership(GROUP_UPDATE).map_err(events)?;
        socket.add_membership(GROUP_DESTROY).map_err(events)?;
        force_receive_buffer(&socket);
        socket.set_non_blocking(true).map_err(events)?;
        Ok(Events {
            socket,
            buf: vec![0; 1 << 16],
        })
    }

    /// The messages that arrive within `wait` (none when it passes quietly).
    pub fn receive(&mut self, wait: Duration) -> Vec<Message> {
        let mut out = Vec::new();
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            return out;
        }
        // Everything queued now, bounded so that the ruleset is still rewritten under load.
        for _ in 0..256 {
            let mut slice = &mut self.buf[..];
            match self.socket.recv(&mut slice, 0) {
                Ok(n) => out.extend(event::parse_datagram(&self.buf[..n.min(self.buf.len())])),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.push(Message::Overrun),
                Err(_) => break,
            }
        }
        out
    }
}

fn force_receive_buffer(socket: &Socket) {
    let size = RECEIVE_BUFFER;
    // SAFETY: a plain int option on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let _ = socket.set_rx_buf_sz(size);
    }
}

/// Turns on what the events must carry; both are per network namespace.
pub fn enable_accounting() -> Result<(), NatError> {
    for name in ["nf_conntrack_acct", "nf_conntrack_timestamp"] {
        let path = format!("/proc/sys/net/netfilter/{name}");
        std::fs::write(&path, "1")
            .map_err(|e| NatError::Probe(format!("cannot set {path} to 1: {e}")))?;
    }
    Ok(())
}

/// Conntrack removes an expired entry (and sends its DESTROY) only when its garbage
/// collector passes, which on a quiet table can be a minute after the flow closed. A dump
/// evicts the expired entries it walks, so a dump once a closed flow's entry has expired
/// keeps its log line within about a second of its close; a dump every 10 s also gives the
/// live flows' bytes so far (`show sess`) and finds flows this process does not follow yet.
/// The dump is filtered by our mark in the kernel, but walks the whole table (measured: a
/// dump a second of a 262 144-bucket table cost the thread ~1.4 % of a core, almost all in
/// `ctnetlink_dump_table`), hence dumps only when they pay.
pub struct Dumper {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
}

/// `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET`; `NLM_F_REQUEST | NLM_F_DUMP`.
const MSG_CT_GET: u16 = 1 << 8 | 1;
const DUMP_FLAGS: u16 = 0x1 | 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;

/// The most datagrams one dump reads: a bound on the time one pass takes.
const DUMP_DATAGRAMS: usize = 4096;

impl Dumper {
    pub fn open() -> Result<Dumper, NatError> {
        let events = |e: std::io::Error| NatError::Events(e.to_string());
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(events)?;
        socket.bind_auto().map_err(events)?;
        socket.set_non_blocking(true).map_err(events)?;
        Ok(Dumper {
            socket,
            buf: vec![0; 1 << 16],
            seq: 0,
        })
    }

    /// Our entries now (`Kind::New` messages carrying their counters).
    pub fn dump(&mut self, mark: u32, mask: u32) -> Vec<Message> {
        self.seq = self.seq.wrapping_add(1);
        if self.socket.send(&request(self.seq, mark, mask), 0).is_err() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for _ in 0..DUMP_DATAGRAMS {
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut fds, PollTimeout::from(200u16)), Ok(n) if n > 0) {
                break;
            }
            let mut slice = &mut self.buf[..];
            let Ok(n) = self.socket.recv(&mut slice, 0) else {
                break;
            };
            let data = &self.buf[..n.min(self.buf.len())];
            out.extend(event::parse_datagram(data));
            if ends_dump(data) {
                break;
            }
        }
        out
    }
}

/// The dump request, filtered by `ct mark & mask == mark`.
fn request(seq: u32, mark: u32, mask: u32) -> Vec<u8> {
    let attr = |t: u16, v: u32| {
        let mut a = Vec::with_capacity(8);
        a.extend_from_slice(&8u16.to_ne_bytes());
        a.extend_from_slice(&t.to_ne_bytes());
        a.extend_from_slice(&v.to_be_bytes());
        a
    };
    let body = [
        // AF_UNSPEC: entries of both families (IPv4 and IPv6 frontends).
        vec![libc::AF_UNSPEC as u8, 0, 0, 0],
        attr(CTA_MARK, mark),
        attr(CTA_MARK_MASK, mask),
    ]
    .concat();
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&MSG_CT_GET.to_ne_bytes());
    m.extend_from_slice(&DUMP_FLAGS.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend(body);
    m
}

/// Whether a datagram holds the dump's end (`NLMSG_DONE`) or an error answer.
fn ends_dump(mut buf: &[u8]) -> bool {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == NLMSG_DONE || kind == NLMSG_ERROR {
            return true;
        }
        if len < 16 || len > buf.len() {
            return true;
        }
        buf = buf.get((len + 3) & !3..).unwrap_or_default();
    }
    false
}

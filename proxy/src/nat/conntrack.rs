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

/// `NFNLGRP_CONNTRACK_NEW`, `NFNLGRP_CONNTRACK_DESTROY`.
const GROUP_NEW: u32 = 1;
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

//! Listening sockets. SO_REUSEPORT is set so a second process (a reload, an upgrade) can bind
//! the same address while this one drains.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// HAProxy's default backlog is the frontend's maxconn; we use the kernel's somaxconn ceiling.
const BACKLOG: i32 = 4096;

pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]:P` accepts IPv4 too, as HAProxy's `v4v6` default on Linux.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

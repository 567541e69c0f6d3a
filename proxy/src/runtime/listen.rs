//! Listening sockets. SO_REUSEPORT is set so a second process (a reload, an upgrade) can bind
//! the same address while this one drains.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// HAProxy's default backlog is the frontend's maxconn; we use the kernel's somaxconn ceiling.
const BACKLOG: i32 = 4096;

/// `v6only`: the bind's `v6only` (`Some(true)`) or `v4v6` (`Some(false)`); unset, an IPv6
/// address also accepts IPv4, as HAProxy's default on Linux.
pub fn bind_reuseport(
    addr: SocketAddr,
    v6only: Option<bool>,
) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6only.unwrap_or(false))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6only_is_what_the_bind_says() {
        let wildcard: SocketAddr = "[::]:0".parse().expect("addr");
        for (asked, got) in [(None, false), (Some(false), false), (Some(true), true)] {
            let l = bind_reuseport(wildcard, asked).expect("bind");
            assert_eq!(
                Socket::from(l).only_v6().expect("read back"),
                got,
                "{asked:?}"
            );
        }
    }
}

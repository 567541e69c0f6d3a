//! Passing a FIN on: `shutdown(SHUT_WR)` as a plain system call, never as an io_uring
//! operation. The kernel cannot run IORING_OP_SHUTDOWN without the chance of blocking, so
//! it hands every one to an io-wq worker thread: a thread wake-up and a hop to another CPU
//! per half-close. In the `conn-rate` bench those workers took 18 % of the hop's CPU
//! (perf, issue #14). On a TCP socket the call itself does not wait: it queues the FIN
//! behind the bytes already sent and returns.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;

/// Half-closes `socket`'s write side; an error means the peer is gone already.
pub fn shut_write<S: AsFd>(socket: &S) -> io::Result<()> {
    socket2::SockRef::from(socket).shutdown(Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_peer_reads_end_of_stream() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut theirs, _) = listener.accept().expect("accept");
        shut_write(&ours).expect("shutdown");
        let mut rest = Vec::new();
        assert_eq!(theirs.read_to_end(&mut rest).expect("read"), 0);
    }
}

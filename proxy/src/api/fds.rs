//! `_getsocks`: HAProxy's protocol for handing listening sockets to a new process (its
//! `-x`, `sock_get_old_sockets`), so a binary upgrade binds nothing anew and refuses no
//! connection. The sender writes the number of sockets (a native-endian `int`), then batches
//! of at most 253 descriptors as SCM_RIGHTS, each batch's data six bytes per socket (no
//! namespace name, no interface name, four zero bytes that were listener options before
//! HAProxy 2.3), and waits for the receiver's four-byte acknowledgement after each batch.

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// HAProxy's `MAX_SEND_FD`.
const BATCH: usize = 253;
/// Per socket: namespace name length, interface name length, four bytes of zeros.
const INFO_LEN: usize = 6;

pub fn send_listeners(sock: &UnixStream, listeners: &[OwnedFd]) -> std::io::Result<()> {
    // HAProxy sends nothing when it has nothing: the receiver then stops.
    if listeners.is_empty() {
        return Ok(());
    }
    let count = i32::try_from(listeners.len()).unwrap_or(i32::MAX);
    send(sock, &count.to_ne_bytes(), &[])?;
    for batch in listeners.chunks(BATCH) {
        let fds: Vec<RawFd> = batch.iter().map(AsRawFd::as_raw_fd).collect();
        let info = vec![0u8; INFO_LEN * batch.len()];
        send(sock, &info, &fds)?;
        let mut ack = [0u8; 4];
        (&*sock).read_exact(&mut ack)?;
    }
    Ok(())
}

fn send(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    if sent != data.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "short write while handing sockets over",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::io::{IoSliceMut, Write};

    /// The receiving side as HAProxy's `sock_get_old_sockets` runs it.
    #[test]
    fn sockets_arrive_as_haproxy_reads_them() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let original = listener.as_raw_fd();
        let fds = vec![OwnedFd::from(listener.try_clone().expect("dup"))];
        let sender = std::thread::spawn(move || send_listeners(&ours, &fds));
        let mut count = [0u8; 4];
        (&theirs).read_exact(&mut count).expect("count");
        assert_eq!(i32::from_ne_bytes(count), 1);
        let mut data = [0u8; 64];
        let mut space = nix::cmsg_space!([RawFd; 253]);
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = recvmsg::<()>(
            theirs.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("recvmsg");
        assert_eq!(msg.bytes, INFO_LEN);
        let mut got = Vec::new();
        for c in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(fds) = c {
                got.extend(fds);
            }
        }
        assert_eq!(got.len(), 1);
        (&theirs).write_all(&1i32.to_ne_bytes()).expect("ack");
        sender.join().expect("sender").expect("sent");
        // The descriptor received is the same listening socket (same inode).
        let inode = |fd: RawFd| std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("fd");
        assert_eq!(inode(got[0]), inode(original));
    }
}

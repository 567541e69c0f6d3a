//! Messages of the hand-over protocol on a unix stream socket: a 4-byte big-endian length,
//! then one line of text; descriptors travel with a message as SCM_RIGHTS, attached to its
//! first byte (one `sendmsg`), so the receiver finds them with the length it reads first.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::UpgradeError;

/// No message of ours comes near this; a longer length is a peer speaking something else.
const MAX_LEN: usize = 64 * 1024;

/// Descriptors one message may carry (a flow has two).
const MAX_FDS: usize = 4;

/// A command as a runtime API client sends it: one text line.
pub fn send_line(sock: &UnixStream, line: &str) -> Result<(), UpgradeError> {
    let mut w = sock;
    w.write_all(format!("{line}\n").as_bytes())?;
    Ok(())
}

pub fn send(sock: &UnixStream, text: &str, fds: &[RawFd]) -> Result<(), UpgradeError> {
    let len = u32::try_from(text.len())
        .ok()
        .filter(|&n| n as usize <= MAX_LEN)
        .ok_or_else(|| UpgradeError::Protocol(format!("message too long: {}", text.len())))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(text.as_bytes());
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    let iov = [IoSlice::new(&frame)];
    let sent = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => break n,
            // Nothing was sent: the descriptors go with the next try.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(UpgradeError::Io(e.into())),
        }
    };
    // The descriptors went with the first bytes; the rest of a long frame follows plainly.
    let mut rest = sock;
    rest.write_all(&frame[sent..])?;
    Ok(())
}

pub fn recv(sock: &UnixStream) -> Result<(String, Vec<OwnedFd>), UpgradeError> {
    let mut head = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < head.len() {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut head[got..])];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            // Interrupted before anything was read: nothing lost, ask again.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(UpgradeError::Io(e.into())),
        };
        let n = msg.bytes;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just installed these descriptors in this process for
                    // us; nothing else knows them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(UpgradeError::Protocol("descriptors truncated".into()));
        }
        if n == 0 {
            return Err(UpgradeError::Closed);
        }
        got += n;
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_LEN {
        return Err(UpgradeError::Protocol(format!("message of {len} bytes")));
    }
    let mut text = vec![0u8; len];
    let mut r = sock;
    r.read_exact(&mut text)?;
    let text = String::from_utf8(text)
        .map_err(|_| UpgradeError::Protocol("message is not UTF-8".into()))?;
    Ok((text, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_descriptors_arrive_together() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (x, _y) = UnixStream::pair().expect("pair");
        send(&a, "hello there", &[x.as_raw_fd()]).expect("send");
        send(&a, "second", &[]).expect("send");
        let (text, fds) = recv(&b).expect("recv");
        assert_eq!((text.as_str(), fds.len()), ("hello there", 1));
        let (text, fds) = recv(&b).expect("recv");
        assert_eq!((text.as_str(), fds.len()), ("second", 0));
        drop(a);
        assert!(matches!(recv(&b), Err(UpgradeError::Closed)));
    }
}

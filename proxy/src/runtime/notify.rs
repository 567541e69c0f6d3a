//! systemd's `Type=notify` protocol (sd_notify(3)): one datagram of `KEY=VALUE` lines to the
//! socket named by `$NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract name.
//!
//! Written here rather than taken from the `sd-notify` crate because that crate (0.5) connects
//! to `@name` as a file path, and systemd hands abstract names to services in containers and
//! to `systemd-run --user`. Without `$NOTIFY_SOCKET` (not started by systemd) every call is a
//! no-op. A failed send is logged, never fatal: the proxy serves whether or not its manager
//! hears it.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Listeners are bound and workers started; also the end of a reload.
pub fn ready() {
    send("READY=1\n".to_string());
}

/// A reload starts. systemd ≥ 253 (`Type=notify-reload`) requires MONOTONIC_USEC in the same
/// message, to tell this reload from an older one; earlier versions ignore it.
pub fn reloading() {
    send(format!(
        "RELOADING=1\nMONOTONIC_USEC={}\n",
        monotonic_usec()
    ));
}

/// A stop signal came: the listeners close and the drain begins.
pub fn stopping() {
    send("STOPPING=1\n".to_string());
}

fn send(message: String) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send_to(&target, message.as_bytes()) {
        log::warn!(
            "cannot notify the service manager at {} ({}): {e}",
            target.to_string_lossy(),
            message.trim_end().replace('\n', " ")
        );
    }
}

/// One datagram to `target`: `@name` is an abstract address, anything else a path.
fn send_to(target: &OsStr, message: &[u8]) -> io::Result<()> {
    let bytes = target.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(target)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor an @abstract name",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(message, &addr)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "datagram cut short",
        ));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload stamps on.
fn monotonic_usec() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(addr: &SocketAddr) -> UnixDatagram {
        let r = UnixDatagram::bind_addr(addr).expect("bind the receiving socket");
        r.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        r
    }

    fn recv(r: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = r.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn reaches_a_path_socket() {
        let path = std::env::temp_dir().join(format!("notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let r = receiver(&SocketAddr::from_pathname(&path).expect("path"));
        send_to(path.as_os_str(), b"READY=1\n").expect("sent");
        assert_eq!(recv(&r), "READY=1\n");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn reaches_an_abstract_socket() {
        let name = format!("proxy-notify-test-{}", std::process::id());
        let r = receiver(&SocketAddr::from_abstract_name(name.as_bytes()).expect("name"));
        send_to(OsStr::new(&format!("@{name}")), b"STOPPING=1\n").expect("sent");
        assert_eq!(recv(&r), "STOPPING=1\n");
    }

    #[test]
    fn a_relative_target_is_refused() {
        let e = send_to(OsStr::new("notify.sock"), b"READY=1\n").expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }
}

//! Child processes: bounded waits, signals, and "is this process listening on that port yet".

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits for `child` to exit, at most `limit`. `None` if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` unless the child has already been reaped (its pid may belong to someone else).
pub fn signal(child: &mut Child, sig: Signal) {
    if let Ok(None) = child.try_wait() {
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
    }
}

/// SIGTERM, then SIGKILL after `grace`; always reaps.
pub fn terminate(child: &mut Child, grace: Duration) -> ExitStatus {
    signal(child, Signal::SIGTERM);
    if let Some(status) = wait_timeout(child, grace) {
        return status;
    }
    kill_now(child)
}

/// SIGKILL and reap.
pub fn kill_now(child: &mut Child) -> ExitStatus {
    signal(child, Signal::SIGKILL);
    child.wait().expect("reaping a killed child")
}

/// Inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut out = HashSet::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in entries.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                if let Ok(i) = inode.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// TCP sockets in LISTEN state, as (local address, inode), in the calling thread's network
/// namespace (`/proc/net` is the main thread's).
fn listening_sockets() -> Vec<(SocketAddr, u64)> {
    let mut out = Vec::new();
    for (file, v6) in [
        ("/proc/thread-self/net/tcp", false),
        ("/proc/thread-self/net/tcp6", true),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let Some((ip_hex, port_hex)) = cols[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port_hex, 16) else {
                continue;
            };
            let Ok(inode) = cols[9].parse::<u64>() else {
                continue;
            };
            let ip = if v6 {
                // Only the unspecified address (::) and v4-mapped addresses matter here.
                if ip_hex.chars().all(|c| c == '0') {
                    Ipv4Addr::UNSPECIFIED
                } else if ip_hex.len() == 32 && &ip_hex[..24] == "0000000000000000FFFF0000" {
                    parse_v4_hex(&ip_hex[24..])
                } else {
                    continue;
                }
            } else {
                parse_v4_hex(ip_hex)
            };
            out.push((SocketAddr::from((ip, port)), inode));
        }
    }
    out
}

/// /proc/net/tcp prints an IPv4 address as the u32 in host (little-endian) order.
fn parse_v4_hex(h: &str) -> Ipv4Addr {
    let v = u32::from_str_radix(h, 16).unwrap_or(0);
    Ipv4Addr::from(v.to_le_bytes())
}

/// True when process `pid` has a listening socket that accepts connections to `addr`
/// (bound to that address or to the wildcard). Looking at the process's own sockets rather than
/// connecting means no probe connection reaches a backend or moves a round-robin cursor, and a
/// stranger on the same port does not count.
/// Inodes of the sockets listening on `addr`'s port that process `pid` holds: two processes
/// holding the same inode share one socket (handed over, not bound twice).
pub fn listening_inodes(pid: u32, addr: SocketAddr) -> Vec<u64> {
    let mine = socket_inodes(pid);
    listening_sockets()
        .into_iter()
        .filter(|(a, inode)| mine.contains(inode) && a.port() == addr.port())
        .map(|(_, inode)| inode)
        .collect()
}

pub fn is_listening(pid: u32, addr: SocketAddr) -> bool {
    let mine = socket_inodes(pid);
    listening_sockets().iter().any(|(a, inode)| {
        mine.contains(inode)
            && a.port() == addr.port()
            && (a.ip() == addr.ip() || a.ip().is_unspecified())
    })
}

/// Local addresses of the established IPv4 TCP connections whose remote end is `remote`:
/// who is connected to a node, to tell one connection kept from a reconnect.
pub fn connections_to(remote: SocketAddr) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/tcp") else {
        return Vec::new();
    };
    let addr = |col: &str| {
        let (ip, port) = col.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::from((parse_v4_hex(ip), port)))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "01" || addr(cols[2])? != remote {
                return None;
            }
            addr(cols[1])
        })
        .collect()
}

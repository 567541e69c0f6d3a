//! Port allocation that is safe across tests running in parallel threads of one process, and
//! unlikely to collide with another test process.
//!
//! Ports come from below the kernel's ephemeral range (`ip_local_port_range`, usually from
//! 32768): a port asked from the kernel with `bind(:0)` is an ephemeral one, and the many
//! outgoing connections of these tests (proxy → backend, ffmpeg → proxy) take their local ports
//! from that same range, so such a port can be taken by a connection between the moment it is
//! handed out and the moment the server binds it. Below the range only listeners compete.
//! Each port is handed out once per process, and checked free with a real `bind` first.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<(HashSet<u16>, u16)>> = Mutex::new(None);

/// A loopback address other than 127.0.0.1 (Linux routes all of 127.0.0.0/8 to `lo`).
pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse().ok()))
        .unwrap_or(32768)
}

/// A port that is free on `ip` now and has not been handed out before in this process.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    const LOW: u16 = 10_000;
    let high = ephemeral_low().max(LOW + 2_000);
    let span = high - LOW;
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let (handed, next) = guard.get_or_insert_with(|| {
        // Spread processes over the range so two test binaries rarely probe the same ports.
        let start = (std::process::id() as u64 * 7919 % span as u64) as u16;
        (HashSet::new(), start)
    });
    for _ in 0..span {
        let port = LOW + *next;
        *next = (*next + 1) % span;
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind(SocketAddr::from((ip, port))).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free TCP port on {ip} between {LOW} and {high}");
}

/// `free_port` as a socket address.
pub fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((ip, free_port(ip)))
}

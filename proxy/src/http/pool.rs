//! Idle server connections kept for reuse (`option http-keep-alive`), one pool per worker
//! thread so taking one never needs a lock. An idle connection is kept for less than the
//! backend's own keep-alive, and checked before reuse; a reuse that fails anyway is retried on
//! a fresh connection by the session (docs/kernel-facts.md: without both, 502s appear after idle gaps).

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpStream;
use nix::sys::socket::{recv, MsgFlags};

use crate::upstream::Server;

/// Idle connections kept per server and worker.
const MAX_IDLE_PER_SERVER: usize = 16;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

thread_local! {
    static POOL: RefCell<HashMap<usize, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// Servers live as long as the config, so their address is a stable key.
fn key(server: &Arc<Server>) -> usize {
    Arc::as_ptr(server) as usize
}

/// The most recently used live connection to `server` idle for less than `max_idle`.
pub fn take(server: &Arc<Server>, max_idle: Duration) -> Option<TcpStream> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.get_mut(&key(server))?;
        drop_expired(list, max_idle);
        while let Some(idle) = list.pop() {
            if is_quiet(&idle.stream) {
                return Some(idle.stream);
            }
        }
        None
    })
}

/// A connection that began with a PROXY header names its client to the server for as long
/// as it lives, so it is closed instead: reused for another client it would pass that
/// client's requests off as the first one's (HAProxy marks it private to its session).
pub fn put(server: &Arc<Server>, stream: TcpStream, max_idle: Duration) {
    if server.sends_proxy_header() {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.entry(key(server)).or_default();
        drop_expired(list, max_idle);
        if list.len() >= MAX_IDLE_PER_SERVER {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since: Instant::now(),
        });
    });
}

/// Closes the connections idle for `max_idle` or more. The list is in the order they were
/// put back, oldest first, so they are a prefix: one clock read, not one per connection.
fn drop_expired(list: &mut Vec<Idle>, max_idle: Duration) {
    let Some(oldest_kept) = Instant::now().checked_sub(max_idle) else {
        return;
    };
    let expired = list.partition_point(|i| i.since <= oldest_kept);
    list.drain(..expired);
}

/// Open, and nothing unread: a server that closed shows EOF, and bytes it sent while idle
/// would be read as the next response.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let fd = stream.as_fd().as_raw_fd();
    matches!(
        recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Err(nix::errno::Errno::EAGAIN)
    )
}

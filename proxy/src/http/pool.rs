//! Idle server connections kept for reuse (`option http-keep-alive`), one pool per worker
//! thread so taking one never needs a lock. An idle connection is kept for less than the
//! backend's own keep-alive, and checked before reuse; a reuse that fails anyway is retried on
//! a fresh connection by the session (docs/kernel-facts.md: without both, 502s appear after idle gaps).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpStream;
use nix::sys::socket::{recv, MsgFlags};

use crate::upstream::Server;

use super::reuse::Take;

/// Idle connections kept per server and worker.
const MAX_IDLE_PER_SERVER: usize = 16;

struct Idle {
    stream: TcpStream,
    /// Where it goes: a server whose address changed since (`set server … addr`) must not
    /// get it, nor a server added later at the freed place of a deleted one.
    to: SocketAddr,
    since: Instant,
    /// Requests this connection has carried (`http-reuse aggressive` takes only those that
    /// carried two or more for a client's first request).
    served: u32,
}

thread_local! {
    static POOL: RefCell<HashMap<usize, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// A server's place in memory; a deleted server's may be reused by one added later, which
/// the connection's own address (`Idle::to`) tells apart.
fn key(server: &Arc<Server>) -> usize {
    Arc::as_ptr(server) as usize
}

/// The most recently used live connection to `server` idle for less than `max_idle` that
/// `take` allows, with the requests it carried so far.
pub fn take(server: &Arc<Server>, max_idle: Duration, take: Take) -> Option<(TcpStream, u32)> {
    if take == Take::Fresh {
        return None;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.get_mut(&key(server))?;
        drop_expired(list, max_idle);
        let to = server.addr();
        list.retain(|i| i.to == to);
        while let Some(at) = list
            .iter()
            .rposition(|i| take == Take::Any || i.served >= 2)
        {
            let idle = list.remove(at);
            if is_quiet(&idle.stream) {
                return Some((idle.stream, idle.served));
            }
        }
        None
    })
}

/// Only connections `reuse::shared` allows come here: one that began with a PROXY header
/// names its client for as long as it lives, and stays private to that client's session.
pub fn put(server: &Arc<Server>, stream: TcpStream, max_idle: Duration, served: u32) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.entry(key(server)).or_default();
        drop_expired(list, max_idle);
        if list.len() >= MAX_IDLE_PER_SERVER {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            to: server.addr(),
            since: Instant::now(),
            served,
        });
    });
}

/// An idle server connection private to one client connection (`http-reuse never`): kept
/// by that client's session, never offered to another.
pub struct Private {
    server: Arc<Server>,
    idle: Idle,
}

impl Private {
    pub fn new(server: &Arc<Server>, stream: TcpStream, served: u32) -> Private {
        Private {
            server: server.clone(),
            idle: Idle {
                stream,
                to: server.addr(),
                since: Instant::now(),
                served,
            },
        }
    }
}

/// The private connection in `slot` when it goes to `server`, is younger than `max_idle`
/// and still quiet; it is taken out of the slot either way it is not usable.
pub fn take_private(
    slot: &mut Option<Private>,
    server: &Arc<Server>,
    max_idle: Duration,
) -> Option<(TcpStream, u32)> {
    let p = slot.take()?;
    if !Arc::ptr_eq(&p.server, server) {
        *slot = Some(p);
        return None;
    }
    let fresh = p.idle.since.elapsed() < max_idle && p.idle.to == server.addr();
    (fresh && is_quiet(&p.idle.stream)).then_some((p.idle.stream, p.idle.served))
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

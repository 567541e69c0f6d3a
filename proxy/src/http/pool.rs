//! Idle server connections kept for reuse (`option http-keep-alive`), one pool per worker
//! thread so taking one never needs a lock. An idle connection is kept for less than the
//! backend's own keep-alive, and checked before reuse; a reuse that fails anyway is retried on
//! a fresh connection by the session (docs/kernel-facts.md: without both, 502s appear after idle gaps).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use compio::net::TcpStream;
use nix::sys::socket::{recv, MsgFlags};

use crate::upstream::Server;

use super::reuse::Take;

/// Idle connections kept per server and worker.
const MAX_IDLE_PER_SERVER: usize = 16;

/// How often a worker closes its idle connections that expired, that their server closed
/// (left in CLOSE-WAIT otherwise, holding a descriptor until the next request to that
/// server), whose server moved (`set server … addr`, DNS), or whose server left the
/// configuration (a reload, `del server`).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    stream: TcpStream,
    /// Where it goes: a server whose address changed since (`set server … addr`, DNS) must
    /// not get it.
    to: SocketAddr,
    /// When it is closed unused: the backend's idle limit after it was put back.
    expires: Instant,
    /// Requests this connection has carried (`http-reuse aggressive` takes only those that
    /// carried two or more for a client's first request).
    served: u32,
}

/// One server's idle connections. The server is held weakly: the pool must not keep a
/// server of an old configuration alive, and a new server allocated where a dropped one was
/// must not inherit its connections.
struct Entry {
    server: Weak<Server>,
    idle: Vec<Idle>,
}

impl Entry {
    fn is_for(&self, server: &Arc<Server>) -> bool {
        std::ptr::eq(self.server.as_ptr(), Arc::as_ptr(server)) && self.server.strong_count() > 0
    }
}

thread_local! {
    static POOL: RefCell<HashMap<usize, Entry>> = RefCell::new(HashMap::new());
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

fn key(server: &Arc<Server>) -> usize {
    Arc::as_ptr(server) as usize
}

/// The most recently used live connection to `server` that has not expired and that `take`
/// allows, with the requests it carried so far.
pub fn take(server: &Arc<Server>, take: Take) -> Option<(TcpStream, u32)> {
    if take == Take::Fresh {
        return None;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let entry = pool.get_mut(&key(server))?;
        if !entry.is_for(server) {
            return None;
        }
        drop_expired(&mut entry.idle, Instant::now());
        let to = server.addr();
        entry.idle.retain(|i| i.to == to);
        while let Some(at) = entry
            .idle
            .iter()
            .rposition(|i| take == Take::Any || i.served >= 2)
        {
            let idle = entry.idle.remove(at);
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
    let now = Instant::now();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let entry = pool.entry(key(server)).or_insert_with(|| Entry {
            server: Arc::downgrade(server),
            idle: Vec::new(),
        });
        if !entry.is_for(server) {
            *entry = Entry {
                server: Arc::downgrade(server),
                idle: Vec::new(),
            };
        }
        drop_expired(&mut entry.idle, now);
        if entry.idle.len() >= MAX_IDLE_PER_SERVER {
            entry.idle.remove(0);
        }
        entry.idle.push(Idle {
            stream,
            to: server.addr(),
            expires: now + max_idle,
            served,
        });
    });
    start_sweeping();
}

/// The worker's sweeper, started with its first pooled connection.
fn start_sweeping() {
    if SWEEPING.replace(true) {
        return;
    }
    compio::runtime::spawn(async {
        loop {
            compio::time::sleep(SWEEP_EVERY).await;
            sweep(Instant::now());
        }
    })
    .detach();
}

/// Closes what [`SWEEP_EVERY`] says.
fn sweep(now: Instant) {
    POOL.with(|pool| {
        pool.borrow_mut().retain(|_, entry| {
            let Some(server) = entry.server.upgrade() else {
                return false;
            };
            let to = server.addr();
            entry
                .idle
                .retain(|i| i.expires > now && i.to == to && is_quiet(&i.stream));
            !entry.idle.is_empty()
        })
    });
}

/// An idle server connection private to one client connection (`http-reuse never`): kept
/// by that client's session, never offered to another.
pub struct Private {
    server: Arc<Server>,
    idle: Idle,
}

impl Private {
    pub fn new(
        server: &Arc<Server>,
        stream: TcpStream,
        max_idle: Duration,
        served: u32,
    ) -> Private {
        Private {
            server: server.clone(),
            idle: Idle {
                stream,
                to: server.addr(),
                expires: Instant::now() + max_idle,
                served,
            },
        }
    }
}

/// The private connection in `slot` when it goes to `server`, is younger than `max_idle`
/// and still quiet; it is taken out of the slot either way it is not usable.
pub fn take_private(slot: &mut Option<Private>, server: &Arc<Server>) -> Option<(TcpStream, u32)> {
    let p = slot.take()?;
    if !Arc::ptr_eq(&p.server, server) {
        *slot = Some(p);
        return None;
    }
    let fresh = Instant::now() < p.idle.expires && p.idle.to == server.addr();
    (fresh && is_quiet(&p.idle.stream)).then_some((p.idle.stream, p.idle.served))
}

/// Closes the connections that expired by `now`. A backend's idle limit is the same for all
/// its connections, so in the order they were put back they expire oldest first: a prefix.
fn drop_expired(list: &mut Vec<Idle>, now: Instant) {
    let expired = list.partition_point(|i| i.expires <= now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Loc, ServerParams};

    fn server() -> Arc<Server> {
        Arc::new(Server::from_config(
            0,
            &config::Server {
                name: "s".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                params: ServerParams::default(),
                dns: None,
                loc: Loc::default(),
            },
        ))
    }

    fn pooled_count() -> usize {
        POOL.with(|p| p.borrow().values().map(|e| e.idle.len()).sum())
    }

    #[test]
    fn the_sweep_closes_what_the_server_closed_and_what_outlived_its_server() {
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (a, b) = (server(), server());
            let mut peers = Vec::new();
            for s in [&a, &a, &b] {
                let stream = TcpStream::connect(addr).await.expect("connect");
                peers.push(listener.accept().expect("accept").0);
                put(s, stream, Duration::from_secs(60), 1);
            }
            assert_eq!(pooled_count(), 3);
            sweep(Instant::now());
            assert_eq!(pooled_count(), 3, "quiet and young: kept");
            // The server closes the first connection; server `b` leaves the config.
            drop(peers.remove(0));
            drop(b);
            std::thread::sleep(Duration::from_millis(50));
            sweep(Instant::now());
            assert_eq!(pooled_count(), 1);
            assert!(take(&a, Take::Any).is_some());
            // Expiry: a connection put back with a short limit is gone at the next sweep.
            let stream = TcpStream::connect(addr).await.expect("connect");
            let _peer = listener.accept().expect("accept");
            put(&a, stream, Duration::from_millis(1), 1);
            sweep(Instant::now() + Duration::from_millis(5));
            assert_eq!(pooled_count(), 0);
        });
    }
}

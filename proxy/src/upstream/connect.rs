//! Reaching a server, with HAProxy's `retries` and `option redispatch`, for both modes: `mode
//! tcp` picks the first server here, `mode http` brings its own (persistence cookie or the
//! balancing algorithm) to [`connect_from`].
//!
//! The connection phase is counted here, where each decision is taken, the way HAProxy books
//! it: every attempt in `connect` (backend and server), a retry on the same server in `wretr`
//! of that server, a move to another server in `wredis` of the server left (not in `wretr`),
//! the time to connect in `ctime`, and the final failure in `econ` of the last server tried.
//!
//! A `send-proxy`/`send-proxy-v2` server gets its PROXY header as part of the connection:
//! written right after the connect and before the stream is handed to either mode, so no
//! client byte can precede it, and a header that cannot be written fails the attempt like a
//! refused connect (retried, redispatched, counted the same).
//!
//! Before the first attempt a session needs one of the server's `maxconn` slots. When every
//! usable server is full it waits in the backend's queue (`qcur`, `qmax`, `qtime`) for the
//! first slot that frees on any of them, up to `timeout queue`, as HAProxy does.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::io::AsyncWriteExt;
use compio::net::TcpStream;

use super::{proxy_proto, Backend, Origin, PickContext, Server, ServerClaim, ServerSet, Waiting};
use crate::counters::Counters;
use crate::log::{Cause, Phase, TermState};

pub struct Connected {
    pub stream: TcpStream,
    pub claim: ServerClaim,
    pub retries: u32,
    /// The last retry went to another server than the first (HAProxy's `+` before `%rc`).
    pub redispatched: bool,
    pub connect_time: Duration,
    /// Time spent in the queue waiting for a free slot (HAProxy's `Tw`).
    pub queue_wait: Duration,
}

/// Every attempt failed.
#[derive(Debug)]
pub struct Failed {
    /// The last server tried.
    pub server: Arc<Server>,
    pub retries: u32,
    pub redispatched: bool,
    /// The last failure was a timeout.
    pub timed_out: bool,
    /// No server slot freed within `timeout queue`: nothing was attempted.
    pub queue_timeout: bool,
    /// The wait was in `server`'s own queue (a persistence cookie named it), so the server
    /// was assigned; after a wait in the backend's queue none was (HAProxy's `<NOSRV>`).
    pub queued_on_server: bool,
    pub queue_wait: Duration,
}

impl Failed {
    /// HAProxy's termination state: `sQ` for a queue timeout, `sC` for a connect timeout,
    /// `SC` for a refused connection.
    pub fn term(&self) -> TermState {
        if self.queue_timeout {
            TermState::new(Cause::ServerTimeout, Phase::Queue)
        } else if self.timed_out {
            TermState::new(Cause::ServerTimeout, Phase::Connect)
        } else {
            TermState::new(Cause::Server, Phase::Connect)
        }
    }
}

#[derive(Debug)]
pub enum ConnectFailure {
    /// No server is UP (or all are full): HAProxy's `<NOSRV>`.
    NoServer,
    Failed(Failed),
}

/// HAProxy waits min(`timeout connect`, 1 s) before retrying the same server, so a restarting
/// server is not hammered; a redispatch to another server goes at once.
const TURNAROUND: Duration = Duration::from_secs(1);

/// Picks a server by the balancing algorithm and connects to it (or, after failures, to
/// another one). "No server" is counted by the caller, which knows how it answers.
pub async fn connect_server(be: &Backend, origin: &Origin) -> Result<Connected, ConnectFailure> {
    let first = be
        .set
        .pick_server(PickContext::new(origin.src.ip(), &[]))
        .ok_or(ConnectFailure::NoServer)?;
    connect_from(be, first, origin)
        .await
        .map_err(ConnectFailure::Failed)
}

/// One of the server slots: `first`'s when it has one free. Else a session `pinned` to
/// `first` (its persistence cookie) waits in `first`'s own queue, unless that queue holds
/// `maxqueue` already; any other waits in the backend's queue for the first slot that frees
/// on any usable server. `Err` with the time waited, and whether it was in `first`'s own
/// queue, when `timeout queue` runs out.
async fn take_slot(
    set: &ServerSet,
    first: &Arc<Server>,
    client_ip: IpAddr,
    pinned: bool,
) -> Result<(ServerClaim, Duration), (Duration, bool)> {
    if let Some(claim) = first.try_claim() {
        return Ok((claim, Duration::ZERO));
    }
    let pinned = pinned && !first.queue_is_full();
    if !pinned {
        // `first` filled up since it was picked (or its queue is full): another may have room.
        if let Some(claim) = claim_free(set, first, client_ip) {
            return Ok((claim, Duration::ZERO));
        }
    }
    let started = Instant::now();
    let claim = if pinned {
        let _waiting = Waiting::enter(&first.stats.traffic);
        let wait = async {
            loop {
                let freed = first.listen();
                if let Some(claim) = first.try_claim() {
                    return claim;
                }
                freed.await;
            }
        };
        within(set.queue.timeout, wait).await
    } else {
        let _waiting = Waiting::enter(&set.stats.traffic);
        let wait = async {
            loop {
                let freed = set.queue.listen();
                if let Some(claim) = claim_free(set, first, client_ip) {
                    return claim;
                }
                freed.await;
            }
        };
        within(set.queue.timeout, wait).await
    };
    claim
        .map(|c| (c, started.elapsed()))
        .ok_or_else(|| (started.elapsed(), pinned))
}

/// `wait` bounded by `limit` (`timeout queue`); `None` when the limit passed first.
async fn within<T>(
    limit: Option<Duration>,
    wait: impl std::future::Future<Output = T>,
) -> Option<T> {
    match limit {
        Some(limit) => compio::time::timeout(limit, wait).await.ok(),
        None => Some(wait.await),
    }
}

/// A free slot now: on `first` when it has one, else on the algorithm's pick among the
/// servers with room (retried while racing sessions take the slots picked).
fn claim_free(set: &ServerSet, first: &Arc<Server>, client_ip: IpAddr) -> Option<ServerClaim> {
    if first.is_up_and_weighted() {
        if let Some(claim) = first.try_claim() {
            return Some(claim);
        }
    }
    let ctx = PickContext::new(client_ip, &[]);
    for _ in 0..set.servers().len() {
        if let Some(claim) = set.pick_free(ctx)?.try_claim() {
            return Some(claim);
        }
    }
    None
}

/// Connects to `first` (picked by the balancing algorithm); failed attempts are retried on the
/// same server, and with `option redispatch` the last retry goes to another server when one
/// is usable.
pub async fn connect_from(
    be: &Backend,
    first: Arc<Server>,
    origin: &Origin,
) -> Result<Connected, Failed> {
    connect_pinned(be, first, origin, false).await
}

/// As [`connect_from`]; `pinned`: `first` was named by a persistence cookie, so while it is
/// full the session waits for it in particular (in its own queue), as HAProxy does.
pub async fn connect_pinned(
    be: &Backend,
    first: Arc<Server>,
    origin: &Origin,
    pinned: bool,
) -> Result<Connected, Failed> {
    let slot = reserve(be, first, origin.src.ip(), pinned).await?;
    connect_slot(be, slot, origin).await
}

/// A server slot held before any connection exists. `mode http` takes one before it looks
/// for a pooled connection, so a reused connection counts against `maxconn` (and waits in
/// the queue) exactly as a fresh one: HAProxy counts a server's active requests, not its
/// idle connections.
pub struct Slot {
    pub claim: ServerClaim,
    /// Time spent in the queue (HAProxy's `Tw`).
    pub queue_wait: Duration,
}

/// Takes a slot as [`connect_pinned`] does (queueing when every usable server is full) and
/// samples the queue time on the backend and on the server that got the slot. `Err` is a
/// queue timeout: no server was assigned.
pub async fn reserve(
    be: &Backend,
    first: Arc<Server>,
    client_ip: IpAddr,
    pinned: bool,
) -> Result<Slot, Failed> {
    match take_slot(&be.set, &first, client_ip, pinned).await {
        Ok((claim, queue_wait)) => {
            let queued_ms = queue_wait.as_millis() as u64;
            be.set.stats.traffic.timings.queue.add(queued_ms);
            claim.server.stats.traffic.timings.queue.add(queued_ms);
            Ok(Slot { claim, queue_wait })
        }
        Err((queue_wait, queued_on_server)) => {
            // HAProxy's queue expiry (`back_handle_st_que`) counts a connection error on
            // the backend, and on the server whose own queue the session waited in.
            Counters::bump(&be.set.stats.traffic.failed_conn);
            if queued_on_server {
                Counters::bump(&first.stats.traffic.failed_conn);
            }
            Err(Failed {
                server: first,
                retries: 0,
                redispatched: false,
                timed_out: false,
                queue_timeout: true,
                queued_on_server,
                queue_wait,
            })
        }
    }
}

/// Connects to the server of a slot already held, with retries and redispatch; `origin` is
/// the client's (balancing on redispatch, the PROXY header).
pub async fn connect_slot(be: &Backend, slot: Slot, origin: &Origin) -> Result<Connected, Failed> {
    let client_ip = origin.src.ip();
    let backend = &be.set.stats.traffic;
    let Slot {
        mut claim,
        queue_wait,
    } = slot;
    let mut server = claim.server.clone();
    let started = Instant::now();
    let mut tried: Vec<usize> = Vec::new();
    let mut timed_out = false;
    let mut redispatched = false;
    for attempt in 0..=be.retries {
        if attempt > 0 {
            let redispatch = be.redispatch && attempt == be.retries;
            // Only a server with a free slot is worth moving to.
            let other = redispatch
                .then(|| be.set.pick_free(PickContext::new(client_ip, &tried)))
                .flatten()
                .filter(|o| o.index != server.index)
                .and_then(|o| o.try_claim());
            // Booked against the server being left, as HAProxy's `assign_server_and_queue`.
            match other {
                Some(o) => {
                    bump(backend, &server, |c| &c.redispatches);
                    server = o.server.clone();
                    claim = o;
                    redispatched = true;
                }
                None => {
                    bump(backend, &server, |c| &c.retries);
                    compio::time::sleep(be.connect_timeout.unwrap_or(TURNAROUND).min(TURNAROUND))
                        .await
                }
            }
        }
        bump(backend, &server, |c| &c.connect_attempts);
        match try_connect(&server, be.connect_timeout, origin).await {
            Ok(stream) => {
                let connect_time = started.elapsed();
                let ms = connect_time.as_millis() as u64;
                backend.timings.connect.add(ms);
                server.stats.traffic.timings.connect.add(ms);
                return Ok(Connected {
                    stream,
                    claim,
                    retries: attempt,
                    redispatched,
                    connect_time,
                    queue_wait,
                });
            }
            Err(e) => {
                timed_out = e.kind() == std::io::ErrorKind::TimedOut;
                log::debug!("connect to {}/{} failed: {e}", be.set.backend, server.name);
                if !tried.contains(&server.index) {
                    tried.push(server.index);
                }
            }
        }
    }
    bump(backend, &server, |c| &c.failed_conn);
    Err(Failed {
        server,
        retries: be.retries,
        redispatched,
        timed_out,
        queue_timeout: false,
        queued_on_server: false,
        queue_wait,
    })
}

/// One more on the backend's and the server's counter of the same name.
fn bump(backend: &Counters, server: &Server, counter: fn(&Counters) -> &AtomicU64) {
    Counters::bump(counter(backend));
    Counters::bump(counter(&server.stats.traffic));
}

async fn try_connect(
    server: &Server,
    limit: Option<Duration>,
    origin: &Origin,
) -> std::io::Result<TcpStream> {
    let stream = bounded(limit, "connect timeout", TcpStream::connect(server.addr())).await?;
    // RTMP acks and control messages are small, and so are HTTP heads: do not let Nagle hold
    // them back.
    let _ = stream.set_nodelay(true);
    if let Some(header) = proxy_proto::for_server(&server.params, origin) {
        let mut w = &stream;
        let write = async { w.write_all(header).await.0 };
        bounded(limit, "PROXY header write timeout", write).await?;
    }
    Ok(stream)
}

/// `op` within `limit` (`timeout connect`), a timeout being `TimedOut` named by `what`.
async fn bounded<T>(
    limit: Option<Duration>,
    what: &str,
    op: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match limit {
        Some(limit) => compio::time::timeout(limit, op)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string()))?,
        None => op.await,
    }
}

/// A client on 127.0.0.1, for the tests of this file.
#[cfg(test)]
fn here() -> Origin {
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    Origin {
        src: local,
        dst: local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A listening socket (connects succeed from its backlog) and an address nothing listens on.
    fn addresses() -> (std::net::TcpListener, std::net::SocketAddr) {
        let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        (live, dead)
    }

    fn backend(servers: &str, retries: u32, redispatch: bool) -> Backend {
        let cfg = crate::config::parse_str(
            &format!("backend be\n    timeout connect 100ms\n{servers}"),
            std::path::Path::new("t.cfg"),
        )
        .expect("valid config");
        let p = cfg.proxy("be").expect("backend");
        let mut be = Backend::new(p, Arc::new(ServerSet::from_config(p)));
        be.retries = retries;
        be.redispatch = redispatch;
        be
    }

    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_redispatch_is_booked_on_the_server_left() {
        let (live, dead) = addresses();
        let live_addr = live.local_addr().expect("addr");
        let be = backend(
            &format!("    server dead {dead}\n    server live {live_addr}\n"),
            1,
            true,
        );
        let first = be.set.servers()[0].clone();
        let got = run(connect_from(&be, first, &here()));
        let c = got
            .map_err(|f| f.server.name.clone())
            .expect("redispatched");
        assert_eq!(c.claim.server.name, "live");
        assert_eq!((c.retries, c.redispatched), (1, true));
        let (b, d, l) = (
            &be.set.stats.traffic,
            &be.set.servers()[0].stats.traffic,
            &be.set.servers()[1].stats.traffic,
        );
        assert_eq!((get(&b.redispatches), get(&b.retries)), (1, 0));
        assert_eq!((get(&d.redispatches), get(&d.retries)), (1, 0));
        assert_eq!(get(&l.redispatches) + get(&l.retries), 0);
        assert_eq!((get(&b.connect_attempts), get(&d.connect_attempts)), (2, 1));
        assert_eq!(get(&l.connect_attempts), 1);
        assert_eq!(get(&b.failed_conn) + get(&d.failed_conn), 0);
    }

    /// The header goes out right after the connect, before the stream is handed on: the
    /// server reads it before anything else, naming the client's origin.
    #[test]
    fn a_send_proxy_server_gets_the_header_first() {
        use std::io::Read;
        let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = live.local_addr().expect("addr");
        let be = backend(&format!("    server s {addr} send-proxy\n"), 0, false);
        let origin = Origin {
            src: "10.0.0.7:4321".parse().expect("src"),
            dst: "10.0.0.1:1935".parse().expect("dst"),
        };
        let first = be.set.servers()[0].clone();
        let c = run(connect_from(&be, first, &origin))
            .map_err(|f| f.term())
            .expect("connected");
        let (mut accepted, _) = live.accept().expect("accept");
        drop(c);
        let mut got = Vec::new();
        accepted.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"PROXY TCP4 10.0.0.7 10.0.0.1 4321 1935\r\n");
    }

    #[test]
    fn retries_on_one_server_then_a_connection_error() {
        let (_live, dead) = addresses();
        let be = backend(&format!("    server dead {dead}\n"), 2, false);
        let first = be.set.servers()[0].clone();
        let got = run(connect_from(&be, first, &here()));
        let Err(f) = got else {
            panic!("nothing listens there")
        };
        assert_eq!((f.retries, f.redispatched), (2, false));
        for c in [&be.set.stats.traffic, &be.set.servers()[0].stats.traffic] {
            assert_eq!(get(&c.retries), 2);
            assert_eq!(get(&c.redispatches), 0);
            assert_eq!(get(&c.connect_attempts), 3);
            assert_eq!(get(&c.failed_conn), 1);
        }
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn backend(cfg: &str) -> Backend {
        let cfg = crate::config::parse_str(cfg, std::path::Path::new("t.cfg")).expect("valid");
        let p = cfg.proxy("be").expect("backend");
        let mut be = Backend::new(p, Arc::new(ServerSet::from_config(p)));
        be.retries = 0;
        be.redispatch = false;
        be
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_full_server_times_out_in_the_queue() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = live.local_addr().expect("addr");
        let be = backend(&format!(
            "backend be\n    timeout connect 50ms\n    server s {addr} maxconn 1\n"
        ));
        let first = be.set.servers()[0].clone();
        let _held = first.try_claim().expect("the one slot");
        assert!(first.try_claim().is_none(), "maxconn 1 is one slot");
        let picked = be.set.pick_server(PickContext::new(here().src.ip(), &[]));
        assert!(picked.is_some_and(|s| s.is_full()), "full, not absent");
        let Err(f) = run(connect_from(&be, first, &here())) else {
            panic!("no slot ever frees")
        };
        assert_eq!(f.term().to_string(), "sQ");
        assert!(!f.queued_on_server, "waited in the backend's queue");
        let q = &be.set.stats.traffic;
        assert_eq!(q.queue_max.load(Ordering::Relaxed), 1);
        assert_eq!(q.queue_current.load(Ordering::Relaxed), 0);
        assert_eq!(q.connect_attempts.load(Ordering::Relaxed), 0);
        assert_eq!(
            q.failed_conn.load(Ordering::Relaxed),
            1,
            "the backend's econ"
        );
        let s = &be.set.servers()[0].stats.traffic;
        assert_eq!(
            s.failed_conn.load(Ordering::Relaxed),
            0,
            "no server was assigned"
        );
    }

    #[test]
    fn a_freed_slot_goes_to_the_waiter() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = live.local_addr().expect("addr");
        let be = Arc::new(backend(&format!(
            "backend be\n    timeout connect 2s\n    timeout queue 30s\n    server s {addr} maxconn 1\n"
        )));
        let first = be.set.servers()[0].clone();
        let held = first.try_claim().expect("the one slot");
        let got = run(async {
            let origin = here();
            let waiter = connect_from(&be, first.clone(), &origin);
            let release = async {
                // Let the waiter queue first; then free the slot.
                while be.set.stats.traffic.queue_current.load(Ordering::Relaxed) == 0 {
                    compio::time::sleep(Duration::from_millis(5)).await;
                }
                drop(held);
            };
            futures_util::future::join(waiter, release).await.0
        });
        let c = got.map_err(|f| f.term()).expect("the slot freed");
        assert_eq!(c.claim.server.current(), 1);
        assert_eq!(be.set.stats.traffic.queue_max.load(Ordering::Relaxed), 1);
    }

    fn two_servers(a_extra: &str) -> (Backend, std::net::TcpListener) {
        let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = live.local_addr().expect("addr");
        let be = backend(&format!(
            "backend be\n    timeout connect 50ms\n    server a {addr} maxconn 1 {a_extra}\n    server b {addr}\n"
        ));
        (be, live)
    }

    #[test]
    fn a_pinned_session_waits_for_its_own_server() {
        let (be, _live) = two_servers("");
        let a = be.set.servers()[0].clone();
        let _held = a.try_claim().expect("a's one slot");
        let Err(f) = run(connect_pinned(&be, a.clone(), &here(), true)) else {
            panic!("a never frees; a pinned session must not move to b")
        };
        assert_eq!(f.term().to_string(), "sQ");
        assert!(f.queued_on_server, "waited in a's own queue");
        assert_eq!(a.stats.traffic.queue_max.load(Ordering::Relaxed), 1);
        assert_eq!(be.set.stats.traffic.queue_max.load(Ordering::Relaxed), 0);
        let econ = |c: &Counters| c.failed_conn.load(Ordering::Relaxed);
        assert_eq!(
            (econ(&be.set.stats.traffic), econ(&a.stats.traffic)),
            (1, 1),
            "econ on the backend and on the server whose queue expired"
        );
        // Not pinned: the algorithm's other server takes it at once.
        let c = run(connect_pinned(&be, a, &here(), false))
            .map_err(|f| f.term())
            .expect("b has room");
        assert_eq!(c.claim.server.name, "b");
        assert_eq!(c.queue_wait, Duration::ZERO);
        assert_eq!(be.set.stats.traffic.queue_max.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn maxqueue_sends_the_next_pinned_session_elsewhere() {
        let (be, _live) = two_servers("maxqueue 1");
        let a = be.set.servers()[0].clone();
        let _held = a.try_claim().expect("a's one slot");
        let _queued = crate::upstream::Waiting::enter(&a.stats.traffic);
        let c = run(connect_pinned(&be, a.clone(), &here(), true))
            .map_err(|f| f.term())
            .expect("a's queue is full: b serves it");
        assert_eq!(c.claim.server.name, "b");
    }
}

//! Reaching a server, with HAProxy's `retries` and `option redispatch`, for both modes: `mode
//! tcp` picks the first server here, `mode http` brings its own (persistence cookie or the
//! balancing algorithm) to [`connect_from`].
//!
//! The connection phase is counted here, where each decision is taken, the way HAProxy books
//! it: every attempt in `connect` (backend and server), a retry on the same server in `wretr`
//! of that server, a move to another server in `wredis` of the server left (not in `wretr`),
//! the time to connect in `ctime`, and the final failure in `econ` of the last server tried.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpStream;

use crate::balance::{PickContext, Server, ServerClaim};
use crate::stats::Counters;

use super::session::Backend;

pub struct Connected {
    pub stream: TcpStream,
    pub claim: ServerClaim,
    pub retries: u32,
    /// The last retry went to another server than the first (HAProxy's `+` before `%rc`).
    pub redispatched: bool,
    pub connect_time: Duration,
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
}

#[derive(Debug)]
pub enum ConnectFailure {
    /// No server is UP (or all are full): HAProxy's `<NOSRV>`.
    NoServer,
    Failed {
        server: Arc<Server>,
        retries: u32,
        timed_out: bool,
    },
}

/// HAProxy waits min(`timeout connect`, 1 s) before retrying the same server, so a restarting
/// server is not hammered; a redispatch to another server goes at once.
const TURNAROUND: Duration = Duration::from_secs(1);

/// Picks a server by the balancing algorithm and connects to it (or, after failures, to
/// another one). "No server" is counted by the caller, which knows how it answers.
pub async fn connect_server(be: &Backend, client_ip: IpAddr) -> Result<Connected, ConnectFailure> {
    let first = be
        .set
        .pick_server(PickContext {
            client_ip,
            avoid: &[],
        })
        .ok_or(ConnectFailure::NoServer)?;
    connect_from(be, first, client_ip)
        .await
        .map_err(|f| ConnectFailure::Failed {
            server: f.server,
            retries: f.retries,
            timed_out: f.timed_out,
        })
}

/// Connects to `first`; failed attempts are retried on the same server, and with `option
/// redispatch` the last retry goes to another server when one is usable.
pub async fn connect_from(
    be: &Backend,
    first: Arc<Server>,
    client_ip: IpAddr,
) -> Result<Connected, Failed> {
    let backend = &be.set.stats.traffic;
    let started = Instant::now();
    let mut server = first;
    let mut tried: Vec<usize> = Vec::new();
    let mut timed_out = false;
    let mut redispatched = false;
    for attempt in 0..=be.retries {
        if attempt > 0 {
            let redispatch = be.redispatch && attempt == be.retries;
            let other = redispatch
                .then(|| {
                    be.set.pick_server(PickContext {
                        client_ip,
                        avoid: &tried,
                    })
                })
                .flatten()
                .filter(|o| o.index != server.index);
            // Booked against the server being left, as HAProxy's `assign_server_and_queue`.
            match other {
                Some(o) => {
                    bump(backend, &server, |c| &c.redispatches);
                    server = o;
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
        let claim = server.claim();
        match try_connect(&server, be.connect_timeout).await {
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
    })
}

/// One more on the backend's and the server's counter of the same name.
fn bump(backend: &Counters, server: &Server, counter: fn(&Counters) -> &AtomicU64) {
    Counters::bump(counter(backend));
    Counters::bump(counter(&server.stats.traffic));
}

async fn try_connect(server: &Server, limit: Option<Duration>) -> std::io::Result<TcpStream> {
    let connect = TcpStream::connect(server.addr);
    let stream = match limit {
        Some(limit) => compio::time::timeout(limit, connect)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??,
        None => connect.await?,
    };
    // RTMP acks and control messages are small, and so are HTTP heads: do not let Nagle hold
    // them back.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::ServerSet;
    use crate::forward::Engine;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        Backend {
            set: Arc::new(ServerSet::from_config(p)),
            connect_timeout: p.timeouts.connect,
            retries,
            redispatch,
            engine: Engine::Copy,
            conns: AtomicUsize::new(0),
        }
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
        let first = be.set.servers[0].clone();
        let got = run(connect_from(&be, first, [127, 0, 0, 1].into()));
        let c = got
            .map_err(|f| f.server.name.clone())
            .expect("redispatched");
        assert_eq!(c.claim.server.name, "live");
        assert_eq!((c.retries, c.redispatched), (1, true));
        let (b, d, l) = (
            &be.set.stats.traffic,
            &be.set.servers[0].stats.traffic,
            &be.set.servers[1].stats.traffic,
        );
        assert_eq!((get(&b.redispatches), get(&b.retries)), (1, 0));
        assert_eq!((get(&d.redispatches), get(&d.retries)), (1, 0));
        assert_eq!(get(&l.redispatches) + get(&l.retries), 0);
        assert_eq!((get(&b.connect_attempts), get(&d.connect_attempts)), (2, 1));
        assert_eq!(get(&l.connect_attempts), 1);
        assert_eq!(get(&b.failed_conn) + get(&d.failed_conn), 0);
    }

    #[test]
    fn retries_on_one_server_then_a_connection_error() {
        let (_live, dead) = addresses();
        let be = backend(&format!("    server dead {dead}\n"), 2, false);
        let first = be.set.servers[0].clone();
        let got = run(connect_from(&be, first, [127, 0, 0, 1].into()));
        let Err(f) = got else {
            panic!("nothing listens there")
        };
        assert_eq!((f.retries, f.redispatched), (2, false));
        for c in [&be.set.stats.traffic, &be.set.servers[0].stats.traffic] {
            assert_eq!(get(&c.retries), 2);
            assert_eq!(get(&c.redispatches), 0);
            assert_eq!(get(&c.connect_attempts), 3);
            assert_eq!(get(&c.failed_conn), 1);
        }
    }
}

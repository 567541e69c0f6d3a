//! A worker thread: one compio runtime, its dups of the listeners (and those a reload adds),
//! sessions as local tasks.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use compio::net::{TcpListener, TcpStream};
use event_listener::Event;
use futures_util::future::{select, Either};

use super::driver::{self, DriverChoice};
use super::limit::ConnLimit;
use crate::counters::{self, Counters, PROCESS};
use crate::plan::Service;
use crate::upstream::{proxy_proto, Origin};

/// Set once on SIGTERM/SIGINT; every accept loop watches it.
#[derive(Debug, Default)]
pub struct Shutdown {
    stopping: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.stopping.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    pub fn is_set(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub async fn wait(&self) {
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let listener = self.event.listen();
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }
}

/// What one listener's connections are handed to, and the limits they count against. A
/// reload stores a new one into a kept listener's [`ArcSwap`]; each accept reads the one
/// current then, and a connection keeps what it started with.
pub struct Live {
    pub front: Front,
    /// The frontend's `maxconn` (shared by its binds, carried over reloads by name).
    pub limit: Arc<ConnLimit>,
    /// `bind … maxconn N`: this listener's own limit, under the frontend's.
    pub bind_limit: Arc<ConnLimit>,
}

/// One worker's share of one listener: a dup of the socket, and what the control thread
/// changes while it runs.
pub struct WorkerListener {
    pub socket: std::net::TcpListener,
    pub live: Arc<ArcSwap<Live>>,
    /// Triggered when a reload removes the listener: its accept loops end and close their dup.
    pub closed: Arc<Shutdown>,
}

/// What every connection of one listener is handed to.
#[derive(Clone)]
pub struct Front {
    pub service: Service,
    /// `ssl` binds: the TLS handshake runs before the service.
    pub tls: Option<Arc<crate::tls::Acceptor>>,
    /// `accept-proxy` binds: the PROXY header is read first, within this time.
    pub accept_proxy: Option<Duration>,
    /// The listener's own address, for a connection whose local address cannot be read.
    pub bound: SocketAddr,
}

/// A flow taken over from the previous process (binary upgrade), to resume on a worker.
pub struct AdoptedFlow {
    pub client: std::os::fd::OwnedFd,
    pub server: std::os::fd::OwnedFd,
    pub info: crate::tcp::handover::FlowInfo,
    pub fe: Arc<crate::tcp::Frontend>,
    /// Its slots under `maxconn` (global, the frontend's), held while it runs.
    pub slots: Vec<super::limit::Permit>,
}

/// What a running worker is handed.
pub enum Mail {
    Listener(WorkerListener),
    Flow(Box<AdoptedFlow>),
}

/// Listeners a reload adds and flows an upgrade adopts, handed to a running worker. Taken by
/// the worker's own task, so the lock is never held on the data path.
#[derive(Default)]
pub struct Inbox {
    pending: Mutex<Vec<Mail>>,
    event: Event,
}

impl Inbox {
    pub fn send(&self, l: WorkerListener) {
        self.post(Mail::Listener(l));
    }

    pub fn send_flow(&self, f: AdoptedFlow) {
        self.post(Mail::Flow(Box::new(f)));
    }

    fn post(&self, m: Mail) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(m);
        self.event.notify(usize::MAX);
    }

    fn take(&self) -> Vec<Mail> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn next(&self) -> Vec<Mail> {
        loop {
            let got = self.take();
            if !got.is_empty() {
                return got;
            }
            let listener = self.event.listen();
            let got = self.take();
            if !got.is_empty() {
                return got;
            }
            listener.await;
        }
    }
}

pub fn run_worker(
    id: usize,
    inbox: Arc<Inbox>,
    global: Arc<ConnLimit>,
    stop: Arc<Shutdown>,
    choice: DriverChoice,
) {
    let rt = match driver::build_runtime(choice) {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("worker {id}: cannot start its runtime: {e}");
            return;
        }
    };
    log::debug!(
        "worker {id}: driver {}",
        driver::driver_name(rt.driver_type())
    );
    rt.block_on(async move {
        let start = |l: WorkerListener| match TcpListener::from_std(l.socket) {
            Ok(listener) => compio::runtime::spawn(accept_loop(
                listener,
                l.live,
                global.clone(),
                [stop.clone(), l.closed],
            ))
            .detach(),
            Err(e) => log::error!("worker {id}: cannot register listener: {e}"),
        };
        // The start's listeners, then those reloads add, arrive here until the stop signal.
        let stops = [stop.clone(), stop.clone()];
        while let Some(added) = until_stop(&stops, inbox.next()).await {
            for mail in added {
                match mail {
                    Mail::Listener(l) => start(l),
                    Mail::Flow(f) => resume(*f),
                }
            }
        }
        // Established sessions keep running on this runtime while the main thread drains.
        std::future::pending::<()>().await;
    });
}

/// An adopted flow's sockets become this runtime's, in the mode its own accepted sockets
/// have (a splice flow in the old process left them nonblocking), and its session resumes.
fn resume(f: AdoptedFlow) {
    let open = |fd: std::os::fd::OwnedFd| {
        let s = std::net::TcpStream::from(fd);
        s.set_nonblocking(false)?;
        TcpStream::from_std(s)
    };
    match (open(f.client), open(f.server)) {
        (Ok(client), Ok(server)) => {
            let slots = f.slots;
            compio::runtime::spawn(async move {
                let _slots = slots;
                crate::tcp::run_adopted(client, server, f.info, f.fe).await
            })
            .detach()
        }
        (Err(e), _) | (_, Err(e)) => {
            log::error!("upgrade: cannot resume the flow of {}: {e}", f.info.src)
        }
    }
}

/// Runs `fut` unless one of the two stops (the process's, the listener's) comes first.
async fn until_stop<F: std::future::Future>(
    stops: &[Arc<Shutdown>; 2],
    fut: F,
) -> Option<F::Output> {
    let (first, second) = (pin!(stops[0].wait()), pin!(stops[1].wait()));
    match select(pin!(fut), select(first, second)).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// Accepts until the process stops or a reload closes this listener. Each round reads the
/// listener's current [`Live`]: a reload changes the service, TLS and limits of the next
/// connection without touching the socket, so nothing queued in its backlog is lost.
async fn accept_loop(
    listener: TcpListener,
    live: Arc<ArcSwap<Live>>,
    global: Arc<ConnLimit>,
    stops: [Arc<Shutdown>; 2],
) {
    // After a connection is taken the backlog may hold more (a burst of new connections):
    // the next round tries accept(2) first and polls only when it finds none, as HAProxy
    // accepts until EAGAIN. A poll per connection was one submission and one turn of the
    // loop more for every new connection (issue #14, conn-rate). At most `BURST` in a row:
    // the poll goes through the ring and lets the sessions just spawned run.
    const BURST: u32 = 16;
    // Connections taken in a row by the rounds before this one.
    let mut run = 0;
    let _running = counters::Live::enter(&PROCESS.accept_loops);
    loop {
        let now = live.load_full();
        // Take the slots first: at maxconn (global, the frontend's, the bind's) we stop
        // accepting and the backlog holds the rest.
        let slots = async {
            (
                global.acquire().await,
                now.limit.acquire().await,
                now.bind_limit.acquire().await,
            )
        };
        let Some(slots) = until_stop(&stops, slots).await else {
            break;
        };
        let more = run % BURST != 0;
        // A direct accept (`more`) completes at its first poll, before `until_stop` looks at
        // the stops: a stopped loop (SIGTERM, a binary upgrade, a reload closing this
        // listener) must leave the backlog to the next process or the other workers.
        if more && stops.iter().any(|s| s.is_set()) {
            break;
        }
        let over = || global.over() || now.limit.over() || now.bind_limit.over();
        let Some(accepted) = until_stop(&stops, accept_ready(&listener, over, more)).await else {
            break;
        };
        run = if matches!(accepted, Ok(Some(_))) {
            run + 1
        } else {
            0
        };
        match accepted {
            // Flows adopted in a binary upgrade took slots while this round waited: give
            // these back and wait for a free one, the connection stays in the backlog.
            Ok(None) => continue,
            Ok(Some((stream, peer))) => {
                // The newest plan, even if a reload came while this round waited.
                let front = live.load().front.clone();
                let counted = counters::Live::enter(&PROCESS.accepted);
                compio::runtime::spawn(async move {
                    let _slots = (slots, counted);
                    serve(stream, peer, front).await
                })
                .detach();
            }
            Err(e) => {
                log::warn!("frontend {}: accept failed: {e}", now.front.service.name());
                // Out of descriptors or memory: back off instead of spinning on the error.
                if !matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::Interrupted
                ) {
                    compio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let _ = listener.close().await;
}

/// Waits until the listener has a connection, then takes it with a nonblocking accept(2)
/// (`None` from a worker that lost the race for it: it waits again); with `more`, tries the
/// accept before the first wait. Stopping while waiting
/// takes nothing: an io_uring accept cancelled by a stop or a binary upgrade after the kernel
/// completed it would close a connection that nobody served, while here the connection
/// stays queued for the next process or the remaining workers. `Ok(None)`: the connection
/// came while `over()` says the limits are overdrawn, and it is left in the backlog.
async fn accept_ready(
    listener: &TcpListener,
    over: impl Fn() -> bool,
    mut more: bool,
) -> std::io::Result<Option<(TcpStream, SocketAddr)>> {
    use compio::driver::op::{Interest, PollOnce};
    use compio::driver::ToSharedFd;
    use std::os::fd::AsFd;
    loop {
        if !more {
            let op = PollOnce::new(listener.to_shared_fd(), Interest::Readable);
            compio::runtime::submit(op).await.0?;
        }
        more = false;
        if over() {
            return Ok(None);
        }
        // The listening socket is nonblocking (listen.rs): no connection means WouldBlock.
        let taken = socket2::SockRef::from(&listener.as_fd()).accept();
        let (socket, peer) = match taken {
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let peer = peer.as_socket().unwrap_or(([0, 0, 0, 0], 0).into());
        let stream = std::net::TcpStream::from(socket);
        return Ok(Some((TcpStream::from_std(stream)?, peer)));
    }
}

/// One accepted connection: its origin (the PROXY header first on an `accept-proxy` bind),
/// then the TLS handshake where the bind has `ssl`, then the session of the service's mode.
async fn serve(stream: TcpStream, peer: SocketAddr, front: Front) {
    let Some(origin) = origin(&stream, peer, &front).await else {
        return;
    };
    // Each kind of session is boxed: inline, every connection's task would hold room for the
    // largest of the four (an HTTP session's, about 12 KiB), which was most of what an idle
    // mode-tcp flow cost (issue #14).
    match (front.service, front.tls) {
        (Service::Tcp(fe), Some(tls)) => {
            Box::pin(crate::tcp::run_tls_session(stream, origin, fe, tls)).await
        }
        (Service::Tcp(fe), None) => Box::pin(crate::tcp::run_session(stream, origin, fe)).await,
        (Service::Http(fe), Some(tls)) => {
            Box::pin(crate::http::run_tls_session(stream, origin, fe, tls)).await
        }
        (Service::Http(fe), None) => Box::pin(crate::http::run_session(stream, origin, fe)).await,
    }
}

/// The socket's two ends, or on an `accept-proxy` bind those its PROXY header names. A
/// connection without a valid header is closed here, before any session exists: nothing it
/// sends can be trusted to be what it claims. It is logged with the socket's peer and
/// counted as a request error of the frontend (`ereq`).
async fn origin(stream: &TcpStream, peer: SocketAddr, front: &Front) -> Option<Origin> {
    let real = Origin {
        src: peer,
        dst: stream.local_addr().unwrap_or(front.bound),
    };
    let Some(limit) = front.accept_proxy else {
        return Some(real);
    };
    // Boxed for the reason the sessions are (see `serve`): its state is dead once read.
    match Box::pin(proxy_proto::accept(stream, real, limit)).await {
        Ok(origin) => Some(origin),
        Err(e) => {
            log::info!(
                "frontend {}: connection from {peer}: {e}",
                front.service.name()
            );
            Counters::bump(&front.service.counters().failed_req);
            None
        }
    }
}

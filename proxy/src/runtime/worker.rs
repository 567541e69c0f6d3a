//! A worker thread: one compio runtime, its own SO_REUSEPORT listeners, sessions as local tasks.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use compio::net::{TcpListener, TcpStream};
use event_listener::Event;
use futures_util::future::{select, Either};

use super::driver::{self, DriverChoice};
use super::limit::ConnLimit;
use crate::counters::Counters;
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

pub struct WorkerListener {
    pub socket: std::net::TcpListener,
    pub service: Service,
    pub limit: Arc<ConnLimit>,
    /// `bind … maxconn N`: this listener's own limit, under the frontend's.
    pub bind_limit: Arc<ConnLimit>,
    /// `ssl` binds: the TLS handshake runs before the service.
    pub tls: Option<Arc<crate::tls::Acceptor>>,
    /// `accept-proxy` binds: the PROXY header is read first, within this time.
    pub accept_proxy: Option<Duration>,
}

/// What every connection of one listener is handed to.
#[derive(Clone)]
struct Front {
    service: Service,
    tls: Option<Arc<crate::tls::Acceptor>>,
    accept_proxy: Option<Duration>,
    /// The listener's own address, for a connection whose local address cannot be read.
    bound: SocketAddr,
}

pub fn run_worker(
    id: usize,
    listeners: Vec<WorkerListener>,
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
        let mut loops = Vec::new();
        for l in listeners {
            let bound = l.socket.local_addr();
            match (TcpListener::from_std(l.socket), bound) {
                (Ok(listener), Ok(bound)) => {
                    let front = Front {
                        service: l.service,
                        tls: l.tls,
                        accept_proxy: l.accept_proxy,
                        bound,
                    };
                    loops.push(compio::runtime::spawn(accept_loop(
                        listener,
                        front,
                        [global.clone(), l.limit, l.bind_limit],
                        stop.clone(),
                    )))
                }
                (Err(e), _) | (_, Err(e)) => {
                    log::error!("worker {id}: cannot register listener: {e}")
                }
            }
        }
        for l in loops {
            let _ = l.await;
        }
        // Established sessions keep running on this runtime while the main thread drains.
        std::future::pending::<()>().await;
    });
}

/// Runs `fut` unless shutdown comes first.
async fn until_stop<F: std::future::Future>(stop: &Shutdown, fut: F) -> Option<F::Output> {
    match select(pin!(fut), pin!(stop.wait())).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

async fn accept_loop(
    listener: TcpListener,
    front: Front,
    limits: [Arc<ConnLimit>; 3],
    stop: Arc<Shutdown>,
) {
    let [global, frontend, bind] = limits;
    loop {
        // Take the slots first: at maxconn (global, the frontend's, the bind's) we stop
        // accepting and the backlog holds the rest.
        let slots = async {
            (
                global.acquire().await,
                frontend.acquire().await,
                bind.acquire().await,
            )
        };
        let Some(slots) = until_stop(&stop, slots).await else {
            break;
        };
        let Some(accepted) = until_stop(&stop, listener.accept()).await else {
            break;
        };
        match accepted {
            Ok((stream, peer)) => {
                let front = front.clone();
                compio::runtime::spawn(async move {
                    let _slots = slots;
                    serve(stream, peer, front).await
                })
                .detach();
            }
            Err(e) => {
                log::warn!("frontend {}: accept failed: {e}", front.service.name());
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

//! A worker thread: one compio runtime, its own SO_REUSEPORT listeners, sessions as local tasks.

use std::io::ErrorKind;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use compio::net::TcpListener;
use event_listener::Event;
use futures_util::future::{select, Either};

use super::driver::{self, DriverChoice};
use super::limit::ConnLimit;
use crate::plan::Service;

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
            match TcpListener::from_std(l.socket) {
                Ok(listener) => loops.push(compio::runtime::spawn(accept_loop(
                    listener,
                    l.service,
                    l.tls,
                    [global.clone(), l.limit, l.bind_limit],
                    stop.clone(),
                ))),
                Err(e) => log::error!("worker {id}: cannot register listener: {e}"),
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
    service: Service,
    tls: Option<Arc<crate::tls::Acceptor>>,
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
                let service = service.clone();
                let tls = tls.clone();
                compio::runtime::spawn(async move {
                    let _slots = slots;
                    match (service, tls) {
                        (Service::Tcp(fe), Some(tls)) => {
                            crate::tcp::run_tls_session(stream, peer, fe, tls).await
                        }
                        (Service::Tcp(fe), None) => crate::tcp::run_session(stream, peer, fe).await,
                        (Service::Http(fe), Some(tls)) => {
                            crate::http::run_tls_session(stream, peer, fe, tls).await
                        }
                        (Service::Http(fe), None) => {
                            crate::http::run_session(stream, peer, fe).await
                        }
                    }
                })
                .detach();
            }
            Err(e) => {
                log::warn!("frontend {}: accept failed: {e}", service.name());
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

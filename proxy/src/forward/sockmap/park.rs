//! The park walk, on a thread of its own. Parking a direction runs the `iter/tcp` walk, which
//! visits every TCP socket of the network namespace: with thousands of flows that is
//! milliseconds, which on a worker thread would stall every other flow it carries. Here the
//! worker only waits for its answer, and requests that arrive while a walk runs share the
//! next one, so the walks per second stay bounded whatever the number of parking directions.

use std::io;
use std::os::fd::RawFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use event_listener::{Event, Listener};

use super::sys;

/// The descriptors the walk needs; the kernel engine owns them for the life of the process.
#[derive(Clone, Copy)]
pub struct WalkFds {
    /// The verdict's socket hash.
    pub active: RawFd,
    /// Park requests (`proxy-ebpf`'s `PARK`).
    pub park_map: RawFd,
    /// The walk's link.
    pub link: RawFd,
}

struct Request {
    cookie: u64,
    fd: RawFd,
    reply: Arc<Reply>,
}

#[derive(Default)]
struct Reply {
    outcome: Mutex<Option<io::Result<()>>>,
    ready: Event,
}

impl Reply {
    fn take(&self) -> Option<io::Result<()>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn set(&self, outcome: io::Result<()>) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.ready.notify(usize::MAX);
    }
}

pub struct Parker {
    requests: Sender<Request>,
}

impl Parker {
    pub fn start(fds: WalkFds) -> io::Result<Parker> {
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("sockmap-park".into())
            .spawn(move || {
                sys::prefer_realtime("sockmap-park");
                walk_loop(&fds, incoming)
            })?;
        Ok(Parker { requests })
    }

    /// Takes the socket `cookie` (descriptor `fd`, which the caller keeps open until this
    /// returns) out of the verdict's hash under the socket's lock.
    pub async fn park(&self, cookie: u64, fd: RawFd) -> io::Result<()> {
        let reply = self.request(cookie, fd)?;
        let mut listener = reply.ready.listen();
        loop {
            if let Some(outcome) = reply.take() {
                return outcome;
            }
            listener.await;
            listener = reply.ready.listen();
        }
    }

    /// As `park`, for a thread that blocks for the answer (the wake-up thread, `guard.rs`):
    /// requests sent before the first wait share one walk.
    pub fn request_blocking(&self, cookie: u64, fd: RawFd) -> io::Result<Pending> {
        self.request(cookie, fd).map(Pending)
    }

    fn request(&self, cookie: u64, fd: RawFd) -> io::Result<Arc<Reply>> {
        let reply = Arc::new(Reply::default());
        let request = Request {
            cookie,
            fd,
            reply: reply.clone(),
        };
        self.requests
            .send(request)
            .map_err(|_| io::Error::other("the park walk's thread is gone"))?;
        Ok(reply)
    }
}

/// A park request whose answer a thread blocks for.
pub struct Pending(Arc<Reply>);

impl Pending {
    pub fn wait(self) -> io::Result<()> {
        loop {
            let listener = self.0.ready.listen();
            if let Some(outcome) = self.0.take() {
                return outcome;
            }
            listener.wait();
        }
    }
}

fn walk_loop(fds: &WalkFds, incoming: Receiver<Request>) {
    let most = proxy_ebpf::MAX_PARK_REQUESTS as usize;
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        batch.extend(incoming.try_iter().take(most - 1));
        let requested: Vec<io::Result<()>> = batch
            .iter()
            .map(|r| sys::map_update(fds.park_map, &r.cookie, &proxy_ebpf::PARK_REQUESTED))
            .collect();
        let walked = sys::iter_run(fds.link);
        // Every state is read before any entry is removed: two requests for one socket (its
        // task's and the wake-up thread's) share an entry, and both are answered by it.
        let states: Vec<Option<u32>> = batch
            .iter()
            .map(|r| sys::map_lookup(fds.park_map, &r.cookie).unwrap_or(None))
            .collect();
        for r in &batch {
            let _ = sys::map_delete(fds.park_map, &r.cookie);
        }
        for ((r, asked), state) in batch.into_iter().zip(requested).zip(states) {
            let outcome = asked.and_then(|()| outcome(fds, &r, state, &walked));
            r.reply.set(outcome);
        }
    }
}

/// Whether the walk took the socket out. A socket the walk did not visit has left the TCP
/// hash tables (it received its FIN while its own FIN was acknowledged, or it is closed): no
/// new packet reaches it, but its last one may still be going through the verdict on
/// another CPU, so the socket's lock is taken (TCP_INFO) before taking it out from here.
/// See LIFECYCLE.md, "Parking".
fn outcome(
    fds: &WalkFds,
    r: &Request,
    state: Option<u32>,
    walked: &io::Result<()>,
) -> io::Result<()> {
    if state == Some(proxy_ebpf::PARK_DONE) {
        return Ok(());
    }
    if let Err(e) = walked {
        return Err(io::Error::new(e.kind(), e.to_string()));
    }
    log::debug!(
        "sockmap flow: the park walk did not find socket {:#x} (unhashed)",
        r.cookie
    );
    sys::tcp_info(r.fd)?;
    sys::map_delete(fds.active, &r.cookie)
}

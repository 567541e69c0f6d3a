//! End-of-stream and error events of the sockmap engine's sockets. One epoll instance per
//! worker thread watches every registered socket of that thread for POLLRDHUP, POLLERR and
//! POLLHUP only: the verdict program wakes a socket's readers on every redirected packet, and
//! interest in POLLIN would turn each of those into a wake-up of the proxy. The epoll
//! descriptor itself is polled through the thread's runtime; one task per thread dispatches
//! its events to the flows.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use compio::runtime::fd::PollFd;
use event_listener::{Event, EventListener};

/// POLLRDHUP: the peer sent FIN (or the socket is fully shut down).
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// POLLERR: a pending socket error (a reset, mostly).
pub const ERR: u32 = libc::EPOLLERR as u32;
/// POLLHUP: both directions shut down, or the connection is gone.
pub const HUP: u32 = libc::EPOLLHUP as u32;

/// What has happened so far on the two sockets of a flow (0 = client, 1 = server). Flags only
/// accumulate: a socket that has seen its FIN keeps RDHUP.
#[derive(Default)]
pub struct Events {
    flags: [Cell<u32>; 2],
    changed: Event,
}

impl Events {
    pub fn of(&self, side: usize) -> u32 {
        self.flags.get(side).map_or(0, Cell::get)
    }

    /// Resolves at the next event on either socket.
    pub fn listen(&self) -> EventListener {
        self.changed.listen()
    }

    fn add(&self, side: usize, bits: u32) {
        if let Some(f) = self.flags.get(side) {
            f.set(f.get() | bits);
        }
        self.changed.notify(usize::MAX);
    }
}

struct Watch {
    ep: PollFd<OwnedFd>,
    flows: RefCell<HashMap<u64, Rc<Events>>>,
    next_token: Cell<u64>,
}

thread_local! {
    static WATCH: RefCell<Option<Rc<Watch>>> = const { RefCell::new(None) };
}

/// This thread's watcher, created (with its dispatch task) on first use.
fn current() -> io::Result<Rc<Watch>> {
    if let Some(w) = WATCH.with(|w| w.borrow().clone()) {
        return Ok(w);
    }
    // SAFETY: plain system call; the result is checked before use.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: epoll_create1 returned a new descriptor nobody else owns.
    let ep = PollFd::new(unsafe { OwnedFd::from_raw_fd(fd) })?;
    let w = Rc::new(Watch {
        ep,
        flows: RefCell::new(HashMap::new()),
        next_token: Cell::new(1),
    });
    let task = w.clone();
    compio::runtime::spawn(async move {
        while task.ep.read_ready().await.is_ok() {
            task.dispatch();
        }
        log::error!("sockmap: the event watcher of this thread stopped");
    })
    .detach();
    WATCH.with(|slot| *slot.borrow_mut() = Some(w.clone()));
    Ok(w)
}

impl Watch {
    fn dispatch(&self) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: `evs` is writable for 64 entries; a zero timeout never blocks.
            let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), evs.as_mut_ptr(), 64, 0) };
            let Ok(n) = usize::try_from(n) else {
                return;
            };
            let flows = self.flows.borrow();
            for e in evs.iter().take(n) {
                let (token, side) = (e.u64 >> 1, (e.u64 & 1) as usize);
                if let Some(f) = flows.get(&token) {
                    f.add(side, e.events);
                }
            }
            if n < evs.len() {
                return;
            }
        }
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: RDHUP | ERR | HUP | libc::EPOLLET as u32,
            u64: data,
        };
        // SAFETY: `ev` is a valid event for the call's duration.
        if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A flow's two sockets under watch; removed from the epoll set when dropped.
pub struct Registration {
    watch: Rc<Watch>,
    token: u64,
    fds: [RawFd; 2],
    pub events: Rc<Events>,
}

impl Registration {
    /// Watches `client` (side 0) and `server` (side 1). An event that already happened (a FIN
    /// that arrived before) is reported at once.
    pub fn new(client: RawFd, server: RawFd) -> io::Result<Registration> {
        let watch = current()?;
        let token = watch.next_token.get();
        watch.next_token.set(token + 1);
        let events = Rc::new(Events::default());
        watch.flows.borrow_mut().insert(token, events.clone());
        let reg = Registration {
            watch,
            token,
            fds: [client, server],
            events,
        };
        for (side, fd) in reg.fds.iter().enumerate() {
            reg.watch
                .ctl(libc::EPOLL_CTL_ADD, *fd, token << 1 | side as u64)?;
        }
        Ok(reg)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for fd in self.fds {
            let _ = self.watch.ctl(libc::EPOLL_CTL_DEL, fd, 0);
        }
        self.watch.flows.borrow_mut().remove(&self.token);
    }
}

//! A backend's queue, as HAProxy's: when every usable server is at its `maxconn`, a session
//! waits here until a slot frees (or `timeout queue` runs out). Servers are shared by all
//! worker threads, so the slots are atomics and a waiter sleeps on an event that a freed
//! slot (or a server coming UP) notifies. Listeners are woken oldest first, which makes the
//! queue FIFO-ish: a waiter that loses the freed slot to a racing session listens again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use event_listener::{Event, EventListener};

use crate::counters::Counters;

#[derive(Debug)]
pub struct Queue {
    freed: Event,
    /// HAProxy's `timeout queue`, or `timeout connect` when unset; `None`: wait forever.
    pub timeout: Option<Duration>,
}

impl Queue {
    pub fn new(timeout: Option<Duration>) -> Queue {
        Queue {
            freed: Event::new(),
            timeout,
        }
    }

    /// Register before the last look at the servers, so a slot freed in between wakes us.
    pub fn listen(&self) -> EventListener {
        self.freed.listen()
    }

    /// One slot came free: the oldest waiter may take it. Cheap when nobody waits.
    pub fn slot_freed(&self) {
        self.freed.notify(1);
    }

    /// A server came UP: every waiter looks again.
    pub fn wake_all(&self) {
        self.freed.notify(usize::MAX);
    }
}

/// A session's place in a queue (the backend's, or one server's), counted in that row's
/// `qcur`/`qmax` until it drops.
#[derive(Debug)]
pub struct Waiting<'a>(&'a Counters);

impl<'a> Waiting<'a> {
    pub fn enter(row: &'a Counters) -> Waiting<'a> {
        // SeqCst: see `Server::try_claim`.
        let now = row.queue_current.fetch_add(1, Ordering::SeqCst) + 1;
        row.queue_max.fetch_max(now, Ordering::Relaxed);
        Waiting(row)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queue_current.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_counts_current_and_peak() {
        let row = Counters::default();
        {
            let _a = Waiting::enter(&row);
            let _b = Waiting::enter(&row);
            assert_eq!(row.queue_current.load(Ordering::Relaxed), 2);
        }
        assert_eq!(row.queue_current.load(Ordering::Relaxed), 0);
        assert_eq!(row.queue_max.load(Ordering::Relaxed), 2);
    }
}

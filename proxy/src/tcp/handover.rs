//! `mode tcp` flows leaving for, and arriving from, another process in a binary upgrade
//! (`runtime/upgrade/LIFECYCLE.md`). A session whose flow came to rest puts a [`Departure`]
//! (dups of its two sockets and what the next process needs to resume it) into the outbox
//! and waits for the verdict, keeping its own sockets: until the runtime says the flow was
//! taken, the session still owns it, and resumes it here on any other outcome.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use event_listener::Event;

use crate::forward::Ended;

/// What the next process needs to resume a flow and log it as the one it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub frontend: String,
    pub backend: String,
    pub server: String,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// When the client was accepted (the access line's date).
    pub accepted: SystemTime,
    /// How long the session has run (the access line's total time goes on from here).
    pub age: Duration,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Since the flow's last byte: the idle timer's elapsed part.
    pub idle_for: Duration,
    /// Half-closed: the direction whose FIN was already passed on, not to be run again.
    pub ended: Option<Ended>,
}

/// One resting flow offered to the next process.
pub struct Departure {
    pub client: OwnedFd,
    pub server: OwnedFd,
    pub info: FlowInfo,
    verdict: Arc<Verdict>,
}

impl Departure {
    /// The next process owns the flow now: the session lets go of its sockets.
    pub fn taken(self) {
        self.verdict.give(true);
    }
}

/// Dropped without [`Departure::taken`] (refused, failed, or never offered): the session
/// resumes the flow. This is what makes a failure part way keep the flow.
impl Drop for Departure {
    fn drop(&mut self) {
        self.verdict.give(false);
    }
}

#[derive(Default)]
struct Verdict {
    taken: Mutex<Option<bool>>,
    event: Event,
}

impl Verdict {
    fn give(&self, taken: bool) {
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_none() {
            *t = Some(taken);
        }
        self.event.notify(usize::MAX);
    }

    fn get(&self) -> Option<bool> {
        *self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn wait(&self) -> bool {
        loop {
            if let Some(t) = self.get() {
                return t;
            }
            let listener = self.event.listen();
            if let Some(t) = self.get() {
                return t;
            }
            listener.await;
        }
    }
}

/// Departures waiting for the runtime; `open` while a hand-over collects them.
struct Outbox {
    open: bool,
    waiting: Vec<Departure>,
}

static OUTBOX: Mutex<Outbox> = Mutex::new(Outbox {
    open: false,
    waiting: Vec::new(),
});

fn outbox() -> std::sync::MutexGuard<'static, Outbox> {
    OUTBOX.lock().unwrap_or_else(|e| e.into_inner())
}

/// A hand-over starts collecting resting flows.
pub fn open_outbox() {
    outbox().open = true;
}

/// The departures so far.
pub fn take_departures() -> Vec<Departure> {
    std::mem::take(&mut outbox().waiting)
}

/// The hand-over is over: late departures are refused (dropped: their sessions resume).
pub fn close_outbox() {
    let late = {
        let mut o = outbox();
        o.open = false;
        std::mem::take(&mut o.waiting)
    };
    drop(late);
}

/// Offers a resting flow; `true` once the next process took it. Outside a hand-over, or
/// when its sockets cannot be duplicated, the flow stays (`false`).
pub async fn depart(
    client: &impl std::os::fd::AsFd,
    server: &impl std::os::fd::AsFd,
    info: FlowInfo,
) -> bool {
    let (Ok(c), Ok(s)) = (
        client.as_fd().try_clone_to_owned(),
        server.as_fd().try_clone_to_owned(),
    ) else {
        return false;
    };
    let verdict = Arc::new(Verdict::default());
    {
        let mut o = outbox();
        if !o.open {
            return false;
        }
        o.waiting.push(Departure {
            client: c,
            server: s,
            info,
            verdict: verdict.clone(),
        });
    }
    verdict.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> FlowInfo {
        FlowInfo {
            frontend: "fe".into(),
            backend: "be".into(),
            server: "s1".into(),
            src: "127.0.0.1:1".parse().expect("addr"),
            dst: "127.0.0.1:2".parse().expect("addr"),
            accepted: SystemTime::now(),
            age: Duration::ZERO,
            bytes_up: 0,
            bytes_down: 0,
            idle_for: Duration::ZERO,
            ended: None,
        }
    }

    #[test]
    fn a_dropped_departure_keeps_the_flow_and_a_taken_one_leaves() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            open_outbox();
            let waiting = compio::runtime::spawn(async move { depart(&a, &b, info()).await });
            compio::time::sleep(Duration::from_millis(20)).await;
            let mut got = take_departures();
            assert_eq!(got.len(), 1);
            drop(got.pop());
            assert!(
                !waiting.await.expect("task"),
                "refused: the session keeps it"
            );
        });
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        rt.block_on(async {
            let waiting = compio::runtime::spawn(async move { depart(&a, &b, info()).await });
            compio::time::sleep(Duration::from_millis(20)).await;
            for d in take_departures() {
                d.taken();
            }
            assert!(waiting.await.expect("task"), "taken");
            close_outbox();
        });
    }
}

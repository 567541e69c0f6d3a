//! Pausing flows at a safe point, so that a binary upgrade can hand them to the new process
//! (`runtime/upgrade/LIFECYCLE.md`). A flow is *at rest* when each of its directions waits
//! for its source with nothing in hand: no byte read and not yet written (copy: no burst
//! running; splice: an empty pipe). Its whole state then is two sockets, two byte counts and
//! the time since the last byte, and another process can resume it byte-exact.
//!
//! The pause is process-wide: once asked for, every gated direction that reaches its wait
//! stays there instead of moving the bytes it was woken for, and each flow's `settled`
//! resolves as soon as both of its directions rest. A half-closed flow's ended direction
//! rests for good (its FIN went on, it holds nothing), and the next process is told which it
//! is. A flow that does not come to rest within [`SETTLE`] (a destination that does not read)
//! gives up and runs on here.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use event_listener::Event;

/// How long a flow may take to come to rest before it stays with this process.
pub const SETTLE: Duration = Duration::from_secs(2);

/// How often a held direction, and a settling flow, look again: only during a hand-over.
const LOOK: Duration = Duration::from_millis(1);

static PAUSING: AtomicBool = AtomicBool::new(false);
static CHANGED: Event = Event::new();

/// Asks every gated flow of the process to come to rest.
pub fn request_pause() {
    PAUSING.store(true, Ordering::Release);
    CHANGED.notify(usize::MAX);
}

/// Lets every flow that did not leave run on.
pub fn end_pause() {
    PAUSING.store(false, Ordering::Release);
    CHANGED.notify(usize::MAX);
}

fn pausing() -> bool {
    PAUSING.load(Ordering::Acquire)
}

async fn until_pausing() {
    loop {
        if pausing() {
            return;
        }
        let listener = CHANGED.listen();
        if pausing() {
            return;
        }
        listener.await;
    }
}

/// One flow's view of the pause: which directions rest, and whether it gave up moving.
#[derive(Debug, Default)]
pub struct Gate {
    resting: [Cell<bool>; 2],
    gave_up: Cell<bool>,
}

impl Gate {
    /// A flow that may move.
    pub fn new() -> Gate {
        Gate::default()
    }

    fn index(up: bool) -> usize {
        usize::from(up)
    }

    /// The direction (`up`: client → server) waits for its source with nothing in hand.
    pub(crate) fn rest(&self, up: bool, resting: bool) {
        self.resting[Self::index(up)].set(resting);
    }

    /// The direction ended cleanly, its FIN passed on (`pair.rs`): it holds nothing, and
    /// rests from now on whatever the other one does.
    pub(crate) fn end(&self, up: bool) {
        self.rest(up, true);
    }

    /// Whether a direction woken at its safe point must stay there.
    pub(crate) fn holding(&self) -> bool {
        pausing() && !self.gave_up.get()
    }

    /// Stays at the safe point while the pause lasts for this flow.
    pub(crate) async fn hold(&self) {
        while self.holding() {
            compio::time::sleep(LOOK).await;
        }
    }

    /// Resolves when this flow is to come to rest (a pause, and the flow has not given up).
    pub(crate) async fn until_holding(&self) {
        until_pausing().await;
        if !self.holding() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once a pause is asked for and both directions rest: the flow may then be
    /// dropped where it stands and resumed elsewhere. Never resolves for a flow that gave up.
    pub(crate) async fn settled(&self) {
        // Only the wait for a pause is in every flow's state; the look loop is boxed, as it
        // exists only during a hand-over (issue #14).
        loop {
            until_pausing().await;
            if Box::pin(self.settle()).await {
                return;
            }
            if self.gave_up.get() {
                return std::future::pending().await;
            }
        }
    }

    /// During a pause: `true` once both directions rest; `false` if the pause ended or the
    /// flow gave up first.
    async fn settle(&self) -> bool {
        {
            let deadline = Instant::now() + SETTLE;
            while self.holding() {
                if self.resting.iter().all(Cell::get) {
                    return true;
                }
                if Instant::now() >= deadline {
                    self.gave_up.set(true);
                    break;
                }
                compio::time::sleep(LOOK).await;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_holds_only_during_a_pause() {
        let g = Gate::new();
        assert!(!g.holding());
        request_pause();
        assert!(g.holding());
        g.gave_up.set(true);
        assert!(!g.holding(), "a flow that gave up runs on");
        end_pause();
    }

    #[test]
    fn an_ended_direction_rests_for_good() {
        let g = Gate::new();
        g.end(false);
        assert!(g.resting[Gate::index(false)].get());
        assert!(
            !g.resting[Gate::index(true)].get(),
            "the live one rests on its own"
        );
    }
}

//! `maxconn`: a counting gate in front of `accept`. While a limit is reached the worker stops
//! accepting, so excess connections wait in the kernel's listen backlog instead of being
//! accepted and dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::Event;

#[derive(Debug)]
pub struct ConnLimit {
    /// A reload (`maxconn` of a kept frontend) or the runtime API's `set maxconn frontend`
    /// may change it.
    max: AtomicUsize,
    current: AtomicUsize,
    freed: Event,
}

impl ConnLimit {
    pub fn new(max: Option<u32>) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            max: AtomicUsize::new(Self::slots(max)),
            current: AtomicUsize::new(0),
            freed: Event::new(),
        })
    }

    fn slots(max: Option<u32>) -> usize {
        max.map_or(usize::MAX, |m| m as usize)
    }

    /// A reload's new limit. Flows above a lowered limit keep running; no new one is
    /// accepted until the count is under it. A raised limit wakes the waiting accept loops.
    pub fn set_max(&self, max: Option<u32>) {
        self.max.store(Self::slots(max), Ordering::Release);
        self.freed.notify(usize::MAX);
    }

    fn try_take(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < max).then_some(c + 1)
            })
            .is_ok()
    }

    /// A slot for a flow that is already established (adopted in a binary upgrade): taken
    /// even above the limit, since the flow runs anyway, so that new connections wait until
    /// the count is back under it.
    pub fn take_over(self: &Arc<Self>) -> Permit {
        self.current.fetch_add(1, Ordering::AcqRel);
        Permit(self.clone())
    }

    /// More slots taken than the limit allows: flows taken over (or a lowered limit) hold
    /// them, and a slot already waiting for `accept` should be given back.
    pub fn over(&self) -> bool {
        self.current.load(Ordering::Acquire) > self.max.load(Ordering::Acquire)
    }

    /// Waits for a free slot; the slot is returned when the permit drops.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            if self.try_take() {
                return Permit(self.clone());
            }
            // Register before re-checking so a release between the two is not missed.
            let listener = self.freed.listen();
            if self.try_take() {
                return Permit(self.clone());
            }
            listener.await;
        }
    }
}

#[derive(Debug)]
pub struct Permit(Arc<ConnLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_acquire_waits_until_a_permit_drops() {
        let limit = ConnLimit::new(Some(2));
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let a = limit.acquire().await;
            let _b = limit.acquire().await;
            assert!(!limit.try_take());
            drop(a);
            let _c = limit.acquire().await;
            assert_eq!(limit.current.load(Ordering::Relaxed), 2);
            limit.set_max(Some(3));
            let _d = limit.acquire().await;
            assert!(!limit.try_take());
        });
    }

    #[test]
    fn a_taken_over_flow_counts_even_above_the_limit() {
        let limit = ConnLimit::new(Some(1));
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let waiting_accept = limit.acquire().await;
            assert!(!limit.over());
            let adopted = limit.take_over();
            assert!(limit.over(), "the accept's slot must be given back");
            drop(waiting_accept);
            assert!(!limit.over());
            assert!(!limit.try_take(), "the adopted flow holds the only slot");
            drop(adopted);
            assert!(limit.try_take());
        });
    }

    #[test]
    fn a_raised_limit_lets_the_waiter_in() {
        let limit = ConnLimit::new(Some(1));
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let _a = limit.acquire().await;
            let waiter = compio::runtime::spawn({
                let limit = limit.clone();
                async move { limit.acquire().await }
            });
            limit.set_max(Some(2));
            let _b = waiter.await;
            assert_eq!(limit.current.load(Ordering::Relaxed), 2);
            limit.set_max(Some(1));
            assert!(
                !limit.try_take(),
                "lowered under the live count: no new slot"
            );
        });
    }
}

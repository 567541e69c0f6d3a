//! `maxconn`: a counting gate in front of `accept`. While a limit is reached the worker stops
//! accepting, so excess connections wait in the kernel's listen backlog instead of being
//! accepted and dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::Event;

#[derive(Debug)]
pub struct ConnLimit {
    /// Changed at run time by the runtime API's `set maxconn frontend`.
    max: AtomicUsize,
    current: AtomicUsize,
    freed: Event,
}

impl ConnLimit {
    pub fn new(max: Option<u32>) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            max: AtomicUsize::new(max.map_or(usize::MAX, |m| m as usize)),
            current: AtomicUsize::new(0),
            freed: Event::new(),
        })
    }

    fn try_take(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < max).then_some(c + 1)
            })
            .is_ok()
    }

    /// A new limit for the connections accepted from now on; established ones stay. A
    /// higher limit wakes the accept loops waiting for a slot.
    pub fn set_max(&self, max: u32) {
        self.max.store(max as usize, Ordering::Release);
        self.freed.notify(usize::MAX);
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
            limit.set_max(3);
            let _d = limit.acquire().await;
            assert!(!limit.try_take());
        });
    }
}

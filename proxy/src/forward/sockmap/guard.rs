//! Whether each direction's source is in the verdict's hash, and the park the wake-up thread
//! makes itself. A direction's own task parks it after a look, but reaching that task takes
//! two thread hops (ring reader, worker) and the park a third (the walk's thread): on two busy
//! cores each hop took milliseconds, and a client pushing at loopback speed put 10–25 MB into
//! the psock backlog before the park (LIFECYCLE.md, "Bounded memory"). So the thread that reads
//! the verdict's wake-ups looks at the direction itself (a fresh `written` from the
//! destination socket) and, at the parking point, parks it before waking the task.
//!
//! The state sits behind one mutex per direction slot: the wake-up thread parks only a source
//! that is in the hash, and holds the mutex through its park, so it can never take out a
//! source the task has just put back, nor leave the task believing in a park that did not
//! happen. The task reads the state at every turn of its loop (and may wait there for a walk
//! the wake-up thread runs for that same direction: milliseconds, once per park).

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock};

use proxy_ebpf::DirSlot;

use super::{sys, Kernel};

/// What the wake-up thread needs to look at and park a direction.
#[derive(Clone, Copy)]
pub struct Guard {
    /// Cookie and descriptor of the source socket (its key in the verdict's hash).
    pub cookie: u64,
    pub src_fd: RawFd,
    /// Descriptor of the destination socket, for its `written`.
    pub dst_fd: RawFd,
    /// The source is in the verdict's hash.
    pub active: bool,
}

/// One entry per direction slot, indexed like the SLOTS map. `None` while no flow holds the
/// slot: the descriptors are only used under the lock, and the flow clears its entries
/// before it closes them.
static GUARDS: OnceLock<Box<[Mutex<Option<Guard>>]>> = OnceLock::new();

fn guards() -> &'static [Mutex<Option<Guard>>] {
    GUARDS.get_or_init(|| {
        (0..proxy_ebpf::MAX_SLOTS)
            .map(|_| Mutex::new(None))
            .collect()
    })
}

/// The entry of slot `index`, locked (`None` past the table's end).
pub fn lock(index: u32) -> Option<MutexGuard<'static, Option<Guard>>> {
    guards()
        .get(index as usize)
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Whether the source of the direction in slot `index` is in the verdict's hash.
pub fn is_active(index: u32) -> bool {
    lock(index).is_some_and(|g| g.is_some_and(|g| g.active))
}

/// Records whether the source is in the verdict's hash (after the task's own park).
pub fn set_active(index: u32, active: bool) {
    if let Some(mut g) = lock(index) {
        if let Some(g) = g.as_mut() {
            g.active = active;
        }
    }
}

/// Called by the wake-up thread with the slots whose `redirected` reached their `wake_at`:
/// parks at once each direction whose backlog, by a fresh `written`, reached the parking
/// point (half the budget, as the task's own look), all in one park walk (under each source's
/// socket lock, see `park.rs`); re-arms the others' next report itself, so that it does not
/// wait for their tasks to run either.
pub fn park_due(indexes: &[u32]) {
    let Some(k) = super::loaded() else {
        return;
    };
    let mut parking = Vec::new();
    for &index in indexes {
        let Some(entry) = lock(index) else {
            continue;
        };
        if let Some((cookie, fd)) = look(k, index, &entry) {
            let old = sys::squeeze_window(fd);
            match k.parker.request_blocking(cookie, fd) {
                Ok(pending) => parking.push((entry, pending, fd, old)),
                Err(_) => sys::release_window(fd, old),
            }
        }
    }
    // The entries stay locked until their walk is done: the task cannot put the source back
    // meanwhile, nor take this park for one that did not happen.
    for (mut entry, pending, fd, old) in parking {
        let parked = pending.wait();
        sys::release_window(fd, old);
        if parked.is_ok() {
            if let Some(g) = entry.as_mut() {
                g.active = false;
            }
            k.parks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The source's cookie and descriptor if the direction in `index` is active and its backlog
/// reached the parking point; otherwise publishes `written` and sets the next `wake_at`.
fn look(k: &Kernel, index: u32, entry: &Option<Guard>) -> Option<(u64, RawFd)> {
    let slot = k.slots.get(index)?;
    let g = entry.as_ref().filter(|g| g.active)?;
    let written = sys::bytes_written(g.dst_fd).ok()?;
    let queued = DirSlot::queued(
        slot.redirected_now(),
        slot.consumed(),
        slot.dest_base(),
        written,
    );
    slot.set_written(written);
    let park_at = (slot.budget() / 2) as i64;
    if queued >= park_at {
        return Some((g.cookie, g.src_fd));
    }
    let step = (((park_at - queued.max(0)) / 2) as u64).max(slot.budget() / 16);
    slot.set_wake_at(slot.redirected_now().wrapping_add(step));
    None
}

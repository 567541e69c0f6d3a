//! The direction slots: the BPF array map `SLOTS`, mapped into the proxy (BPF_F_MMAPABLE), so
//! that reading the program's counters and publishing the proxy's own fields costs no system
//! call. Every field is accessed whole through a 64-bit atomic (the program writes its fields
//! with plain aligned stores, which are single-copy atomic on the 64-bit targets BPF runs on).

use std::collections::VecDeque;
use std::io;
use std::mem::offset_of;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proxy_ebpf::DirSlot;

/// The mapped array and the free slot indexes.
pub struct Slots {
    base: *mut DirSlot,
    len: usize,
    count: u32,
    /// Slots not in use. Taken and given back once per flow, never on the byte path.
    free: Mutex<FreeList>,
    /// Which slots a flow holds now, for [`Slots::queued_total`] to read without the lock.
    used: Box<[AtomicBool]>,
}

/// How long a given-back slot rests before a new flow may have it. A verdict run on another
/// CPU that looked the old flow's route up just before it was deleted still writes that
/// flow's counters into the slot; BPF programs run to the end inside one RCU read section
/// (microseconds), so a rest many orders of magnitude longer means no run can still hold
/// the slot when it is reset for a new flow, whose counters it would otherwise corrupt.
const QUARANTINE: Duration = Duration::from_millis(200);

/// Free slot indexes, and those given back and still resting (oldest first).
#[derive(Debug)]
struct FreeList {
    free: Vec<u32>,
    resting: VecDeque<(u32, Instant)>,
}

impl FreeList {
    fn new(count: u32) -> FreeList {
        FreeList {
            free: (0..count).rev().collect(),
            resting: VecDeque::new(),
        }
    }

    fn take_pair(&mut self, now: Instant) -> Option<(u32, u32)> {
        while let Some(&(index, since)) = self.resting.front() {
            if now.duration_since(since) < QUARANTINE {
                break;
            }
            self.resting.pop_front();
            self.free.push(index);
        }
        if self.free.len() < 2 {
            return None;
        }
        Some((self.free.pop()?, self.free.pop()?))
    }

    fn give_back(&mut self, index: u32, now: Instant) {
        self.resting.push_back((index, now));
    }

    /// Slots neither free nor resting.
    fn in_use(&self, count: u32) -> u32 {
        count - (self.free.len() + self.resting.len()) as u32
    }
}

// SAFETY: the mapping is shared memory that lives as long as `Slots`; every access through it
// is an atomic load or store of one aligned word (see `Slot`), so sharing across threads is
// sound. Slot ownership is handed out through the mutex-guarded free list.
unsafe impl Send for Slots {}
// SAFETY: as above.
unsafe impl Sync for Slots {}

impl Slots {
    /// Maps `count` slots of the array map `fd`.
    pub fn map(fd: RawFd, count: u32) -> io::Result<Slots> {
        let page = 4096usize;
        let len = (count as usize * std::mem::size_of::<DirSlot>()).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's memory; the kernel checks `len` against
        // the map's size and refuses a map created without BPF_F_MMAPABLE.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Slots::at(p.cast(), len, count))
    }

    /// The slots over a mapping of `len` bytes at `base` (unmapped when dropped).
    fn at(base: *mut DirSlot, len: usize, count: u32) -> Slots {
        Slots {
            base,
            len,
            count,
            free: Mutex::new(FreeList::new(count)),
            used: (0..count).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, FreeList> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Two slots for a new flow, or `None` when every slot is in use or resting.
    pub fn take_pair(&self) -> Option<(u32, u32)> {
        let pair = self.free_list().take_pair(Instant::now())?;
        for i in [pair.0, pair.1] {
            self.mark(i, true);
        }
        Some(pair)
    }

    fn mark(&self, index: u32, used: bool) {
        if let Some(u) = self.used.get(index as usize) {
            u.store(used, Ordering::Relaxed);
        }
    }

    /// Gives a slot back once its flow's route is gone; it rests for [`QUARANTINE`] before
    /// another flow may have it.
    pub fn give_back(&self, index: u32) {
        if index < self.count {
            self.mark(index, false);
            self.free_list().give_back(index, Instant::now());
        }
    }

    /// Bytes redirected into destinations' psock backlogs and not yet in those sockets, over
    /// every flow now (by each direction's last published `written`, so a slight
    /// overestimate between looks). The kernel charges these bytes to no socket's memory
    /// (LIFECYCLE.md, "Bounded memory"): this is where the process's share is seen. Reads the
    /// mapped slots only, no system call; a slot given back no longer counts.
    pub fn queued_total(&self) -> u64 {
        (0..self.count)
            .filter(|&i| {
                self.used
                    .get(i as usize)
                    .is_some_and(|u| u.load(Ordering::Relaxed))
            })
            .filter_map(|i| self.get(i))
            .map(|s| s.queued_estimate().max(0) as u64)
            .sum()
    }

    /// Adds to `due` the slots in use whose `redirected` passed their `wake_at` without the
    /// verdict's report reaching the proxy (a full ring), and disarms them (`wake_at` 0), so
    /// that each lost report is found once: the direction it wakes arms its next one.
    pub fn overdue(&self, due: &mut Vec<u32>) {
        for i in 0..self.count {
            let used = self.used.get(i as usize);
            if !used.is_some_and(|u| u.load(Ordering::Relaxed)) {
                continue;
            }
            if let Some(slot) = self.get(i) {
                let at = slot.wake_at();
                if at != 0 && slot.redirected_now() >= at {
                    slot.set_wake_at(0);
                    due.push(i);
                }
            }
        }
    }

    pub fn in_use(&self) -> u32 {
        self.free_list().in_use(self.count)
    }

    /// Access to one slot; `None` past the end.
    pub fn get(&self, index: u32) -> Option<Slot<'_>> {
        (index < self.count).then(|| Slot {
            // SAFETY: `index` is within the mapping.
            ptr: unsafe { self.base.add(index as usize) },
            index,
            _slots: self,
        })
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no `Slot` outlives `self`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// One direction's slot.
#[derive(Clone, Copy)]
pub struct Slot<'a> {
    ptr: *mut DirSlot,
    /// Its index in the SLOTS map (and in the wake-up events).
    pub index: u32,
    _slots: &'a Slots,
}

impl Slot<'_> {
    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `offset` is a field offset of an 8-aligned u64 inside the mapped slot, which
        // lives as long as the borrow of `Slots`.
        unsafe { &*self.ptr.cast::<u8>().add(offset).cast::<AtomicU64>() }
    }

    pub fn redirected(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, redirected))
            .load(Ordering::Acquire)
    }
    pub fn last_ns(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, last_ns))
            .load(Ordering::Acquire)
    }
    pub fn overruns(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, overruns))
            .load(Ordering::Acquire)
    }
    pub fn trimmed(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, trimmed))
            .load(Ordering::Acquire)
    }
    pub fn faults(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, faults))
            .load(Ordering::Acquire)
    }
    pub fn fault_cut(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, fault_cut))
            .load(Ordering::Acquire)
    }
    pub fn consumed(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, consumed))
            .load(Ordering::Acquire)
    }
    pub fn dest_base(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, dest_base))
            .load(Ordering::Acquire)
    }
    /// What the destination socket had taken (`bytes_acked + SIOCOUTQ`) when last published.
    pub fn written(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, written))
            .load(Ordering::Acquire)
    }
    pub fn budget(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, budget))
            .load(Ordering::Acquire)
    }

    pub fn set_consumed(&self, v: u64) {
        self.u64_at(offset_of!(DirSlot, consumed))
            .store(v, Ordering::Release);
    }
    /// Asks the verdict for a wake-up once `redirected` reaches `v` (0: none). Sequentially
    /// consistent, so that a `redirected` read after it is not one from before it.
    pub fn set_wake_at(&self, v: u64) {
        self.u64_at(offset_of!(DirSlot, wake_at))
            .store(v, Ordering::SeqCst);
    }
    pub fn wake_at(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, wake_at))
            .load(Ordering::SeqCst)
    }
    /// `redirected`, read after everything this thread stored before (see `set_wake_at`).
    pub fn redirected_now(&self) -> u64 {
        self.u64_at(offset_of!(DirSlot, redirected))
            .load(Ordering::SeqCst)
    }
    pub fn set_written(&self, v: u64) {
        self.u64_at(offset_of!(DirSlot, written))
            .store(v, Ordering::Release);
    }

    /// A fresh slot for a new flow, before its route exists (the program cannot see it yet).
    pub fn reset(&self, budget: u64, dest_base: u64, now_ns: u64) {
        for (off, v) in [
            (offset_of!(DirSlot, redirected), 0),
            (offset_of!(DirSlot, last_ns), now_ns),
            (offset_of!(DirSlot, overruns), 0),
            (offset_of!(DirSlot, trimmed), 0),
            (offset_of!(DirSlot, faults), 0),
            (offset_of!(DirSlot, fault_cut), 0),
            (offset_of!(DirSlot, budget), budget),
            (offset_of!(DirSlot, dest_base), dest_base),
            (offset_of!(DirSlot, consumed), 0),
            (offset_of!(DirSlot, written), dest_base),
            // The first report comes at a quarter of the budget (half the way to the parking
            // point), before the task's first look: a burst right at the start is seen too.
            (offset_of!(DirSlot, wake_at), budget / 4),
        ] {
            self.u64_at(off).store(v, Ordering::Release);
        }
    }

    /// Bytes in the destination's psock backlog, by the last published `written`.
    pub fn queued_estimate(&self) -> i64 {
        DirSlot::queued(
            self.redirected(),
            self.consumed(),
            self.dest_base(),
            self.written(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots over anonymous shared memory, in place of the BPF map's (same layout, same
    /// unmapping on drop).
    fn anonymous(count: u32) -> Slots {
        let len = (count as usize * std::mem::size_of::<DirSlot>()).div_ceil(4096) * 4096;
        // SAFETY: a fresh anonymous mapping, zero-filled; `Slots` unmaps it when dropped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Slots::at(p.cast(), len, count)
    }

    /// What the verdict would have redirected into a slot.
    fn redirect(slot: &Slot<'_>, bytes: u64) {
        slot.u64_at(offset_of!(DirSlot, redirected))
            .fetch_add(bytes, Ordering::AcqRel);
    }

    #[test]
    fn the_queued_total_counts_live_flows_only() {
        let slots = anonymous(8);
        assert_eq!(slots.queued_total(), 0);
        let (a, b) = slots.take_pair().expect("a pair");
        let (sa, sb) = (slots.get(a).expect("a"), slots.get(b).expect("b"));
        sa.reset(1 << 20, 5000, 0);
        sb.reset(1 << 20, 0, 0);
        redirect(&sa, 300_000);
        redirect(&sb, 20_000);
        assert_eq!(slots.queued_total(), 320_000);
        // The destination took 100 000 of a's bytes (acknowledged or in its send queue).
        sa.set_written(5000 + 100_000);
        assert_eq!(slots.queued_total(), 220_000);
        // A second flow adds its own.
        let (c, _d) = slots.take_pair().expect("another pair");
        let sc = slots.get(c).expect("c");
        sc.reset(1 << 20, 0, 0);
        redirect(&sc, 1000);
        assert_eq!(slots.queued_total(), 221_000);
        // The first flow ends: its slots keep their figures while resting, but count no more.
        slots.give_back(a);
        slots.give_back(b);
        assert_eq!(slots.queued_total(), 1000);
    }

    #[test]
    fn a_lost_report_is_found_once_and_only_for_live_slots() {
        let slots = anonymous(8);
        let (a, b) = slots.take_pair().expect("a pair");
        let (sa, sb) = (slots.get(a).expect("a"), slots.get(b).expect("b"));
        sa.reset(1 << 20, 0, 0);
        sb.reset(1 << 20, 0, 0);
        sa.set_wake_at(1);
        sb.set_wake_at(1 << 18);
        let mut due = Vec::new();
        slots.overdue(&mut due);
        assert!(due.is_empty(), "nothing crossed a wake_at yet: {due:?}");
        // a's first packet went by and its report was lost; b is still short of its mark.
        redirect(&sa, 1400);
        redirect(&sb, 1400);
        slots.overdue(&mut due);
        assert_eq!(due, [a]);
        assert_eq!(sa.wake_at(), 0, "disarmed: found once");
        assert_eq!(sb.wake_at(), 1 << 18, "b keeps its mark");
        slots.overdue(&mut due);
        assert_eq!(due, [a], "not found twice");
        // A slot given back is not looked at, whatever its figures.
        sb.set_wake_at(1);
        slots.give_back(b);
        slots.overdue(&mut due);
        assert_eq!(due, [a]);
    }

    #[test]
    fn a_given_back_slot_rests_before_reuse() {
        let t0 = Instant::now();
        let mut list = FreeList::new(4);
        let (a, b) = list.take_pair(t0).expect("two free");
        let (c, d) = list.take_pair(t0).expect("two more");
        assert_eq!(list.in_use(4), 4);
        list.give_back(a, t0);
        list.give_back(b, t0);
        assert_eq!(list.in_use(4), 2, "resting slots are not in use");
        assert_eq!(list.take_pair(t0 + QUARANTINE / 2), None, "still resting");
        let again = list.take_pair(t0 + QUARANTINE).expect("rested");
        assert_eq!(
            [again.0, again.1].map(|i| [a, b].contains(&i)),
            [true, true]
        );
        list.give_back(c, t0);
        list.give_back(d, t0 + QUARANTINE);
        // Only `c` has rested: one slot is not a pair.
        assert_eq!(list.take_pair(t0 + QUARANTINE), None);
        assert!(list.take_pair(t0 + 2 * QUARANTINE).is_some());
    }
}

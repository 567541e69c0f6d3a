//! Threshold wake-ups from the verdict. A direction that wants to be looked at again once its
//! `redirected` total reaches some value writes it to its slot's `wake_at`; the packet that
//! reaches it makes the verdict send the slot's index through the `WAKE` ring, and one thread
//! of the proxy reads the ring, parks the directions that reached their parking point
//! (`guard.rs`: no hop through a worker, whose delay let megabytes past the budget) and
//! wakes their tasks. A direction thus sleeps through
//! any number of packets until its backlog could matter, instead of waking on the first packet
//! after every quiet spell (which, with 1000 paced flows, was most of the proxy's CPU).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use event_listener::{Event, EventListener};

/// One event per direction slot, indexed like the SLOTS map.
static WAKES: OnceLock<Box<[Event]>> = OnceLock::new();

fn wakes() -> &'static [Event] {
    WAKES.get_or_init(|| (0..proxy_ebpf::MAX_SLOTS).map(|_| Event::new()).collect())
}

/// Resolves once the verdict reports slot `index` reaching its `wake_at` (or at a stale
/// report of an earlier target: the caller looks again either way).
pub fn listen(index: u32) -> Option<EventListener> {
    wakes().get(index as usize).map(Event::listen)
}

/// Starts the thread that reads the ring for the life of the process.
pub fn start(ring: RingBuf<MapData>) -> io::Result<()> {
    let wakes = wakes();
    std::thread::Builder::new()
        .name("sockmap-wake".into())
        .spawn(move || {
            super::sys::prefer_realtime("sockmap-wake");
            read_ring(ring, wakes)
        })
        .map(|_| ())
}

/// How often the slots are swept for reports the ring lost. An idle direction waits for its
/// next packet with no timer of its own (`dir.rs`), so a lost report would leave it asleep
/// while its backlog grows: the sweep bounds that to this long.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

fn read_ring(mut ring: RingBuf<MapData>, wakes: &'static [Event]) {
    let fd = ring.as_raw_fd();
    let mut due = Vec::new();
    let mut swept = Instant::now();
    loop {
        while let Some(item) = ring.next() {
            let index = item.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok());
            if let Some(index) = index.map(u32::from_ne_bytes) {
                due.push(index);
            }
        }
        if swept.elapsed() >= SWEEP_EVERY {
            swept = Instant::now();
            if let Some(k) = super::loaded() {
                k.slots.overdue(&mut due);
            }
        }
        due.sort_unstable();
        due.dedup();
        // Before the tasks hear of it: a park must not wait for a worker thread.
        super::guard::park_due(&due);
        for index in due.drain(..) {
            if let Some(event) = wakes.get(index as usize) {
                event.notify(usize::MAX);
            }
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = SWEEP_EVERY.saturating_sub(swept.elapsed()).as_millis() as i32;
        // SAFETY: one valid pollfd; an error (EINTR) just reads the ring again.
        unsafe { libc::poll(&mut pfd, 1, timeout.max(1)) };
    }
}

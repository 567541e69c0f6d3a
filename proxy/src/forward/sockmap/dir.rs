//! One direction of a sockmap flow (source side `s` → destination side `1 - s`): asleep while
//! the kernel redirects, until the verdict reports that enough bytes went by for the backlog to
//! matter (`wake.rs`), a second passes, or a socket event; then it publishes how much the
//! destination socket took, parks the direction when its psock backlog nears the budget and
//! copies it with TCP backpressure until the destination catches up, and runs the end of the
//! stream (drain, then FIN). See LIFECYCLE.md.

use std::cell::Cell;
use std::io;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};

use super::flow::{Flow, Side};
use super::slots::Slot;
use super::sys;
use super::watch::{Events, ERR, HUP, RDHUP};
use crate::forward::handover::Gate;
use crate::forward::pair::DirEnd;

/// Bounds of the sleep between two looks when no wake-up comes (see `backstop`).
const MIN_TICK: Duration = Duration::from_millis(2);
const MAX_TICK: Duration = Duration::from_secs(1);
/// How long a direction must have moved nothing to sleep without a timer (see `backstop`).
const IDLE_AFTER: Duration = Duration::from_secs(2);
/// How long the end-of-stream waits for the kernel to catch up before giving up on the flow.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

pub struct Dir<'a> {
    flow: &'a Flow,
    slot: Slot<'static>,
    /// Source side (0 = client, 1 = server).
    s: usize,
    /// The proxy's own activity stamp, shared by both directions.
    stamp: &'a Cell<u64>,
    /// The copy buffer: allocated only while this direction copies (parked, or after the
    /// verdict let go at the end), so that an idle flow does not hold it (issue #14).
    buf: Vec<u8>,
    bufsize: usize,
    /// Bytes this direction copied in userspace (mirrors the slot's `consumed`).
    consumed: u64,
    /// `redirected` when `written` was last published.
    published_at: u64,
    /// `redirected` at the last look, and when (the rate for `backstop`).
    look_redirected: u64,
    look_at: Instant,
    /// When a look last found `redirected` moved.
    moved_at: Instant,
    eof: bool,
    /// Times this direction was parked (for the flow's debug line), by its task or the
    /// wake-up thread (`guard.rs`): counted as the run loop sees the source leave the hash.
    parks: u32,
    /// Whether the source was in the verdict's hash at the run loop's last turn.
    was_active: bool,
    /// A flow that may come to rest for a binary upgrade (`handover.rs`).
    gate: Option<&'a Gate>,
}

impl<'a> Dir<'a> {
    pub fn new(
        flow: &'a Flow,
        slot: Slot<'static>,
        s: usize,
        stamp: &'a Cell<u64>,
        bufsize: usize,
        gate: Option<&'a Gate>,
    ) -> Dir<'a> {
        Dir {
            flow,
            slot,
            s,
            stamp,
            buf: Vec::new(),
            bufsize: bufsize.max(4096),
            consumed: 0,
            published_at: 0,
            look_redirected: 0,
            look_at: Instant::now(),
            moved_at: Instant::now(),
            eof: false,
            parks: 0,
            was_active: false,
            gate,
        }
    }

    /// Bytes this direction delivered (or handed to the kernel for delivery).
    pub fn moved(&self) -> u64 {
        self.slot.redirected() + self.consumed
    }

    /// Times this direction was parked.
    pub fn parks(&self) -> u32 {
        self.parks
    }

    fn src(&self) -> &Side {
        &self.flow.sides[self.s & 1]
    }

    fn dst(&self) -> &Side {
        &self.flow.sides[(self.s + 1) & 1]
    }

    fn events(&self) -> Option<&Events> {
        self.flow.reg.as_ref().map(|r| &*r.events)
    }

    fn budget(&self) -> u64 {
        self.slot.budget()
    }

    /// The direction's whole life: returns when it ended cleanly (FIN passed on) or failed.
    pub async fn run(&mut self) -> DirEnd {
        loop {
            let Some(events) = self.events() else {
                return DirEnd::SourceFailed;
            };
            let listener = events.listen();
            let (src_ev, dst_ev) = (events.of(self.s), events.of(1 - self.s));
            if src_ev & ERR != 0 || self.broken() {
                return DirEnd::SourceFailed;
            }
            if dst_ev & ERR != 0 {
                return DirEnd::DestFailed;
            }
            // The rare paths are boxed: inline, the largest of their states would be held
            // by every direction for its whole life, idle or not (issue #14).
            if src_ev & (RDHUP | HUP) != 0 || self.eof {
                return Box::pin(self.finish()).await;
            }
            if let Some(g) = self.gate.filter(|g| g.holding()) {
                if let Err(end) = Box::pin(self.rest(g)).await {
                    return end;
                }
                continue;
            }
            let active = self.flow.is_active(self.s);
            if self.was_active && !active {
                self.parks += 1;
            }
            self.was_active = active;
            if !active {
                if let Err(end) = Box::pin(self.copy_parked()).await {
                    return end;
                }
                continue;
            }
            self.publish_written();
            if self.slot.queued_estimate() >= (self.budget() / 2) as i64 {
                // Parking failed (it cannot, short of a vanished map) would just leave the
                // direction redirecting; try again at the next tick.
                let _ = Box::pin(self.flow.park(self.s)).await;
                continue;
            }
            // Registered before `wake_at` is set, so that no report is missed.
            let wake = super::wake::listen(self.slot.index);
            // A direction that moved nothing for seconds sleeps without a timer until its
            // next packet: 10 000 idle players cost no wake-ups (issue #14). A moving one
            // keeps the threshold and the backstop, so a paced flow is not woken per packet.
            // A lost report is found by the wake-up thread's sweep (`wake.rs`).
            let tick = self.backstop();
            let idle = tick.is_none() && wake.is_some();
            let target = if idle {
                self.slot.redirected().wrapping_add(1)
            } else {
                self.wake_target()
            };
            self.slot.set_wake_at(target);
            if self.slot.redirected_now() >= target {
                continue;
            }
            let sleep = pin!(sleep_or_never((!idle).then(|| tick.unwrap_or(MAX_TICK))));
            // A hand-over's pause is noticed at once, not at the next look.
            let holding = pin!(until_holding(self.gate));
            let sleep = select(sleep, holding);
            match wake {
                Some(wake) => {
                    let _ = select(select(listener, wake), sleep).await;
                }
                None => {
                    let _ = select(listener, sleep).await;
                }
            }
        }
    }

    /// The `redirected` total at which to look again: once half the headroom to the parking
    /// point (half the budget) has gone by, and not sooner than a sixteenth of the budget (so
    /// that a backlog hovering just under the parking point does not wake it per packet). The
    /// backlog can grow at most by what was redirected, so the look comes before it passes the
    /// parking point unless it grows by the rest of the headroom during the wake-up itself.
    fn wake_target(&self) -> u64 {
        let park_at = (self.budget() / 2) as i64;
        let headroom = (park_at - self.slot.queued_estimate().max(0)).max(0) as u64;
        let step = (headroom / 2).max(self.budget() / 16).max(1);
        self.slot.redirected().wrapping_add(step)
    }

    /// How long to sleep if no wake-up comes: half the time the current rate needs to cover
    /// the headroom to the parking point, 2 ms to 1 s. A wake-up can be lost (the proxy's store
    /// of `wake_at` and the verdict's of `redirected` may cross on two CPUs; a full ring); a
    /// fast flow then still gets looked at before it can run far past the parking point, while
    /// a paced one (whose rate needs seconds) sleeps the whole second. `None` once nothing
    /// moved for [`IDLE_AFTER`]: the direction is idle. Not "since the last look": looks
    /// can come milliseconds apart, and a paced flow between two chunks would then be woken
    /// by every chunk (the first design's cost, LIFECYCLE.md).
    fn backstop(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let r = self.slot.redirected();
        let moved = r.saturating_sub(self.look_redirected) as f64;
        let secs = now.duration_since(self.look_at).as_secs_f64().max(1e-6);
        (self.look_redirected, self.look_at) = (r, now);
        if moved > 0.0 {
            self.moved_at = now;
        } else if now.duration_since(self.moved_at) >= IDLE_AFTER {
            return None;
        } else {
            return Some(MAX_TICK);
        }
        let park_at = (self.budget() / 2) as i64;
        let headroom = (park_at - self.slot.queued_estimate().max(0)).max(0) as f64;
        let tick = Duration::try_from_secs_f64(headroom / (moved / secs) / 2.0)
            .unwrap_or(MAX_TICK)
            .clamp(MIN_TICK, MAX_TICK);
        Some(tick)
    }

    /// The verdict met a packet it could not trim (LIFECYCLE.md, "Overlapping packets"): the
    /// stream is no longer whole, so the flow is reset rather than let run on.
    fn broken(&self) -> bool {
        let faults = self.slot.faults();
        if faults != 0 {
            log::error!(
                "sockmap: {faults} packet(s) of a direction overlapped bytes already taken \
                 and could not be trimmed (the last by {} bytes); resetting the flow",
                self.slot.fault_cut()
            );
        }
        faults != 0
    }

    /// A hand-over's pause: the direction parks (the verdict stops taking its source's
    /// packets, which wait in the source's TCP queue), waits until the destination socket
    /// holds every byte redirected so far (the psock backlog is empty), and then rests with
    /// nothing in hand until the flow is dropped for the hand-over or the pause ends. It
    /// stays parked after a pause without hand-over: the parked leg copies what queued and
    /// unparks, as after a budget park.
    async fn rest(&mut self, g: &Gate) -> Result<(), DirEnd> {
        if self.flow.is_active(self.s) && self.flow.park(self.s).await.is_err() {
            // Retried at the next look; not a busy loop.
            compio::time::sleep(Duration::from_millis(1)).await;
            return Ok(());
        }
        if !self.redirected_sent_while(g).await? {
            return Ok(());
        }
        g.rest(self.s == 0, true);
        g.hold().await;
        g.rest(self.s == 0, false);
        Ok(())
    }

    /// As `wait_redirected_sent`, for as long as the pause lasts: `false` if it ended first
    /// (a destination that does not read keeps the flow here rather than failing it).
    async fn redirected_sent_while(&self, g: &Gate) -> Result<bool, DirEnd> {
        // After this read `redirected` is final (see `wait_redirected_sent`).
        sys::tcp_info(self.src().fd).map_err(|_| DirEnd::SourceFailed)?;
        let target = self
            .slot
            .dest_base()
            .wrapping_add(self.slot.redirected())
            .wrapping_add(self.consumed);
        while g.holding() {
            let written = sys::bytes_written(self.dst().fd).map_err(|_| DirEnd::DestFailed)?;
            if written >= target {
                return Ok(true);
            }
            if self.dest_failed() {
                return Err(DirEnd::DestFailed);
            }
            compio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(false)
    }

    /// Tells the verdict's accounting (and this direction's parking decision) how much the
    /// destination socket has taken. Skipped when nothing was redirected since and nothing is
    /// thought to be queued.
    fn publish_written(&mut self) {
        let r = self.slot.redirected();
        if r == self.published_at && self.slot.queued_estimate() <= 0 {
            return;
        }
        if let Ok(w) = sys::bytes_written(self.dst().fd) {
            self.slot.set_written(w);
            self.published_at = r;
        }
    }

    /// The parked leg. The verdict no longer runs for the source, so its bytes stay in its
    /// TCP queue and its window backpressures the sender. Wait until the destination holds
    /// every redirected byte (so nothing copied overtakes them), copy (at most a buffer held
    /// here, the destination's send queue kept within the budget), and unpark once that queue
    /// is under a quarter of the budget: the verdict then takes the rest of the TCP queue, in
    /// order, and the backlog starts from empty.
    async fn copy_parked(&mut self) -> Result<(), DirEnd> {
        let copied = self.copy_source(true).await;
        // Unparked: the verdict moves the bytes again, the buffer is not needed until the
        // next park.
        self.buf = Vec::new();
        copied
    }

    /// Copies the source's TCP queue to the destination once every redirected byte is out:
    /// up to the FIN, or (`unpark`) until the queue is empty with room in the destination,
    /// where the source rejoins the verdict.
    async fn copy_source(&mut self, unpark: bool) -> Result<(), DirEnd> {
        self.wait_redirected_sent().await?;
        self.buf.resize(self.bufsize, 0);
        loop {
            match sys::recv(self.src().fd, &mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.write_dest(n).await?;
                    // A hand-over's pause: the chunk is delivered, nothing is in hand; back to
                    // the run loop, which rests there, still parked.
                    if unpark && self.gate.is_some_and(Gate::holding) {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Only with the source's queue empty: the verdict takes whole packets
                    // from the queue (tcp_read_skb ignores a read offset), so one partly
                    // read here would be sent twice.
                    if unpark && self.gate.is_some_and(Gate::holding) {
                        return Ok(());
                    }
                    if unpark && self.dest_has_room() && self.flow.unpark(self.s).is_ok() {
                        return Ok(());
                    }
                    self.wait_source().await?;
                }
                Err(_) => return Err(DirEnd::SourceFailed),
            }
        }
    }

    /// The destination's send queue is under a quarter of the budget.
    fn dest_has_room(&self) -> bool {
        sys::outq(self.dst().fd).is_ok_and(|q| q <= self.budget() / 4)
    }

    /// Until the source has bytes (or its FIN), with a bound so that unparking is retried.
    async fn wait_source(&self) -> Result<(), DirEnd> {
        let ready = pin!(self.src().poll.read_ready());
        let nap = pin!(compio::time::sleep(Duration::from_millis(50)));
        match select(ready, nap).await {
            Either::Left((Err(_), _)) => Err(DirEnd::SourceFailed),
            _ => Ok(()),
        }
    }

    /// Writes `buf[..n]` to the destination, keeping its send queue within the budget.
    async fn write_dest(&mut self, n: usize) -> Result<(), DirEnd> {
        let mut off = 0;
        while off < n {
            self.wait_budget(n - off).await?;
            match sys::send(self.dst().fd, &self.buf[off..n]) {
                Ok(m) => {
                    off += m;
                    // The psock backlog is empty while parked (`wait_redirected_sent`), so
                    // what the destination took grows by exactly what was sent: `written`
                    // stays exact without a TCP_INFO per chunk.
                    self.slot
                        .set_written(self.slot.written().wrapping_add(m as u64));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.dst().poll.write_ready().await.is_err() {
                        return Err(DirEnd::DestFailed);
                    }
                }
                Err(_) => return Err(DirEnd::DestFailed),
            }
        }
        self.consumed += n as u64;
        self.slot.set_consumed(self.consumed);
        self.stamp.set(sys::coarse_now_ns());
        Ok(())
    }

    /// The destination's send queue plus what is about to be written stays within the budget.
    async fn wait_budget(&self, more: usize) -> Result<(), DirEnd> {
        loop {
            let q = sys::outq(self.dst().fd).map_err(|_| DirEnd::DestFailed)?;
            if q == 0 || q + more as u64 <= self.budget() {
                return Ok(());
            }
            if self.dest_failed() {
                return Err(DirEnd::DestFailed);
            }
            compio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn dest_failed(&self) -> bool {
        self.events().is_some_and(|e| e.of(1 - self.s) & ERR != 0)
    }

    /// Until the destination socket holds every redirected byte: the psock backlog sends them
    /// asynchronously, and the destination's `bytes_acked + SIOCOUTQ` counts what it took.
    async fn wait_redirected_sent(&self) -> Result<(), DirEnd> {
        // A verdict run that began before the source left the verdict's hash may still be
        // redirecting; it holds the source's socket lock, which TCP_INFO takes too: after this
        // read, `redirected` is final and the target complete.
        sys::tcp_info(self.src().fd).map_err(|_| DirEnd::SourceFailed)?;
        let target = self
            .slot
            .dest_base()
            .wrapping_add(self.slot.redirected())
            .wrapping_add(self.consumed);
        let start = Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            let written = sys::bytes_written(self.dst().fd).map_err(|_| DirEnd::DestFailed)?;
            // Published as read: a parked direction behind a destination that does not read
            // waits here, and `proxy_sockmap_queued_bytes` must not show a stale backlog.
            self.slot.set_written(written);
            if written >= target {
                return Ok(());
            }
            if self.dest_failed() || start.elapsed() > DRAIN_LIMIT {
                return Err(DirEnd::DestFailed);
            }
            compio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The source sent FIN (or is gone). Make sure every byte before it went through the
    /// verdict (or, parked, is copied), wait until the destination holds everything, then pass
    /// the FIN on.
    async fn finish(&mut self) -> DirEnd {
        if self.events().is_some_and(|e| e.of(self.s) & ERR != 0) {
            return DirEnd::SourceFailed;
        }
        let done = if self.flow.is_active(self.s) {
            self.wait_verdict_done().await
        } else {
            self.copy_to_eof().await
        };
        if let Err(end) = done {
            return end;
        }
        if self.broken() {
            return DirEnd::SourceFailed;
        }
        if let Err(end) = self.check_accounted() {
            return end;
        }
        if let Err(end) = self.wait_redirected_sent().await {
            return end;
        }
        match self.dst().poll.shutdown(std::net::Shutdown::Write) {
            Ok(()) => DirEnd::Eof,
            Err(_) => DirEnd::DestFailed,
        }
    }

    /// Parked: copies the rest of the source's TCP queue, up to its FIN.
    async fn copy_to_eof(&mut self) -> Result<(), DirEnd> {
        if self.eof {
            return Ok(());
        }
        self.copy_source(false).await
    }

    /// After the FIN, until the verdict has run over every byte received before it: the
    /// socket counts received bytes (and the FIN) as they arrive, the verdict as it runs; an
    /// RDHUP can be seen while the last packets still wait in the TCP queue.
    async fn wait_verdict_done(&self) -> Result<(), DirEnd> {
        let start = Instant::now();
        // Without a FIN (a reset) nothing more is owed anyway.
        while self.unseen()? > 0 {
            if start.elapsed() > DRAIN_LIMIT {
                return Err(DirEnd::SourceFailed);
            }
            compio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// After the source's FIN: every byte the socket received went through the verdict or
    /// the copy. A shortfall means the kernel dropped bytes the proxy never saw: the flow is
    /// then reset, so that a cut stream never looks complete.
    fn check_accounted(&self) -> Result<(), DirEnd> {
        let unseen = self.unseen()?;
        if unseen > 0 {
            log::error!(
                "sockmap: {unseen} bytes of a direction were taken off its source and never \
                 seen by the verdict or the copy; resetting the flow"
            );
            return Err(DirEnd::SourceFailed);
        }
        Ok(())
    }

    /// Bytes the source socket received (`tcpi_bytes_received`, less the FIN it counts) that
    /// neither the verdict, the copy, nor the proxy before registration has seen.
    fn unseen(&self) -> Result<u64, DirEnd> {
        let received = sys::tcp_info(self.src().fd)
            .map_err(|_| DirEnd::SourceFailed)?
            .bytes_received;
        let seen = self.flow.consumed_before[self.s & 1] + self.slot.redirected() + self.consumed;
        Ok(received.saturating_sub(seen + 1))
    }
}

/// Resolves when a hand-over wants this direction to rest; never without a gate.
/// Sleeps for `d`, or forever without it.
pub(super) async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => compio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn until_holding(gate: Option<&Gate>) {
    match gate {
        Some(g) => g.until_holding().await,
        None => std::future::pending().await,
    }
}

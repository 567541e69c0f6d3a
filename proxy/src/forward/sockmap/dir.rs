//! One direction of a sockmap flow (source side `s` → destination side `1 - s`): mostly
//! asleep while the kernel redirects; wakes to publish the destination's acknowledgements
//! (which the verdict's budget check reads), to copy passed bytes with backpressure when the
//! budget was hit, and to run the end of the stream (drain, then FIN). See LIFECYCLE.md.

use std::cell::Cell;
use std::io;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use proxy_ebpf::{MODE_PASS, MODE_REDIRECT, MODE_RESUME};

use super::flow::{Flow, Side};
use super::slots::Slot;
use super::sys;
use super::watch::{Events, ERR, HUP, RDHUP};
use crate::forward::pair::DirEnd;

/// Bounds of the interval between two publications of the destination's acknowledgements.
const MIN_TICK: Duration = Duration::from_millis(2);
const MAX_TICK: Duration = Duration::from_secs(1);
/// How long the end-of-stream waits for the kernel to catch up before giving up on the flow.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// SO_RCVLOWAT while handing a direction back to the verdict: bytes up to this much wait in
/// the source's TCP queue instead of reaching the verdict.
const HOLD: libc::c_int = 1 << 20;

pub struct Dir<'a> {
    flow: &'a Flow,
    slot: Slot<'static>,
    /// Source side (0 = client, 1 = server).
    s: usize,
    /// The proxy's own activity stamp, shared by both directions.
    stamp: &'a Cell<u64>,
    buf: Vec<u8>,
    /// Passed bytes read from the source and written to the destination (mirrors the slot).
    consumed: u64,
    /// `redirected` when the acknowledgements were last published, and when.
    tick_redirected: u64,
    tick_at: Instant,
    eof: bool,
}

impl<'a> Dir<'a> {
    pub fn new(
        flow: &'a Flow,
        slot: Slot<'static>,
        s: usize,
        stamp: &'a Cell<u64>,
        bufsize: usize,
    ) -> Dir<'a> {
        Dir {
            flow,
            slot,
            s,
            stamp,
            buf: vec![0; bufsize.max(4096)],
            consumed: 0,
            tick_redirected: 0,
            tick_at: Instant::now(),
            eof: false,
        }
    }

    /// Bytes this direction delivered (or handed to the kernel for delivery).
    pub fn moved(&self) -> u64 {
        self.slot.redirected() + self.consumed
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
            if src_ev & ERR != 0 {
                return DirEnd::SourceFailed;
            }
            if dst_ev & ERR != 0 {
                return DirEnd::DestFailed;
            }
            if src_ev & (RDHUP | HUP) != 0 || self.eof {
                return self.finish().await;
            }
            if self.needs_copy() {
                if let Err(end) = self.copy_passed().await {
                    return end;
                }
                continue;
            }
            self.publish_acked();
            let tick = self.next_tick();
            let sleep = pin!(compio::time::sleep(tick));
            let _ = select(listener, sleep).await;
        }
    }

    /// Passed bytes wait on the source socket, or this direction copies in userspace anyway.
    fn needs_copy(&self) -> bool {
        self.flow.pinned
            || match self.slot.mode() {
                MODE_REDIRECT => false,
                MODE_RESUME => self.slot.passed() != self.consumed,
                _ => true,
            }
    }

    /// Tells the verdict how much the destination has acknowledged, so that its budget check
    /// sees bytes leave the queue. Skipped when nothing was redirected since and nothing is
    /// thought to be queued.
    fn publish_acked(&mut self) {
        let r = self.slot.redirected();
        if r == self.tick_redirected && self.slot.queued_estimate() <= 0 {
            return;
        }
        if let Ok(info) = sys::tcp_info(self.dst().fd) {
            self.slot.set_acked(info.bytes_acked);
        }
    }

    /// Time to the next publication: half the time the current rate needs to fill what is
    /// left of the budget, so that a direction keeping up never hits it for staleness.
    fn next_tick(&mut self) -> Duration {
        let now = Instant::now();
        let r = self.slot.redirected();
        let moved = r.saturating_sub(self.tick_redirected) as f64;
        let secs = now.duration_since(self.tick_at).as_secs_f64().max(1e-6);
        self.tick_redirected = r;
        self.tick_at = now;
        if moved == 0.0 {
            return MAX_TICK;
        }
        let headroom = (self.budget() as i64 - self.slot.queued_estimate().max(0)).max(0) as f64;
        let t = headroom / (moved / secs) / 2.0;
        Duration::try_from_secs_f64(t)
            .unwrap_or(MAX_TICK)
            .clamp(MIN_TICK, MAX_TICK)
    }

    /// The userspace leg: wait until the kernel has sent every redirected byte (so nothing
    /// copied overtakes them), then copy passed bytes with backpressure until the destination
    /// has room again, then hand the direction back to the verdict.
    async fn copy_passed(&mut self) -> Result<(), DirEnd> {
        self.wait_redirected_sent().await?;
        loop {
            match sys::recv(self.src().fd, &mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.write_dest(n).await?;
                    if self.dest_has_room() {
                        return self.hand_back().await;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.dest_has_room() {
                        return self.hand_back().await;
                    }
                    if self.resumed() {
                        return Ok(());
                    }
                    self.wait_source().await?;
                }
                Err(_) => return Err(DirEnd::SourceFailed),
            }
        }
    }

    /// The destination's queue is back under half the budget (never for a pinned flow).
    fn dest_has_room(&self) -> bool {
        !self.flow.pinned && sys::outq(self.dst().fd).is_ok_and(|q| q <= self.budget() / 2)
    }

    /// The verdict redirects again and nothing passed is left to copy.
    fn resumed(&self) -> bool {
        !self.flow.pinned && self.slot.mode() != MODE_PASS && self.slot.passed() == self.consumed
    }

    /// Back to redirecting. The verdict may only redirect once every passed byte is copied,
    /// which a source that keeps sending never allows; so new bytes are held in the source's
    /// TCP queue (a high SO_RCVLOWAT keeps the verdict from running, and the TCP window
    /// backpressures the sender) while the last passed bytes are copied, then the direction is
    /// switched and released: the verdict runs over the held bytes and redirects them.
    async fn hand_back(&mut self) -> Result<(), DirEnd> {
        if self.resumed() {
            return Ok(());
        }
        let fd = self.src().fd;
        let clamp = sys::window_clamp(fd).ok();
        let _ = sys::set_rcvlowat(fd, HOLD);
        let drained = self.drain_passed().await;
        if drained.is_ok() && !self.eof && self.slot.passed() == self.consumed {
            // Fresh acknowledgements first, or the verdict would stop right away again.
            if let Ok(info) = sys::tcp_info(self.dst().fd) {
                self.slot.set_acked(info.bytes_acked);
            }
            // Writing RESUME over a concurrent switch of the verdict is harmless: either way
            // it redirects only once every passed byte is copied.
            if self.slot.mode() != MODE_REDIRECT {
                self.slot.set_mode(MODE_RESUME);
            }
        }
        let _ = sys::set_rcvlowat(fd, 1);
        if let Some(c) = clamp {
            let _ = sys::set_window_clamp(fd, c);
        }
        drained
    }

    /// Copies passed bytes until the source has none ready (or sent its FIN).
    async fn drain_passed(&mut self) -> Result<(), DirEnd> {
        loop {
            match sys::recv(self.src().fd, &mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => self.write_dest(n).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(DirEnd::SourceFailed),
            }
        }
    }

    /// Until the source has bytes (or its FIN), with a bound so that a resume is retried.
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
                Ok(m) => off += m,
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

    /// The budget bounds this direction in the userspace leg too: the destination's send
    /// queue plus what is about to be written stays within it.
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
        let target = self
            .slot
            .dest_base()
            .wrapping_add(self.slot.redirected())
            .wrapping_add(self.consumed);
        let start = Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            let written = sys::bytes_written(self.dst().fd).map_err(|_| DirEnd::DestFailed)?;
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

    /// The source sent FIN (or is gone). Make sure the verdict has seen every byte before it,
    /// copy what was passed, wait until the destination holds everything, then pass the FIN.
    async fn finish(&mut self) -> DirEnd {
        if self.events().is_some_and(|e| e.of(self.s) & ERR != 0) {
            return DirEnd::SourceFailed;
        }
        if !self.flow.pinned {
            if let Err(end) = self.wait_verdict_done().await {
                return end;
            }
        }
        // Read to EOF: passed bytes still queued on the source are copied first (a passed
        // packet may still be on its way to the socket's queue, hence the loop on the count).
        let start = Instant::now();
        while !self.eof || (!self.flow.pinned && self.slot.passed() != self.consumed) {
            self.eof = false;
            if let Err(end) = self.copy_to_eof().await {
                return end;
            }
            if start.elapsed() > DRAIN_LIMIT {
                return DirEnd::SourceFailed;
            }
        }
        if let Err(end) = self.wait_redirected_sent().await {
            return end;
        }
        match self.dst().poll.shutdown(std::net::Shutdown::Write) {
            Ok(()) => DirEnd::Eof,
            Err(_) => DirEnd::DestFailed,
        }
    }

    /// Copies until the source reports EOF.
    async fn copy_to_eof(&mut self) -> Result<(), DirEnd> {
        self.wait_redirected_sent().await?;
        loop {
            match sys::recv(self.src().fd, &mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    if self.slot.passed() != self.consumed && !self.flow.pinned {
                        compio::time::sleep(Duration::from_millis(1)).await;
                    }
                    return Ok(());
                }
                Ok(n) => self.write_dest(n).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_source().await?,
                Err(_) => return Err(DirEnd::SourceFailed),
            }
        }
    }

    /// After the FIN, until the verdict has run over every byte received before it: the
    /// socket counts received bytes (and the FIN) as they arrive, the verdict as it runs.
    async fn wait_verdict_done(&self) -> Result<(), DirEnd> {
        let before = self.flow.consumed_before[self.s & 1];
        let start = Instant::now();
        loop {
            let received = sys::tcp_info(self.src().fd)
                .map_err(|_| DirEnd::SourceFailed)?
                .bytes_received;
            let seen = before + self.slot.redirected() + self.slot.passed();
            // `received` counts the FIN; without one (a reset) nothing more is owed anyway.
            if received <= seen + 1 {
                return Ok(());
            }
            if start.elapsed() > DRAIN_LIMIT {
                return Err(DirEnd::SourceFailed);
            }
            compio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

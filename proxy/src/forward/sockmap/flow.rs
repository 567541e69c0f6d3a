//! One flow on the sockmap engine: registration of the pair (routes, slots, the two socket
//! hashes, the SO_RCVLOWAT nudge), parking and unparking a direction, the two directions under
//! the shared close protocol, and the removal of every map entry at the end.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::select;

use compio::net::TcpStream;
use compio::runtime::fd::PollFd;
use socket2::Socket;

use proxy_ebpf::Route;

use super::dir::{sleep_or_never, Dir};
use super::guard::{self, Guard};
use super::slots::Slot;
use super::watch::Registration;
use super::{kernel, sys, Kernel};
use crate::forward::pair;
use crate::forward::{FlowParams, FlowStats, Forwarded, Paused, Progress, Resume};

/// One socket of the pair.
pub struct Side {
    pub poll: PollFd<Socket>,
    pub fd: RawFd,
    pub cookie: u64,
}

impl Side {
    fn new(stream: &TcpStream) -> io::Result<Side> {
        let poll = stream.to_poll_fd()?;
        let fd = poll.as_raw_fd();
        let cookie = poll.cookie()?;
        Ok(Side { poll, fd, cookie })
    }
}

pub async fn forward(
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'_>,
) -> FlowStats {
    let fixed = Resume::default();
    crate::forward::ended(run(client, server, p, progress, &fixed).await)
}

/// As [`forward`], from `resume`; with a gate the flow may come to rest for a hand-over:
/// both directions parked, every redirected byte in its destination socket, then the map
/// entries removed as at the end of a flow, without closing the sockets (`Dir::rest`).
///
/// A plain function returning an `async move` block, for the reason `tcp::session::movable`
/// is one: an `async fn` would keep room for its arguments twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
pub fn run<'a>(
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'a>,
    resume: &'a Resume<'a>,
) -> impl std::future::Future<Output = Forwarded> + use<'a> {
    async move {
        // A resumed flow's idle time in the old process counts: its stamps start that far back.
        let start = sys::coarse_now_ns().saturating_sub(nanos(resume.idle_for));
        // Both sockets of a half-closed flow are past ESTABLISHED (one got its FIN, the
        // other sent ours), which the hashes refuse: its live direction is copied.
        let kernel = kernel().ok().filter(|_| resume.ended.is_none());
        // One binding from the start: `let registered = …; let Some(flow) = registered` kept
        // room for the flow twice in every flow's future (issue #14).
        let Some(mut flow) = kernel.and_then(|k| {
            match Flow::register(k, &client, &server, adopted(resume), start) {
                Ok(f) => Some(f),
                Err(e) => {
                    k.fallbacks.fetch_add(1, Ordering::Relaxed);
                    log::debug!("sockmap: flow not registered ({e}); copying it instead");
                    None
                }
            }
        }) else {
            // Boxed: inline, the copy engine's state would be held by every sockmap flow.
            return Box::pin(crate::forward::copy::run(
                client, server, p, progress, resume,
            ))
            .await;
        };
        let (up_slot, down_slot) = (flow.slot(0), flow.slot(1));
        let user_stamp = Cell::new(start);
        let reported = [Cell::new(0u64), Cell::new(0u64)];
        let mut up = Dir::new(&flow, up_slot, 0, &user_stamp, p.bufsize, resume.gate);
        let mut down = Dir::new(&flow, down_slot, 1, &user_stamp, p.bufsize, resume.gate);
        let end = {
            let stamps = Stamps {
                slots: [up_slot, down_slot],
                user: &user_stamp,
                progress,
                reported: &reported,
            };
            let watchdog = |limit| stamps.expired(limit);
            // Pinned here and lent (see `pair::run_gated`).
            let (up_run, down_run) = (pin!(up.run()), pin!(down.run()));
            let (gate, ended) = (resume.gate, resume.ended);
            pair::run_gated(up_run, down_run, &p.limits, watchdog, gate, ended).await
        };
        let end = match end {
            Ok(end) => end,
            Err(rested) => {
                for (i, total) in [up.moved(), down.moved()].into_iter().enumerate() {
                    progress.moved(i == 0, total.saturating_sub(reported[i].get()));
                }
                let (bytes_up, bytes_down) = (up.moved(), down.moved());
                let last = [up_slot.last_ns(), down_slot.last_ns(), user_stamp.get()]
                    .into_iter()
                    .max()
                    .unwrap_or(0);
                drop((up, down));
                // Both sources parked, every redirected byte in its destination: the entries
                // go as at a flow's end, and the sockets stay open for the next process.
                flow.unregister();
                return Forwarded::Paused(Paused {
                    client,
                    server,
                    bytes_up: bytes_up + resume.bytes_up,
                    bytes_down: bytes_down + resume.bytes_down,
                    idle_for: Duration::from_nanos(sys::coarse_now_ns().saturating_sub(last)),
                    ended: rested.ended,
                });
            }
        };
        let stats = FlowStats {
            bytes_up: up.moved(),
            bytes_down: down.moved(),
            end,
        };
        // The rest of the bytes (the copied ones, the last redirected ones) reach the live rows
        // now, so the rows end on exactly the flow's totals.
        for (i, total) in [stats.bytes_up, stats.bytes_down].into_iter().enumerate() {
            progress.moved(i == 0, total.saturating_sub(reported[i].get()));
        }
        log::debug!(
            "sockmap flow {:?}: up {} redirected + {} copied ({} over budget, parked {} times, \
         {} overlapping bytes trimmed), down {} + {} ({}, {}, {})",
            end,
            up_slot.redirected(),
            stats.bytes_up - up_slot.redirected(),
            up_slot.overruns(),
            up.parks(),
            up_slot.trimmed(),
            down_slot.redirected(),
            stats.bytes_down - down_slot.redirected(),
            down_slot.overruns(),
            down.parks(),
            down_slot.trimmed(),
        );
        flow.k
            .trimmed
            .fetch_add(up_slot.trimmed() + down_slot.trimmed(), Ordering::Relaxed);
        drop((up, down));
        // Every byte is delivered (clean end) or the flow is being reset: the entries can go.
        flow.unregister();
        pair::apply_end(end, &client, &server);
        Forwarded::Ended(FlowStats {
            bytes_up: stats.bytes_up + resume.bytes_up,
            bytes_down: stats.bytes_down + resume.bytes_down,
            ..stats
        })
    }
}

/// A flow resumed from another process (binary upgrade) starts with both sources parked:
/// right after the pause its senders may retransmit over bytes already taken, which the copy
/// leg's reads skip and the verdict would have to trim; the copy leg unparks each side once
/// its queue is empty (`dir.rs`).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn adopted(resume: &Resume<'_>) -> bool {
    resume.bytes_up > 0 || resume.bytes_down > 0
}

/// A registered pair; its map entries and slots are removed when it is dropped.
pub struct Flow {
    pub k: &'static Kernel,
    /// 0 = client, 1 = server.
    pub sides: [Side; 2],
    /// Slot index of the direction whose source is side 0 (up) and side 1 (down).
    slots: [u32; 2],
    slot_refs: [Slot<'static>; 2],
    /// Bytes the proxy read from each side before the flow was registered.
    pub consumed_before: [u64; 2],
    in_targets: [bool; 2],
    /// Whether each side's received bytes go through the verdict (else the direction it
    /// sources is parked and copied in userspace) lives in `guard.rs`, under the direction's
    /// slot: the wake-up thread may park a direction too.
    routed: bool,
    pub reg: Option<Registration>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the slot table is full")]
    Full,
    #[error("a socket is no longer established")]
    NotEstablished,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Flow {
    /// `parked`: both sources start parked (their queues copied first, see `join`).
    fn register(
        k: &'static Kernel,
        client: &TcpStream,
        server: &TcpStream,
        parked: bool,
        start_ns: u64,
    ) -> Result<Flow, RegisterError> {
        let sides = [Side::new(client)?, Side::new(server)?];
        let (up, down) = k.slots.take_pair().ok_or(RegisterError::Full)?;
        let (Some(up_ref), Some(down_ref)) = (k.slots.get(up), k.slots.get(down)) else {
            k.slots.give_back(up);
            k.slots.give_back(down);
            return Err(RegisterError::Full);
        };
        let mut flow = Flow {
            k,
            sides,
            slots: [up, down],
            slot_refs: [up_ref, down_ref],
            consumed_before: [0; 2],
            in_targets: [false; 2],
            routed: false,
            reg: None,
        };
        // On any error below, dropping `flow` undoes what was done; nothing has touched the
        // sockets' bytes until the verdict is attached, the last step.
        flow.prepare(start_ns)?;
        flow.join(parked)?;
        Ok(flow)
    }

    /// The slot of the direction whose source is `side` (0 or 1).
    pub fn slot(&self, side: usize) -> Slot<'static> {
        self.slot_refs[side & 1]
    }

    /// Slots, routes and the event watch, before any socket is in a hash. `start_ns`: the
    /// flow's last activity so far (now, or earlier for a resumed flow).
    fn prepare(&mut self, start_ns: u64) -> Result<(), RegisterError> {
        let budget = self.k.budget.load(Ordering::Relaxed);
        for s in 0..2 {
            let (src, dst) = (&self.sides[s], &self.sides[1 - s]);
            if sys::tcp_info(src.fd)?.state != sys::TCP_ESTABLISHED {
                // A FIN already arrived: the hashes refuse such sockets.
                return Err(RegisterError::NotEstablished);
            }
            self.consumed_before[s] = sys::bytes_consumed(src.fd)?;
            let written = sys::bytes_written(dst.fd)?;
            self.slot(s).reset(budget, written, start_ns);
            if let Some(mut g) = guard::lock(self.slots[s]) {
                *g = Some(Guard {
                    cookie: src.cookie,
                    src_fd: src.fd,
                    dst_fd: dst.fd,
                    active: false,
                });
            }
        }
        for s in 0..2 {
            let route = Route {
                peer: self.sides[1 - s].cookie,
                slot: self.slots[s],
                _pad: 0,
            };
            self.routed = true;
            sys::map_update(self.k.routes, &self.sides[s].cookie, &route)?;
        }
        self.reg = Some(Registration::new(self.sides[0].fd, self.sides[1].fd)?);
        Ok(())
    }

    /// Both sockets into the target hash (no program there: their bytes are not touched),
    /// then into the verdict's hash, then the nudge that runs the verdict over bytes that
    /// arrived before. A socket the verdict's hash refuses starts parked.
    fn join(&mut self, parked: bool) -> Result<(), RegisterError> {
        for s in 0..2 {
            let fd = self.sides[s].fd as u32;
            sys::map_update(self.k.targets, &self.sides[s].cookie, &fd)?;
            self.in_targets[s] = true;
        }
        for s in 0..2 {
            // The proxy read from this socket before (an HTTP tunnel's head) and bytes are
            // queued: the first packet may be partly read, and the verdict would take it
            // whole. Start parked; the copy leg unparks once the queue is empty.
            if parked || (self.consumed_before[s] > 0 && sys::inq(self.sides[s].fd)? > 0) {
                continue;
            }
            if let Err(e) = self.unpark(s) {
                log::debug!("sockmap: side {s} starts parked ({e})");
            }
        }
        Ok(())
    }

    pub fn is_active(&self, side: usize) -> bool {
        guard::is_active(self.slots[side & 1])
    }

    /// Unparks the direction whose source is `side`: puts the socket back into the
    /// verdict's hash, and nudges TCP so that bytes waiting in its queue go through the
    /// verdict, in order.
    pub fn unpark(&self, side: usize) -> io::Result<()> {
        let s = &self.sides[side & 1];
        let fd = s.fd as u32;
        {
            // Held across the update: the wake-up thread parks only what it saw active.
            let mut g = guard::lock(self.slots[side & 1]).ok_or_else(no_guard)?;
            let g = g.as_mut().ok_or_else(no_guard)?;
            sys::map_update(self.k.active, &s.cookie, &fd)?;
            g.active = true;
        }
        sys::set_rcvlowat(s.fd, 1)
    }

    /// Parks the direction whose source is `side`: takes the socket out of the verdict's
    /// hash (under the socket's lock, never a plain delete: see `park`). Its psock stays (it
    /// is still a target), so bytes the peer redirected to it keep flowing out.
    pub async fn park(&self, side: usize) -> io::Result<()> {
        let s = &self.sides[side & 1];
        let old = sys::squeeze_window(s.fd);
        let parked = self.k.park(s.cookie, s.fd).await;
        sys::release_window(s.fd, old);
        parked?;
        guard::set_active(self.slots[side & 1], false);
        Ok(())
    }

    /// Removes the routes and both sockets from both hashes, and gives the slots back.
    /// Idempotent.
    pub fn unregister(&mut self) {
        if self.routed {
            for side in &self.sides {
                let _ = sys::map_delete(self.k.routes, &side.cookie);
            }
            self.routed = false;
        }
        for s in 0..2 {
            // Cleared before the descriptors close (the wake-up thread uses them only under
            // the entry's lock).
            let was_active = guard::lock(self.slots[s])
                .and_then(|mut g| g.take())
                .is_some_and(|g| g.active);
            if was_active {
                let _ = sys::map_delete(self.k.active, &self.sides[s].cookie);
            }
            if std::mem::take(&mut self.in_targets[s]) {
                let _ = sys::map_delete(self.k.targets, &self.sides[s].cookie);
            }
        }
        self.reg = None;
        for s in std::mem::replace(&mut self.slots, [u32::MAX; 2]) {
            if s != u32::MAX {
                self.k.slots.give_back(s);
            }
        }
    }
}

fn no_guard() -> io::Error {
    io::Error::other("the direction's slot is not registered")
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Last activity of a flow: the program's per-direction stamps and the proxy's own. Its
/// watchdog also passes the program's redirected-byte counters on to the live rows.
struct Stamps<'a> {
    slots: [Slot<'static>; 2],
    user: &'a Cell<u64>,
    progress: Progress<'a>,
    /// Bytes per direction already passed on to `progress`.
    reported: &'a [Cell<u64>; 2],
}

/// How often a running flow's redirected bytes reach the stats rows.
const REPORT_EVERY: Duration = Duration::from_secs(1);

impl Stamps<'_> {
    fn last(&self) -> u64 {
        self.slots
            .iter()
            .map(Slot::last_ns)
            .chain([self.user.get()])
            .max()
            .unwrap_or(0)
    }

    /// Passes on what the program redirected since the last report; whether there was any.
    fn report(&self) -> bool {
        let mut any = false;
        for (i, slot) in self.slots.iter().enumerate() {
            let now = slot.redirected();
            let before = self.reported[i].replace(now.max(self.reported[i].get()));
            self.progress.moved(i == 0, now.saturating_sub(before));
            any |= now > before;
        }
        any
    }

    /// Resolves once nothing moved for `limit`; never without a limit. While bytes move it
    /// wakes every [`REPORT_EVERY`] to report them. Once a report finds nothing new and the
    /// flow has been quiet that long, it sleeps until the limit alone, so an idle flow costs
    /// no wake-up a second (issue #14), and looks again as soon as a byte moves.
    async fn expired(&self, limit: Option<Duration>) {
        let limit = limit.map(nanos);
        loop {
            let moved = self.report();
            let last = self.last();
            let now = sys::coarse_now_ns();
            // The coarse clock moves by jiffies; a few ms late is within HAProxy's accuracy.
            let wait = match limit.map(|l| last.saturating_add(l)) {
                Some(deadline) if now >= deadline => return,
                Some(deadline) => Some(Duration::from_nanos(deadline - now) + LATE),
                None => None,
            };
            let quiet = !moved && now.saturating_sub(last) >= nanos(REPORT_EVERY);
            let sleep = if quiet {
                wait
            } else {
                Some(wait.map_or(REPORT_EVERY, |w| w.min(REPORT_EVERY)))
            };
            // One await point for both cases: each would take its own room in every flow's
            // future (issue #14).
            let sleep = pin!(sleep_or_never(sleep));
            let _ = select(sleep, pin!(self.moved_since(last, quiet))).await;
        }
    }

    /// Once `quiet`, resolves when a byte moved after `last`; never otherwise. It registers
    /// no waker of its own: it is polled whenever the flow's task is, which a direction's
    /// first packet after a quiet spell wakes (`dir.rs`; `pair.rs` polls the watchdog beside
    /// both directions).
    fn moved_since(&self, last: u64, quiet: bool) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |_| {
            if !quiet {
                return Poll::Pending;
            }
            let redirected = self.slots.iter().map(Slot::redirected);
            let unreported = redirected
                .zip(self.reported)
                .any(|(r, seen)| r > seen.get());
            if unreported || self.last() != last {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// Slack added to a deadline on the coarse clock.
const LATE: Duration = Duration::from_millis(4);

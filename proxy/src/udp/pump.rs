//! The forwarding loop of one `udp-lb` section, on a thread of its own: an epoll set over
//! the section's `dgram-bind` sockets and every flow's server socket, batched reads
//! (`recvmmsg`) and writes (`sendmmsg`), and a sweep that ends idle flows.
//!
//! One thread and one socket per bind, so every datagram of a client is read by the same
//! thread in the order the kernel queued it: a flow cannot be split between workers, which
//! is what breaks SRT behind nginx's multi-worker UDP proxy (no SO_REUSEPORT here, so no
//! steering program is needed).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::batch::{send_batch, RecvBatch};
use super::flow::{record, Flow, FlowLine};
use super::table::FlowTable;
use super::UdpLb;
use crate::counters::Counters;
use crate::log::{Cause, Phase, TermState};
use crate::upstream::PickContext;

/// Epoll tokens from here on are flow slots; below are `dgram-bind` sockets.
const FLOW_TOKEN: u64 = 1 << 32;
/// Batches taken from one socket before the others get their turn.
const ROUNDS: usize = 8;
/// How long a full table refuses newcomers without searching again, after a search found
/// every flow active: a flood then costs one search per period, not one per datagram.
const FULL_BACKOFF: Duration = Duration::from_millis(50);

/// At most one summary line of quietly reclaimed flows per this period.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// Ended by the idle timeout (`timeout client`).
const EXPIRED: TermState = TermState::new(Cause::ClientTimeout, Phase::Data);
/// Reclaimed for a newcomer at `maxconn`, or ended by a stop.
const RECLAIMED: TermState = TermState::new(Cause::Proxy, Phase::Data);
/// Its server went DOWN or into maintenance: the client's next datagram opens a flow on a
/// server that is up.
const SERVER_GONE: TermState = TermState::new(Cause::Server, Phase::Data);

pub struct Pump {
    lb: Arc<UdpLb>,
    epoll: Epoll,
    binds: Vec<std::net::UdpSocket>,
    table: FlowTable<Flow>,
    rx: RecvBatch,
    stop: Arc<AtomicBool>,
    last_sweep: Instant,
    full_until: Option<Instant>,
    /// Flows their server never answered, reclaimed at `maxconn` since the last summary line:
    /// a flood of new source ports would otherwise turn into a log line per datagram.
    reclaimed_quietly: u64,
    last_summary: Instant,
}

impl Pump {
    pub fn new(
        lb: Arc<UdpLb>,
        binds: Vec<std::net::UdpSocket>,
        stop: Arc<AtomicBool>,
    ) -> nix::Result<Pump> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for (i, b) in binds.iter().enumerate() {
            epoll.add(b, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
        }
        Ok(Pump {
            lb,
            epoll,
            binds,
            table: FlowTable::default(),
            rx: RecvBatch::default(),
            stop,
            last_sweep: Instant::now(),
            full_until: None,
            reclaimed_quietly: 0,
            last_summary: Instant::now(),
        })
    }

    pub fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); 64];
        let tick = self.sweep_every();
        let tick_ms = u16::try_from(tick.as_millis()).unwrap_or(1000);
        while !self.stop.load(Ordering::Relaxed) {
            let n = match self.epoll.wait(&mut events, tick_ms) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    log::error!("udp-lb {}: epoll: {e}; forwarding stops", self.lb.name);
                    break;
                }
            };
            for ev in events.iter().take(n) {
                match ev.data() {
                    t if t < FLOW_TOKEN => self.read_clients(t as usize),
                    t => self.read_server((t - FLOW_TOKEN) as usize),
                }
            }
            if self.last_sweep.elapsed() >= tick {
                self.sweep(Instant::now());
            }
        }
        for slot in self.table.slots() {
            self.end(slot, RECLAIMED);
        }
    }

    /// A quarter of the idle timeout, within 100 ms … 1 s: flows end at most a quarter late.
    fn sweep_every(&self) -> Duration {
        (self.lb.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    fn drop_one(&self) {
        Counters::bump(&self.lb.counters.datagrams_dropped);
    }

    /// Datagrams from clients on bind `bind`: each to its flow's server, a new flow for a
    /// new address and port.
    fn read_clients(&mut self, bind: usize) {
        for _ in 0..ROUNDS {
            let Some(socket) = self.binds.get(bind) else {
                return;
            };
            let n = match self.rx.recv(socket.as_fd()) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    log::warn!("udp-lb {}: receive: {e}", self.lb.name);
                    return;
                }
            };
            let now = Instant::now();
            // Consecutive datagrams of one flow leave in one sendmmsg.
            let mut run: Option<usize> = None;
            let mut pending: Vec<usize> = Vec::with_capacity(n);
            for i in 0..n {
                let Some((Some(from), _, cut)) = self.rx.get(i) else {
                    self.drop_one();
                    continue;
                };
                if cut {
                    self.drop_one();
                    continue;
                }
                let Some(slot) = self.flow_of(from, bind, now) else {
                    self.drop_one();
                    continue;
                };
                if run != Some(slot) {
                    if let Some(prev) = run {
                        self.forward_to_server(prev, &pending, now);
                    }
                    pending.clear();
                    run = Some(slot);
                }
                pending.push(i);
            }
            if let Some(prev) = run {
                self.forward_to_server(prev, &pending, now);
            }
        }
    }

    /// The flow of `client`, opened if new; `None` when none can be (no server up, the
    /// flow limit with every flow active, no socket).
    fn flow_of(&mut self, client: SocketAddr, bind: usize, now: Instant) -> Option<usize> {
        if let Some(slot) = self.table.find(&client) {
            return Some(slot);
        }
        if self.table.len() >= self.lb.max_flows && !self.make_room(now) {
            return None;
        }
        let server = self
            .lb
            .set
            .pick_server(PickContext::new(client.ip(), &[]))?;
        let flow = match Flow::open(client, bind, server.claim(), now) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("udp-lb {}: no socket for a new flow: {e}", self.lb.name);
                return None;
            }
        };
        let slot = self.table.insert(client, flow);
        let token = FLOW_TOKEN + slot as u64;
        let registered = self.table.get(slot).map(|(_, f)| {
            self.epoll
                .add(&f.socket, EpollEvent::new(EpollFlags::EPOLLIN, token))
        });
        if let Some(Err(e)) = registered {
            log::warn!("udp-lb {}: cannot watch a new flow: {e}", self.lb.name);
            self.table.remove(slot);
            return None;
        }
        self.lb.counters.open_detached();
        self.lb.set.stats.traffic.open_detached();
        Some(slot)
    }

    /// Ends the oldest idle flow to make room for a new one; `false` when every flow is
    /// active (the newcomer is then dropped, never an established stream).
    fn make_room(&mut self, now: Instant) -> bool {
        if self.full_until.is_some_and(|t| now < t) {
            return false;
        }
        match self.table.oldest_idle(|f| f.is_active(now)) {
            Some(slot) => {
                self.end(slot, RECLAIMED);
                true
            }
            None => {
                self.full_until = Some(now + FULL_BACKOFF);
                false
            }
        }
    }

    fn forward_to_server(&mut self, slot: usize, datagrams: &[usize], now: Instant) {
        let Some((_, flow)) = self.table.get_mut(slot) else {
            return;
        };
        let data: Vec<&[u8]> = datagrams
            .iter()
            .filter_map(|i| self.rx.get(*i).map(|(_, d, _)| d))
            .collect();
        // A refused send counts as drops below: UDP may lose, and the next datagram retries.
        let sent = send_batch(flow.socket.as_fd(), &data, &flow.server_sa).unwrap_or_default();
        let bytes: u64 = data.iter().take(sent).map(|d| d.len() as u64).sum();
        let sent = sent as u64;
        let lost = data.len() as u64 - sent;
        flow.to_server.add(sent, bytes);
        flow.dropped += lost;
        flow.last_seen = now;
        let server = &flow.server.server.stats.traffic;
        for c in [&*self.lb.counters, &self.lb.set.stats.traffic, server] {
            c.datagrams_to_server(sent, bytes);
            c.datagrams_dropped.fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// Datagrams on a flow's server socket: the server's go back to the client from the
    /// bind address it wrote to; anyone else's are dropped and counted.
    fn read_server(&mut self, slot: usize) {
        for _ in 0..ROUNDS {
            let Some((_, flow)) = self.table.get_mut(slot) else {
                return;
            };
            let n = match self.rx.recv(flow.socket.as_fd()) {
                Ok(0) => return,
                Ok(n) => n,
                Err(_) => return, // an ICMP error queued on the socket; the sweep decides
            };
            let mut data: Vec<&[u8]> = Vec::with_capacity(n);
            let mut strangers = 0u64;
            for i in 0..n {
                match self.rx.get(i) {
                    Some((Some(from), d, false)) if from == flow.server_addr => data.push(d),
                    _ => strangers += 1,
                }
            }
            let Some(bind) = self.binds.get(flow.bind) else {
                return;
            };
            let sent = send_batch(bind.as_fd(), &data, &flow.client_sa).unwrap_or(0);
            let bytes: u64 = data.iter().take(sent).map(|d| d.len() as u64).sum();
            let lost = strangers + (data.len() - sent) as u64;
            flow.to_client.add(sent as u64, bytes);
            flow.dropped += lost;
            if !data.is_empty() {
                flow.answered = true;
                flow.last_seen = Instant::now();
            }
            let server = &flow.server.server.stats.traffic;
            // A flow's drops count on its server's and backend's rows too: a stranger
            // aiming at one node's flows shows there.
            for c in [&*self.lb.counters, &self.lb.set.stats.traffic, server] {
                c.datagrams_to_client(sent as u64, bytes);
                c.datagrams_dropped.fetch_add(lost, Ordering::Relaxed);
            }
        }
    }

    /// Ends flows idle for `timeout client`, and flows whose server is no longer usable.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        for slot in self.table.slots() {
            let Some((_, flow)) = self.table.get(slot) else {
                continue;
            };
            if flow.idle_for(now) >= self.lb.idle {
                self.end(slot, EXPIRED);
            } else if !flow.server.server.is_usable() {
                self.end(slot, SERVER_GONE);
            }
        }
        self.table.compact();
        if self.reclaimed_quietly > 0 && now.duration_since(self.last_summary) >= SUMMARY_EVERY {
            log::warn!(
                "udp-lb {}: {} flow(s) never answered by their server reclaimed at maxconn {} \
                 (a flood of new source ports?); established flows are kept",
                self.lb.name,
                self.reclaimed_quietly,
                self.lb.max_flows
            );
            self.reclaimed_quietly = 0;
            self.last_summary = now;
        }
    }

    fn end(&mut self, slot: usize, term: TermState) {
        let Some((client, flow)) = self.table.remove(slot) else {
            return;
        };
        let _ = self.epoll.delete(&flow.socket);
        self.lb.counters.close_detached();
        self.lb.set.stats.traffic.close_detached();
        if term == RECLAIMED && !flow.answered && !self.stop.load(Ordering::Relaxed) {
            self.reclaimed_quietly += 1;
            return;
        }
        // The server's own count drops with the claim, after the line shows it.
        let counts = (self.table.len() + 1, flow.server.server.current() as usize);
        let line = FlowLine {
            record: record(client, &flow, &self.lb.name, term, counts),
            flow: &flow,
        };
        self.lb.access_log.send_flow_line(line);
    }
}

//! The RTMP-like ingest load: N long flows, each sending a ~4 KiB chunk every
//! `chunk * 8 / rate` seconds (a publisher's paced audio/video messages), reading the backend's
//! small acks back. One epoll thread drives all flows; start phases are spread over one interval
//! so the aggregate is smooth, as with many independent publishers.
//!
//! Latency figure: the time from queueing the chunk that completes an ack window to reading
//! that ack, i.e. one round trip through the hop both ways under load.

use super::backend::{ACK_EVERY, ACK_LEN};
use super::Threads;
use crate::error::{BenchError, Result};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CHUNK: usize = 4096;
static PAYLOAD: [u8; CHUNK] = [0x5a; CHUNK];

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub flows: usize,
    pub mbit_per_flow: f64,
}

impl Params {
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(CHUNK as f64 * 8.0 / (self.mbit_per_flow * 1e6))
    }
}

/// Shared with the orchestrator.
#[derive(Debug, Default)]
pub struct Shared {
    pub connected: AtomicU64,
    /// Payload bytes written to sockets (what the backend must eventually receive).
    pub sent: AtomicU64,
    pub acks: AtomicU64,
    pub errors: AtomicU64,
    /// Flows still open when the teardown deadline passed (their bytes may still be on the way).
    pub unfinished: AtomicU64,
    /// Largest backlog of unsent bytes seen on one flow (the hop not keeping up).
    pub max_backlog: AtomicU64,
    /// While set, ack latencies are recorded (the measurement window).
    pub recording: AtomicBool,
    pub latencies_us: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

pub type Client = Threads<Shared>;

impl Client {
    pub fn start(target: SocketAddr, p: Params) -> Result<Client> {
        let mut client = Threads::new(Shared::default(), |s| &s.stop);
        client.spawn("bench-ingest", "ingest", move |s| {
            Driver::new(target, p, s).run()
        })?;
        Ok(client)
    }

    /// Waits until every flow is connected (or failed), at most `limit`.
    pub fn wait_connected(&self, flows: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let up = self.shared.connected.load(Relaxed) as usize;
            let failed = self.shared.errors.load(Relaxed) as usize;
            if failed > 0 {
                return Err(BenchError::Run(format!(
                    "{failed} ingest flows failed to connect"
                )));
            }
            if up >= flows {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(BenchError::Run(format!(
            "only {} of {flows} ingest flows connected within {limit:?}",
            self.shared.connected.load(Relaxed)
        )))
    }

    /// Stops sending, flushes, sends FINs, waits for the backend's EOFs; returns bytes sent.
    pub fn finish(mut self) -> u64 {
        self.stop();
        self.shared.sent.load(Relaxed)
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    Connecting,
    Sending,
    /// FIN sent; reading until the backend closes.
    Draining,
    Closed,
}

struct Flow {
    stream: TcpStream,
    state: State,
    /// The command byte is still to be written.
    cmd_pending: bool,
    /// Payload bytes queued but not yet written.
    backlog: usize,
    queued: u64,
    ack_bytes: u64,
    /// (window end offset, when the chunk completing it was queued), oldest first.
    pending_acks: VecDeque<(u64, Instant)>,
}

struct Driver {
    poll: Poll,
    flows: Vec<Flow>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    interval: Duration,
    shared: Arc<Shared>,
    to_connect: usize,
    target: SocketAddr,
}

/// A starved hop (a busy machine) can hold seconds of backlog for 1000 flows.
const TEARDOWN: Duration = Duration::from_secs(10);

impl Driver {
    fn new(target: SocketAddr, params: Params, shared: Arc<Shared>) -> Driver {
        Driver {
            poll: Poll::new().expect("epoll_create"),
            flows: Vec::with_capacity(params.flows),
            timers: BinaryHeap::new(),
            interval: params.interval(),
            shared,
            to_connect: params.flows,
            target,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(4096);
        // Connect in batches: a thousand SYNs at once overflow a small accept queue and the
        // retransmitted SYNs would stretch the ramp by a second.
        while !self.shared.stop.load(Relaxed) {
            self.connect_batch(100);
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    self.shared.errors.fetch_add(1, Relaxed);
                    return;
                }
            }
            for ev in events.iter() {
                self.on_event(ev.token().0);
            }
            self.send_due();
        }
        self.teardown(&mut events);
    }

    fn connect_batch(&mut self, n: usize) {
        for _ in 0..n.min(self.to_connect) {
            self.to_connect -= 1;
            match TcpStream::connect(self.target) {
                Ok(mut stream) => {
                    let token = Token(self.flows.len());
                    let both = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, both)
                        .is_err()
                    {
                        self.shared.errors.fetch_add(1, Relaxed);
                        continue;
                    }
                    self.flows.push(Flow {
                        stream,
                        state: State::Connecting,
                        cmd_pending: true,
                        backlog: 0,
                        queued: 0,
                        ack_bytes: 0,
                        pending_acks: VecDeque::new(),
                    });
                }
                Err(_) => {
                    self.shared.errors.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn next_timeout(&self) -> Duration {
        if self.to_connect > 0 {
            return Duration::from_millis(1);
        }
        match self.timers.peek() {
            Some(Reverse((due, _))) => due
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
            None => Duration::from_millis(20),
        }
    }

    fn on_event(&mut self, i: usize) {
        if self.flows[i].state == State::Connecting {
            self.on_connected(i);
        }
        self.read_acks(i);
        self.flush(i);
    }

    fn on_connected(&mut self, i: usize) {
        let f = &mut self.flows[i];
        // A non-blocking connect has finished when the peer address is known.
        match f.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected => {
                if let Ok(Some(_)) | Err(_) = f.stream.take_error() {
                    self.fail(i);
                }
                return;
            }
            Err(_) => return self.fail(i),
        }
        let _ = f.stream.set_nodelay(true);
        f.state = State::Sending;
        self.shared.connected.fetch_add(1, Relaxed);
        // Spread the flows' phases over one interval, deterministically.
        let phase = self.interval.mul_f64((i % 997) as f64 / 997.0);
        self.timers.push(Reverse((Instant::now() + phase, i)));
    }

    fn fail(&mut self, i: usize) {
        let f = &mut self.flows[i];
        if f.state != State::Closed {
            f.state = State::Closed;
            let _ = self.poll.registry().deregister(&mut f.stream);
            self.shared.errors.fetch_add(1, Relaxed);
        }
    }

    fn send_due(&mut self) {
        let now = Instant::now();
        let recording = self.shared.recording.load(Relaxed);
        while let Some(&Reverse((due, i))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            if self.flows[i].state != State::Sending {
                continue;
            }
            self.queue_chunk(i, now, recording);
            self.flush(i);
            // Keep the schedule (due + interval), so a late wake-up does not lower the rate.
            self.timers.push(Reverse((due + self.interval, i)));
        }
    }

    fn queue_chunk(&mut self, i: usize, now: Instant, recording: bool) {
        let f = &mut self.flows[i];
        let before = f.queued;
        f.queued += CHUNK as u64;
        f.backlog += CHUNK;
        let window_end = (before / ACK_EVERY + 1) * ACK_EVERY;
        if f.queued >= window_end && recording {
            f.pending_acks.push_back((window_end, now));
        }
        self.shared.max_backlog.fetch_max(f.backlog as u64, Relaxed);
    }

    fn flush(&mut self, i: usize) {
        let f = &mut self.flows[i];
        if !matches!(f.state, State::Sending | State::Draining) {
            return;
        }
        while f.cmd_pending {
            match f.stream.write(b"I") {
                Ok(1) => f.cmd_pending = false,
                Ok(_) => return,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i),
            }
        }
        while f.backlog > 0 {
            match f.stream.write(&PAYLOAD[..f.backlog.min(CHUNK)]) {
                Ok(n) => {
                    f.backlog -= n;
                    self.shared.sent.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i),
            }
        }
    }

    fn read_acks(&mut self, i: usize) {
        let mut buf = [0u8; 4096];
        loop {
            let f = &mut self.flows[i];
            if matches!(f.state, State::Connecting | State::Closed) {
                return;
            }
            match f.stream.read(&mut buf) {
                Ok(0) => {
                    if f.state == State::Draining {
                        f.state = State::Closed;
                        let _ = self.poll.registry().deregister(&mut f.stream);
                    } else {
                        self.fail(i);
                    }
                    return;
                }
                Ok(n) => self.on_ack_bytes(i, n as u64),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i),
            }
        }
    }

    fn on_ack_bytes(&mut self, i: usize, n: u64) {
        let f = &mut self.flows[i];
        let acks_before = f.ack_bytes / ACK_LEN as u64;
        f.ack_bytes += n;
        let acks_now = f.ack_bytes / ACK_LEN as u64;
        self.shared.acks.fetch_add(acks_now - acks_before, Relaxed);
        let acked_upto = acks_now * ACK_EVERY;
        let now = Instant::now();
        let mut lat = Vec::new();
        while let Some(&(end, at)) = f.pending_acks.front() {
            if end > acked_upto {
                break;
            }
            f.pending_acks.pop_front();
            lat.push(now.duration_since(at).as_micros() as u64);
        }
        if !lat.is_empty() && self.shared.recording.load(Relaxed) {
            if let Ok(mut v) = self.shared.latencies_us.lock() {
                v.extend(lat);
            }
        }
    }

    /// Flush what is queued, FIN every flow, read until the backend closes: afterwards
    /// `sent` is exactly what the backend must have received.
    fn teardown(&mut self, events: &mut Events) {
        let deadline = Instant::now() + TEARDOWN;
        self.to_connect = 0;
        while Instant::now() < deadline {
            let mut open = 0;
            for i in 0..self.flows.len() {
                self.flush(i);
                let f = &mut self.flows[i];
                if f.state == State::Sending && f.backlog == 0 && !f.cmd_pending {
                    let _ = f.stream.shutdown(Shutdown::Write);
                    f.state = State::Draining;
                }
                if f.state == State::Connecting {
                    f.state = State::Closed;
                }
                if f.state != State::Closed {
                    open += 1;
                }
            }
            if open == 0 {
                return;
            }
            let _ = self.poll.poll(events, Some(Duration::from_millis(10)));
            for ev in events.iter() {
                self.read_acks(ev.token().0);
            }
        }
        let open = self
            .flows
            .iter()
            .filter(|f| f.state != State::Closed)
            .count();
        self.shared.unfinished.fetch_add(open as u64, Relaxed);
    }
}

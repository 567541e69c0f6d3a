//! The TCP backend every TCP scenario talks to (standing in for an Ant Media Server node):
//! one epoll loop on one thread, so its CPU cost is small, steady and the same whichever hop
//! sits in front of it.
//!
//! The first byte a client sends picks the behaviour, so one listener serves every scenario
//! and a readiness probe (a connection that sends nothing) is harmless:
//! * `I` ingest: read everything; every [`ACK_EVERY`] bytes answer an [`ACK_LEN`]-byte "ack"
//!   (the size of an RTMP Acknowledgement message: 12-byte header + 4-byte sequence number).
//! * `U` upload: read everything.
//! * `D` download: send as fast as the path takes it until told to stop, then FIN.
//! * `C` connection-rate: read a [`REQ_LEN`]-byte request, answer [`RESP_LEN`] bytes, close
//!   first (so TIME_WAIT lands on the server side, not on the load generator's ports).
//! * `E` echo: send every byte back, the `E` included (the idle scenario's flows echo a few
//!   bytes once, which proves the path through the hop, then stay silent).

use crate::error::{BenchError, Result};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub const ACK_EVERY: u64 = 64 * 1024;
pub const ACK_LEN: usize = 16;
/// Request size of the connection-rate scenario, including the `C`.
pub const REQ_LEN: usize = 64;
pub const RESP_LEN: usize = 64;

const LISTENER: Token = Token(usize::MAX);
const READ_BUF: usize = 256 * 1024;
static ZEROS: [u8; READ_BUF] = [0u8; READ_BUF];

/// What the backend saw; read by the orchestrator at window edges.
#[derive(Debug, Default)]
pub struct Counters {
    /// Payload bytes received on ingest and upload connections (after the command byte).
    pub received: AtomicU64,
    /// Bytes sent on download connections.
    pub sent: AtomicU64,
    /// Ingest/upload/download connections that reached EOF (the client's FIN).
    pub finished: AtomicU64,
    /// Connection-rate requests answered.
    pub answered: AtomicU64,
    /// Connections that failed with an error other than EOF.
    pub errors: AtomicU64,
    /// Connections that sent their command byte: flows, not the hops' health checks or the
    /// readiness probes, which connect and send nothing.
    pub flows: AtomicU64,
    /// Every connection accepted, health checks included.
    pub accepted: AtomicU64,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    stop_download: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Binds `ip:0` and starts the loop on a new thread (which inherits the caller's pinning).
    pub fn start(ip: std::net::IpAddr) -> Result<Backend> {
        Backend::start_on(SocketAddr::new(ip, 0))
    }

    /// As [`Backend::start`] on a given address (several backends on one port, as the
    /// servers DNS names share the port of a `server-template` line).
    pub fn start_on(at: SocketAddr) -> Result<Backend> {
        let listener =
            TcpListener::bind(at).map_err(|e| BenchError::io(format!("backend bind {at}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::io("backend local_addr", e))?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let stop_download = Arc::new(AtomicBool::new(false));
        let mut lp = Loop::new(
            listener,
            counters.clone(),
            stop.clone(),
            stop_download.clone(),
        )?;
        let thread = std::thread::Builder::new()
            .name("bench-backend".into())
            .spawn(move || lp.run())
            .map_err(|e| BenchError::io("spawn backend thread", e))?;
        Ok(Backend {
            addr,
            counters,
            stop,
            stop_download,
            thread: Some(thread),
        })
    }

    /// Download connections send their FIN after this.
    pub fn stop_downloads(&self) {
        self.stop_download.store(true, Relaxed);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unknown,
    Ingest,
    Upload,
    Download,
    Rate,
    Echo,
}

struct Conn {
    stream: TcpStream,
    mode: Mode,
    /// Payload bytes received (ingest, upload) or request bytes still expected (rate).
    received: u64,
    next_ack_at: u64,
    /// Bytes of acks (ingest) or of the answer (rate) not yet written.
    owed: usize,
    /// Echo: bytes received and not yet written back (empty, unallocated, otherwise).
    echo: Vec<u8>,
    fin_sent: bool,
}

struct Loop {
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    stop_download: Arc<AtomicBool>,
    buf: Vec<u8>,
}

impl Loop {
    fn new(
        mut listener: TcpListener,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
        stop_download: Arc<AtomicBool>,
    ) -> Result<Loop> {
        let poll = Poll::new().map_err(|e| BenchError::io("epoll_create", e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| BenchError::io("register listener", e))?;
        Ok(Loop {
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            counters,
            stop,
            stop_download,
            buf: vec![0u8; READ_BUF],
        })
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut downloads_stopped = false;
        while !self.stop.load(Relaxed) {
            // A short timeout so that the stop flags are seen promptly.
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(5))) {
                if e.kind() != ErrorKind::Interrupted {
                    eprintln!("bench: backend poll failed: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    Token(i) => self.serve(i),
                }
            }
            if !downloads_stopped && self.stop_download.load(Relaxed) {
                downloads_stopped = true;
                self.finish_downloads();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    self.counters.accepted.fetch_add(1, Relaxed);
                    let _ = stream.set_nodelay(true);
                    let i = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(i), interest)
                        .is_err()
                    {
                        self.free.push(i);
                        continue;
                    }
                    self.conns[i] = Some(Conn {
                        stream,
                        mode: Mode::Unknown,
                        received: 0,
                        next_ack_at: ACK_EVERY,
                        owed: 0,
                        echo: Vec::new(),
                        fin_sent: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // EMFILE and the like: leave the rest in the backlog for the next event.
                Err(_) => return,
            }
        }
    }

    /// Reads and writes what the connection allows; closes it when done.
    fn serve(&mut self, i: usize) {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        let outcome = drive(conn, &mut self.buf, &self.counters, &self.stop_download);
        if outcome != Outcome::Open {
            if outcome == Outcome::Failed {
                self.counters.errors.fetch_add(1, Relaxed);
            }
            self.close(i);
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free.push(i);
        }
    }

    fn finish_downloads(&mut self) {
        for c in self.conns.iter_mut().flatten() {
            if c.mode == Mode::Download && !c.fin_sent {
                c.fin_sent = true;
                let _ = c.stream.shutdown(Shutdown::Write);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Open,
    Done,
    Failed,
}

fn drive(conn: &mut Conn, buf: &mut [u8], counters: &Counters, stop_dl: &AtomicBool) -> Outcome {
    match read_side(conn, buf, counters) {
        Outcome::Open => {}
        other => return other,
    }
    if let Err(e) = write_side(conn, counters, stop_dl) {
        return if e.kind() == ErrorKind::BrokenPipe || e.kind() == ErrorKind::ConnectionReset {
            // A download client closing after our FIN, or an RST at teardown: not a failure.
            Outcome::Done
        } else {
            Outcome::Failed
        };
    }
    if conn.mode == Mode::Rate && conn.received == 0 && conn.owed == 0 {
        return Outcome::Done;
    }
    Outcome::Open
}

/// Reads until the socket is drained; returns Done at EOF.
fn read_side(conn: &mut Conn, buf: &mut [u8], counters: &Counters) -> Outcome {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => {
                if matches!(conn.mode, Mode::Ingest | Mode::Upload | Mode::Download) {
                    counters.finished.fetch_add(1, Relaxed);
                }
                return Outcome::Done;
            }
            Ok(n) => on_bytes(conn, &buf[..n], counters),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Outcome::Open,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Outcome::Done,
            Err(_) => return Outcome::Failed,
        }
    }
}

fn on_bytes(conn: &mut Conn, mut data: &[u8], counters: &Counters) {
    if conn.mode == Mode::Unknown {
        counters.flows.fetch_add(1, Relaxed);
        conn.mode = match data[0] {
            b'I' => Mode::Ingest,
            b'U' => Mode::Upload,
            b'D' => Mode::Download,
            b'C' => {
                conn.received = REQ_LEN as u64;
                Mode::Rate
            }
            b'E' => Mode::Echo,
            _ => Mode::Upload,
        };
        if !matches!(conn.mode, Mode::Rate | Mode::Echo) {
            data = &data[1..];
        }
    }
    match conn.mode {
        Mode::Ingest => {
            conn.received += data.len() as u64;
            counters.received.fetch_add(data.len() as u64, Relaxed);
            while conn.received >= conn.next_ack_at {
                conn.owed += ACK_LEN;
                conn.next_ack_at += ACK_EVERY;
            }
        }
        Mode::Upload => {
            counters.received.fetch_add(data.len() as u64, Relaxed);
        }
        Mode::Rate => {
            let before = conn.received;
            conn.received = conn.received.saturating_sub(data.len() as u64);
            if before > 0 && conn.received == 0 {
                conn.owed = RESP_LEN;
                counters.answered.fetch_add(1, Relaxed);
            }
        }
        Mode::Echo => conn.echo.extend_from_slice(data),
        Mode::Download | Mode::Unknown => {}
    }
}

fn write_side(conn: &mut Conn, counters: &Counters, stop_dl: &AtomicBool) -> std::io::Result<()> {
    while !conn.echo.is_empty() {
        match conn.stream.write(&conn.echo) {
            Ok(n) => {
                conn.echo.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    while conn.owed > 0 {
        match conn.stream.write(&ZEROS[..conn.owed.min(READ_BUF)]) {
            Ok(n) => conn.owed -= n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if conn.mode == Mode::Download && !conn.fin_sent && !stop_dl.load(Relaxed) {
        loop {
            match conn.stream.write(&ZEROS) {
                Ok(n) => {
                    counters.sent.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if stop_dl.load(Relaxed) {
                return Ok(());
            }
        }
    }
    Ok(())
}

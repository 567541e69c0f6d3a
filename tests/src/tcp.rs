//! Byte-exact TCP checks: a backend server (std threads) and client helpers that move known data
//! and compare SHA-256 digests at both ends, and that observe half-close, reset and idle close.
//!
//! Each connection starts with a 40-byte request header from the client (not counted in any
//! digest) that tells the server what to do and under which id to file its report, so a test
//! finds its own session among others (another test's, or a health check's, which sends no
//! header and is ignored).
//!
//! Data is a cheap position-dependent pattern: a 64 KiB random block per seed, with the chunk
//! and block number stamped every 512 bytes, so a dropped, repeated or reordered piece changes
//! the digest. Digests use `ring` (assembly, SHA-NI): the tests run unoptimised (`cargo test`),
//! where `sha2` hashes at ~30 MB/s (its SHA-NI path is intrinsics, which opt-level 0 does not
//! inline) and `ring` at ~1.5 GB/s; four digests of 1 GiB must fit in a one-minute test.

use ring::digest::{Context, SHA256};
use socket2::SockRef;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type Digest = [u8; 32];

const MAGIC: &[u8; 8] = b"E2ETCPv1";
const HEADER_LEN: usize = 40;
const CHUNK: usize = 64 * 1024;
/// No socket in these helpers blocks longer than this (a stuck test fails instead of hanging).
pub const IO_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Data

/// The data stream of one seed: deterministic, cheap to make, different at every position.
pub struct Pattern {
    seed: u64,
    base: Vec<u8>,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        let mut base = vec![0u8; CHUNK];
        let mut s = seed ^ 0x5DEE_CE66_D1CE_4E5B;
        for w in base.chunks_exact_mut(8) {
            // splitmix64
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            w.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        Pattern { seed, base }
    }

    /// Chunk `index` (64 KiB) of the stream into `buf` (`buf.len() == 64 KiB`).
    fn chunk(&self, index: u64, buf: &mut [u8]) {
        buf.copy_from_slice(&self.base);
        for (j, block) in buf.chunks_exact_mut(512).enumerate() {
            let stamp = (index * (CHUNK as u64 / 512) + j as u64) ^ self.seed;
            block[..8].copy_from_slice(&stamp.to_le_bytes());
        }
    }

    /// Writes the first `len` bytes of the stream to `w`; returns the digest of what was
    /// written, or the error and how many bytes went out before it.
    pub fn write_to(&self, w: &mut impl Write, len: u64) -> Result<Digest, (io::Error, u64)> {
        let mut buf = vec![0u8; CHUNK];
        let mut ctx = Context::new(&SHA256);
        let mut sent = 0u64;
        let mut index = 0u64;
        while sent < len {
            self.chunk(index, &mut buf);
            index += 1;
            let n = (len - sent).min(CHUNK as u64) as usize;
            if let Err(e) = w.write_all(&buf[..n]) {
                return Err((e, sent));
            }
            ctx.update(&buf[..n]);
            sent += n as u64;
        }
        Ok(finish(ctx))
    }

    /// The digest of the first `len` bytes, without sending them.
    pub fn digest(&self, len: u64) -> Digest {
        self.write_to(&mut io::sink(), len)
            .expect("io::sink never fails")
    }
}

fn finish(ctx: Context) -> Digest {
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of a byte string (for small data in tests).
pub fn sha256(data: &[u8]) -> Digest {
    let mut ctx = Context::new(&SHA256);
    ctx.update(data);
    finish(ctx)
}

/// How reading a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A clean EOF (the peer's FIN).
    Eof,
    /// ECONNRESET: the peer (or the proxy on its behalf) reset the connection.
    Reset,
    /// Any other error; `TimedOut`/`WouldBlock` mean the read limit passed with nothing.
    Error(ErrorKind),
    /// This side did not read.
    NotRead,
}

impl End {
    fn of(e: &io::Error) -> End {
        match e.kind() {
            ErrorKind::ConnectionReset => End::Reset,
            k => End::Error(k),
        }
    }
}

/// What one direction of a connection carried, seen by one end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub bytes: u64,
    pub sha256: Digest,
    pub end: End,
}

/// Reads `r` to EOF or error, hashing everything; `progress` sees the running byte count.
pub fn read_hashed(r: &mut impl Read, mut progress: impl FnMut(u64)) -> Transfer {
    let mut buf = vec![0u8; 256 * 1024];
    let mut ctx = Context::new(&SHA256);
    let mut bytes = 0u64;
    let end = loop {
        match r.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => {
                ctx.update(&buf[..n]);
                bytes += n as u64;
                progress(bytes);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break End::of(&e),
        }
    };
    Transfer {
        bytes,
        sha256: finish(ctx),
        end,
    }
}

/// Sets SO_LINGER {on, 0}: the next close sends a RST instead of a FIN.
pub fn set_reset_on_close(s: &TcpStream) {
    SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
}

// ---------------------------------------------------------------------------------------------
// Requests

/// What the server does on a connection, told by the client in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Sends `bytes` of the seed's pattern right away, while it reads; then shuts down its
    /// write side (FIN) and keeps reading until EOF.
    Concurrent { bytes: u64 },
    /// Reads until EOF first; then sends `bytes` and shuts down its write side.
    AfterEof { bytes: u64 },
    /// Sends `bytes`, then resets the connection (SO_LINGER 0 and close) without reading.
    ThenReset { bytes: u64 },
}

impl Reply {
    fn encode(self) -> (u8, u64) {
        match self {
            Reply::Concurrent { bytes } => (1, bytes),
            Reply::AfterEof { bytes } => (2, bytes),
            Reply::ThenReset { bytes } => (3, bytes),
        }
    }

    fn decode(kind: u8, bytes: u64) -> Option<Reply> {
        Some(match kind {
            1 => Reply::Concurrent { bytes },
            2 => Reply::AfterEof { bytes },
            3 => Reply::ThenReset { bytes },
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    id: u64,
    reply: Reply,
    /// Seed of the server's data.
    seed: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let (kind, bytes) = self.reply.encode();
        h[..8].copy_from_slice(MAGIC);
        h[8..16].copy_from_slice(&self.id.to_le_bytes());
        h[16] = kind;
        h[24..32].copy_from_slice(&bytes.to_le_bytes());
        h[32..40].copy_from_slice(&self.seed.to_le_bytes());
        h
    }

    fn decode(h: &[u8; HEADER_LEN]) -> Option<Header> {
        if &h[..8] != MAGIC {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(h[r].try_into().unwrap());
        Some(Header {
            id: u(8..16),
            reply: Reply::decode(h[16], u(24..32))?,
            seed: u(32..40),
        })
    }
}

fn next_id() -> u64 {
    static ID: AtomicU64 = AtomicU64::new(1);
    // Distinct across processes too, in case two test binaries share a server port by mistake.
    ((std::process::id() as u64) << 32) | ID.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Server

/// What the server saw on one connection, filed when both directions are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionReport {
    pub id: u64,
    /// What the server received after the header.
    pub received: Transfer,
    /// What the server sent; `end` is `Eof` when it sent all and shut down its write side
    /// cleanly, `Reset` when it reset on purpose (`ThenReset`), else the write error.
    pub sent: Transfer,
}

#[derive(Default)]
struct Shared {
    /// Bytes received so far, per live session.
    progress: HashMap<u64, u64>,
    done: HashMap<u64, SessionReport>,
}

/// A backend for byte-exact tests: accepts on `addr`, serves each connection on its own
/// thread as its header asks. Stopped on drop.
pub struct TcpServer {
    addr: SocketAddr,
    state: Arc<(Mutex<Shared>, Condvar)>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(addr: SocketAddr) -> TcpServer {
        let listener = TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("test server cannot listen on {addr}: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (st, sp, ac) = (state.clone(), stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                ac.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                std::thread::spawn(move || serve(conn, st));
            }
        });
        TcpServer {
            addr,
            state,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (with or without a header: health checks count too).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The report of session `id`, once the server is done with it. Panics after `limit`.
    pub fn report(&self, id: u64, limit: Duration) -> SessionReport {
        self.wait_for(
            limit,
            &format!("the server's report of session {id}"),
            |s| s.done.get(&id).copied(),
        )
    }

    /// Waits until session `id` has received at least `bytes`. Panics after `limit`.
    pub fn wait_received(&self, id: u64, bytes: u64, limit: Duration) {
        self.wait_for(
            limit,
            &format!("the server to receive {bytes} bytes on session {id}"),
            |s| {
                let got = s
                    .progress
                    .get(&id)
                    .copied()
                    .or(s.done.get(&id).map(|r| r.received.bytes))?;
                (got >= bytes).then_some(())
            },
        )
    }

    fn wait_for<T>(&self, limit: Duration, what: &str, f: impl Fn(&Shared) -> Option<T>) -> T {
        let (lock, cv) = &*self.state;
        let deadline = Instant::now() + limit;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = f(&g) {
                return v;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("gave up after {limit:?} waiting for {what}");
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, state: Arc<(Mutex<Shared>, Condvar)>) {
    let _ = conn.set_read_timeout(Some(IO_LIMIT));
    let _ = conn.set_write_timeout(Some(IO_LIMIT));
    let mut raw = [0u8; HEADER_LEN];
    let mut r = &conn;
    if r.read_exact(&mut raw).is_err() {
        return; // a health check or a probe: no header
    }
    let Some(h) = Header::decode(&raw) else {
        return;
    };
    let (lock, cv) = &*state;
    lock.lock()
        .unwrap_or_else(|e| e.into_inner())
        .progress
        .insert(h.id, 0);
    // Wake `wait_received(id, 0)`: the session exists from here on.
    cv.notify_all();
    let progress = |n: u64| {
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .progress
            .insert(h.id, n);
        cv.notify_all();
    };
    let pattern = Pattern::new(h.seed);
    let not_read = Transfer {
        bytes: 0,
        sha256: sha256(b""),
        end: End::NotRead,
    };
    let send = |bytes: u64, shutdown: bool| -> Transfer {
        let mut w = &conn;
        match pattern.write_to(&mut w, bytes) {
            Ok(sha256) => {
                let end = match shutdown.then(|| conn.shutdown(Shutdown::Write)) {
                    None | Some(Ok(())) => End::Eof,
                    Some(Err(e)) => End::of(&e),
                };
                Transfer { bytes, sha256, end }
            }
            Err((e, sent)) => Transfer {
                bytes: sent,
                sha256: [0; 32],
                end: End::of(&e),
            },
        }
    };
    let (received, sent) = match h.reply {
        Reply::Concurrent { bytes } => std::thread::scope(|s| {
            let writer = s.spawn(|| send(bytes, true));
            let mut r = &conn;
            let received = read_hashed(&mut r, progress);
            (received, writer.join().expect("writer thread"))
        }),
        Reply::AfterEof { bytes } => {
            let mut r = &conn;
            let received = read_hashed(&mut r, progress);
            let sent = if received.end == End::Eof {
                send(bytes, true)
            } else {
                not_read
            };
            (received, sent)
        }
        Reply::ThenReset { bytes } => {
            let mut sent = send(bytes, false);
            set_reset_on_close(&conn);
            if sent.end == End::Eof {
                sent.end = End::Reset;
            }
            (not_read, sent)
        }
    };
    drop(conn);
    let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
    g.progress.remove(&h.id);
    g.done.insert(
        h.id,
        SessionReport {
            id: h.id,
            received,
            sent,
        },
    );
    cv.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Client

/// A client connection that has sent its request header.
pub struct TcpClient {
    pub stream: TcpStream,
    pub id: u64,
    /// Seed of the data the server sends (`expected_from_server` checks against it).
    pub server_seed: u64,
}

impl TcpClient {
    /// Connects (to the proxy, or to the server directly) and sends the request header.
    pub fn connect(addr: SocketAddr, reply: Reply) -> TcpClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
        stream.set_write_timeout(Some(IO_LIMIT)).expect("timeout");
        let id = next_id();
        let server_seed = id.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let h = Header {
            id,
            reply,
            seed: server_seed,
        };
        (&stream)
            .write_all(&h.encode())
            .unwrap_or_else(|e| panic!("sending the request header to {addr}: {e}"));
        TcpClient {
            stream,
            id,
            server_seed,
        }
    }

    /// The seed of the data this client sends.
    pub fn client_seed(&self) -> u64 {
        self.id ^ 0xC1E7_0000_0000_0000
    }

    /// Sends `bytes` of the client's pattern; digest of what went out, or the error.
    pub fn send(&self, bytes: u64) -> Result<Digest, (io::Error, u64)> {
        let mut w = &self.stream;
        Pattern::new(self.client_seed()).write_to(&mut w, bytes)
    }

    /// Reads until EOF or error, hashing.
    pub fn read_all(&self) -> Transfer {
        let mut r = &self.stream;
        read_hashed(&mut r, |_| {})
    }

    /// The digest of the first `bytes` the server sends on this connection.
    pub fn expected_from_server(&self, bytes: u64) -> Digest {
        Pattern::new(self.server_seed).digest(bytes)
    }

    /// `shutdown(SHUT_WR)`: FIN to the peer; reading stays possible.
    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown(SHUT_WR)");
    }

    /// Closes with a RST (SO_LINGER 0).
    pub fn reset(self) {
        set_reset_on_close(&self.stream);
        drop(self.stream);
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("timeout");
    }
}

/// The result of `pump`: both ends' view of both directions.
#[derive(Debug, Clone, Copy)]
pub struct Pump {
    /// Digest of what the client sent (all `up` bytes).
    pub client_sent: Digest,
    /// What the client received.
    pub client_received: Transfer,
    /// Digest the client expected to receive (the server's pattern, `down` bytes).
    pub expected_down: Digest,
    pub server: SessionReport,
}

/// Opens one connection to `addr` (the proxy in front of `server`), sends `up` bytes while
/// receiving `down` bytes, then shuts down its write side and reads to EOF. Panics on a send
/// error; the caller compares digests (`Pump::assert_intact`).
pub fn pump(addr: SocketAddr, server: &TcpServer, up: u64, down: u64) -> Pump {
    let c = TcpClient::connect(addr, Reply::Concurrent { bytes: down });
    let (client_sent, client_received) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let d = c
                .send(up)
                .unwrap_or_else(|(e, n)| panic!("client send failed after {n} bytes: {e}"));
            c.shutdown_write();
            d
        });
        let received = c.read_all();
        (writer.join().expect("writer"), received)
    });
    let expected_down = Pattern::new(c.server_seed).digest(down);
    let report = server.report(c.id, IO_LIMIT);
    Pump {
        client_sent,
        client_received,
        expected_down,
        server: report,
    }
}

impl Pump {
    /// Both directions arrived complete and unchanged, each ending in a clean EOF.
    pub fn assert_intact(&self, up: u64, down: u64) {
        let s = &self.server;
        assert_eq!(s.received.bytes, up, "bytes the backend received");
        assert_eq!(
            s.received.sha256,
            self.client_sent,
            "SHA-256 of the upload: backend got {}, client sent {}",
            crate::util::hex(&s.received.sha256),
            crate::util::hex(&self.client_sent)
        );
        assert_eq!(s.received.end, End::Eof, "the backend's read end");
        assert_eq!(s.sent.bytes, down, "bytes the backend sent");
        assert_eq!(s.sent.end, End::Eof, "the backend's send end");
        assert_eq!(
            self.client_received.bytes, down,
            "bytes the client received"
        );
        assert_eq!(
            self.client_received.sha256,
            self.expected_down,
            "SHA-256 of the download: client got {}, backend sent {}",
            crate::util::hex(&self.client_received.sha256),
            crate::util::hex(&self.expected_down)
        );
        assert_eq!(self.client_received.end, End::Eof, "the client's read end");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{free_addr, loopback};

    #[test]
    fn pattern_differs_by_position_and_seed() {
        let p = Pattern::new(1);
        let mut a = vec![0u8; CHUNK];
        let mut b = vec![0u8; CHUNK];
        p.chunk(0, &mut a);
        p.chunk(1, &mut b);
        assert_ne!(a, b);
        assert_ne!(Pattern::new(1).digest(1000), Pattern::new(2).digest(1000));
        assert_ne!(p.digest(CHUNK as u64), p.digest(CHUNK as u64 + 1));
        // The digest of the stream equals the digest of its bytes.
        let mut v = Vec::new();
        let d = p.write_to(&mut v, 200_000).unwrap();
        assert_eq!(v.len(), 200_000);
        assert_eq!(d, sha256(&v));
    }

    #[test]
    fn ring_sha256_is_sha256() {
        assert_eq!(
            crate::util::hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// The server and client against each other, no proxy: the helpers themselves.
    #[test]
    fn direct_pump_and_endings() {
        let server = TcpServer::start(free_addr(loopback(2)));
        let p = pump(server.addr(), &server, 3_000_000, 5_000_000);
        p.assert_intact(3_000_000, 5_000_000);

        // Half-close, client first.
        let c = TcpClient::connect(server.addr(), Reply::AfterEof { bytes: 100_000 });
        let d = c.send(70_000).unwrap();
        c.shutdown_write();
        let got = c.read_all();
        assert_eq!(got.bytes, 100_000);
        assert_eq!(got.sha256, c.expected_from_server(100_000));
        assert_eq!(got.end, End::Eof);
        let r = server.report(c.id, IO_LIMIT);
        assert_eq!((r.received.bytes, r.received.sha256), (70_000, d));

        // Server resets.
        let c = TcpClient::connect(server.addr(), Reply::ThenReset { bytes: 10_000 });
        let got = c.read_all();
        assert_eq!(got.end, End::Reset);

        // Client resets.
        let c = TcpClient::connect(server.addr(), Reply::AfterEof { bytes: 0 });
        c.send(1000).unwrap();
        server.wait_received(c.id, 1000, IO_LIMIT);
        let id = c.id;
        c.reset();
        assert_eq!(server.report(id, IO_LIMIT).received.end, End::Reset);
    }
}

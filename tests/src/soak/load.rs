//! The soak's clients, each a thread looping until told to stop: byte-checked mode-tcp flows
//! (both engines), RTMP and RTMPS publishes by ffmpeg, HTTP keep-alive and one-request
//! connections fetching an HLS segment whose digest is checked, and WebSocket echoes.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::cluster::{Targets, SEGMENT_BYTES, SEGMENT_SEED};
use crate::ffmpeg::ffmpeg_publish;
use crate::http_client::{ws_exchange, Conn};
use crate::tcp::{pump, sha256, End, Pattern, Pump, TcpServer};

/// Everything the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    checked: AtomicU64,
    checked_failed: AtomicU64,
    lost: AtomicU64,
    rtmp_ok: AtomicU64,
    rtmp_failed: AtomicU64,
    http_ok: AtomicU64,
    http_failed: AtomicU64,
    ws_ok: AtomicU64,
    ws_failed: AtomicU64,
    /// Flows reset by their client on purpose (a fault).
    pub resets: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Tally {
    pub fn flows(&self) -> u64 {
        [
            &self.checked,
            &self.rtmp_ok,
            &self.rtmp_failed,
            &self.http_ok,
            &self.http_failed,
            &self.ws_ok,
            &self.ws_failed,
            &self.resets,
        ]
        .iter()
        .map(|c| read(c))
        .sum()
    }

    pub fn lost(&self) -> u64 {
        read(&self.lost)
    }

    pub fn failed_checked(&self) -> u64 {
        read(&self.checked_failed)
    }

    pub fn summary(&self) -> String {
        format!(
            "byte-checked tcp {} ({} failed), rtmp/rtmps publishes {} ok {} failed, http \
             requests {} ok {} failed, websocket {} ok {} failed, client resets {}",
            read(&self.checked),
            read(&self.checked_failed),
            read(&self.rtmp_ok),
            read(&self.rtmp_failed),
            read(&self.http_ok),
            read(&self.http_failed),
            read(&self.ws_ok),
            read(&self.ws_failed),
            read(&self.resets),
        )
    }
}

/// Starts every client thread.
pub fn start(t: &Targets, tally: &Arc<Tally>, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    let mut spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        threads.push(
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .expect("a load thread"),
        );
    };
    for (i, addr) in [t.tcp_auto, t.tcp_copy].into_iter().enumerate() {
        let (server, tally, stop) = (t.checked.clone(), tally.clone(), stop.clone());
        spawn(
            "checked",
            Box::new(move || checked_flows(addr, &server, &tally, &stop, i as u64)),
        );
    }
    for (scheme, addr) in [("rtmp", t.rtmp), ("rtmps", t.rtmps)] {
        let (tally, stop) = (tally.clone(), stop.clone());
        spawn(
            scheme,
            Box::new(move || publishes(scheme, addr, &tally, &stop)),
        );
    }
    for keep_alive in [true, false] {
        let (addr, tally, stop) = (t.http, tally.clone(), stop.clone());
        spawn(
            "http",
            Box::new(move || segments(addr, keep_alive, &tally, &stop)),
        );
    }
    let (addr, tally, stop) = (t.ws, tally.clone(), stop.clone());
    spawn("ws", Box::new(move || websockets(addr, &tally, &stop)));
    threads
}

/// A burst of short flows on every frontend, eight at a time so that both workers (which
/// share one accept queue) take some, before the baseline is read.
pub fn warm_up(t: &Targets) {
    std::thread::scope(|s| {
        for addr in [t.tcp_auto, t.tcp_copy] {
            for _ in 0..8 {
                let server = t.checked.clone();
                s.spawn(move || {
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        pump(addr, &server, 64 * 1024, 64 * 1024)
                    }));
                });
            }
        }
        for _ in 0..8 {
            let addr = t.http;
            s.spawn(move || {
                if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    let mut c = Conn::on_stream(stream);
                    let _ = c.stream.write_all(
                        b"GET /hls/seg.ts HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n",
                    );
                    let _ = c.response(false);
                }
            });
        }
    });
}

/// A cheap deterministic sequence of sizes (xorshift), different per thread.
struct Sizes(u64);

impl Sizes {
    fn next(&mut self, most: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % (most + 1)
    }
}

/// Byte-checked flows, both directions at once, sizes up to 4 MiB each way.
fn checked_flows(addr: SocketAddr, server: &TcpServer, tally: &Tally, stop: &AtomicBool, n: u64) {
    let mut sizes = Sizes(0x9E37_79B9 + n);
    while !stop.load(Ordering::SeqCst) {
        let (up, down) = (sizes.next(4 << 20), sizes.next(4 << 20));
        bump(&tally.checked, 1);
        match catch_unwind(AssertUnwindSafe(|| pump(addr, server, up, down))) {
            Ok(p) => {
                let lost = lost_bytes(&p, up, down);
                if lost > 0 || !completed(&p) {
                    eprintln!("soak: checked flow via {addr} ({up} up, {down} down): {p:?}");
                    bump(&tally.checked_failed, 1);
                }
                bump(&tally.lost, lost);
            }
            Err(_) => bump(&tally.checked_failed, 1),
        }
    }
}

/// Both directions ended with a clean EOF at their receiver.
fn completed(p: &Pump) -> bool {
    p.server.received.end == End::Eof && p.client_received.end == End::Eof
}

/// Bytes a direction that ended cleanly did not deliver intact: the shortfall, or the whole
/// direction when what arrived differs from what was sent.
fn lost_bytes(p: &Pump, up: u64, down: u64) -> u64 {
    let mut lost = 0;
    if p.server.received.end == End::Eof {
        lost += if p.server.received.sha256 == p.client_sent {
            up.saturating_sub(p.server.received.bytes)
        } else {
            up
        };
    }
    if p.client_received.end == End::Eof {
        lost += if p.client_received.sha256 == p.expected_down {
            down.saturating_sub(p.client_received.bytes)
        } else {
            down
        };
    }
    lost
}

/// Publishes of 15 s, one after the other.
fn publishes(scheme: &str, addr: SocketAddr, tally: &Tally, stop: &AtomicBool) {
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let url = format!("{scheme}://{addr}/live/soak-{scheme}-{n}");
        let mut p = ffmpeg_publish(&url, 15);
        match p.wait_at_most(Duration::from_secs(60)) {
            Some(s) if s.success() => bump(&tally.rtmp_ok, 1),
            _ => {
                bump(&tally.rtmp_failed, 1);
                // A node killed under it, most likely; pause so a refused connect loop does
                // not spin.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The HLS segment, over one keep-alive connection at a time or one connection per request.
fn segments(addr: SocketAddr, keep_alive: bool, tally: &Tally, stop: &AtomicBool) {
    let expected = Pattern::new(SEGMENT_SEED).digest(SEGMENT_BYTES);
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::SeqCst) {
        let c = match conn.take() {
            Some(c) => c,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => Conn::on_stream(s),
                Err(_) => {
                    bump(&tally.http_failed, 1);
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        let mut c = c;
        let close = if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        };
        let req = format!("GET /hls/seg.ts HTTP/1.1\r\nHost: soak\r\n{close}\r\n");
        let answer = c
            .stream
            .write_all(req.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|()| c.response(false));
        match answer {
            Ok(r) if r.status == 200 => {
                if r.body.len() as u64 != SEGMENT_BYTES || sha256(&r.body) != expected {
                    eprintln!("soak: a 200 segment with {} wrong bytes", r.body.len());
                    bump(&tally.lost, SEGMENT_BYTES);
                }
                bump(&tally.http_ok, 1);
                if keep_alive {
                    conn = Some(c);
                }
            }
            // 503 while a node is down and not yet seen so, a reset connection: counted,
            // not a loss (nothing was delivered as complete).
            _ => bump(&tally.http_failed, 1),
        }
    }
}

/// A WebSocket echo every second or so.
fn websockets(addr: SocketAddr, tally: &Tally, stop: &AtomicBool) {
    let url = format!("ws://{addr}/echo");
    while !stop.load(Ordering::SeqCst) {
        match ws_exchange(&url, "", 0.5) {
            Ok(lines) if lines == ["ws:first", "ws:second"] => bump(&tally.ws_ok, 1),
            other => {
                eprintln!("soak: websocket exchange: {other:?}");
                bump(&tally.ws_failed, 1);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

//! New TCP connections per second: `concurrency` slots, each looping connect → 64-byte request
//! → 64-byte answer → the server's FIN → close, as fast as the path allows. The backend closes
//! first, so TIME_WAIT sockets do not use up the generator's ephemeral ports.

use super::backend::{REQ_LEN, RESP_LEN};
use super::Threads;
use crate::error::Result;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Shared {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub recording: AtomicBool,
    /// Connect to answer-and-FIN, per connection, while recording.
    pub latencies_us: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

pub type Client = Threads<Shared>;

impl Client {
    pub fn start(target: SocketAddr, concurrency: usize) -> Result<Client> {
        let mut client = Threads::new(Shared::default(), |s| &s.stop);
        client.spawn("bench-rate", "rate", move |s| {
            drive(target, concurrency, &s)
        })?;
        Ok(client)
    }

    pub fn finish(mut self) {
        self.stop();
    }
}

/// A run with this many failures is broken; stop rather than spin.
const MAX_ERRORS: u64 = 10_000;

struct Slot {
    stream: Option<TcpStream>,
    started: Instant,
    sent: usize,
    got: usize,
}

fn drive(target: SocketAddr, concurrency: usize, shared: &Shared) {
    let Ok(mut poll) = Poll::new() else {
        shared.errors.fetch_add(1, Relaxed);
        return;
    };
    let mut slots: Vec<Slot> = (0..concurrency)
        .map(|_| Slot {
            stream: None,
            started: Instant::now(),
            sent: 0,
            got: 0,
        })
        .collect();
    let mut events = Events::with_capacity(1024);
    while !shared.stop.load(Relaxed) && shared.errors.load(Relaxed) < MAX_ERRORS {
        // Slots whose connect failed (e.g. no ephemeral port free) are retried here; a short
        // poll timeout then keeps that retry from waiting on events that never come.
        let mut empty = false;
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.stream.is_none() {
                empty |= !open(&poll, target, i, slot, shared);
            }
        }
        let timeout = Duration::from_millis(if empty { 1 } else { 20 });
        if poll.poll(&mut events, Some(timeout)).is_err() {
            continue;
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if step(&mut slots[i], shared) {
                close(&poll, &mut slots[i]);
                open(&poll, target, i, &mut slots[i], shared);
            }
        }
    }
    for slot in &mut slots {
        close(&poll, slot);
    }
}

/// Starts a connection in `slot`; false when that failed (counted; retried by the loop).
fn open(poll: &Poll, target: SocketAddr, i: usize, slot: &mut Slot, shared: &Shared) -> bool {
    slot.sent = 0;
    slot.got = 0;
    slot.started = Instant::now();
    if let Ok(mut s) = TcpStream::connect(target) {
        let both = Interest::READABLE | Interest::WRITABLE;
        if poll.registry().register(&mut s, Token(i), both).is_ok() {
            slot.stream = Some(s);
            return true;
        }
    }
    shared.errors.fetch_add(1, Relaxed);
    false
}

/// Advances one connection; true when it is finished (answered, or failed).
fn step(slot: &mut Slot, shared: &Shared) -> bool {
    let Some(s) = slot.stream.as_mut() else {
        return true;
    };
    let mut req = [0u8; REQ_LEN];
    req[0] = b'C';
    while slot.sent < REQ_LEN {
        match s.write(&req[slot.sent..]) {
            Ok(n) => slot.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            // Not connected yet (the writable event has not come): wait for it.
            Err(e) if e.kind() == ErrorKind::NotConnected => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return failed(shared),
        }
    }
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                if slot.got != RESP_LEN {
                    return failed(shared);
                }
                shared.completed.fetch_add(1, Relaxed);
                if shared.recording.load(Relaxed) {
                    let us = slot.started.elapsed().as_micros() as u64;
                    if let Ok(mut v) = shared.latencies_us.lock() {
                        v.push(us);
                    }
                }
                return true;
            }
            Ok(n) => slot.got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return failed(shared),
        }
    }
}

fn failed(shared: &Shared) -> bool {
    shared.errors.fetch_add(1, Relaxed);
    true
}

fn close(poll: &Poll, slot: &mut Slot) {
    if let Some(mut s) = slot.stream.take() {
        let _ = poll.registry().deregister(&mut s);
    }
}

//! One bulk TCP flow, either way: the upload client writes 256 KiB buffers as fast as the path
//! takes them; the download client asks the backend to send and counts what arrives.

use super::Threads;
use crate::error::{BenchError, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const BUF: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// Client to backend (an RTMP publisher's direction).
    Up,
    /// Backend to client (a player's direction).
    Down,
}

#[derive(Debug, Default)]
pub struct Shared {
    /// Upload: bytes written; download: bytes read.
    pub bytes: AtomicU64,
    pub failed: AtomicBool,
    stop: AtomicBool,
}

pub type Client = Threads<Shared>;

impl Client {
    pub fn start(target: SocketAddr, dir: Direction) -> Result<Client> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .map_err(|e| BenchError::io(format!("bulk connect {target}"), e))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let cmd = match dir {
            Direction::Up => b"U",
            Direction::Down => b"D",
        };
        stream
            .write_all(cmd)
            .map_err(|e| BenchError::io("bulk command", e))?;
        let mut client = Threads::new(Shared::default(), |s| &s.stop);
        client.spawn("bench-bulk", "bulk", move |s| {
            let ok = match dir {
                Direction::Up => upload(stream, &s),
                Direction::Down => download(stream, &s),
            };
            if ok.is_err() {
                s.failed.store(true, Relaxed);
            }
        })?;
        Ok(client)
    }

    /// Upload: stop writing and FIN. Download: the backend must be told separately
    /// ([`super::backend::Backend::stop_downloads`]). Waits for the flow to end.
    pub fn finish(mut self) -> Result<u64> {
        self.stop();
        if self.shared.failed.load(Relaxed) {
            return Err(BenchError::Run("bulk flow failed".into()));
        }
        Ok(self.shared.bytes.load(Relaxed))
    }
}

fn upload(mut s: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let buf = vec![0xa5u8; BUF];
    while !shared.stop.load(Relaxed) {
        let n = s.write(&buf)?;
        shared.bytes.fetch_add(n as u64, Relaxed);
    }
    s.shutdown(Shutdown::Write)?;
    // The backend closes after our FIN: wait for that so every byte is counted on its side.
    let mut sink = [0u8; 64];
    while s.read(&mut sink)? > 0 {}
    Ok(())
}

fn download(mut s: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                shared.bytes.fetch_add(n as u64, Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

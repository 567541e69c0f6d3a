//! The idle load: N flows that each send a few bytes once, read them back from the echo
//! backend (which proves the path through the hop), then hold the connection open and say
//! nothing, as an RTMP player between bursts or a WebSocket signalling channel does. What the
//! hop holds for them is memory, not CPU.
//!
//! Flows open in small batches (connect and send a batch, then read its echoes), so at most a
//! batch of handshakes is in flight: the load stays bounded on a 2-core machine, and the hop's
//! accept backlog never overflows.

use crate::error::{BenchError, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What each flow sends once: the backend's echo command byte and 15 more.
pub const HELLO: &[u8; 16] = b"Eidle-flow-hello";

/// Connections set up together before their echoes are read.
const BATCH: usize = 32;

/// How long one connect or echo may take before the run is called failed.
const IO_LIMIT: Duration = Duration::from_secs(10);

/// The open, silent flows; dropping it closes them (FIN each).
pub struct Flows {
    streams: Vec<TcpStream>,
    /// How long opening all of them took.
    pub setup: Duration,
}

impl Flows {
    /// Opens `n` echoed flows to `target`; any flow that fails fails the whole set.
    pub fn open(target: SocketAddr, n: usize) -> Result<Flows> {
        let started = Instant::now();
        let mut streams = Vec::with_capacity(n);
        while streams.len() < n {
            let batch = BATCH.min(n - streams.len());
            let opened = open_batch(target, batch)?;
            streams.extend(opened);
        }
        Ok(Flows {
            streams,
            setup: started.elapsed(),
        })
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// Connects and greets `n` flows, then reads every echo back.
fn open_batch(target: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let mut batch = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect_timeout(&target, IO_LIMIT)
            .map_err(|e| BenchError::io(format!("idle flow connect {target}"), e))?;
        s.write_all(HELLO)
            .map_err(|e| BenchError::io("idle flow hello", e))?;
        batch.push(s);
    }
    for s in &mut batch {
        read_echo(s)?;
    }
    Ok(batch)
}

fn read_echo(s: &mut TcpStream) -> Result<()> {
    s.set_read_timeout(Some(IO_LIMIT))
        .map_err(|e| BenchError::io("idle flow timeout", e))?;
    let mut echo = [0u8; HELLO.len()];
    s.read_exact(&mut echo)
        .map_err(|e| BenchError::io("idle flow echo", e))?;
    if &echo != HELLO {
        return Err(BenchError::Run(format!(
            "idle flow echo differs: {:?}",
            String::from_utf8_lossy(&echo)
        )));
    }
    Ok(())
}

/// The most flows this process can hold with `limit` open files: each flow costs two here
/// (the client socket, and the backend's socket, which runs in this process too), and
/// `reserve` stay free for everything else.
pub fn flows_for_limit(limit: u64, reserve: u64) -> usize {
    (limit.saturating_sub(reserve) / 2) as usize
}

/// Raises this process's open-file limit (soft and hard) to `want` where allowed (root), and
/// returns the soft limit it ends with. The hop processes inherit it.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: r.rlim_max.max(want),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return want;
            }
        }
        r.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_per_flow() {
        assert_eq!(flows_for_limit(20_000, 1024), 9488);
        assert_eq!(flows_for_limit(100, 1024), 0);
    }
}

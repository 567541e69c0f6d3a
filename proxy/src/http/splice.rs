//! Large bodies of known length moved by splice(2) (issue #4): socket → pipe → socket inside
//! the kernel, no copy through the proxy's buffers. Used when the source is plain TCP and the
//! destination is plain TCP or a kTLS socket (the kernel encrypts what enters it); a
//! userspace TLS session cannot take spliced bytes, and a TLS source yields records.
//!
//! The sockets are made nonblocking for the body only and given back as they were: the
//! session goes on with io_uring operations on them (keep-alive, the server pool). Waits are
//! readiness polls bounded like the copy path's: `read_idle` per wait for more source bytes,
//! `write_idle` per wait for room at the destination.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use compio::net::TcpStream;
use compio::runtime::fd::PollFd;
use socket2::Socket;

use crate::counters::{Process, PROCESS};
use crate::forward::{splice_once, Pipe};

use super::side::deadline;

/// Bodies from this size on are spliced; smaller ones are not worth the pipe and the polls.
pub const MIN_BODY: u64 = 64 * 1024;

/// Pipe asked for: fewer splice calls per body than the 64 KiB default.
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// Why a spliced body stopped short; the caller maps it to its direction's error.
#[derive(Debug)]
pub enum Cut {
    /// The source ended before the body did.
    Eof,
    Read(io::Error),
    Write(io::Error),
}

/// The two sockets of one spliced body, nonblocking until dropped.
pub struct Splicer {
    from: PollFd<Socket>,
    to: PollFd<Socket>,
    pipe: Pipe,
    /// O_NONBLOCK as it was on (from, to), restored on drop.
    was_nonblocking: (bool, bool),
}

impl Splicer {
    /// `Err` (no descriptor or pipe to be had): the caller copies instead.
    pub fn new(from: &TcpStream, to: &TcpStream) -> io::Result<Splicer> {
        let from = from.to_poll_fd()?;
        let to = to.to_poll_fd()?;
        let pipe = Pipe::with_size(PIPE_SIZE)?;
        let was_nonblocking = (is_nonblocking(&from)?, is_nonblocking(&to)?);
        // A splice into or out of a socket follows the socket's own O_NONBLOCK, not
        // SPLICE_F_NONBLOCK: without it a full send buffer would block the worker thread.
        from.set_nonblocking(true)?;
        to.set_nonblocking(true)?;
        Ok(Splicer {
            from,
            to,
            pipe,
            was_nonblocking,
        })
    }

    /// Moves exactly `len` bytes; `read` grows by every byte taken from the source, as the
    /// source side's read count does on the copy path.
    pub async fn run(
        &self,
        len: u64,
        read: &mut u64,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
    ) -> Result<(), Cut> {
        let cap = self.pipe.capacity;
        let mut left = len;
        while left > 0 {
            let in_pipe = self.fill(left, cap, read, read_idle).await?;
            left -= in_pipe as u64;
            self.drain(in_pipe, write_idle).await?;
            Process::add(&PROCESS.http_spliced_bytes, in_pipe as u64);
        }
        Ok(())
    }

    /// Fills the pipe with up to `left` bytes: waits for the first, then takes what is
    /// there without waiting again.
    async fn fill(
        &self,
        left: u64,
        cap: usize,
        read: &mut u64,
        idle: Option<Duration>,
    ) -> Result<usize, Cut> {
        let mut in_pipe = 0usize;
        loop {
            let want = usize::try_from(left - in_pipe as u64)
                .unwrap_or(usize::MAX)
                .min(cap - in_pipe);
            if want == 0 {
                return Ok(in_pipe);
            }
            match splice_once(self.from.as_raw_fd(), self.pipe.write.as_raw_fd(), want) {
                Ok(0) => return Err(Cut::Eof),
                Ok(n) => {
                    in_pipe += n;
                    *read += n as u64;
                }
                Err(e) if would_block(&e) && in_pipe > 0 => return Ok(in_pipe),
                Err(e) if would_block(&e) => wait(self.from.read_ready(), idle)
                    .await
                    .map_err(Cut::Read)?,
                Err(e) => return Err(Cut::Read(e)),
            }
        }
    }

    /// Empties the pipe into the destination.
    async fn drain(&self, mut in_pipe: usize, idle: Option<Duration>) -> Result<(), Cut> {
        while in_pipe > 0 {
            match splice_once(self.pipe.read.as_raw_fd(), self.to.as_raw_fd(), in_pipe) {
                Ok(0) => return Err(Cut::Write(io::ErrorKind::WriteZero.into())),
                Ok(n) => in_pipe -= n,
                Err(e) if would_block(&e) => wait(self.to.write_ready(), idle)
                    .await
                    .map_err(Cut::Write)?,
                Err(e) => return Err(Cut::Write(e)),
            }
        }
        Ok(())
    }
}

impl Drop for Splicer {
    fn drop(&mut self) {
        let _ = self.from.set_nonblocking(self.was_nonblocking.0);
        let _ = self.to.set_nonblocking(self.was_nonblocking.1);
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn is_nonblocking(fd: &impl AsRawFd) -> io::Result<bool> {
    let raw: RawFd = fd.as_raw_fd();
    // SAFETY: F_GETFL takes no argument and only reads the descriptor's status flags.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// A readiness wait bounded by `idle` (none: unbounded, as the copy path).
async fn wait(
    ready: impl std::future::Future<Output = io::Result<()>>,
    idle: Option<Duration>,
) -> io::Result<()> {
    match deadline(idle) {
        None => ready.await,
        Some(at) => match compio::time::timeout_at(at, ready).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        },
    }
}

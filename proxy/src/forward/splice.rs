//! The splice(2) engine: each direction moves bytes socket → pipe → socket inside the kernel,
//! driven by readiness (nonblocking splice calls, waits through the thread's runtime).
//!
//! Why readiness-driven blocking calls rather than io_uring's splice op: io_uring cannot
//! splice from a socket without punting the request to an io-wq worker thread (sockets have no
//! async splice_read), which costs a thread hop and a context switch per chunk; a `POLL_ADD`
//! followed by a nonblocking splice stays on the worker thread. See LIFECYCLE.md.
//!
//! Memory per direction is bounded by the pipe (64 KiB by default): nothing is read from the
//! source while the pipe is full, so a slow destination backpressures the source's TCP window.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;

use compio::net::TcpStream;
use compio::runtime::fd::PollFd;
use socket2::Socket;

use super::handover::Gate;
use super::idle::Activity;
use super::pair::{self, DirEnd};
use super::{FlowParams, Forwarded, Paused, Progress, Resume};

/// Pipes kept per worker thread for the next flows; more are closed when returned.
const POOL_MAX: usize = 256;

/// One pipe: the in-kernel buffer of one direction (also used by the TLS room's kTLS path).
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Its capacity in bytes (F_GETPIPE_SZ).
    pub(crate) capacity: usize,
}

impl Pipe {
    /// A pipe asked to hold `size` bytes; a refusal (a lower pipe-max-size) leaves the
    /// kernel's default, and `capacity` says what it got.
    pub(crate) fn with_size(size: libc::c_int) -> io::Result<Pipe> {
        let pipe = Pipe::new()?;
        // SAFETY: F_SETPIPE_SZ takes an int size and changes only this pipe.
        unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        Ok(Pipe {
            capacity: pipe_size(&pipe.write),
            ..pipe
        })
    }

    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let capacity = pipe_size(&write);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

fn pipe_size(write: &OwnedFd) -> usize {
    // SAFETY: F_GETPIPE_SZ takes no argument and only reads the pipe's size.
    let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    usize::try_from(size).unwrap_or(0).max(4096)
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe from this thread's pool, or a new one.
fn take_pipe() -> io::Result<Pipe> {
    match POOL.with(|p| p.borrow_mut().pop()) {
        Some(p) => Ok(p),
        None => Pipe::new(),
    }
}

/// Only an empty pipe goes back to the pool: bytes left in it belong to a dead flow.
fn give_back(pipe: Pipe, left: usize) {
    if left != 0 {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(pipe);
        }
    });
}

/// Moves up to `len` bytes from `from` to `to`, one of which is a pipe, without blocking.
/// One nonblocking splice(2) between a pipe and a socket (either way round).
pub(crate) fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the whole call (the flow owns them); null offsets
    // are what pipes and sockets require.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Whether this kernel can splice a stream socket through a pipe, checked once at start on a
/// local socket pair (the same socket → pipe → socket path a flow takes).
pub fn probe() -> Result<(), String> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let fail = |what: &str, e: io::Error| format!("{what}: {e}");
    let pipe = Pipe::new().map_err(|e| fail("pipe2", e))?;
    let (mut a, b) = UnixStream::pair().map_err(|e| fail("socketpair", e))?;
    let (c, mut d) = UnixStream::pair().map_err(|e| fail("socketpair", e))?;
    a.write_all(b"probe").map_err(|e| fail("write", e))?;
    let n = splice(b.as_raw_fd(), pipe.write.as_raw_fd(), 5).map_err(|e| fail("splice in", e))?;
    splice(pipe.read.as_raw_fd(), c.as_raw_fd(), n).map_err(|e| fail("splice out", e))?;
    let mut got = [0u8; 5];
    d.read_exact(&mut got).map_err(|e| fail("read", e))?;
    if &got != b"probe" {
        return Err("spliced bytes differ".into());
    }
    Ok(())
}

/// The two sockets as readiness sources and the two pipes; `None` when a descriptor cannot be
/// had (out of files): the flow then runs on the copy engine rather than failing.
struct Setup {
    client: PollFd<Socket>,
    server: PollFd<Socket>,
    up: Pipe,
    down: Pipe,
}

impl Setup {
    fn new(client: &TcpStream, server: &TcpStream) -> io::Result<Setup> {
        let client = client.to_poll_fd()?;
        let server = server.to_poll_fd()?;
        // splice(2) honours the socket's own O_NONBLOCK, not only SPLICE_F_NONBLOCK.
        client.set_nonblocking(true)?;
        server.set_nonblocking(true)?;
        let up = take_pipe()?;
        let down = match take_pipe() {
            Ok(p) => p,
            Err(e) => {
                give_back(up, 0);
                return Err(e);
            }
        };
        Ok(Setup {
            client,
            server,
            up,
            down,
        })
    }
}

/// Forwards until the flow ends, or, with a gate in `resume`, until it comes to rest for a
/// hand-over: both pipes empty, both directions waiting for their source.
pub async fn run(
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'_>,
    resume: &Resume<'_>,
) -> Forwarded {
    let s = match Setup::new(&client, &server) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("splice engine unavailable for this flow ({e}); copying instead");
            return super::copy::run(client, server, p, progress, resume).await;
        }
    };
    let activity = Activity::resumed(resume.idle_for);
    let mut up = Dir::new(&s.up, progress, true, resume.bytes_up);
    let mut down = Dir::new(&s.down, progress, false, resume.bytes_down);
    let end = {
        // Pinned here and lent (see `pair::run_gated`).
        let u = pin!(up.pump(&s.client, &s.server, &activity, resume.gate));
        let d = pin!(down.pump(&s.server, &s.client, &activity, resume.gate));
        let watchdog = |limit| activity.expired(limit);
        pair::run_gated(u, d, &p.limits, watchdog, resume.gate, resume.ended).await
    };
    let (up_left, down_left) = (up.in_pipe, down.in_pipe);
    let (bytes_up, bytes_down) = (up.moved, down.moved);
    give_back(s.up, up_left);
    give_back(s.down, down_left);
    let end = match end {
        Ok(end) => end,
        Err(rested) => {
            return Forwarded::Paused(Paused {
                client,
                server,
                bytes_up,
                bytes_down,
                idle_for: activity.idle_for(),
                ended: rested.ended,
            });
        }
    };
    pair::apply_end(end, &client, &server);
    Forwarded::Ended(super::FlowStats {
        bytes_up,
        bytes_down,
        end,
    })
}

/// One direction: what sits in its pipe and what reached the destination.
struct Dir<'a> {
    pipe: &'a Pipe,
    in_pipe: usize,
    moved: u64,
    progress: Progress<'a>,
    is_up: bool,
}

impl<'a> Dir<'a> {
    fn new(pipe: &'a Pipe, progress: Progress<'a>, is_up: bool, moved: u64) -> Dir<'a> {
        Dir {
            pipe,
            in_pipe: 0,
            moved,
            progress,
            is_up,
        }
    }

    /// With a gate, the wait for the source with an empty pipe is the direction's safe point
    /// (`handover.rs`): nothing is in hand there, and a pause keeps it there.
    async fn pump(
        &mut self,
        from: &PollFd<Socket>,
        to: &PollFd<Socket>,
        a: &Activity,
        gate: Option<&Gate>,
    ) -> DirEnd {
        let mut eof = false;
        loop {
            let mut progressed = false;
            // A hand-over's pause: the pipe is drained and nothing more taken, so the
            // direction reaches its safe point (an empty pipe, waiting for the source).
            let holding = gate.is_some_and(Gate::holding);
            if !eof && self.in_pipe < self.pipe.capacity && !holding {
                match self.fill(from) {
                    Ok(Some(0)) => eof = true,
                    Ok(Some(_)) => progressed = true,
                    Ok(None) => {}
                    Err(end) => return end,
                }
            }
            if self.in_pipe > 0 {
                match self.drain(to) {
                    Ok(true) => progressed = true,
                    Ok(false) => {}
                    Err(end) => return end,
                }
            }
            if progressed {
                a.touch();
                if !(holding && self.in_pipe == 0) {
                    continue;
                }
            }
            if eof && self.in_pipe == 0 {
                // Pass the FIN on; a shutdown failure means the peer is gone already.
                return match to.shutdown(std::net::Shutdown::Write) {
                    Ok(()) => DirEnd::Eof,
                    Err(_) => DirEnd::DestFailed,
                };
            }
            // Nothing moved. With bytes in the pipe the destination is full (a refused fill
            // may only mean the pipe's slots are used up), so only its space matters;
            // with an empty pipe the source had nothing.
            let waited = if self.in_pipe > 0 {
                to.write_ready().await.map_err(|_| DirEnd::DestFailed)
            } else {
                if let Some(g) = gate {
                    g.rest(self.is_up, true);
                }
                let ready = from.read_ready().await.map_err(|_| DirEnd::SourceFailed);
                if let Some(g) = gate {
                    if ready.is_ok() && g.holding() {
                        Box::pin(g.hold()).await;
                    }
                    g.rest(self.is_up, false);
                }
                ready
            };
            if let Err(end) = waited {
                return end;
            }
        }
    }

    /// Source → pipe. `Some(0)` is the source's FIN, `None` means nothing to take now.
    fn fill(&mut self, from: &PollFd<Socket>) -> Result<Option<usize>, DirEnd> {
        let room = self.pipe.capacity - self.in_pipe;
        match splice(from.as_raw_fd(), self.pipe.write.as_raw_fd(), room) {
            Ok(n) => {
                self.in_pipe += n;
                Ok(Some(n))
            }
            Err(e) if would_block(&e) => Ok(None),
            // A reset (ECONNRESET, then ENOTCONN) or any other failure ends the direction.
            Err(_) => Err(DirEnd::SourceFailed),
        }
    }

    /// Pipe → destination; `false` when the destination takes nothing now.
    fn drain(&mut self, to: &PollFd<Socket>) -> Result<bool, DirEnd> {
        match splice(self.pipe.read.as_raw_fd(), to.as_raw_fd(), self.in_pipe) {
            Ok(n) => {
                self.in_pipe -= n;
                self.moved += n as u64;
                self.progress.moved(self.is_up, n as u64);
                Ok(n > 0)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(_) => Err(DirEnd::DestFailed),
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_works_here() {
        probe().expect("splice(2) is in every Linux kernel this runs on");
    }

    #[test]
    fn pool_keeps_only_empty_pipes() {
        let pooled = || POOL.with(|p| p.borrow().len());
        let (a, b) = (Pipe::new().expect("pipe"), Pipe::new().expect("pipe"));
        assert!(a.capacity >= 4096);
        let before = pooled();
        give_back(a, 10);
        assert_eq!(pooled(), before, "a pipe with bytes left must be closed");
        give_back(b, 0);
        assert_eq!(pooled(), before + 1);
    }
}

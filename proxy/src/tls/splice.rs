//! kTLS + splice(2): once the kernel holds the session keys, plaintext moves socket → pipe →
//! socket inside the kernel in both directions, with no userspace copy (the RTMPS fast path
//! of docs/kernel-facts.md: sockmap and kTLS do not mix on 6.1).
//!
//! Driven by readiness, as the forward room's splice engine: a nonblocking splice, and on
//! EAGAIN a wait through the thread's runtime. What splice cannot carry is a TLS record that
//! is not application data: the kernel then fails the splice with EINVAL and keeps the record
//! queued, and it is read with `recvmsg` (ktls.rs) once the pipe is empty, so order is kept:
//! close_notify is the client's end of stream, anything else ends the session. The server's
//! FIN becomes close_notify + FIN toward the client.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use compio::net::TcpStream;
use compio::runtime::fd::PollFd;
use socket2::Socket;

use super::ktls::KtlsStream;
use crate::forward::{pair::DirEnd, Activity, Count};
use crate::forward::{splice_once as splice, Pipe};

/// Pipe size asked for: 64 page slots, room for a whole TLS record in as many slots as its
/// pages may take (see `Dir::fill`); a lower pipe-max-size leaves the default 64 KiB.
const PIPE_SIZE: libc::c_int = 256 * 1024;

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// The two sockets as readiness sources, and a pipe per direction.
pub struct Spliced {
    client: PollFd<Socket>,
    server: PollFd<Socket>,
    up: Pipe,
    down: Pipe,
}

impl Spliced {
    /// `Err` (out of descriptors): the flow copies through the kTLS socket instead.
    pub fn new(client: &TcpStream, server: &TcpStream) -> io::Result<Spliced> {
        let client = client.to_poll_fd()?;
        let server = server.to_poll_fd()?;
        // A splice into a socket follows the socket's own O_NONBLOCK, not SPLICE_F_NONBLOCK;
        // from here on both sockets are driven by readiness alone.
        client.set_nonblocking(true)?;
        server.set_nonblocking(true)?;
        Ok(Spliced {
            client,
            server,
            up: Pipe::with_size(PIPE_SIZE)?,
            down: Pipe::with_size(PIPE_SIZE)?,
        })
    }
}

/// Where a direction stands.
struct Dir<'a> {
    pipe: &'a Pipe,
    in_pipe: usize,
    eof: bool,
    /// The source's next record is not data (seen as EINVAL from splice).
    control: bool,
}

enum Fill {
    Moved,
    /// The source's end of stream (a splice that read 0).
    Fin,
    Nothing,
}

impl Dir<'_> {
    fn fill(&mut self, from: RawFd, is_tls: bool) -> Result<Fill, DirEnd> {
        if self.eof || self.control || self.in_pipe >= self.pipe.capacity {
            return Ok(Fill::Nothing);
        }
        // A kTLS source is spliced into an empty pipe only: the kernel's TLS splice reads one
        // record per call, and a record cut short by a pipe out of slots is mishandled by
        // some kernels (the rest of the record is skipped).
        if is_tls && self.in_pipe > 0 {
            return Ok(Fill::Nothing);
        }
        let room = self.pipe.capacity - self.in_pipe;
        match splice(from, self.pipe.write.as_raw_fd(), room) {
            Ok(0) => {
                self.eof = true;
                Ok(Fill::Fin)
            }
            Ok(n) => {
                self.in_pipe += n;
                Ok(Fill::Moved)
            }
            Err(e) if would_block(&e) => Ok(Fill::Nothing),
            Err(e) if is_tls && e.raw_os_error() == Some(libc::EINVAL) => {
                self.control = true;
                Ok(Fill::Moved)
            }
            Err(_) => Err(DirEnd::SourceFailed),
        }
    }

    fn drain(&mut self, to: RawFd, moved: &mut Count<'_>) -> Result<bool, DirEnd> {
        if self.in_pipe == 0 {
            return Ok(false);
        }
        match splice(self.pipe.read.as_raw_fd(), to, self.in_pipe) {
            Ok(n) => {
                self.in_pipe -= n;
                moved.add(n);
                Ok(n > 0)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(_) => Err(DirEnd::DestFailed),
        }
    }
}

/// Client (kTLS) → server.
pub async fn up(s: &Spliced, k: &KtlsStream, activity: &Activity, moved: &mut Count<'_>) -> DirEnd {
    let mut fair = Fair::default();
    let mut d = Dir {
        pipe: &s.up,
        in_pipe: 0,
        eof: false,
        control: false,
    };
    loop {
        let filled = match d.fill(s.client.as_raw_fd(), true) {
            // A close_notify is a control record (below); a FIN splice sees is a bare one.
            Ok(Fill::Fin) => {
                k.fin_seen();
                true
            }
            Ok(f) => matches!(f, Fill::Moved),
            Err(end) => return end,
        };
        let drained = match d.drain(s.server.as_raw_fd(), moved) {
            Ok(b) => b,
            Err(end) => return end,
        };
        if d.control && d.in_pipe == 0 {
            // Everything before the record has reached the server: read the record itself.
            d.control = false;
            match control_record(k, &s.server).await {
                Ok(None) => d.eof = true,
                Ok(Some(n)) => {
                    moved.add(n);
                    activity.touch()
                }
                Err(end) => return end,
            }
            continue;
        }
        if filled || drained {
            activity.touch();
            fair.progress().await;
            continue;
        }
        if d.eof && d.in_pipe == 0 {
            // Pass the FIN on; a failure means the server is gone already.
            return match s.server.shutdown(std::net::Shutdown::Write) {
                Ok(()) => DirEnd::Eof,
                Err(_) => DirEnd::DestFailed,
            };
        }
        if let Err(end) = wait(&d, &s.client, &s.server).await {
            return end;
        }
    }
}

/// Server → client (kTLS): the server's FIN becomes close_notify + FIN.
pub async fn down(
    s: &Spliced,
    k: &KtlsStream,
    activity: &Activity,
    moved: &mut Count<'_>,
) -> DirEnd {
    let mut fair = Fair::default();
    let mut d = Dir {
        pipe: &s.down,
        in_pipe: 0,
        eof: false,
        control: false,
    };
    loop {
        let filled = match d.fill(s.server.as_raw_fd(), false) {
            Ok(f) => matches!(f, Fill::Moved | Fill::Fin),
            Err(end) => return end,
        };
        let drained = match d.drain(s.client.as_raw_fd(), moved) {
            Ok(b) => b,
            Err(end) => return end,
        };
        if d.eof && d.in_pipe == 0 {
            return match k.finish().await {
                Ok(()) => DirEnd::Eof,
                Err(_) => DirEnd::DestFailed,
            };
        }
        if filled || drained {
            activity.touch();
            fair.progress().await;
            continue;
        }
        if let Err(end) = wait(&d, &s.server, &s.client).await {
            return end;
        }
    }
}

/// Sends all of `data` to the non-blocking `to`, waiting for room as needed.
async fn send_all(to: &PollFd<Socket>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for reads of its length during the call.
        let n = unsafe {
            libc::send(
                to.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(_) => {
                let e = io::Error::last_os_error();
                if !would_block(&e) {
                    return Err(e);
                }
                ready(to.write_ready(), DirEnd::DestFailed)
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            }
        }
    }
    Ok(())
}

/// A readiness wait; a failed wait is the direction's end.
async fn ready(
    f: impl std::future::Future<Output = io::Result<()>>,
    fail: DirEnd,
) -> Result<(), DirEnd> {
    f.await.map_err(|_| fail)
}

/// A direction that keeps making progress yields now and then, so that the other direction
/// and the worker's other sessions run too (a fast pair never sees EAGAIN).
#[derive(Default)]
struct Fair(u32);

impl Fair {
    async fn progress(&mut self) {
        self.0 += 1;
        if self.0.is_multiple_of(32) {
            YieldNow(false).await;
        }
    }
}

/// Pending once, then ready: hands the thread back to the runtime for one turn.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Waits for what blocks the direction: room at the destination while the pipe holds bytes,
/// else bytes at the source.
async fn wait(d: &Dir<'_>, from: &PollFd<Socket>, to: &PollFd<Socket>) -> Result<(), DirEnd> {
    if d.in_pipe > 0 {
        ready(to.write_ready(), DirEnd::DestFailed).await
    } else {
        ready(from.read_ready(), DirEnd::SourceFailed).await
    }
}

/// The record splice refused. `Ok(None)`: close_notify (end of stream); `Ok(Some(n))`: it was
/// `n` bytes of data after all (passed on); `Err`: an alert or post-handshake message that ends
/// the session.
async fn control_record(k: &KtlsStream, server: &PollFd<Socket>) -> Result<Option<usize>, DirEnd> {
    let mut buf = vec![0u8; super::handshake::MAX_RECORD_BODY];
    match k.read_plain(&mut buf).await {
        Ok(0) => Ok(None),
        Ok(n) => send_all(server, buf.get(..n).unwrap_or_default())
            .await
            .map(|()| Some(n))
            .map_err(|_| DirEnd::DestFailed),
        Err(e) => {
            log::debug!("kTLS session ended: {e}");
            Err(DirEnd::SourceFailed)
        }
    }
}

//! The userspace engine: each direction waits for its source to be readable, then moves what
//! is there through a buffer lent from the worker's pool for that burst (the plain pump), or
//! on io_uring takes a multishot recv from the worker's buffer ring (`multishot.rs`). Which pump runs
//! follows the measurement in LIFECYCLE.md ("Multishot copy"); `PROXY_COPY_PUMP=plain|multishot`
//! overrides it for the benchmark's comparison. The epoll driver always runs the plain pump.

use compio::buf::BufResult;
use compio::driver::op::{Interest, PollOnce};
use compio::driver::ToSharedFd;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use compio::runtime::Runtime;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::sync::OnceLock;

use super::bufpool;
use super::handover::Gate;
use super::idle::Activity;
use super::multishot;
use super::pair::{self, DirEnd};
use super::{FlowParams, FlowStats, Forwarded, Paused, Progress, Resume};

pub fn forward(
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'_>,
) -> impl std::future::Future<Output = FlowStats> + use<'_> {
    use futures_util::FutureExt;
    run(client, server, p, progress, &Resume::NEW).map(super::ended)
}

/// As [`forward`], and the flow may come to rest for a hand-over when `resume` has a gate
/// (the plain pump only: the multishot pump holds ring buffers and never rests).
pub async fn run<'a>(
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'a>,
    resume: &Resume<'a>,
) -> Forwarded {
    let activity = Activity::resumed(resume.idle_for);
    let mut up_bytes = resume.bytes_up;
    let mut down_bytes = resume.bytes_down;
    let gate = resume.gate;
    let end = {
        let up_count = Count::new(&mut up_bytes, progress, true);
        let down_count = Count::new(&mut down_bytes, progress, false);
        let watchdog = |limit| activity.expired(limit);
        // The plain pumps are pinned here and lent to `pair::run`: handed over by value, each
        // would be stored again in its state (the argument and its pinned copy). The multishot
        // pumps are boxed, so that their larger state does not size every flow (issue #14).
        // The multishot pumps never rest, and run both directions from the start: a
        // half-closed flow resumed from another process takes the plain ones.
        if use_multishot() && resume.ended.is_none() {
            let up = multishot::pump(&client, &server, p.bufsize, &activity, up_count);
            let down = multishot::pump(&server, &client, p.bufsize, &activity, down_count);
            Ok(pair::run(Box::pin(up), Box::pin(down), &p.limits, watchdog).await)
        } else {
            let (mut up_count, mut down_count) = (up_count, down_count);
            let up = pin!(gated_pump(
                &client,
                &server,
                p.bufsize,
                &activity,
                &mut up_count,
                gate
            ));
            let down = pin!(gated_pump(
                &server,
                &client,
                p.bufsize,
                &activity,
                &mut down_count,
                gate
            ));
            pair::run_gated(up, down, &p.limits, watchdog, gate, resume.ended).await
        }
    };
    let end = match end {
        Ok(end) => end,
        Err(rested) => {
            return Forwarded::Paused(Paused {
                client,
                server,
                bytes_up: up_bytes,
                bytes_down: down_bytes,
                idle_for: activity.idle_for(),
                ended: rested.ended,
            });
        }
    };
    pair::apply_end(end, &client, &server);
    Forwarded::Ended(FlowStats {
        bytes_up: up_bytes,
        bytes_down: down_bytes,
        end,
    })
}

/// Which pump `copy` runs on io_uring when not overridden; see LIFECYCLE.md.
const MULTISHOT_BY_DEFAULT: bool = false;

/// The pump choice: io_uring only (the epoll driver's buffer pool is an emulation), and the
/// environment override read once per process.
fn use_multishot() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    let wanted = *CHOICE.get_or_init(|| match std::env::var("PROXY_COPY_PUMP").as_deref() {
        Ok("multishot") => true,
        Ok("plain") => false,
        _ => MULTISHOT_BY_DEFAULT,
    });
    wanted && Runtime::current().driver_type().is_iouring()
}

/// One direction's delivered bytes: its own total and the live rows.
pub(crate) struct Count<'a> {
    pub(super) total: &'a mut u64,
    pub(super) progress: Progress<'a>,
    pub(super) is_up: bool,
}

impl<'a> Count<'a> {
    /// Counts client → server bytes (`is_up`) or server → client ones into `total` and `progress`.
    pub(crate) fn new(total: &'a mut u64, progress: Progress<'a>, is_up: bool) -> Count<'a> {
        Count {
            total,
            progress,
            is_up,
        }
    }

    pub(crate) fn add(&mut self, n: usize) {
        *self.total += n as u64;
        self.progress.moved(self.is_up, n as u64);
    }
}

/// Where the plain pump delivers: a socket here, a TLS client's plaintext side in the TLS room.
pub(crate) trait Sink {
    /// Writes all of `buf`, handing the buffer back for the next read.
    async fn deliver(&self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>);
    /// Passes the source's FIN on.
    async fn close_write(&self) -> std::io::Result<()>;
}

impl Sink for TcpStream {
    async fn deliver(&self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        let mut writer = self;
        let BufResult(res, buf) = writer.write_all(buf).await;
        (res, buf)
    }

    async fn close_write(&self) -> std::io::Result<()> {
        super::shut_write(self)
    }
}

/// The plain pump. While the source is quiet the direction holds no buffer, only a
/// readiness wait (`POLL_ADD` on io_uring, epoll otherwise); once it is readable a buffer is
/// lent from the worker's pool for the burst and given back when the source has nothing more
/// right now (`bufpool.rs`). An idle flow thus costs no buffer, and a busy one still holds at
/// most one, so a slow destination is bounded by `bufsize` as before.
pub(crate) fn pump<'a, 'b, W: Sink>(
    from: &'a TcpStream,
    to: &'a W,
    bufsize: usize,
    activity: &'a Activity,
    moved: &'a mut Count<'b>,
) -> impl std::future::Future<Output = DirEnd> + use<'a, 'b, W> {
    gated_pump(from, to, bufsize, activity, moved, None)
}

/// The plain pump; with a gate, its readiness wait is the direction's safe point: it holds
/// no byte there, and during a hand-over's pause it stays there (`handover.rs`).
async fn gated_pump<W: Sink>(
    from: &TcpStream,
    to: &W,
    bufsize: usize,
    activity: &Activity,
    moved: &mut Count<'_>,
    gate: Option<&Gate>,
) -> DirEnd {
    loop {
        if let Some(g) = gate {
            g.rest(moved.is_up, true);
        }
        let ready = readable(from).await.is_ok();
        if let Some(g) = gate {
            if ready && g.holding() {
                Box::pin(g.hold()).await;
            }
            g.rest(moved.is_up, false);
        }
        // A failed wait means the source is unusable, as a failed read would.
        if !ready {
            return DirEnd::SourceFailed;
        }
        // Boxed: the write's state exists only during a burst, not in every idle flow.
        let moved_now = Box::pin(burst(from.as_raw_fd(), to, bufsize, activity, moved, gate));
        if let Some(end) = moved_now.await {
            return end;
        }
    }
}

/// Moves what the readable source holds, with one pooled buffer: reads without waiting and
/// delivers each chunk until the source has nothing more now (`None`: wait again) or the
/// direction ends. The buffer goes back to the pool either way (not when the flow is dropped
/// mid-write: compio then frees it once the cancelled write lets it go).
async fn burst<W: Sink>(
    from: RawFd,
    to: &W,
    bufsize: usize,
    activity: &Activity,
    moved: &mut Count<'_>,
    gate: Option<&Gate>,
) -> Option<DirEnd> {
    let mut buf = bufpool::take(bufsize);
    let end = loop {
        let n = match recv_now(from, &mut buf) {
            Ok(0) => break Some(DirEnd::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A reset (ECONNRESET, then ENOTCONN) or any other failure: the source failed.
            Err(_) => break Some(DirEnd::SourceFailed),
        };
        activity.touch();
        let room = buf.capacity();
        let (res, b) = to.deliver(buf).await;
        buf = b;
        if res.is_err() {
            break Some(DirEnd::DestFailed);
        }
        moved.add(n);
        activity.touch();
        // A read that did not fill the buffer emptied the receive queue: wait for more
        // without a buffer rather than ask again now (a readiness wait answers at once if
        // more came meanwhile).
        if n < room {
            break None;
        }
        // A hand-over's pause: back to the wait, the safe point, with the chunk delivered
        // (a bulk flow's bursts would otherwise never end).
        if gate.is_some_and(Gate::holding) {
            break None;
        }
    };
    bufpool::give(buf);
    match end {
        Some(DirEnd::Eof) => Some(pass_fin(to).await),
        other => other,
    }
}

/// Waits until `from` is readable (or has its FIN, or failed): one `POLL_ADD` on io_uring,
/// an epoll wait otherwise. A bare operation rather than compio's `PollFd`, which keeps room
/// for a write wait too, in every idle direction.
async fn readable(from: &TcpStream) -> io::Result<()> {
    let op = PollOnce::new(from.to_shared_fd(), Interest::Readable);
    compio::runtime::submit(op).await.0.map(|_| ())
}

/// Passes the source's FIN on; a shutdown failure means the peer is gone already.
async fn pass_fin<W: Sink>(to: &W) -> DirEnd {
    match to.close_write().await {
        Ok(()) => DirEnd::Eof,
        Err(_) => DirEnd::DestFailed,
    }
}

/// One nonblocking recv into `buf` (emptied first), up to its capacity; `Ok(0)` is the FIN,
/// `WouldBlock` an empty receive queue. MSG_DONTWAIT leaves the socket's own mode alone,
/// which the io_uring writes on the same socket rely on.
fn recv_now(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let room = buf.capacity();
    // SAFETY: the kernel writes at most `room` bytes at the buffer's start, inside its
    // allocation of `room` bytes; `fd` stays open for the call (the flow owns the socket).
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), room, libc::MSG_DONTWAIT) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: recv initialised the first `n` bytes, and `n <= room`.
    unsafe { buf.set_len(n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use compio::driver::{DriverType, ProactorBuilder};
    use compio::io::{AsyncReadExt, AsyncWriteExt};
    use compio::net::TcpListener;

    use super::*;
    use crate::forward::FlowEnd;

    const FLOWS: usize = 16;

    fn runtime(driver: DriverType) -> Runtime {
        let mut pb = ProactorBuilder::new();
        pb.driver_type(driver);
        Runtime::builder()
            .with_proactor(pb)
            .build()
            .expect("runtime")
    }

    /// Client ↔ (a) copy engine (b) ↔ server, all on this runtime.
    struct Ends {
        client: TcpStream,
        server: TcpStream,
        flow: compio::runtime::JoinHandle<FlowStats>,
    }

    async fn one_flow(front: &TcpListener, back: &TcpListener) -> Ends {
        let client = TcpStream::connect(front.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (a, _) = front.accept().await.expect("accept");
        let b = TcpStream::connect(back.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = back.accept().await.expect("accept");
        let p = FlowParams::default();
        let flow = compio::runtime::spawn(forward(a, b, p, Progress::none()));
        Ends {
            client,
            server,
            flow,
        }
    }

    async fn exchange(e: &mut Ends, i: usize) {
        let hello = format!("hello {i:04}").into_bytes();
        e.client
            .write_all(hello.clone())
            .await
            .0
            .expect("client write");
        let got = e.server.read_exact(vec![0u8; hello.len()]).await;
        got.0.expect("server read");
        assert_eq!(got.1, hello);
        e.server.write_all(got.1).await.0.expect("server write");
        let back = e.client.read_exact(vec![0u8; hello.len()]).await;
        back.0.expect("client read");
        assert_eq!(back.1, hello, "the echo through the engine");
    }

    /// Flows that moved a few bytes each way and went quiet hold no buffer: every buffer
    /// lent for their bursts is back in the pool. Then each closes cleanly both ways.
    fn idle_flows_hold_no_buffer(driver: DriverType) {
        let rt = runtime(driver);
        rt.block_on(async {
            let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let back = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let mut flows = Vec::new();
            for i in 0..FLOWS {
                let mut e = one_flow(&front, &back).await;
                exchange(&mut e, i).await;
                flows.push(e);
            }
            compio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert_eq!(bufpool::lent(), 0, "buffers held by {FLOWS} idle flows");
            for e in flows {
                let (client, mut server) = (e.client, e.server);
                super::super::shut_write(&client).expect("client FIN");
                let rest = server.read_to_end(Vec::new()).await;
                assert_eq!(rest.0.expect("server reads to the FIN"), 0);
                super::super::shut_write(&server).expect("server FIN");
                let stats = e.flow.await.expect("flow task");
                assert_eq!(stats.end, FlowEnd::Closed);
                assert_eq!((stats.bytes_up, stats.bytes_down), (10, 10));
            }
            assert_eq!(bufpool::lent(), 0);
        });
    }

    /// An idle flow's memory is mostly its futures' state (issue #14): a copy flow's whole
    /// state, both directions inline, stays under 1056 bytes, and a direction's under 160
    /// (896 and 128 with rustc 1.95; 1024 and 144 since a flow may rest for a binary upgrade:
    /// its gate and the wait for a pause; 1048 since its progress also feeds the runtime
    /// API's flow table; 1056 since a half-closed flow may rest and resume too). A larger
    /// figure means something grew into every flow.
    #[test]
    fn flow_state_stays_small() {
        let rt = runtime(DriverType::IoUring);
        rt.block_on(async {
            let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = front.local_addr().expect("addr");
            let a = TcpStream::connect(addr).await.expect("connect");
            let (b, _) = front.accept().await.expect("accept");
            let activity = Activity::new();
            let mut total = 0u64;
            let mut count = Count::new(&mut total, Progress::none(), true);
            let direction = std::mem::size_of_val(&pump(&a, &b, 16384, &activity, &mut count));
            // The session's path: a flow that may move in a binary upgrade.
            let gate = Gate::new();
            let resume = Resume {
                gate: Some(&gate),
                ..Resume::default()
            };
            let flow = run(a, b, FlowParams::default(), Progress::none(), &resume);
            let flow = std::mem::size_of_val(&flow);
            eprintln!("copy flow state {flow} bytes, one direction {direction}");
            assert!(direction <= 160, "one direction: {direction} bytes");
            assert!(flow <= 1056, "a copy flow: {flow} bytes");
        });
    }

    #[test]
    fn idle_flows_hold_no_buffer_io_uring() {
        idle_flows_hold_no_buffer(DriverType::IoUring)
    }

    #[test]
    fn idle_flows_hold_no_buffer_epoll() {
        idle_flows_hold_no_buffer(DriverType::Poll)
    }
}

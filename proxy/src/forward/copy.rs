//! The userspace engine: each direction is a read → write loop on the thread's runtime
//! (io_uring or epoll), with one bounded buffer per direction (the plain pump), or on
//! io_uring a multishot recv from the worker's buffer ring (`multishot.rs`). Which pump runs
//! follows the measurement in LIFECYCLE.md ("Multishot copy"); `PROXY_COPY_PUMP=plain|multishot`
//! overrides it for the benchmark's comparison. The epoll driver always runs the plain pump.

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use compio::runtime::Runtime;
use std::sync::OnceLock;

use super::idle::Activity;
use super::multishot;
use super::pair::{self, DirEnd};
use super::{is_reset, FlowParams, FlowStats, Progress};

pub async fn forward(
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'_>,
) -> FlowStats {
    let activity = Activity::new();
    let mut up_bytes = 0u64;
    let mut down_bytes = 0u64;
    let end = {
        let up_count = Count::new(&mut up_bytes, progress, true);
        let down_count = Count::new(&mut down_bytes, progress, false);
        let watchdog = |limit| activity.expired(limit);
        if use_multishot() {
            let up = multishot::pump(&client, &server, p.bufsize, &activity, up_count);
            let down = multishot::pump(&server, &client, p.bufsize, &activity, down_count);
            pair::run(up, down, &p.limits, watchdog).await
        } else {
            let (mut up_count, mut down_count) = (up_count, down_count);
            let up = pump(&client, &server, p.bufsize, &activity, &mut up_count);
            let down = pump(&server, &client, p.bufsize, &activity, &mut down_count);
            pair::run(up, down, &p.limits, watchdog).await
        }
    };
    pair::apply_end(end, &client, &server);
    FlowStats {
        bytes_up: up_bytes,
        bytes_down: down_bytes,
        end,
    }
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
        let mut writer = self;
        writer.shutdown().await
    }
}

/// The plain pump: one bounded buffer, read from `from`, delivered to `to`.
pub(crate) async fn pump<W: Sink>(
    from: &TcpStream,
    to: &W,
    bufsize: usize,
    activity: &Activity,
    moved: &mut Count<'_>,
) -> DirEnd {
    let mut reader = from;
    let mut buf = Vec::with_capacity(bufsize);
    loop {
        buf.clear();
        let BufResult(res, b) = reader.read(buf).await;
        buf = b;
        match res {
            Ok(0) => {
                // Pass the FIN on; a shutdown failure means the peer is gone already.
                return match to.close_write().await {
                    Ok(()) => DirEnd::Eof,
                    Err(_) => DirEnd::DestFailed,
                };
            }
            Ok(n) => {
                activity.touch();
                let (res, b) = to.deliver(buf).await;
                buf = b;
                if res.is_err() {
                    return DirEnd::DestFailed;
                }
                moved.add(n);
                activity.touch();
            }
            Err(e) if is_reset(&e) => return DirEnd::SourceFailed,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return DirEnd::SourceFailed,
        }
    }
}

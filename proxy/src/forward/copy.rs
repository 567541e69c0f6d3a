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
        let up_count = Count {
            total: &mut up_bytes,
            progress,
            is_up: true,
        };
        let down_count = Count {
            total: &mut down_bytes,
            progress,
            is_up: false,
        };
        let watchdog = |limit| activity.expired(limit);
        if use_multishot() {
            let up = multishot::pump(&client, &server, p.bufsize, &activity, up_count);
            let down = multishot::pump(&server, &client, p.bufsize, &activity, down_count);
            pair::run(up, down, &p.limits, watchdog).await
        } else {
            let up = pump(&client, &server, p.bufsize, &activity, up_count);
            let down = pump(&server, &client, p.bufsize, &activity, down_count);
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
pub(super) struct Count<'a> {
    pub(super) total: &'a mut u64,
    pub(super) progress: Progress<'a>,
    pub(super) is_up: bool,
}

impl Count<'_> {
    pub(super) fn add(&mut self, n: usize) {
        *self.total += n as u64;
        self.progress.moved(self.is_up, n as u64);
    }
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    bufsize: usize,
    activity: &Activity,
    mut moved: Count<'_>,
) -> DirEnd {
    let mut reader = from;
    let mut writer = to;
    let mut buf = Vec::with_capacity(bufsize);
    loop {
        buf.clear();
        let BufResult(res, b) = reader.read(buf).await;
        buf = b;
        match res {
            Ok(0) => {
                // Pass the FIN on; a shutdown failure means the peer is gone already.
                return match writer.shutdown().await {
                    Ok(()) => DirEnd::Eof,
                    Err(_) => DirEnd::DestFailed,
                };
            }
            Ok(n) => {
                activity.touch();
                let BufResult(res, b) = writer.write_all(buf).await;
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

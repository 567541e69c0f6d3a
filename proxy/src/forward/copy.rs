//! The userspace engine: each direction is a read → write loop on the thread's runtime
//! (io_uring or epoll), with one bounded buffer per direction.

use std::pin::pin;

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::future::{select, Either};

use super::idle::Activity;
use super::{is_reset, reset, FlowEnd, FlowParams, FlowStats};

/// How one direction finished.
#[derive(Debug)]
enum DirEnd {
    /// The source sent FIN and the destination was shut down for writing in turn.
    Eof,
    /// Reading from the source failed: the source reset.
    SourceFailed,
    /// Writing to the destination failed: the destination reset.
    DestFailed,
}

pub async fn forward(client: TcpStream, server: TcpStream, p: FlowParams) -> FlowStats {
    let activity = Activity::new();
    let mut up_bytes = 0u64;
    let mut down_bytes = 0u64;
    let end = {
        let up = pin!(pump(&client, &server, p.bufsize, &activity, &mut up_bytes));
        let down = pin!(pump(
            &server,
            &client,
            p.bufsize,
            &activity,
            &mut down_bytes
        ));
        let watchdog = pin!(activity.expired(p.limits.idle));
        match select(select(up, down), watchdog).await {
            Either::Right(((), _)) => FlowEnd::ClientTimeout,
            Either::Left((Either::Left((up_end, down)), _)) => {
                finish_other(up_end, true, down, &activity, &p).await
            }
            Either::Left((Either::Right((down_end, up)), _)) => {
                finish_other(down_end, false, up, &activity, &p).await
            }
        }
    };
    apply_end(end, &client, &server);
    FlowStats {
        bytes_up: up_bytes,
        bytes_down: down_bytes,
        end,
    }
}

/// One direction is over; a clean FIN lets the other run on (half-close), a failure ends both.
async fn finish_other<F>(
    first: DirEnd,
    first_is_up: bool,
    other: F,
    activity: &Activity,
    p: &FlowParams,
) -> FlowEnd
where
    F: std::future::Future<Output = DirEnd> + Unpin,
{
    if let Some(end) = failure(&first, first_is_up) {
        return end;
    }
    let limit = p.limits.after_half_close(first_is_up);
    let watchdog = pin!(activity.expired(limit));
    match select(other, watchdog).await {
        Either::Left((second, _)) => failure(&second, !first_is_up).unwrap_or(FlowEnd::Closed),
        // Waiting on the side that has not finished yet.
        Either::Right(_) if first_is_up => FlowEnd::ServerTimeout,
        Either::Right(_) => FlowEnd::ClientTimeout,
    }
}

/// Maps a direction's failure to who aborted: for client → server (`is_up`), a failed read is
/// the client's fault and a failed write the server's; the reverse for the other direction.
fn failure(end: &DirEnd, is_up: bool) -> Option<FlowEnd> {
    match (end, is_up) {
        (DirEnd::Eof, _) => None,
        (DirEnd::SourceFailed, true) | (DirEnd::DestFailed, false) => Some(FlowEnd::ClientAbort),
        (DirEnd::SourceFailed, false) | (DirEnd::DestFailed, true) => Some(FlowEnd::ServerAbort),
    }
}

/// A reset on one side becomes a reset on the other, so a cut stream is never mistaken for a
/// complete one. A timed-out flow is idle, nothing is in flight: both sides get a plain FIN
/// when the streams drop, as HAProxy closes them.
fn apply_end(end: FlowEnd, client: &TcpStream, server: &TcpStream) {
    match end {
        FlowEnd::ClientAbort => reset(server),
        FlowEnd::ServerAbort => reset(client),
        FlowEnd::Closed | FlowEnd::ClientTimeout | FlowEnd::ServerTimeout => {}
    }
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    bufsize: usize,
    activity: &Activity,
    moved: &mut u64,
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
                *moved += n as u64;
                activity.touch();
            }
            Err(e) if is_reset(&e) => return DirEnd::SourceFailed,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return DirEnd::SourceFailed,
        }
    }
}

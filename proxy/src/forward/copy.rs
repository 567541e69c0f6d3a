//! The userspace engine: each direction is a read → write loop on the thread's runtime
//! (io_uring or epoll), with one bounded buffer per direction.

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;

use super::idle::Activity;
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
        let up = pump(&client, &server, p.bufsize, &activity, up_count);
        let down = pump(&server, &client, p.bufsize, &activity, down_count);
        pair::run(up, down, &p.limits, |limit| activity.expired(limit)).await
    };
    pair::apply_end(end, &client, &server);
    FlowStats {
        bytes_up: up_bytes,
        bytes_down: down_bytes,
        end,
    }
}

/// One direction's delivered bytes: its own total and the live rows.
struct Count<'a> {
    total: &'a mut u64,
    progress: Progress<'a>,
    is_up: bool,
}

impl Count<'_> {
    fn add(&mut self, n: usize) {
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

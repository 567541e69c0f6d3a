//! The userspace engine: each direction is a read → write loop on the thread's runtime
//! (io_uring or epoll), with one bounded buffer per direction.

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;

use super::idle::Activity;
use super::pair::{self, DirEnd};
use super::{is_reset, FlowParams, FlowStats};

pub async fn forward(client: TcpStream, server: TcpStream, p: FlowParams) -> FlowStats {
    let activity = Activity::new();
    let mut up_bytes = 0u64;
    let mut down_bytes = 0u64;
    let end = {
        let up = pump(&client, &server, p.bufsize, &activity, &mut up_bytes);
        let down = pump(&server, &client, p.bufsize, &activity, &mut down_bytes);
        pair::run(up, down, &p.limits, |limit| activity.expired(limit)).await
    };
    pair::apply_end(end, &client, &server);
    FlowStats {
        bytes_up: up_bytes,
        bytes_down: down_bytes,
        end,
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

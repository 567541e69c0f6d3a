//! A TLS client paired with a plain server (`mode tcp` + `ssl`: RTMPS in front of plain RTMP),
//! with the forward room's close protocol (forward/LIFECYCLE.md) carried over TLS:
//!
//! - client close_notify or FIN → `shutdown(server, WR)`, the other direction runs on; a FIN
//!   without close_notify is the same to the server, but the flow ends `ClientTruncated`
//!   (logged `CD`, counted in `proxy_tls_truncated_total`);
//! - server FIN → close_notify to the client, then `shutdown(client, WR)`;
//! - a failed read (reset, bad record, fatal alert) or write → the peer is reset;
//! - nothing moved for the idle limit → both closed (no close_notify: the session just ends,
//!   as HAProxy does on a timeout).
//!
//! One bounded buffer per direction. With kTLS the socket gives plaintext and the kernel does
//! the crypto; in userspace rustls does, on this thread.

use std::pin::pin;

use compio::net::TcpStream;

use crate::counters::{Process, PROCESS};
use crate::forward::pair::{self, DirEnd};
use crate::forward::{pump, Activity, Count, FlowEnd, FlowParams, FlowStats, Progress, Sink};

use super::splice::{self, Spliced};
use super::TlsClient;

/// Forwards until both directions are closed, a side fails, or the flow goes idle. A kTLS
/// client is spliced (no userspace copy); a userspace one, or a kTLS one whose pipes cannot
/// be had, is copied through one bounded buffer per direction.
pub async fn forward(client: TlsClient, server: TcpStream, p: FlowParams) -> FlowStats {
    forward_counted(client, server, p, Progress::none()).await
}

/// As [`forward`], with every delivered byte also added to the live rows of `progress`
/// (the returned totals are the same bytes: the caller must not add them again).
pub async fn forward_counted(
    client: TlsClient,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'_>,
) -> FlowStats {
    let activity = Activity::new();
    let mut up_bytes = 0u64;
    let mut down_bytes = 0u64;
    let mut up = Count::new(&mut up_bytes, progress, true);
    let mut down = Count::new(&mut down_bytes, progress, false);
    let spliced = match &client {
        TlsClient::Kernel(k) => match Spliced::new(k.tcp(), &server) {
            Ok(s) => {
                Process::add(&PROCESS.ktls_spliced_flows, 1);
                Some(s)
            }
            Err(e) => {
                log::debug!("splice unavailable for this kTLS flow ({e}); copying");
                None
            }
        },
        TlsClient::User(_) => None,
    };
    // Both directions under the idle watchdog, with the forward room's close protocol.
    let watchdog = |limit| activity.expired(limit);
    let end = match (&spliced, &client) {
        (Some(s), TlsClient::Kernel(k)) => {
            // Pinned here and lent (see `pair::run_gated`).
            let up_f = pin!(splice::up(s, k, &activity, &mut up));
            let down_f = pin!(splice::down(s, k, &activity, &mut down));
            pair::run(up_f, down_f, &p.limits, watchdog).await
        }
        _ => {
            let bufsize = p.bufsize;
            let up_f = pin!(client_to_server(
                &client, &server, bufsize, &activity, &mut up
            ));
            let down_f = pin!(pump(
                &server,
                &client,
                bufsize.max(1024),
                &activity,
                &mut down
            ));
            pair::run(up_f, down_f, &p.limits, watchdog).await
        }
    };
    pair::apply_end(end, client.tcp(), &server);
    FlowStats {
        bytes_up: up_bytes,
        bytes_down: down_bytes,
        end: truncation(end, &client),
    }
}

/// A flow that closed cleanly on both sides but whose client never sent close_notify is
/// logged as truncated; any other end already says more.
fn truncation(end: FlowEnd, client: &TlsClient) -> FlowEnd {
    if end == FlowEnd::Closed && client.truncated() {
        FlowEnd::ClientTruncated
    } else {
        end
    }
}

async fn client_to_server(
    from: &TlsClient,
    to: &TcpStream,
    bufsize: usize,
    activity: &Activity,
    moved: &mut Count<'_>,
) -> DirEnd {
    let mut buf = vec![0u8; bufsize.max(1024)];
    loop {
        let n = match from.read_plain(&mut buf).await {
            Ok(0) => {
                return match to.close_write().await {
                    Ok(()) => DirEnd::Eof,
                    Err(_) => DirEnd::DestFailed,
                }
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("TLS client read failed: {e}");
                return DirEnd::SourceFailed;
            }
        };
        activity.touch();
        buf.truncate(n);
        let (res, b) = to.deliver(buf).await;
        buf = b;
        if res.is_err() {
            return DirEnd::DestFailed;
        }
        moved.add(n);
        activity.touch();
        buf.resize(bufsize.max(1024), 0);
    }
}

/// The forward room's plain pump delivers the server's bytes as plaintext to the client; its
/// FIN becomes close_notify, then `shutdown(client, WR)`.
impl Sink for TlsClient {
    async fn deliver(&self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        let res = self.write_plain(&buf).await;
        (res, buf)
    }

    async fn close_write(&self) -> std::io::Result<()> {
        self.finish().await
    }
}

//! A TLS client paired with a plain server (`mode tcp` + `ssl`: RTMPS in front of plain RTMP),
//! with the forward room's close protocol (forward/LIFECYCLE.md) carried over TLS:
//!
//! - client close_notify or FIN → `shutdown(server, WR)`, the other direction runs on;
//! - server FIN → close_notify to the client, then `shutdown(client, WR)`;
//! - a failed read (reset, bad record, fatal alert) or write → the peer is reset;
//! - nothing moved for the idle limit → both closed (no close_notify: the session just ends,
//!   as HAProxy does on a timeout).
//!
//! One bounded buffer per direction. With kTLS the socket gives plaintext and the kernel does
//! the crypto; in userspace rustls does, on this thread.

use std::cell::Cell;
use std::pin::pin;
use std::time::{Duration, Instant};

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::future::{select, Either};

use crate::forward::{FlowEnd, FlowParams, FlowStats, Progress};

use super::splice::{self, Spliced};
use super::TlsClient;

#[derive(Debug)]
pub(super) enum DirEnd {
    Eof,
    SourceFailed,
    DestFailed,
}

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
    let activity = Activity(Cell::new(Instant::now()));
    let mut up = Moved::new(progress, true);
    let mut down = Moved::new(progress, false);
    let spliced = match &client {
        TlsClient::Kernel(k) => match Spliced::new(k.tcp(), &server) {
            Ok(s) => {
                super::ktls::SPLICED_FLOWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(s)
            }
            Err(e) => {
                log::debug!("splice unavailable for this kTLS flow ({e}); copying");
                None
            }
        },
        TlsClient::User(_) => None,
    };
    let end = match (&spliced, &client) {
        (Some(s), TlsClient::Kernel(k)) => {
            let up_f = pin!(splice::up(s, k, &activity, &mut up));
            let down_f = pin!(splice::down(s, k, &activity, &mut down));
            both(up_f, down_f, &activity, &p).await
        }
        _ => {
            let bufsize = p.bufsize;
            let up_f = pin!(client_to_server(
                &client, &server, bufsize, &activity, &mut up
            ));
            let down_f = pin!(server_to_client(
                &server, &client, bufsize, &activity, &mut down
            ));
            both(up_f, down_f, &activity, &p).await
        }
    };
    match end {
        FlowEnd::ClientAbort => reset(&server),
        FlowEnd::ServerAbort => reset(client.tcp()),
        FlowEnd::Closed | FlowEnd::ClientTimeout | FlowEnd::ServerTimeout => {}
    }
    FlowStats {
        bytes_up: up.total,
        bytes_down: down.total,
        end,
    }
}

/// Plaintext bytes one direction delivered: its own total and the live rows.
pub(super) struct Moved<'a> {
    total: u64,
    progress: Progress<'a>,
    is_up: bool,
}

impl<'a> Moved<'a> {
    fn new(progress: Progress<'a>, is_up: bool) -> Moved<'a> {
        Moved {
            total: 0,
            progress,
            is_up,
        }
    }

    pub(super) fn add(&mut self, n: usize) {
        self.total += n as u64;
        self.progress.moved(self.is_up, n as u64);
    }
}

/// Both directions under the idle watchdog, with the forward room's close protocol.
async fn both<U, D>(up_f: U, down_f: D, activity: &Activity, p: &FlowParams) -> FlowEnd
where
    U: std::future::Future<Output = DirEnd> + Unpin,
    D: std::future::Future<Output = DirEnd> + Unpin,
{
    let watchdog = pin!(activity.expired(p.limits.idle));
    match select(select(up_f, down_f), watchdog).await {
        Either::Right(((), _)) => FlowEnd::ClientTimeout,
        Either::Left((Either::Left((first, other)), _)) => {
            finish_other(first, true, other, activity, p).await
        }
        Either::Left((Either::Right((first, other)), _)) => {
            finish_other(first, false, other, activity, p).await
        }
    }
}

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
    let watchdog = pin!(activity.expired(p.limits.after_half_close(first_is_up)));
    match select(other, watchdog).await {
        Either::Left((second, _)) => failure(&second, !first_is_up).unwrap_or(FlowEnd::Closed),
        Either::Right(_) if first_is_up => FlowEnd::ServerTimeout,
        Either::Right(_) => FlowEnd::ClientTimeout,
    }
}

fn failure(end: &DirEnd, is_up: bool) -> Option<FlowEnd> {
    match (end, is_up) {
        (DirEnd::Eof, _) => None,
        (DirEnd::SourceFailed, true) | (DirEnd::DestFailed, false) => Some(FlowEnd::ClientAbort),
        (DirEnd::SourceFailed, false) | (DirEnd::DestFailed, true) => Some(FlowEnd::ServerAbort),
    }
}

async fn client_to_server(
    from: &TlsClient,
    to: &TcpStream,
    bufsize: usize,
    activity: &Activity,
    moved: &mut Moved<'_>,
) -> DirEnd {
    let mut buf = vec![0u8; bufsize.max(1024)];
    let mut writer = to;
    loop {
        let n = match from.read_plain(&mut buf).await {
            Ok(0) => {
                return match writer.shutdown().await {
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
        let BufResult(res, b) = writer.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return DirEnd::DestFailed;
        }
        moved.add(n);
        activity.touch();
        buf.resize(bufsize.max(1024), 0);
    }
}

async fn server_to_client(
    from: &TcpStream,
    to: &TlsClient,
    bufsize: usize,
    activity: &Activity,
    moved: &mut Moved<'_>,
) -> DirEnd {
    let mut reader = from;
    let mut buf = Vec::with_capacity(bufsize.max(1024));
    loop {
        buf.clear();
        let BufResult(res, b) = reader.read(buf).await;
        buf = b;
        match res {
            Ok(0) => {
                return match to.finish().await {
                    Ok(()) => DirEnd::Eof,
                    Err(_) => DirEnd::DestFailed,
                }
            }
            Ok(n) => {
                activity.touch();
                if to.write_plain(&buf).await.is_err() {
                    return DirEnd::DestFailed;
                }
                moved.add(n);
                activity.touch();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return DirEnd::SourceFailed,
        }
    }
}

/// Zero linger turns the close into a RST: a cut stream is never taken for a complete one.
fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// The time of the last byte moved either way (the forward room's rule: any byte keeps both
/// sides alive).
pub(super) struct Activity(Cell<Instant>);

impl Activity {
    pub(super) fn touch(&self) {
        self.0.set(Instant::now());
    }

    async fn expired(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let deadline = self.0.get() + limit;
            if Instant::now() >= deadline {
                return;
            }
            compio::time::sleep_until(deadline).await;
        }
    }
}

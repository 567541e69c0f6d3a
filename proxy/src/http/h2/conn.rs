//! One HTTP/2 client connection: the preface within the request timeout, then one compio task
//! that drives the h2 connection and every stream exchange on it. The streams are futures in
//! a `FuturesUnordered` polled by the same task (no spawn, no `Send`): a wake-up polls the
//! connection's IO and only the streams it woke.
//!
//! Limits (what a client may make the proxy hold or do):
//! * at most [`MAX_STREAMS`] streams at once (HAProxy's `tune.h2.max-concurrent-streams`);
//! * a header list up to `tune.bufsize` (SETTINGS_MAX_HEADER_LIST_SIZE), as an HTTP/1.1 head;
//! * [`STREAM_WINDOW`] per stream and [`CONNECTION_WINDOW`] per connection of request body
//!   received ahead of the server, and h2's per-stream send buffer at four buffers;
//! * Rapid Reset (CVE-2023-44487): a client that opens streams and resets them makes the
//!   proxy start work it then throws away, while the concurrency limit never bites. h2 closes
//!   a connection whose resets pile up before the proxy took the streams
//!   (`max_pending_accept_reset_streams`) or that makes the proxy reset streams for protocol
//!   errors (`max_local_error_reset_streams`); the streams the proxy already took are counted
//!   here ([`Resets`]): past [`RESET_LIMIT`] within [`RESET_WINDOW`] the connection gets a
//!   GOAWAY with ENHANCE_YOUR_CALM, its exchanges are dropped and it is closed.
//! * idle: with no stream open, `timeout http-keep-alive` (else `timeout client`) ends it with
//!   a graceful GOAWAY.

use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::{Connection, SendResponse};
use h2::{Reason, RecvStream};

use crate::counters::Counters;
use crate::tls::TlsClient;
use crate::upstream::Origin;

use super::super::session;
use super::super::Frontend;
use super::io::{bridge, H2Io};
use super::stream::{self, StreamEnd};

/// Streams a client may have open at once (HAProxy's default).
pub const MAX_STREAMS: u32 = 100;
/// Request body bytes a stream may send ahead of the server (RFC 9113's default window).
pub const STREAM_WINDOW: u32 = 65_535;
/// Request body bytes all streams of a connection together may send ahead.
pub const CONNECTION_WINDOW: u32 = 1 << 20;
/// Streams reset by the client before the proxy took them: h2 closes the connection past it.
pub const PENDING_RESETS: usize = 20;
/// Streams the client reset after the proxy took them, within [`RESET_WINDOW`], and streams
/// the proxy reset for the client's protocol errors: past it the connection is closed.
pub const RESET_LIMIT: usize = 100;
pub const RESET_WINDOW: Duration = Duration::from_secs(10);
/// The idle limit when the frontend sets no `timeout client` (the preface is bounded by the
/// frontend's request-head limit, which always has a value).
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Serves a TLS client that chose `h2` by ALPN.
pub(crate) async fn serve(tls: TlsClient, origin: Origin, fe: Arc<Frontend>) {
    let _opened = session::open(&fe, origin, tls.tcp());
    let accepted = Instant::now();
    let io = bridge(Rc::new(tls), fe.bufsize);
    if let Some(mut conn) = handshake(&fe, origin, io).await {
        drive(&fe, origin, accepted, &mut conn).await;
    }
}

pub(super) fn builder(bufsize: usize) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(bufsize).unwrap_or(u32::MAX))
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(bufsize.max(16 * 1024) * 4)
        .max_pending_accept_reset_streams(PENDING_RESETS)
        .max_local_error_reset_streams(Some(RESET_LIMIT));
    b
}

/// The client's preface and SETTINGS, within `timeout http-request` (else `timeout client`).
async fn handshake(fe: &Frontend, origin: Origin, io: H2Io) -> Option<Connection<H2Io, Bytes>> {
    let limit = fe.http_request;
    let refused = |why: String| {
        log::info!(
            "frontend {}: HTTP/2 connection from {} refused: {why}",
            fe.name,
            origin.src
        );
        Counters::bump(&fe.counters.failed_req);
        None
    };
    match compio::time::timeout(limit, builder(fe.bufsize).handshake(io)).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => refused(e.to_string()),
        Err(_) => refused(format!("no preface within {limit:?}")),
    }
}

enum Event {
    Stream(http::Request<RecvStream>, SendResponse<Bytes>),
    /// No stream open for the idle limit (or, closing, for the close limit).
    Idle,
    /// The client reset more streams than [`RESET_LIMIT`] allows.
    Abusive,
    /// The connection ended; with the error that ended it.
    Closed(Option<h2::Error>),
}

async fn drive(
    fe: &Frontend,
    origin: Origin,
    accepted: Instant,
    conn: &mut Connection<H2Io, Bytes>,
) {
    let mut streams = FuturesUnordered::new();
    let mut resets = Resets::default();
    let mut closing = false;
    loop {
        let wait = idle_limit(fe, closing, streams.is_empty());
        let next = poll_fn(|cx| poll_event(conn, &mut streams, &mut resets, cx));
        let event = match wait {
            None => next.await,
            Some(t) => compio::time::timeout(t, next).await.unwrap_or(Event::Idle),
        };
        match event {
            Event::Stream(req, respond) => {
                streams.push(stream::serve(fe, origin, accepted, req, respond));
            }
            Event::Idle if !closing => {
                conn.graceful_shutdown();
                closing = true;
            }
            Event::Idle => return,
            Event::Abusive => {
                log::warn!(
                    "frontend {}: HTTP/2 client {} reset more than {RESET_LIMIT} streams within \
                     {RESET_WINDOW:?}: GOAWAY (ENHANCE_YOUR_CALM), connection closed",
                    fe.name,
                    origin.src
                );
                // The exchanges of the flood are dropped: their servers' work stops here.
                streams.clear();
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                closing = true;
            }
            Event::Closed(e) => {
                if let Some(e) = e {
                    closed_by_error(fe, origin, &e);
                }
                break;
            }
        }
    }
    // The connection is gone: the streams still running learn it at their next step (a
    // reset stream, a failed send), and end with their log lines.
    while streams.next().await.is_some() {}
}

/// How long the connection may wait for its next event: unbounded while streams run (their
/// own timeouts apply), the keep-alive limit when idle, the client limit while closing.
fn idle_limit(fe: &Frontend, closing: bool, idle: bool) -> Option<Duration> {
    let client = fe.client_timeout.unwrap_or(DEFAULT_WAIT);
    match (idle, closing) {
        (false, _) => None,
        (true, false) => Some(fe.keep_alive.unwrap_or(client)),
        (true, true) => Some(client),
    }
}

fn poll_event<F: Future<Output = StreamEnd>>(
    conn: &mut Connection<H2Io, Bytes>,
    streams: &mut FuturesUnordered<F>,
    resets: &mut Resets,
    cx: &mut Context<'_>,
) -> Poll<Event> {
    while let Poll::Ready(Some(end)) = streams.poll_next_unpin(cx) {
        if end.reset_by_client && resets.hit(Instant::now()) {
            return Poll::Ready(Event::Abusive);
        }
    }
    match conn.poll_accept(cx) {
        Poll::Ready(Some(Ok((req, respond)))) => Poll::Ready(Event::Stream(req, respond)),
        Poll::Ready(Some(Err(e))) => Poll::Ready(Event::Closed(Some(e))),
        Poll::Ready(None) => Poll::Ready(Event::Closed(None)),
        Poll::Pending => Poll::Pending,
    }
}

/// h2's own limits end a connection with ENHANCE_YOUR_CALM: said as loudly as ours.
fn closed_by_error(fe: &Frontend, origin: Origin, e: &h2::Error) {
    if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) {
        log::warn!(
            "frontend {}: HTTP/2 client {} exceeded a stream reset limit: GOAWAY \
             (ENHANCE_YOUR_CALM), connection closed",
            fe.name,
            origin.src
        );
    } else {
        log::debug!(
            "frontend {}: HTTP/2 connection from {} ended: {e}",
            fe.name,
            origin.src
        );
    }
}

/// Streams the client reset, counted in windows of [`RESET_WINDOW`].
#[derive(Default)]
struct Resets {
    since: Option<Instant>,
    count: usize,
}

impl Resets {
    /// One more reset at `now`; true when the window holds more than [`RESET_LIMIT`].
    fn hit(&mut self, now: Instant) -> bool {
        match self.since {
            Some(t) if now.duration_since(t) < RESET_WINDOW => {}
            _ => {
                self.since = Some(now);
                self.count = 0;
            }
        }
        self.count += 1;
        self.count > RESET_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_counted_per_window() {
        let mut r = Resets::default();
        let t0 = Instant::now();
        for _ in 0..RESET_LIMIT {
            assert!(!r.hit(t0));
        }
        assert!(r.hit(t0 + Duration::from_secs(9)), "one over the limit");
        let mut slow = Resets::default();
        for i in 0..(3 * RESET_LIMIT as u64) {
            // One every 200 ms: 50 per window, never abusive.
            assert!(!slow.hit(t0 + Duration::from_millis(200 * i)));
        }
    }
}

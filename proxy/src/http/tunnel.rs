//! Upgraded pairs (`101 Switching Protocols`, WebSocket): the answer to the client, then
//! the pair handed to the forward room under `timeout tunnel`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Timeouts;
use crate::counters::PROCESS;
use crate::forward::{self, FlowEnd, FlowParams, IdleLimits, Progress};
use crate::log::{Cause, Phase, TermState};

use super::client::Client;
use super::conn::ClientConn;
use super::error::HttpError;
use super::exchange::Done;
use super::head::Response;
use super::httplog::HttpRecord;
use super::serve::{log_request, Exchange};
use super::session::{Next, Tunnel};
use super::side::{deadline, Side};
use super::tally::Tally;
use super::{Backend, Frontend};

impl<'f, C: Client> Exchange<'f, '_, C> {
    pub(super) async fn start_tunnel(
        mut self,
        resp: Response,
        server: Side,
        be: &Arc<Backend>,
        done: Done,
    ) -> Next<'f> {
        let head = resp.serialize(Some("upgrade"), true);
        match self.client.answer(head, self.client_idle()).await {
            Ok(n) => self.record.bytes += n,
            Err(e) => return self.aborted(HttpError::ClientClosed(e), be),
        }
        Next::Tunnel(Box::new(Tunnel {
            server,
            be: be.clone(),
            record: self.record,
            _claim: done.claim,
            tally: self.tally,
        }))
    }
}

/// Hands an upgraded pair to the forward room: leftovers first (bytes that came with the
/// heads), then the engine with `timeout tunnel`.
pub(super) async fn tunnel(mut client: Side<ClientConn>, t: Tunnel<'_>, fe: &Frontend) {
    let Tunnel {
        mut server,
        be,
        mut record,
        _claim,
        mut tally,
    } = t;
    let started = Instant::now();
    let to_server = client.data().len();
    if to_server > 0
        && client
            .pass_to(to_server, &server.stream, deadline(be.tunnel))
            .await
            .is_err()
    {
        record.term = TermState::new(Cause::Server, Phase::Data);
        tally.server_abort();
        return end_tunnel(fe, tally, record, client.read_total);
    }
    let to_client = server.data().len();
    if to_client > 0
        && server
            .pass_to(to_client, &client.stream, deadline(be.tunnel))
            .await
            .is_err()
    {
        record.term = TermState::new(Cause::Client, Phase::Data);
        tally.error(|c| &c.client_aborts);
        return end_tunnel(fe, tally, record, client.read_total);
    }
    record.bytes += to_client as u64;
    let limits = IdleLimits::from_timeouts(&Timeouts {
        client: fe.client_timeout,
        client_fin: fe.client_fin,
        server: be.server_timeout,
        server_fin: be.server_fin,
        tunnel: be.tunnel,
        ..Timeouts::default()
    });
    let flow = FlowParams {
        limits,
        bufsize: fe.bufsize,
    };
    let read_before = client.read_total;
    // The heads and leftovers are booked now, the flow's bytes as the engine moves them: a
    // long-lived WebSocket shows its bytes on the stats page while it is open.
    tally.book_bytes(read_before, record.bytes);
    let counted_live = tally.live().is_some();
    let progress = match tally.live() {
        Some(rows) => rows,
        None => Progress::none(),
    };
    // A TLS client goes to the TLS room's forwarding (kTLS + splice when the kernel holds the
    // session, else rustls in userspace), as RTMPS does; close_notify is sent there.
    let stats = match client.stream {
        ClientConn::Plain(s) => {
            forward::forward_counted(be.engine, s, server.stream, flow, progress).await
        }
        ClientConn::Tls(t) => crate::tls::forward_counted(t, server.stream, flow, progress).await,
    };
    record.bytes += stats.bytes_down;
    let client_read = read_before + stats.bytes_up;
    if counted_live {
        tally.counted_up_to(client_read, record.bytes);
    }
    record.term = stats.end.term();
    // Who cut the tunnel, as `mode tcp` counts its flows.
    match stats.end {
        FlowEnd::Closed => {}
        FlowEnd::ClientAbort | FlowEnd::ClientTruncated | FlowEnd::ClientTimeout => {
            tally.error(|c| &c.client_aborts)
        }
        FlowEnd::ServerAbort | FlowEnd::ServerTimeout => tally.server_abort(),
    }
    record.total += started.elapsed();
    end_tunnel(fe, tally, record, client_read);
}

/// The tunnel's request is over: its answer counted (HAProxy counts an upgraded stream at
/// its end; its bytes are already in), then logged.
fn end_tunnel(fe: &Frontend, mut tally: Tally<'_>, mut record: HttpRecord, client_read: u64) {
    record.active = PROCESS.http_sessions.load(Ordering::Relaxed);
    tally.settle(&record, client_read);
    log_request(&fe.access_log, &record);
}

//! One `mode tcp` session from accept to the access-log line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use compio::net::TcpStream;

use super::handover::{self, FlowInfo};
use crate::counters::{Counters, Live, FLOWS, PROCESS};
use crate::forward::{
    self, Engine, FlowEnd, FlowHistory, FlowParams, FlowStats, Forwarded, Gate, Progress, Resume,
};
use crate::log::{AccessLog, Cause, LineFormat, Phase, SessionRecord, TermState};
use crate::upstream::{self, connect_server, ConnectFailure, Origin, Server};

/// A backend as `mode tcp` sees it: the shared upstream side plus how its flows move.
#[derive(Debug)]
pub struct Backend {
    pub upstream: Arc<upstream::Backend>,
    pub engine: Engine,
    /// Lifetimes of this backend's recent mode-tcp flows: what `auto` decides by.
    pub history: FlowHistory,
}

#[derive(Debug)]
pub struct Frontend {
    pub name: String,
    pub backend: Arc<Backend>,
    /// Client-side timeouts come from the frontend, server-side ones from the backend.
    pub flow: FlowParams,
    /// `option dontlognull`: sessions that carried no byte are not logged.
    pub dont_log_null: bool,
    pub conns: AtomicUsize,
    /// This frontend's figures, shared with the stats registry.
    pub stats: Arc<Counters>,
    /// Where this frontend's access lines go (its `log` targets).
    pub access_log: AccessLog,
}

/// The client side of a session: a plain socket, or a TLS connection after its handshake.
pub enum Client {
    Plain(TcpStream),
    Tls(crate::tls::TlsClient),
}

impl Client {
    fn tcp(&self) -> &TcpStream {
        match self {
            Client::Plain(s) => s,
            Client::Tls(t) => t.tcp(),
        }
    }
}

/// `origin`: the client's addresses, the socket's or those of its PROXY header (`accept-proxy`).
/// The session's own future, not one wrapping it: a wrapper would hold its arguments for the
/// flow's whole life (issue #14).
pub fn run_session(
    client: TcpStream,
    origin: Origin,
    fe: Arc<Frontend>,
) -> impl std::future::Future<Output = ()> {
    run(Client::Plain(client), origin, fe)
}

/// `bind … ssl`: the TLS handshake (bounded by its timeout), then the session as usual with
/// the decrypted stream; a failed handshake ends here, before any server is picked.
pub async fn run_tls_session(
    client: TcpStream,
    origin: Origin,
    fe: Arc<Frontend>,
    tls: Arc<crate::tls::Acceptor>,
) {
    if let Some(c) = tls
        .accept_logged(client, origin.src, &fe.name, &PROCESS.tcp_sessions)
        .await
    {
        run(Client::Tls(c), origin, fe).await
    }
}

/// A plain function returning an `async move` block, as [`movable`] (its arguments would be
/// held twice, about 200 bytes, by an `async fn`).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
fn run(client: Client, origin: Origin, fe: Arc<Frontend>) -> impl std::future::Future<Output = ()> {
    async move {
        let accepted = SystemTime::now();
        let started = Instant::now();
        let _active = Live::enter(&PROCESS.tcp_sessions);
        let _fe = Live::enter(&fe.conns);
        let be = &fe.backend;
        let up = &be.upstream;
        let _be = Live::enter(&up.conns);
        fe.stats.accepted();
        // Its line in `show sess` until the session ends.
        let flow = FLOWS.enter(origin.src, &fe.stats, "-");
        let _fe_session = fe.stats.open_session();
        let _be_session = up.set.stats.traffic.open_session();
        let _ = client.tcp().set_nodelay(true);
        fe.access_log
            .connected(origin.src, origin.dst, &fe.name, false);

        let mut record = SessionRecord {
            client: origin.src,
            accepted,
            frontend: &fe.name,
            backend: &up.set.backend,
            server: "<NOSRV>",
            queue_wait: Some(Duration::ZERO),
            connect: None,
            total: Duration::ZERO,
            bytes_down: 0,
            term: TermState::new(Cause::Server, Phase::Connect),
            active: PROCESS.tcp_sessions.load(Ordering::Relaxed),
            frontend_conns: fe.conns.load(Ordering::Relaxed),
            backend_conns: up.conns.load(Ordering::Relaxed),
            server_conns: 0,
            retries: 0,
        };

        let server_name;
        // Boxed: the connect's state (queue wait, retries) is dead once the flow runs, but
        // inline it would stay reserved for the flow's whole life (issue #14).
        match Box::pin(connect_server(up, &origin)).await {
            Ok(c) => {
                server_name = c.claim.server.name.clone();
                record.server = &server_name;
                record.queue_wait = Some(c.queue_wait);
                record.connect = Some(c.connect_time);
                record.retries = c.retries;
                record.server_conns = c.claim.server.current() as usize;
                let server = &c.claim.server;
                let live = Progress::to(&fe.stats, &up.set.stats.traffic, &server.stats.traffic)
                    .with_flow(flow.bytes());
                let to = server.addr();
                let flow = match client {
                    Client::Plain(s) => {
                        let engine = be.history.engine(be.engine);
                        flow.set_server(&up.set.stats.traffic, server.index, to, engine.name());
                        let trip = Trip {
                            info: FlowInfo {
                                frontend: fe.name.clone(),
                                backend: up.set.backend.clone(),
                                server: server_name.clone(),
                                src: origin.src,
                                dst: origin.dst,
                                accepted,
                                age: Duration::ZERO,
                                bytes_up: 0,
                                bytes_down: 0,
                                idle_for: Duration::ZERO,
                                ended: None,
                            },
                            started,
                        };
                        let moved =
                            movable(engine, s, c.stream, fe.flow, live, trip, Resume::default());
                        match Box::pin(moved).await {
                            Some(flow) => flow,
                            // The next process owns it now and logs it at its end.
                            None => return,
                        }
                    }
                    // Boxed as the connect is: a plain flow must not hold a TLS flow's state.
                    Client::Tls(t) => {
                        let engine = if t.is_kernel() { "ktls" } else { "tls" };
                        flow.set_server(&up.set.stats.traffic, server.index, to, engine);
                        Box::pin(crate::tls::forward_counted(t, c.stream, fe.flow, live)).await
                    }
                };
                count_flow(be, &c.claim.server, &flow, started.elapsed());
                record.bytes_down = flow.bytes_down;
                record.term = flow.end.term();
                record.total = started.elapsed();
                if fe.dont_log_null && flow.bytes_up == 0 && flow.bytes_down == 0 {
                    return;
                }
                drop(c.claim);
            }
            Err(ConnectFailure::NoServer) => {
                Counters::bump(&up.set.stats.traffic.failed_conn);
                record.total = started.elapsed();
                log::warn!("backend {} has no server available!", up.set.backend);
            }
            Err(ConnectFailure::Failed(f)) if f.queue_timeout => {
                // No server was assigned: HAProxy logs `<NOSRV>` (the connection error is
                // counted where the queue expired, in `connect::reserve`).
                record.queue_wait = Some(f.queue_wait);
                record.term = f.term();
                record.total = started.elapsed();
            }
            Err(ConnectFailure::Failed(f)) => {
                server_name = f.server.name.clone();
                record.server = &server_name;
                record.retries = f.retries;
                record.queue_wait = Some(f.queue_wait);
                record.term = f.term();
                record.total = started.elapsed();
            }
        }
        fe.access_log.send_as(LineFormat::Tcp, &record);
    }
}

/// Where a flow comes from, for the process it may move to.
pub(super) struct Trip {
    /// Its figures as of its start here (a resumed flow's carry its past).
    pub info: FlowInfo,
    /// When it started in this process.
    pub started: Instant,
}

/// A plain flow, which a binary upgrade may move to the next process: `None` once it left
/// (the new process owns it, logs and counts it), else its figures at its end here. A flow
/// the next process did not take resumes here at once, without a gate: it is not offered
/// again.
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn` moves
/// its arguments into locals and keeps room for both in its state (about 330 bytes here, in
/// every flow: issue #14), where the block uses what it captured in place.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
pub(super) fn movable<'a>(
    engine: Engine,
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    live: Progress<'a>,
    trip: Trip,
    from: Resume<'a>,
) -> impl std::future::Future<Output = Option<FlowStats>> + use<'a> {
    async move {
        let gate = Gate::new();
        let resume = Resume {
            gate: Some(&gate),
            ..from
        };
        let paused = match forward::forward_movable(engine, client, server, p, live, resume).await {
            Forwarded::Ended(stats) => return Some(stats),
            Forwarded::Paused(paused) => paused,
        };
        let info = FlowInfo {
            age: trip.info.age + trip.started.elapsed(),
            bytes_up: paused.bytes_up,
            bytes_down: paused.bytes_down,
            idle_for: paused.idle_for,
            ended: paused.ended,
            ..trip.info
        };
        if handover::depart(&paused.client, &paused.server, info).await {
            return None;
        }
        let again = Resume {
            gate: None,
            bytes_up: paused.bytes_up,
            bytes_down: paused.bytes_down,
            idle_for: paused.idle_for,
            ended: paused.ended,
        };
        let (client, server) = (paused.client, paused.server);
        match forward::forward_movable(engine, client, server, p, live, again).await {
            Forwarded::Ended(stats) => Some(stats),
            // Without a gate a flow does not pause; were it to, it ends here.
            Forwarded::Paused(p) => Some(FlowStats {
                bytes_up: p.bytes_up,
                bytes_down: p.bytes_down,
                end: FlowEnd::Closed,
            }),
        }
    }
}

/// Flows and who ended the flow, on the backend and the server. The bytes are already in
/// every row: the engine added them as it moved them (`Progress`).
pub(super) fn count_flow(be: &Backend, server: &Server, flow: &FlowStats, took: Duration) {
    be.history.record(took, flow.bytes_up + flow.bytes_down);
    for c in [&be.upstream.set.stats.traffic, &server.stats.traffic] {
        c.timings.total.add(took.as_millis() as u64);
        Counters::bump(&c.flows);
        match flow.end {
            FlowEnd::Closed => {}
            // A truncated TLS stream is logged `CD`, so it is counted where `CD` lines are.
            FlowEnd::ClientAbort | FlowEnd::ClientTruncated | FlowEnd::ClientTimeout => {
                Counters::bump(&c.client_aborts)
            }
            // HAProxy counts server aborts in the response errors too.
            FlowEnd::ServerAbort | FlowEnd::ServerTimeout => {
                Counters::bump(&c.server_aborts);
                Counters::bump(&c.failed_resp);
            }
        }
    }
}

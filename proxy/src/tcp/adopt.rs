//! A `mode tcp` flow taken over from the previous process in a binary upgrade: it resumes on
//! this process's engine for its backend (re-registered in this process's sockmap where that
//! is the engine), counts against this process's limits and figures, and is logged here at
//! its end with its whole life (accept date, total time, bytes from both processes).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpStream;

use super::handover::FlowInfo;
use super::session::{count_flow, movable, Trip};
use super::Frontend;
use crate::counters::{Live, FLOWS, PROCESS};
use crate::forward::{Progress, Resume};
use crate::log::{LineFormat, SessionRecord};

/// Runs an adopted flow to its end (or to the next upgrade). `client`/`server`: its sockets,
/// in blocking mode as this process's own accepted sockets are.
pub async fn run_adopted(client: TcpStream, server: TcpStream, info: FlowInfo, fe: Arc<Frontend>) {
    let started = Instant::now();
    let _active = Live::enter(&PROCESS.tcp_sessions);
    let _fe = Live::enter(&fe.conns);
    let be = &fe.backend;
    let up = &be.upstream;
    let _be = Live::enter(&up.conns);
    let _fe_session = fe.stats.open_session();
    let _be_session = up.set.stats.traffic.open_session();
    let engine = be.history.engine(be.engine);
    // Its line in `show sess`, as this process's own flows have (its age starts again here).
    let flow = FLOWS.enter(info.src, &fe.stats, engine.name());
    // Its bytes from both processes, as its log line will say.
    let bytes = flow.bytes();
    bytes.up.fetch_add(info.bytes_up, Ordering::Relaxed);
    bytes.down.fetch_add(info.bytes_down, Ordering::Relaxed);
    // The server, if this configuration still has it: its counts and figures go on.
    let claim = up.set.server(&info.server).map(|s| s.claim());
    let live = match &claim {
        Some(c) => {
            let s = &c.server;
            flow.set_server(&up.set.stats.traffic, s.index, s.addr(), engine.name());
            Progress::to(&fe.stats, &up.set.stats.traffic, &s.stats.traffic).with_flow(flow.bytes())
        }
        None => Progress::none().with_flow(flow.bytes()),
    };
    let resume = Resume {
        gate: None,
        bytes_up: info.bytes_up,
        bytes_down: info.bytes_down,
        idle_for: info.idle_for,
        ended: info.ended,
    };
    let trip = Trip {
        info: info.clone(),
        started,
    };
    let moved = movable(engine, client, server, fe.flow, live, trip, resume);
    let Some(flow) = Box::pin(moved).await else {
        return;
    };
    let total = info.age + started.elapsed();
    if let Some(c) = &claim {
        count_flow(be, &c.server, &flow, total);
    }
    if fe.dont_log_null && flow.bytes_up == 0 && flow.bytes_down == 0 {
        return;
    }
    let record = SessionRecord {
        client: info.src,
        accepted: info.accepted,
        frontend: &fe.name,
        backend: &up.set.backend,
        server: &info.server,
        queue_wait: Some(Duration::ZERO),
        connect: Some(Duration::ZERO),
        total,
        bytes_down: flow.bytes_down,
        term: flow.end.term(),
        active: PROCESS.tcp_sessions.load(Ordering::Relaxed),
        frontend_conns: fe.conns.load(Ordering::Relaxed),
        backend_conns: up.conns.load(Ordering::Relaxed),
        server_conns: claim.as_ref().map_or(0, |c| c.server.current() as usize),
        retries: 0,
    };
    fe.access_log.send_as(LineFormat::Tcp, &record);
}

//! Flows the kernel's NAT carries, as the conntrack events tell them: a NEW event opens a
//! session on the frontend, backend and server rows, enters the flow in the process's flow
//! table (`show sess` shows it with engine `nat`) and counts it against the server (its
//! `maxconn` and leastconn read that count); DESTROY closes it, adds its bytes and sends its
//! log line. Bytes are conntrack's: whole IP packets, headers included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::counters::{Counters, Flow, FLOWS};
use crate::log::{Cause, Phase, SessionRecord, TermState};
use crate::upstream::{Server, ServerClaim};

use super::event::{Count, CtEvent, Kind, TCP_STATE_CLOSE, TCP_STATE_TIME_WAIT};
use super::NatFrontend;

/// The most flows followed at once; beyond it a NEW event is counted but not followed (its
/// DESTROY then logs what conntrack says, without the flow-table entry).
const MAX_FLOWS: usize = 1 << 20;

struct Live {
    fe: Arc<NatFrontend>,
    claim: ServerClaim,
    /// The flow table's entry, while it is open.
    flow: Flow,
    started: SystemTime,
    started_at: Instant,
    /// Seen closed: TIME_WAIT after FINs both ways, or CLOSE after a reset (a half-closed
    /// flow may run on for long; its entry changes state again when it closes).
    closing: bool,
}

/// A closed entry lives `CLOSED_SECS` (1 s, `ruleset.rs`) before it expires; a dump this
/// long after the close evicts it.
const REAP_AFTER: Duration = Duration::from_millis(1200);

#[derive(Default)]
pub struct Tracker {
    live: HashMap<u32, Live>,
    /// Followed flows seen closing, oldest first, for [`Tracker::reap_due`].
    closing: std::collections::VecDeque<(Instant, u32)>,
    /// Events the kernel could not deliver (receive buffer overflow).
    pub overruns: u64,
}

impl Tracker {
    /// A NEW event of `fe`'s flow.
    pub fn opened(&mut self, ev: &CtEvent, fe: &Arc<NatFrontend>) {
        let Some(server) = server_of(fe, ev.server) else {
            return;
        };
        if self.live.len() >= MAX_FLOWS || self.live.contains_key(&ev.id) {
            return;
        }
        fe.stats.accepted();
        for c in rows(fe, &server) {
            c.open_detached();
        }
        let flow = FLOWS.enter(ev.client, &fe.stats, "nat");
        flow.set_server(&fe.set.stats.traffic, server.index, ev.server, "nat");
        self.live.insert(
            ev.id,
            Live {
                fe: fe.clone(),
                claim: server.claim(),
                flow,
                started: ev.started_ns.map_or_else(SystemTime::now, from_ns),
                started_at: Instant::now(),
                closing: false,
            },
        );
        self.seen(ev);
    }

    /// Any event or dumped entry of a flow: one seen closing for the first time is queued for
    /// [`Tracker::reap_due`].
    pub fn seen(&mut self, ev: &CtEvent) {
        let Some(live) = self.live.get_mut(&ev.id) else {
            return;
        };
        if live.closing || ev.tcp_state.is_none_or(|s| s < TCP_STATE_TIME_WAIT) {
            return;
        }
        live.closing = true;
        self.closing.push_back((Instant::now(), ev.id));
    }

    /// Whether a followed flow closed long enough ago for its entry to have expired: a dump
    /// now evicts it, and its DESTROY (and log line) follows.
    pub fn reap_due(&mut self) -> bool {
        while let Some((_, id)) = self.closing.front() {
            if self.live.contains_key(id) {
                break;
            }
            self.closing.pop_front();
        }
        self.closing
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= REAP_AFTER)
    }

    /// After a dump: a flow it should have evicted but whose DESTROY has not come yet (the
    /// dump walked its bucket a moment before it expired) is given one more period.
    pub fn reaped(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .closing
            .iter()
            .take_while(|(at, _)| at.elapsed() >= REAP_AFTER)
            .map(|(_, id)| *id)
            .collect();
        self.closing.drain(..due.len());
        for id in due {
            if self.live.contains_key(&id) {
                self.closing.push_back((now, id));
            }
        }
    }

    /// A dumped entry of a followed flow: its bytes so far, for `show sess`.
    pub fn progress(&mut self, ev: &CtEvent) {
        if let Some(live) = self.live.get(&ev.id) {
            let bytes = live.flow.bytes();
            if let Some(up) = ev.up {
                bytes
                    .up
                    .store(up.bytes, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(down) = ev.down {
                bytes
                    .down
                    .store(down.bytes, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A DESTROY event. A followed flow ends against the frontend that opened it (a reload
    /// may have removed or renamed that one since); another is counted against `fe`, the
    /// frontend its mark names now, and ignored when none does.
    pub fn closed(&mut self, ev: &CtEvent, fe: Option<&Arc<NatFrontend>>) {
        debug_assert_eq!(ev.kind, Kind::Destroy);
        let up = ev.up.unwrap_or_default();
        let down = ev.down.unwrap_or_default();
        let (fe, server, started, total) = match self.live.remove(&ev.id) {
            Some(live) => {
                let server = live.claim.server.clone();
                for c in rows(&live.fe, &server) {
                    c.close_detached();
                }
                (
                    live.fe,
                    Some(server),
                    live.started,
                    live.started_at.elapsed(),
                )
            }
            // Made before this process followed it (a binary upgrade, a restart).
            None => {
                let Some(fe) = fe else { return };
                let started = ev.started_ns.map_or_else(SystemTime::now, from_ns);
                let total = SystemTime::now()
                    .duration_since(started)
                    .unwrap_or_default();
                (fe.clone(), server_of(fe, ev.server), started, total)
            }
        };
        if let Some(server) = &server {
            for c in rows(&fe, server) {
                c.add_bytes(up.bytes, down.bytes);
                Counters::bump(&c.flows);
            }
        } else {
            fe.stats.add_bytes(up.bytes, down.bytes);
        }
        if fe.dont_log_null && headers_only(up) && headers_only(down) {
            return;
        }
        let line = FlowLine {
            record: record(ev, &fe, server.as_deref(), started, total, down),
            up,
            down,
        };
        fe.access_log.send_flow_line(line);
    }
}

/// `option dontlognull` from IP counts: every packet could have been a bare header (60
/// bytes: IPv4 and TCP with the options of a SYN). A flow that carried a few bytes within
/// that slack is taken for a null one too: conntrack does not count payload apart.
fn headers_only(c: Count) -> bool {
    c.bytes <= c.packets.saturating_mul(60)
}

/// The frontend, backend and server rows a flow counts in.
fn rows<'a>(fe: &'a NatFrontend, server: &'a Server) -> [&'a Counters; 3] {
    [&fe.stats, &fe.set.stats.traffic, &server.stats.traffic]
}

/// The server the NAT chose: conntrack writes addresses as the kernel sees them, an
/// IPv4-mapped server address as IPv4.
fn server_of(fe: &NatFrontend, addr: SocketAddr) -> Option<Arc<Server>> {
    fe.set
        .servers()
        .iter()
        .find(|s| super::family::plain(s.addr()) == addr)
        .cloned()
}

fn from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn record<'a>(
    ev: &CtEvent,
    fe: &'a NatFrontend,
    server: Option<&'a Server>,
    started: SystemTime,
    total: Duration,
    down: Count,
) -> SessionRecord<'a> {
    // An RST leaves the entry in CLOSE; a FIN exchange in TIME_WAIT or later.
    let term = if ev.tcp_state == Some(TCP_STATE_CLOSE) {
        TermState::new(Cause::Client, Phase::Data)
    } else {
        TermState::NORMAL
    };
    SessionRecord {
        client: ev.client,
        accepted: started,
        frontend: &fe.name,
        backend: &fe.set.backend,
        server: server.map_or("<NOSRV>", |s| s.name.as_str()),
        queue_wait: Some(Duration::ZERO),
        connect: None,
        total,
        bytes_down: down.bytes,
        term,
        active: 0,
        frontend_conns: fe.stats.current.load(std::sync::atomic::Ordering::Relaxed) as usize,
        backend_conns: fe
            .set
            .stats
            .traffic
            .current
            .load(std::sync::atomic::Ordering::Relaxed) as usize,
        server_conns: server.map_or(0, |s| s.current() as usize),
        retries: 0,
    }
}

/// HAProxy's tcplog fields, then what a NAT flow has that they have no place for:
/// `nat up=PACKETS/BYTES down=PACKETS/BYTES` (IP bytes each way).
struct FlowLine<'a> {
    record: SessionRecord<'a>,
    up: Count,
    down: Count,
}

impl std::fmt::Display for FlowLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} nat up={}/{} down={}/{}",
            self.record, self.up.packets, self.up.bytes, self.down.packets, self.down.bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    pub(super) fn frontend_for_reap() -> Arc<NatFrontend> {
        frontend()
    }

    pub(super) fn event_for_reap(kind: Kind, id: u32) -> CtEvent {
        event(kind, id)
    }

    fn frontend() -> Arc<NatFrontend> {
        let cfg = crate::config::parse_str(
            "backend be\n mode tcp\n server s1 10.0.3.2:1935\n server s2 10.0.4.2:1935\n",
            std::path::Path::new("flows.cfg"),
        )
        .expect("cfg");
        let set = crate::upstream::ServerSet::from_config(cfg.proxy_backend("be").expect("be"));
        Arc::new(NatFrontend {
            name: "rtmp".to_string(),
            binds: vec!["0.0.0.0:1935".parse().unwrap()],
            set: Arc::new(set),
            stats: Arc::default(),
            access_log: Default::default(),
            idle: None,
            fin: None,
            dont_log_null: false,
        })
    }

    fn event(kind: Kind, id: u32) -> CtEvent {
        CtEvent {
            kind,
            id,
            mark: 0xa5a5_0001,
            client: "10.0.1.2:40000".parse().unwrap(),
            dst: "10.0.1.1:1935".parse().unwrap(),
            server: "10.0.4.2:1935".parse().unwrap(),
            up: Some(Count {
                packets: 10,
                bytes: 5_000,
            }),
            down: Some(Count {
                packets: 9,
                bytes: 70_000,
            }),
            started_ns: None,
            tcp_state: None,
        }
    }

    #[test]
    fn a_flow_is_counted_from_new_to_destroy_even_after_its_frontend_left() {
        let fe = frontend();
        let s2 = fe.set.server("s2").expect("s2");
        let mut t = Tracker::default();
        t.opened(&event(Kind::New, 7), &fe);
        t.opened(&event(Kind::New, 7), &fe);
        assert_eq!(s2.current(), 1, "counted once against the server NAT chose");
        assert_eq!(fe.stats.current.load(Relaxed), 1);
        let listed = FLOWS
            .snapshot()
            .into_iter()
            .filter(|f| f.meta.engine == "nat" && f.meta.client == event(Kind::New, 7).client)
            .count();
        assert_eq!(listed, 1, "in show sess");
        t.progress(&event(Kind::New, 7));
        // A reload removed the frontend: the flow still ends against the one that opened it.
        t.closed(&event(Kind::Destroy, 7), None);
        assert_eq!(s2.current(), 0);
        assert_eq!(fe.stats.current.load(Relaxed), 0);
        assert_eq!(fe.stats.bytes_in.load(Relaxed), 5_000);
        assert_eq!(fe.stats.bytes_out.load(Relaxed), 70_000);
        assert_eq!(s2.stats.traffic.bytes_out.load(Relaxed), 70_000);
        // An unknown flow with no frontend is nobody's.
        t.closed(&event(Kind::Destroy, 8), None);
        assert_eq!(fe.stats.bytes_in.load(Relaxed), 5_000);
        // An unknown flow of a frontend (made before an upgrade) is counted at its end.
        t.closed(&event(Kind::Destroy, 9), Some(&fe));
        assert_eq!(fe.stats.bytes_in.load(Relaxed), 10_000);
    }
}

#[cfg(test)]
mod reap_tests {
    use super::*;

    #[test]
    fn a_closed_flow_asks_for_a_dump_once_its_entry_expired() {
        let fe = super::tests::frontend_for_reap();
        let mut t = Tracker::default();
        let mut ev = super::tests::event_for_reap(Kind::New, 21);
        t.opened(&ev, &fe);
        assert!(!t.reap_due(), "an open flow needs no dump");
        ev.tcp_state = Some(4); // FIN_WAIT: half-closed, may run on
        t.seen(&ev);
        assert!(t.closing.is_empty());
        ev.tcp_state = Some(TCP_STATE_TIME_WAIT);
        t.seen(&ev);
        t.seen(&ev);
        assert_eq!(t.closing.len(), 1, "queued once");
        assert!(!t.reap_due(), "not before its entry expired");
        t.closing[0].0 -= REAP_AFTER;
        assert!(t.reap_due());
        t.reaped();
        assert!(!t.reap_due(), "given one more period");
        t.closed(&super::tests::event_for_reap(Kind::Destroy, 21), Some(&fe));
        assert!(!t.reap_due());
        assert!(t.closing.is_empty(), "gone with its flow");
    }
}

//! A plain-data copy of the registry at one instant. Every renderer (HTML, CSV, JSON,
//! Prometheus) works from this copy, so they agree with each other and can be tested on
//! hand-made values without live atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Balance, Mode, ProxyKind};
use crate::upstream::{Admin, Server, ServerSet, ServerState};

use crate::counters::{now_ms, CheckStatus, Counters, Process, SlidingAvg, PROCESS};
use crate::plan::{ProxyEntry, Registry};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    pub current: u64,
    pub max: u64,
    pub limit: Option<u64>,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub denied_req: u64,
    pub denied_resp: u64,
    pub failed_req: u64,
    pub failed_conn: u64,
    pub failed_resp: u64,
    pub retries: u64,
    pub redispatches: u64,
    pub http_responses: [u64; 6],
    pub http_requests: u64,
    pub client_aborts: u64,
    pub server_aborts: u64,
    pub queue_current: u64,
    pub queue_max: u64,
    pub connections: u64,
    pub connect_attempts: u64,
    pub flows: u64,
    /// `udp-lb` rows: datagrams each way, and those dropped.
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub datagrams_dropped: u64,
    pub internal_errors: u64,
    /// Seconds since the last session; `None` if there was none.
    pub last_session_secs: Option<u64>,
    pub session_rate: u64,
    pub session_rate_max: u64,
    pub connection_rate: u64,
    pub connection_rate_max: u64,
    pub request_rate: u64,
    pub request_rate_max: u64,
    /// Averages and peaks in milliseconds: queue, connect, response, total.
    pub times_avg: [u64; 4],
    pub times_max: [u64; 4],
}

impl Traffic {
    fn read(c: &Counters, now: u64) -> Traffic {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = get(&c.last_session_ms);
        Traffic {
            current: get(&c.current),
            max: get(&c.max),
            limit: None,
            total: get(&c.total),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            denied_req: get(&c.denied_req),
            denied_resp: get(&c.denied_resp),
            failed_req: get(&c.failed_req),
            failed_conn: get(&c.failed_conn),
            failed_resp: get(&c.failed_resp),
            retries: get(&c.retries),
            redispatches: get(&c.redispatches),
            http_responses: c.http_responses.each_ref().map(get),
            http_requests: get(&c.http_requests),
            client_aborts: get(&c.client_aborts),
            server_aborts: get(&c.server_aborts),
            queue_current: get(&c.queue_current),
            queue_max: get(&c.queue_max),
            connections: get(&c.connections),
            connect_attempts: get(&c.connect_attempts),
            flows: get(&c.flows),
            datagrams_in: get(&c.datagrams_in),
            datagrams_out: get(&c.datagrams_out),
            datagrams_dropped: get(&c.datagrams_dropped),
            internal_errors: get(&c.internal_errors),
            last_session_secs: (last > 0).then(|| now.saturating_sub(last) / 1000),
            session_rate: c.session_rate.read(now),
            session_rate_max: c.session_rate.max(),
            connection_rate: c.connection_rate.read(now),
            connection_rate_max: c.connection_rate.max(),
            request_rate: c.request_rate.read(now),
            request_rate_max: c.request_rate.max(),
            times_avg: timing(c, SlidingAvg::average),
            times_max: timing(c, SlidingAvg::max),
        }
    }
}

fn timing(c: &Counters, read: fn(&SlidingAvg) -> u64) -> [u64; 4] {
    let t = &c.timings;
    [&t.queue, &t.connect, &t.response, &t.total].map(read)
}

/// A server's status in HAProxy's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Up,
    Down,
    Maint,
    /// UP with weight 0: takes no new traffic.
    Drain,
    /// UP and not checked.
    NoCheck,
    /// UP, `done` of `needed` failed checks towards DOWN (shown as the checks left, as
    /// HAProxy: `UP 2/3` after one failure with `fall 3`).
    GoingDown {
        done: u32,
        needed: u32,
    },
    /// DOWN, `done` of `needed` passed checks towards UP.
    GoingUp {
        done: u32,
        needed: u32,
    },
}

impl Status {
    /// `show stat`'s status text (`UP`, `DOWN 1/2`, `no check`, …).
    pub fn text(self) -> String {
        match self {
            Status::Up => "UP".into(),
            Status::Down => "DOWN".into(),
            Status::Maint => "MAINT".into(),
            Status::Drain => "DRAIN".into(),
            Status::NoCheck => "no check".into(),
            Status::GoingDown { done, needed } => {
                format!("UP {}/{needed}", needed.saturating_sub(done))
            }
            Status::GoingUp { done, needed } => format!("DOWN {done}/{needed}"),
        }
    }

    /// The exporter's `state` label: DOWN, UP, MAINT, DRAIN or NOLB.
    pub fn prometheus_state(self) -> &'static str {
        match self {
            Status::Up | Status::NoCheck | Status::GoingDown { .. } => "UP",
            Status::Down | Status::GoingUp { .. } => "DOWN",
            Status::Maint => "MAINT",
            Status::Drain => "DRAIN",
        }
    }

    pub fn is_up(self) -> bool {
        self.prometheus_state() == "UP" || self == Status::Drain
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckView {
    pub status: CheckStatus,
    pub duration_ms: u64,
    pub rise: u32,
    pub fall: u32,
    /// HAProxy's `check_health`: 0 (DOWN) ..= rise+fall-1 (UP).
    pub health: u32,
    pub failures: u64,
    /// HAProxy's `check_code`: the HTTP status of the last check, for L7OK and L7STS.
    pub code: Option<u16>,
    /// HAProxy's `last_chk`: the last check's error text, empty for a pass.
    pub info: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerView {
    pub name: String,
    pub id: u32,
    pub addr: String,
    pub status: Status,
    pub weight: u32,
    pub backup: bool,
    pub check: Option<CheckView>,
    pub last_change_secs: u64,
    pub downtime_secs: u64,
    pub downs: u64,
    /// `maxqueue` (HAProxy's `qlimit`).
    pub queue_limit: Option<u32>,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendView {
    pub up: bool,
    /// Sum of the weights of the usable servers.
    pub weight: u32,
    pub active: u32,
    pub backup: u32,
    pub last_change_secs: u64,
    pub downtime_secs: u64,
    pub downs: u64,
    pub engine: Option<&'static str>,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyView {
    pub name: String,
    pub id: u32,
    pub description: Option<String>,
    pub kind: ProxyKind,
    pub mode: Mode,
    pub balance: Balance,
    pub frontend: Option<Traffic>,
    pub servers: Vec<ServerView>,
    pub backend: Option<BackendView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessView {
    pub pid: u32,
    pub version: &'static str,
    pub uptime_secs: u64,
    pub start_secs: u64,
    pub threads: u32,
    pub maxconn: u32,
    pub current_connections: u64,
    pub total_connections: u64,
    pub driver: Option<&'static str>,
    pub features: Vec<(&'static str, bool)>,
    pub dropped_logs: u64,
    /// `node` and `description` of the `global` section.
    pub node: Option<String>,
    pub description: Option<String>,
}

/// Per-engine totals for the `proxy_forward_*` figures.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineView {
    pub name: &'static str,
    pub flows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub process: ProcessView,
    pub proxies: Vec<ProxyView>,
}

impl Snapshot {
    pub fn take(reg: &Registry) -> Snapshot {
        let now = now_ms();
        let proxies: Vec<ProxyView> = reg.proxies().iter().map(|p| proxy(p, now)).collect();
        let fronts = || proxies.iter().filter_map(|p| p.frontend.as_ref());
        let info = reg.process();
        let process = ProcessView {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: now.saturating_sub(info.start_ms) / 1000,
            start_secs: info.start_ms / 1000,
            threads: info.threads(),
            maxconn: info.maxconn(),
            current_connections: fronts().map(|t| t.current).sum(),
            total_connections: fronts().map(|t| t.connections).sum(),
            driver: info.driver(),
            features: info.features().to_vec(),
            dropped_logs: Process::read(&PROCESS.dropped_log_lines),
            node: info.node().map(str::to_string),
            description: info.description().map(str::to_string),
        };
        Snapshot { process, proxies }
    }

    /// Flows and bytes per forwarding engine, from the backends that use each engine.
    pub fn engines(&self) -> Vec<EngineView> {
        let mut out: Vec<EngineView> = Vec::new();
        for b in self.proxies.iter().filter_map(|p| p.backend.as_ref()) {
            let Some(name) = b.engine else { continue };
            let pos = match out.iter().position(|e| e.name == name) {
                Some(pos) => pos,
                None => {
                    out.push(EngineView {
                        name,
                        flows: 0,
                        bytes_in: 0,
                        bytes_out: 0,
                    });
                    out.len() - 1
                }
            };
            out[pos].flows += b.traffic.flows;
            out[pos].bytes_in += b.traffic.bytes_in;
            out[pos].bytes_out += b.traffic.bytes_out;
        }
        out
    }
}

fn proxy(p: &ProxyEntry, now: u64) -> ProxyView {
    let frontend = p.frontend.as_ref().map(|c| Traffic {
        limit: p.frontend_limit().map(u64::from),
        ..Traffic::read(c, now)
    });
    let servers = p
        .backend
        .as_ref()
        .map(|set| {
            set.servers()
                .iter()
                .map(|s| server(s, now))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let backend = p.backend.as_ref().map(|set| {
        let mut b = backend(set, &servers, now);
        b.traffic.limit = p.fullconn.map(u64::from);
        b
    });
    ProxyView {
        name: p.name.clone(),
        id: p.id,
        description: p.description.clone(),
        kind: p.kind,
        mode: p.mode,
        balance: p.balance,
        frontend,
        servers,
        backend,
    }
}

fn server(s: &Server, now: u64) -> ServerView {
    let check = s.params.check.then(|| check(s));
    let mut traffic = Traffic::read(&s.stats.traffic, now);
    // `balance::Server` counts its own connections; the stats copy only tracks the peak.
    traffic.current = u64::from(s.current());
    traffic.total = s.total();
    traffic.limit = s.maxconn.map(u64::from);
    let t = &s.stats.transitions;
    ServerView {
        name: s.name.clone(),
        id: u32::try_from(s.index + 1).unwrap_or(u32::MAX),
        addr: s.addr().to_string(),
        status: status(s, check.as_ref()),
        weight: s.weight(),
        backup: s.backup,
        check,
        last_change_secs: s.since_change().as_secs(),
        downtime_secs: t.downtime_ms(now) / 1000,
        downs: t.downs(),
        queue_limit: s.params.maxqueue,
        traffic,
    }
}

fn check(s: &Server) -> CheckView {
    let c = &s.stats.check;
    let (rise, fall) = (s.params.rise.max(1), s.params.fall.max(1));
    let streak = c.streak();
    let health = if s.state() == ServerState::Up {
        (rise.saturating_add(fall) - 1).saturating_sub(streak)
    } else {
        streak.min(rise.saturating_sub(1))
    };
    CheckView {
        status: c.status(),
        duration_ms: c.duration_ms(),
        rise,
        fall,
        health,
        failures: c.failures(),
        code: c.http_code(),
        info: c.info(),
    }
}

fn status(s: &Server, check: Option<&CheckView>) -> Status {
    match s.state() {
        ServerState::Maint => Status::Maint,
        ServerState::Up if s.weight() == 0 || s.admin() == Admin::Drain => Status::Drain,
        ServerState::Up => match check {
            None => Status::NoCheck,
            Some(_) if s.stats.check.streak() == 0 => Status::Up,
            Some(c) => Status::GoingDown {
                done: s.stats.check.streak(),
                needed: c.fall,
            },
        },
        ServerState::Down => match check {
            Some(c) if s.stats.check.streak() > 0 => Status::GoingUp {
                done: s.stats.check.streak(),
                needed: c.rise,
            },
            _ => Status::Down,
        },
    }
}

fn backend(set: &ServerSet, servers: &[ServerView], now: u64) -> BackendView {
    let usable = |sv: &ServerView| sv.status.is_up() && sv.weight > 0;
    let active: Vec<&ServerView> = servers.iter().filter(|s| !s.backup).collect();
    let backups: Vec<&ServerView> = servers.iter().filter(|s| s.backup).collect();
    let weight_of =
        |list: &[&ServerView]| list.iter().filter(|s| usable(s)).map(|s| s.weight).sum();
    let active_weight: u32 = weight_of(&active);
    // As HAProxy: backup servers count only while no active server can take traffic.
    let weight = if active_weight > 0 {
        active_weight
    } else {
        weight_of(&backups)
    };
    let t = &set.stats.transitions;
    BackendView {
        up: servers.is_empty() || weight > 0,
        weight,
        active: active.iter().filter(|s| usable(s)).count() as u32,
        backup: backups.iter().filter(|s| usable(s)).count() as u32,
        last_change_secs: t.since_change_ms(now) / 1000,
        downtime_secs: t.downtime_ms(now) / 1000,
        downs: t.downs(),
        engine: set.stats.engine(),
        traffic: Traffic::read(&set.stats.traffic, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::config;

    #[test]
    fn reads_live_state_and_counters() {
        let reg = Registry::from_config(&config());
        let set = reg.backend("backend_rtmp").expect("backend");
        set.servers()[1].set_state(ServerState::Down);
        let claim = set.servers()[0].claim();
        set.stats.traffic.add_bytes(10, 20);
        set.stats.set_engine("copy");
        let snap = Snapshot::take(&reg);
        let be = &snap.proxies[2];
        assert_eq!(be.servers[0].status, Status::Up);
        assert_eq!(be.servers[0].traffic.current, 1);
        assert_eq!(be.servers[0].traffic.total, 1);
        assert_eq!(be.servers[1].status, Status::Down);
        let view = be.backend.as_ref().expect("backend view");
        assert!(view.up);
        assert_eq!((view.active, view.weight), (1, 1));
        assert_eq!(view.traffic.bytes_out, 20);
        assert_eq!(
            snap.engines(),
            [EngineView {
                name: "copy",
                flows: 0,
                bytes_in: 10,
                bytes_out: 20
            }]
        );
        drop(claim);
    }

    #[test]
    fn rise_and_fall_progress_shows_in_status() {
        let reg = Registry::from_config(&config());
        let set = reg.backend("backend_rtmp").expect("backend");
        let s = &set.servers()[0];
        s.stats.check.record(CheckStatus::ConnRefused, 1, 1, true);
        assert_eq!(
            status(s, Some(&check(s))),
            Status::GoingDown { done: 1, needed: 3 }
        );
        assert_eq!(check(s).health, 3);
        assert_eq!(status(s, Some(&check(s))).text(), "UP 2/3");
        s.set_state(ServerState::Down);
        s.stats.check.record(CheckStatus::Ok, 1, 1, false);
        assert_eq!(status(s, Some(&check(s))).text(), "DOWN 1/2");
        assert_eq!(check(s).health, 1);
    }

    #[test]
    fn status_words() {
        assert_eq!(Status::NoCheck.text(), "no check");
        assert_eq!(Status::NoCheck.prometheus_state(), "UP");
        assert_eq!(Status::Drain.prometheus_state(), "DRAIN");
        assert_eq!(
            Status::GoingUp { done: 1, needed: 2 }.prometheus_state(),
            "DOWN"
        );
        assert!(Status::Drain.is_up());
        assert!(!Status::Maint.is_up());
    }
}

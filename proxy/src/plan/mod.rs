//! The one compile pass: a parsed config becomes an immutable [`Plan`] — frontends wired to
//! backends, listeners to open, the registry of live figures — and every problem on the way
//! is collected as `file:line: reason`, so `proxy -c` and the start both name them all in one
//! run. Compiling has no side effects: no socket is bound and no BPF program loaded here;
//! what the kernel offers comes in as [`Env`], probed by the caller.

mod registry;

#[cfg(test)]
pub(crate) use registry::TEST_CONFIG;
pub use registry::{ProxyEntry, Registry};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    Bind, Config, ConfigError, EngineChoice, HttpCheck, Loc, Mode, Proxy, ProxyKind, SslBind,
    Timeouts,
};
use crate::forward::{Engine, FlowHistory, FlowParams, IdleLimits, Probed};
use crate::http::{self, StatsPages};
use crate::log::AccessLog;
use crate::tcp::{Backend, Frontend};
use crate::tls;
use crate::upstream::{self, ServerSet};

/// One problem of the compile pass, tied to the line that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{loc}: {reason}")]
pub struct PlanError {
    pub loc: Loc,
    pub reason: String,
}

impl PlanError {
    fn at(loc: &Loc, reason: impl Into<String>) -> PlanError {
        PlanError {
            loc: loc.clone(),
            reason: reason.into(),
        }
    }
}

impl From<PlanError> for ConfigError {
    fn from(e: PlanError) -> ConfigError {
        ConfigError {
            file: e.loc.file,
            line: e.loc.line,
            reason: e.reason,
        }
    }
}

/// What the compile pass needs from outside the config: facts probed by the caller, and the
/// stats room's pages (a room above this one), made for the plan's registry.
pub struct Env<'a> {
    /// TLS sessions may be handed to the kernel (the kTLS probe said so).
    pub ktls: bool,
    /// What the forward engines' probe found on this kernel.
    pub engines: &'a Probed,
    pub pages: &'a dyn Fn(Arc<Registry>) -> Arc<dyn StatsPages>,
    /// On a reload, the running plan's registry: what the new one carries over from it.
    pub previous: Option<&'a Registry>,
}

/// What accepted connections of a bind are handed to.
#[derive(Clone)]
pub enum Service {
    Tcp(Arc<Frontend>),
    Http(Arc<http::Frontend>),
}

impl Service {
    pub fn name(&self) -> &str {
        match self {
            Service::Tcp(f) => &f.name,
            Service::Http(f) => &f.name,
        }
    }

    /// The frontend's figures (where a connection refused before its session counts).
    pub fn counters(&self) -> &crate::counters::Counters {
        match self {
            Service::Tcp(f) => &f.stats,
            Service::Http(f) => &f.counters,
        }
    }

    /// For the start-up report: where traffic goes.
    pub fn destination(&self) -> String {
        match self {
            Service::Tcp(f) => format!(
                "backend {} (forward engine {})",
                f.backend.upstream.set.backend,
                f.backend.engine.name()
            ),
            Service::Http(_) => "HTTP rules".to_string(),
        }
    }
}

pub struct PlannedBind {
    pub addr: SocketAddr,
    pub loc: Loc,
    pub service: Service,
    /// The section's `maxconn`, else the global one; the runtime turns it into a limit.
    pub maxconn: Option<u32>,
    /// The frontend's name: binds of one section share one limit.
    pub frontend: String,
    /// `bind … maxconn N`: this bind's own limit, under the frontend's.
    pub bind_maxconn: Option<u32>,
    /// `bind … name N`, for the start-up report.
    pub name: Option<String>,
    /// `v6only` / `v4v6`.
    pub v6only: Option<bool>,
    /// `ssl`: the handshake (and kTLS) in front of the service.
    pub tls: Option<Arc<tls::Acceptor>>,
    /// `accept-proxy`: how long the PROXY header may take (`timeout client`, else
    /// [`upstream::proxy_proto::DEFAULT_WAIT`]); it is read before the TLS handshake.
    pub accept_proxy: Option<Duration>,
}

/// A backend the health checker watches.
pub struct Checked {
    pub servers: Arc<ServerSet>,
    pub timeout: Option<Duration>,
    /// `timeout connect`: with `timeout check`, it bounds a check's connect.
    pub connect_timeout: Option<Duration>,
    /// `option httpchk`: the HTTP check its servers get instead of a bare connect.
    pub http: Option<HttpCheck>,
    /// `tune.bufsize`: the most bytes of a check's answer that are read.
    pub response_limit: usize,
}

pub struct Plan {
    pub binds: Vec<PlannedBind>,
    pub checked: Vec<Checked>,
    /// Lines served differently from what they say, for the start-up log (cipher names
    /// rustls lacks).
    pub notes: Vec<String>,
    /// Live figures of every section; the data path below holds the same `Arc`s.
    pub registry: Arc<Registry>,
    /// Certificate files the control thread watches for reloads.
    pub certs: tls::CertWatch,
    /// `udp-lb` sections, started by the runtime (`udp::Engines`).
    pub udp: Vec<Arc<crate::udp::UdpLb>>,
    /// `mode tcp` frontends whose backend says `forward-engine nat`: no listener; the
    /// runtime hands them to the `nat` room, which writes them into the kernel.
    pub nat: Vec<Arc<crate::nat::NatFrontend>>,
}

/// The compile pass's working state: what is built so far and every problem met.
struct Compiler<'c> {
    cfg: &'c Config,
    env: &'c Env<'c>,
    bufsize: usize,
    registry: Arc<Registry>,
    pages: Arc<dyn StatsPages>,
    certs: tls::Builder,
    /// One upstream side per backend, shared by every frontend (tcp or http) that uses it, so
    /// that health state and connection counts are the backend's, not a frontend's. `None`:
    /// the backend has a problem, already reported.
    upstreams: HashMap<String, Option<(Arc<upstream::Backend>, Engine)>>,
    tcp_backends: HashMap<String, Arc<Backend>>,
    plan_binds: Vec<PlannedBind>,
    checked: Vec<Checked>,
    udp: Vec<Arc<crate::udp::UdpLb>>,
    nat: Vec<Arc<crate::nat::NatFrontend>>,
    notes: Vec<String>,
    problems: Vec<PlanError>,
}

/// Compiles `cfg`. A config with refused lines still compiles as far as it goes (the config
/// room left those lines out and named them), so one run names the problems of both stages;
/// a reference the config room already reported as broken is skipped here, not named twice.
pub fn compile(cfg: &Config, env: &Env<'_>) -> Result<Plan, Vec<PlanError>> {
    let registry = Arc::new(match env.previous {
        Some(previous) => Registry::from_config_keeping(cfg, previous),
        None => Registry::from_config(cfg),
    });
    let mut c = Compiler {
        cfg,
        env,
        bufsize: cfg.global.bufsize(),
        pages: (env.pages)(registry.clone()),
        registry,
        certs: tls::Builder::new(env.ktls && cfg.global.ktls_allowed()),
        upstreams: HashMap::new(),
        tcp_backends: HashMap::new(),
        plan_binds: Vec::new(),
        checked: Vec::new(),
        udp: Vec::new(),
        nat: Vec::new(),
        notes: Vec::new(),
        problems: Vec::new(),
    };
    c.notes.extend(missing_timeouts(cfg));
    for fe in cfg.frontends() {
        if fe.mode == Mode::Tcp && c.goes_nat(fe) {
            c.nat_frontend(fe);
            continue;
        }
        let service = match fe.mode {
            Mode::Http => c.http_service(fe),
            Mode::Tcp => c.tcp_service(fe),
        };
        c.add_binds(fe, service);
    }
    // Backends no frontend routes to are still checked (and their engine line still
    // checked), as HAProxy does: their servers' state is on the stats page.
    for be in cfg.proxies.iter().filter(|p| p.kind.has_backend()) {
        c.upstream(be);
    }
    for lb in cfg.proxies.iter().filter(|p| p.kind == ProxyKind::UdpLb) {
        c.udp_lb(lb);
    }
    if !c.problems.is_empty() {
        c.problems
            .sort_by(|a, b| (&a.loc.file, a.loc.line).cmp(&(&b.loc.file, b.loc.line)));
        c.problems.dedup();
        return Err(c.problems);
    }
    Ok(Plan {
        binds: c.plan_binds,
        checked: c.checked,
        notes: c.notes,
        registry: c.registry,
        certs: c.certs.watch(),
        udp: c.udp,
        nat: c.nat,
    })
}

impl<'c> Compiler<'c> {
    /// The backend's upstream side and engine, built once; `None` when it has a problem.
    fn upstream(&mut self, be: &Proxy) -> Option<(Arc<upstream::Backend>, Engine)> {
        if let Some(u) = self.upstreams.get(&be.name) {
            return u.clone();
        }
        let built = self.build_upstream(be);
        self.upstreams.insert(be.name.clone(), built.clone());
        built
    }

    fn build_upstream(&mut self, be: &Proxy) -> Option<(Arc<upstream::Backend>, Engine)> {
        // The server set comes from the registry, so the stats page sees the set the data
        // path and the health checker use.
        let set = self
            .registry
            .backend(&be.name)
            .unwrap_or_else(|| Arc::new(ServerSet::from_config(be)));
        if be.engine == EngineChoice::Nat {
            // Its flows never reach a forward engine; the nat frontends hold the set.
            set.stats.set_engine("nat");
            self.push_checked(be, &set);
            return Some((Arc::new(upstream::Backend::new(be, set)), Engine::Copy));
        }
        // `forward-engine`: forcing an engine this kernel lacks is a config error rather
        // than a silent fallback.
        let engine = match crate::forward::choose_from(self.env.engines, be.engine) {
            Ok(e) => e,
            Err(reason) => {
                self.problems.push(PlanError::at(&be.loc, reason));
                return None;
            }
        };
        set.stats.set_engine(engine.name());
        self.push_checked(be, &set);
        Some((Arc::new(upstream::Backend::new(be, set)), engine))
    }

    fn push_checked(&mut self, be: &Proxy, set: &Arc<ServerSet>) {
        self.checked.push(Checked {
            servers: set.clone(),
            timeout: be.timeouts.check,
            connect_timeout: be.timeouts.connect,
            http: be.http_check.clone(),
            response_limit: self.bufsize,
        });
    }

    /// Whether the kernel's NAT carries `fe`'s flows: its backend says `forward-engine nat`.
    fn goes_nat(&mut self, fe: &'c Proxy) -> bool {
        self.tcp_backend_of(fe)
            .is_some_and(|be| be.engine == EngineChoice::Nat)
    }

    /// A nat frontend: no bind becomes a listener. What nat cannot carry was refused by the
    /// config room with its line.
    fn nat_frontend(&mut self, fe: &'c Proxy) {
        let Some(be) = self.tcp_backend_of(fe) else {
            return;
        };
        let Some((upstream, _)) = self.upstream(be) else {
            return;
        };
        let binds = fe.binds.iter().map(|b| b.addr).collect();
        self.nat.push(Arc::new(crate::nat::NatFrontend {
            name: fe.name.clone(),
            binds,
            set: upstream.set.clone(),
            stats: self.registry.frontend(&fe.name).unwrap_or_default(),
            access_log: AccessLog::for_proxy(fe),
            idle: nat_idle(&fe.timeouts, &be.timeouts),
            fin: nat_fin(&fe.timeouts, &be.timeouts),
            dont_log_null: fe.options.dontlognull,
        }));
    }

    /// A `udp-lb` section: its servers are checked like a backend's (TCP connect or
    /// `option httpchk` to the node's HTTP port, as SRT has no cheap probe).
    fn udp_lb(&mut self, lb: &Proxy) {
        let set = self
            .registry
            .backend(&lb.name)
            .unwrap_or_else(|| Arc::new(ServerSet::from_config(lb)));
        let counters = self.registry.frontend(&lb.name).unwrap_or_default();
        set.stats.set_engine("udp");
        self.checked.push(Checked {
            servers: set.clone(),
            timeout: lb.timeouts.check,
            connect_timeout: lb.timeouts.connect,
            http: lb.http_check.clone(),
            response_limit: self.bufsize,
        });
        let built = crate::udp::UdpLb::new(self.cfg, lb, set, counters);
        self.udp.push(Arc::new(built));
    }

    fn tcp_service(&mut self, fe: &'c Proxy) -> Option<Service> {
        let be = self.tcp_backend_of(fe)?;
        let backend = match self.tcp_backends.get(&be.name) {
            Some(b) => b.clone(),
            None => {
                let (upstream, engine) = self.upstream(be)?;
                let b = Arc::new(Backend {
                    upstream,
                    engine,
                    history: FlowHistory::default(),
                });
                self.tcp_backends.insert(be.name.clone(), b.clone());
                b
            }
        };
        Some(Service::Tcp(Arc::new(Frontend {
            name: fe.name.clone(),
            backend,
            flow: FlowParams {
                limits: flow_limits(&fe.timeouts, &be.timeouts),
                bufsize: self.bufsize,
            },
            dont_log_null: fe.options.dontlognull,
            conns: AtomicUsize::new(0),
            stats: self.registry.frontend(&fe.name).unwrap_or_default(),
            access_log: AccessLog::for_proxy(fe),
        })))
    }

    /// The one backend of a `mode tcp` frontend. Missing or wrong-mode references were named
    /// by the config room; what it cannot know (a condition on a tcp `use_backend`) is here.
    fn tcp_backend_of(&mut self, fe: &'c Proxy) -> Option<&'c Proxy> {
        if let Some(rule) = fe.use_backends.iter().find(|r| r.cond.is_some()) {
            self.problems.push(PlanError::at(
                &rule.loc,
                "conditional 'use_backend' in mode tcp is not supported yet",
            ));
            return None;
        }
        self.cfg.tcp_backend_of(fe)
    }

    /// An HTTP frontend: the upstream side of every backend it may route to, then its rules
    /// compiled by the HTTP room, which names every problem it finds.
    fn http_service(&mut self, fe: &Proxy) -> Option<Service> {
        let mut backends = HashMap::new();
        for name in http::backend_names(fe) {
            let Some(be) = self.cfg.proxy_backend(&name) else {
                continue; // named by the config room
            };
            if let Some(u) = self.upstream(be) {
                backends.insert(name, u);
            }
        }
        let wiring = http::Wiring {
            backends: &backends,
            counters: self.registry.frontend(&fe.name).unwrap_or_default(),
            own_backend: self.registry.backend(&fe.name),
            pages: self.pages.clone(),
        };
        match http::Frontend::build(self.cfg, fe, self.bufsize, wiring) {
            Ok(f) => Some(Service::Http(Arc::new(f))),
            Err(errors) => {
                self.problems.extend(errors.into_iter().map(|e| match e {
                    http::HttpError::Config { loc, reason } => PlanError { loc, reason },
                    other => PlanError::at(&fe.loc, other.to_string()),
                }));
                None
            }
        }
    }

    /// Certificates are loaded here, so a bad `crt` is named with the bind's line. Both modes
    /// serve `ssl` binds: RTMPS in `mode tcp`, HTTPS/WSS in `mode http`. Binds of a frontend
    /// with problems are still checked, for their own problems.
    fn add_binds(&mut self, fe: &Proxy, service: Option<Service>) {
        for b in &fe.binds {
            let tls = match &b.ssl {
                None => None,
                Some(ssl) => self.acceptor(fe, ssl, b),
            };
            let Some(service) = &service else { continue };
            if b.ssl.is_some() && tls.is_none() {
                continue;
            }
            self.plan_binds.push(PlannedBind {
                addr: b.addr,
                loc: b.loc.clone(),
                service: service.clone(),
                maxconn: fe.maxconn.or(self.cfg.global.maxconn),
                frontend: fe.name.clone(),
                bind_maxconn: b.maxconn,
                name: b.name.clone(),
                v6only: b.v6only,
                tls,
                accept_proxy: b.accept_proxy.then(|| {
                    fe.timeouts
                        .client
                        .unwrap_or(upstream::proxy_proto::DEFAULT_WAIT)
                }),
            });
        }
    }

    fn acceptor(&mut self, fe: &Proxy, ssl: &SslBind, b: &Bind) -> Option<Arc<tls::Acceptor>> {
        if let Some(note) = tls::notes(ssl) {
            self.notes
                .push(format!("bind {} at {}: {note}", b.addr, b.loc));
        }
        let ssl = &ssl.with_defaults(&self.cfg.global.ssl_bind_defaults);
        if !self.http_alpn(fe, ssl, b) {
            return None;
        }
        let timeout = fe.timeouts.client.unwrap_or(tls::DEFAULT_HANDSHAKE_TIMEOUT);
        match self.certs.acceptor(ssl, &b.loc, timeout) {
            Ok(a) => Some(a),
            Err(tls::TlsError::Config { loc, reason }) => {
                self.problems.push(PlanError { loc, reason });
                None
            }
            Err(other) => {
                self.problems.push(PlanError::at(&b.loc, other.to_string()));
                None
            }
        }
    }

    /// In `mode http` a bind's ALPN list may offer what the HTTP room speaks: `h2` (HTTP/2,
    /// `http/h2/`), `http/1.1`, `http/1.0`. Another name would let a client pick a protocol
    /// the proxy then does not speak, so it is refused with the line.
    fn http_alpn(&mut self, fe: &Proxy, ssl: &SslBind, b: &Bind) -> bool {
        const SPOKEN: [&str; 3] = ["h2", "http/1.1", "http/1.0"];
        if fe.mode != Mode::Http {
            return true;
        }
        let unknown: Vec<&str> = ssl
            .alpn
            .iter()
            .map(String::as_str)
            .filter(|p| !SPOKEN.contains(p))
            .collect();
        if unknown.is_empty() {
            return true;
        }
        self.problems.push(PlanError::at(
            &b.loc,
            format!(
                "alpn {} is not spoken in mode http (it speaks {})",
                unknown.join(","),
                SPOKEN.join(", ")
            ),
        ));
        false
    }
}

/// HAProxy's start-up warning for proxies without the timeouts that bound idle peers: such a
/// config works, but idle clients or servers are kept for ever. An HTTP request head is still
/// bounded (`http::DEFAULT_HEAD_TIMEOUT`).
fn missing_timeouts(cfg: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    for p in &cfg.proxies {
        let t = &p.timeouts;
        let mut missing = Vec::new();
        if p.kind == ProxyKind::UdpLb && t.client.is_none() {
            notes.push(format!(
                "udp-lb '{}' at {}: no 'timeout client': idle flows end after {} s",
                p.name,
                p.loc,
                crate::udp::DEFAULT_IDLE.as_secs()
            ));
            continue;
        }
        if p.kind.has_frontend() && t.client.is_none() {
            missing.push("client");
        }
        if p.kind.has_backend() && t.connect.is_none() {
            missing.push("connect");
        }
        if p.kind.has_backend() && t.server.is_none() {
            missing.push("server");
        }
        if missing.is_empty() {
            continue;
        }
        let heads = if p.mode == Mode::Http && p.kind.has_frontend() {
            let secs = http::DEFAULT_HEAD_TIMEOUT.as_secs();
            format!("; request heads are still bounded at {secs} s")
        } else {
            String::new()
        };
        notes.push(format!(
            "{} '{}' at {}: missing timeouts ({}): idle connections are kept for ever \
             (HAProxy warns the same){heads}",
            p.kind.keyword(),
            p.name,
            p.loc,
            missing.join(", "),
        ));
    }
    notes
}

/// A nat flow's idle timeout, as the other engines read the timeouts (forward/LIFECYCLE.md):
/// `timeout tunnel`, else the shorter of `timeout client` and `timeout server`. Conntrack
/// has one idle clock per flow, not one per side.
fn nat_idle(fe: &Timeouts, be: &Timeouts) -> Option<Duration> {
    be.tunnel.or(match (fe.client, be.server) {
        (Some(c), Some(s)) => Some(c.min(s)),
        (c, s) => c.or(s),
    })
}

/// How long a half-closed nat flow may stay: the shorter of `timeout client-fin` and
/// `timeout server-fin` (conntrack's FIN_WAIT, CLOSE_WAIT and LAST_ACK states).
fn nat_fin(fe: &Timeouts, be: &Timeouts) -> Option<Duration> {
    match (fe.client_fin, be.server_fin) {
        (Some(c), Some(s)) => Some(c.min(s)),
        (c, s) => c.or(s),
    }
}

fn flow_limits(fe: &Timeouts, be: &Timeouts) -> IdleLimits {
    IdleLimits::from_timeouts(&Timeouts {
        client: fe.client,
        client_fin: fe.client_fin,
        server: be.server,
        server_fin: be.server_fin,
        tunnel: be.tunnel,
        ..Timeouts::default()
    })
}

#[cfg(test)]
mod tests;

//! Turning the validated config into what the workers run: frontends wired to backends,
//! listeners to open, limits. Parts of a config this build cannot serve yet are reported here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::balance::ServerSet;
use crate::config::{Config, Loc, Mode, Proxy, Timeouts};
use crate::forward::{Engine, FlowParams, IdleLimits};
use crate::http;
use crate::log::AccessLog;
use crate::stats::Registry;
use crate::tcp::{Backend, Frontend};
use crate::tls;

use super::limit::ConnLimit;
use super::RuntimeError;

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

    /// For the start-up report: where traffic goes.
    pub fn destination(&self) -> String {
        match self {
            Service::Tcp(f) => format!(
                "backend {} (forward engine {})",
                f.backend.set.backend,
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
    pub limit: Arc<ConnLimit>,
    /// `ssl`: the handshake (and kTLS) in front of the service.
    pub tls: Option<Arc<tls::Acceptor>>,
}

pub struct Plan {
    pub binds: Vec<PlannedBind>,
    pub backends: Vec<(Arc<Backend>, Option<std::time::Duration>)>,
    /// Sections this build accepts in the config but does not serve yet, with the reason.
    pub not_served: Vec<String>,
    /// Live figures of every section; the data path below holds the same `Arc`s.
    pub registry: Arc<Registry>,
    /// Certificate files the control thread watches for reloads.
    pub certs: tls::CertWatch,
}

impl Plan {
    /// `ktls`: TLS sessions may be handed to the kernel (the start-up probe said so).
    pub fn build(cfg: &Config, ktls: bool) -> Result<Plan, RuntimeError> {
        let bufsize = cfg.global.bufsize();
        let mut certs = tls::Builder::new(ktls);
        let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut plan = Plan {
            binds: Vec::new(),
            backends: Vec::new(),
            not_served: Vec::new(),
            registry: Arc::new(Registry::from_config(cfg)),
            certs: tls::CertWatch::default(),
        };
        for fe in cfg.frontends() {
            if let Some(why) = not_served_reason(fe) {
                plan.not_served.push(format!(
                    "{} '{}' at {}: {why}",
                    fe.kind.keyword(),
                    fe.name,
                    fe.loc
                ));
                continue;
            }
            let limit = ConnLimit::new(fe.maxconn.or(cfg.global.maxconn));
            if fe.mode == Mode::Http {
                let service = http_service(cfg, fe, bufsize, &mut backends, &mut plan)?;
                plan.add_binds(fe, &service, &limit, &mut certs)?;
                continue;
            }
            let be_proxy = backend_of(cfg, fe)?;
            let backend = shared_backend(be_proxy, &mut backends, &mut plan)?;
            let frontend = Arc::new(Frontend {
                name: fe.name.clone(),
                backend,
                flow: FlowParams {
                    limits: flow_limits(&fe.timeouts, &be_proxy.timeouts),
                    bufsize,
                },
                dont_log_null: fe.options.dontlognull,
                conns: AtomicUsize::new(0),
                stats: plan.registry.frontend(&fe.name).unwrap_or_default(),
                access_log: AccessLog::for_proxy(fe),
            });
            plan.add_binds(fe, &Service::Tcp(frontend), &limit, &mut certs)?;
        }
        plan.certs = certs.watch();
        Ok(plan)
    }

    /// Certificates are loaded here, so a bad `crt` stops the start (and `-c`) with the bind's
    /// line; HTTPS binds wait for the HTTP room to run over `tls::TlsClient`.
    fn add_binds(
        &mut self,
        fe: &Proxy,
        service: &Service,
        limit: &Arc<ConnLimit>,
        certs: &mut tls::Builder,
    ) -> Result<(), RuntimeError> {
        for b in &fe.binds {
            let tls = match &b.ssl {
                None => None,
                Some(ssl) => {
                    if let Some(note) = tls::notes(ssl) {
                        self.not_served
                            .push(format!("bind {} at {}: {note}", b.addr, b.loc));
                    }
                    let timeout = fe.timeouts.client.unwrap_or(tls::DEFAULT_HANDSHAKE_TIMEOUT);
                    let acceptor = certs.acceptor(ssl, &b.loc, timeout).map_err(|e| match e {
                        tls::TlsError::Config { loc, reason } => RuntimeError::Plan { loc, reason },
                        other => RuntimeError::Plan {
                            loc: b.loc.clone(),
                            reason: other.to_string(),
                        },
                    })?;
                    if fe.mode == Mode::Http {
                        // Certificates checked all the same, so `-c` reports them.
                        self.not_served.push(format!(
                            "bind {} at {}: HTTPS is not served yet (the HTTP room does not \
                             run over the TLS stream yet); this bind stays closed",
                            b.addr, b.loc
                        ));
                        continue;
                    }
                    Some(acceptor)
                }
            };
            self.binds.push(PlannedBind {
                addr: b.addr,
                loc: b.loc.clone(),
                service: service.clone(),
                limit: limit.clone(),
                tls,
            });
        }
        Ok(())
    }
}

/// One server set per backend, shared by every frontend (tcp or http) that uses it, so that
/// health state and connection counts are the backend's, not a frontend's.
fn shared_backend(
    be: &Proxy,
    backends: &mut HashMap<String, Arc<Backend>>,
    plan: &mut Plan,
) -> Result<Arc<Backend>, RuntimeError> {
    if let Some(b) = backends.get(&be.name) {
        return Ok(b.clone());
    }
    let b = Arc::new(backend_from(be, &plan.registry)?);
    backends.insert(be.name.clone(), b.clone());
    plan.backends.push((b.clone(), be.timeouts.check));
    Ok(b)
}

/// An HTTP frontend: its server sets, then its rules compiled by the HTTP room.
fn http_service(
    cfg: &Config,
    fe: &Proxy,
    bufsize: usize,
    backends: &mut HashMap<String, Arc<Backend>>,
    plan: &mut Plan,
) -> Result<Service, RuntimeError> {
    for name in http::backend_names(fe) {
        let be = cfg.proxy_backend(&name).ok_or_else(|| RuntimeError::Plan {
            loc: fe.loc.clone(),
            reason: format!("backend '{name}' not found"),
        })?;
        shared_backend(be, backends, plan)?;
    }
    // The registry's counters: the stats page reads what the sessions write.
    let frontend = http::Frontend::build(cfg, fe, bufsize, backends, &plan.registry);
    let frontend = frontend.map_err(|e| match e {
        http::HttpError::Config { loc, reason } => RuntimeError::Plan { loc, reason },
        other => RuntimeError::Plan {
            loc: fe.loc.clone(),
            reason: other.to_string(),
        },
    })?;
    Ok(Service::Http(Arc::new(frontend)))
}

/// Nothing is refused whole any more: TLS binds of `mode http` are skipped one by one in
/// `add_binds` (serving TLS as plain HTTP would be worse than not serving).
fn not_served_reason(_fe: &Proxy) -> Option<&'static str> {
    None
}

fn backend_of<'a>(cfg: &'a Config, fe: &'a Proxy) -> Result<&'a Proxy, RuntimeError> {
    if let Some(rule) = fe.use_backends.iter().find(|r| r.cond.is_some()) {
        return Err(RuntimeError::Plan {
            loc: rule.loc.clone(),
            reason: "conditional 'use_backend' in mode tcp is not supported yet".into(),
        });
    }
    let name = fe
        .use_backends
        .first()
        .map(|r| &r.backend)
        .or(fe.default_backend.as_ref());
    match name {
        Some(name) => cfg.proxy_backend(name).ok_or_else(|| RuntimeError::Plan {
            loc: fe.loc.clone(),
            reason: format!("backend '{name}' not found"),
        }),
        None if fe.kind.has_backend() => Ok(fe),
        None => Err(RuntimeError::Plan {
            loc: fe.loc.clone(),
            reason: "no backend to send traffic to".into(),
        }),
    }
}

/// The server set comes from the registry, so the stats page sees the set the data path and
/// the health checker use.
fn backend_from(p: &Proxy, registry: &Registry) -> Result<Backend, RuntimeError> {
    let set = registry
        .backend(&p.name)
        .unwrap_or_else(|| Arc::new(ServerSet::from_config(p)));
    let engine = engine_for(p)?;
    set.stats.set_engine(engine.name());
    Ok(Backend {
        set,
        connect_timeout: p.timeouts.connect,
        retries: p.retries,
        redispatch: p.options.redispatch,
        engine,
        conns: AtomicUsize::new(0),
    })
}

/// `forward-engine`: the forward room probes the kernel once and says which engine serves;
/// forcing an engine this kernel lacks is a config error rather than a silent fallback.
fn engine_for(p: &Proxy) -> Result<Engine, RuntimeError> {
    crate::forward::choose(p.engine).map_err(|reason| RuntimeError::Plan {
        loc: p.loc.clone(),
        reason,
    })
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

//! Turning the validated config into what the workers run: frontends wired to backends,
//! listeners to open, limits. Parts of a config this build cannot serve yet are reported here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::balance::ServerSet;
use crate::config::{Config, EngineChoice, Loc, Mode, Proxy, Timeouts};
use crate::forward::{Engine, FlowParams, IdleLimits};
use crate::tcp::{Backend, Frontend};

use super::limit::ConnLimit;
use super::RuntimeError;

pub struct PlannedBind {
    pub addr: SocketAddr,
    pub loc: Loc,
    pub frontend: Arc<Frontend>,
    pub limit: Arc<ConnLimit>,
}

pub struct Plan {
    pub binds: Vec<PlannedBind>,
    pub backends: Vec<(Arc<Backend>, Option<std::time::Duration>)>,
    /// Sections this build accepts in the config but does not serve yet, with the reason.
    pub not_served: Vec<String>,
}

impl Plan {
    pub fn build(cfg: &Config) -> Result<Plan, RuntimeError> {
        let bufsize = cfg.global.bufsize.unwrap_or(16 * 1024);
        let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut plan = Plan {
            binds: Vec::new(),
            backends: Vec::new(),
            not_served: Vec::new(),
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
            let be_proxy = backend_of(cfg, fe)?;
            let backend = match backends.get(&be_proxy.name) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(backend_from(be_proxy)?);
                    backends.insert(be_proxy.name.clone(), b.clone());
                    plan.backends.push((b.clone(), be_proxy.timeouts.check));
                    b
                }
            };
            let frontend = Arc::new(Frontend {
                name: fe.name.clone(),
                backend,
                flow: FlowParams {
                    limits: flow_limits(&fe.timeouts, &be_proxy.timeouts),
                    bufsize,
                },
                dont_log_null: fe.options.dontlognull,
                conns: AtomicUsize::new(0),
            });
            let limit = ConnLimit::new(fe.maxconn.or(cfg.global.maxconn));
            for b in &fe.binds {
                plan.binds.push(PlannedBind {
                    addr: b.addr,
                    loc: b.loc.clone(),
                    frontend: frontend.clone(),
                    limit: limit.clone(),
                });
            }
        }
        Ok(plan)
    }
}

/// Until the HTTP and TLS rooms land, such sections are loaded and checked but not opened:
/// serving TLS as plain TCP, or HTTP without its rules, would be worse than not serving.
fn not_served_reason(fe: &Proxy) -> Option<&'static str> {
    if fe.mode == Mode::Http {
        return Some("mode http is not served by this build yet; its binds stay closed");
    }
    if fe.binds.iter().any(|b| b.ssl.is_some()) {
        return Some("TLS termination is not built yet; its binds stay closed");
    }
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

fn backend_from(p: &Proxy) -> Result<Backend, RuntimeError> {
    Ok(Backend {
        set: Arc::new(ServerSet::from_config(p)),
        connect_timeout: p.timeouts.connect,
        retries: p.retries,
        redispatch: p.options.redispatch,
        engine: engine_for(p)?,
        conns: AtomicUsize::new(0),
    })
}

/// `forward-engine`: only the userspace copy engine exists in this build, so forcing another
/// one is an error rather than a silent fallback.
fn engine_for(p: &Proxy) -> Result<Engine, RuntimeError> {
    match p.engine {
        EngineChoice::Auto | EngineChoice::Copy => Ok(Engine::Copy),
        forced @ (EngineChoice::Sockmap | EngineChoice::Splice) => Err(RuntimeError::Plan {
            loc: p.loc.clone(),
            reason: format!("forward-engine {forced:?} is not available in this build (only copy)")
                .to_lowercase(),
        }),
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

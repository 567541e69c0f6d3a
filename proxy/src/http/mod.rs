//! `mode http`: HTTP/1.1 proxying with HAProxy's rules, cookie stickiness, redirects, error
//! pages, and WebSocket/Upgrade tunnels handed to the `forward` room.
//!
//! Modules, one concern each:
//! - `head`: request/response heads (httparse + our smuggling checks), re-serialisation;
//! - `body`: Content-Length, chunked (re-encoded) and close-delimited bodies, bounded memory;
//!   `splice`: large Content-Length bodies moved by splice(2) where both sockets allow it;
//! - `conn`: the sockets an exchange uses (plain TCP, or a TLS client for HTTPS/WSS);
//! - `side`: a socket with its bounded read buffer;
//! - `acl`, `rules`, `cookie`: conditions, request rules, persistence;
//! - `answers`: error pages (`errorfile`), redirects; `stats_hook`: where the stats page plugs in;
//! - `pool`: idle server connections per worker (new ones come from `tcp::connect`, shared
//!   with `mode tcp` so retries and redispatch behave and count the same);
//! - `session`: one client connection from accept to close; `httplog`: its access log lines;
//!   `tally`: what each request adds to the stats counters.
//!
//! Built once at start from the config (`Frontend::build`), immutable afterwards.

mod acl;
mod answers;
mod body;
mod conn;
mod cookie;
mod error;
mod head;
mod httplog;
mod pool;
mod rules;
mod session;
mod side;
mod splice;
pub mod stats_hook;
mod tally;

pub use error::HttpError;
pub use session::{run_session, run_tls_session, session_count};
pub use splice::SPLICED_BYTES;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::balance::ServerSet;
use crate::config::{Config, Proxy, StatsSpec};
use crate::log::AccessLog;
use crate::stats::{Counters, Registry};
use crate::tcp;

use acl::{AclSet, Cond};
use answers::ErrorPages;
use cookie::Sticky;
use rules::{Forwarded, RuleSet};

/// A backend as HTTP requests see it; its servers and their live state are the shared
/// `tcp::Backend` (health checks and counters are the same for both modes).
pub struct Backend {
    pub name: String,
    pub servers: Arc<tcp::Backend>,
    rules: RuleSet,
    forwardfor: Option<Forwarded>,
    sticky: Option<Sticky>,
    errors: ErrorPages,
    stats: Option<StatsSpec>,
    server_timeout: Option<Duration>,
    server_fin: Option<Duration>,
    tunnel: Option<Duration>,
    /// `option http-server-close` or `option httpclose`: one request per server connection.
    server_close: bool,
    httpclose: bool,
    /// How long an idle server connection is kept for reuse.
    pool_idle: Duration,
}

/// An HTTP frontend (or the frontend half of a `listen`).
pub struct Frontend {
    pub name: String,
    rules: RuleSet,
    routes: Vec<(Cond, Arc<Backend>)>,
    default: Option<Arc<Backend>>,
    forwardfor: Option<Forwarded>,
    errors: ErrorPages,
    stats: Option<StatsSpec>,
    client_timeout: Option<Duration>,
    client_fin: Option<Duration>,
    http_request: Option<Duration>,
    keep_alive: Option<Duration>,
    server_close: bool,
    httpclose: bool,
    dont_log_null: bool,
    bufsize: usize,
    /// Where this frontend's httplog lines go (its `log` targets, else stderr).
    access_log: AccessLog,
    pub conns: AtomicUsize,
    /// This frontend's figures, shared with the stats registry (`stats` is its stats page).
    pub counters: Arc<Counters>,
    /// A `listen` section's own backend row: HAProxy counts there the bytes of the requests
    /// no backend was assigned to (its stats page's, those its frontend rules denied).
    own_backend: Option<Arc<ServerSet>>,
}

/// HAProxy's `pool-purge-delay`: idle server connections older than this are closed, well
/// under common backend keep-alive times (Tomcat/AMS 20 s, nginx 75 s).
const POOL_IDLE: Duration = Duration::from_secs(5);

/// Names of the backends an HTTP frontend can route to: `use_backend` targets,
/// `default_backend`, or the section itself when it is a `listen` with servers.
pub fn backend_names(fe: &Proxy) -> Vec<String> {
    let mut names: Vec<String> = fe.use_backends.iter().map(|u| u.backend.clone()).collect();
    match &fe.default_backend {
        Some(d) => names.push(d.clone()),
        None if fe.kind.has_backend() && !fe.servers.is_empty() => names.push(fe.name.clone()),
        None => {}
    }
    names.dedup();
    names
}

/// Compiles the HTTP parts of every `mode http` section (ACLs, conditions, rule values,
/// `option forwardfor except`, errorfiles) and returns every error with its line. Start-up
/// reports the same errors through `Frontend::build`; this lets `proxy -c` report them too.
pub fn check_config(cfg: &Config, bufsize: usize) -> Vec<HttpError> {
    let mut errors = Vec::new();
    for p in cfg
        .proxies
        .iter()
        .filter(|p| p.mode == crate::config::Mode::Http)
    {
        let acls = match AclSet::compile(&p.acls) {
            Ok(a) => a,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if let Err(e) = RuleSet::compile(&p.http_rules, &acls) {
            errors.push(e);
        }
        for u in &p.use_backends {
            if let Some(c) = &u.cond {
                if let Err(e) = Cond::compile(c, &acls, &u.loc) {
                    errors.push(e);
                }
            }
        }
        if let Err(e) = forwarded(p) {
            errors.push(e);
        }
        if let Err(e) = ErrorPages::load(&p.errorfiles, bufsize) {
            errors.push(e);
        }
    }
    errors
}

impl Frontend {
    /// Compiles `fe`'s rules and those of every backend it routes to. `servers` must hold the
    /// shared server sets of all `backend_names(fe)`; `registry` holds the counters the
    /// sessions update (the same the stats page reads).
    pub fn build(
        cfg: &Config,
        fe: &Proxy,
        bufsize: usize,
        servers: &HashMap<String, Arc<tcp::Backend>>,
        registry: &Registry,
    ) -> Result<Frontend, HttpError> {
        let acls = AclSet::compile(&fe.acls)?;
        let mut built: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut backend = |name: &str| -> Result<Arc<Backend>, HttpError> {
            if let Some(b) = built.get(name) {
                return Ok(b.clone());
            }
            let b = Arc::new(build_backend(cfg, fe, name, bufsize, servers)?);
            built.insert(name.to_string(), b.clone());
            Ok(b)
        };
        let mut routes = Vec::new();
        for u in &fe.use_backends {
            let target = backend(&u.backend)?;
            let cond = match &u.cond {
                Some(c) => Cond::compile(c, &acls, &u.loc)?,
                // An unconditional use_backend always matches: an always-true condition.
                None => Cond::compile(
                    &crate::config::Condition {
                        negate: false,
                        words: vec!["TRUE".into()],
                    },
                    &acls,
                    &u.loc,
                )?,
            };
            routes.push((cond, target));
        }
        let default = match &fe.default_backend {
            Some(d) => Some(backend(d)?),
            None if fe.kind.has_backend() && !fe.servers.is_empty() => Some(backend(&fe.name)?),
            None => None,
        };
        Ok(Frontend {
            name: fe.name.clone(),
            rules: RuleSet::compile(&fe.http_rules, &acls)?,
            routes,
            default,
            forwardfor: forwarded(fe)?,
            errors: ErrorPages::load(&fe.errorfiles, bufsize)?,
            stats: fe.stats.clone().filter(|s| s.enabled),
            client_timeout: fe.timeouts.client,
            client_fin: fe.timeouts.client_fin,
            http_request: fe.timeouts.http_request,
            keep_alive: fe.timeouts.http_keep_alive,
            server_close: fe.options.http_server_close,
            httpclose: fe.options.httpclose,
            dont_log_null: fe.options.dontlognull,
            bufsize,
            access_log: AccessLog::for_proxy(fe),
            conns: AtomicUsize::new(0),
            counters: registry.frontend(&fe.name).unwrap_or_default(),
            own_backend: registry.backend(&fe.name),
        })
    }
}

fn forwarded(p: &Proxy) -> Result<Option<Forwarded>, HttpError> {
    p.options
        .forwardfor
        .as_ref()
        .map(|ff| Forwarded::compile(ff, &p.loc))
        .transpose()
}

fn build_backend(
    cfg: &Config,
    fe: &Proxy,
    name: &str,
    bufsize: usize,
    servers: &HashMap<String, Arc<tcp::Backend>>,
) -> Result<Backend, HttpError> {
    let missing = |what: &str| HttpError::Config {
        loc: fe.loc.clone(),
        reason: format!("backend '{name}' {what}"),
    };
    let p = cfg
        .proxy_backend(name)
        .ok_or_else(|| missing("not found"))?;
    let shared = servers
        .get(name)
        .cloned()
        .ok_or_else(|| missing("has no server set (internal error)"))?;
    let acls = AclSet::compile(&p.acls)?;
    let keep_alive = p.timeouts.http_keep_alive.unwrap_or(POOL_IDLE);
    Ok(Backend {
        name: p.name.clone(),
        servers: shared,
        rules: RuleSet::compile(&p.http_rules, &acls)?,
        forwardfor: forwarded(p)?,
        sticky: p.cookie.as_ref().map(Sticky::new),
        errors: ErrorPages::load(&p.errorfiles, bufsize)?,
        stats: p.stats.clone().filter(|s| s.enabled),
        server_timeout: p.timeouts.server,
        server_fin: p.timeouts.server_fin,
        tunnel: p.timeouts.tunnel,
        server_close: p.options.http_server_close,
        httpclose: p.options.httpclose,
        pool_idle: keep_alive.min(POOL_IDLE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_config_names_the_line() {
        let cfg = crate::config::parse_str(
            "frontend f\n bind :80\n mode http\n acl bad url_dom x\n \
             use_backend b if { path_beg /a } || nope\n default_backend b\n\
             backend b\n mode http\n server s 127.0.0.1:1\n",
            std::path::Path::new("h.cfg"),
        )
        .expect("valid for the config room");
        let errors: Vec<String> = check_config(&cfg, 16384)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("h.cfg:4: unsupported fetch 'url_dom'"),
            "{errors:?}"
        );
        let cfg = crate::config::parse_str(
            "frontend f\n bind :80\n mode http\n use_backend b if nope\n default_backend b\n\
             backend b\n mode http\n server s 127.0.0.1:1\n",
            std::path::Path::new("h.cfg"),
        )
        .expect("valid for the config room");
        let errors: Vec<String> = check_config(&cfg, 16384)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors, ["h.cfg:4: unknown acl 'nope'"]);
    }
}

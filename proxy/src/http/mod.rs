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
mod balance_key;
mod body;
mod client;
mod conn;
mod cookie;
mod error;
mod exchange;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod h1_client;
mod h2;
mod head;
mod httplog;
mod pool;
mod response_rules;
mod reuse;
mod route;
mod rules;
mod serve;
mod session;
mod side;
mod splice;
pub mod stats_hook;
mod tally;
mod tunnel;

pub use error::HttpError;
pub use session::{run_session, run_tls_session};
pub use stats_hook::{StatsAnswer, StatsPages};

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Condition, Config, HttpReuse, Proxy, ProxyKind, StatsSpec};
use crate::counters::Counters;
use crate::forward::Engine;
use crate::log::AccessLog;
use crate::upstream::{self, ServerSet};

use acl::{AclSet, Cond};
use answers::ErrorPages;
use cookie::Sticky;
use response_rules::ResponseRules;
use rules::{Forwarded, RuleSet};

/// A backend as HTTP requests see it; its servers and their live state are the shared
/// `upstream::Backend` (health checks and counters are the same for both modes).
pub struct Backend {
    /// Shared with each request's log record, which clones it without allocating.
    pub name: Arc<str>,
    pub upstream: Arc<upstream::Backend>,
    /// How an upgraded (WebSocket) stream moves once it is a tunnel.
    engine: Engine,
    /// The backend half of the `listen` section whose frontend routes here: its
    /// `http-response` rules are that section's, run once.
    own_section: bool,
    rules: RuleSet,
    response_rules: ResponseRules,
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
    /// `http-reuse`.
    reuse: HttpReuse,
}

/// An HTTP frontend (or the frontend half of a `listen`).
pub struct Frontend {
    /// Shared with each request's log record, which clones it without allocating.
    pub name: Arc<str>,
    rules: RuleSet,
    routes: Vec<(Cond, Arc<Backend>)>,
    default: Option<Arc<Backend>>,
    response_rules: ResponseRules,
    forwardfor: Option<Forwarded>,
    errors: ErrorPages,
    stats: Option<StatsSpec>,
    client_timeout: Option<Duration>,
    client_fin: Option<Duration>,
    /// How long a request head may take: `timeout http-request`, else `timeout client`, else
    /// [`DEFAULT_HEAD_TIMEOUT`]; a head is never waited for without a bound.
    http_request: Duration,
    keep_alive: Option<Duration>,
    server_close: bool,
    httpclose: bool,
    dont_log_null: bool,
    bufsize: usize,
    /// Where this frontend's httplog lines go (its `log` targets, else stderr).
    access_log: AccessLog,
    pub conns: AtomicUsize,
    /// This frontend's figures, shared with the plan's registry (`stats` is its stats page).
    pub counters: Arc<Counters>,
    /// A `listen` section's own backend row: HAProxy counts there the bytes of the requests
    /// no backend was assigned to (its stats page's, those its frontend rules denied).
    own_backend: Option<Arc<ServerSet>>,
    /// The stats page and exporter of the plan this frontend belongs to.
    pages: Arc<dyn StatsPages>,
}

/// What the plan hands an HTTP frontend at build time: the shared upstream side of every
/// backend it may route to (with the engine its tunnels use), its live figures, and the pages.
pub struct Wiring<'a> {
    pub backends: &'a HashMap<String, (Arc<upstream::Backend>, Engine)>,
    pub counters: Arc<Counters>,
    pub own_backend: Option<Arc<ServerSet>>,
    pub pages: Arc<dyn StatsPages>,
}

/// How long a request head may take when neither `timeout http-request` nor `timeout client`
/// says (HAProxy would wait forever; nginx's `client_header_timeout` is 60 s): a client that
/// trickles a head must not hold a connection for ever.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Collects the problems of one compile step and keeps going, so that one pass names them all.
#[derive(Default)]
struct Problems(Vec<HttpError>);

impl Problems {
    fn take<T>(&mut self, r: Result<T, HttpError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    fn acls(&mut self, acls: &[crate::config::Acl]) -> AclSet {
        let (set, errors) = AclSet::compile_all(acls);
        self.0.extend(errors);
        set
    }
}

impl Frontend {
    /// Compiles `fe`'s rules and those of every backend it routes to, naming every problem.
    /// `wiring.backends` must hold the upstream side of all `backend_names(fe)`.
    pub fn build(
        cfg: &Config,
        fe: &Proxy,
        bufsize: usize,
        wiring: Wiring<'_>,
    ) -> Result<Frontend, Vec<HttpError>> {
        let mut problems = Problems::default();
        let acls = problems.acls(&fe.acls);
        let mut built: HashMap<String, Option<Arc<Backend>>> = HashMap::new();
        let mut backend = |name: &str, problems: &mut Problems| -> Option<Arc<Backend>> {
            if let Some(b) = built.get(name) {
                return b.clone();
            }
            let b = build_backend(cfg, name, bufsize, wiring.backends, problems)
                .map(|mut b| {
                    b.own_section = fe.kind == ProxyKind::Listen && name == fe.name;
                    b
                })
                .map(Arc::new);
            built.insert(name.to_string(), b.clone());
            b
        };
        let always = Condition {
            negate: false,
            words: vec!["TRUE".into()],
        };
        let mut routes = Vec::new();
        for u in &fe.use_backends {
            let target = backend(&u.backend, &mut problems);
            // An unconditional use_backend always matches: an always-true condition.
            let cond = problems.take(Cond::compile(
                u.cond.as_ref().unwrap_or(&always),
                &acls,
                &u.loc,
            ));
            if let (Some(cond), Some(target)) = (cond, target) {
                routes.push((cond, target));
            }
        }
        let default = match &fe.default_backend {
            Some(d) => backend(d, &mut problems),
            None if fe.kind.has_backend() && !fe.servers.is_empty() => {
                backend(&fe.name, &mut problems)
            }
            None => None,
        };
        let rules = problems.take(RuleSet::compile(&fe.http_rules, &acls));
        let response_rules = problems.take(ResponseRules::compile(&fe.http_response_rules, &acls));
        let forwardfor = problems.take(forwarded(fe));
        let errors = problems.take(ErrorPages::load(&fe.errorfiles, bufsize));
        let (Some(rules), Some(response_rules), Some(forwardfor), Some(errors), true) = (
            rules,
            response_rules,
            forwardfor,
            errors,
            problems.0.is_empty(),
        ) else {
            return Err(problems.0);
        };
        Ok(Frontend {
            name: fe.name.as_str().into(),
            rules,
            routes,
            default,
            response_rules,
            forwardfor,
            errors,
            stats: fe.stats.clone().filter(|s| s.enabled),
            client_timeout: fe.timeouts.client,
            client_fin: fe.timeouts.client_fin,
            http_request: fe
                .timeouts
                .http_request
                .or(fe.timeouts.client)
                .unwrap_or(DEFAULT_HEAD_TIMEOUT),
            keep_alive: fe.timeouts.http_keep_alive,
            server_close: fe.options.http_server_close,
            httpclose: fe.options.httpclose,
            dont_log_null: fe.options.dontlognull,
            bufsize,
            access_log: AccessLog::for_proxy(fe),
            conns: AtomicUsize::new(0),
            counters: wiring.counters,
            own_backend: wiring.own_backend,
            pages: wiring.pages,
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

/// A backend's HTTP side; `None` with its problems pushed. A backend's problems are its own
/// lines, so two frontends routing to one backend name them twice: the caller dedups.
fn build_backend(
    cfg: &Config,
    name: &str,
    bufsize: usize,
    upstreams: &HashMap<String, (Arc<upstream::Backend>, Engine)>,
    problems: &mut Problems,
) -> Option<Backend> {
    // A missing backend was named by the config room, one whose upstream side failed (an
    // engine this kernel lacks) by the plan: neither is named again here.
    let p = cfg.proxy_backend(name)?;
    let (shared, engine) = upstreams.get(name).cloned()?;
    let acls = problems.acls(&p.acls);
    let rules = problems.take(RuleSet::compile(&p.http_rules, &acls));
    let response_rules = problems.take(ResponseRules::compile(&p.http_response_rules, &acls));
    let forwardfor = problems.take(forwarded(p));
    let errors = problems.take(ErrorPages::load(&p.errorfiles, bufsize));
    let keep_alive = p.timeouts.http_keep_alive.unwrap_or(POOL_IDLE);
    Some(Backend {
        name: p.name.as_str().into(),
        upstream: shared,
        engine,
        own_section: false,
        rules: rules?,
        response_rules: response_rules?,
        forwardfor: forwardfor?,
        sticky: p.cookie.as_ref().map(Sticky::new),
        errors: errors?,
        stats: p.stats.clone().filter(|s| s.enabled),
        server_timeout: p.timeouts.server,
        server_fin: p.timeouts.server_fin,
        tunnel: p.timeouts.tunnel,
        server_close: p.options.http_server_close,
        httpclose: p.options.httpclose,
        pool_idle: keep_alive.min(POOL_IDLE),
        reuse: p.http_reuse,
    })
}

//! Counters, the stats page (HTML, `;csv`, `;json`) and the Prometheus exporter.
//!
//! # How the figures get here
//! [`Registry::from_config`] creates, at start, one entry per config section: frontend
//! [`Counters`] and backend [`ServerSet`](crate::balance::ServerSet)s (whose servers carry
//! [`ServerStats`] and whose set carries [`BackendStats`]). The plan hands those same `Arc`s to
//! the data path, so a session bumps atomics the page reads; nothing on the data path locks or
//! calls into this room's renderers.
//!
//! # API for the HTTP room
//! * [`matches`]`(spec, path_and_query)`: is this request, on a proxy with `stats enable`, for
//!   the stats service? (`stats uri` prefix, default `/haproxy?stats`, or the default metrics
//!   path [`DEFAULT_METRICS_PATH`].)
//! * [`handle_request`]`(registry, spec, method, path_and_query, authorization)`: the whole
//!   answer (auth, 401/405, page, `;csv`, `;json`, `;up`, `;norefresh`, and `/metrics`; a
//!   path that is none of these gets HAProxy's 503, for a stats section with no server).
//!   `authorization` is the raw value of the `Authorization` header, if any.
//! * [`prometheus`]`(registry)`: the answer for `http-request use-service prometheus-exporter`
//!   (no authentication, as in HAProxy).
//! * [`installed`]`()`: the running process's registry (the runtime calls [`install`] at
//!   start), for a caller that is not handed one.
//!
//! Both return a [`StatsResponse`]: status, headers (without `Content-Length`, which the HTTP
//! room sets from `body`) and body. For `HEAD` the HTTP room sends the headers and drops the
//! body.
//!
//! The default metrics path: on a proxy with `stats enable`, `GET /metrics` is answered by the
//! exporter behind the same `stats auth` as the page (Prometheus scrape configs support Basic
//! auth), so a plain HAProxy seed config gets metrics without a `use-service` rule.

mod auth;
mod counters;
mod csv;
mod html;
mod json;
mod prom;
mod registry;
mod snapshot;

pub use auth::{authorized, secret_eq};
pub use counters::{
    http_class, now_ms, BackendStats, CheckStats, CheckStatus, Counters, Rate, ServerStats,
    SessionGuard, SlidingAvg, Timings, Transitions, HTTP_CLASSES,
};
pub use csv::COLUMNS as CSV_COLUMNS;
pub use registry::{ProcessInfo, ProxyEntry, Registry};
pub use snapshot::{Snapshot, Status};

use std::sync::{Arc, OnceLock};

use crate::config::StatsSpec;

/// HAProxy's default `stats uri`.
pub const DEFAULT_URI: &str = "/haproxy?stats";
/// HAProxy's default `stats realm`.
pub const DEFAULT_REALM: &str = "HAProxy Statistics";
/// Answered by the exporter on any proxy with `stats enable`.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("bad Authorization header: {0}")]
    BadCredentials(&'static str),
}

/// A complete HTTP answer for the HTTP room to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StatsResponse {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> StatsResponse {
        StatsResponse {
            status,
            headers: vec![
                ("Content-Type".into(), content_type.into()),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            body: body.into(),
        }
    }

    fn with_header(mut self, name: &str, value: String) -> StatsResponse {
        self.headers.push((name.into(), value));
        self
    }

    /// The value of a header, case-insensitively (for the HTTP room and tests).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn uri(spec: &StatsSpec) -> &str {
    spec.uri.as_deref().unwrap_or(DEFAULT_URI)
}

fn path_of(path_and_query: &str) -> &str {
    path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p)
}

fn is_metrics_path(spec: &StatsSpec, path_and_query: &str) -> bool {
    path_of(path_and_query) == DEFAULT_METRICS_PATH && uri(spec) != DEFAULT_METRICS_PATH
}

/// True when `path_and_query`, sent to a proxy with this `stats` block, is for this room.
/// HAProxy matches `stats uri` as a prefix, so `;csv` and the like ride after it.
pub fn matches(spec: &StatsSpec, path_and_query: &str) -> bool {
    spec.enabled && (path_and_query.starts_with(uri(spec)) || is_metrics_path(spec, path_and_query))
}

/// The answer for a stats request; see the module documentation.
pub fn handle_request(
    reg: &Registry,
    spec: &StatsSpec,
    method: &str,
    path_and_query: &str,
    authorization: Option<&[u8]>,
) -> StatsResponse {
    if !matches(spec, path_and_query) {
        // A stats section with no server gets every request; HAProxy answers the others so.
        return StatsResponse::new(
            503,
            "text/html",
            "<html><body><h1>503 Service Unavailable</h1>
             No server is available to handle this request.
</body></html>
",
        );
    }
    if !authorized(&spec.auth, authorization) {
        return unauthorized(spec);
    }
    if method != "GET" && method != "HEAD" {
        return StatsResponse::new(405, "text/plain", "405 Method Not Allowed\n")
            .with_header("Allow", "GET, HEAD".into());
    }
    if is_metrics_path(spec, path_and_query) {
        return prometheus(reg);
    }
    let rest = path_and_query.strip_prefix(uri(spec)).unwrap_or("");
    page(reg, spec, &Flags::parse(rest))
}

/// The registry of the running process, for callers that cannot be handed one (the HTTP
/// room's stats hook). Set once by the runtime; a reload would need a swappable cell here.
static INSTALLED: OnceLock<Arc<Registry>> = OnceLock::new();

/// Makes `reg` the process's registry; later calls are ignored.
pub fn install(reg: Arc<Registry>) {
    let _ = INSTALLED.set(reg);
}

/// The process's registry, once the runtime installed it.
pub fn installed() -> Option<Arc<Registry>> {
    INSTALLED.get().cloned()
}

/// The exporter's answer (`use-service prometheus-exporter`).
pub fn prometheus(reg: &Registry) -> StatsResponse {
    let text = reg.exporter().render(&Snapshot::take(reg));
    StatsResponse::new(200, "text/plain; version=0.0.4; charset=utf-8", text)
}

/// `;csv`, `;json`, `;up`, `;norefresh` after the stats URI.
#[derive(Debug, Default, PartialEq)]
struct Flags {
    csv: bool,
    json: bool,
    only_up: bool,
    no_refresh: bool,
}

impl Flags {
    fn parse(rest: &str) -> Flags {
        let mut f = Flags::default();
        for word in rest.split(';').skip(1) {
            match word.split(['?', '&', '/']).next().unwrap_or("") {
                "csv" => f.csv = true,
                "json" => f.json = true,
                "up" => f.only_up = true,
                "norefresh" => f.no_refresh = true,
                _ => {}
            }
        }
        f
    }
}

fn page(reg: &Registry, spec: &StatsSpec, flags: &Flags) -> StatsResponse {
    let snap = Snapshot::take(reg);
    let table = csv::Options {
        legends: spec.show_legends,
        only_up: flags.only_up,
    };
    if flags.csv {
        return StatsResponse::new(200, "text/plain", csv::render(&snap, table));
    }
    if flags.json {
        return StatsResponse::new(200, "application/json", json::render(&snap, table));
    }
    let refresh_secs = spec
        .refresh
        .filter(|_| !flags.no_refresh)
        .map(|d| d.as_secs().max(1));
    let opts = html::PageOptions {
        hide_version: spec.hide_version,
        refresh_secs,
        show_legends: spec.show_legends,
        only_up: flags.only_up,
        uri: uri(spec),
    };
    let resp = StatsResponse::new(200, "text/html; charset=utf-8", html::render(&snap, &opts));
    match refresh_secs {
        Some(secs) => resp.with_header("Refresh", secs.to_string()),
        None => resp,
    }
}

fn unauthorized(spec: &StatsSpec) -> StatsResponse {
    let realm = spec.realm.as_deref().unwrap_or(DEFAULT_REALM);
    StatsResponse::new(
        401,
        "text/html",
        "<html><body><h1>401 Unauthorized</h1>\n\
         You need a valid user and password to access this content.\n</body></html>\n",
    )
    .with_header("WWW-Authenticate", auth::challenge(realm))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::balance::ServerState;
    use crate::config::Config;
    use base64::Engine;

    pub(crate) const CONFIG: &str = "
global
    maxconn 2000
    nbthread 2

listen stats
    bind :6080
    mode http
    stats enable
    stats hide-version
    stats realm Haproxy\\ Statistics
    stats uri /haproxy_stats
    stats auth Username:Password

frontend rtmp_lb
    bind *:1935
    mode tcp
    default_backend backend_rtmp

backend backend_rtmp
    mode tcp
    server ams1 172.30.0.42:1935 check
    server ams2 172.30.0.48:1935 check
";

    pub(crate) fn config() -> Config {
        crate::config::parse_str(CONFIG, std::path::Path::new("test.cfg")).expect("valid config")
    }

    /// A registry with known live values: ams1 UP and checked, ams2 DOWN after a refused
    /// check, bytes through ams1, HTTP answers on the stats frontend.
    pub(crate) fn registry() -> Registry {
        let reg = Registry::from_config(&config());
        reg.process().set_driver("io_uring");
        reg.process().set_features(vec![("io_uring", true)]);
        if let Some(set) = reg.backend("backend_rtmp") {
            set.stats.set_engine("copy");
            set.stats.traffic.add_bytes(1000, 2000);
            let (ams1, ams2) = (&set.servers[0], &set.servers[1]);
            ams1.stats.traffic.add_bytes(1000, 2000);
            ams1.stats.check.record(CheckStatus::Ok, 1, 0, true);
            ams2.stats
                .check
                .record(CheckStatus::ConnRefused, 2, 0, true);
            ams2.set_state(ServerState::Down);
        }
        if let Some(fe) = reg.frontend("stats") {
            for status in [200, 200, 200, 401] {
                fe.http_request();
                fe.http_response(status);
            }
        }
        reg
    }

    pub(crate) fn snapshot() -> Snapshot {
        Snapshot::take(&registry())
    }

    fn spec() -> StatsSpec {
        config()
            .proxy("stats")
            .and_then(|p| p.stats.clone())
            .expect("stats spec")
    }

    fn get(path: &str, auth: Option<&str>) -> StatsResponse {
        let header = auth.map(|a| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        });
        handle_request(
            &registry(),
            &spec(),
            "GET",
            path,
            header.as_deref().map(str::as_bytes),
        )
    }

    fn body(r: &StatsResponse) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    #[test]
    fn asks_for_credentials_with_the_realm() {
        for auth in [None, Some("Username:wrong"), Some("nobody:Password")] {
            let r = get("/haproxy_stats", auth);
            assert_eq!(r.status, 401, "{auth:?}");
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Basic realm=\"Haproxy Statistics\"")
            );
            assert!(!body(&r).contains("ams1"));
        }
    }

    #[test]
    fn shows_the_page_to_a_known_user() {
        let r = get("/haproxy_stats", Some("Username:Password"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let html = body(&r);
        assert!(html.contains("ams1") && html.contains("ams2"));
        assert!(!html.contains("version ="), "stats hide-version");
    }

    #[test]
    fn csv_json_and_metrics_by_path() {
        let auth = Some("Username:Password");
        let csv = get("/haproxy_stats;csv", auth);
        assert_eq!(csv.header("Content-Type"), Some("text/plain"));
        assert!(body(&csv).starts_with("# pxname,svname,"));
        let json = get("/haproxy_stats;json;norefresh", auth);
        assert_eq!(json.header("Content-Type"), Some("application/json"));
        assert!(serde_json::from_slice::<serde_json::Value>(&json.body).is_ok());
        let metrics = get("/metrics", auth);
        assert_eq!(metrics.status, 200);
        assert!(body(&metrics).contains("haproxy_server_status"));
        assert_eq!(get("/metrics", None).status, 401, "same auth as the page");
        assert_eq!(get("/elsewhere", auth).status, 503, "not a stats path");
        assert_eq!(get("/elsewhere", None).status, 503, "no auth asked there");
    }

    #[test]
    fn only_get_and_head() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("Username:Password")
        );
        let r = handle_request(
            &registry(),
            &spec(),
            "POST",
            "/haproxy_stats",
            Some(header.as_bytes()),
        );
        assert_eq!(r.status, 405);
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    }

    #[test]
    fn matching_uses_the_uri_prefix() {
        let s = spec();
        assert!(matches(&s, "/haproxy_stats"));
        assert!(matches(&s, "/haproxy_stats;csv"));
        assert!(matches(&s, "/metrics?scope=server"));
        assert!(!matches(&s, "/other"));
        let default = StatsSpec {
            enabled: true,
            ..StatsSpec::default()
        };
        assert!(matches(&default, "/haproxy?stats;csv"));
        assert!(!matches(&StatsSpec::default(), "/haproxy?stats"));
    }

    #[test]
    fn refresh_header_and_toggle() {
        let s = StatsSpec {
            enabled: true,
            refresh: Some(std::time::Duration::from_secs(5)),
            ..StatsSpec::default()
        };
        let reg = registry();
        let r = handle_request(&reg, &s, "GET", "/haproxy?stats", None);
        assert_eq!(r.header("Refresh"), Some("5"));
        assert!(body(&r).contains("content=\"5\""));
        assert!(body(&r).contains(&format!("version = {}", env!("CARGO_PKG_VERSION"))));
        let r = handle_request(&reg, &s, "GET", "/haproxy?stats;norefresh", None);
        assert_eq!(r.header("Refresh"), None);
    }

    #[test]
    fn flags_parse_in_any_order() {
        assert_eq!(
            Flags::parse(";up;csv?x=1"),
            Flags {
                csv: true,
                only_up: true,
                ..Flags::default()
            }
        );
        assert_eq!(Flags::parse(""), Flags::default());
        assert_eq!(Flags::parse(";;;bogus"), Flags::default());
    }

    #[test]
    fn exporter_answer() {
        let r = prometheus(&registry());
        assert_eq!(r.status, 200);
        assert!(r
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    }
}

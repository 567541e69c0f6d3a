//! The stats page (HTML, `;csv`, `;json`) and the Prometheus exporter: renderers only.
//!
//! # How the figures get here
//! The plan's [`Registry`] holds, per config section, frontend
//! [`Counters`](crate::counters::Counters) and backend
//! [`ServerSet`](crate::upstream::ServerSet)s (whose servers and set carry the `counters`
//! room's figures). The data path holds the same `Arc`s and bumps the atomics this room reads;
//! nothing on the data path locks or calls into this room except through [`Pages`].
//!
//! # API for the HTTP room
//! The runtime builds one [`Pages`] per plan and the plan hands it to the HTTP frontends as a
//! [`StatsPages`] trait object (the HTTP room sits below this one and cannot name it). Which
//! requests are for the stats service is `StatsSpec::matches` (config room). Answers carry
//! status, headers (without `Content-Length`, which the HTTP room sets from `body`) and body.
//!
//! Metrics are served only where configured: `<stats uri>;metrics` behind the same `stats
//! auth` as the page (Prometheus scrape configs support Basic auth), or an
//! `http-request use-service prometheus-exporter` rule (no auth, as HAProxy's).

mod auth;
mod csv;
mod html;
mod json;
mod prom;
mod snapshot;

pub use auth::{authorized, secret_eq};
pub use csv::COLUMNS as CSV_COLUMNS;
pub use snapshot::{Snapshot, Status};

use std::sync::Arc;

use crate::config::StatsSpec;
use crate::http::{StatsAnswer, StatsPages};
use crate::plan::Registry;

/// HAProxy's default `stats realm`.
pub const DEFAULT_REALM: &str = "HAProxy Statistics";

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

    fn into_answer(self) -> StatsAnswer {
        StatsAnswer {
            status: self.status,
            headers: self
                .headers
                .into_iter()
                .map(|(n, v)| (n, v.into_bytes()))
                .collect(),
            body: self.body,
        }
    }
}

/// The pages of one plan's registry: handed to the HTTP room at build time (as a
/// [`StatsPages`]), so the data path never looks a registry up.
#[derive(Debug)]
pub struct Pages {
    registry: Arc<Registry>,
    exporter: prom::Exporter,
    /// For stats sections with `stats hide-version` (no version label).
    exporter_hidden: prom::Exporter,
}

impl Pages {
    pub fn new(registry: Arc<Registry>) -> Pages {
        Pages {
            registry,
            exporter: prom::Exporter::default(),
            exporter_hidden: prom::Exporter::default(),
        }
    }

    /// The answer for a stats request: auth, 401/405, page, `;csv`, `;json`, `;up`,
    /// `;norefresh`, and `;metrics`; a path that is none of these gets HAProxy's 503, for a
    /// stats section with no server. `authorization` is the raw `Authorization` value.
    pub fn handle_request(
        &self,
        spec: &StatsSpec,
        method: &str,
        path_and_query: &str,
        authorization: Option<&[u8]>,
    ) -> StatsResponse {
        if !spec.matches(path_and_query) {
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
        if spec.is_metrics_path(path_and_query) {
            return self.render_metrics(spec.hide_version);
        }
        let rest = path_and_query.strip_prefix(spec.uri()).unwrap_or("");
        page(&self.registry, spec, &Flags::parse(rest))
    }

    /// The exporter's answer (`use-service prometheus-exporter`).
    pub fn prometheus(&self) -> StatsResponse {
        self.render_metrics(false)
    }

    fn render_metrics(&self, hide_version: bool) -> StatsResponse {
        let exporter = if hide_version {
            &self.exporter_hidden
        } else {
            &self.exporter
        };
        let text = exporter.render(&Snapshot::take(&self.registry), hide_version);
        StatsResponse::new(200, "text/plain; version=0.0.4; charset=utf-8", text)
    }
}

impl StatsPages for Pages {
    fn page(
        &self,
        spec: &StatsSpec,
        method: &str,
        target: &str,
        authorization: Option<&[u8]>,
    ) -> StatsAnswer {
        self.handle_request(spec, method, target, authorization)
            .into_answer()
    }

    fn prometheus(&self) -> StatsAnswer {
        Pages::prometheus(self).into_answer()
    }
}

/// The runtime API's `show stat`: the `;csv` document with server addresses shown (as
/// HAProxy's CLI shows them); `only_up` leaves out servers that are not UP.
pub fn csv_table(registry: &Registry, only_up: bool) -> String {
    let opts = csv::Options {
        legends: true,
        only_up,
    };
    csv::render(&Snapshot::take(registry), opts)
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
        uri: spec.uri(),
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
    use crate::config::Config;
    use crate::counters::CheckStatus;
    use crate::upstream::ServerState;
    use base64::Engine;

    pub(crate) use crate::plan::TEST_CONFIG as CONFIG;

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
            let (ams1, ams2) = (&set.servers()[0], &set.servers()[1]);
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

    /// As [`snapshot`], after HTTP checks: ams1 passed with a 200, ams2 failed on a 503.
    pub(crate) fn http_checked_snapshot() -> Snapshot {
        let reg = registry();
        if let Some(set) = reg.backend("backend_rtmp") {
            let (ams1, ams2) = (&set.servers()[0], &set.servers()[1]);
            ams1.stats.check.set_http_code(Some(200));
            ams1.stats.check.record(CheckStatus::L7Ok, 3, 0, true);
            ams2.stats.check.set_http_code(Some(503));
            ams2.stats.check.set_info("Service Unavailable");
            ams2.stats.check.record(CheckStatus::L7Status, 4, 0, true);
        }
        Snapshot::take(&reg)
    }

    fn spec() -> StatsSpec {
        config()
            .proxy("stats")
            .and_then(|p| p.stats.clone())
            .expect("stats spec")
    }

    fn pages() -> Pages {
        Pages::new(Arc::new(registry()))
    }

    fn get(path: &str, auth: Option<&str>) -> StatsResponse {
        let header = auth.map(|a| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        });
        pages().handle_request(&spec(), "GET", path, header.as_deref().map(str::as_bytes))
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
        let metrics = get("/haproxy_stats;metrics", auth);
        assert_eq!(metrics.status, 200);
        assert!(body(&metrics).contains("haproxy_server_status"));
        assert!(
            !body(&metrics).contains(env!("CARGO_PKG_VERSION")),
            "stats hide-version hides it in the metrics too"
        );
        assert_eq!(
            get("/haproxy_stats;metrics", None).status,
            401,
            "same auth as the page"
        );
        assert_eq!(
            get("/metrics", auth).status,
            503,
            "no /metrics unless configured"
        );
        assert_eq!(get("/elsewhere", auth).status, 503, "not a stats path");
        assert_eq!(get("/elsewhere", None).status, 503, "no auth asked there");
    }

    #[test]
    fn only_get_and_head() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("Username:Password")
        );
        let r = pages().handle_request(&spec(), "POST", "/haproxy_stats", Some(header.as_bytes()));
        assert_eq!(r.status, 405);
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    }

    #[test]
    fn matching_uses_the_uri_prefix() {
        let s = spec();
        assert!(s.matches("/haproxy_stats"));
        assert!(s.matches("/haproxy_stats;csv"));
        assert!(s.is_metrics_path("/haproxy_stats;metrics?scope=server"));
        assert!(!s.matches("/metrics"));
        assert!(!s.matches("/other"));
        let default = StatsSpec {
            enabled: true,
            ..StatsSpec::default()
        };
        assert!(default.matches("/haproxy?stats;csv"));
        assert!(!StatsSpec::default().matches("/haproxy?stats"));
    }

    #[test]
    fn refresh_header_and_toggle() {
        let s = StatsSpec {
            enabled: true,
            refresh: Some(std::time::Duration::from_secs(5)),
            ..StatsSpec::default()
        };
        let pages = pages();
        let r = pages.handle_request(&s, "GET", "/haproxy?stats", None);
        assert_eq!(r.header("Refresh"), Some("5"));
        assert!(body(&r).contains("content=\"5\""));
        assert!(body(&r).contains(&format!("version = {}", env!("CARGO_PKG_VERSION"))));
        let r = pages.handle_request(&s, "GET", "/haproxy?stats;norefresh", None);
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
        let r = pages().prometheus();
        assert_eq!(r.status, 200);
        assert!(r
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    }
}

//! Where the stats page plugs into the HTTP data path.
//!
//! The session calls [`answer`] for a request that [`is_stats_request`] picked: the proxy (or
//! the backend it was routed to) has `stats enable`, and the path is for the stats service
//! (`StatsSpec::matches`: its `stats uri`, HAProxy's default `/haproxy?stats`, or the metrics
//! path), or the section has nowhere else to send requests (the seeds' `listen stats` has no
//! server). `http-request use-service prometheus-exporter` calls [`answer_service`].
//! Whatever [`StatsAnswer`] comes back is sent as one response with a `Content-Length`; the
//! client connection stays open unless it asked otherwise.
//!
//! The pages themselves (auth, realm, formats) are the `stats` room's, which sits above this
//! one: the plan hands each frontend a [`StatsPages`] trait object at build time.

use std::net::IpAddr;

use crate::config::StatsSpec;

use super::head::Headers;

/// The stats room's side of the hook.
pub trait StatsPages: Send + Sync {
    /// The answer to a request for the stats service of a section with `spec`;
    /// `authorization` is the raw `Authorization` value.
    fn page(
        &self,
        spec: &StatsSpec,
        method: &str,
        target: &str,
        authorization: Option<&[u8]>,
    ) -> StatsAnswer;

    /// The Prometheus exporter's answer (no authentication, as HAProxy's `use-service`).
    fn prometheus(&self) -> StatsAnswer;
}

/// What the stats page sees of a request.
pub struct StatsRequest<'a> {
    /// The section whose `stats` lines apply.
    pub proxy: &'a str,
    pub method: &'a str,
    /// Path and query, as sent.
    pub target: &'a str,
    pub headers: &'a Headers,
    pub src: IpAddr,
}

/// A complete answer; the session adds `Content-Length` and `Connection`.
pub struct StatsAnswer {
    pub status: u16,
    /// Extra fields (`Content-Type`, `WWW-Authenticate`, `Cache-Control` …).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Whether a request to a section with `spec` is for the stats page. `has_servers` is false
/// for a section that can only answer by itself.
pub fn is_stats_request(spec: &StatsSpec, target: &str, has_servers: bool) -> bool {
    spec.enabled && (!has_servers || spec.matches(target))
}

pub fn answer(pages: &dyn StatsPages, spec: &StatsSpec, req: &StatsRequest<'_>) -> StatsAnswer {
    let auth = req.headers.get("authorization");
    pages.page(spec, req.method, req.target, auth)
}

/// `http-request use-service NAME` (only `prometheus-exporter` passes the config check).
pub fn answer_service(pages: &dyn StatsPages, _name: &str) -> StatsAnswer {
    pages.prometheus()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests() {
        let spec = StatsSpec {
            enabled: true,
            uri: Some("/haproxy_stats".into()),
            ..StatsSpec::default()
        };
        assert!(is_stats_request(&spec, "/haproxy_stats?csv", true));
        assert!(!is_stats_request(&spec, "/app", true));
        assert!(is_stats_request(&spec, "/app", false));
        let default = StatsSpec {
            enabled: true,
            ..StatsSpec::default()
        };
        assert!(is_stats_request(&default, "/haproxy?stats", true));
        assert!(!is_stats_request(
            &StatsSpec::default(),
            "/haproxy?stats",
            false
        ));
    }
}

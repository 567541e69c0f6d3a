//! Where the stats page plugs into the HTTP data path.
//!
//! The session calls [`answer`] for a request that [`is_stats_request`] picked: the proxy (or
//! the backend it was routed to) has `stats enable`, and the path is for the stats room
//! (`stats::matches`: its `stats uri`, HAProxy's default `/haproxy?stats`, or the metrics
//! path), or the section has nowhere else to send requests (the seeds' `listen stats` has no
//! server). `http-request use-service prometheus-exporter` calls [`answer_service`].
//! Whatever [`StatsAnswer`] comes back is sent as one response with a `Content-Length`; the
//! client connection stays open unless it asked otherwise.
//!
//! The page itself (auth, realm, formats) is the `stats` room's `handle_request`, fed with the
//! registry the runtime installed. Without one (a library user that never ran the runtime),
//! the answer is a 503 saying so, never a fake page.

use std::net::IpAddr;

use crate::config::StatsSpec;
use crate::stats;

use super::head::Headers;

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
    spec.enabled && (!has_servers || stats::matches(spec, target))
}

pub fn answer(spec: &StatsSpec, req: &StatsRequest<'_>) -> StatsAnswer {
    let Some(reg) = stats::installed() else {
        return no_registry();
    };
    let auth = req.headers.get("authorization");
    from_room(stats::handle_request(
        &reg, spec, req.method, req.target, auth,
    ))
}

/// `http-request use-service NAME` (only `prometheus-exporter` passes the config check).
pub fn answer_service(_name: &str, _req: &StatsRequest<'_>) -> StatsAnswer {
    match stats::installed() {
        Some(reg) => from_room(stats::prometheus(&reg)),
        None => no_registry(),
    }
}

fn from_room(r: stats::StatsResponse) -> StatsAnswer {
    StatsAnswer {
        status: r.status,
        headers: r
            .headers
            .into_iter()
            .map(|(n, v)| (n, v.into_bytes()))
            .collect(),
        body: r.body,
    }
}

fn no_registry() -> StatsAnswer {
    StatsAnswer {
        status: 503,
        headers: vec![
            ("Content-Type".into(), b"text/plain".to_vec()),
            ("Cache-Control".into(), b"no-cache".to_vec()),
        ],
        body: b"stats registry not installed\n".to_vec(),
    }
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

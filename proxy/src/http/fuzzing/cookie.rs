//! The persistence-cookie codec: `Cookie` fields found, rewritten and routed, then the
//! server's `Set-Cookie` fields rewritten or a cookie inserted, in every `cookie` mode.
//!
//! Property checked besides "no panic": in `insert` mode, the cookie the proxy inserts for a
//! server, sent back by the client, routes to that server (stickiness round trip).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, CookieMode, CookieSpec, Loc, Proxy, ProxyKind, ServerParams};
use crate::upstream::ServerSet;

use super::super::cookie::{Seen, Sticky};
use super::super::head::Headers;

const SERVERS: [&str; 3] = ["ams1", "ams2", "a~b"];

fn spec(pick: u8) -> CookieSpec {
    CookieSpec {
        name: "SRV".into(),
        mode: [
            CookieMode::Prefix,
            CookieMode::Insert,
            CookieMode::Rewrite,
            CookieMode::Insert,
        ][usize::from(pick & 3)],
        indirect: pick & 4 != 0,
        nocache: pick & 8 != 0,
        httponly: pick & 16 != 0,
        secure: false,
        maxidle: (pick & 32 != 0).then_some(Duration::from_secs(60)),
        maxlife: (pick & 64 != 0).then_some(Duration::from_secs(3600)),
        domains: Vec::new(),
        attrs: Vec::new(),
        loc: Loc::default(),
    }
}

fn servers() -> ServerSet {
    let mut p = Proxy::new("b", ProxyKind::Backend, Loc::default());
    for (i, name) in SERVERS.iter().enumerate() {
        p.servers.push(config::Server {
            name: name.to_string(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 2 + i as u8], 5080)),
            params: ServerParams {
                cookie: Some(name.to_string()),
                ..ServerParams::default()
            },
            dns: None,
            loc: Loc::default(),
        });
    }
    ServerSet::from_config(&p)
}

/// `data[0]` picks the mode and flags; then lines: `C…` a `Cookie` field of the request,
/// `S…` a `Set-Cookie` field of the response, anything else another field.
pub fn cookie(data: &[u8]) {
    let (&pick, rest) = data.split_first().unwrap_or((&0, &[]));
    let spec = spec(pick);
    let sticky = Sticky::new(&spec);
    let set = servers();
    let mut request = Headers::default();
    let mut response = Headers::default();
    for line in rest.split(|&b| b == b'\n') {
        match line.split_first() {
            Some((b'C', v)) => request.add("Cookie", v),
            Some((b'S', v)) => response.add("Set-Cookie", v),
            Some((_, v)) => request.add("X-Other", v),
            None => {}
        }
    }
    let routed = sticky.on_request(&mut request, &set);
    let id = routed
        .server
        .as_ref()
        .and_then(|s| s.params.cookie.clone())
        .unwrap_or_else(|| SERVERS[usize::from(pick >> 7)].to_string());
    sticky.on_response(&mut response, Some(&id), &routed.seen);
    if spec.mode == CookieMode::Insert {
        round_trip(&sticky, &set, &response, &id);
    }
}

fn round_trip(sticky: &Sticky, set: &ServerSet, response: &Headers, id: &str) {
    let inserted = response
        .get_all("set-cookie")
        .filter_map(|v| v.split(|&b| b == b';').next())
        .find(|pair| pair.starts_with(b"SRV="));
    let Some(pair) = inserted else { return };
    let mut back = Headers::default();
    back.add("Cookie", pair);
    let routed = sticky.on_request(&mut back, set);
    assert_eq!(
        routed.seen,
        Seen::Valid(Arc::from(id)),
        "the inserted cookie does not route back"
    );
}

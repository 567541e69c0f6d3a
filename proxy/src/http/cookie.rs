//! Cookie stickiness, as HAProxy's `cookie NAME prefix|insert|rewrite …` with `server … cookie
//! VALUE`:
//! - prefix: the server's `NAME=v` leaves as `NAME=SRV~v`; an incoming `SRV~v` routes to SRV
//!   and reaches it as `v`;
//! - insert: the proxy adds `NAME=SRV` (with `indirect`, only when the client lacks a valid
//!   one, and the cookie is removed from requests); `maxidle`/`maxlife` stamp it with dates;
//! - rewrite: the server's `NAME=v` is replaced by `NAME=SRV`.
//!
//! A cookie naming a server that is down or unknown is ignored and the request load balanced.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{CookieMode, CookieSpec};
use crate::upstream::{Server, ServerSet};

use super::head::Headers;

/// What the request's cookie said, HAProxy's log flag in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// [N] no persistence cookie.
    None,
    /// [V] a cookie for a usable server.
    Valid(Arc<str>),
    /// [D] the server it names is down.
    Down,
    /// [I] it names no server.
    Invalid,
    /// [E] too old (maxidle/maxlife).
    Expired,
}

impl Seen {
    pub fn flag(&self) -> char {
        match self {
            Seen::None => 'N',
            Seen::Valid(_) => 'V',
            Seen::Down => 'D',
            Seen::Invalid => 'I',
            Seen::Expired => 'E',
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sticky {
    spec: CookieSpec,
}

/// The request's verdict: where it should go, and what the client had.
pub struct Routed {
    pub server: Option<Arc<Server>>,
    pub seen: Seen,
}

impl Sticky {
    pub fn new(spec: &CookieSpec) -> Sticky {
        Sticky { spec: spec.clone() }
    }

    /// Finds the persistence cookie in `Cookie` fields and rewrites them as the mode says.
    pub fn on_request(&self, headers: &mut Headers, set: &ServerSet) -> Routed {
        let mut found: Option<String> = None;
        for h in headers.0.iter_mut() {
            if !h.name.eq_ignore_ascii_case("cookie") {
                continue;
            }
            let (value, kept) = self.rewrite_cookie_field(&h.value, &mut found);
            h.value = value.into();
            if !kept {
                h.value.clear();
            }
        }
        headers
            .0
            .retain(|h| !(h.name.eq_ignore_ascii_case("cookie") && h.value.is_empty()));
        let Some(id) = found else {
            return Routed {
                server: None,
                seen: Seen::None,
            };
        };
        self.route(&id, set)
    }

    /// One `Cookie` field: returns its new value and whether anything is left of it.
    fn rewrite_cookie_field(&self, value: &[u8], found: &mut Option<String>) -> (Vec<u8>, bool) {
        let text = String::from_utf8_lossy(value);
        let mut parts: Vec<String> = Vec::new();
        for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, v)) = pair.split_once('=') else {
                parts.push(pair.to_string());
                continue;
            };
            if name.trim() != self.spec.name || found.is_some() {
                parts.push(pair.to_string());
                continue;
            }
            match self.spec.mode {
                CookieMode::Prefix => match v.split_once('~') {
                    Some((id, rest)) => {
                        *found = Some(id.to_string());
                        parts.push(format!("{name}={rest}"));
                    }
                    None => parts.push(pair.to_string()),
                },
                CookieMode::Insert => {
                    *found = Some(v.to_string());
                    if !self.spec.indirect {
                        parts.push(pair.to_string());
                    }
                }
                CookieMode::Rewrite => {
                    *found = Some(v.to_string());
                    parts.push(pair.to_string());
                }
            }
        }
        let joined = parts.join("; ");
        let kept = !joined.is_empty();
        (joined.into_bytes(), kept)
    }

    fn route(&self, value: &str, set: &ServerSet) -> Routed {
        let id = match self.check_dates(value) {
            Some(id) => id,
            None => {
                return Routed {
                    server: None,
                    seen: Seen::Expired,
                }
            }
        };
        let servers = set.servers();
        let server = servers
            .iter()
            .find(|s| s.params.cookie.as_deref() == Some(id));
        match server {
            Some(s) if s.takes_persistent() => Routed {
                server: Some(s.clone()),
                seen: Seen::Valid(Arc::from(id)),
            },
            Some(_) => Routed {
                server: None,
                seen: Seen::Down,
            },
            None => Routed {
                server: None,
                seen: Seen::Invalid,
            },
        }
    }

    /// The server id of an insert-mode value `ID|LAST|FIRST` (hex Unix seconds) that is still
    /// within maxidle/maxlife; other modes and undated cookies pass as they are.
    fn check_dates<'v>(&self, value: &'v str) -> Option<&'v str> {
        if self.spec.mode != CookieMode::Insert || !self.dated() {
            return Some(value);
        }
        let mut parts = value.split('|');
        let id = parts.next()?;
        let last = parts.next().and_then(|t| u64::from_str_radix(t, 16).ok());
        let first = parts.next().and_then(|t| u64::from_str_radix(t, 16).ok());
        let now = now_secs();
        let too_old = |stamp: Option<u64>, limit: Option<std::time::Duration>| match limit {
            None => false,
            Some(l) => stamp.is_none_or(|s| now.saturating_sub(s) > l.as_secs()),
        };
        if too_old(last, self.spec.maxidle) || too_old(first, self.spec.maxlife) {
            return None;
        }
        Some(id)
    }

    fn dated(&self) -> bool {
        self.spec.maxidle.is_some() || self.spec.maxlife.is_some()
    }

    /// Applies the mode to the server's response fields; returns HAProxy's response flag.
    /// `server_id` is the `cookie` value of the server that answered.
    pub fn on_response(&self, headers: &mut Headers, server_id: Option<&str>, seen: &Seen) -> char {
        let Some(id) = server_id else {
            return 'N';
        };
        let flag = match self.spec.mode {
            CookieMode::Prefix => self.rewrite_set_cookie(headers, |v| format!("{id}~{v}")),
            CookieMode::Rewrite => self.rewrite_set_cookie(headers, |_| id.to_string()),
            CookieMode::Insert => self.insert(headers, id, seen),
        };
        if flag != 'N' && self.spec.nocache {
            mark_private(headers);
        }
        flag
    }

    fn rewrite_set_cookie(
        &self,
        headers: &mut Headers,
        new_value: impl Fn(&str) -> String,
    ) -> char {
        let mut flag = 'N';
        for h in headers.0.iter_mut() {
            if !h.name.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let text = String::from_utf8_lossy(&h.value).into_owned();
            let (pair, attrs) = text.split_once(';').unwrap_or((&text, ""));
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name.trim() != self.spec.name {
                continue;
            }
            let rest = if attrs.is_empty() {
                String::new()
            } else {
                format!(";{attrs}")
            };
            h.value = format!("{}={}{rest}", name.trim(), new_value(value.trim()))
                .into_bytes()
                .into();
            flag = 'R';
        }
        flag
    }

    fn insert(&self, headers: &mut Headers, id: &str, seen: &Seen) -> char {
        // The server's own cookie of that name would fight ours: HAProxy removes it.
        let name = self.spec.name.clone();
        headers.0.retain(|h| {
            !(h.name.eq_ignore_ascii_case("set-cookie")
                && String::from_utf8_lossy(&h.value)
                    .split_once('=')
                    .is_some_and(|(n, _)| n.trim() == name))
        });
        let has_valid = matches!(seen, Seen::Valid(s) if &**s == id);
        if self.spec.indirect && has_valid && !self.dated() {
            return 'N';
        }
        let mut value = format!("{}={id}", self.spec.name);
        if self.dated() {
            let now = now_secs();
            value.push_str(&format!("|{now:x}|{now:x}"));
        }
        value.push_str("; path=/");
        if self.spec.httponly {
            value.push_str("; HttpOnly");
        }
        if self.spec.secure {
            value.push_str("; Secure");
        }
        for d in &self.spec.domains {
            value.push_str("; Domain=");
            value.push_str(d);
        }
        for a in &self.spec.attrs {
            value.push_str("; ");
            value.push_str(a);
        }
        headers.add("Set-Cookie", value.as_bytes());
        'I'
    }
}

/// `nocache`: a response that sets a persistence cookie must not be cached and served to
/// other clients, who would then all stick to one server.
fn mark_private(headers: &mut Headers) {
    let already = headers.tokens("cache-control").iter().any(|t| {
        let t = t.to_ascii_lowercase();
        t == "private" || t == "no-store" || t.starts_with("no-cache")
    });
    if !already {
        headers.add("Cache-Control", b"private");
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Loc, Proxy, ProxyKind, ServerParams};

    fn spec(mode: CookieMode) -> CookieSpec {
        CookieSpec {
            name: "JSESSIONID".into(),
            mode,
            indirect: false,
            nocache: true,
            httponly: false,
            secure: false,
            maxidle: None,
            maxlife: None,
            domains: Vec::new(),
            attrs: Vec::new(),
            loc: Loc::default(),
        }
    }

    fn servers() -> ServerSet {
        let mut p = Proxy::new("b", ProxyKind::Backend, Loc::default());
        for (i, name) in ["ams1", "ams2"].iter().enumerate() {
            p.servers.push(config::Server {
                dns: None,
                name: name.to_string(),
                addr: format!("127.0.0.{}:5080", i + 2).parse().unwrap(),
                params: ServerParams {
                    cookie: Some(name.to_string()),
                    ..ServerParams::default()
                },
                loc: Loc::default(),
            });
        }
        ServerSet::from_config(&p)
    }

    fn cookie_headers(v: &str) -> Headers {
        let mut h = Headers::default();
        h.add("Cookie", v.as_bytes());
        h
    }

    #[test]
    fn prefix_round_trip() {
        let s = Sticky::new(&spec(CookieMode::Prefix));
        let set = servers();
        let mut h = cookie_headers("a=1; JSESSIONID=ams2~abc; b=2");
        let r = s.on_request(&mut h, &set);
        assert_eq!(r.server.map(|s| s.name.clone()), Some("ams2".to_string()));
        assert_eq!(h.get("cookie"), Some(&b"a=1; JSESSIONID=abc; b=2"[..]));
        let mut resp = Headers::default();
        resp.add("Set-Cookie", b"JSESSIONID=xyz; Path=/; HttpOnly");
        resp.add("Set-Cookie", b"other=1");
        assert_eq!(s.on_response(&mut resp, Some("ams1"), &r.seen), 'R');
        assert_eq!(
            resp.get_all("set-cookie").collect::<Vec<_>>(),
            [&b"JSESSIONID=ams1~xyz; Path=/; HttpOnly"[..], b"other=1"]
        );
        assert_eq!(resp.get("cache-control"), Some(&b"private"[..]));
    }

    #[test]
    fn down_and_unknown_are_balanced() {
        let s = Sticky::new(&spec(CookieMode::Prefix));
        let set = servers();
        let r = s.on_request(&mut cookie_headers("JSESSIONID=ams9~x"), &set);
        assert_eq!((r.server.is_none(), r.seen), (true, Seen::Invalid));
        set.servers()[0].set_state(crate::upstream::ServerState::Down);
        let mut h = cookie_headers("JSESSIONID=ams1~x");
        let r = s.on_request(&mut h, &set);
        assert_eq!((r.server.is_none(), r.seen), (true, Seen::Down));
        assert_eq!(h.get("cookie"), Some(&b"JSESSIONID=x"[..]));
    }

    #[test]
    fn insert_indirect() {
        let mut sp = spec(CookieMode::Insert);
        sp.indirect = true;
        sp.httponly = true;
        let s = Sticky::new(&sp);
        let set = servers();
        let mut h = cookie_headers("JSESSIONID=ams1");
        let r = s.on_request(&mut h, &set);
        assert_eq!(r.seen, Seen::Valid(Arc::from("ams1")));
        assert_eq!(h.get("cookie"), None, "indirect removes it");
        let mut resp = Headers::default();
        assert_eq!(s.on_response(&mut resp, Some("ams1"), &r.seen), 'N');
        assert_eq!(s.on_response(&mut resp, Some("ams2"), &r.seen), 'I');
        assert_eq!(
            resp.get("set-cookie"),
            Some(&b"JSESSIONID=ams2; path=/; HttpOnly"[..])
        );
    }

    #[test]
    fn insert_with_dates() {
        let mut sp = spec(CookieMode::Insert);
        sp.maxidle = Some(std::time::Duration::from_secs(60));
        let s = Sticky::new(&sp);
        let set = servers();
        let now = now_secs();
        let fresh = format!("JSESSIONID=ams2|{now:x}|{now:x}");
        let r = s.on_request(&mut cookie_headers(&fresh), &set);
        assert_eq!(r.seen, Seen::Valid(Arc::from("ams2")));
        let old = format!("JSESSIONID=ams2|{:x}|{now:x}", now - 3600);
        let r = s.on_request(&mut cookie_headers(&old), &set);
        assert_eq!(r.seen, Seen::Expired);
    }

    #[test]
    fn rewrite_mode() {
        let s = Sticky::new(&spec(CookieMode::Rewrite));
        let mut resp = Headers::default();
        resp.add("Set-Cookie", b"JSESSIONID=server-made; Path=/");
        assert_eq!(s.on_response(&mut resp, Some("ams1"), &Seen::None), 'R');
        assert_eq!(
            resp.get("set-cookie"),
            Some(&b"JSESSIONID=ams1; Path=/"[..])
        );
    }
}

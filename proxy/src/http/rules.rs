//! Request rules of one proxy, compiled at start: `http-request add-header|set-header|
//! del-header|deny|redirect|use-service`, `reqadd` and `redirect` (the config room keeps them
//! in one list in file order), and `option forwardfor`.

use std::net::IpAddr;

use crate::config::{ForwardFor, HttpAction, HttpRule, Loc, RedirectKind};

use super::acl::{holds, AclSet, Cond, Ctx, Net};
use super::error::HttpError;
use super::head::Request;

#[derive(Debug, Clone)]
enum Action {
    Add(String, Vec<u8>),
    Set(String, Vec<u8>),
    Del(String),
    Deny(u16),
    Redirect(RedirectKind, u16),
    Service(String),
}

#[derive(Debug, Clone)]
struct Rule {
    action: Action,
    cond: Option<Cond>,
}

/// What the rules decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on to routing and the server.
    Pass,
    /// Answer with this error status (an errorfile if one is set).
    Deny(u16),
    /// Answer with a redirect to this location.
    Redirect { code: u16, location: Vec<u8> },
    /// `http-request use-service NAME`.
    Service(String),
}

#[derive(Debug, Clone, Default)]
pub struct RuleSet(Vec<Rule>);

impl RuleSet {
    pub fn compile(rules: &[HttpRule], acls: &AclSet) -> Result<RuleSet, HttpError> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let cond = r
                .cond
                .as_ref()
                .map(|c| Cond::compile(c, acls, &r.loc))
                .transpose()?;
            out.push(Rule {
                action: action(&r.action, &r.loc)?,
                cond,
            });
        }
        Ok(RuleSet(out))
    }

    /// Applies the rules in order until one answers the request.
    pub fn apply(&self, req: &mut Request, src: IpAddr, ssl: bool) -> Verdict {
        for rule in &self.0 {
            let ctx = Ctx {
                req,
                src,
                ssl,
                res: None,
            };
            if !holds(&rule.cond, &ctx) {
                continue;
            }
            match &rule.action {
                Action::Add(name, value) => req.headers.add(name, value),
                Action::Set(name, value) => req.headers.set(name, value),
                Action::Del(name) => req.headers.remove(name),
                Action::Deny(status) => return Verdict::Deny(*status),
                Action::Service(name) => return Verdict::Service(name.clone()),
                Action::Redirect(kind, code) => {
                    if let Some(location) = location(kind, req, ssl) {
                        return Verdict::Redirect {
                            code: *code,
                            location,
                        };
                    }
                }
            }
        }
        Verdict::Pass
    }
}

fn action(a: &HttpAction, loc: &Loc) -> Result<Action, HttpError> {
    Ok(match a {
        HttpAction::AddHeader { name, value } => {
            Action::Add(name.clone(), header_value(value, loc)?)
        }
        HttpAction::SetHeader { name, value } => {
            Action::Set(name.clone(), header_value(value, loc)?)
        }
        HttpAction::DelHeader { name } => Action::Del(name.clone()),
        HttpAction::Deny { status } => Action::Deny(*status),
        HttpAction::Redirect(r) => {
            if let RedirectKind::Location(l) | RedirectKind::Prefix(l) = &r.kind {
                header_value(l, loc)?;
            }
            Action::Redirect(r.kind.clone(), r.code)
        }
        HttpAction::UseService(name) => Action::Service(name.clone()),
    })
}

/// A literal value. HAProxy reads these as log-format strings; `%%` is a percent sign, and
/// sample expressions (`%[src]` …) are not supported yet, so they are refused rather than sent
/// to the server as literal text.
pub(super) fn header_value(value: &str, loc: &Loc) -> Result<Vec<u8>, HttpError> {
    let refuse = |reason: String| HttpError::Config {
        loc: loc.clone(),
        reason,
    };
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(refuse(format!("control character in '{value}'")));
    }
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes().peekable();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        if bytes.next_if_eq(&b'%').is_some() {
            out.push(b'%');
            continue;
        }
        return Err(refuse(format!(
            "log-format expressions in header values are not supported yet: '{value}' \
             (write '%%' for a percent sign)"
        )));
    }
    Ok(out)
}

/// The `Location` of a redirect. `scheme` keeps the Host as sent, port included, and without
/// a Host (HTTP/1.0) still redirects, to `scheme:///path`, as HAProxy's
/// `http_apply_redirect_rule` does: the request is never proxied in the clear instead.
fn location(kind: &RedirectKind, req: &Request, _ssl: bool) -> Option<Vec<u8>> {
    match kind {
        RedirectKind::Location(l) => Some(l.as_bytes().to_vec()),
        RedirectKind::Prefix(p) => {
            let prefix = p.strip_suffix('/').unwrap_or(p);
            Some(format!("{prefix}{}", req.target).into_bytes())
        }
        RedirectKind::Scheme(s) => {
            let mut out = format!("{s}://").into_bytes();
            out.extend_from_slice(req.host().unwrap_or_default());
            out.extend_from_slice(path_of(&req.target).as_bytes());
            Some(out)
        }
    }
}

/// The path (and query) of a request target: an absolute-form target loses its scheme and
/// authority, and an empty path is `/`, as HAProxy's `http_get_path`.
fn path_of(target: &str) -> &str {
    let path = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => rest.find('/').map_or("", |i| &rest[i..]),
        _ => target,
    };
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// `option forwardfor`, compiled.
#[derive(Debug, Clone)]
pub struct Forwarded {
    header: String,
    except: Option<Net>,
    if_none: bool,
}

impl Forwarded {
    pub fn compile(ff: &ForwardFor, loc: &Loc) -> Result<Forwarded, HttpError> {
        let except = ff
            .except
            .as_deref()
            .map(Net::parse)
            .transpose()
            .map_err(|reason| HttpError::Config {
                loc: loc.clone(),
                reason: format!("option forwardfor except: {reason}"),
            })?;
        Ok(Forwarded {
            header: ff.header.clone(),
            except,
            if_none: ff.if_none,
        })
    }

    /// Adds the client's address as a new field (HAProxy does not append to an existing one).
    pub fn apply(&self, req: &mut Request, src: IpAddr) {
        if self.except.is_some_and(|n| n.contains(src)) {
            return;
        }
        if self.if_none && req.headers.get(&self.header).is_some() {
            return;
        }
        let ip = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        req.headers.add(&self.header, ip.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Condition, Redirect};
    use crate::http::head::parse_request;

    fn rule(action: HttpAction, cond: Option<&str>) -> HttpRule {
        HttpRule {
            action,
            cond: cond.map(|c| Condition {
                negate: false,
                words: c.split_whitespace().map(String::from).collect(),
            }),
            loc: Loc::default(),
            origin: crate::config::RuleOrigin::HttpRequest,
        }
    }

    fn set(rules: Vec<HttpRule>) -> RuleSet {
        RuleSet::compile(&rules, &AclSet::compile(&[]).unwrap()).unwrap()
    }

    fn request() -> Request {
        parse_request(b"GET /p?q HTTP/1.1\r\nHost: lb.example:5080\r\nX-Old: 1\r\n\r\n").unwrap()
    }

    #[test]
    fn headers_in_order() {
        let rules = set(vec![
            rule(
                HttpAction::AddHeader {
                    name: "X-Forwarded-Proto".into(),
                    value: "http".into(),
                },
                None,
            ),
            rule(
                HttpAction::SetHeader {
                    name: "X-Old".into(),
                    value: "2".into(),
                },
                None,
            ),
            rule(
                HttpAction::DelHeader {
                    name: "x-gone".into(),
                },
                None,
            ),
        ]);
        let mut r = request();
        r.headers.add("X-Gone", b"x");
        assert_eq!(
            rules.apply(&mut r, "10.0.0.1".parse().unwrap(), false),
            Verdict::Pass
        );
        assert_eq!(r.headers.get("x-forwarded-proto"), Some(&b"http"[..]));
        assert_eq!(r.headers.get_all("x-old").collect::<Vec<_>>(), [&b"2"[..]]);
        assert_eq!(r.headers.get("x-gone"), None);
    }

    #[test]
    fn paths_of_targets() {
        assert_eq!(path_of("/a?b"), "/a?b");
        assert_eq!(path_of("http://h:81/a?b"), "/a?b");
        assert_eq!(path_of("http://h"), "/");
        assert_eq!(path_of("/x://y"), "/x://y");
        assert_eq!(path_of("*"), "*");
    }

    #[test]
    fn redirects_and_deny() {
        let redirect = |kind, code| HttpAction::Redirect(Redirect { kind, code });
        let rules = set(vec![rule(
            redirect(RedirectKind::Scheme("https".into()), 302),
            Some("! { ssl_fc }"),
        )]);
        let v = rules.apply(&mut request(), "10.0.0.1".parse().unwrap(), false);
        assert_eq!(
            v,
            Verdict::Redirect {
                code: 302,
                location: b"https://lb.example:5080/p?q".to_vec()
            }
        );
        assert_eq!(
            rules.apply(&mut request(), "10.0.0.1".parse().unwrap(), true),
            Verdict::Pass
        );
        // HTTP/1.0 without Host: still redirected, to an empty host (HAProxy's answer).
        let mut no_host = request();
        no_host.headers.remove("host");
        assert_eq!(
            rules.apply(&mut no_host, "10.0.0.1".parse().unwrap(), false),
            Verdict::Redirect {
                code: 302,
                location: b"https:///p?q".to_vec()
            }
        );
        let rules = set(vec![rule(
            redirect(RedirectKind::Prefix("https://x/".into()), 301),
            None,
        )]);
        let v = rules.apply(&mut request(), "10.0.0.1".parse().unwrap(), false);
        assert_eq!(
            v,
            Verdict::Redirect {
                code: 301,
                location: b"https://x/p?q".to_vec()
            }
        );
        let rules = set(vec![rule(
            HttpAction::Deny { status: 403 },
            Some("{ path_beg /p }"),
        )]);
        assert_eq!(
            rules.apply(&mut request(), "10.0.0.1".parse().unwrap(), false),
            Verdict::Deny(403)
        );
    }

    #[test]
    fn header_values() {
        assert_eq!(header_value("100%%", &Loc::default()).unwrap(), b"100%");
        assert!(header_value("%[src]", &Loc::default()).is_err());
    }

    #[test]
    fn forwardfor() {
        let ff = |except: Option<&str>, if_none| {
            Forwarded::compile(
                &ForwardFor {
                    header: "X-Forwarded-For".into(),
                    except: except.map(String::from),
                    if_none,
                },
                &Loc::default(),
            )
            .unwrap()
        };
        let mut r = request();
        ff(None, false).apply(&mut r, "::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(r.headers.get("x-forwarded-for"), Some(&b"10.1.2.3"[..]));
        ff(None, true).apply(&mut r, "10.9.9.9".parse().unwrap());
        assert_eq!(r.headers.count("x-forwarded-for"), 1);
        ff(Some("10.0.0.0/8"), false).apply(&mut r, "10.9.9.9".parse().unwrap());
        assert_eq!(r.headers.count("x-forwarded-for"), 1);
    }
}

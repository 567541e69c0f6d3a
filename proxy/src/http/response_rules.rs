//! `http-response` rules of one proxy, compiled at start and applied to each server response
//! head: `add-header`, `set-header`, `del-header`, `replace-header`, `deny`, `set-status`. The
//! session runs the backend's rules, then the frontend's, as HAProxy does; a `deny` stops both.

use regex::bytes::{Regex, RegexBuilder};

use crate::config::{HttpResponseAction, HttpResponseRule, Loc};

use super::acl::{holds, AclSet, Cond, Ctx, Side};
use super::error::HttpError;
use super::head::Response;
use super::rules::header_value;

#[derive(Debug, Clone)]
enum Action {
    Add(String, Vec<u8>),
    Set(String, Vec<u8>),
    Del(String),
    /// Every value of the field that the regex matches whole is rewritten.
    Replace(String, Regex, Vec<u8>),
    Deny(u16),
    SetStatus(u16, Option<String>),
}

#[derive(Debug, Clone)]
struct Rule {
    action: Action,
    cond: Option<Cond>,
}

#[derive(Debug, Clone, Default)]
pub struct ResponseRules(Vec<Rule>);

impl ResponseRules {
    pub fn compile(rules: &[HttpResponseRule], acls: &AclSet) -> Result<ResponseRules, HttpError> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let cond = r
                .cond
                .as_ref()
                .map(|c| Cond::compile_on(c, acls, &r.loc, Side::Response))
                .transpose()?;
            out.push(Rule {
                action: action(&r.action, &r.loc)?,
                cond,
            });
        }
        Ok(ResponseRules(out))
    }

    /// Applies the rules in order to `resp`; `Err(status)` when one denies it. `ctx` holds
    /// the request as the server got it; its `res` is filled from `resp` before each rule.
    pub fn apply(&self, resp: &mut Response, ctx: &Ctx<'_>) -> Result<(), u16> {
        for rule in &self.0 {
            let view = Ctx {
                res: Some(super::acl::ResponseView {
                    status: resp.status,
                    headers: &resp.headers,
                }),
                ..*ctx
            };
            if !holds(&rule.cond, &view) {
                continue;
            }
            match &rule.action {
                Action::Add(name, value) => resp.headers.add(name, value),
                Action::Set(name, value) => resp.headers.set(name, value),
                Action::Del(name) => resp.headers.remove(name),
                Action::Replace(name, re, with) => replace(resp, name, re, with),
                Action::Deny(status) => return Err(*status),
                Action::SetStatus(status, reason) => {
                    resp.status = *status;
                    resp.reason = reason
                        .clone()
                        .unwrap_or_else(|| super::answers::reason(*status).to_string())
                        .into();
                }
            }
        }
        Ok(())
    }
}

fn replace(resp: &mut Response, name: &str, re: &Regex, with: &[u8]) {
    for h in resp.headers.0.iter_mut() {
        if !h.name.eq_ignore_ascii_case(name) {
            continue;
        }
        if let Some(caps) = re.captures(&h.value) {
            let mut out = Vec::new();
            caps.expand(with, &mut out);
            h.value = out.into();
        }
    }
}

fn action(a: &HttpResponseAction, loc: &Loc) -> Result<Action, HttpError> {
    let refuse = |reason: String| HttpError::Config {
        loc: loc.clone(),
        reason,
    };
    Ok(match a {
        HttpResponseAction::AddHeader { name, value } => {
            Action::Add(name.clone(), header_value(value, loc)?)
        }
        HttpResponseAction::SetHeader { name, value } => {
            Action::Set(name.clone(), header_value(value, loc)?)
        }
        HttpResponseAction::DelHeader { name } => Action::Del(name.clone()),
        HttpResponseAction::ReplaceHeader {
            name,
            regex,
            replacement,
        } => {
            // HAProxy's regex must match the whole value: anchored here.
            let re = RegexBuilder::new(&format!("^(?:{regex})$"))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| refuse(format!("invalid regex '{regex}': {e}")))?;
            Action::Replace(name.clone(), re, backrefs(replacement, loc)?)
        }
        HttpResponseAction::Deny { status } => Action::Deny(*status),
        HttpResponseAction::SetStatus { status, reason } => {
            if let Some(r) = reason {
                header_value(r, loc)?;
            }
            Action::SetStatus(*status, reason.clone())
        }
    })
}

/// HAProxy writes a regex group as `\1`; the regex crate's `expand` wants `${1}`, and a
/// literal `$` must be doubled for it.
fn backrefs(replacement: &str, loc: &Loc) -> Result<Vec<u8>, HttpError> {
    let literal = header_value(replacement, loc)?;
    let mut out = Vec::with_capacity(literal.len());
    let mut bytes = literal.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' if bytes.peek().is_some_and(u8::is_ascii_digit) => {
                let digit = bytes.next().unwrap_or(b'0');
                out.extend_from_slice(format!("${{{}}}", digit - b'0').as_bytes());
            }
            b'$' => out.extend_from_slice(b"$$"),
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Condition;
    use crate::http::head::{parse_request, parse_response};

    fn rule(action: HttpResponseAction, cond: Option<&str>) -> HttpResponseRule {
        HttpResponseRule {
            action,
            cond: cond.map(|c| Condition {
                negate: false,
                words: c.split(' ').map(str::to_string).collect(),
            }),
            loc: Loc::default(),
        }
    }

    fn response(text: &str) -> Response {
        parse_response(text.as_bytes(), "GET").expect("parses")
    }

    fn run(rules: &[HttpResponseRule], resp: &mut Response) -> Result<(), u16> {
        let set = ResponseRules::compile(rules, &AclSet::default()).expect("compiles");
        let req = parse_request(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n").expect("parses");
        let ctx = Ctx {
            req: &req,
            src: "10.0.0.1".parse().expect("ip"),
            ssl: false,
            res: None,
        };
        set.apply(resp, &ctx)
    }

    #[test]
    fn headers_status_and_deny() {
        let mut resp = response(
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nLocation: http://a/b\r\nContent-Length: 0\r\n\r\n",
        );
        let rules = [
            rule(
                HttpResponseAction::SetHeader {
                    name: "Strict-Transport-Security".into(),
                    value: "max-age=1".into(),
                },
                None,
            ),
            rule(
                HttpResponseAction::DelHeader {
                    name: "Server".into(),
                },
                Some("{ status 200 }"),
            ),
            rule(
                HttpResponseAction::ReplaceHeader {
                    name: "Location".into(),
                    regex: "http://(.*)".into(),
                    replacement: "https://\\1".into(),
                },
                None,
            ),
            rule(
                HttpResponseAction::SetStatus {
                    status: 299,
                    reason: Some("Fine".into()),
                },
                Some("{ res.hdr(location) -m beg https:// }"),
            ),
        ];
        assert_eq!(run(&rules, &mut resp), Ok(()));
        assert_eq!(
            resp.headers.get("strict-transport-security"),
            Some(&b"max-age=1"[..])
        );
        assert_eq!(resp.headers.get("server"), None);
        assert_eq!(resp.headers.get("location"), Some(&b"https://a/b"[..]));
        assert_eq!((resp.status, &*resp.reason), (299, "Fine"));
    }

    #[test]
    fn deny_by_status_range() {
        let deny = [rule(
            HttpResponseAction::Deny { status: 502 },
            Some("{ status 500:599 }"),
        )];
        let mut ok = response("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(run(&deny, &mut ok), Ok(()));
        let mut bad = response("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(run(&deny, &mut bad), Err(502));
    }

    #[test]
    fn request_only_fetches_are_refused() {
        for cond in ["{ path_beg /x }", "{ hdr(host) -m str a }"] {
            let rules = [rule(HttpResponseAction::Deny { status: 502 }, Some(cond))];
            let err = ResponseRules::compile(&rules, &AclSet::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("would never match"), "{cond}: {err}");
        }
        let status_in_request = crate::config::Condition {
            negate: false,
            words: ["{", "status", "200", "}"].map(String::from).to_vec(),
        };
        assert!(Cond::compile(&status_in_request, &AclSet::default(), &Loc::default()).is_err());
    }

    #[test]
    fn replacements_escape_dollars() {
        assert_eq!(
            backrefs("a$b\\2", &Loc::default()).expect("ok"),
            b"a$$b${2}"
        );
    }
}

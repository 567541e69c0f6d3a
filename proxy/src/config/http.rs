//! HTTP directives: `http-request`, `http-response`, `reqadd`, `redirect`, `cookie`, `stats`.
//! Conditions are kept as words (see `Args::condition`); the HTTP room compiles them.

use super::args::Args;
use super::model::{
    CookieMode, CookieSpec, HttpAction, HttpResponseAction, HttpResponseRule, HttpRule, Loc, Proxy,
    Redirect, RedirectKind, RuleOrigin,
};
use super::num::parse_uint;
use super::proxy::{codes_list, ERROR_CODES};
use super::time::parse_duration;

const REDIRECT_CODES: &[u16] = &[301, 302, 303, 307, 308];

/// `http-request ACTION … [if|unless COND]`.
pub(crate) fn http_request(
    proxy: &mut Proxy,
    args: &mut Args<'_>,
    loc: &Loc,
) -> Result<(), String> {
    let word = args.need("an action")?;
    let action = match header_edit(word, args)? {
        Some(HeaderEdit::Add(name, value)) => HttpAction::AddHeader { name, value },
        Some(HeaderEdit::Set(name, value)) => HttpAction::SetHeader { name, value },
        Some(HeaderEdit::Del(name)) => HttpAction::DelHeader { name },
        None => request_action(word, args)?,
    };
    let cond = args.condition()?;
    proxy.add_http_rule(HttpRule {
        action,
        cond,
        loc: loc.clone(),
        origin: RuleOrigin::HttpRequest,
    });
    Ok(())
}

/// The `http-request` actions other than header edits.
fn request_action(word: &str, args: &mut Args<'_>) -> Result<HttpAction, String> {
    Ok(match word {
        "deny" => HttpAction::Deny {
            status: deny_status(args)?,
        },
        "redirect" => HttpAction::Redirect(redirect_spec(args)?),
        "use-service" => match args.need("a service name")? {
            "prometheus-exporter" => HttpAction::UseService("prometheus-exporter".to_string()),
            other => {
                return Err(format!(
                    "unknown service '{other}' (supported: prometheus-exporter)"
                ))
            }
        },
        other => {
            return Err(format!(
                "unsupported http-request action '{other}' (supported: add-header, set-header, \
                 del-header, deny, redirect, use-service)"
            ))
        }
    })
}

/// `http-response ACTION … [if|unless COND]`.
pub(crate) fn http_response(
    proxy: &mut Proxy,
    args: &mut Args<'_>,
    loc: &Loc,
) -> Result<(), String> {
    let word = args.need("an action")?;
    let action = match header_edit(word, args)? {
        Some(HeaderEdit::Add(name, value)) => HttpResponseAction::AddHeader { name, value },
        Some(HeaderEdit::Set(name, value)) => HttpResponseAction::SetHeader { name, value },
        Some(HeaderEdit::Del(name)) => HttpResponseAction::DelHeader { name },
        None => response_action(word, args)?,
    };
    let cond = args.condition()?;
    proxy.http_response_rules.push(HttpResponseRule {
        action,
        cond,
        loc: loc.clone(),
    });
    Ok(())
}

/// The `http-response` actions other than header edits.
fn response_action(word: &str, args: &mut Args<'_>) -> Result<HttpResponseAction, String> {
    Ok(match word {
        "replace-header" => HttpResponseAction::ReplaceHeader {
            name: header_name(args.need("a header name")?)?,
            regex: args.need("a regex")?.to_string(),
            replacement: args.need("a replacement")?.to_string(),
        },
        // HAProxy denies a response with a 502 unless told otherwise.
        "deny" => HttpResponseAction::Deny {
            status: deny_status_or(args, 502)?,
        },
        "set-status" => {
            let text = args.need("a status code")?;
            let status = parse_uint::<u16>(text, "set-status")
                .ok()
                .filter(|c| (100..=999).contains(c))
                .ok_or_else(|| {
                    format!("'set-status' needs a status code 100..999, got '{text}'")
                })?;
            let reason = match args.peek() {
                Some("reason") => {
                    args.next();
                    Some(args.value_of("reason")?.to_string())
                }
                _ => None,
            };
            HttpResponseAction::SetStatus { status, reason }
        }
        other => {
            return Err(format!(
                "unsupported http-response action '{other}' (supported: add-header, set-header, \
                 del-header, replace-header, deny, set-status)"
            ))
        }
    })
}

/// The header edits both rule keywords share.
enum HeaderEdit {
    Add(String, String),
    Set(String, String),
    Del(String),
}

/// `add-header NAME VALUE`, `set-header NAME VALUE`, `del-header NAME`; `None` for another
/// action word (its arguments are left unread).
fn header_edit(word: &str, args: &mut Args<'_>) -> Result<Option<HeaderEdit>, String> {
    Ok(Some(match word {
        "add-header" => {
            let (name, value) = header_and_value(args)?;
            HeaderEdit::Add(name, value)
        }
        "set-header" => {
            let (name, value) = header_and_value(args)?;
            HeaderEdit::Set(name, value)
        }
        "del-header" => HeaderEdit::Del(header_name(args.need("a header name")?)?),
        _ => return Ok(None),
    }))
}

/// `reqadd NAME:\ VALUE [if|unless COND]`: HAProxy ≤ 2.0's spelling of
/// `http-request add-header NAME VALUE`, which seed 001 uses.
pub(crate) fn reqadd(proxy: &mut Proxy, args: &mut Args<'_>, loc: &Loc) -> Result<(), String> {
    let line = args.need("a header line")?;
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("'reqadd' needs 'Name: value', got '{line}'"))?;
    let name = header_name(name.trim_end())?;
    let action = HttpAction::AddHeader {
        name,
        value: value.trim_start().to_string(),
    };
    let cond = args.condition()?;
    proxy.add_http_rule(HttpRule {
        action,
        cond,
        loc: loc.clone(),
        origin: RuleOrigin::Reqadd,
    });
    Ok(())
}

/// `redirect scheme|location|prefix X [code N] [if|unless COND]`.
pub(crate) fn redirect(proxy: &mut Proxy, args: &mut Args<'_>, loc: &Loc) -> Result<(), String> {
    let action = HttpAction::Redirect(redirect_spec(args)?);
    let cond = args.condition()?;
    proxy.add_http_rule(HttpRule {
        action,
        cond,
        loc: loc.clone(),
        origin: RuleOrigin::Redirect,
    });
    Ok(())
}

fn redirect_spec(args: &mut Args<'_>) -> Result<Redirect, String> {
    let kind = args.need("'scheme', 'location' or 'prefix'")?;
    let target = args.value_of(kind)?.to_string();
    let kind = match kind {
        "scheme" => RedirectKind::Scheme(target),
        "location" => RedirectKind::Location(target),
        "prefix" => RedirectKind::Prefix(target),
        other => {
            return Err(format!(
                "unknown redirect type '{other}' (supported: scheme, location, prefix)"
            ))
        }
    };
    let mut code = 302;
    while let Some(word) = args.peek().filter(|w| *w != "if" && *w != "unless") {
        args.next();
        match word {
            "code" => code = redirect_code(args.value_of(word)?)?,
            other => {
                return Err(format!(
                    "unsupported redirect option '{other}' (supported: code)"
                ))
            }
        }
    }
    Ok(Redirect { kind, code })
}

fn redirect_code(text: &str) -> Result<u16, String> {
    parse_uint::<u16>(text, "code")
        .ok()
        .filter(|c| REDIRECT_CODES.contains(c))
        .ok_or_else(|| {
            format!("unsupported redirect code '{text}' (supported: 301, 302, 303, 307, 308)")
        })
}

/// `deny [deny_status N]` (HAProxy 2.0) or `deny [status N]` (later versions); 403 by default.
fn deny_status(args: &mut Args<'_>) -> Result<u16, String> {
    deny_status_or(args, 403)
}

/// `[deny_status N]`, else `default`.
fn deny_status_or(args: &mut Args<'_>, default: u16) -> Result<u16, String> {
    if !matches!(args.peek(), Some("deny_status" | "status")) {
        return Ok(default);
    }
    let option = args.next().unwrap_or_default();
    let text = args.value_of(option)?;
    parse_uint::<u16>(text, option)
        .ok()
        .filter(|c| ERROR_CODES.contains(c))
        .ok_or_else(|| {
            format!(
                "unsupported deny status '{text}' (supported: {})",
                codes_list()
            )
        })
}

fn header_and_value(args: &mut Args<'_>) -> Result<(String, String), String> {
    let name = header_name(args.need("a header name")?)?;
    let value = args.need("a header value")?.to_string();
    Ok((name, value))
}

/// An HTTP token (RFC 9110): what may appear in a header name.
fn header_name(name: &str) -> Result<String, String> {
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token_char) {
        return Err(format!("invalid header name '{name}'"));
    }
    Ok(name.to_string())
}

/// `cookie NAME rewrite|insert|prefix [options]`. `preserve`, `postonly` and `dynamic` are
/// refused: they change when the cookie is set in ways this proxy does not implement.
pub(crate) fn cookie(proxy: &mut Proxy, args: &mut Args<'_>, loc: &Loc) -> Result<(), String> {
    let name = args.need("a cookie name")?.to_string();
    let mut mode = None;
    let mut spec = CookieSpec {
        name,
        mode: CookieMode::Insert,
        indirect: false,
        nocache: false,
        httponly: false,
        secure: false,
        maxidle: None,
        maxlife: None,
        domains: Vec::new(),
        attrs: Vec::new(),
        loc: loc.clone(),
    };
    while let Some(word) = args.next() {
        match word {
            "rewrite" | "insert" | "prefix" => {
                if mode.is_some() {
                    return Err(
                        "'rewrite', 'insert' and 'prefix' are mutually exclusive".to_string()
                    );
                }
                mode = Some(match word {
                    "rewrite" => CookieMode::Rewrite,
                    "insert" => CookieMode::Insert,
                    _ => CookieMode::Prefix,
                });
            }
            "indirect" => spec.indirect = true,
            "nocache" => spec.nocache = true,
            "httponly" => spec.httponly = true,
            "secure" => spec.secure = true,
            "maxidle" => {
                spec.maxidle = Some(parse_duration(args.value_of(word)?, "cookie maxidle")?)
            }
            "maxlife" => {
                spec.maxlife = Some(parse_duration(args.value_of(word)?, "cookie maxlife")?)
            }
            "domain" => spec.domains.push(cookie_attr(args.value_of(word)?)?),
            "attr" => spec.attrs.push(cookie_attr(args.value_of(word)?)?),
            "preserve" | "postonly" | "dynamic" => {
                return Err(format!("cookie option '{word}' is not supported"))
            }
            other => {
                return Err(format!(
                "unknown cookie option '{other}' (supported: rewrite, insert, prefix, indirect, \
                     nocache, httponly, secure, maxidle, maxlife, domain, attr)"
            ))
            }
        }
    }
    // HAProxy's "passive" cookie (no mode: only read, never set) has no place in the model.
    spec.mode = mode.ok_or("'cookie' needs one of 'rewrite', 'insert' or 'prefix'")?;
    proxy.cookie = Some(spec);
    Ok(())
}

/// A `domain` or `attr` value: it goes into a Set-Cookie field, so no `;` and no control byte.
fn cookie_attr(value: &str) -> Result<String, String> {
    if value.is_empty() || value.bytes().any(|b| b == b';' || b.is_ascii_control()) {
        return Err(format!("invalid cookie attribute value '{value}'"));
    }
    Ok(value.to_string())
}

/// `stats enable|uri X|realm X|auth U:P|hide-version|refresh T|show-legends`. As in HAProxy,
/// every `stats` line enables the stats page.
pub(crate) fn stats(proxy: &mut Proxy, args: &mut Args<'_>) -> Result<(), String> {
    let mut spec = proxy.stats.clone().unwrap_or_default();
    match args.need("a sub-keyword")? {
        "enable" => {}
        "uri" => spec.uri = Some(uri(args.value_of("uri")?)?),
        "realm" => spec.realm = Some(args.value_of("realm")?.to_string()),
        "auth" => spec.auth.push(auth(args.value_of("auth")?)?),
        "hide-version" => spec.hide_version = true,
        "refresh" => {
            spec.refresh = Some(parse_duration(args.value_of("refresh")?, "stats refresh")?)
        }
        "show-legends" => spec.show_legends = true,
        "admin" => {
            return Err(
                "'stats admin' is not supported: the stats page is read-only here".to_string(),
            )
        }
        other => {
            return Err(format!(
                "unsupported 'stats {other}' (supported: enable, uri, realm, auth, hide-version, \
                 refresh, show-legends)"
            ))
        }
    }
    spec.enabled = true;
    proxy.stats = Some(spec);
    Ok(())
}

fn uri(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("stats uri '{text}' must start with '/'"));
    }
    Ok(text.to_string())
}

fn auth(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_string(), password.to_string())),
        _ => Err(format!("'stats auth' needs 'user:password', got '{text}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keywords::Scope;
    use crate::config::model::{Condition, StatsSpec};
    use crate::config::proxy::tests::{err, ok};
    use std::time::Duration;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn actions(lines: &[&str]) -> Vec<HttpAction> {
        ok(Scope::Frontend, lines)
            .http_rules
            .into_iter()
            .map(|r| r.action)
            .collect()
    }

    #[test]
    fn seed_reqadd() {
        let p = ok(Scope::Frontend, &[r"reqadd X-Forwarded-Proto:\ https"]);
        let rule = p.http_rules.first().cloned();
        let want = HttpAction::AddHeader {
            name: "X-Forwarded-Proto".into(),
            value: "https".into(),
        };
        assert_eq!(
            rule.map(|r| (r.action, r.cond, r.loc.line)),
            Some((want, None, 1))
        );
        let p = ok(Scope::Frontend, &[r"reqadd X-A:b\ c unless x"]);
        let rule = p.http_rules.first().cloned();
        assert_eq!(
            rule.map(|r| r.action),
            Some(HttpAction::AddHeader {
                name: "X-A".into(),
                value: "b c".into()
            })
        );
        assert_eq!(
            err(Scope::Frontend, "reqadd NoColon"),
            "'reqadd' needs 'Name: value', got 'NoColon'"
        );
        assert!(err(Scope::Frontend, r"reqadd Bad\ Name:\ x").contains("invalid header name"));
    }

    #[test]
    fn seed_redirect() {
        let p = ok(Scope::Backend, &["redirect scheme https if ! { ssl_fc }  "]);
        let rule = p.http_rules.first().cloned();
        let want = HttpAction::Redirect(Redirect {
            kind: RedirectKind::Scheme("https".into()),
            code: 302,
        });
        let cond = Condition {
            negate: false,
            words: words("! { ssl_fc }"),
        };
        assert_eq!(rule.map(|r| (r.action, r.cond)), Some((want, Some(cond))));
    }

    #[test]
    fn redirects() {
        let rules = ok(
            Scope::Frontend,
            &[
                "redirect location /new code 301 unless ok",
                "redirect prefix https://b code 308",
            ],
        )
        .http_rules;
        let got: Vec<_> = rules
            .into_iter()
            .map(|r| (r.action, r.cond.map(|c| c.negate)))
            .collect();
        assert_eq!(
            got,
            [
                (
                    HttpAction::Redirect(Redirect {
                        kind: RedirectKind::Location("/new".into()),
                        code: 301
                    }),
                    Some(true)
                ),
                (
                    HttpAction::Redirect(Redirect {
                        kind: RedirectKind::Prefix("https://b".into()),
                        code: 308
                    }),
                    None
                ),
            ]
        );
        assert!(err(Scope::Frontend, "redirect scheme https code 304")
            .contains("unsupported redirect code '304'"));
        assert!(err(Scope::Frontend, "redirect scheme https drop-query")
            .contains("unsupported redirect option 'drop-query'"));
        assert!(err(Scope::Frontend, "redirect elsewhere x").contains("unknown redirect type"));
        assert!(err(Scope::Frontend, "redirect scheme")
            .contains("'scheme' in 'redirect' needs a value"));
        assert!(err(Scope::Frontend, "redirect scheme https if").contains("missing condition"));
    }

    #[test]
    fn http_request_actions() {
        let got = actions(&[
            "http-request add-header X-A a",
            "http-request set-header X-Forwarded-Proto https if { ssl_fc }",
            "http-request del-header Proxy",
            "http-request deny",
            "http-request deny deny_status 429 if abuse",
            "http-request redirect scheme https code 301 unless { ssl_fc }",
            "http-request use-service prometheus-exporter if { path /metrics }",
        ]);
        assert_eq!(
            got,
            [
                HttpAction::AddHeader {
                    name: "X-A".into(),
                    value: "a".into()
                },
                HttpAction::SetHeader {
                    name: "X-Forwarded-Proto".into(),
                    value: "https".into()
                },
                HttpAction::DelHeader {
                    name: "Proxy".into()
                },
                HttpAction::Deny { status: 403 },
                HttpAction::Deny { status: 429 },
                HttpAction::Redirect(Redirect {
                    kind: RedirectKind::Scheme("https".into()),
                    code: 301
                }),
                HttpAction::UseService("prometheus-exporter".into()),
            ]
        );
    }

    #[test]
    fn http_request_errors() {
        assert!(err(Scope::Frontend, "http-request tarpit")
            .contains("unsupported http-request action 'tarpit'"));
        assert_eq!(
            err(Scope::Frontend, "http-request add-header X"),
            "'http-request' needs a header value"
        );
        assert!(err(Scope::Frontend, "http-request add-header X a b")
            .contains("unexpected argument 'b'"));
        assert!(err(Scope::Frontend, "http-request deny deny_status 999")
            .contains("unsupported deny status '999'"));
        assert!(err(Scope::Frontend, "http-request use-service lua.x").contains("unknown service"));
        assert!(err(Scope::Frontend, "http-request del-header X if").contains("missing condition"));
        assert_eq!(
            err(Scope::Defaults, "http-request deny"),
            "'http-request' is not allowed in a defaults section"
        );
    }

    #[test]
    fn seed_cookie() {
        let p = ok(Scope::Backend, &["cookie JSESSIONID prefix nocache  "]);
        let c = p.cookie.clone();
        assert_eq!(
            c.as_ref()
                .map(|c| (c.name.as_str(), c.mode, c.nocache, c.indirect, c.loc.line)),
            Some(("JSESSIONID", CookieMode::Prefix, true, false, 1))
        );
    }

    #[test]
    fn cookie_options() {
        let p = ok(
            Scope::Backend,
            &["cookie SRV insert indirect httponly secure maxidle 30m maxlife 8h"],
        );
        let c = p.cookie.unwrap_or_else(|| unreachable!());
        assert!(c.indirect && c.httponly && c.secure && c.mode == CookieMode::Insert);
        assert_eq!(
            (c.maxidle, c.maxlife),
            (
                Some(Duration::from_secs(1800)),
                Some(Duration::from_secs(8 * 3600))
            )
        );
        let p = ok(
            Scope::Backend,
            &["cookie SRV insert domain .example.com domain .example.org attr SameSite=Lax"],
        );
        let c = p.cookie.unwrap_or_else(|| unreachable!());
        assert_eq!(c.domains, [".example.com", ".example.org"]);
        assert_eq!(c.attrs, ["SameSite=Lax"]);
        for unsupported in ["preserve", "postonly", "dynamic"] {
            assert!(
                err(Scope::Backend, &format!("cookie SRV insert {unsupported}"))
                    .contains("not supported")
            );
        }
        assert!(
            err(Scope::Backend, "cookie SRV insert attr a;b").contains("invalid cookie attribute")
        );
        assert!(err(Scope::Backend, "cookie SRV insert tasty")
            .contains("unknown cookie option 'tasty'"));
        assert!(err(Scope::Backend, "cookie SRV").contains("needs one of"));
        assert!(err(Scope::Backend, "cookie SRV insert prefix").contains("mutually exclusive"));
        assert!(err(Scope::Backend, "cookie SRV insert maxidle x").contains("invalid time"));
    }

    #[test]
    fn seed_stats() {
        let p = ok(
            Scope::Listen,
            &[
                "stats enable",
                "stats hide-version",
                r"stats realm Haproxy\ Statistics",
                "stats uri /haproxy_stats",
                "stats auth Username:Password",
            ],
        );
        let want = StatsSpec {
            enabled: true,
            uri: Some("/haproxy_stats".into()),
            realm: Some("Haproxy Statistics".into()),
            auth: vec![("Username".into(), "Password".into())],
            hide_version: true,
            refresh: None,
            show_legends: false,
        };
        assert_eq!(p.stats, Some(want));
    }

    #[test]
    fn stats_details() {
        let p = ok(Scope::Listen, &["stats uri /s"]);
        assert!(
            p.stats.is_some_and(|s| s.enabled),
            "any stats line enables the page"
        );
        let p = ok(Scope::Listen, &["stats refresh 10s", "stats show-legends"]);
        let s = p.stats.clone().unwrap_or_default();
        assert_eq!(
            (s.refresh, s.show_legends),
            (Some(Duration::from_secs(10)), true)
        );
        assert!(err(Scope::Listen, "stats admin if LOCALHOST").contains("read-only"));
        assert_eq!(
            err(Scope::Defaults, "stats admin if x"),
            "'stats admin' is not allowed in a defaults section"
        );
        assert!(err(Scope::Listen, "stats auth nopassword").contains("user:password"));
        assert!(err(Scope::Listen, "stats uri stats").contains("must start with '/'"));
        assert!(err(Scope::Listen, "stats scope .").contains("unsupported 'stats scope'"));
        assert!(err(Scope::Listen, "stats enable now").contains("unexpected argument 'now'"));
        assert_eq!(err(Scope::Listen, "stats"), "'stats' needs a sub-keyword");
    }
}

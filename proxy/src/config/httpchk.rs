//! `option httpchk` and `http-check send|expect`: a backend's HTTP health check.
//!
//! HAProxy 2.6 collects these lines into one ruleset per section, and their order inside a
//! section does not matter (`http-check expect` may come before `option httpchk`). Between
//! sections:
//! - a section without any of these lines uses the check of its `defaults`;
//! - a section with its own `option httpchk` or `http-check` lines builds a ruleset of its
//!   own, and nothing of the `defaults`' check is kept (an `option httpchk` in a backend
//!   drops the `http-check expect` of the `defaults`);
//! - `http-check send` overrides the method, URI and version of `option httpchk` where it
//!   names them, replaces its headers and sets the body.
//!
//! Refused, where HAProxy would quietly do something other than the lines say:
//! - `http-check` lines without `option httpchk` in their section. With none anywhere HAProxy
//!   ignores them (the checks stay TCP connects); with one only in `defaults` it builds a
//!   ruleset without a request, and every check times out (`L7TOUT`, seen on 2.6.12);
//! - a second `http-check send`, or one after an `http-check expect`: HAProxy reads a second
//!   request on the same connection, which this proxy does not make;
//! - log-format values and the rule kinds and options the health room does not act on.

use super::args::Args;
use super::check_expect;
use super::model::{CheckExpect, CheckRequest, ExpectMatch, HttpCheck, Loc};

/// The `http-check send` words, laid over the `option httpchk` request.
#[derive(Debug, Clone, Default, PartialEq)]
struct Send {
    method: Option<String>,
    uri: Option<String>,
    version: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<String>,
    loc: Loc,
}

impl Send {
    /// HAProxy's merge of an explicit send rule into the implicit one of `option httpchk`.
    fn apply(&self, mut request: CheckRequest) -> CheckRequest {
        if let Some(m) = &self.method {
            request.method = m.clone();
        }
        if let Some(u) = &self.uri {
            request.uri = u.clone();
        }
        if let Some(v) = &self.version {
            request.version = v.clone();
        }
        request.headers = self.headers.clone();
        if let Some(b) = &self.body {
            request.body = b.clone();
        }
        request
    }
}

/// The check lines of one section, and the check it inherited from `defaults`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    inherited: Option<HttpCheck>,
    option: Option<(CheckRequest, Loc)>,
    /// An `option httpchk` line was refused: the problems its absence would cause are that
    /// one error, not new ones.
    option_refused: bool,
    send: Option<Send>,
    expects: Vec<CheckExpect>,
    /// The first `http-check send|expect` line of the section.
    first_rule: Option<Loc>,
}

impl Rules {
    /// The rules of a section that starts from `defaults` whose check is `inherited`.
    pub(crate) fn inherit(inherited: Option<HttpCheck>) -> Rules {
        Rules {
            inherited,
            ..Rules::default()
        }
    }

    fn has_own(&self) -> bool {
        self.option.is_some() || self.option_refused || self.first_rule.is_some()
    }

    /// The check the section has with the lines read so far.
    pub(crate) fn effective(&self) -> Option<HttpCheck> {
        if !self.has_own() {
            return self.inherited.clone();
        }
        let (request, loc) = self.option.as_ref()?;
        let request = match &self.send {
            Some(send) => send.apply(request.clone()),
            None => request.clone(),
        };
        let expects = if self.expects.is_empty() {
            vec![implicit_expect(loc)]
        } else {
            self.expects.clone()
        };
        Some(HttpCheck {
            request,
            expects,
            loc: loc.clone(),
        })
    }

    /// `http-check` lines that would not act, once the whole section is read.
    pub(crate) fn problem(&self) -> Option<(Loc, String)> {
        if self.option.is_some() || self.option_refused {
            return None;
        }
        let loc = self.first_rule.clone()?;
        let reason = match &self.inherited {
            Some(from) => format!(
                "'http-check' lines here replace the whole HTTP check of the defaults \
                 section, its 'option httpchk' request at {} included (HAProxy would then \
                 send no request and every check would time out): repeat 'option httpchk' \
                 in this section",
                from.loc
            ),
            None => {
                "'http-check' lines act only with 'option httpchk' in the same section".to_string()
            }
        };
        Some((loc, reason))
    }
}

/// HAProxy's expectation when no `http-check expect` line is given: any 2xx or 3xx.
fn implicit_expect(loc: &Loc) -> CheckExpect {
    CheckExpect {
        negate: false,
        matcher: ExpectMatch::Status(vec![(200, 399)]),
        comment: None,
        loc: loc.clone(),
    }
}

/// `option httpchk …` or `http-check …`; `args` start after `option httpchk` or after
/// `http-check`.
pub(crate) fn directive(
    rules: &mut Rules,
    keyword: &str,
    args: &mut Args<'_>,
    loc: &Loc,
) -> Result<(), String> {
    if keyword != "option httpchk" {
        return http_check(rules, args, loc);
    }
    match option_request(args.rest()) {
        Ok(request) => {
            rules.option = Some((request, loc.clone()));
            Ok(())
        }
        Err(reason) => {
            rules.option_refused = true;
            Err(reason)
        }
    }
}

/// `option httpchk [[METHOD] URI [VERSION]]`, with HAProxy's defaults `OPTIONS / HTTP/1.0`.
fn option_request(words: &[String]) -> Result<CheckRequest, String> {
    let mut request = CheckRequest::haproxy_default();
    match words {
        [] => {}
        [uri] => request.uri = check_uri(uri)?,
        [method, uri] => {
            request.method = check_method(method)?;
            request.uri = check_uri(uri)?;
        }
        [method, uri, version] => {
            request.method = check_method(method)?;
            request.uri = check_uri(uri)?;
            version_and_hidden(version, &mut request)?;
        }
        [_, _, _, extra, ..] => {
            return Err(format!(
                "unexpected argument '{extra}' to 'option httpchk' (at most METHOD URI VERSION)"
            ))
        }
    }
    Ok(request)
}

/// The version word, possibly followed by the pre-2.2 trick of hiding headers (and a body)
/// after it: `HTTP/1.1\r\nHost:\ www\r\n\r\nBODY`. HAProxy 2.6 still reads it (it warns that
/// it is deprecated in favour of `http-check send`), so configs written for 1.x keep working.
fn version_and_hidden(text: &str, request: &mut CheckRequest) -> Result<(), String> {
    let (head, body) = match text.split_once("\r\n\r\n") {
        Some((head, body)) => (head, Some(body)),
        None => (text, None),
    };
    let mut lines = head.split("\r\n");
    request.version = check_version(lines.next().unwrap_or_default())?;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| {
            format!("cannot read the header '{line}' hidden after the version of 'option httpchk' (NAME: VALUE)")
        })?;
        request
            .headers
            .push((check_header_name(name)?, check_header_value(value.trim())?));
    }
    if let Some(body) = body {
        request.body = body.to_string();
    }
    Ok(())
}

/// `http-check send|expect|…` after the keyword.
fn http_check(rules: &mut Rules, args: &mut Args<'_>, loc: &Loc) -> Result<(), String> {
    match args.need("a rule (send or expect)")? {
        "send" => {
            if let Some(first) = &rules.send {
                return Err(format!(
                    "a second 'http-check send' is not supported: a check sends one request \
                     (the first is at {})",
                    first.loc
                ));
            }
            if let Some(expect) = rules.expects.first() {
                return Err(format!(
                    "'http-check send' after 'http-check expect' (at {}) starts a second \
                     request, which is not supported: write it before the expect lines",
                    expect.loc
                ));
            }
            rules.send = Some(send(args, loc)?);
        }
        "expect" => rules.expects.push(check_expect::expect(args, loc)?),
        other => return Err(unsupported_rule(other)),
    }
    rules.first_rule.get_or_insert_with(|| loc.clone());
    Ok(())
}

fn unsupported_rule(rule: &str) -> String {
    match rule {
        "disable-on-404" => "'http-check disable-on-404' is not supported: a 404 answer counts \
                             as a failed check (drain a server with 'weight 0' instead)"
            .to_string(),
        "send-state" => "'http-check send-state' is not supported: the check request carries \
                         no X-Haproxy-Server-State header"
            .to_string(),
        "connect" => "'http-check connect' is not supported: a check connects to the server's \
                      address, or to its 'addr' and 'port'"
            .to_string(),
        "comment" => "'http-check comment' is not supported: give 'comment' on the \
                      'http-check expect' line instead"
            .to_string(),
        other => format!("unknown 'http-check' rule '{other}' (supported: send, expect)"),
    }
}

/// `http-check send [meth M] [uri U] [ver V] [hdr NAME VALUE]… [body B]`.
fn send(args: &mut Args<'_>, loc: &Loc) -> Result<Send, String> {
    let mut send = Send {
        loc: loc.clone(),
        ..Send::default()
    };
    while let Some(word) = args.next() {
        match word {
            "meth" => send.method = Some(check_method(args.value_of(word)?)?),
            "uri" => send.uri = Some(check_uri(args.value_of(word)?)?),
            "ver" => send.version = Some(check_version(args.value_of(word)?)?),
            "hdr" => send_header(&mut send, args)?,
            "body" => send.body = Some(args.value_of(word)?.to_string()),
            "uri-lf" | "body-lf" => {
                return Err(format!(
                    "'{word}' (a log-format value) is not supported in 'http-check send': \
                     write the value with '{}'",
                    word.trim_end_matches("-lf")
                ))
            }
            "comment" => {
                return Err(
                    "'comment' is not supported on 'http-check send': give it on the \
                     'http-check expect' line"
                        .to_string(),
                )
            }
            _ => {
                return Err(format!(
                    "unexpected argument '{word}' to 'http-check send' (supported: meth, uri, \
                     ver, hdr, body)"
                ))
            }
        }
    }
    Ok(send)
}

/// `hdr NAME VALUE`. The value is a log-format string in HAProxy: a `%` would be expanded
/// there and sent verbatim here, so it is refused rather than sent differently.
fn send_header(send: &mut Send, args: &mut Args<'_>) -> Result<(), String> {
    let missing = || "'hdr' in 'http-check send' needs a name and a value".to_string();
    let name = check_header_name(args.next().ok_or_else(missing)?)?;
    let value = check_header_value(args.next().ok_or_else(missing)?)?;
    if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
    {
        return Err(format!(
            "'hdr {name}' is not allowed in 'http-check send': the check sends a \
             Content-Length computed from 'body'"
        ));
    }
    if value.contains('%') {
        return Err(format!(
            "'%' in the value of 'hdr {name}': log-format values are not supported in \
             'http-check send'"
        ));
    }
    let is_host = |n: &str| n.eq_ignore_ascii_case("host");
    if is_host(&name) {
        if let Some((_, previous)) = send.headers.iter().find(|(n, _)| is_host(n)) {
            return Err(format!(
                "'hdr {name}' is given twice in 'http-check send' (previous value is '{previous}')"
            ));
        }
    }
    send.headers.push((name, value));
    Ok(())
}

/// An HTTP token (RFC 9110 `tchar`s): methods and header names.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_method(text: &str) -> Result<String, String> {
    if !is_token(text) {
        return Err(format!("invalid HTTP method '{}'", text.escape_debug()));
    }
    Ok(text.to_string())
}

/// A request target: visible ASCII without spaces, so it cannot split the request line.
fn check_uri(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid check URI '{}' (visible ASCII characters without spaces)",
            text.escape_debug()
        ));
    }
    Ok(text.to_string())
}

/// The check speaks HTTP/1.x; another version would not be what is sent.
fn check_version(text: &str) -> Result<String, String> {
    match text {
        "HTTP/1.0" | "HTTP/1.1" => Ok(text.to_string()),
        _ => Err(format!(
            "unsupported HTTP version '{}' for health checks (HTTP/1.0 or HTTP/1.1)",
            text.escape_debug()
        )),
    }
}

fn check_header_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if !is_token(name) {
        return Err(format!("invalid header name '{}'", text.escape_debug()));
    }
    Ok(name.to_string())
}

/// No control characters but tab: a CR or LF would end the header early.
fn check_header_value(text: &str) -> Result<String, String> {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "invalid header value '{}' (control characters)",
            text.escape_debug()
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::keywords::Scope;
    use crate::config::model::{CheckRequest, ExpectMatch, HttpCheck};
    use crate::config::proxy::tests::{err, ok, run};

    fn check(lines: &[&str]) -> HttpCheck {
        ok(Scope::Backend, lines)
            .http_check
            .unwrap_or_else(|| panic!("{lines:?}: no HTTP check"))
    }

    fn request(method: &str, uri: &str, version: &str) -> CheckRequest {
        CheckRequest {
            method: method.into(),
            uri: uri.into(),
            version: version.into(),
            ..CheckRequest::haproxy_default()
        }
    }

    #[test]
    fn option_forms() {
        let c = check(&["option httpchk"]);
        assert_eq!(c.request, request("OPTIONS", "/", "HTTP/1.0"));
        assert_eq!(c.loc.line, 1);
        assert_eq!(
            check(&["option httpchk /health"]).request,
            request("OPTIONS", "/health", "HTTP/1.0")
        );
        assert_eq!(
            check(&["option httpchk GET /rest/v2/liveness"]).request,
            request("GET", "/rest/v2/liveness", "HTTP/1.0")
        );
        assert_eq!(
            check(&["option httpchk HEAD /x HTTP/1.1"]).request,
            request("HEAD", "/x", "HTTP/1.1")
        );
    }

    #[test]
    fn without_expect_any_2xx_or_3xx_passes() {
        let c = check(&["option httpchk GET /"]);
        let only: Vec<_> = c.expects.iter().map(|e| (&e.matcher, e.negate)).collect();
        assert_eq!(only, [(&ExpectMatch::Status(vec![(200, 399)]), false)]);
    }

    #[test]
    fn headers_hidden_after_the_version() {
        // The lexer turns `\r\n` into CR LF, as HAProxy's does.
        let c = check(&["option httpchk GET /y HTTP/1.1\\r\\nHost:\\ www\\r\\nX-B:\\ c"]);
        assert_eq!(c.request.version, "HTTP/1.1");
        assert_eq!(
            c.request.headers,
            [("Host".into(), "www".into()), ("X-B".into(), "c".into())]
        );
        let c = check(&["option httpchk POST /p HTTP/1.0\\r\\n\\r\\nping"]);
        assert!(c.request.headers.is_empty());
        assert_eq!(c.request.body, "ping");
        assert!(
            err(Scope::Backend, "option httpchk GET / HTTP/1.1\\r\\nnocolon")
                .contains("cannot read the header 'nocolon'")
        );
    }

    #[test]
    fn option_refusals() {
        assert!(err(Scope::Backend, "option httpchk GET / HTTP/1.1 x")
            .contains("unexpected argument 'x' to 'option httpchk'"));
        assert!(err(Scope::Backend, "option httpchk GET / HTTP/2")
            .contains("unsupported HTTP version 'HTTP/2'"));
        assert!(err(Scope::Backend, "option httpchk G(T /").contains("invalid HTTP method"));
        assert!(err(Scope::Backend, "option httpchk GET /a\\ b").contains("invalid check URI"));
        assert!(err(Scope::Backend, "option httpchk GET /a\\nb").contains("invalid check URI"));
        assert_eq!(
            err(Scope::Backend, "no option httpchk"),
            "'no option httpchk' is not supported"
        );
        assert_eq!(
            err(Scope::Frontend, "option httpchk"),
            "'option httpchk' is not allowed in a frontend section"
        );
    }

    #[test]
    fn send_overrides_the_option_line() {
        let c = check(&[
            "http-check send meth GET uri /live ver HTTP/1.1 hdr Host ams hdr X-A b body hi",
            "option httpchk HEAD /old HTTP/1.0\\r\\nX-Old:\\ 1",
        ]);
        assert_eq!(c.request.method, "GET");
        assert_eq!(c.request.uri, "/live");
        assert_eq!(c.request.version, "HTTP/1.1");
        assert_eq!(
            c.request.headers,
            [("Host".into(), "ams".into()), ("X-A".into(), "b".into())]
        );
        assert_eq!(c.request.body, "hi");
        // Only what `send` names changes; its headers replace the hidden ones.
        let c = check(&[
            "option httpchk HEAD /old HTTP/1.0\\r\\nX-Old:\\ 1",
            "http-check send uri /new",
        ]);
        assert_eq!(c.request, request("HEAD", "/new", "HTTP/1.0"));
    }

    #[test]
    fn send_refusals_name_the_line() {
        let (_, errors) = run(
            Scope::Backend,
            &[
                "option httpchk",
                "http-check send hdr Host a",
                "http-check send hdr Host b",
                "http-check expect status 200",
            ],
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("a second 'http-check send'") && errors[0].contains("p.cfg:2"));
        let (_, errors) = run(
            Scope::Backend,
            &["http-check expect status 200", "http-check send uri /"],
        );
        assert!(errors[0].contains("after 'http-check expect' (at p.cfg:1)"));
        for (line, want) in [
            ("http-check send hdr Host", "needs a name and a value"),
            ("http-check send hdr Host a hdr host b", "given twice"),
            ("http-check send hdr Content-Length 3", "not allowed"),
            ("http-check send hdr X-Id %[srv_id]", "log-format values"),
            (
                "http-check send uri-lf /%[srv_name]",
                "'uri-lf' (a log-format value)",
            ),
            (
                "http-check send body-lf x",
                "'body-lf' (a log-format value)",
            ),
            ("http-check send comment hi", "'comment' is not supported"),
            ("http-check send frob", "unexpected argument 'frob'"),
            ("http-check send hdr X\\ Y v", "invalid header name"),
            (
                "http-check send meth",
                "'meth' in 'http-check' needs a value",
            ),
            ("http-check send ver HTTP/3", "unsupported HTTP version"),
        ] {
            assert!(err(Scope::Backend, line).contains(want), "{line}: {want}");
        }
    }

    #[test]
    fn unsupported_rules_are_refused() {
        for (line, want) in [
            (
                "http-check disable-on-404",
                "'http-check disable-on-404' is not supported",
            ),
            (
                "http-check send-state",
                "'http-check send-state' is not supported",
            ),
            (
                "http-check connect port 80",
                "'http-check connect' is not supported",
            ),
            (
                "http-check comment x",
                "'http-check comment' is not supported",
            ),
            ("http-check frob", "unknown 'http-check' rule 'frob'"),
            ("http-check", "'http-check' needs a rule (send or expect)"),
        ] {
            assert!(err(Scope::Backend, line).contains(want), "{line}: {want}");
        }
    }

    fn load(text: &str) -> Result<crate::config::Config, Vec<String>> {
        crate::config::parse_str(text, std::path::Path::new("t.cfg"))
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn loaded(text: &str, backend: &str) -> Option<HttpCheck> {
        let config = load(text).unwrap_or_else(|e| panic!("{e:?}"));
        config.proxy(backend).and_then(|p| p.http_check.clone())
    }

    #[test]
    fn inherited_from_defaults_as_haproxy() {
        let defaults = "defaults\n option httpchk GET /d\n http-check expect status 204\n";
        // Nothing of its own: the defaults' whole check.
        let c = loaded(
            &format!("{defaults}backend b\n server s 127.0.0.1:80 check\n"),
            "b",
        );
        assert_eq!(
            c.as_ref().map(|c| (c.request.uri.as_str(), c.loc.line)),
            Some(("/d", 2))
        );
        assert_eq!(
            c.map(|c| c.expects[0].matcher.clone()),
            Some(ExpectMatch::Status(vec![(204, 204)]))
        );
        // Its own `option httpchk`: a ruleset of its own, the defaults' expect dropped.
        let c = loaded(&format!("{defaults}backend b\n option httpchk /b\n"), "b");
        assert_eq!(
            c.map(|c| (c.request.uri, c.expects[0].matcher.clone())),
            Some(("/b".into(), ExpectMatch::Status(vec![(200, 399)])))
        );
        // Frontends have no servers to check.
        let text =
            format!("{defaults}frontend f\n bind 127.0.0.1:1\n default_backend b\nbackend b\n");
        assert_eq!(loaded(&text, "f"), None);
    }

    #[test]
    fn rules_that_would_not_act_are_refused_with_their_line() {
        let e =
            load("defaults\n option httpchk GET /d\nbackend b\n http-check expect status 200\n");
        let e = e.err().unwrap_or_default();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("t.cfg:4: 'http-check' lines here replace the whole HTTP check")
                && e[0].contains("request at t.cfg:2"),
            "{e:?}"
        );
        let e = load("backend b\n http-check expect status 200\n").err();
        assert_eq!(
            e.unwrap_or_default(),
            ["t.cfg:2: 'http-check' lines act only with 'option httpchk' in the same section"]
        );
        let e = load("defaults\n http-check send uri /x\nbackend b\n option httpchk\n").err();
        assert_eq!(
            e.unwrap_or_default(),
            ["t.cfg:2: 'http-check' lines act only with 'option httpchk' in the same section"]
        );
        // The refused `option httpchk` is the one error, not a second one about its absence.
        let e = load("backend b\n option httpchk GET / HTTP/9\n http-check expect status 200\n");
        assert_eq!(e.err().map(|e| e.len()), Some(1));
    }

    #[test]
    fn own_rules_replace_the_inherited_check() {
        // In one section the order does not matter.
        let c = check(&["http-check expect status 200", "option httpchk GET /l"]);
        assert_eq!(c.expects.len(), 1);
        assert_eq!(c.loc.line, 2);
        // A later `option httpchk` line replaces the earlier request.
        let c = check(&["option httpchk GET /a", "option httpchk GET /b"]);
        assert_eq!(c.request.uri, "/b");
    }
}

//! Checks that need the whole configuration: every error points at the line to fix.
//!
//! Choices where HAProxy only warns:
//! - HTTP-only directives written in a mode tcp proxy are errors (they would do nothing);
//!   inherited from `defaults` they are fine (see `proxy::HTTP_ONLY`).
//! - Two sections listening on overlapping addresses are an error. HAProxy binds both with
//!   SO_REUSEPORT and the kernel then splits connections between two unrelated proxies at
//!   random — seed 001's RTMPS `listen` on :443 beside the HTTPS frontend does exactly that.
//! - A frontend with nowhere to send traffic is an error; an HTTP one that answers by itself
//!   (stats page, redirect, deny, use-service) has somewhere.
//! - `cookie VALUE` on servers of a backend without a `cookie` directive stays quiet.
//! - `http-check` lines that would not act (no `option httpchk` in their section) are errors;
//!   see `httpchk.rs` for what HAProxy does with them instead.

use std::net::{IpAddr, SocketAddr};

use super::error::ConfigError;
use super::model::{Bind, Config, HttpAction, Loc, Mode, Proxy, ProxyKind};
use super::parse::Notes;

pub(crate) fn validate(config: &Config, notes: &[Notes]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let default_notes = Notes::default();
    for (index, proxy) in config.proxies.iter().enumerate() {
        let notes = notes.get(index).unwrap_or(&default_notes);
        if !notes.had_errors {
            check_has_bind(proxy, &mut errors);
            check_destination(proxy, &mut errors);
        }
        check_http_only(proxy, notes, &mut errors);
        if let Some((loc, reason)) = notes.http_check.problem() {
            push(&mut errors, &loc, reason);
        }
        check_duplicate_servers(proxy, &mut errors);
        check_server_resolvers(config, proxy, &mut errors);
        check_balance_mode(proxy, &mut errors);
        check_references(config, proxy, notes, &mut errors);
        for (loc, reason) in super::nat::problems(config, proxy, notes) {
            push(&mut errors, &loc, reason);
        }
    }
    for proxy in &config.proxies {
        for (loc, reason) in super::udp::problems(proxy) {
            push(&mut errors, &loc, reason);
        }
    }
    for (loc, reason) in super::udp::bind_conflicts(&config.proxies) {
        push(&mut errors, &loc, reason);
    }
    check_bind_conflicts(config, &mut errors);
    check_resolvers_have_nameservers(config, &mut errors);
    check_group_has_user(config, &mut errors);
    // A line inherited by several proxies (a `defaults` default_backend) is reported once.
    let mut unique: Vec<ConfigError> = Vec::with_capacity(errors.len());
    for error in errors {
        if !unique.contains(&error) {
            unique.push(error);
        }
    }
    unique
}

/// `balance uri|url_param|hdr(…)` hash the HTTP request: a mode tcp backend has none, and
/// would silently balance round robin.
fn check_balance_mode(proxy: &Proxy, errors: &mut Vec<ConfigError>) {
    if proxy.kind.has_backend() && proxy.mode == Mode::Tcp && proxy.balance.reads_requests() {
        let reason = format!(
            "{} is in mode tcp: 'balance uri', 'url_param' and 'hdr()' need mode http \
             (use 'balance source' to keep a client on one server)",
            describe(proxy)
        );
        push(errors, &proxy.loc, reason);
    }
}

/// `group` alone changes the group and keeps the process running as root: the privilege
/// drop the operator asked for would not happen.
fn check_group_has_user(config: &Config, errors: &mut Vec<ConfigError>) {
    let g = &config.global;
    if let (Some(loc), None) = (&g.group_loc, &g.user) {
        push(
            errors,
            loc,
            "'group' without 'user' would leave the process running as root: add 'user'"
                .to_string(),
        );
    }
}

fn push(errors: &mut Vec<ConfigError>, loc: &Loc, reason: String) {
    errors.push(ConfigError {
        file: loc.file.clone(),
        line: loc.line,
        reason,
    });
}

fn describe(proxy: &Proxy) -> String {
    format!("{} '{}'", proxy.kind.keyword(), proxy.name)
}

fn check_has_bind(proxy: &Proxy, errors: &mut Vec<ConfigError>) {
    if proxy.kind.has_frontend() && proxy.binds.is_empty() {
        push(
            errors,
            &proxy.loc,
            format!(
                "{} has no 'bind' line: it would accept no connection",
                describe(proxy)
            ),
        );
    }
}

fn check_http_only(proxy: &Proxy, notes: &Notes, errors: &mut Vec<ConfigError>) {
    if proxy.mode != Mode::Tcp {
        return;
    }
    for (keyword, loc) in &notes.http_only {
        push(
            errors,
            loc,
            format!(
                "'{keyword}' needs 'mode http', but {} is in mode tcp",
                describe(proxy)
            ),
        );
    }
}

fn check_duplicate_servers(proxy: &Proxy, errors: &mut Vec<ConfigError>) {
    for (index, server) in proxy.servers.iter().enumerate() {
        let earlier = proxy
            .servers
            .iter()
            .take(index)
            .find(|s| s.name == server.name);
        if let Some(first) = earlier {
            let reason = format!(
                "duplicate server name '{}' in {} (first defined at {})",
                server.name,
                describe(proxy),
                first.loc
            );
            push(errors, &server.loc, reason);
        }
    }
}

/// `resolvers NAME` on a server names a section that exists.
fn check_server_resolvers(config: &Config, proxy: &Proxy, errors: &mut Vec<ConfigError>) {
    for server in &proxy.servers {
        let Some(dns) = &server.dns else { continue };
        if !config.resolvers.iter().any(|r| r.name == dns.resolvers) {
            // Named after the group, so a template's slots give one error for their line.
            let reason = format!(
                "server '{}' names resolvers '{}', which is not defined",
                dns.group, dns.resolvers
            );
            push(errors, &server.loc, reason);
        }
    }
}

/// A `resolvers` section without a nameserver could never answer (HAProxy refuses it too).
fn check_resolvers_have_nameservers(config: &Config, errors: &mut Vec<ConfigError>) {
    for r in config.resolvers.iter().filter(|r| r.nameservers.is_empty()) {
        let reason = format!(
            "resolvers '{}' has no nameserver (add 'nameserver NAME IP:PORT' or \
             'parse-resolv-conf')",
            r.name
        );
        push(errors, &r.loc, reason);
    }
}

fn check_destination(proxy: &Proxy, errors: &mut Vec<ConfigError>) {
    if !proxy.kind.has_frontend() {
        return;
    }
    let answers_itself = proxy.mode == Mode::Http
        && proxy.http_rules.iter().any(|r| {
            matches!(
                r.action,
                HttpAction::Redirect(_) | HttpAction::Deny { .. } | HttpAction::UseService(_)
            )
        });
    let has_destination = proxy.default_backend.is_some()
        || !proxy.use_backends.is_empty()
        || (proxy.kind == ProxyKind::Listen && !proxy.servers.is_empty())
        || (proxy.mode == Mode::Http && proxy.stats.as_ref().is_some_and(|s| s.enabled))
        || answers_itself;
    if !has_destination {
        let reason = format!(
            "{} has no backend to send traffic to (add 'default_backend' or 'use_backend')",
            describe(proxy)
        );
        push(errors, &proxy.loc, reason);
    }
}

/// `default_backend` and `use_backend` must name a backend (or listen) whose mode the
/// frontend can talk to. A tcp frontend may hand over to an http backend (HAProxy upgrades
/// the stream); an http frontend cannot use a tcp backend.
fn check_references(config: &Config, proxy: &Proxy, notes: &Notes, errors: &mut Vec<ConfigError>) {
    let default = proxy
        .default_backend
        .as_deref()
        .map(|name| (name, notes.default_backend.as_ref().unwrap_or(&proxy.loc)));
    let uses = proxy
        .use_backends
        .iter()
        .map(|u| (u.backend.as_str(), &u.loc));
    for (name, loc) in default.into_iter().chain(uses) {
        match find_backend(config, name) {
            Err(reason) => push(errors, loc, reason),
            Ok(backend) if proxy.mode == Mode::Http && backend.mode == Mode::Tcp => {
                let reason = format!(
                    "{} is in mode http and cannot use {} in mode tcp (defined at {})",
                    describe(proxy),
                    describe(backend),
                    backend.loc
                );
                push(errors, loc, reason);
            }
            Ok(_) => {}
        }
    }
}

fn find_backend<'c>(config: &'c Config, name: &str) -> Result<&'c Proxy, String> {
    if let Some(backend) = config.proxy_backend(name) {
        return Ok(backend);
    }
    match config.proxies.iter().find(|p| p.name == name) {
        Some(other) => Err(format!(
            "'{name}' is a {} (at {}), not a backend",
            other.kind.keyword(),
            other.loc
        )),
        None => Err(format!("backend '{name}' not found")),
    }
}

/// Reports each bind that overlaps a bind of an earlier section, naming the first one.
fn check_bind_conflicts(config: &Config, errors: &mut Vec<ConfigError>) {
    let binds: Vec<(&Proxy, &Bind)> = config
        .proxies
        .iter()
        .flat_map(|p| p.binds.iter().map(move |b| (p, b)))
        .collect();
    for (index, (proxy, bind)) in binds.iter().enumerate() {
        let earlier = binds
            .iter()
            .take(index)
            .find(|(other, b)| !std::ptr::eq(*other, *proxy) && overlaps(bind, b));
        if let Some((other, first)) = earlier {
            let reason = format!(
                "bind {} conflicts with '{}' at {} (bind {})",
                show(bind.addr),
                other.name,
                first.loc,
                show(first.addr)
            );
            push(errors, &bind.loc, reason);
        }
    }
}

/// Whether two listeners would take connections for the same local address and port.
/// An IPv6 wildcard also takes IPv4 unless it is `v6only` (Linux's default is dual-stack).
fn overlaps(a: &Bind, b: &Bind) -> bool {
    if a.addr.port() != b.addr.port() {
        return false;
    }
    let dual_stack_wildcard = |x: &Bind| {
        x.addr.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) && x.v6only != Some(true)
    };
    match (a.addr.ip(), b.addr.ip()) {
        (IpAddr::V4(x), IpAddr::V4(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
        (IpAddr::V6(x), IpAddr::V6(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
        _ => dual_stack_wildcard(a) || dual_stack_wildcard(b),
    }
}

/// `*:443` for the IPv4 wildcard, as configs usually write it.
fn show(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => format!("*:{}", addr.port()),
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse::Parser;
    use std::path::Path;

    /// Parses and validates `text`; returns all error lines (parse errors included).
    fn errors(text: &str) -> Vec<String> {
        let mut parser = Parser::new(&|_| None, Path::new("/"));
        parser.parse_file(text, Path::new("v.cfg"));
        let parsed = parser.finish();
        let mut all = parsed.errors;
        all.extend(super::validate(&parsed.config, &parsed.notes));
        all.iter().map(ToString::to_string).collect()
    }

    const BACKEND: &str = "backend b\n server s 10.0.0.1:80\n";

    #[test]
    fn a_valid_config() {
        let e = errors(&format!(
            "frontend f\n bind :80\n default_backend b\n{BACKEND}"
        ));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn frontend_without_bind() {
        let e = errors(&format!("frontend f\n default_backend b\n{BACKEND}"));
        assert_eq!(
            e,
            ["v.cfg:1: frontend 'f' has no 'bind' line: it would accept no connection"]
        );
        let e = errors("listen l\n server s 10.0.0.1:80\n");
        assert_eq!(
            e,
            ["v.cfg:1: listen 'l' has no 'bind' line: it would accept no connection"]
        );
    }

    #[test]
    fn missing_backend() {
        let e = errors("frontend f\n bind :80\n default_backend nope\n use_backend nada if x\n");
        assert_eq!(
            e,
            [
                "v.cfg:3: backend 'nope' not found",
                "v.cfg:4: backend 'nada' not found"
            ]
        );
    }

    #[test]
    fn backend_that_is_a_frontend() {
        let e = errors("frontend f\n bind :80\n default_backend g\nfrontend g\n bind :81\n default_backend f\n");
        assert_eq!(
            e.first().map(String::as_str),
            Some("v.cfg:3: 'g' is a frontend (at v.cfg:4), not a backend")
        );
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn inherited_default_backend_points_at_defaults() {
        let e = errors(
            "defaults\n default_backend nope\nfrontend f\n bind :80\nfrontend g\n bind :81\n",
        );
        // Both frontends inherit the same line: one error.
        assert_eq!(e, ["v.cfg:2: backend 'nope' not found"]);
    }

    #[test]
    fn no_destination() {
        let e = errors("frontend f\n bind :80\n mode tcp\n");
        assert_eq!(e, ["v.cfg:1: frontend 'f' has no backend to send traffic to (add 'default_backend' or 'use_backend')"]);
        assert!(errors("listen l\n bind :80\n server s 10.0.0.1:80\n").is_empty());
        assert!(errors("listen stats\n bind :80\n mode http\n stats enable\n").is_empty());
        assert!(errors(
            "frontend r\n bind :80\n mode http\n redirect scheme https if !{ ssl_fc }\n"
        )
        .is_empty());
        assert_eq!(errors("frontend h\n bind :80\n mode http\n").len(), 1);
    }

    #[test]
    fn a_refused_line_does_not_cascade() {
        // The bind line is refused; "no bind" would only say it again.
        let e = errors("frontend f\n bind :80 frob\n default_backend b\nbackend b\n");
        assert_eq!(e.len(), 1, "{e:?}");
        let e = errors("listen l\n bind :80\n server s 10.0.0.1:0\n");
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn duplicate_servers() {
        let e = errors(
            "listen rtmps\n bind :1935\n server rtmp 10.0.0.1:1935\n server rtmp 10.0.0.2:1935\n",
        );
        assert_eq!(e, ["v.cfg:4: duplicate server name 'rtmp' in listen 'rtmps' (first defined at v.cfg:3)"]);
    }

    #[test]
    fn mode_mismatch() {
        let e =
            errors("frontend f\n bind :80\n mode http\n default_backend b\nbackend b\n mode tcp\n");
        assert_eq!(e, ["v.cfg:4: frontend 'f' is in mode http and cannot use backend 'b' in mode tcp (defined at v.cfg:5)"]);
        // tcp → http is allowed (HAProxy upgrades the stream).
        assert!(
            errors("frontend f\n bind :80\n default_backend b\nbackend b\n mode http\n").is_empty()
        );
    }

    #[test]
    fn http_only_in_tcp_mode() {
        let e = errors(&format!(
            "frontend f\n bind :80\n mode tcp\n reqadd X-A:\\ b\n default_backend b\n{BACKEND}"
        ));
        assert_eq!(
            e,
            ["v.cfg:4: 'reqadd' needs 'mode http', but frontend 'f' is in mode tcp"]
        );
        let e = errors("backend c\n cookie S insert\n server s 10.0.0.1:80 cookie s\n");
        assert_eq!(
            e,
            ["v.cfg:2: 'cookie' needs 'mode http', but backend 'c' is in mode tcp"]
        );
        // Inherited from defaults: quiet (seed 001's rtmp frontend).
        let e = errors(&format!(
            "defaults\n mode http\n option forwardfor\n option httplog\nfrontend f\n bind :80\n mode tcp\n default_backend b\n{BACKEND} mode tcp\n"
        ));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn server_cookie_without_backend_cookie_is_quiet() {
        let e = errors("backend b\n mode http\n server s 10.0.0.1:80 cookie s\n");
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn request_hashing_needs_mode_http() {
        let e = errors("backend b\n mode tcp\n balance uri\n server s 127.0.0.1:1\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("need mode http"), "{e:?}");
        assert!(errors("backend b\n mode http\n balance uri\n server s 127.0.0.1:1\n").is_empty());
    }

    #[test]
    fn group_needs_a_user() {
        assert_eq!(
            errors("global\n group nogroup\n"),
            ["v.cfg:2: 'group' without 'user' would leave the process running as root: add 'user'"]
        );
        assert!(errors("global\n user nobody\n group nogroup\n").is_empty());
    }

    #[test]
    fn bind_conflicts() {
        let e = errors("listen a\n bind *:443\n stats enable\n mode http\nlisten b\n bind :443\n server s 10.0.0.1:1935\n");
        assert_eq!(
            e,
            ["v.cfg:6: bind *:443 conflicts with 'a' at v.cfg:2 (bind *:443)"]
        );
        let e = errors("listen a\n bind 10.0.0.5:80\n server s 10.0.0.1:1\nlisten b\n bind *:80\n server s 10.0.0.1:1\n");
        assert_eq!(
            e,
            ["v.cfg:5: bind *:80 conflicts with 'a' at v.cfg:2 (bind 10.0.0.5:80)"]
        );
        let e = errors("listen a\n bind [::]:80\n server s 10.0.0.1:1\nlisten b\n bind 10.0.0.5:80\n server s 10.0.0.1:1\n");
        assert_eq!(
            e.len(),
            1,
            "a dual-stack IPv6 wildcard takes IPv4 too: {e:?}"
        );
    }

    #[test]
    fn binds_that_do_not_conflict() {
        let ok = |text: &str| {
            let e = errors(text);
            assert!(e.is_empty(), "{text}: {e:?}");
        };
        ok("listen a\n bind :80\n bind 127.0.0.1:80\n server s 10.0.0.1:1\n");
        ok("listen a\n bind :80\n server s 10.0.0.1:1\nlisten b\n bind :81\n server s 10.0.0.1:1\n");
        ok("listen a\n bind 10.0.0.1:80\n server s 10.0.0.1:1\nlisten b\n bind 10.0.0.2:80\n server s 10.0.0.1:1\n");
        ok("listen a\n bind [::]:80 v6only\n server s 10.0.0.1:1\nlisten b\n bind :80\n server s 10.0.0.1:1\n");
        ok("listen a\n bind [::1]:80\n server s 10.0.0.1:1\nlisten b\n bind :80\n server s 10.0.0.1:1\n");
    }
}

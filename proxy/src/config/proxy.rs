//! Directives of `defaults`, `frontend`, `backend` and `listen` sections.
//!
//! `directive` checks the keyword against the section matrix (`keywords.rs`), then hands the
//! arguments to the keyword's parser. The bigger ones live in their own modules: `bind.rs`,
//! `server.rs`, `http.rs`.

use std::path::Path;
use std::time::Duration;

use super::args::Args;
use super::global::log_target;
use super::keywords::{self, Scope};
use super::model::{
    Acl, Balance, BalanceArgs, EngineChoice, ErrorFile, ForwardFor, HashFunction, HashType,
    HttpReuse, Mode, Proxy, ProxyLog, Timeouts, UseBackend,
};
use super::num::{parse_positive, parse_uint};
use super::parse::{Ctx, Draft};
use super::time::parse_duration;
use super::{bind, http, httpchk, server, udp};

/// Status codes HAProxy can answer itself, hence those `errorfile` and `deny` accept.
pub(crate) const ERROR_CODES: &[u16] = &[
    200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501, 502, 503, 504,
];

/// Directives that act once a proxy holds a connection; `forward-engine nat` hands the
/// connection to a server in the kernel, so there is nothing for them to act on.
const NOT_AT_L4: &[&str] = &["retries", "option redispatch", "maxconn", "timeout queue"];

/// Directives that only act on HTTP traffic. Written in a mode tcp proxy they would silently
/// do nothing (HAProxy only warns), so validation refuses them there. Inherited from
/// `defaults` they are fine: a tcp frontend beside http ones is the seeds' usual layout.
/// `option httplog` is not listed: HAProxy falls back to tcplog, and so do we.
const HTTP_ONLY: &[&str] = &[
    "capture",
    "cookie",
    "http-request",
    "http-response",
    "http-reuse",
    "option forwardfor",
    "option http-keep-alive",
    "option http-server-close",
    "option httpclose",
    "redirect",
    "reqadd",
    "stats",
    "stats admin",
];

/// Applies one line to a proxy (or to the `defaults` template).
pub(crate) fn directive(draft: &mut Draft, words: &[String], ctx: &Ctx<'_>) -> Result<(), String> {
    let (negated, words) = match words.split_first() {
        Some((no, rest)) if no == "no" => (true, rest),
        _ => (false, words),
    };
    let keyword = keywords::full_keyword(words);
    if let [only] = words {
        if only == "option" || only == "timeout" {
            return Err(format!("'{only}' needs a name"));
        }
    }
    if keyword.is_empty() {
        return Err("'no' needs a keyword".to_string());
    }
    keywords::check(&keyword, ctx.scope)
        .map_err(|why| keywords::refusal_reason(&keyword, ctx.scope, why))?;
    if negated && !(keyword.starts_with("option ") || keyword == "log") {
        return Err(format!("'no' cannot be used with '{keyword}'"));
    }
    // `option X` and `timeout X` take their arguments after the sub-keyword; `stats admin`
    // is parsed with the other `stats` words.
    let skip = if keyword.starts_with("option ") || keyword.starts_with("timeout ") {
        2
    } else {
        1
    };
    let mut args = Args::new(&keyword, words.get(skip..).unwrap_or_default());
    if keyword == "option httpchk" || keyword == "http-check" {
        health_check(draft, &keyword, negated, &mut args, ctx)?;
    } else {
        apply(&mut draft.proxy, &keyword, negated, &mut args, words, ctx)?;
    }
    args.end()?;
    if let Some(first) = words.first() {
        if first == "default_backend" {
            draft.notes.default_backend = Some(ctx.loc.clone());
        }
    }
    if ctx.scope != Scope::Defaults && NOT_AT_L4.contains(&keyword.as_str()) {
        draft
            .notes
            .not_at_l4
            .push((keyword.clone(), ctx.loc.clone()));
    }
    if let ("forward-engine", Some(word)) = (keyword.as_str(), words.get(1)) {
        draft.notes.engine = Some((word.clone(), ctx.loc.clone()));
    }
    if !negated && ctx.scope != Scope::Defaults && HTTP_ONLY.contains(&keyword.as_str()) {
        draft.notes.http_only.push((keyword, ctx.loc.clone()));
    }
    Ok(())
}

fn apply(
    proxy: &mut Proxy,
    keyword: &str,
    negated: bool,
    args: &mut Args<'_>,
    words: &[String],
    ctx: &Ctx<'_>,
) -> Result<(), String> {
    match keyword.split_once(' ').map_or(keyword, |(first, _)| first) {
        "mode" => proxy.mode = mode(args.need("'tcp' or 'http'")?)?,
        "bind" => bind::bind(proxy, args, ctx)?,
        "server" => server::server(proxy, args, ctx.loc)?,
        "server-template" => server::server_template(proxy, args, ctx.loc)?,
        "default-server" => server::default_server(proxy, args)?,
        "balance" if ctx.scope == Scope::UdpLb => udp::balance(proxy, args)?,
        "balance" => balance(proxy, args)?,
        "dgram-bind" => udp::dgram_bind(proxy, args, ctx)?,
        "hash-type" => proxy.hash_type = hash_type(args)?,
        "maxconn" => proxy.maxconn = Some(parse_positive(args.need("a number")?, keyword)?),
        "retries" => proxy.retries = parse_uint(args.need("a number")?, keyword)?,
        "timeout" => {
            *timeout_field(&mut proxy.timeouts, keyword)? =
                Some(parse_duration(args.need("a time")?, keyword)?)
        }
        "option" => option(proxy, keyword, negated, args)?,
        "log" => log(&mut proxy.log, negated, args, ctx)?,
        "forward-engine" => proxy.engine = engine(args.need("an engine")?)?,
        "default_backend" => {
            proxy.default_backend = Some(backend_name(args.need("a backend name")?)?)
        }
        "use_backend" => {
            let backend = backend_name(args.need("a backend name")?)?;
            let cond = args.condition()?;
            proxy.use_backends.push(UseBackend {
                backend,
                cond,
                loc: ctx.loc.clone(),
            });
        }
        "acl" => proxy.acls.push(acl(args, ctx)?),
        "errorfile" => errorfile(proxy, args, ctx)?,
        "http-request" => http::http_request(proxy, args, ctx.loc)?,
        "http-response" => http::http_response(proxy, args, ctx.loc)?,
        "http-reuse" => proxy.http_reuse = http_reuse(args.need("a mode")?)?,
        "reqadd" => http::reqadd(proxy, args, ctx.loc)?,
        "redirect" => http::redirect(proxy, args, ctx.loc)?,
        "cookie" => http::cookie(proxy, args, ctx.loc)?,
        "stats" => http::stats(proxy, args)?,
        "id" => proxy.id = Some(parse_positive(args.need("a number")?, keyword)?),
        "description" => {
            args.need("a text")?;
            proxy.description = Some(words[1..].join(" "));
            args.rest();
        }
        "capture" => {
            return Err(
                "'capture' is not supported yet: access lines carry no captured fields".to_string(),
            )
        }
        // The keyword table and this match must list the same keywords.
        other => return Err(no_parser(other)),
    }
    Ok(())
}

/// `option httpchk` and `http-check`: they are read as one ruleset per section (the section's
/// notes keep it), after which the proxy holds the check they add up to.
fn health_check(
    draft: &mut Draft,
    keyword: &str,
    negated: bool,
    args: &mut Args<'_>,
    ctx: &Ctx<'_>,
) -> Result<(), String> {
    if negated {
        return Err(format!("'no {keyword}' is not supported"));
    }
    let result = httpchk::directive(&mut draft.notes.http_check, keyword, args, ctx.loc);
    draft.proxy.http_check = draft.notes.http_check.effective();
    result
}

fn http_reuse(word: &str) -> Result<HttpReuse, String> {
    Ok(match word {
        "never" => HttpReuse::Never,
        "safe" => HttpReuse::Safe,
        "aggressive" => HttpReuse::Aggressive,
        "always" => HttpReuse::Always,
        other => {
            return Err(format!(
                "unknown http-reuse mode '{other}' (supported: never, safe, aggressive, always)"
            ))
        }
    })
}

/// A keyword in the table that no parser handles: a bug here, reported rather than panicking.
fn no_parser(keyword: &str) -> String {
    format!("internal error: keyword '{keyword}' has no parser")
}

fn mode(word: &str) -> Result<Mode, String> {
    match word {
        "tcp" => Ok(Mode::Tcp),
        "http" => Ok(Mode::Http),
        _ => Err(format!("unsupported mode '{word}' (supported: tcp, http)")),
    }
}

/// `balance ALGORITHM [arguments]`.
fn balance(proxy: &mut Proxy, args: &mut Args<'_>) -> Result<(), String> {
    let word = args.need("an algorithm")?;
    let mut a = BalanceArgs::default();
    proxy.balance = match word {
        "roundrobin" => Balance::RoundRobin,
        "leastconn" => Balance::LeastConn,
        "source" => Balance::Source,
        "first" => Balance::First,
        "random" => Balance::Random,
        "uri" => {
            uri_args(&mut a, args)?;
            Balance::Uri
        }
        "url_param" => {
            a.name = Some(args.need("a parameter name")?.to_string());
            Balance::UrlParam
        }
        _ => match word.strip_prefix("hdr(").and_then(|r| r.strip_suffix(')')) {
            Some(name) if !name.is_empty() => {
                a.name = Some(name.to_string());
                Balance::Hdr
            }
            _ => {
                return Err(format!(
                    "unsupported balance algorithm '{word}' (supported: roundrobin, leastconn, \
                     source, first, random, uri, url_param, hdr(NAME))"
                ))
            }
        },
    };
    proxy.balance_args = a;
    Ok(())
}

/// `uri [whole] [depth N] [len N]`.
fn uri_args(a: &mut BalanceArgs, args: &mut Args<'_>) -> Result<(), String> {
    while let Some(word) = args.next() {
        match word {
            "whole" => a.whole = true,
            "depth" => a.depth = Some(parse_positive(args.value_of(word)?, "uri depth")?),
            "len" => a.len = Some(parse_positive(args.value_of(word)?, "uri len")?),
            other => {
                return Err(format!(
                    "unsupported 'balance uri' option '{other}' (supported: whole, depth, len)"
                ))
            }
        }
    }
    Ok(())
}

/// `hash-type map-based|consistent [sdbm|djb2|wt6|crc32] [avalanche]`.
fn hash_type(args: &mut Args<'_>) -> Result<HashType, String> {
    let consistent = match args.need("'map-based' or 'consistent'")? {
        "map-based" => false,
        "consistent" => true,
        other => {
            return Err(format!(
                "unknown hash-type method '{other}' (supported: map-based, consistent)"
            ))
        }
    };
    let mut h = HashType {
        consistent,
        ..HashType::default()
    };
    while let Some(word) = args.next() {
        match word {
            "sdbm" => h.function = HashFunction::Sdbm,
            "djb2" => h.function = HashFunction::Djb2,
            "wt6" => h.function = HashFunction::Wt6,
            "crc32" => h.function = HashFunction::Crc32,
            "avalanche" => h.avalanche = true,
            other => {
                return Err(format!(
                "unknown hash-type word '{other}' (supported: sdbm, djb2, wt6, crc32, avalanche)"
            ))
            }
        }
    }
    Ok(h)
}

fn engine(word: &str) -> Result<EngineChoice, String> {
    match word {
        "auto" => Ok(EngineChoice::Auto),
        "sockmap" => Ok(EngineChoice::Sockmap),
        "splice" => Ok(EngineChoice::Splice),
        "copy" => Ok(EngineChoice::Copy),
        "nat" => Ok(EngineChoice::Nat),
        _ => Err(format!(
            "unknown forward engine '{word}' (supported: auto, sockmap, splice, copy, nat)"
        )),
    }
}

fn timeout_field<'t>(
    t: &'t mut Timeouts,
    keyword: &str,
) -> Result<&'t mut Option<Duration>, String> {
    Ok(match keyword {
        "timeout connect" => &mut t.connect,
        "timeout client" => &mut t.client,
        "timeout server" => &mut t.server,
        "timeout tunnel" => &mut t.tunnel,
        "timeout client-fin" => &mut t.client_fin,
        "timeout server-fin" => &mut t.server_fin,
        "timeout check" => &mut t.check,
        "timeout queue" => &mut t.queue,
        "timeout http-request" => &mut t.http_request,
        "timeout http-keep-alive" => &mut t.http_keep_alive,
        _ => return Err(no_parser(keyword)),
    })
}

/// `[no] option NAME …`; `no` turns off what `defaults` turned on.
fn option(
    proxy: &mut Proxy,
    keyword: &str,
    negated: bool,
    args: &mut Args<'_>,
) -> Result<(), String> {
    let o = &mut proxy.options;
    let flag = match keyword {
        "option forwardfor" => {
            o.forwardfor = if negated {
                None
            } else {
                Some(forwardfor(args)?)
            };
            return Ok(());
        }
        "option redispatch" => &mut o.redispatch,
        // HAProxy's three HTTP connection modes exclude each other: setting one (not
        // `no option …`) clears the other two, whatever `defaults` set.
        "option http-server-close" | "option http-keep-alive" | "option httpclose" if !negated => {
            o.http_server_close = keyword == "option http-server-close";
            o.http_keep_alive = keyword == "option http-keep-alive";
            o.httpclose = keyword == "option httpclose";
            return Ok(());
        }
        "option http-server-close" => &mut o.http_server_close,
        "option http-keep-alive" => &mut o.http_keep_alive,
        "option httpclose" => &mut o.httpclose,
        "option httplog" => &mut o.httplog,
        "option tcplog" => &mut o.tcplog,
        "option dontlognull" => &mut o.dontlognull,
        "option splice-auto" => {
            return Err(
                "'option splice-auto' is not supported: 'forward-engine auto' (the default) \
                 already moves bulk flows by splice(2) where it pays; 'forward-engine splice' \
                 forces it"
                    .to_string(),
            )
        }
        _ => return Err(no_parser(keyword)),
    };
    *flag = !negated;
    Ok(())
}

/// `option forwardfor [except NETWORK] [header NAME] [if-none]`, in any order.
fn forwardfor(args: &mut Args<'_>) -> Result<ForwardFor, String> {
    let mut ff = ForwardFor {
        header: "X-Forwarded-For".to_string(),
        except: None,
        if_none: false,
    };
    while let Some(word) = args.next() {
        match word {
            "except" => ff.except = Some(args.value_of(word)?.to_string()),
            "header" => ff.header = args.value_of(word)?.to_string(),
            "if-none" => ff.if_none = true,
            _ => return Err(format!("unexpected argument '{word}' to 'option forwardfor' (supported: except, header, if-none)")),
        }
    }
    Ok(ff)
}

/// `log global`, `log ADDR FACILITY [LEVEL [MINLEVEL]]`, `no log`. Lines add to what the
/// `defaults` gave, as in HAProxy; `no log` clears everything inherited.
fn log(
    log: &mut ProxyLog,
    negated: bool,
    args: &mut Args<'_>,
    ctx: &Ctx<'_>,
) -> Result<(), String> {
    if negated {
        *log = ProxyLog::default();
        return Ok(());
    }
    if args.peek() == Some("global") {
        args.next();
        log.global = true;
        return Ok(());
    }
    log.targets.push(log_target(args, ctx.loc)?);
    Ok(())
}

/// Backend names follow proxy-name rules; HAProxy's dynamic `%[…]` names are refused
/// because validation could not check them.
fn backend_name(word: &str) -> Result<String, String> {
    if word.contains("%[") {
        return Err(format!("dynamic backend name '{word}' is not supported"));
    }
    super::parse::check_name(word, "backend")?;
    Ok(word.to_string())
}

fn acl(args: &mut Args<'_>, ctx: &Ctx<'_>) -> Result<Acl, String> {
    let name = args.need("a name")?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!("invalid character '{c}' in acl name '{name}'"));
    }
    let words = args.rest().to_vec();
    if words.is_empty() {
        return Err(format!("acl '{name}' needs a criterion"));
    }
    Ok(Acl {
        name: name.to_string(),
        words,
        loc: ctx.loc.clone(),
    })
}

/// `errorfile CODE PATH`. Like HAProxy, the file is read at load time, so a missing one is an
/// error now rather than a surprise on the first error answer. A relative path is taken
/// from the working directory; the model keeps the joined path. A later line for the same
/// code replaces the earlier (also one inherited from `defaults`).
fn errorfile(proxy: &mut Proxy, args: &mut Args<'_>, ctx: &Ctx<'_>) -> Result<(), String> {
    let code = args.need("a status code")?;
    let status = parse_uint::<u16>(code, "errorfile")
        .ok()
        .filter(|c| ERROR_CODES.contains(c));
    let status = status.ok_or_else(|| {
        format!(
            "unsupported status '{code}' for 'errorfile' (supported: {})",
            codes_list()
        )
    })?;
    let written = Path::new(args.need("a file path")?);
    let path = ctx.cwd.join(written);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(format!(
                "errorfile '{}' is not a regular file",
                written.display()
            ))
        }
        Err(e) => {
            return Err(format!(
                "cannot read errorfile '{}': {e}",
                written.display()
            ))
        }
    }
    proxy.errorfiles.retain(|e| e.status != status);
    proxy.errorfiles.push(ErrorFile {
        status,
        path,
        loc: ctx.loc.clone(),
    });
    Ok(())
}

pub(crate) fn codes_list() -> String {
    ERROR_CODES
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::model::{Loc, ProxyKind};
    use crate::config::parse::Notes;

    /// Applies `lines` to a fresh proxy of `scope`; returns the draft and the errors.
    pub(crate) fn run(scope: Scope, lines: &[&str]) -> (Draft, Vec<String>) {
        let kind = match scope {
            Scope::Frontend => ProxyKind::Frontend,
            Scope::Backend => ProxyKind::Backend,
            Scope::Listen | Scope::Defaults => ProxyKind::Listen,
            Scope::UdpLb => ProxyKind::UdpLb,
        };
        let mut draft = Draft {
            proxy: Proxy::new("p", kind, Loc::default()),
            notes: Notes::default(),
        };
        let mut errors = Vec::new();
        let cwd = std::env::temp_dir();
        for (i, line) in lines.iter().enumerate() {
            let words = crate::config::lexer::split_words(line, &|_| None).unwrap_or_default();
            let loc = Loc {
                file: "p.cfg".into(),
                line: i + 1,
            };
            let ctx = Ctx {
                loc: &loc,
                scope,
                cwd: &cwd,
                crt_base: Some(Path::new("/certs")),
            };
            if let Err(e) = directive(&mut draft, &words, &ctx) {
                errors.push(e);
            }
        }
        (draft, errors)
    }

    pub(crate) fn ok(scope: Scope, lines: &[&str]) -> Proxy {
        let (draft, errors) = run(scope, lines);
        assert!(errors.is_empty(), "{lines:?}: {errors:?}");
        draft.proxy
    }

    pub(crate) fn err(scope: Scope, line: &str) -> String {
        let (_, mut errors) = run(scope, &[line]);
        assert_eq!(errors.len(), 1, "{line}: {errors:?}");
        errors.pop().unwrap_or_default()
    }

    #[test]
    fn every_keyword_in_the_table_has_a_parser() {
        for keyword in keywords::all() {
            for scope in [
                Scope::Defaults,
                Scope::Frontend,
                Scope::Listen,
                Scope::Backend,
            ] {
                let (_, errors) = run(scope, &[keyword]);
                assert!(
                    errors.iter().all(|e| !e.contains("has no parser")),
                    "{keyword}: {errors:?}"
                );
            }
        }
    }

    #[test]
    fn hashing_balance_and_hash_type() {
        let p = ok(
            Scope::Backend,
            &[
                "balance uri whole depth 3 len 40",
                "hash-type consistent wt6 avalanche",
            ],
        );
        assert_eq!(p.balance, Balance::Uri);
        let a = &p.balance_args;
        assert!(a.whole && a.depth == Some(3) && a.len == Some(40));
        let h = p.hash_type;
        assert!(h.consistent && h.avalanche && h.function == HashFunction::Wt6);
        let p = ok(Scope::Backend, &["balance hdr(X-Stream)"]);
        assert_eq!(
            (p.balance, p.balance_args.name.as_deref()),
            (Balance::Hdr, Some("X-Stream"))
        );
        let p = ok(Scope::Backend, &["balance url_param stream"]);
        assert_eq!(p.balance_args.name.as_deref(), Some("stream"));
        assert!(
            err(Scope::Backend, "balance uri deep").contains("unsupported 'balance uri' option")
        );
        assert!(err(Scope::Backend, "hash-type ring").contains("unknown hash-type method"));
        assert!(err(Scope::Backend, "hash-type consistent md5").contains("unknown hash-type word"));
        assert!(err(Scope::Backend, "balance hdr()").contains("unsupported balance algorithm"));
    }

    #[test]
    fn section_matrix() {
        assert_eq!(
            err(Scope::Backend, "bind :80"),
            "'bind' is not allowed in a backend section"
        );
        assert_eq!(
            err(Scope::Frontend, "server a 1.2.3.4:80"),
            "'server' is not allowed in a frontend section"
        );
        assert_eq!(
            err(Scope::Backend, "default_backend x"),
            "'default_backend' is not allowed in a backend section"
        );
        assert_eq!(
            err(Scope::Frontend, "balance leastconn"),
            "'balance' is not allowed in a frontend section"
        );
        assert_eq!(
            err(Scope::Frontend, "cookie S insert"),
            "'cookie' is not allowed in a frontend section"
        );
        assert_eq!(
            err(Scope::Defaults, "use_backend b"),
            "'use_backend' is not allowed in a defaults section"
        );
        assert_eq!(
            err(Scope::Backend, "timeout client 5s"),
            "'timeout client' is not allowed in a backend section"
        );
        assert_eq!(
            err(Scope::Frontend, "option redispatch"),
            "'option redispatch' is not allowed in a frontend section"
        );
        assert_eq!(
            err(Scope::Frontend, "frob"),
            "unknown keyword 'frob' in 'frontend' section"
        );
        assert_eq!(
            err(Scope::Listen, "option frob"),
            "unknown option 'frob' in 'listen' section"
        );
        assert_eq!(
            err(Scope::Listen, "timeout frob 1s"),
            "unknown timeout 'frob' in 'listen' section"
        );
        assert_eq!(err(Scope::Listen, "option"), "'option' needs a name");
        assert_eq!(err(Scope::Listen, "no"), "'no' needs a keyword");
        assert_eq!(
            err(Scope::Listen, "no mode"),
            "'no' cannot be used with 'mode'"
        );
        assert!(err(Scope::Listen, "nbthread 4").contains("belongs in 'global'"));
    }

    #[test]
    fn simple_values() {
        let p = ok(
            Scope::Listen,
            &[
                "mode http",
                "balance leastconn",
                "maxconn 100",
                "retries 0",
                "forward-engine splice",
            ],
        );
        assert_eq!(
            (p.mode, p.balance, p.maxconn, p.retries, p.engine),
            (
                Mode::Http,
                Balance::LeastConn,
                Some(100),
                0,
                EngineChoice::Splice
            )
        );
        for (line, want) in [
            ("balance source", Balance::Source),
            ("balance first", Balance::First),
            ("balance roundrobin", Balance::RoundRobin),
        ] {
            assert_eq!(ok(Scope::Backend, &[line]).balance, want);
        }
        for (line, want) in [
            ("forward-engine auto", EngineChoice::Auto),
            ("forward-engine sockmap", EngineChoice::Sockmap),
            ("forward-engine copy", EngineChoice::Copy),
        ] {
            assert_eq!(ok(Scope::Backend, &[line]).engine, want);
        }
    }

    #[test]
    fn simple_value_errors() {
        assert_eq!(
            err(Scope::Listen, "mode health"),
            "unsupported mode 'health' (supported: tcp, http)"
        );
        assert_eq!(err(Scope::Listen, "mode"), "'mode' needs 'tcp' or 'http'");
        assert_eq!(
            err(Scope::Listen, "mode tcp http"),
            "unexpected argument 'http' to 'mode'"
        );
        assert!(err(Scope::Listen, "balance static-rr")
            .contains("supported: roundrobin, leastconn, source, first, random, uri"));
        assert_eq!(
            err(Scope::Listen, "maxconn 0"),
            "'maxconn' must be greater than 0"
        );
        assert!(err(Scope::Listen, "maxconn 1e3").contains("invalid number"));
        assert!(err(Scope::Listen, "retries -1").contains("invalid number"));
        assert!(
            err(Scope::Listen, "forward-engine turbo").contains("unknown forward engine 'turbo'")
        );
    }

    #[test]
    fn timeouts() {
        let p = ok(
            Scope::Listen,
            &[
                "timeout connect 5000",
                "timeout client 5s",
                "timeout server 1m",
                "timeout tunnel 2h",
                "timeout client-fin 1s",
                "timeout server-fin 2s",
                "timeout check 3s",
                "timeout queue 4s",
                "timeout http-request 10s",
                "timeout http-keep-alive 500ms",
            ],
        );
        let t = &p.timeouts;
        assert_eq!(t.connect, Some(Duration::from_millis(5000)));
        assert_eq!(t.client, Some(Duration::from_secs(5)));
        assert_eq!(t.server, Some(Duration::from_secs(60)));
        assert_eq!(t.tunnel, Some(Duration::from_secs(7200)));
        assert_eq!(t.client_fin, Some(Duration::from_secs(1)));
        assert_eq!(t.server_fin, Some(Duration::from_secs(2)));
        assert_eq!(t.check, Some(Duration::from_secs(3)));
        assert_eq!(t.queue, Some(Duration::from_secs(4)));
        assert_eq!(t.http_request, Some(Duration::from_secs(10)));
        assert_eq!(t.http_keep_alive, Some(Duration::from_millis(500)));
        assert!(err(Scope::Listen, "timeout client 5x")
            .contains("invalid time '5x' for 'timeout client'"));
        assert!(err(Scope::Listen, "timeout client 30d").contains("too large"));
        assert_eq!(
            err(Scope::Listen, "timeout client"),
            "'timeout client' needs a time"
        );
    }

    #[test]
    fn options_and_no_option() {
        let p = ok(
            Scope::Listen,
            &[
                "option redispatch",
                "option http-server-close",
                "option http-keep-alive",
                "option httpclose",
                "option httplog",
                "option tcplog",
                "option dontlognull",
                "option forwardfor except 127.0.0.0/8 header X-Real-IP if-none",
                "no option httpclose",
            ],
        );
        let o = &p.options;
        assert!(o.redispatch && o.httplog && o.tcplog && o.dontlognull);
        // The last HTTP mode set cleared the others; `no option httpclose` then cleared it.
        assert!(!o.http_server_close && !o.http_keep_alive && !o.httpclose);
        let modes = |lines: &[&str]| {
            let o = ok(Scope::Listen, lines).options;
            (o.http_server_close, o.http_keep_alive, o.httpclose)
        };
        assert_eq!(
            modes(&["option httpclose", "option http-server-close"]),
            (true, false, false)
        );
        assert_eq!(
            modes(&["option http-server-close", "option http-keep-alive"]),
            (false, true, false)
        );
        assert!(err(Scope::Listen, "option splice-auto").contains("forward-engine"));
        let ff = ForwardFor {
            header: "X-Real-IP".into(),
            except: Some("127.0.0.0/8".into()),
            if_none: true,
        };
        assert_eq!(o.forwardfor, Some(ff));
        let p = ok(
            Scope::Listen,
            &["option forwardfor", "no option forwardfor"],
        );
        assert_eq!(p.options.forwardfor, None);
        let p = ok(Scope::Listen, &["option forwardfor"]);
        assert_eq!(
            p.options.forwardfor.map(|f| f.header),
            Some("X-Forwarded-For".to_string())
        );
        assert!(err(Scope::Listen, "option forwardfor header")
            .contains("'header' in 'option forwardfor' needs a value"));
        assert!(err(Scope::Listen, "option forwardfor sometimes")
            .contains("unexpected argument 'sometimes'"));
        assert_eq!(
            err(Scope::Listen, "option redispatch now"),
            "unexpected argument 'now' to 'option redispatch'"
        );
    }

    #[test]
    fn logs() {
        let p = ok(
            Scope::Listen,
            &["log global", "log 10.0.0.1:515 local1 info"],
        );
        assert!(p.log.global);
        assert_eq!(
            p.log
                .targets
                .first()
                .map(|t| (t.facility.as_str(), t.loc.line)),
            Some(("local1", 2))
        );
        let p = ok(Scope::Listen, &["log global", "no log"]);
        assert_eq!(p.log, ProxyLog::default());
        assert_eq!(
            err(Scope::Listen, "log global x"),
            "unexpected argument 'x' to 'log'"
        );
        assert!(err(Scope::Listen, "log 1.2.3.4 nosuch").contains("unknown log facility"));
    }

    #[test]
    fn backends_and_acls() {
        let p = ok(
            Scope::Frontend,
            &[
                "default_backend b",
                "acl is_api path_beg /api",
                "use_backend api if is_api",
                "use_backend c",
            ],
        );
        assert_eq!(p.default_backend.as_deref(), Some("b"));
        assert_eq!(
            p.acls.first().map(|a| (a.name.as_str(), a.words.len())),
            Some(("is_api", 2))
        );
        let uses: Vec<_> = p
            .use_backends
            .iter()
            .map(|u| (u.backend.as_str(), u.cond.is_some(), u.loc.line))
            .collect();
        assert_eq!(uses, [("api", true, 3), ("c", false, 4)]);
        assert!(
            err(Scope::Frontend, "use_backend %[req.hdr(host)]").contains("dynamic backend name")
        );
        assert!(err(Scope::Frontend, "use_backend b when x").contains("unexpected argument 'when'"));
        assert_eq!(err(Scope::Frontend, "acl x"), "acl 'x' needs a criterion");
        assert!(err(Scope::Frontend, "acl x! src 1.2.3.4").contains("invalid character '!'"));
        assert_eq!(
            err(Scope::Frontend, "default_backend"),
            "'default_backend' needs a backend name"
        );
    }

    #[test]
    fn default_backend_note() {
        let (draft, errors) = run(Scope::Frontend, &["mode tcp", "default_backend b"]);
        assert!(errors.is_empty());
        assert_eq!(draft.notes.default_backend.map(|l| l.line), Some(2));
    }

    #[test]
    fn http_only_notes() {
        let (draft, _) = run(
            Scope::Listen,
            &[
                "stats enable",
                "option forwardfor",
                "no option httpclose",
                "mode http",
            ],
        );
        let kws: Vec<_> = draft
            .notes
            .http_only
            .iter()
            .map(|(k, l)| (k.as_str(), l.line))
            .collect();
        assert_eq!(kws, [("stats", 1), ("option forwardfor", 2)]);
        let (draft, _) = run(Scope::Defaults, &["option forwardfor"]);
        assert!(draft.notes.http_only.is_empty());
    }

    #[test]
    fn errorfiles() {
        let dir = std::env::temp_dir().join(format!("proxy-errorfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("503.http");
        std::fs::write(&file, "HTTP/1.1 503 Service Unavailable\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let line = format!("errorfile 503 {}", file.display());
        let p = ok(Scope::Defaults, &[&line, &line]);
        assert_eq!(
            p.errorfiles.len(),
            1,
            "a later line for the same code replaces the first"
        );
        assert_eq!(
            p.errorfiles
                .first()
                .map(|e| (e.status, e.path.clone(), e.loc.line)),
            Some((503, file, 2))
        );
        assert!(err(Scope::Listen, "errorfile 503 /nonexistent/503.http")
            .contains("cannot read errorfile '/nonexistent/503.http'"));
        assert!(
            err(Scope::Listen, &format!("errorfile 503 {}", dir.display()))
                .contains("not a regular file")
        );
        assert!(err(Scope::Listen, "errorfile 999 x").contains("unsupported status '999'"));
        assert!(err(Scope::Listen, "errorfile abc x").contains("unsupported status 'abc'"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn http_response_rules() {
        let p = ok(
            Scope::Listen,
            &[
                "http-response set-header Strict-Transport-Security max-age=63072000",
                "http-response del-header Server if { status 200 }",
                "http-response replace-header Location ^http://(.*) https://\\1",
                "http-response deny",
                "http-response deny deny_status 503 unless { status 200 }",
                "http-response set-status 404 reason Gone",
            ],
        );
        use crate::config::HttpResponseAction as A;
        let actions: Vec<&A> = p.http_response_rules.iter().map(|r| &r.action).collect();
        assert!(matches!(actions[0], A::SetHeader { name, value }
            if name == "Strict-Transport-Security" && value == "max-age=63072000"));
        assert!(matches!(actions[1], A::DelHeader { name } if name == "Server"));
        assert!(p.http_response_rules[1].cond.is_some());
        assert!(
            matches!(actions[2], A::ReplaceHeader { regex, replacement, .. }
            if regex == "^http://(.*)" && replacement == "https://\\1")
        );
        assert_eq!(actions[3], &A::Deny { status: 502 });
        assert_eq!(actions[4], &A::Deny { status: 503 });
        assert_eq!(
            actions[5],
            &A::SetStatus {
                status: 404,
                reason: Some("Gone".into())
            }
        );
        assert!(
            err(Scope::Listen, "http-response tarpit").contains("unsupported http-response action")
        );
        assert!(err(Scope::Listen, "http-response set-status 42").contains("100..999"));
        assert!(err(Scope::Listen, "http-response set-header").contains("header name"));
    }

    #[test]
    fn id_and_description_are_kept_capture_and_checks_refused() {
        let p = ok(Scope::Listen, &["description RTMP edge", "id 7"]);
        assert_eq!(
            (p.id, p.description.as_deref()),
            (Some(7), Some("RTMP edge"))
        );
        assert!(err(Scope::Listen, "id 0").contains("greater than 0"));
        assert_eq!(
            err(Scope::Listen, "description"),
            "'description' needs a text"
        );
        assert!(err(Scope::Listen, "capture request header Host len 64").contains("not supported"));
    }
}

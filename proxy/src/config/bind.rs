//! `bind ADDR:PORT[,ADDR:PORT…] [options]`: one `Bind` per listed address, all sharing the
//! line's options.
//!
//! Certificate files are not opened here: TLS is another room's work, and `-c` must not
//! depend on secrets being readable by whoever runs it.

use std::path::{Path, PathBuf};

use super::addr::parse_bind_addrs;
use super::args::Args;
use super::model::{Bind, Proxy, SslBind};
use super::num::parse_positive;
use super::parse::Ctx;

const TLS_VERSIONS: &[&str] = &["SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/// The options of one bind line.
#[derive(Default)]
struct BindOptions {
    ssl: bool,
    tls: SslBind,
    name: Option<String>,
    maxconn: Option<u32>,
    v6only: Option<bool>,
    accept_proxy: bool,
}

pub(crate) fn bind(proxy: &mut Proxy, args: &mut Args<'_>, ctx: &Ctx<'_>) -> Result<(), String> {
    let addrs = parse_bind_addrs(args.need("an address")?)?;
    let opts = options(args, ctx.crt_base)?;
    check_tls(&opts)?;
    let ssl = opts.ssl.then_some(opts.tls);
    proxy.binds.extend(addrs.into_iter().map(|addr| Bind {
        addr,
        ssl: ssl.clone(),
        name: opts.name.clone(),
        maxconn: opts.maxconn,
        v6only: opts.v6only,
        accept_proxy: opts.accept_proxy,
        loc: ctx.loc.clone(),
    }));
    Ok(())
}

fn options(args: &mut Args<'_>, crt_base: Option<&Path>) -> Result<BindOptions, String> {
    let mut o = BindOptions::default();
    while let Some(word) = args.next() {
        match word {
            "ssl" => o.ssl = true,
            "crt" => o.tls.crt.push(crt_path(args.value_of(word)?, crt_base)),
            "alpn" => o.tls.alpn = alpn(args.value_of(word)?)?,
            "ssl-min-ver" => o.tls.min_ver = Some(tls_version(args.value_of(word)?)?),
            "name" => o.name = Some(args.value_of(word)?.to_string()),
            "maxconn" => o.maxconn = Some(parse_positive(args.value_of(word)?, "bind maxconn")?),
            "v4v6" => o.v6only = Some(false),
            "v6only" => o.v6only = Some(true),
            "accept-proxy" => o.accept_proxy = true,
            _ => {
                return Err(format!(
                "unsupported bind option '{word}' (supported: ssl, crt, alpn, ssl-min-ver, name, \
                     maxconn, v4v6, v6only, accept-proxy)"
            ))
            }
        }
    }
    Ok(o)
}

/// TLS options without `ssl` would be silently ignored, and `ssl` without a certificate
/// cannot complete a handshake: both are mistakes worth stopping for.
fn check_tls(o: &BindOptions) -> Result<(), String> {
    let has_tls_options =
        !o.tls.crt.is_empty() || !o.tls.alpn.is_empty() || o.tls.min_ver.is_some();
    if !o.ssl && has_tls_options {
        return Err("'crt', 'alpn' and 'ssl-min-ver' need 'ssl' on the same bind line".to_string());
    }
    if o.ssl && o.tls.crt.is_empty() {
        return Err("'ssl' needs a certificate: add 'crt PATH'".to_string());
    }
    Ok(())
}

/// Relative `crt` paths are taken from `crt-base`, as in HAProxy.
fn crt_path(written: &str, crt_base: Option<&Path>) -> PathBuf {
    match crt_base {
        Some(base) if Path::new(written).is_relative() => base.join(written),
        _ => PathBuf::from(written),
    }
}

fn alpn(list: &str) -> Result<Vec<String>, String> {
    let protocols: Vec<String> = list.split(',').map(String::from).collect();
    if protocols.iter().any(String::is_empty) {
        return Err(format!("invalid alpn list '{list}': empty protocol name"));
    }
    Ok(protocols)
}

pub(super) fn tls_version(word: &str) -> Result<String, String> {
    if TLS_VERSIONS.contains(&word) {
        Ok(word.to_string())
    } else {
        Err(format!(
            "unknown TLS version '{word}' (expected one of: {})",
            TLS_VERSIONS.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::keywords::Scope;
    use crate::config::proxy::tests::{err, ok};
    use std::net::SocketAddr;
    use std::path::PathBuf;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn plain_binds() {
        let p = ok(
            Scope::Frontend,
            &[
                "bind *:1935 ",
                "bind :6080",
                "bind 10.0.0.1:80,[::1]:80 name web maxconn 50 v6only",
            ],
        );
        let addrs: Vec<_> = p.binds.iter().map(|b| (b.addr, b.loc.line)).collect();
        assert_eq!(
            addrs,
            [
                (sa("0.0.0.0:1935"), 1),
                (sa("0.0.0.0:6080"), 2),
                (sa("10.0.0.1:80"), 3),
                (sa("[::1]:80"), 3)
            ]
        );
        let last = p.binds.last();
        assert_eq!(
            last.map(|b| (b.name.as_deref(), b.maxconn, b.v6only, b.ssl.is_none())),
            Some((Some("web"), Some(50), Some(true), true))
        );
        let p = ok(Scope::Listen, &["bind [::]:80 v4v6"]);
        assert_eq!(p.binds.first().and_then(|b| b.v6only), Some(false));
        assert!(p.binds.iter().all(|b| !b.accept_proxy));
    }

    #[test]
    fn accept_proxy_binds() {
        let p = ok(
            Scope::Frontend,
            &[
                "bind :80,:81 accept-proxy",
                "bind :443 accept-proxy ssl crt a.pem",
            ],
        );
        assert!(p.binds.iter().all(|b| b.accept_proxy));
        assert!(p.binds.last().is_some_and(|b| b.ssl.is_some()));
    }

    #[test]
    fn tls_binds() {
        let p = ok(
            Scope::Frontend,
            &[
                "bind *:443 ssl crt  /etc/haproxy/certs/$DOMAIN.pem",
                "bind :8443 ssl crt a.pem crt /abs/b.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2",
            ],
        );
        let first = p
            .binds
            .first()
            .and_then(|b| b.ssl.clone())
            .unwrap_or_default();
        assert_eq!(first.crt, [PathBuf::from("/etc/haproxy/certs/$DOMAIN.pem")]);
        let second = p
            .binds
            .get(1)
            .and_then(|b| b.ssl.clone())
            .unwrap_or_default();
        assert_eq!(
            second.crt,
            [PathBuf::from("/certs/a.pem"), PathBuf::from("/abs/b.pem")]
        );
        assert_eq!(second.alpn, ["h2", "http/1.1"]);
        assert_eq!(second.min_ver.as_deref(), Some("TLSv1.2"));
    }

    #[test]
    fn errors() {
        assert_eq!(err(Scope::Frontend, "bind"), "'bind' needs an address");
        assert!(err(Scope::Frontend, "bind :0").contains("must be 1..65535"));
        assert!(err(Scope::Frontend, "bind :80 expect-proxy")
            .contains("unsupported bind option 'expect-proxy'"));
        assert!(err(Scope::Frontend, "bind :443 crt a.pem").contains("need 'ssl'"));
        assert!(err(Scope::Frontend, "bind :443 ssl").contains("needs a certificate"));
        assert!(err(Scope::Frontend, "bind :443 ssl crt").contains("'crt' in 'bind' needs a value"));
        assert!(err(Scope::Frontend, "bind :443 ssl crt a alpn h2,").contains("empty protocol"));
        assert!(
            err(Scope::Frontend, "bind :443 ssl crt a ssl-min-ver TLSv9")
                .contains("unknown TLS version")
        );
        assert!(err(Scope::Frontend, "bind :80 maxconn 0").contains("greater than 0"));
    }
}

//! Addresses in `bind`, `server` and `log` lines → socket addresses.
//!
//! Accepted forms: `IPv4:PORT`, `[IPv6]:PORT`, unbracketed IPv6 (`:::443`, split at the last
//! colon as HAProxy does), `HOST:PORT` (resolved once, at load time, like HAProxy's default
//! `init-addr libc`), the `ipv4@` / `ipv6@` family prefixes, and for `bind` the wildcard `*`
//! or an empty host (`:1935`), which, as in HAProxy, means IPv4 `0.0.0.0` unless `ipv6@` is
//! given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::model::{IpFamily, LogDest};
use super::num::parse_port;

/// syslog's UDP port, used when a `log` address has none.
const SYSLOG_PORT: u16 = 514;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// `bind ADDR:PORT[,ADDR:PORT...]` → one socket address per listed address.
pub(crate) fn parse_bind_addrs(text: &str) -> Result<Vec<SocketAddr>, String> {
    text.split(',')
        .map(|one| {
            let (family, rest) = strip_family(one)?;
            let (host, port) = split_host_port(rest)?;
            let port = port.ok_or_else(|| format!("missing port in bind address '{one}'"))?;
            let port = parse_port(port, one)?;
            if host.is_empty() || host == "*" {
                return Ok(wildcard(family, port));
            }
            resolve(host, port, family)
        })
        .collect()
}

/// `nameserver NAME IP:PORT`: an IP literal and a port (a name would need a resolver to
/// find the resolver).
pub(crate) fn parse_nameserver_addr(text: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(text)?;
    let port = port.ok_or_else(|| format!("missing port in nameserver address '{text}'"))?;
    let port = parse_port(port, text)?;
    let ip = host
        .parse::<IpAddr>()
        .map_err(|_| format!("nameserver address '{text}' must be an IP address with a port"))?;
    Ok(SocketAddr::new(ip, port))
}

/// A `server` or `server-template` address before any resolution: an IP literal, or a host
/// name left for `init-addr` and `resolvers` to resolve.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    Ip(SocketAddr),
    Name {
        host: String,
        port: Option<u16>,
        /// `ipv4@` / `ipv6@`.
        family: Option<IpFamily>,
    },
}

pub(crate) fn parse_server_target(text: &str) -> Result<Target, String> {
    let (family, rest) = strip_family(text)?;
    let (host, port) = split_host_port(rest)?;
    let port = port.map(|p| parse_port(p, text)).transpose()?;
    if host.is_empty() || host == "*" {
        return Err(format!("server address '{text}' has no host"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let port = port.ok_or_else(|| format!("missing port in server address '{text}'"))?;
        let addr = resolve(host, port, family)?;
        if ip.is_unspecified() {
            return Err(format!(
                "server address '{text}' is a wildcard, not a server"
            ));
        }
        return Ok(Target::Ip(addr));
    }
    // SRV names (`_http._tcp.example`) carry labels starting with `_`, which the check allows.
    check_host_name(host)?;
    let family = match family {
        Family::Any => None,
        Family::V4 => Some(IpFamily::V4),
        Family::V6 => Some(IpFamily::V6),
    };
    Ok(Target::Name {
        host: host.to_string(),
        port,
        family,
    })
}

/// Every address the system resolver gives `host`, `prefer`red family first, without
/// repeats; empty when it gives none.
pub(crate) fn libc_addrs(host: &str, port: u16, prefer: IpFamily) -> Vec<SocketAddr> {
    let mut found: Vec<SocketAddr> = Vec::new();
    if let Ok(answers) = (host, port).to_socket_addrs() {
        for a in answers {
            if !found.contains(&a) {
                found.push(a);
            }
        }
    }
    found.sort_by_key(|a| a.is_ipv4() != (prefer == IpFamily::V4));
    found
}

/// `addr ADDR` on a server line: where its health checks go instead of its address. A host
/// name is resolved at load time like the server's; the port comes from the traffic port or
/// from `port N`, so none is accepted here.
pub(crate) fn parse_check_addr(text: &str) -> Result<IpAddr, String> {
    let (family, rest) = strip_family(text)?;
    let (host, port) = split_host_port(rest)?;
    if port.is_some() {
        return Err(format!(
            "'addr' takes an address without a port, got '{text}' (the check port is set with 'port N')"
        ));
    }
    let ip = resolve(host, 0, family)?.ip();
    if ip.is_unspecified() {
        return Err(format!(
            "check address '{text}' is a wildcard, not a server"
        ));
    }
    Ok(ip)
}

/// The destination of a `log` line: `stderr`, `stdout`, a unix socket (absolute path or
/// `unix@PATH`), or a UDP syslog server (`[udp@]ADDR[:PORT]`, port 514 by default).
pub(crate) fn parse_log_dest(text: &str) -> Result<LogDest, String> {
    match text {
        "stderr" => return Ok(LogDest::Stderr),
        "stdout" => return Ok(LogDest::Stdout),
        _ => {}
    }
    if let Some(path) = text
        .strip_prefix("unix@")
        .or(text.starts_with('/').then_some(text))
    {
        if !path.starts_with('/') {
            return Err(format!("log socket path '{path}' must be absolute"));
        }
        return Ok(LogDest::Unix(PathBuf::from(path)));
    }
    let rest = text.strip_prefix("udp@").unwrap_or(text);
    let (family, rest) = strip_family(rest)?;
    let (host, port) = split_host_port(rest)?;
    let port = match port {
        Some(p) => parse_port(p, text)?,
        None => SYSLOG_PORT,
    };
    if host.is_empty() || host == "*" {
        return Err(format!("log address '{text}' has no host"));
    }
    resolve(host, port, family).map(LogDest::Udp)
}

fn strip_family(text: &str) -> Result<(Family, &str), String> {
    if let Some(rest) = text.strip_prefix("ipv4@") {
        return Ok((Family::V4, rest));
    }
    if let Some(rest) = text.strip_prefix("ipv6@") {
        return Ok((Family::V6, rest));
    }
    if let Some((prefix, _)) = text.split_once('@') {
        return Err(format!(
            "unsupported address family '{prefix}@' in '{text}'"
        ));
    }
    Ok((Family::Any, text))
}

/// Splits `HOST[:PORT]`; a bare IP (including unbracketed IPv6 such as `::1`) has no port.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in address '{text}'"))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!(
                "unexpected '{after}' after ']' in address '{text}'"
            )),
        };
    }
    if text.parse::<IpAddr>().is_ok() {
        return Ok((text, None));
    }
    Ok(match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

fn wildcard(family: Family, port: u16) -> SocketAddr {
    match family {
        Family::V6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        Family::Any | Family::V4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
    }
}

fn family_matches(family: Family, addr: &SocketAddr) -> bool {
    match family {
        Family::Any => true,
        Family::V4 => addr.is_ipv4(),
        Family::V6 => addr.is_ipv6(),
    }
}

/// An IP literal as is, or a host name through the system resolver (first answer of the
/// requested family).
fn resolve(host: &str, port: u16, family: Family) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        let addr = SocketAddr::new(ip, port);
        if !family_matches(family, &addr) {
            return Err(format!("address '{host}' does not match its family prefix"));
        }
        return Ok(addr);
    }
    check_host_name(host)?;
    // A fuzz run must not wait on DNS for the names it makes up (and would be slowed to
    // a crawl): under cargo-fuzz only IP literals resolve.
    if cfg!(fuzzing) {
        return Err(format!(
            "cannot resolve '{host}': no resolver while fuzzing"
        ));
    }
    let answers = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?;
    answers
        .into_iter()
        .find(|a| family_matches(family, a))
        .ok_or_else(|| format!("cannot resolve '{host}': no address of the requested family"))
}

/// Refuses what cannot be a DNS name before asking the resolver, so that a typo such as
/// `172.30.0.420` is reported as a bad address at once instead of going out as a DNS query.
fn check_host_name(host: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = trimmed.len() <= 253 && trimmed.split('.').all(label_ok);
    // A top-level label made only of digits is never a name: it is a mistyped IPv4 address.
    let numeric_tld = trimmed
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if !labels_ok || numeric_tld {
        return Err(format!(
            "invalid address '{host}': not an IP address nor a host name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// A server address as a `server` line with the default `init-addr` takes it.
    fn parse_server_addr(text: &str) -> Result<SocketAddr, String> {
        match parse_server_target(text)? {
            Target::Ip(addr) => Ok(addr),
            Target::Name { host, port, .. } => {
                let port = port.ok_or_else(|| "missing port".to_string())?;
                let found = libc_addrs(&host, port, IpFamily::V4);
                found
                    .first()
                    .copied()
                    .ok_or_else(|| "cannot resolve".to_string())
            }
        }
    }

    fn binds(s: &str) -> Vec<SocketAddr> {
        parse_bind_addrs(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn bind_forms() {
        assert_eq!(binds("*:1935"), [sa("0.0.0.0:1935")]);
        assert_eq!(binds(":6080"), [sa("0.0.0.0:6080")]);
        assert_eq!(binds("10.0.0.1:80"), [sa("10.0.0.1:80")]);
        assert_eq!(binds("[::]:443"), [sa("[::]:443")]);
        assert_eq!(binds("[::1]:443"), [sa("[::1]:443")]);
        assert_eq!(binds(":::443"), [sa("[::]:443")]);
        assert_eq!(binds("ipv6@:443"), [sa("[::]:443")]);
        assert_eq!(binds("ipv4@*:443"), [sa("0.0.0.0:443")]);
        assert_eq!(
            binds(":80,[::]:80,127.0.0.1:81"),
            [sa("0.0.0.0:80"), sa("[::]:80"), sa("127.0.0.1:81")]
        );
        assert_eq!(
            binds("localhost:8080").first().map(SocketAddr::port),
            Some(8080)
        );
    }

    #[test]
    fn bind_errors() {
        let e = |s: &str| parse_bind_addrs(s).expect_err(s);
        assert!(e("*").contains("missing port"));
        assert!(e("*:0").contains("must be 1..65535"));
        assert!(e("*:65536").contains("must be 1..65535"));
        assert!(e("*:80-81").contains("port ranges"));
        assert!(e("unix@/tmp/s").contains("unsupported address family 'unix@'"));
        assert!(e("ipv4@[::1]:80").contains("family"));
        assert!(e("[::1:80").contains("missing ']'"));
        assert!(e("[::1]x:80").contains("after ']'"));
        assert!(e(":80,").contains("missing port"));
    }

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server_addr("172.30.0.42:1935"),
            Ok(sa("172.30.0.42:1935"))
        );
        assert_eq!(
            parse_server_addr("[2001:db8::1]:80"),
            Ok(sa("[2001:db8::1]:80"))
        );
        assert_eq!(
            parse_server_addr("localhost:5080").map(|a| a.port()),
            Ok(5080)
        );
    }

    #[test]
    fn server_errors() {
        let e = |s: &str| parse_server_addr(s).expect_err(s);
        assert!(e("172.30.0.42").contains("missing port"));
        assert!(e("172.30.0.42:0").contains("must be 1..65535"));
        assert!(e("172.30.0.420:1935").contains("invalid address '172.30.0.420'"));
        assert!(e("bad_host!:80").contains("invalid address"));
        assert!(e("*:80").contains("no host"));
        assert!(e("0.0.0.0:80").contains("wildcard"));
        assert!(e("a..b:80").contains("invalid address"));
        assert!(e("localhost").contains("missing port"));
    }

    #[test]
    fn server_targets_keep_names_for_later() {
        let name = |host: &str, port: Option<u16>, family| Target::Name {
            host: host.to_string(),
            port,
            family,
        };
        assert_eq!(
            parse_server_target("ams.example:5080"),
            Ok(name("ams.example", Some(5080), None))
        );
        assert_eq!(
            parse_server_target("_http._tcp.ams.example"),
            Ok(name("_http._tcp.ams.example", None, None))
        );
        assert_eq!(
            parse_server_target("ipv4@ams.example:80"),
            Ok(name("ams.example", Some(80), Some(IpFamily::V4)))
        );
        assert!(parse_server_target("[::1]").is_err());
    }

    #[test]
    fn nameserver_addresses_are_ip_and_port() {
        assert_eq!(
            parse_nameserver_addr("127.0.0.53:5353"),
            Ok(sa("127.0.0.53:5353"))
        );
        assert!(parse_nameserver_addr("127.0.0.53").is_err());
        assert!(parse_nameserver_addr("dns.example:53").is_err());
    }

    #[test]
    fn log_forms() {
        assert_eq!(
            parse_log_dest("127.0.0.1"),
            Ok(LogDest::Udp(sa("127.0.0.1:514")))
        );
        assert_eq!(
            parse_log_dest("127.0.0.1:10514"),
            Ok(LogDest::Udp(sa("127.0.0.1:10514")))
        );
        assert_eq!(
            parse_log_dest("udp@10.1.1.1"),
            Ok(LogDest::Udp(sa("10.1.1.1:514")))
        );
        assert_eq!(parse_log_dest("::1"), Ok(LogDest::Udp(sa("[::1]:514"))));
        assert_eq!(
            parse_log_dest("[::1]:515"),
            Ok(LogDest::Udp(sa("[::1]:515")))
        );
        assert_eq!(
            parse_log_dest("/dev/log"),
            Ok(LogDest::Unix("/dev/log".into()))
        );
        assert_eq!(
            parse_log_dest("unix@/dev/log"),
            Ok(LogDest::Unix("/dev/log".into()))
        );
        assert_eq!(parse_log_dest("stderr"), Ok(LogDest::Stderr));
        assert_eq!(parse_log_dest("stdout"), Ok(LogDest::Stdout));
    }

    #[test]
    fn log_errors() {
        assert!(parse_log_dest("unix@dev/log").is_err());
        assert!(parse_log_dest("127.0.0.1:0").is_err());
        assert!(parse_log_dest("tcp@1.2.3.4").is_err());
        assert!(parse_log_dest("1.2.3.999").is_err());
    }
}

//! `server NAME ADDR:PORT [params]` and `default-server [params]`.
//!
//! A server starts from the section's `default-server` settings as they stand when its
//! line is read (those of the `defaults` section included), then applies its own words.
//! The `no-…` and `enabled` words undo what a `default-server` line turned on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::addr::{libc_addrs, parse_check_addr, parse_server_target, Target};
use super::args::Args;
use super::model::{InitAddr, IpFamily, Loc, Proxy, Server, ServerDns, ServerParams};
use super::num::{parse_in_range, parse_port, parse_positive};
use super::time::parse_nonzero_duration;

const MAX_WEIGHT: u32 = 256;

pub(crate) fn server(proxy: &mut Proxy, args: &mut Args<'_>, loc: &Loc) -> Result<(), String> {
    let server = parse(&proxy.default_server, args, loc)?;
    proxy.servers.push(server);
    Ok(())
}

/// One server line's words after `server`, read on top of `defaults` (a section's
/// `default-server` settings): the config file's lines and the runtime API's `add server`.
pub(crate) fn parse(
    defaults: &ServerParams,
    args: &mut Args<'_>,
    loc: &Loc,
) -> Result<Server, String> {
    let name = args.need("a name")?;
    check_server_name(name)?;
    let target = parse_server_target(args.need("an address")?)?;
    let line = line_params(defaults, args)?;
    let (addrs, fqdn) = place(&target, &line, 1)?;
    let params = line.params;
    let dns = fqdn.and_then(|fqdn| dns_of(&params, fqdn, name));
    Ok(Server {
        name: name.to_string(),
        addr: addrs
            .first()
            .copied()
            .unwrap_or(target_unspecified(&params, 0)),
        params,
        dns,
        loc: loc.clone(),
    })
}

/// The most slots one `server-template` line may make: each is a server with its own
/// counters and check loop.
const MAX_TEMPLATE_SLOTS: u32 = 1024;

/// `server-template PREFIX N|A-B FQDN[:PORT] [params]`: servers PREFIXA … PREFIXB whose
/// addresses (and, from SRV records, ports and weights) come from `resolvers` at run time.
pub(crate) fn server_template(
    proxy: &mut Proxy,
    args: &mut Args<'_>,
    loc: &Loc,
) -> Result<(), String> {
    let prefix = args.need("a name prefix")?;
    check_server_name(prefix)?;
    let (low, high) = slot_range(args.need("a number or a range")?)?;
    let target = parse_server_target(args.need("an address")?)?;
    let line = line_params(&proxy.default_server, args)?;
    if line.params.resolvers.is_none() {
        return Err(
            "'server-template' needs 'resolvers NAME': its slots are filled from DNS".to_string(),
        );
    }
    let Target::Name { .. } = target else {
        return Err("'server-template' needs a host name, not an IP address".to_string());
    };
    let (addrs, fqdn) = place(&target, &line, (high - low + 1) as usize)?;
    let params = line.params;
    for (i, number) in (low..=high).enumerate() {
        let name = format!("{prefix}{number}");
        let dns = fqdn.clone().and_then(|f| dns_of(&params, f, prefix));
        proxy.servers.push(Server {
            addr: addrs
                .get(i)
                .copied()
                .unwrap_or(target_unspecified(&params, 0)),
            name,
            params: params.clone(),
            dns,
            loc: loc.clone(),
        });
    }
    Ok(())
}

fn check_server_name(name: &str) -> Result<(), String> {
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!("invalid character '{c}' in server name '{name}'"));
    }
    Ok(())
}

/// `N` (slots 1 to N) or `A-B`.
fn slot_range(text: &str) -> Result<(u32, u32), String> {
    let (low, high) = match text.split_once('-') {
        Some((a, b)) => (
            parse_in_range(a, "server-template", 0, u32::MAX)?,
            parse_in_range(b, "server-template", 0, u32::MAX)?,
        ),
        None => (1, parse_positive(text, "server-template")?),
    };
    if low > high {
        return Err(format!("server-template range '{text}' runs backwards"));
    }
    if high - low >= MAX_TEMPLATE_SLOTS {
        return Err(format!(
            "server-template range '{text}' makes more than {MAX_TEMPLATE_SLOTS} servers"
        ));
    }
    Ok((low, high))
}

/// The section's `default-server` settings with the line's own words applied, and the
/// combinations a line may not make.
fn line_params(defaults: &ServerParams, args: &mut Args<'_>) -> Result<Line, String> {
    let mut params = defaults.clone();
    let applied = apply_params(&mut params, args)?;
    if applied.v2_options && !params.send_proxy_v2 {
        // Options of the v2 header without the header would go nowhere. Inherited from a
        // `default-server` they are fine: they act on the servers that use v2.
        return Err("'proxy-v2-options' needs 'send-proxy-v2'".to_string());
    }
    if params.check_ssl && !params.verify_none {
        // HAProxy's default for servers is `verify required` against `ca-file`; without
        // `ca-file` here, checks must not skip verification unless the line says so.
        return Err(
            "'check-ssl' needs 'verify none': verifying the server's certificate \
             ('verify required') needs 'ca-file', which is not supported"
                .to_string(),
        );
    }
    Ok(Line {
        params,
        resolvers_on_line: applied.resolvers,
    })
}

/// A server line's settings.
struct Line {
    params: ServerParams,
    /// `resolvers`, `init-addr` or `resolve-prefer` written on the line itself must act: an
    /// IP address has nothing to resolve. Inherited from `default-server` they act on the
    /// named servers only.
    resolvers_on_line: bool,
}

fn dns_of(params: &ServerParams, fqdn: String, group: &str) -> Option<ServerDns> {
    Some(ServerDns {
        fqdn,
        resolvers: params.resolvers.clone()?,
        group: group.to_string(),
    })
}

/// "No address": the unspecified IP of the preferred family.
fn target_unspecified(params: &ServerParams, port: u16) -> SocketAddr {
    match params.resolve_prefer {
        IpFamily::V4 => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        IpFamily::V6 => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
    }
}

/// The first address of each of `slots` servers (unspecified where `init-addr` gives none),
/// and the host name when `resolvers` will follow it.
fn place(
    target: &Target,
    line: &Line,
    slots: usize,
) -> Result<(Vec<SocketAddr>, Option<String>), String> {
    let params = &line.params;
    let (host, port, family) = match target {
        Target::Ip(addr) => {
            if line.resolvers_on_line {
                return Err(
                    "'resolvers', 'init-addr' and 'resolve-prefer' need a host name, not an IP \
                     address"
                        .to_string(),
                );
            }
            return Ok((vec![*addr; slots], None));
        }
        Target::Name { host, port, family } => (host, *port, *family),
    };
    let srv = host.starts_with('_');
    let port = match (srv, port) {
        (true, Some(_)) => {
            return Err(format!(
                "'{host}' is an SRV name: the port comes from its records (drop ':PORT')"
            ))
        }
        (true, None) if params.resolvers.is_none() => {
            return Err(format!(
                "'{host}' is an SRV name: it needs 'resolvers NAME'"
            ))
        }
        (true, None) => 0,
        (false, Some(p)) => p,
        (false, None) => return Err(format!("missing port in server address '{host}'")),
    };
    let prefer = family.unwrap_or(params.resolve_prefer);
    let fqdn = params.resolvers.is_some().then(|| host.clone());
    for method in &params.init_addr {
        let found = match method {
            // No server-state file here: `last` finds nothing, as in HAProxy without one.
            InitAddr::Last => continue,
            InitAddr::Libc if srv => continue,
            InitAddr::Libc => preferred(libc_addrs(host, port, prefer), prefer),
            InitAddr::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            InitAddr::None => Vec::new(),
        };
        if found.is_empty() && *method != InitAddr::None {
            continue;
        }
        let unspecified = target_unspecified(params, port);
        let addrs = (0..slots)
            .map(|i| found.get(i).copied().unwrap_or(unspecified))
            .collect();
        return Ok((addrs, fqdn));
    }
    Err(format!(
        "cannot resolve '{host}' at start (init-addr {}): add 'none' to 'init-addr' to start \
         without an address and wait for DNS",
        init_addr_text(&params.init_addr)
    ))
}

/// Only the preferred family's addresses when there are some.
fn preferred(addrs: Vec<SocketAddr>, prefer: IpFamily) -> Vec<SocketAddr> {
    let of_prefer = |a: &SocketAddr| a.is_ipv4() == (prefer == IpFamily::V4);
    if addrs.iter().any(of_prefer) {
        addrs.into_iter().filter(of_prefer).collect()
    } else {
        addrs
    }
}

fn init_addr_text(methods: &[InitAddr]) -> String {
    methods
        .iter()
        .map(|m| match m {
            InitAddr::Last => "last".to_string(),
            InitAddr::Libc => "libc".to_string(),
            InitAddr::None => "none".to_string(),
            InitAddr::Ip(ip) => ip.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `init-addr METHOD[,METHOD…]`.
fn init_addr(list: &str) -> Result<Vec<InitAddr>, String> {
    list.split(',')
        .map(|m| match m {
            "last" => Ok(InitAddr::Last),
            "libc" => Ok(InitAddr::Libc),
            "none" => Ok(InitAddr::None),
            other => other.parse::<IpAddr>().map(InitAddr::Ip).map_err(|_| {
                format!("'init-addr' expects last, libc, none or an IP address, got '{other}'")
            }),
        })
        .collect()
}

pub(crate) fn default_server(proxy: &mut Proxy, args: &mut Args<'_>) -> Result<(), String> {
    // Build on a copy so that a bad word leaves the section's defaults as they were.
    let mut params = proxy.default_server.clone();
    apply_params(&mut params, args)?;
    proxy.default_server = params;
    Ok(())
}

/// What a line named that matters beyond the parameters it set.
struct Applied {
    v2_options: bool,
    /// `resolvers`, `init-addr` or `resolve-prefer` written on the line itself: they act
    /// on host names only.
    resolvers: bool,
}

fn apply_params(p: &mut ServerParams, args: &mut Args<'_>) -> Result<Applied, String> {
    let mut applied = Applied {
        v2_options: false,
        resolvers: false,
    };
    while let Some(word) = args.next() {
        match word {
            "check" => p.check = true,
            "no-check" => p.check = false,
            "inter" => p.inter = parse_nonzero_duration(args.value_of(word)?, word)?,
            "fastinter" => p.fastinter = Some(parse_nonzero_duration(args.value_of(word)?, word)?),
            "downinter" => p.downinter = Some(parse_nonzero_duration(args.value_of(word)?, word)?),
            "rise" => p.rise = parse_positive(args.value_of(word)?, word)?,
            "fall" => p.fall = parse_positive(args.value_of(word)?, word)?,
            "weight" => p.weight = parse_in_range(args.value_of(word)?, word, 0, MAX_WEIGHT)?,
            "backup" => p.backup = true,
            "no-backup" => p.backup = false,
            "maxconn" => p.maxconn = Some(parse_positive(args.value_of(word)?, word)?),
            "maxqueue" => p.maxqueue = Some(parse_positive(args.value_of(word)?, word)?),
            "disabled" => p.disabled = true,
            "enabled" => p.disabled = false,
            "cookie" => p.cookie = Some(args.value_of(word)?.to_string()),
            "port" => p.check_port = Some(parse_port(args.value_of(word)?, word)?),
            "addr" => p.check_addr = Some(parse_check_addr(args.value_of(word)?)?),
            "check-ssl" => p.check_ssl = true,
            "no-check-ssl" => p.check_ssl = false,
            "check-sni" => p.check_sni = Some(sni(args.value_of(word)?)?),
            "verify" => p.verify_none = verify(args.value_of(word)?)?,
            "check-alpn" | "check-proto" => {
                return Err(format!(
                    "'{word}' is not supported: health checks speak HTTP/1.x (leave '{word}' \
                     out)"
                ))
            }
            "send-proxy" => p.send_proxy = true,
            "no-send-proxy" => p.send_proxy = false,
            "send-proxy-v2" => p.send_proxy_v2 = true,
            "no-send-proxy-v2" => p.send_proxy_v2 = false,
            "check-send-proxy" => p.check_send_proxy = true,
            "no-check-send-proxy" => p.check_send_proxy = false,
            "resolvers" => {
                p.resolvers = Some(args.value_of(word)?.to_string());
                applied.resolvers = true;
            }
            "resolve-prefer" => {
                applied.resolvers = true;
                p.resolve_prefer = match args.value_of(word)? {
                    "ipv4" => IpFamily::V4,
                    "ipv6" => IpFamily::V6,
                    other => {
                        return Err(format!(
                            "'resolve-prefer' expects 'ipv4' or 'ipv6', got '{other}'"
                        ))
                    }
                }
            }
            "init-addr" => {
                applied.resolvers = true;
                p.init_addr = init_addr(args.value_of(word)?)?
            }
            "proxy-v2-options" => {
                proxy_v2_options(p, args.value_of(word)?)?;
                applied.v2_options = true;
            }
            _ => {
                return Err(format!(
                "unsupported {} option '{word}' (supported: check, inter, fastinter, downinter, \
                     rise, fall, weight, backup, maxconn, maxqueue, disabled, cookie, port, addr, \
                     send-proxy, send-proxy-v2, check-send-proxy, proxy-v2-options, check-ssl, \
                     check-sni, verify, resolvers, resolve-prefer, init-addr and their no-/enabled \
                     forms)",
                args.keyword()
            ))
            }
        }
    }
    Ok(applied)
}

/// `check-sni NAME`: a DNS name rustls can send, checked here so a typo fails at load rather
/// than on every check.
fn sni(name: &str) -> Result<String, String> {
    match rustls::pki_types::DnsName::try_from(name) {
        Ok(_) => Ok(name.to_string()),
        Err(_) => Err(format!("'check-sni' needs a DNS name, got '{name}'")),
    }
}

/// `verify none|required`: whether the certificate check is skipped.
fn verify(mode: &str) -> Result<bool, String> {
    match mode {
        "none" => Ok(true),
        "required" => Ok(false),
        other => Err(format!(
            "'verify' expects 'none' or 'required', got '{other}'"
        )),
    }
}

/// HAProxy's `proxy-v2-options` names; only `crc32c` is built (the others carry TLS and
/// unique-id facts this proxy does not hand to the upstream side), so the rest are refused
/// rather than accepted and left out of the header.
const V2_OPTIONS: &[&str] = &[
    "ssl",
    "cert-cn",
    "ssl-cipher",
    "cert-sig",
    "cert-key",
    "authority",
    "crc32c",
    "unique-id",
];

fn proxy_v2_options(p: &mut ServerParams, list: &str) -> Result<(), String> {
    for option in list.split(',') {
        match option {
            "crc32c" => p.proxy_v2_crc32c = true,
            known if V2_OPTIONS.contains(&known) => {
                return Err(format!(
                    "proxy-v2-options '{known}' is not supported (supported: crc32c)"
                ))
            }
            other => {
                return Err(format!(
                    "unknown proxy-v2-options '{other}' (expected one of: {})",
                    V2_OPTIONS.join(", ")
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::keywords::Scope;
    use crate::config::model::ServerParams;
    use crate::config::proxy::tests::{err, ok};
    use std::time::Duration;

    #[test]
    fn a_runtime_server_line_takes_the_backends_defaults() {
        let p = ok(
            Scope::Backend,
            &["default-server check inter 3s weight 10 maxconn 50"],
        );
        let words: Vec<String> = "s9 127.0.0.1:1935 weight 20 no-check"
            .split(' ')
            .map(String::from)
            .collect();
        let loc = crate::config::Loc::default();
        let s = crate::config::server_line(&p.default_server, &words, &loc).expect("line");
        assert_eq!((s.name.as_str(), s.addr.port()), ("s9", 1935));
        assert_eq!((s.params.weight, s.params.maxconn), (20, Some(50)));
        assert!(!s.params.check);
        assert_eq!(s.params.inter, Duration::from_secs(3));
        let bad = |line: &str| {
            let words: Vec<String> = line.split(' ').map(String::from).collect();
            crate::config::server_line(&p.default_server, &words, &loc).unwrap_err()
        };
        assert!(bad("s9 127.0.0.1:1 frob").contains("unsupported server option 'frob'"));
        assert!(bad("s/9 127.0.0.1:1").contains("invalid character '/'"));
        assert!(bad("s9").contains("needs an address"));
    }

    #[test]
    fn server_template_makes_slots_that_follow_dns() {
        let p = ok(
            Scope::Backend,
            &["server-template ams 2-4 ams.test:5080 check resolvers dns init-addr none resolve-prefer ipv4"],
        );
        let names: Vec<&str> = p.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ams2", "ams3", "ams4"]);
        for s in &p.servers {
            assert_eq!(
                s.addr.to_string(),
                "0.0.0.0:5080",
                "no address until DNS gives one"
            );
            let dns = s.dns.as_ref().expect("follows DNS");
            assert_eq!(
                (dns.fqdn.as_str(), dns.resolvers.as_str()),
                ("ams.test", "dns")
            );
            assert_eq!(dns.group, "ams");
            assert!(!dns.is_srv());
            assert!(s.params.check);
        }
        let srv = ok(
            Scope::Backend,
            &["server-template e 3 _rtmp._tcp.ams.test resolvers dns init-addr none"],
        );
        assert_eq!(srv.servers.len(), 3);
        assert!(srv.servers[0].dns.as_ref().is_some_and(|d| d.is_srv()));
    }

    #[test]
    fn init_addr_methods_are_tried_in_order() {
        let p = ok(
            Scope::Backend,
            &["server a ams.test:80 resolvers dns init-addr last,10.0.0.7"],
        );
        assert_eq!(p.servers[0].addr.to_string(), "10.0.0.7:80");
        // `libc` on a name the system cannot resolve, then `none`.
        let p = ok(
            Scope::Backend,
            &["server a ams.invalid:80 resolvers dns init-addr libc,none"],
        );
        assert!(p.servers[0].addr.ip().is_unspecified());
        // A plain server with a host name and no resolvers keeps no DNS side.
        let p = ok(Scope::Backend, &["server a localhost:80 init-addr libc"]);
        assert!(p.servers[0].dns.is_none() && !p.servers[0].addr.ip().is_unspecified());
    }

    #[test]
    fn dns_lines_that_cannot_act_are_refused() {
        let e = |line: &str| err(Scope::Backend, line);
        assert!(e("server a 10.0.0.1:80 resolvers dns").contains("need a host name"));
        assert!(e("server a 10.0.0.1:80 init-addr none").contains("need a host name"));
        assert!(e("server a 10.0.0.1:80 resolve-prefer ipv4").contains("need a host name"));
        assert!(e("server-template a 3 ams.test:80").contains("needs 'resolvers NAME'"));
        assert!(e("server-template a 3 10.0.0.1:80 resolvers dns").contains("host name"));
        assert!(e("server-template a 0 ams.test:80 resolvers dns").contains("greater than 0"));
        assert!(e("server-template a 5-2 ams.test:80 resolvers dns").contains("backwards"));
        assert!(e("server-template a 1-5000 ams.test:80 resolvers dns").contains("more than"));
        assert!(e("server a _h._tcp.ams.test:80 resolvers dns").contains("SRV name"));
        assert!(e("server a _h._tcp.ams.test").contains("needs 'resolvers NAME'"));
        assert!(e("server a ams.test resolvers dns").contains("missing port"));
        assert!(e("server a ams.invalid:80 resolvers dns init-addr libc")
            .contains("cannot resolve 'ams.invalid'"));
        assert!(e("server a ams.test:80 init-addr sometimes").contains("'init-addr' expects"));
        assert!(e("server a ams.test:80 resolve-prefer ipv5").contains("'ipv4' or 'ipv6'"));
    }

    #[test]
    fn seed_servers() {
        let p = ok(
            Scope::Backend,
            &[
                "server ams1 172.30.0.42:5080 check cookie ams1",
                "server ams2 172.30.0.48:1935",
            ],
        );
        let s1 = p.servers.first().map(|s| {
            (
                s.name.as_str(),
                s.addr.to_string(),
                s.params.check,
                s.params.cookie.clone(),
                s.loc.line,
            )
        });
        assert_eq!(
            s1,
            Some((
                "ams1",
                "172.30.0.42:5080".to_string(),
                true,
                Some("ams1".to_string()),
                1
            ))
        );
        assert_eq!(
            p.servers.get(1).map(|s| s.params.clone()),
            Some(ServerParams::default())
        );
    }

    #[test]
    fn all_params() {
        let p = ok(
            Scope::Listen,
            &["server a 10.0.0.1:80 check inter 5s fastinter 1s downinter 10s rise 1 fall 5 weight 256 backup maxconn 9 maxqueue 4 disabled port 8080 addr 10.0.0.9 send-proxy"],
        );
        let s = p
            .servers
            .first()
            .map(|s| s.params.clone())
            .unwrap_or_default();
        assert!(s.check && s.backup && s.disabled && s.send_proxy);
        assert_eq!(
            (s.inter, s.fastinter, s.downinter),
            (
                Duration::from_secs(5),
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(10))
            )
        );
        assert_eq!(
            (
                s.rise,
                s.fall,
                s.weight,
                s.maxconn,
                s.maxqueue,
                s.check_port
            ),
            (1, 5, 256, Some(9), Some(4), Some(8080))
        );
        assert_eq!(s.check_addr, "10.0.0.9".parse().ok());
    }

    #[test]
    fn default_server_applies_to_later_servers() {
        let p = ok(
            Scope::Backend,
            &[
                "server a 10.0.0.1:80",
                "default-server check inter 3s weight 10",
                "server b 10.0.0.2:80",
                "server c 10.0.0.3:80 no-check weight 0",
            ],
        );
        let params: Vec<_> = p
            .servers
            .iter()
            .map(|s| (s.params.check, s.params.inter, s.params.weight))
            .collect();
        let two = Duration::from_secs(2);
        let three = Duration::from_secs(3);
        assert_eq!(
            params,
            [(false, two, 1), (true, three, 10), (false, three, 0)]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(err(Scope::Backend, "server"), "'server' needs a name");
        assert_eq!(err(Scope::Backend, "server a"), "'server' needs an address");
        assert!(err(Scope::Backend, "server a/b 1.2.3.4:80").contains("invalid character '/'"));
        assert!(err(Scope::Backend, "server a 1.2.3.4:70000").contains("must be 1..65535"));
        assert!(err(Scope::Backend, "server a 1.2.3.4:0").contains("must be 1..65535"));
        assert!(err(Scope::Backend, "server a 1.2.3.4:80 weight 300")
            .contains("'weight' must be between 0 and 256, got 300"));
        assert_eq!(
            err(Scope::Backend, "server a 1.2.3.4:80 rise 0"),
            "'rise' must be greater than 0"
        );
        assert_eq!(
            err(Scope::Backend, "server a 1.2.3.4:80 fall 0"),
            "'fall' must be greater than 0"
        );
        assert_eq!(
            err(Scope::Backend, "server a 1.2.3.4:80 maxconn 0"),
            "'maxconn' must be greater than 0"
        );
        assert!(err(Scope::Backend, "server a 1.2.3.4:80 inter 0").contains("greater than 0"));
        assert!(err(Scope::Backend, "server a 1.2.3.4:80 inter")
            .contains("'inter' in 'server' needs a value"));
        assert!(err(Scope::Backend, "server a 1.2.3.4:80 port 0").contains("must be 1..65535"));
        assert!(err(Scope::Backend, "server a 1.2.3.4:80 ssl")
            .contains("unsupported server option 'ssl'"));
        assert!(
            err(Scope::Backend, "server a 1.2.3.4:80 check check-alpn h2")
                .contains("'check-alpn' is not supported")
        );
        assert!(
            err(Scope::Backend, "server a 1.2.3.4:80 check check-proto h2")
                .contains("'check-proto' is not supported")
        );
        assert!(err(Scope::Backend, "server a 1.2.3.4:80 addr 10.0.0.1:80")
            .contains("'addr' takes an address without a port"));
        assert!(err(Scope::Backend, "server a 1.2.3.4:80 addr 0.0.0.0").contains("wildcard"));
        assert!(err(Scope::Backend, "default-server frob")
            .contains("unsupported default-server option 'frob'"));
    }

    #[test]
    fn proxy_protocol_words() {
        let p = ok(
            Scope::Backend,
            &[
                "default-server send-proxy-v2 proxy-v2-options crc32c",
                "server a 10.0.0.1:80",
                "server b 10.0.0.2:80 no-send-proxy-v2 send-proxy check-send-proxy port 81",
                "server c 10.0.0.3:80 no-send-proxy-v2 check-send-proxy",
                "server d 10.0.0.4:80 no-send-proxy-v2 send-proxy port 81",
            ],
        );
        let v = |i: usize| {
            p.servers
                .get(i)
                .map(|s| (s.params.proxy_version(), s.params.check_proxy_version()))
        };
        use crate::config::ProxyVersion::{V1, V2};
        assert_eq!(v(0), Some((Some(V2), Some(V2))));
        assert!(p.servers.first().is_some_and(|s| s.params.proxy_v2_crc32c));
        assert_eq!(
            v(1),
            Some((Some(V1), Some(V1))),
            "check-send-proxy beats port"
        );
        assert_eq!(v(2), Some((None, Some(V1))), "checks only");
        assert_eq!(
            v(3),
            Some((Some(V1), None)),
            "port moves checks off the header"
        );
    }

    #[test]
    fn proxy_protocol_errors() {
        assert!(err(
            Scope::Backend,
            "server a 1.2.3.4:80 send-proxy-v2 proxy-v2-options"
        )
        .contains("'proxy-v2-options' in 'server' needs a value"));
        assert_eq!(
            err(
                Scope::Backend,
                "server a 1.2.3.4:80 send-proxy-v2 proxy-v2-options crc32c,ssl"
            ),
            "proxy-v2-options 'ssl' is not supported (supported: crc32c)"
        );
        assert!(err(
            Scope::Backend,
            "server a 1.2.3.4:80 send-proxy-v2 proxy-v2-options crc"
        )
        .contains("unknown proxy-v2-options 'crc'"));
        assert!(err(
            Scope::Backend,
            "server a 1.2.3.4:80 send-proxy-v2 proxy-v2-options crc32c,"
        )
        .contains("unknown proxy-v2-options ''"));
        assert_eq!(
            err(
                Scope::Backend,
                "server a 1.2.3.4:80 proxy-v2-options crc32c"
            ),
            "'proxy-v2-options' needs 'send-proxy-v2'"
        );
    }

    #[test]
    fn check_ssl_words() {
        let p = ok(
            Scope::Backend,
            &[
                "server a 10.0.0.1:443 check check-ssl verify none check-sni site.test",
                "default-server check-ssl verify none",
                "server b 10.0.0.2:443 check",
                "server c 10.0.0.3:80 check no-check-ssl verify required",
            ],
        );
        let v: Vec<_> = p
            .servers
            .iter()
            .map(|s| {
                let p = &s.params;
                (p.check_ssl, p.check_sni.as_deref(), p.verify_none)
            })
            .collect();
        assert_eq!(
            v,
            [
                (true, Some("site.test"), true),
                (true, None, true),
                (false, None, false)
            ]
        );
    }

    #[test]
    fn check_ssl_errors() {
        let no_verify = "'check-ssl' needs 'verify none': verifying the server's certificate \
                         ('verify required') needs 'ca-file', which is not supported";
        assert_eq!(
            err(Scope::Backend, "server a 1.2.3.4:443 check check-ssl"),
            no_verify
        );
        assert_eq!(
            err(
                Scope::Backend,
                "server a 1.2.3.4:443 check check-ssl verify required"
            ),
            no_verify
        );
        assert!(err(
            Scope::Backend,
            "server a 1.2.3.4:443 check-ssl verify maybe"
        )
        .contains("'verify' expects 'none' or 'required', got 'maybe'"));
        assert!(err(Scope::Backend, "server a 1.2.3.4:443 check-sni")
            .contains("'check-sni' in 'server' needs a value"));
        assert!(
            err(Scope::Backend, "server a 1.2.3.4:443 check-sni bad_name!")
                .contains("'check-sni' needs a DNS name, got 'bad_name!'")
        );
    }

    #[test]
    fn check_ssl_refusals_name_their_line() {
        // A `default-server check-ssl` alone is fine; each server line that inherits it
        // without `verify none` is refused at its own line.
        let cfg = "backend b\n    default-server check-ssl\n    server a 10.0.0.1:443 check \
                   verify none\n    server c 10.0.0.2:443 check\n";
        let errors = crate::config::parse_str(cfg, std::path::Path::new("t.cfg"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            errors.contains("t.cfg:4") && errors.contains("'check-ssl' needs 'verify none'"),
            "{errors}"
        );
        assert!(!errors.contains("t.cfg:3"), "{errors}");
    }

    #[test]
    fn a_bad_default_server_changes_nothing() {
        let (draft, errors) =
            crate::config::proxy::tests::run(Scope::Backend, &["default-server check weight 300"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(draft.proxy.default_server, ServerParams::default());
    }
}

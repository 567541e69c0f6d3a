//! The `resolvers` section (HAProxy's configuration manual, 5.3.2): the DNS servers asked for
//! the servers' names at run time, and how long answers stand.

use std::net::{IpAddr, SocketAddr};

use super::addr::parse_nameserver_addr;
use super::args::Args;
use super::model::{DnsTransport, IpFamily, Nameserver, Resolvers};
use super::num::{parse_in_range, parse_positive};
use super::time::parse_duration;

/// Where `parse-resolv-conf` reads the system's nameservers.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Applies one line of a `resolvers` section.
pub(crate) fn directive(r: &mut Resolvers, words: &[String]) -> Result<(), String> {
    let Some((keyword, rest)) = words.split_first() else {
        return Ok(());
    };
    let mut args = Args::new(keyword, rest);
    match keyword.as_str() {
        "nameserver" => nameserver(r, &mut args)?,
        "parse-resolv-conf" => {
            let text = std::fs::read_to_string(RESOLV_CONF)
                .map_err(|e| format!("'parse-resolv-conf': cannot read {RESOLV_CONF}: {e}"))?;
            r.nameservers.extend(resolv_conf(&text));
        }
        "hold" => hold(r, &mut args)?,
        "timeout" => {
            let which = args.need("'resolve' or 'retry'")?;
            let value = parse_duration(args.need("a time")?, "timeout")?;
            if value.is_zero() {
                return Err(format!("'timeout {which}' must be more than 0"));
            }
            match which {
                "resolve" => r.resolve = value,
                "retry" => r.retry = value,
                other => {
                    return Err(format!(
                        "unknown 'timeout {other}' in a resolvers section (expected 'resolve' or \
                         'retry')"
                    ))
                }
            }
        }
        "resolve_retries" => r.retries = parse_positive(args.need("a number")?, keyword)?,
        "accepted_payload_size" => {
            // RFC 6891's floor (512, the pre-EDNS size) to the largest UDP payload.
            r.payload_size = parse_in_range(args.need("a size in bytes")?, keyword, 512, 65535)?
        }
        other => {
            return Err(format!(
                "unsupported keyword '{other}' in a resolvers section (supported: nameserver, \
                 parse-resolv-conf, hold, timeout resolve|retry, resolve_retries, \
                 accepted_payload_size)"
            ))
        }
    }
    args.end()
}

fn nameserver(r: &mut Resolvers, args: &mut Args<'_>) -> Result<(), String> {
    let name = args.need("a name")?;
    let (transport, addr) = nameserver_addr(args.need("an address")?)?;
    if r.nameservers.iter().any(|n| n.name == name) {
        return Err(format!(
            "resolvers '{}' already has a nameserver named '{name}'",
            r.name
        ));
    }
    r.nameservers.push(Nameserver {
        name: name.to_string(),
        addr,
        transport,
    });
    Ok(())
}

/// The address prefixes HAProxy takes on a `nameserver` (its manual, 11. Address formats):
/// a datagram one (the default) means UDP, a stream one TCP; a `4`/`6` names the family.
const PREFIXES: [(&str, DnsTransport, Option<IpFamily>); 8] = [
    ("udp@", DnsTransport::Udp, None),
    ("udp4@", DnsTransport::Udp, Some(IpFamily::V4)),
    ("udp6@", DnsTransport::Udp, Some(IpFamily::V6)),
    ("ipv4@", DnsTransport::Udp, Some(IpFamily::V4)),
    ("ipv6@", DnsTransport::Udp, Some(IpFamily::V6)),
    ("tcp@", DnsTransport::Tcp, None),
    ("tcp4@", DnsTransport::Tcp, Some(IpFamily::V4)),
    ("tcp6@", DnsTransport::Tcp, Some(IpFamily::V6)),
];

/// `[PREFIX@]IP:PORT`: how the nameserver is asked, and where.
fn nameserver_addr(text: &str) -> Result<(DnsTransport, SocketAddr), String> {
    let Some((prefix, rest)) = text.split_once('@') else {
        return Ok((DnsTransport::Udp, parse_nameserver_addr(text)?));
    };
    let (_, transport, family) = PREFIXES
        .iter()
        .find(|(p, _, _)| p.strip_suffix('@') == Some(prefix))
        .ok_or_else(|| {
            format!(
                "unsupported nameserver address prefix '{prefix}@' in '{text}' (supported: \
                 udp@, tcp@, udp4@, udp6@, tcp4@, tcp6@, ipv4@, ipv6@)"
            )
        })?;
    let addr = parse_nameserver_addr(rest)?;
    let fits = match family {
        None => true,
        Some(IpFamily::V4) => addr.is_ipv4(),
        Some(IpFamily::V6) => addr.is_ipv6(),
    };
    if !fits {
        return Err(format!(
            "nameserver address '{text}' does not match its family prefix"
        ));
    }
    Ok((*transport, addr))
}

fn hold(r: &mut Resolvers, args: &mut Args<'_>) -> Result<(), String> {
    let status = args.need("a status")?;
    let period = parse_duration(args.need("a time")?, "hold")?;
    let h = &mut r.hold;
    let slot = match status {
        "valid" => &mut h.valid,
        "obsolete" => &mut h.obsolete,
        "nx" => &mut h.nx,
        "timeout" => &mut h.timeout,
        "refused" => &mut h.refused,
        "other" => &mut h.other,
        other => {
            return Err(format!(
                "unknown status '{other}' for 'hold' (expected valid, obsolete, nx, timeout, \
                 refused or other)"
            ))
        }
    };
    *slot = period;
    Ok(())
}

/// The `nameserver IP` lines of a resolv.conf text, port 53, named as HAProxy names them
/// (`resolvconf1`, …); other lines and unparsable addresses are skipped, as the C library does.
pub(crate) fn resolv_conf(text: &str) -> Vec<Nameserver> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            words.next()?.parse::<IpAddr>().ok()
        })
        .enumerate()
        .map(|(i, ip)| Nameserver {
            name: format!("resolvconf{}", i + 1),
            addr: SocketAddr::new(ip, 53),
            transport: DnsTransport::Udp,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Loc;
    use std::time::Duration;

    fn apply(lines: &[&str]) -> Result<Resolvers, String> {
        let mut r = Resolvers::new("dns", Loc::default());
        for line in lines {
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            directive(&mut r, &words)?;
        }
        Ok(r)
    }

    #[test]
    fn every_keyword_sets_its_value() {
        let r = apply(&[
            "nameserver a 127.0.0.53:5353",
            "nameserver b [::1]:53",
            "hold valid 5s",
            "hold obsolete 2s",
            "hold nx 1s",
            "hold timeout 3s",
            "hold refused 4s",
            "hold other 6s",
            "timeout resolve 250ms",
            "timeout retry 300ms",
            "resolve_retries 5",
            "accepted_payload_size 8192",
        ])
        .expect("valid");
        let addrs: Vec<String> = r.nameservers.iter().map(|n| n.addr.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.53:5353", "[::1]:53"]);
        let s = Duration::from_secs;
        assert_eq!(
            (r.hold.valid, r.hold.obsolete, r.hold.nx),
            (s(5), s(2), s(1))
        );
        assert_eq!(
            (r.hold.timeout, r.hold.refused, r.hold.other),
            (s(3), s(4), s(6))
        );
        assert_eq!(r.resolve, Duration::from_millis(250));
        assert_eq!(r.retry, Duration::from_millis(300));
        assert_eq!((r.retries, r.payload_size), (5, 8192));
    }

    #[test]
    fn bad_lines_are_refused() {
        let refused = |line: &str| apply(&[line]).expect_err(line);
        assert!(refused("nameserver a 127.0.0.1").contains("port"));
        assert!(refused("nameserver a dns.example:53").contains("IP address"));
        assert!(refused("hold forever 1s").contains("unknown status"));
        assert!(refused("timeout query 1s").contains("unknown 'timeout query'"));
        assert!(refused("timeout retry 0s").contains("more than 0"));
        assert!(refused("accepted_payload_size 100").contains("accepted_payload_size"));
        assert!(refused("resolve_retries 0").contains("resolve_retries"));
        assert!(refused("nameserver a 127.0.0.1:53 extra").contains("unexpected"));
        assert!(refused("frob 1").contains("unsupported keyword 'frob'"));
        let twice = apply(&["nameserver a 127.0.0.1:53", "nameserver a 127.0.0.2:53"]);
        assert!(twice.expect_err("dup").contains("already has"));
    }

    #[test]
    fn address_prefixes_choose_udp_or_tcp() {
        let r = apply(&[
            "nameserver plain 127.0.0.1:53",
            "nameserver u udp@127.0.0.2:53",
            "nameserver t tcp@127.0.0.3:5353",
            "nameserver t6 tcp6@[::1]:53",
            "nameserver u4 ipv4@127.0.0.4:53",
        ])
        .expect("valid");
        let got: Vec<(String, DnsTransport)> = r
            .nameservers
            .iter()
            .map(|n| (n.addr.to_string(), n.transport))
            .collect();
        let want = [
            ("127.0.0.1:53", DnsTransport::Udp),
            ("127.0.0.2:53", DnsTransport::Udp),
            ("127.0.0.3:5353", DnsTransport::Tcp),
            ("[::1]:53", DnsTransport::Tcp),
            ("127.0.0.4:53", DnsTransport::Udp),
        ]
        .map(|(a, t)| (a.to_string(), t));
        assert_eq!(got, want);

        let refused = |line: &str| apply(&[line]).expect_err(line);
        assert!(refused("nameserver a unix@/run/dns.sock").contains("unsupported"));
        assert!(refused("nameserver a quic4@127.0.0.1:53").contains("'quic4@'"));
        assert!(refused("nameserver a tcp4@[::1]:53").contains("family prefix"));
        assert!(refused("nameserver a tcp@127.0.0.1").contains("port"));
        assert!(refused("nameserver a tcp@dns.example:53").contains("IP address"));
        assert!(refused("nameserver a tcp@127.0.0.1:53 maxconn 4").contains("unexpected"));
    }

    #[test]
    fn resolv_conf_lines_become_nameservers() {
        let text =
            "# comment\nsearch example\nnameserver 10.0.0.2\nnameserver ::1\nnameserver bad\n";
        let got = resolv_conf(text);
        let names: Vec<(&str, String)> = got
            .iter()
            .map(|n| (n.name.as_str(), n.addr.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("resolvconf1", "10.0.0.2:53".to_string()),
                ("resolvconf2", "[::1]:53".to_string())
            ]
        );
    }
}

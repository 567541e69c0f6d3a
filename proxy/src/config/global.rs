//! Directives of the `global` section, and the `log` line shared with proxies.

use std::path::PathBuf;

use super::addr::parse_log_dest;
use super::args::Args;
use super::keywords;
use super::model::{ApiLevel, Global, Loc, LogFormat, LogTarget, StatsSocket};
use super::num::{parse_positive, parse_uint};
use super::time::{parse_duration, parse_nonzero_duration};

const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

const LEVELS: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Applies one `global` line. `crt_base` is updated by `crt-base` for later `bind … crt`.
pub(crate) fn directive(
    global: &mut Global,
    crt_base: &mut Option<PathBuf>,
    words: &[String],
    loc: &Loc,
) -> Result<(), String> {
    let Some((keyword, rest)) = words.split_first() else {
        return Ok(());
    };
    let mut args = Args::new(keyword, rest);
    match keyword.as_str() {
        "log" => global.logs.push(log_target(&mut args, loc)?),
        "maxconn" => global.maxconn = Some(parse_positive(args.need("a number")?, keyword)?),
        "nbthread" => global.nbthread = Some(parse_positive(args.need("a number")?, keyword)?),
        "user" => global.user = Some(args.need("a user name")?.to_string()),
        "group" => {
            global.group = Some(args.need("a group name")?.to_string());
            global.group_loc = Some(loc.clone());
        }
        "daemon" => {
            return Err(
                "'daemon' is not supported: the proxy stays in the foreground under its \
                 service manager (systemd), which does what 'daemon' did; remove the line"
                    .to_string(),
            )
        }
        "hard-stop-after" => {
            global.hard_stop_after = Some(parse_duration(args.need("a time")?, keyword)?)
        }
        "tune.bufsize" => global.bufsize = Some(bufsize(args.need("a size in bytes")?)?),
        "tune.sockmap.budget" => {
            global.sockmap_budget = Some(parse_size(args.need("a size")?, keyword)?)
        }
        "tune.ssl.ktls" => global.ssl_ktls = Some(on_off(args.need("'on' or 'off'")?, keyword)?),
        "crt-base" => {
            let dir = PathBuf::from(args.need("a directory")?);
            global.crt_base = Some(dir.clone());
            *crt_base = Some(dir);
        }
        "chroot" => global.chroot = Some(PathBuf::from(args.need("a directory")?)),
        "pidfile" => global.pidfile = Some(PathBuf::from(args.need("a file name")?)),
        "ulimit-n" => global.ulimit_n = Some(parse_positive(args.need("a number")?, keyword)?),
        "log-tag" => global.log_tag = Some(args.need("a tag")?.to_string()),
        "node" => global.node = Some(args.need("a name")?.to_string()),
        "description" => {
            args.need("a text")?;
            global.description = Some(words[1..].join(" "));
            args.rest();
        }
        "ssl-default-bind-ciphers" => {
            global.ssl_bind_defaults.ciphers = Some(colon_list(args.need("a cipher list")?))
        }
        "ssl-default-bind-ciphersuites" => {
            global.ssl_bind_defaults.ciphersuites =
                Some(colon_list(args.need("a ciphersuite list")?))
        }
        "ssl-default-bind-options" => {
            args.need("options")?;
            ssl_options(&mut global.ssl_bind_defaults, &words[1..])?;
            args.rest();
        }
        "nbproc" => {
            let n: u32 = parse_uint(args.need("a number")?, keyword)?;
            if n != 1 {
                return Err(format!(
                    "'nbproc {n}' is not supported: only one process (use 'nbthread')"
                ));
            }
        }
        "ca-base" => {
            return Err(
                "'ca-base' is not supported: no directive of this proxy reads CA files \
                 ('ca-file' is not supported); remove the line"
                    .to_string(),
            )
        }
        "tune.ssl.default-dh-param" => {
            return Err(
                "'tune.ssl.default-dh-param' is not supported: rustls offers no DHE suites, \
                 only ECDHE (forward secrecy without DH parameters); remove the line"
                    .to_string(),
            )
        }
        "stats" => {
            stats(global, &mut args, loc)?;
            args.rest();
        }
        other if other == "option" || other == "timeout" || keywords::is_proxy_keyword(other) => {
            return Err(format!("'{other}' is not allowed in a global section"));
        }
        other => return Err(format!("unknown keyword '{other}' in 'global' section")),
    }
    args.end()
}

/// `stats socket PATH [mode OCTAL] [level user|operator|admin]`, `stats timeout T`,
/// `stats maxconn N`: the runtime API (the `api` room serves it).
fn stats(global: &mut Global, args: &mut Args<'_>, loc: &Loc) -> Result<(), String> {
    match args.need("'socket', 'timeout' or 'maxconn'")? {
        "socket" => {
            let socket = stats_socket(args, loc)?;
            if global.stats_sockets.iter().any(|s| s.path == socket.path) {
                return Err(format!(
                    "'stats socket {}' is declared twice",
                    socket.path.display()
                ));
            }
            global.stats_sockets.push(socket);
        }
        "timeout" => {
            global.stats_timeout = Some(parse_nonzero_duration(
                args.need("a time")?,
                "stats timeout",
            )?)
        }
        "maxconn" => {
            global.stats_maxconn = Some(parse_positive(args.need("a number")?, "stats maxconn")?)
        }
        other => {
            return Err(format!(
                "'stats {other}' is not allowed in a global section (supported: 'stats \
                 socket', 'stats timeout', 'stats maxconn'; the stats page is 'stats enable' in \
                 a listen or frontend section)"
            ))
        }
    }
    args.end()
}

fn stats_socket(args: &mut Args<'_>, loc: &Loc) -> Result<StatsSocket, String> {
    let path = args.need("a path")?;
    if path.contains('@') || path.contains(':') && !path.starts_with('/') {
        return Err(format!(
            "'stats socket {path}': only UNIX socket paths are supported (an address would \
             expose the runtime API to the network)"
        ));
    }
    let mut socket = StatsSocket {
        path: PathBuf::from(path),
        mode: None,
        level: ApiLevel::default(),
        expose_fd: false,
        loc: loc.clone(),
    };
    while let Some(word) = args.next() {
        match word {
            "mode" => {
                let text = args.value_of(word)?;
                let mode = u32::from_str_radix(text, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| format!("'mode' expects octal permissions, got '{text}'"))?;
                socket.mode = Some(mode);
            }
            "level" => {
                socket.level = match args.value_of(word)? {
                    "user" => ApiLevel::User,
                    "operator" => ApiLevel::Operator,
                    "admin" => ApiLevel::Admin,
                    other => {
                        return Err(format!(
                            "'level' expects 'user', 'operator' or 'admin', got '{other}'"
                        ))
                    }
                }
            }
            "expose-fd" => match args.value_of(word)? {
                "listeners" => socket.expose_fd = true,
                other => return Err(format!("'expose-fd' expects 'listeners', got '{other}'")),
            },
            other => {
                return Err(format!(
                    "unsupported stats socket option '{other}' (supported: mode, level, \
                     expose-fd)"
                ))
            }
        }
    }
    Ok(socket)
}

/// Smallest `tune.sockmap.budget`: the engine parks a direction at half its budget, and below
/// one loopback packet (64 KiB) it would park on every packet.
const MIN_SOCKMAP_BUDGET: u64 = 64 * 1024;
/// Largest `tune.sockmap.budget`: a bound on kernel memory per direction, not a way to lift it.
const MAX_SOCKMAP_BUDGET: u64 = 1 << 30;

/// A size as HAProxy writes them: decimal digits with an optional `k`, `m` or `g` suffix
/// (powers of 1024, either case), within the sockmap budget's range.
fn parse_size(text: &str, keyword: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => {
            return Err(format!(
                "invalid size '{text}' for '{keyword}': expected digits with an optional k, m or g"
            ))
        }
    };
    let n: u64 = parse_uint(digits, keyword).map_err(|_| {
        format!("invalid size '{text}' for '{keyword}': expected digits with an optional k, m or g")
    })?;
    let bytes = n
        .checked_mul(1 << shift)
        .filter(|b| (MIN_SOCKMAP_BUDGET..=MAX_SOCKMAP_BUDGET).contains(b));
    bytes.ok_or_else(|| format!("'{keyword}' must be between 64k and 1g, got {text}"))
}

/// Every direction of every flow may hold one buffer of this size: bounded so that a typo
/// cannot make each idle connection cost megabytes.
const BUFSIZE_RANGE: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024;

fn bufsize(text: &str) -> Result<usize, String> {
    let n: usize = parse_positive(text, "tune.bufsize")?;
    if !BUFSIZE_RANGE.contains(&n) {
        return Err(format!(
            "'tune.bufsize' must be between {} and {} bytes, got {n}",
            BUFSIZE_RANGE.start(),
            BUFSIZE_RANGE.end()
        ));
    }
    Ok(n)
}

fn on_off(word: &str, keyword: &str) -> Result<bool, String> {
    match word {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("'{keyword}' expects 'on' or 'off', got '{other}'")),
    }
}

fn colon_list(text: &str) -> Vec<String> {
    text.split(':')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// `ssl-default-bind-options` (HAProxy's bind `ssl` options): versions bounds and suite order.
/// Options that state what rustls always does (`no-sslv3`, `no-tlsv10`, `no-tlsv11`: never
/// offered; `no-tls-tickets`: no TLS 1.2 ticket key is configured) are accepted as the facts
/// they are; the rest is refused.
fn ssl_options(ssl: &mut crate::config::SslBind, words: &[String]) -> Result<(), String> {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "ssl-min-ver" | "ssl-max-ver" => {
                let v = it.next().ok_or_else(|| format!("'{w}' needs a version"))?;
                let v = super::bind::tls_version(v)?;
                if w == "ssl-min-ver" {
                    ssl.min_ver = Some(v);
                } else {
                    ssl.max_ver = Some(v);
                }
            }
            "no-sslv3" | "no-tlsv10" | "no-tlsv11" | "no-tls-tickets" => {}
            "no-tlsv12" | "force-tlsv13" => ssl.min_ver = Some("TLSv1.3".into()),
            "no-tlsv13" | "force-tlsv12" => ssl.max_ver = Some("TLSv1.2".into()),
            "prefer-client-ciphers" => ssl.prefer_client_ciphers = true,
            other => {
                return Err(format!(
                    "unsupported ssl option '{other}' (supported: ssl-min-ver, ssl-max-ver, \
                     no-sslv3, no-tlsv10, no-tlsv11, no-tlsv12, no-tlsv13, force-tlsv12, \
                     force-tlsv13, no-tls-tickets, prefer-client-ciphers)"
                ))
            }
        }
    }
    Ok(())
}

/// `log ADDR [len N] [format F] FACILITY [LEVEL [MINLEVEL]]` (global or proxy; `log global`
/// is the proxy's).
pub(crate) fn log_target(args: &mut Args<'_>, loc: &Loc) -> Result<LogTarget, String> {
    let dest = parse_log_dest(args.need("an address")?)?;
    let mut format = LogFormat::Rfc3164;
    let mut len = 1024;
    let facility = loop {
        match args.need("a facility")? {
            "len" => len = log_len(args.need("a length")?)?,
            "format" => format = log_format(args.need("a format")?)?,
            "sample" => return Err("log option 'sample' is not supported".to_string()),
            other => break other,
        }
    };
    if !FACILITIES.contains(&facility) {
        return Err(format!("unknown log facility '{facility}'"));
    }
    let level = args.next().map(check_level).transpose()?;
    let minlevel = args.next().map(check_level).transpose()?;
    args.end()?;
    Ok(LogTarget {
        dest,
        facility: facility.to_string(),
        level,
        minlevel,
        format,
        len,
        loc: loc.clone(),
    })
}

/// HAProxy accepts 80..=65535 bytes; shorter could not hold a syslog header and a log line.
fn log_len(word: &str) -> Result<usize, String> {
    match word.parse::<usize>() {
        Ok(n) if (80..=65535).contains(&n) => Ok(n),
        _ => Err(format!(
            "log length '{word}' must be a number from 80 to 65535"
        )),
    }
}

fn log_format(word: &str) -> Result<LogFormat, String> {
    match word {
        "rfc3164" => Ok(LogFormat::Rfc3164),
        "rfc5424" => Ok(LogFormat::Rfc5424),
        "raw" => Ok(LogFormat::Raw),
        other => Err(format!(
            "unsupported log format '{other}' (supported: rfc3164, rfc5424, raw)"
        )),
    }
}

fn check_level(level: &str) -> Result<String, String> {
    if LEVELS.contains(&level) {
        Ok(level.to_string())
    } else {
        Err(format!(
            "unknown log level '{level}' (expected one of: {})",
            LEVELS.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::LogDest;
    use std::time::Duration;

    fn apply(lines: &[&str]) -> (Global, Option<PathBuf>, Vec<String>) {
        let mut global = Global::default();
        let mut crt_base = None;
        let mut errors = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            let loc = Loc {
                file: "g.cfg".into(),
                line: i + 1,
            };
            if let Err(e) = directive(&mut global, &mut crt_base, &words, &loc) {
                errors.push(e);
            }
        }
        (global, crt_base, errors)
    }

    fn error(line: &str) -> String {
        apply(&[line])
            .2
            .pop()
            .unwrap_or_else(|| panic!("no error for {line}"))
    }

    #[test]
    fn stats_sockets_several_with_levels() {
        let (g, _, errors) = apply(&[
            "stats socket /run/a.sock mode 660 level admin expose-fd listeners",
            "stats socket /run/b.sock level user",
            "stats socket /run/c.sock",
            "stats socket /run/c.sock",
            "stats timeout 30s",
            "stats maxconn 4",
        ]);
        assert_eq!(errors, ["'stats socket /run/c.sock' is declared twice"]);
        let seen: Vec<_> = g
            .stats_sockets
            .iter()
            .map(|s| (s.path.to_str().unwrap_or(""), s.mode, s.level, s.loc.line))
            .collect();
        assert_eq!(
            seen,
            [
                ("/run/a.sock", Some(0o660), ApiLevel::Admin, 1),
                ("/run/b.sock", None, ApiLevel::User, 2),
                ("/run/c.sock", None, ApiLevel::Operator, 3),
            ]
        );
        assert!(g.stats_sockets[0].expose_fd && !g.stats_sockets[1].expose_fd);
        assert_eq!(g.stats_timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(g.stats_maxconn, Some(4));
    }

    #[test]
    fn sockmap_budget_sizes() {
        for (text, bytes) in [
            ("4m", 4 << 20),
            ("512k", 512 << 10),
            ("512K", 512 << 10),
            ("1g", 1 << 30),
            ("65536", 65536),
        ] {
            let (g, _, e) = apply(&[&format!("tune.sockmap.budget {text}")]);
            assert!(e.is_empty(), "{text}: {e:?}");
            assert_eq!(g.sockmap_budget, Some(bytes), "{text}");
        }
        assert_eq!(Global::default().sockmap_budget, None);
        for bad in ["4x", "m", "-4m", "4.5m", "4mb"] {
            let e = error(&format!("tune.sockmap.budget {bad}"));
            assert!(e.contains("invalid size"), "{bad}: {e}");
        }
        for out in ["32k", "0", "2g", "99999999999999999g"] {
            let e = error(&format!("tune.sockmap.budget {out}"));
            assert!(e.contains("between 64k and 1g"), "{out}: {e}");
        }
        assert!(error("tune.sockmap.budget").contains("a size"));
    }

    #[test]
    fn sockmap_budget_error_names_file_and_line() {
        let text = "global\n    nbthread 2\n    tune.sockmap.budget 4q\n";
        let errors = crate::config::parse_str(text, std::path::Path::new("/etc/p.cfg"))
            .map(|_| ())
            .expect_err("a bad size");
        let shown = errors.to_string();
        assert!(
            shown.starts_with("/etc/p.cfg:3: invalid size '4q' for 'tune.sockmap.budget'"),
            "{shown}"
        );
    }

    #[test]
    fn ssl_ktls_switch() {
        assert!(Global::default().ktls_allowed());
        let (g, _, e) = apply(&["tune.ssl.ktls off"]);
        assert!(e.is_empty(), "{e:?}");
        assert!(!g.ktls_allowed());
        let (g, _, e) = apply(&["tune.ssl.ktls on"]);
        assert!(e.is_empty() && g.ktls_allowed(), "{e:?}");
        assert!(error("tune.ssl.ktls maybe").contains("expects 'on' or 'off'"));
        assert!(error("tune.ssl.ktls").contains("'on' or 'off'"));
    }

    #[test]
    fn seed_global() {
        let (g, _, e) = apply(&[
            "log 127.0.0.1 local0 notice",
            "maxconn 2000",
            "user haproxy",
            "group haproxy",
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(g.maxconn, Some(2000));
        assert_eq!(g.user.as_deref(), Some("haproxy"));
        assert_eq!(g.group.as_deref(), Some("haproxy"));
        let log = g
            .logs
            .first()
            .map(|l| (&l.dest, l.facility.as_str(), l.level.as_deref(), l.loc.line));
        let dest = LogDest::Udp("127.0.0.1:514".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(log, Some((&dest, "local0", Some("notice"), 1)));
    }

    #[test]
    fn typed_values() {
        let (g, base, e) = apply(&[
            "nbthread 4",
            "hard-stop-after 30s",
            "tune.bufsize 32768",
            "log /dev/log daemon info err",
            "log stderr local1",
            "crt-base /etc/ssl",
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(g.nbthread, Some(4));
        assert_eq!(g.hard_stop_after, Some(Duration::from_secs(30)));
        assert_eq!(g.bufsize, Some(32768));
        assert_eq!(
            g.logs.first().and_then(|l| l.minlevel.as_deref()),
            Some("err")
        );
        assert_eq!(g.logs.get(1).map(|l| &l.dest), Some(&LogDest::Stderr));
        assert_eq!(base, Some(PathBuf::from("/etc/ssl")));
    }

    #[test]
    fn every_accepted_line_sets_a_field() {
        let (g, _, e) = apply(&[
            "chroot /var/lib/haproxy",
            "pidfile /run/haproxy.pid",
            "ssl-default-bind-ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305",
            "ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256",
            "ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets prefer-client-ciphers",
            "nbproc 1",
            "ulimit-n 65536",
            "node lb1",
            "description the AMS balancer",
            "log-tag amsproxy",
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(g.chroot, Some(PathBuf::from("/var/lib/haproxy")));
        assert_eq!(g.pidfile, Some(PathBuf::from("/run/haproxy.pid")));
        let ssl = &g.ssl_bind_defaults;
        assert_eq!(
            ssl.ciphers.as_deref(),
            Some(
                &[
                    "ECDHE-RSA-AES128-GCM-SHA256".to_string(),
                    "ECDHE-RSA-CHACHA20-POLY1305".to_string()
                ][..]
            )
        );
        assert_eq!(
            ssl.ciphersuites.as_deref(),
            Some(&["TLS_AES_128_GCM_SHA256".to_string()][..])
        );
        assert_eq!(ssl.min_ver.as_deref(), Some("TLSv1.2"));
        assert!(ssl.prefer_client_ciphers);
        assert_eq!(g.ulimit_n, Some(65536));
        assert_eq!(g.node.as_deref(), Some("lb1"));
        assert_eq!(g.description.as_deref(), Some("the AMS balancer"));
        assert_eq!(g.log_tag.as_deref(), Some("amsproxy"));
    }

    #[test]
    fn lines_that_would_do_nothing_are_refused() {
        for (line, says) in [
            ("daemon", "service manager"),
            (
                "ca-base /etc/ssl/certs",
                "no directive of this proxy reads CA files",
            ),
            ("tune.ssl.default-dh-param 2048", "no DHE suites"),
            (
                "stats socket /x expose-fd all",
                "'expose-fd' expects 'listeners'",
            ),
            ("stats socket 127.0.0.1:9999", "only UNIX socket paths"),
            ("stats socket /x level root", "'level' expects"),
            ("stats socket /x mode 999", "octal"),
            (
                "stats socket /x frob",
                "unsupported stats socket option 'frob'",
            ),
            (
                "stats enable",
                "'stats enable' is not allowed in a global section",
            ),
            (
                "ssl-default-bind-options no-tls-frobs",
                "unsupported ssl option 'no-tls-frobs'",
            ),
            (
                "ssl-default-bind-options ssl-min-ver TLSv9",
                "unknown TLS version 'TLSv9'",
            ),
        ] {
            assert!(error(line).contains(says), "{line}: {}", error(line));
        }
    }

    #[test]
    fn errors() {
        assert_eq!(error("maxconn 0"), "'maxconn' must be greater than 0");
        assert!(error("maxconn 2k").contains("invalid number '2k'"));
        assert_eq!(error("nbthread 0"), "'nbthread' must be greater than 0");
        assert!(error("nbproc 2").contains("not supported"));
        assert_eq!(error("user"), "'user' needs a user name");
        assert_eq!(error("user a b"), "unexpected argument 'b' to 'user'");
        assert!(error("hard-stop-after 5x").contains("invalid time"));
        assert_eq!(
            error("bind :80"),
            "'bind' is not allowed in a global section"
        );
        assert_eq!(
            error("timeout client 5s"),
            "'timeout' is not allowed in a global section"
        );
        assert_eq!(
            error("frobnicate"),
            "unknown keyword 'frobnicate' in 'global' section"
        );
        assert_eq!(
            error("log 127.0.0.1 local9"),
            "unknown log facility 'local9'"
        );
        assert!(error("log 127.0.0.1 local0 loud").contains("unknown log level 'loud'"));
        assert!(error("log 127.0.0.1 sample 1:2 local0").contains("not supported"));
        assert!(error("log 127.0.0.1 len 10 local0").contains("from 80 to 65535"));
        assert!(error("log 127.0.0.1 format short local0").contains("unsupported log format"));
        assert_eq!(error("log 127.0.0.1"), "'log' needs a facility");
        assert!(
            error("log 127.0.0.1 local0 info err debug").contains("unexpected argument 'debug'")
        );
    }
}

//! Which proxy keyword is allowed in which kind of section, after HAProxy's keyword matrix
//! (configuration manual, section 4.1).
//!
//! Where HAProxy only warns that a keyword is ignored in a section (`maxconn` in a backend,
//! `timeout client` in a backend, `default_backend` in a backend…), we refuse it: a directive
//! that silently does nothing hides a mistake, and the fix is always to delete or move a line.

use std::fmt;

use super::model::ProxyKind;

/// The kinds of section a proxy keyword can appear in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Defaults,
    Frontend,
    Listen,
    Backend,
    /// `udp-lb`: HAProxy Enterprise's UDP section.
    UdpLb,
}

impl Scope {
    pub(crate) fn of(kind: ProxyKind) -> Scope {
        match kind {
            ProxyKind::Frontend => Scope::Frontend,
            ProxyKind::Backend => Scope::Backend,
            ProxyKind::Listen => Scope::Listen,
            ProxyKind::UdpLb => Scope::UdpLb,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Defaults => D,
            Scope::Frontend => F,
            Scope::Listen => L,
            Scope::Backend => B,
            Scope::UdpLb => U,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Defaults => "defaults",
            Scope::Frontend => "frontend",
            Scope::Listen => "listen",
            Scope::Backend => "backend",
            Scope::UdpLb => "udp-lb",
        })
    }
}

const D: u8 = 1;
const F: u8 = 2;
const L: u8 = 4;
const B: u8 = 8;
/// `udp-lb`: only the keywords its flows act on (see `udp` room); the rest are refused.
const U: u8 = 16;
const ALL: u8 = D | F | L | B;
/// Frontend side (accepting connections), including defaults.
const FE: u8 = D | F | L;
/// Backend side (servers), including defaults.
const BE: u8 = D | L | B;
/// Real proxies only: these need a name or a condition that defaults cannot give.
const PROXY: u8 = F | L | B;

/// Keyword (with its sub-keyword for `option`, `timeout` and `stats admin`) → allowed scopes.
const TABLE: &[(&str, u8)] = &[
    ("acl", PROXY),
    ("balance", BE | U),
    ("bind", F | L),
    ("capture", F | L),
    ("cookie", BE),
    ("default-server", BE | U),
    ("default_backend", FE),
    ("dgram-bind", U),
    ("description", PROXY | U),
    ("errorfile", ALL),
    ("forward-engine", ALL),
    ("hash-type", BE | U),
    ("http-check", BE | U),
    ("http-request", PROXY),
    ("http-response", PROXY),
    ("http-reuse", BE),
    ("id", PROXY | U),
    ("log", ALL | U),
    ("maxconn", FE | U),
    ("mode", ALL),
    ("option dontlognull", FE),
    ("option forwardfor", ALL),
    ("option http-keep-alive", ALL),
    ("option http-server-close", ALL),
    ("option httpchk", BE | U),
    ("option httpclose", ALL),
    ("option httplog", FE),
    ("option redispatch", BE),
    ("option splice-auto", ALL),
    ("option tcplog", FE),
    ("redirect", PROXY),
    ("reqadd", PROXY),
    ("retries", BE),
    ("server", L | B | U),
    ("server-template", L | B),
    ("stats", ALL),
    ("stats admin", PROXY),
    ("timeout check", BE | U),
    ("timeout client", FE | U),
    ("timeout client-fin", FE),
    ("timeout connect", BE),
    ("timeout http-keep-alive", ALL),
    ("timeout http-request", ALL),
    ("timeout queue", BE),
    ("timeout server", BE),
    ("timeout server-fin", BE),
    ("timeout tunnel", BE),
    ("use_backend", F | L),
];

/// Keywords of the `global` section, to point at the right section when one is misplaced.
const GLOBAL_ONLY: &[&str] = &[
    "ca-base",
    "chroot",
    "crt-base",
    "daemon",
    "group",
    "hard-stop-after",
    "log-tag",
    "nbproc",
    "nbthread",
    "node",
    "pidfile",
    "ssl-default-bind-ciphers",
    "ssl-default-bind-ciphersuites",
    "ssl-default-bind-options",
    "tune.bufsize",
    "tune.sockmap.budget",
    "tune.ssl.default-dh-param",
    "tune.ssl.ktls",
    "ulimit-n",
    "user",
];

/// Why a keyword may not be used here.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unknown,
    NotAllowed,
}

/// The name under which `words` is looked up: `option X`, `timeout X` and `stats admin`
/// are keywords of their own; everything else is its first word.
pub(crate) fn full_keyword(words: &[String]) -> String {
    match words {
        [first, second, ..] if first == "option" || first == "timeout" => {
            format!("{first} {second}")
        }
        [first, second, ..] if first == "stats" && second == "admin" => "stats admin".to_string(),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// Checks a proxy keyword against the table.
pub(crate) fn check(keyword: &str, scope: Scope) -> Result<(), Refusal> {
    match TABLE.iter().find(|(k, _)| *k == keyword) {
        None => Err(Refusal::Unknown),
        Some((_, scopes)) if scopes & scope.bit() == 0 => Err(Refusal::NotAllowed),
        Some(_) => Ok(()),
    }
}

/// The error reason for a refused proxy keyword.
pub(crate) fn refusal_reason(keyword: &str, scope: Scope, refusal: Refusal) -> String {
    match refusal {
        Refusal::NotAllowed => format!("'{keyword}' is not allowed in a {scope} section"),
        Refusal::Unknown if GLOBAL_ONLY.contains(&keyword) => {
            format!("'{keyword}' is not allowed in a {scope} section (it belongs in 'global')")
        }
        Refusal::Unknown => match keyword.split_once(' ') {
            Some(("option", name)) => format!("unknown option '{name}' in '{scope}' section"),
            Some(("timeout", name)) => format!("unknown timeout '{name}' in '{scope}' section"),
            _ => format!("unknown keyword '{keyword}' in '{scope}' section"),
        },
    }
}

/// Every proxy keyword, for tests that walk the table.
#[cfg(test)]
pub(crate) fn all() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(k, _)| *k)
}

/// Every keyword of the `global` section that no proxy section has, for the same tests.
#[cfg(test)]
pub(crate) fn global_only() -> impl Iterator<Item = &'static str> {
    GLOBAL_ONLY.iter().copied()
}

/// Whether `keyword` may appear in `scope` (tests pick a section for each keyword).
#[cfg(test)]
pub(crate) fn allowed(keyword: &str, scope: Scope) -> bool {
    check(keyword, scope).is_ok()
}

/// Whether `keyword` is a proxy keyword at all (to say "not allowed in global" rather than
/// "unknown" when one is found in the global section).
pub(crate) fn is_proxy_keyword(keyword: &str) -> bool {
    TABLE.iter().any(|(k, _)| *k == keyword)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn full_keywords() {
        assert_eq!(full_keyword(&words("option httplog")), "option httplog");
        assert_eq!(full_keyword(&words("timeout client 5s")), "timeout client");
        assert_eq!(full_keyword(&words("stats admin if TRUE")), "stats admin");
        assert_eq!(full_keyword(&words("stats uri /x")), "stats");
        assert_eq!(full_keyword(&words("option")), "option");
        assert_eq!(full_keyword(&words("bind :80")), "bind");
    }

    #[test]
    fn matrix() {
        assert_eq!(check("bind", Scope::Frontend), Ok(()));
        assert_eq!(check("bind", Scope::Backend), Err(Refusal::NotAllowed));
        assert_eq!(check("server", Scope::Frontend), Err(Refusal::NotAllowed));
        assert_eq!(check("default_backend", Scope::Defaults), Ok(()));
        assert_eq!(
            check("use_backend", Scope::Defaults),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(check("balance", Scope::Frontend), Err(Refusal::NotAllowed));
        assert_eq!(check("cookie", Scope::Frontend), Err(Refusal::NotAllowed));
        assert_eq!(check("stats", Scope::Defaults), Ok(()));
        assert_eq!(
            check("stats admin", Scope::Defaults),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(check("maxconn", Scope::Backend), Err(Refusal::NotAllowed));
        assert_eq!(check("frobnicate", Scope::Listen), Err(Refusal::Unknown));
    }

    #[test]
    fn reasons() {
        let r = |k, s, why| refusal_reason(k, s, why);
        assert_eq!(
            r("bind", Scope::Backend, Refusal::NotAllowed),
            "'bind' is not allowed in a backend section"
        );
        assert_eq!(
            r("frob", Scope::Frontend, Refusal::Unknown),
            "unknown keyword 'frob' in 'frontend' section"
        );
        assert_eq!(
            r("option foo", Scope::Listen, Refusal::Unknown),
            "unknown option 'foo' in 'listen' section"
        );
        assert_eq!(
            r("timeout foo", Scope::Listen, Refusal::Unknown),
            "unknown timeout 'foo' in 'listen' section"
        );
        assert!(r("nbthread", Scope::Frontend, Refusal::Unknown).contains("belongs in 'global'"));
    }
}

//! The ACL subset the seeds and AMS setups use, compiled once at start from the words the config
//! room kept: `if|unless` conditions made of named ACLs and anonymous `{ … }` ones, `!`, AND by
//! juxtaposition, `||`/`or`. Fetches: `ssl_fc`, `path` (+`_beg`/`_end`/`_sub`/`_reg`),
//! `hdr(name)` (same suffixes), `method`, `src`; flags `-i` and `-m str|beg|end|sub|reg`.
//! Anything else is refused at start with the line that wrote it.

use std::collections::HashMap;
use std::net::IpAddr;

use regex::bytes::{Regex, RegexBuilder};

use crate::config::{Acl, Condition, Loc};

use super::error::HttpError;
use super::head::{Headers, Request};

/// What a condition can look at.
pub struct Ctx<'a> {
    pub req: &'a Request,
    pub src: IpAddr,
    /// The client connection is TLS.
    pub ssl: bool,
    /// The server's response, for `http-response` conditions (`status`, `res.hdr()`).
    pub res: Option<ResponseView<'a>>,
}

/// The part of a response a condition may look at.
#[derive(Clone, Copy)]
pub struct ResponseView<'a> {
    pub status: u16,
    pub headers: &'a Headers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Str,
    Beg,
    End,
    Sub,
    Reg,
}

#[derive(Debug, Clone)]
enum Fetch {
    SslFc,
    Path,
    Hdr(String),
    Method,
    Src,
    /// The response's status (response rules only).
    Status,
    /// A response header (`res.hdr(name)`, response rules only).
    ResHdr(String),
    Bool(bool),
    HttpVersion(u8),
}

#[derive(Debug, Clone)]
enum Patterns {
    /// Strings, already lower-cased when `-i`.
    Text {
        method: Method,
        nocase: bool,
        values: Vec<String>,
    },
    Regex(Vec<Regex>),
    Nets(Vec<Net>),
    /// Integers and inclusive ranges (`200`, `400:499`), as HAProxy's integer match.
    Ints(Vec<(u16, u16)>),
    /// A boolean fetch: true is a match.
    None,
}

/// One `fetch [flags] [patterns]` criterion: true if any pattern matches any fetched value.
#[derive(Debug, Clone)]
struct Criterion {
    fetch: Fetch,
    patterns: Patterns,
}

#[derive(Debug, Clone)]
enum Term {
    Named(Vec<Criterion>),
    Anonymous(Criterion),
}

/// A compiled `if`/`unless` condition: OR of ANDs of possibly negated terms.
#[derive(Debug, Clone)]
pub struct Cond {
    negate: bool,
    any_of: Vec<Vec<(bool, Term)>>,
}

fn config_error(loc: &Loc, reason: String) -> HttpError {
    HttpError::Config {
        loc: loc.clone(),
        reason,
    }
}

/// The named ACLs of one proxy; several lines with the same name are ORed, as in HAProxy.
#[derive(Default)]
pub struct AclSet(HashMap<String, Vec<Criterion>>);

impl AclSet {
    #[cfg(test)]
    pub fn compile(acls: &[Acl]) -> Result<AclSet, HttpError> {
        let (set, mut errors) = AclSet::compile_all(acls);
        match errors.is_empty() {
            true => Ok(set),
            false => Err(errors.remove(0)),
        }
    }

    /// Every ACL line compiled, and the problem of each one that fails. A failed line still
    /// names its ACL (matching nothing), so the conditions that use it are not also reported
    /// as naming an unknown ACL.
    pub fn compile_all(acls: &[Acl]) -> (AclSet, Vec<HttpError>) {
        let mut map: HashMap<String, Vec<Criterion>> = HashMap::new();
        let mut errors = Vec::new();
        for acl in acls {
            let entry = map.entry(acl.name.clone()).or_default();
            match criterion(&acl.words) {
                Ok(c) => entry.push(c),
                Err(reason) => errors.push(config_error(&acl.loc, reason)),
            }
        }
        (AclSet(map), errors)
    }

    fn named(&self, name: &str) -> Option<Vec<Criterion>> {
        if let Some(c) = self.0.get(name) {
            return Some(c.clone());
        }
        predefined(name).map(|c| vec![c])
    }
}

/// The regex crate explains a syntax error over several lines (the pattern, a caret, then
/// the reason); a config problem is one `file:line: reason` line, so only the reason is kept.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

/// HAProxy's predefined ACLs that cost nothing to offer.
fn predefined(name: &str) -> Option<Criterion> {
    let text = |fetch, values: &[&str]| Criterion {
        fetch,
        patterns: Patterns::Text {
            method: Method::Str,
            nocase: false,
            values: values.iter().map(|s| s.to_string()).collect(),
        },
    };
    let boolean = |fetch| Criterion {
        fetch,
        patterns: Patterns::None,
    };
    Some(match name {
        "TRUE" => boolean(Fetch::Bool(true)),
        "FALSE" => boolean(Fetch::Bool(false)),
        "HTTP_1.0" => boolean(Fetch::HttpVersion(0)),
        "HTTP_1.1" => boolean(Fetch::HttpVersion(1)),
        "METH_GET" => text(Fetch::Method, &["GET", "HEAD"]),
        "METH_POST" => text(Fetch::Method, &["POST"]),
        "METH_OPTIONS" => text(Fetch::Method, &["OPTIONS"]),
        "METH_CONNECT" => text(Fetch::Method, &["CONNECT"]),
        "LOCALHOST" => Criterion {
            fetch: Fetch::Src,
            patterns: Patterns::Nets(vec![
                Net::parse("127.0.0.0/8").ok()?,
                Net::parse("::1").ok()?,
            ]),
        },
        _ => return None,
    })
}

/// Where a condition is evaluated: some fetches only exist on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

impl Fetch {
    fn name(&self) -> String {
        match self {
            Fetch::SslFc => "ssl_fc".into(),
            Fetch::Path => "path".into(),
            Fetch::Hdr(h) => format!("hdr({h})"),
            Fetch::Method => "method".into(),
            Fetch::Src => "src".into(),
            Fetch::Status => "status".into(),
            Fetch::ResHdr(h) => format!("res.hdr({h})"),
            Fetch::Bool(b) => (if *b { "TRUE" } else { "FALSE" }).into(),
            Fetch::HttpVersion(minor) => format!("HTTP_1.{minor}"),
        }
    }

    /// Whether the fetch has a value on `side`. HAProxy accepts the others there with a
    /// warning that the condition "will never match"; a rule that can never fire hides a
    /// mistake, so it is refused instead.
    fn works_on(&self, side: Side) -> bool {
        match self {
            Fetch::Path | Fetch::Hdr(_) | Fetch::HttpVersion(_) => side == Side::Request,
            Fetch::Status | Fetch::ResHdr(_) => side == Side::Response,
            Fetch::SslFc | Fetch::Method | Fetch::Src | Fetch::Bool(_) => true,
        }
    }
}

impl Cond {
    /// A condition of a request rule (`http-request`, `use_backend`, `redirect` …).
    pub fn compile(cond: &Condition, acls: &AclSet, loc: &Loc) -> Result<Cond, HttpError> {
        Cond::compile_on(cond, acls, loc, Side::Request)
    }

    /// A condition evaluated on `side`; a fetch that has no value there is refused.
    pub fn compile_on(
        cond: &Condition,
        acls: &AclSet,
        loc: &Loc,
        side: Side,
    ) -> Result<Cond, HttpError> {
        let any_of = terms(&cond.words, acls).map_err(|r| config_error(loc, r))?;
        let c = Cond {
            negate: cond.negate,
            any_of,
        };
        c.check_side(side).map_err(|r| config_error(loc, r))?;
        Ok(c)
    }

    fn check_side(&self, side: Side) -> Result<(), String> {
        let rule = match side {
            Side::Request => "a request rule",
            Side::Response => "an http-response rule",
        };
        for (_, term) in self.any_of.iter().flatten() {
            let criteria = match term {
                Term::Named(list) => list.as_slice(),
                Term::Anonymous(c) => std::slice::from_ref(c),
            };
            if let Some(c) = criteria.iter().find(|c| !c.fetch.works_on(side)) {
                return Err(format!(
                    "{} has no value in {rule}, so this condition would never match \
                     (in http-response use res.hdr(), status; in requests hdr(), path)",
                    c.fetch.name()
                ));
            }
        }
        Ok(())
    }

    pub fn matches(&self, ctx: &Ctx<'_>) -> bool {
        let hit = self.any_of.iter().any(|all| {
            all.iter()
                .all(|(negated, term)| term.matches(ctx) != *negated)
        });
        hit != self.negate
    }
}

/// `Some(cond)` must hold; no condition always holds.
pub fn holds(cond: &Option<Cond>, ctx: &Ctx<'_>) -> bool {
    cond.as_ref().is_none_or(|c| c.matches(ctx))
}

impl Term {
    fn matches(&self, ctx: &Ctx<'_>) -> bool {
        match self {
            Term::Named(list) => list.iter().any(|c| c.matches(ctx)),
            Term::Anonymous(c) => c.matches(ctx),
        }
    }
}

fn terms(words: &[String], acls: &AclSet) -> Result<Vec<Vec<(bool, Term)>>, String> {
    let mut any_of = vec![Vec::new()];
    let mut i = 0;
    let mut negated = false;
    while let Some(word) = words.get(i) {
        let mut w = word.as_str();
        i += 1;
        if w == "||" || w.eq_ignore_ascii_case("or") {
            if negated || any_of.last().is_none_or(Vec::is_empty) {
                return Err("'||' without a condition before it".into());
            }
            any_of.push(Vec::new());
            continue;
        }
        while let Some(rest) = w.strip_prefix('!') {
            negated = !negated;
            w = rest;
        }
        if w.is_empty() {
            continue;
        }
        let term = if w == "{" {
            let close = words
                .get(i..)
                .and_then(|rest| rest.iter().position(|x| x == "}"))
                .ok_or("'{' without a matching '}'")?;
            let inner = words.get(i..i + close).unwrap_or_default();
            i += close + 1;
            Term::Anonymous(criterion(inner)?)
        } else {
            let list = acls.named(w).ok_or_else(|| format!("unknown acl '{w}'"))?;
            Term::Named(list)
        };
        if let Some(all) = any_of.last_mut() {
            all.push((negated, term));
        }
        negated = false;
    }
    if negated || any_of.iter().any(Vec::is_empty) {
        return Err("incomplete condition".into());
    }
    Ok(any_of)
}

/// `fetch [-i] [-m METHOD] [--] [patterns…]`.
fn criterion(words: &[String]) -> Result<Criterion, String> {
    let (first, rest) = words.split_first().ok_or("empty condition")?;
    let (fetch, mut method) = fetch(first)?;
    let mut nocase = false;
    let mut i = 0;
    while let Some(flag) = rest.get(i).filter(|w| w.starts_with('-')) {
        i += 1;
        match flag.as_str() {
            "-i" => nocase = true,
            "--" => break,
            "-m" => {
                let m = rest.get(i).ok_or("'-m' needs a match method")?;
                i += 1;
                method = Some(match_method(m)?);
            }
            other => {
                return Err(format!(
                    "unsupported acl flag '{other}' (supported: -i, -m, --)"
                ))
            }
        }
    }
    let values: Vec<String> = rest.get(i..).unwrap_or_default().to_vec();
    let patterns = patterns(&fetch, method, nocase, values, first)?;
    Ok(Criterion { fetch, patterns })
}

fn match_method(m: &str) -> Result<Method, String> {
    Ok(match m {
        "str" => Method::Str,
        "beg" => Method::Beg,
        "end" => Method::End,
        "sub" => Method::Sub,
        "reg" => Method::Reg,
        other => {
            return Err(format!(
                "unsupported match method '{other}' (supported: str, beg, end, sub, reg)"
            ))
        }
    })
}

/// The fetch and the match method its name implies (`path_beg` → beg).
fn fetch(word: &str) -> Result<(Fetch, Option<Method>), String> {
    let (name, arg) = match word.split_once('(') {
        Some((n, a)) => {
            let a = a
                .strip_suffix(')')
                .ok_or_else(|| format!("missing ')' in '{word}'"))?;
            (n, Some(a))
        }
        None => (word, None),
    };
    let (base, suffix) = match name.rsplit_once('_') {
        Some((b, s)) if matches!(s, "beg" | "end" | "sub" | "reg") && b != "ssl" => (b, Some(s)),
        _ => (name, None),
    };
    let method = suffix.map(match_method).transpose()?;
    let fetch = match (base, arg) {
        ("ssl_fc", None) if suffix.is_none() => Fetch::SslFc,
        ("path", None) => Fetch::Path,
        ("hdr" | "req.hdr", Some(h)) if !h.is_empty() && !h.contains(',') => {
            Fetch::Hdr(h.to_string())
        }
        ("res.hdr", Some(h)) if suffix.is_none() && !h.is_empty() && !h.contains(',') => {
            Fetch::ResHdr(h.to_string())
        }
        ("method", None) => Fetch::Method,
        ("src", None) if suffix.is_none() => Fetch::Src,
        ("status", None) if suffix.is_none() => Fetch::Status,
        _ => {
            return Err(format!(
                "unsupported fetch '{word}' (supported: ssl_fc, path, path_beg, path_end, \
                 path_sub, path_reg, hdr(name), hdr_beg(name), hdr_end(name), hdr_sub(name), \
                 hdr_reg(name), req.hdr(name), res.hdr(name), method, src, status)"
            ))
        }
    };
    Ok((fetch, method))
}

fn patterns(
    fetch: &Fetch,
    method: Option<Method>,
    nocase: bool,
    values: Vec<String>,
    word: &str,
) -> Result<Patterns, String> {
    match fetch {
        Fetch::SslFc | Fetch::Bool(_) | Fetch::HttpVersion(_) => {
            if !values.is_empty() || method.is_some() {
                return Err(format!("'{word}' is a boolean and takes no pattern"));
            }
            Ok(Patterns::None)
        }
        Fetch::Status => {
            if method.is_some() {
                return Err("'status' matches integers only (no '-m')".into());
            }
            need_some(word, &values)?;
            Ok(Patterns::Ints(
                values
                    .iter()
                    .map(|v| int_range(v))
                    .collect::<Result<_, _>>()?,
            ))
        }
        Fetch::Src => {
            if method.is_some() {
                return Err("'src' matches addresses only (no '-m')".into());
            }
            let nets: Result<Vec<Net>, String> = values.iter().map(|v| Net::parse(v)).collect();
            need_some(word, &values)?;
            Ok(Patterns::Nets(nets?))
        }
        _ => {
            need_some(word, &values)?;
            match method.unwrap_or(Method::Str) {
                Method::Reg => Ok(Patterns::Regex(regexes(&values, nocase)?)),
                method => Ok(Patterns::Text {
                    method,
                    nocase,
                    values: if nocase {
                        values.iter().map(|v| v.to_ascii_lowercase()).collect()
                    } else {
                        values
                    },
                }),
            }
        }
    }
}

/// `N` or `LOW:HIGH`.
fn int_range(v: &str) -> Result<(u16, u16), String> {
    let bad = || format!("'{v}' is not a status or a range like 400:499");
    let int = |t: &str| t.parse::<u16>().map_err(|_| bad());
    match v.split_once(':') {
        Some((lo, hi)) => {
            let (lo, hi) = (int(lo)?, int(hi)?);
            if lo > hi {
                return Err(bad());
            }
            Ok((lo, hi))
        }
        None => int(v).map(|n| (n, n)),
    }
}

fn need_some(word: &str, values: &[String]) -> Result<(), String> {
    if values.is_empty() {
        return Err(format!("'{word}' needs at least one pattern"));
    }
    Ok(())
}

fn regexes(values: &[String], nocase: bool) -> Result<Vec<Regex>, String> {
    values
        .iter()
        .map(|v| {
            RegexBuilder::new(v)
                .case_insensitive(nocase)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("invalid regex '{v}': {}", regex_reason(&e)))
        })
        .collect()
}

impl Criterion {
    fn matches(&self, ctx: &Ctx<'_>) -> bool {
        match &self.fetch {
            Fetch::SslFc => ctx.ssl,
            Fetch::Bool(b) => *b,
            Fetch::HttpVersion(minor) => !ctx.req.h2 && ctx.req.minor == *minor,
            Fetch::Src => match &self.patterns {
                Patterns::Nets(nets) => nets.iter().any(|n| n.contains(ctx.src)),
                _ => false,
            },
            Fetch::Status => match (&self.patterns, ctx.res) {
                (Patterns::Ints(ranges), Some(res)) => ranges
                    .iter()
                    .any(|(lo, hi)| (*lo..=*hi).contains(&res.status)),
                _ => false,
            },
            Fetch::Path => self.any(std::iter::once(ctx.req.path().as_bytes())),
            Fetch::Method => self.any(std::iter::once(ctx.req.method.as_bytes())),
            Fetch::ResHdr(name) => match ctx.res {
                Some(res) => self.any(
                    res.headers
                        .get_all(name)
                        .flat_map(|v| v.split(|b| *b == b','))
                        .map(<[u8]>::trim_ascii),
                ),
                None => false,
            },
            Fetch::Hdr(name) => self.any(
                ctx.req
                    .headers
                    .get_all(name)
                    .flat_map(|v| v.split(|b| *b == b','))
                    .map(<[u8]>::trim_ascii),
            ),
        }
    }

    fn any<'v>(&self, mut values: impl Iterator<Item = &'v [u8]>) -> bool {
        values.any(|v| self.value_matches(v))
    }

    fn value_matches(&self, value: &[u8]) -> bool {
        match &self.patterns {
            Patterns::Regex(list) => list.iter().any(|r| r.is_match(value)),
            Patterns::Text {
                method,
                nocase,
                values,
            } => {
                let owned;
                let v = if *nocase {
                    owned = value.to_ascii_lowercase();
                    owned.as_slice()
                } else {
                    value
                };
                values.iter().any(|p| text_match(*method, v, p.as_bytes()))
            }
            Patterns::Nets(_) | Patterns::Ints(_) | Patterns::None => false,
        }
    }
}

fn text_match(method: Method, value: &[u8], pattern: &[u8]) -> bool {
    match method {
        Method::Str => value == pattern,
        Method::Beg => value.starts_with(pattern),
        Method::End => value.ends_with(pattern),
        Method::Sub => pattern.is_empty() || value.windows(pattern.len()).any(|w| w == pattern),
        Method::Reg => false,
    }
}

/// An address or network (`10.0.0.0/8`, `::1`); IPv4-mapped IPv6 clients match IPv4 networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn parse(text: &str) -> Result<Net, String> {
        let bad = || format!("invalid address or network '{text}'");
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Net { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n) as u128, 32, self.prefix)
                    == masked(u32::from(a) as u128, 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(v: u128, bits: u32, prefix: u8) -> u128 {
    let keep = u32::from(prefix).min(bits);
    if keep == 0 {
        return 0;
    }
    v >> (bits - keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_request;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn cond(text: &str, acls: &[(&str, &str)]) -> Result<Cond, String> {
        let acls: Vec<Acl> = acls
            .iter()
            .map(|(n, w)| Acl {
                name: n.to_string(),
                words: words(w),
                loc: Loc::default(),
            })
            .collect();
        let set = AclSet::compile(&acls).map_err(|e| e.to_string())?;
        let c = Condition {
            negate: false,
            words: words(text),
        };
        Cond::compile(&c, &set, &Loc::default()).map_err(|e| e.to_string())
    }

    fn eval(text: &str, acls: &[(&str, &str)], request: &str, src: &str, ssl: bool) -> bool {
        let req = parse_request(request.as_bytes()).unwrap();
        let c = cond(text, acls).unwrap();
        c.matches(&Ctx {
            res: None,
            req: &req,
            src: src.parse().unwrap(),
            ssl,
        })
    }

    const GET: &str =
        "GET /live/a.m3u8?x=1 HTTP/1.1\r\nHost: Cdn.Example.com:5080\r\nX-L: a, b\r\n\r\n";

    #[test]
    fn seed_condition() {
        assert!(eval("! { ssl_fc }", &[], GET, "10.0.0.1", false));
        assert!(!eval("! { ssl_fc }", &[], GET, "10.0.0.1", true));
        assert!(!eval("!{ ssl_fc }", &[], GET, "10.0.0.1", true));
    }

    #[test]
    fn fetches_and_methods() {
        let yes = |c: &str| assert!(eval(c, &[], GET, "10.1.2.3", false), "{c}");
        let no = |c: &str| assert!(!eval(c, &[], GET, "10.1.2.3", false), "{c}");
        yes("{ path /live/a.m3u8 }");
        yes("{ path_beg /live/ /vod/ }");
        yes("{ path_end .m3u8 }");
        yes("{ path -m sub a.m3 }");
        yes("{ path_reg ^/live/.*\\.m3u8$ }");
        no("{ path /live }");
        yes("{ hdr_beg(host) -i cdn. }");
        no("{ hdr_beg(host) cdn. }");
        yes("{ hdr(x-l) b }");
        yes("{ hdr(host) -m reg -i ^cdn\\.example }");
        yes("{ method GET }");
        no("{ method get }");
        yes("{ method -i get }");
        yes("{ src 10.0.0.0/8 }");
        no("{ src 192.168.0.0/16 127.0.0.1 }");
        yes("METH_GET");
    }

    #[test]
    fn combinators_and_named() {
        let acls = [
            ("is_live", "path_beg /live/"),
            ("is_vod", "path_beg /vod/"),
            ("is_vod", "path_end .mp4"),
        ];
        let t = |c: &str| eval(c, &acls, GET, "10.0.0.1", false);
        assert!(t("is_live"));
        assert!(!t("is_vod"));
        assert!(t("is_vod || is_live"));
        assert!(t("is_vod or is_live"));
        assert!(!t("is_live is_vod"));
        assert!(t("is_live !is_vod"));
        assert!(t("is_live ! is_vod { method GET }"));
        let acls = [("is_vod", "path_beg /x"), ("is_vod", "path_end .m3u8")];
        assert!(eval("is_vod", &acls, GET, "10.0.0.1", false), "lines ORed");
    }

    #[test]
    fn refused() {
        for (c, want) in [
            ("{ url_beg /x }", "unsupported fetch"),
            ("{ path -f list }", "unsupported acl flag"),
            ("{ path -m dom x }", "unsupported match method"),
            ("{ path }", "needs at least one pattern"),
            ("{ ssl_fc 1 }", "boolean"),
            ("nope", "unknown acl 'nope'"),
            ("{ path /x", "without a matching"),
            ("|| { ssl_fc }", "'||'"),
            ("{ src 10.0.0.0/33 }", "invalid address"),
            ("{ path_reg ( }", "invalid regex"),
        ] {
            let e = cond(c, &[]).expect_err(c);
            assert!(e.contains(want), "{c}: {e}");
        }
    }

    #[test]
    fn nets() {
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Net::parse("::1").unwrap().contains("::1".parse().unwrap()));
    }
}

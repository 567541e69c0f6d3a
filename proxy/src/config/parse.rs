//! Sections and the lines inside them → the model.
//!
//! The parser reads files one after the other. Each file starts outside any section (a
//! directive before the first section header is an error), but the current `defaults`
//! carries over from file to file, as in HAProxy. A proxy starts as a copy of the most recent
//! `defaults`; a new `defaults` section starts from scratch again.
//!
//! Every line is handled on its own: a bad line gives one error and parsing goes on with
//! the next, so that `-c` reports all problems at once.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::httpchk::Rules;
use super::keywords::Scope;
use super::lexer::{split_words, EnvLookup};
use super::model::{Config, Loc, Proxy, ProxyKind};
use super::{global, proxy};

/// What validation needs beyond the model: where some things were written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notes {
    /// The `default_backend` line, possibly in the `defaults` section it came from.
    pub default_backend: Option<Loc>,
    /// HTTP-only directives written in this proxy itself (not inherited from `defaults`),
    /// checked against the proxy's final mode.
    pub http_only: Vec<(String, Loc)>,
    /// A line of this proxy was refused: checks that a missing line would trip (no bind, no
    /// backend) stay quiet rather than repeat that error in other words.
    pub had_errors: bool,
    /// `option httpchk` and `http-check` lines of this section, with the check inherited.
    pub http_check: Rules,
    /// Lines of this section (not `defaults`) that act after a proxy holds the connection
    /// (`retries`, `option redispatch`, `maxconn`): refused where the kernel's NAT carries
    /// the flows (`forward-engine nat`), which has no such moment.
    pub not_at_l4: Vec<(String, Loc)>,
    /// The `forward-engine` line, as written, possibly in `defaults`.
    pub engine: Option<(String, Loc)>,
}

/// A proxy being filled, with its notes.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub proxy: Proxy,
    pub notes: Notes,
}

/// What proxy directives need to know about where they are.
pub(crate) struct Ctx<'a> {
    pub loc: &'a Loc,
    pub scope: Scope,
    /// Relative `errorfile` paths are taken from here (HAProxy: the working directory).
    pub cwd: &'a Path,
    /// `crt-base` from `global`, prefixed to relative `crt` paths.
    pub crt_base: Option<&'a Path>,
}

#[derive(Clone, Copy)]
enum Section {
    /// Before the first section header of a file.
    None,
    Global,
    Defaults,
    /// Index into `Parser::drafts`.
    Proxy(usize),
    /// Index into `Parser::resolvers`.
    Resolvers(usize),
    /// A section that could not be opened (bad header, unsupported kind): its lines are
    /// skipped, the header already carries the error.
    Ignored,
}

/// Sections HAProxy has and we do not; their content is skipped after one error.
const UNSUPPORTED_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "mailers",
    "cache",
    "program",
    "http-errors",
    "ring",
];

pub(crate) struct Parser<'a> {
    env: EnvLookup<'a>,
    cwd: PathBuf,
    global: super::model::Global,
    drafts: Vec<Draft>,
    resolvers: Vec<super::model::Resolvers>,
    defaults: Draft,
    section: Section,
    crt_base: Option<PathBuf>,
    errors: Vec<ConfigError>,
}

/// The parse result: the model, notes parallel to `config.proxies`, and errors.
pub(crate) struct Parsed {
    pub config: Config,
    pub notes: Vec<Notes>,
    pub errors: Vec<ConfigError>,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(env: EnvLookup<'a>, cwd: &Path) -> Parser<'a> {
        Parser {
            env,
            cwd: cwd.to_path_buf(),
            global: Default::default(),
            drafts: Vec::new(),
            resolvers: Vec::new(),
            defaults: fresh_defaults(),
            section: Section::None,
            crt_base: None,
            errors: Vec::new(),
        }
    }

    /// Records an error that is not tied to a line of text (unreadable file…).
    pub(crate) fn push_error(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// Parses one file's text. `file` is used in locations only.
    pub(crate) fn parse_file(&mut self, text: &str, file: &Path) {
        self.section = Section::None;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.split('\n').enumerate() {
            let loc = Loc {
                file: file.to_path_buf(),
                line: index + 1,
            };
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            match split_words(line, self.env) {
                Ok(words) if words.is_empty() => {}
                Ok(words) => self.line(&words, &loc),
                Err(reason) => self.error(&loc, reason),
            }
        }
    }

    pub(crate) fn finish(mut self) -> Parsed {
        self.close_defaults();
        let (proxies, notes) = self.drafts.into_iter().map(|d| (d.proxy, d.notes)).unzip();
        let mut config = Config {
            global: self.global,
            proxies,
            resolvers: self.resolvers,
        };
        fall_back_to_tcplog(&mut config);
        Parsed {
            config,
            notes,
            errors: std::mem::take(&mut self.errors),
        }
    }

    fn error(&mut self, loc: &Loc, reason: String) {
        self.errors.push(ConfigError {
            file: loc.file.clone(),
            line: loc.line,
            reason,
        });
    }

    fn line(&mut self, words: &[String], loc: &Loc) {
        let Some((first, rest)) = words.split_first() else {
            return;
        };
        let result = match first.as_str() {
            "global" => self.open_global(rest),
            "defaults" => self.open_defaults(rest),
            "frontend" => self.open_proxy(ProxyKind::Frontend, rest, loc),
            "backend" => self.open_proxy(ProxyKind::Backend, rest, loc),
            "listen" => self.open_proxy(ProxyKind::Listen, rest, loc),
            "resolvers" => self.open_resolvers(rest, loc),
            "udp-lb" => self.open_proxy(ProxyKind::UdpLb, rest, loc),
            s if UNSUPPORTED_SECTIONS.contains(&s) => {
                self.section = Section::Ignored;
                Err(format!("unsupported section '{s}'"))
            }
            _ => self.directive(words, loc),
        };
        if let Err(reason) = result {
            if let Section::Proxy(index) = self.section {
                if let Some(draft) = self.drafts.get_mut(index) {
                    draft.notes.had_errors = true;
                }
            }
            self.error(loc, reason);
        }
    }

    fn open_global(&mut self, rest: &[String]) -> Result<(), String> {
        self.section = Section::Global;
        match rest.first() {
            None => Ok(()),
            Some(word) => Err(format!("unexpected argument '{word}' to 'global'")),
        }
    }

    /// `defaults [NAME]`: the name is accepted and has no use (no `from NAME` yet).
    fn open_defaults(&mut self, rest: &[String]) -> Result<(), String> {
        self.close_defaults();
        self.section = Section::Defaults;
        self.defaults = fresh_defaults();
        if let Some(name) = rest.first() {
            check_name(name, "defaults")?;
        }
        match rest.get(1) {
            None => Ok(()),
            Some(word) => Err(format!("unexpected argument '{word}' to 'defaults'")),
        }
    }

    /// Checks of the `defaults` section that need all of its lines. Its proxies are
    /// validated on their own; lines that act on none of them are reported here, once.
    fn close_defaults(&mut self) {
        if let Some((loc, reason)) = self.defaults.notes.http_check.problem() {
            self.error(&loc, reason);
        }
        self.defaults.notes.http_check = Rules::default();
    }

    fn open_proxy(&mut self, kind: ProxyKind, rest: &[String], loc: &Loc) -> Result<(), String> {
        self.section = Section::Ignored;
        let keyword = kind.keyword();
        let name = rest
            .first()
            .ok_or_else(|| format!("'{keyword}' needs a name"))?;
        check_name(name, keyword)?;
        if let Some(word) = rest.get(1) {
            return Err(format!(
                "unexpected argument '{word}' to '{keyword} {name}'"
            ));
        }
        if let Some(other) = self
            .drafts
            .iter()
            .map(|d| &d.proxy)
            .find(|p| names_clash(p, name, kind))
        {
            return Err(format!(
                "{keyword} '{name}' has the same name as {} '{}' at {}",
                other.kind.keyword(),
                other.name,
                other.loc
            ));
        }
        // HAProxy Enterprise's `udp-lb` takes nothing from `defaults`: a `mode http` or
        // `option httplog` written for the TCP sections would have no meaning for datagrams.
        let draft = match kind {
            ProxyKind::UdpLb => Draft {
                proxy: Proxy::new(name, kind, loc.clone()),
                notes: Notes::default(),
            },
            _ => inherit(&self.defaults, name, kind, loc),
        };
        self.drafts.push(draft);
        self.section = Section::Proxy(self.drafts.len() - 1);
        Ok(())
    }

    fn open_resolvers(&mut self, rest: &[String], loc: &Loc) -> Result<(), String> {
        self.section = Section::Ignored;
        let name = rest
            .first()
            .ok_or_else(|| "'resolvers' needs a name".to_string())?;
        check_name(name, "resolvers")?;
        if let Some(word) = rest.get(1) {
            return Err(format!(
                "unexpected argument '{word}' to 'resolvers {name}'"
            ));
        }
        if let Some(other) = self.resolvers.iter().find(|r| r.name == *name) {
            return Err(format!(
                "resolvers '{name}' is already defined at {}",
                other.loc
            ));
        }
        self.resolvers
            .push(super::model::Resolvers::new(name, loc.clone()));
        self.section = Section::Resolvers(self.resolvers.len() - 1);
        Ok(())
    }

    fn directive(&mut self, words: &[String], loc: &Loc) -> Result<(), String> {
        let ctx = |scope| Ctx {
            loc,
            scope,
            cwd: &self.cwd,
            crt_base: self.crt_base.as_deref(),
        };
        match self.section {
            Section::None => Err(format!(
                "'{}' found before any section (global, defaults, frontend, backend, listen or udp-lb)",
                words.first().map(String::as_str).unwrap_or_default()
            )),
            Section::Ignored => Ok(()),
            Section::Resolvers(index) => match self.resolvers.get_mut(index) {
                Some(r) => super::resolvers::directive(r, words),
                None => Ok(()),
            },
            Section::Global => global::directive(&mut self.global, &mut self.crt_base, words, loc),
            Section::Defaults => {
                let ctx = ctx(Scope::Defaults);
                proxy::directive(&mut self.defaults, words, &ctx)
            }
            Section::Proxy(index) => {
                let Some(draft) = self.drafts.get_mut(index) else {
                    return Ok(());
                };
                let ctx = ctx(Scope::of(draft.proxy.kind));
                proxy::directive(draft, words, &ctx)
            }
        }
    }
}

/// The template a `defaults` section fills; its name and kind are never used.
fn fresh_defaults() -> Draft {
    Draft {
        proxy: Proxy::new("", ProxyKind::Listen, Loc::default()),
        notes: Notes::default(),
    }
}

/// A new proxy: a copy of the defaults, less what its kind cannot use.
fn inherit(defaults: &Draft, name: &str, kind: ProxyKind, loc: &Loc) -> Draft {
    let mut proxy = defaults.proxy.clone();
    proxy.name = name.to_string();
    proxy.kind = kind;
    proxy.loc = loc.clone();
    let mut notes = Notes {
        default_backend: defaults.notes.default_backend.clone(),
        http_check: Rules::inherit(defaults.proxy.http_check.clone()),
        engine: defaults.notes.engine.clone(),
        ..Notes::default()
    };
    if !kind.has_frontend() {
        proxy.default_backend = None;
        notes.default_backend = None;
    }
    if !kind.has_backend() {
        proxy.cookie = None;
        proxy.http_check = None;
        notes.http_check = Rules::default();
    }
    Draft { proxy, notes }
}

/// HAProxy allows a frontend and a backend to share a name (they live in different
/// namespaces), but a listen is both and clashes with either.
fn names_clash(existing: &Proxy, name: &str, kind: ProxyKind) -> bool {
    existing.name == name
        && (existing.kind == kind
            || matches!(existing.kind, ProxyKind::Listen | ProxyKind::UdpLb)
            || matches!(kind, ProxyKind::Listen | ProxyKind::UdpLb))
}

/// HAProxy's rule for proxy names: letters, digits, `-`, `_`, `.` and `:`.
pub(crate) fn check_name(name: &str, what: &str) -> Result<(), String> {
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        _ if name.is_empty() => Err(format!("'{what}' needs a name")),
        Some(c) => Err(format!("invalid character '{c}' in {what} name '{name}'")),
        None => Ok(()),
    }
}

/// `option httplog` in a mode tcp proxy: HAProxy warns and logs in tcplog format instead;
/// we do the same so that the log room never sees httplog on a TCP proxy.
fn fall_back_to_tcplog(config: &mut Config) {
    for proxy in &mut config.proxies {
        if proxy.mode == super::model::Mode::Tcp && proxy.options.httplog {
            proxy.options.httplog = false;
            proxy.options.tcplog = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Parsed {
        let mut parser = Parser::new(&no_env, Path::new("/"));
        parser.parse_file(text, Path::new("t.cfg"));
        parser.finish()
    }

    fn errors(text: &str) -> Vec<String> {
        parse(text).errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn sections_and_crlf() {
        let p = parse("global\r\n\tmaxconn 10\r\n\r\nfrontend f\r\n  bind :80\r\nbackend b\r\n");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.config.global.maxconn, Some(10));
        let kinds: Vec<_> = p
            .config
            .proxies
            .iter()
            .map(|p| (p.name.as_str(), p.kind))
            .collect();
        assert_eq!(
            kinds,
            [("f", ProxyKind::Frontend), ("b", ProxyKind::Backend)]
        );
        assert_eq!(p.config.proxies.first().map(|p| p.loc.line), Some(4));
    }

    #[test]
    fn directive_before_section() {
        assert_eq!(
            errors("\n  maxconn 10\nglobal\n"),
            ["t.cfg:2: 'maxconn' found before any section (global, defaults, frontend, backend, listen or udp-lb)"]
        );
    }

    #[test]
    fn lexer_errors_carry_the_line() {
        assert_eq!(
            errors("global\n  user 'haproxy\n"),
            ["t.cfg:2: unterminated single quote (')"]
        );
    }

    #[test]
    fn section_headers() {
        assert_eq!(errors("frontend\n"), ["t.cfg:1: 'frontend' needs a name"]);
        assert_eq!(
            errors("backend a/b\n"),
            ["t.cfg:1: invalid character '/' in backend name 'a/b'"]
        );
        assert_eq!(
            errors("listen a b\n"),
            ["t.cfg:1: unexpected argument 'b' to 'listen a'"]
        );
        assert_eq!(
            errors("global x\n"),
            ["t.cfg:1: unexpected argument 'x' to 'global'"]
        );
        assert!(errors("defaults web\n").is_empty());
        assert_eq!(
            errors("defaults a b\n"),
            ["t.cfg:1: unexpected argument 'b' to 'defaults'"]
        );
    }

    #[test]
    fn unsupported_sections_skip_their_lines() {
        assert_eq!(
            errors("peers p\n  peer a 127.0.0.1:1024\n"),
            ["t.cfg:1: unsupported section 'peers'"]
        );
    }

    #[test]
    fn a_bad_header_skips_its_section() {
        assert_eq!(
            errors("backend a/b\n  bind :80\n  frob\n"),
            ["t.cfg:1: invalid character '/' in backend name 'a/b'"]
        );
    }

    #[test]
    fn duplicate_names() {
        let e = errors("frontend a\nfrontend a\n");
        assert_eq!(
            e,
            ["t.cfg:2: frontend 'a' has the same name as frontend 'a' at t.cfg:1"]
        );
        assert!(errors("frontend a\nbackend a\n").is_empty());
        assert_eq!(
            errors("backend a\nlisten a\n"),
            ["t.cfg:2: listen 'a' has the same name as backend 'a' at t.cfg:1"]
        );
        assert_eq!(
            errors("listen a\nfrontend a\n"),
            ["t.cfg:2: frontend 'a' has the same name as listen 'a' at t.cfg:1"]
        );
    }

    #[test]
    fn proxies_take_the_most_recent_defaults() {
        let p = parse(
            "defaults\n mode http\n retries 5\nbackend a\ndefaults second\n timeout connect 1s\nbackend b\n",
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let a = p
            .config
            .proxy("a")
            .map(|p| (p.mode, p.retries, p.timeouts.connect));
        let b = p
            .config
            .proxy("b")
            .map(|p| (p.mode, p.retries, p.timeouts.connect));
        use super::super::model::Mode;
        use std::time::Duration;
        assert_eq!(a, Some((Mode::Http, 5, None)));
        assert_eq!(b, Some((Mode::Tcp, 3, Some(Duration::from_secs(1)))));
    }

    #[test]
    fn defaults_keep_what_each_kind_can_use() {
        let p = parse("defaults\n default_backend x\n cookie S insert\nfrontend f\nbackend x\n");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let f = p.config.proxy("f");
        assert_eq!(
            f.and_then(|f| f.default_backend.clone()),
            Some("x".to_string())
        );
        assert!(f.is_some_and(|f| f.cookie.is_none()));
        assert_eq!(
            p.notes
                .first()
                .and_then(|n| n.default_backend.as_ref())
                .map(|l| l.line),
            Some(2)
        );
        let b = p.config.proxies.get(1);
        assert!(b.is_some_and(|b| b.default_backend.is_none() && b.cookie.is_some()));
    }

    #[test]
    fn httplog_falls_back_to_tcplog_in_tcp_mode() {
        let p = parse("defaults\n mode http\n option httplog\nfrontend h\nfrontend t\n mode tcp\n");
        let opts: Vec<_> = p
            .config
            .proxies
            .iter()
            .map(|p| (p.options.httplog, p.options.tcplog))
            .collect();
        assert_eq!(opts, [(true, false), (false, true)]);
    }

    #[test]
    fn errors_keep_going() {
        let e = errors("global\n maxconn x\n nbthread 0\n frob\n");
        assert_eq!(e.len(), 3, "{e:?}");
    }
}

//! One input line → its commands, in HAProxy's syntax: words separated by blanks, commands
//! by `;`, a backslash taking the next character as it is (`\;`, `\ `). Errors are the
//! one-line texts HAProxy's CLI answers, so scripts matching them keep working.

use std::net::IpAddr;

use crate::config::ApiLevel;
use crate::upstream::Admin;

/// The longest line read; a longer one is answered with an error and skipped (HAProxy's
/// limit is its buffer size, 16 KiB by default).
pub const MAX_LINE: usize = 16 * 1024;

/// What an unknown command gets (the first words of HAProxy's answer, on one line).
pub const UNKNOWN: &str =
    "Unknown command. Please enter one of the following commands only: see 'help'.";

pub const PERMISSION_DENIED: &str = "Permission denied";

/// `backend/server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub backend: String,
    pub server: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Absolute(u32),
    /// A percentage of the server's weight in the config (HAProxy's `N%`).
    Percent(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerChange {
    State(Admin),
    Weight(Weight),
    Addr(IpAddr, Option<u16>),
}

/// `show stat [up] [no-maint] [{proxy|iid} [type sid]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatFilter {
    pub only_up: bool,
    pub no_maint: bool,
    /// A proxy's name or id (`-1`: all).
    pub proxy: Option<String>,
    /// HAProxy's type mask: 1 frontends, 2 backends, 4 servers (`-1`: all).
    pub types: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Prompt,
    Quit,
    /// `user`, `operator`: lower this connection's level.
    Lower(ApiLevel),
    ShowCliLevel,
    ShowVersion,
    ShowInfo,
    ShowStat(StatFilter),
    ShowServersState(Option<String>),
    ShowSess,
    ShowFlows,
    ShowSslCert(Option<String>),
    GetWeight(Target),
    /// `set server B/S …`, and `set weight B/S N` (HAProxy's older form).
    SetServer(Target, ServerChange),
    EnableServer(Target),
    DisableServer(Target),
    /// The server line's words after `B/S`: `ADDR[:PORT] [options]`.
    AddServer(Target, Vec<String>),
    DelServer(Target),
    SetMaxconnFrontend(String, u32),
    Reload,
    /// `_getsocks`: the listening sockets, passed to the new process of a binary upgrade
    /// (HAProxy's `-x`), on a socket with `expose-fd listeners`.
    GetSocks,
    /// `_getlisteners` / `_getflows`: this proxy's own hand-over to its next process (the
    /// listeners with their keys, then the established flows), on a socket with `expose-fd
    /// listeners`.
    Handover(&'static str),
}

impl Command {
    /// The least level that may run it, as HAProxy's CLI has it (`cli_has_level` calls):
    /// reads of figures for `user`, sessions and certificates for `operator`, changes for
    /// `admin`.
    pub fn level(&self) -> ApiLevel {
        use Command::*;
        match self {
            Help | Prompt | Quit | Lower(_) | ShowCliLevel | ShowVersion | ShowInfo
            | ShowStat(_) | ShowServersState(_) | GetWeight(_) => ApiLevel::User,
            // Gated by the socket's `expose-fd listeners` instead, as in HAProxy.
            GetSocks => ApiLevel::User,
            ShowSess | ShowFlows | ShowSslCert(_) => ApiLevel::Operator,
            SetServer(..)
            | EnableServer(_)
            | DisableServer(_)
            | AddServer(..)
            | DelServer(_)
            | SetMaxconnFrontend(..)
            | Reload
            | Handover(_) => ApiLevel::Admin,
        }
    }
}

/// A line's commands, each as its words; empty commands are left out.
pub fn split_line(line: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            ';' => {
                end_word(&mut words, &mut word, &mut in_word);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            ' ' | '\t' | '\r' | '\n' => end_word(&mut words, &mut word, &mut in_word),
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    end_word(&mut words, &mut word, &mut in_word);
    if !words.is_empty() {
        commands.push(words);
    }
    commands
}

fn end_word(words: &mut Vec<String>, word: &mut String, in_word: &mut bool) {
    if *in_word {
        words.push(std::mem::take(word));
        *in_word = false;
    }
}

/// One command's words → the command, or the one-line error to answer.
pub fn parse(words: &[String]) -> Result<Command, String> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["help", ..] => Ok(Command::Help),
        ["prompt", ..] => Ok(Command::Prompt),
        ["quit", ..] => Ok(Command::Quit),
        ["user"] => Ok(Command::Lower(ApiLevel::User)),
        ["operator"] => Ok(Command::Lower(ApiLevel::Operator)),
        ["show", "cli", "level"] => Ok(Command::ShowCliLevel),
        ["show", "version"] => Ok(Command::ShowVersion),
        ["show", "info", ..] => Ok(Command::ShowInfo),
        ["show", "stat", rest @ ..] => stat_filter(rest).map(Command::ShowStat),
        ["show", "servers", "state"] => Ok(Command::ShowServersState(None)),
        ["show", "servers", "state", b] => Ok(Command::ShowServersState(Some(b.to_string()))),
        ["show", "sess", ..] => Ok(Command::ShowSess),
        ["show", "flows"] => Ok(Command::ShowFlows),
        ["show", "ssl", "cert"] => Ok(Command::ShowSslCert(None)),
        ["show", "ssl", "cert", f] => Ok(Command::ShowSslCert(Some(f.to_string()))),
        ["get", "weight", t] => target(t).map(Command::GetWeight),
        ["get", "weight", ..] => Err("Require 'backend/server'.".into()),
        ["set", "server", rest @ ..] => set_server(rest),
        ["set", "weight", t, w] => Ok(Command::SetServer(
            target(t)?,
            ServerChange::Weight(weight(w)?),
        )),
        ["set", "weight", ..] => Err("Require 'backend/server' and 'weight' or 'weight%'.".into()),
        ["enable", "server", t] => target(t).map(Command::EnableServer),
        ["disable", "server", t] => target(t).map(Command::DisableServer),
        ["enable" | "disable", "server", ..] => Err("Require 'backend/server'.".into()),
        ["add", "server", t, _addr, ..] => {
            let t = target(t)?;
            // The words a config file's `server` line has after the keyword.
            let line = std::iter::once(t.server.clone())
                .chain(words[3..].iter().cloned())
                .collect();
            Ok(Command::AddServer(t, line))
        }
        ["add", "server", ..] => {
            Err("'server' expects <name> and <addr>[:<port>] as arguments.".into())
        }
        ["del", "server", t] => target(t).map(Command::DelServer),
        ["del", "server", ..] => Err("Require 'backend/server'.".into()),
        ["set", "maxconn", "frontend", name, n] => n
            .parse::<u32>()
            .map(|n| Command::SetMaxconnFrontend(name.to_string(), n))
            .map_err(|_| "Integer value expected.".to_string()),
        ["set", "maxconn", "frontend", _] => Err("Integer value expected.".into()),
        ["set", "maxconn", "frontend"] => Err("A frontend name is expected.".into()),
        ["reload"] => Ok(Command::Reload),
        ["_getsocks"] => Ok(Command::GetSocks),
        ["_getlisteners"] => Ok(Command::Handover("_getlisteners")),
        ["_getflows"] => Ok(Command::Handover("_getflows")),
        _ => Err(UNKNOWN.into()),
    }
}

fn target(word: &str) -> Result<Target, String> {
    match word.split_once('/') {
        Some((b, s)) if !b.is_empty() && !s.is_empty() => Ok(Target {
            backend: b.to_string(),
            server: s.to_string(),
        }),
        _ => Err("Require 'backend/server'.".into()),
    }
}

const SET_SERVER_USAGE: &str = "usage: set server <backend>/<server> addr | agent | agent-addr | \
     agent-port | agent-send | check-addr | check-port | fqdn | health | ssl | state | weight";

fn set_server(rest: &[&str]) -> Result<Command, String> {
    let Some((t, rest)) = rest.split_first() else {
        return Err("Require 'backend/server'.".into());
    };
    let t = target(t)?;
    let change = match rest {
        ["state", "ready"] => ServerChange::State(Admin::Ready),
        ["state", "drain"] => ServerChange::State(Admin::Drain),
        ["state", "maint"] => ServerChange::State(Admin::Maint),
        ["state", ..] => {
            return Err("'set server <srv> state' expects 'ready', 'drain' and 'maint'.".into())
        }
        ["weight", w] => ServerChange::Weight(weight(w)?),
        ["weight", ..] => return Err("Require <weight> or <weight%>.".into()),
        ["addr", ip, more @ ..] => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("Invalid addr '{ip}' by 'stats socket command'"))?;
            let port = match more {
                [] => None,
                ["port", p] => Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("Invalid port '{p}' by 'stats socket command'"))?,
                ),
                _ => return Err("set server <b>/<s> addr requires an address and optionally a port.".into()),
            };
            ServerChange::Addr(ip, port)
        }
        ["addr"] => {
            return Err(
                "set server <b>/<s> addr requires an address and optionally a port.".into(),
            )
        }
        [known, ..]
            if [
                "agent",
                "agent-addr",
                "agent-port",
                "agent-send",
                "check-addr",
                "check-port",
                "fqdn",
                "health",
                "ssl",
            ]
            .contains(known) =>
        {
            return Err(format!(
                "'set server <srv> {known}' is not supported by this proxy (supported: state, weight, addr)."
            ))
        }
        _ => return Err(SET_SERVER_USAGE.into()),
    };
    Ok(Command::SetServer(t, change))
}

/// `N` (0..=256) or `N%` of the configured weight.
fn weight(word: &str) -> Result<Weight, String> {
    if let Some(pct) = word.strip_suffix('%') {
        return pct
            .parse::<u32>()
            .map(Weight::Percent)
            .map_err(|_| "Relative weight must be positive.".into());
    }
    match word.parse::<u32>() {
        Ok(n) if n <= 256 => Ok(Weight::Absolute(n)),
        Ok(_) => Err("Absolute weight can only be between 0 and 256 inclusive.".into()),
        Err(_) if word.starts_with('-') => {
            Err("Absolute weight can only be between 0 and 256 inclusive.".into())
        }
        Err(_) => Err("Require <weight> or <weight%>.".into()),
    }
}

fn stat_filter(rest: &[&str]) -> Result<StatFilter, String> {
    let mut f = StatFilter::default();
    let mut positional = Vec::new();
    for word in rest {
        match *word {
            "up" => f.only_up = true,
            "no-maint" => f.no_maint = true,
            // Output forms HAProxy has that this proxy does not: refused, not ignored, so a
            // script expecting them learns it at once.
            "typed" | "json" | "desc" => {
                return Err(format!(
                    "'show stat {word}' is not supported by this proxy (CSV only)."
                ))
            }
            other => positional.push(other),
        }
    }
    match positional.as_slice() {
        [] => {}
        [proxy] | [proxy, _] | [proxy, _, _] => {
            if *proxy != "-1" {
                f.proxy = Some(proxy.to_string());
            }
            if let Some(t) = positional.get(1) {
                let t: i32 = t
                    .parse()
                    .map_err(|_| "Integer value expected.".to_string())?;
                f.types = (t != -1).then_some((t & 7) as u8);
            }
        }
        _ => return Err("show stat: too many arguments.".into()),
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn cmd(line: &str) -> Result<Command, String> {
        parse(&words(line))
    }

    fn t(b: &str, s: &str) -> Target {
        Target {
            backend: b.into(),
            server: s.into(),
        }
    }

    #[test]
    fn lines_split_on_semicolons_and_blanks_with_escapes() {
        assert_eq!(
            split_line("show info; show stat\t up ;;  "),
            [words("show info"), words("show stat up")]
        );
        assert_eq!(
            split_line(r"a\;b c\ d"),
            [vec!["a;b".to_string(), "c d".into()]]
        );
        assert!(split_line("   ").is_empty());
        assert!(split_line("").is_empty());
    }

    #[test]
    fn server_commands() {
        assert_eq!(
            cmd("set server be/s1 state drain"),
            Ok(Command::SetServer(
                t("be", "s1"),
                ServerChange::State(Admin::Drain)
            ))
        );
        assert_eq!(
            cmd("set server be/s1 weight 10%"),
            Ok(Command::SetServer(
                t("be", "s1"),
                ServerChange::Weight(Weight::Percent(10))
            ))
        );
        assert_eq!(
            cmd("set weight be/s1 7"),
            Ok(Command::SetServer(
                t("be", "s1"),
                ServerChange::Weight(Weight::Absolute(7))
            ))
        );
        assert_eq!(
            cmd("set server be/s1 addr 10.0.0.2 port 1936"),
            Ok(Command::SetServer(
                t("be", "s1"),
                ServerChange::Addr("10.0.0.2".parse().unwrap(), Some(1936))
            ))
        );
        assert_eq!(
            cmd("enable server be/s1"),
            Ok(Command::EnableServer(t("be", "s1")))
        );
        assert_eq!(
            cmd("disable server be/s1"),
            Ok(Command::DisableServer(t("be", "s1")))
        );
        assert_eq!(
            cmd("del server be/s1"),
            Ok(Command::DelServer(t("be", "s1")))
        );
        assert_eq!(
            cmd("add server be/s3 127.0.0.1:80 check weight 3"),
            Ok(Command::AddServer(
                t("be", "s3"),
                words("s3 127.0.0.1:80 check weight 3")
            ))
        );
        assert_eq!(
            cmd("set maxconn frontend fe 10"),
            Ok(Command::SetMaxconnFrontend("fe".into(), 10))
        );
    }

    #[test]
    fn errors_are_haproxys_lines() {
        for (line, answer) in [
            ("set server be state ready", "Require 'backend/server'."),
            (
                "set server be/s1 state bogus",
                "'set server <srv> state' expects 'ready', 'drain' and 'maint'.",
            ),
            (
                "set server be/s1 weight 300",
                "Absolute weight can only be between 0 and 256 inclusive.",
            ),
            (
                "set server be/s1 weight x",
                "Require <weight> or <weight%>.",
            ),
            (
                "set server be/s1 addr bogus",
                "Invalid addr 'bogus' by 'stats socket command'",
            ),
            ("set server be/s1", SET_SERVER_USAGE),
            (
                "add server be/s4",
                "'server' expects <name> and <addr>[:<port>] as arguments.",
            ),
            ("set maxconn frontend fe x", "Integer value expected."),
            ("frobnicate", UNKNOWN),
            ("show", UNKNOWN),
        ] {
            assert_eq!(cmd(line), Err(answer.to_string()), "{line}");
        }
        assert!(cmd("set server be/s1 health up")
            .unwrap_err()
            .contains("not supported"));
        assert!(cmd("show stat json").unwrap_err().contains("CSV only"));
    }

    #[test]
    fn levels_follow_haproxy() {
        let level = |line: &str| cmd(line).map(|c| c.level());
        assert_eq!(level("show stat"), Ok(ApiLevel::User));
        assert_eq!(level("show servers state"), Ok(ApiLevel::User));
        assert_eq!(level("show sess"), Ok(ApiLevel::Operator));
        assert_eq!(level("show ssl cert"), Ok(ApiLevel::Operator));
        assert_eq!(level("set server b/s state maint"), Ok(ApiLevel::Admin));
        assert_eq!(level("disable server b/s"), Ok(ApiLevel::Admin));
        assert_eq!(level("set maxconn frontend f 1"), Ok(ApiLevel::Admin));
        assert_eq!(level("reload"), Ok(ApiLevel::Admin));
    }

    #[test]
    fn stat_filters() {
        assert_eq!(
            cmd("show stat up"),
            Ok(Command::ShowStat(StatFilter {
                only_up: true,
                ..StatFilter::default()
            }))
        );
        assert_eq!(
            cmd("show stat be 4 -1"),
            Ok(Command::ShowStat(StatFilter {
                proxy: Some("be".into()),
                types: Some(4),
                ..StatFilter::default()
            }))
        );
        assert_eq!(
            cmd("show stat -1 -1 -1"),
            Ok(Command::ShowStat(StatFilter::default()))
        );
    }
}

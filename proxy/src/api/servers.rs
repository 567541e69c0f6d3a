//! `set server`, `get weight`, `enable|disable server`, `add server`, `del server`: through
//! the upstream room's run-time changes ([`ServerSet`]), answered in HAProxy's words.

use std::net::SocketAddr;
use std::sync::Arc;

use super::command::{Command, ServerChange, Target, Weight};
use crate::config::Loc;
use crate::plan::Registry;
use crate::upstream::{Admin, MembershipError, Server, ServerSet};

/// The answer to a server command (`Ok("")` for HAProxy's silent successes).
pub fn run(reg: &Registry, cmd: &Command) -> Result<String, String> {
    match cmd {
        Command::GetWeight(t) => {
            let (_, s) = find(reg, t)?;
            Ok(format!("{} (initial {})\n", s.weight(), s.params.weight))
        }
        Command::SetServer(t, change) => {
            let (set, s) = find(reg, t)?;
            set_server(&set, &s, change)
        }
        Command::EnableServer(t) => admin(reg, t, Admin::Ready),
        Command::DisableServer(t) => admin(reg, t, Admin::Maint),
        Command::AddServer(t, line) => add(reg, t, line),
        Command::DelServer(t) => del(reg, t),
        _ => Err(super::command::UNKNOWN.into()),
    }
}

fn backend(reg: &Registry, name: &str) -> Result<Arc<ServerSet>, String> {
    reg.backend(name)
        .ok_or_else(|| "No such backend.".to_string())
}

fn find(reg: &Registry, t: &Target) -> Result<(Arc<ServerSet>, Arc<Server>), String> {
    let set = backend(reg, &t.backend)?;
    let server = set
        .server(&t.server)
        .ok_or_else(|| "No such server.".to_string())?;
    Ok((set, server))
}

fn admin(reg: &Registry, t: &Target, state: Admin) -> Result<String, String> {
    let (_, s) = find(reg, t)?;
    let before = s.set_admin(state);
    if before != state {
        log::info!(
            "Server {}/{} is {} by the runtime API",
            t.backend,
            t.server,
            match state {
                Admin::Ready => "ready",
                Admin::Drain => "draining",
                Admin::Maint => "going into maintenance",
            }
        );
    }
    Ok(String::new())
}

fn set_server(set: &ServerSet, s: &Server, change: &ServerChange) -> Result<String, String> {
    match change {
        ServerChange::State(state) => {
            s.set_admin(*state);
            Ok(String::new())
        }
        ServerChange::Weight(w) => {
            let weight = match *w {
                Weight::Absolute(n) => n,
                Weight::Percent(p) => {
                    let n = u64::from(s.params.weight) * u64::from(p) / 100;
                    u32::try_from(n).ok().filter(|n| *n <= 256).ok_or_else(|| {
                        "Absolute weight can only be between 0 and 256 inclusive.".to_string()
                    })?
                }
            };
            set.set_weight(s, weight);
            Ok(String::new())
        }
        ServerChange::Addr(ip, port) => {
            let old = s.addr();
            let new = SocketAddr::new(*ip, port.unwrap_or(old.port()));
            s.set_addr(new);
            let mut said = Vec::new();
            if old.ip() != new.ip() {
                said.push(format!("IP changed from '{}' to '{}'", old.ip(), new.ip()));
            }
            if old.port() != new.port() {
                said.push(format!(
                    "port changed from '{}' to '{}'",
                    old.port(),
                    new.port()
                ));
            }
            if said.is_empty() {
                said.push("no need to change the addr".into());
            }
            let text = format!("{} by 'stats socket command'", said.join(", "));
            log::info!("{}/{}: {text}", set.backend, s.name);
            Ok(format!("{text}\n"))
        }
    }
}

/// `add server B/S ADDR [options]`: the words read as a config file's `server` line on top
/// of the backend's `default-server` (HAProxy ignores `default-server` here; its issue #1994
/// asks for what this does).
fn add(reg: &Registry, t: &Target, line: &[String]) -> Result<String, String> {
    let entry = reg
        .proxy(&t.backend)
        .filter(|p| p.backend.is_some())
        .ok_or_else(|| "No such backend.".to_string())?;
    let set = backend(reg, &t.backend)?;
    let loc = Loc {
        file: "runtime API (add server)".into(),
        line: 0,
    };
    let server = crate::config::server_line(&entry.default_server, line, &loc)
        .map_err(|e| format!("{e}."))?;
    match set.add(&server) {
        Ok(_) => {
            log::info!(
                "New server {}/{} registered at {} by the runtime API",
                t.backend,
                t.server,
                server.addr
            );
            Ok("New server registered.\n".into())
        }
        Err(MembershipError::Exists { .. }) => {
            Err("Already exists a server with the same name in backend.".into())
        }
        Err(e) => Err(format!("{e}.")),
    }
}

/// `del server B/S`: HAProxy's rule, maintenance first and no connection left.
fn del(reg: &Registry, t: &Target) -> Result<String, String> {
    let (set, s) = find(reg, t)?;
    if s.admin() != Admin::Maint {
        return Err("Only servers in maintenance mode can be deleted.".into());
    }
    match set.remove(&t.server) {
        Ok(_) => {
            log::info!(
                "Server {}/{} deleted by the runtime API",
                t.backend,
                t.server
            );
            Ok("Server deleted.\n".into())
        }
        Err(MembershipError::Busy { .. }) => {
            Err("Server still has connections attached to it, cannot remove it.".into())
        }
        Err(MembershipError::NoSuchServer { .. }) => Err("No such server.".into()),
        Err(e) => Err(format!("{e}.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::command::parse;
    use crate::plan::TEST_CONFIG;
    use crate::upstream::ServerState;

    fn registry() -> Registry {
        let text = TEST_CONFIG.replace(
            "backend backend_rtmp\n    mode tcp\n",
            "backend backend_rtmp\n    mode tcp\n    default-server check inter 3s weight 7\n",
        );
        let cfg =
            crate::config::parse_str(&text, std::path::Path::new("test.cfg")).expect("config");
        Registry::from_config(&cfg)
    }

    fn say(reg: &Registry, line: &str) -> Result<String, String> {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        run(reg, &parse(&words)?)
    }

    #[test]
    fn state_weight_and_addr() {
        let reg = registry();
        let set = reg.backend("backend_rtmp").expect("backend");
        let s = set.server("ams1").expect("ams1");
        assert_eq!(
            say(&reg, "set server backend_rtmp/ams1 state drain"),
            Ok("".into())
        );
        assert_eq!(s.admin(), Admin::Drain);
        assert_eq!(say(&reg, "disable server backend_rtmp/ams1"), Ok("".into()));
        assert_eq!(s.state(), ServerState::Maint);
        assert_eq!(say(&reg, "enable server backend_rtmp/ams1"), Ok("".into()));
        assert_eq!(s.admin(), Admin::Ready);
        assert_eq!(
            say(&reg, "set server backend_rtmp/ams1 weight 50%"),
            Ok("".into())
        );
        assert_eq!(
            say(&reg, "get weight backend_rtmp/ams1"),
            Ok("3 (initial 7)\n".into())
        );
        assert_eq!(
            say(
                &reg,
                "set server backend_rtmp/ams1 addr 127.0.0.5 port 1936"
            ),
            Ok(
                "IP changed from '172.30.0.42' to '127.0.0.5', port changed from '1935' to \
                '1936' by 'stats socket command'\n"
                    .into()
            )
        );
        assert_eq!(s.addr(), "127.0.0.5:1936".parse().unwrap());
        assert_eq!(
            say(&reg, "set server backend_rtmp/nope state ready"),
            Err("No such server.".into())
        );
        assert_eq!(
            say(&reg, "set server nope/ams1 state ready"),
            Err("No such backend.".into())
        );
    }

    #[test]
    fn add_applies_default_server_and_del_needs_maint() {
        let reg = registry();
        let set = reg.backend("backend_rtmp").expect("backend");
        assert_eq!(
            say(
                &reg,
                "add server backend_rtmp/ams3 127.0.0.1:1937 maxconn 5"
            ),
            Ok("New server registered.\n".into())
        );
        let s = set.server("ams3").expect("added");
        assert!(s.params.check, "check comes from default-server");
        assert_eq!((s.weight(), s.maxconn), (7, Some(5)));
        assert_eq!(
            s.state(),
            ServerState::Down,
            "checked: DOWN until its checks pass"
        );
        assert_eq!(
            say(&reg, "add server backend_rtmp/ams3 127.0.0.1:1937"),
            Err("Already exists a server with the same name in backend.".into())
        );
        assert!(say(&reg, "add server backend_rtmp/ams4 127.0.0.1:1 frob")
            .unwrap_err()
            .contains("unsupported server option 'frob'"));
        assert_eq!(
            say(&reg, "del server backend_rtmp/ams3"),
            Err("Only servers in maintenance mode can be deleted.".into())
        );
        let claim = s.claim();
        say(&reg, "set server backend_rtmp/ams3 state maint").expect("maint");
        assert_eq!(
            say(&reg, "del server backend_rtmp/ams3"),
            Err("Server still has connections attached to it, cannot remove it.".into())
        );
        drop(claim);
        assert_eq!(
            say(&reg, "del server backend_rtmp/ams3"),
            Ok("Server deleted.\n".into())
        );
        assert!(set.server("ams3").is_none());
    }
}
